//! A cursor over the tokens of ONE statement, which notes the write markers of every token that passes through it.
//!
//! Owns two things: where a statement ends (the `;` outside a `BEGIN ATOMIC … END` routine body) and the [`Facts`]
//! gathered from every token, whether the statement parser looked at it or skipped it: nested INSERT / UPDATE /
//! DELETE / MERGE, locking clauses, `INTO`, and calls (`name (`, `schema . name (`) of functions in the
//! [`FunctionSet`]. The statement parser (`grammar`) reads the head of a statement; the facts judge the rest.

use super::functions::{FunctionName, FunctionSet, is_session_advisory_lock};
use super::hidden::Tracker;
use super::lexer::{Lexer, Token, TokenKind};
use super::standby;

/// Write markers seen in a statement, at any depth.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Facts {
    /// INSERT / UPDATE / DELETE / MERGE outside parentheses (`WITH … DELETE …`) …
    pub dml_top: bool,
    /// … and inside them (a data-modifying CTE).
    pub dml_nested: bool,
    pub locking: bool,
    /// `INTO` not after INSERT or MERGE: SELECT … INTO.
    pub into: bool,
    /// `INTO TEMP` / `INTO TEMPORARY` / `INTO LOCAL TEMP`.
    pub into_temp: bool,
    pub write_function: bool,
    pub session_advisory_lock: bool,
    /// Something a standby refuses or answers otherwise (see `standby`).
    pub leader_only: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum End {
    Open,
    Semicolon,
    Input,
    Error,
}

pub(super) struct Cursor<'l, 'a> {
    lexer: &'l mut Lexer<'a>,
    functions: &'l FunctionSet,
    peeked: Option<Token<'a>>,
    pub end: End,
    pub facts: Facts,
    /// The last four tokens and their marker keywords, a ring indexed by `seen` (tokens observed so far).
    recent: [(Token<'a>, Kw); 4],
    seen: usize,
    depth: u32,
    /// `CREATE [OR REPLACE] FUNCTION | PROCEDURE`: `BEGIN ATOMIC … END` may hold `;`.
    routine: bool,
    atomic_depth: u32,
    /// The token being observed is `current_setting`'s argument.
    setting_argument: bool,
    /// Session state the statement may change unseen (`set_config` calls followed here).
    pub hidden: Tracker,
    /// Where the statement's first token starts (or where the text stopped lexing) and its last token ends.
    pub first: Option<usize>,
    pub last_end: usize,
}

impl<'l, 'a> Cursor<'l, 'a> {
    pub fn new(lexer: &'l mut Lexer<'a>, functions: &'l FunctionSet) -> Self {
        Cursor {
            lexer,
            functions,
            peeked: None,
            end: End::Open,
            facts: Facts::default(),
            recent: [(
                Token {
                    kind: TokenKind::Other,
                    text: "",
                    start: 0,
                },
                Kw::None,
            ); 4],
            seen: 0,
            depth: 0,
            routine: false,
            atomic_depth: 0,
            setting_argument: false,
            hidden: Tracker::default(),
            first: None,
            last_end: 0,
        }
    }

    pub fn source(&self) -> &'a str {
        self.lexer.source()
    }

    fn pull(&mut self) -> Option<Token<'a>> {
        if self.end != End::Open {
            return None;
        }
        match self.lexer.next() {
            None => self.end = End::Input,
            Some(Err(e)) => {
                self.first.get_or_insert(e.offset);
                self.end = End::Error;
            }
            Some(Ok(t)) if t.kind == TokenKind::Semicolon && self.atomic_depth == 0 => self.end = End::Semicolon,
            Some(Ok(t)) => {
                self.observe(t);
                return Some(t);
            }
        }
        None
    }

    pub fn peek(&mut self) -> Option<Token<'a>> {
        if self.peeked.is_none() {
            self.peeked = self.pull();
        }
        self.peeked
    }

    #[allow(clippy::should_implement_trait)] // a cursor that stops at `;`, not an Iterator
    pub fn next(&mut self) -> Option<Token<'a>> {
        self.peeked.take().or_else(|| self.pull())
    }

    pub fn peek_is(&mut self, keyword: &str) -> bool {
        self.peek().is_some_and(|t| t.is_keyword(keyword))
    }

    pub fn peek_kind(&mut self, kind: TokenKind) -> bool {
        self.peek().is_some_and(|t| t.kind == kind)
    }

    /// Consumes the next token if it is `keyword`.
    pub fn eat(&mut self, keyword: &str) -> bool {
        let hit = self.peek_is(keyword);
        if hit {
            self.next();
        }
        hit
    }

    pub fn eat_kind(&mut self, kind: TokenKind) -> bool {
        let hit = self.peek_kind(kind);
        if hit {
            self.next();
        }
        hit
    }

    /// Consumes the next token if it is the operator `op`.
    pub fn eat_operator(&mut self, op: &str) -> bool {
        let hit = self
            .peek()
            .is_some_and(|t| t.kind == TokenKind::Operator && t.text == op);
        if hit {
            self.next();
        }
        hit
    }

    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// After a `(`: consumes up to and including the matching `)`. False if the statement ends first.
    pub fn skip_group(&mut self) -> bool {
        let mut depth = 1u32;
        while let Some(t) = self.next() {
            match t.kind {
                TokenKind::LParen => depth = depth.saturating_add(1),
                TokenKind::RParen if depth == 1 => return true,
                TokenKind::RParen => depth -= 1,
                _ => {}
            }
        }
        false
    }

    /// Consumes the rest of the statement, noting its facts.
    pub fn drain(&mut self) {
        while self.next().is_some() {}
    }

    /// The `k`-th token before the one being observed (k = 1..=3); a blank one before the statement's start.
    fn back(&self, k: usize) -> (Token<'a>, Kw) {
        self.recent[self.seen.wrapping_sub(k) & 3]
    }

    fn observe(&mut self, t: Token<'a>) {
        self.first.get_or_insert(t.start);
        self.last_end = t.end();
        self.hidden.token(&t, self.depth);
        if std::mem::take(&mut self.setting_argument) {
            let plain = t.kind == TokenKind::String && t.text.starts_with('\'');
            self.facts.leader_only |= standby::current_setting_argument_differs(t.text, plain);
        }
        if matches!(t.kind, TokenKind::Word | TokenKind::QuotedIdent) {
            self.facts.leader_only |= standby::names_session_only(t.text) || self.functions.unlogged().contains(t.text);
        }
        let (p1, k1) = self.back(1);
        // `x.update` is a column, not a keyword.
        let kw = if p1.kind == TokenKind::Dot {
            Kw::None
        } else {
            Kw::of(&t)
        };
        match t.kind {
            TokenKind::LParen => {
                if p1.is_identifier() {
                    let ((dot, _), (qualifier, _)) = (self.back(2), self.back(3));
                    let qualified = dot.kind == TokenKind::Dot && qualifier.is_identifier();
                    self.call(qualified.then_some(qualifier), p1);
                }
                self.depth = self.depth.saturating_add(1);
            }
            TokenKind::RParen => self.depth = self.depth.saturating_sub(1),
            TokenKind::Word if kw != Kw::None => self.marker(kw, k1, self.back(2).1, self.back(3).1),
            _ => {}
        }
        self.recent[self.seen & 3] = (t, kw);
        self.seen += 1;
    }

    /// A marker keyword `kw`, after the keywords `k1`, `k2`, `k3` (nearest first).
    fn marker(&mut self, kw: Kw, k1: Kw, k2: Kw, k3: Kw) {
        use Kw::*;
        match kw {
            Insert | Delete | Merge => self.dml(),
            Update if k1 == For || (k1 == Key && k2 == No && k3 == For) => self.facts.locking = true,
            Update => self.dml(),
            Share => self.facts.locking |= k1 == For || (k1 == Key && k2 == For),
            Into => self.facts.into |= !matches!(k1, Insert | Merge),
            Temp => self.facts.into_temp |= k1 == Into || (k2 == Into && matches!(k1, Local | Global)),
            Routine => {
                self.routine |=
                    (k1 == Create && self.seen == 1) || (k3 == Create && k2 == Or && k1 == Replace && self.seen == 3)
            }
            Atomic if self.routine && self.atomic_depth == 0 && k1 == Begin => self.atomic_depth = 1,
            Begin | Case if self.atomic_depth > 0 => self.atomic_depth = self.atomic_depth.saturating_add(1),
            End if self.atomic_depth > 0 => self.atomic_depth -= 1,
            _ => {}
        }
    }

    fn dml(&mut self) {
        if self.depth == 0 {
            self.facts.dml_top = true;
        } else {
            self.facts.dml_nested = true;
        }
    }

    fn call(&mut self, qualifier: Option<Token>, name: Token) {
        let name = FunctionName::fold(name.text);
        let schema = qualifier.map(|q| FunctionName::fold(q.text));
        let (Some(name), None | Some(Some(_))) = (&name, &schema) else {
            // U&"…": not decoded, so it may name any function.
            self.facts.write_function = true;
            return;
        };
        let (name, schema) = (
            name.as_str(),
            schema.as_ref().and_then(|s| s.as_ref()).map(FunctionName::as_str),
        );
        self.facts.write_function |= self.functions.is_write(schema, name);
        self.facts.session_advisory_lock |= is_session_advisory_lock(schema, name);
        self.facts.leader_only |= standby::reports_recovery(schema, name);
        let catalog = schema.is_none_or(|s| s == "pg_catalog");
        self.setting_argument = name == "current_setting" && catalog;
        if name == "set_config" && catalog {
            self.hidden.set_config_call(self.depth.saturating_add(1));
        } else if self.functions.is_user_function(schema, name) {
            self.hidden.anything();
        }
    }
}

/// The keywords write markers are made of (FUNCTION and PROCEDURE are both `Routine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kw {
    None,
    Insert,
    Update,
    Delete,
    Merge,
    Into,
    For,
    No,
    Key,
    Share,
    Temp,
    Local,
    Global,
    Create,
    Or,
    Replace,
    Routine,
    Begin,
    Atomic,
    Case,
    End,
}

impl Kw {
    fn of(t: &Token) -> Kw {
        if t.kind != TokenKind::Word {
            return Kw::None;
        }
        let first = t.text.as_bytes().first().map_or(0, u8::to_ascii_lowercase);
        let (kw, spelling) = match (t.text.len(), first) {
            (6, b'i') => (Kw::Insert, "insert"),
            (6, b'u') => (Kw::Update, "update"),
            (6, b'd') => (Kw::Delete, "delete"),
            (5, b'm') => (Kw::Merge, "merge"),
            (4, b'i') => (Kw::Into, "into"),
            (3, b'f') => (Kw::For, "for"),
            (2, b'n') => (Kw::No, "no"),
            (3, b'k') => (Kw::Key, "key"),
            (5, b's') => (Kw::Share, "share"),
            (4, b't') => (Kw::Temp, "temp"),
            (9, b't') => (Kw::Temp, "temporary"),
            (5, b'l') => (Kw::Local, "local"),
            (6, b'g') => (Kw::Global, "global"),
            (6, b'c') => (Kw::Create, "create"),
            (2, b'o') => (Kw::Or, "or"),
            (7, b'r') => (Kw::Replace, "replace"),
            (8, b'f') => (Kw::Routine, "function"),
            (9, b'p') => (Kw::Routine, "procedure"),
            (5, b'b') => (Kw::Begin, "begin"),
            (6, b'a') => (Kw::Atomic, "atomic"),
            (4, b'c') => (Kw::Case, "case"),
            (3, b'e') => (Kw::End, "end"),
            _ => return Kw::None,
        };
        if t.text.eq_ignore_ascii_case(spelling) {
            kw
        } else {
            Kw::None
        }
    }
}
