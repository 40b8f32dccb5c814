//! Certificates, keys and CA bundles read from PEM files, with errors that name the file and say what is wrong
//! with it. Reads files; keeps nothing.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS file that cannot be used: which, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct TlsFileError {
    pub path: PathBuf,
    pub reason: String,
}

impl TlsFileError {
    pub fn new(path: &Path, reason: impl std::fmt::Display) -> TlsFileError {
        TlsFileError {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Every certificate in a PEM file, in order (a chain: the end entity first); at least one.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsFileError::new(path, describe(error)))?;
    if certs.is_empty() {
        return Err(TlsFileError::new(
            path,
            "no PEM certificate (BEGIN CERTIFICATE) in the file",
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| TlsFileError::new(path, describe(error)))
}

fn describe(error: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match error {
        Error::Io(io) => format!("cannot read it: {io}"),
        Error::NoItemsFound => "no PEM item of the expected kind in the file".to_owned(),
        other => format!("not valid PEM: {other}"),
    }
}
