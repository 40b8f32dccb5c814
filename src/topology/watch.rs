//! What asks for a reload (SPEC §6): SIGHUP, and changes to the config file.
//!
//! Owns the SIGHUP handler task and the file watcher, and turns both into [`ReloadCause`]s on one channel. Never
//! reads, validates or applies the config: whoever receives a cause does that, so a burst of causes costs at most
//! one reload.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::event::{ModifyKind, RenameMode};
use notify_debouncer_full::notify::{self, EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, Debouncer, RecommendedCache, new_debouncer};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Editors write a file in several steps (truncate, write, rename); one quiet period gathers them into one change.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Why a reload was asked for, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    Signal,
    FileChanged,
}

/// Why the triggers could not be started.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("config path {path} names no file to watch", path = .path.display())]
    NoFileName { path: PathBuf },
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot watch {dir} for config changes: {source}", dir = .dir.display())]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// The running triggers. Dropping it stops the watcher and the SIGHUP task.
pub struct Watch {
    causes: mpsc::Receiver<ReloadCause>,
    // Held only to keep the watcher running: dropping it stops its thread.
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    hangup: JoinHandle<()>,
}

impl Watch {
    /// The next reason to reload. Causes arriving while one is pending coalesce into it.
    pub async fn next(&mut self) -> Option<ReloadCause> {
        self.causes.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.hangup.abort();
    }
}

/// Starts listening for SIGHUP and for changes to the file at `config_path`: created, modified, or renamed onto
/// (editors replace a file by rename, which a watch on the file itself would miss, so its directory is watched,
/// non-recursively). Must be called inside a Tokio runtime.
pub fn reload_triggers(config_path: &Path) -> Result<Watch, WatchError> {
    let file_name = config_path
        .file_name()
        .ok_or_else(|| WatchError::NoFileName {
            path: config_path.to_owned(),
        })?
        .to_owned();
    let dir = match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Capacity 1 with `try_send`: while a cause waits unread, more changes add nothing a reload would not read. (A
    // closed channel means the `Watch` is gone; nobody is left to tell.)
    let (sender, causes) = mpsc::channel(1);

    let mut hangups = signal(SignalKind::hangup()).map_err(WatchError::Signal)?;

    let watch_error = |source| WatchError::Watch {
        dir: dir.to_owned(),
        source,
    };
    let file_sender = sender.clone();
    let mut debouncer = new_debouncer(DEBOUNCE, None, move |result: DebounceEventResult| match result {
        Ok(events) => {
            if events.iter().any(|event| concerns(event, &file_name)) {
                let _ = file_sender.try_send(ReloadCause::FileChanged);
            }
        }
        Err(errors) => {
            for error in errors {
                tracing::warn!(%error, "watching the config file");
            }
        }
    })
    .map_err(watch_error)?;
    debouncer.watch(dir, RecursiveMode::NonRecursive).map_err(watch_error)?;

    // Spawned last, so an error above leaves no task behind.
    let hangup = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let _ = sender.try_send(ReloadCause::Signal);
        }
    });
    Ok(Watch {
        causes,
        _debouncer: debouncer,
        hangup,
    })
}

/// Whether a debounced event may have changed the config file named `file_name`.
fn concerns(event: &DebouncedEvent, file_name: &OsStr) -> bool {
    // The watcher lost events (its queue overflowed): the file may have changed.
    if event.need_rescan() {
        return true;
    }
    let path = match event.kind {
        EventKind::Create(_) | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
            event.paths.first()
        }
        // A rename's destination is its last path. `Any`: some platforms (macOS) do not say which side a path is.
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both | RenameMode::Any)) => event.paths.last(),
        _ => None,
    };
    path.and_then(|path| path.file_name()) == Some(file_name)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use tokio::time::timeout;

    use super::*;

    /// Long enough for a debounced event on a loaded machine; only reached when the test fails.
    const EXPECTED_WITHIN: Duration = Duration::from_secs(10);

    /// A fresh directory with a config file in it, removed when dropped (also when a test fails).
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("pgsplit-watch-test-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("proxy.toml"), "# before\n").unwrap();
            Scratch(dir)
        }

        fn config(&self) -> PathBuf {
            self.0.join("proxy.toml")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    async fn expect_change(watch: &mut Watch) {
        let cause = timeout(EXPECTED_WITHIN, watch.next()).await.expect("a reload cause");
        assert_eq!(cause, Some(ReloadCause::FileChanged));
    }

    #[tokio::test]
    async fn writing_the_file_in_place_is_a_change() {
        let scratch = Scratch::new("in-place");
        let mut watch = reload_triggers(&scratch.config()).unwrap();
        fs::write(scratch.config(), "# after\n").unwrap();
        expect_change(&mut watch).await;
    }

    #[tokio::test]
    async fn replacing_the_file_by_rename_is_a_change() {
        let scratch = Scratch::new("rename");
        // Written before the watch starts, so the watcher sees a rename, not a new file it could merge it into.
        let temp = scratch.0.join(".proxy.toml.swp");
        fs::write(&temp, "# after\n").unwrap();
        let mut watch = reload_triggers(&scratch.config()).unwrap();
        fs::rename(&temp, scratch.config()).unwrap();
        expect_change(&mut watch).await;
    }

    #[tokio::test]
    async fn another_file_in_the_directory_is_no_change() {
        let scratch = Scratch::new("unrelated");
        let mut watch = reload_triggers(&scratch.config()).unwrap();
        fs::write(scratch.0.join("notes.txt"), "unrelated\n").unwrap();
        // Asserts an absence, so it waits out a bounded time: five debounce periods.
        assert!(timeout(Duration::from_secs(1), watch.next()).await.is_err());
        // The watch itself works: the config file is still seen.
        fs::write(scratch.config(), "# after\n").unwrap();
        expect_change(&mut watch).await;
    }

    #[tokio::test]
    async fn a_directory_that_does_not_exist_is_an_error() {
        let scratch = Scratch::new("missing");
        let error = reload_triggers(&scratch.0.join("absent/proxy.toml"))
            .err()
            .expect("an error");
        assert!(matches!(error, WatchError::Watch { .. }), "{error}");
        assert!(error.to_string().contains("absent"), "{error}");
    }

    #[test]
    fn a_path_without_a_file_name_is_an_error() {
        let error = reload_triggers(Path::new("/")).err().expect("an error");
        assert!(matches!(error, WatchError::NoFileName { .. }), "{error}");
    }
}
