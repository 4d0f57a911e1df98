//! Running one job end to end: each of its inputs probed and planned (a few at a time),
//! every input's chunks dispatched concurrently, numbered one after the other in the job's
//! order and sharing the fleet's queue (the first chunk that fails for good fails the job
//! and stops the others), each input stitched into its output, and one report.
//! An input that cannot be read fails the job with that input named, or, when the job
//! asks (`skip_unreadable_inputs`), is reported as skipped while the others finish. Whatever happens, success, failure or cancel, the job's temporary chunk
//! objects are deleted before its terminal state is published, and exactly one terminal
//! state is published.
//!
//! Every promise is in the [`job store`](crate::jobs::store) before it is made: a chunk
//! before it counts as done, an end before watchers see it. A job resumed after a restart
//! is probed and planned again; each chunk recorded as accepted is trusted once its objects
//! pass the same checks again ([`ChunkChecks::recheck`]) and is not recomputed, the rest
//! are dispatched, and the stitch runs. A shutdown leaves running jobs in the job store for
//! the next start (with a memory-only store they fail instead).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use framefleet_common::codec::VideoEncoder;
use framefleet_common::config::Config;
use framefleet_common::media::MediaInfo;
use framefleet_common::proto::{
    ChosenFrame, ChunkRange, FrameTimestamps, JobState, Plan, ProcessChunkRequest, Rational,
};
use framefleet_common::storage::{ObjectUri, Storage, StorageError};

use crate::dispatch::acceptance::{ChunkChecks, Expected};
use crate::dispatch::encoder_choice;
use crate::dispatch::straggler::ChunkPeers;
use crate::dispatch::{self, ChunkWork, DispatchContext, DispatchError};
use crate::fleet::{Fleet, FleetOffer};
use crate::jobs::accepted::{AcceptedChunk, FinishedChunk};
use crate::jobs::io::JobIo;
use crate::jobs::record::JobRecord;
use crate::jobs::run_log::InputRun;
use crate::jobs::store::{JobStore, JobStoreError};
use crate::jobs::validate::{InvalidSpec, ValidJob};
use crate::metrics::OrchestratorMetrics;
use crate::notify::Notifier;
use crate::planning::history::CostHistory;
use crate::planning::planner::PlanError;
use crate::planning::samples::JobCosts;
use crate::planning::{self, Target};
use crate::report;
use crate::run::admission::Admission;
use crate::run::probe::{self, InputError};
use crate::stitch::{self, carry, StitchError};
use framefleet_common::storage::patience;

/// Longest a shutdown waits for FFmpeg work on blocking threads (a probe, a chunk check, a
/// stitch) to end.
const BLOCKING_DRAIN: Duration = Duration::from_secs(30);

/// After a failure or cancel, chunk objects are deleted again after this grace, in case a
/// worker was finishing an upload as it was told to stop.
const CLEANUP_GRACE: Duration = Duration::from_millis(1500);

/// How often a running job's progress learns what is ahead of it in the fleet's queue.
const QUEUE_CHECK: Duration = Duration::from_secs(1);

/// Inputs of one job probed at once.
const PROBES_AT_ONCE: usize = 4;

/// Why a job failed, in words a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The input or output storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The input cannot be processed.
    #[error(transparent)]
    Input(#[from] InputError),
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
    Store(#[from] JobStoreError),
    /// A task of the orchestrator crashed.
    #[error("internal error: {0}")]
    Internal(String),
    /// One input of a job of several failed it.
    #[error("input {number} of {count} ({input}): {source}")]
    OfInput {
        /// Its position in the job's list, from 1.
        number: u32,
        /// Inputs in the job.
        count: usize,
        /// Its URI.
        input: String,
        /// What went wrong with it.
        source: Box<JobError>,
    },
    /// A resumed job no longer passes the submission checks.
    #[error(
        "{0}; the job was accepted under an earlier configuration and cannot resume under this one"
    )]
    Refused(InvalidSpec),
    /// Every input of a job that skips unreadable ones was unreadable.
    #[error("none of the job's {0} inputs could be read; the report says why for each")]
    NoReadableInput(usize),
}

/// What running jobs needs, shared by every job's task.
pub struct JobRunner {
    /// Configuration the orchestrator was started with.
    pub config: Arc<Config>,
    /// Storage client.
    pub storage: Storage,
    /// Registered workers.
    pub fleet: Arc<Fleet>,
    /// Counters and gauges for the Prometheus endpoint.
    pub metrics: Arc<OrchestratorMetrics>,
    /// Where every promise is recorded.
    pub store: JobStore,
    /// What jobs cost, which `auto` plans from; every run adds to it.
    pub history: CostHistory,
    /// Which queued job runs next, `limits.max_running_jobs` at once.
    pub admission: Arc<Admission>,
    /// Sends the event of a job that asked for one when it ends.
    pub notifier: Arc<Notifier>,
    /// Fires when the orchestrator stops.
    pub shutdown: CancellationToken,
    /// The jobs' tasks.
    pub tasks: TaskTracker,
    /// FFmpeg work on blocking threads (probe, chunk checks, stitch): a shutdown waits for
    /// it, so none of it outlives the runtime it blocks on.
    pub blocking: TaskTracker,
}

/// A probed, planned input, ready for its chunks.
struct Planned {
    info: Arc<MediaInfo>,
    /// Its chunks numbered in the job's numbering (after the earlier inputs' chunks).
    plan: Plan,
    /// The frames an infer job chose (empty: every frame).
    chosen: Vec<ChosenFrame>,
    /// A web input's size and validator as the probe read them.
    input_version: Option<(u64, String)>,
    /// The encoder of the job's run (`None` for infer).
    encoder: Option<VideoEncoder>,
}

impl JobRunner {
    /// Runs `job` on a task of its own, in a `job` span: the root of the job's trace, which
    /// the spans of its chunks on the workers join. `trusted` are chunks accepted before a
    /// restart, reused once they pass their checks again.
    pub fn start(self: &Arc<Self>, job: Arc<JobRecord>, trusted: Vec<AcceptedChunk>) {
        let first = &job.request.inputs[0];
        let span = tracing::info_span!("job", job = %job.id, inputs = job.request.inputs.len(), input = %first.input, output = %first.output);
        self.tasks
            .spawn(self.clone().run_job(job, trusted).instrument(span));
    }

    /// Waits for every job's task to end (each stops, or stays in the store, on
    /// shutdown), for their blocking work, and for the deliveries of their events to stop
    /// (those not delivered stay in the store).
    pub async fn drain(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.notifier.drain().await;
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

    /// Ends a resumed job that no longer passes the submission checks under this
    /// configuration (a root or bucket since removed, a limit since lowered): it fails with
    /// `refusal`, recorded in the job store, without running again.
    pub fn refuse(self: &Arc<Self>, job: Arc<JobRecord>, refusal: InvalidSpec) {
        let span = tracing::info_span!("job", job = %job.id);
        let runner = self.clone();
        let ending = async move {
            let inputs = InputRun::for_job(&job.request, &runner.storage);
            runner
                .end_job(&job, &inputs, Err(JobError::Refused(refusal)))
                .await;
        };
        self.tasks.spawn(ending.instrument(span));
    }

    async fn run_job(self: Arc<Self>, job: Arc<JobRecord>, trusted: Vec<AcceptedChunk>) {
        let inputs = InputRun::for_job(&job.request, &self.storage);
        let run = async {
            // Queued until its turn among `limits.max_running_jobs`.
            let _admitted = self.admission.enter(&job).await;
            tokio::select! {
                result = self.execute(&job, &inputs, trusted) => result,
                never = self.follow_queue(&job) => match never {},
            }
        };
        let outcome = tokio::select! {
            result = run => result,
            _ = job.cancel.cancelled() => Err(JobError::Cancelled),
            _ = self.shutdown.cancelled() => Err(JobError::ShuttingDown),
        };
        if matches!(outcome, Err(JobError::ShuttingDown)) && self.store.is_durable() {
            tracing::info!(job = %job.id, "the orchestrator is stopping; the job stays in the job store and resumes at the next start");
            return;
        }
        self.end_job(&job, &inputs, outcome).await;
    }

    /// Keeps `job`'s progress saying what the fleet's queue serves before its next waiting
    /// chunk, once a second, for as long as it runs (the queue is asked only while one of
    /// its chunks waits).
    async fn follow_queue(&self, job: &JobRecord) -> std::convert::Infallible {
        let mut every = tokio::time::interval(QUEUE_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let ahead = if job.has_waiting_chunk() {
                self.fleet.chunks_ahead(job.seq).unwrap_or(0)
            } else {
                0
            };
            job.set_chunks_ahead(ahead);
        }
    }

    /// Ends `job` with `outcome`: its scratch cleaned up, its report built, its costs
    /// learned, its end recorded in the job store and published.
    async fn end_job(&self, job: &JobRecord, inputs: &[InputRun], outcome: Result<(), JobError>) {
        if let Ok(scratch) = job.request.scratch(&job.id) {
            clean_up(&inputs[0].io.scratch, &scratch, outcome.is_err()).await;
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
        let report = report::build(job, inputs, &self.config.pricing, state);
        self.learn(job, inputs, report.totals().wall_seconds, outcome.is_ok())
            .await;
        self.metrics.job_ended(state, report.totals().gpu_seconds);
        let ended = job.ending(state, error);
        if let Some(url) = &job.request.notify {
            let event = Notifier::event(&ended, Some(&report), url.as_str());
            self.notifier.send(event).await;
        }
        if let Err(error) = self
            .store
            .finish(&job.id, ended.clone(), Some(report.clone()))
            .await
        {
            tracing::error!(job = %job.id, %error, "the job's end could not be recorded; a restart will run it again");
        }
        job.finish(ended, Some(report));
    }

    /// Adds what the run measured to the cost history: every input's chunks, and the
    /// job's own fixed costs when it is one input that got through its stitch (a job of
    /// several inputs probes and stitches each, which is no one job's cost).
    async fn learn(&self, job: &JobRecord, inputs: &[InputRun], wall: f64, succeeded: bool) {
        let whole = succeeded && !job.request.is_batch();
        for input in inputs {
            let costs = JobCosts::from_run(&job.request, &input.log(), wall, whole);
            if let Err(error) = self.history.record(costs).await {
                tracing::warn!(job = %job.id, %error, "the job's costs could not be added to the cost history");
            }
        }
    }

    async fn execute(
        &self,
        job: &Arc<JobRecord>,
        inputs: &[InputRun],
        trusted: Vec<AcceptedChunk>,
    ) -> Result<(), JobError> {
        let run = self.store.begin_run(&job.id).await?;
        for input in inputs {
            input
                .io
                .output
                .check_writable(&input.pair.output)
                .await
                .map_err(|error| named(job, input, error.into()))?;
        }
        let encoder = encoder_choice::for_run(&job.request, &trusted, &self.fleet);
        job.set_encoder(encoder);
        if let Some(encoder) = encoder {
            tracing::info!(job = %job.id, %encoder, "the job's chunks are encoded with this encoder");
        }
        let plans = self.plan_inputs(job, inputs, encoder).await?;
        job.set_plan(&job_plan(&plans));
        job.set_state(JobState::Running);
        self.store.save_snapshot(&job.id, job.snapshot()).await?;
        let accepted = self
            .produce_chunks(job, inputs, &plans, run, &trusted)
            .await?;
        job.stitching();
        for ((input, planned), chunks) in inputs.iter().zip(&plans).zip(&accepted) {
            if let Some(planned) = planned {
                self.stitch(job, input, planned.info.clone(), chunks)
                    .await
                    .map_err(|error| named(job, input, error))?;
            }
        }
        Ok(())
    }

    /// Probes and plans every input, [`PROBES_AT_ONCE`] at a time, and numbers their
    /// chunks one after the other in the job's order; `None` for an input skipped as
    /// unreadable.
    async fn plan_inputs(
        &self,
        job: &JobRecord,
        inputs: &[InputRun],
        encoder: Option<VideoEncoder>,
    ) -> Result<Vec<Option<Planned>>, JobError> {
        job.set_state(JobState::Probing);
        let probes: Vec<_> = inputs
            .iter()
            .map(|input| self.probe_and_plan(job, input, encoder))
            .collect();
        let outcomes: Vec<Result<Planned, JobError>> = futures::stream::iter(probes)
            .buffered(PROBES_AT_ONCE)
            .collect()
            .await;
        let mut plans = Vec::with_capacity(inputs.len());
        let mut next_chunk = 0;
        for (input, outcome) in inputs.iter().zip(outcomes) {
            match outcome {
                Ok(mut planned) => {
                    for range in &mut planned.plan.ranges {
                        range.index += next_chunk;
                    }
                    next_chunk += planned.plan.chunks;
                    input.log().plan = Some(planned.plan.clone());
                    plans.push(Some(planned));
                }
                Err(error) => {
                    input.log().error = Some(error.to_string());
                    if !(job.request.skip_unreadable_inputs && unreadable(&error)) {
                        return Err(named(job, input, error));
                    }
                    tracing::warn!(job = %job.id, input = %input.pair.input, %error, "input unreadable; skipped as the job asks");
                    input.log().skipped = true;
                    plans.push(None);
                }
            }
        }
        if plans.iter().all(Option::is_none) {
            return Err(JobError::NoReadableInput(inputs.len()));
        }
        Ok(plans)
    }

    /// How long a job waits out a storage outage (`orchestrator.storage_patience_seconds`).
    fn patience(&self) -> Duration {
        Duration::from_secs_f64(self.config.orchestrator.storage_patience_seconds)
    }

    /// Probes one input, decides what of it the output carries, and plans its chunks
    /// (numbered from 0) to be encoded with `encoder`.
    async fn probe_and_plan(
        &self,
        job: &JobRecord,
        input: &InputRun,
        encoder: Option<VideoEncoder>,
    ) -> Result<Planned, JobError> {
        let request = &job.request;
        let io = &input.io;
        let probe_started = Instant::now();
        input.log().probe_started_seconds = job.accepted.elapsed().as_secs_f64();
        let (mut info, input_size) = patience::through_outages(
            self.patience(),
            "the probe",
            |error| matches!(error, InputError::Storage(e) if e.is_transient()),
            || {
                probe::probe_within_limits(
                    &io.input,
                    &input.pair.input,
                    &self.config.limits,
                    &self.blocking,
                    job.cancel.clone(),
                )
                .instrument(tracing::info_span!("probe"))
            },
        )
        .await?;
        probe::check_output_size(&info, request.processor.scale, &self.config.limits)?;
        if request.is_infer() {
            info.audio.clear();
            info.subtitles.clear();
            info.attachments.clear();
        } else {
            input.log().notes = carry_into_output(job, &input.pair.output, &mut info)?;
        }
        let probe_seconds = probe_started.elapsed().as_secs_f64();
        let offer = FleetOffer {
            encoder,
            fair_slots: self.fleet.fair_slots(request.priority),
            ..self
                .fleet
                .offer(&request.processor.model, request.encoder())
        };
        let planned = planning::plan_job(
            &self.config,
            &self.history,
            offer,
            &Target::default(),
            request,
            &info.video,
            probe_seconds,
        )
        .await?
        .planned;
        let (plan, chosen) = (planned.plan, planned.chosen);
        tracing::info!(job = %job.id, input = %input.pair.input, frames = plan.frames, chunks = plan.chunks, rule = %plan.rule, "input planned");
        {
            let mut log = input.log();
            log.input_size_bytes = input_size;
            log.input_pixels = u64::from(info.video.width) * u64::from(info.video.height);
            log.probe_seconds = probe_seconds;
            log.profile = planned.profile;
        }
        Ok(Planned {
            info: Arc::new(info),
            plan,
            chosen,
            input_version: io.input.web_version(&input.pair.input),
            encoder,
        })
    }

    /// Every chunk of every planned input, accepted and in the job store: per input (none
    /// for a skipped one), in index order.
    async fn produce_chunks(
        &self,
        job: &Arc<JobRecord>,
        inputs: &[InputRun],
        plans: &[Option<Planned>],
        run: u32,
        trusted: &[AcceptedChunk],
    ) -> Result<Vec<Vec<FinishedChunk>>, JobError> {
        let per_input = inputs.iter().zip(plans).map(|(input, planned)| async move {
            let Some(planned) = planned else {
                return Ok(Vec::new());
            };
            self.produce_input_chunks(job, input, planned, run, trusted)
                .await
                .map_err(|error| named(job, input, error))
        });
        futures::future::try_join_all(per_input).await
    }

    /// Every chunk of one input's plan, accepted and in the job store, in index order.
    async fn produce_input_chunks(
        &self,
        job: &Arc<JobRecord>,
        input: &InputRun,
        planned: &Planned,
        run: u32,
        trusted: &[AcceptedChunk],
    ) -> Result<Vec<FinishedChunk>, JobError> {
        let context = DispatchContext {
            fleet: self.fleet.clone(),
            checks: ChunkChecks {
                storage: input.io.scratch.clone(),
                blocking: self.blocking.clone(),
                patience: self.patience(),
            },
            config: self.config.dispatch.clone(),
            metrics: self.metrics.clone(),
        };
        let plan = &planned.plan;
        let peers = Arc::new(ChunkPeers::new(plan.ranges.len()));
        let work = chunk_work(job, input, planned, run, &peers)?;
        let mut accepted = futures::future::try_join_all(work.iter().map(|work| async {
            let previous = trusted.iter().find(|c| c.range.index == work.index());
            let finished = self.produce_chunk(&context, work, previous).await?;
            peers.finished(finished.chunk.result.wall_seconds);
            self.fleet.chunk_accepted(
                &finished.chunk.result.worker_name,
                &job.request.processor.model,
            );
            job.chunk_done(work.index());
            input.log().accepted.push(finished.clone());
            Ok::<_, JobError>(finished)
        }))
        .await?;
        accepted.sort_by_key(|finished| finished.chunk.range.index);
        Ok(accepted)
    }

    /// One chunk, accepted and in the job store: the one accepted before a restart when
    /// its objects pass the checks again, else dispatched; in a `chunk` span, the parent of
    /// its attempts.
    async fn produce_chunk(
        &self,
        context: &DispatchContext,
        work: &ChunkWork,
        previous: Option<&AcceptedChunk>,
    ) -> Result<FinishedChunk, JobError> {
        let range = work.expected.range;
        let span = tracing::info_span!(
            "chunk",
            chunk = range.index,
            frames = range.frame_count(),
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
    ) -> Result<FinishedChunk, JobError> {
        let index = work.index();
        if let Some(previous) = previous {
            match context.checks.recheck(&work.expected, previous).await {
                Ok(()) => {
                    tracing::Span::current().record("resumed", true);
                    tracing::info!(job = %work.job.id, chunk = index, "chunk accepted before the restart passed its checks again; not recomputed");
                    return Ok(FinishedChunk::reused(previous.clone()));
                }
                Err(reason) => {
                    tracing::warn!(job = %work.job.id, chunk = index, %reason, "chunk accepted before the restart is not trusted; computing it again")
                }
            }
        }
        let finished = dispatch::run_chunk(context, work).await?;
        self.store
            .save_chunk(&work.job.id, finished.chunk.clone())
            .await?;
        Ok(finished)
    }

    /// Joins one input's accepted chunks into its output (JSON Lines concatenated, video
    /// stitched with the input's copied streams) and uploads it.
    async fn stitch(
        &self,
        job: &JobRecord,
        input: &InputRun,
        info: Arc<MediaInfo>,
        accepted: &[FinishedChunk],
    ) -> Result<(), JobError> {
        let stitch_started = Instant::now();
        input.log().stitch_started_seconds = job.accepted.elapsed().as_secs_f64();
        patience::through_outages(self.patience(), "the stitch", storage_unreachable, || {
            self.stitch_once(&job.request, input, &info, accepted)
                .instrument(tracing::info_span!(
                    "stitch",
                    input = input.index,
                    chunks = accepted.len()
                ))
        })
        .await?;
        input.log().stitch_seconds = stitch_started.elapsed().as_secs_f64();
        Ok(())
    }

    /// One try at the stitch: the joined output is written whole or not at all, so a try
    /// may follow a failed one.
    async fn stitch_once(
        &self,
        request: &ValidJob,
        input: &InputRun,
        info: &Arc<MediaInfo>,
        accepted: &[FinishedChunk],
    ) -> Result<(), JobError> {
        let io = &input.io;
        let output = &input.pair.output;
        let chunks: Vec<ObjectUri> = accepted.iter().map(|f| f.chunk.output.clone()).collect();
        if request.is_infer() {
            stitch::concatenate(&io.scratch, &io.output, &chunks, output).await?;
            return Ok(());
        }
        let parts = stitch::Parts {
            packet_logs: accepted
                .iter()
                .filter_map(|f| f.chunk.packet_log.clone())
                .collect(),
            chunks,
            input: input.pair.input.clone(),
        };
        stitch_and_upload(io, &self.blocking, parts, info.clone(), output).await
    }
}

/// True when `error` is storage that could not be reached (a try later may succeed), not
/// a verdict on the chunks or the output.
fn storage_unreachable(error: &JobError) -> bool {
    match error {
        JobError::Storage(error) | JobError::Stitch(StitchError::Storage(error)) => {
            error.is_transient()
        }
        _ => false,
    }
}

/// Decides which of the input's other streams the output carries (checking first that
/// its container can hold the audio) and returns the report's notes on what was dropped
/// or changed and on derived timestamps.
fn carry_into_output(
    job: &JobRecord,
    output: &ObjectUri,
    info: &mut MediaInfo,
) -> Result<Vec<String>, JobError> {
    let output = stitch::OutputContainer::for_name(output.file_name());
    output.check_audio(info)?;
    let carried = carry::plan(&output, info);
    for note in &carried.notes {
        tracing::info!(job = %job.id, "{note}");
    }
    info.subtitles = carried.subtitles;
    info.attachments = carried.attachments;
    let mut notes = carried.notes;
    notes.extend(stitch::timeline_note(&info.video));
    notes.extend(info.video.timestamps.report_note().map(str::to_string));
    Ok(notes)
}

/// The chunks of one planned input, each with its request and what it must hold.
fn chunk_work(
    job: &Arc<JobRecord>,
    input: &InputRun,
    planned: &Planned,
    run: u32,
    peers: &Arc<ChunkPeers>,
) -> Result<Vec<ChunkWork>, JobError> {
    let request = &job.request;
    let scratch = request.scratch(&job.id)?;
    let mut template = chunk_request(job, &input.pair.input, planned);
    if let Some((size, validator)) = &planned.input_version {
        template.input_size = *size;
        template.input_validator = validator.clone();
    }
    let video = &planned.info.video;
    let time_base = ffmpeg_next::Rational::new(video.time_base.0, video.time_base.1);
    let plan = &planned.plan;
    let last = plan.ranges.last().map(|r| r.index);
    Ok(plan
        .ranges
        .iter()
        .map(|range| ChunkWork {
            job: job.clone(),
            expected: Expected {
                range: *range,
                time_base,
                pts_offset: template.pts_offset,
                task: request.task,
                has_packet_log: !template.passthrough_streams.is_empty(),
                encoder: planned.encoder,
            },
            request: ProcessChunkRequest {
                chosen: chosen_in(&planned.chosen, range),
                ..template.clone()
            },
            scratch: scratch.clone(),
            last: Some(range.index) == last,
            peers: peers.clone(),
            run,
        })
        .collect())
}

/// The chosen frames within `range`'s span.
fn chosen_in(chosen: &[ChosenFrame], range: &ChunkRange) -> Vec<ChosenFrame> {
    let from = chosen.partition_point(|c| c.index < range.start_frame);
    let to = chosen.partition_point(|c| c.index < range.end_frame);
    chosen[from..to].to_vec()
}

/// What every chunk of one input is sent, before its range, attempt and objects are
/// filled: the job's processor and the run's encoder.
fn chunk_request(job: &JobRecord, input: &ObjectUri, planned: &Planned) -> ProcessChunkRequest {
    let request = &job.request;
    let info = &planned.info;
    let video = &info.video;
    ProcessChunkRequest {
        job_id: job.id.clone(),
        input_uri: input.to_string(),
        processor: Some(request.processor.wire()),
        encoder: request.encoding.as_ref().map(|e| e.wire(planned.encoder)),
        video_stream_index: video.stream_index as u32,
        time_base: Some(Rational {
            num: video.time_base.0,
            den: video.time_base.1,
        }),
        frame_rate: Some(Rational {
            num: video.frame_rate.0,
            den: video.frame_rate.1,
        }),
        task: request.task.wire() as i32,
        top_k: request.top_k,
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
    }
}

/// Deletes a job's temporary objects under `scratch`; after a failure twice, the second
/// time after [`CLEANUP_GRACE`].
async fn clean_up(io: &Storage, scratch: &ObjectUri, after_failure: bool) {
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

/// Stitches into a local temporary file on a blocking thread, then uploads it.
async fn stitch_and_upload(
    io: &JobIo,
    blocking: &TaskTracker,
    parts: stitch::Parts,
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
    blocking
        .spawn_blocking(move || stitch::stitch(&sources, &parts, &info, &target))
        .await
        .map_err(|e| JobError::Internal(format!("the stitch crashed: {e}")))??;
    io.output.upload_file(&local, output).await?;
    Ok(())
}

/// True when `error` says an input cannot be read or processed (what a job that skips
/// unreadable inputs skips), not that the fleet or the orchestrator failed.
fn unreadable(error: &JobError) -> bool {
    matches!(error, JobError::Input(_) | JobError::Storage(_))
}

/// `error`, naming `input` when the job has several.
fn named(job: &JobRecord, input: &InputRun, error: JobError) -> JobError {
    if !job.request.is_batch() || matches!(error, JobError::OfInput { .. }) {
        return error;
    }
    JobError::OfInput {
        number: input.index + 1,
        count: job.request.inputs.len(),
        input: input.pair.input.to_string(),
        source: Box::new(error),
    }
}

/// The plan the job's progress follows: its one input's plan, or every input's chunks in
/// the job's numbering with the frames and seconds added up.
fn job_plan(plans: &[Option<Planned>]) -> Plan {
    let planned: Vec<&Plan> = plans.iter().flatten().map(|p| &p.plan).collect();
    if let ([only], 1) = (planned.as_slice(), plans.len()) {
        return (*only).clone();
    }
    let mut plan = Plan {
        rule: format!("{} inputs, each planned on its own", planned.len()),
        kind: planned.first().map(|p| p.kind.clone()).unwrap_or_default(),
        ..Plan::default()
    };
    for own in planned {
        plan.chunks += own.chunks;
        plan.frames += own.frames;
        plan.duration_seconds += own.duration_seconds;
        plan.ranges.extend_from_slice(&own.ranges);
    }
    plan
}
