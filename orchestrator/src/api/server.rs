//! Serving the orchestrator: `Orchestrator` and `Fleet` with health and reflection on one
//! listener (TLS when configured; `Orchestrator` and reflection behind the client token,
//! `Fleet` behind the fleet token, health and KEDA's `ExternalScaler` open: KEDA sends no
//! token, and the scaler reveals only counts), a lease reaper, and an orderly stop when
//! the shutdown token fires (no new jobs, running jobs end, then the server closes). The
//! Prometheus endpoint, when configured, runs beside it and stops with it.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use framefleet_common::auth::{self, RequireToken};

use crate::api::callers::Callers;
use framefleet_common::config::Config;
use framefleet_common::proto::externalscaler::external_scaler_server::ExternalScalerServer;
use framefleet_common::proto::fleet_server::FleetServer;
use framefleet_common::proto::orchestrator_server::OrchestratorServer;
use framefleet_common::reflection;
use framefleet_common::telemetry::metrics;

use crate::api::scaler::ScalerService;
use crate::api::service::{FleetService, OrchestratorService};
use crate::orchestrator::{Exposition, Orchestrator};

/// The orchestrator could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}; pick a free address with orchestrator.listen")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the orchestrator's gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The job store or the cost history could not be opened or read.
    #[error(transparent)]
    Open(#[from] crate::orchestrator::OpenError),
    /// TLS could not be set up.
    #[error(transparent)]
    Auth(#[from] framefleet_common::auth::AuthError),
    /// Reflection could not be set up.
    #[error("gRPC reflection could not be built: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
}

/// Binds `config.orchestrator.listen` and serves until `shutdown`.
pub async fn serve(config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    let address = config.orchestrator.listen;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let orchestrator = Orchestrator::open(config, shutdown.clone()).await?;
    serve_on(listener, orchestrator, shutdown).await
}

/// Serves `orchestrator` on an already bound listener until `shutdown`.
pub async fn serve_on(
    listener: TcpListener,
    orchestrator: Arc<Orchestrator>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    framefleet_common::media::init();
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "orchestrator listening");
    }
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<OrchestratorServer<OrchestratorService>>()
        .await;
    let exposition = match orchestrator.config.telemetry.metrics_address() {
        Some(address) => Some(tokio::spawn(metrics::serve(
            metrics::bind(address).await?,
            Arc::new(Exposition::new(&orchestrator)),
            shutdown.clone(),
        ))),
        None => None,
    };
    let reaper = {
        let fleet = orchestrator.fleet.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(fleet.lease() / 4);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticks.tick() => fleet.reap_expired(),
                }
            }
        })
    };
    let drained = {
        let orchestrator = orchestrator.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!("shutting down: finishing running jobs");
            orchestrator.drain().await;
        }
    };
    let config = orchestrator.config.clone();
    let clients = Callers::from_config(&config, &orchestrator.tenants);
    let workers = RequireToken::new(&config.auth.fleet_token, "auth.fleet_token");
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = auth::server_tls(&config.tls)? {
        server = server.tls_config(tls)?;
    }
    let reflection = reflection::routes(
        &["framefleet.v1.Orchestrator", "framefleet.v1.Fleet"],
        clients.clone(),
    )?;
    let served = server
        .add_routes(reflection)
        .add_service(health)
        .add_service(OrchestratorServer::with_interceptor(
            OrchestratorService::new(orchestrator.clone()),
            clients,
        ))
        .add_service(FleetServer::with_interceptor(
            FleetService::new(orchestrator.clone()),
            workers,
        ))
        .add_service(ExternalScalerServer::new(ScalerService::new(orchestrator)))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drained)
        .await;
    shutdown.cancel();
    let _ = reaper.await;
    if let Some(exposition) = exposition {
        let _ = exposition.await;
    }
    served.map_err(ServeError::from)
}
