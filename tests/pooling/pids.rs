//! The pid a client knows is pgsplit's (its BackendKeyData), not a server backend's: notifications from its own
//! session carry it, and `pg_terminate_backend` / `pg_cancel_backend` of a pid pgsplit issued act on that client's
//! session.

use std::time::Duration;

use pgsplit::config::{AuthMethod, PoolMode};

use crate::support::cluster;
use crate::support::proxy::{self, TestProxy};
use crate::support::raw::{self, bind_text, exchange, execute, first_columns, parse, query, sync};

async fn trust_proxy(pool: usize) -> TestProxy {
    let c = cluster();
    let mut config = proxy::config_for(c);
    config.users[0].auth = AuthMethod::Trust;
    config.proxy.pool_mode = PoolMode::Transaction;
    config.leader.max_connections = pool;
    TestProxy::start(config, c).await
}

/// A NotificationResponse's sender pid, from its body.
fn sender(body: &[u8]) -> u32 {
    u32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

/// `notify.pid == conn.backend_pid` (how apps ignore their own notifications) holds through pgsplit.
#[tokio::test]
async fn a_notification_from_the_clients_own_session_carries_its_pid() {
    let c = cluster();
    let p = trust_proxy(2).await;
    let (mut a, pid) = raw::login_with_pid(p.port(), c.app_user(), c.app_database()).await;
    assert!(pid > 4_194_304, "pgsplit's pids are above any Linux pid: {pid}");
    exchange(&mut a, &[query("LISTEN pids_chan")]).await;
    let own = exchange(&mut a, &[query("NOTIFY pids_chan, 'mine'")]).await;
    let notes: Vec<u32> = own.iter().filter(|(t, _)| *t == b'A').map(|(_, b)| sender(b)).collect();
    assert_eq!(notes, [pid], "the client's own notification names the pid it was given");
    drop(a);
    p.stop().await;
}

/// A client ends or cancels another client's session by the pid pgsplit gave it — simple or extended protocol — as
/// it would a backend's; a pid pgsplit did not issue reaches the server as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_and_cancel_act_on_the_session_pgsplit_issued_the_pid_to() {
    let c = cluster();
    let p = trust_proxy(2).await;
    let (user, db) = (c.app_user(), c.app_database());
    let (mut a, _) = raw::login_with_pid(p.port(), user, db).await;
    let (mut b, b_pid) = raw::login_with_pid(p.port(), user, db).await;

    // Cancel: b's long query ends with 57014, and b goes on.
    raw::send(&mut b, &query("SELECT pg_sleep(30)")).await;
    let mut canceled = false;
    for _ in 0..100 {
        let answer = exchange(&mut a, &[query(&format!("SELECT pg_cancel_backend({b_pid})"))]).await;
        assert_eq!(first_columns(&answer), ["t"]);
        let read = tokio::time::timeout(Duration::from_millis(200), raw::read_until(&mut b, b'Z')).await;
        if let Ok(messages) = read {
            assert_eq!(raw::error_code(&messages).as_deref(), Some("57014"), "{messages:?}");
            canceled = true;
            break;
        }
    }
    assert!(canceled, "b's query was canceled");
    assert_eq!(first_columns(&exchange(&mut b, &[query("SELECT 1")]).await), ["1"]);

    // A pid no session has: the server's own answer (false, with a warning).
    let other = exchange(&mut a, &[query("SELECT pg_terminate_backend(1)")]).await;
    assert_eq!(first_columns(&other), ["f"]);

    // Terminate through the extended protocol, the pid as a parameter (as drivers send it).
    let batch = [
        parse("", "SELECT pg_terminate_backend($1)"),
        bind_text("", &[&b_pid.to_string()]),
        execute(),
        sync(),
    ];
    let answer = exchange(&mut a, &batch).await;
    assert_eq!(first_columns(&answer), ["t"], "{answer:?}");
    let rest = raw::read_until_close(&mut b).await;
    assert!(rest.iter().all(|(tag, _)| *tag != b'D'), "b's session ended: {rest:?}");
    assert_eq!(first_columns(&exchange(&mut a, &[query("SELECT 2")]).await), ["2"]);
    drop(a);
    p.stop().await;
}
