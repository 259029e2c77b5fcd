//! TLS for every outbound connection (Kusto, the outputs, Azure token endpoints): one small
//! [`TlsConfig`] read once at start-up and applied to each reqwest client the process builds.
//!
//! Invariants:
//! - Server certificates are verified against the system roots (rustls-platform-verifier) by default;
//!   `--tls-ca-file` *adds* a private CA bundle, it never replaces the system roots.
//! - A client certificate (mutual TLS) is presented to the outputs only, never to Kusto or to token
//!   endpoints, which do not ask for one.
//! - `--tls-insecure-skip-verify` turns verification off everywhere; the wiring logs a warning at
//!   start-up and sets the `adxexporter_tls_insecure_skip_verify` gauge, so it cannot go unnoticed.
//! - Files are read when a client is built; a bad file is an error naming the flag and the path, never
//!   the file's content (a key is a secret).

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS settings shared by all outbound clients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// Extra trusted CA certificates (PEM bundle), on top of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS on the outputs.
    pub client_cert: Option<ClientCert>,
    /// Accept any server certificate (testing only).
    pub insecure_skip_verify: bool,
}

/// A PEM certificate chain and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Which kind of connection a client is for: only outputs present a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Output,
    /// Kusto and Azure token endpoints.
    Service,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-ca-file {path}: {detail}")]
    CaFile { path: PathBuf, detail: String },
    #[error("--tls-client-cert {cert} / --tls-client-key {key}: {detail}")]
    ClientCert {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
}

impl TlsConfig {
    /// Applies the settings to a client builder for `peer`.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
        peer: Peer,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        // reqwest is built with `rustls-no-provider`: the ring provider must be installed first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        if let Some(path) = &self.ca_file {
            builder = builder.tls_certs_merge(read_ca_bundle(path)?);
        }
        if let (Peer::Output, Some(cc)) = (peer, &self.client_cert) {
            builder = builder.identity(read_identity(cc)?);
        }
        if self.insecure_skip_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }

    /// An HTTP transport for `azure_identity` credentials, so token endpoints get the same CA bundle
    /// and verification settings as everything else.
    pub fn azure_transport(&self) -> Result<azure_core::http::Transport, TlsError> {
        let client = self
            .apply(reqwest::Client::builder(), Peer::Service)?
            .build()
            .map_err(|e| TlsError::CaFile {
                path: self.ca_file.clone().unwrap_or_default(),
                detail: error_chain(&e),
            })?;
        Ok(azure_core::http::Transport::new(Arc::new(client)))
    }
}

fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let bad = |detail: String| TlsError::CaFile {
        path: path.to_owned(),
        detail,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("not a PEM certificate bundle: {}", error_chain(&e))))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

fn read_identity(cc: &ClientCert) -> Result<reqwest::Identity, TlsError> {
    let bad = |detail: String| TlsError::ClientCert {
        cert: cc.cert.clone(),
        key: cc.key.clone(),
        detail,
    };
    let mut pem = std::fs::read(&cc.key).map_err(|e| bad(format!("cannot read the key: {e}")))?;
    pem.push(b'\n');
    pem.extend(
        std::fs::read(&cc.cert).map_err(|e| bad(format!("cannot read the certificate: {e}")))?,
    );
    // reqwest's message names what is missing ("private key", "certificate"), not the bytes.
    reqwest::Identity::from_pem(&pem).map_err(|e| {
        bad(format!(
            "expected a PEM certificate chain and a PEM private key: {}",
            error_chain(&e)
        ))
    })
}

/// `e` and its sources, joined: reqwest's top-level message alone is often just "builder error".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_named_not_dumped() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "TOPSECRET-not-a-cert").unwrap();
        let config = TlsConfig {
            ca_file: Some(junk.clone()),
            ..TlsConfig::default()
        };
        let err = config
            .apply(reqwest::Client::builder(), Peer::Service)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tls-ca-file") && err.contains("junk.pem"),
            "{err}"
        );
        assert!(!err.contains("TOPSECRET"), "{err}");

        let config = TlsConfig {
            client_cert: Some(ClientCert {
                cert: junk.clone(),
                key: junk.clone(),
            }),
            ..TlsConfig::default()
        };
        // Services never get the client certificate, so its files are not even read for them.
        assert!(
            config
                .apply(reqwest::Client::builder(), Peer::Service)
                .is_ok()
        );
        let err = config
            .apply(reqwest::Client::builder(), Peer::Output)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-client-key"), "{err}");
        assert!(!err.contains("TOPSECRET"), "{err}");

        let missing = TlsConfig {
            ca_file: Some(dir.path().join("nope.pem")),
            ..TlsConfig::default()
        };
        let err = missing
            .apply(reqwest::Client::builder(), Peer::Service)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
