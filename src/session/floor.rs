//! The client's read-your-writes floor: the WAL position its reads must see. It is session state — it outlives
//! every server connection the client borrows and ends with the client — and it only rises, except that `RESET
//! pgsplit.min_lsn` takes back what the client set itself.
//!
//! It rises in two ways: a write unit commits on the leader (pgsplit then reads the leader's WAL insert position
//! on the same connection, [`PROBE_SQL`], sent after the client's ReadyForQuery so the client never waits for
//! it), or the client sets `pgsplit.min_lsn` (a position carried from another connection). Pure: no I/O.

use std::time::{Duration, Instant};

use super::plan::MIN_LSN;
use crate::protocol::error::{Severity, SqlError, code};
use crate::router::Floor;
use crate::topology::Health;
use crate::topology::monitor::{format_lsn, parse_lsn};

/// Run on the leader after a write unit's ReadyForQuery: the insert position is at or past the end of every
/// record already inserted, the unit's commit record included, whatever `synchronous_commit` says.
pub const PROBE_SQL: &str = "SELECT pg_current_wal_insert_lsn()";

/// Asked of a follower chosen before it was seen past a floor: how far it has replayed (NULL once promoted).
pub const REPLAY_SQL: &str = "SELECT pg_last_wal_replay_lsn()";

/// The size of a WAL page's short header: an insert position just past one means nothing is on that page yet.
const WAL_PAGE: u64 = 8192;
const SHORT_PAGE_HEADER: u64 = 24;

#[derive(Debug, Clone)]
pub struct ReadFloor {
    /// At or past the commit of the client's last write unit; 0 before its first.
    written: u64,
    /// `pgsplit.min_lsn` as the client set it; 0 when unset.
    min: u64,
    /// When the floor last rose: a follower lagging `L` should have replayed it `L` later.
    since: Instant,
    /// A write committed whose position could not be read (the leader connection failed right after the commit):
    /// reads go to the leader until a leader health check sent after this instant gives a position.
    unknown_since: Option<Instant>,
}

impl Default for ReadFloor {
    fn default() -> Self {
        ReadFloor {
            written: 0,
            min: 0,
            since: Instant::now(),
            unknown_since: None,
        }
    }
}

/// What a read must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Nothing: the client never wrote nor set a floor.
    Nothing,
    /// A follower past this floor, or the leader.
    Floor(Floor),
    /// The leader: the client's last commit position is not known yet.
    Leader,
}

impl ReadFloor {
    /// The floor as `SHOW pgsplit.last_write_lsn` prints it (`0/0` when there is none).
    pub fn show(&self) -> String {
        format_lsn(self.lsn())
    }

    fn lsn(&self) -> u64 {
        self.written.max(self.min)
    }

    /// A write unit committed; `insert_lsn` is the leader's insert position read after it, on its connection.
    pub fn committed(&mut self, insert_lsn: u64) {
        self.raise_written(commit_end(insert_lsn));
        self.unknown_since = None;
    }

    /// A write unit committed but its position could not be read.
    pub fn commit_unknown(&mut self) {
        self.unknown_since = Some(Instant::now());
    }

    /// `SET pgsplit.min_lsn = value` (`None`: `RESET`, or `SET … TO DEFAULT`). Returns false, changing nothing,
    /// when the value is not a WAL position.
    pub fn set_min(&mut self, value: Option<&str>) -> bool {
        let Some(value) = value else {
            self.min = 0;
            return true;
        };
        let Some(lsn) = parse_setting(value) else {
            return false;
        };
        if lsn > self.lsn() {
            self.since = Instant::now();
        }
        self.min = lsn;
        true
    }

    /// What the next read needs, waiting at most `wait` for a follower. `leader` is the current leader's health
    /// (and `check_timeout` the longest its health check takes): a check sent after an unknown commit settles it.
    pub fn needs(&mut self, wait: Duration, leader: &Health, check_timeout: Duration) -> Needs {
        if let Some(unknown) = self.unknown_since {
            match leader.lsn_checked_after(unknown, check_timeout) {
                Some(lsn) => {
                    self.raise_written(lsn);
                    self.unknown_since = None;
                }
                None => return Needs::Leader,
            }
        }
        match self.lsn() {
            0 => Needs::Nothing,
            lsn => Needs::Floor(Floor {
                lsn,
                since: self.since,
                deadline: Instant::now() + wait,
            }),
        }
    }

    fn raise_written(&mut self, lsn: u64) {
        if lsn > self.lsn() {
            self.since = Instant::now();
        }
        self.written = self.written.max(lsn);
    }
}

/// The end of the last record inserted before `insert_lsn`. An insert position is where the next record would
/// start, so just past a page header when the page is still empty — but a standby reports replay positions as
/// record ends, which stop at the page boundary: without this, a follower would never be seen past a commit that
/// happened to end a page until something else was written.
fn commit_end(insert_lsn: u64) -> u64 {
    if insert_lsn % WAL_PAGE == SHORT_PAGE_HEADER {
        insert_lsn - SHORT_PAGE_HEADER
    } else {
        insert_lsn
    }
}

/// The error for a `pgsplit.min_lsn` value that is not a WAL position.
pub fn invalid_min_lsn(value: &str) -> SqlError {
    SqlError::new(
        Severity::Error,
        code::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{MIN_LSN}\": {value}"),
    )
    .with_hint("Use a WAL position as SHOW pgsplit.last_write_lsn prints it, e.g. '0/16B3748'.")
}

/// A `pgsplit.min_lsn` value as written in SQL or a startup option: `0/16B3748`, optionally in single quotes.
pub fn parse_setting(value: &str) -> Option<u64> {
    let value = value.trim();
    let unquoted = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    parse_lsn(unquoted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::health::Observation;

    const WAIT: Duration = Duration::from_millis(50);
    const CHECK: Duration = Duration::from_secs(2);

    fn floor_of(needs: Needs) -> u64 {
        match needs {
            Needs::Floor(floor) => floor.lsn,
            other => panic!("expected a floor, got {other:?}"),
        }
    }

    #[test]
    fn a_client_that_never_wrote_needs_nothing() {
        let mut floor = ReadFloor::default();
        assert_eq!(floor.needs(WAIT, &Health::default(), CHECK), Needs::Nothing);
        assert_eq!(floor.show(), "0/0");
    }

    #[test]
    fn commits_and_min_lsn_raise_the_floor_and_reset_takes_back_only_the_set_part() {
        let mut floor = ReadFloor::default();
        floor.committed(0x1_0000_0100);
        assert_eq!(floor.show(), "1/100");
        assert!(floor.set_min(Some("'2/0'")));
        assert_eq!(floor_of(floor.needs(WAIT, &Health::default(), CHECK)), 0x2_0000_0000);
        floor.committed(0x1_0000_0200); // an older position (another connection's) never lowers it
        assert_eq!(floor.show(), "2/0");
        assert!(floor.set_min(None));
        assert_eq!(floor.show(), "1/200");
    }

    #[test]
    fn a_bad_min_lsn_changes_nothing() {
        let mut floor = ReadFloor::default();
        floor.committed(0x500);
        for bad in ["garbage", "'1/'", "1/2/3", "''", "'0/123456789'"] {
            assert!(!floor.set_min(Some(bad)), "{bad}");
        }
        assert_eq!(floor.show(), "0/500");
    }

    #[test]
    fn an_insert_position_just_past_a_page_header_counts_as_the_page_boundary() {
        assert_eq!(commit_end(3 * WAL_PAGE + SHORT_PAGE_HEADER), 3 * WAL_PAGE);
        assert_eq!(commit_end(3 * WAL_PAGE + 64), 3 * WAL_PAGE + 64);
    }

    #[test]
    fn an_unknown_commit_reads_on_the_leader_until_a_later_leader_check() {
        let mut floor = ReadFloor::default();
        floor.committed(0x100);
        floor.commit_unknown();
        let leader = Health::default();
        assert_eq!(floor.needs(WAIT, &leader, Duration::ZERO), Needs::Leader);
        // A check recorded more than `timeout` after the unknown commit was sent after it.
        std::thread::sleep(Duration::from_millis(5));
        leader.observe(Observation {
            in_recovery: false,
            lsn: 0x900,
            lag_bytes: 0,
            lag: Duration::ZERO,
            lag_commits: 0,
            timeline: 1,
        });
        assert_eq!(floor_of(floor.needs(WAIT, &leader, Duration::ZERO)), 0x900);
    }
}
