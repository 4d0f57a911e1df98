//! Dispatch of one chunk to acceptance or to its final failure. It is made of:
//!
//! - [`encoder_choice`]: the one encoder every chunk of a run is written with;
//! - [`retry`]: the retry loop (exponential backoff with jitter, other workers, up to
//!   `dispatch.max_attempts`; permanent errors stop at once);
//! - [`race`]: each try, raced against a backup attempt when it turns into a straggler;
//! - one attempt (here): a slot from the [`fleet`](crate::fleet), the chunk's objects named
//!   by run and attempt, the chunk streamed to the worker ([`stream`]), and its objects
//!   checked by [`acceptance`] before it counts; [`straggler`] says when a try is slow
//!   enough to race a backup.
//!
//! Every wait has a deadline: the slot (no worker registered for `worker_wait_seconds`),
//! the call, and each event of the stream (`event_timeout_seconds`).

pub mod acceptance;
pub mod encoder_choice;
mod race;
mod retry;
pub mod straggler;
mod stream;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use framefleet_common::config::DispatchConfig;
use framefleet_common::proto::ProcessChunkRequest;
use framefleet_common::storage::ObjectUri;

use crate::fleet::{AcquireError, Fleet, Ticket};
use crate::jobs::accepted::{AcceptedChunk, ChunkTimeline, ChunkTiming, FinishedChunk};
use crate::jobs::record::JobRecord;
use crate::jobs::validate::JobTask;
use crate::metrics::{AttemptOutcome, OrchestratorMetrics};
use acceptance::{ChunkChecks, Expected};
use race::AttemptClock;
use retry::AttemptError;
use straggler::ChunkPeers;
use stream::StreamError;

/// A chunk that could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Every attempt failed.
    #[error("chunk {index} failed after {attempts} attempts; last error: {last}")]
    Exhausted {
        /// Chunk index.
        index: u32,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: String,
    },
    /// The worker said the request cannot succeed anywhere.
    #[error("chunk {index} cannot be processed: {message}")]
    Permanent {
        /// Chunk index.
        index: u32,
        /// The worker's message.
        message: String,
    },
    /// No slot could be had.
    #[error(transparent)]
    NoSlot(#[from] AcquireError),
}

/// What dispatch needs from the orchestrator.
pub struct DispatchContext {
    /// The workers.
    pub fleet: Arc<Fleet>,
    /// The acceptance checks, reading through the job's scratch storage.
    pub checks: ChunkChecks,
    /// Retry and deadline settings.
    pub config: DispatchConfig,
    /// Where attempts are counted.
    pub metrics: Arc<OrchestratorMetrics>,
}

/// One chunk of a job, ready to send.
pub struct ChunkWork {
    /// The job, for progress and priority.
    pub job: Arc<JobRecord>,
    /// The request without attempt number and output (filled per attempt).
    pub request: ProcessChunkRequest,
    /// What the chunk must hold to be accepted (its range among it).
    pub expected: Expected,
    /// The job's scratch prefix; chunk objects go under `chunks/`.
    pub scratch: ObjectUri,
    /// True for the job's last chunk (its audio span runs to the end of the input).
    pub last: bool,
    /// How long the job's other chunks took, for straggler detection.
    pub peers: Arc<ChunkPeers>,
    /// Which start of the job this is (1 for the first orchestrator to run it, then one
    /// more per restart): it names the chunk objects, so an attempt from before a restart
    /// that is still uploading never writes over one from after.
    pub run: u32,
}

impl ChunkWork {
    /// The chunk's index in the plan.
    pub fn index(&self) -> u32 {
        self.expected.range.index
    }

    /// Where attempt `attempt` writes its file of kind `extension`.
    fn object(&self, attempt: u32, extension: &str) -> Result<ObjectUri, AttemptError> {
        let name = format!(
            "chunks/{:05}-r{}-a{attempt}.{extension}",
            self.index(),
            self.run
        );
        self.scratch
            .join(&name)
            .map_err(|e| AttemptError::Permanent(e.to_string()))
    }
}

/// Runs a chunk to acceptance or to its final failure.
pub async fn run_chunk(
    context: &DispatchContext,
    work: &ChunkWork,
) -> Result<FinishedChunk, DispatchError> {
    let straggling = |elapsed| work.peers.is_straggler(elapsed, &context.config);
    let retried = retry::until_accepted(&context.config, work.index(), |attempt, avoid| {
        race::with_backup(
            attempt,
            avoid,
            |attempt, avoid, clock| attempt_counted(context, work, attempt, avoid, clock),
            straggling,
        )
    })
    .await?;
    let mut finished = retried.value;
    finished.chunk.attempts = retried.attempts;
    finished.chunk.wasted_gpu_seconds = retried.wasted_gpu_seconds;
    finished.failures = retried.failures;
    Ok(finished)
}

/// One attempt in an `attempt` span (which names the worker once it has one), counted in
/// the metrics when it ends.
async fn attempt_counted(
    context: &DispatchContext,
    work: &ChunkWork,
    attempt: u32,
    avoid: HashSet<String>,
    clock: Arc<AttemptClock>,
) -> Result<FinishedChunk, AttemptError> {
    let span = tracing::info_span!("attempt", attempt, worker = tracing::field::Empty);
    let result = attempt_once(context, work, attempt, avoid, &clock)
        .instrument(span)
        .await;
    let metrics = &context.metrics;
    match &result {
        Ok(finished) => {
            metrics.attempt_ended(AttemptOutcome::Accepted, finished.chunk.result.gpu_seconds)
        }
        Err(AttemptError::Retry { .. } | AttemptError::Permanent(_)) => {
            metrics.attempt_ended(AttemptOutcome::Failed, 0.0)
        }
        Err(AttemptError::NoSlot(_)) => {}
    }
    result
}

async fn attempt_once(
    context: &DispatchContext,
    work: &ChunkWork,
    attempt: u32,
    avoid: HashSet<String>,
    clock: &AttemptClock,
) -> Result<FinishedChunk, AttemptError> {
    let range = work.expected.range;
    let ticket = Ticket {
        job: work.job.seq,
        job_id: Arc::from(work.job.id.as_str()),
        tenant: work.job.tenant.clone(),
        priority: work.job.request.priority,
        frames: range.frame_count(),
        index: range.index,
    };
    let wait = Duration::from_secs_f64(context.config.worker_wait_seconds);
    let grant = context
        .fleet
        .acquire(ticket, avoid, work.expected.encoder, wait)
        .await
        .map_err(AttemptError::NoSlot)?;
    clock.start(&grant.worker.id, grant.worker.gpus_per_slot);
    tracing::Span::current().record("worker", grant.worker.name.as_str());
    work.job.chunk_running(range.index, true);
    let output = work.object(
        attempt,
        match work.expected.task {
            JobTask::Infer => "jsonl",
            JobTask::Process => "mp4",
        },
    )?;
    let packet_log = if work.expected.has_packet_log {
        Some(work.object(attempt, "packets")?)
    } else {
        None
    };
    let mut request = work.request.clone();
    request.attempt = attempt;
    request.output_uri = output.to_string();
    request.range = Some(range);
    request.last_chunk = work.last;
    request.packet_log_uri = packet_log
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let started = Instant::now();
    let since_accepted = || work.job.accepted.elapsed().as_secs_f64();
    let started_seconds = since_accepted();
    let deadline = Duration::from_secs_f64(context.config.event_timeout_seconds);
    let streamed = tokio::select! {
        streamed = stream::process_chunk(
            &context.fleet,
            &grant,
            &work.job,
            range.index,
            request,
            deadline,
        ) => streamed,
        why = grant.worker.departure.left() => Err(StreamError::Retry(format!(
            "worker {} left the fleet mid-chunk: {why}",
            grant.worker.name
        ))),
    };
    let held_gpu_seconds = started.elapsed().as_secs_f64() * grant.worker.gpus_per_slot;
    let worker_id = grant.worker.id.clone();
    drop(grant);
    if streamed.is_err() {
        work.job.chunk_running(range.index, false);
    }
    let retry = |message: String| AttemptError::Retry {
        message,
        worker: Some(worker_id.clone()),
        held_gpu_seconds,
    };
    let result = match streamed {
        Ok(result) => result,
        Err(StreamError::Permanent(message)) => return Err(AttemptError::Permanent(message)),
        Err(StreamError::Retry(message)) => return Err(retry(message)),
    };
    work.expected
        .check_encoder(&result.encoder)
        .map_err(retry)?;
    let output_bytes = context
        .checks
        .check_patiently(&work.expected, &output, packet_log.as_ref())
        .await
        .map_err(retry)?;
    Ok(FinishedChunk {
        chunk: AcceptedChunk {
            range,
            result,
            output,
            output_bytes,
            packet_log,
            attempts: attempt,
            wasted_gpu_seconds: 0.0,
        },
        timing: ChunkTiming::Ran(ChunkTimeline {
            started_seconds,
            accepted_seconds: since_accepted(),
        }),
        failures: Vec::new(),
    })
}
