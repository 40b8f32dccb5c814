//! The SQL lexer: PostgreSQL's lexical structure over a `&str`, yielding borrowed tokens without allocating.
//!
//! Owns the rules for where strings, quoted identifiers, comments and dollar quotes begin and end — the one thing a
//! classifier must get exactly right, because text inside a string is never code. It follows `scan.l` of PostgreSQL
//! (15–17): nested `/* */` comments, `--` comments, `'…'` with `''`, `E'…'` with backslash escapes, `U&'…'`, `U&"…"`,
//! `B'…'`, `X'…'`, string continuation across a newline (`'a'\n'b'`), `$tag$…$tag$`, `$1`, and operators cut short
//! before `--` or `/*`. Anything it cannot finish (an unterminated string, comment or dollar quote) is a [`LexError`];
//! callers then send the statement to the leader. It never decides routing and never allocates.

/// A byte range of the SQL text (so a statement can name things without copying them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// The text this span covers in `sql` (empty if `sql` is not the string it was made from).
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        sql.get(self.start..self.end).unwrap_or("")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An unquoted identifier or keyword: `select`, `Users`, `pg_catalog`, `a$b`.
    Word,
    /// `"…"` (a `""` inside stands for `"`) or `U&"…"`.
    QuotedIdent,
    /// `'…'`, `E'…'`, `U&'…'`, `B'…'`, `X'…'`, including continuation segments on later lines.
    String,
    /// `$$…$$` or `$tag$…$tag$`.
    DollarString,
    /// A positional parameter: `$1`.
    Param,
    Number,
    /// An operator: `+`, `->>`, `@>`, `||`, `::`, `:=`, `=>`, `:`.
    Operator,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Semicolon,
    Dot,
    /// Any other single character (`{`, `\`, a lone `$`): the server rejects it.
    Other,
}

/// One token: its kind, its exact text (quotes and prefixes included) and where it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub text: &'a str,
    pub start: usize,
}

impl Token<'_> {
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }

    pub fn span(&self) -> Span {
        Span {
            start: self.start,
            end: self.end(),
        }
    }

    /// True for an unquoted word equal to `keyword` ignoring ASCII case (`"select"` in quotes is an identifier).
    pub fn is_keyword(&self, keyword: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(keyword)
    }

    /// True for a word or a quoted identifier.
    pub fn is_identifier(&self) -> bool {
        matches!(self.kind, TokenKind::Word | TokenKind::QuotedIdent)
    }
}

/// Text the lexer could not finish: the server would reject it too, so it is routed to the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LexError {
    /// Where the unfinished string, comment or dollar quote starts.
    pub offset: usize,
    pub message: &'static str,
}

/// Iterator over the tokens of `src`; after an error it yields nothing more.
#[derive(Clone, Debug)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    /// `standard_conforming_strings = off`: plain `'…'` strings take backslash escapes like `E'…'`.
    backslash_in_plain: bool,
    done: bool,
}

/// How a quoted literal ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    /// `'…'` with `''`, or `"…"` with `""`.
    Doubled(u8),
    /// `E'…'`: `''` and backslash escapes.
    Escaped,
    /// `B'…'` / `X'…'`: ends at the first quote (a following `'` opens a new literal, as in the server).
    Bits,
}

impl<'a> Lexer<'a> {
    /// A lexer assuming `standard_conforming_strings = on` (the default since PostgreSQL 9.1). Like the server, which
    /// reads the query as a C string, it stops at the first NUL byte.
    pub fn new(src: &'a str) -> Self {
        let src = src.find('\0').map_or(src, |nul| &src[..nul]);
        Lexer {
            src,
            pos: 0,
            backslash_in_plain: false,
            done: false,
        }
    }

    /// Lex as the server does with the session's `standard_conforming_strings` (reported in ParameterStatus).
    pub fn standard_conforming_strings(mut self, on: bool) -> Self {
        self.backslash_in_plain = !on;
        self
    }

    /// The text being lexed (cut at the first NUL).
    pub fn source(&self) -> &'a str {
        self.src
    }

    fn at(&self, i: usize) -> u8 {
        self.src.as_bytes().get(i).copied().unwrap_or(0)
    }

    fn lex(&mut self) -> Result<Option<Token<'a>>, LexError> {
        self.skip_space_and_comments()?;
        let start = self.pos;
        let c = self.at(start);
        let mut end = start + 1;
        let kind = match c {
            0 => return Ok(None),
            b'(' => TokenKind::LParen,
            b')' => TokenKind::RParen,
            b'[' => TokenKind::LBracket,
            b']' => TokenKind::RBracket,
            b',' => TokenKind::Comma,
            b';' => TokenKind::Semicolon,
            b'.' if self.at(start + 1).is_ascii_digit() => {
                end = self.number(start);
                TokenKind::Number
            }
            b'.' => TokenKind::Dot,
            b'\'' => {
                let plain = if self.backslash_in_plain {
                    Quote::Escaped
                } else {
                    Quote::Doubled(b'\'')
                };
                end = self.quoted(start, start, plain)?;
                TokenKind::String
            }
            b'"' => {
                end = self.quoted(start, start, Quote::Doubled(b'"'))?;
                TokenKind::QuotedIdent
            }
            b'$' => return self.dollar(start).map(Some),
            b'0'..=b'9' => {
                end = self.number(start);
                TokenKind::Number
            }
            b':' => {
                if matches!(self.at(start + 1), b':' | b'=') {
                    end += 1;
                }
                TokenKind::Operator
            }
            c if is_op_char(c) => {
                // The run was checked not to start a comment; like the server, cut it before one.
                while is_op_char(self.at(end)) && !self.comment_starts(end) {
                    end += 1;
                }
                TokenKind::Operator
            }
            c if is_ident_start(c) => return self.word(start),
            _ => TokenKind::Other,
        };
        Ok(Some(self.token(kind, start, end)))
    }

    fn token(&mut self, kind: TokenKind, start: usize, end: usize) -> Token<'a> {
        self.pos = end;
        Token {
            kind,
            text: self.src.get(start..end).unwrap_or(""),
            start,
        }
    }

    fn comment_starts(&self, i: usize) -> bool {
        matches!((self.at(i), self.at(i + 1)), (b'-', b'-') | (b'/', b'*'))
    }

    fn skip_space_and_comments(&mut self) -> Result<(), LexError> {
        loop {
            match self.at(self.pos) {
                b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c' => self.pos += 1,
                b'-' if self.at(self.pos + 1) == b'-' => self.pos = self.line_end(self.pos),
                b'/' if self.at(self.pos + 1) == b'*' => self.pos = self.block_comment(self.pos)?,
                _ => return Ok(()),
            }
        }
    }

    fn line_end(&self, i: usize) -> usize {
        self.scan_while(i, |c| !matches!(c, b'\n' | b'\r'))
    }

    /// The first offset from `i` whose byte is not `keep` (or the end of the text).
    fn scan_while(&self, i: usize, keep: impl Fn(u8) -> bool) -> usize {
        i + self
            .src
            .as_bytes()
            .get(i..)
            .map_or(0, |rest| rest.iter().take_while(|&&c| keep(c)).count())
    }

    /// `/* … */` with nesting; returns the offset after the final `*/`.
    fn block_comment(&self, start: usize) -> Result<usize, LexError> {
        let (mut i, mut depth) = (start + 2, 1u32);
        loop {
            match (self.at(i), self.at(i + 1)) {
                (0, _) => {
                    return Err(LexError {
                        offset: start,
                        message: "unterminated /* comment",
                    });
                }
                (b'/', b'*') => {
                    depth += 1;
                    i += 2;
                }
                (b'*', b'/') => {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => i += 1,
            }
        }
    }

    /// A quoted literal whose opening quote is at `open` (the token starts at `start`, before any prefix). Returns
    /// the offset after the closing quote, following continuation segments (`'a'` newline `'b'`) in the same mode.
    fn quoted(&self, start: usize, open: usize, mode: Quote) -> Result<usize, LexError> {
        let quote = if mode == Quote::Doubled(b'"') { b'"' } else { b'\'' };
        let mut i = open + 1;
        loop {
            match self.at(i) {
                0 => {
                    let message = if quote == b'"' {
                        "unterminated quoted identifier"
                    } else {
                        "unterminated string"
                    };
                    return Err(LexError { offset: start, message });
                }
                b'\\' if mode == Quote::Escaped && self.at(i + 1) != 0 => i += 2,
                c if c == quote => {
                    if mode != Quote::Bits && self.at(i + 1) == quote {
                        i += 2;
                    } else if let Some(next) = (quote == b'\'').then(|| self.continuation(i + 1)).flatten() {
                        i = next + 1;
                    } else {
                        return Ok(i + 1);
                    }
                }
                _ => i = self.scan_while(i + 1, |c| c != quote && c != b'\\'),
            }
        }
    }

    /// After a closing `'`: whitespace holding a newline (and `--` comments), then `'`, continues the literal.
    /// Returns the offset of that continuing quote.
    fn continuation(&self, mut i: usize) -> Option<usize> {
        let mut newline = false;
        loop {
            match self.at(i) {
                b' ' | b'\t' | b'\x0b' | b'\x0c' => i += 1,
                b'\n' | b'\r' => {
                    newline = true;
                    i += 1;
                }
                b'-' if self.at(i + 1) == b'-' => i = self.line_end(i),
                b'\'' if newline => return Some(i),
                _ => return None,
            }
        }
    }

    /// `$1`, `$tag$…$tag$`, `$$…$$`, or a lone `$` (Other).
    fn dollar(&mut self, start: usize) -> Result<Token<'a>, LexError> {
        let mut i = start + 1;
        if self.at(i).is_ascii_digit() {
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
            return Ok(self.token(TokenKind::Param, start, i));
        }
        if is_ident_start(self.at(i)) {
            while is_ident_start(self.at(i)) || self.at(i).is_ascii_digit() {
                i += 1;
            }
        }
        if self.at(i) != b'$' {
            return Ok(self.token(TokenKind::Other, start, start + 1));
        }
        let bytes = self.src.as_bytes();
        let delimiter = &bytes[start..=i];
        let body = i + 1;
        let close = bytes[body..].windows(delimiter.len()).position(|w| w == delimiter);
        match close {
            Some(at) => Ok(self.token(TokenKind::DollarString, start, body + at + delimiter.len())),
            None => Err(LexError {
                offset: start,
                message: "unterminated dollar-quoted string",
            }),
        }
    }

    /// Digits with `_`, a fraction, an exponent; `0x`/`0o`/`0b` integers. Trailing letters are a separate token (the
    /// server rejects them or, before 15, read them as the next word — either way no keyword is hidden).
    fn number(&self, start: usize) -> usize {
        let digits = |mut i: usize, ok: fn(u8) -> bool| {
            while ok(self.at(i)) || (self.at(i) == b'_' && ok(self.at(i + 1))) {
                i += 1;
            }
            i
        };
        let radix: Option<fn(u8) -> bool> = match self.at(start + 1) | 0x20 {
            b'x' => Some(|c| c.is_ascii_hexdigit()),
            b'o' => Some(|c| (b'0'..=b'7').contains(&c)),
            b'b' => Some(|c| c == b'0' || c == b'1'),
            _ => None,
        };
        if let Some(ok) = radix.filter(|ok| self.at(start) == b'0' && ok(self.at(start + 2))) {
            return digits(start + 2, ok);
        }
        let mut i = digits(start, |c| c.is_ascii_digit());
        if self.at(i) == b'.' && self.at(i + 1) != b'.' {
            i = digits(i + 1, |c| c.is_ascii_digit());
        }
        if self.at(i) | 0x20 == b'e' {
            let sign = usize::from(matches!(self.at(i + 1), b'+' | b'-'));
            if self.at(i + 1 + sign).is_ascii_digit() {
                i = digits(i + 1 + sign, |c| c.is_ascii_digit());
            }
        }
        i
    }

    /// A word, or a prefixed literal: `E'…'`, `B'…'`, `X'…'`, `U&'…'`, `U&"…"`.
    fn word(&mut self, start: usize) -> Result<Option<Token<'a>>, LexError> {
        let literal = match (self.at(start) | 0x20, self.at(start + 1)) {
            (b'e', b'\'') => Some((start + 1, Quote::Escaped, TokenKind::String)),
            (b'b' | b'x', b'\'') => Some((start + 1, Quote::Bits, TokenKind::String)),
            (b'u', b'&') => match self.at(start + 2) {
                b'\'' => Some((start + 2, Quote::Doubled(b'\''), TokenKind::String)),
                b'"' => Some((start + 2, Quote::Doubled(b'"'), TokenKind::QuotedIdent)),
                _ => None,
            },
            _ => None,
        };
        if let Some((open, mode, kind)) = literal {
            let end = self.quoted(start, open, mode)?;
            return Ok(Some(self.token(kind, start, end)));
        }
        let end = self.scan_while(start + 1, is_ident_cont);
        Ok(Some(self.token(TokenKind::Word, start, end)))
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Result<Token<'a>, LexError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.lex().transpose();
        if !matches!(item, Some(Ok(_))) {
            self.done = true;
        }
        item
    }
}

const IDENT_START: u8 = 1;
const IDENT_CONT: u8 = 2;
const OP_CHAR: u8 = 4;

/// Character classes of `scan.l`: ident_start `[A-Za-z_\x80-\xff]`, ident_cont (plus `[0-9$]`), op_chars.
static CLASS: [u8; 256] = {
    let mut table = [0; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            table[i] = IDENT_START | IDENT_CONT;
        } else if c.is_ascii_digit() || c == b'$' {
            table[i] = IDENT_CONT;
        }
        i += 1;
    }
    let ops = b"~!@#^&|`?+-*/%<>=";
    let mut j = 0;
    while j < ops.len() {
        table[ops[j] as usize] = OP_CHAR;
        j += 1;
    }
    table
};

fn is_ident_start(c: u8) -> bool {
    CLASS[c as usize] & IDENT_START != 0
}

fn is_ident_cont(c: u8) -> bool {
    CLASS[c as usize] & IDENT_CONT != 0
}

fn is_op_char(c: u8) -> bool {
    CLASS[c as usize] & OP_CHAR != 0
}

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1 bytes); longer ones are cut on a character boundary.
pub const MAX_IDENTIFIER_LEN: usize = 63;

/// Feeds `push` the characters of an identifier token's text as PostgreSQL stores the name: unquoted → ASCII
/// lower-cased, quoted → without the quotes and with `""` → `"`; cut to [`MAX_IDENTIFIER_LEN`] bytes. Returns false
/// (pushing nothing) for `U&"…"`, whose escapes are not decoded: callers must then assume the worst.
pub fn fold_identifier(text: &str, mut push: impl FnMut(char)) -> bool {
    let (inner, quoted) = match text.as_bytes().first() {
        Some(b'"') => (text.get(1..text.len().saturating_sub(1)).unwrap_or(""), true),
        Some(b'u' | b'U') if text.as_bytes().get(1) == Some(&b'&') => return false,
        _ => (text, false),
    };
    let (mut len, mut chars) = (0, inner.chars());
    while let Some(mut c) = chars.next() {
        if quoted && c == '"' {
            chars.next(); // the second quote of `""`
        } else if !quoted {
            c = c.to_ascii_lowercase();
        }
        len += c.len_utf8();
        if len > MAX_IDENTIFIER_LEN {
            break;
        }
        push(c);
    }
    true
}

/// An identifier token's text as PostgreSQL stores the name (see [`fold_identifier`]); `None` for `U&"…"`.
/// For session bookkeeping (prepared statement and cursor names), not the hot path.
pub fn identifier(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    fold_identifier(text, |c| out.push(c)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use TokenKind::*;

    fn kinds(sql: &str) -> Vec<(TokenKind, &str)> {
        Lexer::new(sql)
            .map(|t| t.map(|t| (t.kind, t.text)))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn fails(sql: &str) -> bool {
        Lexer::new(sql).any(|t| t.is_err())
    }

    #[test]
    fn words_operators_and_punctuation() {
        assert_eq!(
            kinds("SELECT a.b, x->>'k' FROM t WHERE j @> $1::jsonb;"),
            vec![
                (Word, "SELECT"),
                (Word, "a"),
                (Dot, "."),
                (Word, "b"),
                (Comma, ","),
                (Word, "x"),
                (Operator, "->>"),
                (String, "'k'"),
                (Word, "FROM"),
                (Word, "t"),
                (Word, "WHERE"),
                (Word, "j"),
                (Operator, "@>"),
                (Param, "$1"),
                (Operator, "::"),
                (Word, "jsonb"),
                (Semicolon, ";"),
            ]
        );
        assert_eq!(
            kinds("a$b$ 1.5e-3 .5 0x1F 1_000"),
            vec![
                (Word, "a$b$"),
                (Number, "1.5e-3"),
                (Number, ".5"),
                (Number, "0x1F"),
                (Number, "1_000")
            ]
        );
        assert_eq!(kinds("1FOR"), vec![(Number, "1"), (Word, "FOR")]);
    }

    #[test]
    fn comments_are_skipped_and_nest() {
        assert_eq!(kinds("/* a /* b */ c */ x -- y\n z"), vec![(Word, "x"), (Word, "z")]);
        assert_eq!(kinds("1 +-- c\n2"), vec![(Number, "1"), (Operator, "+"), (Number, "2")]);
        assert_eq!(
            kinds("1 */* c */ 2"),
            vec![(Number, "1"), (Operator, "*"), (Number, "2")]
        );
        assert!(fails("/* a /* b */"));
        assert_eq!(kinds("/*/ x */ y"), vec![(Word, "y")]);
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(kinds("'it''s' x"), vec![(String, "'it''s'"), (Word, "x")]);
        assert_eq!(kinds(r"'a\' x"), vec![(String, r"'a\'"), (Word, "x")]);
        assert_eq!(kinds(r"E'a\'b' x"), vec![(String, r"E'a\'b'"), (Word, "x")]);
        assert_eq!(kinds(r"e'\\' x"), vec![(String, r"e'\\'"), (Word, "x")]);
        assert_eq!(
            kinds("U&'d\\0061t' u&\"x\"\"\""),
            vec![(String, "U&'d\\0061t'"), (QuotedIdent, "u&\"x\"\"\"")]
        );
        assert_eq!(kinds("B'10' X'1F'"), vec![(String, "B'10'"), (String, "X'1F'")]);
        assert_eq!(kinds("B'1''0'"), vec![(String, "B'1'"), (String, "'0'")]);
        assert_eq!(kinds("\"a\"\"b\" c"), vec![(QuotedIdent, "\"a\"\"b\""), (Word, "c")]);
        assert!(fails("'abc"));
        assert!(fails(r"E'abc\'"));
        assert!(fails("\"abc"));
        // With standard_conforming_strings off a backslash escapes the quote in a plain literal.
        let off: Vec<_> = Lexer::new(r"'a\'b' x")
            .standard_conforming_strings(false)
            .map(|t| t.unwrap().text)
            .collect();
        assert_eq!(off, vec![r"'a\'b'", "x"]);
    }

    #[test]
    fn continuation_keeps_the_escape_mode() {
        // The server reads E'x' newline '\'' ... as one E-string: \' is an escaped quote there too.
        assert_eq!(kinds("E'x'\n'\\'' y"), vec![(String, "E'x'\n'\\''"), (Word, "y")]);
        assert_eq!(
            kinds("'a' -- c\n  'b' y"),
            vec![(String, "'a' -- c\n  'b'"), (Word, "y")]
        );
        assert_eq!(kinds("'a' 'b'"), vec![(String, "'a'"), (String, "'b'")]);
    }

    #[test]
    fn dollar_quotes_and_params() {
        assert_eq!(
            kinds("$$ DELETE; $$ x"),
            vec![(DollarString, "$$ DELETE; $$"), (Word, "x")]
        );
        assert_eq!(
            kinds("$f$ $$ $g$ $f$;"),
            vec![(DollarString, "$f$ $$ $g$ $f$"), (Semicolon, ";")]
        );
        assert_eq!(kinds("$12 $x"), vec![(Param, "$12"), (Other, "$"), (Word, "x")]);
        assert!(fails("$a$ never closed $b$"));
    }

    #[test]
    fn stops_at_nul_like_the_server() {
        assert_eq!(
            kinds("SELECT 1\0; DELETE FROM t"),
            vec![(Word, "SELECT"), (Number, "1")]
        );
        assert!(fails("SELECT '\0'"));
    }

    #[test]
    fn identifiers_fold_like_postgres() {
        assert_eq!(identifier("NextVal").as_deref(), Some("nextval"));
        assert_eq!(identifier("\"NextVal\"").as_deref(), Some("NextVal"));
        assert_eq!(identifier("\"a\"\"b\"").as_deref(), Some("a\"b"));
        assert_eq!(identifier("U&\"x\""), None);
        let long = "x".repeat(70);
        assert_eq!(identifier(&long).map(|s| s.len()), Some(63));
        let wide = format!("\"{}\"", "é".repeat(40)); // 80 bytes: cut to 31 whole characters
        assert_eq!(identifier(&wide).map(|s| s.chars().count()), Some(31));
    }
}
