//! The router's own endpoints: `/metrics` (OpenMetrics), `/healthz`, and `/debug/routes`
//! (the table in use, as JSON: per port and host, rules with backends, weights and ready
//! endpoints).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

use crate::proxy::Proxy;

#[derive(Clone, Debug)]
struct AdminState {
    registry: Arc<Registry>,
    proxy: Arc<Proxy>,
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        Ok(()) => (
            [(
                CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}"),
        )
            .into_response(),
    }
}

async fn routes(State(s): State<AdminState>) -> impl IntoResponse {
    axum::Json(crate::table::describe(&s.proxy.table()))
}

/// Serve the admin endpoints on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    proxy: Arc<Proxy>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/debug/routes", get(routes))
        .with_state(AdminState { registry, proxy });
    axum::serve(listener, app).await
}
