//! The data plane: HTTP/1.1 listeners on the Gateways' ports, each request routed with the
//! table current when it arrived and forwarded to a ready endpoint over pooled keep-alive
//! connections.
//!
//! A request whose connection to an endpoint cannot be made goes to the next endpoint (up
//! to twice more): nothing of it was sent. One that was sent and then lost its connection
//! (the endpoint died) is sent again only if it has no body and an idempotent method (GET,
//! HEAD, OPTIONS, PUT, DELETE). Requests with a body are streamed, unless a mirror needs a
//! copy, and are never sent twice.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;
use crate::table::{Backend, CompiledRule, Pick, RequestView, Table};

/// A body either way.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The largest request body copied for a mirror; larger requests are not mirrored.
const MIRROR_BODY_LIMIT: usize = 1 << 20;
/// Retries of a body-less request after a connection error.
const RETRIES: usize = 2;

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

fn answer(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The proxy: the current table, metrics, the worker threads and the listeners.
///
/// Each worker thread runs a single-threaded runtime with its own listening socket per
/// port (`SO_REUSEPORT`: the kernel spreads connections) and its own upstream connection
/// pool, so a request is served start to end on one thread without cross-thread wake-ups.
#[derive(Debug)]
pub struct Proxy {
    table: ArcSwap<Table>,
    metrics: Metrics,
    listen: IpAddr,
    workers: Vec<tokio::runtime::Handle>,
    listeners: Mutex<BTreeMap<u16, Vec<JoinHandle<()>>>>,
    graceful: Mutex<Option<GracefulShutdown>>,
}

/// A listening socket on `addr` that other workers may bind too (`SO_REUSEPORT`).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn has_no_body(req: &Request<Incoming>) -> bool {
    let len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    !req.headers().contains_key(header::TRANSFER_ENCODING) && len.unwrap_or(0) == 0
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(n);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

impl Proxy {
    /// A proxy with an empty table whose listeners bind `listen`, with `threads` worker
    /// threads (at least one).
    pub fn new(listen: IpAddr, metrics: Metrics, threads: usize) -> std::io::Result<Arc<Proxy>> {
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.push(rt.handle().clone());
            // Each worker closes its own long-idle upstream connections.
            rt.spawn(async {
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    crate::upstream::prune();
                }
            });
            std::thread::Builder::new()
                .name(format!("router-worker-{i}"))
                .spawn(move || rt.block_on(std::future::pending::<()>()))?;
        }
        Ok(Arc::new(Proxy {
            table: ArcSwap::from_pointee(Table::default()),
            metrics,
            listen,
            workers,
            listeners: Mutex::new(BTreeMap::new()),
            graceful: Mutex::new(Some(GracefulShutdown::new())),
        }))
    }

    /// Swap in a new table; requests in flight keep the one they started with.
    pub fn swap(&self, table: Table) {
        self.table.store(Arc::new(table));
        self.metrics.swapped();
    }

    /// The table in use.
    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Listen on exactly the table's ports: bind new ones, close removed ones. Returns the
    /// ports that could not be bound, with the reason.
    pub async fn sync_listeners(self: &Arc<Self>) -> BTreeMap<u16, String> {
        let wanted: Vec<u16> = self.table().ports.keys().copied().collect();
        let mut failed = BTreeMap::new();
        let current: Vec<u16> = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .copied()
            .collect();
        for port in current.iter().filter(|p| !wanted.contains(p)) {
            let tasks = self
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(port);
            tasks.into_iter().flatten().for_each(|t| t.abort());
            tracing::info!(port, "stopped listening");
        }
        for port in wanted.into_iter().filter(|p| !current.contains(p)) {
            let addr = SocketAddr::new(self.listen, port);
            let mut tasks = Vec::new();
            let mut error = None;
            for worker in &self.workers {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let me = self.clone();
                tasks.push(worker.spawn(async move {
                    match bind(addr) {
                        Ok(listener) => {
                            let _ = tx.send(Ok(()));
                            me.accept(listener, port).await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                }));
                if let Ok(Err(e)) = rx.await {
                    error = Some(e);
                    break;
                }
            }
            match error {
                None => {
                    tracing::info!(%addr, workers = tasks.len(), "listening");
                    self.listeners
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(port, tasks);
                }
                Some(e) => {
                    tasks.iter().for_each(JoinHandle::abort);
                    tracing::warn!(%addr, error = %e, "cannot listen");
                    failed.insert(port, format!("cannot listen on {addr}: {e}"));
                }
            }
        }
        failed
    }

    async fn accept(self: Arc<Self>, listener: TcpListener, port: u16) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(port, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let me = self.clone();
            // The client's address as X-Forwarded-For, rendered once per connection.
            let peer = HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            let service = hyper::service::service_fn(move |req| {
                let (me, peer) = (me.clone(), peer.clone());
                async move { Ok::<_, Infallible>(me.handle(port, &peer, req).await) }
            });
            // One flattened buffer per write: small messages go out in one write(2).
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .writev(false)
                .serve_connection(TokioIo::new(stream), service);
            let watched = self
                .graceful
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(|g| g.watch(conn));
            match watched {
                Some(conn) => {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                None => return, // Shutting down.
            }
        }
    }

    /// Stop accepting, then wait up to `timeout` for requests in flight to finish.
    pub async fn shutdown(&self, timeout: Duration) {
        for (_, tasks) in std::mem::take(
            &mut *self
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ) {
            tasks.iter().for_each(JoinHandle::abort);
        }
        let graceful = self
            .graceful
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(g) = graceful {
            let _ = tokio::time::timeout(timeout, g.shutdown()).await;
        }
    }

    /// Route and forward one request.
    pub async fn handle(
        &self,
        port: u16,
        peer: &HeaderValue,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let started = Instant::now();
        let table = self.table.load_full();
        let Some(routes) = table.ports.get(&port) else {
            self.metrics.unrouted(port, "no_route");
            return answer(StatusCode::NOT_FOUND, "no route\n");
        };
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let view = RequestView {
            host,
            path: req.uri().path(),
            query: req.uri().query().unwrap_or(""),
            method: req.method().as_str(),
            headers: req.headers(),
        };
        let Some(rule) = routes.route(&view).cloned() else {
            self.metrics.unrouted(port, "no_route");
            return answer(StatusCode::NOT_FOUND, "no route\n");
        };
        let backend = match rule.pick() {
            Pick::Backend(b) => b.clone(),
            Pick::Invalid => {
                self.metrics.unrouted(port, "invalid_backend");
                return answer(StatusCode::INTERNAL_SERVER_ERROR, "no valid backend\n");
            }
        };
        let retryable = has_no_body(&req);
        let (mut parts, body) = req.into_parts();
        prepare_headers(&mut parts.headers, &rule, peer);
        let mirrors: Vec<Arc<Backend>> = rule
            .mirrors
            .iter()
            .filter(|m| m.take())
            .filter_map(|m| m.backend.clone())
            .collect();
        let body: Option<Bytes> = if retryable {
            Some(Bytes::new())
        } else if !mirrors.is_empty() {
            match http_body_util::Limited::new(body, MIRROR_BODY_LIMIT)
                .collect()
                .await
            {
                Ok(b) => Some(b.to_bytes()),
                Err(_) => {
                    return answer(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large to mirror\n",
                    );
                }
            }
        } else {
            // Streamed through; never retried.
            return self.forward_stream(parts, body, &backend, started).await;
        };
        let body = body.unwrap_or_default();
        for m in mirrors {
            self.mirror(&parts, body.clone(), m);
        }
        self.forward_buffered(parts, body, retryable, &backend, started)
            .await
    }

    fn upstream_request(parts: &http::request::Parts, body: Body) -> Request<Body> {
        // Origin form: the connection already goes to the endpoint; Host stays the client's.
        let uri = parts
            .uri
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        let mut r = Request::new(body);
        *r.method_mut() = parts.method.clone();
        *r.uri_mut() = uri;
        *r.headers_mut() = parts.headers.clone();
        if !r.headers().contains_key(header::HOST)
            && let Some(a) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            r.headers_mut().insert(header::HOST, v);
        }
        r
    }

    fn finish(
        &self,
        backend: &Backend,
        res: Response<Incoming>,
        started: Instant,
    ) -> Response<Body> {
        self.metrics
            .request(&backend.name, res.status().as_u16(), started.elapsed());
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, body.boxed())
    }

    fn unavailable(&self, backend: &Backend, started: Instant) -> Response<Body> {
        self.metrics.request(&backend.name, 503, started.elapsed());
        answer(StatusCode::SERVICE_UNAVAILABLE, "no ready endpoint\n")
    }

    async fn forward_stream(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        backend: &Backend,
        started: Instant,
    ) -> Response<Body> {
        let Some(ep) = backend.endpoint(&[]) else {
            return self.unavailable(backend, started);
        };
        match crate::upstream::send(ep, Self::upstream_request(&parts, body.boxed())).await {
            Ok(res) => self.finish(backend, res, started),
            Err(e) => {
                tracing::debug!(endpoint = %ep, error = %e, "upstream error");
                self.metrics.upstream_error(&backend.name);
                self.metrics.request(&backend.name, 502, started.elapsed());
                answer(StatusCode::BAD_GATEWAY, "upstream connection failed\n")
            }
        }
    }

    async fn forward_buffered(
        &self,
        parts: http::request::Parts,
        body: Bytes,
        retryable: bool,
        backend: &Backend,
        started: Instant,
    ) -> Response<Body> {
        // Each attempt goes to an endpoint no earlier attempt failed on, while there is one:
        // several endpoints may be leaving at once.
        let mut tried: Vec<SocketAddr> = Vec::with_capacity(RETRIES + 1);
        // Sent again after losing its connection only if repeating it is harmless.
        let resend = retryable && parts.method.is_idempotent();
        for attempt in 0..=RETRIES {
            let Some(ep) = backend.endpoint(&tried) else {
                return self.unavailable(backend, started);
            };
            if attempt > 0 {
                self.metrics.retry(&backend.name);
            }
            let b = if body.is_empty() {
                empty()
            } else {
                full(body.clone())
            };
            match crate::upstream::send(ep, Self::upstream_request(&parts, b)).await {
                Ok(res) => return self.finish(backend, res, started),
                Err(e) => {
                    tracing::debug!(endpoint = %ep, error = %e, attempt, "upstream error");
                    self.metrics.upstream_error(&backend.name);
                    tried.push(ep);
                    // Nothing was sent when connecting failed: any request may go elsewhere.
                    if matches!(e, crate::upstream::Error::Send(..)) && !resend {
                        break;
                    }
                }
            }
        }
        self.metrics.request(&backend.name, 502, started.elapsed());
        answer(StatusCode::BAD_GATEWAY, "upstream connection failed\n")
    }

    fn mirror(&self, parts: &http::request::Parts, body: Bytes, backend: Arc<Backend>) {
        let Some(ep) = backend.endpoint(&[]) else {
            return;
        };
        self.metrics.mirrored(&backend.name);
        let req = Self::upstream_request(parts, if body.is_empty() { empty() } else { full(body) });
        // Fire and forget: the mirror's answer is read and dropped.
        tokio::spawn(async move {
            if let Ok(res) = crate::upstream::send(ep, req).await {
                let _ = res.into_body().collect().await;
            }
        });
    }
}

fn prepare_headers(headers: &mut http::HeaderMap, rule: &CompiledRule, peer: &HeaderValue) {
    strip_hop_by_hop(headers);
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => HeaderValue::from_str(&format!("{prev}, {}", peer.to_str().unwrap_or("")))
            .unwrap_or_else(|_| peer.clone()),
        None => peer.clone(),
    };
    headers.insert("x-forwarded-for", xff);
    if let Some(m) = &rule.headers {
        for h in &m.set {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_str(&h.value),
            ) {
                headers.insert(n, v);
            }
        }
        for h in &m.add {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(h.name.as_bytes()),
                HeaderValue::from_str(&h.value),
            ) {
                headers.append(n, v);
            }
        }
        for n in &m.remove {
            headers.remove(n.as_str());
        }
    }
}
