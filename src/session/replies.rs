//! What the server owes the client, in order: one entry per message sent that the server answers, saying how its
//! answer ends and who gets it.
//!
//! Statements pgsplit prepares on a server connection behind the client's back (a Parse before a Bind on a
//! connection that lacks the statement) are answered to nobody; a Parse or Close pgsplit answers itself (the
//! statement is already prepared there; a Close of a statement shared with other clients) gets its reply made up
//! when its turn comes, so the client sees exactly the replies a direct connection would send, in the same order.
//!
//! After an ErrorResponse to an extended-protocol message the server ignores everything up to Sync; the entries in
//! between are dropped and their undos handed back, so the session can forget what never happened.

use std::collections::VecDeque;

use super::plan::Change;

/// A message the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Parse,
    Bind,
    /// Describe of a statement (ParameterDescription, then RowDescription or NoData) or of a portal.
    Describe,
    Execute,
    Close,
    /// Sync, Query and FunctionCall end with ReadyForQuery.
    Sync,
    /// CopyDone or CopyFail: not answered, but it ends COPY FROM STDIN, during which the server ignores Syncs.
    CopyEnd,
}

impl Request {
    /// Whether `tag` is the last message of this request's answer (ErrorResponse aside).
    fn ends_with(self, tag: u8) -> bool {
        match self {
            Request::Parse => tag == b'1',
            Request::Bind => tag == b'2',
            Request::Describe => matches!(tag, b'T' | b'n'),
            Request::Execute => matches!(tag, b'C' | b'I' | b's'),
            Request::Close => tag == b'3',
            Request::Sync => tag == b'Z',
            Request::CopyEnd => false,
        }
    }
}

/// Who answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The server, to the client.
    Server,
    /// The server, to pgsplit: the client never asked (its error, though, is the client's to see).
    Hidden,
    /// pgsplit, when the request's turn comes (the server never sees it).
    Made,
    /// The server, to pgsplit alone, errors included: pgsplit's own query after a commit (`floor::PROBE_SQL`).
    Probe,
    /// The server, to pgsplit alone, errors included: pgsplit's check of the connection after a unit that may have
    /// changed session state unseen (`hidden`).
    Check,
    /// pgsplit refuses the client's request: it sends the server one that fails (so the server skips the rest of
    /// the batch, as it would have after the client's own request failed), and the client gets pgsplit's error in
    /// place of the server's.
    Refused(Refusal),
}

/// Why pgsplit refused a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client holds `proxy.max_prepared_statements` named statements already.
    PreparedStatementLimit,
}

/// One request's entry: what ends its answer, who gets it, and `U`, what to take back if it fails or is dropped
/// unanswered (an earlier message in its batch failed). The queue stores undos and hands them back, never reads
/// them.
#[derive(Debug)]
pub struct Expected<U> {
    request: Request,
    answer: Answer,
    undo: Option<U>,
    /// Sync only: setting changes the unit makes, applied when it ends without an error.
    changes: Vec<Change>,
    /// Sync only: the unit discards every prepared statement (`DISCARD ALL`, `DEALLOCATE ALL`) if it succeeds.
    discards_statements: bool,
    failed: bool,
}

impl<U> Expected<U> {
    pub fn new(request: Request, answer: Answer) -> Expected<U> {
        Expected {
            request,
            answer,
            undo: None,
            changes: Vec::new(),
            discards_statements: false,
            failed: false,
        }
    }

    pub fn undo(mut self, undo: U) -> Expected<U> {
        self.undo = Some(undo);
        self
    }

    /// A Sync, Query or FunctionCall whose success brings these setting changes.
    pub fn ready(changes: Vec<Change>) -> Expected<U> {
        Expected {
            changes,
            ..Expected::new(Request::Sync, Answer::Server)
        }
    }

    /// pgsplit's own Query, sent after the client's unit ended: nothing of its answer reaches the client.
    pub fn probe() -> Expected<U> {
        Expected::new(Request::Sync, Answer::Probe)
    }

    /// pgsplit's check of the connection, sent after the client's unit ended: nothing of it reaches the client.
    pub fn check() -> Expected<U> {
        Expected::new(Request::Sync, Answer::Check)
    }

    /// On success the unit leaves the connection without prepared statements.
    pub fn discarding_statements(mut self) -> Expected<U> {
        self.discards_statements = true;
        self
    }
}

/// What to do with one reply message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    Drop,
    /// Drop it and send pgsplit's error in its place.
    Replace(Refusal),
}

/// A unit of work ended (ReadyForQuery) without an error: what it changed.
#[derive(Debug, Default)]
pub struct Ended {
    pub changes: Vec<Change>,
    pub discards_statements: bool,
}

#[derive(Debug)]
pub struct Replies<U> {
    queue: VecDeque<Expected<U>>,
    /// The server is in COPY FROM STDIN and the client has not ended it yet: Syncs sent meanwhile are ignored.
    copy_in: bool,
}

impl<U> Default for Replies<U> {
    fn default() -> Self {
        Replies {
            queue: VecDeque::new(),
            copy_in: false,
        }
    }
}

impl<U> Replies<U> {
    pub fn push(&mut self, expected: Expected<U>) {
        match (self.copy_in, expected.request) {
            // A server in COPY FROM STDIN ignores Sync (drivers send one after every Execute, COPY or not).
            (true, Request::Sync) => {}
            (true, Request::CopyEnd) => self.copy_in = false,
            _ => self.queue.push_back(expected),
        }
    }

    /// Requests still owed an answer.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing owed: every request sent has been answered.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// What the request the next reply answers carries (its undo), if anything.
    #[inline]
    pub fn head_undo(&self) -> Option<&U> {
        self.queue.front()?.undo.as_ref()
    }

    /// The next reply answers pgsplit's probe.
    pub fn probing(&self) -> bool {
        self.queue.front().is_some_and(|head| head.answer == Answer::Probe)
    }

    /// The next reply answers pgsplit's check of the connection.
    pub fn checking(&self) -> bool {
        self.queue.front().is_some_and(|head| head.answer == Answer::Check)
    }

    /// All that is owed is pgsplit's probe: the client has every answer it asked for.
    pub fn only_probe(&self) -> bool {
        self.queue.len() == 1 && self.probing()
    }

    /// The server connection is gone with these requests unanswered: their undos go to `undone`, and nothing is
    /// owed any more. Returns how many ReadyForQuery the client itself was owed (its Queries and Syncs).
    pub fn abandon(&mut self, undone: &mut Vec<U>) -> usize {
        let mut client_syncs = 0;
        for expected in self.queue.drain(..) {
            let clients = !matches!(expected.answer, Answer::Hidden | Answer::Probe | Answer::Check);
            if expected.request == Request::Sync && clients {
                client_syncs += 1;
            }
            undone.extend(expected.undo);
        }
        self.copy_in = false;
        client_syncs
    }

    /// The tag of a reply pgsplit makes up now, if the head of the queue is one (call until `None`). Always
    /// inlined: it runs after every reply, almost always finds a request the server answers, and a call costs more
    /// than that answer (callgrind: about 40 instructions a reply when it was not inlined).
    #[inline(always)]
    pub fn next_made(&mut self) -> Option<u8> {
        let head = self.queue.front()?;
        if head.answer != Answer::Made && head.request != Request::CopyEnd {
            return None;
        }
        self.pop_made()
    }

    fn pop_made(&mut self) -> Option<u8> {
        // A COPY end that reaches the head was sent with no COPY running: the server ignores it.
        while self.queue.front()?.request == Request::CopyEnd {
            self.queue.pop_front();
        }
        if self.queue.front()?.answer != Answer::Made {
            return None;
        }
        let made = self.queue.pop_front().expect("checked above");
        Some(match made.request {
            Request::Parse => b'1',
            Request::Close => b'3',
            other => unreachable!("only Parse and Close are answered by pgsplit, not {other:?}"),
        })
    }

    /// Accounts for one message from the server. Dropped requests' undos go to `undone`; a ReadyForQuery
    /// returns what its unit changed through `ended`.
    pub fn on_reply(&mut self, tag: u8, undone: &mut Vec<U>, ended: &mut Option<Ended>) -> Verdict {
        // Asynchronous messages (notices, notifications, parameter changes) belong to no request.
        if matches!(tag, b'N' | b'A' | b'S') {
            return Verdict::Forward;
        }
        let Some(head) = self.queue.front_mut() else {
            return Verdict::Forward;
        };
        let verdict = match head.answer {
            Answer::Refused(refusal) if tag == b'E' => Verdict::Replace(refusal),
            Answer::Hidden | Answer::Refused(_) if tag != b'E' => Verdict::Drop,
            Answer::Probe | Answer::Check => Verdict::Drop,
            _ => Verdict::Forward,
        };
        if tag == b'G' {
            self.copy_in_started();
            return verdict;
        }
        if tag == b'E' {
            self.copy_in = false;
            if head.request == Request::Sync {
                // A failed Query, or a COMMIT failing at Sync: ReadyForQuery still follows.
                head.failed = true;
                return verdict;
            }
            // The server skips the rest of the batch up to its Sync.
            let failed = self.queue.pop_front().expect("head exists");
            undone.extend(failed.undo);
            while let Some(next) = self.queue.front_mut() {
                if next.request == Request::Sync {
                    next.failed = true;
                    break;
                }
                undone.extend(self.queue.pop_front().expect("front exists").undo);
            }
            return verdict;
        }
        if head.request.ends_with(tag) {
            let done = self.queue.pop_front().expect("head exists");
            if done.failed {
                undone.extend(done.undo);
            } else if done.request == Request::Sync && !matches!(done.answer, Answer::Probe | Answer::Check) {
                *ended = Some(Ended {
                    changes: done.changes,
                    discards_statements: done.discards_statements,
                });
            }
        }
        verdict
    }
}

impl<U> Replies<U> {
    /// CopyInResponse: Syncs the client sent after the COPY's Execute, up to its CopyDone or CopyFail, will be
    /// ignored by the server, so no ReadyForQuery is owed for them.
    fn copy_in_started(&mut self) {
        let mut i = 1;
        while i < self.queue.len() {
            match self.queue[i].request {
                Request::Sync => {
                    self.queue.remove(i);
                }
                Request::CopyEnd => {
                    self.queue.remove(i);
                    return;
                }
                _ => i += 1,
            }
        }
        self.copy_in = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test's requests would take back: a name.
    type Undo = &'static str;

    fn replay(replies: &mut Replies<Undo>, tags: &[u8]) -> (Vec<u8>, Vec<Undo>) {
        let (mut seen, mut undone) = (Vec::new(), Vec::new());
        while let Some(tag) = replies.next_made() {
            seen.push(tag);
        }
        for &tag in tags {
            let mut ended = None;
            if replies.on_reply(tag, &mut undone, &mut ended) == Verdict::Forward {
                seen.push(tag);
            }
            while let Some(tag) = replies.next_made() {
                seen.push(tag);
            }
        }
        (seen, undone)
    }

    #[test]
    fn hidden_answers_are_dropped_and_made_ones_inserted_in_turn() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::new(Request::Parse, Answer::Hidden));
        replies.push(Expected::new(Request::Bind, Answer::Server));
        replies.push(Expected::new(Request::Execute, Answer::Server));
        replies.push(Expected::new(Request::Parse, Answer::Made));
        replies.push(Expected::ready(Vec::new()));
        let (seen, _) = replay(&mut replies, b"12DDCZ");
        assert_eq!(seen, b"2DDC1Z");
        assert!(replies.is_empty());
    }

    #[test]
    fn a_connection_gone_owes_the_client_its_own_ready_for_query_and_takes_back_the_rest() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::new(Request::Parse, Answer::Server).undo("s1"));
        replies.push(Expected::new(Request::Bind, Answer::Server));
        replies.push(Expected::ready(Vec::new()));
        replies.push(Expected::new(Request::Sync, Answer::Hidden));
        replies.push(Expected::ready(Vec::new()));
        replies.push(Expected::probe());
        let mut undone = Vec::new();
        assert_eq!(
            replies.abandon(&mut undone),
            2,
            "the client's Query and Sync, not pgsplit's own"
        );
        assert_eq!(undone, ["s1"]);
        assert!(replies.is_empty());
    }

    #[test]
    fn a_made_answer_at_the_head_comes_at_once() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::new(Request::Close, Answer::Made));
        assert_eq!(replies.next_made(), Some(b'3'));
        assert!(replies.is_empty());
    }

    #[test]
    fn an_error_drops_the_rest_of_the_batch_and_fails_its_sync() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::new(Request::Bind, Answer::Server));
        replies.push(Expected::new(Request::Execute, Answer::Server));
        replies.push(Expected::new(Request::Parse, Answer::Made).undo("s1"));
        replies.push(Expected::ready(vec![Change::ResetAll]));
        let mut undone = Vec::new();
        let mut ended = None;
        assert_eq!(replies.on_reply(b'E', &mut undone, &mut ended), Verdict::Forward);
        assert_eq!(undone.len(), 1, "the Parse after the failure never happened");
        assert_eq!(replies.next_made(), None, "no ParseComplete for a skipped Parse");
        replies.on_reply(b'Z', &mut undone, &mut ended);
        assert!(ended.is_none(), "a failed unit changes nothing");
    }

    #[test]
    fn a_probe_after_the_clients_unit_is_answered_to_pgsplit_alone_errors_included() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::ready(Vec::new()));
        replies.push(Expected::probe());
        assert!(!replies.probing() && !replies.only_probe());
        let (seen, _) = replay(&mut replies, b"CZ");
        assert_eq!(seen, b"CZ");
        assert!(replies.only_probe());
        let (seen, _) = replay(&mut replies, b"TDCZ");
        assert!(seen.is_empty() && replies.is_empty(), "{seen:?}");
        replies.push(Expected::probe());
        let (seen, _) = replay(&mut replies, b"EZ");
        assert!(seen.is_empty() && replies.is_empty(), "{seen:?}");
    }

    #[test]
    fn a_hidden_request_shows_its_error() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::new(Request::Parse, Answer::Hidden));
        replies.push(Expected::new(Request::Bind, Answer::Server));
        replies.push(Expected::ready(Vec::new()));
        let (seen, undone) = replay(&mut replies, b"EZ");
        assert_eq!(seen, b"EZ");
        assert!(undone.is_empty());
    }

    #[test]
    fn a_query_ends_at_ready_for_query_whatever_comes_before() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::ready(vec![Change::ResetAll]));
        let mut ended = None;
        for tag in *b"TDCTDCNE" {
            replies.on_reply(tag, &mut Vec::new(), &mut ended);
        }
        assert!(ended.is_none());
        replies.on_reply(b'Z', &mut Vec::new(), &mut ended);
        assert!(ended.is_none(), "an error in the query drops its changes");
        assert!(replies.is_empty());
        replies.push(Expected::ready(vec![Change::ResetAll]).discarding_statements());
        replies.on_reply(b'Z', &mut Vec::new(), &mut ended);
        let ended = ended.expect("a query that succeeded ended");
        assert!(ended.discards_statements && ended.changes == [Change::ResetAll]);
    }

    #[test]
    fn describe_of_a_statement_ends_at_its_row_description() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::new(Request::Describe, Answer::Hidden));
        replies.push(Expected::new(Request::Describe, Answer::Server));
        let (seen, _) = replay(&mut replies, b"tnt");
        assert_eq!(seen, b"t");
        assert!(
            !replies.is_empty(),
            "still waiting for the second Describe's row description"
        );
    }

    #[test]
    fn syncs_sent_during_copy_in_are_not_answered() {
        // Bind, Execute (a COPY FROM STDIN), Sync, CopyData…, CopyDone, Sync: one ReadyForQuery.
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::new(Request::Bind, Answer::Server));
        replies.push(Expected::new(Request::Execute, Answer::Server));
        replies.push(Expected::ready(Vec::new()));
        let (seen, _) = replay(&mut replies, b"2G");
        assert_eq!(seen, b"2G");
        replies.push(Expected::new(Request::CopyEnd, Answer::Server));
        replies.push(Expected::ready(Vec::new()));
        replay(&mut replies, b"CZ");
        assert!(replies.is_empty());

        // The same with the CopyDone already read when CopyInResponse arrives.
        for request in [
            Request::Bind,
            Request::Execute,
            Request::Sync,
            Request::CopyEnd,
            Request::Sync,
        ] {
            replies.push(Expected::new(request, Answer::Server));
        }
        replay(&mut replies, b"2GCZ");
        assert!(replies.is_empty());
    }

    #[test]
    fn a_copy_end_without_a_copy_is_ignored() {
        let mut replies = Replies::<Undo>::default();
        replies.push(Expected::new(Request::CopyEnd, Answer::Server));
        assert_eq!(replies.next_made(), None);
        assert!(replies.is_empty());
    }
}
