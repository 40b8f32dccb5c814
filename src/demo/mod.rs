//! `pgsplit demo`: a throwaway local cluster with pgsplit in front. `cluster` owns the PostgreSQL side (also used by
//! every integration test through tests/support).

pub mod cluster;
