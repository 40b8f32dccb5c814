//! Builders for the few messages pgsplit writes itself (to clients during login, and its own answers), and
//! readers for the fields it needs from server messages. Client messages are never re-encoded: the relay forwards
//! the original bytes.

use bytes::{BufMut, BytesMut};

use super::frame::read_cstr;

/// Transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    Idle,
    InTransaction,
    Failed,
}

impl TxStatus {
    pub fn from_byte(b: u8) -> Option<TxStatus> {
        match b {
            b'I' => Some(TxStatus::Idle),
            b'T' => Some(TxStatus::InTransaction),
            b'E' => Some(TxStatus::Failed),
            _ => None,
        }
    }

    fn as_byte(self) -> u8 {
        match self {
            TxStatus::Idle => b'I',
            TxStatus::InTransaction => b'T',
            TxStatus::Failed => b'E',
        }
    }
}

/// Starts a message with `tag`, runs `body`, and patches in the length.
pub(super) fn message(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u8(tag);
    out.put_u32(0);
    body(out);
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

pub fn put_cstr(out: &mut BytesMut, s: &[u8]) {
    out.put_slice(s);
    out.put_u8(0);
}

pub fn authentication_ok(out: &mut BytesMut) {
    message(out, b'R', |o| o.put_u32(0));
}

pub fn authentication_md5(out: &mut BytesMut, salt: [u8; 4]) {
    message(out, b'R', |o| {
        o.put_u32(5);
        o.put_slice(&salt);
    });
}

pub fn authentication_sasl(out: &mut BytesMut, mechanisms: &[&str]) {
    message(out, b'R', |o| {
        o.put_u32(10);
        for m in mechanisms {
            put_cstr(o, m.as_bytes());
        }
        o.put_u8(0);
    });
}

pub fn authentication_sasl_continue(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |o| {
        o.put_u32(11);
        o.put_slice(data);
    });
}

pub fn authentication_sasl_final(out: &mut BytesMut, data: &[u8]) {
    message(out, b'R', |o| {
        o.put_u32(12);
        o.put_slice(data);
    });
}

pub fn parameter_status(out: &mut BytesMut, name: &str, value: &str) {
    message(out, b'S', |o| {
        put_cstr(o, name.as_bytes());
        put_cstr(o, value.as_bytes());
    });
}

pub fn backend_key_data(out: &mut BytesMut, pid: u32, secret: u32) {
    message(out, b'K', |o| {
        o.put_u32(pid);
        o.put_u32(secret);
    });
}

pub fn ready_for_query(out: &mut BytesMut, status: TxStatus) {
    message(out, b'Z', |o| o.put_u8(status.as_byte()));
}

/// RowDescription for text columns (type `text`, oid 25).
pub fn row_description(out: &mut BytesMut, columns: &[&str]) {
    message(out, b'T', |o| {
        o.put_u16(columns.len() as u16);
        for column in columns {
            put_cstr(o, column.as_bytes());
            o.put_u32(0); // table oid
            o.put_u16(0); // column number
            o.put_u32(25); // text
            o.put_i16(-1); // variable length
            o.put_i32(-1); // no modifier
            o.put_u16(0); // text format
        }
    });
}

pub fn data_row(out: &mut BytesMut, values: &[&str]) {
    message(out, b'D', |o| {
        o.put_u16(values.len() as u16);
        for value in values {
            o.put_u32(value.len() as u32);
            o.put_slice(value.as_bytes());
        }
    });
}

pub fn command_complete(out: &mut BytesMut, tag: &str) {
    message(out, b'C', |o| put_cstr(o, tag.as_bytes()));
}

/// A simple-protocol Query, for the statements pgsplit runs itself on server connections.
pub fn query(out: &mut BytesMut, sql: &[u8]) {
    message(out, b'Q', |o| put_cstr(o, sql));
}

/// The first column of a DataRow body, as text; None for NULL, no columns, or a malformed row.
pub fn first_column(body: &[u8]) -> Option<&str> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok().filter(|_| count > 0)?;
    std::str::from_utf8(body.get(6..6 + len)?).ok()
}

/// Reads a ParameterStatus body into (name, value).
pub fn parse_parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = read_cstr(body)?;
    let (value, _) = read_cstr(rest)?;
    Some((std::str::from_utf8(name).ok()?, std::str::from_utf8(value).ok()?))
}

/// The SQLSTATE of an ErrorResponse/NoticeResponse body (field `C`).
pub fn error_code(body: &[u8]) -> Option<&str> {
    error_field(body, b'C')
}

/// One field of an ErrorResponse/NoticeResponse body.
pub fn error_field(mut body: &[u8], wanted: u8) -> Option<&str> {
    while let Some((&field, rest)) = body.split_first() {
        if field == 0 {
            return None;
        }
        let (value, rest) = read_cstr(rest)?;
        if field == wanted {
            return std::str::from_utf8(value).ok();
        }
        body = rest;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_for_query_bytes() {
        let mut out = BytesMut::new();
        ready_for_query(&mut out, TxStatus::InTransaction);
        assert_eq!(&out[..], b"Z\0\0\0\x05T");
    }

    #[test]
    fn parameter_status_round_trips() {
        let mut out = BytesMut::new();
        parameter_status(&mut out, "TimeZone", "UTC");
        assert_eq!(parse_parameter_status(&out[5..]), Some(("TimeZone", "UTC")));
    }

    #[test]
    fn error_fields_are_found_and_truncation_is_tolerated() {
        let body = b"SERROR\0C25006\0Mread-only\0\0";
        assert_eq!(error_code(body), Some("25006"));
        assert_eq!(error_field(body, b'M'), Some("read-only"));
        assert_eq!(error_code(b"SERROR\0C250"), None);
    }
}
