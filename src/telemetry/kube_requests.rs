//! Counts every Kubernetes API request the process makes, by verb, resource and HTTP status code
//! ([`KUBE_REQUESTS`]): a tower layer put around kube's client stack (`app.rs`), so the watch, the
//! status writer and the event recorder are all counted, whatever code path sends them.
//!
//! Label values are bounded: the verb comes from the method (and `watch=true`, and whether the path
//! names one object), the resource is one of [`RESOURCES`] or `other`, the code is the answer's
//! numeric status or `error` when none came. The layer sits outside kube's retry layer, so a request
//! retried inside the client counts once, with its final answer. A watch counts when its answer's
//! headers arrive.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response, Uri};

use super::metrics::KUBE_REQUESTS;

/// The resources named in the `resource` label; any other is `other`.
pub const RESOURCES: [&str; 2] = ["metricsexporters", "events"];

/// Wraps a kube client stack in [`CountRequests`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CountRequestsLayer;

impl<S> tower_layer::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests { inner }
    }
}

/// The service [`CountRequestsLayer`] makes.
#[derive(Debug, Clone)]
pub struct CountRequests<S> {
    inner: S,
}

impl<S, B, R> tower_service::Service<Request<B>> for CountRequests<S>
where
    S: tower_service::Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let code = match &result {
                Ok(response) => response.status().as_str().to_owned(),
                Err(_) => "error".to_owned(),
            };
            metrics::counter!(KUBE_REQUESTS, "verb" => verb, "resource" => resource, "code" => code)
                .increment(1);
            result
        })
    }
}

/// The Kubernetes verb and the bounded resource name of a request. Pure.
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, &'static str) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/… or /apis/GROUP/VERSION/…, then an optional namespaces/NS/ prefix.
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let resource = match rest {
        [r, _name, "status", ..] if *r == "metricsexporters" => "metricsexporters/status",
        [r, ..] => RESOURCES
            .iter()
            .copied()
            .find(|known| known == r)
            .unwrap_or("other"),
        [] => "other",
    };
    let named = rest.len() >= 2;
    let watch = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, uri: &str) -> (&'static str, &'static str) {
        classify(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_and_resources_are_named_from_the_request() {
        let base = "/apis/adx-mon.azure.com/v1";
        assert_eq!(
            of(Method::GET, &format!("{base}/metricsexporters?limit=500")),
            ("list", "metricsexporters")
        );
        assert_eq!(
            of(
                Method::GET,
                &format!("{base}/metricsexporters?watch=true&resourceVersion=3")
            ),
            ("watch", "metricsexporters")
        );
        assert_eq!(
            of(
                Method::GET,
                &format!("{base}/namespaces/ns/metricsexporters?watch=1")
            ),
            ("watch", "metricsexporters")
        );
        assert_eq!(
            of(
                Method::GET,
                &format!("{base}/namespaces/ns/metricsexporters/a")
            ),
            ("get", "metricsexporters")
        );
        assert_eq!(
            of(
                Method::PATCH,
                &format!("{base}/namespaces/ns/metricsexporters/a/status?fieldManager=x")
            ),
            ("patch", "metricsexporters/status")
        );
        assert_eq!(
            of(Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events"),
            ("create", "events")
        );
        assert_eq!(
            of(
                Method::PATCH,
                "/apis/events.k8s.io/v1/namespaces/ns/events/a.17f"
            ),
            ("patch", "events")
        );
        assert_eq!(of(Method::GET, "/api/v1/namespaces/ns"), ("get", "other"));
        assert_eq!(of(Method::GET, "/version"), ("list", "other"));
        assert_eq!(
            of(
                Method::DELETE,
                &format!("{base}/namespaces/ns/metricsexporters")
            ),
            ("deletecollection", "metricsexporters")
        );
    }

    #[tokio::test]
    async fn every_answer_and_failure_is_counted_once() {
        use tower_layer::Layer;
        use tower_service::Service;

        #[derive(Clone)]
        struct Answer(Option<u16>);
        impl Service<Request<()>> for Answer {
            type Response = Response<()>;
            type Error = &'static str;
            type Future = std::future::Ready<Result<Response<()>, &'static str>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<()>) -> Self::Future {
                std::future::ready(match self.0 {
                    Some(code) => Ok(Response::builder().status(code).body(()).unwrap()),
                    None => Err("connection refused"),
                })
            }
        }

        let metrics = crate::telemetry::TestMetrics::install();
        let path = "/apis/adx-mon.azure.com/v1/namespaces/ns/metricsexporters/a/status";
        for answer in [Some(200), Some(422), Some(422), None] {
            let mut svc = CountRequestsLayer.layer(Answer(answer));
            let request = Request::patch(path).body(()).unwrap();
            let _ = svc.call(request).await;
        }
        let count = |code: &str| {
            metrics.value(
                KUBE_REQUESTS,
                &[
                    ("verb", "patch"),
                    ("resource", "metricsexporters/status"),
                    ("code", code),
                ],
            )
        };
        assert_eq!(count("200"), Some(1.0));
        assert_eq!(count("422"), Some(2.0));
        assert_eq!(count("error"), Some(1.0));
    }
}
