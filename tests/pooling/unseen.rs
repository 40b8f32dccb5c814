//! Session state pgsplit cannot see in the statement text — `set_config(…, false)`, and settings, temporary tables
//! and locks made inside functions and DO blocks — never reaches the next client of a pooled connection: it is
//! carried with its client when it can be read back, and pins the client when it lives on the connection.

use pgsplit::config::PoolMode;
use tokio_postgres::Client;

use crate::support::proxy::{self, TestProxy};
use crate::support::{cluster, eventually, psql, value};

/// What `client` sees of the custom setting `app.tenant` (empty when unset).
async fn tenant(client: &Client) -> String {
    value(client, "SELECT coalesce(current_setting('app.tenant', true), '')").await
}

fn pinned(p: &TestProxy) -> usize {
    p.proxy
        .context()
        .gauges
        .pinned
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// The row-level-security pattern: `set_config('app.tenant', …, false)`, with a literal or a parameter. The
/// client keeps its tenant across transactions on whatever connection serves it; the next client of that
/// connection never sees it.
#[tokio::test]
async fn set_config_outside_a_transaction_stays_with_its_client() {
    let c = cluster();
    let p = proxy::start(c, PoolMode::Transaction, 1).await;
    let a = p.connect().await;
    let b = p.connect().await;
    assert_eq!(
        value(&a, "SELECT set_config('app.tenant', 'tenant-a', false)").await,
        "tenant-a"
    );
    for _ in 0..3 {
        assert_eq!(tenant(&b).await, "", "another client's tenant leaked");
        assert_eq!(tenant(&a).await, "tenant-a");
    }
    a.query("SELECT set_config('app.tenant', $1, false)", &[&"tenant-a2"])
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(tenant(&b).await, "", "another client's tenant leaked");
        assert_eq!(tenant(&a).await, "tenant-a2");
    }
    // Transaction-local: gone with the transaction, as on Postgres.
    b.batch_execute("BEGIN; SELECT set_config('app.tenant', 'b-local', true); COMMIT")
        .await
        .unwrap();
    assert_eq!(tenant(&b).await, "");
    assert_eq!(tenant(&a).await, "tenant-a2");
    drop((a, b));
    p.stop().await;
}

/// Functions and DO blocks: a setting they change never reaches another client; a temporary table or a session
/// lock they create pins their client to its connection, which keeps it.
#[tokio::test]
async fn state_made_inside_functions_and_do_blocks_stays_with_its_client() {
    let c = cluster();
    // Made before the proxy starts, so that its catalog knows them as volatile user functions.
    psql(
        c,
        c.leader(),
        "CREATE OR REPLACE FUNCTION unseen_set_tenant(t text) RETURNS text LANGUAGE sql \
           AS $$ SELECT set_config('app.tenant', t, false) $$; \
         CREATE OR REPLACE FUNCTION unseen_work_mem() RETURNS void LANGUAGE plpgsql \
           AS $$ BEGIN SET work_mem = '77MB'; END $$; \
         CREATE OR REPLACE FUNCTION unseen_lock() RETURNS void LANGUAGE sql \
           AS $$ SELECT pg_advisory_lock(515151) $$; \
         GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO app;",
    );
    let p = proxy::start(c, PoolMode::Transaction, 1).await;
    let a = p.connect().await;
    let b = p.connect().await;

    assert_eq!(
        value(&a, "SELECT unseen_set_tenant('from-a-function')").await,
        "from-a-function"
    );
    assert_eq!(tenant(&b).await, "", "a setting made inside a function leaked");
    // A placeholder set under a name the statement does not show cannot be read back: its client loses it too
    // (docs/pooling.md), rather than anyone else getting it.
    assert_eq!(tenant(&a).await, "");
    a.batch_execute("SELECT unseen_work_mem()").await.unwrap();
    assert_eq!(
        value(&b, "SHOW work_mem").await,
        "4MB",
        "a SET inside a function leaked"
    );
    // What a user function sets is not read back (too costly for how often functions are called): lost to its
    // client too (docs/pooling.md).
    assert_eq!(value(&a, "SHOW work_mem").await, "4MB");
    a.batch_execute("DO $$ BEGIN SET work_mem = '77MB'; END $$")
        .await
        .unwrap();
    assert_eq!(
        value(&b, "SHOW work_mem").await,
        "4MB",
        "a SET inside a DO block leaked"
    );
    assert_eq!(
        value(&a, "SHOW work_mem").await,
        "77MB",
        "what a DO block sets is read back and carried"
    );
    assert_eq!(value(&b, "SHOW work_mem").await, "4MB");
    a.batch_execute("RESET work_mem").await.unwrap();
    a.batch_execute("DO $$ BEGIN PERFORM set_config('app.tenant', 'from-a-do', false); END $$")
        .await
        .unwrap();
    assert_eq!(tenant(&b).await, "", "a setting made inside a DO block leaked");
    assert_eq!(pinned(&p), 0, "settings alone do not pin");

    // A temporary table made in a DO block: the client keeps its connection, and its table.
    a.batch_execute("DO $$ BEGIN CREATE TEMP TABLE unseen_temp (x int); INSERT INTO unseen_temp VALUES (1); END $$")
        .await
        .unwrap();
    // The connection is checked after the client has its answer, before anyone else may borrow it.
    eventually("a temporary table made in a DO block pins its client", || {
        (pinned(&p) == 1).then_some(()).ok_or(format!("{} pinned", pinned(&p)))
    })
    .await;
    let b_task = tokio::spawn(async move {
        // The pool's one connection is a's now: b waits until a leaves.
        let temps = value(&b, "SELECT count(*) FROM pg_class WHERE relname = 'unseen_temp'").await;
        (b, temps)
    });
    for _ in 0..3 {
        assert_eq!(value(&a, "SELECT count(*) FROM unseen_temp").await, "1");
    }
    drop(a);
    let (b, temps) = b_task.await.unwrap();
    assert_eq!(temps, "0", "the next client never sees another's temporary table");

    // A session advisory lock taken inside a function pins too, and goes with its client.
    let a = p.connect().await;
    a.batch_execute("SELECT unseen_lock()").await.unwrap();
    eventually("a session lock taken in a function pins its client", || {
        (pinned(&p) == 1).then_some(()).ok_or(format!("{} pinned", pinned(&p)))
    })
    .await;
    drop(a);
    assert_eq!(
        value(&b, "SELECT pg_try_advisory_lock(515151)::text").await,
        "true",
        "the lock went with its client, not to the next one"
    );
    assert_eq!(value(&b, "SELECT pg_advisory_unlock(515151)::text").await, "true");
    b.batch_execute("DISCARD ALL").await.unwrap();
    drop(b);
    p.stop().await;
}
