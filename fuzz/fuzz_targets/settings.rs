//! Fuzz target `settings`: a client's startup parameters through `pool::Settings::from_startup` (libpq's `options`
//! string above all: `-c name=value`, `--name=value`, backslash escapes), and the statement `Settings::sync_sql`
//! writes from them for a server connection that carries other settings. That statement is SQL built from client
//! text, so beyond "no panic": it must be exactly one `SET` or `RESET` per difference as the server's lexer reads it
//! (with `standard_conforming_strings` on), naming the setting the client named — no value or name may end a string
//! or a statement early. An error for the client must reach it whole.
//!
//! Input: `name\0value\0` pairs as in a StartupMessage, the client's, then an empty name, then the server
//! connection's (as its ParameterStatus messages set them). Bytes that are not UTF-8 are replaced.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pgsplit::pool::Settings;
use pgsplit::protocol::error::SqlError;
use pgsplit::protocol::frame::read_cstr;
use pgsplit::router::{ClientEncoding, FunctionSet, Lexer, StatementKind, statements};
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

    // What must change: every client value the server lacks or has otherwise, every server setting the client lacks.
    let mut expected: Vec<String> = Vec::new();
    for (name, value) in client.values() {
        if server.get(name) != Some(value) {
            expected.push(name.to_ascii_lowercase());
        }
    }
    for (name, _) in server.values() {
        if client.get(name).is_none() {
            expected.push(name.to_ascii_lowercase());
        }
    }
    let Some(sql) = client.sync_sql(&server) else {
        assert!(expected.is_empty(), "no statement for {expected:?}");
        return;
    };
    assert!(Lexer::new(&sql).all(|token| token.is_ok()), "{sql:?} does not lex");
    let functions = FUNCTIONS.get_or_init(FunctionSet::default);
    let written: Vec<_> = statements(&sql, functions).collect();
    assert_eq!(
        written.len(),
        expected.len(),
        "{sql:?} is not one statement per setting: {expected:?}"
    );
    for (statement, wanted) in written.iter().zip(&expected) {
        let text = statement.span.text(&sql);
        assert!(
            text.starts_with("SET \"") || text.starts_with("RESET \""),
            "{text:?} in {sql:?}"
        );
        let name = match statement.kind {
            StatementKind::Set {
                local: false,
                name,
                value: Some(_),
            } => name,
            StatementKind::Reset { name } => name,
            // A name the classifier does not take for a setting (three dotted parts, say): the text is still one
            // SET or RESET, checked above.
            _ => continue,
        };
        let folded: String = wanted
            .chars()
            .filter(|c| !matches!(c, '"' | ' ' | '\t' | '\n' | '\r'))
            .collect();
        assert_eq!(name.setting(&sql), folded, "{text:?} in {sql:?}");
    }
});

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
