//! The proxy's stop signal as one session waits for it: a future made once per session and polled once to register
//! the session's task; after that a turn of the relay's loop only reads the signal's version (one atomic load),
//! because the registered task is woken when the signal comes.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::sync::watch;

pub(super) struct StopSignal {
    /// None once the signal has come (a finished future must not be polled again).
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// Whether `wait` has registered a task yet.
    registered: bool,
    /// A copy of the signal read only for its version: whether anything was sent since the session began.
    version: watch::Receiver<bool>,
}

impl StopSignal {
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        let version = stop.clone();
        let mut stop = stop;
        StopSignal {
            wait: Some(Box::pin(async move {
                // A dropped sender means the proxy is gone: that stops the session too.
                let _ = stop.wait_for(|stopping| *stopping).await;
            })),
            registered: false,
            version,
        }
    }

    /// Whether the proxy is stopping; if not yet, the task of the first `cx` polled is woken when it does. All
    /// calls must come from that one task (a session's relay).
    pub fn poll_stopping(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(wait) = self.wait.as_mut() else {
            return true;
        };
        // A signal sent before the session began is seen by the first poll.
        if self.registered && !self.version.has_changed().unwrap_or(true) {
            return false;
        }
        self.registered = true;
        if wait.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.wait = None;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_when_the_proxy_stops_and_stays_resolved() {
        let (sender, receiver) = watch::channel(false);
        let mut signal = StopSignal::new(receiver);
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(signal.poll_stopping(cx))).await;
        assert!(!polled, "not stopping before the signal");
        sender.send(true).expect("receiver alive");
        std::future::poll_fn(|cx| match signal.poll_stopping(cx) {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        })
        .await;
        let again = std::future::poll_fn(|cx| std::task::Poll::Ready(signal.poll_stopping(cx))).await;
        assert!(again, "the signal stays seen");
    }
}
