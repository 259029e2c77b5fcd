//! Unit tests of `status::kube`.

use super::*;
use crate::crd::{BacklogStatus, DeadLetterStatus};
use crate::kube_support::{FakeApi, FakeOptions, exporter};
use crate::registry::{Exporter, Rejected};
use crate::status::Problem;
use crate::telemetry::TestMetrics;
use crate::wal::{ExporterRef, RecordHeader, WalConfig};
use serde_json::Value;

fn condition(type_: &str, status: &str, at: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: "R".into(),
        message: "m".into(),
        last_transition_time: at.into(),
        observed_generation: Some(1),
    }
}

#[test]
fn the_patch_tests_the_uid_then_replaces_the_whole_status() {
    let status = MetricsExporterStatus {
        backlog: Some(BacklogStatus::default()),
        ..Default::default()
    };
    let patch = serde_json::to_value(status_patch("u-1", &status)).unwrap();
    assert_eq!(
        patch,
        json!([
            {"op": "test", "path": "/metadata/uid", "value": "u-1"},
            {"op": "add", "path": "/status", "value": {"backlog": {"windows": 0, "bytes": 0}}},
        ])
    );
}

#[test]
fn transition_times_stay_while_a_condition_is_unchanged() {
    let before = MetricsExporterStatus {
        conditions: vec![
            condition("Ready", "True", "t1"),
            condition("QueryHealthy", "True", "t1"),
        ],
        ..Default::default()
    };
    let mut next = MetricsExporterStatus {
        conditions: vec![
            condition("Ready", "True", "t2"),
            condition("QueryHealthy", "False", "t2"),
        ],
        ..Default::default()
    };
    carry_transition_times(Some(&before), &mut next);
    assert_eq!(next.conditions[0].last_transition_time, "t1");
    assert_eq!(next.conditions[1].last_transition_time, "t2");
    let mut same = before.clone();
    same.conditions[0].last_transition_time = "t3".into();
    carry_transition_times(Some(&before), &mut same);
    assert_eq!(same, before, "an unchanged status is not patched again");
}

#[test]
fn only_processed_resources_get_a_status() {
    let mut snap = Snapshot::default();
    snap.rejected.insert(
        "ns/skipped".into(),
        Rejected::NotOwned {
            owner: 1,
            replicas: 2,
        },
    );
    snap.rejected.insert(
        "ns/bad".into(),
        Rejected::Invalid(vec!["spec.interval: x".into()]),
    );
    snap.rejected.insert(
        "ns/cel".into(),
        Rejected::CriteriaError("spec.criteriaExpression: refers to zone".into()),
    );
    let t = targets(
        &snap,
        &Board::default(),
        &empty_stats(),
        &BTreeMap::new(),
        &BTreeMap::new(),
        Ticks::UNIX_EPOCH,
    );
    // The CEL error depends on this instance's labels: another instance may run `ns/cel`.
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].key(), "ns/bad");
    assert_eq!(
        (t[0].uid.as_deref(), t[0].kind),
        (None, TargetKind::Rejected)
    );
    assert_eq!(t[0].status.conditions[0].reason, "InvalidSpec");
}

fn empty_stats() -> WalStats {
    WalStats {
        records: 0,
        used_bytes: 0,
        max_bytes: 1 << 30,
        file_bytes: 0,
        dead_letters: 0,
        exporters: vec![],
        outputs: vec![],
    }
}

#[test]
fn without_a_wal_watermark_the_resources_resume_point_is_kept() {
    let yaml = [
        "apiVersion: adx-mon.azure.com/v1",
        "kind: MetricsExporter",
        "metadata: {name: a, namespace: ns, uid: u-a}",
        "spec:",
        "  database: db",
        "  interval: 1m",
        "  body: T",
        "  transform: {valueColumns: [v], timestampColumn: ts, defaultMetricName: m}",
        "status:",
        "  conditions:",
        "  - type: metricsexporter.adx-mon.azure.com/LastSuccessfulExecution",
        "    status: 'True'",
        "    reason: Ok",
        "    message: '2026-11-25T10:00:00Z'",
        "    lastTransitionTime: '2026-11-25T10:00:00Z'",
    ]
    .join("\n");
    let resource = crate::crd::load_documents(&yaml)
        .unwrap()
        .remove(0)
        .unwrap()
        .resource;
    let exporter = Exporter::from_resource(&resource, &BTreeMap::new(), "").unwrap();
    let mut snap = Snapshot::default();
    snap.desired.insert("u-a".into(), Arc::new(exporter));
    let t = targets(
        &snap,
        &Board::default(),
        &empty_stats(),
        &BTreeMap::new(),
        &BTreeMap::new(),
        Ticks::UNIX_EPOCH,
    );
    assert_eq!(t[0].key(), "ns/a");
    assert_eq!(t[0].uid.as_deref(), Some("u-a"));
    assert_eq!(
        t[0].status.watermark.as_deref(),
        Some("2026-11-25T10:00:00Z")
    );
    assert_eq!(t[0].status.observed_generation, Some(0));
}

#[test]
fn a_rejected_resource_keeps_its_resume_point_and_cursor() {
    let previous = MetricsExporterStatus {
        watermark: Some("2026-01-01T00:00:00Z".into()),
        last_successful_execution: Some("2025-12-31T23:00:00Z".into()),
        backlog: Some(BacklogStatus::default()),
        observed_generation: Some(3),
        conditions: vec![
            condition("Ready", "True", "t0"),
            condition("QueryHealthy", "True", "t0"),
            condition(LEGACY_CURSOR_CONDITION, "True", "t0"),
        ],
        ..Default::default()
    };
    let mut status = MetricsExporterStatus {
        conditions: vec![condition("Ready", "False", "t1")],
        ..Default::default()
    };
    complete(
        TargetKind::Rejected,
        &mut status,
        Some(&previous),
        Ticks::UNIX_EPOCH,
    );
    assert_eq!(status.watermark, previous.watermark);
    assert_eq!(
        status.last_successful_execution,
        previous.last_successful_execution
    );
    assert_eq!(status.observed_generation, Some(3));
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, ["Ready", LEGACY_CURSOR_CONDITION]);
    assert_eq!(
        status.conditions[0].last_transition_time, "t1",
        "it flipped"
    );
    assert_eq!(status.conditions[1].last_transition_time, "t0");
}

#[test]
fn condition_changes_become_events() {
    let r = Regarding {
        namespace: "ns".into(),
        name: "a".into(),
        uid: "u".into(),
    };
    let with = |query: (&str, &str), dead: u64| MetricsExporterStatus {
        dead_lettered: Some(DeadLetterStatus {
            windows: dead,
            last_reason: None,
        }),
        conditions: vec![
            Condition {
                reason: query.1.into(),
                message: format!("{} message", query.1),
                ..condition("QueryHealthy", query.0, "t")
            },
            Condition {
                message: "2 window(s) were refused for good".into(),
                ..condition("DeliveryHealthy", "False", "t")
            },
        ],
        ..Default::default()
    };
    let healthy = with(("True", "QuerySucceeded"), 0);
    let failing = with(("False", "QueryFailing"), 0);
    let rejected = with(("False", "QueryRejected"), 0);
    let summary = |n: Vec<Notice>| -> Vec<(Severity, String, String)> {
        n.into_iter()
            .map(|n| (n.severity, n.reason, n.note))
            .collect()
    };
    let transition_notices =
        |r: &Regarding, p: Option<&MetricsExporterStatus>, n: &MetricsExporterStatus| {
            transition_notices(r, p.map(Seen::of).as_ref(), n)
        };
    assert!(transition_notices(&r, None, &healthy).is_empty());
    assert!(transition_notices(&r, Some(&healthy), &healthy).is_empty());
    assert_eq!(
        summary(transition_notices(&r, Some(&healthy), &failing)),
        [(
            Severity::Warning,
            "QueryFailing".into(),
            "QueryFailing message".into()
        )]
    );
    assert!(transition_notices(&r, Some(&failing), &failing).is_empty());
    assert_eq!(
        summary(transition_notices(&r, Some(&failing), &rejected)),
        [(
            Severity::Warning,
            "QueryRejected".into(),
            "QueryRejected message".into()
        )],
        "a new reason (a budget suspension, say) is news"
    );
    assert_eq!(
        summary(transition_notices(&r, Some(&rejected), &healthy)),
        [(
            Severity::Normal,
            "QueryRecovered".into(),
            "queries succeed again".into()
        )]
    );
    assert_eq!(
        summary(transition_notices(&r, None, &failing)).len(),
        1,
        "failing when first seen"
    );
    let wal_full = with(("False", "WalFull"), 0);
    assert!(transition_notices(&r, Some(&healthy), &wal_full).is_empty());
    let dead = with(("True", "QuerySucceeded"), 2);
    assert_eq!(
        summary(transition_notices(&r, Some(&healthy), &dead)),
        [(
            Severity::Warning,
            "DeadLettered".into(),
            "2 window(s) were refused for good".into()
        )]
    );
    assert!(transition_notices(&r, Some(&dead), &dead).is_empty());
    assert!(
        transition_notices(&r, None, &dead).is_empty(),
        "not again after a restart"
    );
}

// --- Against the fake API server ---

fn spec() -> Value {
    json!({
        "database": "db", "interval": "1h", "body": "T",
        "transform": {"valueColumns": ["v"], "timestampColumn": "ts", "defaultMetricName": "m"},
    })
}

/// The desired exporters of these stored objects, as the source would publish them.
fn snapshot_of(fake: &FakeApi, names: &[&str]) -> Arc<Snapshot> {
    let mut snap = Snapshot::default();
    for name in names {
        let object = fake.get("ns", name).expect("stored");
        let resource: MetricsExporter = serde_json::from_value(object).unwrap();
        let e = Exporter::from_resource(&resource, &BTreeMap::new(), "").unwrap();
        snap.desired.insert(e.id.uid.clone(), Arc::new(e));
    }
    Arc::new(snap)
}

fn uid(fake: &FakeApi, name: &str) -> String {
    fake.get("ns", name).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn open_wal(dir: &tempfile::TempDir) -> Wal {
    Wal::open(dir.path(), WalConfig::new(1 << 20, ["remote_write"])).unwrap()
}

/// Appends the hour-long window starting `start` (RFC 3339) for the exporter with `uid`.
fn append(wal: &Wal, uid: &str, name: &str, start: &str) {
    let start = Ticks::parse(start).unwrap();
    let header = RecordHeader {
        exporter: ExporterRef::new(uid, "ns", name),
        generation: 1,
        window_start: start,
        window_end: start
            .checked_add(crate::time::Span::from_secs(3600))
            .unwrap(),
        created: Ticks::now(),
        outputs: vec![],
    };
    wal.append(&header, &crate::prompb::WriteRequest::default())
        .unwrap();
}

async fn writer(
    fake: &FakeApi,
    wal: &Wal,
    board: &Arc<Board>,
    qps: f64,
    burst: u32,
) -> KubeStatusWriter {
    KubeStatusWriter::new(
        fake.client().await,
        wal.clone(),
        board.clone(),
        KubeStatusConfig {
            qps,
            burst,
            namespace: None,
        },
        EventQueue::disabled(),
    )
}

fn patches_of(fake: &FakeApi, name: &str) -> Vec<crate::kube_support::StatusPatch> {
    (fake.status_patches().into_iter())
        .filter(|p| p.name == name)
        .collect()
}

#[tokio::test]
async fn patches_the_status_subresource_with_a_uid_test_only_when_changed() {
    let fake = FakeApi::start().await;
    fake.create(exporter("ns", "a", spec()));
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    let mut snap = (*snapshot_of(&fake, &["a"])).clone();
    // ns/gone was deleted (it is not there to read); ns/other is another replica's.
    snap.rejected.insert(
        "ns/gone".into(),
        Rejected::Invalid(vec!["spec.body: missing".into()]),
    );
    snap.rejected.insert(
        "ns/other".into(),
        Rejected::NotOwned {
            owner: 1,
            replicas: 2,
        },
    );
    let snap = Arc::new(snap);
    let board = Arc::new(Board::default());
    let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;

    writer.round(&snap).await;
    let got = fake.status_patches();
    assert_eq!(got.len(), 1, "{got:?}");
    let a = &got[0];
    assert_eq!(
        (a.namespace.as_str(), a.name.as_str(), a.code),
        ("ns", "a", 200)
    );
    assert_eq!(a.content_type, "application/json-patch+json");
    assert_eq!(
        a.body[0],
        json!({"op": "test", "path": "/metadata/uid", "value": uid(&fake, "a")})
    );
    assert_eq!(
        (a.body[1]["op"].as_str(), a.body[1]["path"].as_str()),
        (Some("add"), Some("/status"))
    );
    let request = (fake.requests().into_iter())
        .find(|r| r.method == "PATCH" && r.path.ends_with("/metricsexporters/a/status"))
        .expect("the PATCH of ns/a was recorded");
    assert!(
        request.query.contains("fieldManager=adxexporter"),
        "{}",
        request.query
    );
    let status = &fake.get("ns", "a").unwrap()["status"];
    assert_eq!(status["observedGeneration"], 1);
    let types: Vec<&str> = (status["conditions"].as_array().unwrap().iter())
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Ready", "QueryHealthy", "DeliveryHealthy"]);
    assert!(writer.failing.is_empty(), "{:?}", writer.failing);

    // Nothing changed: no second patch.
    writer.round(&snap).await;
    assert_eq!(fake.status_patches().len(), 1);
    // The start-up list read every resource once; the deleted one was looked up once per round.
    let gets = (fake.requests().into_iter())
        .filter(|r| r.method == "GET" && r.path.ends_with("/metricsexporters/gone"))
        .count();
    assert_eq!(gets, 2);
}

#[tokio::test]
async fn an_unchanged_status_is_not_patched_after_a_restart_and_keeps_its_transition_times() {
    let fake = FakeApi::start().await;
    fake.create(exporter("ns", "a", spec()));
    let uid_a = uid(&fake, "a");
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    append(&wal, &uid_a, "a", "2026-01-01T00:00:00Z");
    let board = Arc::new(Board::default());
    let mut first = writer(&fake, &wal, &board, 100.0, 10).await;
    first.round(&snapshot_of(&fake, &["a"])).await;
    assert_eq!(fake.status_patches().len(), 1);
    let before = fake.get("ns", "a").unwrap()["status"].clone();
    assert_eq!(before["watermark"], "2026-01-01T01:00:00Z");

    // A new process (same WAL, an empty board) with nothing new to say patches nothing.
    drop(first);
    let board = Arc::new(Board::default());
    let mut second = writer(&fake, &wal, &board, 100.0, 10).await;
    let snap = snapshot_of(&fake, &["a"]);
    second.round(&snap).await;
    second.round(&snap).await;
    assert_eq!(
        fake.status_patches().len(),
        1,
        "{:?}",
        fake.status_patches()
    );
    assert_eq!(fake.get("ns", "a").unwrap()["status"], before);

    // Something new is patched, and conditions that did not flip keep their transition time.
    append(&wal, &uid_a, "a", "2026-01-01T01:00:00Z");
    second.round(&snap).await;
    assert_eq!(fake.status_patches().len(), 2);
    let after = fake.get("ns", "a").unwrap()["status"].clone();
    assert_eq!(after["watermark"], "2026-01-01T02:00:00Z");
    assert_eq!(after["backlog"]["windows"], 2);
    let times = |s: &Value| -> Vec<(String, String)> {
        (s["conditions"].as_array().unwrap().iter())
            .map(|c| {
                (
                    c["type"].as_str().unwrap().to_owned(),
                    c["lastTransitionTime"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(times(&after), times(&before));
}

#[tokio::test]
async fn a_resource_recreated_under_the_same_name_never_gets_the_old_watermark() {
    let metrics = TestMetrics::install();
    let fake = FakeApi::start().await;
    fake.create(exporter("ns", "a", spec()));
    let old_uid = uid(&fake, "a");
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    append(&wal, &old_uid, "a", "2026-01-01T00:00:00Z");
    let board = Arc::new(Board::default());
    let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
    let old_snap = snapshot_of(&fake, &["a"]);
    writer.round(&old_snap).await;
    assert_eq!(
        fake.get("ns", "a").unwrap()["status"]["watermark"],
        "2026-01-01T01:00:00Z"
    );

    // Deleted and created again; the source has not seen it yet, and the old one moved on.
    fake.delete("ns", "a");
    fake.create(exporter("ns", "a", spec()));
    let new_uid = uid(&fake, "a");
    assert_ne!(new_uid, old_uid);
    append(&wal, &old_uid, "a", "2026-01-01T01:00:00Z");
    writer.round(&old_snap).await;
    let last = fake.status_patches().pop().unwrap();
    assert_eq!(last.code, 422, "the uid test failed");
    assert!(fake.get("ns", "a").unwrap().get("status").is_none());
    assert_eq!(
        metrics.value(STATUS_PATCHES, &[("outcome", "recreated")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.value(STATUS_PATCHES, &[("outcome", "rejected")]),
        None
    );

    // Once the source has the new resource, it gets a status of its own: no watermark.
    writer.round(&snapshot_of(&fake, &["a"])).await;
    let status = fake.get("ns", "a").unwrap()["status"].clone();
    assert_eq!(status["observedGeneration"], 1, "{status}");
    assert!(status.get("watermark").is_none(), "{status}");
    assert!(writer.failing.is_empty(), "{:?}", writer.failing);
}

#[tokio::test]
async fn patches_are_rate_limited() {
    const QPS: f64 = 20.0;
    const BURST: u32 = 2;
    let fake = FakeApi::start().await;
    let names: Vec<String> = (0..30).map(|i| format!("r{i:02}")).collect();
    for name in &names {
        fake.create(exporter("ns", name, spec()));
    }
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    let board = Arc::new(Board::default());
    let mut writer = writer(&fake, &wal, &board, QPS, BURST).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    writer.round(&snapshot_of(&fake, &refs)).await;
    let patches = fake.status_patches();
    assert_eq!(patches.len(), names.len());
    // In any span of d seconds at most burst + qps·d requests start; the server sees them a
    // little later, so allow two more and 100 ms of jitter.
    for (i, first) in patches.iter().enumerate() {
        for (j, last) in patches.iter().enumerate().skip(i) {
            let d = last.at.duration_since(first.at).as_secs_f64();
            let bound = f64::from(BURST) + QPS * (d + 0.1) + 2.0;
            assert!(
                (j - i + 1) as f64 <= bound,
                "{} patches within {d:.3}s (bound {bound:.1})",
                j - i + 1
            );
        }
    }
}

#[tokio::test]
async fn a_round_patches_what_the_rate_allows_the_least_recently_written_first() {
    let fake = FakeApi::start().await;
    let names: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
    for name in &names {
        fake.create(exporter("ns", name, spec()));
    }
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    let board = Arc::new(Board::default());
    // 0.2/s for 5 s plus a burst of 4: 5 a round (the limiter itself made fast for the test).
    let mut writer = writer(&fake, &wal, &board, 0.2, 4).await;
    assert_eq!(writer.per_round(), 5);
    writer.limiter = Arc::new(RateLimiter::new(1000.0, 100));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let snap = snapshot_of(&fake, &refs);
    for (patched, waiting) in [(5, 7), (10, 2), (12, 0), (12, 0)] {
        writer.round(&snap).await;
        assert_eq!(fake.status_patches().len(), patched);
        assert_eq!(board.patch_backlog(), waiting);
    }
    let once: HashSet<String> = fake.status_patches().into_iter().map(|p| p.name).collect();
    assert_eq!(once.len(), 12, "each resource in turn");
}

#[tokio::test]
async fn adx_mon_cursor_condition_is_kept_and_follows_the_export() {
    let fake = FakeApi::start().await;
    fake.create(exporter("ns", "a", spec()));
    let adx_mon = json!({
        "type": LEGACY_CURSOR_CONDITION, "status": "True", "reason": "ExecutionCompleted",
        "message": "2026-01-01T00:00:00Z", "lastTransitionTime": "2025-06-01T00:00:00Z",
        "observedGeneration": 1,
    });
    fake.set_status("ns", "a", json!({"conditions": [adx_mon]}));
    let uid_a = uid(&fake, "a");
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    let board = Arc::new(Board::default());
    let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
    let snap = snapshot_of(&fake, &["a"]);
    let cursor = |fake: &FakeApi| {
        let status = fake.get("ns", "a").unwrap()["status"].clone();
        let c = (status["conditions"].as_array().unwrap().iter())
            .find(|c| c["type"] == LEGACY_CURSOR_CONDITION)
            .cloned()
            .unwrap_or_else(|| panic!("adx-mon's condition is gone: {status}"));
        (status, c)
    };

    // First write: the cursor is the resume point, written back as the watermark too.
    writer.round(&snap).await;
    let (status, c) = cursor(&fake);
    assert_eq!(status["watermark"], "2026-01-01T00:00:00Z");
    assert_eq!(c, adx_mon, "unchanged, transition time included");

    // The export moves on: the cursor is where adx-mon could resume without a gap.
    append(&wal, &uid_a, "a", "2026-01-01T00:00:00Z");
    append(&wal, &uid_a, "a", "2026-01-01T01:00:00Z");
    writer.round(&snap).await;
    let (status, c) = cursor(&fake);
    assert_eq!(status["watermark"], "2026-01-01T02:00:00Z");
    assert_eq!(status["lastSuccessfulExecution"], "2026-01-01T00:00:00Z");
    assert_eq!(
        c["message"], "2026-01-01T00:00:00Z",
        "windows still in the WAL"
    );
    let first = wal
        .next_pending("remote_write", Ticks::MAX, 1)
        .unwrap()
        .remove(0);
    wal.ack("remote_write", &first.id).unwrap();
    writer.round(&snap).await;
    let (status, c) = cursor(&fake);
    assert_eq!(c["message"], "2026-01-01T01:00:00Z");
    assert_eq!(c["message"], status["lastSuccessfulExecution"]);
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("True"), Some("ExecutionCompleted"))
    );
    assert_eq!(c["lastTransitionTime"], "2025-06-01T00:00:00Z");
    // adx-mon reads it back (time.RFC3339Nano) and so do we.
    let back: MetricsExporterStatus = serde_json::from_value(status).unwrap();
    assert_eq!(
        back.legacy_watermark(),
        Ticks::parse("2026-01-01T01:00:00Z").ok()
    );
}

#[tokio::test]
async fn a_pruned_watermark_is_detected_and_not_patched_again_and_again() {
    let metrics = TestMetrics::install();
    let fake = FakeApi::start_with(FakeOptions {
        pruned_status_fields: vec!["watermark", "lastSuccessfulExecution"],
        ..FakeOptions::default()
    })
    .await;
    fake.create(exporter("ns", "a", spec()));
    let uid_a = uid(&fake, "a");
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    append(&wal, &uid_a, "a", "2026-01-01T00:00:00Z");
    let board = Arc::new(Board::default());
    let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
    let snap = snapshot_of(&fake, &["a"]);
    writer.round(&snap).await;
    assert_eq!(metrics.value(STATUS_PRUNED, &[]), Some(1.0));
    assert!(writer.pruned);
    let status = fake.get("ns", "a").unwrap()["status"].clone();
    assert!(status.get("watermark").is_none(), "{status}");
    // The cursor survives the pruning schema (adx-mon's CRD has conditions).
    assert!(
            (status["conditions"].as_array().unwrap().iter())
                .any(|c| c["type"] == LEGACY_CURSOR_CONDITION
                    && c["message"] == "2026-01-01T00:00:00Z"),
            "{status}"
        );
    writer.round(&snap).await;
    assert_eq!(fake.status_patches().len(), 1, "not re-sent every round");
    assert_eq!(
        metrics.value(STATUS_PATCHES, &[("outcome", "ok")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_refused_status_patch_is_counted_and_not_resent_until_it_changes() {
    let metrics = TestMetrics::install();
    let fake = FakeApi::start().await;
    fake.create(exporter("ns", "a", spec()));
    fake.create(exporter("ns", "b", spec()));
    let uid_a = uid(&fake, "a");
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    let board = Arc::new(Board::default());
    let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
    let snap = snapshot_of(&fake, &["a", "b"]);
    fake.fail_status_patches(Some(422));
    writer.round(&snap).await;
    assert_eq!(
        metrics.value(STATUS_PATCHES, &[("outcome", "rejected")]),
        Some(2.0)
    );
    assert_eq!(board.patch_backlog(), 2);
    let message = &writer.failing["ns/a"];
    assert!(
        message.contains("is invalid") && message.contains("adxexporter crd"),
        "{message}"
    );
    writer.round(&snap).await;
    assert_eq!(fake.status_patches().len(), 2, "not retried every round");

    // RBAC refuses: also counted; a changed status is tried again, and works once allowed.
    fake.fail_status_patches(Some(403));
    append(&wal, &uid_a, "a", "2026-01-01T00:00:00Z");
    writer.round(&snap).await;
    assert_eq!(
        metrics.value(STATUS_PATCHES, &[("outcome", "rejected")]),
        Some(3.0)
    );
    assert!(
        writer.failing["ns/a"].contains("RBAC"),
        "{}",
        writer.failing["ns/a"]
    );
    fake.fail_status_patches(None);
    append(&wal, &uid_a, "a", "2026-01-01T01:00:00Z");
    writer.round(&snap).await;
    assert_eq!(
        metrics.value(STATUS_PATCHES, &[("outcome", "ok")]),
        Some(1.0)
    );
    assert_eq!(patches_of(&fake, "a").last().unwrap().code, 200);
    assert!(!writer.failing.contains_key("ns/a"));
    assert_eq!(board.patch_backlog(), 1, "b waits for its retry");
}

#[tokio::test]
async fn query_failures_and_recoveries_are_queued_as_events() {
    let fake = FakeApi::start().await;
    fake.create(exporter("ns", "a", spec()));
    let uid_a = uid(&fake, "a");
    let dir = tempfile::tempdir().unwrap();
    let wal = open_wal(&dir);
    let board = Arc::new(Board::default());
    let mut writer = writer(&fake, &wal, &board, 100.0, 10).await;
    let (queue, mut notices) = EventQueue::channel();
    writer.events = queue;
    let snap = snapshot_of(&fake, &["a"]);
    writer.round(&snap).await;
    assert!(notices.try_recv().is_err(), "healthy: nothing to say");
    board.update(&uid_a, |r| {
        r.query_problem = Some(Problem {
            reason: "QueryRejected",
            message: "Semantic error: no column V".into(),
        })
    });
    writer.round(&snap).await;
    writer.round(&snap).await;
    let n = notices.try_recv().unwrap();
    assert_eq!(
        (
            n.severity,
            n.reason.as_str(),
            n.note.as_str(),
            n.regarding.uid.as_str()
        ),
        (
            Severity::Warning,
            "QueryRejected",
            "Semantic error: no column V",
            uid_a.as_str()
        )
    );
    assert!(notices.try_recv().is_err(), "once per change");
    board.update(&uid_a, |r| r.query_problem = None);
    writer.round(&snap).await;
    assert_eq!(notices.try_recv().unwrap().reason, "QueryRecovered");
}
