//! Who may hold the proxy's attention before logging in. Every accepted socket takes a [`LoginTicket`] before its
//! task starts; at most `proxy.max_pending_logins` tickets are out at once, and one more makes the oldest give up
//! (its connection is closed). Sockets that never finish logging in can thus neither lock real clients out — a real
//! client logs in within milliseconds, long before it becomes the oldest — nor use up file descriptors. A ticket
//! ends when its client has logged in or gone, by ownership; the client slot (`max_client_connections`) is taken
//! only after authentication.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// The connections that have not logged in yet, oldest first.
#[derive(Default)]
pub struct PendingLogins {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    next: u64,
    /// By admission order: the first entry is the oldest.
    open: BTreeMap<u64, Arc<Notify>>,
}

impl PendingLogins {
    /// Admits one more connection, telling the oldest ones to give up while `max` are already pending.
    pub fn admit(self: &Arc<Self>, max: usize) -> LoginTicket {
        let evicted = Arc::new(Notify::new());
        let mut queue = self.lock();
        while queue.open.len() >= max.max(1) {
            if let Some((_, oldest)) = queue.open.pop_first() {
                // Stored as a permit if the oldest is not waiting on it this instant: it sees it at its next look.
                oldest.notify_one();
            }
        }
        let id = queue.next;
        queue.next += 1;
        queue.open.insert(id, evicted.clone());
        LoginTicket {
            logins: self.clone(),
            id,
            evicted,
        }
    }

    /// Connections admitted and not yet logged in or gone.
    pub fn pending(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One connection's place among the pending logins, given back when it drops.
pub struct LoginTicket {
    logins: Arc<PendingLogins>,
    id: u64,
    evicted: Arc<Notify>,
}

impl LoginTicket {
    /// Completes when newer connections pushed this one out: it must give up its login.
    pub async fn evicted(&self) {
        self.evicted.notified().await;
    }
}

impl Drop for LoginTicket {
    fn drop(&mut self) {
        self.logins.lock().open.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_oldest_pending_login_gives_way_and_tickets_free_their_place() {
        let logins = Arc::new(PendingLogins::default());
        let oldest = logins.admit(2);
        let second = logins.admit(2);
        assert_eq!(logins.pending(), 2);
        let third = logins.admit(2);
        assert_eq!(logins.pending(), 2, "one in, the oldest out");
        let told = |ticket: &LoginTicket| {
            let ticket = ticket.evicted.clone();
            async move { tokio::time::timeout(Duration::ZERO, ticket.notified()).await.is_ok() }
        };
        // The notification waits for the oldest to look; the others were not told.
        assert!(told(&oldest).await);
        assert!(!told(&second).await && !told(&third).await);
        drop(oldest);
        assert_eq!(logins.pending(), 2, "the evicted ticket was already off the queue");
        drop((second, third));
        assert_eq!(logins.pending(), 0);
    }
}
