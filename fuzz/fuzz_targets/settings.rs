//! Fuzz target `settings`: a client's startup parameters through `pool::Settings::from_startup` (libpq's `options`
//! string above all: `-c name=value`, `--name=value`, backslash escapes), and the statement `Settings::sync_sql`
//! writes from them for a server connection that carries other settings. That statement is SQL built from client
//! text, so beyond "no panic": the server's lexer must read it the same with `standard_conforming_strings` on and
//! off (a pooled connection may have either), as one `SELECT pg_catalog.set_config(name, value, false), …` that
//! gives every differing setting the client's exact name and value, then one `RESET` per setting the server has and
//! the client lacks — no value or name may end a string or a statement early. An error for the client must reach it
//! whole.
//!
//! Input: `name\0value\0` pairs as in a StartupMessage, the client's, then an empty name, then the server
//! connection's (as its ParameterStatus messages set them). Bytes that are not UTF-8 are replaced.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgsplit::pool::Settings;
use pgsplit::protocol::error::SqlError;
use pgsplit::protocol::frame::read_cstr;
use pgsplit::router::{ClientEncoding, FunctionSet, Lexer, StatementKind, Token, TokenKind, statements};
use pgsplit_fuzz::check_error_reaches_peer;

fuzz_target!(|data: &[u8]| {
    let (client, rest) = pairs(data);
    let (server_pairs, _) = pairs(rest);
    let client = match Settings::from_startup(&client) {
        Ok(client) => client,
        // The session refuses the login with FATAL 08P01 and this text.
        Err(message) => return check_error_reaches_peer(&SqlError::protocol_violation(message)),
    };
    let _ = client.is_on("default_transaction_read_only");
    if let Some(encoding) = client.get("client_encoding") {
        let _ = ClientEncoding::named(encoding);
    }
    let mut server = Settings::default();
    for (name, value) in &server_pairs {
        server.set(name, value);
    }
    assert_eq!(
        client.sync_sql(&client),
        None,
        "nothing to do on a connection that matches"
    );
    assert_eq!(client.sync_sql(&client.clone()), None);

    // What must change: every client value the server lacks or has otherwise (set), every server setting the client
    // lacks (reset).
    let set: Vec<(String, &str)> = client
        .values()
        .filter(|(name, value)| server.get(name) != Some(value))
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    let reset: Vec<String> = server
        .values()
        .filter(|(name, _)| client.get(name).is_none())
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    let Some(sql) = client.sync_sql(&server) else {
        assert!(set.is_empty() && reset.is_empty(), "no statement for {set:?} {reset:?}");
        return;
    };
    let on: Vec<Token> = Lexer::new(&sql)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{sql:?} does not lex: {e:?}"));
    let off: Vec<Token> = Lexer::new(&sql)
        .standard_conforming_strings(false)
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{sql:?} does not lex with standard_conforming_strings off: {e:?}"));
    assert_eq!(on, off, "{sql:?} reads otherwise with standard_conforming_strings off");

    let mut tokens = on.as_slice();
    if !set.is_empty() {
        tokens = check_set_config(tokens, &set, &sql);
    }
    let functions = FUNCTIONS.get_or_init(FunctionSet::default);
    let rest = tokens.first().map_or("", |token| &sql[token.start..]);
    let resets: Vec<_> = statements(rest, functions).collect();
    assert_eq!(
        resets.len(),
        reset.len(),
        "{rest:?} is not one RESET per setting: {reset:?}"
    );
    for (statement, wanted) in resets.iter().zip(&reset) {
        let text = statement.span.text(rest);
        assert!(text.starts_with("RESET \""), "{text:?} in {sql:?}");
        // A name the classifier does not take for a setting (three dotted parts, say) is still one RESET.
        if let StatementKind::Reset { name } = statement.kind {
            let folded: String = wanted
                .chars()
                .filter(|c| !matches!(c, '"' | ' ' | '\t' | '\n' | '\r'))
                .collect();
            assert_eq!(name.setting(rest), folded, "{text:?} in {sql:?}");
        }
    }
});

/// Checks `SELECT pg_catalog.set_config('name', 'value', false), …;` against `set`, in order; returns what follows.
fn check_set_config<'t, 'a>(tokens: &'t [Token<'a>], set: &[(String, &str)], sql: &str) -> &'t [Token<'a>] {
    let (select, mut tokens) = tokens.split_first().unwrap_or_else(|| panic!("{sql:?} is empty"));
    assert!(select.is_keyword("SELECT"), "{sql:?} does not start with SELECT");
    for (i, (name, value)) in set.iter().enumerate() {
        let call = tokens
            .get(..10)
            .unwrap_or_else(|| panic!("{sql:?} ends inside call {i}"));
        let kinds: Vec<TokenKind> = call.iter().map(|t| t.kind).collect();
        use TokenKind::*;
        assert_eq!(
            kinds,
            [Word, Dot, Word, LParen, String, Comma, String, Comma, Word, RParen],
            "call {i} in {sql:?}"
        );
        assert!(call[0].is_keyword("pg_catalog") && call[2].is_keyword("set_config") && call[8].is_keyword("false"));
        assert_eq!(unquote(call[4].text), *name, "the name of call {i} in {sql:?}");
        assert_eq!(unquote(call[6].text), *value, "the value of call {i} in {sql:?}");
        tokens = &tokens[10..];
        let separator = if i + 1 == set.len() {
            TokenKind::Semicolon
        } else {
            TokenKind::Comma
        };
        assert_eq!(
            tokens.first().map(|t| t.kind),
            Some(separator),
            "after call {i} in {sql:?}"
        );
        tokens = &tokens[1..];
    }
    tokens
}

/// The text a string literal stands for: `'…'` with `''`, or `E'…'` with `''` and `\\` (all escape_literal writes).
fn unquote(literal: &str) -> String {
    let (escaped, body) = match literal.strip_prefix(['E', 'e']) {
        Some(rest) => (true, rest),
        None => (false, literal),
    };
    let body = body
        .strip_prefix('\'')
        .and_then(|b| b.strip_suffix('\''))
        .unwrap_or_else(|| panic!("{literal:?} is not a quoted literal"));
    let mut text = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '\\' if c == '\'' || escaped => {
                assert_eq!(chars.next(), Some(c), "a lone {c:?} in {literal:?}");
                text.push(c);
            }
            c => text.push(c),
        }
    }
    text
}

static FUNCTIONS: OnceLock<FunctionSet> = OnceLock::new();

/// `name\0value\0` pairs up to an empty name or the end, and what follows.
fn pairs(mut bytes: &[u8]) -> (Vec<(String, String)>, &[u8]) {
    let mut pairs = Vec::new();
    while let Some((name, rest)) = read_cstr(bytes) {
        if name.is_empty() {
            return (pairs, rest);
        }
        let Some((value, rest)) = read_cstr(rest) else { break };
        let text = |b| String::from_utf8_lossy(b).into_owned();
        pairs.push((text(name), text(value)));
        bytes = rest;
    }
    (pairs, &[])
}
