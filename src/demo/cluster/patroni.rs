//! A throwaway Patroni-managed cluster on loopback, for the integration tests of SPEC §8: one etcd and N
//! PostgreSQL nodes, each run by its own Patroni, with HA loop settings fast enough for a test (`loop_wait` 1 s,
//! `ttl` 5 s) and `primary_start_timeout: 0`, so a crashed primary is failed over instead of restarted in place.
//! Owns the processes it starts (etcd and the Patronis, by their child handles) and its base dir; PostgreSQL is
//! started and stopped by Patroni, and stopped here (`pg_ctl -m immediate`) once the Patronis are gone.
//!
//! Layout under the base dir (the nodes' unix socket directory too): `<base>/etcd/` (its data, log and pid file)
//! and `<base>/<name>/` for names `n1`, `n2`, … (`data/`, `patroni.yml`, `patroni.log`, `patroni.pid`). The pid
//! files are for the [`Watchdog`](super::Watchdog), which kills what they name before stopping the servers.
//! Synchronous, like the rest of the harness; never used by the proxy.

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::host::{self, Toolbox};
use super::{ClusterError, StopMode, quote_ident, quote_literal};
use crate::topology::patroni::time::format_utc;
use crate::topology::patroni::view::ClusterView;

/// Bootstrap (initdb, then a base backup per replica) takes about 7 s on an idle 2-core machine.
pub const PATRONI_READY_TIMEOUT: Duration = Duration::from_secs(90);
/// One HTTP exchange with etcd or a Patroni REST API.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
/// Patroni's superuser and replication passwords (loopback only, thrown away with the cluster).
const SUPERUSER_PASSWORD: &str = "patroni-super";
const REPLICATION_PASSWORD: &str = "patroni-repl";

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniOptions {
    pub members: usize,
    /// Must be absent or empty; removed on stop. Default: a fresh dir under `std::env::temp_dir()`.
    pub base_dir: Option<PathBuf>,
    /// Patroni's `scope` (the cluster's name in etcd).
    pub scope: String,
    pub app_user: String,
    pub app_password: String,
    pub app_database: String,
    /// Patroni tags per member (`pgsplit_pool`, `noloadbalance`, …) as YAML scalars; missing entries: none.
    pub tags: Vec<Vec<(String, String)>>,
}

impl Default for PatroniOptions {
    fn default() -> Self {
        PatroniOptions {
            members: 3,
            base_dir: None,
            scope: "pgsplit-test".into(),
            app_user: "app".into(),
            app_password: "app".into(),
            app_database: "app".into(),
            tags: Vec::new(),
        }
    }
}

/// One PostgreSQL node and the Patroni that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniMember {
    pub name: String,
    /// PostgreSQL's port.
    pub port: u16,
    /// Patroni's REST API port.
    pub api_port: u16,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub patroni_log: PathBuf,
}

impl PatroniMember {
    /// `http://127.0.0.1:<api_port>`.
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The running postmaster's process id, if PostgreSQL is up.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// A running cluster; [`PatroniCluster::stop`] (or drop) ends every process it started and removes its base dir.
#[derive(Debug)]
pub struct PatroniCluster {
    tools: Toolbox,
    base_dir: PathBuf,
    etcd: Option<Child>,
    etcd_port: u16,
    members: Vec<PatroniMember>,
    /// Each member's Patroni, by index; None once stopped.
    patronis: Vec<Option<Child>>,
    app_user: String,
    app_password: String,
    app_database: String,
    stopped: bool,
}

impl PatroniCluster {
    /// Starts etcd and every member's Patroni, waits until one leader and every other member streams from it, and
    /// creates the app role and database (the role is also pgsplit's control login, with the demo's grants). On
    /// error, whatever was started is stopped and the base dir removed.
    pub fn start(options: PatroniOptions) -> Result<PatroniCluster, ClusterError> {
        if options.members == 0 {
            return Err(ClusterError::Options(
                "a Patroni cluster needs at least one member".into(),
            ));
        }
        let tools = Toolbox::locate()?;
        for program in ["patroni", "etcd"] {
            if which(program).is_none() {
                return Err(ClusterError::Options(format!(
                    "`{program}` is not installed: apt-get install -y --no-install-recommends patroni etcd-server"
                )));
            }
        }
        let base_dir = host::prepare_base_dir(&tools, options.base_dir.as_deref())?;
        let ports = host::free_ports(2 + 2 * options.members)?;
        let members = (0..options.members)
            .map(|i| {
                let name = format!("n{}", i + 1);
                let dir = base_dir.join(&name);
                PatroniMember {
                    port: ports[2 + 2 * i],
                    api_port: ports[3 + 2 * i],
                    data_dir: dir.join("data"),
                    socket_dir: base_dir.clone(),
                    patroni_log: dir.join("patroni.log"),
                    name,
                }
            })
            .collect::<Vec<_>>();
        // From here on, dropping `cluster` cleans up whatever got started.
        let mut cluster = PatroniCluster {
            patronis: Vec::new(),
            tools,
            etcd: None,
            etcd_port: ports[0],
            members,
            app_user: options.app_user.clone(),
            app_password: options.app_password.clone(),
            app_database: options.app_database.clone(),
            base_dir,
            stopped: false,
        };
        cluster.start_etcd(ports[1])?;
        for (i, member) in cluster.members.clone().iter().enumerate() {
            let tags = options.tags.get(i).map(Vec::as_slice).unwrap_or_default();
            cluster.start_patroni(member, &options.scope, tags)?;
        }
        cluster.wait_healthy(PATRONI_READY_TIMEOUT)?;
        cluster.create_app_role()?;
        Ok(cluster)
    }

    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    pub fn tools(&self) -> &Toolbox {
        &self.tools
    }

    pub fn members(&self) -> &[PatroniMember] {
        &self.members
    }

    pub fn member(&self, name: &str) -> Option<&PatroniMember> {
        self.members.iter().find(|m| m.name == name)
    }

    /// Every member's REST API, as pgsplit's `[topology] patroni` lists them.
    pub fn api_urls(&self) -> Vec<String> {
        self.members.iter().map(PatroniMember::api_url).collect()
    }

    pub fn app_user(&self) -> &str {
        &self.app_user
    }

    pub fn app_password(&self) -> &str {
        &self.app_password
    }

    pub fn app_database(&self) -> &str {
        &self.app_database
    }

    /// `postgres://app:app@127.0.0.1:<port>/app` for a member.
    pub fn app_url(&self, member: &PatroniMember) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.app_user, self.app_password, member.port, self.app_database
        )
    }

    /// `GET /cluster` from the first member whose API answers.
    pub fn view(&self) -> Result<ClusterView, ClusterError> {
        let mut last = String::from("no member");
        for member in &self.members {
            match http(member.api_port, "GET", "/cluster", None) {
                Ok((200, body)) => {
                    return ClusterView::parse(body.as_bytes()).map_err(|e| ClusterError::Options(e.to_string()));
                }
                Ok((status, body)) => last = format!("{}: {status} {body}", member.name),
                Err(error) => last = format!("{}: {error}", member.name),
            }
        }
        Err(ClusterError::Timeout {
            what: "a Patroni REST API answering /cluster".into(),
            waited: HTTP_TIMEOUT,
            last,
        })
    }

    /// The member Patroni names as the leader now.
    pub fn leader(&self) -> Result<&PatroniMember, ClusterError> {
        let view = self.view()?;
        let name = view.leader().map(|m| m.name.clone()).unwrap_or_default();
        self.member(&name)
            .ok_or_else(|| ClusterError::Options(format!("no leader in {view:?}")))
    }

    /// Polls until Patroni names one leader that PostgreSQL confirms (not in recovery), every other member runs as
    /// a replica with no lag, and each of them streams from the leader — the state every test starts from.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), ClusterError> {
        super::poll(
            "one Patroni leader and every other member streaming from it",
            timeout,
            || {
                let view = match self.view() {
                    Ok(view) => view,
                    Err(error) => return Ok(Err(error.to_string())),
                };
                let Some(leader) = view.leader().filter(|l| l.state == "running") else {
                    return Ok(Err(format!("no running leader: {view:?}")));
                };
                let replicas_ready = view.members.len() == self.members.len()
                    && view.members.iter().filter(|m| !m.is_leader()).all(|m| {
                        m.state == "running" && m.lag == Some(serde_json::json!(0)) && m.timeline == leader.timeline
                    });
                if !replicas_ready {
                    return Ok(Err(format!("replicas not ready: {view:?}")));
                }
                let Some(leader) = self.member(&leader.name) else {
                    return Ok(Err(format!("unknown leader {}", leader.name)));
                };
                let sql = "SELECT pg_is_in_recovery()::text || ':' || \
                       (SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming')";
                let expected = format!("false:{}", self.members.len() - 1);
                Ok(match self.psql_on(leader, "postgres", sql) {
                    Ok(seen) if seen == expected => Ok(()),
                    Ok(seen) => Err(format!("{}: recovery:streaming = {seen}", leader.name)),
                    Err(error) => Err(error.to_string()),
                })
            },
        )
    }

    /// Every replica has replayed the leader's current WAL position.
    pub fn wait_replayed(&self, timeout: Duration) -> Result<(), ClusterError> {
        let leader = self.leader()?.clone();
        let lsn = self.psql_on(&leader, "postgres", "SELECT pg_current_wal_lsn()")?;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        let deadline = Instant::now() + timeout;
        for member in self.members.iter().filter(|m| m.name != leader.name) {
            super::poll(
                &format!("{} replayed {lsn}", member.name),
                deadline.saturating_duration_since(Instant::now()),
                || {
                    Ok(match self.psql_on(member, "postgres", &sql)?.as_str() {
                        "t" => Ok(()),
                        seen => Err(seen.to_owned()),
                    })
                },
            )?;
        }
        Ok(())
    }

    /// Runs `sql` with psql over the unix socket as superuser `postgres` on the app database.
    pub fn psql(&self, member: &PatroniMember, sql: &str) -> Result<String, ClusterError> {
        self.psql_on(member, &self.app_database, sql)
    }

    pub fn psql_on(&self, member: &PatroniMember, database: &str, sql: &str) -> Result<String, ClusterError> {
        let mut cmd = self.tools.command("psql");
        cmd.args(["-X", "-Atq", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-f", "-", "-h"])
            .arg(&member.socket_dir)
            .args(["-p", &member.port.to_string(), "-d", database])
            .env("PGCONNECT_TIMEOUT", "5");
        let out = host::run(cmd, Some(sql)).map_err(|f| ClusterError::Command {
            instance: member.name.clone(),
            command: f.command,
            status: f.status,
            stderr: f.stderr,
            log_tail: host::log_tail(&member.patroni_log, 10),
        })?;
        Ok(out.strip_suffix('\n').unwrap_or(&out).to_owned())
    }

    /// Asks Patroni (through `via`'s REST API) for a switchover from `leader` to `candidate`, at `at` or at once;
    /// returns Patroni's status code and text.
    pub fn switchover(
        &self,
        via: &PatroniMember,
        leader: &str,
        candidate: &str,
        at: Option<SystemTime>,
    ) -> Result<(u16, String), ClusterError> {
        let mut body = format!("{{\"leader\": \"{leader}\", \"candidate\": \"{candidate}\"");
        if let Some(at) = at {
            let _ = write!(body, ", \"scheduled_at\": \"{}\"", format_utc(at));
        }
        body.push('}');
        http(via.api_port, "POST", "/switchover", Some(&body)).map_err(|source| ClusterError::Io {
            what: format!("POST /switchover to {}", via.name),
            source,
        })
    }

    /// SIGKILLs a member's postmaster (as a crash would); Patroni notices and, with `primary_start_timeout: 0`,
    /// fails over instead of restarting it in place. Returns the PID killed.
    pub fn kill_postmaster(&self, member: &PatroniMember) -> Result<u32, ClusterError> {
        let pid = member
            .postmaster_pid()
            .ok_or_else(|| ClusterError::Options(format!("{} has no running postmaster", member.name)))?;
        let target = libc::pid_t::try_from(pid).map_err(|_| ClusterError::Options(format!("pid {pid}")))?;
        // SAFETY: kill(2) with a PID read from the member's own postmaster.pid and a valid signal number.
        if unsafe { libc::kill(target, libc::SIGKILL) } != 0 {
            return Err(ClusterError::Io {
                what: format!("killing {}'s postmaster {pid}", member.name),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(pid)
    }

    /// Kills every Patroni (so none restarts a server), stops every PostgreSQL immediately, stops etcd and removes
    /// the base dir. Idempotent; also run on drop. Returns the first failure after doing all it can.
    pub fn stop(&mut self) -> Result<(), ClusterError> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        for child in self.patronis.iter_mut().filter_map(Option::take) {
            end(child);
        }
        let mut first_error = None;
        for member in &self.members {
            if !member.data_dir.join("postmaster.pid").exists() {
                continue;
            }
            let mut cmd = self.tools.command("pg_ctl");
            cmd.args(["-w", "-t", "30", "-m", StopMode::Immediate.as_str(), "stop", "-D"])
                .arg(&member.data_dir);
            if let Err(failure) = host::run(cmd, None) {
                first_error.get_or_insert(ClusterError::Command {
                    instance: member.name.clone(),
                    command: failure.command,
                    status: failure.status,
                    stderr: failure.stderr,
                    log_tail: String::new(),
                });
            }
        }
        if let Some(etcd) = self.etcd.take() {
            end(etcd);
        }
        if let Err(source) = fs::remove_dir_all(&self.base_dir)
            && source.kind() != std::io::ErrorKind::NotFound
        {
            let what = format!("removing {}", self.base_dir.display());
            first_error.get_or_insert(ClusterError::Io { what, source });
        }
        first_error.map_or(Ok(()), Err)
    }

    fn start_etcd(&mut self, peer_port: u16) -> Result<(), ClusterError> {
        let dir = self.base_dir.join("etcd");
        self.make_dir(&dir)?;
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new("etcd");
        self.tools.prepare(&mut cmd);
        cmd.args(["--name", "etcd0", "--data-dir"])
            .arg(dir.join("member-data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("etcd0={peer}")])
            // Loopback: a fast heartbeat lets Patroni's short leases (ttl 5 s) work.
            .args([
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--log-level",
                "warn",
            ]);
        let child = self.spawn_logged(cmd, &dir.join("etcd.log"), &dir.join("etcd.pid"), "etcd")?;
        self.etcd = Some(child);
        super::poll("etcd answering /health", Duration::from_secs(30), || {
            if let Some(etcd) = self.etcd.as_mut()
                && let Ok(Some(status)) = etcd.try_wait()
            {
                let log = host::log_tail(&dir.join("etcd.log"), 20);
                return Err(ClusterError::Options(format!("etcd exited ({status}):\n{log}")));
            }
            Ok(match http(self.etcd_port, "GET", "/health", None) {
                Ok((200, body)) if body.contains("true") => Ok(()),
                Ok((status, body)) => Err(format!("{status} {body}")),
                Err(error) => Err(error.to_string()),
            })
        })
    }

    fn start_patroni(
        &mut self,
        member: &PatroniMember,
        scope: &str,
        tags: &[(String, String)],
    ) -> Result<(), ClusterError> {
        let dir = member.data_dir.parent().unwrap_or(&self.base_dir).to_path_buf();
        self.make_dir(&dir)?;
        let config = dir.join("patroni.yml");
        let text = patroni_yaml(member, scope, self.etcd_port, tags, &dir, &self.tools);
        fs::write(&config, text).map_err(|source| ClusterError::Io {
            what: format!("writing {}", config.display()),
            source,
        })?;
        self.tools.chown(&config)?;
        let mut cmd = Command::new("patroni");
        self.tools.prepare(&mut cmd);
        cmd.arg(&config);
        let child = self.spawn_logged(cmd, &member.patroni_log, &dir.join("patroni.pid"), "patroni")?;
        self.patronis.push(Some(child));
        Ok(())
    }

    /// Starts a long-running program with its output in `log` and its PID in `pid_file` (for the watchdog).
    fn spawn_logged(&self, mut cmd: Command, log: &Path, pid_file: &Path, what: &str) -> Result<Child, ClusterError> {
        let io = |what: String| move |source| ClusterError::Io { what, source };
        let out = fs::File::create(log).map_err(io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(io(format!("opening {}", log.display())))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(io(format!("starting {what}")))?;
        fs::write(pid_file, child.id().to_string()).map_err(io(format!("writing {}", pid_file.display())))?;
        Ok(child)
    }

    fn make_dir(&self, dir: &Path) -> Result<(), ClusterError> {
        fs::create_dir(dir).map_err(|source| ClusterError::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        self.tools.chown(dir)
    }

    fn create_app_role(&self) -> Result<(), ClusterError> {
        let leader = self.leader()?.clone();
        let user = quote_ident(&self.app_user);
        let setup = format!(
            "SET password_encryption = 'scram-sha-256';\n\
             CREATE ROLE {user} LOGIN PASSWORD {};\n\
             CREATE DATABASE {} OWNER {user};\n\
             GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer), pg_reload_conf() TO {user};\n\
             GRANT pg_signal_backend, pg_read_all_settings, pg_read_all_stats TO {user};\n",
            quote_literal(&self.app_password),
            quote_ident(&self.app_database),
        );
        self.psql_on(&leader, "postgres", &setup)?;
        self.wait_replayed(Duration::from_secs(30))
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Kills a child process by its handle and reaps it.
fn end(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// One member's patroni.yml.
fn patroni_yaml(
    member: &PatroniMember,
    scope: &str,
    etcd_port: u16,
    tags: &[(String, String)],
    dir: &Path,
    tools: &Toolbox,
) -> String {
    let path = |p: &Path| quote_literal(&p.to_string_lossy());
    let mut tag_lines = String::new();
    for (name, value) in tags {
        let _ = writeln!(tag_lines, "  {name}: {value}");
    }
    if tag_lines.is_empty() {
        tag_lines.push_str("  {}\n");
    }
    format!(
        "scope: {scope}\n\
         name: {name}\n\
         log:\n  level: INFO\n\
         restapi:\n  listen: 127.0.0.1:{api}\n  connect_address: 127.0.0.1:{api}\n\
         etcd3:\n  hosts: 127.0.0.1:{etcd_port}\n\
         bootstrap:\n\
         \x20 dcs:\n\
         \x20   ttl: 5\n\
         \x20   loop_wait: 1\n\
         \x20   retry_timeout: 2\n\
         \x20   maximum_lag_on_failover: 16777216\n\
         \x20   primary_start_timeout: 0\n\
         \x20   postgresql:\n\
         \x20     use_pg_rewind: true\n\
         \x20     use_slots: true\n\
         \x20     parameters:\n\
         \x20       wal_log_hints: 'on'\n\
         \x20       fsync: 'off'\n\
         \x20       max_connections: 100\n\
         \x20       wal_keep_size: 256MB\n\
         \x20       hot_standby_feedback: 'on'\n\
         \x20       shared_buffers: 32MB\n\
         \x20       password_encryption: scram-sha-256\n\
         \x20 initdb:\n  - encoding: UTF8\n  - locale: C\n\
         postgresql:\n\
         \x20 listen: 127.0.0.1:{port}\n\
         \x20 connect_address: 127.0.0.1:{port}\n\
         \x20 data_dir: {data}\n\
         \x20 bin_dir: {bin}\n\
         \x20 pgpass: {pgpass}\n\
         \x20 authentication:\n\
         \x20   superuser: {{username: postgres, password: {SUPERUSER_PASSWORD}}}\n\
         \x20   replication: {{username: replicator, password: {REPLICATION_PASSWORD}}}\n\
         \x20   rewind: {{username: postgres, password: {SUPERUSER_PASSWORD}}}\n\
         \x20 parameters:\n\
         \x20   unix_socket_directories: {socket}\n\
         \x20 pg_hba:\n\
         \x20 - local all all trust\n\
         \x20 - host all all 127.0.0.1/32 scram-sha-256\n\
         \x20 - host replication replicator 127.0.0.1/32 scram-sha-256\n\
         tags:\n{tag_lines}",
        name = member.name,
        api = member.api_port,
        port = member.port,
        data = path(&member.data_dir),
        bin = path(tools.bin_dir()),
        pgpass = path(&dir.join("pgpass")),
        socket = path(&member.socket_dir),
    )
}

/// One HTTP/1.1 exchange on a fresh loopback connection (`Connection: close`): status code and body. Enough for
/// etcd's `/health` and Patroni's REST API, which answer with a length or close the connection.
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> std::io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not HTTP: {answer:?}"));
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaml_names_the_members_ports_and_tags() {
        let member = PatroniMember {
            name: "n2".into(),
            port: 29002,
            api_port: 28002,
            data_dir: "/tmp/b/n2/data".into(),
            socket_dir: "/tmp/b".into(),
            patroni_log: "/tmp/b/n2/patroni.log".into(),
        };
        let tools = Toolbox::locate();
        let Ok(tools) = tools else { return }; // no server binaries here: nothing to render against
        let yaml = patroni_yaml(
            &member,
            "s",
            23790,
            &[("pgsplit_pool".into(), "analytics".into())],
            Path::new("/tmp/b/n2"),
            &tools,
        );
        assert!(yaml.contains("name: n2\n"), "{yaml}");
        assert!(yaml.contains("listen: 127.0.0.1:28002\n"), "{yaml}");
        assert!(yaml.contains("listen: 127.0.0.1:29002\n"), "{yaml}");
        assert!(yaml.contains("hosts: 127.0.0.1:23790\n"), "{yaml}");
        assert!(yaml.contains("primary_start_timeout: 0\n"), "{yaml}");
        assert!(yaml.ends_with("tags:\n  pgsplit_pool: analytics\n"), "{yaml}");
    }
}
