//! A custom metrics API (`custom.metrics.k8s.io/v1beta2`) whose one metric the test sets,
//! registered with the cluster as an aggregated API, so kube-controller-manager's
//! HorizontalPodAutoscaler reads it as it would read the Prometheus adapter's.
//!
//! The server speaks TLS (a self-signed certificate; the APIService skips verification)
//! on an address of this machine that the API server may dial: the bridge address of a
//! [`crate::e2e::ProcessNode`] (the API server refuses loopback endpoints), reached by
//! aggregator routing (`--enable-aggregator-routing`, set by the local cluster), never
//! through a Service IP. It serves one metric of Services, [`METRIC`], with the value
//! last set.
//!
//! There is one `v1beta2.custom.metrics.k8s.io` APIService per cluster: one test at a
//! time may hold a [`CustomMetrics`]. Dropping it deletes the APIService first, since an
//! aggregated API that no longer answers stalls namespace deletion for the whole cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::{TestNamespace, cleanup, wait_for};

/// The API group and version served.
pub const GROUP_VERSION: &str = "custom.metrics.k8s.io/v1beta2";
/// The one metric served, of every Service: `services/<name>/requests-per-second`.
pub const METRIC: &str = "requests-per-second";
/// The APIService registered (one per cluster).
const API_SERVICE: &str = "v1beta2.custom.metrics.k8s.io";
/// The selectorless Service in the test's namespace that the APIService names.
const SERVICE: &str = "custom-metrics";
const FIELD_MANAGER: &str = "cutover-test-custom-metrics";

fn api_services(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    Api::all_with(client.clone(), &ApiResource::from_gvk(&gvk))
}

/// The running server and its registration. See the module documentation.
#[derive(Debug)]
pub struct CustomMetrics {
    value: Arc<AtomicU64>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CustomMetrics {
    /// Serve on `ip` (a non-loopback address of this machine, such as a process node's
    /// bridge), register the APIService through a Service in `ns`, and wait until the API
    /// server reports it Available. Every Service's [`METRIC`] starts at `value`.
    pub async fn register(ns: &TestNamespace, ip: &str, value: u64) -> CustomMetrics {
        let server = Self::serve(ip, value);
        let port = server.addr.port();
        let services: Api<Service> = ns.api();
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        services
            .patch(
                SERVICE,
                &apply,
                &Patch::Apply(json!({
                    "apiVersion": "v1", "kind": "Service", "metadata": { "name": SERVICE },
                    "spec": { "ports": [{ "name": "https", "port": 443, "targetPort": port }] }
                })),
            )
            .await
            .expect("the custom metrics Service");
        // Endpoints (kube-controller-manager mirrors them to an EndpointSlice): the
        // aggregator resolves the Service to them when it routes to endpoints.
        let endpoints: Api<Endpoints> = ns.api();
        endpoints
            .patch(
                SERVICE,
                &apply,
                &Patch::Apply(json!({
                    "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": SERVICE },
                    "subsets": [{ "addresses": [{ "ip": ip }], "ports": [{ "name": "https", "port": port }] }]
                })),
            )
            .await
            .expect("the custom metrics Endpoints");
        let api = api_services(&ns.client);
        let service: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": { "name": API_SERVICE },
            "spec": {
                "group": "custom.metrics.k8s.io", "version": "v1beta2",
                "service": { "namespace": ns.name, "name": SERVICE, "port": 443 },
                "insecureSkipTLSVerify": true,
                "groupPriorityMinimum": 100, "versionPriority": 100
            }
        }))
        .expect("an APIService");
        api.patch(API_SERVICE, &apply, &Patch::Apply(&service))
            .await
            .expect("the custom metrics APIService");
        wait_for(
            &api,
            API_SERVICE,
            "the custom metrics APIService Available",
            Duration::from_secs(60),
            |s: Option<&DynamicObject>| {
                s.and_then(|s| s.data["status"]["conditions"].as_array())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c["type"] == "Available" && c["status"] == "True")
                    })
            },
        )
        .await;
        server
    }

    /// The server alone, on a thread of its own with its own runtime, so it answers
    /// whatever the test's runtime is doing.
    fn serve(ip: &str, value: u64) -> CustomMetrics {
        let listener = std::net::TcpListener::bind((ip, 0))
            .unwrap_or_else(|e| panic!("binding {ip}:0 for the custom metrics API: {e}"));
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let addr = listener.local_addr().expect("the listener's address");
        let value = Arc::new(AtomicU64::new(value));
        let served = value.clone();
        let tls = Arc::new(tls_config(ip));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("custom-metrics-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a Tokio runtime for the custom metrics API");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("a Tokio listener for the custom metrics API");
                    let listener = TlsListener {
                        tcp: listener,
                        tls: tokio_rustls::TlsAcceptor::from(tls),
                    };
                    let app = Router::new()
                        .route("/apis", get(group_list))
                        .route("/apis/custom.metrics.k8s.io/v1beta2", get(resource_list))
                        .route(
                            "/apis/custom.metrics.k8s.io/v1beta2/namespaces/{ns}/services/{name}/{metric}",
                            get(service_metric),
                        )
                        .with_state(served);
                    tokio::select! {
                        _ = axum::serve(listener, app).into_future() => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("a thread for the custom metrics API");
        CustomMetrics {
            value,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Set the value every Service's [`METRIC`] has from now on.
    pub fn set(&self, value: u64) {
        self.value.store(value, Ordering::SeqCst);
    }
}

impl Drop for CustomMetrics {
    fn drop(&mut self) {
        // The registration first, while the server still answers.
        cleanup(|client| async move {
            let api = api_services(&client);
            let _ = api.delete(API_SERVICE, &DeleteParams::default()).await;
        });
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A self-signed serving certificate for `ip`; HTTP/1.1 only.
fn tls_config(ip: &str) -> rustls::ServerConfig {
    let key = rcgen::KeyPair::generate().expect("a key for the custom metrics API");
    let mut params =
        rcgen::CertificateParams::new(vec![ip.to_string()]).expect("certificate parameters");
    params.distinguished_name = rcgen::DistinguishedName::new();
    let cert = params.self_signed(&key).expect("a self-signed certificate");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .expect("a TLS configuration");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// TCP connections that finished a TLS handshake; one that fails or stalls is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, peer)) = self.tcp.accept().await else {
                continue;
            };
            let handshake = self.tls.accept(stream);
            if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), handshake).await {
                return (stream, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// Legacy discovery of the groups served (the API server falls back to it from
/// aggregated discovery).
async fn group_list() -> Response {
    let version = json!({ "groupVersion": GROUP_VERSION, "version": "v1beta2" });
    json_response(json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [{ "name": "custom.metrics.k8s.io", "versions": [version], "preferredVersion": version }]
    }))
}

async fn resource_list() -> Response {
    json_response(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
        "resources": [{
            "name": format!("services/{METRIC}"), "singularName": "", "namespaced": true,
            "kind": "MetricValueList", "verbs": ["get"]
        }]
    }))
}

async fn service_metric(
    State(value): State<Arc<AtomicU64>>,
    Path((ns, name, metric)): Path<(String, String, String)>,
) -> Response {
    if metric != METRIC {
        return StatusCode::NOT_FOUND.into_response();
    }
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    json_response(json!({
        "kind": "MetricValueList", "apiVersion": GROUP_VERSION, "metadata": {},
        "items": [{
            "describedObject": { "kind": "Service", "namespace": ns, "name": name, "apiVersion": "/v1" },
            "metric": { "name": metric, "selector": null },
            "timestamp": now, "windowSeconds": 60,
            "value": value.load(Ordering::SeqCst).to_string()
        }]
    }))
}

fn json_response(body: Value) -> Response {
    ([(CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
