//! TLS for every outbound connection (Kusto, the outputs, Azure token endpoints): one small
//! [`TlsConfig`] read once at start-up and applied to each reqwest client the process builds
//! ([`TlsConfig::apply`]), or turned into a rustls configuration for the one connection reqwest does
//! not make, the OTLP/gRPC channel ([`TlsConfig::rustls_config`]). Both follow the same rules.
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

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

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
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

/// reqwest is built with `rustls-no-provider` and panics on its first TLS client unless a process-wide
/// crypto provider is installed. The one place that installs it (ring, the only provider compiled in):
/// `main` calls it at start-up, and every client builder here too, so library users (tests) need not.
/// Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TlsConfig {
    /// Applies the settings to a client builder for `peer`.
    pub fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
        peer: Peer,
    ) -> Result<reqwest::ClientBuilder, TlsError> {
        install_crypto_provider();
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
    pub(crate) fn azure_transport(&self) -> Result<azure_core::http::Transport, TlsError> {
        let client = self
            .apply(reqwest::Client::builder(), Peer::Service)?
            .build()
            .map_err(|e| TlsError::CaFile {
                path: self.ca_file.clone().unwrap_or_default(),
                detail: error_chain(&e),
            })?;
        Ok(azure_core::http::Transport::new(Arc::new(client)))
    }

    /// The same settings as a rustls client configuration, for connections reqwest does not make
    /// (the OTLP/gRPC channel): the system roots through rustls-platform-verifier (what reqwest
    /// uses) plus `--tls-ca-file`, the client certificate for outputs, or no verification at all.
    /// ALPN is left to the caller.
    pub(crate) fn rustls_config(&self, peer: Peer) -> Result<rustls::ClientConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = if self.insecure_skip_verify {
            Arc::new(AcceptAnyServerCert(provider.clone()))
        } else {
            let extra = match &self.ca_file {
                Some(path) => read_ca_ders(path)?,
                None => Vec::new(),
            };
            let verifier =
                rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
                    .map_err(|e| {
                    TlsError::Setup(format!("cannot load the trusted root certificates: {e}"))
                })?;
            Arc::new(verifier)
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match (peer, &self.client_cert) {
            (Peer::Output, Some(cc)) => {
                let bad = |detail: String| TlsError::ClientCert {
                    cert: cc.cert.clone(),
                    key: cc.key.clone(),
                    detail,
                };
                let chain =
                    read_pem_certs(&cc.cert).map_err(|e| bad(format!("the certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_file(&cc.key)
                    .map_err(|e| bad(format!("the key: {}", pem_error(&e))))?;
                // rustls names the mismatch (e.g. "key does not match certificate"), not the key.
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad(e.to_string()))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

/// `--tls-insecure-skip-verify` for rustls: any certificate is accepted, but the handshake
/// signatures are still checked (they prove the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The certificates of a PEM bundle file, or why there are none.
fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

fn read_ca_ders(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_pem_certs(path).map_err(|detail| TlsError::CaFile {
        path: path.to_owned(),
        detail,
    })
}

/// A PEM error without the file's bytes (a key file's content is a secret).
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "no PEM section of the expected kind".into(),
        Error::Io(io) => io.to_string(),
        _ => "malformed PEM".into(),
    }
}

fn read_ca_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, TlsError> {
    let bad = |detail: String| TlsError::CaFile {
        path: path.to_owned(),
        detail,
    };
    read_ca_ders(path)?
        .iter()
        .map(|der| {
            reqwest::Certificate::from_der(der)
                .map_err(|e| bad(format!("not a certificate: {}", error_chain(&e))))
        })
        .collect()
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
/// A source whose text the message already holds (ours often quote the OS error) is not repeated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
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

        // The rustls form (OTLP/gRPC) reads the same files with the same care.
        let config = TlsConfig {
            ca_file: Some(junk.clone()),
            client_cert: Some(ClientCert {
                cert: junk.clone(),
                key: junk.clone(),
            }),
            insecure_skip_verify: false,
        };
        let err = config.rustls_config(Peer::Service).unwrap_err().to_string();
        assert!(
            err.contains("--tls-ca-file") && err.contains("junk.pem"),
            "{err}"
        );
        assert!(!err.contains("TOPSECRET"), "{err}");
        let insecure = TlsConfig {
            ca_file: None,
            insecure_skip_verify: true,
            ..config
        };
        assert!(insecure.rustls_config(Peer::Service).is_ok());
        let err = insecure
            .rustls_config(Peer::Output)
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
