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
//! type). With `encoders` (the FFmpeg encoders the scaled workers offer, comma-separated),
//! only jobs those workers can encode count: a job waiting for `h264_nvenc` does not scale
//! a pool of CPU workers, nor a libx264 job a pool kept for NVENC (a job asking for a codec
//! counts for every pool with an encoder of it until its run chooses one). With `priority`
//! (`interactive`, `normal` or `batch`), only jobs of that level count, so an interactive
//! pool scales on interactive work alone. `StreamIsActive` pushes the change the moment the first job arrives, so a fleet
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

use framefleet_common::codec::VideoEncoder;
use framefleet_common::proto::externalscaler::external_scaler_server::ExternalScaler;
use framefleet_common::proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

use crate::fleet::FleetLoad;
use crate::jobs::record::JobRecord;
use crate::jobs::valid_job::Priority;
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
    /// The encoders the scaled workers offer (`encoders`); empty: any.
    pub encoders: Vec<VideoEncoder>,
    /// Only jobs of this priority (`priority`: interactive, normal or batch); `None`: all.
    pub priority: Option<Priority>,
}

impl ScaledTarget {
    /// Reads `gpuType`, `slotsPerWorker` and `encoders` from a `ScaledObjectRef`'s
    /// metadata.
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
            encoders: parse_encoders(reference)?,
            priority: parse_priority(reference)?,
        })
    }

    /// Whether `job`'s chunks count for the scaled workers.
    fn counts_job(&self, job: &JobRecord) -> bool {
        (self.encoders.is_empty() || job.runs_on(&self.encoders))
            && self.priority.is_none_or(|p| p == job.request.priority)
    }

    /// Whether a chunk written with `encoder` (`None`: infer) of a job at `priority`
    /// counts for them.
    fn counts_chunk(&self, encoder: Option<VideoEncoder>, priority: Priority) -> bool {
        (self.encoders.is_empty() || encoder.is_none_or(|e| self.encoders.contains(&e)))
            && self.priority.is_none_or(|p| p == priority)
    }

    /// The metric's name: `framefleet-slots`, with the GPU type when there is one.
    pub fn metric_name(&self) -> String {
        match &self.gpu_type {
            Some(gpu) => format!("framefleet-slots-{}", gpu.to_ascii_lowercase()),
            None => "framefleet-slots".to_string(),
        }
    }
}

/// The `priority` of a trigger's metadata: the one level whose jobs count.
fn parse_priority(reference: &ScaledObjectRef) -> Result<Option<Priority>, Status> {
    let Some(given) = reference.scaler_metadata.get("priority") else {
        return Ok(None);
    };
    let given = given.trim();
    if given.is_empty() {
        return Ok(None);
    }
    Priority::ALL
        .into_iter()
        .find(|p| p.label() == given)
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "priority `{given}` in ScaledObject {}/{} is not a level; use interactive, \
                 normal or batch (or leave it out to count every job)",
                reference.namespace, reference.name
            ))
        })
}

/// The `encoders` of a trigger's metadata: FFmpeg names, comma-separated.
fn parse_encoders(reference: &ScaledObjectRef) -> Result<Vec<VideoEncoder>, Status> {
    let Some(list) = reference.scaler_metadata.get("encoders") else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            name.parse().map_err(|_| {
                let known: Vec<&str> = VideoEncoder::ALL.iter().map(|e| e.name()).collect();
                Status::invalid_argument(format!(
                    "encoders in ScaledObject {}/{}: `{name}` is not an encoder framefleet \
                     knows ({}); list the FFmpeg encoders its workers offer, comma-separated",
                    reference.namespace,
                    reference.name,
                    known.join(", ")
                ))
            })
        })
        .collect()
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
        .filter(|job| target.counts_job(job))
        .map(|job| job.slots_wanted())
        .sum();
    let load = orchestrator
        .fleet
        .load(target.gpu_type.as_deref(), |encoder, priority| {
            target.counts_chunk(encoder, priority)
        });
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
        let nvenc = ScaledTarget::parse(&reference(&[("encoders", "h264_nvenc, hevc_nvenc")]), 1)
            .expect("valid");
        assert_eq!(
            nvenc.encoders,
            [VideoEncoder::H264Nvenc, VideoEncoder::HevcNvenc]
        );
        let error = ScaledTarget::parse(&reference(&[("encoders", "h264_nvenc,av1_nvenc")]), 1)
            .expect_err("unknown encoder");
        assert!(
            error.message().contains("`av1_nvenc` is not an encoder")
                && error.message().contains("video/workers"),
            "{error:?}"
        );
    }

    /// A job of `spec` (valid under the default configuration), of the default tenant.
    fn record(spec: framefleet_common::proto::JobSpec) -> JobRecord {
        let config = framefleet_common::config::Config::default();
        let valid = crate::jobs::validate::check(spec, &config).expect("valid job");
        JobRecord::new(
            "job".into(),
            0,
            valid,
            crate::jobs::tenant::Tenant::default_tenant(),
        )
    }

    #[test]
    fn only_jobs_the_scaled_workers_can_encode_count_for_them() {
        use framefleet_common::proto::{EncoderSettings, JobSpec, ProcessorSpec, Task};
        let job = |encoder: &str, task: Task| {
            let spec = JobSpec {
                input_uri: "file:///tmp/in.mp4".into(),
                output_uri: if task == Task::Infer {
                    "file:///tmp/out.jsonl".into()
                } else {
                    "file:///tmp/out.mp4".into()
                },
                task: task as i32,
                processor: (task == Task::Infer).then(|| ProcessorSpec {
                    model: "/models/classifier.pt".into(),
                    scale: 0.0,
                    ..ProcessorSpec::default()
                }),
                encoder: Some(EncoderSettings {
                    encoder: encoder.into(),
                    ..EncoderSettings::default()
                }),
                ..JobSpec::default()
            };
            record(spec)
        };
        let nvenc_pool = ScaledTarget {
            gpu_type: Some("L4".into()),
            slots_per_worker: 1,
            encoders: vec![VideoEncoder::H264Nvenc],
            priority: None,
        };
        let named_nvenc = job("h264_nvenc", Task::Process);
        let named_x264 = job("libx264", Task::Process);
        let h264 = job("h264", Task::Process);
        let hevc = job("hevc", Task::Process);
        let infer = job("", Task::Infer);
        assert!(nvenc_pool.counts_job(&named_nvenc) && !nvenc_pool.counts_job(&named_x264));
        assert!(
            nvenc_pool.counts_job(&h264),
            "a codec counts until the run chooses"
        );
        assert!(!nvenc_pool.counts_job(&hevc));
        assert!(nvenc_pool.counts_job(&infer), "infer encodes nothing");
        h264.set_encoder(Some(VideoEncoder::Libx264));
        assert!(!nvenc_pool.counts_job(&h264), "the run chose x264");
        assert!(
            nvenc_pool.counts_chunk(None, Priority::Normal)
                && !nvenc_pool.counts_chunk(Some(VideoEncoder::Libx264), Priority::Normal)
        );
    }

    #[test]
    fn an_interactive_pool_counts_interactive_work_alone() {
        use framefleet_common::proto::{JobSpec, Priority as Wire};
        let metadata = [("gpuType", "L4"), ("priority", "interactive")];
        let pool = ScaledTarget::parse(&reference(&metadata), 1).expect("valid");
        assert_eq!(pool.priority, Some(Priority::Interactive));
        let job = |priority: Wire| {
            let spec = JobSpec {
                input_uri: "file:///tmp/in.mp4".into(),
                output_uri: "file:///tmp/out.mp4".into(),
                priority: priority as i32,
                ..JobSpec::default()
            };
            record(spec)
        };
        assert!(pool.counts_job(&job(Wire::Interactive)));
        assert!(!pool.counts_job(&job(Wire::Batch)) && !pool.counts_job(&job(Wire::Unspecified)));
        assert!(!pool.counts_chunk(None, Priority::Normal));
        let error = ScaledTarget::parse(&reference(&[("priority", "urgent")]), 1)
            .expect_err("an unknown level");
        assert!(
            error.message().contains("interactive, normal or batch"),
            "{error:?}"
        );
    }

    #[test]
    fn wanted_slots_count_open_chunks_and_never_drop_below_the_busy_workers() {
        let two_slots = ScaledTarget {
            gpu_type: Some("L4".into()),
            slots_per_worker: 2,
            encoders: Vec::new(),
            priority: None,
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
