//! A faithful in-process fake of the Kubernetes API server for one custom resource, MetricsExporter
//! (`adx-mon.azure.com/v1`, plural `metricsexporters`, namespaced, with a status subresource).
//! It speaks the real wire format so that the real binary (through kube-rs) and tests can drive it.
//!
//! Semantics kept from kube-apiserver:
//! - one global, strictly increasing `resourceVersion` (decimal string); every stored object carries
//!   `metadata.{name,namespace,uid,resourceVersion,generation,creationTimestamp}`;
//! - `generation` starts at 1 and grows only when `spec` changes; writes to the main resource ignore
//!   `status`, writes to `/status` change only `status`; a write that changes nothing is a no-op
//!   (no new resourceVersion, no event) — as the real server does;
//! - list answers `MetricsExporterList` with the current resourceVersion (no pagination: `limit` is
//!   ignored and no `continue` is returned, which is legal);
//! - `?watch=true&resourceVersion=N` replays every change after N from a bounded event log, then streams
//!   new ones as newline-delimited JSON, and ends after `timeoutSeconds` (a BOOKMARK first when
//!   `allowWatchBookmarks=true`). `resourceVersion` absent or `"0"` starts with synthetic ADDED events
//!   for every object; `sendInitialEvents=true` ends those with a BOOKMARK annotated
//!   `k8s.io/initial-events-end`. N older than the retained log gets, like the real server, HTTP 200
//!   and one `ERROR` event carrying a `Status` with `code: 410, reason: "Expired"` (kube-rs re-lists on
//!   it); [`FakeOptions::expired_as_http_410`] answers a plain HTTP 410 instead;
//! - merge patch (`application/merge-patch+json`, RFC 7386) and server-side apply
//!   (`application/apply-patch+yaml`, needs `fieldManager`) are both applied as a JSON merge patch:
//!   enough for a status subtree; managed fields are not tracked. JSON patch
//!   (`application/json-patch+json`, RFC 6902) is applied to the whole stored object, so a `test` of
//!   `/metadata/uid` is a precondition; a failing operation gets what kube-apiserver answers: 422,
//!   reason `Invalid`, message "the server rejected our request due to an error in our request"
//!   (the cause is not said). On `/status` only the resulting `status` is kept (as the status
//!   strategy's PrepareForUpdate does, so `metadata` in a status patch is ignored, uid included).
//!   Strategic merge gets 415, as for any custom resource;
//! - [`FakeOptions::pruned_status_fields`] makes status writes drop those fields, as a structural
//!   schema without them (an adx-mon CRD applied over adxexporter's) prunes them;
//!   [`FakeApi::fail_status_patches`] answers status patches with a 422 (schema) or 403 (RBAC) the
//!   way the real server words them;
//! - `events.k8s.io/v1` Events: create (POST, 201; 422 without the fields the API requires of a new
//!   Event, 409 if the name exists), merge patch (PATCH, 404 if gone), get and list; every write is
//!   recorded ([`FakeApi::events`], [`FakeApi::event_writes`]); [`FakeApi::fail_event_writes`]
//!   refuses them (RBAC);
//! - DELETE of an object with `metadata.finalizers` only sets `metadata.deletionTimestamp` (and bumps
//!   `generation`); a later write that empties the finalizers removes it (a DELETED event);
//! - errors are `Status` objects with the real `reason`s (NotFound, AlreadyExists, Conflict, Expired…).
//!
//! Also `apps/v1` StatefulSets (get, list, watch in a namespace or across all, with a
//! `fieldSelector=metadata.name=NAME` as a watch restricted by RBAC `resourceNames` needs), created
//! and scaled by the test ([`FakeApi::create_statefulset`], [`FakeApi::scale_statefulset`]): a
//! change of `spec.replicas` bumps `generation` and is a MODIFIED event, on the same global
//! resourceVersion as the MetricsExporters.
//!
//! Every request is recorded with the name of the listener it came in on: [`FakeApi::add_client`]
//! opens one more port on the same store, so two processes given two kubeconfigs can be told apart.
//!
//! Also compiled into the library's unit tests (`crate::kube_support`, see `lib.rs`): one fake for all.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

pub const GROUP: &str = "adx-mon.azure.com";
pub const API_VERSION: &str = "adx-mon.azure.com/v1";
pub const KIND: &str = "MetricsExporter";
pub const PLURAL: &str = "metricsexporters";
const PREFIX: &str = "/apis/adx-mon.azure.com/v1";
const APPS_PREFIX: &str = "/apis/apps/v1";
/// What the real server uses when a watch names no timeout (it picks 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Knobs a test can turn.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// How many events the watch log keeps; older resourceVersions get 410 Expired.
    pub event_retention: usize,
    /// Answer a too-old watch with HTTP 410 instead of the real server's 200 + ERROR event.
    pub expired_as_http_410: bool,
    /// Top-level `status` fields every status write drops, as a CRD schema without them prunes them
    /// (e.g. `["watermark"]`: adx-mon's CRD re-applied over adxexporter's).
    pub pruned_status_fields: Vec<&'static str>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            event_retention: 10_000,
            expired_as_http_410: false,
            pruned_status_fields: Vec::new(),
        }
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub client: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub user_agent: String,
}

/// One `PATCH …/status`, recorded whether or not it changed anything.
#[derive(Clone, Debug)]
pub struct StatusPatch {
    pub at: Instant,
    pub client: String,
    pub namespace: String,
    pub name: String,
    pub content_type: String,
    pub body: Value,
    /// The answer's HTTP status.
    pub code: u16,
}

/// One write (POST or PATCH) of an `events.k8s.io/v1` Event, recorded whatever its answer.
#[derive(Clone, Debug)]
pub struct EventWrite {
    pub method: String,
    pub namespace: String,
    /// The Event's name (from the path, or the body of a POST).
    pub name: String,
    pub body: Value,
    pub code: u16,
}

/// The two kinds the fake serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ObjectKind {
    Exporter,
    StatefulSet,
}

impl ObjectKind {
    fn of(object: &Value) -> ObjectKind {
        if object["kind"] == "StatefulSet" {
            ObjectKind::StatefulSet
        } else {
            ObjectKind::Exporter
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            ObjectKind::Exporter => API_VERSION,
            ObjectKind::StatefulSet => "apps/v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            ObjectKind::Exporter => KIND,
            ObjectKind::StatefulSet => "StatefulSet",
        }
    }
}

#[derive(Clone, Debug)]
struct LoggedEvent {
    rv: u64,
    kind: ObjectKind,
    type_: &'static str,
    object: Value,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: BTreeMap<(String, String), Value>,
    statefulsets: BTreeMap<(String, String), Value>,
    log: VecDeque<LoggedEvent>,
    /// The newest resourceVersion dropped from `log`; a watch from before it has missed events.
    compacted_through: u64,
    requests: Vec<RecordedRequest>,
    status_patches: Vec<StatusPatch>,
    /// `events.k8s.io/v1` Events by (namespace, name).
    events: BTreeMap<(String, String), Value>,
    event_writes: Vec<EventWrite>,
    /// Answer every status patch with this code (422 or 403 worded as the real server does).
    status_patch_failure: Option<u16>,
    /// Answer every Event write with this code.
    event_write_failure: Option<u16>,
}

struct Shared {
    options: FakeOptions,
    store: Mutex<Store>,
    /// Current resourceVersion, to wake watch streams; `u64::MAX` means shutting down.
    changed: tokio::sync::watch::Sender<u64>,
}

/// A running fake API server; its listeners stop when it drops.
pub struct FakeApi {
    shared: Arc<Shared>,
    /// `http://127.0.0.1:PORT` of the first listener (client name `default`).
    pub url: String,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.changed.send_replace(u64::MAX);
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        FakeApi::start_with(FakeOptions::default()).await
    }

    pub async fn start_with(options: FakeOptions) -> FakeApi {
        let (changed, _) = tokio::sync::watch::channel(0);
        let shared = Arc::new(Shared {
            options,
            store: Mutex::new(Store::default()),
            changed,
        });
        let mut api = FakeApi {
            shared,
            url: String::new(),
            tasks: Mutex::new(Vec::new()),
        };
        api.url = api.add_client("default").await;
        api
    }

    /// Opens another port on the same store; requests through it are recorded as `client`.
    pub async fn add_client(&self, client: &str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(handle)
            .with_state((self.shared.clone(), Arc::<str>::from(client)));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        self.tasks.lock().unwrap().push(task);
        format!("http://{addr}")
    }

    /// Creates an object as `POST` would; panics on conflict (test setup).
    pub fn create(&self, object: Value) -> Value {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let (code, body) = self.shared.create(&ns, object);
        assert_eq!(code, StatusCode::CREATED, "{body}");
        body
    }

    /// Replaces `spec` as a merge patch on the main resource would (bumps generation when it changes).
    pub fn set_spec(&self, namespace: &str, name: &str, spec: Value) -> Value {
        let mut object = self
            .get(namespace, name)
            .expect("set_spec of a stored object");
        object["spec"] = spec;
        let (code, body) = self.shared.patch_main(namespace, name, None, Some(object));
        assert_eq!(code, StatusCode::OK, "{body}");
        body
    }

    /// Replaces `status` as a merge patch on the status subresource would.
    pub fn set_status(&self, namespace: &str, name: &str, status: Value) -> Value {
        let patch = Patch::Merge(json!({ "status": status }));
        let (code, body) = (self.shared).patch_status(namespace, name, &patch);
        assert_eq!(code, StatusCode::OK, "{body}");
        body
    }

    /// From now on, answer every status patch with `code` (422: the CRD schema refuses the status;
    /// 403: RBAC lacks patch on metricsexporters/status; others: a generic Status), or normally.
    pub fn fail_status_patches(&self, code: Option<u16>) {
        self.shared.store.lock().unwrap().status_patch_failure = code;
    }

    /// From now on, answer every Event write with `code` (403: RBAC lacks create/patch on events).
    pub fn fail_event_writes(&self, code: Option<u16>) {
        self.shared.store.lock().unwrap().event_write_failure = code;
    }

    /// Every stored `events.k8s.io/v1` Event.
    pub fn events(&self) -> Vec<Value> {
        let store = self.shared.store.lock().unwrap();
        store.events.values().cloned().collect()
    }

    /// Every Event write, in order.
    pub fn event_writes(&self) -> Vec<EventWrite> {
        self.shared.store.lock().unwrap().event_writes.clone()
    }

    /// A client built from a kubeconfig pointing at the first listener, as `kube::Client::try_default()`
    /// builds one from `KUBECONFIG`.
    pub async fn client(&self) -> kube::Client {
        adxexporter::tls::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        FakeApi::write_kubeconfig(&self.url, &path);
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }

    pub fn delete(&self, namespace: &str, name: &str) -> Value {
        let (code, body) = self.shared.delete(namespace, name);
        assert_eq!(code, StatusCode::OK, "{body}");
        body
    }

    /// Sets `metadata.finalizers` as a merge patch on the main resource would (an empty list on an
    /// object being deleted lets it go).
    pub fn set_finalizers(&self, namespace: &str, name: &str, finalizers: &[&str]) -> Value {
        let patch = json!({ "metadata": { "finalizers": finalizers } });
        let (code, body) = self
            .shared
            .patch_main(namespace, name, Some(Patch::Merge(patch)), None);
        assert_eq!(code, StatusCode::OK, "{body}");
        body
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().unwrap();
        store
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Creates StatefulSet `namespace/name` with `spec.replicas = replicas` (`None`: the field is
    /// absent, which Kubernetes reads as 1).
    pub fn create_statefulset(&self, namespace: &str, name: &str, replicas: Option<u32>) -> Value {
        let mut store = self.shared.store.lock().unwrap();
        let key = (namespace.to_owned(), name.to_owned());
        assert!(!store.statefulsets.contains_key(&key), "{name} exists");
        let mut spec = json!({
            "serviceName": name,
            "selector": { "matchLabels": { "app.kubernetes.io/name": name } },
            "template": { "metadata": { "labels": { "app.kubernetes.io/name": name } },
                          "spec": { "containers": [{ "name": "adxexporter", "image": "adxexporter" }] } },
        });
        if let Some(r) = replicas {
            spec["replicas"] = json!(r);
        }
        let object = json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {
                "name": name, "namespace": namespace, "uid": uuid::Uuid::new_v4().to_string(),
                "generation": 1, "creationTimestamp": now_rfc3339(),
            },
            "spec": spec,
            "status": { "replicas": 0, "availableReplicas": 0 },
        });
        self.shared.commit(&mut store, "ADDED", object)
    }

    /// Sets `spec.replicas` as `kubectl scale` would (a new generation when it changes).
    pub fn scale_statefulset(&self, namespace: &str, name: &str, replicas: u32) -> Value {
        let mut store = self.shared.store.lock().unwrap();
        let key = (namespace.to_owned(), name.to_owned());
        let old = store
            .statefulsets
            .get(&key)
            .cloned()
            .expect("a stored StatefulSet");
        if old["spec"]["replicas"] == json!(replicas) {
            return old;
        }
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        new["metadata"]["generation"] =
            json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
        self.shared.commit(&mut store, "MODIFIED", new)
    }

    pub fn delete_statefulset(&self, namespace: &str, name: &str) -> Value {
        let mut store = self.shared.store.lock().unwrap();
        let key = (namespace.to_owned(), name.to_owned());
        let old = store
            .statefulsets
            .get(&key)
            .cloned()
            .expect("a stored StatefulSet");
        self.shared.commit(&mut store, "DELETED", old)
    }

    pub fn statefulset(&self, namespace: &str, name: &str) -> Option<Value> {
        let store = self.shared.store.lock().unwrap();
        store
            .statefulsets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    pub fn resource_version(&self) -> u64 {
        self.shared.store.lock().unwrap().rv
    }

    /// Like an etcd compaction after some other kind changed: the resourceVersion moves on by one
    /// and every retained event is dropped, so each open watch and any watch from an older
    /// resourceVersion gets 410 Expired, while a fresh list (at the new resourceVersion) recovers.
    pub fn compact(&self) {
        let mut store = self.shared.store.lock().unwrap();
        store.rv += 1;
        store.log.clear();
        store.compacted_through = store.rv;
        self.shared.changed.send_replace(store.rv);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.store.lock().unwrap().requests.clone()
    }

    pub fn status_patches(&self) -> Vec<StatusPatch> {
        self.shared.store.lock().unwrap().status_patches.clone()
    }

    /// Writes a kubeconfig (no auth) whose current context points at `server_url`, namespace `default`.
    pub fn write_kubeconfig(server_url: &str, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server_url}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    \
             user: fake\n    namespace: default\ncurrent-context: fake\n"
        );
        std::fs::write(path, text).unwrap();
    }
}

/// A MetricsExporter object with the given spec (no server fields).
pub fn exporter(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    })
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn status_object(code: StatusCode, reason: &str, message: String, name: Option<&str>) -> Value {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(name) = name {
        s["details"] = json!({ "name": name, "group": GROUP, "kind": PLURAL });
    }
    s
}

fn not_found(name: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        status_object(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{PLURAL}.{GROUP} \"{name}\" not found"),
            Some(name),
        ),
    )
}

/// A write refused the way kube-apiserver words it: 422 from the CRD's schema, 403 from RBAC.
fn refused(
    code: u16,
    name: &str,
    verb: &str,
    resource: &str,
    namespace: &str,
) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = match code {
        422 => {
            let mut s = status_object(
                status,
                "Invalid",
                format!(
                    "{KIND}.{GROUP} \"{name}\" is invalid: status.backlog.windows: Invalid value: \"string\": status.backlog.windows in body must be of type integer: \"string\""
                ),
                Some(name),
            );
            s["details"]["kind"] = json!(KIND);
            s["details"]["causes"] = json!([{
                "reason": "FieldValueTypeInvalid",
                "message": "Invalid value: \"string\": status.backlog.windows in body must be of type integer: \"string\"",
                "field": "status.backlog.windows",
            }]);
            s
        }
        403 => status_object(
            status,
            "Forbidden",
            format!(
                "{resource}.{} \"{name}\" is forbidden: User \"system:serviceaccount:adxexporter:adxexporter\" cannot {verb} resource \"{resource}\" in API group \"{}\" in the namespace \"{namespace}\"",
                if resource == "events" {
                    "events.k8s.io"
                } else {
                    GROUP
                },
                if resource == "events" {
                    "events.k8s.io"
                } else {
                    GROUP
                },
            ),
            Some(name),
        ),
        _ => status_object(
            status,
            "InternalError",
            format!(
                "an error on the server (\"injected\") has prevented the request from succeeding ({verb} {resource} {name})"
            ),
            Some(name),
        ),
    };
    (status, body)
}

fn expired(rv: u64, oldest: u64) -> Value {
    status_object(
        StatusCode::GONE,
        "Expired",
        format!("too old resource version: {rv} ({oldest})"),
        None,
    )
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .unwrap()
        .to_string()
}

impl Shared {
    /// Stores `object` at a new resourceVersion and logs the event (caller holds the lock).
    fn commit(&self, store: &mut Store, type_: &'static str, mut object: Value) -> Value {
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = key_of(&object);
        let kind = ObjectKind::of(&object);
        let objects = match kind {
            ObjectKind::Exporter => &mut store.objects,
            ObjectKind::StatefulSet => &mut store.statefulsets,
        };
        if type_ == "DELETED" {
            objects.remove(&key);
        } else {
            objects.insert(key, object.clone());
        }
        store.log.push_back(LoggedEvent {
            rv,
            kind,
            type_,
            object: object.clone(),
        });
        while store.log.len() > self.options.event_retention {
            if let Some(e) = store.log.pop_front() {
                store.compacted_through = e.rv;
            }
        }
        self.changed.send_replace(rv);
        object
    }

    fn create(&self, namespace: &str, mut object: Value) -> (StatusCode, Value) {
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                status_object(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "metadata.name: Required value: name is required".into(),
                    None,
                ),
            );
        };
        let mut store = self.store.lock().unwrap();
        if store
            .objects
            .contains_key(&(namespace.to_owned(), name.clone()))
        {
            return (
                StatusCode::CONFLICT,
                status_object(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{PLURAL}.{GROUP} \"{name}\" already exists"),
                    Some(&name),
                ),
            );
        }
        object["apiVersion"] = json!(API_VERSION);
        object["kind"] = json!(KIND);
        if let Some(o) = object.as_object_mut() {
            o.remove("status"); // the status subresource ignores status on create
        }
        let meta = &mut object["metadata"];
        meta["namespace"] = json!(namespace);
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["generation"] = json!(1);
        meta["creationTimestamp"] = json!(now_rfc3339());
        let stored = self.commit(&mut store, "ADDED", object);
        (StatusCode::CREATED, stored)
    }

    /// Writes the main resource: `replacement` (PUT) or `patch` merged onto the stored object;
    /// a PUT whose `metadata.resourceVersion` is stale gets 409 Conflict;
    /// status and server-owned metadata are kept; generation grows when spec changes.
    fn patch_main(
        &self,
        namespace: &str,
        name: &str,
        patch: Option<Patch>,
        replacement: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut store = self.store.lock().unwrap();
        let Some(old) = store
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
        else {
            return not_found(name);
        };
        let mut new = old.clone();
        if let Some(r) = replacement {
            if let Some(rv) = r["metadata"]["resourceVersion"].as_str()
                && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
            {
                return (
                    StatusCode::CONFLICT,
                    status_object(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {PLURAL}.{GROUP} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                        ),
                        Some(name),
                    ),
                );
            }
            new = r; // PUT replaces; server-owned fields are restored below
            if !new["metadata"].is_object() {
                new["metadata"] = json!({});
            }
        } else if let Some(patch) = patch
            && let Err(e) = patch.apply(&mut new)
        {
            return e;
        }
        for field in [
            "name",
            "namespace",
            "uid",
            "generation",
            "creationTimestamp",
            "resourceVersion",
        ] {
            new["metadata"][field] = old["metadata"][field].clone();
        }
        for field in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            match old["metadata"].get(field) {
                Some(v) => new["metadata"][field] = v.clone(),
                None => {
                    if let Some(m) = new["metadata"].as_object_mut() {
                        m.remove(field);
                    }
                }
            }
        }
        new["apiVersion"] = json!(API_VERSION);
        new["kind"] = json!(KIND);
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        if new == old {
            return (StatusCode::OK, old);
        }
        if new["spec"] != old["spec"] {
            new["metadata"]["generation"] =
                json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
        }
        if new["metadata"].get("deletionTimestamp").is_some() && !has_finalizers(&new) {
            return (StatusCode::OK, self.commit(&mut store, "DELETED", new));
        }
        (StatusCode::OK, self.commit(&mut store, "MODIFIED", new))
    }

    fn patch_status(&self, namespace: &str, name: &str, patch: &Patch) -> (StatusCode, Value) {
        let mut store = self.store.lock().unwrap();
        if let Some(code) = store.status_patch_failure {
            return refused(code, name, "patch", "metricsexporters/status", namespace);
        }
        let Some(old) = store
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
        else {
            return not_found(name);
        };
        let mut merged = old.clone();
        if let Err(e) = patch.apply(&mut merged) {
            return e;
        }
        let mut new = old.clone();
        match merged.get("status") {
            Some(s) => {
                let mut status = s.clone();
                if let Some(fields) = status.as_object_mut() {
                    for field in &self.options.pruned_status_fields {
                        fields.remove(*field);
                    }
                }
                new["status"] = status;
            }
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        if new == old {
            return (StatusCode::OK, old);
        }
        (StatusCode::OK, self.commit(&mut store, "MODIFIED", new))
    }

    /// `POST` of an `events.k8s.io/v1` Event: the fields the API requires of a new Event
    /// (`eventTime`, `reportingController`, `reportingInstance`, `action`, `reason`, `regarding`).
    fn create_event(&self, namespace: &str, mut event: Value) -> (StatusCode, Value) {
        let mut store = self.store.lock().unwrap();
        if let Some(code) = store.event_write_failure {
            let name = event["metadata"]["name"].as_str().unwrap_or("").to_owned();
            return refused(code, &name, "create", "events", namespace);
        }
        let missing: Vec<&str> = [
            "eventTime",
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
            "regarding",
        ]
        .into_iter()
        .filter(|f| event.get(*f).is_none_or(Value::is_null))
        .collect();
        let Some(name) = event["metadata"]["name"].as_str().map(str::to_owned) else {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                status_object(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "Event.events.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName is required".into(),
                    None,
                ),
            );
        };
        if !missing.is_empty() {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                status_object(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!(
                        "Event.events.k8s.io \"{name}\" is invalid: {}: Required value",
                        missing.join(", ")
                    ),
                    Some(&name),
                ),
            );
        }
        let key = (namespace.to_owned(), name.clone());
        if store.events.contains_key(&key) {
            return (
                StatusCode::CONFLICT,
                status_object(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("events.events.k8s.io \"{name}\" already exists"),
                    Some(&name),
                ),
            );
        }
        store.rv += 1;
        event["apiVersion"] = json!("events.k8s.io/v1");
        event["kind"] = json!("Event");
        let meta = &mut event["metadata"];
        meta["namespace"] = json!(namespace);
        meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
        meta["resourceVersion"] = json!(store.rv.to_string());
        meta["creationTimestamp"] = json!(now_rfc3339());
        store.events.insert(key, event.clone());
        (StatusCode::CREATED, event)
    }

    /// `PATCH` of an Event (kube-runtime's Recorder merge-patches `series` into it).
    fn patch_event(&self, namespace: &str, name: &str, patch: &Patch) -> (StatusCode, Value) {
        let mut store = self.store.lock().unwrap();
        if let Some(code) = store.event_write_failure {
            return refused(code, name, "patch", "events", namespace);
        }
        let key = (namespace.to_owned(), name.to_owned());
        let Some(old) = store.events.get(&key).cloned() else {
            return (
                StatusCode::NOT_FOUND,
                status_object(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("events.events.k8s.io \"{name}\" not found"),
                    Some(name),
                ),
            );
        };
        let mut new = old.clone();
        if let Err(e) = patch.apply(&mut new) {
            return e;
        }
        for field in ["name", "namespace", "uid", "creationTimestamp"] {
            new["metadata"][field] = old["metadata"][field].clone();
        }
        if new != old {
            store.rv += 1;
            new["metadata"]["resourceVersion"] = json!(store.rv.to_string());
            store.events.insert(key, new.clone());
        }
        (StatusCode::OK, new)
    }

    fn record_event_write(
        &self,
        method: &str,
        namespace: &str,
        name: &str,
        bytes: &Bytes,
        code: StatusCode,
    ) {
        let body = serde_json::from_slice(bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()));
        self.store.lock().unwrap().event_writes.push(EventWrite {
            method: method.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            body,
            code: code.as_u16(),
        });
    }

    /// Deletes at once, or, while `metadata.finalizers` is not empty, only marks the object with a
    /// `deletionTimestamp` (and a new generation, as the real server does); the object goes when a
    /// write empties its finalizers.
    fn delete(&self, namespace: &str, name: &str) -> (StatusCode, Value) {
        let mut store = self.store.lock().unwrap();
        let Some(old) = store
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
        else {
            return not_found(name);
        };
        if has_finalizers(&old) {
            if old["metadata"].get("deletionTimestamp").is_some() {
                return (StatusCode::OK, old);
            }
            let mut new = old.clone();
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            new["metadata"]["generation"] =
                json!(old["metadata"]["generation"].as_i64().unwrap_or(0) + 1);
            return (StatusCode::OK, self.commit(&mut store, "MODIFIED", new));
        }
        (StatusCode::OK, self.commit(&mut store, "DELETED", old))
    }

    fn list(&self, kind: ObjectKind, namespace: Option<&str>, name: Option<&str>) -> Value {
        let store = self.store.lock().unwrap();
        let objects = match kind {
            ObjectKind::Exporter => &store.objects,
            ObjectKind::StatefulSet => &store.statefulsets,
        };
        let items: Vec<Value> = objects
            .iter()
            .filter(|((ns, n), _)| namespace.is_none_or(|x| x == ns) && name.is_none_or(|x| x == n))
            .map(|(_, o)| o.clone())
            .collect();
        json!({
            "apiVersion": kind.api_version(),
            "kind": format!("{}List", kind.kind()),
            "metadata": { "resourceVersion": store.rv.to_string() },
            "items": items,
        })
    }
}

fn has_finalizers(object: &Value) -> bool {
    object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty())
}

fn key_of(object: &Value) -> (String, String) {
    (
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        object["metadata"]["name"].as_str().unwrap_or("").to_owned(),
    )
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Which resource path a request names.
enum Target {
    Collection(Option<String>),
    Object(String, String),
    Status(String, String),
    /// `events.k8s.io/v1` Events of a namespace, or one of them.
    Events(String, Option<String>),
    StatefulSets(Option<String>),
    StatefulSet(String, String),
}

const EVENTS_PREFIX: &str = "/apis/events.k8s.io/v1";

fn parse_target(path: &str) -> Option<Target> {
    if let Some(rest) = path.strip_prefix(EVENTS_PREFIX) {
        let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        return match parts.as_slice() {
            ["namespaces", ns, "events"] => Some(Target::Events((*ns).to_owned(), None)),
            ["namespaces", ns, "events", name] => {
                Some(Target::Events((*ns).to_owned(), Some((*name).to_owned())))
            }
            _ => None,
        };
    }
    if let Some(rest) = path.strip_prefix(APPS_PREFIX) {
        let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        return match parts.as_slice() {
            ["statefulsets"] => Some(Target::StatefulSets(None)),
            ["namespaces", ns, "statefulsets"] => {
                Some(Target::StatefulSets(Some((*ns).to_owned())))
            }
            ["namespaces", ns, "statefulsets", name] => {
                Some(Target::StatefulSet((*ns).to_owned(), (*name).to_owned()))
            }
            _ => None,
        };
    }
    let rest = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [p] if *p == PLURAL => Some(Target::Collection(None)),
        ["namespaces", ns, p] if *p == PLURAL => Some(Target::Collection(Some((*ns).to_owned()))),
        ["namespaces", ns, p, name] if *p == PLURAL => {
            Some(Target::Object((*ns).to_owned(), (*name).to_owned()))
        }
        ["namespaces", ns, p, name, "status"] if *p == PLURAL => {
            Some(Target::Status((*ns).to_owned(), (*name).to_owned()))
        }
        _ => None,
    }
}

fn discovery(path: &str) -> Option<Value> {
    match path.trim_end_matches('/') {
        "/version" => Some(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"
        })),
        "/apis/adx-mon.azure.com/v1" => Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": API_VERSION,
            "resources": [
                { "name": PLURAL, "singularName": "metricsexporter", "namespaced": true, "kind": KIND,
                  "verbs": ["delete","deletecollection","get","list","patch","create","update","watch"],
                  "shortNames": ["mexp"] },
                { "name": format!("{PLURAL}/status"), "singularName": "", "namespaced": true, "kind": KIND,
                  "verbs": ["get","patch","update"] },
            ],
        })),
        "/apis/apps/v1" => Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "apps/v1",
            "resources": [
                { "name": "statefulsets", "singularName": "statefulset", "namespaced": true,
                  "kind": "StatefulSet", "verbs": ["get","list","watch"], "shortNames": ["sts"] },
            ],
        })),
        _ => None,
    }
}

async fn handle(State((shared, client)): State<(Arc<Shared>, Arc<str>)>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let content_type = header_str(&parts.headers, header::CONTENT_TYPE);
    shared.store.lock().unwrap().requests.push(RecordedRequest {
        client: client.to_string(),
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        content_type: content_type.clone(),
        user_agent: header_str(&parts.headers, header::USER_AGENT),
    });
    let bytes = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();

    if parts.method == Method::GET
        && let Some(d) = discovery(&path)
    {
        return json_response(StatusCode::OK, &d);
    }
    let Some(target) = parse_target(&path) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &status_object(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
                None,
            ),
        );
    };
    // Only `metadata.name=NAME` is understood, as the real server does for any kind.
    let field_name = match query.get("fieldSelector").map(String::as_str) {
        None | Some("") => None,
        Some(selector) => match selector.strip_prefix("metadata.name=") {
            Some(name) if !name.contains(',') => Some(name.to_owned()),
            _ => {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &bad_request(format!("unsupported fieldSelector {selector:?}")).1,
                );
            }
        },
    };
    let is_watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let (code, body) = match (&parts.method, target) {
        (&Method::GET, Target::Collection(ns)) => {
            if is_watch {
                return watch(shared, ObjectKind::Exporter, ns, field_name, &query);
            }
            (
                StatusCode::OK,
                shared.list(ObjectKind::Exporter, ns.as_deref(), field_name.as_deref()),
            )
        }
        (&Method::GET, Target::StatefulSets(ns)) => {
            if is_watch {
                return watch(shared, ObjectKind::StatefulSet, ns, field_name, &query);
            }
            (
                StatusCode::OK,
                shared.list(
                    ObjectKind::StatefulSet,
                    ns.as_deref(),
                    field_name.as_deref(),
                ),
            )
        }
        (&Method::GET, Target::StatefulSet(ns, name)) => {
            let store = shared.store.lock().unwrap();
            match store.statefulsets.get(&(ns, name.clone())) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => (
                    StatusCode::NOT_FOUND,
                    status_object(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("statefulsets.apps \"{name}\" not found"),
                        Some(&name),
                    ),
                ),
            }
        }
        (&Method::POST, Target::Collection(Some(ns))) => match parse_body(&bytes, &content_type) {
            Ok(object) => shared.create(&ns, object),
            Err(e) => e,
        },
        (&Method::GET, Target::Object(ns, name)) | (&Method::GET, Target::Status(ns, name)) => {
            let store = shared.store.lock().unwrap();
            match store.objects.get(&(ns, name.clone())) {
                Some(o) => (StatusCode::OK, o.clone()),
                None => not_found(&name),
            }
        }
        (&Method::PUT, Target::Object(ns, name)) => match parse_body(&bytes, &content_type) {
            Ok(object) => shared.patch_main(&ns, &name, None, Some(object)),
            Err(e) => e,
        },
        (&Method::PUT, Target::Status(ns, name)) => match parse_body(&bytes, &content_type) {
            Ok(object) => {
                let status = object.get("status").cloned().unwrap_or(Value::Null);
                shared.patch_status(&ns, &name, &Patch::Merge(json!({ "status": status })))
            }
            Err(e) => e,
        },
        (&Method::PATCH, Target::Object(ns, name)) => {
            match parse_patch(&bytes, &content_type, &query) {
                Ok(patch) => shared.patch_main(&ns, &name, Some(patch), None),
                Err(e) => e,
            }
        }
        (&Method::PATCH, Target::Status(ns, name)) => {
            let parsed = parse_patch(&bytes, &content_type, &query);
            let (code, body) = match &parsed {
                Ok(patch) => shared.patch_status(&ns, &name, patch),
                Err(e) => e.clone(),
            };
            shared
                .store
                .lock()
                .unwrap()
                .status_patches
                .push(StatusPatch {
                    at: Instant::now(),
                    client: client.to_string(),
                    namespace: ns,
                    name,
                    content_type,
                    body: parsed.map(|p| p.body()).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&bytes).into_owned())
                    }),
                    code: code.as_u16(),
                });
            (code, body)
        }
        (&Method::POST, Target::Events(ns, None)) => {
            let (code, body, name) = match parse_body(&bytes, &content_type) {
                Ok(event) => {
                    let name = event["metadata"]["name"].as_str().unwrap_or("").to_owned();
                    let (code, body) = shared.create_event(&ns, event);
                    (code, body, name)
                }
                Err((code, body)) => (code, body, String::new()),
            };
            shared.record_event_write("POST", &ns, &name, &bytes, code);
            (code, body)
        }
        (&Method::PATCH, Target::Events(ns, Some(name))) => {
            let (code, body) = match parse_patch(&bytes, &content_type, &query) {
                Ok(patch) => shared.patch_event(&ns, &name, &patch),
                Err(e) => e,
            };
            shared.record_event_write("PATCH", &ns, &name, &bytes, code);
            (code, body)
        }
        (&Method::GET, Target::Events(ns, None)) => {
            let store = shared.store.lock().unwrap();
            let items: Vec<Value> = (store.events.iter())
                .filter(|((n, _), _)| *n == ns)
                .map(|(_, e)| e.clone())
                .collect();
            (
                StatusCode::OK,
                json!({"apiVersion": "events.k8s.io/v1", "kind": "EventList",
                       "metadata": {"resourceVersion": store.rv.to_string()}, "items": items}),
            )
        }
        (&Method::GET, Target::Events(ns, Some(name))) => {
            let store = shared.store.lock().unwrap();
            match store.events.get(&(ns, name.clone())) {
                Some(e) => (StatusCode::OK, e.clone()),
                None => not_found(&name),
            }
        }
        (&Method::DELETE, Target::Object(ns, name)) => shared.delete(&ns, &name),
        (method, _) => (
            StatusCode::METHOD_NOT_ALLOWED,
            status_object(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!(
                    "the server does not allow this method on the requested resource: {method}"
                ),
                None,
            ),
        ),
    };
    json_response(code, &body)
}

fn bad_request(message: String) -> (StatusCode, Value) {
    (
        StatusCode::BAD_REQUEST,
        status_object(StatusCode::BAD_REQUEST, "BadRequest", message, None),
    )
}

fn parse_body(bytes: &Bytes, content_type: &str) -> Result<Value, (StatusCode, Value)> {
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(bytes).map_err(|e| bad_request(e.to_string()))?;
        return serde_saphyr::from_str(text).map_err(|e| bad_request(e.to_string()));
    }
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

/// A parsed patch body.
#[derive(Clone, Debug)]
pub enum Patch {
    /// RFC 7386 merge patch (also how apply is approximated).
    Merge(Value),
    /// RFC 6902 JSON patch.
    Json(json_patch::Patch),
}

impl Patch {
    /// Applies the patch to `target`; an error is the answer to send.
    fn apply(&self, target: &mut Value) -> Result<(), (StatusCode, Value)> {
        match self {
            Patch::Merge(p) => {
                merge_patch(target, p);
                Ok(())
            }
            Patch::Json(p) => {
                let mut patched = target.clone();
                match json_patch::patch(&mut patched, p) {
                    Ok(()) => {
                        *target = patched;
                        Ok(())
                    }
                    // kube-apiserver: errors.NewGenericServerResponse(422, …): the cause is not said.
                    Err(_) => Err((
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({
                            "kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure",
                            "message": "the server rejected our request due to an error in our request",
                            "reason": "Invalid",
                            "details": {},
                            "code": 422,
                        }),
                    )),
                }
            }
        }
    }

    /// The body as recorded.
    pub fn body(&self) -> Value {
        match self {
            Patch::Merge(v) => v.clone(),
            Patch::Json(p) => serde_json::to_value(p).unwrap_or(Value::Null),
        }
    }
}

fn parse_patch(
    bytes: &Bytes,
    content_type: &str,
    query: &BTreeMap<String, String>,
) -> Result<Patch, (StatusCode, Value)> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" => parse_body(bytes, "json").map(Patch::Merge),
        "application/json-patch+json" => serde_json::from_slice(bytes)
            .map(Patch::Json)
            .map_err(|e| bad_request(format!("invalid JSON patch: {e}"))),
        "application/apply-patch+yaml" => {
            if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
                return Err((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    status_object(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                        None,
                    ),
                ));
            }
            parse_body(bytes, "yaml").map(Patch::Merge)
        }
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            status_object(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                ),
                None,
            ),
        )),
    }
}

fn event_line(type_: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": type_, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(kind: ObjectKind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({ "resourceVersion": rv.to_string() });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    event_line(
        "BOOKMARK",
        &json!({ "apiVersion": kind.api_version(), "kind": kind.kind(), "metadata": meta }),
    )
}

struct WatchState {
    shared: Arc<Shared>,
    kind: ObjectKind,
    namespace: Option<String>,
    name: Option<String>,
    cursor: u64,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    pending: VecDeque<Bytes>,
    done: bool,
    rx: tokio::sync::watch::Receiver<u64>,
}

fn watch(
    shared: Arc<Shared>,
    kind: ObjectKind,
    namespace: Option<String>,
    name: Option<String>,
    query: &BTreeMap<String, String>,
) -> Response {
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|b| b == "true");
    let initial_events = query.get("sendInitialEvents").is_some_and(|b| b == "true");
    let requested = query
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let rx = shared.changed.subscribe();
    let mut pending = VecDeque::new();
    let cursor = {
        let store = shared.store.lock().unwrap();
        if requested.is_empty() || requested == "0" || initial_events {
            let objects = match kind {
                ObjectKind::Exporter => &store.objects,
                ObjectKind::StatefulSet => &store.statefulsets,
            };
            for ((ns, n), o) in objects {
                if namespace.as_ref().is_none_or(|x| x == ns)
                    && name.as_ref().is_none_or(|x| x == n)
                {
                    pending.push_back(event_line("ADDED", o));
                }
            }
            if initial_events {
                pending.push_back(bookmark(kind, store.rv, true));
            }
            store.rv
        } else {
            let Ok(rv) = requested.parse::<u64>() else {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &bad_request(format!("invalid resource version {requested:?}")).1,
                );
            };
            if rv < store.compacted_through {
                let status = expired(rv, store.compacted_through + 1);
                if shared.options.expired_as_http_410 {
                    return json_response(StatusCode::GONE, &status);
                }
                pending.push_back(event_line("ERROR", &status));
                let body = futures::stream::iter(
                    pending.into_iter().map(Ok::<_, std::convert::Infallible>),
                );
                return Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from_stream(body))
                    .unwrap();
            }
            rv
        }
    };
    let state = WatchState {
        shared,
        kind,
        namespace,
        name,
        cursor,
        deadline: tokio::time::Instant::now() + timeout,
        bookmarks,
        pending,
        done: false,
        rx,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(line) = s.pending.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(line), s));
            }
            if s.done {
                return None;
            }
            {
                let store = s.shared.store.lock().unwrap();
                if s.cursor < store.compacted_through {
                    s.pending.push_back(event_line(
                        "ERROR",
                        &expired(s.cursor, store.compacted_through + 1),
                    ));
                    s.done = true;
                    continue;
                }
                let from = s.cursor;
                // The log is ordered by resourceVersion: start at the first newer event.
                let first = store.log.partition_point(|e| e.rv <= from);
                for e in store.log.range(first..) {
                    s.cursor = e.rv;
                    let meta = &e.object["metadata"];
                    let ns = meta["namespace"].as_str().unwrap_or("");
                    let n = meta["name"].as_str().unwrap_or("");
                    if e.kind == s.kind
                        && s.namespace.as_deref().is_none_or(|x| x == ns)
                        && s.name.as_deref().is_none_or(|x| x == n)
                    {
                        s.pending.push_back(event_line(e.type_, &e.object));
                    }
                }
                if !s.pending.is_empty() {
                    continue;
                }
            }
            let shutting_down = *s.rx.borrow_and_update() == u64::MAX;
            let woke = !shutting_down
                && tokio::time::timeout_at(s.deadline, s.rx.changed())
                    .await
                    .is_ok_and(|r| r.is_ok());
            if !woke {
                if s.bookmarks && !shutting_down {
                    s.pending.push_back(bookmark(s.kind, s.cursor, false));
                }
                s.done = true;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}
