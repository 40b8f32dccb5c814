//! What a follower would answer differently from the leader, and so must not be asked: a role's serializable
//! default, a read-write transaction in a read-only session, UNLOGGED and temporary tables, and the
//! `transaction_read_only` a standby forces on.

use pgsplit::config::{AuthMethod, UserConfig};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::support::proxy::routed;
use crate::support::raw;
use crate::support::{LocalCluster, cluster, psql, value, wait_replayed};

fn leader_port(c: &LocalCluster) -> String {
    c.leader().port.to_string()
}

/// `ALTER ROLE … SET default_transaction_isolation = 'serializable'`: a standby refuses every serializable
/// transaction (0A000), so that role's reads run on the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_defaults_to_serializable_reads_on_the_leader() {
    let c = cluster();
    psql(
        c,
        c.leader(),
        "DO $$ BEGIN CREATE ROLE defaults_serial LOGIN PASSWORD 'serial'; EXCEPTION WHEN duplicate_object THEN END $$; \
         ALTER ROLE defaults_serial SET default_transaction_isolation = 'serializable'; \
         GRANT CONNECT ON DATABASE app TO defaults_serial;",
    );
    wait_replayed(c);
    let p = routed(c, |config| {
        config.users.push(UserConfig {
            name: "defaults_serial".into(),
            password: "serial".into(),
            auth: AuthMethod::ScramSha256,
        });
    })
    .await;
    let client = p.connect_as("defaults_serial", "serial").await.unwrap();
    for _ in 0..5 {
        assert_eq!(value(&client, "SHOW transaction_isolation").await, "serializable");
        assert_eq!(value(&client, "SELECT inet_server_port()").await, leader_port(c));
    }
    drop(client);
    p.stop().await;
}

/// A session with `default_transaction_read_only = on` sends its plain BEGIN to a follower, but `BEGIN; SET
/// TRANSACTION READ WRITE; INSERT …` — each its own query, as drivers send them — works as on Postgres: the
/// transaction, having run nothing yet, moves to the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_session_can_open_a_read_write_transaction() {
    let c = cluster();
    let p = routed(c, |config| config.routing.read_your_writes = false).await;
    let setup = p.connect().await;
    setup
        .batch_execute("CREATE TABLE IF NOT EXISTS defaults_rw (x int); TRUNCATE defaults_rw")
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = p.conninfo("app", "app").parse().unwrap();
    config.options("-c default_transaction_read_only=on");
    let (client, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);

    client.batch_execute("BEGIN").await.unwrap();
    assert_ne!(
        value(&client, "SELECT inet_server_port()").await,
        leader_port(c),
        "a read-only transaction"
    );
    client.batch_execute("COMMIT").await.unwrap();

    for statement in ["SET TRANSACTION READ WRITE", "SET transaction_read_only = off"] {
        client.batch_execute("BEGIN").await.unwrap();
        client.batch_execute(statement).await.unwrap();
        client
            .batch_execute("INSERT INTO defaults_rw VALUES (1)")
            .await
            .unwrap();
        assert_eq!(value(&client, "SELECT inet_server_port()").await, leader_port(c));
        client.batch_execute("COMMIT").await.unwrap();
    }
    assert_eq!(
        value(&setup, "SELECT count(*) FROM defaults_rw, (SELECT txid_current()) x").await,
        "2"
    );
    let refused = client
        .simple_query("INSERT INTO defaults_rw VALUES (3)")
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(&SqlState::READ_ONLY_SQL_TRANSACTION),
        "still a read-only session"
    );
    setup.batch_execute("DROP TABLE defaults_rw").await.unwrap();
    drop((client, setup));
    p.stop().await;
}

/// A standby cannot read UNLOGGED tables (0A000 "cannot access temporary or unlogged relations during recovery"):
/// ones the catalog lists are read on the leader, inside a read-only transaction too; one made after the catalog
/// was loaded is refused by the follower once, re-run on the leader unseen, and remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlogged_tables_are_read_on_the_leader() {
    let c = cluster();
    psql(
        c,
        c.leader(),
        "CREATE UNLOGGED TABLE IF NOT EXISTS defaults_unlogged (x int); TRUNCATE defaults_unlogged; \
         INSERT INTO defaults_unlogged VALUES (1), (2); GRANT ALL ON defaults_unlogged TO app;",
    );
    wait_replayed(c);
    let p = routed(c, |config| config.routing.read_your_writes = false).await;
    let client = p.connect().await;
    let leader = leader_port(c);
    let read = "SELECT count(*)::text || ' ' || inet_server_port() FROM defaults_unlogged";
    assert_eq!(value(&client, read).await, format!("2 {leader}"));
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(
        value(&client, read).await,
        format!("2 {leader}"),
        "inside a read-only transaction"
    );
    client.batch_execute("COMMIT").await.unwrap();

    client
        .batch_execute(
            "CREATE UNLOGGED TABLE IF NOT EXISTS defaults_late (x int); INSERT INTO defaults_late VALUES (5)",
        )
        .await
        .unwrap();
    wait_replayed(c);
    let late = "SELECT x::text || ' ' || inet_server_port() FROM defaults_late";
    for _ in 0..3 {
        assert_eq!(
            value(&client, late).await,
            format!("5 {leader}"),
            "re-run on the leader, then remembered"
        );
    }
    client.batch_execute("DROP TABLE defaults_late").await.unwrap();
    drop(client);
    psql(c, c.leader(), "DROP TABLE defaults_unlogged");
    p.stop().await;
}

/// A temporary table read in the same pipeline as the statement that made it (before its client is known to be
/// pinned), and one named through `pg_temp`, are read on the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_are_read_on_the_leader() {
    let c = cluster();
    let p = routed(c, |config| {
        config.routing.read_your_writes = false;
        config.users[0].auth = AuthMethod::Trust;
    })
    .await;
    let mut client = raw::login(p.port(), c.app_user(), c.app_database()).await;
    let leader = leader_port(c);
    let pipeline = [
        raw::parse("", "CREATE TEMP TABLE defaults_temp AS SELECT 1 AS x"),
        raw::bind(""),
        raw::execute(),
        raw::sync(),
        raw::parse("", "SELECT x || ' ' || inet_server_port() FROM defaults_temp"),
        raw::bind(""),
        raw::execute(),
        raw::sync(),
    ];
    raw::send(&mut client, &pipeline.concat()).await;
    let both = raw::read_until_nth(&mut client, b'Z', 2).await;
    assert_eq!(raw::tags(&both), "12CZ12DCZ", "{both:?}");
    assert_eq!(raw::first_columns(&both), [format!("1 {leader}")]);
    let qualified = raw::exchange(
        &mut client,
        &[raw::query("SELECT inet_server_port() FROM pg_temp.defaults_temp")],
    )
    .await;
    assert_eq!(raw::first_columns(&qualified), [leader]);
    drop(client);
    p.stop().await;
}

/// A standby forces `transaction_read_only` on. Reading it outside a read-only transaction — `SHOW`, or
/// `current_setting` with the name as a parameter (psycopg) — answers as the leader would; inside `BEGIN READ
/// ONLY` it is on everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_read_only_reads_as_on_the_leader() {
    let c = cluster();
    let p = routed(c, |config| config.routing.read_your_writes = false).await;
    let client = p.connect().await;
    for _ in 0..5 {
        assert_eq!(value(&client, "SHOW transaction_read_only").await, "off");
        let row = client
            .query_one(
                "SELECT current_setting($1), current_setting($2)",
                &[&"transaction_read_only", &"default_transaction_read_only"],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            ("off".into(), "off".into())
        );
    }
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    assert_eq!(value(&client, "SHOW transaction_read_only").await, "on");
    client.batch_execute("COMMIT").await.unwrap();
    drop(client);
    p.stop().await;
}

/// The unnamed statement is not carried across server connections: a batch that binds it without parsing it runs
/// on the leader, never on a follower that has not seen its Parse (26000 there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_bind_of_the_unnamed_statement_runs_on_the_leader() {
    let c = cluster();
    let p = routed(c, |config| {
        config.routing.read_your_writes = false;
        config.users[0].auth = AuthMethod::Trust;
        config.leader.max_connections = 1;
    })
    .await;
    let mut client = raw::login(p.port(), c.app_user(), c.app_database()).await;
    let leader = leader_port(c);
    let parsed = raw::exchange(
        &mut client,
        &[
            raw::parse("", "SELECT inet_server_port()"),
            raw::bind(""),
            raw::execute(),
            raw::sync(),
        ],
    )
    .await;
    assert_eq!(raw::tags(&parsed), "12DCZ");
    for _ in 0..5 {
        let again = raw::exchange(&mut client, &[raw::bind(""), raw::execute(), raw::sync()]).await;
        let code = raw::error_code(&again);
        // The leader's one connection may be the one that has it; never a follower.
        assert!(
            raw::first_columns(&again) == [leader.clone()] || code.as_deref() == Some("26000"),
            "{again:?}"
        );
        assert_eq!(value_of_route(&mut client).await, "leader");
    }
    drop(client);
    p.stop().await;
}

/// The instance `SHOW pgsplit.route` names.
async fn value_of_route(client: &mut tokio::net::TcpStream) -> String {
    let route = raw::first_columns(&raw::exchange(client, &[raw::query("SHOW pgsplit.route")]).await);
    route[0]
        .split(' ')
        .next()
        .unwrap_or_default()
        .trim_start_matches("instance=")
        .to_owned()
}

/// Every row's first column that `sql` (simple protocol, one or more statements) returns, in order.
async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .collect()
}

/// What a read-only transaction shows of the read-only settings: as one query, and statement by statement as
/// drivers send them (psycopg's `read_only=True`).
async fn read_only_view(client: &tokio_postgres::Client) -> Vec<String> {
    let mut seen = rows(
        client,
        "BEGIN READ ONLY; SHOW default_transaction_read_only; SHOW transaction_read_only; COMMIT",
    )
    .await;
    client.batch_execute("BEGIN READ ONLY").await.unwrap();
    seen.push(value(client, "SHOW default_transaction_read_only").await);
    seen.push(value(client, "SHOW transaction_read_only").await);
    client.batch_execute("COMMIT").await.unwrap();
    seen
}

/// `SHOW default_transaction_read_only` inside a read-only transaction answers what the leader answers (a standby
/// answers the same): for a client alone, for one whose server connections another client left with
/// `default_transaction_read_only = on` (one leader connection, one follower connection: both are shared), and
/// for a client whose own SET of it was rolled back — with its transaction, or to a savepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_transaction_read_only_in_a_read_only_transaction_is_the_leaders() {
    let c = cluster();
    let direct = crate::support::proxy::connect_direct(c, c.leader()).await;
    let expected = read_only_view(&direct).await;
    let standby = crate::support::proxy::connect_direct(c, &c.followers()[0]).await;
    assert_eq!(
        read_only_view(&standby).await,
        expected,
        "a standby answers as the leader"
    );
    let p = routed(c, |config| {
        config.routing.read_your_writes = false;
        config.leader.max_connections = 1;
        config.follower_pools[0].instances.truncate(1);
        config.follower_pools[0].max_connections_per_instance = 1;
    })
    .await;
    let b = p.connect().await;
    assert_eq!(read_only_view(&b).await, expected, "a client alone");

    let a = p.connect().await;
    a.batch_execute("SET default_transaction_read_only = on").await.unwrap();
    assert_eq!(read_only_view(&a).await[0], "on", "the client that set it sees it");
    assert_eq!(value(&a, "SHOW transaction_read_only").await, "on");
    assert_eq!(value(&a, "SELECT count(*) FROM pg_class WHERE false").await, "0");
    assert_eq!(
        read_only_view(&b).await,
        expected,
        "after another client's SET, that client idle"
    );
    drop(a);
    assert_eq!(read_only_view(&b).await, expected, "after that client left");

    // psycopg's way: set_config with the name as a parameter, in a transaction it commits.
    let a = p.connect().await;
    a.batch_execute("BEGIN").await.unwrap();
    a.query(
        "SELECT set_config($1, $2, false)",
        &[&"default_transaction_read_only", &"on"],
    )
    .await
    .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(read_only_view(&a).await[0], "on", "the client that set it sees it");
    assert_eq!(read_only_view(&b).await, expected, "after another client's set_config");
    drop(a);
    assert_eq!(read_only_view(&b).await, expected, "after that client left");

    // A SET in a transaction that is rolled back is undone, on the same client's later units too.
    let a = p.connect().await;
    a.batch_execute("BEGIN; SET default_transaction_read_only = on; ROLLBACK")
        .await
        .unwrap();
    assert_eq!(read_only_view(&a).await, expected, "a SET rolled back in one query");
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("SET default_transaction_read_only = on").await.unwrap();
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        read_only_view(&a).await,
        expected,
        "a SET rolled back statement by statement"
    );
    for statement in [
        "BEGIN",
        "SAVEPOINT s",
        "SET default_transaction_read_only = on",
        "ROLLBACK TO SAVEPOINT s",
        "COMMIT",
    ] {
        a.batch_execute(statement).await.unwrap();
    }
    assert_eq!(read_only_view(&a).await, expected, "a SET rolled back to a savepoint");
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("SET default_transaction_read_only = on").await.unwrap();
    a.simple_query("SELECT 1/0").await.expect_err("division by zero");
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(read_only_view(&a).await, expected, "a SET in a transaction that failed");
    assert_eq!(read_only_view(&b).await, expected, "nor does it reach another client");
    drop((a, b));
    p.stop().await;
}
