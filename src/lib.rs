//! pgsplit: a PostgreSQL wire-protocol proxy. One endpoint for the app; writes go to the leader, provable reads
//! are spread over follower pools; server connections are pooled per transaction.
//!
//! Data flows one way: `session` → `router` (decision) → `pool` (connection) → server, and replies stream back
//! through the session untouched. `protocol` knows bytes, not pools.

pub mod admin;
pub mod bench;
pub mod cli;
pub mod config;
pub mod context;
pub mod demo;
pub mod fast_hash;
pub mod logging;
pub mod pool;
pub mod protocol;
pub mod proxy;
pub mod router;
pub mod runtime;
pub mod secret;
pub mod session;
pub mod tcp;
pub mod tls;
pub mod topology;
