//! The harness itself: the cluster it starts is what the other tests assume.

use crate::support::patroni::turn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_comes_up_with_one_leader_and_two_streaming_replicas() {
    let (_turn, cluster) = turn().await;
    let view = cluster.view().expect("Patroni answers /cluster");
    assert_eq!(view.members.len(), 3, "{view:?}");
    let leader = view.leader().expect("one leader");
    let leader = cluster.member(&leader.name).expect("a member of ours");
    let replicas: Vec<_> = cluster.members().iter().filter(|m| m.name != leader.name).collect();
    assert_eq!(cluster.psql(leader, "SELECT pg_is_in_recovery()").unwrap(), "f");
    let streaming = cluster
        .psql(
            leader,
            "SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication \
             WHERE state = 'streaming'",
        )
        .unwrap();
    let mut names: Vec<&str> = replicas.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(streaming, names.join(","), "both replicas stream from the leader");
    for replica in replicas {
        assert_eq!(cluster.psql(replica, "SELECT pg_is_in_recovery()").unwrap(), "t");
    }
    let tagged = view.member("n3").expect("n3");
    assert_eq!(tagged.tag_str("pgsplit_pool"), Some("analytics"), "tags reach /cluster");
    // The app role logs in over TCP with its password, on every member.
    for member in cluster.members() {
        let (client, connection) = tokio_postgres::connect(&cluster.app_url(member), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("app logs in on {}: {e}", member.name));
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await.unwrap();
    }
}
