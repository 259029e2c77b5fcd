//! Secure outputs end to end (issue #9): the real `adxexporter run` binary (standalone, duckdb-kql as
//! Kusto) pushing over HTTPS (a test CA given with `--tls-ca-file`) to receivers that enforce auth:
//! remote write with `--remote-write-auth azure`, whose tokens come from a fake managed-identity
//! endpoint (App Service protocol: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, the one azure_identity
//! 1.x lets us point at a local plain-HTTP server), and OTLP with a bearer token file plus a header
//! read from a file; OTLP/gRPC over TLS with Azure tokens to the official `grpcio` server. The log
//! (at `trace`), the status file and `/metrics` are grepped for every secret value.

mod common;
mod run_support;
mod sink_support;
mod tls_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{duckdb_kql, http_get};
use run_support::*;
use tls_support::{Recorded, Server, ServerTls, TestCa};

const LIMIT: Duration = Duration::from_secs(90);
const IDENTITY_SECRET: &str = "idhdr-S3CRET-41c";
const OTLP_TOKEN: &str = "otlp-S3CRET-tok-88a";
const HEADER_SECRET: &str = "apikey-S3CRET-5e0";

/// The fake managed-identity endpoint: checks the secret header and the resource, then hands out
/// `AzTok-<n>-S3CRET`, n = 1, 2, … (azure_identity parses `expires_on` as a string of Unix seconds).
fn identity_endpoint(issued: Arc<AtomicUsize>) -> tls_support::Handler {
    Arc::new(move |r: &Recorded| {
        if r.header("x-identity-header") != Some(IDENTITY_SECRET) {
            return (401, r#"{"error":"bad identity header"}"#.into());
        }
        if !r
            .target
            .contains("resource=https%3A%2F%2Fmonitor.azure.com")
            && !r.target.contains("resource=https://monitor.azure.com")
        {
            return (
                400,
                format!(r#"{{"error":"unexpected request {}"}}"#, r.target),
            );
        }
        let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
        let expires = now_ms() / 1000 + 3600;
        (
            200,
            format!(
                r#"{{"access_token":"AzTok-{n}-S3CRET","expires_on":"{expires}","token_type":"Bearer","resource":"https://monitor.azure.com"}}"#
            ),
        )
    })
}

struct Setup {
    data: Dataset,
    work: tempfile::TempDir,
    kusto: common::Peer,
    rt: tokio::runtime::Runtime,
    ca: TestCa,
}

impl Setup {
    fn new() -> Setup {
        let data = Dataset::ending_now(60, 3);
        let work = tempfile::Builder::new()
            .prefix("adxexporter-secure-")
            .tempdir()
            .unwrap();
        let init = write_init_sql(work.path(), &data);
        let kusto = duckdb_kql(&init);
        let manifests = work.path().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        std::fs::write(
            manifests.join("cpu.yaml"),
            resource_yaml("cpu", "1m", data.first_start_ms, GOOD_BODY),
        )
        .unwrap();
        Setup {
            data,
            work,
            kusto,
            rt: tokio::runtime::Runtime::new().unwrap(),
            ca: TestCa::new("adxexporter e2e CA"),
        }
    }

    fn https(&self, handler: tls_support::Handler) -> Server {
        let leaf = self.ca.server();
        self.rt.block_on(Server::start(
            Some(ServerTls {
                leaf: &leaf,
                client_ca: None,
            }),
            handler,
        ))
    }

    fn http(&self, handler: tls_support::Handler) -> Server {
        self.rt.block_on(Server::start(None, handler))
    }

    fn file(&self, name: &str, content: &str) -> String {
        let path = self.work.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.display().to_string()
    }

    /// Starts the exporter with the managed identity at `identity` as its only Azure identity.
    fn start(&self, flags: &[String], identity: &Server) -> Exporter {
        let endpoint = identity.url("/msi/token");
        self.start_with_env(
            flags,
            &[
                ("IDENTITY_ENDPOINT", endpoint.as_str()),
                ("IDENTITY_HEADER", IDENTITY_SECRET),
                // No workload identity or client secret.
                ("AZURE_CLIENT_ID", ""),
                ("AZURE_TENANT_ID", ""),
                ("AZURE_FEDERATED_TOKEN_FILE", ""),
                ("AZURE_CLIENT_SECRET", ""),
            ],
        )
    }

    fn start_with_env(&self, flags: &[String], env: &[(&str, &str)]) -> Exporter {
        let mut env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        env.push(("RUST_LOG", "trace".to_owned()));
        Exporter::start_with_env(
            self.work.path(),
            &self.kusto.url,
            Some(&self.work.path().join("manifests")),
            flags,
            &env,
        )
    }
}

/// ((host, ms), value) of the remote-write requests the receiver accepted.
fn accepted_points(
    records: &[Recorded],
    accepted: impl Fn(&Recorded) -> bool,
) -> BTreeMap<(String, i64), f64> {
    let mut out = BTreeMap::new();
    for r in records.iter().filter(|r| accepted(r)) {
        for s in r.write_request().timeseries {
            let host = (s.labels.iter())
                .find(|l| l.name == "Host")
                .map(|l| l.value.clone())
                .unwrap();
            for p in s.samples {
                out.insert((host.clone(), p.timestamp), p.value);
            }
        }
    }
    out
}

fn assert_no_secrets(what: &str, text: &str) {
    for secret in ["S3CRET", IDENTITY_SECRET, OTLP_TOKEN, HEADER_SECRET] {
        let hits: Vec<&str> = text.lines().filter(|l| l.contains(secret)).collect();
        assert!(hits.is_empty(), "{secret} in {what}:\n{}", hits.join("\n"));
    }
}

fn wait_for(what: &str, run: &mut Exporter, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + LIMIT;
    while !done() {
        run.assert_running();
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not reached within {LIMIT:?}\n{}",
            run.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn azure_tokens_renew_after_a_401_and_no_secret_is_ever_logged() {
    let s = Setup::new();
    let issued = Arc::new(AtomicUsize::new(0));
    let identity = s.http(identity_endpoint(issued.clone()));
    // The first token is refused (as if revoked): the exporter must fetch another and retry once.
    let remote_write = s.https(Arc::new(|r: &Recorded| match r.header("authorization") {
        Some(a) if a.starts_with("Bearer AzTok-") && a != "Bearer AzTok-1-S3CRET" => {
            (200, String::new())
        }
        _ => (401, "token rejected".into()),
    }));
    let otlp = s.https(Arc::new(|r: &Recorded| {
        let ok = r.header("authorization") == Some(&format!("Bearer {OTLP_TOKEN}"))
            && r.header("x-api-key") == Some(HEADER_SECRET);
        if ok {
            (200, String::new())
        } else {
            (401, "no".into())
        }
    }));
    let ca = s.ca.write(s.work.path(), "ca");
    let flags: Vec<String> = [
        "--tls-ca-file",
        &ca.display().to_string(),
        "--remote-write-endpoint",
        &remote_write.url("/api/v1/write"),
        "--remote-write-auth",
        "azure",
        "--otlp-endpoint",
        &otlp.url("/v1/metrics"),
        "--otlp-bearer-token-file",
        &s.file("otlp-token", &format!("{OTLP_TOKEN}\n")),
        "--otlp-header",
        &format!("X-Api-Key=@{}", s.file("api-key", HEADER_SECRET)),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut run = s.start(&flags, &identity);
    let status = run.wait_caught_up("cpu", s.data.end_ms(), LIMIT);

    let ok = |r: &Recorded| r.header("authorization") != Some("Bearer AzTok-1-S3CRET");
    let got = accepted_points(&remote_write.records(), ok);
    assert_eq!(
        got,
        s.data.expected(),
        "every window reached remote write once renewed"
    );
    let refused = (remote_write.records().iter()).filter(|r| !ok(r)).count();
    assert_eq!(
        refused, 1,
        "token 1 was refused once, then never sent again"
    );
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "one renewal, then the cached token"
    );
    assert!(otlp.records().len() >= s.data.windows as usize);

    let (_, metrics) = http_get(run.metrics_port, "/metrics").expect("/metrics answers");
    assert!(
        metrics.contains("adxexporter_tls_insecure_skip_verify 0"),
        "{metrics}"
    );
    run.terminate(LIMIT);
    let log = run.log_text();
    assert!(
        log.contains("refused the Azure token (401)"),
        "the renewal is logged:\n{log}"
    );
    assert_no_secrets("the log", &log);
    assert_no_secrets("the status", &status.to_string());
    assert_no_secrets("/metrics", &metrics);
}

/// OTLP/gRPC over TLS (the test CA via `--tls-ca-file`) with `--otlp-auth azure`: the official
/// `grpcio` server refuses the first token with `UNAUTHENTICATED`; the exporter renews it once and
/// every window arrives.
#[test]
fn grpc_over_tls_renews_an_azure_token_after_unauthenticated() {
    let s = Setup::new();
    let issued = Arc::new(AtomicUsize::new(0));
    let identity = s.http(identity_endpoint(issued.clone()));
    let (cert, key) = s.ca.server().write(s.work.path(), "grpc-server");
    let (receiver, port) = common::otlp_grpc_receiver(&[
        "--tls",
        &cert.display().to_string(),
        &key.display().to_string(),
    ]);
    let require =
        serde_json::json!({"require": {"authorization": "Bearer AzTok-([2-9]|[0-9]{2,})-S3CRET"}});
    s.rt.block_on(sink_support::control(&receiver, require));
    let ca = s.ca.write(s.work.path(), "ca");
    let flags: Vec<String> = [
        "--tls-ca-file",
        &ca.display().to_string(),
        "--otlp-grpc-endpoint",
        &format!("https://localhost:{port}"),
        "--otlp-auth",
        "azure",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut run = s.start(&flags, &identity);
    let status = run.wait_caught_up("cpu", s.data.end_ms(), LIMIT);

    let records = s.rt.block_on(sink_support::received(&receiver));
    let (refused, accepted): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| r["answer"] == "unauthenticated");
    assert_eq!(
        refused.len(),
        1,
        "token 1 was refused once, then never sent again"
    );
    let got: BTreeMap<(String, i64), f64> = points_of(&accepted).into_iter().collect();
    assert_eq!(got, s.data.expected(), "every window arrived once renewed");
    assert_eq!(points_of(&accepted).len(), got.len(), "and exactly once");
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "one renewal, then the cached token"
    );
    run.terminate(LIMIT);
    let log = run.log_text();
    assert!(
        log.contains("refused the Azure token (UNAUTHENTICATED)"),
        "the renewal is logged:\n{log}"
    );
    assert_no_secrets("the log", &log);
    assert_no_secrets("the status", &status.to_string());
}

#[test]
fn a_token_refused_twice_is_dead_lettered_naming_identity_and_scope() {
    let s = Setup::new();
    let issued = Arc::new(AtomicUsize::new(0));
    let identity = s.http(identity_endpoint(issued.clone()));
    let remote_write = s.https(Arc::new(|_: &Recorded| (401, "workspace says no".into())));
    let ca = s.ca.write(s.work.path(), "ca");
    let flags: Vec<String> = [
        "--tls-ca-file",
        &ca.display().to_string(),
        "--remote-write-endpoint",
        &remote_write.url("/api/v1/write"),
        "--remote-write-auth",
        "azure",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut run = s.start(&flags, &identity);
    wait_for("a dead letter", &mut run, || {
        run_log(&s).contains("dead-lettered")
    });
    run.terminate(LIMIT);
    let log = run.log_text();
    let line = (log.lines())
        .find(|l| l.contains("dead-lettered"))
        .unwrap()
        .to_owned();
    for part in [
        "Azure identity auto → managed-identity",
        "scope https://monitor.azure.com/.default",
        "(401)",
        "workspace says no",
    ] {
        assert!(line.contains(part), "{part:?} missing from: {line}");
    }
    assert_no_secrets("the log", &log);
}

#[test]
fn insecure_skip_verify_warns_and_sets_the_gauge() {
    let s = Setup::new();
    let identity = s.http(Arc::new(|_: &Recorded| (500, String::new())));
    let receiver = s.https(Arc::new(|_: &Recorded| (200, String::new())));
    let flags: Vec<String> = [
        "--tls-insecure-skip-verify",
        "--remote-write-endpoint",
        &receiver.url("/api/v1/write"),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let mut run = s.start(&flags, &identity);
    run.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    let (_, metrics) = http_get(run.metrics_port, "/metrics").expect("/metrics answers");
    assert!(
        metrics.contains("adxexporter_tls_insecure_skip_verify 1"),
        "{metrics}"
    );
    assert!(
        (run.log_text().lines())
            .any(|l| l.contains("WARN") && l.contains("certificates are NOT verified")),
        "{}",
        run.log_text()
    );
}

fn run_log(s: &Setup) -> String {
    std::fs::read_to_string(s.work.path().join("adxexporter.log")).unwrap_or_default()
}

/// Workload identity: the federated token is exchanged at `AZURE_AUTHORITY_HOST`, which must be
/// HTTPS; here it is served with the test CA, so the token endpoint is only reachable when
/// `--tls-ca-file` reaches the token requests too.
#[test]
fn workload_identity_token_endpoint_uses_the_tls_ca_file() {
    let s = Setup::new();
    let assertion = "federated-S3CRET-jwt";
    let exchanges = Arc::new(AtomicUsize::new(0));
    let seen = exchanges.clone();
    let authority = s.https(Arc::new(move |r: &Recorded| {
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let ok = r.method == "POST"
            && r.target == "/tenant-0001/oauth2/v2.0/token"
            && body.contains(&format!("client_assertion={assertion}"))
            && body.contains("client_id=client-0001")
            && body.contains("scope=https%3A%2F%2Fmonitor.azure.com%2F.default");
        if !ok {
            return (400, format!(r#"{{"error":"invalid_request","error_description":"unexpected {} {body}"}}"#, r.target));
        }
        seen.fetch_add(1, Ordering::SeqCst);
        (
            200,
            r#"{"token_type":"Bearer","expires_in":3600,"ext_expires_in":3600,"access_token":"WiTok-S3CRET"}"#.into(),
        )
    }));
    // Plain http receiver, so only the token endpoint needs the CA (credentials over http warn).
    let receiver = s.http(crate::tls_support::requiring(vec![(
        "authorization",
        "Bearer WiTok-S3CRET".to_owned(),
    )]));
    let failing_msi = s.http(Arc::new(|_: &Recorded| (500, String::new())));
    let federated = s.file("federated-token", assertion);
    let authority_url = authority.url("");
    let msi_url = failing_msi.url("/msi");
    let env = [
        ("AZURE_TENANT_ID", "tenant-0001"),
        ("AZURE_CLIENT_ID", "client-0001"),
        ("AZURE_FEDERATED_TOKEN_FILE", federated.as_str()),
        ("AZURE_AUTHORITY_HOST", authority_url.as_str()),
        ("AZURE_CLIENT_SECRET", ""),
        // A managed identity that fails fast instead of probing IMDS.
        ("IDENTITY_ENDPOINT", msi_url.as_str()),
        ("IDENTITY_HEADER", "x"),
    ];
    let mut flags: Vec<String> = [
        "--remote-write-endpoint",
        &receiver.url("/api/v1/write"),
        "--remote-write-auth",
        "azure",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();

    let mut run = s.start_with_env(&flags, &env);
    // The token request fails its TLS handshake (the CA is unknown): seen by the authority itself.
    wait_for("a refused handshake at the authority", &mut run, || {
        !authority.handshake_failures().is_empty()
    });
    // azure_core retries transport errors with backoff: no need to wait for it to give up.
    run.kill9();
    assert_eq!(
        exchanges.load(Ordering::SeqCst),
        0,
        "no token without trusting the CA"
    );
    assert!(
        receiver.records().is_empty(),
        "nothing sent without a token"
    );

    flags.extend([
        "--tls-ca-file".to_owned(),
        s.ca.write(s.work.path(), "ca").display().to_string(),
    ]);
    let mut run = s.start_with_env(&flags, &env);
    run.wait_caught_up("cpu", s.data.end_ms(), LIMIT);
    run.terminate(LIMIT);
    assert_eq!(
        exchanges.load(Ordering::SeqCst),
        1,
        "one exchange, then the cached token"
    );
    let got = accepted_points(&receiver.records(), |_| true);
    assert_eq!(got, s.data.expected());
    let log = run_log(&s);
    assert_no_secrets("the log", &log);
}
