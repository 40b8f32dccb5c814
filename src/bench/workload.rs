//! What the clients run: the built-in workloads (`select`, pgbench's `-S`; `tpcb`, its TPC-B-like default;
//! `mixed:N`, N% of transactions `select` and the rest `tpcb`) or a script file, and the choice of script for each
//! transaction. The built-ins are scripts in the same format as files (see `script`), over pgbench's tables.

use rand::RngExt;
use rand::rngs::SmallRng;

use super::BenchError;
use super::script::{self, Script};

/// pgbench's `-S`: one point select on pgbench_accounts.
const SELECT: &str = "\\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
";

/// pgbench's default TPC-B-like transaction.
const TPCB: &str = "\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
";

#[derive(Debug, Clone)]
pub struct Workload {
    /// As given: `select`, `tpcb`, `mixed:90`, or the file's path.
    pub name: String,
    /// The scripts with their weights (out of their sum).
    pub scripts: Vec<(Script, u32)>,
    /// Runs on pgbench's tables (the built-ins): `:scale` comes from pgbench_branches unless --scale says.
    pub on_pgbench_tables: bool,
}

impl Workload {
    pub fn parse(spec: &str) -> Result<Workload, BenchError> {
        let builtin = |name: &str, text: &str| script::parse(name, text).map_err(BenchError::Script);
        let scripts = match spec {
            "select" => vec![(builtin("select", SELECT)?, 1)],
            "tpcb" => vec![(builtin("tpcb", TPCB)?, 1)],
            _ => match spec.strip_prefix("mixed:") {
                Some(percent) => {
                    let reads: u32 = percent.parse().ok().filter(|p| *p <= 100).ok_or_else(|| {
                        BenchError::Usage(format!(
                            "--workload {spec}: mixed:N takes the percentage of reads, 0 to 100"
                        ))
                    })?;
                    vec![
                        (builtin("select", SELECT)?, reads),
                        (builtin("tpcb", TPCB)?, 100 - reads),
                    ]
                }
                None => return Workload::from_file(spec),
            },
        };
        Ok(Workload {
            name: spec.to_owned(),
            scripts,
            on_pgbench_tables: true,
        })
    }

    fn from_file(path: &str) -> Result<Workload, BenchError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            if error.kind() == std::io::ErrorKind::NotFound && !path.contains(['/', '.']) {
                BenchError::Usage(format!(
                    "unknown workload \"{path}\": use select, tpcb, mixed:N (N% reads) or a script file"
                ))
            } else {
                BenchError::Usage(format!("cannot read the script {path}: {error}"))
            }
        })?;
        let script = script::parse(path, &text).map_err(BenchError::Script)?;
        Ok(Workload {
            name: path.to_owned(),
            scripts: vec![(script, 1)],
            on_pgbench_tables: false,
        })
    }

    /// The script for the next transaction, by weight.
    pub fn pick(&self, rng: &mut SmallRng) -> usize {
        if self.scripts.len() == 1 {
            return 0;
        }
        let total: u32 = self.scripts.iter().map(|(_, w)| w).sum();
        if total == 0 {
            return 0;
        }
        let mut ticket = rng.random_range(0..total);
        for (i, (_, weight)) in self.scripts.iter().enumerate() {
            if ticket < *weight {
                return i;
            }
            ticket -= weight;
        }
        self.scripts.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn builtins_parse_and_tell_reads_from_writes() {
        let select = Workload::parse("select").unwrap();
        assert!(!select.scripts[0].0.writes);
        let tpcb = Workload::parse("tpcb").unwrap();
        assert!(tpcb.scripts[0].0.writes);
        assert_eq!(tpcb.scripts[0].0.commands.len(), 11);
    }

    #[test]
    fn mixed_picks_reads_at_the_given_share() {
        let mixed = Workload::parse("mixed:90").unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        let reads = (0..10_000).filter(|_| mixed.pick(&mut rng) == 0).count();
        assert!((8_800..9_200).contains(&reads), "{reads} reads of 10,000");
        let all_writes = Workload::parse("mixed:0").unwrap();
        assert!((0..100).all(|_| all_writes.pick(&mut rng) == 1));
    }

    #[test]
    fn unknown_names_and_bad_shares_are_refused() {
        for spec in ["selct", "mixed:101", "mixed:x", "missing/file.sql"] {
            let error = Workload::parse(spec).unwrap_err().to_string();
            assert!(!error.contains('\n'), "{error}");
            assert!(error.contains(spec), "{spec}: {error}");
        }
    }
}
