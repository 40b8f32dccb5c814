//! Ctrl-C: the run stops and prints its summary so far.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::support::{cluster, pgbench_init};
use crate::tool::{RUN_LIMIT, Scratch, command, json, number};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_prints_the_summary_so_far() {
    pgbench_init();
    let c = cluster();
    let files = Scratch::new("interrupt");
    let (url, out) = (c.app_url(c.leader()), files.arg("run.json"));
    let mut child = command(&["--url", &url, "-c", "2", "-T", "120s", "-P", "1s", "--json", &out])
        .spawn()
        .expect("pgsplit bench starts");
    let pid = child.id().expect("a running child");
    // The first progress line says transactions are being run.
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.expect("reading stderr") {
            if line.starts_with("progress:") {
                return line;
            }
        }
        panic!("pgsplit bench ended without a progress line");
    })
    .await
    .expect("a progress line within 60 s");
    assert!(first.contains("tps"), "{first}");
    // SAFETY: kill sends a signal to the child we started, by its PID.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) }, 0);
    let mut stdout = String::new();
    let mut pipe = child.stdout.take().expect("stdout piped");
    let status = tokio::time::timeout(RUN_LIMIT, async {
        pipe.read_to_string(&mut stdout).await.expect("reading stdout");
        child.wait().await.expect("the child ends")
    })
    .await
    .expect("pgsplit bench ends after SIGINT");
    assert_eq!(status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("interrupted:"), "{stdout}");
    assert!(stdout.contains("transactions:"), "{stdout}");
    let run = json(&files.path("run.json"));
    assert_eq!(run["interrupted"], true);
    assert!(number(&run, "/committed") > 0.0);
    assert!(number(&run, "/elapsed_s") < 60.0, "stopped long before -T 120s");
}
