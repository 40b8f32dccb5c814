//! Following a cluster managed by Patroni (SPEC §8): `view` reads its REST API's `/cluster` answer, `time` its
//! timestamps.

pub mod time;
pub mod view;
