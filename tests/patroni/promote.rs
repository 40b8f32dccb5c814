//! `pgsplit promote <member>` with Patroni (issue 21 item 5): pgsplit asks Patroni for a switchover scheduled
//! `promote_ahead` from now instead of promoting anything itself, and every pgsplit instance — the one asked and
//! one that was not — follows it; `pgsplit status` shows Patroni's view beside pgsplit's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::support::patroni::{PatroniProxy, turn};
use crate::support::proxy::pgsplit_cli;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_asks_patroni_for_a_scheduled_switchover_that_every_pgsplit_follows() {
    let (_turn, cluster) = turn().await;
    let old = cluster.leader().unwrap().clone();
    let target = cluster.members().iter().find(|m| m.name != old.name).unwrap().clone();
    cluster
        .psql(
            &old,
            "DROP TABLE IF EXISTS promote_log; CREATE TABLE promote_log (id bigint PRIMARY KEY); \
             GRANT ALL ON promote_log TO app",
        )
        .unwrap();
    let a = PatroniProxy::start(cluster, "").await;
    let b = PatroniProxy::start(cluster, "").await;
    let admin = a.proxy.admin_addr();

    let (code, _, stderr) = pgsplit_cli(admin, &["promote", "nobody"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("\"nobody\" is not a member Patroni lists"), "{stderr}");
    let (code, _, stderr) = pgsplit_cli(admin, &["promote", &old.name]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is already Patroni's leader"), "{stderr}");

    // Autocommit writes through the pgsplit that was not asked, all along.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let client = b.connect().await;
        let stop = stop.clone();
        async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            for id in 1..=20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match client
                    .simple_query(&format!("INSERT INTO promote_log VALUES ({id})"))
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(error) => failed.push(error.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        }
    });

    let (code, stdout, stderr) = pgsplit_cli(admin, &["promote", &target.name]).await;
    stop.store(true, Ordering::Relaxed);
    let (written, failed) = writer.await.unwrap();
    println!("pgsplit promote {}:\n{stdout}{stderr}", target.name);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("scheduled a switchover"), "{stdout}");
    assert!(stdout.contains(&format!("{} is the leader", target.name)), "{stdout}");
    assert!(failed.is_empty(), "writes through the other pgsplit failed: {failed:?}");
    assert_eq!(cluster.leader().unwrap().name, target.name, "Patroni carried it out");
    b.wait_following(cluster).await;
    assert_eq!(&*b.proxy.context().topology.load().leader.name, target.name.as_str());
    let rows = cluster.psql(&target, "SELECT count(*) FROM promote_log").unwrap();
    assert_eq!(
        rows,
        written.to_string(),
        "every acknowledged write is on the new leader"
    );

    let (code, stdout, _) = pgsplit_cli(admin, &["status"]).await;
    assert_eq!(code, 0);
    assert!(
        stdout.contains("=== Patroni (answered by http://127.0.0.1:"),
        "{stdout}"
    );
    let leads = format!("Names leader:    {} (pgsplit leads with it)", target.name);
    assert!(stdout.contains(&leads), "{stdout}");
    assert!(stdout.contains("Writes:          flowing"), "{stdout}");
    let (code, _, stderr) = pgsplit_cli(admin, &["promote", "--abort"]).await;
    assert_eq!(code, 2);
    assert!(stderr.contains("patronictl flush"), "{stderr}");
    a.stop().await;
    b.stop().await;
}
