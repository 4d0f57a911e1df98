//! KEDA's external scaler, served by the orchestrator so a `ScaledObject` with an
//! `external-push` (or `external`) trigger scales the workers with no Prometheus between.
//!
//! The metric is the worker slots wanted: every chunk not yet accepted (running, waiting
//! for a slot, or between retries), one for each job still waiting to start or being
//! probed, and never fewer than the slots of the workers that hold a chunk, so a scale-in
//! has idle workers to remove before busy ones. KEDA (through the HPA) divides it by the
//! target, the slots of one worker, and rounds up: `wanted = ceil(slots wanted / slots
//! per worker)`. With `gpuType` in the trigger's metadata, chunks running on other GPU
//! types are left out (a waiting chunk can run on any worker, so it counts for every
//! type). `StreamIsActive` pushes the change the moment the first job arrives, so a fleet
//! at zero starts without waiting for KEDA's next poll.
//!
//! KEDA sends no bearer token: this service reveals only counts and is served without
//! one (TLS, when configured, applies to it as to the rest of the listener).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use framefleet_common::proto::externalscaler::external_scaler_server::ExternalScaler;
use framefleet_common::proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

use crate::fleet::FleetLoad;
use crate::orchestrator::Orchestrator;

/// How often `StreamIsActive` looks again when nothing wakes it (jobs ending, chunks
/// accepted): arrivals wake it at once.
const RECHECK: Duration = Duration::from_millis(500);

/// What one `ScaledObject` asks about, read from its trigger's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ScaledTarget {
    /// Only workers of this GPU type (`gpuType`); `None`: every worker.
    pub gpu_type: Option<String>,
    /// Slots one worker of the scaled deployment has (`slotsPerWorker`, else the
    /// configuration's `worker.slots`).
    pub slots_per_worker: u32,
}

impl ScaledTarget {
    /// Reads `gpuType` and `slotsPerWorker` from a `ScaledObjectRef`'s metadata.
    pub fn parse(reference: &ScaledObjectRef, default_slots: u32) -> Result<Self, Status> {
        let metadata = &reference.scaler_metadata;
        let slots_per_worker = match metadata.get("slotsPerWorker") {
            None => default_slots.max(1),
            Some(text) => text
                .trim()
                .parse()
                .ok()
                .filter(|&n: &u32| n > 0)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "slotsPerWorker `{text}` in ScaledObject {}/{} is not a whole number of \
                     at least 1; set it to the workers' worker.slots",
                        reference.namespace, reference.name
                    ))
                })?,
        };
        Ok(Self {
            gpu_type: metadata
                .get("gpuType")
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            slots_per_worker,
        })
    }

    /// The metric's name: `framefleet-slots`, with the GPU type when there is one.
    pub fn metric_name(&self) -> String {
        match &self.gpu_type {
            Some(gpu) => format!("framefleet-slots-{}", gpu.to_ascii_lowercase()),
            None => "framefleet-slots".to_string(),
        }
    }
}

/// The slots `target` wants, given the slots every job wants (`jobs_want`) and the fleet's
/// `load` as seen from the target's GPU type.
pub fn slots_wanted(jobs_want: u32, load: FleetLoad, target: &ScaledTarget) -> u32 {
    let here = jobs_want.saturating_sub(load.busy_elsewhere);
    here.max(load.busy_workers * target.slots_per_worker)
}

/// The `ExternalScaler` service over an orchestrator.
pub struct ScalerService {
    orchestrator: Arc<Orchestrator>,
}

impl ScalerService {
    /// A scaler of `orchestrator`'s fleet.
    pub fn new(orchestrator: Arc<Orchestrator>) -> Self {
        Self { orchestrator }
    }

    fn target(&self, reference: &ScaledObjectRef) -> Result<ScaledTarget, Status> {
        ScaledTarget::parse(reference, self.orchestrator.config.worker.slots)
    }
}

/// The slots the orchestrator's work wants for `target` now.
fn wanted_now(orchestrator: &Orchestrator, target: &ScaledTarget) -> u32 {
    let jobs_want: u32 = orchestrator
        .jobs
        .list()
        .iter()
        .map(|job| job.slots_wanted())
        .sum();
    let load = orchestrator.fleet.load(target.gpu_type.as_deref());
    slots_wanted(jobs_want, load, target)
}

/// Work waits or runs for `target`: jobs want slots of its type.
fn active_now(orchestrator: &Orchestrator, target: &ScaledTarget) -> bool {
    wanted_now(orchestrator, target) > 0
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let target = self.target(request.get_ref())?;
        Ok(Response::new(IsActiveResponse {
            result: active_now(&self.orchestrator, &target),
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let target = self.target(request.get_ref())?;
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(push_activity(self.orchestrator.clone(), target, sender));
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let target = self.target(request.get_ref())?;
        let slots = target.slots_per_worker;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: target.metric_name(),
                target_size: i64::from(slots),
                target_size_float: f64::from(slots),
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.into_inner();
        let reference = request.scaled_object_ref.unwrap_or_default();
        let target = self.target(&reference)?;
        let wanted = wanted_now(&self.orchestrator, &target);
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: target.metric_name(),
                metric_value: i64::from(wanted),
                metric_value_float: f64::from(wanted),
            }],
        }))
    }
}

/// Sends whether work is active for `target` now and at every change, until KEDA closes
/// the stream or the orchestrator shuts down.
async fn push_activity(
    orchestrator: Arc<Orchestrator>,
    target: ScaledTarget,
    sender: mpsc::Sender<Result<IsActiveResponse, Status>>,
) {
    let mut last = None;
    loop {
        // Registered before looking, so an arrival between the look and the wait wakes it.
        let arrival = orchestrator.arrivals.notified();
        let active = active_now(&orchestrator, &target);
        if last != Some(active) {
            if sender
                .send(Ok(IsActiveResponse { result: active }))
                .await
                .is_err()
            {
                return;
            }
            last = Some(active);
        }
        tokio::select! {
            _ = arrival => {}
            _ = tokio::time::sleep(RECHECK) => {}
            _ = sender.closed() => return,
            _ = orchestrator.shutting_down() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(metadata: &[(&str, &str)]) -> ScaledObjectRef {
        ScaledObjectRef {
            name: "workers".into(),
            namespace: "video".into(),
            scaler_metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_trigger_metadata_names_the_gpu_type_and_the_slots_per_worker() {
        let l4 = ScaledTarget::parse(&reference(&[("gpuType", "L4"), ("slotsPerWorker", "2")]), 1)
            .expect("valid");
        assert_eq!(l4.gpu_type.as_deref(), Some("L4"));
        assert_eq!(
            (l4.slots_per_worker, l4.metric_name().as_str()),
            (2, "framefleet-slots-l4")
        );
        let any = ScaledTarget::parse(&reference(&[]), 3).expect("valid");
        assert_eq!((any.gpu_type, any.slots_per_worker), (None, 3));
        let error =
            ScaledTarget::parse(&reference(&[("slotsPerWorker", "0")]), 1).expect_err("zero slots");
        assert!(error.message().contains("video/workers"), "{error:?}");
    }

    #[test]
    fn wanted_slots_count_open_chunks_and_never_drop_below_the_busy_workers() {
        let two_slots = ScaledTarget {
            gpu_type: Some("L4".into()),
            slots_per_worker: 2,
        };
        let load = |here, elsewhere, workers| FleetLoad {
            busy_here: here,
            busy_elsewhere: elsewhere,
            busy_workers: workers,
        };
        // 7 open chunks, 2 of them running on T4s: 5 for the L4s.
        assert_eq!(slots_wanted(7, load(3, 2, 2), &two_slots), 5);
        // 3 chunks left, one on each of 3 workers: 2 workers would do, but none of the 3
        // may be removed while it holds a chunk.
        assert_eq!(slots_wanted(3, load(3, 0, 3), &two_slots), 6);
        assert_eq!(slots_wanted(0, load(0, 0, 0), &two_slots), 0);
    }
}
