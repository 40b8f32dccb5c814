//! From Patroni's view to the config pgsplit routes by, pure: the leader pgsplit uses (chosen by the follower, once
//! PostgreSQL confirmed it) and Patroni's other members as followers, each in the pool its tag `pgsplit_pool`
//! names, else in `routing.read_pool`. Pools the file declares keep their settings (and endpoints); a pool only a
//! tag names gets the defaults. Members that cannot serve reads are left out, each with the reason, for `status`.
//! No I/O.

use crate::config::{
    Config, FollowerConfig, FollowerPoolConfig, LeaderConfig, MAX_FOLLOWER_INSTANCES, MAX_FOLLOWER_POOLS,
    pool_name_problem,
};

use super::view::ClusterView;

/// The tag that names a member's follower pool.
pub const POOL_TAG: &str = "pgsplit_pool";

/// The config to swap in, and the members it leaves out of every pool (name, why).
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub config: Config,
    pub left_out: Vec<(String, String)>,
}

/// `base` (the file: its pools declared without instances) with `leader` as the leader and `view`'s other
/// members as followers. The member Patroni names as its leader joins no pool while it is not `leader`: its
/// role is changing, and it is not read from until it is either confirmed as the leader or a replica again.
pub fn derive(base: &Config, view: &ClusterView, leader: &LeaderConfig) -> Derived {
    let mut config = base.clone();
    config.leader = LeaderConfig {
        max_connections: base.leader.max_connections,
        ..leader.clone()
    };
    let read_pool = base.routing.read_pool.clone().unwrap_or_else(|| "default".to_owned());
    let mut left_out = Vec::new();
    let mut instances = 0;
    let declared = config.follower_pools.len();
    for member in &view.members {
        if member.name == leader.name {
            continue;
        }
        let mut leave = |why: String| left_out.push((member.name.clone(), why));
        if member.is_leader() {
            leave("Patroni's leader, not yet confirmed as primary by PostgreSQL".into());
            continue;
        }
        let Some((host, port)) = member.address() else {
            leave("Patroni gives no usable host and port".into());
            continue;
        };
        if member.tag_true("noloadbalance") {
            leave("tagged noloadbalance".into());
            continue;
        }
        let pool_name = member.tag_str(POOL_TAG).unwrap_or(&read_pool);
        if let Some(why) = pool_name_problem(pool_name) {
            leave(format!(
                "its tag {POOL_TAG} = \"{pool_name}\" is not a pool name: {why}"
            ));
            continue;
        }
        if instances == MAX_FOLLOWER_INSTANCES {
            leave(format!("more than {MAX_FOLLOWER_INSTANCES} followers"));
            continue;
        }
        let pool = match config.follower_pools.iter().position(|p| p.name == pool_name) {
            Some(pool) => pool,
            None if config.follower_pools.len() == MAX_FOLLOWER_POOLS => {
                leave(format!(
                    "pool \"{pool_name}\" would be pool number {}",
                    MAX_FOLLOWER_POOLS + 1
                ));
                continue;
            }
            None => {
                config.follower_pools.push(FollowerPoolConfig::with_defaults(pool_name));
                config.follower_pools.len() - 1
            }
        };
        instances += 1;
        config.follower_pools[pool].instances.push(FollowerConfig {
            name: member.name.clone(),
            host: host.to_owned(),
            port,
            weight: 1,
        });
    }
    // Pools only tags name come after the declared ones, by name: the same members give the same config.
    config.follower_pools[declared..].sort_by(|a, b| a.name.cmp(&b.name));
    if config.routing.read_pool.is_none() {
        config.routing.read_pool = Some(read_pool);
    }
    Derived { config, left_out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(extra: &str) -> Config {
        let text = format!(
            "[[users]]\nname = \"app\"\npassword = \"app\"\n[topology]\nsource = \"patroni\"\n\
             patroni = [\"http://127.0.0.1:8008\"]\n[leader]\nmax_connections = 9\n{extra}"
        );
        Config::parse(&text, "t.toml").unwrap()
    }

    fn view(json: &str) -> ClusterView {
        ClusterView::parse(json.as_bytes()).unwrap()
    }

    fn leader(name: &str, port: u16) -> LeaderConfig {
        LeaderConfig {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            max_connections: 0,
        }
    }

    const THREE: &str = r#"{"members": [
        {"name": "n1", "role": "leader", "state": "running", "host": "127.0.0.1", "port": 5431},
        {"name": "n2", "role": "replica", "state": "running", "host": "127.0.0.1", "port": 5432},
        {"name": "n3", "role": "sync_standby", "state": "running", "host": "127.0.0.1", "port": 5433,
         "tags": {"pgsplit_pool": "analytics"}}]}"#;

    fn pools(config: &Config) -> Vec<(String, Vec<String>)> {
        config
            .follower_pools
            .iter()
            .map(|p| (p.name.clone(), p.instances.iter().map(|i| i.name.clone()).collect()))
            .collect()
    }

    #[test]
    fn untagged_replicas_form_the_read_pool_and_tags_pick_theirs() {
        let declared = base("[[follower_pools]]\nname = \"analytics\"\nlisten = \"127.0.0.1:0\"\nmax_lag_bytes = 7\n");
        let derived = derive(&declared, &view(THREE), &leader("n1", 5431));
        let config = &derived.config;
        assert_eq!((config.leader.name.as_str(), config.leader.port), ("n1", 5431));
        assert_eq!(config.leader.max_connections, 9, "the file's limit");
        assert_eq!(
            pools(config),
            [
                ("analytics".into(), vec!["n3".into()]),
                ("default".into(), vec!["n2".into()])
            ]
        );
        assert_eq!(
            config.follower_pools[0].max_lag_bytes, 7,
            "a declared pool keeps its settings"
        );
        assert_eq!(config.routing.read_pool.as_deref(), Some("default"));
        assert!(derived.left_out.is_empty(), "{:?}", derived.left_out);
        assert_eq!(
            derive(&declared, &view(THREE), &leader("n1", 5431)),
            derived,
            "the same view gives the same config: nothing to swap"
        );
    }

    #[test]
    fn a_leader_named_but_not_confirmed_serves_nothing_and_the_old_leader_stays() {
        // Patroni names n2 already; pgsplit still leads with n1 until PostgreSQL confirms n2.
        let moved = THREE
            .replace(r#""n1", "role": "leader""#, r#""n1", "role": "replica""#)
            .replace(r#""n2", "role": "replica""#, r#""n2", "role": "leader""#);
        let derived = derive(&base(""), &view(&moved), &leader("n1", 5431));
        assert_eq!(derived.config.leader.name, "n1");
        assert_eq!(pools(&derived.config), [("analytics".into(), vec!["n3".into()])]);
        assert_eq!(derived.left_out.len(), 1);
        assert_eq!(derived.left_out[0].0, "n2");
        // Confirmed: n2 leads and n1, a replica now, joins the read pool.
        let derived = derive(&base(""), &view(&moved), &leader("n2", 5432));
        assert_eq!(
            pools(&derived.config),
            [
                ("analytics".into(), vec!["n3".into()]),
                ("default".into(), vec!["n1".into()])
            ]
        );
    }

    #[test]
    fn members_that_cannot_serve_reads_are_left_out_with_the_reason() {
        let odd = view(
            r#"{"members": [
            {"name": "a", "role": "replica", "host": "h"},
            {"name": "b", "role": "replica", "host": "h", "port": 1, "tags": {"noloadbalance": true}},
            {"name": "c", "role": "replica", "host": "h", "port": 2, "tags": {"pgsplit_pool": "x"}},
            {"name": "d", "role": "replica", "host": "h", "port": 3, "tags": {"pgsplit_pool": 7}}]}"#,
        );
        let derived = derive(&base(""), &odd, &leader("", 0));
        let why: Vec<&str> = derived.left_out.iter().map(|(_, why)| why.as_str()).collect();
        assert_eq!(derived.left_out.len(), 3, "{why:?}");
        assert!(why[0].contains("no usable host and port"), "{why:?}");
        assert!(why[1].contains("noloadbalance"), "{why:?}");
        assert!(why[2].contains("is not a pool name"), "{why:?}");
        assert_eq!(
            pools(&derived.config),
            [("default".into(), vec!["d".into()])],
            "a tag of another type"
        );
    }

    #[test]
    fn the_limits_on_pools_and_followers_hold() {
        let many: Vec<String> = (0..16)
            .map(|i| {
                format!(r#"{{"name": "m{i:02}", "role": "replica", "host": "h", "port": {}, "tags": {{"pgsplit_pool": "pool{}"}}}}"#, 1000 + i, i % 7)
            })
            .collect();
        let derived = derive(
            &base(""),
            &view(&format!(r#"{{"members": [{}]}}"#, many.join(","))),
            &leader("", 0),
        );
        assert_eq!(derived.config.follower_pools.len(), MAX_FOLLOWER_POOLS);
        let kept: usize = derived.config.follower_pools.iter().map(|p| p.instances.len()).sum();
        assert_eq!(kept + derived.left_out.len(), 16);
        assert!(kept <= MAX_FOLLOWER_INSTANCES);
    }
}
