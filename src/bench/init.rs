//! `--init`: pgbench's four tables at a scale (per scale unit: 1 branch, 10 tellers, 100,000 accounts), generated
//! by the server, with primary keys and fresh statistics; what `pgbench -i` leaves behind, so either tool can run
//! against the other's tables. Existing pgbench tables are replaced.

use std::time::Instant;

use super::BenchError;
use super::target::{Target, describe};

fn statements(scale: u32) -> Vec<String> {
    vec![
        "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers".into(),
        "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))".into(),
        "CREATE TABLE pgbench_tellers (tid int NOT NULL, bid int, tbalance int, filler char(84)) \
         WITH (fillfactor = 100)"
            .into(),
        "CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84)) \
         WITH (fillfactor = 100)"
            .into(),
        "CREATE TABLE pgbench_branches (bid int NOT NULL, bbalance int, filler char(88)) WITH (fillfactor = 100)"
            .into(),
        format!("INSERT INTO pgbench_branches (bid, bbalance) SELECT b, 0 FROM generate_series(1, {scale}) b"),
        format!(
            "INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT t, (t - 1) / 10 + 1, 0 \
             FROM generate_series(1, {}) t",
            u64::from(scale) * 10
        ),
        format!(
            "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT a, (a - 1) / 100000 + 1, 0, '' \
             FROM generate_series(1, {}) a",
            u64::from(scale) * 100_000
        ),
        "ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid)".into(),
        "ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid)".into(),
        "ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)".into(),
        "VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history".into(),
    ]
}

/// Creates the tables; a connection failure is bad input (exit 1), a failing statement a runtime failure.
pub async fn run(target: &Target, scale: u32) -> Result<(), BenchError> {
    let started = Instant::now();
    let client = target.connect().await.map_err(|error| BenchError::Connect {
        target: target.to_string(),
        reason: describe(&error),
    })?;
    for sql in statements(scale) {
        client
            .batch_execute(&sql)
            .await
            .map_err(|error| BenchError::Runtime(format!("--init: {}: {}", first_words(&sql), describe(&error))))?;
    }
    println!(
        "pgbench tables at scale {scale} ({} accounts) created at {target} in {:.1} s",
        super::summary::thousands(u64::from(scale) * 100_000),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn first_words(sql: &str) -> String {
    sql.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
