//! Client read buffers, lent to a session only while it has client bytes to hold. A session takes one when its
//! client has something to read and gives it back as soon as every byte in it has been dealt with, so an idle client
//! — one between transactions, or one that never sent anything — holds no read buffer at all. The buffers given back
//! wait in a short list per worker thread (sessions never change threads, so no lock is taken), which makes the
//! round trip two pushes and pops on a `Vec` instead of an allocation and a free per message.

use std::cell::RefCell;

use bytes::BytesMut;

use crate::pool::server::READ_CHUNK;

/// Buffers kept per worker: enough for the sessions that go from idle to busy at once; past it they are freed.
const MAX_SPARE: usize = 256;
/// A buffer that grew past this for a large message is freed rather than kept.
const MAX_KEPT_CAPACITY: usize = 4 * READ_CHUNK;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer with room for at least [`READ_CHUNK`] bytes: one given back on this thread, or a new one.
pub(super) fn take() -> BytesMut {
    let mut buf = SPARE.with(|spare| spare.borrow_mut().pop()).unwrap_or_default();
    buf.reserve(READ_CHUNK);
    buf
}

/// Takes back `buf` if it holds nothing (it is then replaced by an empty, unallocated one); otherwise leaves it.
/// Called at every turn of a session's loop, so the check is inlined and the rest is not.
#[inline]
pub(super) fn give_back(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() != 0 {
        keep(std::mem::take(buf));
    }
}

#[inline(never)]
fn keep(buf: BytesMut) {
    if buf.capacity() > MAX_KEPT_CAPACITY {
        return;
    }
    SPARE.with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < MAX_SPARE {
            spare.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_buffer_goes_back_and_is_lent_again_and_a_full_one_stays() {
        let mut buf = take();
        assert!(buf.capacity() >= READ_CHUNK);
        buf.extend_from_slice(b"Q");
        give_back(&mut buf);
        assert_eq!(&buf[..], b"Q", "a buffer holding bytes stays with its session");
        buf.clear();
        let address = buf.as_ptr();
        give_back(&mut buf);
        assert_eq!(buf.capacity(), 0, "an empty buffer goes back");
        assert_eq!(take().as_ptr(), address, "and is lent again");
    }

    #[test]
    fn a_buffer_grown_for_a_large_message_is_freed_not_kept() {
        let mut big = BytesMut::with_capacity(MAX_KEPT_CAPACITY * 2);
        give_back(&mut big);
        assert_eq!(big.capacity(), 0, "the session lets go of it");
        // Each test runs on a thread of its own, so this thread's list held nothing before.
        assert!(
            take().capacity() < MAX_KEPT_CAPACITY,
            "the large buffer was kept and lent again"
        );
    }
}
