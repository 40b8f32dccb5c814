//! Promotion detection, pure: from what the monitor last saw, which follower — if any — has been promoted outside
//! pgsplit and should become the leader (SPEC §6, `follow_promotions`). No I/O; the control plane swaps.
//!
//! A follower answering as a primary is adopted when it is the only primary in sight, or when its timeline is
//! higher than every other primary's (the old leader's included, if it still answers as one): a promotion always
//! starts a new timeline, so the newest primary has the highest. Two primaries on the same timeline are not two
//! promotions pgsplit can order; it keeps the leader it has and says so.
//!
//! Only a primary of the leader's own cluster is a candidate (same `system_identifier`, as the monitor read it): a
//! mistyped follower address that reaches another cluster's primary, however high its timeline, is never adopted.
//! While the leader's cluster is not known (it has never answered), nothing is adopted.

use super::Topology;

/// The follower to adopt as the new leader, if any.
pub fn promoted(topology: &Topology) -> Option<String> {
    let primary = |i: &&std::sync::Arc<super::Instance>| {
        let seen = i.health.snapshot();
        (seen.up && !seen.in_recovery).then_some(seen.timeline)
    };
    let cluster = topology.leader.health.snapshot().system_identifier;
    let mut candidates: Vec<(u32, &str)> = topology
        .pools
        .iter()
        .flat_map(|p| p.instances.iter())
        .filter(|i| cluster != 0 && i.health.snapshot().system_identifier == cluster)
        .filter_map(|i| primary(&i).map(|timeline| (timeline, &*i.name)))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let leader = primary(&&topology.leader);
    candidates.sort_unstable_by_key(|c| std::cmp::Reverse(c.0));
    let (best, name) = candidates[0];
    let runner_up = candidates.get(1).map(|c| c.0).into_iter().chain(leader).max();
    match runner_up {
        Some(other) if other >= best => {
            tracing::error!(
                follower = name,
                timeline = best,
                leader = %topology.leader.name,
                "more than one primary on the highest timeline; keeping the current leader"
            );
            None
        }
        _ => Some(name.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::topology::Instance;
    use crate::topology::health::Observation;

    fn topology() -> Topology {
        let text = "[[users]]\nname = \"app\"\npassword = \"app\"\n[leader]\nhost = \"127.0.0.1\"\nport = 5432\n\
                    [[follower_pools]]\nname = \"default\"\ninstances = [\n\
                    { name = \"f1\", host = \"127.0.0.1\", port = 5433 },\n\
                    { name = \"f2\", host = \"127.0.0.1\", port = 5434 },\n]\n";
        Topology::from_config(&Config::parse(text, "t.toml").unwrap())
    }

    const CLUSTER: u64 = 7_312_345_678_901_234_567;

    fn seen(instance: &Instance, in_recovery: bool, timeline: u32) {
        instance.health.set_system_identifier(CLUSTER);
        instance.health.observe(Observation {
            in_recovery,
            lsn: 0,
            lag_bytes: 0,
            lag: Duration::ZERO,
            lag_commits: 0,
            timeline,
        });
    }

    fn follower<'a>(t: &'a Topology, name: &str) -> &'a Instance {
        t.pools[0].instances.iter().find(|i| &*i.name == name).unwrap()
    }

    #[test]
    fn nothing_changes_while_followers_are_in_recovery() {
        let t = topology();
        seen(&t.leader, false, 1);
        seen(follower(&t, "f1"), true, 0);
        seen(follower(&t, "f2"), true, 0);
        assert_eq!(promoted(&t), None);
    }

    #[test]
    fn the_only_primary_is_adopted_when_the_leader_is_down() {
        let t = topology();
        seen(&t.leader, false, 1);
        t.leader.health.mark_down();
        seen(follower(&t, "f1"), false, 2);
        seen(follower(&t, "f2"), true, 0);
        assert_eq!(promoted(&t).as_deref(), Some("f1"));
    }

    #[test]
    fn a_higher_timeline_wins_over_a_leader_still_writable() {
        let t = topology();
        seen(&t.leader, false, 1);
        seen(follower(&t, "f2"), false, 2);
        assert_eq!(promoted(&t).as_deref(), Some("f2"));
    }

    #[test]
    fn two_primaries_on_one_timeline_are_not_ordered() {
        let t = topology();
        seen(&t.leader, false, 2);
        seen(follower(&t, "f1"), false, 2);
        assert_eq!(promoted(&t), None);
        let t = topology();
        t.leader.health.set_system_identifier(CLUSTER);
        t.leader.health.mark_down();
        seen(follower(&t, "f1"), false, 2);
        seen(follower(&t, "f2"), false, 2);
        assert_eq!(promoted(&t), None);
        seen(follower(&t, "f2"), false, 3);
        assert_eq!(promoted(&t).as_deref(), Some("f2"));
    }

    #[test]
    fn a_primary_of_another_cluster_is_never_adopted() {
        let t = topology();
        seen(&t.leader, false, 1);
        t.leader.health.mark_down();
        let stray = follower(&t, "f1");
        seen(stray, false, 9);
        stray.health.set_system_identifier(CLUSTER + 1);
        assert_eq!(promoted(&t), None, "another cluster, however high its timeline");
        seen(follower(&t, "f2"), false, 2);
        assert_eq!(promoted(&t).as_deref(), Some("f2"), "the leader's cluster's primary is");
    }

    #[test]
    fn nothing_is_adopted_while_the_leaders_cluster_is_unknown() {
        let t = topology();
        seen(follower(&t, "f1"), false, 2);
        assert_eq!(promoted(&t), None, "the leader never answered");
    }

    #[test]
    fn a_follower_never_checked_is_not_a_primary() {
        let t = topology();
        t.leader.health.set_system_identifier(CLUSTER);
        t.leader.health.mark_down();
        assert_eq!(promoted(&t), None);
    }
}
