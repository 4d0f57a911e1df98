//! Serving a worker: the `Worker` service with health and reflection on one listener (TLS
//! when configured; `Worker` and reflection behind the fleet token, health open),
//! registered with the orchestrator, until the shutdown token fires; the Prometheus
//! endpoint, when configured, runs beside it.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use framefleet_common::auth::{self, AttachToken, RequireToken};
use framefleet_common::config::{Config, WorkerConfig};
use framefleet_common::proto::worker_server::WorkerServer;
use framefleet_common::proto::RegisterWorkerRequest;
use framefleet_common::reflection;
use framefleet_common::storage::{LocalFiles, Storage};
use framefleet_common::telemetry::metrics::{self, MetricsSource};

use crate::codecs::{Codecs, MissingEncoder};
use crate::processor::{self, ProcessError};
use crate::registration::{keep_registered, Registration};
use crate::service::{device_label, processor_settings, WorkerService, WorkerState};

/// How often the worker pings the orchestrator's connections, and how long it waits for
/// the answer: an orchestrator cut off by a partition is noticed within twice this, its
/// chunk streams close, and the chunks they carry are cancelled and their uploads aborted
/// (the orchestrator has given them to another worker by then).
const ORCHESTRATOR_KEEPALIVE: Duration = Duration::from_secs(5);

/// The worker could not start or stopped on an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}: {source}; pick a free address with worker.listen")]
    Bind {
        /// The address asked for.
        address: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the worker's gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS or the orchestrator's address could not be set up.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// Reflection could not be set up.
    #[error("gRPC reflection could not be built: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The metrics endpoint could not start.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// Finding the video codecs crashed.
    #[error("finding this machine's video encoders crashed: {0}")]
    CodecProbe(String),
    /// An encoder in `worker.encoders` cannot be opened here.
    #[error(transparent)]
    Codecs(#[from] MissingEncoder),
    /// A model in `worker.preload_models` could not be loaded.
    #[error(
        "cannot preload model `{model}`: {source}; install it (framefleet models import) or \
         remove it from worker.preload_models"
    )]
    Preload {
        /// The model named.
        model: String,
        /// Why it failed.
        #[source]
        source: ProcessError,
    },
}

/// Binds `config.worker.listen`, loads `worker.preload_models`, serves, registers with the
/// orchestrator, and returns once `shutdown` is cancelled (the worker then deregisters at
/// once) and the chunks in hand have finished or, after `worker.drain_grace_seconds`, been
/// handed back.
pub async fn serve(mut config: Config, shutdown: CancellationToken) -> Result<(), ServeError> {
    let process_start = Instant::now()
        .checked_sub(crate::host::process_age().unwrap_or_default())
        .unwrap_or_else(Instant::now);
    framefleet_common::media::init();
    let address = config.worker.listen;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Bind { address, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { address, source })?;
    let advertise = if config.worker.advertise_url.is_empty() {
        format!("{}://{bound}", auth::scheme(&config.tls))
    } else {
        config.worker.advertise_url.clone()
    };
    if config.worker.name.is_empty() {
        config.worker.name = format!("worker-{}", bound.port());
    }
    let worker = &config.worker;
    tracing::info!(address = %bound, name = %worker.name, gpu_type = %worker.gpu_type, "worker listening");

    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<WorkerServer<WorkerService>>()
        .await;
    let codecs = detect_codecs(worker).await?;
    let state = WorkerState::new(
        worker.clone(),
        codecs.clone(),
        Storage::new(&config.storage),
        shutdown.clone(),
    );
    let drained = {
        let (state, shutdown) = (state.clone(), shutdown.clone());
        async move {
            shutdown.cancelled().await;
            state.drain().await;
        }
    };
    // Everything that can fail comes before the registration task starts.
    let orchestrator = auth::endpoint(&worker.orchestrator_url, &config.tls)?;
    let metrics_listener = match config.telemetry.metrics_address() {
        Some(address) => Some(metrics::bind(address).await?),
        None => None,
    };
    let mut server = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(ORCHESTRATOR_KEEPALIVE))
        .http2_keepalive_timeout(Some(ORCHESTRATOR_KEEPALIVE));
    if let Some(tls) = auth::server_tls(&config.tls)? {
        server = server.tls_config(tls)?;
    }
    preload(worker).await?;
    let fleet_token = &config.auth.fleet_token;
    let registration = tokio::spawn(keep_registered(
        orchestrator,
        AttachToken::new(fleet_token),
        Registration {
            request: RegisterWorkerRequest {
                address: advertise,
                name: worker.name.clone(),
                gpu_type: worker.gpu_type.clone(),
                slots: worker.slots,
                gpus_per_slot: worker.gpus_per_slot,
                device: device_label(&worker.device).into(),
                models: worker.preload_models.clone(),
                gpus: worker.gpus_held(),
                encoders: codecs.encoder_names(),
                decoders: codecs.decoder_names(),
                ..RegisterWorkerRequest::default()
            },
            process_start,
        },
        shutdown.clone(),
    ));
    let exposition = metrics_listener.map(|listener| {
        tokio::spawn(metrics::serve(
            listener,
            Arc::new(Exposition::new(&state)),
            shutdown.clone(),
        ))
    });
    let callers = RequireToken::new(fleet_token, "auth.fleet_token");
    let reflection = reflection::routes(&["framefleet.v1.Worker"], callers.clone())?;
    let served = server
        .add_routes(reflection)
        .add_service(health)
        .add_service(WorkerServer::with_interceptor(
            WorkerService::new(state),
            callers,
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), drained)
        .await;
    shutdown.cancel();
    let _ = registration.await;
    if let Some(exposition) = exposition {
        let _ = exposition.await;
    }
    served.map_err(ServeError::from)
}

/// Loads every model in `worker.preload_models` on a blocking thread (the operator's
/// own paths: read wherever they are, not only beneath the storage roots).
async fn preload(worker: &WorkerConfig) -> Result<(), ServeError> {
    let settings = processor_settings(worker, LocalFiles::new(&[]));
    let models = worker.preload_models.clone();
    tokio::task::spawn_blocking(move || {
        for model in models {
            let seconds =
                processor::preload(&model, &settings).map_err(|source| ServeError::Preload {
                    model: model.clone(),
                    source,
                })?;
            tracing::info!(%model, seconds, "model preloaded");
        }
        Ok(())
    })
    .await
    .map_err(|e| ServeError::Preload {
        model: worker.preload_models.join(", "),
        source: ProcessError::Model(format!("the loading thread died: {e}")),
    })?
}

/// The `/metrics` view of a running worker, holding its state weakly so the endpoint never
/// keeps a stopped worker alive.
struct Exposition {
    state: Weak<WorkerState>,
}

impl Exposition {
    fn new(state: &Arc<WorkerState>) -> Self {
        Self {
            state: Arc::downgrade(state),
        }
    }
}

impl MetricsSource for Exposition {
    fn render(&self) -> Result<String, std::fmt::Error> {
        match self.state.upgrade() {
            Some(state) => state.metrics().render(state.busy_slots()),
            None => Ok(String::new()),
        }
    }
}

/// Finds the video codecs this worker has (`worker.encoders` restricts them, `worker.nvdec`
/// allows GPU decoding), on a blocking thread: opening NVENC loads the driver.
async fn detect_codecs(worker: &WorkerConfig) -> Result<Codecs, ServeError> {
    let (wanted, nvdec) = (worker.encoders.clone(), worker.nvdec);
    tokio::task::spawn_blocking(move || Codecs::detect(&wanted, nvdec))
        .await
        .map_err(|e| ServeError::CodecProbe(e.to_string()))?
        .map_err(ServeError::from)
}
