//! Every request the controller sends to a Kubernetes API server, counted by verb and
//! resource (`cutover_api_requests_total`): a tower layer on the kube clients, so that
//! what a reconcile costs the API server is a figure, not a guess.

use std::task::{Context, Poll};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// The labels of one count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// get, list, watch, create, update, patch, delete (or the HTTP method).
    pub verb: String,
    /// `resource` for the core group, `group/resource` otherwise, `/subresource` appended.
    pub resource: String,
}

/// The counts, shared by every client of the process.
#[derive(Clone, Debug, Default)]
pub struct ApiRequests {
    family: Family<RequestLabels, Counter>,
}

impl ApiRequests {
    /// Register the counter family.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cutover_api_requests",
            "Requests the controller sent to Kubernetes API servers, by verb and resource.",
            self.family.clone(),
        );
    }

    /// The layer that counts a client's requests here.
    pub fn layer(&self) -> CountLayer {
        CountLayer(self.clone())
    }

    fn count(&self, method: &::http::Method, uri: &::http::Uri) {
        let (verb, resource) = classify(method, uri.path(), uri.query().unwrap_or(""));
        self.family
            .get_or_create(&RequestLabels { verb, resource })
            .inc();
    }

    /// Build a kube client from `config` whose requests are counted here.
    pub fn client(&self, config: kube::Config) -> Result<kube::Client, kube::Error> {
        Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&self.layer())
            .build())
    }
}

/// A tower layer counting requests into [`ApiRequests`].
#[derive(Clone, Debug)]
pub struct CountLayer(ApiRequests);

impl<S> Layer<S> for CountLayer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            requests: self.0.clone(),
        }
    }
}

/// A service whose requests are counted.
#[derive(Clone, Debug)]
pub struct Counted<S> {
    inner: S,
    requests: ApiRequests,
}

impl<S, B> Service<::http::Request<B>> for Counted<S>
where
    S: Service<::http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: ::http::Request<B>) -> Self::Future {
        self.requests.count(req.method(), req.uri());
        self.inner.call(req)
    }
}

/// The Kubernetes verb and resource of a request to `path?query`.
pub fn classify(method: &::http::Method, path: &str, query: &str) -> (String, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... (core) or /apis/<group>/<version>/...
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => {
            return (method.as_str().to_lowercase(), path.to_string());
        }
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, named, sub) = match rest {
        [] => ("", false, None),
        [resource] => (*resource, false, None),
        [resource, _name] => (*resource, true, None),
        [resource, _name, sub, ..] => (*resource, true, Some(*sub)),
    };
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match *method {
        ::http::Method::GET if watch => "watch",
        ::http::Method::GET if named => "get",
        ::http::Method::GET => "list",
        ::http::Method::POST => "create",
        ::http::Method::PUT => "update",
        ::http::Method::PATCH => "patch",
        ::http::Method::DELETE => "delete",
        _ => return (method.as_str().to_lowercase(), path.to_string()),
    };
    let mut name = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{group}/{resource}")
    };
    if let Some(sub) = sub {
        name.push('/');
        name.push_str(sub);
    }
    (verb.to_string(), name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::http::Method;

    fn c(method: Method, path: &str, query: &str) -> (String, String) {
        classify(&method, path, query)
    }

    #[test]
    fn verbs_and_resources_as_kubernetes_names_them() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            c(
                Method::GET,
                "/apis/apps/v1/namespaces/shop/deployments/shop-blue",
                ""
            ),
            s("get", "apps/deployments")
        );
        assert_eq!(
            c(
                Method::GET,
                "/api/v1/namespaces/shop/services",
                "labelSelector=a%3Db"
            ),
            s("list", "services")
        );
        assert_eq!(
            c(
                Method::GET,
                "/apis/cutover.dev/v1alpha1/bluegreendeployments",
                "watch=true&resourceVersion=1"
            ),
            s("watch", "cutover.dev/bluegreendeployments")
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/cutover.dev/v1alpha1/namespaces/shop/bluegreendeployments/shop/status",
                ""
            ),
            s("patch", "cutover.dev/bluegreendeployments/status")
        );
        assert_eq!(
            c(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/x/leases/cutover-controller",
                ""
            ),
            s("update", "coordination.k8s.io/leases")
        );
        assert_eq!(
            c(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                ""
            ),
            s("create", "events.k8s.io/events")
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/shop", ""),
            s("get", "namespaces")
        );
        assert_eq!(
            c(Method::DELETE, "/api/v1/nodes/n1", ""),
            s("delete", "nodes")
        );
        assert_eq!(c(Method::GET, "/version", ""), s("get", "/version"));
    }

    #[test]
    fn counted_requests_show_in_the_metrics() {
        let requests = ApiRequests::default();
        let mut registry = Registry::default();
        requests.register(&mut registry);
        let uri: ::http::Uri = "https://k/api/v1/namespaces/a/services/b"
            .parse()
            .expect("uri");
        requests.count(&Method::GET, &uri);
        requests.count(&Method::GET, &uri);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(
            text.contains("cutover_api_requests_total{verb=\"get\",resource=\"services\"} 2"),
            "{text}"
        );
    }
}
