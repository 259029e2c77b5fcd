//! Every self-metric adxexporter exports, in one place: its name (a `const` the rest of the code
//! uses), kind, unit, labels and help text. [`ALL`] is what tests and the dashboards enumerate.
//!
//! Label cardinality is bounded by construction: `exporter` is `namespace/name`, `output` is one of
//! the configured outputs, and `outcome`/`reason`/`status`/`state` come from fixed `&'static str`
//! sets. Window timestamps and raw error text are never label values.

use metrics::Unit;

pub const QUERY_DURATION: &str = "adxexporter_query_duration_seconds";
pub const QUERIES: &str = "adxexporter_queries_total";
pub(crate) const EXPORTER_RESTARTS: &str = "adxexporter_exporter_restarts_total";
pub const QUERY_MEMORY_BUDGET: &str = "adxexporter_query_memory_budget_bytes";
pub const QUERY_MEMORY_RESERVED: &str = "adxexporter_query_memory_reserved_bytes";
pub const QUERY_MEMORY_WAITS: &str = "adxexporter_query_memory_waits_total";
pub const ROWS_READ: &str = "adxexporter_rows_read_total";
pub const SAMPLES_PRODUCED: &str = "adxexporter_samples_produced_total";
pub const SAMPLES_SKIPPED: &str = "adxexporter_samples_skipped_total";
pub const WATERMARK: &str = "adxexporter_watermark_timestamp_seconds";
pub const WATERMARK_LAG: &str = "adxexporter_watermark_lag_seconds";
pub const BACKLOG_WINDOWS: &str = "adxexporter_backlog_windows";
pub const EXPORTERS: &str = "adxexporter_exporters";
pub const EXPORTERS_STALE: &str = "adxexporter_exporters_stale";
pub const WAL_RECORDS: &str = "adxexporter_wal_records";
pub(crate) const WAL_USED_BYTES: &str = "adxexporter_wal_used_bytes";
pub const WAL_MAX_BYTES: &str = "adxexporter_wal_max_bytes";
pub const WAL_FILE_BYTES: &str = "adxexporter_wal_file_bytes";
pub const WAL_OLDEST_RECORD_AGE: &str = "adxexporter_wal_oldest_record_age_seconds";
pub const WAL_VOLUME_FREE_BYTES: &str = "adxexporter_wal_volume_free_bytes";
pub const WAL_DEAD_LETTERS: &str = "adxexporter_wal_dead_letters";
pub const WAL_COMMITS: &str = "adxexporter_wal_commits_total";
pub const WAL_COMMITTED_WRITES: &str = "adxexporter_wal_committed_writes_total";
pub const PUSH_DURATION: &str = "adxexporter_push_duration_seconds";
pub const PUSHES: &str = "adxexporter_pushes_total";
pub const PUSH_RETRIES: &str = "adxexporter_push_retries_total";
pub const SAMPLES_PUSHED: &str = "adxexporter_samples_pushed_total";
pub const POINTS_REJECTED: &str = "adxexporter_points_rejected_total";
pub const DEAD_LETTERS: &str = "adxexporter_dead_letters_total";
pub const BUILD_INFO: &str = "adxexporter_build_info";
pub(crate) const TLS_INSECURE_SKIP_VERIFY: &str = "adxexporter_tls_insecure_skip_verify";
pub const KUBE_REQUESTS: &str = "adxexporter_kube_requests_total";
pub const STATUS_PATCHES: &str = "adxexporter_status_patches_total";
pub const STATUS_PATCH_BACKLOG: &str = "adxexporter_status_patch_backlog";
pub const STATUS_PRUNED: &str = "adxexporter_status_pruned_total";
pub const KUBE_EVENTS: &str = "adxexporter_kube_events_total";

/// The `outcome` label of [`STATUS_PATCHES`]: `ok`; `not_found` (the resource was deleted);
/// `recreated` (the uid precondition failed: deleted and created again under the same name, so the
/// old status was not written to the new resource); `rejected` (any other 4xx but 409 and 429: the
/// API server refuses this status, retried only when it changes or after 5 minutes); `failed`
/// (5xx, 409, 429, no answer: retried next round).
pub const STATUS_PATCH_OUTCOMES: [&str; 5] = ["ok", "not_found", "recreated", "rejected", "failed"];

/// The `outcome` label of [`KUBE_EVENTS`]: `created` (a new Event), `aggregated` (a repeat within
/// 6 minutes patched into the first one's `series`, as kube-runtime's `Recorder` does),
/// `rate_limited` (dropped by the per-resource spam filter), `dropped` (the queue was full),
/// `failed` (the API server refused it or did not answer).
pub const KUBE_EVENT_OUTCOMES: [&str; 5] =
    ["created", "aggregated", "rate_limited", "dropped", "failed"];

/// The `(verb, resource, code)` label sets of [`KUBE_REQUESTS`] present (at 0) from start-up: the
/// successful form of every request adxexporter makes. Other codes appear when they happen.
pub const KUBE_REQUESTS_AT_START: [(&str, &str, &str); 6] = [
    ("list", "metricsexporters", "200"),
    ("watch", "metricsexporters", "200"),
    ("get", "metricsexporters/status", "200"),
    ("patch", "metricsexporters/status", "200"),
    ("create", "events", "201"),
    ("patch", "events", "200"),
];

/// The values of the `wait` label of [`QUERY_MEMORY_WAITS`].
pub(crate) const MEMORY_WAITS: [&str; 3] = ["reserve", "grow", "requery"];

/// The values of the `state` label of [`EXPORTERS`].
pub(crate) const EXPORTER_STATES: [&str; 5] = [
    "active",
    "failing",
    "skipped_criteria",
    "not_owned",
    "invalid",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric family.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Option<Unit>,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: Kind,
    unit: Option<Unit>,
    labels: &'static [&'static str],
    help: &'static str,
) -> MetricDef {
    MetricDef {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Every metric family, in exposition order of the docs.
pub const ALL: &[MetricDef] = &[
    def(
        QUERY_DURATION,
        Histogram,
        Some(Unit::Seconds),
        &["exporter"],
        "Duration of one window's Kusto query and transform.",
    ),
    def(
        QUERIES,
        Counter,
        None,
        &["exporter", "outcome"],
        "Window queries by outcome: ok, or the error kind (network, throttled, bad_request, schema_mismatch, ...).",
    ),
    def(
        EXPORTER_RESTARTS,
        Counter,
        None,
        &[],
        "Exporter tasks restarted after a panic (a bug: the log names the exporter and the panic); each restarts from its watermark.",
    ),
    def(
        QUERY_MEMORY_BUDGET,
        Gauge,
        Some(Unit::Bytes),
        &[],
        "--query-memory-budget: memory for Kusto response bodies and decoded rows of the queries in flight.",
    ),
    def(
        QUERY_MEMORY_RESERVED,
        Gauge,
        Some(Unit::Bytes),
        &[],
        "Bytes of --query-memory-budget held by queries now.",
    ),
    def(
        QUERY_MEMORY_WAITS,
        Counter,
        None,
        &["wait"],
        "Times a query waited for --query-memory-budget: reserve (before its request or body, holding nothing), grow (holding its body, the one query allowed to), requery (gave its share back and queries again).",
    ),
    def(
        ROWS_READ,
        Counter,
        None,
        &["exporter"],
        "Rows returned by Kusto.",
    ),
    def(
        SAMPLES_PRODUCED,
        Counter,
        None,
        &["exporter"],
        "Samples produced by the transform and appended to the WAL.",
    ),
    def(
        SAMPLES_SKIPPED,
        Counter,
        None,
        &["exporter", "reason"],
        "Rows or cells the transform skipped, by reason.",
    ),
    def(
        WATERMARK,
        Gauge,
        Some(Unit::Seconds),
        &["exporter"],
        "End of the last window appended to the WAL (Unix seconds).",
    ),
    def(
        WATERMARK_LAG,
        Gauge,
        Some(Unit::Seconds),
        &["exporter"],
        "Now minus the watermark.",
    ),
    def(
        BACKLOG_WINDOWS,
        Gauge,
        None,
        &["exporter", "output"],
        "Windows in the WAL not yet delivered to an output.",
    ),
    def(
        EXPORTERS,
        Gauge,
        None,
        &["state"],
        "Resources by state: active, failing (queries failing), skipped_criteria, not_owned (another replica's), invalid (spec, or a criteriaExpression that cannot be evaluated here).",
    ),
    def(
        EXPORTERS_STALE,
        Gauge,
        None,
        &[],
        "Criteria-matching MetricsExporters of the whole fleet (whoever owns them) whose status watermark, or creation time without one, is older than now - ingestionDelay - 3 x interval: no replica is moving them on (Kubernetes mode; the log names them).",
    ),
    def(WAL_RECORDS, Gauge, None, &[], "Windows held in the WAL."),
    def(
        WAL_USED_BYTES,
        Gauge,
        Some(Unit::Bytes),
        &[],
        "Bytes the WAL's records use (counted against --wal-max-bytes).",
    ),
    def(
        WAL_MAX_BYTES,
        Gauge,
        Some(Unit::Bytes),
        &[],
        "--wal-max-bytes: querying pauses when the used bytes reach it.",
    ),
    def(
        WAL_FILE_BYTES,
        Gauge,
        Some(Unit::Bytes),
        &[],
        "Size of the WAL file on disk.",
    ),
    def(
        WAL_OLDEST_RECORD_AGE,
        Gauge,
        Some(Unit::Seconds),
        &[],
        "Age of the oldest record in the WAL since it was appended (0 when empty).",
    ),
    def(
        WAL_VOLUME_FREE_BYTES,
        Gauge,
        Some(Unit::Bytes),
        &[],
        "Free bytes (for unprivileged users) on the volume holding --wal-dir.",
    ),
    def(
        WAL_DEAD_LETTERS,
        Gauge,
        None,
        &["output"],
        "Dead letters kept in the WAL, by output.",
    ),
    def(
        WAL_COMMITS,
        Counter,
        None,
        &[],
        "Durable (fsynced) WAL commits. Writes that arrive together share one (group commit).",
    ),
    def(
        WAL_COMMITTED_WRITES,
        Counter,
        None,
        &[],
        "WAL writes (appends, acks, watermark and status changes) made durable; divided by adxexporter_wal_commits_total, the writes an fsync carried.",
    ),
    def(
        PUSH_DURATION,
        Histogram,
        Some(Unit::Seconds),
        &["output"],
        "Duration of one window's push to an output (all its requests).",
    ),
    def(
        PUSHES,
        Counter,
        None,
        &["output", "outcome", "status"],
        "Window pushes by outcome (ok or the failure reason) and HTTP status class (2xx, 4xx, 5xx, none).",
    ),
    def(
        PUSH_RETRIES,
        Counter,
        None,
        &["output"],
        "Window pushes that failed retryably and were scheduled again.",
    ),
    def(
        SAMPLES_PUSHED,
        Counter,
        None,
        &["output"],
        "Samples delivered to an output.",
    ),
    def(
        POINTS_REJECTED,
        Counter,
        None,
        &["output"],
        "Points a receiver accepted the request for but reported rejected (OTLP partial success).",
    ),
    def(
        DEAD_LETTERS,
        Counter,
        None,
        &["output", "reason"],
        "Windows an output refused for good, by reason.",
    ),
    def(
        BUILD_INFO,
        Gauge,
        None,
        &["version"],
        "Always 1; the version label says which build runs.",
    ),
    def(
        TLS_INSECURE_SKIP_VERIFY,
        Gauge,
        None,
        &[],
        "1 when --tls-insecure-skip-verify turned server certificate verification off, else 0.",
    ),
    def(
        KUBE_REQUESTS,
        Counter,
        None,
        &["verb", "resource", "code"],
        "Kubernetes API requests by verb (get, list, watch, create, update, patch, delete), resource (metricsexporters, metricsexporters/status, events, other) and HTTP status code (error: no answer).",
    ),
    def(
        STATUS_PATCHES,
        Counter,
        None,
        &["outcome"],
        "Status patches of MetricsExporter resources by outcome: ok, not_found (deleted), recreated (uid precondition failed), rejected (4xx: RBAC, schema), failed (5xx, 429, no answer).",
    ),
    def(
        STATUS_PATCH_BACKLOG,
        Gauge,
        None,
        &[],
        "Resources whose changed status waits for a patch (--status-patch-qps, retries) after the last status round.",
    ),
    def(
        STATUS_PRUNED,
        Counter,
        None,
        &[],
        "Status patches whose answer lacked status.watermark: the installed CRD's schema prunes adxexporter's status fields.",
    ),
    def(
        KUBE_EVENTS,
        Counter,
        None,
        &["outcome"],
        "Kubernetes Events about MetricsExporter resources by outcome: created, aggregated, rate_limited, dropped, failed.",
    ),
];

/// Upper bounds of the query duration buckets: Kusto queries take from milliseconds to minutes.
pub(crate) const QUERY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Upper bounds of the push duration buckets.
pub(crate) const PUSH_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Registers the help text and unit of every metric with the installed recorder.
pub(crate) fn describe_all() {
    for m in ALL {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(u)) => metrics::describe_counter!(m.name, u, m.help),
            (Kind::Counter, None) => metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(u)) => metrics::describe_gauge!(m.name, u, m.help),
            (Kind::Gauge, None) => metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(u)) => metrics::describe_histogram!(m.name, u, m.help),
            (Kind::Histogram, None) => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// The `status` label of [`PUSHES`]: the HTTP status class, `none` without a response.
pub(crate) fn status_class(status: Option<u16>) -> &'static str {
    match status {
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        Some(_) => "other",
        None => "none",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn names_are_unique_prefixed_and_prometheus_safe() {
        let mut seen = BTreeSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} listed twice", m.name);
            assert!(m.name.starts_with("adxexporter_"), "{}", m.name);
            assert!(
                m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
        }
    }

    #[test]
    fn status_classes_are_bounded() {
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(429)), "4xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(Some(999)), "other");
        assert_eq!(status_class(None), "none");
    }
}
