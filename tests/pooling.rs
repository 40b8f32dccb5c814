//! Transaction pooling that clients cannot tell from a direct connection (SPEC §3.3): named prepared statements on
//! whichever server connection serves the client, session settings, pinning, and server-connection hygiene. Tiny
//! pools and several clients, so that clients really do move between server connections.

mod support;

#[path = "pooling/pids.rs"]
mod pids;
#[path = "pooling/prepared.rs"]
mod prepared;
#[path = "pooling/startup.rs"]
mod startup;
#[path = "pooling/state.rs"]
mod state;
#[path = "pooling/unseen.rs"]
mod unseen;
#[path = "pooling/workers.rs"]
mod workers;
