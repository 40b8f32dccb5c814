//! What a client message asks of the router and does to the session, worked out before it is forwarded: the
//! analysis of a Query or Parse, the remembered analysis of the statement a Bind or Describe names, and, for an
//! extended-protocol batch routed to a follower, a look ahead to its Sync to be sure nothing in it writes.

use super::plan::{Analysis, Plan, SqlPrepared, StreamState};
use super::relay::Relay;
use crate::protocol::extended;
use crate::protocol::frame::{HEADER_LEN, Header, peek_header};
use crate::router::{Reason, RouteReason, Wants};

/// What a client message asks for and does, worked out before it is forwarded.
pub(super) struct Intent {
    /// Where a unit starting with this message should run.
    pub wants: Wants,
    /// What a Query or Bind runs, with the stream state after it: committed when the message is forwarded.
    pub plan: Option<(Plan, StreamState)>,
    /// A Query's or Parse's own analysis.
    pub analysis: Option<Analysis>,
    /// A Bind of a statement that drops every prepared statement.
    pub discards: bool,
}

impl Relay {
    /// Works out where a message would run and what it does, without committing anything.
    pub(super) fn intent(&self, header: Header) -> Intent {
        let at = self.to_server.scanned();
        let body = &self.client_buf[at + HEADER_LEN..at + header.frame_len()];
        let execute = Wants::Leader(RouteReason::Write(Reason::Execute));
        let mut intent = Intent {
            wants: execute,
            plan: None,
            analysis: None,
            discards: false,
        };
        match header.tag {
            b'Q' | b'P' => {
                let sql = match header.tag {
                    // The text is the whole body but its closing NUL: no need to look for it. (A NUL inside makes
                    // the server refuse the message; the lexer stops there, as the server would.)
                    b'Q' => body.split_last().filter(|(nul, _)| **nul == 0).map(|(_, sql)| sql),
                    _ => extended::parse_fields(body).map(|(_, definition)| extended::definition_query(definition)),
                };
                let Some(sql) = sql else {
                    // No closing NUL, or a Parse whose fields do not add up: the server refuses it (08P01).
                    intent.wants = Wants::Leader(RouteReason::Write(Reason::Unparsable));
                    return intent;
                };
                let mut analysis = self.analyses.analyze(sql, &self.functions, self.text_rules);
                if header.tag == b'P' {
                    analysis.pin_if_prepares();
                }
                // An EXECUTE runs what its statement runs.
                let runs = match &analysis.prepared {
                    Some(SqlPrepared::Execute { name, .. }) => {
                        self.exchange.statements().named(name).map(|s| &*s.analysis)
                    }
                    _ => None,
                };
                let mut stream = self.stream;
                let mut plan = runs.unwrap_or(&analysis).plan(&self.wanted, &mut stream);
                if matches!(plan.wants, Wants::Follower(_)) && self.ctx.known_writes.contains(sql) {
                    // Kept with the statement, so its later Binds go to the leader too.
                    analysis.mark_known_write();
                    plan.wants = Wants::Leader(RouteReason::KnownWrite);
                }
                intent.wants = plan.wants;
                if header.tag == b'Q' {
                    intent.plan = Some((plan, stream));
                }
                intent.analysis = Some(analysis);
            }
            b'B' => {
                if let Some(analysis) = self.exchange.statements().for_bind(body) {
                    let mut stream = self.stream;
                    let plan = analysis.plan(&self.wanted, &mut stream);
                    intent.wants = plan.wants;
                    intent.discards = analysis.discards_statements();
                    intent.plan = Some((plan, stream));
                }
            }
            b'D' => {
                if let Some(analysis) = self.exchange.statements().for_describe(body) {
                    intent.wants = analysis.plan(&self.wanted, &mut self.stream.clone()).wants;
                }
            }
            _ => {}
        }
        if matches!(intent.wants, Wants::Follower(_))
            && matches!(header.tag, b'P' | b'B' | b'D')
            && (self.server.is_none() || self.at_unit_boundary())
            && !self.batch_reads_only(header)
        {
            intent.wants = Wants::Leader(RouteReason::Write(Reason::Execute));
        }
        intent
    }

    /// Whether the rest of the extended-protocol batch starting with `first` (at the scan position) is buffered up
    /// to its Sync and runs nothing but reads. A batch is routed as a whole, by its first message; a write later
    /// in it must not land on a follower.
    fn batch_reads_only(&self, first: Header) -> bool {
        let start = self.to_server.scanned();
        let first_body = &self.client_buf[start + HEADER_LEN..start + first.frame_len()];
        // Statements parsed earlier in this batch (their Parse was read-only, or we would not be here).
        let mut parsed: Vec<&[u8]> = Vec::new();
        if first.tag == b'P'
            && let Some((name, _)) = extended::parse_fields(first_body)
        {
            parsed.push(name);
        }
        let reads = |analysis: &Analysis, stream: &mut StreamState| {
            matches!(analysis.plan(&self.wanted, stream).wants, Wants::Follower(_))
        };
        let mut stream = self.stream;
        let mut at = start + first.frame_len();
        loop {
            let Ok(Some(header)) = peek_header(&self.client_buf[at..]) else {
                return false;
            };
            let Some(body) = self.client_buf.get(at + HEADER_LEN..at + header.frame_len()) else {
                return false;
            };
            let read_only = match header.tag {
                b'S' => return true,
                // Describe, Execute, Close and Flush run nothing a Bind did not already.
                b'D' | b'E' | b'C' | b'H' => true,
                b'P' => match extended::parse_fields(body) {
                    Some((name, definition)) => {
                        parsed.push(name);
                        let sql = extended::definition_query(definition);
                        reads(
                            &self.analyses.analyze(sql, &self.functions, self.text_rules),
                            &mut stream,
                        )
                    }
                    None => false,
                },
                b'B' => match extended::bind_fields(body) {
                    Some((_, name, _)) if parsed.contains(&name) => true,
                    Some(_) => self
                        .exchange
                        .statements()
                        .for_bind(body)
                        .is_some_and(|a| reads(a, &mut stream)),
                    None => false,
                },
                _ => false,
            };
            if !read_only {
                return false;
            }
            at += header.frame_len();
        }
    }
}
