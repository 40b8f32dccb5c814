//! `/metrics`: a [`Status`] rendered in the Prometheus text exposition format (version 0.0.4), by hand — a dozen
//! families do not need a metrics registry, and rendering the status value means metrics and `/status` always
//! agree. Pure: a value in, text out; never reads the proxy itself.

use std::fmt::{Display, Write};

use super::status::{InstanceStatus, Status};

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Prometheus text for `status`.
pub fn render(status: &Status) -> String {
    let mut out = Exposition::default();
    out.family(
        "pgsplit_topology_generation",
        "gauge",
        "Topology generation in use; every reload, adopted promotion and changeover bumps it.",
    );
    out.sample("pgsplit_topology_generation", &[], status.generation);

    out.family("pgsplit_client_connections", "gauge", "Logged-in client connections.");
    out.sample("pgsplit_client_connections", &[], status.clients);

    out.family(
        "pgsplit_workers",
        "gauge",
        "Threads that run client sessions (proxy.workers).",
    );
    out.family(
        "pgsplit_worker_sessions",
        "gauge",
        "Client connections on each worker thread now, logged in or not.",
    );
    if let Some(workers) = &status.workers {
        out.sample("pgsplit_workers", &[], workers.threads);
        for (worker, sessions) in workers.sessions.iter().enumerate() {
            out.sample("pgsplit_worker_sessions", &[("worker", &worker.to_string())], sessions);
        }
    }

    out.family(
        "pgsplit_server_connections",
        "gauge",
        "Server connections per instance: lent out to a client (active) or idle in the pool.",
    );
    for instance in &status.instances {
        let connections = instance.server_connections;
        for (state, count) in [("active", connections.active), ("idle", connections.idle)] {
            out.sample(
                "pgsplit_server_connections",
                &[("instance", &instance.name), ("state", state)],
                count,
            );
        }
    }

    out.family(
        "pgsplit_server_checkout_waits_total",
        "counter",
        "Units that had to wait for a free server connection, per instance (they wait up to server.checkout_timeout).",
    );
    for instance in &status.instances {
        out.sample(
            "pgsplit_server_checkout_waits_total",
            &[("instance", &instance.name)],
            instance.server_connections.waits,
        );
    }

    out.family(
        "pgsplit_server_connection_moves_total",
        "counter",
        "Server connections lent to a session on another worker thread than the one they were on, per instance.",
    );
    for instance in &status.instances {
        out.sample(
            "pgsplit_server_connection_moves_total",
            &[("instance", &instance.name)],
            instance.server_connections.moves,
        );
    }

    out.family(
        "pgsplit_queries_total",
        "counter",
        "Units of work routed to an instance, by routing reason; pool is \"leader\" for the leader.",
    );
    for instance in &status.instances {
        let pool = instance.pool.as_deref().unwrap_or("leader");
        for (route, count) in &instance.routed {
            out.sample(
                "pgsplit_queries_total",
                &[("pool", pool), ("instance", &instance.name), ("route", route)],
                count,
            );
        }
    }

    let followers: Vec<&InstanceStatus> = status.instances.iter().filter(|i| i.pool.is_some()).collect();
    out.per_follower(
        &followers,
        "pgsplit_replication_lag_bytes",
        "Bytes of WAL a follower had yet to replay at the last check.",
        |f| f.lag_bytes,
    );
    out.per_follower(
        &followers,
        "pgsplit_replication_lag_seconds",
        "How far a follower's replay was behind the leader in time at the last check.",
        |f| f.lag_seconds,
    );
    out.per_follower(
        &followers,
        "pgsplit_replication_lag_commits",
        "Leader commits a follower had yet to replay at the last check.",
        |f| f.lag_commits,
    );

    out.family(
        "pgsplit_read_your_writes_reads_total",
        "counter",
        "Reads that had to see the client's own last write, by where they ran: a follower known to have replayed \
         it (caught_up), a follower asked first (confirmed), or the leader because none had replayed it in time.",
    );
    for pool in &status.pools {
        let counts = pool.read_your_writes;
        for (served, count) in [
            ("caught_up", counts.caught_up),
            ("confirmed", counts.confirmed),
            ("leader", counts.on_leader),
        ] {
            out.sample(
                "pgsplit_read_your_writes_reads_total",
                &[("pool", &pool.name), ("served", served)],
                count,
            );
        }
    }

    out.family(
        "pgsplit_instance_up",
        "gauge",
        "1 if the instance answered the last health check, else 0.",
    );
    for instance in &status.instances {
        out.sample(
            "pgsplit_instance_up",
            &[("instance", &instance.name), ("role", &instance.role)],
            u8::from(instance.healthy),
        );
    }
    out.text
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// A gauge family with one sample per follower.
    fn per_follower<D: Display>(
        &mut self,
        followers: &[&InstanceStatus],
        name: &str,
        help: &str,
        value: impl Fn(&InstanceStatus) -> D,
    ) {
        self.family(name, "gauge", help);
        for follower in followers {
            self.sample(name, &[("instance", &follower.name)], value(follower));
        }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_into(&mut self.text, value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// Label values escape backslash, double quote and line feed; everything else goes as it is (UTF-8).
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::status::Paused;

    fn status() -> Status {
        let mut leader = InstanceStatus::example("leader", None);
        leader.routed.insert("write".into(), 5);
        let mut f1 = InstanceStatus::example("f1", Some("default"));
        f1.healthy = false;
        (f1.lag_bytes, f1.lag_seconds, f1.lag_commits) = (2048, 0.25, 2);
        f1.routed.insert("read".into(), 7);
        Status {
            generation: 3,
            leader: "leader".into(),
            paused: Paused {
                writes: false,
                reads: false,
            },
            clients: 12,
            pinned_clients: 0,
            workers: Some(crate::admin::WorkersStatus {
                threads: 2,
                from_cpus: Some(4),
                sessions: vec![7, 5],
            }),
            instances: vec![leader, f1],
            pools: vec![crate::admin::PoolStatus {
                name: "default".into(),
                read_your_writes: crate::topology::FreshnessCounts {
                    caught_up: 4,
                    confirmed: 2,
                    on_leader: 1,
                },
            }],
            changeover: None,
            patroni: None,
        }
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let text = render(&status());
        for family in [
            "pgsplit_topology_generation",
            "pgsplit_client_connections",
            "pgsplit_workers",
            "pgsplit_worker_sessions",
            "pgsplit_server_connections",
            "pgsplit_server_checkout_waits_total",
            "pgsplit_server_connection_moves_total",
            "pgsplit_queries_total",
            "pgsplit_replication_lag_bytes",
            "pgsplit_replication_lag_seconds",
            "pgsplit_replication_lag_commits",
            "pgsplit_instance_up",
            "pgsplit_read_your_writes_reads_total",
        ] {
            let help = text.find(&format!("# HELP {family} ")).expect(family);
            let kind = text.find(&format!("# TYPE {family} ")).expect(family);
            let first = text.find(&format!("\n{family}")).expect(family);
            assert!(help < kind && kind < first, "{family} in\n{text}");
        }
        assert!(text.contains("# TYPE pgsplit_queries_total counter\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn samples_carry_the_worker_instance_pool_route_and_role_labels() {
        let text = render(&status());
        for line in [
            "pgsplit_topology_generation 3",
            "pgsplit_client_connections 12",
            "pgsplit_workers 2",
            "pgsplit_worker_sessions{worker=\"0\"} 7",
            "pgsplit_worker_sessions{worker=\"1\"} 5",
            "pgsplit_server_connections{instance=\"leader\",state=\"active\"} 3",
            "pgsplit_server_connections{instance=\"f1\",state=\"idle\"} 1",
            "pgsplit_queries_total{pool=\"leader\",instance=\"leader\",route=\"write\"} 5",
            "pgsplit_queries_total{pool=\"default\",instance=\"f1\",route=\"read\"} 7",
            "pgsplit_replication_lag_bytes{instance=\"f1\"} 2048",
            "pgsplit_replication_lag_seconds{instance=\"f1\"} 0.25",
            "pgsplit_replication_lag_commits{instance=\"f1\"} 2",
            "pgsplit_instance_up{instance=\"leader\",role=\"leader\"} 1",
            "pgsplit_instance_up{instance=\"f1\",role=\"follower\"} 0",
            "pgsplit_read_your_writes_reads_total{pool=\"default\",served=\"confirmed\"} 2",
            "pgsplit_read_your_writes_reads_total{pool=\"default\",served=\"leader\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(
            !text.contains("pgsplit_replication_lag_bytes{instance=\"leader\"}"),
            "the leader has no replication lag"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_into(&mut out, "a\\b\"c\nd");
        assert_eq!(out, r#"a\\b\"c\nd"#);
        let mut weird = status();
        weird.instances[0].name = "x\"y".into();
        assert!(render(&weird).contains("pgsplit_instance_up{instance=\"x\\\"y\",role=\"leader\"} 1"));
    }
}
