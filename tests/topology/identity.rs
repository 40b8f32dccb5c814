//! Only instances of the leader's own cluster are used: an address that reaches another cluster's standby (a typo,
//! a reused port) never serves reads, and when that standby is promoted it is neither adopted as the leader nor
//! accepted as a changeover target. `status` says why, per instance.

use pgsplit::admin::Status;
use pgsplit::topology::changeover::{self, Outcome, PromoteRequest};
use pgsplit::topology::promotion;

use super::files::{ConfigDir, config_text};
use crate::support::proxy::TestProxy;
use crate::support::{cluster, eventually, private_cluster, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_of_another_cluster_is_never_read_from_adopted_or_promoted_to() {
    let c = cluster();
    let other = private_cluster(1);
    let stray = other.instance("f1").unwrap().clone();
    // The pool names the shared cluster's f1 and, where f2 should be, the other cluster's standby.
    let f2 = c.instance("f2").unwrap();
    let text = config_text(c, &[1, 1], "").replace(
        &format!("name = \"f2\", host = \"127.0.0.1\", port = {}", f2.port),
        &format!("name = \"stray\", host = \"127.0.0.1\", port = {}", stray.port),
    );
    assert!(text.contains("\"stray\""));
    let dir = ConfigDir::new(&text);
    let p = TestProxy::start_from_file(&dir.path(), c).await;
    let topology = p.proxy.context().topology.clone();
    let instance = |name: &str| topology.load().instances().find(|i| &*i.name == name).cloned().unwrap();
    eventually("f1 usable and the stray judged", || {
        let reason = instance("stray").health.reason();
        match (instance("f1").health.usable_for(), reason) {
            (Some(_), Some(reason)) if reason.contains("another cluster") => Ok(()),
            (f1, reason) => Err(format!("f1 usable for {f1:?}; stray: {reason:?}")),
        }
    })
    .await;
    let status = Status::capture(p.proxy.context());
    let shown = |name: &str| status.instances.iter().find(|i| i.name == name).unwrap().clone();
    let (leader, f1, stray_status) = (shown("leader"), shown("f1"), shown("stray"));
    println!("stray: {:?}", stray_status.reason);
    assert!(stray_status.healthy, "it answers: it is kept out for its cluster alone");
    assert_eq!(f1.reason, None);
    assert!(leader.system_identifier.is_some());
    assert_eq!(f1.system_identifier, leader.system_identifier);
    assert_ne!(stray_status.system_identifier, leader.system_identifier);

    let client = p.connect().await;
    for _ in 0..30 {
        let port = value(&client, "SELECT inet_server_port()").await;
        assert_ne!(port, stray.port.to_string(), "no read reaches the other cluster");
    }

    // Promoted in its own cluster it answers as a primary on timeline 2, higher than the leader's: by timeline
    // alone it would be adopted.
    other.psql(&stray, "SELECT pg_promote()").expect("the stray promoted");
    let stray_health = instance("stray").health.snapshot();
    eventually("the monitor sees the stray as a primary", || {
        let seen = instance("stray").health.snapshot();
        (seen.up && !seen.in_recovery).then_some(()).ok_or(format!("{seen:?}"))
    })
    .await;
    let seen_at = instance("stray").health.checks();
    eventually("three more rounds", || {
        let checks = instance("stray").health.checks();
        (checks >= seen_at + 3).then_some(()).ok_or(format!("{checks} checks"))
    })
    .await;
    assert_eq!(promotion::promoted(&topology.load()), None);
    assert_eq!(
        &*topology.load().leader.name,
        "leader",
        "not adopted (was {stray_health:?})"
    );

    let control = p.proxy.context().control.clone();
    let progress = changeover::run(&control, &PromoteRequest::new("stray"))
        .await
        .expect("no other changeover runs");
    assert_eq!(progress.outcome, Outcome::RolledBack);
    let error = progress.error.unwrap_or_default();
    assert!(error.contains("another cluster"), "{error}");
    assert_eq!(&*topology.load().leader.name, "leader");
    p.stop().await;
}
