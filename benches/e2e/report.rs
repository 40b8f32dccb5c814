//! The end-to-end bench's report: markdown tables of pgbench runs, pgsplit's ratios to PgBouncer (and to a baseline
//! build, when one runs), memory per idle client. Prints only; measures nothing.

use anyhow::Result;

use crate::procs::PgbenchOutput;
use crate::{CLIENTS, Kind, Workload};

/// One pgbench run's result as reported.
pub struct Row {
    pub target: &'static str,
    pub kind: Kind,
    pub clients: u32,
    pub outcome: Result<Measured, String>,
}

pub struct Measured {
    pub run: PgbenchOutput,
    /// Proxy CPU time per processed transaction, µs.
    pub cpu_per_txn: Option<f64>,
    /// Proxy context switches per processed transaction.
    pub switches_per_txn: Option<f64>,
}

/// RSS of the target's proxy idle, then with `clients` logged-in idle clients.
pub struct Memory {
    pub idle_kib: u64,
    pub loaded_kib: u64,
    pub clients: usize,
}

pub fn print_table(workload: &Workload, rows: &[Row]) {
    println!("\n### {}\n", workload.title);
    println!(concat!(
        "| target | clients | tps | avg latency ms | added latency µs | proxy CPU µs/txn | failed txns ",
        "| proxy ctx switches/txn |"
    ));
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let direct_latency = rows
        .iter()
        .find(|r| r.kind == Kind::Direct && r.clients == 1)
        .and_then(|r| r.outcome.as_ref().ok())
        .map(|m| m.run.latency_ms);
    for row in rows {
        let m = match &row.outcome {
            Ok(m) => m,
            Err(e) => {
                println!(
                    "| {} | {} | error: {} | | | | | |",
                    row.target,
                    row.clients,
                    e.replace('|', "/")
                );
                continue;
            }
        };
        let added = match (row.kind, row.clients, direct_latency) {
            (Kind::Direct, ..) => "–".to_string(),
            (_, 1, Some(direct)) => format!("{:+.0}", (m.run.latency_ms - direct) * 1000.0),
            _ => "–".to_string(),
        };
        let cpu = m.cpu_per_txn.map_or("–".to_string(), |c| format!("{c:.1}"));
        let mut failed = m.run.failed.to_string();
        if m.run.aborted > 0 {
            failed.push_str(&format!(" ({} clients aborted)", m.run.aborted));
        }
        let switches = m.switches_per_txn.map_or("–".to_string(), |s| format!("{s:.2}"));
        println!(
            "| {} | {} | {:.0} | {:.3} | {added} | {cpu} | {failed} | {switches} |",
            row.target, row.clients, m.run.tps, m.run.latency_ms
        );
    }
}

/// `(label, pgsplit/reference CPU per txn, pgsplit/reference tps)` for each client count where both ran.
pub fn cpu_ratios(workload: &Workload, rows: &[Row], reference: Kind) -> Vec<(String, f64, f64)> {
    let find = |kind, clients| {
        rows.iter()
            .find(|r| r.kind == kind && r.clients == clients)
            .and_then(|r| r.outcome.as_ref().ok())
    };
    let mut short = workload.args.join(" ");
    if workload.session {
        short.push_str(", session");
    }
    CLIENTS
        .iter()
        .filter_map(|&(clients, _)| {
            let (split, other) = (find(Kind::Pgsplit, clients)?, find(reference, clients)?);
            let cpu = split.cpu_per_txn? / other.cpu_per_txn.filter(|&c| c > 0.0)?;
            let tps = split.run.tps / other.run.tps;
            Some((format!("`{short}` c={clients}"), cpu, tps))
        })
        .collect()
}

pub fn print_ratios(reference: &str, ratios: &[(String, f64, f64)]) {
    if ratios.is_empty() {
        println!("\nno pgsplit/{reference} ratios ({reference} skipped or runs failed)");
        return;
    }
    let geomean = |values: Vec<f64>| (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp();
    let cpu: Vec<String> = ratios.iter().map(|(l, c, _)| format!("{l} {c:.2}")).collect();
    let tps: Vec<String> = ratios.iter().map(|(l, _, t)| format!("{l} {t:.2}")).collect();
    println!(
        "\npgsplit/{reference} CPU µs per txn: {}; geometric mean {:.2}",
        cpu.join(", "),
        geomean(ratios.iter().map(|r| r.1).collect())
    );
    println!(
        "pgsplit/{reference} tps: {}; geometric mean {:.2}",
        tps.join(", "),
        geomean(ratios.iter().map(|r| r.2).collect())
    );
}

pub fn print_memory(memory: &[(&str, Result<Memory>)]) {
    println!("\n### memory per idle client (RSS)\n");
    println!("| proxy | RSS idle KiB | RSS with clients KiB | clients | KiB per client |");
    println!("|---|---:|---:|---:|---:|");
    for (name, outcome) in memory {
        match outcome {
            Ok(m) => println!(
                "| {name} | {} | {} | {} | {:.1} |",
                m.idle_kib,
                m.loaded_kib,
                m.clients,
                (m.loaded_kib as f64 - m.idle_kib as f64) / m.clients as f64
            ),
            Err(e) => println!("| {name} | error: {} | | | |", format!("{e:#}").replace('|', "/")),
        }
    }
}
