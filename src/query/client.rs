//! The HTTP side of a Kusto query: one `POST {endpoint}/v2/rest/query` per call over a shared,
//! connection-reusing reqwest client, with docs/design.md#kusto-request headers, a client timeout of server timeout + 30 s,
//! no redirects, gzip, and a body read that stops at `QueryLimits::max_bytes` (never unbounded).
//! Non-2xx answers become classified [`QueryError`]s; 200 bodies are decoded as they arrive
//! ([`V2Stream`], never held whole beside their rows), or go back to the caller as they are
//! ([`KustoClient::query_body`]). With [`KustoClient::query_within`] the bytes in flight and the
//! decoded rows are accounted in a [`Reservation`] of the query memory budget as they grow (see
//! [`super::budget`], docs/design.md#memory-budget).

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use super::auth::Authenticator;
use super::budget::{Reservation, Shortfall, over_budget};
use super::error::{QueryError, http_error};
use super::stream::V2Stream;
use super::{DataSet, QueryLimits};
use crate::azure::KustoAuth;
use crate::time::Span;
use crate::tls::{Peer, TlsConfig};

/// Client settings with defaults that match the Kusto SDKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KustoConfig {
    /// Sent as `servertimeout`; the HTTP timeout is this plus 30 s.
    pub server_timeout: Duration,
    pub connect_timeout: Duration,
    /// `x-ms-app`.
    pub app_name: String,
    /// CA bundle and verification for the cluster and its token endpoint (no client certificate).
    pub tls: TlsConfig,
}

impl Default for KustoConfig {
    fn default() -> Self {
        KustoConfig {
            server_timeout: Duration::from_secs(4 * 60),
            connect_timeout: Duration::from_secs(10),
            app_name: "adxexporter".into(),
            tls: TlsConfig::default(),
        }
    }
}

/// Client-side slack over the server timeout, as in the Python SDK.
const CLIENT_TIMEOUT_SLACK: Duration = Duration::from_secs(30);

/// Kusto API version header value sent by the current Go and Python SDKs.
const KUSTO_API_VERSION: &str = "2024-12-12";

/// A Kusto cluster endpoint plus how we authenticate to it. Cheap to share behind an `Arc`.
pub struct KustoClient {
    http: reqwest::Client,
    query_url: url::Url,
    endpoint: String,
    auth: Authenticator,
    config: KustoConfig,
}

impl std::fmt::Debug for KustoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KustoClient")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth.describe())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl KustoClient {
    pub fn new(
        endpoint: url::Url,
        auth: KustoAuth,
        config: KustoConfig,
    ) -> Result<KustoClient, QueryError> {
        let bad = |detail: &str| QueryError::BadEndpoint {
            endpoint: endpoint.to_string(),
            detail: detail.to_owned(),
        };
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(bad("the endpoint must not carry a query or fragment"));
        }
        let base = endpoint.as_str().trim_end_matches('/').to_owned();
        let query_url =
            url::Url::parse(&format!("{base}/v2/rest/query")).map_err(|e| bad(&e.to_string()))?;
        // Token requests use the same TLS settings; azure_core's own client otherwise.
        let transport = (config.tls != TlsConfig::default())
            .then(|| config.tls.azure_transport())
            .transpose()
            .map_err(|e| QueryError::Client(e.to_string()))?;
        let auth = Authenticator::new(&auth, format!("{base}/.default"), transport)?;
        let builder = (config.tls)
            .apply(reqwest::Client::builder(), Peer::Service)
            .map_err(|e| QueryError::Client(e.to_string()))?;
        let http = builder
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.server_timeout + CLIENT_TIMEOUT_SLACK)
            .connect_timeout(config.connect_timeout)
            .gzip(true)
            .build()
            .map_err(|e| QueryError::Client(error_chain(&e)))?;
        Ok(KustoClient {
            http,
            query_url,
            endpoint: base,
            auth,
            config,
        })
    }

    /// The cluster URL (no trailing slash).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The identity in use (never the token), for status messages.
    pub fn auth_description(&self) -> String {
        self.auth.describe()
    }

    /// Runs `csl` against `database` and decodes the full result, outside any memory budget.
    pub async fn query(
        &self,
        database: &str,
        csl: &str,
        limits: &QueryLimits,
    ) -> Result<DataSet, QueryError> {
        let mut unlimited = Reservation::unlimited();
        self.query_within(database, csl, limits, &mut unlimited, 0)
            .await
    }

    /// The raw body of a successful query, exactly as received (decompressed), undecoded and
    /// outside any memory budget: `preview --save-response` keeps it. [`super::decode_v2`] decodes
    /// it as [`KustoClient::query`] would.
    pub async fn query_body(
        &self,
        database: &str,
        csl: &str,
        limits: &QueryLimits,
    ) -> Result<Vec<u8>, QueryError> {
        let response = self.send(database, csl).await?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers());
        let body = self
            .read_body(response, limits, &mut Reservation::unlimited())
            .await?;
        if status == 200 {
            return Ok(body);
        }
        Err(self.answer_error(status, retry_after, &body, database))
    }

    /// Runs `csl` against `database`, decoding the body as it arrives with the in-flight bytes and
    /// the decoded rows accounted in `reservation`, waiting for budget rather than allocating past
    /// it. On success the reservation accounts the decoded rows plus `keep_per_row` bytes per
    /// primary row (what the caller's transform will need). Fails with [`QueryError::MemoryBusy`]
    /// when this query must give its reservation back and try again, and with
    /// [`QueryError::OverMemoryBudget`] when the window cannot fit at all.
    pub async fn query_within(
        &self,
        database: &str,
        csl: &str,
        limits: &QueryLimits,
        reservation: &mut Reservation,
        keep_per_row: u64,
    ) -> Result<DataSet, QueryError> {
        let response = self.send(database, csl).await?;
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = parse_retry_after(response.headers());
            let body = self.read_body(response, limits, reservation).await?;
            return Err(self.answer_error(status, retry_after, &body, database));
        }
        let (set, decoded) = self.decode_body(response, limits, reservation).await?;
        let rows: u64 = set.primary_tables().map(|t| t.row_count() as u64).sum();
        reservation.shrink_to(decoded.saturating_add(rows.saturating_mul(keep_per_row)));
        Ok(set)
    }

    /// Sends the query; the answer's body is still to be read.
    async fn send(&self, database: &str, csl: &str) -> Result<reqwest::Response, QueryError> {
        let body = serde_json::json!({
            "db": database,
            "csl": csl,
            "properties": {"Options": {
                "servertimeout": Span::from_std(self.config.server_timeout).kusto_text(),
            }},
        });
        let mut request = self
            .http
            .post(self.query_url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/json; charset=utf-8")
            .header(
                "x-ms-client-request-id",
                format!("adxexporter;{}", uuid::Uuid::new_v4()),
            )
            .header("x-ms-app", self.config.app_name.as_str())
            .header(
                "x-ms-client-version",
                concat!("adxexporter:", env!("CARGO_PKG_VERSION")),
            )
            .header("x-ms-version", KUSTO_API_VERSION)
            .body(body.to_string());
        if let Some(token) = self.auth.bearer().await? {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        request.send().await.map_err(|e| self.transport_error(e))
    }

    /// The classified error of a non-200 answer.
    fn answer_error(
        &self,
        status: u16,
        retry_after: Option<Duration>,
        body: &[u8],
        database: &str,
    ) -> QueryError {
        http_error(status, retry_after, body, &self.auth.describe(), database)
    }

    /// Checks a plain `Content-Length` against the byte limit and the budget, and reserves that
    /// much up front (the body, or the rows it decodes to, which take about as much); `Some(len)`.
    async fn announced_length(
        &self,
        response: &reqwest::Response,
        limits: &QueryLimits,
        reservation: &mut Reservation,
    ) -> Result<Option<u64>, QueryError> {
        let plain_len = response.content_length().filter(|_| {
            response
                .headers()
                .get(reqwest::header::CONTENT_ENCODING)
                .is_none()
        });
        if let Some(len) = plain_len {
            if len > limits.max_bytes as u64 {
                return Err(QueryError::TooManyBytes {
                    limit: limits.max_bytes,
                });
            }
            if reservation.budget_bytes().is_some_and(|b| len > b) {
                return Err(over_budget(reservation, len, None, limits.max_rows));
            }
            reservation.hold_at_least(len).await;
        }
        Ok(plain_len)
    }

    /// The next chunk of the (decompressed) body.
    async fn next_chunk(
        &self,
        response: &mut reqwest::Response,
    ) -> Result<Option<bytes::Bytes>, QueryError> {
        response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                self.transport_error(e)
            } else {
                QueryError::Truncated {
                    detail: format!("reading the body failed: {}", error_chain(&e)),
                }
            }
        })
    }

    /// Reads the whole body chunk by chunk, failing as soon as it passes `max_bytes`, and
    /// accounting it in `reservation` before each chunk is kept.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        limits: &QueryLimits,
        reservation: &mut Reservation,
    ) -> Result<Vec<u8>, QueryError> {
        let max_bytes = limits.max_bytes;
        self.announced_length(&response, limits, reservation)
            .await?;
        let mut body = Vec::with_capacity(
            response
                .content_length()
                .map_or(64 << 10, |l| l as usize)
                .min(max_bytes),
        );
        while let Some(chunk) = self.next_chunk(&mut response).await? {
            if body.len() + chunk.len() > max_bytes {
                return Err(QueryError::TooManyBytes { limit: max_bytes });
            }
            let used = (body.len() + chunk.len()) as u64;
            cover(reservation, used, None, limits).await?;
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Decodes a 200 body as it arrives ([`V2Stream`]): what is held — the chunk in flight, the
    /// value it cuts, the rows decoded so far — is accounted in `reservation` before each chunk is
    /// taken in (the rows a chunk decodes to are accounted with the next chunk, so the account
    /// trails the heap by at most one chunk's rows). The decoded set, and its bytes as accounted.
    async fn decode_body(
        &self,
        mut response: reqwest::Response,
        limits: &QueryLimits,
        reservation: &mut Reservation,
    ) -> Result<(DataSet, u64), QueryError> {
        let announced = self
            .announced_length(&response, limits, reservation)
            .await?;
        let mut stream = V2Stream::new(*limits, announced.map(|l| l as usize));
        let mut read = 0;
        while let Some(chunk) = self.next_chunk(&mut response).await? {
            // The stream checks the byte limit too; here it comes before the budget's verdict.
            read += chunk.len();
            if read > limits.max_bytes {
                return Err(QueryError::TooManyBytes {
                    limit: limits.max_bytes,
                });
            }
            let rows = (stream.decoded_bytes() > 0).then(|| stream.primary_rows());
            let used = stream.held_bytes() + chunk.len() as u64;
            cover(reservation, used, rows, limits).await?;
            stream.push(&chunk)?;
        }
        let rows = (stream.decoded_bytes() > 0).then(|| stream.primary_rows());
        cover(reservation, stream.held_bytes(), rows, limits).await?;
        stream.finish()
    }

    fn transport_error(&self, e: reqwest::Error) -> QueryError {
        if e.is_timeout() {
            QueryError::Timeout {
                after: self.config.server_timeout + CLIENT_TIMEOUT_SLACK,
            }
        } else {
            QueryError::Network {
                endpoint: self.endpoint.clone(),
                detail: error_chain(&e),
            }
        }
    }
}

/// Accounts `used` bytes in `reservation`; when the budget is busy, waits as the grower (see
/// [`super::budget`]) or asks the caller to restart. `rows`: primary rows decoded so far (`None`
/// before any row was decoded), for the message when the window cannot fit.
async fn cover(
    reservation: &mut Reservation,
    used: u64,
    rows: Option<usize>,
    limits: &QueryLimits,
) -> Result<(), QueryError> {
    match reservation.cover(used).await {
        Ok(()) => Ok(()),
        Err(Shortfall::Busy) => Err(restart(reservation, used)),
        Err(Shortfall::Over) => Err(over_budget(reservation, used, rows, limits.max_rows)),
    }
}

/// A query that must give its reservation back: it asks for twice what it needed so far before
/// it queries again (the body and the rows still to come), capped at the whole budget.
fn restart(reservation: &Reservation, used: u64) -> QueryError {
    let need = used.saturating_mul(2);
    QueryError::MemoryBusy {
        need: reservation.budget_bytes().map_or(need, |b| need.min(b)),
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// reqwest's Display is terse; the causes say what actually failed (refused, DNS, TLS).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const OK_BODY: &str = r#"[{"FrameType":"DataSetHeader","IsProgressive":false,"Version":"v2.0"},
{"FrameType":"DataTable","TableId":1,"TableKind":"PrimaryResult","TableName":"PrimaryResult","Columns":[{"ColumnName":"x","ColumnType":"long"}],"Rows":[[42]]},
{"FrameType":"DataSetCompletion","HasErrors":false,"Cancelled":false}]"#;

    /// What the fake server saw: the request head (lower-cased header names) and the body.
    struct Seen {
        head: String,
        body: String,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.eq_ignore_ascii_case(name)).then(|| v.trim())
            })
        }
    }

    /// Serves one connection: reads one request, answers `response` verbatim, closes.
    async fn serve_once(response: Vec<u8>) -> (url::Url, tokio::task::JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = sock.read(&mut chunk).await.unwrap();
                assert!(n > 0, "client closed before sending a request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p + 4;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let seen = Seen {
                head,
                body: String::new(),
            };
            let len: usize = seen
                .header("content-length")
                .unwrap_or("0")
                .parse()
                .unwrap();
            while buf.len() < head_end + len {
                let n = sock.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
            let _ = sock.write_all(&response).await;
            let _ = sock.shutdown().await;
            Seen { body, ..seen }
        });
        (url, task)
    }

    fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        let mut r = r.into_bytes();
        r.extend_from_slice(body);
        r
    }

    fn limits() -> QueryLimits {
        QueryLimits {
            max_rows: 100,
            max_bytes: 1 << 20,
        }
    }

    async fn run(auth: KustoAuth, reply: Vec<u8>) -> (Result<DataSet, QueryError>, Seen) {
        let (url, seen) = serve_once(reply).await;
        let client = KustoClient::new(url, auth, KustoConfig::default()).unwrap();
        let result = client.query("db1", "T | take 1", &limits()).await;
        (result, seen.await.unwrap())
    }

    #[tokio::test]
    async fn sends_spec_headers_and_body_and_decodes() {
        let reply = response(
            "200 OK",
            &[("Content-Type", "application/json")],
            OK_BODY.as_bytes(),
        );
        let (result, seen) = run(KustoAuth::None, reply).await;
        let set = result.unwrap();
        assert_eq!(
            set.primary().unwrap().row(0),
            &[crate::query::Value::Long(42)]
        );
        assert!(
            seen.head.starts_with("POST /v2/rest/query HTTP/1.1\r\n"),
            "{}",
            seen.head
        );
        assert_eq!(seen.header("accept"), Some("application/json"));
        assert_eq!(
            seen.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert_eq!(seen.header("accept-encoding"), Some("gzip"));
        assert_eq!(seen.header("x-ms-app"), Some("adxexporter"));
        assert_eq!(seen.header("x-ms-version"), Some("2024-12-12"));
        assert_eq!(
            seen.header("x-ms-client-version"),
            Some(concat!("adxexporter:", env!("CARGO_PKG_VERSION")))
        );
        let id = seen.header("x-ms-client-request-id").unwrap();
        let uuid = id.strip_prefix("adxexporter;").unwrap();
        assert!(uuid::Uuid::parse_str(uuid).is_ok(), "{id}");
        assert_eq!(seen.header("authorization"), None);
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"db": "db1", "csl": "T | take 1",
                "properties": {"Options": {"servertimeout": "00:04:00"}}})
        );
    }

    #[tokio::test]
    async fn token_file_sends_bearer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "abc.def\n").unwrap();
        let reply = response("200 OK", &[], OK_BODY.as_bytes());
        let (result, seen) = run(KustoAuth::TokenFile(path), reply).await;
        assert!(result.is_ok());
        assert_eq!(seen.header("authorization"), Some("Bearer abc.def"));
    }

    #[tokio::test]
    async fn gzip_response_is_decoded() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(OK_BODY.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        let reply = response("200 OK", &[("Content-Encoding", "gzip")], &gz);
        let (result, _) = run(KustoAuth::None, reply).await;
        assert_eq!(result.unwrap().primary().unwrap().row_count(), 1);
    }

    #[tokio::test]
    async fn byte_limit_stops_the_read() {
        let big = vec![b' '; 2 << 20];
        // Without Content-Length (read until close), so the streaming check is what stops it.
        let mut reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        reply.extend_from_slice(&big);
        let (result, _) = run(KustoAuth::None, reply).await;
        let err = result.unwrap_err();
        assert!(
            matches!(err, QueryError::TooManyBytes { limit } if limit == 1 << 20),
            "{err:?}"
        );
        assert!(err.is_permanent());
        // With a Content-Length beyond the limit it fails before reading.
        let (result, _) = run(KustoAuth::None, response("200 OK", &[], &big)).await;
        assert!(matches!(result, Err(QueryError::TooManyBytes { .. })));
    }

    #[tokio::test]
    async fn throttled_carries_retry_after() {
        let reply = response(
            "429 Too Many Requests",
            &[("Retry-After", "7")],
            b"slow down",
        );
        let (result, _) = run(KustoAuth::None, reply).await;
        let err = result.unwrap_err();
        assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
        assert!(!err.is_permanent());
        assert_eq!(err.kind(), "throttled");
        assert!(err.to_string().contains("slow down"));
    }

    #[tokio::test]
    async fn service_unavailable_is_transient() {
        let reply = response("503 Service Unavailable", &[], b"");
        let (result, _) = run(KustoAuth::None, reply).await;
        let err = result.unwrap_err();
        assert!(!err.is_permanent());
        assert_eq!(err.kind(), "server");
    }

    #[tokio::test]
    async fn bad_request_one_api_error_is_permanent_with_message() {
        let body = br#"{"error":{"code":"General_BadRequest","message":"Request is invalid and cannot be executed.","@type":"Kusto.Data.Exceptions.KustoBadRequestException","@message":"Semantic error: SEM0100: 'x' column not found","@permanent":true}}"#;
        let (result, _) = run(KustoAuth::None, response("400 Bad Request", &[], body)).await;
        let err = result.unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(err.kind(), "bad_request");
        match &err {
            QueryError::Http { status: 400, error } => {
                assert_eq!(error.code.as_deref(), Some("General_BadRequest"));
                assert_eq!(
                    error.message,
                    "Semantic error: SEM0100: 'x' column not found"
                );
                assert_eq!(error.permanent, Some(true));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn unauthorized_names_the_auth_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "t").unwrap();
        let (result, _) = run(
            KustoAuth::TokenFile(path.clone()),
            response("401 Unauthorized", &[], b""),
        )
        .await;
        let err = result.unwrap_err();
        assert!(err.is_permanent());
        assert_eq!(err.kind(), "auth");
        assert!(
            err.to_string()
                .contains(&format!("token-file:{}", path.display())),
            "{err}"
        );
    }

    #[tokio::test]
    async fn not_found_and_redirects_are_permanent() {
        let (result, _) = run(
            KustoAuth::None,
            response(
                "404 Not Found",
                &[],
                b"{\"error\":{\"code\":\"General_DatabaseNotFound\",\"message\":\"no db\"}}",
            ),
        )
        .await;
        let err = result.unwrap_err();
        assert!(matches!(&err, QueryError::DatabaseNotFound { database, .. } if database == "db1"));
        assert!(err.is_permanent());
        let (result, _) = run(
            KustoAuth::None,
            response("302 Found", &[("Location", "http://127.0.0.1:1/")], b""),
        )
        .await;
        assert!(matches!(result, Err(QueryError::Http { status: 302, .. })));
    }

    #[tokio::test]
    async fn connection_refused_is_transient_network() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = url::Url::parse(&format!("http://{addr}")).unwrap();
        let client = KustoClient::new(url, KustoAuth::None, KustoConfig::default()).unwrap();
        let err = client.query("db", "T", &limits()).await.unwrap_err();
        assert!(matches!(err, QueryError::Network { .. }), "{err:?}");
        assert!(!err.is_permanent());
        assert_eq!(err.kind(), "network");
    }

    /// A v2 body of `rows` rows `[i, label, 1.5]` whose label column repeats one `label`.
    fn rows_body(rows: usize, label: &str) -> Vec<u8> {
        let cells: Vec<String> = (0..rows)
            .map(|i| format!("[{i},\"{label}\",1.5]"))
            .collect();
        let columns = [("i", "long"), ("l", "string"), ("v", "real")];
        crate::query::test_body(&columns, &cells, ",")
    }

    /// A 200 without Content-Length: the body ends when the connection closes, so it is streamed.
    fn streamed(body: &[u8]) -> Vec<u8> {
        let mut reply = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        reply.extend_from_slice(body);
        reply
    }

    async fn query_within(
        reply: Vec<u8>,
        reservation: &mut Reservation,
        keep_per_row: u64,
    ) -> Result<DataSet, QueryError> {
        let (url, seen) = serve_once(reply).await;
        let client = KustoClient::new(url, KustoAuth::None, KustoConfig::default()).unwrap();
        let result =
            (client.query_within("db1", "T", &limits_rows(100_000), reservation, keep_per_row))
                .await;
        seen.await.unwrap();
        result
    }

    fn limits_rows(max_rows: usize) -> QueryLimits {
        QueryLimits {
            max_rows,
            max_bytes: 1 << 20,
        }
    }

    #[tokio::test]
    async fn a_response_larger_than_the_budget_fails_whether_announced_or_streamed() {
        use crate::query::MemoryBudget;
        let budget = MemoryBudget::new(8 << 10);
        let body = rows_body(2000, "x");
        assert!(body.len() > 8 << 10);
        // Announced, it fails before a byte is read; streamed, once its rows pass the budget (the
        // body itself is never held whole).
        for (reply, rows, what) in [
            (
                response("200 OK", &[], &body),
                false,
                "the Kusto response alone is larger",
            ),
            (
                streamed(&body),
                true,
                "the Kusto response and its decoded rows need more",
            ),
        ] {
            let mut r = budget.reserve(0).await;
            let err = query_within(reply, &mut r, 0).await.unwrap_err();
            assert!(
                matches!(err, QueryError::OverMemoryBudget { rows: r, .. } if r.is_some() == rows),
                "{err:?}"
            );
            assert!(err.is_permanent());
            assert_eq!(err.kind(), "over_memory_budget");
            let text = err.to_string();
            for part in [
                "--query-memory-budget (8 KiB)",
                what,
                "spec.maxRows = 100000",
            ] {
                assert!(text.contains(part), "{part:?} not in {text}");
            }
            drop(r);
            assert_eq!(budget.reserved_bytes(), 0);
        }
    }

    #[tokio::test]
    async fn decoded_rows_that_cannot_fit_fail_naming_the_rows_decoded() {
        use crate::query::MemoryBudget;
        // 3000 rows of ~16 bytes: the body (~48 KB) fits in 100 KiB, its 9000 cells (144 KB) do not.
        let body = rows_body(3000, "a");
        assert!(body.len() < 50_000, "{}", body.len());
        let budget = MemoryBudget::new(100 << 10);
        for reply in [response("200 OK", &[], &body), streamed(&body)] {
            let mut r = budget.reserve(0).await;
            let err = query_within(reply, &mut r, 0).await.unwrap_err();
            let QueryError::OverMemoryBudget {
                rows: Some(rows), ..
            } = err
            else {
                panic!("{err:?}")
            };
            assert!(rows > 0 && rows < 3000, "{rows}");
            assert!(
                err.to_string()
                    .contains("the Kusto response and its decoded rows need more"),
                "{err}"
            );
        }
        assert_eq!(budget.reserved_bytes(), 0);
    }

    #[tokio::test]
    async fn a_window_that_fits_keeps_its_rows_and_transform_room_accounted() {
        use crate::query::MemoryBudget;
        let budget = MemoryBudget::new(1 << 20);
        let body = rows_body(1000, "label");
        let mut r = budget.reserve(0).await;
        let set = query_within(streamed(&body), &mut r, 64).await.unwrap();
        assert_eq!(set.primary().unwrap().row_count(), 1000);
        // 16 bytes per cell, one allocation for the repeated label ("label": 5 + 24 → 32).
        let decoded = 1000 * 3 * 16 + 32;
        assert_eq!(r.used_bytes(), decoded + 1000 * 64);
        assert!(r.held_bytes() >= r.used_bytes());
        assert_eq!(budget.reserved_bytes(), r.held_bytes());
        // The peak: the rows and the transform's room. Before, the rows with the bytes in flight
        // (less than the whole body: it is never held whole).
        assert!((body.len() as u64) < 1000 * 64);
        assert_eq!(r.peak_bytes(), decoded + 1000 * 64);
        drop(r);
        assert_eq!(budget.reserved_bytes(), 0);
    }

    #[tokio::test]
    async fn a_busy_budget_makes_one_query_wait_and_the_next_give_back() {
        use crate::query::MemoryBudget;
        let budget = MemoryBudget::new(64 << 10);
        let mut other = budget.reserve(56 << 10).await;
        other.try_cover(56 << 10).unwrap();
        // ~18 KB of body and ~15 KB of rows: fits the budget, not the 8 KiB left free.
        let label = "a-label-that-repeats-in-every-row-of-the-window";
        let body = rows_body(300, label);
        let (url, seen) = serve_once(streamed(&body)).await;
        let first = tokio::spawn({
            let budget = budget.clone();
            async move {
                let client =
                    KustoClient::new(url, KustoAuth::None, KustoConfig::default()).unwrap();
                let mut r = budget.reserve(0).await;
                let result = (client.query_within("db1", "T", &limits_rows(1000), &mut r, 0)).await;
                (result, r)
            }
        });
        // The first query runs out of free units and waits for more, holding what it read.
        while !budget.grower_waiting() {
            assert!(!first.is_finished(), "{:?}", first.await.unwrap().0);
            tokio::task::yield_now().await;
        }
        // A second query meanwhile may not wait while holding: it gives everything back.
        let mut second = budget.reserve(0).await;
        let err = query_within(streamed(&body), &mut second, 0)
            .await
            .unwrap_err();
        let QueryError::MemoryBusy { need } = err else {
            panic!("{err:?}")
        };
        assert!(need > 0 && need <= 64 << 10, "{need}");
        assert!(!err.is_permanent());
        drop(second);
        // When the other holder finishes, the waiting query gets its units and completes.
        drop(other);
        let (result, r) = first.await.unwrap();
        seen.await.unwrap();
        assert_eq!(result.unwrap().primary().unwrap().row_count(), 300);
        drop(r);
        assert_eq!(budget.reserved_bytes(), 0);
    }

    #[tokio::test]
    async fn cut_body_is_truncated() {
        let cut = &OK_BODY.as_bytes()[..OK_BODY.len() - 20];
        let mut reply = format!(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            OK_BODY.len()
        )
        .into_bytes();
        reply.extend_from_slice(cut);
        let (result, _) = run(KustoAuth::None, reply).await;
        let err = result.unwrap_err();
        assert!(matches!(err, QueryError::Truncated { .. }), "{err:?}");
        assert!(!err.is_permanent());
    }

    #[test]
    fn endpoint_validation() {
        let bad = url::Url::parse("ftp://x").unwrap();
        assert!(matches!(
            KustoClient::new(bad, KustoAuth::None, KustoConfig::default()),
            Err(QueryError::BadEndpoint { .. })
        ));
    }

    #[test]
    fn client_secret_without_env_says_what_is_missing() {
        // The test environment carries no Azure credentials.
        assert!(std::env::var_os("AZURE_CLIENT_SECRET").is_none());
        let url = url::Url::parse("https://c.kusto.windows.net").unwrap();
        let err = KustoClient::new(url, KustoAuth::ClientSecret, KustoConfig::default())
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("client-secret needs AZURE_TENANT_ID"),
            "{err}"
        );
        assert!(err.is_permanent());
    }

    #[test]
    fn azure_modes_build_or_explain() {
        // Managed identity and Azure CLI credentials can always be built; they fail at token time.
        for mode in [
            KustoAuth::ManagedIdentity,
            KustoAuth::AzureCli,
            KustoAuth::Auto,
        ] {
            let url = url::Url::parse("https://c.kusto.windows.net").unwrap();
            assert!(
                KustoClient::new(url, mode.clone(), KustoConfig::default()).is_ok(),
                "{mode}"
            );
        }
        let url = url::Url::parse("https://c.kusto.windows.net").unwrap();
        let err = KustoClient::new(url, KustoAuth::WorkloadIdentity, KustoConfig::default())
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("AZURE_FEDERATED_TOKEN_FILE"),
            "{err}"
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(12)));
        h.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
    }
}
