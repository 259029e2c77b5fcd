//! Outcome classification of one HTTP push attempt (docs/design.md#retry-matrix retry matrix): a pure function from what
//! the receiver answered (or how the connection failed) to what the drain loop does next.
//!
//! | answer | remote write | OTLP/HTTP |
//! |---|---|---|
//! | 2xx | success | success |
//! | 429 | retry | retry |
//! | 502, 503, 504 | retry | retry |
//! | other 5xx | retry | **permanent** (the OTLP spec lists only 429/502/503/504 as retryable) |
//! | connect error, timeout, connection dropped, credentials unavailable | retry | retry |
//! | 3xx (redirects are not followed), other 4xx, 1xx | permanent, body kept | permanent, body kept |
//!
//! Both honour `Retry-After` (seconds or HTTP date, see [`parse_retry_after`]) on retryable answers.
//! Note: Prometheus 2.42 answers 500 for duplicate label names and for `too old sample`, which the
//! remote-write spec makes retryable: the drain loop retries them without a cap (the backlog grows and
//! the push-failing alert fires), since a cap would dead-letter windows during a long real outage.
//! `reason` strings are a small fixed set so they can be metric label values.
//!
//! OTLP/gRPC answers with a gRPC status instead ([`classify_grpc`], the OTLP spec's table):
//! CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and DATA_LOSS retry;
//! RESOURCE_EXHAUSTED retries only when the server attached a `RetryInfo` (it can recover), else it
//! is permanent; every other code (INVALID_ARGUMENT, UNAUTHENTICATED, UNIMPLEMENTED, INTERNAL, …) is
//! permanent. A `RetryInfo` delay is honoured like `Retry-After`. Connection failures reach us as
//! UNAVAILABLE (tonic's mapping), so they retry.

use std::time::{Duration, SystemTime};

/// Which output protocol's retry rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    RemoteWrite,
    Otlp,
}

/// How a request failed below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransportFailure {
    /// No connection could be made (refused, DNS, TLS handshake).
    Connect,
    /// The request timeout elapsed.
    Timeout,
    /// The connection broke mid-request or the response was malformed.
    Broken,
    /// The output's credentials could not be read or fetched (token file, Azure token endpoint).
    Credentials,
}

/// What one push attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Attempt<'a> {
    /// The receiver answered: status, parsed `Retry-After`, and a capped prefix of the body.
    Answered {
        status: u16,
        retry_after: Option<Duration>,
        body: &'a str,
    },
    /// No HTTP answer.
    Failed(TransportFailure),
}

/// What the drain loop does with the request (and so with its window).
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    Success,
    /// Try again later; `after` is the server's `Retry-After` when it sent one.
    Retry {
        after: Option<Duration>,
        reason: &'static str,
    },
    /// Never retry: dead-letter with the status (none for local failures) and the receiver's body.
    Permanent {
        reason: &'static str,
        status: Option<u16>,
        body: String,
    },
}

impl Disposition {
    /// The short, bounded label for metrics (`ok` for success).
    pub fn reason(&self) -> &'static str {
        match self {
            Disposition::Success => "ok",
            Disposition::Retry { reason, .. } | Disposition::Permanent { reason, .. } => reason,
        }
    }
}

/// Classifies one attempt under `protocol`'s retry rules.
pub(crate) fn classify(protocol: Protocol, attempt: &Attempt<'_>) -> Disposition {
    match *attempt {
        Attempt::Failed(failure) => Disposition::Retry {
            after: None,
            reason: transport_reason(failure),
        },
        Attempt::Answered {
            status,
            retry_after,
            body,
        } => classify_status(protocol, status, retry_after, body),
    }
}

fn classify_status(
    protocol: Protocol,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
) -> Disposition {
    let retry = |reason| Disposition::Retry {
        after: retry_after,
        reason,
    };
    let permanent = |reason| Disposition::Permanent {
        reason,
        status: Some(status),
        body: body.to_owned(),
    };
    match status {
        200..=299 => Disposition::Success,
        429 => retry("throttled"),
        502..=504 => retry("unavailable"),
        500..=599 => match protocol {
            Protocol::RemoteWrite => retry("server_error"),
            Protocol::Otlp => permanent("server_error"),
        },
        413 => permanent("too_large"),
        400..=499 => permanent("rejected"),
        300..=399 => permanent("redirect"),
        _ => permanent("unexpected_status"),
    }
}

fn transport_reason(failure: TransportFailure) -> &'static str {
    match failure {
        TransportFailure::Connect => "connect",
        TransportFailure::Timeout => "timeout",
        TransportFailure::Broken => "connection_broken",
        TransportFailure::Credentials => "credentials",
    }
}

/// Classifies an OTLP/gRPC answer: its status code, the `RetryInfo` delay if the server sent one,
/// and its message (kept as the dead-letter body).
pub(crate) fn classify_grpc(
    code: tonic::Code,
    retry_info: Option<Duration>,
    message: &str,
) -> Disposition {
    use tonic::Code;
    let retry = |reason| Disposition::Retry {
        after: retry_info,
        reason,
    };
    let permanent = |reason| Disposition::Permanent {
        reason,
        status: None,
        body: format!("gRPC {}: {message}", grpc_code_name(code)),
    };
    match code {
        Code::Ok => Disposition::Success,
        Code::Unavailable => retry("unavailable"),
        Code::DeadlineExceeded => retry("timeout"),
        Code::Cancelled => retry("cancelled"),
        Code::Aborted | Code::OutOfRange | Code::DataLoss => retry("server_error"),
        Code::ResourceExhausted if retry_info.is_some() => retry("throttled"),
        Code::ResourceExhausted => permanent("resource_exhausted"),
        Code::Unauthenticated | Code::PermissionDenied => permanent("unauthorized"),
        Code::Unimplemented => permanent("unimplemented"),
        Code::Internal | Code::Unknown => permanent("server_error"),
        Code::InvalidArgument | Code::NotFound | Code::AlreadyExists | Code::FailedPrecondition => {
            permanent("rejected")
        }
    }
}

/// The canonical upper-case name of a gRPC code, as the OTLP spec writes it.
pub(crate) fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Parses a `Retry-After` value: delay-seconds, or an HTTP date (a date in the past means "now", zero).
/// Anything else is ignored (`None`): the caller's own backoff applies.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(status: u16, retry_after: Option<u64>) -> Attempt<'static> {
        Attempt::Answered {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: "the body",
        }
    }

    fn retry(after: Option<u64>, reason: &'static str) -> Disposition {
        Disposition::Retry {
            after: after.map(Duration::from_secs),
            reason,
        }
    }

    fn permanent(status: u16, reason: &'static str) -> Disposition {
        Disposition::Permanent {
            reason,
            status: Some(status),
            body: "the body".to_owned(),
        }
    }

    #[test]
    fn retry_matrix_row_by_row() {
        use Protocol::{Otlp, RemoteWrite};
        let rows: Vec<(Protocol, Attempt<'static>, Disposition)> = vec![
            (RemoteWrite, answered(200, None), Disposition::Success),
            (RemoteWrite, answered(204, None), Disposition::Success),
            (Otlp, answered(200, None), Disposition::Success),
            (Otlp, answered(202, Some(5)), Disposition::Success),
            (RemoteWrite, answered(429, None), retry(None, "throttled")),
            (
                RemoteWrite,
                answered(429, Some(7)),
                retry(Some(7), "throttled"),
            ),
            (Otlp, answered(429, Some(2)), retry(Some(2), "throttled")),
            (
                RemoteWrite,
                answered(500, None),
                retry(None, "server_error"),
            ),
            (Otlp, answered(500, None), permanent(500, "server_error")),
            (
                RemoteWrite,
                answered(501, None),
                retry(None, "server_error"),
            ),
            (Otlp, answered(501, Some(3)), permanent(501, "server_error")),
            (RemoteWrite, answered(502, None), retry(None, "unavailable")),
            (Otlp, answered(502, None), retry(None, "unavailable")),
            (
                RemoteWrite,
                answered(503, Some(1)),
                retry(Some(1), "unavailable"),
            ),
            (Otlp, answered(503, Some(1)), retry(Some(1), "unavailable")),
            (Otlp, answered(504, None), retry(None, "unavailable")),
            (RemoteWrite, answered(504, None), retry(None, "unavailable")),
            (
                RemoteWrite,
                answered(505, None),
                retry(None, "server_error"),
            ),
            (Otlp, answered(599, None), permanent(599, "server_error")),
            (RemoteWrite, answered(400, None), permanent(400, "rejected")),
            (Otlp, answered(400, Some(9)), permanent(400, "rejected")),
            (RemoteWrite, answered(401, None), permanent(401, "rejected")),
            (Otlp, answered(404, None), permanent(404, "rejected")),
            (RemoteWrite, answered(408, None), permanent(408, "rejected")),
            (
                RemoteWrite,
                answered(413, None),
                permanent(413, "too_large"),
            ),
            (Otlp, answered(413, None), permanent(413, "too_large")),
            (Otlp, answered(415, None), permanent(415, "rejected")),
            (RemoteWrite, answered(301, None), permanent(301, "redirect")),
            (Otlp, answered(307, None), permanent(307, "redirect")),
            (
                RemoteWrite,
                answered(101, None),
                permanent(101, "unexpected_status"),
            ),
            (
                Otlp,
                answered(600, None),
                permanent(600, "unexpected_status"),
            ),
            (
                RemoteWrite,
                Attempt::Failed(TransportFailure::Connect),
                retry(None, "connect"),
            ),
            (
                Otlp,
                Attempt::Failed(TransportFailure::Connect),
                retry(None, "connect"),
            ),
            (
                RemoteWrite,
                Attempt::Failed(TransportFailure::Timeout),
                retry(None, "timeout"),
            ),
            (
                Otlp,
                Attempt::Failed(TransportFailure::Timeout),
                retry(None, "timeout"),
            ),
            (
                Otlp,
                Attempt::Failed(TransportFailure::Broken),
                retry(None, "connection_broken"),
            ),
            (
                RemoteWrite,
                Attempt::Failed(TransportFailure::Broken),
                retry(None, "connection_broken"),
            ),
        ];
        for (protocol, attempt, want) in rows {
            assert_eq!(
                classify(protocol, &attempt),
                want,
                "{protocol:?} {attempt:?}"
            );
        }
    }

    #[test]
    fn reason_labels_are_bounded() {
        let all: std::collections::BTreeSet<&str> = (0..=1000u16)
            .flat_map(|s| {
                [Protocol::RemoteWrite, Protocol::Otlp]
                    .map(|p| classify(p, &answered(s, None)).reason())
            })
            .collect();
        assert!(all.len() <= 8, "{all:?}");
    }

    #[test]
    fn grpc_codes_follow_the_otlp_table() {
        use tonic::Code;
        let wait = Some(Duration::from_secs(4));
        let retryable = [
            (Code::Cancelled, "cancelled"),
            (Code::DeadlineExceeded, "timeout"),
            (Code::Aborted, "server_error"),
            (Code::OutOfRange, "server_error"),
            (Code::Unavailable, "unavailable"),
            (Code::DataLoss, "server_error"),
        ];
        for (code, reason) in retryable {
            assert_eq!(
                classify_grpc(code, None, "m"),
                Disposition::Retry {
                    after: None,
                    reason
                },
                "{code:?}"
            );
            assert_eq!(
                classify_grpc(code, wait, "m"),
                Disposition::Retry {
                    after: wait,
                    reason
                },
                "{code:?} honours RetryInfo"
            );
        }
        let permanent = [
            (Code::Unknown, "server_error"),
            (Code::InvalidArgument, "rejected"),
            (Code::NotFound, "rejected"),
            (Code::AlreadyExists, "rejected"),
            (Code::PermissionDenied, "unauthorized"),
            (Code::FailedPrecondition, "rejected"),
            (Code::Unimplemented, "unimplemented"),
            (Code::Internal, "server_error"),
            (Code::Unauthenticated, "unauthorized"),
            (Code::ResourceExhausted, "resource_exhausted"),
        ];
        for (code, reason) in permanent {
            let got = classify_grpc(code, None, "bad points");
            let Disposition::Permanent {
                reason: r,
                status,
                body,
            } = got
            else {
                panic!("{code:?} must be permanent, got {got:?}");
            };
            assert_eq!((r, status), (reason, None), "{code:?}");
            assert!(body.ends_with(": bad points"), "{body}");
            assert!(body.contains(grpc_code_name(code)), "{body}");
        }
        assert_eq!(
            classify_grpc(Code::ResourceExhausted, wait, "slow down"),
            Disposition::Retry {
                after: wait,
                reason: "throttled"
            },
            "RESOURCE_EXHAUSTED with RetryInfo: the server can recover"
        );
        assert_eq!(classify_grpc(Code::Ok, None, ""), Disposition::Success);
    }

    #[test]
    fn retry_after_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retry_after_http_date() {
        // 1994-11-06T08:49:37Z, the RFC 9110 example date.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let value = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(
            parse_retry_after(value, date - Duration::from_secs(90)),
            Some(Duration::from_secs(90))
        );
        assert_eq!(parse_retry_after(value, date), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(value, date + Duration::from_secs(3600)),
            Some(Duration::ZERO),
            "a date in the past means retry now"
        );
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37", date), None);
    }
}
