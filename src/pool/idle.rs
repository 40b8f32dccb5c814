//! An instance's idle server connections, kept per worker thread: a connection's socket is registered with one
//! worker's I/O driver, so a session looks on its own worker's list first. Takes and gives connections; what is
//! lent to whom is the pool's to decide (`super`).

use super::{ConnKey, ServerConn};

/// Idle connections, one list per worker (grown to the workers that return connections).
#[derive(Default)]
pub(super) struct Idle {
    #[allow(clippy::vec_box)] // the boxes are handed out whole, not kept here
    per_worker: Vec<Vec<Box<ServerConn>>>,
}

impl Idle {
    pub(super) fn len(&self) -> usize {
        self.per_worker.iter().map(Vec::len).sum()
    }

    #[inline]
    pub(super) fn push(&mut self, conn: Box<ServerConn>) {
        let worker = conn.worker();
        if self.per_worker.len() <= worker {
            self.per_worker.resize_with(worker + 1, Vec::new);
        }
        self.per_worker[worker].push(conn);
    }

    /// The most recently returned connection for `key` on `worker`, else on any other worker.
    pub(super) fn take(&mut self, key: &ConnKey, worker: usize) -> Option<Box<ServerConn>> {
        self.take_own(key, worker).or_else(|| {
            self.per_worker
                .iter_mut()
                .enumerate()
                .filter(|(other, _)| *other != worker)
                .find_map(|(_, list)| take_last(list, key))
        })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.per_worker.iter().all(Vec::is_empty)
    }

    /// The most recently returned connection for `key` on `worker` only.
    pub(super) fn take_own(&mut self, key: &ConnKey, worker: usize) -> Option<Box<ServerConn>> {
        self.per_worker.get_mut(worker).and_then(|list| take_last(list, key))
    }

    /// An idle connection of another user/database than `key`, to close for its place.
    pub(super) fn take_other(&mut self, key: &ConnKey) -> Option<Box<ServerConn>> {
        self.per_worker.iter_mut().find_map(|list| {
            let i = list.iter().position(|c| c.key != *key)?;
            Some(list.remove(i))
        })
    }

    /// Takes up to `n` idle connections (all of them with `usize::MAX`), the longest idle first.
    #[allow(clippy::vec_box)] // as above
    pub(super) fn drain(&mut self, mut n: usize) -> Vec<Box<ServerConn>> {
        let mut taken = Vec::new();
        for list in &mut self.per_worker {
            let here = n.min(list.len());
            taken.extend(list.drain(..here));
            n -= here;
        }
        taken
    }
}

#[allow(clippy::vec_box)] // as in `Idle`
fn take_last(list: &mut Vec<Box<ServerConn>>, key: &ConnKey) -> Option<Box<ServerConn>> {
    let i = list.iter().rposition(|c| c.key == *key)?;
    Some(list.swap_remove(i))
}
