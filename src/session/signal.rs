//! `SELECT pg_terminate_backend(pid)` and `SELECT pg_cancel_backend(pid)` of a pid pgsplit issued (a client's
//! BackendKeyData): drivers and their tests signal a connection by the pid it was told, which through a transaction
//! pooler names no server backend. pgsplit answers those itself, acting on the client session that has the pid —
//! ending it, or cancelling its running query — and gives any other pid to the server as it is.
//!
//! Recognised only as the whole query string, with the pid a number or a parameter (`$1`, read from the Bind).
//! Pure recognition and the answer's shape here; the session decides whether a pid is one of pgsplit's.

use bytes::{BufMut, BytesMut};

use crate::router::{Lexer, TokenKind};

/// PostgreSQL's `boolean` and `integer` type oids.
const BOOL_OID: u32 = 16;
const INT4_OID: u32 = 23;

/// One signal by pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal {
    /// `pg_terminate_backend` (true) or `pg_cancel_backend`.
    pub terminate: bool,
    pub pid: Pid,
}

/// Where the pid comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    Given(u32),
    /// The Bind's parameter `index` (0-based).
    Param(usize),
}

impl Signal {
    /// The column name PostgreSQL gives the result.
    pub fn column(&self) -> &'static str {
        if self.terminate {
            "pg_terminate_backend"
        } else {
            "pg_cancel_backend"
        }
    }

    /// The signal with its pid read from a Bind's parameters (`rest`: the Bind body after the statement name);
    /// None if it is not there or not an integer.
    pub fn bound(self, rest: &[u8]) -> Option<Signal> {
        let Pid::Param(index) = self.pid else {
            return Some(self);
        };
        let (formats, values) = bind_parameters(rest)?;
        let format = match formats.len() {
            0 => 0,
            1 => formats[0],
            _ => *formats.get(index)?,
        };
        let value = values.get(index)?.as_ref()?;
        let pid = match (format, value.len()) {
            (0, _) => std::str::from_utf8(value).ok()?.trim().parse().ok()?,
            (1, 4) => u32::try_from(i32::from_be_bytes(value[..4].try_into().ok()?)).ok()?,
            (1, 8) => u32::try_from(i64::from_be_bytes(value[..8].try_into().ok()?)).ok()?,
            _ => return None,
        };
        Some(Signal {
            pid: Pid::Given(pid),
            ..self
        })
    }
}

/// The signal `sql` is, if it is exactly `SELECT [pg_catalog.]pg_terminate_backend(pid)` (or
/// `pg_cancel_backend`), the pid an integer or `$n`, optionally cast to an integer type.
pub fn recognise(sql: &str) -> Option<Signal> {
    let mut tokens = Lexer::new(sql).map_while(Result::ok);
    let mut next = || tokens.next();
    let word = |t: Option<crate::router::Token>, w: &str| {
        t.is_some_and(|t| t.kind == TokenKind::Word && t.text.eq_ignore_ascii_case(w))
    };
    if !word(next(), "select") {
        return None;
    }
    let mut name = next()?;
    if name.kind == TokenKind::Word && name.text.eq_ignore_ascii_case("pg_catalog") {
        if next()?.kind != TokenKind::Dot {
            return None;
        }
        name = next()?;
    }
    let terminate = match name.text.to_ascii_lowercase().as_str() {
        _ if name.kind != TokenKind::Word => return None,
        "pg_terminate_backend" => true,
        "pg_cancel_backend" => false,
        _ => return None,
    };
    if next()?.kind != TokenKind::LParen {
        return None;
    }
    let arg = next()?;
    let pid = match arg.kind {
        TokenKind::Number => Pid::Given(arg.text.parse().ok()?),
        TokenKind::Param => Pid::Param(arg.text.get(1..)?.parse::<usize>().ok()?.checked_sub(1)?),
        _ => return None,
    };
    let mut after = next()?;
    if after.kind == TokenKind::Operator && after.text == "::" {
        let cast = next()?;
        if !["int", "integer", "int4", "int8", "bigint"]
            .iter()
            .any(|t| cast.text.eq_ignore_ascii_case(t))
        {
            return None;
        }
        after = next()?;
    }
    if after.kind != TokenKind::RParen {
        return None;
    }
    match next() {
        None => {}
        Some(t) if t.kind == TokenKind::Semicolon && next().is_none() => {}
        Some(_) => return None,
    }
    Some(Signal { terminate, pid })
}

/// A Bind's parameters: their format codes, and their values (a NULL is `None`).
type Parameters<'a> = (Vec<u16>, Vec<Option<&'a [u8]>>);

/// The parameters of a Bind (`rest`: after the statement name).
fn bind_parameters(rest: &[u8]) -> Option<Parameters<'_>> {
    let mut at = 0;
    let u16_at = |at: &mut usize| -> Option<u16> {
        let v = u16::from_be_bytes(rest.get(*at..*at + 2)?.try_into().ok()?);
        *at += 2;
        Some(v)
    };
    let count = u16_at(&mut at)?;
    let mut formats = Vec::with_capacity(count.into());
    for _ in 0..count {
        formats.push(u16_at(&mut at)?);
    }
    let count = u16_at(&mut at)?;
    let mut values = Vec::with_capacity(count.into());
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let len = usize::try_from(len).ok()?;
        values.push(Some(rest.get(at..at + len)?));
        at += len;
    }
    Some((formats, values))
}

/// The result format a Bind asks for its first column (`rest`: after the statement name): 0 text, 1 binary.
pub fn result_format(rest: &[u8]) -> Option<u16> {
    let (formats, values) = bind_parameters(rest)?;
    let mut at = 2 + 2 * formats.len() + 2;
    at += values.iter().map(|v| 4 + v.map_or(0, <[u8]>::len)).sum::<usize>();
    let count = u16::from_be_bytes(rest.get(at..at + 2)?.try_into().ok()?);
    match count {
        0 => Some(0),
        _ => Some(u16::from_be_bytes(rest.get(at + 2..at + 4)?.try_into().ok()?)),
    }
}

/// ParameterDescription of a signal's statement: one integer parameter, or none for a pid written in.
pub fn parameter_description(out: &mut BytesMut, signal: &Signal) {
    let params: &[u32] = match signal.pid {
        Pid::Param(_) => &[INT4_OID],
        Pid::Given(_) => &[],
    };
    out.put_u8(b't');
    out.put_u32(4 + 2 + 4 * params.len() as u32);
    out.put_u16(params.len() as u16);
    for oid in params {
        out.put_u32(*oid);
    }
}

/// RowDescription of the one boolean column, in `format` (0 text, 1 binary).
pub fn row_description(out: &mut BytesMut, signal: &Signal, format: u16) {
    let name = signal.column().as_bytes();
    out.put_u8(b'T');
    out.put_u32((4 + 2 + name.len() + 1 + 18) as u32);
    out.put_u16(1);
    out.put_slice(name);
    out.put_u8(0);
    out.put_u32(0); // table oid
    out.put_u16(0); // column number
    out.put_u32(BOOL_OID);
    out.put_i16(1); // length
    out.put_i32(-1); // no modifier
    out.put_u16(format);
}

/// DataRow of the answer, in `format`.
pub fn data_row(out: &mut BytesMut, done: bool, format: u16) {
    out.put_u8(b'D');
    out.put_u32(4 + 2 + 4 + 1);
    out.put_u16(1);
    out.put_u32(1);
    out.put_u8(match (format, done) {
        (1, done) => u8::from(done),
        (_, true) => b't',
        (_, false) => b'f',
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_call_is_recognised() {
        let given = |terminate, pid| {
            Some(Signal {
                terminate,
                pid: Pid::Given(pid),
            })
        };
        assert_eq!(
            recognise("SELECT pg_terminate_backend(5000000)"),
            given(true, 5_000_000)
        );
        assert_eq!(recognise("select pg_catalog.pg_cancel_backend(42);"), given(false, 42));
        assert_eq!(
            recognise("SELECT pg_terminate_backend($1::int)"),
            Some(Signal {
                terminate: true,
                pid: Pid::Param(0)
            })
        );
        assert_eq!(
            recognise("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"),
            None
        );
        assert_eq!(recognise("SELECT pg_terminate_backend(1), 2"), None);
        assert_eq!(recognise("SELECT pg_terminate_backend(1); SELECT 1"), None);
        assert_eq!(recognise("SELECT pg_terminate_backend(1, 100)"), None);
        assert_eq!(recognise("SELECT other.pg_terminate_backend(1)"), None);
    }

    #[test]
    fn the_pid_is_read_from_the_bind_in_text_or_binary() {
        let signal = Signal {
            terminate: false,
            pid: Pid::Param(0),
        };
        // No formats (text), one parameter "5000001", no result formats.
        let text = [&[0, 0, 0, 1][..], &7i32.to_be_bytes(), b"5000001", &[0, 0]].concat();
        assert_eq!(signal.bound(&text).map(|s| s.pid), Some(Pid::Given(5_000_001)));
        assert_eq!(result_format(&text), Some(0));
        // Binary int8 pid, binary result.
        let binary = [
            &[0, 1, 0, 1, 0, 1][..],
            &8i32.to_be_bytes(),
            &5_000_002i64.to_be_bytes(),
            &[0, 1, 0, 1],
        ]
        .concat();
        assert_eq!(signal.bound(&binary).map(|s| s.pid), Some(Pid::Given(5_000_002)));
        assert_eq!(result_format(&binary), Some(1));
        let null = [&[0, 0, 0, 1][..], &(-1i32).to_be_bytes(), &[0, 0]].concat();
        assert_eq!(signal.bound(&null), None);
    }
}
