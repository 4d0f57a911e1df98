//! The Prometheus endpoint: `GET /metrics` over HTTP/1.1 in the OpenMetrics text format,
//! on its own listener (`telemetry.metrics_listen`), since the gRPC listener speaks only
//! HTTP/2. What it serves comes from a [`MetricsSource`]: each process keeps its own
//! counters and reads its gauges (queue depth, workers, slots) from live state at scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {address}: {source}; pick a free address with telemetry.metrics_listen")]
pub struct MetricsError {
    /// The address asked for.
    pub address: SocketAddr,
    /// Why binding failed.
    #[source]
    pub source: std::io::Error,
}

/// What a process exposes.
pub trait MetricsSource: Send + Sync + 'static {
    /// Every metric as of now, in the OpenMetrics text format.
    fn render(&self) -> Result<String, std::fmt::Error>;
}

/// Encodes a registry in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

/// Binds the endpoint's listener (port 0 picks a free one; the listener knows which).
pub async fn bind(address: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| MetricsError { address, source })
}

/// Serves `source` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn MetricsSource>,
    shutdown: CancellationToken,
) {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "serving Prometheus metrics on /metrics");
    }
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let source = source.clone();
            async move {
                match source.render() {
                    Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text)
                        .into_response(),
                    Err(_) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the metrics could not be encoded",
                    )
                        .into_response(),
                }
            }
        }),
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "the metrics endpoint stopped");
    }
}
