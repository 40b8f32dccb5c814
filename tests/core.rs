//! Integration tests against real PostgreSQL, every cluster built through tests/support.

mod support;

#[path = "core/auth.rs"]
mod auth;
#[path = "core/chaos.rs"]
mod chaos;
#[path = "core/hostile.rs"]
mod hostile;
#[path = "core/hostile_server.rs"]
mod hostile_server;
#[path = "core/lifecycle.rs"]
mod lifecycle;
#[path = "core/limits.rs"]
mod limits;
#[path = "core/logins.rs"]
mod logins;
#[path = "core/memory.rs"]
mod memory;
#[path = "core/ownership.rs"]
mod ownership;
#[path = "core/relay.rs"]
mod relay;
#[path = "core/silence.rs"]
mod silence;

// ===================================================================================================================
// Harness: the local cluster itself (tests/support, pgsplit::demo::cluster)
// ===================================================================================================================

mod harness {
    use std::fs;
    use std::time::{Duration, Instant, SystemTime};

    use tokio_postgres::NoTls;
    use tokio_postgres::error::SqlState;

    use crate::support::{cluster, pgbench_init, private_cluster, psql, shared_watchdog_pipe, wait_replayed};

    /// Whether `pid` is a live (not zombie) process.
    fn running(pid: u32) -> bool {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')),
            Err(_) => false,
        }
    }

    /// A postmaster removes its pid file just before it exits, so give the exit itself a moment.
    fn assert_exits(pid: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(pid) {
            assert!(Instant::now() < deadline, "postmaster {pid} still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn shared_cluster_has_a_leader_and_two_followers_in_recovery() {
        let c = cluster();
        let names: Vec<&str> = c.instances().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["leader", "f1", "f2"]);
        assert_eq!(psql(c, c.leader(), "SELECT pg_is_in_recovery()"), "f");
        for follower in c.followers() {
            assert_eq!(
                psql(c, follower, "SELECT pg_is_in_recovery()"),
                "t",
                "{}",
                follower.name
            );
        }
        let streaming = psql(
            c,
            c.leader(),
            "SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication \
             WHERE state = 'streaming'",
        );
        assert_eq!(streaming, "f1,f2");
    }

    #[test]
    fn row_written_on_leader_is_visible_on_every_follower_after_wait_replayed() {
        let c = cluster();
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let token = format!("probe-{nanos}");
        psql(
            c,
            c.leader(),
            &format!(
                "CREATE TABLE IF NOT EXISTS harness_probe (token text);\n\
                 INSERT INTO harness_probe VALUES ('{token}');"
            ),
        );
        wait_replayed(c);
        for follower in c.followers() {
            let sql = format!("SELECT count(*) FROM harness_probe WHERE token = '{token}'");
            assert_eq!(psql(c, follower, &sql), "1", "{}", follower.name);
        }
    }

    #[tokio::test]
    async fn app_user_authenticates_with_scram_over_tcp() {
        let c = cluster();
        // TCP logins must use scram-sha-256 (pg_hba), and the stored verifier is a SCRAM one.
        let tcp_auth = "SELECT auth_method FROM pg_hba_file_rules WHERE type = 'host' AND database = '{all}'";
        assert_eq!(psql(c, c.leader(), tcp_auth), "scram-sha-256");
        let verifier = "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app'";
        assert_eq!(psql(c, c.leader(), verifier), "t");
        for instance in c.instances() {
            let (client, connection) = tokio_postgres::connect(&c.app_url(instance), NoTls)
                .await
                .unwrap_or_else(|e| panic!("app login to {}: {e}", instance.name));
            tokio::spawn(connection);
            let row = client
                .query_one("SELECT current_user::text, current_database()::text", &[])
                .await
                .unwrap();
            assert_eq!(
                (row.get::<_, String>(0), row.get::<_, String>(1)),
                ("app".into(), "app".into())
            );
        }
    }

    #[tokio::test]
    async fn wrong_password_is_refused_with_28p01() {
        let c = cluster();
        let url = c.leader().url("app", "not-the-password", "app");
        let error = tokio_postgres::connect(&url, NoTls)
            .await
            .err()
            .expect("a wrong password was accepted");
        assert_eq!(error.code(), Some(&SqlState::INVALID_PASSWORD), "{error}");
    }

    #[test]
    fn servers_do_not_hold_the_watchdog_pipe() {
        let c = cluster();
        let pipe = shared_watchdog_pipe();
        assert!(pipe.starts_with("pipe:["), "{pipe}");
        for instance in c.instances() {
            let pid = instance.postmaster_pid().expect("server running");
            let held: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
                .map(|target| target.to_string_lossy().into_owned())
                .collect();
            assert!(
                held.iter().any(|t| t.ends_with("postgres.log")),
                "{}: {held:?}",
                instance.name
            );
            assert!(
                !held.contains(&pipe),
                "{} holds the watchdog pipe {pipe}",
                instance.name
            );
        }
    }

    #[test]
    fn pgbench_tables_reach_every_follower() {
        pgbench_init();
        let c = cluster();
        for instance in c.instances() {
            let count = psql(c, instance, "SELECT count(*) FROM pgbench_accounts");
            assert_eq!(count, "100000", "{}", instance.name);
        }
    }

    #[test]
    fn private_cluster_is_stopped_and_removed_on_drop() {
        let private = private_cluster(1);
        assert_eq!(
            psql(&private, &private.followers()[0], "SELECT pg_is_in_recovery()"),
            "t"
        );
        let base_dir = private.base_dir().to_path_buf();
        let pids: Vec<u32> = private
            .instances()
            .map(|i| i.postmaster_pid().expect("running"))
            .collect();
        drop(private);
        assert!(!base_dir.exists(), "{} left behind", base_dir.display());
        pids.into_iter().for_each(assert_exits);
    }

    #[test]
    fn watchdog_stops_servers_and_removes_the_dir_when_its_pipe_closes() {
        let (cluster, watchdog) = private_cluster(0).into_parts();
        let base_dir = cluster.base_dir().to_path_buf();
        let pid = cluster.leader().postmaster_pid().expect("running");
        // As if the process had died: no destructor runs, only the pipe closes.
        std::mem::forget(cluster);
        drop(watchdog);
        assert!(!base_dir.exists(), "{} left behind", base_dir.display());
        assert_exits(pid);
    }
}
