//! The orchestrator's core: accepts jobs and runs each one end to end.
//!
//! A job is probed, planned, its chunks dispatched concurrently (the first chunk that fails
//! for good fails the job and stops the others), stitched and reported. Whatever happens,
//! success, failure or cancel, the job's temporary chunk objects are deleted before its
//! terminal state is published, and exactly one terminal state is published.
//!
//! Every promise is in the [`journal`](crate::journal) before it is made: a job before its
//! submission is answered, a chunk before it counts as done, a cancel before it is
//! acknowledged, an end before watchers see it. At start every job that had not ended
//! runs again: it is probed and planned again, each chunk recorded as accepted is trusted
//! once its object passes the same checks again ([`dispatch::recheck`]) and is not
//! recomputed, the rest are dispatched, and the stitch runs. A shutdown leaves running
//! jobs in the journal for the next start (with a memory-only journal they fail instead).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use framefleet_common::auth::AttachToken;
use framefleet_common::config::{Config, LimitsConfig};
use framefleet_common::media::{self, MediaInfo, ProbeError};
use framefleet_common::proto::{FrameTimestamps, JobSpec, JobState, ProcessChunkRequest, Rational};
use framefleet_common::storage::{ObjectUri, Storage, StorageError};

use crate::carry;
use crate::dispatch::{
    self, AcceptedChunk, ChunkTimeline, ChunkWork, DispatchContext, DispatchError,
};
use crate::fleet::{Fleet, WorkerAccess};
use crate::job::JobRecord;
use crate::journal::{Journal, JournalError, StoredJob};
use crate::metrics::OrchestratorMetrics;
use crate::planner::{self, PlanError};
use crate::report::{self, RunLog};
use crate::stitch::{self, StitchError};
use crate::store::{JobStore, KeyConflict};
use crate::straggler::ChunkPeers;
use crate::validate::{self, InvalidSpec};

/// Longest a probe may take before the job fails.
const PROBE_DEADLINE: Duration = Duration::from_secs(300);

/// Longest a shutdown waits for FFmpeg work on blocking threads (a probe, a chunk check, a
/// stitch) to end.
const BLOCKING_DRAIN: Duration = Duration::from_secs(30);

/// After a failure or cancel, chunk objects are deleted again after this grace, in case a
/// worker was finishing an upload as it was told to stop.
const CLEANUP_GRACE: Duration = Duration::from_millis(1500);

/// Why a job failed, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The input or output storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The input is not a processable video.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The input is beyond a configured limit.
    #[error("{0}")]
    OverLimit(String),
    /// The probe took too long.
    #[error("probing the input took longer than {0} s; the storage is too slow or the file is pathological")]
    ProbeTimeout(u64),
    /// No plan could be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A chunk failed for good.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The chunks could not be joined.
    #[error(transparent)]
    Stitch(#[from] StitchError),
    /// The job was cancelled.
    #[error("the job was cancelled")]
    Cancelled,
    /// The orchestrator stopped first.
    #[error("the orchestrator shut down before the job finished; submit it again")]
    ShuttingDown,
    /// The job store failed.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A task of the orchestrator crashed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The spec is invalid.
    #[error(transparent)]
    Invalid(#[from] InvalidSpec),
    /// The idempotency key belongs to another job.
    #[error(transparent)]
    Conflict(#[from] KeyConflict),
    /// The orchestrator is shutting down.
    #[error("the orchestrator is shutting down and accepts no new jobs")]
    ShuttingDown,
    /// Too many jobs are waiting.
    #[error("{0} jobs are already queued or running, the most this orchestrator takes (limits.max_queued_jobs); submit again when some have ended")]
    QueueFull(u32),
    /// The job could not be recorded, so it was not accepted.
    #[error("the job was not accepted: {0}; try again later")]
    Journal(#[from] JournalError),
}

/// The orchestrator: configuration, storage, workers and jobs.
pub struct Orchestrator {
    /// Configuration it was started with.
    pub config: Arc<Config>,
    /// Storage client.
    pub storage: Storage,
    /// Registered workers.
    pub fleet: Arc<Fleet>,
    /// Jobs.
    pub jobs: JobStore,
    /// Counters and gauges for the Prometheus endpoint.
    pub metrics: Arc<OrchestratorMetrics>,
    journal: Journal,
    /// Submissions are recorded one at a time, so a repeated idempotency key is answered
    /// only once the job it names is durable.
    submissions: tokio::sync::Mutex<()>,
    /// One permit per job allowed to run at once (`limits.max_running_jobs`).
    running: Arc<tokio::sync::Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// FFmpeg work on blocking threads (probe, chunk checks, stitch): a shutdown waits for
    /// it, so none of it outlives the runtime it blocks on.
    blocking: TaskTracker,
}

impl Orchestrator {
    /// Opens the job store named by `orchestrator.store_path` and resumes every job in it
    /// that had not ended; jobs stop (or stay for the next start) on `shutdown`.
    pub async fn open(
        config: Config,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, JournalError> {
        let journal = Journal::open_sqlite(&config.orchestrator.store_path)?;
        let stored = journal.load().await?;
        let running = config.limits.max_running_jobs as usize;
        let orchestrator = Arc::new(Self {
            storage: Storage::new(&config.storage),
            fleet: Fleet::new(
                Duration::from_secs_f64(config.orchestrator.lease_seconds),
                WorkerAccess {
                    tls: config.tls.clone(),
                    token: AttachToken::new(&config.auth.fleet_token),
                },
            ),
            config: Arc::new(config),
            jobs: JobStore::default(),
            metrics: Arc::default(),
            journal,
            submissions: tokio::sync::Mutex::new(()),
            running: Arc::new(tokio::sync::Semaphore::new(running)),
            shutdown,
            tasks: TaskTracker::new(),
            blocking: TaskTracker::new(),
        });
        for job in stored {
            let record = Arc::new(JobRecord::restore(&job));
            orchestrator
                .jobs
                .restore(&job.idempotency_key, record.clone());
            if record.state().is_terminal() {
                continue;
            }
            tracing::info!(job = %job.id, chunks_done = job.chunks.len(), "resuming a job from the job store");
            if job.cancel_requested {
                record.cancel.cancel();
            }
            orchestrator.start(record, job.chunks);
        }
        Ok(orchestrator)
    }

    /// Validates and accepts a job (or returns the one its idempotency key names) and
    /// starts it. A new job is in the journal before this returns.
    pub async fn submit(
        self: &Arc<Self>,
        idempotency_key: &str,
        spec: JobSpec,
    ) -> Result<(Arc<JobRecord>, bool), SubmitError> {
        if self.shutdown.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        validate::idempotency_key(idempotency_key)?;
        let spec = validate::normalize(spec, &self.config)?;
        let _one_at_a_time = self.submissions.lock().await;
        let most = self.config.limits.max_queued_jobs;
        let open = self
            .jobs
            .list()
            .iter()
            .filter(|j| !j.state().is_terminal())
            .count();
        let repeated = !idempotency_key.is_empty() && self.jobs.by_key(idempotency_key).is_some();
        if open >= most as usize && !repeated {
            return Err(SubmitError::QueueFull(most));
        }
        let (job, created) = self.jobs.create(idempotency_key, spec)?;
        if created {
            let stored = StoredJob {
                id: job.id.clone(),
                seq: job.seq,
                idempotency_key: idempotency_key.to_string(),
                spec: job.spec.clone(),
                snapshot: job.snapshot(),
                report: None,
                chunks: Vec::new(),
                cancel_requested: false,
                runs: 0,
            };
            if let Err(error) = self.journal.insert(stored).await {
                self.jobs.forget(&job.id);
                return Err(error.into());
            }
            tracing::info!(job = %job.id, input = %job.spec.input_uri, output = %job.spec.output_uri, "job accepted");
            self.metrics.job_submitted();
            self.start(job.clone(), Vec::new());
        }
        Ok((job, created))
    }

    /// Cancels a job that has not ended; the request is in the journal before this
    /// returns, so a restart does not bring the job back.
    pub async fn cancel(&self, job: &JobRecord) -> Result<(), JournalError> {
        if !job.state().is_terminal() {
            self.journal.request_cancel(&job.id).await?;
            tracing::info!(job = %job.id, "job cancel requested");
            job.cancel.cancel();
        }
        Ok(())
    }

    /// Stops accepting jobs and waits for running ones to reach a terminal state (or, with
    /// a durable job store, to stop where they are) and for their blocking work to end.
    pub async fn drain(&self) {
        self.fleet.close();
        self.tasks.close();
        self.tasks.wait().await;
        self.blocking.close();
        if tokio::time::timeout(BLOCKING_DRAIN, self.blocking.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                seconds = BLOCKING_DRAIN.as_secs(),
                "FFmpeg work still running after the shutdown grace; stopping without it"
            );
        }
    }

    /// Runs `job` on a task of its own, in a `job` span: the root of the job's trace, which
    /// the spans of its chunks on the workers join.
    fn start(self: &Arc<Self>, job: Arc<JobRecord>, trusted: Vec<AcceptedChunk>) {
        let span = tracing::info_span!("job", job = %job.id, input = %job.spec.input_uri, output = %job.spec.output_uri);
        self.tasks
            .spawn(self.clone().run_job(job, trusted).instrument(span));
    }

    async fn run_job(self: Arc<Self>, job: Arc<JobRecord>, trusted: Vec<AcceptedChunk>) {
        let io = JobIo::new(&self.storage);
        let log = Arc::new(Mutex::new(RunLog::default()));
        let run = async {
            // Queued until one of the `limits.max_running_jobs` permits is free.
            let _permit = self.running.clone().acquire_owned().await;
            self.execute(&job, &io, &log, trusted).await
        };
        let outcome = tokio::select! {
            result = run => result,
            _ = job.cancel.cancelled() => Err(JobError::Cancelled),
            _ = self.shutdown.cancelled() => Err(JobError::ShuttingDown),
        };
        if matches!(outcome, Err(JobError::ShuttingDown)) && self.journal.is_durable() {
            tracing::info!(job = %job.id, "the orchestrator is stopping; the job stays in the job store and resumes at the next start");
            return;
        }
        if let Ok(scratch) = validate::scratch_prefix(&job.spec, &job.id, &self.config) {
            self.clean_up(&io.scratch, &scratch, outcome.is_err()).await;
        }
        let (state, error) = match &outcome {
            Ok(()) => (JobState::Succeeded, None),
            Err(JobError::Cancelled) => (JobState::Cancelled, None),
            Err(error) => (JobState::Failed, Some(error.to_string())),
        };
        match &error {
            Some(error) => tracing::warn!(job = %job.id, %error, "job failed"),
            None => tracing::info!(job = %job.id, state = state.label(), "job ended"),
        }
        let report = {
            let log = log.lock().unwrap_or_else(|p| p.into_inner());
            report::build(&job, &log, &io, &self.config.pricing, state)
        };
        self.metrics.job_ended(state, report.totals.gpu_seconds);
        let ended = job.ending(state, error);
        if let Err(error) = self
            .journal
            .finish(&job.id, ended.clone(), Some(report.clone()))
            .await
        {
            tracing::error!(job = %job.id, %error, "the job's end could not be recorded; a restart will run it again");
        }
        job.finish(ended, Some(report));
    }

    async fn clean_up(&self, io: &Storage, scratch: &ObjectUri, after_failure: bool) {
        let passes = if after_failure { 2 } else { 1 };
        for pass in 0..passes {
            if pass > 0 {
                tokio::time::sleep(CLEANUP_GRACE).await;
            }
            match io.delete_prefix(scratch).await {
                Ok(deleted) if deleted > 0 => {
                    tracing::debug!(%scratch, deleted, "temporary chunk objects deleted")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%scratch, %error, "deleting temporary chunk objects failed")
                }
            }
        }
    }

    async fn execute(
        &self,
        job: &Arc<JobRecord>,
        io: &JobIo,
        log: &Mutex<RunLog>,
        trusted: Vec<AcceptedChunk>,
    ) -> Result<(), JobError> {
        let run = self.journal.begin_run(&job.id).await?;
        let spec = &job.spec;
        let input: ObjectUri = spec.input_uri.parse()?;
        let output: ObjectUri = spec.output_uri.parse()?;
        let scratch = validate::scratch_prefix(spec, &job.id, &self.config)?;

        job.set_state(JobState::Probing);
        let probe_started = Instant::now();
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .probe_started_seconds = job.accepted.elapsed().as_secs_f64();
        let (info, input_size) = probe(&io.input, &input, &self.config.limits, &self.blocking)
            .instrument(tracing::info_span!("probe"))
            .await?;
        check_limits(&info, input_size, &self.config.limits)?;
        let mut info = info;
        if validate::is_infer(spec) {
            info.audio.clear();
            info.subtitles.clear();
            info.attachments.clear();
        } else {
            stitch::check_container(output.file_name(), &info)?;
            let carried = carry::plan(output.file_name(), &info);
            for note in &carried.notes {
                tracing::info!(job = %job.id, "{note}");
            }
            info.subtitles = carried.subtitles;
            info.attachments = carried.attachments;
            let mut notes = carried.notes;
            notes.extend(stitch::timeline_note(&info.video));
            notes.extend(info.video.timestamps.report_note().map(str::to_string));
            log.lock().unwrap_or_else(|p| p.into_inner()).notes = notes;
        }
        let info = Arc::new(info);
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .input_size_bytes = input_size;
        let processor = spec.processor.clone().unwrap_or_default();
        let profile = planner::profile_for(&spec.profile, &processor.model);
        let plan = planner::plan(&info.video, spec.chunks, &profile, &self.config.planner)?;
        tracing::info!(job = %job.id, frames = plan.frames, chunks = plan.chunks, rule = %plan.rule, "job planned");
        job.set_plan(&plan);
        {
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.probe_seconds = probe_started.elapsed().as_secs_f64();
            log.profile = profile;
            log.plan = Some(plan.clone());
        }

        job.set_state(JobState::Running);
        self.journal.save_snapshot(&job.id, job.snapshot()).await?;
        let video = &info.video;
        let time_base = ffmpeg_next::Rational::new(video.time_base.0, video.time_base.1);
        let template = ProcessChunkRequest {
            job_id: job.id.clone(),
            input_uri: input.to_string(),
            processor: Some(processor),
            encoder: spec.encoder.clone(),
            video_stream_index: video.stream_index as u32,
            time_base: Some(Rational {
                num: video.time_base.0,
                den: video.time_base.1,
            }),
            frame_rate: Some(Rational {
                num: video.frame_rate.0,
                den: video.frame_rate.1,
            }),
            task: spec.task,
            top_k: spec.top_k,
            fragmented_input: !video.fragments.is_empty(),
            pts_offset: video.timeline_shift(),
            frame_timestamps: FrameTimestamps::from(video.timestamps).into(),
            passthrough_streams: info
                .audio
                .iter()
                .chain(&info.subtitles)
                .map(|copied| copied.stream_index as u32)
                .collect(),
            ..ProcessChunkRequest::default()
        };
        let context = DispatchContext {
            fleet: self.fleet.clone(),
            storage: io.scratch.clone(),
            config: self.config.dispatch.clone(),
            blocking: self.blocking.clone(),
            metrics: self.metrics.clone(),
        };
        let peers = Arc::new(ChunkPeers::new(plan.ranges.len()));
        let work: Vec<ChunkWork> = plan
            .ranges
            .iter()
            .map(|range| ChunkWork {
                job: job.clone(),
                request: template.clone(),
                range: *range,
                scratch: scratch.clone(),
                time_base,
                lines: validate::is_infer(spec),
                last: range.index + 1 == plan.chunks,
                peers: peers.clone(),
                run,
            })
            .collect();
        let mut accepted: Vec<AcceptedChunk> =
            futures::future::try_join_all(work.iter().map(|work| async {
                let previous = trusted.iter().find(|c| c.range.index == work.range.index);
                let chunk = self.produce_chunk(&context, work, previous).await?;
                peers.finished(chunk.result.wall_seconds);
                job.chunk_done(work.range.index);
                log.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .accepted
                    .push(chunk.clone());
                Ok::<_, JobError>(chunk)
            }))
            .await?;
        accepted.sort_by_key(|chunk| chunk.range.index);

        job.stitching();
        let stitch_started = Instant::now();
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .stitch_started_seconds = job.accepted.elapsed().as_secs_f64();
        let chunks: Vec<ObjectUri> = accepted.iter().map(|c| c.output.clone()).collect();
        let stitched = async {
            if validate::is_infer(spec) {
                stitch::concatenate(&io.scratch, &io.output, &chunks, &output).await?;
            } else {
                let logs = accepted
                    .iter()
                    .filter_map(|c| c.packet_log.clone())
                    .collect();
                stitch_and_upload(io, &self.blocking, chunks, logs, input, info, &output).await?;
            }
            Ok::<_, JobError>(())
        };
        stitched
            .instrument(tracing::info_span!("stitch", chunks = accepted.len()))
            .await?;
        log.lock().unwrap_or_else(|p| p.into_inner()).stitch_seconds =
            stitch_started.elapsed().as_secs_f64();
        Ok(())
    }

    /// One chunk, accepted and in the journal: the one accepted before a restart when its
    /// objects pass the checks again, else dispatched; in a `chunk` span, the parent of its
    /// attempts.
    async fn produce_chunk(
        &self,
        context: &DispatchContext,
        work: &ChunkWork,
        previous: Option<&AcceptedChunk>,
    ) -> Result<AcceptedChunk, JobError> {
        let index = work.range.index;
        let span = tracing::info_span!(
            "chunk",
            chunk = index,
            frames = work.range.end_frame - work.range.start_frame,
            resumed = tracing::field::Empty
        );
        self.reuse_or_dispatch(context, work, previous)
            .instrument(span)
            .await
    }

    /// [`produce_chunk`](Self::produce_chunk) inside the chunk's span.
    async fn reuse_or_dispatch(
        &self,
        context: &DispatchContext,
        work: &ChunkWork,
        previous: Option<&AcceptedChunk>,
    ) -> Result<AcceptedChunk, JobError> {
        let index = work.range.index;
        if let Some(previous) = previous {
            match dispatch::recheck(context, work, previous).await {
                Ok(()) => {
                    tracing::Span::current().record("resumed", true);
                    tracing::info!(job = %work.job.id, chunk = index, "chunk accepted before the restart passed its checks again; not recomputed");
                    return Ok(AcceptedChunk {
                        resumed: true,
                        timeline: ChunkTimeline::default(),
                        ..previous.clone()
                    });
                }
                Err(reason) => {
                    tracing::warn!(job = %work.job.id, chunk = index, %reason, "chunk accepted before the restart is not trusted; computing it again")
                }
            }
        }
        let chunk = dispatch::run_chunk(context, work).await?;
        self.journal.save_chunk(&work.job.id, chunk.clone()).await?;
        Ok(chunk)
    }
}

/// Probes the input on a blocking thread, under [`PROBE_DEADLINE`]; returns what it is and
/// its size in bytes. An object over `limits.max_input_bytes` is refused before any read.
async fn probe(
    io: &Storage,
    input: &ObjectUri,
    limits: &LimitsConfig,
    blocking: &TaskTracker,
) -> Result<(MediaInfo, u64), JobError> {
    let storage = io.clone();
    let uri = input.clone();
    let runtime = tokio::runtime::Handle::current();
    let max_bytes = limits.max_input_bytes;
    let probing = blocking.spawn_blocking(move || -> Result<(MediaInfo, u64), JobError> {
        let reader = storage
            .open_reader(&uri, runtime)?
            .with_block_bytes(media::INDEX_BLOCK_BYTES);
        let size = reader.size();
        if size > max_bytes {
            return Err(JobError::OverLimit(format!(
                "the input is {size} bytes; this orchestrator takes at most {max_bytes} \
                 (limits.max_input_bytes)"
            )));
        }
        Ok((media::probe(reader, uri.file_name())?, size))
    });
    match tokio::time::timeout(PROBE_DEADLINE, probing).await {
        Err(_) => Err(JobError::ProbeTimeout(PROBE_DEADLINE.as_secs())),
        Ok(Err(e)) => Err(JobError::Internal(format!("the probe crashed: {e}"))),
        Ok(Ok(result)) => result,
    }
}

/// Fails a probed input that is longer, has more frames or bigger pictures than the
/// limits allow, naming the limit.
fn check_limits(info: &MediaInfo, size: u64, limits: &LimitsConfig) -> Result<(), JobError> {
    let video = &info.video;
    let frames = video.frames.len() as u64;
    let duration = video.duration_seconds();
    let pixels = u64::from(video.width) * u64::from(video.height);
    let over = |what: String, key: &str| {
        Err(JobError::OverLimit(format!(
            "the input {what}; raise {key} to accept it"
        )))
    };
    if frames > limits.max_frames {
        return over(
            format!("has {frames} frames, more than {}", limits.max_frames),
            "limits.max_frames",
        );
    }
    if duration > limits.max_duration_seconds {
        return over(
            format!(
                "lasts {duration:.1} s, more than {} s",
                limits.max_duration_seconds
            ),
            "limits.max_duration_seconds",
        );
    }
    if pixels > limits.max_pixels {
        return over(
            format!(
                "is {}x{} ({pixels} pixels), more than {} pixels",
                video.width, video.height, limits.max_pixels
            ),
            "limits.max_pixels",
        );
    }
    tracing::debug!(frames, duration, pixels, size, "input within limits");
    Ok(())
}

/// Stitches into a local temporary file on a blocking thread, then uploads it.
async fn stitch_and_upload(
    io: &JobIo,
    blocking: &TaskTracker,
    chunks: Vec<ObjectUri>,
    packet_logs: Vec<ObjectUri>,
    input: ObjectUri,
    info: Arc<MediaInfo>,
    output: &ObjectUri,
) -> Result<(), JobError> {
    let directory = tempfile::Builder::new()
        .prefix("framefleet-stitch-")
        .tempdir()
        .map_err(|e| JobError::Internal(format!("cannot create a temporary directory: {e}")))?;
    let extension = Path::new(output.file_name())
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("mp4")
        .to_string();
    let local = directory.path().join(format!("output.{extension}"));
    let sources = stitch::Sources {
        input: io.input.clone(),
        chunks: io.scratch.clone(),
        runtime: tokio::runtime::Handle::current(),
    };
    let target = local.clone();
    let parts = stitch::Parts {
        chunks,
        packet_logs,
        input,
    };
    blocking
        .spawn_blocking(move || stitch::stitch(&sources, &parts, &info, &target))
        .await
        .map_err(|e| JobError::Internal(format!("the stitch crashed: {e}")))??;
    io.output.upload_file(&local, output).await?;
    Ok(())
}

/// A job's storage traffic, counted apart by what it touches.
pub struct JobIo {
    /// Reads of the job's input (probe, the stitch's look at its headers).
    pub input: Storage,
    /// Chunk objects: checks, stitch reads, deletes.
    pub scratch: Storage,
    /// The output upload.
    pub output: Storage,
}

impl JobIo {
    fn new(storage: &Storage) -> Self {
        Self {
            input: storage.counted(),
            scratch: storage.counted(),
            output: storage.counted(),
        }
    }
}
