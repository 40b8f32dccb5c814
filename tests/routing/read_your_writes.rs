//! Read-your-writes by WAL position, through pgsplit, against one private cluster whose followers apply commits
//! late (`recovery_min_apply_delay`): a client reads its own rows however far behind the followers are (and without
//! the feature it does not), its reads return to the followers once they catch up, a floor carries to other
//! connections (`SET pgsplit.min_lsn`, the startup option), and sixteen pgbench writers each see their own rows.
//! Starting a cluster is slow, so the scenarios run in sequence on one; each step says what it checks.

use std::path::Path;
use std::time::Instant;

use pgsplit::config::Config;
use pgsplit::topology::FreshnessCounts;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use crate::support::proxy::{TestProxy, routed};
use crate::support::{LocalCluster, WAIT, eventually, pgbench_counts, private_cluster, psql, value, wait_replayed};

/// How late the followers apply commits while the pairs run: ten times `read_your_writes_wait`'s default, so a
/// follower cannot catch up while pgsplit waits for one.
const DELAY: &str = "500ms";
/// The delay while a floor is carried to other connections: long enough that the followers still lack the row after
/// two more logins (SCRAM in a debug build) — the step checks that they do — and under the 5 s lag limit.
const CARRY_DELAY: &str = "2s";
/// Insert-then-select pairs on one connection with read-your-writes on; at most this many with it off.
const PAIRS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reads_its_own_writes_however_late_the_followers_apply_them() {
    let started = Instant::now();
    let c = private_cluster(2);
    psql(
        &c,
        c.leader(),
        "CREATE TABLE ryw (id bigserial PRIMARY KEY, payload int NOT NULL); \
         CREATE TABLE ryw_miss (id bigint, client int); \
         GRANT ALL ON ryw, ryw_miss TO app; GRANT ALL ON SEQUENCE ryw_id_seq TO app",
    );
    wait_replayed(&c);
    let on = routed(&c, |config| sized(config, true)).await;
    eprintln!("cluster and proxy up in {:.1?}", started.elapsed());

    let writer = on.connect().await;
    let pair = Pair::prepare(&writer).await;
    let (floor, last_id) = every_read_sees_the_row_just_written(&c, &on, &pair).await;
    without_the_feature_reads_miss(&c).await;
    reads_with_a_floor_return_to_caught_up_followers(&c, &on, &pair, floor, last_id).await;
    a_floor_carries_to_other_connections(&c, &on).await;
    sixteen_pgbench_writers_each_see_their_own_rows(&c, &on).await;
    drop(writer);
    on.stop().await;
    eprintln!("done in {:.1?}", started.elapsed());
}

/// Step a: [`PAIRS`] pairs on one connection with the followers [`DELAY`] behind. Returns the connection's floor
/// afterwards and the id of its last row.
async fn every_read_sees_the_row_just_written(c: &LocalCluster, on: &TestProxy, pair: &Pair<'_>) -> (u64, i64) {
    eprintln!("step a: {PAIRS} insert-then-select pairs on one connection, followers {DELAY} behind, feature on");
    set_apply_delay(c, Some(DELAY));
    let writer = pair.client;
    assert_eq!(
        value(writer, "SHOW pgsplit.last_write_lsn").await,
        "0/0",
        "no write yet"
    );
    let before = freshness(on);
    let timer = Instant::now();
    let (done, misses) = pair.run(PAIRS - 1, false).await;
    // The last pair, with the leader's position taken just before it: the floor must pass it.
    let leader_before = lsn(&psql(c, c.leader(), "SELECT pg_current_wal_insert_lsn()"));
    let (last_id, seen) = pair.once(PAIRS as i32).await;
    let (done, misses) = (done + 1, misses + usize::from(!seen));
    eprintln!(
        "step a, read_your_writes = true: {misses} misses in {done} pairs ({:.1?})",
        timer.elapsed()
    );
    assert_eq!(misses, 0, "every read saw the row its own connection had just inserted");
    assert_eq!(
        value(writer, "SHOW pgsplit.route").await,
        "instance=leader reason=read_your_writes",
        "no follower has the row yet: the read ran on the leader"
    );
    let floor = lsn(&value(writer, "SHOW pgsplit.last_write_lsn").await);
    assert!(
        floor > leader_before,
        "the floor {} passes the leader's position before the write, {}",
        show_lsn(floor),
        show_lsn(leader_before)
    );
    let after = freshness(on);
    eprintln!("step a: freshness before {}, after {}", counts(&before), counts(&after));
    assert!(
        after.on_leader > before.on_leader,
        "reads sent to the leader for freshness are counted"
    );
    (floor, last_id)
}

/// Step a, the other half: the same pairs through a second pgsplit with the feature off miss rows.
async fn without_the_feature_reads_miss(c: &LocalCluster) {
    eprintln!("step a: the same pairs through a second pgsplit with read_your_writes = false");
    let off = routed(c, |config| sized(config, false)).await;
    let unguarded = off.connect().await;
    let timer = Instant::now();
    let (done, misses) = Pair::prepare(&unguarded).await.run(PAIRS, true).await;
    eprintln!(
        "step a, read_your_writes = false: {misses} misses in {done} pairs ({:.1?})",
        timer.elapsed()
    );
    assert!(
        misses > 0,
        "with followers {DELAY} behind, reads without the feature miss rows just written ({done} pairs)"
    );
    drop(unguarded);
    off.stop().await;
}

/// Step b: the delay lifted, the connection that wrote (it keeps its floor) reads from followers again.
async fn reads_with_a_floor_return_to_caught_up_followers(
    c: &LocalCluster,
    on: &TestProxy,
    pair: &Pair<'_>,
    floor: u64,
    last_id: i64,
) {
    eprintln!("step b: the delay is lifted; the writer's reads (it has a floor) return to the followers");
    set_apply_delay(c, None);
    wait_replayed(c);
    let topology = on.proxy.context().topology.clone();
    eventually("the monitor sees the followers past the floor", || {
        for instance in &topology.load().pools[0].instances {
            let seen = instance.health.snapshot();
            if seen.lsn < floor || instance.health.usable_for().is_none() {
                return Err(format!("{}: {seen:?}, floor {}", instance.name, show_lsn(floor)));
            }
        }
        Ok(())
    })
    .await;
    let followers: Vec<&str> = c.followers().iter().map(|f| f.name.as_str()).collect();
    let before = freshness(on);
    let reads = 20;
    for _ in 0..reads {
        let row = pair.client.query_opt(&pair.select, &[&last_id]).await.unwrap();
        assert!(row.is_some(), "the writer's last row is there");
        let route = value(pair.client, "SHOW pgsplit.route").await;
        let (instance, reason) = parse_route(&route);
        assert!(
            followers.contains(&instance) && reason == "read",
            "a caught-up follower serves the writer's read, got {route}"
        );
    }
    let after = freshness(on);
    eprintln!("step b: freshness before {}, after {}", counts(&before), counts(&after));
    assert_eq!(after.on_leader, before.on_leader, "no read went to the leader");
    assert!(
        after.caught_up + after.confirmed >= before.caught_up + before.confirmed + reads,
        "reads with a floor served by followers are counted"
    );
}

/// Step c: A's floor, carried by `SET pgsplit.min_lsn` (B) or the startup option (C), shows B and C A's row while
/// the followers still lack it; a fresh connection has no floor, and a malformed one is refused.
async fn a_floor_carries_to_other_connections(c: &LocalCluster, on: &TestProxy) {
    eprintln!("step c: a floor carried to other connections, followers {CARRY_DELAY} behind");
    set_apply_delay(c, Some(CARRY_DELAY));
    let a = on.connect().await;
    let id = value(&a, "INSERT INTO ryw(payload) VALUES (-1) RETURNING id").await;
    let carried = value(&a, "SHOW pgsplit.last_write_lsn").await;
    assert_ne!(carried, "0/0", "the write set connection A's floor");
    let count = format!("SELECT count(*) FROM ryw WHERE id = {id}");
    let b = on.connect().await;
    b.batch_execute(&format!("SET pgsplit.min_lsn = '{carried}'"))
        .await
        .unwrap_or_else(|e| panic!("SET pgsplit.min_lsn = '{carried}': {e:?}"));
    assert_eq!(
        value(&b, &count).await,
        "1",
        "B, with A's floor set by SET, sees A's row"
    );
    let at_startup = connect_with(on, &format!("options='-c pgsplit.min_lsn={carried}'")).await;
    assert_eq!(
        value(&at_startup, &count).await,
        "1",
        "C, with A's floor as a startup option, sees A's row"
    );
    // D carries it through the extended protocol, as drivers that prepare everything send it: an unnamed
    // statement parsed, bound and run in one batch, and a named one prepared first and run later.
    let extended = on.connect().await;
    let set = format!("SET pgsplit.min_lsn = '{carried}'");
    assert!(extended.query_typed(&set, &[]).await.unwrap().is_empty());
    let show = extended.prepare("SHOW pgsplit.last_write_lsn").await.unwrap();
    let floor: String = extended.query_one(&show, &[]).await.unwrap().get(0);
    assert_eq!(floor, carried, "the named statement shows D's floor");
    let rows = extended.query_typed(&count, &[]).await.unwrap();
    assert_eq!(
        rows[0].get::<_, i64>(0),
        1,
        "D, with A's floor set by SET, sees A's row"
    );
    let err = extended
        .query_typed("SET pgsplit.min_lsn = 'nope'", &[])
        .await
        .expect_err("a malformed LSN is refused");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{err:?}");
    let floor: String = extended.query_one(&show, &[]).await.unwrap().get(0);
    assert_eq!(floor, carried, "the refused SET changed nothing");
    for follower in c.followers() {
        assert_eq!(
            psql(c, follower, &count),
            "0",
            "{} has not applied A's row yet: B and C did not read there by luck",
            follower.name
        );
    }
    eprintln!(
        "step c: B's floor {}, C's floor {} (carried {carried})",
        value(&b, "SHOW pgsplit.last_write_lsn").await,
        value(&at_startup, "SHOW pgsplit.last_write_lsn").await
    );
    let fresh = on.connect().await;
    assert_eq!(value(&fresh, "SHOW pgsplit.last_write_lsn").await, "0/0");
    let err = fresh
        .batch_execute("SET pgsplit.min_lsn = 'garbage'")
        .await
        .expect_err("a malformed LSN is refused");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PARAMETER_VALUE), "{err:?}");
    assert_eq!(value(&fresh, "SELECT 1").await, "1", "the session goes on");
    assert_eq!(value(&fresh, "SHOW pgsplit.last_write_lsn").await, "0/0");
}

/// Step d: pgbench, 16 clients for 30 s with no delay, each inserting a row and reading it back.
async fn sixteen_pgbench_writers_each_see_their_own_rows(c: &LocalCluster, on: &TestProxy) {
    eprintln!("step d: pgbench, 16 clients for 30 s, each inserting a row and reading it back; no delay");
    set_apply_delay(c, None);
    wait_replayed(c);
    let script = c.base_dir().join("read_your_writes.pgbench");
    std::fs::write(&script, PGBENCH_SCRIPT).unwrap();
    c.tools().chown(&script).unwrap();
    let before = (freshness(on), follower_units(on));
    let timer = Instant::now();
    let stdout = pgbench(c, on, &script).await;
    let after = (freshness(on), follower_units(on));
    let (processed, failed) = pgbench_counts(&stdout);
    let missed = psql(c, c.leader(), "SELECT count(*) FROM ryw_miss");
    let (on_followers, on_leader) = (
        (after.0.caught_up + after.0.confirmed) - (before.0.caught_up + before.0.confirmed),
        after.0.on_leader - before.0.on_leader,
    );
    // Every transaction reads once, after its own write: the share of all reads, wherever they ran.
    let share = on_followers as f64 / processed.max(1) as f64;
    eprintln!(
        "step d: {processed} transactions ({failed} failed) in {:.1?}; {missed} misses; reads on followers \
         {:.1}% ({} caught up, {} confirmed, {on_leader} on the leader); units the followers ran +{}",
        timer.elapsed(),
        share * 100.0,
        after.0.caught_up - before.0.caught_up,
        after.0.confirmed - before.0.confirmed,
        after.1 - before.1,
    );
    assert!(processed > 0);
    assert_eq!(failed, 0, "no failed transaction:\n{stdout}");
    assert_eq!(missed, "0", "no client missed its own row");
    assert!(share > 0.0, "followers serve some of the reads");
}

/// Inserts a row, keeps its id, reads it back by id; a read that finds nothing is a miss, noted on the leader.
const PGBENCH_SCRIPT: &str = r"INSERT INTO ryw(payload) VALUES (:client_id) RETURNING id \gset
SELECT count(*) AS seen FROM ryw WHERE id = :id \gset
\if :seen = 0
INSERT INTO ryw_miss(id, client) VALUES (:id, :client_id);
\endif
";

/// Room for 16 pgbench clients, and read-your-writes on or off.
fn sized(config: &mut Config, read_your_writes: bool) {
    config.leader.max_connections = 8;
    config.follower_pools[0].max_connections_per_instance = 4;
    config.routing.read_your_writes = read_your_writes;
}

/// The read pool's read-your-writes counters.
fn freshness(p: &TestProxy) -> FreshnessCounts {
    p.proxy.context().topology.load().pools[0].freshness()
}

fn counts(f: &FreshnessCounts) -> String {
    format!(
        "caught_up {} confirmed {} on_leader {}",
        f.caught_up, f.confirmed, f.on_leader
    )
}

/// Units the read pool's followers ran, by pgsplit's per-instance route counters.
fn follower_units(p: &TestProxy) -> u64 {
    let topology = p.proxy.context().topology.load();
    topology.pools[0]
        .instances
        .iter()
        .flat_map(|i| i.routed())
        .map(|(_, n)| n)
        .sum()
}

/// The insert and the select of one pair, prepared on one connection (extended protocol, bound parameters).
struct Pair<'a> {
    client: &'a Client,
    insert: Statement,
    select: Statement,
}

impl<'a> Pair<'a> {
    async fn prepare(client: &'a Client) -> Pair<'a> {
        Pair {
            client,
            insert: client
                .prepare("INSERT INTO ryw(payload) VALUES ($1) RETURNING id")
                .await
                .unwrap(),
            select: client.prepare("SELECT payload FROM ryw WHERE id = $1").await.unwrap(),
        }
    }

    /// Inserts `payload` and reads its row back at once: the new id, and whether the read saw the row.
    async fn once(&self, payload: i32) -> (i64, bool) {
        let id: i64 = self.client.query_one(&self.insert, &[&payload]).await.unwrap().get(0);
        let row = self.client.query_opt(&self.select, &[&id]).await.unwrap();
        if let Some(row) = &row {
            assert_eq!(row.get::<_, i32>(0), payload);
        }
        (id, row.is_some())
    }

    /// Up to `limit` pairs — fewer with `stop_early`, once 100 have run and one missed. Returns (pairs, misses).
    async fn run(&self, limit: usize, stop_early: bool) -> (usize, usize) {
        let mut misses = 0;
        for done in 0..limit {
            if stop_early && done >= 100 && misses > 0 {
                return (done, misses);
            }
            misses += usize::from(!self.once(done as i32).await.1);
        }
        (limit, misses)
    }
}

/// Sets (`Some`) or resets the followers' `recovery_min_apply_delay` and waits until each reports it — and, for a
/// delay, until a row written on the leader just now is missing on every follower: the startup process takes the new
/// setting a moment after the reload.
fn set_apply_delay(c: &LocalCluster, delay: Option<&str>) {
    let (statement, shown) = match delay {
        Some(delay) => (format!("ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'"), delay),
        None => ("ALTER SYSTEM RESET recovery_min_apply_delay".to_string(), "0"),
    };
    for follower in c.followers() {
        // ALTER SYSTEM cannot run in a transaction block: its own psql call.
        psql(c, follower, &statement);
        psql(c, follower, "SELECT pg_reload_conf()");
        poll(
            &format!("{}: recovery_min_apply_delay = {shown}", follower.name),
            || {
                let now = psql(c, follower, "SHOW recovery_min_apply_delay");
                (now == shown).then_some(()).ok_or(now)
            },
        );
    }
    if delay.is_some() {
        poll("the followers hold back a fresh commit", || {
            let id = psql(c, c.leader(), "INSERT INTO ryw(payload) VALUES (-2) RETURNING id");
            let probe = format!("SELECT count(*) FROM ryw WHERE id = {id}");
            match c.followers().iter().find(|f| psql(c, f, &probe) != "0") {
                Some(f) => Err(format!("{} applied it at once", f.name)),
                None => Ok(()),
            }
        });
    }
}

/// [`eventually`] for blocking checks (psql), between steps.
fn poll(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        match check() {
            Ok(()) => return,
            Err(last) => assert!(
                Instant::now() < deadline,
                "{what}: not within {WAIT:?}; last seen: {last}"
            ),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A client as the app user with `extra` added to its connection string.
async fn connect_with(p: &TestProxy, extra: &str) -> Client {
    let conninfo = format!("{} {extra}", p.conninfo("app", "app"));
    let (client, connection) = tokio_postgres::connect(&conninfo, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting with {extra}: {e:?}"));
    tokio::spawn(connection);
    client
}

/// `pgbench -n -c 16 -j 2 -T 30 -f script` through `p`; returns its stdout.
async fn pgbench(c: &LocalCluster, p: &TestProxy, script: &Path) -> String {
    let mut cmd = c.tools().command("pgbench");
    cmd.args(["-n", "-h", "127.0.0.1", "-p", &p.port().to_string(), "-U", "app"])
        .args(["-c", "16", "-j", "2", "-T", "30", "-f"])
        .arg(script)
        .arg("app")
        .env("PGPASSWORD", "app");
    let out = tokio::process::Command::from(cmd).output().await.expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pgbench: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `X/Y` (hex halves) as one number.
fn lsn(text: &str) -> u64 {
    let parse = |half: &str| u64::from_str_radix(half, 16).unwrap_or_else(|e| panic!("LSN {text:?}: {e}"));
    let (high, low) = text.trim().split_once('/').unwrap_or_else(|| panic!("LSN {text:?}"));
    parse(high) << 32 | parse(low)
}

fn show_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// `instance=<name> reason=<reason>` as (name, reason).
fn parse_route(route: &str) -> (&str, &str) {
    let field = |key: &str| {
        route
            .split(' ')
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {route:?}"))
    };
    (field("instance="), field("reason="))
}
