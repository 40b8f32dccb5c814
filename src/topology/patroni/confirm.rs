//! Confirming on the server what Patroni says (SPEC §8, patroni issue #2972): Patroni names a new leader about a
//! tenth of a second before PostgreSQL leaves recovery, so its word alone never routes a write. A member is
//! confirmed as the leader when PostgreSQL itself answers that it is not in recovery, belongs to the cluster
//! pgsplit has been following (`system_identifier`), and writes on a timeline no older than the last confirmed
//! leader's — and newer, when it is another member: a promotion always starts a new timeline, so a primary that
//! is not newer is a stale one that came back, not the leader (the same member on a new timeline was restarted
//! in place, which Patroni does with its default `primary_start_timeout`).
//!
//! Owns one connection of pgsplit's own to the member it last confirmed or tried, kept between checks so that
//! confirming the same leader every poll costs one round trip.

use std::time::Duration;

use super::super::conn::{Conn, Sql};
use super::super::control::{ConnectError, Control};

/// One round trip: role, cluster identity, and (on a primary) the timeline from its current WAL file's name,
/// which follows a promotion at once (`pg_control_checkpoint()` lags until the next checkpoint).
const CONFIRM_SQL: Sql<'static> = Sql::described(
    "confirming the leader (pg_is_in_recovery, system_identifier, timeline)",
    "SELECT pg_is_in_recovery()::text, (SELECT system_identifier FROM pg_control_system())::text, \
     CASE WHEN pg_is_in_recovery() THEN '' ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END",
);

/// What PostgreSQL said about a confirmed leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confirmed {
    pub system_identifier: u64,
    pub timeline: u32,
}

/// Why a member is not (yet) confirmed as the leader.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotConfirmed {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{0}")]
    Query(String),
    #[error("{name} is still in recovery")]
    InRecovery { name: String },
    #[error("{name} belongs to another cluster (system identifier {own}, pgsplit follows {cluster})")]
    OtherCluster { name: String, own: u64, cluster: u64 },
    #[error(
        "{name} writes on timeline {own}, not newer than the last confirmed leader {leader}'s {last} (a stale primary?)"
    )]
    NotNewer {
        name: String,
        own: u32,
        leader: String,
        last: u32,
    },
}

/// The cluster and timeline a confirmation is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    /// None until a leader has been confirmed once: the first one names the cluster.
    pub cluster: Option<u64>,
    /// The last confirmed leader and its timeline.
    pub leader: Option<String>,
    pub timeline: u32,
}

impl Known {
    /// Judges what a member answered (pure).
    pub fn judge(
        &self,
        name: &str,
        in_recovery: bool,
        identity: u64,
        timeline: u32,
    ) -> Result<Confirmed, NotConfirmed> {
        if let Some(cluster) = self.cluster.filter(|&c| c != identity) {
            return Err(NotConfirmed::OtherCluster {
                name: name.to_owned(),
                own: identity,
                cluster,
            });
        }
        if in_recovery {
            return Err(NotConfirmed::InRecovery { name: name.to_owned() });
        }
        let same = self.leader.as_deref().is_none_or(|leader| leader == name);
        if timeline < self.timeline || (!same && timeline == self.timeline) {
            return Err(NotConfirmed::NotNewer {
                name: name.to_owned(),
                own: timeline,
                leader: self.leader.clone().unwrap_or_default(),
                last: self.timeline,
            });
        }
        Ok(Confirmed {
            system_identifier: identity,
            timeline,
        })
    }

    /// Remembers a confirmed leader.
    pub fn confirmed(&mut self, name: &str, confirmed: Confirmed) {
        self.cluster = Some(confirmed.system_identifier);
        self.leader = Some(name.to_owned());
        self.timeline = confirmed.timeline;
    }
}

/// The confirming connection.
#[derive(Default)]
pub struct Confirmer {
    conn: Option<((String, String, u16), Conn)>,
}

impl Confirmer {
    /// Asks `name` at `host:port` whether it is the leader, against `known`. Every step is bounded by the control
    /// plane's statement deadline.
    pub async fn confirm(
        &mut self,
        control: &Control,
        name: &str,
        host: &str,
        port: u16,
        known: &Known,
    ) -> Result<Confirmed, NotConfirmed> {
        let key = (name.to_owned(), host.to_owned(), port);
        if self.conn.as_ref().is_none_or(|(k, conn)| *k != key || conn.is_closed()) {
            self.conn = None;
            let conn = control.connect_to(name, host, port).await?;
            self.conn = Some((key, conn));
        }
        let Some((_, conn)) = &self.conn else {
            return Err(NotConfirmed::Query("no connection".into()));
        };
        let row = match conn.row(&CONFIRM_SQL, 3, control.deadline()).await {
            Ok(row) => row,
            Err(error) => {
                // Broken or slow: the next check connects afresh.
                self.conn = None;
                return Err(NotConfirmed::Query(format!("{name}: {error}")));
            }
        };
        let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let in_recovery = text(0) == "true";
        let identity: u64 = text(1)
            .parse()
            .map_err(|_| NotConfirmed::Query(format!("{name}: system_identifier {:?} is not a number", text(1))))?;
        let timeline = if in_recovery {
            0
        } else {
            u32::from_str_radix(&text(2), 16)
                .map_err(|_| NotConfirmed::Query(format!("{name}: timeline {:?} is not hexadecimal", text(2))))?
        };
        known.judge(name, in_recovery, identity, timeline)
    }

    /// Closes the connection (the member left, or a check is not wanted for a while).
    pub fn forget(&mut self) {
        self.conn = None;
    }
}

/// How often a member Patroni names is asked while it is not confirmed yet: promotion takes about a tenth of a
/// second after Patroni names it, so a short interval is what bounds the pause.
pub const CONFIRM_INTERVAL: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_primary_names_the_cluster_and_later_ones_must_match_it() {
        let mut known = Known::default();
        let first = known.judge("n1", false, 7, 1).unwrap();
        known.confirmed("n1", first);
        assert_eq!(known.cluster, Some(7));
        assert!(matches!(
            known.judge("n2", true, 7, 0),
            Err(NotConfirmed::InRecovery { .. })
        ));
        assert!(matches!(
            known.judge("x", false, 8, 9),
            Err(NotConfirmed::OtherCluster { own: 8, cluster: 7, .. })
        ));
        assert!(
            known.judge("n1", false, 7, 1).is_ok(),
            "the same leader on the same timeline"
        );
        assert!(
            known.judge("n1", false, 7, 2).is_ok(),
            "the same leader restarted in place"
        );
        let same_timeline = known.judge("n2", false, 7, 1).unwrap_err();
        assert!(
            same_timeline
                .to_string()
                .contains("not newer than the last confirmed leader n1's 1"),
            "{same_timeline}"
        );
        known.confirmed("n2", known.judge("n2", false, 7, 2).unwrap());
        assert_eq!(known.timeline, 2);
        assert!(
            matches!(known.judge("n1", false, 7, 1), Err(NotConfirmed::NotNewer { .. })),
            "a stale primary"
        );
    }
}
