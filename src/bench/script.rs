//! Transaction scripts in pgbench's format: SQL commands ending in `;` (over as many lines as they need), and
//! the meta-commands `\set NAME EXPRESSION` and `\sleep N [us|ms|s]`. `:name` in SQL is replaced by the variable's
//! value — spliced in as text for the simple protocol, sent as a `$n` parameter otherwise (`expr` has the
//! expressions). Every problem is reported at parse time as `file:line: what`, so a run never starts with a script
//! that cannot work.
//!
//! Owns parsing scripts; never talks to a server.

use std::fmt::Write as _;
use std::time::Duration;

use super::expr::{Expr, ExprParser};

/// Variables every script has, in these slots.
pub const SCALE: usize = 0;
pub const CLIENT_ID: usize = 1;
const PREDEFINED: [&str; 2] = ["scale", "client_id"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {what}")]
pub struct ScriptError {
    pub file: String,
    pub line: usize,
    pub what: String,
}

/// A parsed script: what one transaction runs.
#[derive(Debug, Clone)]
pub struct Script {
    pub name: String,
    pub commands: Vec<Command>,
    /// Variable names by slot (the predefined ones first).
    pub variables: Vec<String>,
    /// Some statement may write: one that does not start with SELECT, SHOW, VALUES, TABLE, EXPLAIN or a
    /// transaction-control or SET word. Such transactions count for the write-pause figures.
    pub writes: bool,
}

#[derive(Debug, Clone)]
pub enum Command {
    Sql(Sql),
    Set { slot: usize, expr: Expr },
    Sleep { amount: Expr, unit: Duration },
}

/// One SQL statement with its variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Sql {
    pieces: Vec<Piece>,
    /// The text with `$1`, `$2`, … in place of the variables (extended and prepared protocols).
    pub parameterised: String,
    /// The variable slot behind each `$n`.
    pub params: Vec<usize>,
    /// `Some(true)` if it opens a transaction block (BEGIN, START), `Some(false)` if it ends one.
    pub transaction_block: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Var(usize),
}

impl Sql {
    /// The text with the values spliced in (simple protocol), into `out`.
    pub fn render(&self, values: &[i64], out: &mut String) {
        out.clear();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(slot) => {
                    let _ = write!(out, "{}", values[*slot]);
                }
            }
        }
    }
}

/// Parses `text` (named `file` in messages).
pub fn parse(file: &str, text: &str) -> Result<Script, ScriptError> {
    let mut parser = Parser {
        file,
        text,
        pos: 0,
        variables: PREDEFINED.iter().map(|v| v.to_string()).collect(),
        commands: Vec::new(),
        writes: false,
    };
    parser.run()?;
    if !parser.commands.iter().any(|c| matches!(c, Command::Sql(_))) {
        return Err(ScriptError {
            file: file.into(),
            line: 1,
            what: "no SQL command in the script".into(),
        });
    }
    Ok(Script {
        name: file.into(),
        commands: parser.commands,
        variables: parser.variables,
        writes: parser.writes,
    })
}

struct Parser<'a> {
    file: &'a str,
    text: &'a str,
    pos: usize,
    variables: Vec<String>,
    commands: Vec<Command>,
    writes: bool,
}

impl<'a> Parser<'a> {
    fn error(&self, at: usize, what: impl Into<String>) -> ScriptError {
        ScriptError {
            file: self.file.into(),
            line: self.text[..at.min(self.text.len())].matches('\n').count() + 1,
            what: what.into(),
        }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    fn run(&mut self) -> Result<(), ScriptError> {
        loop {
            self.skip_blank();
            if self.pos >= self.text.len() {
                return Ok(());
            }
            if self.rest().starts_with('\\') {
                self.meta_command()?;
            } else {
                self.sql_command()?;
            }
        }
    }

    /// Whitespace and comments between commands.
    fn skip_blank(&mut self) {
        loop {
            let rest = self.rest();
            let trimmed = rest.trim_start();
            self.pos += rest.len() - trimmed.len();
            if trimmed.starts_with("--") {
                self.pos += trimmed.find('\n').unwrap_or(trimmed.len());
            } else if trimmed.starts_with("/*") {
                self.pos += block_comment_len(trimmed);
            } else {
                return;
            }
        }
    }

    /// `\name args` up to the end of the line; a backslash ending a line continues it.
    fn meta_command(&mut self) -> Result<(), ScriptError> {
        let start = self.pos;
        let mut line = String::new();
        loop {
            let rest = self.rest();
            let end = rest.find('\n').unwrap_or(rest.len());
            let piece = rest[..end].trim_end();
            self.pos += (end + 1).min(rest.len());
            match piece.strip_suffix('\\') {
                Some(continued) if self.pos < self.text.len() => {
                    line.push_str(continued);
                    line.push(' ');
                }
                _ => {
                    line.push_str(piece);
                    break;
                }
            }
        }
        let (name, args) = line[1..].split_once(char::is_whitespace).unwrap_or((&line[1..], ""));
        match name {
            "set" => {
                let (var, expr) = args.trim().split_once(char::is_whitespace).ok_or_else(|| {
                    self.error(
                        start,
                        "\\set needs a variable name and an expression: \\set aid random(1, 1000)",
                    )
                })?;
                if !is_identifier(var) {
                    return Err(self.error(start, format!("\\set: \"{var}\" is not a variable name")));
                }
                let expr = ExprParser::parse(expr, &self.variables).map_err(|what| self.error(start, what))?;
                let slot = self.slot(var);
                self.commands.push(Command::Set { slot, expr });
            }
            "sleep" => {
                let mut words = args.split_whitespace();
                let amount = words
                    .next()
                    .ok_or_else(|| self.error(start, "\\sleep needs a duration: \\sleep 10 ms"))?;
                let amount = ExprParser::parse(amount, &self.variables).map_err(|what| self.error(start, what))?;
                let unit = match words.next() {
                    None | Some("s") => Duration::from_secs(1),
                    Some("ms") => Duration::from_millis(1),
                    Some("us") => Duration::from_micros(1),
                    Some(other) => {
                        return Err(self.error(start, format!("\\sleep: unknown unit \"{other}\" (us, ms or s)")));
                    }
                };
                if let Some(extra) = words.next() {
                    return Err(self.error(start, format!("\\sleep: unexpected \"{extra}\"")));
                }
                self.commands.push(Command::Sleep { amount, unit });
            }
            other => {
                return Err(self.error(
                    start,
                    format!("unknown meta-command \\{other} (bench knows \\set and \\sleep)"),
                ));
            }
        }
        Ok(())
    }

    fn slot(&mut self, name: &str) -> usize {
        match self.variables.iter().position(|v| v == name) {
            Some(slot) => slot,
            None => {
                self.variables.push(name.to_owned());
                self.variables.len() - 1
            }
        }
    }

    /// One statement, up to a `;` outside quotes and comments (or the end of the file).
    fn sql_command(&mut self) -> Result<(), ScriptError> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut pieces = Vec::new();
        let mut text_from = self.pos;
        let mut i = self.pos;
        let end = loop {
            let Some(&b) = bytes.get(i) else { break i };
            let rest = &self.text[i..];
            match b {
                b';' => break i,
                b'\'' | b'"' => i += quoted_len(rest, b).ok_or_else(|| self.error(i, "unterminated quote"))?,
                b'-' if rest.starts_with("--") => i += rest.find('\n').unwrap_or(rest.len()),
                b'/' if rest.starts_with("/*") => i += block_comment_len(rest),
                b'$' => i += dollar_quoted_len(rest).ok_or_else(|| self.error(i, "unterminated $$ quote"))?,
                b':' if rest.starts_with("::") => i += 2,
                b':' if rest[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') => {
                    let name_len = rest[1..]
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len() - 1);
                    let name = &rest[1..1 + name_len];
                    let slot = self.variables.iter().position(|v| v == name).ok_or_else(|| {
                        self.error(
                            i,
                            format!(
                                ":{name} is not set by an earlier \\set (known: {})",
                                self.variables.join(", ")
                            ),
                        )
                    })?;
                    pieces.push(Piece::Text(self.text[text_from..i].to_owned()));
                    pieces.push(Piece::Var(slot));
                    i += 1 + name_len;
                    text_from = i;
                }
                _ => i += 1,
            }
        };
        pieces.push(Piece::Text(self.text[text_from..end].to_owned()));
        self.pos = (end + 1).min(self.text.len());
        // Trailing whitespace is not part of the statement.
        if let Some(Piece::Text(last)) = pieces.last_mut() {
            last.truncate(last.trim_end().len());
        }
        pieces.retain(|p| !matches!(p, Piece::Text(t) if t.is_empty()));
        if pieces.is_empty() {
            return Err(self.error(start, "empty statement (two semicolons in a row?)"));
        }
        let (mut parameterised, mut params) = (String::new(), Vec::new());
        for piece in &pieces {
            match piece {
                Piece::Text(text) => parameterised.push_str(text),
                Piece::Var(slot) => {
                    params.push(*slot);
                    let _ = write!(parameterised, "${}", params.len());
                }
            }
        }
        let word = first_word(&parameterised);
        self.writes |= may_write(&word);
        self.commands.push(Command::Sql(Sql {
            pieces,
            parameterised,
            params,
            transaction_block: transaction_block(&word),
        }));
        Ok(())
    }
}

/// A statement's first word, in capitals.
fn first_word(sql: &str) -> String {
    sql.trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Whether a statement may write, judged by its first word (a conservative guess for the report's figures, not
/// routing: `WITH` and anything unknown count as writes).
fn may_write(word: &str) -> bool {
    !matches!(
        word,
        "SELECT"
            | "SHOW"
            | "VALUES"
            | "TABLE"
            | "EXPLAIN"
            | "BEGIN"
            | "START"
            | "COMMIT"
            | "END"
            | "ROLLBACK"
            | "ABORT"
            | "SET"
            | "RESET"
    )
}

/// `Some(true)` for a statement that opens a transaction block, `Some(false)` for one that ends it.
fn transaction_block(word: &str) -> Option<bool> {
    match word {
        "BEGIN" | "START" => Some(true),
        "COMMIT" | "END" | "ROLLBACK" | "ABORT" => Some(false),
        _ => None,
    }
}

fn is_identifier(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Length of `'…'` or `"…"` (doubled quotes inside), or `None` if it does not end.
fn quoted_len(text: &str, quote: u8) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 1;
    loop {
        match bytes.get(i)? {
            b if *b == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            b if *b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// Length of a (nested) `/* … */` comment; an unterminated one runs to the end.
fn block_comment_len(text: &str) -> usize {
    let (mut depth, mut i) = (0usize, 0);
    while i < text.len() {
        if text[i..].starts_with("/*") {
            depth += 1;
            i += 2;
        } else if text[i..].starts_with("*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    text.len()
}

/// Length of `$tag$…$tag$` at the start of `text`; 1 for a `$` that opens no quote (`$1`); `None` if unterminated.
fn dollar_quoted_len(text: &str) -> Option<usize> {
    let after = &text[1..];
    let tag_len = after
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(after.len());
    let opens = after[tag_len..].starts_with('$') && !after.starts_with(|c: char| c.is_ascii_digit());
    if !opens {
        return Some(1);
    }
    let tag = &text[..tag_len + 2];
    let body = &text[tag.len()..];
    body.find(tag).map(|end| tag.len() + end + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn sql(script: &Script, index: usize) -> &Sql {
        match &script.commands[index] {
            Command::Sql(sql) => sql,
            other => panic!("command {index} is {other:?}"),
        }
    }

    #[test]
    fn variables_become_text_or_parameters() {
        let script = parse(
            "t.sql",
            "\\set aid random(1, 100000 * :scale)\n\\set d -5\nUPDATE a SET b = b + :d\n  WHERE aid = :aid;\n",
        )
        .unwrap();
        assert_eq!(script.variables, ["scale", "client_id", "aid", "d"]);
        let update = sql(&script, 2);
        assert_eq!(update.parameterised, "UPDATE a SET b = b + $1\n  WHERE aid = $2");
        assert_eq!(update.params, [3, 2]);
        let mut out = String::new();
        update.render(&[1, 0, 42, -5], &mut out);
        assert_eq!(out, "UPDATE a SET b = b + -5\n  WHERE aid = 42");
        assert!(script.writes);
    }

    #[test]
    fn transaction_blocks_are_known_by_their_first_word() {
        let script = parse("t.sql", "begin isolation level serializable;\nSELECT 1;\n  END;").unwrap();
        let blocks: Vec<_> = (0..3).map(|i| sql(&script, i).transaction_block).collect();
        assert_eq!(blocks, [Some(true), None, Some(false)]);
    }

    #[test]
    fn quotes_comments_and_casts_are_left_alone() {
        let script = parse(
            "t.sql",
            "-- a comment; with a semicolon\nSELECT ':x;', \"a;b\", 1::int, $$ :y; $$ /* :z; */;\nSELECT $1",
        )
        .unwrap();
        assert_eq!(script.commands.len(), 2);
        assert_eq!(
            sql(&script, 0).parameterised,
            "SELECT ':x;', \"a;b\", 1::int, $$ :y; $$ /* :z; */"
        );
        assert_eq!(
            sql(&script, 1).parameterised,
            "SELECT $1",
            "the last command needs no semicolon"
        );
        assert!(!script.writes);
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let cases = [
            ("SELECT 1;\n\\seet x 1\n", "t.sql:2: unknown meta-command \\seet"),
            (
                "\\set x random(1)\nSELECT :x;",
                "t.sql:1: random() takes 2 arguments, not 1",
            ),
            ("\\set x 1 +\nSELECT :x;", "t.sql:1: the expression ends too soon"),
            (
                "\\set x 1.5\nSELECT :x;",
                "t.sql:1: \"1.5\": only whole numbers are supported",
            ),
            ("\\set x foo(1)\nSELECT :x;", "t.sql:1: unknown function foo()"),
            (
                "SELECT 1;\n\nSELECT :nope;",
                "t.sql:3: :nope is not set by an earlier \\set",
            ),
            ("SELECT 'open;\n", "t.sql:1: unterminated quote"),
            ("SELECT 1;;", "t.sql:1: empty statement"),
            (
                "\\sleep 10 weeks\nSELECT 1;",
                "t.sql:1: \\sleep: unknown unit \"weeks\"",
            ),
            ("-- nothing\n\\set x 1\n", "t.sql:1: no SQL command in the script"),
        ];
        for (text, expected) in cases {
            let error = parse("t.sql", text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn meta_commands_continue_over_a_trailing_backslash() {
        let script = parse("t.sql", "\\set x 1 + \\\n  2\n\\sleep :x ms\nSELECT :x;").unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        match &script.commands[0] {
            Command::Set { expr, .. } => assert_eq!(expr.eval(&[1, 0, 0], &mut rng), Ok(3)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(script.commands[1], Command::Sleep { unit, .. } if unit == Duration::from_millis(1)));
    }
}
