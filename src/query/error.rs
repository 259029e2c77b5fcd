//! What can go wrong while querying Kusto, and what happens next: every failure is a [`QueryError`]
//! whose [`QueryError::is_permanent`] follows docs/design.md#window-failures (transient: network, timeouts, 429, 5xx,
//! truncated bodies; permanent: semantic 400s, `@permanent: true`, missing database, auth refusals,
//! limits, schema/type errors) and whose [`QueryError::kind`] is a short, bounded metric label.
//!
//! Kusto's own error objects (OneApiErrors) are read leniently into [`KustoErrorInfo`]: a field of an
//! unexpected shape is skipped, never allowed to mask the real error.

use std::fmt;
use std::time::Duration;

use crate::azure::AuthError;

/// Error bodies and Kusto messages are cut to this many bytes in messages.
const MAX_ERROR_TEXT: usize = 1024;

/// One error as Kusto reports it (a OneApiError `error` object, a v1 exception string, or a
/// QueryCompletionInformation row).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KustoErrorInfo {
    /// Kusto's `code`, e.g. `LimitsExceeded`, `General_BadRequest`.
    pub code: Option<String>,
    /// `@message` when present (the detailed text), else `message`.
    pub message: String,
    /// `@permanent` when present.
    pub permanent: Option<bool>,
}

impl KustoErrorInfo {
    /// Reads one OneApiError: either `{"error":{...}}` or the inner object itself; a bare string is a message.
    pub(crate) fn from_json(v: &serde_json::Value) -> KustoErrorInfo {
        if let Some(s) = v.as_str() {
            return KustoErrorInfo {
                message: truncate_text(s),
                ..KustoErrorInfo::default()
            };
        }
        let e = v.get("error").unwrap_or(v);
        let text = |k: &str| e.get(k).and_then(|x| x.as_str()).map(str::to_owned);
        let message = text("@message")
            .or_else(|| text("message"))
            .unwrap_or_else(|| e.to_string());
        KustoErrorInfo {
            code: text("code"),
            message: truncate_text(&message),
            permanent: e.get("@permanent").and_then(|p| p.as_bool()),
        }
    }

    /// Every error in a `OneApiErrors` array or a v1 `Exceptions` array (anything else yields one error).
    pub(crate) fn list_from_json(v: &serde_json::Value) -> Vec<KustoErrorInfo> {
        match v.as_array() {
            Some(items) => items.iter().map(KustoErrorInfo::from_json).collect(),
            None if v.is_null() => Vec::new(),
            None => vec![KustoErrorInfo::from_json(v)],
        }
    }

    /// Kusto result-size limits: retrying the same query cannot succeed, whatever `@permanent` says.
    fn is_result_too_large(&self) -> bool {
        self.message.contains("E_QUERY_RESULT_SET_TOO_LARGE")
    }
}

impl fmt::Display for KustoErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A failed query. Messages name the thing that failed and, where there is one, the fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QueryError {
    #[error("invalid Kusto endpoint {endpoint:?}: {detail}")]
    BadEndpoint { endpoint: String, detail: String },

    #[error("cannot build the HTTP client for Kusto: {0}")]
    Client(String),

    #[error(transparent)]
    Auth(#[from] AuthError),

    #[error("network error talking to Kusto at {endpoint}: {detail}")]
    Network { endpoint: String, detail: String },

    #[error("Kusto query timed out after {after:?} (client timeout = server timeout + 30 s)")]
    Timeout { after: Duration },

    #[error("Kusto throttled the query (HTTP 429){}: {message}",
        retry_after.map(|d| format!(", retry after {d:?}")).unwrap_or_default())]
    Throttled {
        retry_after: Option<Duration>,
        message: String,
    },

    #[error(
        "Kusto refused the credentials (HTTP {status}) for auth mode {auth}: {message}; check that this identity has viewer rights on the database"
    )]
    Unauthorized {
        status: u16,
        auth: String,
        message: String,
    },

    #[error("Kusto database {database:?} not found (HTTP 404): {message}")]
    DatabaseNotFound { database: String, message: String },

    #[error("Kusto answered HTTP {status}: {error}")]
    Http { status: u16, error: KustoErrorInfo },

    #[error(
        "the Kusto response exceeded {limit} bytes; narrow or aggregate the query, or raise the byte limit"
    )]
    TooManyBytes { limit: usize },

    #[error(
        "the primary result has more than {limit} rows; aggregate more in the query or raise the resource's maxRows"
    )]
    TooManyRows { limit: usize },

    #[error("{}", over_budget_text(*budget, *needed, *rows, *max_rows))]
    OverMemoryBudget {
        budget: u64,
        needed: u64,
        /// Rows decoded when the budget ran out (`None`: while reading the body).
        rows: Option<usize>,
        max_rows: usize,
    },

    /// Internal: the budget is busy and this query must give back what it holds, then wait for
    /// `need` bytes before it asks Kusto again (docs in `budget.rs`). Never a window failure.
    #[error("waiting for {} of --query-memory-budget", human_bytes(*need))]
    MemoryBusy { need: u64 },

    #[error("Kusto reported a partial query failure ({} error(s){}): {}", errors.len(),
        if *cancelled { ", query cancelled" } else { "" },
        errors.first().map(|e| e.to_string()).unwrap_or_default())]
    PartialFailure {
        errors: Vec<KustoErrorInfo>,
        cancelled: bool,
    },

    #[error("the Kusto response was cut short: {detail}")]
    Truncated { detail: String },

    #[error("Kusto answered with a body that is not a result: {text}")]
    UnexpectedBody { text: String },

    #[error("the Kusto response is not valid JSON: {detail}")]
    Malformed { detail: String },

    #[error("the Kusto response breaks the v2 frame protocol: {detail}")]
    Protocol { detail: String },

    #[error("table {table:?} row {row} has {cells} cells but {columns} columns")]
    RaggedRow {
        table: String,
        row: usize,
        cells: usize,
        columns: usize,
    },

    #[error("table {table:?} row {row} column {column:?}: {detail}")]
    BadCell {
        table: String,
        row: usize,
        column: String,
        detail: String,
    },
}

impl QueryError {
    /// docs/design.md#window-failures: permanent errors retry slowly until the spec or the data change; transient ones retry quickly.
    pub fn is_permanent(&self) -> bool {
        match self {
            QueryError::Network { .. }
            | QueryError::Timeout { .. }
            | QueryError::Throttled { .. }
            | QueryError::Truncated { .. }
            | QueryError::MemoryBusy { .. } => false,
            QueryError::Auth(e) => e.is_permanent(),
            QueryError::Http { status, error } => match error.permanent {
                Some(p) => p,
                None => (400..500).contains(status) && *status != 408,
            },
            QueryError::PartialFailure { errors, .. } => errors
                .iter()
                .any(|e| e.permanent == Some(true) || e.is_result_too_large()),
            QueryError::BadEndpoint { .. }
            | QueryError::Client(_)
            | QueryError::Unauthorized { .. }
            | QueryError::DatabaseNotFound { .. }
            | QueryError::TooManyBytes { .. }
            | QueryError::TooManyRows { .. }
            | QueryError::OverMemoryBudget { .. }
            | QueryError::UnexpectedBody { .. }
            | QueryError::Malformed { .. }
            | QueryError::Protocol { .. }
            | QueryError::RaggedRow { .. }
            | QueryError::BadCell { .. } => true,
        }
    }

    /// A short label for metrics (bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            QueryError::BadEndpoint { .. } | QueryError::Client(_) => "config",
            QueryError::Auth(_) | QueryError::Unauthorized { .. } => "auth",
            QueryError::Network { .. } => "network",
            QueryError::Timeout { .. } => "timeout",
            QueryError::Throttled { .. } => "throttled",
            QueryError::DatabaseNotFound { .. } => "not_found",
            QueryError::Http { status, .. } if *status >= 500 => "server",
            QueryError::Http { .. } => "bad_request",
            QueryError::TooManyBytes { .. } => "too_large",
            QueryError::TooManyRows { .. } => "too_many_rows",
            QueryError::OverMemoryBudget { .. } => "over_memory_budget",
            QueryError::MemoryBusy { .. } => "memory_busy",
            QueryError::PartialFailure { .. } => "partial_failure",
            QueryError::Truncated { .. } => "truncated",
            QueryError::UnexpectedBody { .. }
            | QueryError::Malformed { .. }
            | QueryError::Protocol { .. }
            | QueryError::RaggedRow { .. }
            | QueryError::BadCell { .. } => "decode",
        }
    }

    /// How long Kusto asked us to wait (429 `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            QueryError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The message of [`QueryError::OverMemoryBudget`]: names the flag, what did not fit and
/// `spec.maxRows`, and what to change.
fn over_budget_text(budget: u64, needed: u64, rows: Option<usize>, max_rows: usize) -> String {
    let what = match rows {
        None => format!(
            "the Kusto response alone is larger (at least {})",
            human_bytes(needed)
        ),
        Some(rows) => format!(
            "the Kusto response and its decoded rows need more ({} after decoding {rows} rows)",
            human_bytes(needed)
        ),
    };
    format!(
        "the window does not fit in --query-memory-budget ({}): {what}; make its windows smaller (aggregate more in the query, or shorten spec.interval: a window of spec.maxRows = {max_rows} rows has to fit) or raise --query-memory-budget together with the container's memory limit",
        human_bytes(budget)
    )
}

/// Maps a non-2xx answer to an error: a OneApiErrors JSON body gives `code`/`@message`/`@permanent`, any
/// other body is surfaced as (truncated) text. `auth` names the auth mode for 401/403.
pub fn http_error(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    auth: &str,
    database: &str,
) -> QueryError {
    let error = error_from_body(body, status);
    match status {
        401 | 403 => QueryError::Unauthorized {
            status,
            auth: auth.to_owned(),
            message: error.to_string(),
        },
        404 => QueryError::DatabaseNotFound {
            database: database.to_owned(),
            message: error.to_string(),
        },
        429 => QueryError::Throttled {
            retry_after,
            message: error.to_string(),
        },
        _ => QueryError::Http { status, error },
    }
}

/// The Kusto error in an error body: JSON `{"error":{...}}` when it parses, else the text itself.
pub(crate) fn error_from_body(body: &[u8], status: u16) -> KustoErrorInfo {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && v.get("error").is_some()
    {
        return KustoErrorInfo::from_json(&v);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    KustoErrorInfo {
        message: if text.is_empty() {
            format!("empty body with HTTP status {status}")
        } else {
            truncate_text(text)
        },
        ..KustoErrorInfo::default()
    }
}

/// `512 MiB`, `1.5 GiB`, `300 KiB`, `17 B`: for messages and logs.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Cuts text to [`MAX_ERROR_TEXT`] bytes on a char boundary.
pub(crate) fn truncate_text(s: &str) -> String {
    if s.len() <= MAX_ERROR_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_ERROR_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}
