//! Unit tests of `source::kube`.

use super::*;

fn resource(name: &str, uid: &str, extra: &str) -> MetricsExporter {
    let yaml = format!(
        "apiVersion: adx-mon.azure.com/v1\nkind: MetricsExporter\n\
             metadata: {{name: {name}, namespace: ns, uid: {uid}, generation: 3}}\n\
             spec:\n  database: db\n  interval: 1m\n  body: T\n{extra}\
             \n  transform: {{valueColumns: [v], timestampColumn: ts, defaultMetricName: m}}\n"
    );
    let docs = crate::crd::load_documents(&yaml).expect("parses");
    docs.into_iter()
        .next()
        .expect("one")
        .expect("valid")
        .resource
}

fn filter() -> Filter {
    Filter {
        cluster_labels: BTreeMap::from([("region".to_owned(), "eastus".to_owned())]),
        cli_prefix: String::new(),
    }
}

/// A listed state holding `resources`, on replica `shard`.
fn listed<'a>(
    resources: impl IntoIterator<Item = &'a MetricsExporter>,
    shard: Shard,
) -> WatchState {
    let mut state = WatchState::new(filter(), Some(shard));
    state.apply(Ok(Event::Init));
    for r in resources {
        state.apply(Ok(Event::InitApply(r.clone())));
    }
    state.apply(Ok(Event::InitDone));
    state
}

/// The snapshot of a set of objects.
fn build_snapshot<'a>(
    resources: impl IntoIterator<Item = &'a MetricsExporter>,
    shard: Shard,
) -> Snapshot {
    listed(resources, shard).snapshot()
}

fn with_watermark(mut r: MetricsExporter, watermark: &str) -> MetricsExporter {
    r.status = Some(crate::crd::MetricsExporterStatus {
        watermark: Some(watermark.to_owned()),
        ..Default::default()
    });
    r
}

fn ticks(s: &str) -> Ticks {
    Ticks::parse(s).unwrap()
}

#[test]
fn objects_become_exporters_keyed_by_uid_with_their_generation() {
    let snap = build_snapshot(&[resource("a", "u-a", "")], Shard::SINGLE);
    let e = snap.desired.get("u-a").expect("desired by uid");
    assert_eq!(e.generation, 3);
    assert_eq!(e.key(), "ns/a");
    assert!(snap.rejected.is_empty());
}

#[test]
fn criteria_mismatch_is_skipped_even_when_invalid() {
    let r = resource(
        "a",
        "u-a",
        "  criteria: {region: [westus]}\n  ingestionDelay: bogus",
    );
    let snap = build_snapshot([&r], Shard::SINGLE);
    assert!(matches!(
        snap.rejected.get("ns/a"),
        Some(Rejected::Skipped(_))
    ));
}

#[test]
fn criteria_expression_decides_like_criteria() {
    let runs = resource("a", "u-a", "  criteriaExpression: region == 'eastus'");
    let other = resource("b", "u-b", "  criteriaExpression: region == 'westus'");
    let broken = resource("c", "u-c", "  criteriaExpression: zone == '1'");
    let syntax = resource("d", "u-d", "  criteriaExpression: region ==");
    let snap = build_snapshot([&runs, &other, &broken, &syntax], Shard::SINGLE);
    assert_eq!(snap.desired.keys().collect::<Vec<_>>(), ["u-a"]);
    assert!(matches!(
        snap.rejected.get("ns/b"),
        Some(Rejected::Skipped(r)) if r.contains("region == 'westus'")
    ));
    assert!(matches!(
        snap.rejected.get("ns/c"),
        Some(Rejected::CriteriaError(m)) if m.starts_with("spec.criteriaExpression: refers to zone")
    ));
    assert!(matches!(
        snap.rejected.get("ns/d"),
        Some(Rejected::Invalid(lines)) if lines[0].starts_with("spec.criteriaExpression: ")
    ));
}

#[test]
fn a_false_expression_is_skipped_even_when_invalid() {
    let r = resource(
        "a",
        "u-a",
        "  criteriaExpression: region == 'westus'\n  ingestionDelay: bogus",
    );
    let snap = build_snapshot([&r], Shard::SINGLE);
    assert!(matches!(
        snap.rejected.get("ns/a"),
        Some(Rejected::Skipped(_))
    ));
}

#[test]
fn each_resource_runs_on_exactly_one_replica() {
    let list: Vec<MetricsExporter> = (0..50)
        .map(|i| resource(&format!("r{i}"), &format!("uid-{i}"), ""))
        .collect();
    let mut runs = BTreeMap::<String, u32>::new();
    for ordinal in 0..3 {
        let shard = Shard {
            ordinal,
            replicas: 3,
        };
        let snap = build_snapshot(&list, shard);
        assert_eq!(snap.desired.len() + snap.rejected.len(), 50);
        for uid in snap.desired.keys() {
            *runs.entry(uid.clone()).or_default() += 1;
        }
        for (key, why) in &snap.rejected {
            assert!(matches!(why, Rejected::NotOwned { .. }), "{why:?}");
            let r = list.iter().find(|r| &r.key() == key).unwrap();
            assert_eq!(classify(r, &filter(), shard), Err(why.clone()));
        }
    }
    assert_eq!(runs.len(), 50);
    assert!(runs.values().all(|&n| n == 1));
}

#[test]
fn a_relist_replaces_the_set_and_deletions_leave_it() {
    let mut state = WatchState::new(filter(), Some(Shard::SINGLE));
    state.apply(Ok(Event::Init));
    state.apply(Ok(Event::InitApply(resource("a", "u-a", ""))));
    assert!(!state.complete(), "not complete before InitDone");
    state.apply(Ok(Event::InitDone));
    assert!(state.complete());
    state.apply(Ok(Event::Apply(resource("b", "u-b", ""))));
    assert_eq!(state.snapshot().desired.len(), 2);
    state.apply(Ok(Event::Delete(resource("a", "u-a", ""))));
    let snap = state.snapshot();
    assert_eq!(snap.desired.keys().collect::<Vec<_>>(), ["u-b"]);
    // A relist in progress keeps the old view until it is done, then replaces it.
    state.apply(Ok(Event::Init));
    assert!(!state.complete());
    state.apply(Ok(Event::InitApply(resource("c", "u-c", ""))));
    assert!(!state.published.dirty);
    assert_eq!(state.snapshot(), snap);
    state.apply(Ok(Event::InitDone));
    assert_eq!(state.snapshot().desired.keys().collect::<Vec<_>>(), ["u-c"]);
}

#[test]
fn ownership_waits_for_the_replica_count() {
    let mut state = WatchState::new(filter(), None);
    state.apply(Ok(Event::Init));
    state.apply(Ok(Event::InitApply(resource("a", "u-a", ""))));
    state.apply(Ok(Event::InitDone));
    assert!(!state.complete(), "no snapshot before the replica count");
    assert!(state.published.desired.is_empty());
    state.reshard(Shard::SINGLE);
    assert!(state.complete());
    assert_eq!(state.snapshot().desired.keys().collect::<Vec<_>>(), ["u-a"]);
}

#[test]
fn a_status_only_change_publishes_no_snapshot() {
    let a = resource("a", "u-a", "");
    let b = resource("b", "u-b", "");
    let mut state = listed([&a, &b], Shard::SINGLE);
    let before = state.snapshot();
    // Every replica's status writer patches status: same generation, new watermark.
    let patched = with_watermark(a.clone(), "2026-11-25T10:00:00Z");
    state.apply(Ok(Event::Apply(patched.clone())));
    assert!(
        !state.published.dirty,
        "a status patch must not make a new snapshot"
    );
    assert!(Arc::ptr_eq(
        &state.published.desired["u-a"],
        &before.desired["u-a"]
    ));
    // ... but the source keeps the newest watermark (stale check, resume point).
    let slot = &state.slots["ns/a"];
    assert_eq!(slot.resume, Some(ticks("2026-11-25T10:00:00Z")));
    assert_eq!(
        slot.stale_input().unwrap().watermark,
        Some(ticks("2026-11-25T10:00:00Z"))
    );
    // The same during a relist.
    state.apply(Ok(Event::Init));
    state.apply(Ok(Event::InitApply(with_watermark(
        a.clone(),
        "2026-11-25T10:01:00Z",
    ))));
    state.apply(Ok(Event::InitApply(b.clone())));
    state.apply(Ok(Event::InitDone));
    assert!(!state.published.dirty, "a relist with new statuses only");
    assert_eq!(
        state.slots["ns/a"].resume,
        Some(ticks("2026-11-25T10:01:00Z"))
    );
    // A spec change (a new generation) does.
    let mut edited = patched;
    edited.metadata.generation = Some(4);
    edited.spec.body = Some("T | take 1".into());
    state.apply(Ok(Event::Apply(edited)));
    assert!(state.published.dirty);
    let after = state.snapshot();
    assert_eq!(after.desired["u-a"].generation, 4);
    assert_eq!(after.desired["u-a"].spec.body, "T | take 1");
}

#[test]
fn a_resource_being_deleted_stops_running() {
    let a = resource("a", "u-a", "");
    let mut state = listed([&a], Shard::SINGLE);
    assert_eq!(state.snapshot().desired.len(), 1);
    // kubectl delete with a finalizer in place: deletionTimestamp set, a new generation.
    let mut deleting = a.clone();
    deleting.metadata.generation = Some(4);
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-11-25T10:00:00Z".parse().unwrap(),
        ));
    state.apply(Ok(Event::Apply(deleting.clone())));
    let snap = state.snapshot();
    assert!(snap.desired.is_empty(), "no longer desired: stops querying");
    assert!(snap.rejected.is_empty(), "and no status is written for it");
    assert_eq!(state.stale(ticks("2030-01-01T00:00:00Z"), 10).0, 0);
    // A status patch meanwhile changes nothing; the final delete neither.
    state.apply(Ok(Event::Apply(with_watermark(
        deleting.clone(),
        "2026-11-25T10:00:00Z",
    ))));
    assert!(!state.published.dirty);
    state.apply(Ok(Event::Delete(deleting)));
    assert!(!state.published.dirty);
    assert!(state.slots.is_empty());
}

#[test]
fn a_rescale_moves_ownership_and_a_gained_resource_resumes_from_the_newest_status() {
    let list: Vec<MetricsExporter> = (0..60)
        .map(|i| resource(&format!("r{i}"), &format!("uid-{i}"), ""))
        .collect();
    let two = |ordinal| Shard {
        ordinal,
        replicas: 2,
    };
    let mut states: Vec<WatchState> = (0..2).map(|o| listed(&list, two(o))).collect();
    let before: Vec<Snapshot> = states.iter_mut().map(WatchState::snapshot).collect();
    // Every resource moves on meanwhile (status patches, not snapshots).
    for state in &mut states {
        for r in &list {
            state.apply(Ok(Event::Apply(with_watermark(
                r.clone(),
                "2026-11-25T10:00:00Z",
            ))));
        }
        assert!(!state.published.dirty);
    }
    // 2 → 3: the two running replicas re-classify; a third one starts.
    for (o, state) in states.iter_mut().enumerate() {
        state.reshard(Shard {
            ordinal: o as u32,
            replicas: 3,
        });
    }
    let mut third = listed(
        &list,
        Shard {
            ordinal: 2,
            replicas: 3,
        },
    );
    let after: Vec<Snapshot> = states
        .iter_mut()
        .map(WatchState::snapshot)
        .chain([third.snapshot()])
        .collect();
    let mut owners = BTreeMap::<&str, usize>::new();
    for (o, snap) in after.iter().enumerate() {
        for uid in snap.desired.keys() {
            *owners.entry(uid).or_default() += 1;
            if o < 2 {
                assert!(
                    before[o].desired.contains_key(uid),
                    "{uid} moved between old replicas"
                );
                // Still running here: the very same exporter, not restarted.
                assert!(Arc::ptr_eq(&before[o].desired[uid], &snap.desired[uid]));
            }
        }
    }
    assert_eq!(owners.len(), 60);
    assert!(owners.values().all(|&n| n == 1));
    assert!(!after[2].desired.is_empty());
    // A resource gained on a rescale resumes from the newest status watermark seen.
    let mut gained = listed(
        &list,
        Shard {
            ordinal: 1,
            replicas: 3,
        },
    );
    let owned_by_2: Vec<String> = after[2].desired.keys().cloned().collect();
    for r in &list {
        gained.apply(Ok(Event::Apply(with_watermark(
            r.clone(),
            "2026-11-25T11:00:00Z",
        ))));
    }
    gained.reshard(Shard {
        ordinal: 1,
        replicas: 2,
    });
    let snap = gained.snapshot();
    for uid in &owned_by_2 {
        if let Some(e) = snap.desired.get(uid) {
            assert_eq!(e.status_watermark, Some(ticks("2026-11-25T11:00:00Z")));
        }
    }
}

#[test]
fn staleness_is_the_watermark_behind_three_intervals_past_the_delay() {
    let minute = Span::from_secs(60);
    let input = |watermark: Option<&str>, created: Option<&str>| StaleInput {
        watermark: watermark.map(ticks),
        created: created.map(ticks),
        interval: minute,
        ingestion_delay: Span::from_secs(30),
    };
    let now = ticks("2026-11-25T10:00:00Z");
    // Allowance: 30 s + 3 × 1 min = 3m30s.
    assert!(!is_stale(&input(Some("2026-11-25T09:56:30Z"), None), now));
    assert!(is_stale(&input(Some("2026-11-25T09:56:29Z"), None), now));
    // Without a watermark the creation time counts; with one it does not.
    assert!(is_stale(&input(None, Some("2026-11-25T09:00:00Z")), now));
    assert!(!is_stale(&input(None, Some("2026-11-25T09:59:00Z")), now));
    assert!(!is_stale(
        &input(Some("2026-11-25T09:59:00Z"), Some("2020-01-01T00:00:00Z")),
        now
    ));
    assert!(!is_stale(&input(None, None), now), "nothing to judge by");
    // A watermark in the future (clock skew) is not stale.
    assert!(!is_stale(&input(Some("2026-11-25T11:00:00Z"), None), now));

    let names: Vec<String> = (0..25).map(|i| format!("ns/r{i:02}")).collect();
    let inputs = names.iter().enumerate().map(|(i, n)| {
        let w = if i % 2 == 0 {
            "2026-11-25T09:00:00Z"
        } else {
            "2026-11-25T09:59:00Z"
        };
        (n.as_str(), input(Some(w), None))
    });
    let (count, listed) = stale(inputs.clone(), now, 10);
    assert_eq!(count, 13);
    assert_eq!(listed.len(), 10);
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "{listed:?}");
    assert!(listed.iter().all(|n| {
        let i: usize = n[4..].parse().unwrap();
        i.is_multiple_of(2)
    }));
    assert_eq!(stale(inputs, now, 0), (13, vec![]));
}

#[test]
fn every_replica_checks_every_criteria_matching_resource() {
    let list = [
        resource("a", "u-a", ""),
        resource("b", "u-b", ""),
        resource("c", "u-c", "  criteria: {region: [westus]}"),
        resource("d", "u-d", "  ingestionDelay: bogus"),
    ];
    let later = ticks("2030-01-01T00:00:00Z");
    for ordinal in 0..3 {
        let state = listed(
            &list,
            Shard {
                ordinal,
                replicas: 3,
            },
        );
        // Created long ago (the test objects' creationTimestamp is unset: the watermark is).
        let mut state = state;
        for r in &list {
            state.apply(Ok(Event::Apply(with_watermark(
                r.clone(),
                "2026-11-25T10:00:00Z",
            ))));
        }
        let (count, names) = state.stale(later, 10);
        assert_eq!(
            (count, names),
            (2, vec!["ns/a", "ns/b"]),
            "replica {ordinal}"
        );
    }
}

/// A stale resource gets one Event per episode, from one replica of the fleet (its rendezvous
/// backup), and another once it was fresh and went stale again.
#[test]
fn a_stale_resource_gets_one_event_per_episode_from_one_replica() {
    let list = [resource("a", "u-a", ""), resource("b", "u-b", "")];
    let later = ticks("2030-01-01T00:00:00Z");
    let mut per_resource: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for ordinal in 0..3 {
        let mut state = listed(
            &list,
            Shard {
                ordinal,
                replicas: 3,
            },
        );
        for r in &list {
            state.apply(Ok(Event::Apply(with_watermark(
                r.clone(),
                "2026-11-25T10:00:00Z",
            ))));
        }
        for n in state.stale_notices(later) {
            assert_eq!(n.reason, "Stale");
            assert_eq!(n.severity, Severity::Warning);
            per_resource
                .entry(format!("{}/{}", n.regarding.namespace, n.regarding.name))
                .or_default()
                .push(ordinal);
        }
        assert!(state.stale_notices(later).is_empty(), "once per episode");
        // Fresh again, then stale again: a new episode.
        for r in &list {
            state.apply(Ok(Event::Apply(with_watermark(
                r.clone(),
                "2029-12-31T23:59:00Z",
            ))));
        }
        assert!(state.stale_notices(later).is_empty(), "fresh");
        for r in &list {
            state.apply(Ok(Event::Apply(with_watermark(
                r.clone(),
                "2026-11-25T10:00:00Z",
            ))));
        }
        let again = state.stale_notices(later).len();
        assert_eq!(
            again,
            per_resource
                .values()
                .filter(|o| o.contains(&ordinal))
                .count(),
            "replica {ordinal}: a new episode is noticed again"
        );
    }
    assert_eq!(per_resource.len(), 2, "{per_resource:?}");
    for (key, replicas) in &per_resource {
        assert_eq!(
            replicas.len(),
            1,
            "{key}: one replica speaks, not {replicas:?}"
        );
    }
}

/// Guards against a hang; never a timing assertion.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), f)
        .await
        .expect("the fake API server answered")
}

fn spec(criteria: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "database": "db", "interval": "1m", "body": "T", "criteria": criteria,
        "transform": {"valueColumns": ["v"], "timestampColumn": "ts", "defaultMetricName": "m"}
    })
}

#[tokio::test]
async fn lists_then_watches_the_api_server() {
    use crate::kube_support::{FakeApi, exporter};
    use serde_json::json;
    let fake = FakeApi::start().await;
    let a = fake.create(exporter("n1", "a", spec(json!({}))));
    let uid_a = a["metadata"]["uid"].as_str().unwrap().to_owned();
    fake.set_spec("n1", "a", spec(json!({"region": ["EastUS", "westus"]})));
    fake.set_status("n1", "a", json!({"watermark": "2026-11-25T10:00:00Z"}));
    fake.create(exporter("n1", "b", spec(json!({"region": ["westus"]}))));
    let source = KubeSource::new(
        fake.client().await,
        None,
        filter(),
        Membership::Fixed(Shard::SINGLE),
    );
    let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
    let health = Arc::new(Health::default());
    health.set_wal_open();
    let stop = CancellationToken::new();
    let task = tokio::spawn(source.run(tx, health.clone(), stop.clone()));

    within(rx.changed()).await.unwrap();
    let snap = rx.borrow_and_update().clone();
    let e = snap.desired.get(&uid_a).expect("a runs");
    assert_eq!(e.generation, 2, "a spec change is a new generation");
    assert_eq!(
        e.status_watermark,
        Some(crate::time::Ticks::parse("2026-11-25T10:00:00Z").unwrap())
    );
    assert!(matches!(
        snap.rejected.get("n1/b"),
        Some(Rejected::Skipped(_))
    ));
    assert_eq!(health.ready(), Ok(()), "ready once the list is synced");

    // A status patch publishes nothing: the next snapshot (made by a new resource, watched
    // after the patch) still holds the very same exporter for `a`.
    fake.set_status("n1", "a", json!({"watermark": "2026-11-25T10:05:00Z"}));
    let c = fake.create(exporter("n2", "c", spec(json!({"region": ["EastUS"]}))));
    let uid_c = c["metadata"]["uid"].as_str().unwrap().to_owned();
    within(rx.changed()).await.unwrap();
    let next = rx.borrow_and_update().clone();
    assert!(next.desired.contains_key(&uid_c));
    assert!(Arc::ptr_eq(&next.desired[&uid_a], &snap.desired[&uid_a]));

    fake.delete("n1", "a");
    within(rx.changed()).await.unwrap();
    assert_eq!(
        rx.borrow_and_update().desired.keys().collect::<Vec<_>>(),
        [&uid_c],
        "a deleted resource stops"
    );

    stop.cancel();
    assert!(within(task).await.unwrap().is_ok());
}

/// Starts the source of replica `ordinal` following StatefulSet `team/fleet`.
async fn replica(
    fake: &crate::kube_support::FakeApi,
    ordinal: u32,
    stop: &CancellationToken,
) -> (watch::Receiver<Arc<Snapshot>>, Arc<Health>) {
    let membership = Membership::StatefulSet {
        name: "fleet".into(),
        namespace: Some("team".into()),
        ordinal,
    };
    let source = KubeSource::new(fake.client().await, None, filter(), membership);
    let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
    let health = Arc::new(Health::default());
    health.set_wal_open();
    tokio::spawn(source.run(tx, health.clone(), stop.clone()));
    (rx, health)
}

#[tokio::test]
async fn replicas_follow_the_statefulset_and_a_rescale_moves_resources_without_a_restart() {
    use crate::kube_support::{FakeApi, exporter};
    use serde_json::json;
    let fake = FakeApi::start().await;
    let mut uids = Vec::new();
    for i in 0..30 {
        let o = fake.create(exporter("n1", &format!("r{i}"), spec(json!({}))));
        uids.push(o["metadata"]["uid"].as_str().unwrap().to_owned());
    }
    let stop = CancellationToken::new();
    let (mut rx0, health0) = replica(&fake, 0, &stop).await;
    let (mut rx1, _) = replica(&fake, 1, &stop).await;
    // No StatefulSet yet: not ready, nothing runs.
    fake.create(exporter("n1", "marker", spec(json!({"region": ["mars"]}))));
    assert!(health0.ready().is_err());
    assert!(rx0.borrow().desired.is_empty() && !rx0.has_changed().unwrap());

    fake.create_statefulset("team", "fleet", Some(2));
    within(rx0.changed()).await.unwrap();
    within(rx1.changed()).await.unwrap();
    assert_eq!(health0.ready(), Ok(()));
    let s0 = rx0.borrow_and_update().clone();
    let s1 = rx1.borrow_and_update().clone();
    assert_eq!(s0.desired.len() + s1.desired.len(), 30);
    assert!(s0.desired.keys().all(|u| !s1.desired.contains_key(u)));

    fake.scale_statefulset("team", "fleet", 3);
    within(rx0.changed()).await.unwrap();
    within(rx1.changed()).await.unwrap();
    let (mut rx2, _) = replica(&fake, 2, &stop).await;
    within(rx2.changed()).await.unwrap();
    let t0 = rx0.borrow_and_update().clone();
    let t1 = rx1.borrow_and_update().clone();
    let t2 = rx2.borrow_and_update().clone();
    assert_eq!(t0.desired.len() + t1.desired.len() + t2.desired.len(), 30);
    assert!(!t2.desired.is_empty());
    for (before, after) in [(&s0, &t0), (&s1, &t1)] {
        for (uid, e) in &after.desired {
            // Kept ones are the same exporter (the scheduler does not restart them).
            assert!(
                Arc::ptr_eq(e, &before.desired[uid]),
                "{uid} moved between old replicas"
            );
        }
    }
    for uid in &uids {
        let n = [&t0, &t1, &t2]
            .iter()
            .filter(|s| s.desired.contains_key(uid))
            .count();
        assert_eq!(n, 1, "{uid}");
    }
    // The watch asked for that one StatefulSet only (what RBAC resourceNames allows).
    let sts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("statefulsets"))
        .collect();
    assert!(!sts.is_empty());
    assert!(
        sts.iter()
            .all(|r| r.path == "/apis/apps/v1/namespaces/team/statefulsets"
                && r.query.contains("fieldSelector=metadata.name%3Dfleet")),
        "{sts:?}"
    );
    stop.cancel();
}
