//! The clients: one task per client, each with its own connection (or a new one per transaction), running the
//! workload's scripts in the chosen protocol until the run's deadline, its transaction count or a stop. They run on
//! `-j` threads with a single-threaded runtime each, clients dealt out in turn, as pgbench gives each thread its
//! clients: a client and its connection's I/O task share a thread, so a query never wakes another one. Closed loop by default; with a rate, each client starts transactions on a Poisson schedule and
//! latency counts from the scheduled start, so a stall shows as latency (no coordinated omission).
//!
//! Owns talking to the endpoint under test; counts through `stats`, never prints.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::RngExt;
use rand::rngs::SmallRng;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};
use tokio_postgres::types::{Format, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{Client, Statement};

use super::options::Protocol;
use super::script::{CLIENT_ID, Command, SCALE, Sql};
use super::stats::{Outcome, Stats};
use super::target::{Target, describe};
use super::workload::Workload;

/// First pause before reconnecting after a lost connection; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The client threads.
pub struct Workers {
    handles: Vec<Handle>,
    /// Each thread runs its runtime until told to stop.
    threads: Vec<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Workers {
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::with_capacity(count),
            threads: Vec::with_capacity(count),
        };
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (stop, stopped) = oneshot::channel::<()>();
            workers.handles.push(runtime.handle().clone());
            let thread = std::thread::Builder::new().name(format!("bench-{i}")).spawn(move || {
                let _ = runtime.block_on(stopped);
            })?;
            workers.threads.push((stop, thread));
        }
        Ok(workers)
    }

    /// The runtime client `id` runs on.
    pub fn handle(&self, id: usize) -> &Handle {
        &self.handles[id % self.handles.len()]
    }
}

impl Drop for Workers {
    /// Stops every thread; their runtimes drop what is left on them (connections close).
    fn drop(&mut self) {
        for (stop, thread) in self.threads.drain(..) {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// What every client runs, shared.
pub struct Plan {
    pub target: Target,
    pub workload: Workload,
    pub protocol: Protocol,
    pub connect_per_txn: bool,
    /// Each client's share of `--rate`, in transactions per second.
    pub rate_per_client: Option<f64>,
    /// `-t`: transactions per client.
    pub transactions: Option<u64>,
    pub scale: i64,
}

/// One client's connection and the statements it prepared on it.
pub struct Connection {
    client: Client,
    /// `[script][command]`, filled as commands first run (prepared protocol only).
    prepared: Vec<Vec<Option<Statement>>>,
}

impl Connection {
    fn new(client: Client, workload: &Workload) -> Connection {
        Connection {
            client,
            prepared: workload
                .scripts
                .iter()
                .map(|(script, _)| vec![None; script.commands.len()])
                .collect(),
        }
    }
}

/// Opens a connection for client `shard` and counts it.
pub async fn connect(plan: &Plan, stats: &Stats, shard: usize) -> Result<Connection, tokio_postgres::Error> {
    let started = Instant::now();
    let result = plan.target.connect().await;
    stats.connect(shard, result.as_ref().map(|_| started.elapsed()).map_err(|_| ()));
    result.map(|client| Connection::new(client, &plan.workload))
}

/// Why a transaction failed: the error code for the tally and its message.
struct Failure {
    code: String,
    message: String,
    /// The connection cannot be used again.
    lost: bool,
}

impl Failure {
    fn postgres(error: &tokio_postgres::Error, client: &Client) -> Failure {
        let lost = error.is_closed() || client.is_closed();
        let code = match error.code() {
            Some(code) => code.code().to_owned(),
            None if lost => "closed".into(),
            None => "client".into(),
        };
        Failure {
            code,
            message: describe(error),
            lost,
        }
    }

    fn connect(error: &tokio_postgres::Error) -> Failure {
        Failure {
            code: error.code().map_or("connect", |c| c.code()).to_owned(),
            message: describe(error),
            lost: true,
        }
    }

    fn script(message: String) -> Failure {
        Failure {
            code: "script".into(),
            message,
            lost: false,
        }
    }
}

/// A variable's value as a parameter: sent as text with its type left to the server, as pgbench does.
#[derive(Debug)]
struct TextInt(i64);

impl ToSql for TextInt {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        use std::fmt::Write;
        write!(out, "{}", self.0)?;
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// One client from the start of the run to its end.
pub struct LoadClient {
    pub shard: usize,
    pub plan: Arc<Plan>,
    pub stats: Arc<Stats>,
    pub stop: watch::Receiver<bool>,
    pub deadline: Option<Instant>,
    pub connection: Option<Connection>,
    pub rng: SmallRng,
}

impl LoadClient {
    pub async fn run(mut self, id: u32) {
        let plan = self.plan.clone();
        // Each script's variables, kept across transactions as pgbench keeps them.
        let mut values: Vec<Vec<i64>> = plan
            .workload
            .scripts
            .iter()
            .map(|(script, _)| {
                let mut values = vec![0; script.variables.len()];
                values[SCALE] = plan.scale;
                values[CLIENT_ID] = i64::from(id);
                values
            })
            .collect();
        let mut text = String::new();
        let mut next_start = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut done = 0u64;
        loop {
            if *self.stop.borrow() || plan.transactions.is_some_and(|n| done >= n) {
                return;
            }
            let start = match plan.rate_per_client {
                Some(rate) => {
                    next_start += exponential(&mut self.rng, rate);
                    if self.past_deadline(next_start) || !self.sleep_until(next_start).await {
                        return;
                    }
                    next_start
                }
                None => {
                    let now = Instant::now();
                    if self.past_deadline(now) {
                        return;
                    }
                    now
                }
            };
            done += 1;
            let script = plan.workload.pick(&mut self.rng);
            let result = self.transaction(&plan, script, &mut values[script], &mut text).await;
            let end = Instant::now();
            let writes = plan.workload.scripts[script].0.writes;
            match result {
                Ok(()) => {
                    backoff = FIRST_BACKOFF;
                    self.stats
                        .transaction(self.shard, script, writes, start, end, Outcome::Committed);
                }
                Err(failure) => {
                    let message = || failure.message.clone();
                    let outcome = Outcome::Failed {
                        code: &failure.code,
                        message: &message,
                    };
                    self.stats.transaction(self.shard, script, writes, start, end, outcome);
                    if failure.lost {
                        self.connection = None;
                        // A lost or refused connection: wait before the next try instead of spinning.
                        if !self.sleep_until(Instant::now() + backoff).await {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if plan.connect_per_txn {
                self.connection = None;
            }
        }
    }

    fn past_deadline(&self, at: Instant) -> bool {
        self.deadline.is_some_and(|deadline| at >= deadline)
    }

    /// Sleeps until `at`; false when the run was stopped meanwhile.
    async fn sleep_until(&mut self, at: Instant) -> bool {
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => true,
            _ = stopped(&mut self.stop) => false,
        }
    }

    /// Runs one script; on a failure inside an explicit transaction, rolls it back so the connection can go on.
    async fn transaction(
        &mut self,
        plan: &Plan,
        script: usize,
        values: &mut [i64],
        text: &mut String,
    ) -> Result<(), Failure> {
        let connection = match self.connection.take() {
            Some(connection) => connection,
            None => connect(plan, &self.stats, self.shard)
                .await
                .map_err(|e| Failure::connect(&e))?,
        };
        let connection = self.connection.insert(connection);
        let mut in_transaction = false;
        for (index, command) in plan.workload.scripts[script].0.commands.iter().enumerate() {
            let result = match command {
                Command::Set { slot, expr } => match expr.eval(values, &mut self.rng) {
                    Ok(value) => {
                        values[*slot] = value;
                        Ok(())
                    }
                    Err(error) => Err(Failure::script(error.to_string())),
                },
                Command::Sleep { amount, unit } => match amount.eval(values, &mut self.rng) {
                    Ok(n) => {
                        tokio::time::sleep(*unit * u32::try_from(n.max(0)).unwrap_or(u32::MAX)).await;
                        Ok(())
                    }
                    Err(error) => Err(Failure::script(error.to_string())),
                },
                Command::Sql(sql) => {
                    in_transaction = sql.transaction_block.unwrap_or(in_transaction);
                    execute(plan.protocol, connection, (script, index), sql, values, text)
                        .await
                        .map_err(|error| Failure::postgres(&error, &connection.client))
                }
            };
            if let Err(failure) = result {
                if in_transaction && !failure.lost {
                    // Best effort: if even this fails, the next statement finds out.
                    let _ = connection.client.batch_execute("ROLLBACK").await;
                }
                return Err(failure);
            }
        }
        Ok(())
    }
}

/// Resolves once the run is stopped (the value behind `stop` turns true, or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn execute(
    protocol: Protocol,
    connection: &mut Connection,
    (script, index): (usize, usize),
    sql: &Sql,
    values: &[i64],
    text: &mut String,
) -> Result<(), tokio_postgres::Error> {
    // Parameters only for the protocols that send them.
    let params = || -> Vec<TextInt> { sql.params.iter().map(|slot| TextInt(values[*slot])).collect() };
    match protocol {
        Protocol::Simple => {
            sql.render(values, text);
            connection.client.batch_execute(text).await
        }
        Protocol::Extended => {
            let params = params();
            let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
                .iter()
                .map(|p| (p as &(dyn ToSql + Sync), Type::UNKNOWN))
                .collect();
            connection
                .client
                .query_typed(&sql.parameterised, &typed)
                .await
                .map(drop)
        }
        Protocol::Prepared => {
            let params = params();
            let statement = match &connection.prepared[script][index] {
                Some(statement) => statement.clone(),
                None => {
                    let types = vec![Type::UNKNOWN; params.len()];
                    let statement = connection.client.prepare_typed(&sql.parameterised, &types).await?;
                    connection.prepared[script][index] = Some(statement.clone());
                    statement
                }
            };
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            connection.client.query(&statement, &refs).await.map(drop)
        }
    }
}

/// The wait before the next arrival of a Poisson process with `rate` arrivals per second.
fn exponential(rng: &mut SmallRng, rate: f64) -> Duration {
    // 1 - u is in (0, 1]: its logarithm is finite.
    let u: f64 = rng.random();
    Duration::from_secs_f64(-(1.0 - u).ln() / rate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn arrivals_average_the_rate() {
        let mut rng = SmallRng::seed_from_u64(11);
        let total: Duration = (0..20_000).map(|_| exponential(&mut rng, 100.0)).sum();
        let mean_ms = total.as_secs_f64() * 1000.0 / 20_000.0;
        assert!((9.5..10.5).contains(&mean_ms), "{mean_ms} ms between arrivals at 100/s");
    }
}
