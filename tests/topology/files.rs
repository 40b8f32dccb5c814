//! Config files for these tests: proxy.toml text for a cluster, written to a fresh directory.

use std::path::PathBuf;

use pgsplit::demo::cluster::LocalCluster;

/// proxy.toml for `cluster`: its leader, and its followers with `weights` as the pool "default".
pub fn config_text(cluster: &LocalCluster, weights: &[u32], extra: &str) -> String {
    let followers: Vec<String> = cluster
        .followers()
        .iter()
        .zip(weights)
        .map(|(f, w)| {
            format!(
                "  {{ name = \"{}\", host = \"127.0.0.1\", port = {}, weight = {w} }},",
                f.name, f.port
            )
        })
        .collect();
    format!(
        r#"# written by the topology tests
[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[server]
checkout_timeout = "5s"

[[users]]
name = "{user}"
password = "{password}"

[leader]
name = "leader"
host = "127.0.0.1"
port = {leader}
max_connections = 10

[[follower_pools]]
name = "default"   # reads go here
max_connections_per_instance = 10
instances = [
{followers}
]

[health]
interval = "100ms"
timeout = "2s"
{extra}
"#,
        user = cluster.app_user(),
        password = cluster.app_password(),
        leader = cluster.leader().port,
        followers = followers.join("\n"),
    )
}

/// A fresh directory holding `proxy.toml` with `text`; removed on drop.
pub struct ConfigDir {
    dir: PathBuf,
}

impl ConfigDir {
    pub fn new(text: &str) -> ConfigDir {
        let dir = std::env::temp_dir().join(format!("pgsplit-topology-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let config = ConfigDir { dir };
        config.write(text);
        config
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("proxy.toml")
    }

    /// Replaces the file the way editors do: a new file renamed over the old one.
    pub fn write(&self, text: &str) {
        let temp = self.dir.join(".proxy.toml.new");
        std::fs::write(&temp, text).expect("write config");
        std::fs::rename(&temp, self.path()).expect("rename config");
    }

    pub fn read(&self) -> String {
        std::fs::read_to_string(self.path()).expect("read config")
    }
}

impl Drop for ConfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    nanos ^ (NEXT.fetch_add(1, Ordering::Relaxed) << 32)
}
