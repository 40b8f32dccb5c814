//! pgsplit in front of a Patroni-managed cluster (SPEC §8): etcd and three PostgreSQL nodes under Patroni on
//! loopback, shared by this file's tests, which take turns with it (tests/support/patroni.rs).

mod support;

#[path = "patroni/failover.rs"]
mod failover;
#[path = "patroni/follow.rs"]
mod follow;
#[path = "patroni/harness.rs"]
mod harness;
#[path = "patroni/promote.rs"]
mod promote;
#[path = "patroni/read_your_writes.rs"]
mod read_your_writes;
#[path = "patroni/switchover.rs"]
mod switchover;
#[path = "patroni/switchover_immediate.rs"]
mod switchover_immediate;
