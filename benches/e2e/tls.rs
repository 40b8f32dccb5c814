//! The end-to-end bench's TLS mode (`PGSPLIT_BENCH_TLS=1`): pgsplit and PgBouncer side by side, TLS on both sides —
//! pgbench with `sslmode=require` towards the proxies, the proxies verifying the server's certificate and name
//! (`verify-full` against a CA the bench makes) towards a leader that takes TCP logins only over TLS. SCRAM on both
//! hops, transaction pooling, the same pool size.
//!
//! Measured, the targets interleaved within each round (direct, PgBouncer, pgsplit): the proxy's CPU per
//! transaction for `pgbench -S` at 1 and 16 clients, and TLS handshakes per second with `pgbench -S -C` (a new
//! connection per transaction: a TCP connect, a TLS handshake and a SCRAM login through the proxy, then one
//! SELECT). Each run gets a row; then, per workload and client count, the median over the rounds with its range,
//! for each proxy and for pgsplit/PgBouncer taken within each round. Then each proxy's memory per idle TLS client.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use pgsplit::demo::cluster::{
    ClusterOptions, LocalCluster, ServerCertificate, Toolbox, Watchdog, free_ports, unique_base_dir,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, SanType};

use crate::procs::WorkDir;
use crate::report::{self, Row};
use crate::{
    BOUNCER_TXN_DB, CLIENTS, DATABASE, Kind, PASSWORD, PgsplitSpec, Settings, Target, USER, Workload, idle_memory,
    measure, pgbench_args,
};

const WORKLOADS: [Workload; 2] = [
    Workload {
        title: "select-only over TLS (`pgbench -S -M simple`, sslmode=require), transaction pooling",
        args: &["-S", "-M", "simple"],
        session: false,
        pgbouncer: true,
    },
    Workload {
        title: "a new TLS connection per transaction (`pgbench -S -M simple -C`, sslmode=require), transaction pooling",
        args: &["-S", "-M", "simple", "-C"],
        session: false,
        pgbouncer: true,
    },
];

/// Every pgbench run: TLS or no connection (libpq's `require`: the certificate is not checked, as most
/// applications connect to a pooler).
const CLIENT_ENV: [(&str, &str); 1] = [("PGSSLMODE", "require")];

/// The bench's own CA and a certificate it signed for localhost and 127.0.0.1, as files both proxies read, the
/// same certificate for the leader, and a client config trusting the CA (the idle clients).
struct Certificates {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    server: ServerCertificate,
    client: Arc<rustls::ClientConfig>,
}

fn certificates(work: &WorkDir, tools: &Toolbox) -> Result<Certificates> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "pgsplit bench CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned()])?;
    params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone())?;
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Certificates {
        ca: work.write(tools, "tls-ca.crt", &ca.pem())?,
        cert: work.write(tools, "tls-server.crt", &cert.pem())?,
        key: work.write(tools, "tls-server.key", &key.serialize_pem())?,
        server: ServerCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        },
        client: Arc::new(client),
    })
}

pub fn run(settings: &Settings, tools: &Toolbox, work: &WorkDir) -> Result<()> {
    let certificates = certificates(work, tools)?;
    let base_dir = unique_base_dir()?;
    // Declared before the cluster, so dropped after it: it finds nothing left unless the bench died first.
    let _watchdog = Watchdog::spawn(tools, &base_dir)?;
    eprintln!("e2e tls: starting a leader with ssl = on, TCP logins over TLS only");
    let mut cluster = LocalCluster::start(ClusterOptions {
        followers: 0,
        base_dir: Some(base_dir),
        ssl: Some(certificates.server.clone()),
        ..ClusterOptions::default()
    })?;
    let outcome = with_cluster(&cluster, tools, work, settings, &certificates);
    let stopped = cluster.stop();
    outcome?;
    stopped.context("stopping the cluster")
}

fn with_cluster(
    cluster: &LocalCluster,
    tools: &Toolbox,
    work: &WorkDir,
    settings: &Settings,
    certificates: &Certificates,
) -> Result<()> {
    crate::pgbench_init(cluster, settings.scale)?;
    let leader_port = cluster.leader().port;
    let p = free_ports(3)?;
    let pgsplit_tls = format!(
        "\n[proxy.tls]\nmode = \"require\"\ncert = \"{}\"\nkey = \"{}\"\n\n[server]\ntls = \"verify-full\"\n\
         tls_ca = \"{}\"\n",
        certificates.cert.display(),
        certificates.key.display(),
        certificates.ca.display()
    );
    let spec = PgsplitSpec {
        label: "tls",
        binary: "pgsplit",
        mode: "transaction",
        ports: [p[0], p[1]],
        leader_port,
        pool: settings.pool,
        followers: &[],
        workers: 1,
        extra: &pgsplit_tls,
    };
    let mut pgsplit = crate::start_pgsplit(work, tools, &spec)?;
    let bouncer_tls = format!(
        "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n\
         server_tls_sslmode = verify-full\nserver_tls_ca_file = {}\n",
        certificates.cert.display(),
        certificates.key.display(),
        certificates.ca.display()
    );
    let bin = crate::pgbouncer_binary().context("the TLS comparison needs PgBouncer (1.18+)")?;
    let pools = [settings.pool, settings.pool];
    // PgBouncer at its best for logins: the server's own SCRAM secret in its auth_file, so it verifies a client
    // without PBKDF2 (a cleartext password there costs it about 4 ms of CPU per login) and passes SCRAM on.
    let secret = cluster.psql(
        cluster.leader(),
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'",
    )?;
    let auth = (secret.trim(), bouncer_tls.as_str());
    let mut pgbouncer = crate::start_pgbouncer(work, tools, &bin, (p[2], leader_port), pools, auth)?;
    let targets = [
        Target {
            name: "direct",
            kind: Kind::Direct,
            port: leader_port,
            database: DATABASE,
            pid: None,
        },
        Target {
            name: "pgbouncer",
            kind: Kind::PgBouncer,
            port: p[2],
            database: BOUNCER_TXN_DB,
            pid: Some(pgbouncer.pid()),
        },
        Target {
            name: "pgsplit",
            kind: Kind::Pgsplit,
            port: p[0],
            database: DATABASE,
            pid: Some(pgsplit.pid()),
        },
    ];
    crate::print_header(cluster, settings, settings.pool)?;
    println!(
        "- TLS on both sides: pgbench sslmode=require; PgBouncer client_tls_sslmode=require, server_tls_sslmode=verify-full; \
         pgsplit [proxy.tls] mode=require, [server] tls=verify-full; the leader: ssl=on, hostssl only"
    );
    for target in &targets[1..] {
        let args = pgbench_args(&["-S"], 16, 2, 1);
        crate::procs::pgbench(
            tools,
            (target.port, target.database),
            (USER, PASSWORD),
            &args,
            &CLIENT_ENV,
        )
        .with_context(|| format!("warm-up through {}", target.name))?;
    }
    let mut memory = Vec::new();
    for target in &targets[1..] {
        eprintln!("e2e tls: {} idle TLS clients on {}", settings.idle_clients, target.name);
        memory.push((
            target.name,
            idle_memory(target, settings.idle_clients, Some(&certificates.client)),
        ));
    }
    let mut summaries = Vec::new();
    for workload in &WORKLOADS {
        let mut rows = Vec::new();
        for (clients, threads) in CLIENTS {
            for round in 1..=settings.rounds {
                for target in &targets {
                    eprintln!(
                        "e2e tls: {} | {} | {clients} clients | round {round}",
                        workload.args.join(" "),
                        target.name
                    );
                    let args = pgbench_args(workload.args, clients, threads, settings.secs);
                    rows.push(Row {
                        target: target.name,
                        kind: target.kind,
                        clients,
                        round,
                        outcome: measure(tools, target, &args, &CLIENT_ENV),
                    });
                }
            }
        }
        report::print_table(workload, &rows);
        summaries.push((workload, rows));
    }
    println!("\n### TLS: medians over {} round(s), [min–max]\n", settings.rounds);
    println!("| workload | clients | measure | PgBouncer | pgsplit | pgsplit/PgBouncer (within each round) |");
    println!("|---|---:|---|---:|---:|---:|");
    for (workload, rows) in &summaries {
        print_summary(workload, rows);
    }
    report::print_memory(&memory);
    println!();
    for proxy in [&mut pgsplit, &mut pgbouncer] {
        match proxy.stop() {
            Ok((status, took)) => println!("{} stopped on SIGTERM within {took:.0?} ({status})", proxy.name),
            Err(e) => println!("{}: {e:#}", proxy.name),
        }
    }
    Ok(())
}

/// Median and range of `values`, as `median [min–max]` with `digits` decimals.
fn spread(mut values: Vec<f64>, digits: usize) -> String {
    if values.is_empty() {
        return "–".into();
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let median = match values.len() % 2 {
        1 => values[mid],
        _ => (values[mid - 1] + values[mid]) / 2.0,
    };
    let (low, high) = (values[0], values[values.len() - 1]);
    format!("{median:.digits$} [{low:.digits$}–{high:.digits$}]")
}

/// Rows of the summary table for one workload: CPU µs per transaction and tps (handshakes per second with `-C`).
fn print_summary(workload: &Workload, rows: &[Row]) {
    let short = workload.args.join(" ");
    let rounds = rows.iter().map(|r| r.round).max().unwrap_or(0);
    let connects = workload.args.contains(&"-C");
    for (clients, _) in CLIENTS {
        let find = |kind: Kind, round| {
            rows.iter()
                .find(|r| r.kind == kind && r.clients == clients && r.round == round)
                .and_then(|r| r.outcome.as_ref().ok())
        };
        let (mut cpu, mut tps) = (
            [Vec::new(), Vec::new(), Vec::new()],
            [Vec::new(), Vec::new(), Vec::new()],
        );
        for round in 1..=rounds {
            let (Some(bouncer), Some(split)) = (find(Kind::PgBouncer, round), find(Kind::Pgsplit, round)) else {
                continue;
            };
            if let (Some(b), Some(s)) = (bouncer.cpu_per_txn, split.cpu_per_txn) {
                cpu[0].push(b);
                cpu[1].push(s);
                if b > 0.0 {
                    cpu[2].push(s / b);
                }
            }
            tps[0].push(bouncer.run.tps);
            tps[1].push(split.run.tps);
            tps[2].push(split.run.tps / bouncer.run.tps.max(f64::MIN_POSITIVE));
        }
        let [b, s, r] = cpu;
        println!(
            "| `{short}` | {clients} | proxy CPU µs per {} | {} | {} | {} |",
            if connects { "connection" } else { "txn" },
            spread(b, 1),
            spread(s, 1),
            spread(r, 2)
        );
        let [b, s, r] = tps;
        println!(
            "| `{short}` | {clients} | {} | {} | {} | {} |",
            if connects { "handshakes/s" } else { "tps" },
            spread(b, 0),
            spread(s, 0),
            spread(r, 2)
        );
    }
}
