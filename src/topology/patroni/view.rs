//! Patroni's answer to `GET /cluster`, as serde types: the members with their roles, states, addresses, timelines
//! and tags, and a switchover scheduled ahead. Unknown fields are ignored (newer Patroni versions add some); a
//! field of the wrong type makes the whole answer unusable, reported as an error value — nothing here panics on
//! what the network sent. Pure: no I/O.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::time;

/// `GET /cluster`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    #[serde(default)]
    pub members: Vec<Member>,
    /// Present while a switchover (or failover) with `scheduled_at` waits for its time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_switchover: Option<ScheduledSwitchover>,
    /// Patroni's own maintenance mode: it changes nothing by itself while paused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause: bool,
}

/// One member of the cluster, as Patroni reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// `leader`, `standby_leader`, `sync_standby`, `replica` (and in later versions `quorum_standby`, …).
    #[serde(default)]
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, `crashed`, `creating replica`, …
    #[serde(default)]
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Kept wide here: a port out of range leaves this member out instead of making the whole answer unreadable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
    /// Bytes behind the leader's last known position, or `"unknown"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, serde_json::Value>,
}

impl Member {
    /// Holds Patroni's leader lock (a standby cluster's leader replicates from elsewhere and is never writable,
    /// which the confirmation on the server finds out).
    pub fn is_leader(&self) -> bool {
        matches!(self.role.as_str(), "leader" | "standby_leader" | "master" | "primary")
    }

    /// Its PostgreSQL address, if Patroni gives a usable one.
    pub fn address(&self) -> Option<(&str, u16)> {
        let host = self.host.as_deref().filter(|h| !h.is_empty())?;
        let port = u16::try_from(self.port?).ok().filter(|&p| p != 0)?;
        Some((host, port))
    }

    /// A string tag (`pgsplit_pool`); a tag of another type counts as absent.
    pub fn tag_str(&self, name: &str) -> Option<&str> {
        self.tags.get(name).and_then(serde_json::Value::as_str)
    }

    /// A boolean tag as Patroni reads them (`noloadbalance: true`; Patroni also accepts the string "true").
    pub fn tag_true(&self, name: &str) -> bool {
        match self.tags.get(name) {
            Some(serde_json::Value::Bool(value)) => *value,
            Some(serde_json::Value::String(value)) => value.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }
}

/// `scheduled_switchover` in `/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledSwitchover {
    /// As Patroni wrote it (ISO 8601 with an offset).
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl ScheduledSwitchover {
    pub fn at(&self) -> Result<SystemTime, time::BadTimestamp> {
        time::parse(&self.at)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Patroni's /cluster answer is not what pgsplit reads: {0}")]
pub struct BadView(pub String);

impl ClusterView {
    /// Reads a `/cluster` body.
    pub fn parse(body: &[u8]) -> Result<ClusterView, BadView> {
        serde_json::from_slice(body).map_err(|error| BadView(error.to_string()))
    }

    /// The member holding the leader lock, if exactly one does (two would be Patroni's bug; trust neither).
    pub fn leader(&self) -> Option<&Member> {
        let mut leaders = self.members.iter().filter(|m| m.is_leader());
        let first = leaders.next()?;
        leaders.next().is_none().then_some(first)
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATRONI_3_0_2: &str = r#"{"members": [
        {"name": "n1", "role": "replica", "state": "running", "api_url": "http://127.0.0.1:28001/patroni",
         "host": "127.0.0.1", "port": 29001, "timeline": 1, "lag": 0},
        {"name": "n2", "role": "sync_standby", "state": "running", "api_url": "http://127.0.0.1:28002/patroni",
         "host": "127.0.0.1", "port": 29002, "timeline": 1, "lag": "unknown",
         "tags": {"pgsplit_pool": "analytics", "noloadbalance": false, "clonefrom": true}},
        {"name": "n3", "role": "leader", "state": "running", "api_url": "http://127.0.0.1:28003/patroni",
         "host": "127.0.0.1", "port": 29003, "timeline": 1, "pending_restart": true}],
        "scheduled_switchover": {"at": "2026-12-04T22:17:33.761719+00:00", "from": "n3", "to": "n1"},
        "something_new": {"nested": [1, 2]}}"#;

    #[test]
    fn a_patroni_3_answer_is_read_with_unknown_fields_ignored() {
        let view = ClusterView::parse(PATRONI_3_0_2.as_bytes()).unwrap();
        assert_eq!(view.members.len(), 3);
        assert_eq!(view.leader().map(|m| m.name.as_str()), Some("n3"));
        let n2 = view.member("n2").unwrap();
        assert_eq!(n2.address(), Some(("127.0.0.1", 29002)));
        assert_eq!(n2.tag_str("pgsplit_pool"), Some("analytics"));
        assert!(!n2.tag_true("noloadbalance"));
        assert!(n2.tag_true("clonefrom"));
        let scheduled = view.scheduled_switchover.as_ref().unwrap();
        assert_eq!(
            (scheduled.from.as_deref(), scheduled.to.as_deref()),
            (Some("n3"), Some("n1"))
        );
        assert!(scheduled.at().is_ok());
    }

    #[test]
    fn wrong_types_are_an_error_and_odd_members_have_no_address() {
        assert!(ClusterView::parse(b"not json").is_err());
        assert!(ClusterView::parse(br#"{"members": "n1"}"#).is_err());
        assert!(ClusterView::parse(br#"{"members": [{"name": 7}]}"#).is_err());
        assert_eq!(ClusterView::parse(b"{}").unwrap(), ClusterView::default());
        let view = ClusterView::parse(
            br#"{"members": [{"name": "a", "host": "h", "port": 70000}, {"name": "b", "port": 5432},
                {"name": "c", "host": "", "port": 5432}, {"name": "d", "host": "h", "port": 0}]}"#,
        )
        .unwrap();
        assert!(view.members.iter().all(|m| m.address().is_none()));
        assert_eq!(view.leader(), None);
    }

    #[test]
    fn two_leaders_name_none() {
        let view =
            ClusterView::parse(br#"{"members": [{"name": "a", "role": "leader"}, {"name": "b", "role": "leader"}]}"#)
                .unwrap();
        assert_eq!(view.leader(), None);
    }
}
