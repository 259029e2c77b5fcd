//! The HTTP edge shared by both sinks: one reused `reqwest::Client` per output (keep-alive connections),
//! a POST with fixed headers, redirects not followed, a per-request timeout, and a response body read
//! up to a cap. It turns whatever happened into an owned [`Sent`] for [`crate::sink::retry::classify`].
//!
//! Security: the client gets the output's TLS settings ([`crate::tls`]) and every request the
//! output's auth headers ([`super::auth`]). A 401 makes the credential renew (Azure) and the request
//! go once more; a 401 or 403 that stands is permanent, and its dead-letter reason names the identity
//! (and scope) that was refused so the fix is obvious. Credentials that cannot be read are retried.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderValue, RETRY_AFTER};

use super::auth::{OutputAuth, OutputAuthConfig};
use super::retry::{Attempt, Disposition, Protocol, TransportFailure, classify, parse_retry_after};
use super::split::Chunk;
use super::{Delivered, MAX_RESPONSE_BODY, PushFailure, PushResult, SinkError, USER_AGENT};
use crate::tls::{Peer, TlsConfig, error_chain};

/// What one POST produced, owned (the body is capped at [`MAX_RESPONSE_BODY`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Sent {
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        body: Vec<u8>,
    },
    Failed(TransportFailure),
}

impl Sent {
    /// The body as text for dead-letter reasons (lossy: receivers may answer with anything).
    pub(crate) fn body_text(&self) -> String {
        match self {
            Sent::Answered { body, .. } => String::from_utf8_lossy(body).into_owned(),
            Sent::Failed(_) => String::new(),
        }
    }

    /// The status, if the receiver answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Sent::Answered { status, .. } => Some(*status),
            Sent::Failed(_) => None,
        }
    }

    /// Borrowed view for classification; `text` is [`Sent::body_text`].
    pub fn attempt<'a>(&self, text: &'a str) -> Attempt<'a> {
        match self {
            Sent::Answered {
                status,
                retry_after,
                ..
            } => Attempt::Answered {
                status: *status,
                retry_after: *retry_after,
                body: text,
            },
            Sent::Failed(f) => Attempt::Failed(*f),
        }
    }
}

/// A POST target with its fixed headers.
#[derive(Debug, Clone)]
pub(crate) struct Poster {
    /// The output's name for logs: `remote_write`, `otlp`.
    output: &'static str,
    client: reqwest::Client,
    endpoint: url::Url,
    headers: HeaderMap,
    auth: Arc<OutputAuth>,
}

/// What secures an output's connection: its auth headers and the process's TLS settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Security<'a> {
    pub auth: &'a OutputAuthConfig,
    pub tls: &'a TlsConfig,
}

impl Poster {
    /// Builds the client. `content_encoding` is `snappy` or `gzip`; `extra` are protocol headers.
    pub fn new(
        output: &'static str,
        endpoint: url::Url,
        timeout: Duration,
        content_encoding: &'static str,
        extra: &[(&'static str, &'static str)],
        security: Security<'_>,
    ) -> Result<Poster, SinkError> {
        security.auth.warn_if_plaintext(output, &endpoint);
        let auth = Arc::new(OutputAuth::new(output, security.auth, security.tls)?);
        // Also installs the ring provider that reqwest's `rustls-no-provider` needs.
        let builder = security
            .tls
            .apply(reqwest::Client::builder(), Peer::Output)?;
        let client = builder
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| SinkError::Client { output, source })?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static(content_encoding));
        for (name, value) in extra {
            headers.insert(*name, HeaderValue::from_static(value));
        }
        Ok(Poster {
            output,
            client,
            endpoint,
            headers,
            auth,
        })
    }

    pub fn endpoint(&self) -> &url::Url {
        &self.endpoint
    }

    /// The identity requests are sent with (never a secret), for messages.
    pub fn identity(&self) -> String {
        self.auth.describe()
    }

    /// POSTs `body` and reads at most [`MAX_RESPONSE_BODY`] bytes of the answer; after a 401, once
    /// more if the credential could be renewed.
    pub async fn post(&self, body: Bytes) -> Sent {
        let (sent, generation) = self.post_once(body.clone()).await;
        if sent.status() == Some(401) && self.auth.renew(generation, "401").await {
            return self.post_once(body).await.0;
        }
        sent
    }

    /// One POST, and the credential generation it carried.
    async fn post_once(&self, body: Bytes) -> (Sent, u64) {
        let mut headers = self.headers.clone();
        let generation = match self.auth.headers().await {
            Ok(auth) => {
                headers.extend(auth.headers);
                auth.generation
            }
            Err(e) => {
                tracing::warn!(output = self.output, "{e}");
                return (Sent::Failed(TransportFailure::Credentials), 0);
            }
        };
        (self.send(headers, body).await, generation)
    }

    async fn send(&self, headers: HeaderMap, body: Bytes) -> Sent {
        let sent = self
            .client
            .post(self.endpoint.clone())
            .headers(headers)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(e) => {
                // The retry line names only the class ("connect"); the cause (refused, DNS, a
                // certificate the CA bundle does not cover) is what the operator needs.
                tracing::warn!(output = self.output, "request failed: {}", error_chain(&e));
                return Sent::Failed(transport_failure(&e));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        match read_capped(response, MAX_RESPONSE_BODY).await {
            Ok(body) => Sent::Answered {
                status,
                retry_after,
                body,
            },
            // A 2xx whose body broke was still accepted; anything else failed mid-answer.
            Err(_) if (200..300).contains(&status) => Sent::Answered {
                status,
                retry_after,
                body: Vec::new(),
            },
            Err(e) => Sent::Failed(transport_failure(&e)),
        }
    }
}

fn transport_failure(e: &reqwest::Error) -> TransportFailure {
    if e.is_timeout() {
        TransportFailure::Timeout
    } else if e.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Broken
    }
}

/// Reads the body up to `cap` bytes and drops the rest unread (the connection is then not reused).
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if out.len() >= cap {
            break;
        }
    }
    Ok(out)
}

/// One request of a window, encoded and ready to send.
pub struct Request<'w> {
    /// The body, or why it could not be encoded (a permanent failure of the window).
    pub body: Result<Bytes, String>,
    /// Samples (OTLP: data points) it carries.
    pub samples: usize,
    /// Name of its first series, for the oversized-series warning.
    pub first_series: &'w str,
}

/// Sends requests `first..chunks.len()` of one window in order, stopping at the first that does not
/// succeed; the failure names that request so a retry resumes there. `encode(k)` builds request `k`;
/// `accepted` reads a 2xx answer and returns the points the receiver rejected anyway (OTLP partial
/// success). Shared by both sinks so they cannot drift apart in how a window is pushed.
pub(crate) async fn send_window<'w>(
    poster: &Poster,
    protocol: Protocol,
    chunks: &[Chunk],
    first: usize,
    limit: usize,
    mut encode: impl FnMut(usize, &Chunk) -> Request<'w>,
    accepted: impl Fn(&Sent) -> u64,
) -> PushResult {
    let mut delivered = Delivered {
        window_requests: chunks.len(),
        ..Delivered::default()
    };
    for (k, chunk) in chunks.iter().enumerate().skip(first) {
        let request = encode(k, chunk);
        if chunk.oversized {
            tracing::warn!(
                output = poster.output,
                series = request.first_series,
                bytes = chunk.bytes,
                limit,
                "one series is larger than max_request_bytes; sending it alone"
            );
            delivered.oversized_requests += 1;
        }
        let failure = |disposition, status| PushFailure {
            disposition,
            status,
            failed_request: k,
            window_requests: chunks.len(),
        };
        let body = match request.body {
            Ok(b) => b,
            Err(e) => {
                let d = Disposition::Permanent {
                    reason: "encode",
                    status: None,
                    body: e,
                };
                return Err(failure(d, None));
            }
        };
        let sent = poster.post(body).await;
        let text = sent.body_text();
        match classify(protocol, &sent.attempt(&text)) {
            Disposition::Success => {
                delivered.requests += 1;
                delivered.samples += request.samples;
                delivered.rejected_points += accepted(&sent);
            }
            Disposition::Permanent {
                reason,
                status: Some(status @ (401 | 403)),
                body,
            } => {
                let body = format!(
                    "the receiver refused {} ({status}): {body}",
                    poster.identity()
                );
                let d = Disposition::Permanent {
                    reason,
                    status: Some(status),
                    body,
                };
                return Err(failure(d, Some(status)));
            }
            other => return Err(failure(other, sent.status())),
        }
    }
    Ok(delivered)
}
