//! The fields of extended-protocol messages that name prepared statements (Parse, Bind, Describe, Close), read
//! without copying, and the same messages written with another statement name. Bodies are framed and
//! length-checked before they get here; a body whose fields do not parse reads as `None`.

use bytes::{BufMut, BytesMut};

use super::frame::read_cstr;
use super::messages::message;

/// Parse: the statement's name, and the rest of the body (query string and parameter types) that defines it.
pub fn parse_fields(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, definition) = read_cstr(body)?;
    // The query string must be there, NUL-terminated, followed by the parameter-type count.
    let (_, types) = read_cstr(definition)?;
    (types.len() >= 2).then_some((name, definition))
}

/// The query string of a Parse body's definition.
pub fn definition_query(definition: &[u8]) -> &[u8] {
    read_cstr(definition).map_or(&[][..], |(query, _)| query)
}

/// Bind: (portal, statement, the rest: formats, parameters, result formats).
pub fn bind_fields(body: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (portal, rest) = read_cstr(body)?;
    let (statement, rest) = read_cstr(rest)?;
    Some((portal, statement, rest))
}

/// What a Describe or Close is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Statement(&'a [u8]),
    Portal(&'a [u8]),
}

/// Describe and Close: the statement or portal they name.
pub fn target(body: &[u8]) -> Option<Target<'_>> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = read_cstr(rest)?;
    match kind {
        b'S' => Some(Target::Statement(name)),
        b'P' => Some(Target::Portal(name)),
        _ => None,
    }
}

/// Parse of `definition` (query string and parameter types) as the statement `name`; `name` writes the
/// NUL-terminated name.
pub fn put_parse(out: &mut BytesMut, name: impl FnOnce(&mut BytesMut), definition: &[u8]) {
    message(out, b'P', |o| {
        name(o);
        o.put_slice(definition);
    });
}

/// Bind of `portal` to the statement `name` with the client's `rest` (formats and parameters).
pub fn put_bind(out: &mut BytesMut, portal: &[u8], name: impl FnOnce(&mut BytesMut), rest: &[u8]) {
    message(out, b'B', |o| {
        o.put_slice(portal);
        o.put_u8(0);
        name(o);
        o.put_slice(rest);
    });
}

/// Describe of the statement `name`.
pub fn put_describe_statement(out: &mut BytesMut, name: impl FnOnce(&mut BytesMut)) {
    message(out, b'D', |o| {
        o.put_u8(b'S');
        name(o);
    });
}

/// Close of the statement `name`.
pub fn put_close_statement(out: &mut BytesMut, name: impl FnOnce(&mut BytesMut)) {
    message(out, b'C', |o| {
        o.put_u8(b'S');
        name(o);
    });
}

/// Bind of the unnamed portal to the unnamed statement, no parameters, default formats.
pub fn put_bind_unnamed(out: &mut BytesMut) {
    message(out, b'B', |o| o.put_slice(&[0, 0, 0, 0, 0, 0, 0, 0]));
}

/// Execute of the unnamed portal, all rows.
pub fn put_execute_unnamed(out: &mut BytesMut) {
    message(out, b'E', |o| o.put_slice(&[0, 0, 0, 0, 0]));
}

pub fn put_sync(out: &mut BytesMut) {
    message(out, b'S', |_| {});
}

/// ParseComplete or CloseComplete: the answers pgsplit makes up for a Parse or Close it did not send.
pub fn put_empty(out: &mut BytesMut, tag: u8) {
    message(out, tag, |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &'static [u8]) -> impl FnOnce(&mut BytesMut) {
        move |o: &mut BytesMut| crate::protocol::messages::put_cstr(o, name)
    }

    #[test]
    fn a_renamed_bind_keeps_portal_and_parameters() {
        let body = b"portal\0client_name\0\0\x01\0\x01\0\0\0\x011\0\0";
        let (portal, statement, rest) = bind_fields(body).expect("well-formed");
        assert_eq!((portal, statement), (&b"portal"[..], &b"client_name"[..]));
        let mut out = BytesMut::new();
        put_bind(&mut out, portal, named(b"s1"), rest);
        assert_eq!(&out[..1], b"B");
        assert_eq!(
            u32::from_be_bytes(out[1..5].try_into().unwrap()) as usize,
            out.len() - 1
        );
        assert_eq!(bind_fields(&out[5..]), Some((&b"portal"[..], &b"s1"[..], rest)));
    }

    #[test]
    fn parse_fields_need_the_whole_definition() {
        assert_eq!(
            parse_fields(b"s\0SELECT 1\0\0\0"),
            Some((&b"s"[..], &b"SELECT 1\0\0\0"[..]))
        );
        assert_eq!(definition_query(b"SELECT 1\0\0\0"), b"SELECT 1");
        assert_eq!(parse_fields(b"s\0SELECT 1\0"), None, "no parameter count");
        assert_eq!(parse_fields(b"s\0SELECT 1"), None);
    }

    #[test]
    fn targets_are_statements_or_portals() {
        assert_eq!(target(b"Sname\0"), Some(Target::Statement(b"name")));
        assert_eq!(target(b"P\0"), Some(Target::Portal(b"")));
        assert_eq!(target(b"Xname\0"), None);
        assert_eq!(target(b"Sname"), None);
    }
}
