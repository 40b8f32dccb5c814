//! The server is the oracle for the classifier: every statement of the corpus the classifier calls a read must
//! run on a real hot standby (which refuses any write with 25006).

use futures_util::StreamExt;
use pgsplit::router::{Access, FunctionSet, classify};
use tokio_postgres::NoTls;

use crate::support::{cluster, psql, wait_replayed};

const CORPUS: &str = include_str!("../data/classifier_corpus.sql");
const SCHEMA: &str = include_str!("../data/classifier_schema.sql");

/// The corpus records: (expected-access line, SQL).
fn records() -> Vec<(String, String)> {
    CORPUS
        .split("\n-- ---\n")
        .skip(1)
        .filter_map(|record| {
            let (first, sql) = record.split_once('\n')?;
            Some((first.trim().to_owned(), sql.to_owned()))
        })
        .collect()
}

/// Runs a corpus statement; COPY … TO STDOUT needs the copy-out protocol, which a simple query cannot receive.
async fn run(client: &tokio_postgres::Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    let lower = sql.to_ascii_lowercase();
    let is_copy_out = lower.lines().any(|l| l.trim_start().starts_with("copy")) && lower.contains("stdout");
    if !is_copy_out {
        return client.batch_execute(sql).await;
    }
    let stream = client.copy_out(sql).await?;
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
        chunk?;
    }
    Ok(())
}

include!("../data/corpus_functions.rs");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_the_classifier_calls_a_read_runs_on_a_follower() {
    let c = cluster();
    psql(c, c.leader(), "CREATE DATABASE classifier_oracle OWNER app");
    c.psql_on(c.leader(), "classifier_oracle", SCHEMA)
        .expect("the corpus schema loads");
    wait_replayed(c);
    let functions = corpus_functions();
    let follower = &c.followers()[0];
    let mut reads = 0;
    let mut failures = Vec::new();
    for (expected, sql) in records() {
        if classify(&sql, &functions).access != Access::Read {
            continue;
        }
        reads += 1;
        // A fresh session for each, as the corpus's SETs and cursors would otherwise leak into the next one.
        let conninfo = format!(
            "host={} port={} user=postgres dbname=classifier_oracle",
            follower.socket_dir.display(),
            follower.port
        );
        let (client, connection) = tokio_postgres::connect(&conninfo, NoTls)
            .await
            .unwrap_or_else(|e| panic!("{conninfo}: {e}"));
        let task = tokio::spawn(connection);
        if let Err(e) = run(&client, &sql).await {
            failures.push(format!("[{expected}] {sql}\n    -> {e}"));
        }
        drop(client);
        let _ = task.await;
    }
    assert!(reads >= 100, "the corpus should hold many reads, found {reads}");
    assert!(
        failures.is_empty(),
        "{} of {reads} reads failed on a follower:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
