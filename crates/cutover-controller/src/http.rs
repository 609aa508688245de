//! The controller's own HTTP endpoints: `/metrics` for Prometheus, `/healthz` for the
//! liveness probe and `/readyz` for the readiness probe.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The content type of the OpenMetrics text exposition that `/metrics` serves.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything that can go wrong while serving HTTP.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address could not be bound.
    #[error(
        "could not listen on {addr} for /metrics, /healthz and /readyz (is the port taken? choose another address): {source}"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// The listener handed in does not know its own address.
    #[error("the HTTP listener has no local address: {0}")]
    Listener(#[source] std::io::Error),
    /// The server stopped with an error.
    #[error("serving /metrics, /healthz and /readyz on {addr} failed: {source}")]
    Serve {
        /// The address served on.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

/// What the endpoints read: the metrics registry and the readiness flag.
#[derive(Clone, Debug)]
pub struct HttpState {
    /// The registry `/metrics` encodes; complete before serving starts, never changed after.
    pub registry: Arc<Registry>,
    /// `/readyz` answers 200 while this is true, 503 otherwise; the binary sets it.
    pub ready: Arc<AtomicBool>,
}

impl HttpState {
    /// State serving `registry`, not ready until [`HttpState::ready`] is set.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The routes, for serving on a listener of one's own.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Listen on `addr` and serve until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    serve_on(listener, state, shutdown).await
}

/// Serve on a bound `listener` until `shutdown` resolves, then finish the requests in flight.
pub async fn serve_on(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(Error::Listener)?;
    info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    info!(%addr, "stopped serving HTTP");
    Ok(())
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(error) => {
            warn!(%error, "encoding the metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "encoding the metrics failed\n",
            )
                .into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::metrics::Metrics;

    /// A parsed HTTP/1.1 response.
    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: String,
        body: String,
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect to the server");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        let mut raw = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
            .await
            .expect("the server answers within 10s")
            .expect("read the response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header/body separator");
        let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status code");
        Reply {
            status,
            headers: headers.to_ascii_lowercase(),
            body: body.to_string(),
        }
    }

    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<Result<(), Error>>,
    }

    async fn start(state: HttpState) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_on(listener, state, async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    async fn stop(server: Server) {
        let _ = server.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), server.task)
            .await
            .expect("the server stops within 10s of shutdown")
            .expect("the server task does not panic")
            .expect("the server stops cleanly");
    }

    #[tokio::test]
    async fn metrics_are_served_as_openmetrics_text() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.set_leader(true);
        let server = start(HttpState::new(registry)).await;

        let reply = get(server.addr, "/metrics").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(
            reply
                .headers
                .contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}\r\n")),
            "{reply:?}"
        );
        assert!(reply.body.contains("# HELP cutover_leader "), "{reply:?}");
        assert!(reply.body.contains("\ncutover_leader 1\n"), "{reply:?}");
        assert!(reply.body.ends_with("# EOF\n"), "{reply:?}");

        // The registry is shared: later changes show on the next scrape.
        metrics.set_leader(false);
        let reply = get(server.addr, "/metrics").await;
        assert!(reply.body.contains("\ncutover_leader 0\n"), "{reply:?}");
        stop(server).await;
    }

    #[tokio::test]
    async fn healthz_is_ok_and_readyz_follows_the_flag() {
        let state = HttpState::new(Registry::default());
        let ready = state.ready.clone();
        let server = start(state).await;

        let reply = get(server.addr, "/healthz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));

        let reply = get(server.addr, "/readyz").await;
        assert_eq!(reply.status, 503, "{reply:?}");
        ready.store(true, Ordering::Release);
        let reply = get(server.addr, "/readyz").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
        ready.store(false, Ordering::Release);
        let reply = get(server.addr, "/readyz").await;
        assert_eq!(reply.status, 503, "{reply:?}");

        let reply = get(server.addr, "/nothing-here").await;
        assert_eq!(reply.status, 404, "{reply:?}");
        stop(server).await;
    }

    #[tokio::test]
    async fn a_taken_port_is_reported_with_its_address() {
        let taken = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = taken.local_addr().expect("a local address");
        let error = serve(addr, HttpState::new(Registry::default()), async {})
            .await
            .expect_err("the port is taken");
        assert!(matches!(error, Error::Bind { .. }), "{error:?}");
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
