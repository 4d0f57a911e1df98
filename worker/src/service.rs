//! The `Worker` gRPC service: accepts a chunk when a slot is free, runs the pipeline, and
//! streams measured progress followed by exactly one result (or a gRPC error).
//!
//! When the orchestrator drops the stream (it gave the chunk up, or the job was cancelled)
//! the chunk's pipeline is cancelled and its upload aborted. When the worker shuts down it
//! drains ([`WorkerState::drain`]): no new chunk is taken, held ones get a grace period to
//! finish, and what is left then is cancelled, which hands it back to the orchestrator. A
//! `Drain` call starts the same shutdown (what a scale-in hook sends).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use framefleet_common::codec::VideoEncoder;
use framefleet_common::config::WorkerConfig;
use framefleet_common::phases::PerPhase;
use framefleet_common::proto::worker_server::Worker;
use framefleet_common::proto::{
    chunk_event, ChosenFrame, ChunkEvent, ChunkRange, ChunkResult, DrainRequest, EncoderSettings,
    FrameTimestamps, PhaseTiming, ProcessChunkRequest, Task, WorkerStatus, WorkerStatusRequest,
};
use framefleet_common::storage::{LocalFiles, ObjectUri, Storage, StorageError};
use framefleet_common::telemetry::propagation;

use crate::codecs::Codecs;
use crate::gpu_share::GpuLedger;
use crate::metrics::{ChunkOutcome, WorkerMetrics};
use crate::pipeline::progress::ChunkProgressCounters;
use crate::pipeline::{run_chunk, ChunkError, ChunkOutput, ChunkSpec, Passthrough, PhaseClock};
use crate::processor::ProcessorSettings;

/// How long a chunk waits for a slot still held by a chunk being cancelled.
const SLOT_WAIT: Duration = Duration::from_secs(10);

/// How often progress is sampled and streamed.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Longest silence on a chunk's stream: progress is repeated at least this often so the
/// orchestrator can tell a slow chunk from a dead worker.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// State shared by the service's requests.
pub struct WorkerState {
    config: WorkerConfig,
    storage: Storage,
    slots: Arc<Semaphore>,
    gpus: Arc<GpuLedger>,
    codecs: Codecs,
    chunks_done: AtomicU64,
    current: Mutex<BTreeSet<String>>,
    shutdown: CancellationToken,
    /// Cancels every chunk in hand: when a drain's grace is over.
    hand_back: CancellationToken,
    metrics: WorkerMetrics,
}

impl WorkerState {
    /// State for a worker with `config`'s slots and GPUs and the video `codecs` it found,
    /// that stops taking chunks on `shutdown`.
    pub fn new(
        config: WorkerConfig,
        codecs: Codecs,
        storage: Storage,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(config.slots as usize));
        let gpus = GpuLedger::new(config.gpus_held(), config.slots);
        Arc::new(Self {
            config,
            storage,
            slots,
            gpus,
            codecs,
            chunks_done: AtomicU64::new(0),
            current: Mutex::default(),
            shutdown,
            hand_back: CancellationToken::new(),
            metrics: WorkerMetrics::default(),
        })
    }

    /// What the Prometheus endpoint shows.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// Slots holding a chunk now.
    pub fn busy_slots(&self) -> u32 {
        self.config
            .slots
            .saturating_sub(self.slots.available_permits() as u32)
    }

    /// Waits, after shutdown, for the chunks in hand: each gets `drain_grace_seconds` to
    /// finish; then the rest are cancelled (their streams end with an error and the
    /// orchestrator retries them elsewhere) and waited for a little longer.
    pub async fn drain(&self) {
        let all = self.config.slots;
        let busy = self.busy_slots();
        if busy > 0 {
            tracing::info!(
                chunks = busy,
                grace_seconds = self.config.drain_grace_seconds,
                "draining: letting the chunks in hand finish"
            );
        }
        let grace = Duration::from_secs_f64(self.config.drain_grace_seconds);
        if tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!(chunks = ?self.current().iter().collect::<Vec<_>>(), "the drain grace is over; handing the remaining chunks back");
        self.hand_back.cancel();
        let _ = tokio::time::timeout(SLOT_WAIT, self.slots.acquire_many(all)).await;
    }

    /// What the worker is and what it is doing now.
    fn status(&self) -> WorkerStatus {
        WorkerStatus {
            name: self.config.name.clone(),
            gpu_type: self.config.gpu_type.clone(),
            slots: self.config.slots,
            busy_slots: self.busy_slots(),
            device: device_label(&self.config.device).into(),
            chunks_done: self.chunks_done.load(Ordering::Relaxed),
            current_chunks: self.current().iter().cloned().collect(),
            draining: self.shutdown.is_cancelled(),
            encoders: self.codecs.encoder_names(),
            decoders: self.codecs.decoder_names(),
            gpus: self.config.gpus_held(),
        }
    }

    fn current(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The gRPC `Worker` service.
pub struct WorkerService {
    state: Arc<WorkerState>,
}

impl WorkerService {
    /// A service over shared state.
    pub fn new(state: Arc<WorkerState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl Worker for WorkerService {
    type ProcessChunkStream = ReceiverStream<Result<ChunkEvent, Status>>;

    async fn process_chunk(
        &self,
        request: Request<ProcessChunkRequest>,
    ) -> Result<Response<Self::ProcessChunkStream>, Status> {
        if self.state.shutdown.is_cancelled() {
            return Err(Status::unavailable(
                "the worker is shutting down and takes no new chunks; send it elsewhere",
            ));
        }
        let (metadata, _, request) = request.into_parts();
        let files = self.state.storage.local_files();
        let spec = chunk_spec(&request, &self.state.config, &self.state.codecs, files)
            .map_err(framefleet_common::text::bounded_status)?;
        // The orchestrator hands out a slot as soon as it gives a chunk up; the pipeline it
        // cancelled may need a moment to stop, so wait for it briefly rather than refuse.
        let permit = tokio::time::timeout(SLOT_WAIT, self.state.slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| Status::resource_exhausted("worker busy: every slot holds a chunk"))?;
        let label = format!("{}/{}", request.job_id, spec.range.index);
        tracing::info!(chunk = %label, attempt = request.attempt, frames = spec.frames(), "chunk accepted");
        let (events, stream) = mpsc::channel(64);
        // The chunk's span continues the trace of the orchestrator's attempt that sent it.
        let span = tracing::info_span!(
            "chunk",
            job = %request.job_id,
            chunk = spec.range.index,
            attempt = request.attempt,
            frames = spec.frames()
        );
        propagation::adopt_remote_parent(&span, &metadata);
        tokio::spawn(
            run_and_report(self.state.clone(), spec, label, permit, events).instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn status(
        &self,
        _request: Request<WorkerStatusRequest>,
    ) -> Result<Response<WorkerStatus>, Status> {
        Ok(Response::new(self.state.status()))
    }

    async fn drain(
        &self,
        _request: Request<DrainRequest>,
    ) -> Result<Response<WorkerStatus>, Status> {
        if !self.state.shutdown.is_cancelled() {
            tracing::info!(
                "drain requested: leaving the fleet, finishing the chunks in hand, then exiting"
            );
            self.state.shutdown.cancel();
        }
        Ok(Response::new(self.state.status()))
    }
}

/// Where this worker runs models: `cuda` when built with libtorch and a GPU is visible
/// (and `worker.device` allows it), else `cpu`.
pub fn device_label(requested: &str) -> &'static str {
    #[cfg(feature = "torch")]
    {
        crate::processor::neural::device_label(crate::processor::neural::select_device(requested))
    }
    #[cfg(not(feature = "torch"))]
    {
        let _ = requested;
        "cpu"
    }
}

/// What building a processor needs, from the worker's configuration.
pub fn processor_settings(config: &WorkerConfig, files: LocalFiles) -> ProcessorSettings {
    ProcessorSettings {
        files,
        model_dir: crate::models::cache_dir(&config.model_dir),
        device: config.device.clone(),
        tile_size: config.tile_size,
    }
}

/// Turns a request into a validated [`ChunkSpec`] this worker, with its `codecs`, can run.
fn chunk_spec(
    request: &ProcessChunkRequest,
    config: &WorkerConfig,
    codecs: &Codecs,
    files: LocalFiles,
) -> Result<ChunkSpec, Status> {
    let parse = |uri: &str| {
        uri.parse::<ObjectUri>()
            .map_err(|e| Status::invalid_argument(e.to_string()))
    };
    let range = request
        .range
        .ok_or_else(|| Status::invalid_argument("the request has no chunk range"))?;
    if range.end_frame <= range.start_frame || range.end_pts <= range.start_pts {
        return Err(Status::invalid_argument(format!(
            "chunk range frames [{}, {}) pts [{}, {}) is empty",
            range.start_frame, range.end_frame, range.start_pts, range.end_pts
        )));
    }
    let time_base = request
        .time_base
        .filter(|tb| tb.num > 0 && tb.den > 0)
        .ok_or_else(|| Status::invalid_argument("the request has no valid time base"))?;
    let frame_rate = request.frame_rate.unwrap_or_default();
    let timestamps = FrameTimestamps::try_from(request.frame_timestamps).map_err(|_| {
        Status::invalid_argument(format!(
            "unknown frame timestamp source {}; update this worker to the orchestrator's version",
            request.frame_timestamps
        ))
    })?;
    if request.pts_offset < 0 || range.end_pts.checked_add(request.pts_offset).is_none() {
        return Err(Status::invalid_argument(format!(
            "pts offset {} does not move chunk pts [{}, {}) forward",
            request.pts_offset, range.start_pts, range.end_pts
        )));
    }
    let chosen = chosen_frames(request, &range)?;
    let encoder = request.encoder.clone().unwrap_or_default();
    let video_encoder = video_encoder(&encoder, request.task(), codecs)?;
    Ok(ChunkSpec {
        input: parse(&request.input_uri)?,
        output: parse(&request.output_uri)?,
        range,
        stream_index: request.video_stream_index as usize,
        processor: request.processor.clone().unwrap_or_default(),
        encoder,
        video_encoder,
        nvdec: codecs.nvdec().cloned(),
        batch_frames: config.batch_frames as usize,
        task: request.task(),
        top_k: request.top_k,
        settings: processor_settings(config, files),
        time_base: ffmpeg_next::Rational::new(time_base.num, time_base.den),
        frame_rate: ffmpeg_next::Rational::new(frame_rate.num, frame_rate.den.max(1)),
        pts_offset: request.pts_offset,
        fragmented_input: request.fragmented_input,
        timestamps: timestamps.into(),
        whole_input: config.whole_input_download,
        passthrough: if request.passthrough_streams.is_empty() {
            None
        } else {
            Some(Passthrough {
                streams: request
                    .passthrough_streams
                    .iter()
                    .map(|&s| s as usize)
                    .collect(),
                output: parse(&request.packet_log_uri)?,
                last_chunk: request.last_chunk,
            })
        },
        chosen,
        input_version: (request.input_size > 0)
            .then(|| (request.input_size, request.input_validator.clone())),
    })
}

/// The encoder a chunk names, one this worker has (an infer chunk encodes nothing). An
/// encoder it lacks is the orchestrator's mistake about this worker, not the chunk's: the
/// chunk is refused as unavailable, so it is retried on another worker.
fn video_encoder(
    settings: &EncoderSettings,
    task: Task,
    codecs: &Codecs,
) -> Result<VideoEncoder, Status> {
    let encoder = VideoEncoder::from_reported(&settings.encoder).ok_or_else(|| {
        Status::invalid_argument(format!(
            "unknown encoder `{}`; a chunk names one FFmpeg encoder (libx264, libx265, \
             h264_nvenc, hevc_nvenc)",
            settings.encoder
        ))
    })?;
    if task != Task::Infer && !codecs.has(encoder) {
        return Err(Status::unavailable(format!(
            "this worker has no {encoder} (it has {}); send the chunk to a worker that has it",
            codecs.encoder_names().join(", ")
        )));
    }
    Ok(encoder)
}

/// The chosen frames of an infer chunk, checked: ascending in index and timestamp, within
/// the range, each after its keyframe, as many as the range says.
fn chosen_frames(
    request: &ProcessChunkRequest,
    range: &ChunkRange,
) -> Result<Vec<ChosenFrame>, Status> {
    let chosen = &request.chosen;
    if chosen.len() as u64 != range.chosen_frames {
        return Err(Status::invalid_argument(format!(
            "the chunk lists {} chosen frames but its range says {}",
            chosen.len(),
            range.chosen_frames
        )));
    }
    if !chosen.is_empty() && request.task() != Task::Infer {
        return Err(Status::invalid_argument(
            "chosen frames are for infer chunks; a video chunk encodes every frame",
        ));
    }
    let in_range = |c: &ChosenFrame| {
        (range.start_frame..range.end_frame).contains(&c.index)
            && (range.start_pts..range.end_pts).contains(&c.pts)
            && c.keyframe_pts <= c.pts
    };
    let ascending = chosen
        .windows(2)
        .all(|w| w[0].index < w[1].index && w[0].pts < w[1].pts);
    if !ascending || !chosen.iter().all(in_range) {
        return Err(Status::invalid_argument(
            "the chunk's chosen frames are out of order or outside its range",
        ));
    }
    Ok(chosen.clone())
}

/// Runs one chunk while streaming its progress, then sends its result.
async fn run_and_report(
    state: Arc<WorkerState>,
    spec: ChunkSpec,
    label: String,
    permit: OwnedSemaphorePermit,
    events: mpsc::Sender<Result<ChunkEvent, Status>>,
) {
    let accepted = Instant::now();
    let gpu_hold = state.gpus.start();
    state.current().insert(label.clone());
    let progress = Arc::new(ChunkProgressCounters::new(spec.frames()));
    let clock = Arc::new(PhaseClock::default());
    let cancel = state.hand_back.child_token();
    let storage = state.storage.counted();
    let chunk = run_chunk(
        spec,
        storage.clone(),
        progress.clone(),
        clock.clone(),
        cancel.clone(),
    );
    tokio::pin!(chunk);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    let mut last = PerPhase::default();
    let mut last_sent = Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs_f64(state.config.chunk_deadline_seconds));
    tokio::pin!(deadline);
    let mut timed_out = false;
    let outcome = loop {
        tokio::select! {
            outcome = &mut chunk => break outcome,
            _ = &mut deadline, if !timed_out => {
                tracing::warn!(chunk = %label, seconds = state.config.chunk_deadline_seconds, "the chunk ran past its deadline; cancelling");
                timed_out = true;
                cancel.cancel();
            }
            _ = ticker.tick() => {
                let mut changes = progress.changes(&mut last);
                if changes.is_empty() && last_sent.elapsed() >= KEEPALIVE_INTERVAL {
                    changes = progress.changes(&mut PerPhase::splat(u64::MAX));
                }
                for change in changes {
                    last_sent = Instant::now();
                    let event = ChunkEvent { event: Some(chunk_event::Event::Progress(change)) };
                    if events.send(Ok(event)).await.is_err() {
                        cancel.cancel();
                    }
                }
            }
            _ = events.closed(), if !cancel.is_cancelled() => {
                tracing::info!(chunk = %label, "the orchestrator gave the chunk up; cancelling");
                cancel.cancel();
            }
        }
    };
    let wall_seconds = accepted.elapsed().as_secs_f64();
    let gpu_seconds = gpu_hold.finish();
    drop(permit);
    state.current().remove(&label);
    let ended = match &outcome {
        Ok(output) => (ChunkOutcome::Done, output.frames),
        Err(ChunkError::Cancelled) => (ChunkOutcome::Cancelled, 0),
        Err(_) => (ChunkOutcome::Failed, 0),
    };
    state
        .metrics
        .chunk_ended(ended.0, ended.1, &clock.seconds());
    let reply = match outcome {
        Ok(output) => {
            state.chunks_done.fetch_add(1, Ordering::Relaxed);
            tracing::info!(chunk = %label, frames = output.frames, gpu_seconds, "chunk done");
            for change in progress.changes(&mut last) {
                let _ = events
                    .send(Ok(ChunkEvent {
                        event: Some(chunk_event::Event::Progress(change)),
                    }))
                    .await;
            }
            Ok(ChunkEvent {
                event: Some(chunk_event::Event::Result(chunk_result(
                    &state.config,
                    &output,
                    &storage,
                    (wall_seconds, gpu_seconds),
                ))),
            })
        }
        Err(ChunkError::Cancelled) if timed_out => Err(Status::deadline_exceeded(format!(
            "the chunk ran longer than its deadline of {} s (worker.chunk_deadline_seconds) and was stopped",
            state.config.chunk_deadline_seconds
        ))),
        Err(error) => {
            tracing::warn!(chunk = %label, %error, "chunk failed");
            Err(status_of(&error))
        }
    };
    let _ = events.send(reply).await;
}

fn chunk_result(
    config: &WorkerConfig,
    output: &ChunkOutput,
    storage: &Storage,
    (wall_seconds, gpu_seconds): (f64, f64),
) -> ChunkResult {
    ChunkResult {
        frames: output.frames,
        phases: output
            .phase_seconds
            .iter()
            .map(|(phase, &seconds)| PhaseTiming {
                phase: phase as i32,
                seconds,
            })
            .collect(),
        bytes_read: storage.counters().bytes_read(),
        bytes_written: storage.counters().bytes_written(),
        requests: storage.counters().requests(),
        retried_requests: storage.counters().retried_requests(),
        bytes_wasted: storage.counters().bytes_wasted(),
        gpu_seconds,
        wall_seconds,
        gpu_type: config.gpu_type.clone(),
        worker_name: config.name.clone(),
        output_width: output.width,
        output_height: output.height,
        device: output.device.to_string(),
        passthrough_packets: output.passthrough_packets,
        model_load_seconds: output.model_load_seconds,
        host: crate::host::name().to_string(),
        encoder: output
            .encoder
            .map(|e| e.name().to_string())
            .unwrap_or_default(),
        decoder: output.decoder.to_string(),
    }
}

/// The gRPC status for a failed chunk, its message bounded. The orchestrator retries
/// everything but `INVALID_ARGUMENT`, `NOT_FOUND` and `FAILED_PRECONDITION`.
fn status_of(error: &ChunkError) -> Status {
    framefleet_common::text::bounded_status(status_for(error))
}

fn status_for(error: &ChunkError) -> Status {
    let message = error.to_string();
    match error {
        ChunkError::Invalid(_)
        | ChunkError::Process(crate::processor::ProcessError::UnknownModel(_)) => {
            Status::invalid_argument(message)
        }
        ChunkError::Process(crate::processor::ProcessError::Invalid(_)) => {
            Status::invalid_argument(message)
        }
        ChunkError::Storage(StorageError::NotFound { .. }) => Status::not_found(message),
        ChunkError::Storage(
            StorageError::BadUri { .. }
            | StorageError::NoS3Credentials { .. }
            | StorageError::Refused { .. },
        ) => Status::failed_precondition(message),
        ChunkError::Cancelled => Status::cancelled(message),
        _ => Status::internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_common::proto::{ChunkRange, Rational};

    fn request() -> ProcessChunkRequest {
        ProcessChunkRequest {
            job_id: "j".into(),
            input_uri: "file:///tmp/in.mp4".into(),
            output_uri: "file:///tmp/out.nut".into(),
            range: Some(ChunkRange {
                index: 0,
                start_frame: 0,
                end_frame: 10,
                start_pts: 0,
                end_pts: 5120,
                keyframe_pts: 0,
                ..ChunkRange::default()
            }),
            time_base: Some(Rational { num: 1, den: 15360 }),
            ..ProcessChunkRequest::default()
        }
    }

    #[test]
    fn requests_are_validated_with_actionable_messages() {
        let config = WorkerConfig::default();
        let codecs = Codecs::with_encoders(vec![VideoEncoder::Libx264]);
        assert!(chunk_spec(&request(), &config, &codecs, LocalFiles::new(&[])).is_ok());
        let mut bad = request();
        bad.input_uri = "ftp://x/y".into();
        let status =
            chunk_spec(&bad, &config, &codecs, LocalFiles::new(&[])).expect_err("bad scheme");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains("ftp://x/y"));
        let mut empty = request();
        empty.range = Some(ChunkRange {
            end_frame: 0,
            ..empty.range.unwrap_or_default()
        });
        assert!(chunk_spec(&empty, &config, &codecs, LocalFiles::new(&[])).is_err());
        let mut backwards = request();
        backwards.pts_offset = -1;
        assert!(chunk_spec(&backwards, &config, &codecs, LocalFiles::new(&[])).is_err());
        let mut no_time_base = request();
        no_time_base.time_base = None;
        assert!(chunk_spec(&no_time_base, &config, &codecs, LocalFiles::new(&[])).is_err());
        let mut newer = request();
        newer.frame_timestamps = 99;
        let status = chunk_spec(&newer, &config, &codecs, LocalFiles::new(&[]))
            .expect_err("unknown timestamp source");
        assert!(status.message().contains("update this worker"), "{status}");
    }

    #[test]
    fn a_chunk_for_an_encoder_this_worker_lacks_goes_elsewhere() {
        let (config, codecs) = (
            WorkerConfig::default(),
            Codecs::with_encoders(vec![VideoEncoder::Libx264]),
        );
        let mut nvenc = request();
        nvenc.encoder = Some(EncoderSettings {
            encoder: "h264_nvenc".into(),
            ..EncoderSettings::default()
        });
        let status =
            chunk_spec(&nvenc, &config, &codecs, LocalFiles::new(&[])).expect_err("no NVENC here");
        assert_eq!(status.code(), tonic::Code::Unavailable, "retried elsewhere");
        assert!(status.message().contains("has libx264"), "{status}");
        nvenc.task = Task::Infer.into();
        assert!(
            chunk_spec(&nvenc, &config, &codecs, LocalFiles::new(&[])).is_ok(),
            "infer encodes nothing"
        );
        let mut unknown = request();
        unknown.encoder = Some(EncoderSettings {
            encoder: "h264".into(),
            ..EncoderSettings::default()
        });
        let status = chunk_spec(&unknown, &config, &codecs, LocalFiles::new(&[]))
            .expect_err("a codec, not an encoder");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let spec = chunk_spec(&request(), &config, &codecs, LocalFiles::new(&[])).expect("valid");
        assert_eq!(
            spec.video_encoder,
            VideoEncoder::Libx264,
            "empty: an older orchestrator's x264"
        );
    }

    #[test]
    fn permanent_and_retryable_failures_map_to_distinct_codes() {
        assert_eq!(
            status_of(&ChunkError::Invalid("x".into())).code(),
            tonic::Code::InvalidArgument
        );
        let missing = ChunkError::Storage(StorageError::NotFound {
            uri: "s3://b/k".into(),
        });
        assert_eq!(status_of(&missing).code(), tonic::Code::NotFound);
        assert_eq!(
            status_of(&ChunkError::Decode("x".into())).code(),
            tonic::Code::Internal
        );
    }
}
