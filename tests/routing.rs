//! Integration tests of routing against real PostgreSQL: what pgsplit learns about the cluster (the monitor, the
//! function catalog) and where statements go. Every cluster is built through tests/support.

mod support;

#[path = "routing/corpus.rs"]
mod corpus;
#[path = "routing/defaults.rs"]
mod defaults;
#[path = "routing/encodings.rs"]
mod encodings;
#[path = "routing/monitor.rs"]
mod monitor;
#[path = "routing/read_your_writes.rs"]
mod read_your_writes;
#[path = "routing/split.rs"]
mod split;
