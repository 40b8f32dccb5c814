//! Statements pgsplit answers itself (SPEC §3.8): `SHOW pgsplit.route`, `SHOW pgsplit.last_write_lsn` and `SET` /
//! `RESET pgsplit.min_lsn`, each alone in a simple Query. They are answered as a server would answer a `SHOW` or
//! `SET`, once nothing of the client's is in flight (so the answer cannot overtake a reply), and never reach a
//! server.

use super::plan::{Local, MIN_LSN};
use super::relay::{Relay, SessionEnd};
use crate::protocol::error::{Severity, SqlError, code};
use crate::protocol::messages::{self, TxStatus};

impl Relay {
    /// Nothing in flight: pgsplit may answer a statement itself without disturbing the server's replies.
    pub(super) fn can_answer_locally(&self) -> bool {
        self.server.is_none()
            || (self.replies.is_empty() && !self.batch_open && self.to_server.is_empty() && self.to_client.is_empty())
    }

    pub(super) async fn answer_locally(&mut self, local: Local) -> Result<(), SessionEnd> {
        let status = if self.server.is_some() {
            self.tx_status
        } else {
            TxStatus::Idle
        };
        match local {
            Local::ShowRoute => {
                let route = match &self.last_route {
                    Some((instance, reason)) => format!("instance={instance} reason={}", reason.as_str()),
                    None => "none".to_owned(),
                };
                self.answer_show("pgsplit.route", &route, status).await
            }
            Local::ShowLastWriteLsn => {
                let lsn = self.floor.show();
                self.answer_show("pgsplit.last_write_lsn", &lsn, status).await
            }
            Local::SetMinLsn(value) => {
                if !self.floor.set_min(value.as_deref()) {
                    let error = SqlError::new(
                        Severity::Error,
                        code::INVALID_PARAMETER_VALUE,
                        format!(
                            "invalid value for parameter \"{MIN_LSN}\": {}",
                            value.as_deref().unwrap_or_default()
                        ),
                    )
                    .with_hint("Use a WAL position as SHOW pgsplit.last_write_lsn prints it, e.g. '0/16B3748'.");
                    return self
                        .send_to_client(|out| {
                            error.encode(out);
                            messages::ready_for_query(out, status);
                        })
                        .await;
                }
                let tag = if value.is_some() { "SET" } else { "RESET" };
                self.send_to_client(|out| {
                    messages::command_complete(out, tag);
                    messages::ready_for_query(out, status);
                })
                .await
            }
        }
    }

    async fn answer_show(&mut self, name: &str, value: &str, status: TxStatus) -> Result<(), SessionEnd> {
        self.send_to_client(|out| {
            messages::row_description(out, &[name]);
            messages::data_row(out, &[value]);
            messages::command_complete(out, "SHOW");
            messages::ready_for_query(out, status);
        })
        .await
    }
}
