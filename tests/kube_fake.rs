//! The fake Kubernetes API server (`tests/kube_support`) checked on its own: the wire format with plain
//! HTTP, and a real `kube::Client` + `kube::runtime::watcher` built from the kubeconfig it writes.

mod kube_support;

use std::time::Duration;

use adxexporter::crd::{MetricsExporter, MetricsExporterStatus};
use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube_support::{FakeApi, FakeOptions, exporter};
use serde_json::{Value, json};

const COLLECTION: &str = "/apis/adx-mon.azure.com/v1/namespaces/ns1/metricsexporters";
/// No test may wait longer than this for one step.
const STEP: Duration = Duration::from_secs(20);

fn spec(interval: &str) -> Value {
    json!({
        "database": "memory",
        "interval": interval,
        "body": "T | where Timestamp between (_startTime .. _endTime)",
        "transform": { "valueColumns": ["V"], "timestampColumn": "Timestamp" },
    })
}

fn http() -> reqwest::Client {
    adxexporter::tls::install_crypto_provider();
    reqwest::Client::new()
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let response = req.send().await.unwrap();
    let code = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn rv(o: &Value) -> u64 {
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The newline-delimited events of a watch that ends by itself (short timeoutSeconds).
async fn watch_lines(url: &str) -> Vec<Value> {
    let text = tokio::time::timeout(STEP, async {
        http().get(url).send().await.unwrap().text().await.unwrap()
    })
    .await
    .expect("the watch ends after timeoutSeconds");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_over_plain_http_follows_the_api_conventions() {
    let api = FakeApi::start().await;
    let base = format!("{}{COLLECTION}", api.url);
    let c = http();

    let (code, created) = send(
        c.post(&base)
            .header("content-type", "application/json")
            .body(exporter("ns1", "a", spec("1m")).to_string()),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let meta = &created["metadata"];
    assert_eq!(meta["generation"], 1);
    assert_eq!(meta["namespace"], "ns1");
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    let rv1 = rv(&created);

    let (code, again) = send(
        c.post(&base)
            .header("content-type", "application/json")
            .body(exporter("ns1", "a", spec("1m")).to_string()),
    )
    .await;
    assert_eq!(
        (code, again["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );

    let (code, list) = send(c.get(format!(
        "{}/apis/adx-mon.azure.com/v1/metricsexporters",
        api.url
    )))
    .await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "MetricsExporterList");
    assert_eq!(list["metadata"]["resourceVersion"], rv1.to_string());
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, other_ns) = send(c.get(format!(
        "{}/apis/adx-mon.azure.com/v1/namespaces/ns2/metricsexporters",
        api.url
    )))
    .await;
    assert_eq!(other_ns["items"].as_array().unwrap().len(), 0);

    let (code, missing) = send(c.get(format!("{base}/nope"))).await;
    assert_eq!(code, 404);
    assert_eq!(missing["kind"], "Status");
    assert_eq!(missing["reason"], "NotFound");
    assert_eq!(missing["code"], 404);

    // A status written through the main resource is ignored; a spec change bumps generation.
    let (code, patched) = send(
        c.patch(format!("{base}/a"))
            .header("content-type", "application/merge-patch+json")
            .body(json!({"spec": {"interval": "5m"}, "status": {"watermark": "x"}}).to_string()),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["metadata"]["generation"], 2);
    assert_eq!(patched["spec"]["interval"], "5m");
    assert!(patched.get("status").is_none(), "{patched}");
    let rv2 = rv(&patched);
    assert!(rv2 > rv1);

    // Status patches never change generation; a no-op patch changes nothing at all.
    let status_url = format!("{base}/a/status");
    let body = json!({"status": {"watermark": "2026-01-01T00:00:00Z"}}).to_string();
    let (code, with_status) = send(
        c.patch(&status_url)
            .header("content-type", "application/merge-patch+json")
            .body(body.clone()),
    )
    .await;
    assert_eq!(code, 200, "{with_status}");
    assert_eq!(with_status["status"]["watermark"], "2026-01-01T00:00:00Z");
    assert_eq!(with_status["metadata"]["generation"], 2);
    let rv3 = rv(&with_status);
    assert!(rv3 > rv2);
    let (_, same) = send(
        c.patch(&status_url)
            .header("content-type", "application/merge-patch+json")
            .body(body),
    )
    .await;
    assert_eq!(rv(&same), rv3, "a no-op patch keeps the resourceVersion");

    // Apply needs a field manager; with one it merges into the status.
    let apply = json!({"apiVersion": "adx-mon.azure.com/v1", "kind": "MetricsExporter",
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    .to_string();
    let (code, _) = send(
        c.patch(&status_url)
            .header("content-type", "application/apply-patch+yaml")
            .body(apply.clone()),
    )
    .await;
    assert_eq!(code, 422);
    let (code, applied) = send(
        c.patch(format!("{status_url}?fieldManager=t&force=true"))
            .header("content-type", "application/apply-patch+yaml")
            .body(apply),
    )
    .await;
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["status"]["watermark"], "2026-01-01T00:00:00Z");
    assert_eq!(applied["status"]["conditions"][0]["type"], "Ready");
    let (code, _) = send(
        c.patch(&status_url)
            .header("content-type", "application/strategic-merge-patch+json")
            .body("{}"),
    )
    .await;
    assert_eq!(code, 415);
    let patches = api.status_patches();
    assert_eq!(patches.len(), 5);
    assert_eq!(patches[0].client, "default");
    assert_eq!(
        (patches[0].namespace.as_str(), patches[0].name.as_str()),
        ("ns1", "a")
    );

    // A watch from the first version replays every later change, then ends with a bookmark.
    let events = watch_lines(&format!(
        "{base}?watch=true&resourceVersion={rv1}&timeoutSeconds=1&allowWatchBookmarks=true"
    ))
    .await;
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["MODIFIED", "MODIFIED", "MODIFIED", "BOOKMARK"]);
    assert_eq!(rv(&events[0]["object"]), rv2);
    assert_eq!(rv(&events[3]["object"]), rv(&applied));

    let (code, deleted) = send(c.delete(format!("{base}/a"))).await;
    assert_eq!(code, 200);
    assert!(rv(&deleted) > rv(&applied));
    let (code, _) = send(c.get(format!("{base}/a"))).await;
    assert_eq!(code, 404);
    let events = watch_lines(&format!(
        "{base}?watch=true&resourceVersion={}&timeoutSeconds=1",
        rv(&applied)
    ))
    .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "DELETED");
    assert_eq!(events[0]["object"]["metadata"]["name"], "a");

    let (code, version) = send(c.get(format!("{}/version", api.url))).await;
    assert_eq!((code, version["major"].as_str()), (200, Some("1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_the_retained_log_expires() {
    let api = FakeApi::start_with(FakeOptions {
        event_retention: 2,
        ..FakeOptions::default()
    })
    .await;
    for name in ["a", "b", "c", "d"] {
        api.create(exporter("ns1", name, spec("1m")));
    }
    let base = format!("{}{COLLECTION}", api.url);
    let events = watch_lines(&format!(
        "{base}?watch=true&resourceVersion=1&timeoutSeconds=1"
    ))
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR");
    assert_eq!(events[0]["object"]["code"], 410);
    assert_eq!(events[0]["object"]["reason"], "Expired");
    // Still inside the log: the last two creations.
    let events = watch_lines(&format!(
        "{base}?watch=true&resourceVersion=2&timeoutSeconds=1"
    ))
    .await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c", "d"]);

    let strict = FakeApi::start_with(FakeOptions {
        event_retention: 1,
        expired_as_http_410: true,
        ..FakeOptions::default()
    })
    .await;
    strict.create(exporter("ns1", "a", spec("1m")));
    strict.create(exporter("ns1", "b", spec("1m")));
    strict.create(exporter("ns1", "c", spec("1m")));
    let (code, status) = send(http().get(format!(
        "{}{COLLECTION}?watch=true&resourceVersion=0&timeoutSeconds=1",
        strict.url
    )))
    .await;
    assert_eq!(code, 200, "resourceVersion=0 means 'any': never expired");
    assert_eq!(
        status.as_str().map(|s| s.lines().count()),
        Some(3),
        "{status}"
    );
    let (code, status) = send(http().get(format!(
        "{}{COLLECTION}?watch=true&resourceVersion=1&timeoutSeconds=1",
        strict.url
    )))
    .await;
    assert_eq!((code, status["reason"].as_str()), (410, Some("Expired")));
}

async fn kube_client(api: &FakeApi, dir: &tempfile::TempDir) -> kube::Client {
    adxexporter::tls::install_crypto_provider();
    let path = dir.path().join("kubeconfig");
    FakeApi::write_kubeconfig(&api.url, &path);
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// The next watcher event (errors included), failing after [`STEP`].
async fn next<S>(stream: &mut S) -> Result<watcher::Event<MetricsExporter>, watcher::Error>
where
    S: futures::Stream<Item = Result<watcher::Event<MetricsExporter>, watcher::Error>> + Unpin,
{
    tokio::time::timeout(STEP, stream.next())
        .await
        .expect("a watcher event in time")
        .expect("the watcher stream never ends")
}

fn name_of(o: &MetricsExporter) -> &str {
    o.metadata.name.as_deref().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watcher_lists_watches_and_recovers_from_410() {
    let api = FakeApi::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = kube_client(&api, &dir).await;
    let all: Api<MetricsExporter> = Api::all(client.clone());
    let ns1: Api<MetricsExporter> = Api::namespaced(client, "ns1");

    let mut first: MetricsExporter =
        serde_json::from_value(exporter("ns1", "a", spec("1m"))).unwrap();
    first.metadata.resource_version = None;
    let created = ns1.create(&PostParams::default(), &first).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some());
    assert_eq!(all.list(&Default::default()).await.unwrap().items.len(), 1);

    let mut events = watcher(all, watcher::Config::default()).boxed();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    match next(&mut events).await.unwrap() {
        watcher::Event::InitApply(o) => assert_eq!(name_of(&o), "a"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));

    api.create(exporter("ns1", "b", spec("1m")));
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(o) => assert_eq!(name_of(&o), "b"),
        e => panic!("{e:?}"),
    }
    // Status round trip through the real client.
    let status = MetricsExporterStatus {
        watermark: Some("2026-11-25T10:00:00Z".into()),
        ..Default::default()
    };
    let patched = ns1
        .patch_status(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .unwrap();
    assert_eq!(patched.status.as_ref().unwrap().watermark, status.watermark);
    assert_eq!(patched.metadata.generation, Some(1));
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(o) => {
            assert_eq!(o.status.unwrap().watermark, status.watermark)
        }
        e => panic!("{e:?}"),
    }
    let applied = ns1
        .patch_status(
            "b",
            &PatchParams::apply("kubetest").force(),
            &Patch::Apply(json!({
                "apiVersion": "adx-mon.azure.com/v1", "kind": "MetricsExporter",
                "status": { "observedGeneration": 1 },
            })),
        )
        .await
        .unwrap();
    let s = applied.status.unwrap();
    assert_eq!(
        (s.watermark, s.observed_generation),
        (status.watermark, Some(1))
    );
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Apply(_)
    ));

    ns1.delete("a", &DeleteParams::default()).await.unwrap();
    match next(&mut events).await.unwrap() {
        watcher::Event::Delete(o) => assert_eq!(name_of(&o), "a"),
        e => panic!("{e:?}"),
    }

    // Compaction: the open watch gets 410 Expired, and the watcher re-lists.
    api.compact();
    match next(&mut events).await {
        Err(watcher::Error::WatchError(e)) => assert_eq!(e.code, 410),
        e => panic!("expected a 410 watch error, got {e:?}"),
    }
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    match next(&mut events).await.unwrap() {
        watcher::Event::InitApply(o) => assert_eq!(name_of(&o), "b"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));
    api.create(exporter("ns1", "c", spec("1m")));
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(o) => assert_eq!(name_of(&o), "c"),
        e => panic!("{e:?}"),
    }

    // What kube-rs puts on the wire for the two patch kinds.
    let patches = api.status_patches();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[0].content_type, "application/merge-patch+json");
    assert_eq!(
        patches[0].body,
        json!({ "status": { "watermark": "2026-11-25T10:00:00Z" } })
    );
    assert_eq!(patches[1].content_type, "application/apply-patch+yaml");
    let apply_query = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH" && r.content_type.contains("apply"))
        .unwrap()
        .query;
    assert!(
        apply_query.contains("fieldManager=kubetest") && apply_query.contains("force=true"),
        "{apply_query}"
    );

    let requests: Vec<String> = api
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {}?{} [{}] ua={:?}",
                r.method, r.path, r.query, r.content_type, r.user_agent
            )
        })
        .collect();
    println!("kube-rs GET requests:\n{}", requests.join("\n"));
    assert!(
        requests
            .iter()
            .any(|r| r.contains("watch=true") && r.contains("allowWatchBookmarks=true")),
        "{requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_replaces_and_namespaced_watches_see_only_their_namespace() {
    let api = FakeApi::start().await;
    let mut labelled = exporter("ns1", "a", spec("1m"));
    labelled["metadata"]["labels"] = json!({ "team": "x" });
    let created = api.create(labelled);
    api.create(exporter("ns2", "b", spec("1m")));
    let c = http();
    let url = format!("{}{COLLECTION}/a", api.url);

    // PUT replaces the object: a label it leaves out is gone; a stale resourceVersion is a conflict.
    let mut replacement = created.clone();
    replacement["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("labels");
    replacement["spec"]["interval"] = json!("2m");
    let (code, replaced) = send(
        c.put(&url)
            .header("content-type", "application/json")
            .body(replacement.to_string()),
    )
    .await;
    assert_eq!(code, 200, "{replaced}");
    assert!(replaced["metadata"].get("labels").is_none(), "{replaced}");
    assert_eq!(replaced["metadata"]["generation"], 2);
    assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);
    let (code, conflict) = send(
        c.put(&url)
            .header("content-type", "application/json")
            .body(replacement.to_string()),
    )
    .await;
    assert_eq!((code, conflict["reason"].as_str()), (409, Some("Conflict")));

    // Namespaced watch from "0": synthetic ADDED for its namespace only, then later changes there.
    api.set_spec("ns2", "b", spec("5m"));
    api.delete("ns1", "a");
    let events = watch_lines(&format!(
        "{}/apis/adx-mon.azure.com/v1/namespaces/ns2/metricsexporters?watch=true&resourceVersion={}&timeoutSeconds=1",
        api.url,
        rv(&created)
    ))
    .await;
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("ADDED", "b"), ("MODIFIED", "b")]);
    let initial = watch_lines(&format!(
        "{}{COLLECTION}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
        api.url
    ))
    .await;
    assert_eq!(
        initial.len(),
        2,
        "no objects left in ns1: the end bookmark, then the closing one"
    );
    assert_eq!(
        initial[0]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_streaming_list_watcher_on_one_namespace() {
    let api = FakeApi::start().await;
    api.create(exporter("ns1", "a", spec("1m")));
    api.create(exporter("ns2", "other", spec("1m")));
    let dir = tempfile::tempdir().unwrap();
    let ns1: Api<MetricsExporter> = Api::namespaced(kube_client(&api, &dir).await, "ns1");
    let mut events = watcher(ns1, watcher::Config::default().streaming_lists()).boxed();
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::Init
    ));
    match next(&mut events).await.unwrap() {
        watcher::Event::InitApply(o) => assert_eq!(name_of(&o), "a"),
        e => panic!("{e:?}"),
    }
    assert!(matches!(
        next(&mut events).await.unwrap(),
        watcher::Event::InitDone
    ));
    api.create(exporter("ns2", "other2", spec("1m")));
    api.set_spec("ns1", "a", spec("2m"));
    match next(&mut events).await.unwrap() {
        watcher::Event::Apply(o) => {
            assert_eq!((name_of(&o), o.metadata.generation), ("a", Some(2)))
        }
        e => panic!("{e:?}"),
    }
    let watch = api
        .requests()
        .into_iter()
        .find(|r| r.query.contains("watch=true"))
        .unwrap();
    assert_eq!(
        watch.path,
        "/apis/adx-mon.azure.com/v1/namespaces/ns1/metricsexporters"
    );
    assert!(
        watch.query.contains("sendInitialEvents=true"),
        "{}",
        watch.query
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_patch_tests_the_uid_and_a_status_patch_changes_only_the_status() {
    let api = FakeApi::start().await;
    let created = api.create(exporter("ns1", "a", spec("1m")));
    let uid = created["metadata"]["uid"].as_str().unwrap().to_owned();
    let url = format!("{}{COLLECTION}/a/status", api.url);
    let c = http();
    let patch = |uid: &str| {
        json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/status", "value": {"watermark": "2026-01-01T00:00:00Z"}},
            {"op": "add", "path": "/metadata/labels", "value": {"ignored": "yes"}},
        ])
        .to_string()
    };
    let (code, body) = send(
        c.patch(&url)
            .header("content-type", "application/json-patch+json")
            .body(patch("someone-else")),
    )
    .await;
    // kube-apiserver words a failed operation this way, without saying which one.
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["reason"], "Invalid");
    assert_eq!(
        body["message"],
        "the server rejected our request due to an error in our request"
    );
    assert!(api.get("ns1", "a").unwrap().get("status").is_none());

    let (code, body) = send(
        c.patch(&url)
            .header("content-type", "application/json-patch+json")
            .body(patch(&uid)),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"]["watermark"], "2026-01-01T00:00:00Z");
    assert!(
        body["metadata"].get("labels").is_none(),
        "metadata is not written through /status: {body}"
    );
    // A merge patch's metadata.uid is ignored on /status (the status strategy keeps the stored
    // metadata): it is no precondition.
    let (code, body) = send(
        c.patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(
                json!({"metadata": {"uid": "someone-else"}, "status": {"watermark": "x"}})
                    .to_string(),
            ),
    )
    .await;
    assert_eq!(
        (code, body["status"]["watermark"].as_str()),
        (200, Some("x"))
    );
    assert_eq!(body["metadata"]["uid"], uid.as_str());
    let patches = api.status_patches();
    assert_eq!(patches[0].content_type, "application/json-patch+json");
    assert_eq!(patches[0].body[0]["op"], "test");
    assert_eq!(patches[0].code, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruned_status_fields_and_refused_status_patches() {
    let api = FakeApi::start_with(FakeOptions {
        pruned_status_fields: vec!["watermark"],
        ..FakeOptions::default()
    })
    .await;
    api.create(exporter("ns1", "a", spec("1m")));
    let stored = api.set_status(
        "ns1",
        "a",
        json!({"watermark": "2026-01-01T00:00:00Z", "conditions": [{"type": "Ready", "status": "True"}]}),
    );
    assert!(stored["status"].get("watermark").is_none(), "{stored}");
    assert_eq!(stored["status"]["conditions"][0]["type"], "Ready");

    let url = format!("{}{COLLECTION}/a/status", api.url);
    let merge = json!({"status": {"observedGeneration": 1}}).to_string();
    for (code, reason) in [(422, "Invalid"), (403, "Forbidden")] {
        api.fail_status_patches(Some(code));
        let (got, body) = send(
            http()
                .patch(&url)
                .header("content-type", "application/merge-patch+json")
                .body(merge.clone()),
        )
        .await;
        assert_eq!(
            (got, body["reason"].as_str()),
            (code, Some(reason)),
            "{body}"
        );
    }
    api.fail_status_patches(None);
    let (code, _) = send(
        http()
            .patch(&url)
            .header("content-type", "application/merge-patch+json")
            .body(merge),
    )
    .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_created_patched_and_recorded() {
    let api = FakeApi::start().await;
    let base = format!("{}/apis/events.k8s.io/v1/namespaces/ns1/events", api.url);
    let c = http();
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "a.17f", "namespace": "ns1"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "adxexporter", "reportingInstance": "adxexporter-0",
        "action": "Query", "reason": "QueryFailing", "type": "Warning", "note": "n",
        "regarding": {"kind": "MetricsExporter", "name": "a", "namespace": "ns1", "uid": "u"},
    });
    let post = |body: Value| {
        c.post(&base)
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let (code, created) = send(post(event.clone())).await;
    assert_eq!(code, 201, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    let (code, _) = send(post(event.clone())).await;
    assert_eq!(code, 409);
    let mut incomplete = event.clone();
    incomplete["metadata"]["name"] = json!("b.1");
    incomplete
        .as_object_mut()
        .unwrap()
        .remove("reportingController");
    let (code, body) = send(post(incomplete)).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("reportingController")
    );

    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}});
    let (code, patched) = send(
        c.patch(format!("{base}/a.17f"))
            .header("content-type", "application/merge-patch+json")
            .body(series.to_string()),
    )
    .await;
    assert_eq!(code, 200, "{patched}");
    assert_eq!(patched["series"]["count"], 2);
    let (code, _) = send(
        c.patch(format!("{base}/gone"))
            .header("content-type", "application/merge-patch+json")
            .body(series.to_string()),
    )
    .await;
    assert_eq!(code, 404);
    let (code, list) = send(c.get(&base)).await;
    assert_eq!((code, list["items"].as_array().unwrap().len()), (200, 1));

    assert_eq!(api.events().len(), 1);
    let writes: Vec<(String, String, u16)> = (api.event_writes().into_iter())
        .map(|w| (w.method, w.name, w.code))
        .collect();
    assert_eq!(
        writes,
        [
            ("POST", "a.17f", 201),
            ("POST", "a.17f", 409),
            ("POST", "b.1", 422),
            ("PATCH", "a.17f", 200),
            ("PATCH", "gone", 404),
        ]
        .map(|(m, n, c)| (m.to_owned(), n.to_owned(), c))
        .to_vec()
    );
    api.fail_event_writes(Some(403));
    let mut other = event;
    other["metadata"]["name"] = json!("c.1");
    let (code, body) = send(post(other)).await;
    assert_eq!((code, body["reason"].as_str()), (403, Some("Forbidden")));
}
