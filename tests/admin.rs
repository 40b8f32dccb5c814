//! The admin API as an operator's tools see it, over real HTTP, against a proxy whose leader does not answer (no
//! PostgreSQL needed): health, status, metrics, the token rule, pause/resume, reload without a file, a refused
//! promotion that rolls back, and malformed requests. Plus the `pgsplit status` command against the same proxy.

use std::net::SocketAddr;
use std::time::Duration;

use pgsplit::config::Config;
use pgsplit::proxy::Proxy;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy with a leader on a port nobody listens on, and an admin token.
async fn start() -> Proxy {
    let config = Config::parse(
        r#"
[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = "t"

[leader]
name = "leader"
host = "127.0.0.1"
port = 1

[[users]]
name = "app"
password = "app"
"#,
        "admin-test.toml",
    )
    .expect("valid config");
    Proxy::start(config).await.expect("proxy starts")
}

/// An answer: status code and body.
struct Answer {
    code: u16,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends raw bytes on a fresh connection and reads the answer.
async fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        // Up to the close, or a reset: a server refusing a body it did not read may reset after answering.
        let (mut answer, mut chunk) = (Vec::new(), [0u8; 4096]);
        while let Ok(n @ 1..) = stream.read(&mut chunk).await {
            answer.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(answer).unwrap()
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .expect("the admin API answers within 5 s");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Answer {
        code,
        body: body.to_owned(),
    }
}

async fn call(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> Answer {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    // Mutating calls say JSON, as the CLI does.
    let json = if method == "POST" {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: pgsplit\r\nConnection: close\r\n{auth}{json}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw(addr, request.as_bytes()).await
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    call(addr, "GET", path, None, "").await
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> Answer {
    call(addr, "POST", path, Some("t"), body).await
}

#[tokio::test]
async fn reads_answer_health_status_and_metrics() {
    let proxy = start().await;
    let admin = proxy.admin_addr();

    let health = get(admin, "/healthz").await;
    assert_eq!((health.code, health.body.as_str()), (200, "ok\n"));

    let status = get(admin, "/status").await;
    assert_eq!(status.code, 200);
    let status = status.json();
    assert_eq!(status["leader"], "leader");
    let leader = &status["instances"][0];
    assert_eq!(leader["name"], "leader");
    assert_eq!(leader["role"], "leader");
    assert_eq!(leader["pool"], Value::Null);
    assert_eq!(leader["healthy"], false);
    assert_eq!(status["paused"]["writes"], false);
    assert_eq!(status["changeover"], Value::Null);
    // No proxy.workers in the config: half the CPUs this machine gives the test, at least one.
    let threads = status["workers"]["threads"].as_u64().expect("a thread count");
    let cpus = status["workers"]["from_cpus"].as_u64().expect("chosen from the CPUs");
    assert_eq!(threads, (cpus / 2).max(1), "{status}");
    assert_eq!(
        status["workers"]["sessions"].as_array().map(Vec::len),
        usize::try_from(threads).ok()
    );

    let metrics = get(admin, "/metrics").await;
    assert_eq!(metrics.code, 200);
    assert!(
        metrics
            .body
            .contains("\npgsplit_instance_up{instance=\"leader\",role=\"leader\"} 0\n"),
        "{}",
        metrics.body
    );
    assert!(metrics.body.contains("\npgsplit_client_connections 0\n"));
    assert!(
        metrics.body.contains(&format!("\npgsplit_workers {threads}\n")),
        "{}",
        metrics.body
    );
    assert!(
        metrics.body.contains("\npgsplit_worker_sessions{worker=\"0\"} 0\n"),
        "{}",
        metrics.body
    );

    assert!(proxy.shutdown(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn mutating_calls_need_the_token_and_pause_shows_in_status() {
    let proxy = start().await;
    let admin = proxy.admin_addr();

    let refused = call(admin, "POST", "/pause", None, "").await;
    assert_eq!(refused.code, 401);
    assert!(refused.json()["error"].as_str().unwrap().contains("Bearer"));
    assert_eq!(call(admin, "POST", "/pause", Some("wrong"), "").await.code, 401);

    let paused = post(admin, "/pause", r#"{"direction": "writes"}"#).await;
    assert_eq!(paused.code, 200, "{}", paused.body);
    assert_eq!(paused.json()["paused"]["writes"], true);
    assert_eq!(paused.json()["paused"]["reads"], false);
    assert_eq!(get(admin, "/status").await.json()["paused"]["writes"], true);

    let resumed = post(admin, "/resume", "").await;
    assert_eq!(resumed.code, 200);
    assert_eq!(get(admin, "/status").await.json()["paused"]["writes"], false);

    assert_eq!(post(admin, "/pause", r#"{"direction": "sideways"}"#).await.code, 400);

    let reload = post(admin, "/reload", "").await;
    assert_eq!(reload.code, 409, "started from a config value: no file");
    assert!(reload.json()["error"].as_str().unwrap().contains("no config file"));

    assert!(proxy.shutdown(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn promoting_an_unknown_instance_is_accepted_then_rolls_back() {
    let proxy = start().await;
    let admin = proxy.admin_addr();

    let started = post(admin, "/promote", r#"{"instance": "nobody"}"#).await;
    assert_eq!(started.code, 202, "{}", started.body);
    assert_eq!(started.json()["target"], "nobody");

    let mut changeover = Value::Null;
    for _ in 0..50 {
        changeover = get(admin, "/status").await.json()["changeover"].clone();
        if changeover["outcome"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(changeover["outcome"], "rolled_back", "{changeover}");
    assert!(changeover["error"].as_str().unwrap().contains("nobody"), "{changeover}");
    assert_eq!(changeover["steps"][0]["step"], "check");
    assert_eq!(changeover["steps"][0]["state"], "failed");
    assert_eq!(get(admin, "/status").await.json()["paused"]["writes"], false);

    assert_eq!(post(admin, "/promote", "{}").await.code, 400);

    let abort = post(admin, "/promote/abort", "").await;
    assert_eq!(abort.code, 409, "nothing runs: {}", abort.body);
    assert!(
        abort.json()["error"]
            .as_str()
            .unwrap()
            .contains("no changeover is running")
    );
    assert_eq!(
        call(admin, "POST", "/promote/abort", None, "").await.code,
        401,
        "needs the token"
    );

    assert!(proxy.shutdown(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn bad_requests_get_errors_and_the_server_goes_on() {
    let proxy = start().await;
    let admin = proxy.admin_addr();

    let garbage = raw(admin, b"GARBAGE\r\n\r\n").await;
    assert_eq!(garbage.code, 400);
    assert_eq!(get(admin, "/healthz").await.code, 200, "still answering");

    let missing = get(admin, "/nope").await;
    assert_eq!(missing.code, 404);
    assert!(missing.json()["error"].as_str().unwrap().contains("/nope"));
    assert_eq!(get(admin, "/reload").await.code, 405);
    assert_eq!(post(admin, "/status", "").await.code, 405);

    let huge = "x".repeat(pgsplit::admin::MAX_BODY + 1);
    assert_eq!(post(admin, "/pause", &huge).await.code, 413);

    assert!(proxy.shutdown(Duration::from_secs(1)).await);
}

/// `pgsplit <args> --admin <addr>` with no config file and no token from the environment: (exit code, stdout,
/// stderr).
async fn pgsplit(admin: SocketAddr, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsplit"))
        .args(args)
        .args(["--admin", &admin.to_string(), "-c", "/nonexistent/proxy.toml"])
        .env_remove("PGSPLIT_CONFIG")
        .env_remove("PGSPLIT_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (
        output.status.code().unwrap_or(-1),
        text(output.stdout),
        text(output.stderr),
    )
}

#[tokio::test]
async fn the_cli_prints_status_and_reports_refusals() {
    let proxy = start().await;
    let admin = proxy.admin_addr();

    let (code, out, err) = pgsplit(admin, &["status"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("pgsplit: generation 1, 0 clients (0 pinned), not paused\nworkers: "),
        "{out}"
    );
    let workers = out.lines().nth(1).unwrap_or_default();
    assert!(workers.contains(" (auto, ") && workers.contains(" CPU"), "{out}");
    assert!(out.contains("\n=== leader (leader)\n"), "{out}");
    assert!(out.contains("\nStatus:          unavailable\n"), "{out}");

    let (code, out, _) = pgsplit(admin, &["status", "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["leader"], "leader");

    let (code, _, err) = pgsplit(admin, &["pause", "--writes"]).await;
    assert_eq!(code, 2, "no token");
    assert!(err.contains("401") && err.contains("Bearer"), "{err}");
    let (code, out, err) = pgsplit(admin, &["pause", "--writes", "--admin-token", "t"]).await;
    assert_eq!((code, out.as_str()), (0, "writes paused\n"), "{err}");
    let (code, out, _) = pgsplit(admin, &["resume", "--admin-token", "t"]).await;
    assert_eq!((code, out.as_str()), (0, "not paused\n"));

    let (code, out, err) = pgsplit(admin, &["promote", "nobody", "--admin-token", "t"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("check "), "{out}");
    assert!(
        err.contains("changeover rolled_back: no instance named \"nobody\""),
        "{err}"
    );

    let (code, _, err) = pgsplit(admin, &["promote", "--abort", "--admin-token", "t"]).await;
    assert_eq!(code, 2);
    assert!(err.contains("409") && err.contains("no changeover is running"), "{err}");
    let (code, _, err) = pgsplit(admin, &["promote", "f1", "--abort"]).await;
    assert_eq!(code, 1, "--abort takes no instance: {err}");

    let (code, out, _) = pgsplit(admin, &["wait", "--timeout", "1s"]).await;
    assert_eq!(
        (code, out.as_str()),
        (0, "0 follower(s) healthy and caught up\n"),
        "no followers to wait for"
    );

    let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let (code, _, err) = pgsplit(nobody, &["status"]).await;
    assert_eq!(code, 2, "nobody listens there");
    assert!(err.contains("cannot reach the admin API at 127.0.0.1:1"), "{err}");

    let (code, _, err) = pgsplit(admin, &["promote", "f1", "--drain-timeout", "5"]).await;
    assert_eq!(code, 1, "a duration without a unit is a usage error");
    assert!(err.contains("no unit"), "{err}");

    assert!(proxy.shutdown(Duration::from_secs(1)).await);
}

#[tokio::test]
async fn the_admin_api_refuses_what_it_cannot_trust() {
    // A listener other machines can reach, and no token: not a config pgsplit accepts.
    let open = Config::parse(
        "[proxy]\nadmin_listen = \"0.0.0.0:9930\"\n[leader]\nhost = \"h\"\nport = 1\n[[users]]\nname = \"a\"\n\
         password = \"a\"\n",
        "t.toml",
    );
    let errors = open.expect_err("refused").to_string();
    assert!(errors.contains("no proxy.admin_token"), "{errors}");

    let config = Config::parse(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_token = \"t\"\n\
         admin_token_for_reads = true\n[leader]\nhost = \"127.0.0.1\"\nport = 1\n[[users]]\nname = \"a\"\n\
         password = \"a\"\n",
        "t.toml",
    )
    .expect("valid");
    let proxy = Proxy::start(config).await.expect("proxy starts");
    let addr = proxy.admin_addr();
    // A form post, as a browser on this machine could send cross-site without asking: refused, nothing paused.
    let form = b"POST /pause HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer t\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(raw(addr, form).await.code, 415);
    let status = call(addr, "GET", "/status", Some("t"), "").await;
    assert_eq!(status.json()["paused"]["writes"], false, "{}", status.body);
    // With admin_token_for_reads, status and metrics need the token too; /healthz never does.
    assert_eq!(call(addr, "GET", "/status", None, "").await.code, 401);
    assert_eq!(call(addr, "GET", "/metrics", None, "").await.code, 401);
    assert_eq!(call(addr, "GET", "/healthz", None, "").await.code, 200);
    assert_eq!(call(addr, "GET", "/metrics", Some("t"), "").await.code, 200);
    proxy.shutdown(Duration::from_secs(5)).await;
}
