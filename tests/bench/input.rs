//! Bad input: one clear line on stderr, nothing on stdout, exit 1 — before any load is started.

use crate::support::{cluster, pgbench_init};
use crate::tool::{Scratch, bench};

/// Runs bench with `args` and checks the failure is one line that mentions `expected`.
async fn refused(args: &[&str], expected: &str) {
    let ran = bench(args).await;
    let stderr = ran.stderr.trim();
    assert_eq!(ran.code, 1, "{args:?}: exit {}\n{stderr}", ran.code);
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line, got:\n{stderr}");
    assert!(stderr.starts_with("pgsplit bench: "), "{stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: {stderr:?} does not mention {expected:?}"
    );
    assert_eq!(ran.stdout, "", "{args:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_one_line() {
    // Port 1 on loopback: nothing listens there.
    refused(
        &["--url", "postgres://app:app@127.0.0.1:1/app"],
        "cannot connect to 127.0.0.1:1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_one_line_with_its_sqlstate() {
    let leader = cluster().leader();
    let url = format!("postgres://app:wrong@127.0.0.1:{}/app", leader.port);
    refused(&["--url", &url], "28P01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_script_names_its_file_and_line() {
    let files = Scratch::new("bad-script");
    let script = files.write("bad.sql", "\\set aid random(1, 10)\nSELECT :aid;\n\\sleepy 5\n");
    refused(
        &["--url", "postgres://app:app@127.0.0.1:1/app", "-w", &script],
        &format!("{script}:3: unknown meta-command \\sleepy"),
    )
    .await;
    let script = files.write("undefined.sql", "SELECT * FROM t WHERE id = :id;\n");
    refused(
        &["--url", "postgres://app:app@127.0.0.1:1/app", "-w", &script],
        &format!("{script}:1: :id is not set"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_workloads_modes_and_events_are_refused() {
    let url = "postgres://app:app@127.0.0.1:1/app";
    refused(&["--url", url, "-w", "selects"], "unknown workload \"selects\"").await;
    refused(&["--url", url, "-w", "mixed:150"], "mixed:N").await;
    refused(
        &["--url", url, "-w", "/nonexistent/script.sql"],
        "cannot read the script",
    )
    .await;
    refused(&["--url", &format!("{url}?sslmode=allow")], "sslmode=allow").await;
    refused(
        &[
            "--url",
            "postgres://app@127.0.0.1:1/app?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem",
        ],
        "sslrootcert",
    )
    .await;
    refused(&["--url", url, "--promote-at", "1s", "f1"], "--admin").await;
    refused(
        &["--url", url, "--admin", "127.0.0.1:1", "--event", "1s", "explode"],
        "unknown event action",
    )
    .await;
    refused(
        &[
            "--url",
            url,
            "--admin",
            "127.0.0.1:1",
            "-T",
            "2s",
            "--promote-at",
            "5s",
            "f1",
        ],
        "after the run",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_admin_api_is_one_line() {
    pgbench_init();
    let c = cluster();
    refused(
        &["--url", &c.app_url(c.leader()), "-T", "1s", "--admin", "127.0.0.1:1"],
        "--admin 127.0.0.1:1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tables_missing_is_one_line_that_says_to_init() {
    let c = cluster();
    // The postgres database has no pgbench tables (the app user may connect to it).
    let url = format!("postgres://app:app@127.0.0.1:{}/postgres", c.leader().port);
    refused(&["--url", &url, "-T", "1s"], "--init").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_works_and_usage_errors_exit_1() {
    let help = bench(&["--help"]).await;
    assert_eq!(help.code, 0);
    for flag in [
        "--url",
        "--clients",
        "--rate",
        "--workload",
        "--protocol",
        "--admin",
        "--promote-at",
        "--report",
    ] {
        assert!(help.stdout.contains(flag), "{flag} in\n{}", help.stdout);
    }
    for args in [&["-c", "0"][..], &["-c", "10001"], &["--bogus"], &["-M", "binary"], &[]] {
        let mut all = vec!["--url", "postgres://x@127.0.0.1:1/x"];
        if args.is_empty() {
            all.clear();
        }
        all.extend_from_slice(args);
        assert_eq!(bench(&all).await.code, 1, "{all:?}");
    }
}
