//! Joining the fleet: register with the orchestrator, renew the lease with heartbeats,
//! register again when the orchestrator forgets the worker (restart, lapsed lease), and
//! deregister on shutdown. Every call retries with exponential backoff and jitter. The
//! first registration carries the worker's cold start (process start to registered);
//! later ones say they rejoin, so the orchestrator does not count it again.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use framefleet_common::auth::AttachToken;
use framefleet_common::proto::fleet_client::FleetClient;
use framefleet_common::proto::{DeregisterRequest, HeartbeatRequest, RegisterWorkerRequest};

/// Deadline of one Fleet call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the worker registers as.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The request, less the cold start and `rejoining`, which are filled in here.
    pub request: RegisterWorkerRequest,
    /// When this worker's process started.
    pub process_start: Instant,
}

/// Keeps the worker registered with the orchestrator at `orchestrator` (presenting `token`)
/// until `shutdown`, then deregisters it.
pub async fn keep_registered(
    orchestrator: Endpoint,
    token: AttachToken,
    registration: Registration,
    shutdown: CancellationToken,
) {
    let Registration {
        request: mut registration,
        process_start,
    } = registration;
    let orchestrator_url = orchestrator.uri().to_string();
    let channel = orchestrator
        .connect_timeout(CALL_TIMEOUT)
        .timeout(CALL_TIMEOUT)
        .connect_lazy();
    let client = FleetClient::with_interceptor(channel, token);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .without_max_times();
    while !shutdown.is_cancelled() {
        let register = || {
            let mut client = client.clone();
            let mut request = registration.clone();
            if !request.rejoining {
                request.cold_start_seconds = process_start.elapsed().as_secs_f64();
            }
            async move { client.register_worker(request).await }
        };
        let registered = tokio::select! {
            _ = shutdown.cancelled() => return,
            result = register
                .retry(backoff)
                .notify(|error, delay| tracing::warn!(url = %orchestrator_url, %error, ?delay, "cannot register with the orchestrator; retrying")) => result,
        };
        let Ok(registered) = registered.map(tonic::Response::into_inner) else {
            continue;
        };
        let worker_id = registered.worker_id;
        if !registration.rejoining {
            registration.cold_start_seconds = process_start.elapsed().as_secs_f64();
            registration.rejoining = true;
        }
        tracing::info!(%worker_id, url = %orchestrator_url, cold_start_seconds = registration.cold_start_seconds, "registered with the orchestrator");
        let mut lease = Duration::from_secs_f64(registered.lease_seconds.max(1.0));
        let mut since_renewal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    let mut client = client.clone();
                    let request = DeregisterRequest { worker_id: worker_id.clone() };
                    if let Err(error) = client.deregister(request).await {
                        tracing::warn!(%error, "deregistering failed; the lease will lapse instead");
                    }
                    return;
                }
                _ = tokio::time::sleep(lease / 3) => {}
            }
            let mut client = client.clone();
            let request = HeartbeatRequest {
                worker_id: worker_id.clone(),
            };
            match client
                .heartbeat(request)
                .await
                .map(tonic::Response::into_inner)
            {
                Ok(reply) if reply.known => {
                    lease = Duration::from_secs_f64(reply.lease_seconds.max(1.0));
                    since_renewal = tokio::time::Instant::now();
                }
                Ok(_) => {
                    tracing::warn!(%worker_id, "the orchestrator no longer knows this worker; registering again");
                    break;
                }
                Err(error) if since_renewal.elapsed() > lease => {
                    tracing::warn!(%error, "the lease lapsed without a heartbeat; registering again");
                    break;
                }
                Err(error) => tracing::warn!(%error, "heartbeat failed; retrying"),
            }
        }
    }
}
