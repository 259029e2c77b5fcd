//! Shared by the security tests: a test CA made with `rcgen` in the test (server and client
//! certificates for `localhost`/`127.0.0.1`), and a recording HTTP(S) server that enforces what a
//! test asks for (a handler decides each answer from the request it received). TLS is real
//! (rustls, optionally requiring a client certificate from the CA); only the receiver logic is fake,
//! because no real receiver checks bearer tokens and arbitrary headers. Remote-write bodies are
//! decoded with the real wire format (snappy block + prompb).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use adxexporter::prompb::WriteRequest;

/// A certificate and its key, as PEM files and DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A throwaway certificate authority.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/NAME.pem`.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    fn leaf(&self, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Leaf {
        self.leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate for mutual TLS.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(vec![name.into()], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// TLS on the server side: its certificate, and the CA client certificates must come from (mTLS).
pub struct ServerTls<'a> {
    pub leaf: &'a Leaf,
    pub client_ca: Option<&'a TestCa>,
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub target: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as a remote-write `WriteRequest` (snappy block + protobuf).
    pub fn write_request(&self) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&self.body)
            .expect("a snappy block body");
        WriteRequest::decode(raw.as_slice()).expect("a prompb WriteRequest")
    }
}

/// Decides the answer (status, body) to one request.
pub type Handler = Arc<dyn Fn(&Recorded) -> (u16, String) + Send + Sync>;

/// A loopback HTTP or HTTPS server recording every request it answered and every failed handshake.
pub struct Server {
    pub addr: SocketAddr,
    tls: bool,
    records: Arc<Mutex<Vec<Recorded>>>,
    handshake_failures: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// Starts on a free port; must be called inside a tokio runtime, which then runs it.
    pub async fn start(tls: Option<ServerTls<'_>>, handler: Handler) -> Server {
        adxexporter::tls::install_crypto_provider();
        let acceptor = tls.map(|t| tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&t))));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let records = Arc::new(Mutex::new(Vec::new()));
        let handshake_failures = Arc::new(Mutex::new(Vec::new()));
        let is_tls = acceptor.is_some();
        let (rec, fails) = (records.clone(), handshake_failures.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, rec, fails, handler) = (
                    acceptor.clone(),
                    rec.clone(),
                    fails.clone(),
                    handler.clone(),
                );
                tokio::spawn(async move {
                    match acceptor {
                        None => serve(TokioIo::new(tcp), rec, handler).await,
                        Some(a) => match a.accept(tcp).await {
                            Ok(stream) => serve(TokioIo::new(stream), rec, handler).await,
                            Err(e) => fails.lock().unwrap().push(e.to_string()),
                        },
                    }
                });
            }
        });
        Server {
            addr,
            tls: is_tls,
            records,
            handshake_failures,
            task,
        }
    }

    /// `http(s)://localhost:PORT{path}` (the certificate names `localhost`).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://localhost:{}{path}", self.addr.port())
    }

    pub fn records(&self) -> Vec<Recorded> {
        self.records.lock().unwrap().clone()
    }

    pub fn handshake_failures(&self) -> Vec<String> {
        self.handshake_failures.lock().unwrap().clone()
    }
}

async fn serve<S>(io: TokioIo<S>, records: Arc<Mutex<Vec<Recorded>>>, handler: Handler)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let (records, handler) = (records.clone(), handler.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let recorded = Recorded {
                method: parts.method.to_string(),
                target: parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: parts.headers,
                body,
            };
            let (status, text) = handler(&recorded);
            records.lock().unwrap().push(recorded);
            let mut response = hyper::Response::new(Full::new(Bytes::from(text)));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

fn server_config(tls: &ServerTls<'_>) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from(ca.issuer.der().to_vec()))
                .unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(
            vec![CertificateDer::from(tls.leaf.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls.leaf.key_der.clone())),
        )
        .unwrap()
}

/// A handler that answers 200 when every `(header, value)` is present, else 401.
pub fn requiring(required: Vec<(&'static str, String)>) -> Handler {
    Arc::new(move |r: &Recorded| {
        for (name, want) in &required {
            if r.header(name) != Some(want.as_str()) {
                return (401, format!("missing or wrong {name}"));
            }
        }
        (200, String::new())
    })
}
