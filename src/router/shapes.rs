//! Statement shapes: a statement's tokens with constants and parameters left out, hashed — the same query with
//! other literals has the same shape. [`KnownWrites`] remembers the shapes a follower refused as writes (25006),
//! so they go straight to the leader next time (SPEC §3.5). [`mask_numbers`] is a cheaper, narrower kin for the
//! per-query hot path: the text with only the values of its numbers hidden. Pure data; no I/O.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hasher};
use std::ops::Range;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::lexer::{Lexer, TokenKind};

/// Shapes remembered at most; past it the oldest knowledge is dropped wholesale (the safety net still catches).
const CAPACITY: usize = 10_000;

/// The hash of `sql`'s shape. Text that stops lexing hashes up to that point.
pub fn fingerprint(sql: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    for token in Lexer::new(sql) {
        let Ok(token) = token else { break };
        match token.kind {
            TokenKind::String | TokenKind::DollarString | TokenKind::Number | TokenKind::Param => hasher.write_u8(b'?'),
            TokenKind::Word => {
                for byte in token.text.bytes() {
                    hasher.write_u8(byte.to_ascii_lowercase());
                }
            }
            _ => hasher.write(token.text.as_bytes()),
        }
        hasher.write_u8(0);
    }
    hasher.finish()
}

/// Calls `digits` with the byte range of each run of ASCII digits in the text `bytes` that the lexer reads as (part
/// of) a numeric constant, in order: not a digit of a word (`t1`), a parameter (`$1`), a string, a quoted identifier
/// or a comment. One pass over the bytes, following the lexer's rules for where strings, quoted identifiers and
/// comments end. Bytes, not `str`: non-ASCII bytes are word bytes, as the lexer's letters are, so the scan may run
/// before the text is known to be UTF-8.
///
/// Returns `None` — and the ranges reported so far mean nothing — for text this scan does not follow as exactly as
/// the lexer: a backslash (escape strings, `standard_conforming_strings = off`), a dollar quote, a NUL, text that does
/// not lex to its end, and a digit run followed by a letter (`1e5`, `0x1F`, `1_000`), where the lexer's rules
/// depend on the digits.
pub fn number_digits(bytes: &[u8], mut digits: impl FnMut(Range<usize>)) -> Option<()> {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    let mut i = 0;
    loop {
        i = skip_plain(bytes, i);
        let Some(&c) = bytes.get(i) else {
            return Some(());
        };
        // The word the skipped bytes end with runs on through digits and `$` (`t1`, `a$b`).
        if i > 0 && BYTE_CLASS[bytes[i - 1] as usize] == WORD && WORD_CONTINUES[c as usize] {
            i = word_end(bytes, i);
            continue;
        }
        match BYTE_CLASS[c as usize] {
            DIGIT => {
                let start = i;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
                // The lexer's number would go on: `1e5`, `0x1F`, `1_000`, `1.e5`, `1._5`.
                let next = if at(i) == b'.' && at(i + 1) != b'.' {
                    at(i + 1)
                } else {
                    at(i)
                };
                if matches!(BYTE_CLASS[next as usize], WORD | DOLLAR) {
                    return None;
                }
                digits(start..i);
            }
            QUOTE => {
                // `''` / `""` inside stand for one quote; B'…' and X'…' end at the first quote, but the lexer then
                // opens a new literal at the next, so the text between is literal all the same.
                i += 1;
                loop {
                    match at(i) {
                        0 | b'\\' => return None,
                        q if q == c && at(i + 1) == c => i += 2,
                        q if q == c => break,
                        _ => i += 1,
                    }
                }
                i += 1;
            }
            DASH if at(i + 1) == b'-' => {
                while !matches!(at(i), b'\n' | b'\r' | 0) {
                    i += 1;
                }
            }
            SLASH if at(i + 1) == b'*' => {
                let mut depth = 1u32;
                i += 2;
                while depth > 0 {
                    match (at(i), at(i + 1)) {
                        (0, _) => return None,
                        (b'/', b'*') => (depth, i) = (depth + 1, i + 2),
                        (b'*', b'/') => (depth, i) = (depth - 1, i + 2),
                        _ => i += 1,
                    }
                }
            }
            DASH | SLASH => i += 1,
            // `$1` (not within a word: those were skipped whole). After it the lexer starts a new token, and `$`
            // there opens a dollar quote; any other `$` is a dollar quote or the server's syntax error.
            DOLLAR if at(i + 1).is_ascii_digit() => {
                i += 1;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
                if at(i) == b'$' {
                    return None;
                }
            }
            // A dollar quote, a backslash (escape strings, `standard_conforming_strings = off`) or a NUL.
            _ => return None,
        }
    }
}

/// Where the run of PLAIN and WORD bytes from `i` ends: the bytes that need no look, most of a statement. Eight
/// bytes a step.
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    let plain = |c: u8| matches!(BYTE_CLASS[c as usize], PLAIN | WORD);
    while let Some(&[a, b, c, d, e, f, g, h]) = bytes.get(i..i + 8) {
        if !(plain(a) & plain(b) & plain(c) & plain(d) & plain(e) & plain(f) & plain(g) & plain(h)) {
            break;
        }
        i += 8;
    }
    while bytes.get(i).is_some_and(|&c| plain(c)) {
        i += 1;
    }
    i
}

/// Where the word whose byte at `i` continues it ends. A word runs on through digits and `$`, as the lexer's does
/// (`t1`, `a$b`). Four bytes a step: most of a statement is keywords and names.
fn word_end(bytes: &[u8], mut i: usize) -> usize {
    let continues = |c: u8| WORD_CONTINUES[c as usize];
    while let Some(&[a, b, c, d]) = bytes.get(i..i + 4) {
        if !(continues(a) & continues(b) & continues(c) & continues(d)) {
            break;
        }
        i += 4;
    }
    while bytes.get(i).is_some_and(|&c| continues(c)) {
        i += 1;
    }
    i
}

/// The lexer's identifier bytes after the first: `[A-Za-z_\x80-\xff0-9$]`.
static WORD_CONTINUES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = matches!(BYTE_CLASS[i], WORD | DIGIT | DOLLAR);
        i += 1;
    }
    table
};

const PLAIN: u8 = 0;
const WORD: u8 = 1;
const DIGIT: u8 = 2;
const QUOTE: u8 = 3;
const DASH: u8 = 4;
const SLASH: u8 = 5;
const DOLLAR: u8 = 6;
const STOP: u8 = 7;

/// What each byte is to [`number_digits`]: the lexer's identifier bytes `[A-Za-z_\x80-\xff]` are WORD.
static BYTE_CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        table[i] = match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'_' | 0x80..=0xff => WORD,
            b'0'..=b'9' => DIGIT,
            b'\'' | b'"' => QUOTE,
            b'-' => DASH,
            b'/' => SLASH,
            b'$' => DOLLAR,
            b'\\' | 0 => STOP,
            _ => PLAIN,
        };
        i += 1;
    }
    table
};

/// Writes the text `bytes` into `out` (cleared first) with the values of its numbers hidden, and returns whether any
/// was: each run of digits [`number_digits`] reports becomes `2`, except the runs `0` and `1`, which stay as they are
/// because the classifier reads those values (`EXPLAIN (ANALYZE 0)`, `SET LOCAL transaction_read_only = 1`). Texts
/// with the same output therefore lex to the same tokens but for the values of numbers the classifier does not tell
/// apart. When nothing is hidden (no number, or text `number_digits` does not follow), `out` holds the text as it is.
pub fn mask_numbers(bytes: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let mut copied = 0;
    let followed = number_digits(bytes, |run| {
        out.extend_from_slice(&bytes[copied..run.start]);
        out.push(match &bytes[run.clone()] {
            b"0" => b'0',
            b"1" => b'1',
            _ => b'2',
        });
        copied = run.end;
    });
    if followed.is_none() || copied == 0 {
        out.clear();
        out.extend_from_slice(bytes);
        return false;
    }
    out.extend_from_slice(&bytes[copied..]);
    true
}

/// `sql` with each digit run [`number_digits`] reports replaced by another that [`mask_numbers`] does not tell apart
/// from it: the texts an analysis kept by masked key is used for.
#[cfg(test)]
pub fn with_other_values(sql: &str) -> Option<String> {
    let mut runs = Vec::new();
    number_digits(sql.as_bytes(), |run| runs.push(run))?;
    let mut out = String::new();
    let mut copied = 0;
    for run in runs {
        out.push_str(&sql[copied..run.start]);
        out.push_str(match &sql[run.clone()] {
            "0" => "0",
            "1" => "1",
            "98765" => "2",
            _ => "98765",
        });
        copied = run.end;
    }
    out.push_str(&sql[copied..]);
    Some(out)
}

#[derive(Default)]
pub struct KnownWrites {
    shapes: RwLock<HashSet<u64>>,
    /// Lets the common case (nothing learned yet) skip fingerprinting and the lock.
    any: AtomicBool,
}

impl KnownWrites {
    pub fn remember(&self, shape: u64) {
        let mut shapes = self.shapes.write().unwrap_or_else(|p| p.into_inner());
        if shapes.len() >= CAPACITY {
            shapes.clear();
        }
        shapes.insert(shape);
        self.any.store(true, Ordering::Release);
    }

    /// Whether the shape of the text `sql` drew 25006 from a follower before.
    pub fn contains(&self, sql: &[u8]) -> bool {
        self.any.load(Ordering::Acquire)
            && std::str::from_utf8(sql).is_ok_and(|sql| {
                self.shapes
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&fingerprint(sql))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_parameters_do_not_change_the_shape() {
        assert_eq!(fingerprint("SELECT f(1, 'a')"), fingerprint("select F( 22 ,  'bcd' )"));
        assert_eq!(fingerprint("SELECT f($1)"), fingerprint("SELECT f($2)"));
        assert_ne!(fingerprint("SELECT f(1)"), fingerprint("SELECT g(1)"));
        assert_ne!(fingerprint("SELECT \"F\"(1)"), fingerprint("SELECT f(1)"));
    }

    #[test]
    fn remembered_shapes_are_found_by_any_literal() {
        let known = KnownWrites::default();
        assert!(!known.contains(b"SELECT bump(1)"));
        known.remember(fingerprint("SELECT bump(1)"));
        assert!(known.contains(b"SELECT bump(99)"));
        assert!(!known.contains(b"SELECT other(1)"));
    }
}

#[cfg(test)]
mod number_tests {
    use super::*;

    fn masked(sql: &str) -> Option<String> {
        let mut out = Vec::new();
        mask_numbers(sql.as_bytes(), &mut out).then(|| String::from_utf8(out).expect("masking keeps UTF-8"))
    }

    #[test]
    fn number_values_are_hidden_but_zero_and_one() {
        let cases = [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 45123;",
                "SELECT abalance FROM pgbench_accounts WHERE aid = 2;",
            ),
            (
                "UPDATE t SET v = v + -1234 WHERE id = 7",
                "UPDATE t SET v = v + -2 WHERE id = 2",
            ),
            ("SELECT 0, 1, 00, 10, 1.5, .25, 3.", "SELECT 0, 1, 2, 2, 1.2, .2, 2."),
            ("SELECT t1.c2 FROM t1 WHERE x = 5", "SELECT t1.c2 FROM t1 WHERE x = 2"),
            (
                "SELECT 'a 12', \"col 3\", x -- 45\n, 6 /* 7 /* 8 */ 9 */ + 10",
                "SELECT 'a 12', \"col 3\", x -- 45\n, 2 /* 7 /* 8 */ 9 */ + 2",
            ),
            ("SELECT $1 + 22, a$2 - 33", "SELECT $1 + 2, a$2 - 2"),
            (
                "SELECT 'it''s 5', \"a\"\"9\" || 42",
                "SELECT 'it''s 5', \"a\"\"9\" || 2",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(masked(sql).as_deref(), Some(want), "{sql}");
        }
    }

    #[test]
    fn text_the_scan_cannot_follow_exactly_is_kept_whole() {
        for sql in [
            "SELECT 1e5",
            "SELECT 1.e5",
            "SELECT 345._12",
            "SELECT 0x1F",
            "SELECT 1_000",
            "SELECT 2abc",
            "SELECT E'\\'', 5",
            "SELECT $$ 5 $$",
            "SELECT $q$ 5 $q$",
            "SELECT 'open 5",
            "SELECT \"open 5",
            "SELECT 5 /* open",
            "SELECT 5\0 6",
            "SELECT name FROM t",
            "SELECT \"f1\"(), \"1\"()",
        ] {
            let mut out = Vec::new();
            assert!(!mask_numbers(sql.as_bytes(), &mut out), "{sql}");
            assert_eq!(out, sql.as_bytes(), "{sql}");
        }
    }

    /// Texts made of the pieces the lexer's rules turn on, in random order (a fixed seed, so a failure repeats).
    fn random_texts(count: usize) -> Vec<String> {
        const PIECES: [&str; 34] = [
            "SELECT", " ", " ", "\n", "'", "\"", "''", "1", "0", "12", "345", "a", "t1", "$", "$1", "$$", "--", "/*",
            "*/", ".", "e", "x", "_", "(", ")", ";", "E'", "U&\"", "B'", "+", "-", "\\", "é", "::",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..count)
            .map(|_| {
                let len = 1 + next() % 16;
                (0..len)
                    .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    /// Token kinds, and texts but for numbers: what must not change when only hidden values do.
    fn tokens(sql: &str) -> Result<Vec<(crate::router::TokenKind, String)>, crate::router::LexError> {
        Lexer::new(sql)
            .map(|t| {
                t.map(|t| {
                    let text = if t.kind == TokenKind::Number {
                        String::new()
                    } else {
                        t.text.to_string()
                    };
                    (t.kind, text)
                })
            })
            .collect()
    }

    #[test]
    fn reported_digits_are_numbers_to_the_lexer_and_their_values_change_no_other_token() {
        let mut followed = 0;
        for sql in random_texts(50_000) {
            let mut runs = Vec::new();
            if number_digits(sql.as_bytes(), |run| runs.push(run)).is_none() {
                continue;
            }
            followed += 1;
            let lexed: Vec<_> = Lexer::new(&sql).collect::<Result<_, _>>().unwrap_or_else(|e| {
                panic!("{sql:?}: followed by the scan but the lexer stops: {e:?}");
            });
            for run in &runs {
                assert!(
                    lexed
                        .iter()
                        .any(|t| t.kind == TokenKind::Number && t.start <= run.start && run.end <= t.end()),
                    "{sql:?}: digits {run:?} are not inside a number"
                );
            }
            let other = with_other_values(&sql).expect("the variant is followed as well");
            assert_eq!(tokens(&other).ok(), tokens(&sql).ok(), "{sql:?} against {other:?}");
            assert_eq!(masked(&other), masked(&sql), "{sql:?} against {other:?}");
        }
        assert!(followed > 10_000, "only {followed} texts were followed");
    }
}
