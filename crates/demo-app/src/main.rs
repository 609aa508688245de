//! `cutover-demo-app`: the workload of the demo and of end-to-end tests.
//!
//! `GET /` answers `{"version": ..., "color": ...}` after `--latency-ms`, and fails with 500
//! for a share `--error-rate` of requests (deterministically: every Nth request, so a test
//! can count on the ratio). `/healthz` is the readiness/liveness probe (`--unhealthy` makes
//! it fail). `/metrics` has `demo_http_requests_total{code,version}` and a latency
//! histogram. Every flag can be given as `CUTOVER_DEMO_<FLAG>` instead.
//!
//! With `--database-url` (a libpq connection string, URL or `key=value`, a unix socket
//! folder as `host=/path`) the app also writes to PostgreSQL, for failover tests:
//! `POST /write/{id}` inserts `id` into `cutover_demo_writes` (created lazily, `ON
//! CONFLICT DO NOTHING`) and answers 200 `{"id", "version", "color"}` once the commit has
//! returned, or 503 `{"error", "code"}` with the server's message and SQLSTATE when the
//! database refuses (a read-only standby, a connection down, anything): one attempt, no
//! retry, so a test can count failed writes. `GET /write/{id}` answers 200 `{"id", "present": true}`,
//! 404 or 503. `/metrics` then has `demo_writes_total{result="ok"|"error"}`. `/healthz`
//! never depends on the database: the app of a standby member stays healthy while its
//! database is read-only. See [`db`] for the connection handling.

mod db;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "cutover-demo-app",
    about = "A tiny HTTP service for Cutover's demo and tests"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "CUTOVER_DEMO_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Version reported in responses and metrics.
    #[arg(long, env = "CUTOVER_DEMO_VERSION", default_value = "v1")]
    version: String,
    /// Color reported in responses (from the pod's `cutover.dev/color` label).
    #[arg(long, env = "CUTOVER_DEMO_COLOR", default_value = "")]
    color: String,
    /// Share of requests to `/` answered with 500, 0.0 to 1.0.
    #[arg(long, env = "CUTOVER_DEMO_ERROR_RATE", default_value_t = 0.0)]
    error_rate: f64,
    /// Added latency per request to `/`, in milliseconds.
    #[arg(long, env = "CUTOVER_DEMO_LATENCY_MS", default_value_t = 0)]
    latency_ms: u64,
    /// Make `/healthz` fail (to test readiness).
    #[arg(long, env = "CUTOVER_DEMO_UNHEALTHY")]
    unhealthy: bool,
    /// PostgreSQL connection string (`postgresql://...` or `host=/socket/dir port=5432
    /// user=... dbname=...`): enables `POST /write/{id}` and `GET /write/{id}`.
    #[arg(long, env = "CUTOVER_DEMO_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    code: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    result: &'static str,
}

struct App {
    args: Args,
    served: AtomicU64,
    requests: Family<Labels, Counter>,
    latency: Histogram,
    /// With `--database-url`.
    db: Option<db::Db>,
    writes: Family<WriteLabels, Counter>,
    registry: Registry,
}

/// Whether request number `n` (from 1) fails at `rate`: spread evenly, so that after `n`
/// requests exactly `floor(n * rate)` have failed.
fn fails(n: u64, rate: f64) -> bool {
    let rate = rate.clamp(0.0, 1.0);
    ((n as f64) * rate).floor() > (((n - 1) as f64) * rate).floor()
}

async fn root(State(app): State<Arc<App>>) -> impl IntoResponse {
    let started = Instant::now();
    if app.args.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(app.args.latency_ms)).await;
    }
    let n = app.served.fetch_add(1, Ordering::Relaxed) + 1;
    let status = if fails(n, app.args.error_rate) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    app.requests
        .get_or_create(&Labels {
            code: status.as_u16().to_string(),
            version: app.args.version.clone(),
        })
        .inc();
    app.latency.observe(started.elapsed().as_secs_f64());
    let body = serde_json::json!({ "version": app.args.version, "color": app.args.color, "ok": status.is_success() });
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
}

async fn healthz(State(app): State<Arc<App>>) -> impl IntoResponse {
    if app.args.unhealthy {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// 503 `{"error": <message>, "code": <SQLSTATE>}` (no `code` when the server sent none).
fn db_unavailable(failure: &db::Failure) -> Response {
    let mut body = serde_json::json!({ "error": failure.message });
    if let Some(code) = &failure.code {
        body["code"] = code.clone().into();
    }
    json(StatusCode::SERVICE_UNAVAILABLE, body)
}

async fn write(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Some(db) = &app.db else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let result = db.write(&id, &app.args.version).await;
    app.writes
        .get_or_create(&WriteLabels {
            result: if result.is_ok() { "ok" } else { "error" },
        })
        .inc();
    match result {
        Ok(_) => json(
            StatusCode::OK,
            serde_json::json!({ "id": id, "version": app.args.version, "color": app.args.color }),
        ),
        Err(failure) => db_unavailable(&failure),
    }
}

async fn read(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Some(db) = &app.db else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match db.exists(&id).await {
        Ok(true) => json(
            StatusCode::OK,
            serde_json::json!({ "id": id, "present": true }),
        ),
        Ok(false) => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({ "id": id, "present": false }),
        ),
        Err(failure) => db_unavailable(&failure),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &app.registry) {
        Ok(()) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/plain")],
            e.to_string(),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.error_rate),
        "--error-rate must be between 0 and 1"
    );
    let mut registry = Registry::default();
    let requests = Family::<Labels, Counter>::default();
    registry.register(
        "demo_http_requests",
        "Requests to / by status code and version.",
        requests.clone(),
    );
    let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
    registry.register(
        "demo_http_request_duration_seconds",
        "Time to answer a request to /.",
        latency.clone(),
    );
    let db = args.database_url.as_deref().map(db::Db::new).transpose()?;
    let writes = Family::<WriteLabels, Counter>::default();
    if db.is_some() {
        registry.register(
            "demo_writes",
            "Writes (POST /write/{id}) by result: ok once committed, error when the database refused or was unreachable.",
            writes.clone(),
        );
    }
    let with_db = db.is_some();
    let app = Arc::new(App {
        args: args.clone(),
        served: AtomicU64::new(0),
        requests,
        latency,
        db,
        writes,
        registry,
    });
    let mut router = Router::new()
        .route("/", get(root))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics));
    if with_db {
        router = router.route("/write/{id}", get(read).post(write));
    }
    let router = router.with_state(app);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "cutover-demo-app {} listening on {}{}",
        args.version,
        listener.local_addr()?,
        if with_db { " (database mode)" } else { "" }
    );
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::fails;

    #[test]
    fn failures_are_spread_to_the_exact_rate() {
        for rate in [0.0, 0.05, 0.2, 0.5, 1.0] {
            let n = 1000;
            let failed = (1..=n).filter(|i| fails(*i, rate)).count();
            assert_eq!(failed, (n as f64 * rate).floor() as usize, "rate {rate}");
        }
        assert!(!fails(1, 0.2) && fails(5, 0.2), "every 5th of 20 %");
    }
}
