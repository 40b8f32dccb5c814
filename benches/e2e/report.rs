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
    /// Which round of the workload (from 1): the targets run one after another within a round.
    pub round: u32,
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
    let direct_latency = |round| {
        rows.iter()
            .find(|r| r.kind == Kind::Direct && r.clients == 1 && r.round == round)
            .and_then(|r| r.outcome.as_ref().ok())
            .map(|m| m.run.latency_ms)
    };
    for row in rows {
        let target = match row.round {
            1 => row.target.to_string(),
            round => format!("{} (round {round})", row.target),
        };
        let m = match &row.outcome {
            Ok(m) => m,
            Err(e) => {
                println!(
                    "| {target} | {} | error: {} | | | | | |",
                    row.clients,
                    e.replace('|', "/")
                );
                continue;
            }
        };
        let added = match (row.kind, row.clients, direct_latency(row.round)) {
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
            "| {target} | {} | {:.0} | {:.3} | {added} | {cpu} | {failed} | {switches} |",
            row.clients, m.run.tps, m.run.latency_ms
        );
    }
}

/// `(label, pgsplit/reference CPU per txn, pgsplit/reference tps)` for each client count where both ran: the ratios
/// are taken within each round, then their median over the rounds.
pub fn cpu_ratios(workload: &Workload, rows: &[Row], reference: Kind) -> Vec<(String, f64, f64)> {
    let find = |kind, clients, round| {
        rows.iter()
            .find(|r| r.kind == kind && r.clients == clients && r.round == round)
            .and_then(|r| r.outcome.as_ref().ok())
    };
    let mut short = workload.args.join(" ");
    if workload.session {
        short.push_str(", session");
    }
    let rounds = rows.iter().map(|r| r.round).max().unwrap_or(0);
    CLIENTS
        .iter()
        .filter_map(|&(clients, _)| {
            let (mut cpu, mut tps) = (Vec::new(), Vec::new());
            for round in 1..=rounds {
                let (Some(split), Some(other)) = (find(Kind::Pgsplit, clients, round), find(reference, clients, round))
                else {
                    continue;
                };
                if let (Some(s), Some(o)) = (split.cpu_per_txn, other.cpu_per_txn.filter(|&c| c > 0.0)) {
                    cpu.push(s / o);
                    tps.push(split.run.tps / other.run.tps);
                }
            }
            Some((format!("`{short}` c={clients}"), median(cpu)?, median(tps)?))
        })
        .collect()
}

/// The middle value (the mean of the two middle ones for an even count); `None` for none.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

pub fn print_ratios(reference: &str, ratios: &[(String, f64, f64)], rounds: u32) {
    if ratios.is_empty() {
        println!("\nno pgsplit/{reference} ratios ({reference} skipped or runs failed)");
        return;
    }
    let geomean = |values: Vec<f64>| (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp();
    let cpu: Vec<String> = ratios.iter().map(|(l, c, _)| format!("{l} {c:.2}")).collect();
    let tps: Vec<String> = ratios.iter().map(|(l, _, t)| format!("{l} {t:.2}")).collect();
    let of_rounds = if rounds > 1 {
        format!(" (median of {rounds} rounds)")
    } else {
        String::new()
    };
    println!(
        "\npgsplit/{reference} CPU µs per txn{of_rounds}: {}; geometric mean {:.2}",
        cpu.join(", "),
        geomean(ratios.iter().map(|r| r.1).collect())
    );
    println!(
        "pgsplit/{reference} tps{of_rounds}: {}; geometric mean {:.2}",
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
