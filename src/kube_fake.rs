//! Test only: a minimal Kubernetes API for MetricsExporter on 127.0.0.1 (list, one long watch fed
//! by the test, status PATCH recorded), reached through a kubeconfig with an `http://` server, as
//! the binary reaches a cluster. Enough to smoke-test the kube source and status writer.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One status PATCH the fake received.
#[derive(Debug, Clone)]
pub struct Patched {
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Clone)]
struct Shared {
    items: Vec<Value>,
    /// The first watch request takes the receiver; later ones hang (the test drives one watch).
    watch: Arc<Mutex<Option<mpsc::UnboundedReceiver<String>>>>,
    patches: mpsc::UnboundedSender<Patched>,
    /// `namespace/name`s answered with 404.
    missing: Vec<String>,
}

pub struct FakeApi {
    pub url: String,
    /// Watch event lines to send (`{"type":"ADDED","object":{…}}`).
    pub events: mpsc::UnboundedSender<String>,
    pub patches: mpsc::UnboundedReceiver<Patched>,
}

impl FakeApi {
    /// Serves `items` as the list; PATCHes of `missing` (`namespace/name`) get 404.
    pub async fn start(items: Vec<Value>, missing: Vec<String>) -> FakeApi {
        let (events, watch_rx) = mpsc::unbounded_channel();
        let (patch_tx, patches) = mpsc::unbounded_channel();
        let shared = Shared {
            items,
            watch: Arc::new(Mutex::new(Some(watch_rx))),
            patches: patch_tx,
            missing,
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeApi {
            url,
            events,
            patches,
        }
    }

    /// A client built the way `kube::Client::try_default()` builds one from `KUBECONFIG`.
    pub async fn client(&self) -> kube::Client {
        crate::tls::install_crypto_provider();
        let yaml = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             users:\n- name: fake\n  user:\n    token: t\n",
            self.url
        );
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}

async fn handle(State(shared): State<Shared>, request: Request) -> (StatusCode, Body) {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let method = request.method().clone();
    if method == Method::GET && path.ends_with("/metricsexporters") {
        if query.contains("watch=true") {
            let rx = shared.watch.lock().unwrap().take();
            let stream = futures::stream::unfold(rx, |rx| async move {
                let Some(mut rx) = rx else {
                    return futures::future::pending().await;
                };
                let line = rx.recv().await?;
                Some((Ok::<_, Infallible>(Bytes::from(line + "\n")), Some(rx)))
            });
            return (StatusCode::OK, Body::from_stream(stream));
        }
        let list = json!({
            "apiVersion": "adx-mon.azure.com/v1",
            "kind": "MetricsExporterList",
            "metadata": {"resourceVersion": "1"},
            "items": shared.items,
        });
        return (StatusCode::OK, Body::from(list.to_string()));
    }
    if method == Method::PATCH && path.ends_with("/status") {
        let content_type = (request.headers().get("content-type"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let parts: Vec<&str> = path.split('/').collect();
        // /apis/adx-mon.azure.com/v1/namespaces/{ns}/metricsexporters/{name}/status
        let (ns, name) = (parts[5].to_owned(), parts[7].to_owned());
        let _ = shared.patches.send(Patched {
            path: path.clone(),
            query,
            content_type,
            body: body.clone(),
        });
        if shared.missing.contains(&format!("{ns}/{name}")) {
            let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "code": 404, "reason": "NotFound", "message": "not found"});
            return (StatusCode::NOT_FOUND, Body::from(status.to_string()));
        }
        let object = resource(
            &ns,
            &name,
            &format!("uid-{name}"),
            json!({}),
            body["status"].clone(),
        );
        return (StatusCode::OK, Body::from(object.to_string()));
    }
    (StatusCode::NOT_FOUND, Body::from("{}"))
}

/// A MetricsExporter object as the API server returns it.
pub fn resource(ns: &str, name: &str, uid: &str, criteria: Value, status: Value) -> Value {
    json!({
        "apiVersion": "adx-mon.azure.com/v1",
        "kind": "MetricsExporter",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "generation": 2, "resourceVersion": "1"},
        "spec": {
            "database": "db", "interval": "1m", "body": "T", "criteria": criteria,
            "transform": {"valueColumns": ["v"], "timestampColumn": "ts", "defaultMetricName": "m"}
        },
        "status": status,
    })
}
