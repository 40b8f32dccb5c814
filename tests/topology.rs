//! Integration tests of topology changes against real PostgreSQL: reloads under load, pause and resume, the
//! orchestrated changeover, promotions made outside pgsplit, and a lost leader. Clusters whose roles change are
//! private to their test.

mod support;

#[path = "topology/abort.rs"]
mod abort;
#[path = "topology/changeover.rs"]
mod changeover;
#[path = "topology/failover.rs"]
mod failover;
#[path = "topology/files.rs"]
mod files;
#[path = "topology/identity.rs"]
mod identity;
#[path = "topology/quiesce.rs"]
mod quiesce;
#[path = "topology/reload.rs"]
mod reload;
#[path = "topology/repoint.rs"]
mod repoint;
