//! A cluster's TLS, when asked for (tests): the leader's certificate and key written into its data dir, `ssl = on`,
//! and `hostssl` rules for every TCP login, so a client without TLS is refused as a server configured that way
//! refuses it. Extra rules go first (e.g. a role that must log in with a cleartext password).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::ClusterError;
use super::host::Toolbox;

/// The leader's certificate and key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Settings appended to postgresql.conf (after the files are written).
pub(super) fn enable(
    tools: &Toolbox,
    data_dir: &Path,
    certificate: &ServerCertificate,
) -> Result<String, ClusterError> {
    for (name, text) in [
        ("server.crt", &certificate.cert_pem),
        ("server.key", &certificate.key_pem),
    ] {
        let path = data_dir.join(name);
        let io = |source| ClusterError::Io {
            what: format!("writing {}", path.display()),
            source,
        };
        fs::write(&path, text).map_err(io)?;
        // PostgreSQL refuses a key others may read.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(io)?;
        tools.chown(&path)?;
    }
    Ok("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n".to_owned())
}

/// pg_hba.conf: local and replication as usual; `extra` rules, then SCRAM over TLS only when `ssl`.
pub(super) fn hba(ssl: bool, extra: &[String]) -> String {
    let mut text =
        String::from("local all all trust\nlocal replication all trust\nhost replication all 127.0.0.1/32 trust\n");
    for rule in extra {
        text.push_str(rule);
        text.push('\n');
    }
    text.push_str(if ssl {
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
    } else {
        "host all all 127.0.0.1/32 scram-sha-256\n"
    });
    text
}
