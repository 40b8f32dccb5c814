//! What pgsplit logs, kept in memory so a test can look for what must never be there (a password). Installs the
//! process's global `tracing` subscriber on first use, at `info` — what an operator runs with — and every test of
//! the binary logs into it from then on.

use std::io::Write;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

static LOGS: OnceLock<Logs> = OnceLock::new();

#[derive(Default)]
pub struct Logs {
    text: Mutex<Vec<u8>>,
}

impl Logs {
    /// Everything logged since capture began.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Starts capturing (once per process) and returns the capture.
pub fn capture() -> &'static Logs {
    let mut first = false;
    let logs = LOGS.get_or_init(|| {
        first = true;
        Logs::default()
    });
    if first {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("info"))
            .with_writer(Capture(logs))
            .with_ansi(false)
            .try_init();
    }
    logs
}

#[derive(Clone, Copy)]
struct Capture(&'static Logs);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .text
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        *self
    }
}
