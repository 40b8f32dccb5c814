//! Startup parameters reach every server connection a client borrows with the meaning PostgreSQL gives them, and
//! the client is told its parameters back as the server names them.

use pgsplit::config::{AuthMethod, PoolMode};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::support::proxy::{self, TestProxy};
use crate::support::raw;
use crate::support::{cluster, value};

/// libpq's `options` (PGOPTIONS, Rails' schema_search_path, Django's OPTIONS): a list-valued search_path, a
/// DateStyle of two words, a time zone and a value with an escaped space, applied anew each time another client's
/// settings were on the one shared connection.
#[tokio::test]
async fn startup_options_reach_the_server_with_their_meaning() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 1).await;
    let setup = p.connect().await;
    setup
        .batch_execute(
            "CREATE SCHEMA IF NOT EXISTS pooling_acc_b; CREATE TABLE IF NOT EXISTS pooling_acc_b.accounts (id int); \
             TRUNCATE pooling_acc_b.accounts; INSERT INTO pooling_acc_b.accounts VALUES (7)",
        )
        .await
        .unwrap();
    let mut config: tokio_postgres::Config = p.conninfo("app", "app").parse().unwrap();
    config.options(
        "-c search_path=pooling_acc_b,public -c DateStyle=SQL,\\ DMY -c TimeZone=Asia/Tokyo \
         -c application_name=with\\ space",
    );
    let (a, connection) = config.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        assert_eq!(value(&setup, "SHOW search_path").await, "\"$user\", public");
        // As a direct connection prints it: the list as given, not one quoted name.
        assert_eq!(value(&a, "SHOW search_path").await, "pooling_acc_b,public");
        assert_eq!(
            value(&a, "SELECT id FROM accounts").await,
            "7",
            "a table of the first schema"
        );
        assert_eq!(value(&a, "SHOW DateStyle").await, "SQL, DMY");
        assert_eq!(value(&a, "SHOW TimeZone").await, "Asia/Tokyo");
        assert_eq!(value(&a, "SHOW application_name").await, "with space");
    }
    // A quoted value in SQL SET is one element, on Postgres and through pgsplit.
    a.batch_execute("SET search_path = 'x,y'").await.unwrap();
    assert_eq!(value(&setup, "SELECT 1").await, "1");
    assert_eq!(value(&a, "SHOW search_path").await, "\"x,y\"");
    let missing = a.simple_query("SELECT id FROM accounts").await.unwrap_err();
    assert_eq!(missing.code(), Some(&SqlState::UNDEFINED_TABLE));
    a.batch_execute("SET search_path TO pooling_acc_b, public")
        .await
        .unwrap();
    assert_eq!(value(&setup, "SELECT 1").await, "1");
    assert_eq!(value(&a, "SELECT id FROM accounts").await, "7");
    setup.batch_execute("DROP SCHEMA pooling_acc_b CASCADE").await.unwrap();
    drop((a, setup));
    p.stop().await;
}

async fn trust_proxy() -> TestProxy {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.leader.max_connections = 2;
    TestProxy::start(config, c).await
}

/// A client that starts with `client_encoding=utf8` (or `eucjp`, or `DateStyle=iso`) is told the value back as
/// the server reports it (`UTF8`, `EUC_JP`, `ISO, MDY`): drivers compare these.
#[tokio::test]
async fn reported_parameters_are_told_as_the_server_reports_them() {
    let c = cluster();
    let p = trust_proxy().await;
    let (user, db) = (c.app_user(), c.app_database());
    for (name, given, reported) in [
        ("client_encoding", "utf8", "UTF8"),
        ("client_encoding", "eucjp", "EUC_JP"),
        ("DateStyle", "iso", "ISO, MDY"),
    ] {
        // Twice: the first login may learn the name from a server, the second must remember it.
        for _ in 0..2 {
            let (mut stream, greeting) = raw::login_with(p.port(), user, db, &[(name, given)]).await;
            let told: Vec<_> = raw::parameters(&greeting)
                .into_iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v)
                .collect();
            assert_eq!(told, [reported], "{name}={given}");
            let shown = raw::exchange(&mut stream, &[raw::query(&format!("SHOW {name}"))]).await;
            assert_eq!(raw::first_columns(&shown), [reported]);
        }
    }
    p.stop().await;
}
