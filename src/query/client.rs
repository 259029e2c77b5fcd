//! The HTTP side of a Kusto query: one `POST {endpoint}/v2/rest/query` per call over a shared,
//! connection-reusing reqwest client, with SPEC §5 headers, a client timeout of server timeout + 30 s,
//! no redirects, gzip, and a body read that stops at `QueryLimits::max_bytes` (never unbounded).
//! Non-2xx answers become classified [`QueryError`]s; 200 bodies go to the pure [`decode_v2`].

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};

use super::auth::{Authenticator, KustoAuth};
use super::error::{QueryError, http_error};
use super::{DataSet, QueryLimits, decode_v2};
use crate::time::Span;

/// Client settings with defaults that match the Kusto SDKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KustoConfig {
    /// Sent as `servertimeout`; the HTTP timeout is this plus 30 s.
    pub server_timeout: Duration,
    pub connect_timeout: Duration,
    /// `x-ms-app`.
    pub app_name: String,
}

impl Default for KustoConfig {
    fn default() -> Self {
        KustoConfig {
            server_timeout: Duration::from_secs(4 * 60),
            connect_timeout: Duration::from_secs(10),
            app_name: "adxexporter".into(),
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

/// reqwest is built with `rustls-no-provider`: the ring provider must be installed once per process.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
        let query_url = url::Url::parse(&format!("{base}/v2/rest/query"))
            .map_err(|e| bad(&e.to_string()))?;
        let auth = Authenticator::new(&auth, format!("{base}/.default"))?;
        install_crypto_provider();
        let http = reqwest::Client::builder()
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

    /// Runs `csl` against `database` and decodes the full result.
    pub async fn query(
        &self,
        database: &str,
        csl: &str,
        limits: &QueryLimits,
    ) -> Result<DataSet, QueryError> {
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
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers());
        let body = self.read_body(response, limits.max_bytes).await?;
        if status == 200 {
            return decode_v2(&body, limits);
        }
        Err(http_error(
            status,
            retry_after,
            &body,
            &self.auth.describe(),
            database,
        ))
    }

    /// Reads the (decompressed) body chunk by chunk, failing as soon as it passes `max_bytes`.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        max_bytes: usize,
    ) -> Result<Vec<u8>, QueryError> {
        if let Some(len) = response.content_length()
            && len > max_bytes as u64
            && response.headers().get(reqwest::header::CONTENT_ENCODING).is_none()
        {
            return Err(QueryError::TooManyBytes { limit: max_bytes });
        }
        let mut body = Vec::with_capacity(
            response
                .content_length()
                .map_or(64 << 10, |l| l as usize)
                .min(max_bytes),
        );
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            if e.is_timeout() {
                self.transport_error(e)
            } else {
                QueryError::Truncated {
                    detail: format!("reading the body failed: {}", error_chain(&e)),
                }
            }
        })? {
            if body.len() + chunk.len() > max_bytes {
                return Err(QueryError::TooManyBytes { limit: max_bytes });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
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
