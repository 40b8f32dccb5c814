//! The control plane: the one place that changes the topology. A reload, an adopted promotion and a changeover
//! all end in [`Control::swap`], one at a time (the apply lock), and each swap is announced on a watch channel so
//! the proxy can open or close pool endpoints and refresh credentials.
//!
//! It also owns the pause [`Gate`] and the progress of the running or last changeover, for `status`. It never
//! touches client traffic: sessions read the topology snapshot and ask the gate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::changeover::{self, Progress, PromoteRequest};
use super::gate::Gate;
use super::monitor::{Conn, error_chain};
use super::{Instance, SharedTopology, Topology};
use crate::config::{Config, ConfigErrors};

/// What a swap changed, for the log and the admin API's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SwapOutcome {
    /// The generation now in use (unchanged when nothing changed).
    pub generation: u64,
    pub changed: bool,
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Keys that differ in the new config but only take effect on a restart; their old values stay.
    pub needs_restart: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload (the proxy was started from a config value)")]
    NoFile,
    #[error("the new config is invalid; the old one keeps serving:\n{0}")]
    Invalid(ConfigErrors),
}

pub struct Control {
    pub topology: SharedTopology,
    pub gate: Arc<Gate>,
    config_path: Option<PathBuf>,
    /// One topology change at a time: a changeover holds it from its first step to its last.
    apply: tokio::sync::Mutex<()>,
    swapped: watch::Sender<u64>,
    /// The running or last changeover.
    changeover: Mutex<Option<Progress>>,
    /// Login for pgsplit's own queries (fencing, promoting): the first user, database `postgres`.
    login: tokio_postgres::Config,
}

impl Control {
    pub fn new(topology: SharedTopology, config_path: Option<PathBuf>) -> Control {
        let current = topology.load();
        let user = &current.config.users[0];
        let mut login = tokio_postgres::Config::new();
        login
            .user(&user.name)
            .password(&user.password)
            .dbname("postgres")
            .application_name("pgsplit-control")
            .connect_timeout(current.config.health.timeout);
        let (swapped, _) = watch::channel(current.generation);
        drop(current);
        Control {
            topology,
            gate: Arc::default(),
            config_path,
            apply: tokio::sync::Mutex::new(()),
            swapped,
            changeover: Mutex::new(None),
            login,
        }
    }

    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }

    /// Changes whenever a swap installs a new generation.
    pub fn swaps(&self) -> watch::Receiver<u64> {
        self.swapped.subscribe()
    }

    /// Reads and validates the config file and swaps it in; an invalid file changes nothing.
    pub async fn reload(&self) -> Result<SwapOutcome, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let config = Config::load(path).map_err(ReloadError::Invalid)?;
        let _one_at_a_time = self.apply.lock().await;
        Ok(self.swap(config))
    }

    /// Installs `config` (the caller holds the apply lock): instances kept by name and address keep their
    /// connections and take new limits and weights at once; those left out are retired.
    fn swap(&self, mut config: Config) -> SwapOutcome {
        let previous = self.topology.load_full();
        let needs_restart = keep_restart_only(&previous.config, &mut config);
        for key in &needs_restart {
            tracing::warn!(
                key,
                "changed in the config file, but takes effect only on a restart; old value kept"
            );
        }
        if *previous.config == config {
            return SwapOutcome {
                generation: previous.generation,
                needs_restart,
                ..SwapOutcome::default()
            };
        }
        let next = Arc::new(Topology::rebuild(&config, Some(&previous)));
        let gone = previous.left_out_of(&next);
        let names = |instances: &[Arc<Instance>]| instances.iter().map(|i| i.name.to_string()).collect();
        let outcome = SwapOutcome {
            generation: next.generation,
            changed: true,
            added: names(&next.left_out_of(&previous)),
            removed: names(&gone),
            needs_restart,
        };
        for instance in next.instances() {
            if previous
                .role_of(instance)
                .is_some_and(|role| Some(role) != next.role_of(instance))
            {
                // Its cached login parameters say `in_hot_standby` as it was.
                instance.pool.forget_server_params();
            }
        }
        self.topology.store(next.clone());
        for instance in gone {
            instance.retire();
        }
        tracing::info!(
            generation = outcome.generation,
            leader = %next.leader.name,
            added = ?outcome.added,
            removed = ?outcome.removed,
            "topology swapped"
        );
        self.swapped.send_replace(next.generation);
        outcome
    }

    /// The running or last changeover.
    pub fn changeover(&self) -> Option<Progress> {
        self.progress().clone()
    }

    pub(super) fn progress(&self) -> std::sync::MutexGuard<'_, Option<Progress>> {
        self.changeover.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an orchestrated changeover in the background; its steps show in [`Control::changeover`]. Refused
    /// while another runs.
    pub fn start_promote(self: &Arc<Self>, request: PromoteRequest) -> Result<(), changeover::Refused> {
        {
            let mut progress = self.progress();
            if progress.as_ref().is_some_and(Progress::is_running) {
                return Err(changeover::Refused::Running);
            }
            *progress = Some(Progress::new(&request.instance));
        }
        let control = self.clone();
        tokio::spawn(async move { control.promote(request).await });
        Ok(())
    }

    /// Runs an orchestrated changeover to completion (SPEC §6) and returns its record.
    pub async fn promote(&self, request: PromoteRequest) -> Progress {
        let _one_at_a_time = self.apply.lock().await;
        // Started by `start_promote` (whose record is in place) or called directly (a fresh record).
        {
            let mut progress = self.progress();
            if progress
                .as_ref()
                .is_none_or(|p| p.target != request.instance || !p.is_running())
            {
                *progress = Some(Progress::new(&request.instance));
            }
        }
        changeover::run(self, &request).await;
        self.changeover().expect("set above")
    }

    /// Swaps in the config with follower `name` as the leader (the caller holds the apply lock); returns the new
    /// generation.
    pub(super) fn swap_promoted(&self, name: &str) -> Result<u64, String> {
        let current = self.topology.load_full();
        let next = current
            .config
            .promoted(name)
            .ok_or_else(|| format!("no follower named \"{name}\""))?;
        Ok(self.swap(next).generation)
    }

    /// A promotion seen from outside: swapped in (the caller holds the apply lock) and written back to the file,
    /// so that a later reload does not bring the old leader back.
    fn adopt(&self, name: &str) -> Result<(), String> {
        self.swap_promoted(name)?;
        if let Some(path) = &self.config_path
            && let Err(error) = crate::config::rewrite::write_promotion(path, name)
        {
            tracing::error!(%error, path = %path.display(), "the new leader is in use, but proxy.toml was not updated");
            return Err(format!("swapped, but proxy.toml was not updated: {error}"));
        }
        Ok(())
    }

    /// After a monitor round: adopts a follower promoted outside pgsplit (`routing.follow_promotions`).
    pub async fn follow_promotion(&self) {
        let Ok(_one_at_a_time) = self.apply.try_lock() else {
            return; // a reload or changeover is under way; the next round looks again
        };
        let topology = self.topology.load_full();
        if !topology.config.routing.follow_promotions {
            return;
        }
        if let Some(name) = super::promotion::promoted(&topology) {
            tracing::warn!(new_leader = %name, old_leader = %topology.leader.name, "adopting a follower promoted outside pgsplit");
            if let Err(error) = self.adopt(&name) {
                tracing::error!(error, "adopting the promoted follower");
            }
        }
    }

    /// A connection of pgsplit's own to an instance, for the changeover's queries.
    pub(super) async fn connect(&self, host: &str, port: u16, name: &str) -> Result<Conn, String> {
        let mut login = self.login.clone();
        login.host(host).port(port);
        let timeout = self.topology.load().config.health.timeout;
        match tokio::time::timeout(timeout.max(Duration::from_secs(1)), Conn::open(&login, name)).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(error)) => Err(format!("cannot connect to {name}: {}", error_chain(&error))),
            Err(_) => Err(format!("cannot connect to {name}: no answer within {timeout:?}")),
        }
    }
}

/// Copies the keys that need a restart from `old` into `new`, returning those that differed.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<String> {
    let mut differ = Vec::new();
    if old.proxy.listen != new.proxy.listen {
        differ.push("proxy.listen");
        new.proxy.listen = old.proxy.listen;
    }
    if old.proxy.admin_listen != new.proxy.admin_listen {
        differ.push("proxy.admin_listen");
        new.proxy.admin_listen = old.proxy.admin_listen;
    }
    if old.proxy.pool_mode != new.proxy.pool_mode {
        differ.push("proxy.pool_mode");
        new.proxy.pool_mode = old.proxy.pool_mode;
    }
    if old.proxy.workers != new.proxy.workers {
        differ.push("proxy.workers");
        new.proxy.workers = old.proxy.workers;
    }
    if old.proxy.tls != new.proxy.tls {
        differ.push("proxy.tls");
        new.proxy.tls = old.proxy.tls.clone();
    }
    differ.into_iter().map(String::from).collect()
}
