//! A scripted HTTP fault proxy on a loopback port (axum in front, reqwest to the upstream): each
//! request is forwarded to one upstream peer or answered by the current [`HttpRule`] instead — the
//! receiver/Kusto misbehaviours of issue #7 (429 with `Retry-After`, 5xx storms, a 400 for one
//! exporter's data only, slow answers, truncated bodies, Kusto partial failures).
//!
//! A rule holds for a number of requests or until replaced. Every request the upstream accepted
//! (2xx) is recorded with its decoded body (snappy or gzip undone), so a test can count what really
//! reached a receiver — including answers the client never saw — and so tell duplicates exactly.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::response::Response;

/// What the proxy does with the next request.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpRule {
    Pass,
    /// Answer `status` without forwarding, with `Retry-After: <seconds>` when given.
    Answer {
        status: u16,
        retry_after: Option<u64>,
    },
    /// Answer `status` to about `percent` % of requests (seeded), forward the rest.
    Storm {
        status: u16,
        percent: u32,
    },
    /// Answer `status` to requests whose decoded body contains `marker`; forward the rest (see
    /// also [`HttpFault::reject_marked`], which stands beside whatever rule is current).
    RejectMarked {
        marker: String,
        status: u16,
    },
    /// Forward, then hold the answer back for this long.
    Slow(Duration),
    /// Forward, then send the status and headers with the full `Content-Length` but only half the
    /// body, and break the connection.
    TruncateBody,
    /// Forward, then turn the Kusto v2 answer's `DataSetCompletion` into a (transient) failure.
    KustoPartialFailure,
}

#[derive(Debug)]
struct Script {
    rule: HttpRule,
    /// Requests the rule still applies to (`None`: until replaced); then `Pass`.
    remaining: Option<u64>,
    rng: fastrand::Rng,
}

/// One request the upstream answered with 2xx: path and decoded body.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub path: String,
    pub body: Bytes,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    script: Mutex<Script>,
    /// A standing `RejectMarked`, checked before the current rule.
    marked: Mutex<Option<HttpRule>>,
    accepted: Mutex<Vec<Accepted>>,
    requests: AtomicU64,
    /// Requests the scripted rule answered or altered.
    faulted: AtomicU64,
    /// Requests the standing `reject_marked` answered.
    rejected_marked: AtomicU64,
}

/// A running proxy; it stops when the runtime that spawned it shuts down.
pub struct HttpFault {
    pub port: u16,
    shared: Arc<Shared>,
}

impl HttpFault {
    /// Listens on a fresh loopback port and forwards to `upstream` (`http://host:port`).
    pub fn start(rt: &tokio::runtime::Runtime, upstream: &str, seed: u64) -> HttpFault {
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the HTTP fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        // reqwest is built without a default TLS provider (see `query::client`).
        adxexporter::tls::install_crypto_provider();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            // No timeout: slowness is the proxy's to inject, not to impose.
            client: reqwest::Client::builder()
                .no_gzip()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a reqwest client"),
            script: Mutex::new(Script {
                rule: HttpRule::Pass,
                remaining: None,
                rng: fastrand::Rng::with_seed(seed),
            }),
            marked: Mutex::new(None),
            accepted: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            rejected_marked: AtomicU64::new(0),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        rt.spawn(async move { axum::serve(listener, app).await });
        HttpFault { port, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `rule` from now on, until replaced.
    pub fn set(&self, rule: HttpRule) {
        let mut s = self.shared.script.lock().unwrap();
        s.rule = rule;
        s.remaining = None;
    }

    /// `rule` for the next `requests` requests, then `Pass`.
    pub fn set_for(&self, rule: HttpRule, requests: u64) {
        let mut s = self.shared.script.lock().unwrap();
        s.rule = rule;
        s.remaining = Some(requests);
    }

    /// From now on, answer `status` to every request whose decoded body contains `marker`,
    /// whatever the current rule (one exporter's data rejected, the others' not).
    pub fn reject_marked(&self, marker: &str, status: u16) {
        *self.shared.marked.lock().unwrap() = Some(HttpRule::RejectMarked {
            marker: marker.to_owned(),
            status,
        });
    }

    /// True once a rule set with [`HttpFault::set_for`] is used up.
    pub fn is_passing(&self) -> bool {
        self.shared.script.lock().unwrap().rule == HttpRule::Pass
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Requests a rule answered or altered so far.
    pub fn faulted(&self) -> u64 {
        self.shared.faulted.load(Ordering::Relaxed)
    }

    /// Requests the standing [`HttpFault::reject_marked`] answered so far.
    pub fn rejected_marked(&self) -> u64 {
        self.shared.rejected_marked.load(Ordering::Relaxed)
    }

    /// Every request the upstream accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.accepted.lock().unwrap().clone()
    }
}

/// The rule for this request (consuming one use of a counted rule), or `None` to forward as is.
fn next_rule(shared: &Shared, decoded: &[u8]) -> Option<HttpRule> {
    if let Some(HttpRule::RejectMarked { marker, status }) = shared.marked.lock().unwrap().clone()
        && contains(decoded, &marker)
    {
        return Some(HttpRule::RejectMarked { marker, status });
    }
    let mut s = shared.script.lock().unwrap();
    let rule = s.rule.clone();
    let applies = match &rule {
        HttpRule::Pass => false,
        HttpRule::Storm { percent, .. } => s.rng.u32(0..100) < *percent,
        HttpRule::RejectMarked { marker, .. } => contains(decoded, marker),
        _ => true,
    };
    if let Some(left) = s.remaining.as_mut() {
        *left = left.saturating_sub(1);
        if *left == 0 {
            s.rule = HttpRule::Pass;
            s.remaining = None;
        }
    }
    applies.then_some(rule)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The request body with its `Content-Encoding` undone (the bytes as sent when unknown).
fn decode_body(encoding: Option<&str>, body: &[u8]) -> Vec<u8> {
    match encoding {
        Some("snappy") => snap::raw::Decoder::new()
            .decompress_vec(body)
            .unwrap_or_else(|_| body.to_vec()),
        Some("gzip") => {
            let mut out = Vec::new();
            match flate2::read::GzDecoder::new(body).read_to_end(&mut out) {
                Ok(_) => out,
                Err(_) => body.to_vec(),
            }
        }
        _ => body.to_vec(),
    }
}

fn answer(status: u16, retry_after: Option<u64>, text: &str) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "text/plain");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(Body::from(format!("chaos proxy: {text}\n")))
        .unwrap()
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 256 << 20).await else {
        return answer(400, None, "unreadable request body");
    };
    let encoding = parts
        .headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok());
    let decoded = decode_body(encoding, &body);
    let rule = next_rule(&shared, &decoded);
    match &rule {
        None => {}
        Some(HttpRule::RejectMarked { .. }) => {
            shared.rejected_marked.fetch_add(1, Ordering::Relaxed);
        }
        Some(_) => {
            shared.faulted.fetch_add(1, Ordering::Relaxed);
        }
    }
    match &rule {
        Some(HttpRule::Answer {
            status,
            retry_after,
        }) => return answer(*status, *retry_after, "scripted answer"),
        Some(HttpRule::Storm { status, .. }) => return answer(*status, None, "storm"),
        Some(HttpRule::RejectMarked { status, .. }) => {
            return answer(*status, None, "rejected: marked data");
        }
        _ => {}
    }

    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let mut forward = shared
        .client
        .request(parts.method.clone(), format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        // Hop-by-hop and framing headers are reqwest's to set; plain answers keep rewrites simple.
        if !matches!(
            name.as_str(),
            "host" | "content-length" | "connection" | "transfer-encoding" | "accept-encoding"
        ) {
            forward = forward.header(name, value);
        }
    }
    let upstream = match forward.send().await {
        Ok(r) => r,
        Err(e) => return answer(502, None, &format!("upstream unreachable: {e}")),
    };
    let status = upstream.status();
    let headers = upstream.headers().clone();
    let Ok(mut answer_body) = upstream.bytes().await else {
        return answer(502, None, "upstream answer broke off");
    };
    if status.is_success() {
        shared.accepted.lock().unwrap().push(Accepted {
            path: parts.uri.path().to_owned(),
            body: Bytes::from(decoded),
        });
    }
    if let Some(HttpRule::KustoPartialFailure) = rule {
        answer_body = Bytes::from(kusto_partial_failure(&answer_body));
    }
    if let Some(HttpRule::Slow(d)) = rule {
        tokio::time::sleep(d).await;
    }
    let mut b = Response::builder().status(status);
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "content-length" | "connection" | "transfer-encoding"
        ) {
            b = b.header(name, value);
        }
    }
    if let Some(HttpRule::TruncateBody) = rule {
        let half = answer_body.slice(..answer_body.len() / 2);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::other("chaos proxy: truncated")),
        ];
        return b
            .header("content-length", answer_body.len().to_string())
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
    }
    b.body(Body::from(answer_body)).unwrap()
}

/// The Kusto v2 frames with `DataSetCompletion` saying the query failed part-way (a transient
/// error, `@permanent: false`), as Kusto reports e.g. a node lost mid-query.
fn kusto_partial_failure(body: &[u8]) -> Vec<u8> {
    let Ok(serde_json::Value::Array(mut frames)) = serde_json::from_slice(body) else {
        return body.to_vec();
    };
    for f in frames.iter_mut().rev() {
        if f["FrameType"] == "DataSetCompletion" {
            f["HasErrors"] = serde_json::Value::Bool(true);
            f["OneApiErrors"] = serde_json::json!([{"error": {
                "code": "ChaosPartialFailure",
                "message": "Query execution lacks memory resources to complete",
                "@message": "chaos proxy: injected partial failure",
                "@permanent": false
            }}]);
            break;
        }
    }
    serde_json::to_vec(&frames).unwrap_or_else(|_| body.to_vec())
}
