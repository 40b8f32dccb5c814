//! The changeover's steps against the servers: each a few statements of pgsplit's own, every statement under the
//! control plane's deadline and every wait under its timeout. No step touches the topology or the gate: the
//! orchestrator (`super`) does that between them. Errors name statements, never quote them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{ChangeoverError, PromoteRequest};
use crate::topology::conn::{Conn, Sql, SqlError};
use crate::topology::control::Control;
use crate::topology::monitor::{format_lsn, parse_lsn};
use crate::topology::{Instance, Role};

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(2);
/// After cancelling or terminating what outran a wait, how long it gets to end.
pub(super) const AFTER_CANCEL: Duration = Duration::from_secs(2);
/// How long a promoted target may take to leave recovery.
const PROMOTE_TIMEOUT: Duration = Duration::from_secs(60);

const VERSION: Sql = Sql::plain("SELECT current_setting('server_version_num')");
const IDENTITY: Sql = Sql::plain("SELECT system_identifier::text FROM pg_control_system()");
const WAL_GEOMETRY: Sql = Sql::described(
    "reading wal_block_size and wal_segment_size",
    "SELECT current_setting('wal_block_size'), \
     (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size')",
);
const PRIVILEGES: Sql = Sql::described(
    "checking the control login's privileges",
    "SELECT has_function_privilege('pg_promote(boolean, integer)', 'EXECUTE') \
     AND has_function_privilege('pg_reload_conf()', 'EXECUTE') \
     AND has_parameter_privilege('default_transaction_read_only', 'ALTER SYSTEM') \
     AND pg_has_role('pg_signal_backend', 'USAGE') AND pg_has_role('pg_read_all_stats', 'USAGE'), \
     has_parameter_privilege('primary_conninfo', 'ALTER SYSTEM') AND pg_has_role('pg_read_all_settings', 'USAGE')",
);
const CANCEL_IN_TRANSACTION: Sql = Sql::plain(
    "SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity \
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
);
const TERMINATE_IN_TRANSACTION: Sql = Sql::plain(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
);
const FENCE: Sql = Sql::plain("ALTER SYSTEM SET default_transaction_read_only = on");
const UNFENCE: Sql = Sql::plain("ALTER SYSTEM RESET default_transaction_read_only");
const RELOAD: Sql = Sql::plain("SELECT pg_reload_conf()");
const SHOW_FENCE: Sql = Sql::plain("SHOW default_transaction_read_only");
/// Transactions that began up to this long after the fence was seen in effect on pgsplit's own session still
/// count as begun before it: the postmaster signals backends one by one, and a backend may have read its next
/// command just before its signal arrived.
const FENCE_CUTOFF: Sql = Sql::described(
    "reading the server clock",
    "SELECT (clock_timestamp() + interval '20 milliseconds')::text",
);
const STILL_SETTLED: Sql = Sql::described(
    "checking that no transaction ended on the old leader",
    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text, \
     (SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()), \
     (SELECT count(*) FROM pg_prepared_xacts)",
);
const PROMOTE: Sql = Sql::plain("SELECT pg_promote(false)");
const IN_RECOVERY: Sql = Sql::plain("SELECT pg_is_in_recovery()");
const TIMELINE: Sql = Sql::described(
    "reading the new timeline",
    "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
);
const SHOW_CONNINFO: Sql = Sql::plain("SHOW primary_conninfo");

/// The old leader, the target and pgsplit's connections to both.
pub(super) struct Parties {
    pub(super) old: Arc<Instance>,
    pub(super) target: Arc<Instance>,
    pub(super) old_conn: Conn,
    pub(super) target_conn: Conn,
    pub(super) wal: WalGeometry,
}

/// The old leader's WAL page and segment sizes, to turn an insert position into the end of the last record.
pub(super) struct WalGeometry {
    page: u64,
    segment: u64,
}

impl WalGeometry {
    /// An insert position is where the next record would start: just past the page header when the page is still
    /// empty (the long header at a segment's start). A standby reports replay positions as record ends, which stop
    /// at the page boundary; without this, a catch-up to a WAL that happened to end a page would never end.
    pub(super) fn record_end(&self, insert_lsn: u64) -> u64 {
        const SHORT_HEADER: u64 = 24;
        const LONG_HEADER: u64 = 40;
        if insert_lsn % self.segment == LONG_HEADER {
            insert_lsn - LONG_HEADER
        } else if insert_lsn % self.page == SHORT_HEADER {
            insert_lsn - SHORT_HEADER
        } else {
            insert_lsn
        }
    }
}

/// Wraps a statement's error with the instance it ran on.
fn on(instance: &Instance) -> impl Fn(SqlError) -> ChangeoverError + '_ {
    move |source| ChangeoverError::Sql {
        instance: instance.name.to_string(),
        source,
    }
}

fn answer(instance: &Instance, what: &'static str, answer: impl Into<String>) -> ChangeoverError {
    ChangeoverError::Answer {
        instance: instance.name.to_string(),
        what,
        answer: answer.into(),
    }
}

/// Step 1: the target is a usable follower of this topology; both servers run PostgreSQL 15 or later and belong
/// to the same cluster; pgsplit's own login may promote, fence, reload and watch transactions.
pub(super) async fn check(control: &Control, request: &PromoteRequest) -> Result<Parties, ChangeoverError> {
    let topology = control.topology.load_full();
    let name = request.instance.as_str();
    let target = topology
        .instances()
        .find(|i| &*i.name == name)
        .cloned()
        .ok_or_else(|| ChangeoverError::UnknownInstance(name.to_owned()))?;
    if topology.role_of(&target) != Some(Role::Follower) {
        return Err(ChangeoverError::AlreadyLeader(name.to_owned()));
    }
    let seen = target.health.snapshot();
    if !seen.up || !seen.in_recovery || target.health.usable_for().is_none() {
        let reason = target.health.reason().map_or_else(
            || format!("up: {}, in recovery: {}", seen.up, seen.in_recovery),
            |reason| format!("{reason}; wait for it (`pgsplit wait`)"),
        );
        return Err(ChangeoverError::NotUsable {
            name: name.to_owned(),
            reason,
        });
    }
    let old = topology.leader.clone();
    let deadline = control.deadline();
    let old_conn = control.connect(&old).await?;
    let target_conn = control.connect(&target).await?;
    for (instance, conn) in [(&old, &old_conn), (&target, &target_conn)] {
        let version = conn.value(&VERSION, deadline).await.map_err(on(instance))?;
        if version.parse::<u32>().map_or(true, |v| v < 150_000) {
            return Err(ChangeoverError::TooOld {
                instance: instance.name.to_string(),
                version,
            });
        }
    }
    let old_id = old_conn.value(&IDENTITY, deadline).await.map_err(on(&old))?;
    let target_id = target_conn.value(&IDENTITY, deadline).await.map_err(on(&target))?;
    if old_id != target_id {
        return Err(ChangeoverError::OtherCluster {
            target: target.name.to_string(),
            leader: old.name.to_string(),
            target_id,
            leader_id: old_id,
        });
    }
    let granted = old_conn.row(&PRIVILEGES, 2, deadline).await.map_err(on(&old))?;
    let repoint_granted = granted.get(1).cloned().flatten().as_deref() == Some("t");
    if granted.first().cloned().flatten().as_deref() != Some("t") || (request.repoint && !repoint_granted) {
        return Err(ChangeoverError::Privileges {
            user: topology.config.control_login().0.to_owned(),
        });
    }
    let sizes = old_conn.row(&WAL_GEOMETRY, 2, deadline).await.map_err(on(&old))?;
    let size = |i: usize| {
        sizes
            .get(i)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&v| v > 0)
    };
    let wal = match (size(0), size(1)) {
        (Some(page), Some(segment)) => WalGeometry { page, segment },
        _ => return Err(answer(&old, "WAL block and segment sizes", format!("{sizes:?}"))),
    };
    Ok(Parties {
        old,
        target,
        old_conn,
        target_conn,
        wal,
    })
}

/// Step 3: waits until `until` for the write units pgsplit routed to `old` to end; then cancels the queries of
/// every session in a transaction there, and if that is not enough, terminates those sessions.
pub(super) async fn drain(
    old: &Instance,
    conn: &Conn,
    until: Instant,
    deadline: Duration,
) -> Result<String, ChangeoverError> {
    let started = Instant::now();
    if wait_until(|| old.writing() == 0, until).await {
        return Ok(format!(
            "no write unit running after {} ms",
            started.elapsed().as_millis()
        ));
    }
    let running = old.writing();
    let cancelled = conn.value(&CANCEL_IN_TRANSACTION, deadline).await.map_err(on(old))?;
    if wait_until(|| old.writing() == 0, Instant::now() + AFTER_CANCEL).await {
        return Ok(format!(
            "{running} write units outran the drain timeout; cancelled {cancelled} queries; drained after {} ms",
            started.elapsed().as_millis()
        ));
    }
    let ended = conn.value(&TERMINATE_IN_TRANSACTION, deadline).await.map_err(on(old))?;
    if wait_until(|| old.writing() == 0, Instant::now() + AFTER_CANCEL).await {
        return Ok(format!(
            "{running} write units outran the drain timeout; cancelled {cancelled} queries, ended {ended} sessions"
        ));
    }
    Err(ChangeoverError::DrainStuck {
        running: old.writing(),
        instance: old.name.to_string(),
    })
}

async fn wait_until(mut done: impl FnMut() -> bool, until: Instant) -> bool {
    while !done() {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

/// The fence in effect: transactions that began on the old leader after `cutoff` (its clock) are read-only.
pub(super) struct Fence {
    cutoff: String,
}

/// Step 4: new transactions on `old` are read-only. Returns once pgsplit's own session there sees the setting —
/// the postmaster signals every backend in the same pass — with the server time from which on every new
/// transaction has it.
pub(super) async fn fence(old: &Instance, conn: &Conn, deadline: Duration) -> Result<Fence, ChangeoverError> {
    conn.run(&FENCE, deadline).await.map_err(on(old))?;
    conn.run(&RELOAD, deadline).await.map_err(on(old))?;
    // Its idle pooled connections go now; none is busy with a write (drained), and new writes are held.
    old.pool.close_idle();
    let until = Instant::now() + deadline;
    while conn.value(&SHOW_FENCE, deadline).await.map_err(on(old))? != "on" {
        if Instant::now() >= until {
            return Err(ChangeoverError::FenceUnseen {
                instance: old.name.to_string(),
                after: deadline,
            });
        }
        tokio::time::sleep(POLL).await;
    }
    let cutoff = conn.value(&FENCE_CUTOFF, deadline).await.map_err(on(old))?;
    // It goes back into SQL: only a timestamp's characters may.
    if cutoff.is_empty() || !cutoff.bytes().all(|b| b.is_ascii_digit() || b"-:. +".contains(&b)) {
        return Err(answer(old, "server time", cutoff));
    }
    Ok(Fence { cutoff })
}

/// The old leader once nothing on it can commit any more: its snapshot's xmax (moves when a transaction with an
/// id ends) and insert position then, and what it took.
pub(super) struct Settled {
    instance: Arc<str>,
    xmax: String,
    pub(super) insert_lsn: u64,
    waited: Duration,
    cancelled: u64,
    ended: u64,
}

impl fmt::Display for Settled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no transaction on {} holds a transaction id or began before the fence, after {} ms",
            self.instance,
            self.waited.as_millis()
        )?;
        if self.cancelled + self.ended > 0 {
            write!(
                f,
                " (cancelled {} queries, ended {} sessions)",
                self.cancelled, self.ended
            )?;
        }
        Ok(())
    }
}

/// Step 3, the part after the fence: waits until no transaction on `old` — whoever runs it: pgsplit's reads,
/// misclassified writes, clients connected to it directly — holds a transaction id or began before the fence
/// (it could still take one), and no prepared transaction waits there. Past `until`, such sessions' queries are
/// cancelled, then the sessions terminated. Only then is the old leader's last WAL position read: no commit can
/// land after it.
pub(super) async fn quiesce(
    old: &Instance,
    conn: &Conn,
    fence: &Fence,
    until: Instant,
    deadline: Duration,
) -> Result<Settled, ChangeoverError> {
    let started = Instant::now();
    let cutoff = &fence.cutoff;
    let look = format!(
        "SELECT clock_timestamp() > '{cutoff}'::timestamptz, \
         count(*) FILTER (WHERE backend_xid IS NOT NULL), \
         count(*) FILTER (WHERE backend_type = 'client backend' AND xact_start <= '{cutoff}'::timestamptz), \
         (SELECT count(*) FROM pg_prepared_xacts), \
         pg_snapshot_xmax(pg_current_snapshot())::text, pg_current_wal_insert_lsn()::text \
         FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    );
    let look = Sql::described("looking for transactions that may still commit", &look);
    let stragglers = format!(
        "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
         AND (backend_xid IS NOT NULL OR xact_start <= '{cutoff}'::timestamptz)"
    );
    let cancel = format!("SELECT count(pg_cancel_backend(pid)) {stragglers}");
    let terminate = format!("SELECT count(pg_terminate_backend(pid)) {stragglers}");
    let cancel = Sql::described("cancelling the queries of transactions that may still commit", &cancel);
    let terminate = Sql::described("terminating sessions whose transactions may still commit", &terminate);
    let (mut until, mut cancelled, mut ended, mut escalated) = (until, 0, 0, 0);
    loop {
        let row = conn.row(&look, 6, deadline).await.map_err(on(old))?;
        let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let count = |i: usize| column(i).parse::<u64>().map_err(|_| answer(old, "count", column(i)));
        let (writing, open_before, prepared) = (count(1)?, count(2)?, count(3)?);
        if column(0) == "t" && writing == 0 && open_before == 0 && prepared == 0 {
            let insert = column(5);
            let insert_lsn = parse_lsn(&insert).ok_or_else(|| answer(old, "WAL insert position", insert))?;
            return Ok(Settled {
                instance: old.name.clone(),
                xmax: column(4),
                insert_lsn,
                waited: started.elapsed(),
                cancelled,
                ended,
            });
        }
        if Instant::now() >= until {
            if writing == 0 && open_before == 0 && prepared > 0 {
                return Err(ChangeoverError::Prepared {
                    count: prepared,
                    instance: old.name.to_string(),
                });
            }
            let parse = |n: String| n.parse::<u64>().unwrap_or(0);
            match escalated {
                0 => cancelled = parse(conn.value(&cancel, deadline).await.map_err(on(old))?),
                1 => ended = parse(conn.value(&terminate, deadline).await.map_err(on(old))?),
                _ if prepared > 0 => {
                    return Err(ChangeoverError::Prepared {
                        count: prepared,
                        instance: old.name.to_string(),
                    });
                }
                _ => {
                    return Err(ChangeoverError::QuiesceStuck {
                        count: writing.max(open_before),
                        instance: old.name.to_string(),
                    });
                }
            }
            escalated += 1;
            until = Instant::now() + AFTER_CANCEL;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Step 5: waits until `until` for `target` to have replayed up to `lsn`.
pub(super) async fn catch_up(
    target: &Instance,
    conn: &Conn,
    lsn: u64,
    until: Instant,
    timeout: Duration,
    deadline: Duration,
) -> Result<(), ChangeoverError> {
    let lsn = format_lsn(lsn);
    let text = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    let replayed = Sql::described("SELECT pg_last_wal_replay_lsn()", &text);
    while conn.value(&replayed, deadline).await.map_err(on(target))? != "t" {
        if Instant::now() >= until {
            return Err(ChangeoverError::CatchUpTimeout {
                target: target.name.to_string(),
                lsn,
                timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// After the catch-up: true when no transaction with an id has ended on `old` since it settled, and none holds
/// one — so nothing committed there after the position the target replayed.
pub(super) async fn still_settled(
    old: &Instance,
    conn: &Conn,
    settled: &Settled,
    deadline: Duration,
) -> Result<bool, ChangeoverError> {
    let row = conn.row(&STILL_SETTLED, 3, deadline).await.map_err(on(old))?;
    let column = |i: usize| row.get(i).cloned().flatten();
    Ok(column(0).as_deref() == Some(settled.xmax.as_str())
        && column(1).as_deref() == Some("0")
        && column(2).as_deref() == Some("0"))
}

/// How the promotion failed: whether the target may still leave recovery.
pub(super) enum PromoteFailed {
    /// The server refused `pg_promote`: it is not promoting.
    Refused(ChangeoverError),
    /// It was asked (or may have been): it may yet leave recovery.
    Unknown(ChangeoverError),
}

/// Step 6: `pg_promote` without its own wait (which looks only every 100 ms while writes are held), then looks
/// every few milliseconds until the target has left recovery.
pub(super) async fn promote(target: &Instance, conn: &Conn, deadline: Duration) -> Result<String, PromoteFailed> {
    match conn.value(&PROMOTE, deadline).await {
        Ok(signalled) if signalled == "t" => {}
        Ok(other) => return Err(PromoteFailed::Refused(answer(target, "pg_promote() result", other))),
        Err(error) if error.is_refusal() => return Err(PromoteFailed::Refused(on(target)(error))),
        Err(error) => return Err(PromoteFailed::Unknown(on(target)(error))),
    }
    let unknown = |error| PromoteFailed::Unknown(on(target)(error));
    let until = Instant::now() + PROMOTE_TIMEOUT;
    while conn.value(&IN_RECOVERY, deadline).await.map_err(unknown)? != "f" {
        if Instant::now() >= until {
            return Err(PromoteFailed::Unknown(ChangeoverError::PromoteTimeout {
                target: target.name.to_string(),
                after: PROMOTE_TIMEOUT,
            }));
        }
        tokio::time::sleep(POLL).await;
    }
    let timeline = conn.value(&TIMELINE, deadline).await.map_err(unknown)?;
    let timeline = u32::from_str_radix(&timeline, 16).unwrap_or(0);
    Ok(format!("{} left recovery on timeline {timeline}", target.name))
}

/// Lifts the fence, on a fresh connection: the changeover's own may be stuck behind an abandoned statement.
pub(super) async fn unfence(control: &Control, old: &Instance) -> Result<(), ChangeoverError> {
    let deadline = control.deadline();
    let conn = control.connect(old).await?;
    conn.run(&UNFENCE, deadline).await.map_err(on(old))?;
    conn.run(&RELOAD, deadline).await.map_err(on(old))
}

/// What the repoint step did, follower by follower.
pub(super) struct Repointed {
    leader: Arc<str>,
    done: Vec<Arc<str>>,
    pub(super) failed: Vec<ChangeoverError>,
}

impl fmt::Display for Repointed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.done.iter().map(|n| &**n).collect();
        match names.as_slice() {
            [] => write!(f, "no follower repointed to {}", self.leader)?,
            names => write!(f, "following {} now: {}", self.leader, names.join(", "))?,
        }
        for error in &self.failed {
            // The error names the follower first.
            write!(f, "; not repointed: {error}")?;
        }
        Ok(())
    }
}

/// The optional last step: every other follower's `primary_conninfo` gets the new leader's host and port. A
/// follower that fails is reported and the others are still done. The conninfo (it may hold a password) goes to
/// the server only: errors name the statement and the server's message.
pub(super) async fn repoint(control: &Control, leader: &Instance) -> Repointed {
    let topology = control.topology.load_full();
    let deadline = control.deadline();
    let mut repointed = Repointed {
        leader: leader.name.clone(),
        done: Vec::new(),
        failed: Vec::new(),
    };
    for follower in topology.pools.iter().flat_map(|p| p.instances.iter()) {
        let result = async {
            let conn = control.connect(follower).await?;
            let current = conn.value(&SHOW_CONNINFO, deadline).await.map_err(on(follower))?;
            let next = with_host_port(&current, &leader.host, leader.port);
            let set = format!("ALTER SYSTEM SET primary_conninfo = '{}'", next.replace('\'', "''"));
            let set = Sql::with_secret("ALTER SYSTEM SET primary_conninfo", &set, &next);
            conn.run(&set, deadline).await.map_err(on(follower))?;
            conn.run(&RELOAD, deadline).await.map_err(on(follower))
        };
        match result.await {
            Ok(()) => repointed.done.push(follower.name.clone()),
            Err(error) => repointed.failed.push(error),
        }
    }
    repointed
}

/// A libpq conninfo string (`key=value …`, values maybe single-quoted) with `host` and `port` replaced or added.
fn with_host_port(conninfo: &str, host: &str, port: u16) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut rest = conninfo.trim();
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('\'') {
            let mut end = 0;
            let bytes = quoted.as_bytes();
            while end < bytes.len() && bytes[end] != b'\'' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let end = end.min(quoted.len());
            (format!("'{}'", &quoted[..end]), quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        if key != "host" && key != "port" && key != "hostaddr" {
            parts.push(format!("{key}={value}"));
        }
        rest = tail.trim_start();
    }
    parts.push(format!("host={host}"));
    parts.push(format!("port={port}"));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_gets_the_new_host_and_port_and_keeps_the_rest() {
        let old = "user=postgres passfile='/var/lib/pg pass' channel_binding=prefer host=127.0.0.1 port=15432 \
                   sslmode=prefer application_name=f2";
        let new = with_host_port(old, "127.0.0.1", 15433);
        assert_eq!(
            new,
            "user=postgres passfile='/var/lib/pg pass' channel_binding=prefer sslmode=prefer application_name=f2 \
             host=127.0.0.1 port=15433"
        );
        assert_eq!(with_host_port("", "h", 1), "host=h port=1");
    }

    #[test]
    fn an_insert_position_past_a_page_header_ends_at_the_boundary() {
        let wal = WalGeometry {
            page: 8192,
            segment: 16 << 20,
        };
        assert_eq!(wal.record_end(0x300_0060), 0x300_0060, "mid-page: as it is");
        assert_eq!(wal.record_end(0x300_2018), 0x300_2000, "past a short page header");
        assert_eq!(wal.record_end(0x400_0028), 0x400_0000, "past a segment's long header");
    }
}
