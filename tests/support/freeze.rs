//! A server that stops answering, as a hung host or a frozen disk would look: SIGSTOP to a test cluster's
//! postmaster and every process it started, by PID. [`Frozen`] sends SIGCONT when dropped — also when the test
//! panics — so no test leaves a server stopped.

use pgsplit::demo::cluster::Instance;

/// A stopped server; resumed on drop.
pub struct Frozen {
    name: String,
    /// Postmaster first, then its children: resumed in reverse.
    pids: Vec<libc::pid_t>,
}

impl Frozen {
    /// Stops `instance`'s postmaster (first, so it starts nothing new), then every process it started.
    pub fn freeze(instance: &Instance) -> Frozen {
        let postmaster = instance
            .postmaster_pid()
            .and_then(|pid| libc::pid_t::try_from(pid).ok())
            .unwrap_or_else(|| panic!("{} has no running postmaster", instance.name));
        let mut frozen = Frozen {
            name: instance.name.clone(),
            pids: Vec::new(),
        };
        signal(postmaster, libc::SIGSTOP);
        frozen.pids.push(postmaster);
        for child in children_of(postmaster) {
            signal(child, libc::SIGSTOP);
            frozen.pids.push(child);
        }
        eprintln!("froze {} ({} processes)", frozen.name, frozen.pids.len());
        frozen
    }

    /// Resumes it now (the same as dropping it).
    pub fn thaw(self) {}
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in self.pids.iter().rev() {
            signal(pid, libc::SIGCONT);
        }
        eprintln!("thawed {}", self.name);
    }
}

fn signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) with a PID this harness's cluster started; a process gone meanwhile just fails (ESRCH).
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The processes whose parent is `parent`, from `/proc/<pid>/stat` (`pid (comm) state ppid …`; `comm` may hold
/// spaces and parentheses, so the fields are read after its last `)`).
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: libc::pid_t = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let after_comm = &stat[stat.rfind(')')? + 1..];
            let ppid: libc::pid_t = after_comm.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}
