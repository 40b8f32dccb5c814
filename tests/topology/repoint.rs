//! After a changeover: a follower whose repoint failed reports the statement that failed and the server's reason —
//! never its `primary_conninfo`, which holds a password — in the CLI's output, `/status` and the log; and since it
//! still streams from the fenced old leader, on the old timeline, it serves no reads.

use pgsplit::admin::Status;

use super::files::{ConfigDir, config_text};
use crate::support::proxy::{TestProxy, pgsplit_cli};
use crate::support::{eventually, logs, private_cluster, psql, value};

const SECRET: &str = "s3cret-in-conninfo";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_repoint_names_the_statement_never_the_password_and_the_follower_left_behind_is_not_used() {
    let logs = logs::capture();
    let c = private_cluster(2);
    let f2 = c.instance("f2").unwrap().clone();
    // f2's primary_conninfo carries a password (replication is trusted here, so it is never used)…
    let conninfo = format!("{} password={SECRET}", psql(&c, &f2, "SHOW primary_conninfo"));
    psql(
        &c,
        &f2,
        &format!(
            "ALTER SYSTEM SET primary_conninfo = '{}'; SELECT pg_reload_conf();",
            conninfo.replace('\'', "''")
        ),
    );
    // …and its next ALTER SYSTEM fails: where the server writes the new postgresql.auto.conf stands a directory.
    std::fs::create_dir(f2.data_dir.join("postgresql.auto.conf.tmp")).expect("a directory in f2's way");

    let dir = ConfigDir::new(&config_text(&c, &[1, 1], ""));
    let p = TestProxy::start_from_file(&dir.path(), &c).await;
    let topology = p.proxy.context().topology.clone();
    eventually("followers usable", || {
        let t = topology.load();
        let waiting: Vec<_> = t.pools[0]
            .instances
            .iter()
            .filter(|i| i.health.usable_for().is_none())
            .map(|i| (i.name.clone(), i.health.reason()))
            .collect();
        waiting.is_empty().then_some(()).ok_or(format!("{waiting:?}"))
    })
    .await;

    let (code, out, err) = pgsplit_cli(p.proxy.admin_addr(), &["promote", "f1", "--repoint"]).await;
    println!("{out}{err}");
    assert_eq!(code, 0, "f1 is the leader");
    assert!(out.contains("f1 is the leader"), "{out}");
    assert!(
        out.contains("not repointed: f2: ALTER SYSTEM SET primary_conninfo failed: could not open file"),
        "the statement and the server's reason: {out}"
    );
    assert!(
        !out.contains(SECRET) && !err.contains(SECRET),
        "the CLI shows no password"
    );
    let status = serde_json::to_string(&Status::capture(p.proxy.context())).unwrap();
    assert!(status.contains("ALTER SYSTEM SET primary_conninfo failed"), "{status}");
    assert!(!status.contains(SECRET), "/status shows no password");
    let logged = logs.text();
    assert!(
        logged.contains("ALTER SYSTEM SET primary_conninfo failed"),
        "the failure is logged"
    );
    assert!(!logged.contains(SECRET), "the log holds no password");

    // f2 still streams from the fenced old leader: timeline 1, the new leader writes on 2. It serves no reads.
    eventually("f2 judged against the new leader", || {
        let f2 = topology.load().instances().find(|i| &*i.name == "f2").cloned().unwrap();
        match f2.health.reason() {
            Some(reason) if reason.contains("timeline") && f2.health.usable_for().is_none() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let status = Status::capture(p.proxy.context());
    let shown = status.instances.iter().find(|i| i.name == "f2").unwrap();
    println!("f2: {:?}", shown.reason);
    let client = p.connect().await;
    for _ in 0..20 {
        let port = value(&client, "SELECT inet_server_port()").await;
        assert_ne!(port, f2.port.to_string(), "no read reaches the follower left behind");
    }
    p.stop().await;
}
