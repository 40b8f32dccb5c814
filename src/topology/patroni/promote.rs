//! `pgsplit promote <member>` when Patroni manages the cluster: pgsplit does not promote anything itself (Patroni
//! would fight it); it asks Patroni for a switchover scheduled `promote_ahead` from now, which every pgsplit
//! instance sees in `/cluster` in time to drain its writes and then follows (see `follow`). Checks what it can
//! before asking: the member is one Patroni lists and not already its leader.

use std::time::SystemTime;

use super::api::{self, ApiError, Scheduled, Unreachable};
use crate::topology::control::Control;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromoteError {
    #[error("the members do not come from Patroni (topology.source is \"file\")")]
    NotPatroni,
    #[error("Patroni has not answered yet; no member is known")]
    NoView,
    #[error("\"{name}\" is not a member Patroni lists (members: {members})")]
    UnknownMember { name: String, members: String },
    #[error("\"{0}\" is already Patroni's leader")]
    AlreadyLeader(String),
    #[error("Patroni names no leader now (a failover under way?); try again once it does")]
    NoLeader,
    #[error("Patroni refused the switchover: {0}")]
    Refused(ApiError),
    #[error(transparent)]
    Unreachable(Unreachable),
}

/// Asks Patroni for a switchover from its leader to `member`, `promote_ahead` from now.
pub async fn schedule(control: &Control, member: &str) -> Result<Scheduled, PromoteError> {
    let config = control.topology.load().config.clone();
    let (Some(patroni), Some(shared)) = (config.patroni(), control.patroni()) else {
        return Err(PromoteError::NotPatroni);
    };
    let view = shared.status().view.ok_or(PromoteError::NoView)?;
    if view.member(member).is_none() {
        let members: Vec<&str> = view.members.iter().map(|m| m.name.as_str()).collect();
        return Err(PromoteError::UnknownMember {
            name: member.to_owned(),
            members: members.join(", "),
        });
    }
    let leader = view.leader().ok_or(PromoteError::NoLeader)?;
    if leader.name == member {
        return Err(PromoteError::AlreadyLeader(member.to_owned()));
    }
    let at = SystemTime::now() + patroni.promote_ahead;
    let scheduled = api::schedule_switchover(&patroni.urls, &leader.name, member, at, patroni.request_timeout).await;
    match scheduled {
        Ok(scheduled) => {
            tracing::info!(from = %scheduled.leader, to = member, at = %scheduled.at, via = %scheduled.via, "Patroni scheduled a switchover");
            Ok(scheduled)
        }
        Err(Unreachable(mut errors)) if matches!(errors.as_slice(), [ApiError::Status { .. }]) => {
            Err(PromoteError::Refused(errors.remove(0)))
        }
        Err(unreachable) => Err(PromoteError::Unreachable(unreachable)),
    }
}
