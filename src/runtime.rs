//! Where pgsplit's code runs. Client sessions have a tokio runtime of their own with I/O only: no timer driver,
//! whose bookkeeping at every wake-up (clock reads and a pass over the timer wheel) cost about a tenth of the
//! proxy's user CPU per select at one client. The few waits on a session's path — a checkout's deadline, a connect
//! timeout, a read-your-writes pause, a retry pause — borrow a clock from a timer thread: [`sleep`],
//! [`sleep_until`], [`timeout`]. Everything else (health checks, the admin API, reloads, the function catalog)
//! runs on the runtime that started the proxy, with tokio's timers as usual.
//!
//! The rule that follows: code a session runs never calls `tokio::time`, which panics on the session runtime.

use std::future::Future;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The runtime client sessions run on, on threads of its own; dropping it ends every session still running.
pub struct SessionRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SessionRuntime {
    /// One worker: every session on one thread, like PgBouncer's single loop. More: that many worker threads.
    pub fn start(workers: usize) -> std::io::Result<SessionRuntime> {
        // Started now, so that a thread the system refuses shows at start-up, not at a session's first wait.
        timers()?;
        let mut builder = if workers <= 1 {
            Builder::new_current_thread()
        } else {
            let mut builder = Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        };
        let runtime = builder.enable_io().thread_name("pgsplit-sessions").build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("pgsplit-sessions".into())
            .spawn(move || {
                // A current-thread runtime runs its tasks only inside `block_on`: this thread is its loop.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(SessionRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Spawns onto, or (with `enter`) creates I/O resources for, the session runtime.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for SessionRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Waits until `deadline` on the timer thread; works on any runtime, the session runtime included.
pub async fn sleep_until(deadline: Instant) {
    let timers = timers().expect("the timer thread started with the session runtime");
    // Made inside the task: a tokio sleep binds to the runtime it is made on.
    let timer = timers.spawn(async move { tokio::time::sleep_until(deadline.into()).await });
    // A wait given up (its future dropped) takes its timer with it.
    let _cancel = CancelOnDrop(timer.abort_handle());
    let _ = timer.await;
}

/// Waits `duration` on the timer thread.
pub async fn sleep(duration: Duration) {
    sleep_until(Instant::now() + duration).await;
}

/// `future`'s output, or [`Elapsed`] once `duration` has passed. The future is polled first: one that is ready at
/// once starts no timer.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let deadline = Instant::now() + duration;
    tokio::select! {
        biased;
        output = future => Ok(output),
        () = sleep_until(deadline) => Err(Elapsed),
    }
}

struct CancelOnDrop(tokio::task::AbortHandle);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The timer thread's runtime, started at the first call: a thread with tokio's timer driver and nothing else.
fn timers() -> std::io::Result<Handle> {
    static TIMERS: Mutex<Option<Handle>> = Mutex::new(None);
    let mut timers = TIMERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(handle) = &*timers {
        return Ok(handle.clone());
    }
    let runtime = Builder::new_current_thread().enable_time().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("pgsplit-timers".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    *timers = Some(handle.clone());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_have_no_timer_driver_and_borrow_the_timer_threads_clock() {
        let sessions = SessionRuntime::start(1).expect("the session runtime starts");
        let tokio_sleep = sessions
            .handle()
            .spawn(async { tokio::time::sleep(Duration::from_millis(1)).await });
        let outcome = wait_for(tokio_sleep);
        assert!(
            outcome.is_err_and(|e| e.is_panic()),
            "tokio::time works on the session runtime"
        );

        let started = Instant::now();
        let borrowed = sessions.handle().spawn(async {
            sleep(Duration::from_millis(20)).await;
            let pending = timeout(Duration::from_millis(20), std::future::pending::<()>()).await;
            let ready = timeout(Duration::from_secs(60), async { 7 }).await;
            (pending, ready)
        });
        let (pending, ready) = wait_for(borrowed).expect("the session task ends");
        assert_eq!(pending, Err(Elapsed));
        assert_eq!(ready, Ok(7));
        assert!(
            started.elapsed() >= Duration::from_millis(40),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_wait_given_up_cancels_its_timer() {
        let sessions = SessionRuntime::start(1).expect("the session runtime starts");
        let finished = sessions.handle().spawn(async {
            // Dropped at once by the timeout around it: its timer task must not keep running for an hour.
            let _ = timeout(Duration::from_millis(10), sleep(Duration::from_secs(3600))).await;
        });
        wait_for(finished).expect("the session task ends");
        // Other tests' timers come and go on the same thread; an hour-long one left behind would stay.
        let timers = timers().expect("timers");
        let give_up = Instant::now() + Duration::from_secs(30);
        while timers.metrics().num_alive_tasks() > 0 {
            assert!(
                Instant::now() < give_up,
                "a timer task outlived the wait that started it"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a session-runtime task from a plain thread (the test is on no runtime).
    fn wait_for<T>(task: tokio::task::JoinHandle<T>) -> Result<T, tokio::task::JoinError> {
        Builder::new_current_thread()
            .build()
            .expect("a waiting runtime")
            .block_on(task)
    }
}
