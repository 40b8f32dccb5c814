//! Where pgsplit's code runs. Client sessions run on worker threads of their own, each a single-threaded tokio
//! runtime with its own I/O driver (its own epoll) and no timer driver. A session stays on the worker it was placed
//! on, and so do the server connections it borrows (`crate::pool` keeps each worker's idle connections apart and
//! moves a connection's socket to the borrower's driver when it changes hands), so a transaction's client socket,
//! server socket and task are polled by one thread: no cross-thread wake-ups, no work stealing, no shared epoll.
//! New sessions go to the worker with the fewest ([`Workers::place`]).
//!
//! No timer driver: its bookkeeping at every wake-up (clock reads and a pass over the timer wheel) cost about a
//! tenth of the proxy's user CPU per select at one client. The few waits on a session's path — a checkout's
//! deadline, a connect timeout, a read-your-writes pause, a retry pause — borrow a clock from a timer thread:
//! [`sleep`], [`sleep_until`], [`timeout`]. Everything else (health checks, the admin API, reloads, the function
//! catalog) runs on the runtime that started the proxy, with tokio's timers as usual.
//!
//! The rule that follows: code a session runs never calls `tokio::time`, which panics on a worker.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

thread_local! {
    /// The index of the worker this thread is; 0 on any other thread.
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the caller (0 off the workers): what per-worker state is indexed by.
pub fn current_worker() -> usize {
    WORKER.with(Cell::get)
}

/// The session workers; dropping it ends every session still running.
pub struct Workers {
    shared: Arc<Placement>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

/// Where a new session goes: each worker's runtime and how many sessions it runs now.
pub struct Placement {
    workers: Vec<WorkerSlot>,
    /// Breaks ties between equally loaded workers, so that an idle proxy still spreads its first clients.
    turn: AtomicUsize,
}

struct WorkerSlot {
    handle: Handle,
    /// Padded: every worker writes its own count as sessions start and end.
    sessions: Arc<Padded<AtomicUsize>>,
}

/// A value alone on its cache line (128 bytes: two 64-byte lines, for the adjacent-line prefetcher).
#[repr(align(128))]
#[derive(Default)]
pub struct Padded<T>(pub T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A value per worker, each on cache lines of its own: counters every worker adds to on every unit, and that are
/// read (summed) only by status and metrics. One shared atomic would move its cache line between the workers' cores
/// at each add. More workers than [`PerWorker::STRIPES`] share stripes, which stays correct.
pub struct PerWorker<T> {
    stripes: Box<[Padded<T>]>,
}

impl<T: Default> Default for PerWorker<T> {
    fn default() -> Self {
        PerWorker {
            stripes: (0..Self::STRIPES).map(|_| Padded::default()).collect(),
        }
    }
}

impl<T> PerWorker<T> {
    pub const STRIPES: usize = 16;

    /// The calling worker's stripe number: keep it to reach the same stripe again from anywhere ([`Self::at`]).
    pub fn stripe() -> usize {
        current_worker() % Self::STRIPES
    }

    /// The calling worker's value.
    pub fn local(&self) -> &T {
        self.at(Self::stripe())
    }

    pub fn at(&self, stripe: usize) -> &T {
        &self.stripes[stripe % Self::STRIPES]
    }

    /// Every worker's value, to sum.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().map(|stripe| &stripe.0)
    }
}

/// A session's seat on its worker: counted while it lives.
pub struct Seat {
    worker: usize,
    sessions: Arc<Padded<AtomicUsize>>,
}

impl Seat {
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// `count` worker threads (at least one), each its own single-threaded runtime.
    pub fn start(count: usize) -> std::io::Result<Workers> {
        // Started now, so that a thread the system refuses shows at start-up, not at a session's first wait.
        timers()?;
        let count = count.max(1);
        let mut workers = Vec::with_capacity(count);
        let mut stops = Vec::with_capacity(count);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = Builder::new_current_thread().enable_io().build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("pgsplit-worker-{index}"))
                .spawn(move || {
                    WORKER.with(|worker| worker.set(index));
                    // A current-thread runtime runs its tasks only inside `block_on`: this thread is its loop.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            workers.push(WorkerSlot {
                handle,
                sessions: Arc::default(),
            });
            stops.push(stop);
            threads.push(thread);
        }
        Ok(Workers {
            shared: Arc::new(Placement {
                workers,
                turn: AtomicUsize::new(0),
            }),
            stops,
            threads,
        })
    }

    /// Shared with the accept loops, which place sessions.
    pub fn placement(&self) -> &Arc<Placement> {
        &self.shared
    }

    /// Worker `index`'s runtime, to run something there.
    #[cfg(test)]
    pub fn worker(&self, index: usize) -> &Handle {
        &self.shared.workers[index].handle
    }
}

impl Placement {
    /// The first worker's runtime: where the accept loops run and listeners are registered.
    pub fn first(&self) -> &Handle {
        &self.workers[0].handle
    }

    /// A seat on the worker running the fewest sessions, counted from now, and that worker's runtime.
    pub fn place(&self) -> (Seat, &Handle) {
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        let count = self.workers.len();
        let index = (0..count)
            .map(|offset| (start + offset) % count)
            .min_by_key(|&index| self.workers[index].sessions.load(Ordering::Relaxed))
            .unwrap_or(0);
        let worker = &self.workers[index];
        worker.sessions.fetch_add(1, Ordering::Relaxed);
        let seat = Seat {
            worker: index,
            sessions: worker.sessions.clone(),
        };
        (seat, &worker.handle)
    }

    /// Sessions running on each worker now.
    pub fn sessions(&self) -> Vec<usize> {
        self.workers
            .iter()
            .map(|worker| worker.sessions.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The deadline passed before the future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// Waits until `deadline` on the timer thread; works on any runtime, the workers' included.
pub async fn sleep_until(deadline: Instant) {
    let timers = timers().expect("the timer thread started with the workers");
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
        let sessions = Workers::start(1).expect("the workers start");
        let tokio_sleep = sessions
            .worker(0)
            .spawn(async { tokio::time::sleep(Duration::from_millis(1)).await });
        let outcome = wait_for(tokio_sleep);
        assert!(outcome.is_err_and(|e| e.is_panic()), "tokio::time works on a worker");

        let started = Instant::now();
        let borrowed = sessions.worker(0).spawn(async {
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
        let sessions = Workers::start(1).expect("the workers start");
        let finished = sessions.worker(0).spawn(async {
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
