//! The cluster's last line of defence: a tiny shell process that waits for its stdin pipe to close, then stops every
//! server under a base dir (`pg_ctl stop -m immediate`) and removes the dir. The pipe's write end lives in this
//! process, so the cleanup runs however the process ends — normal exit, panic, abort, SIGKILL. Owns nothing else.
//!
//! The write end is close-on-exec (std creates every pipe with `O_CLOEXEC`), so servers started later never hold it;
//! the shell runs in its own process group so a terminal's Ctrl-C reaches the tests, not the watchdog.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};

use super::ClusterError;
use super::host::Toolbox;

/// `$1` = base dir, `$2` = pg_ctl. Instances live at `<base>/<name>/data` (see `LocalCluster`, `PatroniCluster`).
/// Programs other than PostgreSQL that a cluster starts (Patroni, etcd) leave their PID in `<base>/<name>/*.pid`:
/// they are killed first, so none of them restarts a server stopped next. Only a process whose command line names
/// the base dir is killed, in case the PID was reused.
const SCRIPT: &str = r#"trap '' INT HUP
cat >/dev/null
for f in "$1"/*/*.pid; do
  [ -f "$f" ] || continue
  p=$(cat "$f")
  if grep -qaF "$1" "/proc/$p/cmdline" 2>/dev/null; then kill -9 "$p" 2>/dev/null; fi
done
for d in "$1"/*/data; do
  if [ -f "$d/postmaster.pid" ]; then "$2" stop -D "$d" -m immediate -w >/dev/null 2>&1; fi
done
rm -rf "$1"
"#;

/// An armed watchdog. There is no disarming it: dropping it fires the cleanup now and waits for it to finish;
/// [`Watchdog::keep_until_exit`] leaves it to fire when the process ends.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
    pipe: Option<ChildStdin>,
}

impl Watchdog {
    /// Arms a watchdog for `base_dir` (which need not exist yet), running as the PostgreSQL OS user.
    pub fn spawn(tools: &Toolbox, base_dir: &Path) -> Result<Watchdog, ClusterError> {
        let mut cmd = tools.shell(
            SCRIPT,
            [base_dir.as_os_str(), tools.bin_dir().join("pg_ctl").as_os_str()],
        );
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = cmd.spawn().map_err(|source| ClusterError::Io {
            what: "spawning the cleanup watchdog".into(),
            source,
        })?;
        let pipe = child.stdin.take();
        Ok(Watchdog { child, pipe })
    }

    /// Leaves the pipe open for the rest of the process: the watchdog fires when the process ends.
    pub fn keep_until_exit(self) {
        std::mem::forget(self);
    }

    /// `/proc/self/fd` link target of the pipe's write end (`pipe:[inode]`), to check that no server holds it.
    pub fn pipe_id(&self) -> Option<String> {
        let fd = self.pipe.as_ref()?.as_raw_fd();
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
        Some(target.to_string_lossy().into_owned())
    }

    /// The watchdog shell's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}
