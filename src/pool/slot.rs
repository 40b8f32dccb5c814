//! A counted place under an instance's `max_connections`: taken before a connection is opened, carried by the
//! connection for its whole life (idle in the pool, lent to a session, or being opened), and given back when it
//! drops — to the oldest waiter, or off the count. Nothing has to remember to give it back: a session that
//! panics, a future cancelled mid-checkout, or an early return all drop it.
//!
//! A slot's drop takes the pool's lock, so code holding the lock never drops one: it hands it on
//! ([`Slot::disarm`]) or lets it go after unlocking.

use std::sync::{Arc, Mutex};

use super::{PoolState, lock};

pub struct Slot {
    state: Arc<Mutex<PoolState>>,
    /// Counted in `total` and still to be given back on drop.
    armed: bool,
}

impl Slot {
    /// A place the caller has just counted in `total`, under the lock.
    pub(super) fn counted(state: &Arc<Mutex<PoolState>>) -> Slot {
        Slot {
            state: state.clone(),
            armed: true,
        }
    }

    /// The place passes on without being given back (its count stays): for use under the lock.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("armed", &self.armed).finish()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            let mut state = lock(&self.state);
            state.give_back(&self.state);
        }
    }
}
