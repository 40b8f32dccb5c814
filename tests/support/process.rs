//! pgsplit as its own process (the built binary), for tests that measure it from the outside: its memory, its exit.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use tokio::process::{Child, Command};

use super::WAIT;

/// A free loopback port (free when asked; bound by pgsplit moments later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A running `pgsplit run` with a config of the test's, killed (by its PID, through the child handle) on drop.
pub struct ProxyProcess {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    dir: PathBuf,
}

impl ProxyProcess {
    /// Starts pgsplit with `[proxy] listen`/`admin_listen` on free ports followed by `rest` of the config, and
    /// waits until it accepts connections.
    pub async fn start(name: &str, rest: &str) -> ProxyProcess {
        let (port, admin_port) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!("pgsplit-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let config = dir.join("proxy.toml");
        let text = format!("[proxy]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n{rest}");
        std::fs::write(&config, text).expect("config written");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pgsplit"))
            .args(["run", "-c"])
            .arg(&config)
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("pgsplit starts");
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(child.try_wait().expect("status").is_none(), "pgsplit exited early");
            assert!(Instant::now() < deadline, "pgsplit never accepted");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        ProxyProcess {
            child,
            port,
            admin_port,
            dir,
        }
    }

    /// A field of `/proc/<pid>/status` in KiB (`VmRSS`: resident now; `VmHWM`: the peak so far).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let pid = self.child.id().expect("pgsplit running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
