//! Statement heads: reads the first keywords of ONE statement — BEGIN's modes, SET's name and value, EXPLAIN's
//! options, COPY's direction, PREPARE / DECLARE's embedded query — and returns its [`Kind`] and a [`Verdict`].
//!
//! Owns the shape of each statement PostgreSQL's grammar gives it, to the depth routing needs and no deeper; a shape
//! it does not recognise is `Write` / [`Reason::Unparsable`]. It never judges the query body: the cursor's facts do
//! that (see `classify`).

use super::cursor::Cursor;
use super::lexer::{Span, Token, TokenKind};
use super::standby;
use super::statement::{Access, Isolation, Name, Reason, SavepointOp, StatementKind as Kind};

/// What the head of a statement decided.
#[derive(Clone, Copy, Debug)]
pub(super) enum Verdict {
    /// A query: read unless its facts show a write marker.
    Query,
    Fixed(Access, Reason),
}

const fn read(reason: Reason) -> Verdict {
    Verdict::Fixed(Access::Read, reason)
}

const fn write(reason: Reason) -> Verdict {
    Verdict::Fixed(Access::Write, reason)
}

const UNPARSABLE: (Kind, Verdict) = (Kind::Other, write(Reason::Unparsable));

fn is_query_start(t: &Token) -> bool {
    t.kind == TokenKind::LParen || ["select", "values", "table", "with"].iter().any(|k| t.is_keyword(k))
}

/// A statement embedded after EXPLAIN ANALYZE, PREPARE … AS, DECLARE … FOR, starting with `t`.
fn embedded(t: Option<Token>) -> Verdict {
    if t.is_some_and(|t| is_query_start(&t)) {
        Verdict::Query
    } else {
        write(Reason::Write)
    }
}

/// The first keyword, lower-cased into `buf` (empty if it is not a short ASCII word).
fn lower<'b>(t: &Token, buf: &'b mut [u8; 12]) -> &'b str {
    let bytes = t.text.as_bytes();
    let Some(out) = buf.get_mut(..bytes.len()) else {
        return "";
    };
    out.copy_from_slice(bytes);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).unwrap_or("")
}

pub(super) fn head<'a>(c: &mut Cursor<'_, 'a>, first: Token<'a>) -> (Kind, Verdict) {
    if first.kind == TokenKind::LParen {
        let mut t = c.next();
        while t.is_some_and(|t| t.kind == TokenKind::LParen) {
            t = c.next();
        }
        return (Kind::Other, embedded(t));
    }
    if first.kind != TokenKind::Word {
        return UNPARSABLE;
    }
    let mut buf = [0; 12];
    match lower(&first, &mut buf) {
        "select" | "values" | "table" | "with" => (Kind::Other, Verdict::Query),
        "show" => {
            let name = show_name(c);
            let sql = c.source();
            // SHOW ALL shows them too.
            let standby_differs = name.is_none_or(|n| standby::STANDBY_SETTINGS.iter().any(|s| n.is(sql, s)));
            let verdict = match standby_differs {
                true => Verdict::Fixed(Access::Write, Reason::LeaderOnly),
                false => read(Reason::Read),
            };
            (Kind::Show { name }, verdict)
        }
        "explain" => (Kind::Other, explain(c)),
        "set" => set(c),
        "reset" => reset(c),
        "begin" => {
            let _ = c.eat("work") || c.eat("transaction");
            begin(c)
        }
        "start" if c.eat("transaction") => begin(c),
        "commit" | "end" if c.eat("prepared") => (Kind::Other, write(Reason::Write)),
        "commit" | "end" => match chain(c) {
            Some(chain) => (Kind::Commit { chain }, read(Reason::Transaction)),
            None => UNPARSABLE,
        },
        "rollback" | "abort" => rollback(c),
        "savepoint" => savepoint(c, SavepointOp::Define),
        "release" => {
            c.eat("savepoint");
            savepoint(c, SavepointOp::Release)
        }
        "discard" => match c.next() {
            Some(t) if t.is_keyword("all") => (Kind::Discard { all: true }, read(Reason::Session)),
            Some(t)
                if ["plans", "sequences", "temp", "temporary"]
                    .iter()
                    .any(|k| t.is_keyword(k)) =>
            {
                (Kind::Discard { all: false }, read(Reason::Session))
            }
            _ => UNPARSABLE,
        },
        "listen" => match name(c) {
            Some(channel) => (Kind::Listen { channel }, write(Reason::Pin)),
            None => UNPARSABLE,
        },
        "unlisten" => {
            let all = c.peek().is_some_and(|t| t.text == "*");
            (Kind::Unlisten { all }, read(Reason::Session))
        }
        "prepare" => prepare(c),
        "execute" => match name(c) {
            Some(name) => (Kind::Execute { name }, write(Reason::Execute)),
            None => UNPARSABLE,
        },
        "deallocate" => {
            c.eat("prepare");
            match c.next() {
                Some(t) if t.is_keyword("all") => (Kind::Deallocate { name: None }, read(Reason::Session)),
                Some(t) if t.is_identifier() => (Kind::Deallocate { name: Some(t.span()) }, read(Reason::Session)),
                _ => UNPARSABLE,
            }
        }
        "declare" => declare(c),
        "fetch" | "move" | "close" => (Kind::Other, read(Reason::Read)),
        "copy" => copy(c),
        "create" => create(c),
        "do" | "call" => {
            // What the block or procedure does to the session is not in the text.
            c.hidden.block();
            (Kind::Other, write(Reason::Write))
        }
        _ => (Kind::Other, write(Reason::Write)),
    }
}

/// An identifier token (a name of a cursor, prepared statement, savepoint or channel).
fn name(c: &mut Cursor) -> Option<Span> {
    c.next().filter(Token::is_identifier).map(|t| t.span())
}

/// `a`, `a.b`, `"A".b`: a setting's name as written.
fn dotted_name(c: &mut Cursor, first: Token) -> Option<Span> {
    let mut span = first.span();
    while c.eat_kind(TokenKind::Dot) {
        span.end = c.next().filter(Token::is_identifier)?.end();
    }
    first.is_identifier().then_some(span)
}

/// The rest of the statement as a value; `None` if it is just one of `defaults` (DEFAULT, LOCAL, NONE).
fn value(c: &mut Cursor, defaults: &[&str]) -> Option<Option<Span>> {
    let first = c.next()?;
    if defaults.iter().any(|d| first.is_keyword(d)) && c.at_end() {
        return Some(None);
    }
    c.drain();
    Some(Some(Span {
        start: first.start,
        end: c.last_end,
    }))
}

fn show_name(c: &mut Cursor) -> Option<Name> {
    let first = c.next()?;
    if first.is_keyword("all") {
        return None;
    }
    Some(special_name(c, first).unwrap_or_else(|| Name::Written(dotted_name(c, first).unwrap_or(first.span()))))
}

/// TIME ZONE, TRANSACTION ISOLATION LEVEL, SESSION AUTHORIZATION after SHOW or RESET.
fn special_name(c: &mut Cursor, first: Token) -> Option<Name> {
    if first.is_keyword("time") && c.eat("zone") {
        Some(Name::Setting("timezone"))
    } else if first.is_keyword("transaction") && c.eat("isolation") && c.eat("level") {
        Some(Name::Setting("transaction_isolation"))
    } else if first.is_keyword("session") && c.eat("authorization") {
        Some(Name::Setting("session_authorization"))
    } else {
        None
    }
}

fn explain(c: &mut Cursor) -> Verdict {
    let mut analyze = false;
    if c.eat_kind(TokenKind::LParen) {
        if c.peek().is_some_and(|t| is_query_start(&t)) {
            return read(Reason::Read); // EXPLAIN (SELECT …): a parenthesised query, not options
        }
        match explain_options(c) {
            Some(on) => analyze = on,
            None => return write(Reason::Unparsable),
        }
    } else if c.eat("analyze") || c.eat("analyse") {
        analyze = true;
        c.eat("verbose");
    } else {
        c.eat("verbose");
    }
    let inner = c.next();
    let explainable = [
        "select", "values", "table", "with", "insert", "update", "delete", "merge", "declare", "create", "refresh",
    ];
    match inner {
        Some(t) if t.is_keyword("execute") => write(Reason::Execute),
        Some(t) if t.kind == TokenKind::LParen || explainable.iter().any(|k| t.is_keyword(k)) => {
            match (analyze, embedded(inner)) {
                (false, _) => read(Reason::Read),
                (true, Verdict::Query) => Verdict::Query,
                (true, _) => write(Reason::ExplainAnalyze),
            }
        }
        _ => write(Reason::Unparsable),
    }
}

/// `(option [value], …)` after `EXPLAIN (`, through the `)`. Is ANALYZE on? `None` if the list does not end.
fn explain_options(c: &mut Cursor) -> Option<bool> {
    let mut analyze = false;
    loop {
        let option = c.next()?;
        if option.kind == TokenKind::RParen {
            return Some(analyze);
        }
        let (mut values, mut off) = (0u32, false);
        let last = loop {
            let t = c.next()?;
            if matches!(t.kind, TokenKind::Comma | TokenKind::RParen) {
                break t;
            }
            values = values.saturating_add(1);
            off = is_false(&t);
        };
        if option.is_keyword("analyze") || option.is_keyword("analyse") {
            analyze |= !(values == 1 && off);
        }
        if last.kind == TokenKind::RParen {
            return Some(analyze);
        }
    }
}

/// FALSE / OFF / 0 / 'false' / 'off', as the server's boolean options read them. With `is_true`, the only place the
/// classifier reads a number's value: `shapes::mask_numbers` keeps 0 and 1 apart for them, and must keep apart any
/// other value read here.
fn is_false(t: &Token) -> bool {
    let text = match t.kind {
        TokenKind::Word | TokenKind::Number => t.text,
        TokenKind::String => t
            .text
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .unwrap_or(""),
        _ => return false,
    };
    ["false", "off", "0"].iter().any(|f| text.eq_ignore_ascii_case(f))
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

fn is_true(text: &str) -> bool {
    let text = text
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(text);
    ["on", "true", "yes", "1", "t", "y"]
        .iter()
        .any(|t| text.eq_ignore_ascii_case(t))
}

/// Transaction modes after BEGIN / START TRANSACTION / SET TRANSACTION, to the end of the statement. A mode given
/// twice resolves towards the leader: any READ WRITE wins, any SERIALIZABLE wins. `None` for anything else.
fn modes(c: &mut Cursor) -> Option<(Option<bool>, Option<Isolation>)> {
    let (mut read_only, mut isolation) = (None, None);
    while let Some(t) = c.next() {
        if t.kind == TokenKind::Comma {
            continue;
        } else if t.is_keyword("isolation") && c.eat("level") {
            let level = match c.next() {
                Some(l) if l.is_keyword("serializable") => Isolation::Serializable,
                Some(l) if l.is_keyword("repeatable") && c.eat("read") => Isolation::RepeatableRead,
                Some(l) if l.is_keyword("read") && c.eat("committed") => Isolation::ReadCommitted,
                Some(l) if l.is_keyword("read") && c.eat("uncommitted") => Isolation::ReadUncommitted,
                _ => return None,
            };
            if isolation != Some(Isolation::Serializable) {
                isolation = Some(level);
            }
        } else if t.is_keyword("read") && c.eat("only") {
            read_only.get_or_insert(true);
        } else if t.is_keyword("read") && c.eat("write") {
            read_only = Some(false);
        } else if !(t.is_keyword("deferrable") || (t.is_keyword("not") && c.eat("deferrable"))) {
            return None;
        }
    }
    Some((read_only, isolation))
}

fn begin(c: &mut Cursor) -> (Kind, Verdict) {
    let Some((read_only, isolation)) = modes(c) else {
        return UNPARSABLE;
    };
    let verdict = match (read_only, isolation) {
        (Some(true), Some(Isolation::Serializable)) => write(Reason::Serializable),
        (Some(true), _) => read(Reason::ReadOnlyTransaction),
        _ => write(Reason::Transaction),
    };
    (Kind::Begin { read_only, isolation }, verdict)
}

/// `[WORK | TRANSACTION] [AND [NO] CHAIN]` to the end of the statement.
fn chain(c: &mut Cursor) -> Option<bool> {
    let _ = c.eat("work") || c.eat("transaction");
    let chain = if c.eat("and") {
        let no = c.eat("no");
        c.eat("chain").then_some(!no)?
    } else {
        false
    };
    c.at_end().then_some(chain)
}

fn rollback(c: &mut Cursor) -> (Kind, Verdict) {
    if c.eat("prepared") {
        return (Kind::Other, write(Reason::Write));
    }
    let _ = c.eat("work") || c.eat("transaction");
    if c.eat("to") {
        c.eat("savepoint");
        return savepoint(c, SavepointOp::RollbackTo);
    }
    match chain(c) {
        Some(chain) => (Kind::Rollback { chain }, read(Reason::Transaction)),
        None => UNPARSABLE,
    }
}

fn savepoint(c: &mut Cursor, op: SavepointOp) -> (Kind, Verdict) {
    match name(c) {
        Some(name) if c.at_end() => (Kind::Savepoint { op, name }, read(Reason::Transaction)),
        _ => UNPARSABLE,
    }
}

fn set(c: &mut Cursor) -> (Kind, Verdict) {
    let local = c.eat("local");
    let session = !local && c.eat("session");
    let Some(first) = c.next() else { return UNPARSABLE };
    let generic = c
        .peek()
        .is_some_and(|t| t.is_keyword("to") || t.text == "=" || t.kind == TokenKind::Dot);
    let special = |name: &'static str, value: Option<Option<Span>>| match value {
        Some(value) => (
            Kind::Set {
                local,
                name: Name::Setting(name),
                value,
            },
            read(Reason::Session),
        ),
        None => UNPARSABLE,
    };
    if !generic {
        if first.is_keyword("transaction") {
            if c.eat("snapshot") {
                return (Kind::Other, write(Reason::Write)); // a snapshot exported elsewhere
            }
            let Some((read_only, isolation)) = modes(c) else {
                return UNPARSABLE;
            };
            let verdict = match (read_only, isolation) {
                (Some(false), _) => write(Reason::Transaction), // a standby refuses READ WRITE
                (_, Some(Isolation::Serializable)) => write(Reason::Serializable),
                _ => read(Reason::Transaction),
            };
            return (Kind::SetTransaction { read_only, isolation }, verdict);
        }
        // SESSION AUTHORIZATION and SESSION CHARACTERISTICS may follow a scope too: SET LOCAL SESSION AUTHORIZATION.
        let session = session || (first.is_keyword("session") && c.peek().is_some());
        let first = if first.is_keyword("session") {
            c.next().unwrap_or(first)
        } else {
            first
        };
        if session && first.is_keyword("characteristics") {
            if !(c.eat("as") && c.eat("transaction")) {
                return UNPARSABLE;
            }
            let Some((read_only, isolation)) = modes(c) else {
                return UNPARSABLE;
            };
            return (
                Kind::SetSessionCharacteristics { read_only, isolation },
                read(Reason::Session),
            );
        }
        if session && first.is_keyword("authorization") {
            return special("session_authorization", value(c, &["default"]));
        }
        if first.is_keyword("time") && c.eat("zone") {
            return special("timezone", value(c, &["local", "default"]));
        }
        if first.is_keyword("xml") && c.eat("option") {
            return special("xmloption", value(c, &[]));
        }
        if first.is_keyword("names") {
            return special(
                "client_encoding",
                if c.at_end() { Some(None) } else { value(c, &["default"]) },
            );
        }
        if first.is_keyword("schema") {
            return special("search_path", value(c, &[]));
        }
        if first.is_keyword("role") {
            return special("role", value(c, &["none"]));
        }
        if first.is_keyword("constraints") {
            return (Kind::Other, read(Reason::Session));
        }
    }
    let Some(name) = dotted_name(c, first) else {
        return UNPARSABLE;
    };
    if c.eat("from") {
        return if c.eat("current") && c.at_end() {
            (Kind::Other, read(Reason::Session))
        } else {
            UNPARSABLE
        };
    }
    if !(c.eat("to") || c.eat_operator("=")) {
        return UNPARSABLE;
    }
    let Some(value) = value(c, &["default"]) else {
        return UNPARSABLE;
    };
    let sql = c.source();
    let name = Name::Written(name);
    let text = value.map_or("", |v| v.text(sql));
    // A standby refuses read-write and serializable transactions however they are asked for.
    let verdict = if name.is(sql, "transaction_read_only") && value.is_some() && !is_true(text) {
        write(Reason::Transaction)
    } else if name.is(sql, "transaction_isolation") && contains_ignore_case(text, "serializable") {
        write(Reason::Serializable)
    } else {
        read(Reason::Session)
    };
    (Kind::Set { local, name, value }, verdict)
}

fn reset(c: &mut Cursor) -> (Kind, Verdict) {
    let Some(first) = c.next() else { return UNPARSABLE };
    if first.is_keyword("all") {
        return (Kind::ResetAll, read(Reason::Session));
    }
    match special_name(c, first).or_else(|| dotted_name(c, first).map(Name::Written)) {
        Some(name) => (Kind::Reset { name }, read(Reason::Session)),
        None => UNPARSABLE,
    }
}

/// PREPARE name [(types)] AS statement: as read as the statement. PREPARE TRANSACTION is a write.
fn prepare(c: &mut Cursor) -> (Kind, Verdict) {
    if c.peek_is("transaction") {
        return (Kind::Other, write(Reason::Write));
    }
    let Some(name) = name(c) else { return UNPARSABLE };
    if (c.eat_kind(TokenKind::LParen) && !c.skip_group()) || !c.eat("as") {
        return UNPARSABLE;
    }
    (Kind::Prepare { name }, embedded(c.next()))
}

/// `DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [WITH | WITHOUT HOLD] FOR query`.
fn declare(c: &mut Cursor) -> (Kind, Verdict) {
    let Some(name) = name(c) else { return UNPARSABLE };
    while ["binary", "asensitive", "insensitive", "no", "scroll"]
        .iter()
        .any(|k| c.eat(k))
    {}
    if !c.eat("cursor") {
        return UNPARSABLE;
    }
    let with_hold = c.eat("with");
    if ((with_hold || c.eat("without")) && !c.eat("hold")) || !c.eat("for") {
        return UNPARSABLE;
    }
    let query = embedded(c.next());
    // A WITH HOLD cursor outlives the transaction: it pins the client to one leader connection.
    (
        Kind::DeclareCursor { name, with_hold },
        if with_hold { write(Reason::Pin) } else { query },
    )
}

/// COPY {table [(columns)] | (query)} {FROM | TO} {STDIN | STDOUT | 'file' | PROGRAM 'command'} …
/// Only TO STDOUT of a table or a read-only query is a read: a file or program belongs to the leader's host.
fn copy(c: &mut Cursor) -> (Kind, Verdict) {
    c.eat("binary");
    let mut source = Verdict::Query;
    if c.eat_kind(TokenKind::LParen) {
        source = embedded(c.peek());
        if !c.skip_group() {
            return UNPARSABLE;
        }
    } else {
        let Some(table) = c.next() else { return UNPARSABLE };
        if dotted_name(c, table).is_none() || (c.eat_kind(TokenKind::LParen) && !c.skip_group()) {
            return UNPARSABLE;
        }
    }
    let from = c.eat("from");
    if !from && !c.eat("to") {
        return UNPARSABLE;
    }
    let program = c.eat("program");
    let stdio = !program && (c.eat("stdin") || c.eat("stdout"));
    let kind = Kind::Copy {
        from_stdin: from && stdio,
        to_stdout: !from && stdio,
    };
    (kind, if !from && stdio { source } else { write(Reason::Write) })
}

/// CREATE …: a write; CreateTemp when it makes a temporary object (`TEMP` before the object type, or a name in
/// `pg_temp`), which pins the client.
fn create(c: &mut Cursor) -> (Kind, Verdict) {
    let temp = (Kind::CreateTemp, write(Reason::Pin));
    while ["or", "replace", "global", "local"].iter().any(|k| c.eat(k)) {}
    if c.eat("temp") || c.eat("temporary") {
        return temp;
    }
    for _ in 0..6 {
        let Some(t) = c.next() else { break };
        if t.kind == TokenKind::LParen || t.is_keyword("as") {
            break;
        }
        let pg_temp = t.text.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("pg_temp"))
            || t.text.get(..8).is_some_and(|p| p == "\"pg_temp");
        if pg_temp && c.peek_kind(TokenKind::Dot) {
            return temp;
        }
    }
    (Kind::Other, write(Reason::Write))
}
