//! The control plane: the one place that changes the topology. A reload, an adopted promotion and a changeover
//! all end in a swap, one at a time (the apply lock), and each swap is announced on a watch channel so the proxy
//! can open or close pool endpoints and refresh credentials.
//!
//! It owns the pause [`Gate`] and keeps the record of the running or last orchestrated change ([`Board`]), for
//! `status`. It knows nothing of how a changeover goes: the orchestrator (`changeover`) drives it through a narrow
//! port — the gate, [`Control::exclusive`] (the apply lock, under which it may swap in a promotion),
//! [`Control::connect`] (pgsplit's own login, bounded) and the board. It never touches client traffic: sessions
//! read the topology snapshot and ask the gate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::conn::{Conn, own_login, statement_deadline};
use super::gate::Gate;
use super::progress::Board;
use super::{Instance, SharedTopology, Topology};
use crate::config::rewrite::RewriteError;
use crate::config::{Config, ConfigErrors};
use crate::tls::Tls;
use crate::topology::patroni::state::Shared as PatroniShared;

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
    /// TLS files that could not be loaded (the ones loaded before stay in use).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls_errors: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload (the proxy was started from a config value)")]
    NoFile,
    #[error("the new config is invalid; the old one keeps serving:\n{0}")]
    Invalid(ConfigErrors),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwapError {
    #[error("no follower named \"{0}\"")]
    UnknownFollower(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(transparent)]
    Swap(#[from] SwapError),
    #[error("swapped, but {path} was not updated: {source}")]
    Rewrite {
        path: PathBuf,
        /// Boxed: the error is rare and large, the Ok path is every adoption.
        #[source]
        source: Box<RewriteError>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {instance}: {reason}")]
    Failed { instance: String, reason: String },
    #[error("cannot connect to {instance}: no answer within {after:?}")]
    Timeout { instance: String, after: Duration },
}

pub struct Control {
    pub topology: SharedTopology,
    pub gate: Arc<Gate>,
    config_path: Option<PathBuf>,
    /// One topology change at a time: a changeover holds it from its first step to its last.
    apply: tokio::sync::Mutex<()>,
    swapped: watch::Sender<u64>,
    /// The running or last changeover: written by the orchestrator, read by status, aborts filed here.
    board: Board,
    /// Certificates of both sides: loaded again at every reload.
    tls: Arc<Tls>,
    /// With `[topology] source = "patroni"`: the follower's state (the file's config, Patroni's last answer).
    patroni: Option<Arc<PatroniShared>>,
}

/// The apply lock, held: the only way to swap in a promotion. Whoever holds it is the one topology change running.
pub struct Exclusive<'a> {
    control: &'a Control,
    _one_at_a_time: tokio::sync::MutexGuard<'a, ()>,
}

impl Exclusive<'_> {
    /// Swaps in the config with follower `name` as the leader; returns the new generation.
    pub fn swap_promoted(&self, name: &str) -> Result<u64, SwapError> {
        let current = self.control.topology.load_full();
        let next = current
            .config
            .promoted(name)
            .ok_or_else(|| SwapError::UnknownFollower(name.to_owned()))?;
        Ok(self.control.swap(next).generation)
    }
}

impl Control {
    pub fn new(topology: SharedTopology, tls: Arc<Tls>, config_path: Option<PathBuf>) -> Control {
        let (swapped, _) = watch::channel(topology.load().generation);
        let config = topology.load().config.clone();
        let patroni = config.patroni().map(|_| Arc::new(PatroniShared::new(&config)));
        Control {
            patroni,
            topology,
            gate: Arc::default(),
            config_path,
            apply: tokio::sync::Mutex::new(()),
            swapped,
            board: Board::default(),
            tls,
        }
    }

    /// The Patroni follower's state, when the members come from Patroni.
    pub fn patroni(&self) -> Option<&Arc<PatroniShared>> {
        self.patroni.as_ref()
    }

    pub fn config_path(&self) -> Option<&PathBuf> {
        self.config_path.as_ref()
    }

    /// Changes whenever a swap installs a new generation.
    pub fn swaps(&self) -> watch::Receiver<u64> {
        self.swapped.subscribe()
    }

    /// The running or last changeover's record, and its abort switch.
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Waits for the apply lock: no reload, adoption or other changeover runs until it is dropped.
    pub async fn exclusive(&self) -> Exclusive<'_> {
        Exclusive {
            control: self,
            _one_at_a_time: self.apply.lock().await,
        }
    }

    /// How long one statement of pgsplit's own may take (`health.timeout`, at least a second).
    pub fn deadline(&self) -> Duration {
        statement_deadline(self.topology.load().config.health.timeout)
    }

    /// Reads and validates the config file and swaps it in; an invalid file changes nothing. The file is read
    /// under the apply lock: a reload queued behind a changeover reads what the changeover wrote, not the file as
    /// it was before (which names the fenced old leader).
    pub async fn reload(&self) -> Result<SwapOutcome, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let _one_at_a_time = self.apply.lock().await;
        let mut config = Config::load(path).map_err(ReloadError::Invalid)?;
        // Certificates are read again even when the file did not change: they may have been replaced on disk.
        let tls_errors = self.tls.reload(&config).iter().map(ToString::to_string).collect();
        if let Some(patroni) = &self.patroni
            && config.patroni().is_some()
        {
            // The file names no members: they are Patroni's, as last seen, around the leader in use.
            patroni.set_base(&config);
            let current = self.topology.load().config.leader.clone();
            if let Some(derived) = patroni.derive(&current) {
                config = derived;
            }
        }
        Ok(SwapOutcome {
            tls_errors,
            ..self.swap(config)
        })
    }

    /// Installs a config derived from an HA engine's view (the Patroni follower), under the apply lock.
    pub async fn install(&self, config: Config) -> SwapOutcome {
        let _one_at_a_time = self.apply.lock().await;
        self.swap(config)
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
            tls_errors: Vec::new(),
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
        if !Arc::ptr_eq(&previous.leader, &next.leader) {
            // Each follower was judged against the old leader (its timeline above all): none serves reads until
            // the monitor has judged it against the new one.
            for follower in next.pools.iter().flat_map(|p| p.instances.iter()) {
                follower.health.set_usable(false);
                follower
                    .health
                    .set_reason(Some("not yet checked against the new leader"));
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

    /// A promotion seen from outside: swapped in and written back to the file, so that a later reload does not
    /// bring the old leader back.
    fn adopt(&self, exclusive: &Exclusive<'_>, name: &str) -> Result<(), AdoptError> {
        exclusive.swap_promoted(name)?;
        if let Some(path) = &self.config_path
            && let Err(source) = crate::config::rewrite::write_promotion(path, name)
        {
            return Err(AdoptError::Rewrite {
                path: path.clone(),
                source: Box::new(source),
            });
        }
        Ok(())
    }

    /// After a monitor round: adopts a follower promoted outside pgsplit (`routing.follow_promotions`).
    pub async fn follow_promotion(&self) {
        let Ok(guard) = self.apply.try_lock() else {
            return; // a reload or changeover is under way; the next round looks again
        };
        let exclusive = Exclusive {
            control: self,
            _one_at_a_time: guard,
        };
        let topology = self.topology.load_full();
        if !topology.config.routing.follow_promotions || topology.config.patroni().is_some() {
            // With Patroni, its follower adopts new leaders, once confirmed.
            return;
        }
        if let Some(name) = super::promotion::promoted(&topology) {
            tracing::warn!(new_leader = %name, old_leader = %topology.leader.name, "adopting a follower promoted outside pgsplit");
            if let Err(error) = self.adopt(&exclusive, &name) {
                tracing::error!(%error, "adopting the promoted follower");
            }
        }
    }

    /// A connection of pgsplit's own to `instance` (keepalives on, every statement bounded by
    /// [`Control::deadline`]), for the changeover's queries.
    pub async fn connect(&self, instance: &Instance) -> Result<Conn, ConnectError> {
        self.connect_to(&instance.name, &instance.host, instance.port).await
    }

    /// [`Control::connect`] to a server that need not be part of the topology (a leader Patroni names).
    pub async fn connect_to(&self, name: &str, host: &str, port: u16) -> Result<Conn, ConnectError> {
        let deadline = self.deadline();
        // The control role's password as the config says now: a reload that changed it applies here.
        let config = self.topology.load().config.clone();
        let login = own_login(&config, "pgsplit-control", deadline);
        let name = name.to_owned();
        let tls = self.tls.servers();
        match Conn::open(&login, host, port, &tls, &config, deadline, &name).await {
            Ok(conn) => Ok(conn),
            Err(crate::tls::postgres::OpenError::Timeout(after)) => {
                Err(ConnectError::Timeout { instance: name, after })
            }
            Err(error) => Err(ConnectError::Failed {
                instance: name,
                reason: error.to_string(),
            }),
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
    if old.proxy.workers.threads != new.proxy.workers.threads {
        differ.push("proxy.workers");
    }
    // Kept even when only the way it was chosen changed (a number written for "auto", a new CPU quota giving the
    // same count): the config describes the threads that run.
    new.proxy.workers = old.proxy.workers;
    let from_patroni = |c: &Config| c.patroni().is_some();
    if from_patroni(old) != from_patroni(new) {
        // Switching between the file and Patroni would change who names the leader mid-flight.
        differ.push("topology.source");
        new.topology = old.topology.clone();
        new.leader = old.leader.clone();
        new.follower_pools = old.follower_pools.clone();
        new.routing.read_pool = old.routing.read_pool.clone();
    }
    differ.into_iter().map(String::from).collect()
}
