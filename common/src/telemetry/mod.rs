//! Telemetry shared by the binaries: `tracing` to stderr (filtered by `telemetry.log`, or
//! by `RUST_LOG` when set), spans out to an OpenTelemetry collector over OTLP/gRPC when
//! `telemetry.otlp_endpoint` is set ([`propagation`] carries a span's context across gRPC
//! calls, so a job is one trace over the orchestrator and its workers), and a Prometheus
//! endpoint ([`metrics`]) when `telemetry.metrics_listen` is set.

pub mod metrics;
pub mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;

use crate::config::TelemetryConfig;

/// Longest a shutdown waits for the last spans to reach the collector.
const FLUSH_DEADLINE: Duration = Duration::from_secs(5);

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built.
    #[error("cannot export traces to {endpoint}: {reason}; check telemetry.otlp_endpoint")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter said.
        reason: String,
    },
}

/// What [`init`] installed; [`Telemetry::shutdown`] sends the spans still buffered.
#[must_use = "call shutdown() before exiting, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the trace exporter (at most a few seconds); a no-op without one.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK blocks until its export thread is done; keep that off the runtime.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_DEADLINE))
                .await;
        if let Ok(Err(error)) = flushed {
            tracing::warn!(%error, "the last spans could not be sent to the collector");
        }
    }
}

/// Installs the global subscriber for `service` (the binary's name, which becomes the
/// traces' `service.name`): logs always, OTLP traces when configured. Must run inside the
/// tokio runtime (the exporter's gRPC channel lives on it). A second call installs nothing.
pub fn init(config: &TelemetryConfig, service: &'static str) -> Result<Telemetry, TelemetryError> {
    let provider = if config.otlp_endpoint.is_empty() {
        None
    } else {
        Some(tracer_provider(&config.otlp_endpoint, service)?)
    };
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_filter(span_filter())
    });
    let installed = tracing_subscriber::registry()
        .with(log_layer(&config.log))
        .with(traces)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        propagation::install();
        tracing::info!(endpoint = %config.otlp_endpoint, "exporting traces over OTLP");
    }
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
    })
}

/// Logs alone, for the CLI's own process (its children set themselves up).
pub fn init_logs(filter: &str) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(filter))
        .try_init();
}

fn log_layer<S>(default_filter: &str) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(filter)
}

/// Spans of framefleet's own crates at `info` and above go out, whatever the log filter
/// says, so a quiet log still gives whole traces; dependencies' spans stay home.
fn span_filter() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_target("framefleet_common", tracing::Level::INFO)
        .with_target("framefleet_orchestrator", tracing::Level::INFO)
        .with_target("framefleet_worker", tracing::Level::INFO)
}

fn tracer_provider(
    endpoint: &str,
    service: &'static str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| TelemetryError::Exporter {
            endpoint: endpoint.to_string(),
            reason: error.to_string(),
        })?;
    Ok(SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(service).build())
        .with_batch_exporter(exporter)
        .build())
}
