//! pgsplit takes its members from Patroni: the leader once PostgreSQL confirms it, the replicas by their tag.

use crate::support::patroni::{PatroniProxy, turn};
use crate::support::{eventually, value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_come_from_patroni_and_tags_pick_their_pools() {
    let (_turn, cluster) = turn().await;
    let p = PatroniProxy::start(cluster, "").await;
    let view = cluster.view().unwrap();
    let leader = view.leader().unwrap().name.clone();
    let topology = p.proxy.context().topology.load_full();
    for member in cluster.members().iter().filter(|m| m.name != leader) {
        let expected = if member.name == "n3" { "analytics" } else { "default" };
        let pool = topology
            .pools
            .iter()
            .find(|pool| pool.instances.iter().any(|i| *i.name == member.name))
            .map(|pool| pool.name.to_string());
        assert_eq!(pool.as_deref(), Some(expected), "{} joins its pool", member.name);
    }

    let client = p.connect().await;
    let leader_port = cluster.member(&leader).unwrap().port.to_string();
    for _ in 0..5 {
        assert_eq!(
            value(&client, "BEGIN; SELECT inet_server_port(); COMMIT").await,
            leader_port
        );
    }
    if leader != "n3" {
        // The read pool has one replica besides the leader: the untagged one.
        let replica = cluster
            .members()
            .iter()
            .find(|m| m.name != leader && m.name != "n3")
            .unwrap();
        // An earlier test of this cluster may have just rewound or restarted it: it serves once caught up.
        let proxy_topology = p.proxy.context().topology.clone();
        eventually(&format!("{} usable", replica.name), || {
            let topology = proxy_topology.load();
            let instance = topology
                .pools
                .iter()
                .flat_map(|pool| pool.instances.iter())
                .find(|i| *i.name == replica.name)
                .ok_or("not in a pool")?;
            instance.health.usable_for().map(drop).ok_or("not usable yet".into())
        })
        .await;
        assert_eq!(
            value(&client, "SELECT inet_server_port()").await,
            replica.port.to_string()
        );
    }

    let status = pgsplit::admin::Status::capture(p.proxy.context());
    let patroni = status.patroni.expect("Patroni's view in the status");
    assert_eq!(patroni.named_leader.as_deref(), Some(leader.as_str()));
    assert_eq!(patroni.holding_writes, None);
    assert_eq!(patroni.unreachable, None);
    assert_eq!(patroni.view.map(|v| v.members.len()), Some(3));
    assert_eq!(
        patroni.last_hold.and_then(|h| h.released_on),
        Some(leader),
        "first leader confirmed"
    );
    p.stop().await;
}
