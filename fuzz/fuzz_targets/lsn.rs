//! Fuzz target `lsn`: WAL positions as text from clients (`SET pgsplit.min_lsn`, the startup option) and servers
//! (the probe's and the monitor's `pg_lsn` columns): `topology::monitor::parse_lsn`, `session::floor::parse_setting`,
//! the probe's DataRow read with `messages::first_column`, and the read-your-writes floor
//! (`session::floor::ReadFloor`) driven by a sequence of commits and settings, against a model of what it must show:
//! the highest commit position (an insert position just past a page header counts as the page boundary) or the
//! client's own floor, whichever is higher, and the leader while a commit's position is unknown.
//!
//! Input: lines. `c<text>`: a commit at the position `<text>` parses to (or its bytes' value, when it does not
//! parse); `u`: a commit whose position is unknown; `r`: `RESET pgsplit.min_lsn`; any other line: `SET
//! pgsplit.min_lsn = <line>`. Every line is also parsed as it is.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pgsplit::protocol::messages::{data_row, first_column};
use pgsplit::session::floor::{Needs, ReadFloor, parse_setting};
use pgsplit::topology::Health;
use pgsplit::topology::monitor::{format_lsn, parse_lsn};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let leader = Health::default();
    let mut floor = ReadFloor::default();
    let (mut written, mut min, mut unknown) = (0u64, 0u64, false);
    for line in text.split('\n') {
        parsers(line);
        match line.as_bytes().first() {
            Some(b'c') => {
                let position = parse_lsn(&line[1..]).unwrap_or_else(|| value_of(&line.as_bytes()[1..]));
                floor.committed(position);
                let end = if position % 8192 == 24 { position - 24 } else { position };
                written = written.max(end);
                unknown = false;
            }
            Some(b'u') if line.len() == 1 => {
                floor.commit_unknown();
                unknown = true;
            }
            Some(b'r') if line.len() == 1 => {
                assert!(floor.set_min(None));
                min = 0;
            }
            _ => {
                let parsed = parse_setting(line);
                assert_eq!(floor.set_min(Some(line)), parsed.is_some(), "{line:?}");
                if let Some(lsn) = parsed {
                    min = lsn;
                }
            }
        }
        let lsn = written.max(min);
        assert_eq!(floor.show(), format_lsn(lsn));
        // The default leader health has never been checked: an unknown commit keeps reads there.
        match floor.needs(Duration::from_millis(50), &leader, Duration::from_secs(2)) {
            Needs::Leader => assert!(unknown),
            Needs::Nothing => assert!(!unknown && lsn == 0),
            Needs::Floor(f) => assert!(!unknown && f.lsn == lsn && lsn != 0),
        }
    }
});

/// Every parser of WAL positions on one piece of text, and the round trips between them.
fn parsers(text: &str) {
    let parsed = parse_lsn(text);
    if let Some(lsn) = parsed {
        let printed = format_lsn(lsn);
        assert_eq!(parse_lsn(&printed), Some(lsn), "{printed}");
        assert!(printed.len() <= text.trim().len(), "{text:?} printed as {printed:?}");
        assert_eq!(parse_setting(&format!("'{printed}'")), Some(lsn));
    }
    // A setting is a position, or one in single quotes: unquoted, it reads as the parser reads it.
    if !text.trim().starts_with('\'') {
        assert_eq!(parse_setting(text), parsed, "{text:?}");
    }
    // The probe's answer: one text column.
    let mut row = bytes::BytesMut::new();
    data_row(&mut row, &[text]);
    assert_eq!(first_column(&row[5..]).and_then(parse_lsn), parsed);
}

/// A position from up to 8 bytes, for commits the text does not give.
fn value_of(bytes: &[u8]) -> u64 {
    bytes.iter().take(8).fold(0, |n, &b| (n << 8) | u64::from(b))
}
