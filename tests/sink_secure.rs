//! Authentication and TLS of the outputs (issue #9) against receivers that enforce them: real TLS
//! with certificates from a CA made in the test (verification fails without `--tls-ca-file` and
//! succeeds with it; mutual TLS rejects a missing client certificate), and headers, bearer tokens
//! (re-read when the file changes) and basic auth checked by a recording receiver that answers 401
//! when they are wrong. The OTLP/gRPC output is held to the same against the official `grpcio`
//! server (its own TLS stack, metadata enforced by the receiver). The Kusto client gets the same CA
//! file. Secrets are checked absent from every failure message.

mod common;
mod sink_support;
mod tls_support;

use std::path::Path;
use std::sync::Arc;

use adxexporter::prompb::{Label, Sample, TimeSeries, WriteRequest};
use adxexporter::sink::auth::{HeaderSource, OutputAuthConfig, OutputCredential, OutputHeader};
use adxexporter::sink::{
    Disposition, OtlpConfig, OtlpGrpcConfig, OtlpGrpcSink, OtlpSink, PushResult, RemoteWriteConfig,
    RemoteWriteSink, Sink,
};
use adxexporter::tls::{ClientCert, TlsConfig};
use tls_support::{Recorded, Server, ServerTls, TestCa, requiring};

fn window() -> WriteRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label::new("__name__", "secure_test"),
                Label::new("host", "h1"),
            ],
            samples: vec![Sample {
                value: 1.5,
                timestamp: now,
            }],
        }],
        ..Default::default()
    }
}

fn remote_write(url: &str, auth: OutputAuthConfig, tls: TlsConfig) -> RemoteWriteSink {
    let mut c = RemoteWriteConfig::new(url.parse().unwrap());
    (c.auth, c.tls) = (auth, tls);
    RemoteWriteSink::new(c).unwrap()
}

fn ok_handler() -> tls_support::Handler {
    Arc::new(|_: &Recorded| (200, String::new()))
}

fn assert_delivered(result: &PushResult) {
    assert!(result.is_ok(), "expected delivery, got {result:?}");
}

/// The failure's disposition reason and body text.
fn failure(result: PushResult) -> (&'static str, String) {
    let f = result.expect_err("expected a failure");
    let reason = f.disposition.reason();
    let body = match f.disposition {
        Disposition::Permanent { body, .. } => body,
        _ => String::new(),
    };
    (reason, body)
}

fn ca_only(dir: &Path, ca: &TestCa) -> TlsConfig {
    TlsConfig {
        ca_file: Some(ca.write(dir, "ca")),
        ..TlsConfig::default()
    }
}

#[tokio::test]
async fn server_verification_fails_without_the_ca_and_succeeds_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("adxexporter test CA");
    let leaf = ca.server();
    let server = Server::start(
        Some(ServerTls {
            leaf: &leaf,
            client_ca: None,
        }),
        ok_handler(),
    )
    .await;
    let url = server.url("/api/v1/write");

    let untrusting = remote_write(&url, OutputAuthConfig::default(), TlsConfig::default());
    let (reason, _) = failure(untrusting.push(&window()).await);
    assert_eq!(
        reason, "connect",
        "an unknown CA fails the handshake (retried)"
    );
    assert!(server.records().is_empty());
    // The server side of the failed handshake finishes on its own task: poll for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.handshake_failures().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the server never saw the handshake fail"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Another CA's bundle does not help either.
    let other = TestCa::new("someone else");
    let wrong = remote_write(
        &url,
        OutputAuthConfig::default(),
        ca_only(dir.path(), &other),
    );
    assert_eq!(failure(wrong.push(&window()).await).0, "connect");

    let trusting = remote_write(&url, OutputAuthConfig::default(), ca_only(dir.path(), &ca));
    assert_delivered(&trusting.push(&window()).await);
    let got = server.records();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].write_request(), window_like(&got[0]));

    let insecure = remote_write(
        &url,
        OutputAuthConfig::default(),
        TlsConfig {
            insecure_skip_verify: true,
            ..TlsConfig::default()
        },
    );
    assert_delivered(&insecure.push(&window()).await);
}

/// The decoded request must hold the one series the test sent.
fn window_like(r: &Recorded) -> WriteRequest {
    let got = r.write_request();
    assert_eq!(got.timeseries.len(), 1);
    assert_eq!(got.timeseries[0].labels, window().timeseries[0].labels);
    assert_eq!(got.timeseries[0].samples[0].value, 1.5);
    got
}

#[tokio::test]
async fn mutual_tls_rejects_a_missing_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("adxexporter test CA");
    let leaf = ca.server();
    let server = Server::start(
        Some(ServerTls {
            leaf: &leaf,
            client_ca: Some(&ca),
        }),
        ok_handler(),
    )
    .await;
    let url = server.url("/v1/metrics");
    let otlp = |tls: TlsConfig| {
        let mut c = OtlpConfig::new(url.parse().unwrap(), Default::default());
        c.tls = tls;
        OtlpSink::new(c).unwrap()
    };

    let anonymous = otlp(ca_only(dir.path(), &ca));
    let (reason, _) = failure(anonymous.push(&window()).await);
    assert!(
        ["connect", "connection_broken"].contains(&reason),
        "no client certificate, no delivery: {reason}"
    );
    assert!(server.records().is_empty());

    // A client certificate from a CA the server does not trust is refused too.
    let stranger = TestCa::new("stranger").client("intruder");
    let (cert, key) = stranger.write(dir.path(), "stranger");
    let mut tls = ca_only(dir.path(), &ca);
    tls.client_cert = Some(ClientCert { cert, key });
    assert!(otlp(tls).push(&window()).await.is_err());
    assert!(server.records().is_empty());

    let (cert, key) = ca.client("adxexporter").write(dir.path(), "client");
    let mut tls = ca_only(dir.path(), &ca);
    tls.client_cert = Some(ClientCert { cert, key });
    assert_delivered(&otlp(tls).push(&window()).await);
    assert_eq!(server.records().len(), 1);
}

#[tokio::test]
async fn headers_and_a_rotated_bearer_token_are_sent_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    let tenant_file = dir.path().join("tenant");
    std::fs::write(&token_file, "first-Secret-7c1\n").unwrap();
    std::fs::write(&tenant_file, "tenant-from-file").unwrap();
    let ca = TestCa::new("ca");
    let leaf = ca.server();
    let expected = Arc::new(std::sync::Mutex::new("Bearer first-Secret-7c1".to_owned()));
    let want = expected.clone();
    let server = Server::start(
        Some(ServerTls {
            leaf: &leaf,
            client_ca: None,
        }),
        Arc::new(move |r: &Recorded| {
            let ok = r.header("authorization") == Some(want.lock().unwrap().as_str())
                && r.header("x-scope-orgid") == Some("tenant-from-file")
                && r.header("x-team") == Some("metrics");
            if ok {
                (200, String::new())
            } else {
                (401, "invalid credentials".into())
            }
        }),
    )
    .await;
    let auth = OutputAuthConfig {
        headers: tenant_and_team(tenant_file),
        credential: OutputCredential::BearerFile(token_file.clone()),
    };
    let sink = remote_write(&server.url("/api/v1/write"), auth, ca_only(dir.path(), &ca));
    assert_delivered(&sink.push(&window()).await);
    let first = &server.records()[0];
    assert_eq!(
        first.header("x-prometheus-remote-write-version"),
        Some("0.1.0"),
        "protocol headers stay"
    );

    // The Secret is rotated: the new token is read (the mtime moves) and sent.
    std::fs::write(&token_file, "second-Secret-9d2").unwrap();
    bump_mtime(&token_file);
    *expected.lock().unwrap() = "Bearer second-Secret-9d2".into();
    assert_delivered(&sink.push(&window()).await);

    // The receiver now wants a token we do not have: one 401, permanent, no retry of the same token.
    *expected.lock().unwrap() = "Bearer something-else".into();
    let before = server.records().len();
    let f = sink.push(&window()).await.expect_err("401 is refused");
    assert_eq!(f.status, Some(401));
    assert_eq!(
        server.records().len(),
        before + 1,
        "a file token is not retried"
    );
    let Disposition::Permanent { body, .. } = f.disposition else {
        panic!("401 is permanent: {:?}", f.disposition)
    };
    assert!(body.contains(&token_file.display().to_string()), "{body}");
    assert!(body.contains("invalid credentials"), "{body}");
    assert!(!body.contains("Secret"), "no token in the message: {body}");
}

#[tokio::test]
async fn basic_auth_with_a_password_file_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "hunter2-Pw\n").unwrap();
    // base64("grafana:hunter2-Pw")
    let server = Server::start(
        None,
        requiring(vec![(
            "authorization",
            "Basic Z3JhZmFuYTpodW50ZXIyLVB3".to_owned(),
        )]),
    )
    .await;
    let basic = |user: &str| OutputAuthConfig {
        headers: vec![],
        credential: OutputCredential::Basic {
            username: user.into(),
            password_file: password.clone(),
        },
    };
    let url = server.url("/api/v1/write");
    let good = remote_write(&url, basic("grafana"), TlsConfig::default());
    assert_delivered(&good.push(&window()).await);
    let bad = remote_write(&url, basic("mallory"), TlsConfig::default());
    let (reason, body) = failure(bad.push(&window()).await);
    assert_eq!(reason, "rejected");
    assert!(body.contains("basic auth as \"mallory\""), "{body}");
    assert!(!body.contains("hunter2"), "{body}");

    // A missing password file is a retryable credentials failure, not a request without auth.
    std::fs::remove_file(&password).unwrap();
    let before = server.records().len();
    assert_eq!(failure(good.push(&window()).await).0, "credentials");
    assert_eq!(
        server.records().len(),
        before,
        "nothing sent without credentials"
    );
}

/// The extra headers both header tests send: a tenant read from `tenant_file`, a literal team.
fn tenant_and_team(tenant_file: std::path::PathBuf) -> Vec<OutputHeader> {
    vec![
        OutputHeader {
            name: "X-Scope-OrgID".into(),
            value: HeaderSource::File(tenant_file),
        },
        OutputHeader {
            name: "X-Team".into(),
            value: HeaderSource::Literal("metrics".into()),
        },
    ]
}

fn bump_mtime(path: &Path) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    let mtime = file.metadata().unwrap().modified().unwrap();
    file.set_modified(mtime + std::time::Duration::from_secs(5))
        .unwrap();
}

/// Kusto gets the same `--tls-ca-file` (no client certificate): unknown CA → a network error before
/// any request; with the CA the request reaches the cluster, carrying the token over TLS.
#[tokio::test]
async fn kusto_queries_verify_the_cluster_with_the_ca_file() {
    use adxexporter::query::{KustoAuth, KustoClient, KustoConfig, QueryError, QueryLimits};
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("kusto-token");
    std::fs::write(&token, "kusto-S3CRET").unwrap();
    let ca = TestCa::new("ca");
    let leaf = ca.server();
    let server = Server::start(
        Some(ServerTls {
            leaf: &leaf,
            client_ca: None,
        }),
        requiring(vec![("authorization", "Bearer kusto-S3CRET".to_owned())]),
    )
    .await;
    let client = |tls: TlsConfig| {
        KustoClient::new(
            server.url("").parse().unwrap(),
            KustoAuth::TokenFile(token.clone()),
            KustoConfig {
                tls,
                ..KustoConfig::default()
            },
        )
        .unwrap()
    };
    let limits = QueryLimits::default();
    let err = client(TlsConfig::default())
        .query("db", "T | take 1", &limits)
        .await
        .unwrap_err();
    assert!(matches!(err, QueryError::Network { .. }), "{err:?}");
    assert!(server.records().is_empty());

    // With the CA the request is answered (200 with an empty body: a decode error, not a network one).
    let err = client(ca_only(dir.path(), &ca))
        .query("db", "T | take 1", &limits)
        .await
        .unwrap_err();
    assert!(!matches!(err, QueryError::Network { .. }), "{err:?}");
    let got = server.records();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].target, "/v2/rest/query");
    assert!(!err.to_string().contains("S3CRET"), "{err}");
}

/// A real peer: Prometheus 2.42 with a web config requiring mutual TLS (client CA) and basic auth
/// (bcrypt). No client certificate → no connection; wrong password → 401, permanent; both right →
/// the window is stored and reads back over the same secured API.
#[tokio::test(flavor = "multi_thread")]
async fn prometheus_behind_mutual_tls_and_basic_auth_stores_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("prometheus test CA");
    let ca_file = ca.write(dir.path(), "ca");
    let (server_cert, server_key) = ca.server().write(dir.path(), "server");
    let (client_cert, client_key) = ca.client("adxexporter").write(dir.path(), "client");
    let password = "prom-Pw-S3CRET";
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {}\nbasic_auth_users:\n  adx: {}\n",
        server_cert.display(),
        server_key.display(),
        ca_file.display(),
        bcrypt::hash(password, 4).unwrap()
    );
    let peer = tokio::task::spawn_blocking(move || {
        common::Peer::spawn_probed(
            "prometheus",
            &common::system_bin("prometheus"),
            &[
                "--config.file={dir}/prometheus.yml",
                "--storage.tsdb.path={dir}/tsdb",
                "--web.listen-address=127.0.0.1:{port}",
                "--web.enable-remote-write-receiver",
                "--web.config.file={dir}/web.yml",
            ],
            |d| {
                std::fs::write(d.join("prometheus.yml"), "scrape_configs: []\n").unwrap();
                std::fs::write(d.join("web.yml"), web).unwrap();
            },
            // Plain HTTP cannot ask a TLS listener: accepting connections is enough, pushes retry
            // the 503 Prometheus answers until its TSDB is open.
            |port| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )
    })
    .await
    .unwrap();
    let base = format!("https://localhost:{}", peer.port);
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let sink = |user: &str, client: bool| {
        let mut tls = TlsConfig {
            ca_file: Some(ca_file.clone()),
            ..TlsConfig::default()
        };
        if client {
            tls.client_cert = Some(ClientCert {
                cert: client_cert.clone(),
                key: client_key.clone(),
            });
        }
        let auth = OutputAuthConfig {
            headers: vec![],
            credential: OutputCredential::Basic {
                username: user.into(),
                password_file: password_file.clone(),
            },
        };
        remote_write(&format!("{base}/api/v1/write"), auth, tls)
    };

    let (reason, _) = failure(sink("adx", false).push(&window()).await);
    assert!(
        ["connect", "connection_broken"].contains(&reason),
        "no client certificate: {reason}"
    );

    let good = sink("adx", true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match good.push(&window()).await {
            Ok(_) => break,
            Err(f) if matches!(f.disposition, Disposition::Retry { .. }) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "never accepted: {f:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(f) => panic!("refused: {f:?}"),
        }
    }
    let (reason, body) = failure(sink("mallory", true).push(&window()).await);
    assert_eq!(reason, "rejected", "{body}");
    assert!(body.contains("(401)") && !body.contains("S3CRET"), "{body}");

    // Read back through the same TLS + basic auth.
    let identity = {
        let mut pem = std::fs::read(&client_key).unwrap();
        pem.extend(std::fs::read(&client_cert).unwrap());
        reqwest::Identity::from_pem(&pem).unwrap()
    };
    let client = reqwest::Client::builder()
        .tls_certs_merge(
            reqwest::Certificate::from_pem_bundle(&std::fs::read(&ca_file).unwrap()).unwrap(),
        )
        .identity(identity)
        .build()
        .unwrap();
    let text = client
        .get(format!("{base}/api/v1/query?query=secure_test"))
        .basic_auth("adx", Some(password))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let result = &answer["data"]["result"][0];
    assert_eq!(result["metric"]["host"], "h1", "{answer}");
    assert_eq!(result["value"][1], "1.5", "{answer}");
}

/// The OTLP/gRPC output over TLS, against the official `grpcio` server (BoringSSL, not rustls)
/// serving a certificate from the test CA and requiring a client certificate from it.
fn grpc_sink(port: u16, auth: OutputAuthConfig, tls: TlsConfig) -> OtlpGrpcSink {
    let url = format!("https://localhost:{port}");
    let mut c = OtlpGrpcConfig::new(url.parse().unwrap(), Default::default());
    (c.auth, c.tls) = (auth, tls);
    OtlpGrpcSink::new(c).unwrap()
}

/// Points of the requests the gRPC receiver accepted.
async fn grpc_accepted(receiver: &common::Peer) -> Vec<sink_support::Point> {
    let records = sink_support::received(receiver).await;
    let accepted: Vec<_> = records
        .into_iter()
        .filter(|r| r["answer"] != "unauthenticated")
        .collect();
    sink_support::otlp_points(&accepted)
}

#[tokio::test]
async fn grpc_over_tls_verifies_the_server_and_presents_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("adxexporter gRPC CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let ca_file = ca.write(dir.path(), "ca");
    let (receiver, port) = common::otlp_grpc_receiver(&[
        "--tls",
        &cert.display().to_string(),
        &key.display().to_string(),
        "--client-ca",
        &ca_file.display().to_string(),
    ]);
    let (client_cert, client_key) = ca.client("adxexporter").write(dir.path(), "client");
    let with_client = |mut tls: TlsConfig| {
        tls.client_cert = Some(ClientCert {
            cert: client_cert.clone(),
            key: client_key.clone(),
        });
        tls
    };
    let none = OutputAuthConfig::default;

    // The server is not trusted without the CA, nor with another CA's bundle: retried, nothing sent.
    let other = TestCa::new("someone else");
    for tls in [
        with_client(TlsConfig::default()),
        with_client(ca_only(dir.path(), &other)),
    ] {
        let f = grpc_sink(port, none(), tls).push(&window()).await;
        assert_eq!(failure(f).0, "unavailable");
    }
    // Trusted, but no client certificate (or one from a stranger CA): the server refuses.
    let stranger = TestCa::new("stranger").client("intruder");
    let (s_cert, s_key) = stranger.write(dir.path(), "stranger");
    let mut strange = ca_only(dir.path(), &ca);
    strange.client_cert = Some(ClientCert {
        cert: s_cert,
        key: s_key,
    });
    for tls in [ca_only(dir.path(), &ca), strange] {
        let f = grpc_sink(port, none(), tls).push(&window()).await;
        // TLS 1.3: our side of the handshake completes before the server checks the certificate,
        // so its refusal arrives as a reset of the call or the connection. Whatever code tonic
        // gives that, it is retried, never dead-lettered.
        let f = f.expect_err("no delivery without a client certificate");
        assert!(
            matches!(f.disposition, Disposition::Retry { .. }),
            "{:?}",
            f.disposition
        );
    }
    assert!(sink_support::received(&receiver).await.is_empty());

    // The CA and the client certificate: delivered, the server saw the certificate.
    let good = grpc_sink(port, none(), with_client(ca_only(dir.path(), &ca)));
    assert_delivered(&good.push(&window()).await);
    let records = sink_support::received(&receiver).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["peer_cert"], true);
    let points = sink_support::otlp_points(&records);
    assert_eq!(points.len(), 1);
    assert_eq!((points[0].0.as_str(), points[0].3), ("secure_test", 1.5));

    // --tls-insecure-skip-verify: any server certificate is accepted (the client one still sent).
    let insecure = TlsConfig {
        insecure_skip_verify: true,
        ..TlsConfig::default()
    };
    assert_delivered(
        &grpc_sink(port, none(), with_client(insecure))
            .push(&window())
            .await,
    );
    assert_eq!(sink_support::received(&receiver).await.len(), 2);
}

#[tokio::test]
async fn grpc_metadata_bearer_and_basic_auth_are_sent_and_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("adxexporter gRPC CA");
    let (cert, key) = ca.server().write(dir.path(), "server");
    let (receiver, port) = common::otlp_grpc_receiver(&[
        "--tls",
        &cert.display().to_string(),
        &key.display().to_string(),
    ]);
    let require = |authorization: &str| {
        serde_json::json!({"require": {
            "authorization": authorization,
            "x-scope-orgid": "tenant-from-file",
            "x-team": "metrics",
        }})
    };
    sink_support::control(&receiver, require("Bearer second-Secret-9d2")).await;
    let token_file = dir.path().join("token");
    let tenant_file = dir.path().join("tenant");
    std::fs::write(&token_file, "first-Secret-7c1\n").unwrap();
    std::fs::write(&tenant_file, "tenant-from-file\n").unwrap();
    let headers = tenant_and_team(tenant_file);
    let bearer = OutputAuthConfig {
        headers: headers.clone(),
        credential: OutputCredential::BearerFile(token_file.clone()),
    };
    let sink = grpc_sink(port, bearer, ca_only(dir.path(), &ca));

    // The receiver wants another token: UNAUTHENTICATED is permanent (a file token is not retried)
    // and names the token's file, never the token.
    let f = sink.push(&window()).await;
    let (reason, body) = failure(f);
    assert_eq!(reason, "unauthorized");
    assert!(body.contains(&token_file.display().to_string()), "{body}");
    assert!(body.contains("UNAUTHENTICATED"), "{body}");
    assert!(!body.contains("Secret"), "no token in the message: {body}");
    assert_eq!(sink_support::received(&receiver).await.len(), 1);

    // The Secret is rotated: the new token is read and accepted, with both headers as metadata.
    std::fs::write(&token_file, "second-Secret-9d2").unwrap();
    bump_mtime(&token_file);
    assert_delivered(&sink.push(&window()).await);
    let records = sink_support::received(&receiver).await;
    let md = &records.last().unwrap()["metadata"];
    assert_eq!(md["authorization"], "Bearer second-Secret-9d2");
    assert_eq!(md["x-scope-orgid"], "tenant-from-file");
    assert_eq!(md["x-team"], "metrics");
    assert_eq!(grpc_accepted(&receiver).await.len(), 1);

    // Basic auth with a password file. base64("grafana:hunter2-Pw")
    sink_support::control(&receiver, require("Basic Z3JhZmFuYTpodW50ZXIyLVB3")).await;
    let password = dir.path().join("password");
    std::fs::write(&password, "hunter2-Pw\n").unwrap();
    let basic = |user: &str| OutputAuthConfig {
        headers: headers.clone(),
        credential: OutputCredential::Basic {
            username: user.into(),
            password_file: password.clone(),
        },
    };
    let good = grpc_sink(port, basic("grafana"), ca_only(dir.path(), &ca));
    assert_delivered(&good.push(&window()).await);
    let bad = grpc_sink(port, basic("mallory"), ca_only(dir.path(), &ca));
    let (reason, body) = failure(bad.push(&window()).await);
    assert_eq!(reason, "unauthorized");
    assert!(body.contains("basic auth as \"mallory\""), "{body}");
    assert!(!body.contains("hunter2"), "{body}");
    assert_eq!(grpc_accepted(&receiver).await.len(), 2);

    // An unreadable password file: retried later, nothing sent without credentials.
    let before = sink_support::received(&receiver).await.len();
    std::fs::remove_file(&password).unwrap();
    assert_eq!(failure(good.push(&window()).await).0, "credentials");
    assert_eq!(sink_support::received(&receiver).await.len(), before);
}
