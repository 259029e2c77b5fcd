//! Real peers for integration tests: each test starts its own instance on a free loopback port with a
//! fresh data directory, and the instance is killed when the returned [`Peer`] drops. A missing peer
//! binary is a test failure with the command that installs it, never a silent skip.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a peer may take to become ready before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Peer {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub dir: tempfile::TempDir,
    name: &'static str,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Starts `program args…` (with `{port}` and `{dir}` substituted) and waits until `GET ready_path`
    /// answers 2xx. The peer's output goes to `<dir>/log`, which is printed if it never gets ready.
    pub fn spawn(name: &'static str, program: &Path, args: &[&str], ready_path: &str) -> Peer {
        Peer::spawn_with(name, program, args, ready_path, |_| {})
    }

    /// As [`Peer::spawn`], running `setup` on the peer's fresh directory first (config files).
    pub fn spawn_with(
        name: &'static str,
        program: &Path,
        args: &[&str],
        ready_path: &str,
        setup: impl FnOnce(&Path),
    ) -> Peer {
        let ready = |port| http_get(port, ready_path).is_some_and(|(c, _)| (200..300).contains(&c));
        Peer::spawn_probed(name, program, args, setup, ready)
    }

    /// As [`Peer::spawn_with`], ready when `ready(port)` holds: for listeners plain HTTP cannot ask
    /// (TLS).
    pub fn spawn_probed(
        name: &'static str,
        program: &Path,
        args: &[&str],
        setup: impl FnOnce(&Path),
        ready: impl Fn(u16) -> bool,
    ) -> Peer {
        let port = free_port();
        let dir = tempfile::tempdir().expect("create a temp dir for the peer");
        setup(dir.path());
        let log_path = dir.path().join("log");
        let log = std::fs::File::create(&log_path).expect("create the peer log");
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("{port}", &port.to_string())
                    .replace("{dir}", &dir.path().display().to_string())
            })
            .collect();
        let child = Command::new(program)
            .args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", program.display()));
        let mut peer = Peer {
            child,
            port,
            url: format!("http://127.0.0.1:{port}"),
            dir,
            name,
        };
        peer.wait_ready(ready, &log_path);
        peer
    }

    fn wait_ready(&mut self, ready: impl Fn(u16) -> bool, log_path: &Path) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status} before it was ready; its log:\n{}",
                    self.name,
                    std::fs::read_to_string(log_path).unwrap_or_default()
                );
            }
            if ready(self.port) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready on port {} after {READY_TIMEOUT:?}; its log:\n{}",
                    self.name,
                    self.port,
                    std::fs::read_to_string(log_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A minimal HTTP/1.0 GET on loopback: `(status, body)`, or `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let code = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// The repository root (tests run with the package directory as their working directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A program from the test venv (`$ADXEXPORTER_VENV`, else `<repo>/.venv`), made by `tests/peers/setup.sh`.
pub fn venv_bin(program: &str) -> PathBuf {
    let venv = std::env::var_os("ADXEXPORTER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    let path = venv.join("bin").join(program);
    assert!(
        path.exists(),
        "{} is missing: run `tests/peers/setup.sh` (or set ADXEXPORTER_VENV) to install the test peers",
        path.display()
    );
    path
}

/// A Debian-packaged peer binary; missing means `.ci/run` (apt) was not run.
pub fn system_bin(program: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{program} is not installed: run `tests/peers/setup.sh` (apt-get install prometheus victoria-metrics)"
    );
}

/// duckdb-kql (a real KQL engine behind the Kusto REST API) initialised with `init_sql`. Database: `memory`.
pub fn duckdb_kql(init_sql: &Path) -> Peer {
    let init = init_sql.display().to_string();
    Peer::spawn(
        "duckdb-kql",
        &venv_bin("duckdb-kql"),
        &["serve", "--init", &init, "-p", "{port}"],
        "/",
    )
}

/// Prometheus 2.42 as a strict remote-write receiver with a fresh TSDB.
pub fn prometheus() -> Peer {
    prometheus_with_config("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
}

/// Prometheus 2.42 with this `prometheus.yml` (e.g. an out-of-order window), remote-write receiver on.
pub fn prometheus_with_config(config: &str) -> Peer {
    Peer::spawn_with(
        "prometheus",
        &system_bin("prometheus"),
        &[
            "--config.file={dir}/prometheus.yml",
            "--storage.tsdb.path={dir}/tsdb",
            "--web.listen-address=127.0.0.1:{port}",
            "--web.enable-remote-write-receiver",
        ],
        "/-/ready",
        |dir| std::fs::write(dir.join("prometheus.yml"), config).expect("write prometheus.yml"),
    )
}

/// VictoriaMetrics as a lenient remote-write receiver. Call `/internal/force_flush` before reading back.
pub fn victoria_metrics() -> Peer {
    Peer::spawn(
        "victoria-metrics",
        &system_bin("victoria-metrics"),
        &[
            "-httpListenAddr=127.0.0.1:{port}",
            "-storageDataPath={dir}/data",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
        ],
        "/health",
    )
}

/// `tests/peers/otlp_grpc_sink.py` (the official `grpcio` server decoding with `opentelemetry-proto`),
/// scriptable and recording, on a free gRPC port; `extra` is e.g. `["--tls", CERT, KEY]`. Returns the
/// peer (its `url` is the control endpoint) and the gRPC port.
pub fn otlp_grpc_receiver(extra: &[&str]) -> (Peer, u16) {
    let script = repo_root().join("tests/peers/otlp_grpc_sink.py");
    let script = script.display().to_string();
    let grpc_port = free_port();
    let port = grpc_port.to_string();
    let mut args = vec![script.as_str(), port.as_str(), "{port}"];
    args.extend_from_slice(extra);
    let peer = Peer::spawn("otlp-grpc-sink", &venv_bin("python"), &args, "/");
    (peer, grpc_port)
}

/// rotel (the Rust OTLP collector shipped in the PyPI `rotel` wheel) receiving OTLP/HTTP and
/// OTLP/gRPC and exporting OTLP/HTTP to `sink_url` (e.g. the Python OTLP sink), batching for 100 ms.
/// Killed on drop.
pub struct Rotel {
    child: Child,
    /// OTLP/HTTP metrics URL (`http://127.0.0.1:<port>/v1/metrics`).
    pub url: String,
    /// OTLP/gRPC endpoint (`http://127.0.0.1:<port>`).
    pub grpc_url: String,
    pub dir: tempfile::TempDir,
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rotel-agent` inside the test venv's rotel package.
pub fn rotel_agent() -> PathBuf {
    let python = venv_bin("python");
    let lib = python
        .parent()
        .and_then(|p| p.parent())
        .map(|venv| venv.join("lib"))
        .expect("the venv has a lib directory");
    for entry in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
        let candidate = entry.path().join("site-packages/rotel/rotel-agent");
        if candidate.exists() {
            return candidate;
        }
    }
    panic!(
        "rotel-agent not found under {}: run tests/peers/setup.sh (pip install rotel)",
        lib.display()
    );
}

/// Starts rotel relaying to `sink_url`; returns once both its listeners accept connections.
pub fn rotel(sink_url: &str) -> Rotel {
    let (http, grpc) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(rotel_agent())
        .args([
            "start",
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{http}"),
        ])
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--exporter", "otlp", "--otlp-exporter-protocol", "http"])
        .args(["--otlp-exporter-endpoint", sink_url])
        .args(["--batch-timeout", "100ms"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start rotel-agent");
    let mut rotel = Rotel {
        child,
        url: format!("http://127.0.0.1:{http}/v1/metrics"),
        grpc_url: format!("http://127.0.0.1:{grpc}"),
        dir,
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    while [http, grpc]
        .iter()
        .any(|p| TcpStream::connect(("127.0.0.1", *p)).is_err())
    {
        if let Ok(Some(status)) = rotel.child.try_wait() {
            panic!(
                "rotel exited with {status}: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "rotel not listening after {READY_TIMEOUT:?}: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rotel
}
