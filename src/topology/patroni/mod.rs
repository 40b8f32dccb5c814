//! Following a cluster managed by Patroni (SPEC §8, `[topology] source = "patroni"`): the members come from
//! Patroni's REST API instead of the file, and roles are confirmed on the servers before anything is routed by
//! them. `api` talks to Patroni, `view` reads its `/cluster` answer and `time` its timestamps, `derive` turns the
//! answer into the config the topology is built from, `confirm` asks PostgreSQL whether the leader Patroni names
//! is one, `promote` asks Patroni for a scheduled switchover, `follow` is the task that does all of it every poll (holding writes at the gate while no confirmed
//! leader exists), and `state` is what it knows, for `status` and reloads.

pub mod api;
pub mod confirm;
pub mod derive;
pub mod follow;
pub mod promote;
pub mod state;
pub mod time;
pub mod view;
