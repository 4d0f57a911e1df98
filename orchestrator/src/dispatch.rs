//! Dispatch of one chunk: get a slot, stream the chunk to its worker, accept the result only
//! after checking the chunk object holds exactly the range's frames at the range's
//! timestamps, and retry anything else on another worker with exponential backoff and
//! jitter (backon), up to `dispatch.max_attempts`.
//!
//! Every wait has a deadline: the slot (no worker registered for `worker_wait_seconds`),
//! the call, and each event of the stream (`event_timeout_seconds`). A job's last chunk
//! that runs far slower than its peers gets a backup attempt on another worker
//! ([`crate::straggler`]); the first to be accepted wins, the other is cancelled and its
//! GPU-seconds are counted as waste. Errors the worker
//! marks as permanent (`INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION`) fail the
//! chunk at once: retrying a bad request elsewhere cannot help.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use ffmpeg_next::Rescale;
use tokio_util::task::TaskTracker;
use tonic::Code;
use tracing::Instrument;

use framefleet_common::config::DispatchConfig;
use framefleet_common::media;
use framefleet_common::proto::{chunk_event, ChunkRange, ChunkResult, ProcessChunkRequest};
use framefleet_common::storage::{ObjectUri, Storage};
use framefleet_common::telemetry::propagation;

use crate::fleet::{AcquireError, Fleet, QueuePriority, SlotGrant};
use crate::job::JobRecord;
use crate::metrics::{AttemptOutcome, OrchestratorMetrics};
use crate::straggler::ChunkPeers;

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
    /// Storage, counting the orchestrator's own reads (chunk checks).
    pub storage: Storage,
    /// Retry and deadline settings.
    pub config: DispatchConfig,
    /// Where chunk checks run (FFmpeg on blocking threads), so a shutdown can wait for them.
    pub blocking: TaskTracker,
    /// Where attempts are counted.
    pub metrics: Arc<OrchestratorMetrics>,
}

/// One chunk of a job, ready to send.
pub struct ChunkWork {
    /// The job, for progress and priority.
    pub job: Arc<JobRecord>,
    /// The request without attempt number and output (filled per attempt).
    pub request: ProcessChunkRequest,
    /// The frames to produce.
    pub range: ChunkRange,
    /// The job's scratch prefix; chunk objects go under `chunks/`.
    pub scratch: ObjectUri,
    /// Time base of the input's video stream.
    pub time_base: ffmpeg_next::Rational,
    /// True for infer jobs: the chunk is JSON Lines, one line per frame.
    pub lines: bool,
    /// True for the job's last chunk (its audio span runs to the end of the input).
    pub last: bool,
    /// How long the job's other chunks took, for straggler detection.
    pub peers: Arc<ChunkPeers>,
    /// Which start of the job this is (1 for the first orchestrator to run it, then one
    /// more per restart): it names the chunk objects, so an attempt from before a restart
    /// that is still uploading never writes over one from after.
    pub run: u32,
}

/// A chunk whose object was checked and accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedChunk {
    /// The range it holds.
    pub range: ChunkRange,
    /// The worker's report of the accepted attempt.
    pub result: ChunkResult,
    /// The chunk object.
    pub output: ObjectUri,
    /// Its size in bytes when it was accepted.
    pub output_bytes: u64,
    /// The packet log of the input's copied streams (audio, subtitles) in the chunk's
    /// span, when the job copies any.
    pub packet_log: Option<ObjectUri>,
    /// Attempts made, this one included.
    pub attempts: u32,
    /// GPU-seconds of failed attempts, measured here.
    pub wasted_gpu_seconds: f64,
    /// Accepted before an orchestrator restart and reused after a re-check.
    pub resumed: bool,
    /// When, in this run, the accepted attempt held its slot.
    pub timeline: ChunkTimeline,
}

/// When an accepted attempt held its worker's slot, in seconds since the job was accepted
/// (by this orchestrator run): what the report's waterfall draws. Zero for chunks reused
/// after a restart, which held nothing in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChunkTimeline {
    /// The attempt got its slot and sent the chunk.
    pub started_seconds: f64,
    /// The chunk object passed its checks.
    pub accepted_seconds: f64,
}

enum AttemptError {
    Retry {
        message: String,
        worker: Option<String>,
        held_gpu_seconds: f64,
    },
    Permanent(String),
    NoSlot(AcquireError),
}

/// How often a running attempt is compared with its peers.
const STRAGGLER_CHECK: Duration = Duration::from_millis(500);

/// What an attempt holds once it has a slot: when it got it, on which worker, and how many
/// GPUs, so an attempt cancelled as the loser of a race can be charged as waste.
#[derive(Default)]
struct AttemptClock {
    held: std::sync::Mutex<Option<(Instant, String, u32)>>,
}

impl AttemptClock {
    fn start(&self, worker: &str, gpus: u32) {
        *self.lock() = Some((Instant::now(), worker.to_string(), gpus));
    }

    fn worker(&self) -> Option<String> {
        self.lock().as_ref().map(|(_, worker, _)| worker.clone())
    }

    fn held_gpu_seconds(&self) -> f64 {
        self.lock().as_ref().map_or(0.0, |(since, _, gpus)| {
            since.elapsed().as_secs_f64() * f64::from(*gpus)
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String, u32)>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The end of one attempt (and of its backup, when one was started).
struct Raced {
    result: Result<AcceptedChunk, AttemptError>,
    /// Attempt numbers used: 2 when a backup ran.
    attempts: u32,
    /// GPU-seconds of the cancelled loser.
    wasted_gpu_seconds: f64,
}

/// Runs attempt `attempt`; if the chunk turns into a straggler, also attempt `attempt + 1`
/// on another worker and keep the first accepted (or the last error when both fail).
async fn attempt_with_backup(
    context: &DispatchContext,
    work: &ChunkWork,
    attempt: u32,
    avoid: &HashSet<String>,
) -> Raced {
    let primary_clock = AttemptClock::default();
    let primary = attempt_counted(context, work, attempt, avoid, &primary_clock);
    tokio::pin!(primary);
    let started = Instant::now();
    loop {
        tokio::select! {
            result = &mut primary => return Raced { result, attempts: 1, wasted_gpu_seconds: 0.0 },
            _ = tokio::time::sleep(STRAGGLER_CHECK) => {
                if work.peers.is_straggler(started.elapsed(), &context.config) {
                    break;
                }
            }
        }
    }
    tracing::warn!(job = %work.job.id, chunk = work.range.index, attempt, seconds = started.elapsed().as_secs_f64(), "the chunk runs far slower than its peers did; starting a backup attempt on another worker");
    let mut avoid = avoid.clone();
    avoid.extend(primary_clock.worker());
    let backup_clock = AttemptClock::default();
    let backup = attempt_counted(context, work, attempt + 1, &avoid, &backup_clock);
    tokio::pin!(backup);
    let (first, primary_first) = tokio::select! {
        result = &mut primary => (result, true),
        result = &mut backup => (result, false),
    };
    if first.is_ok() {
        let loser = if primary_first {
            &backup_clock
        } else {
            &primary_clock
        };
        return Raced {
            result: first,
            attempts: 2,
            wasted_gpu_seconds: loser.held_gpu_seconds(),
        };
    }
    // The first to end failed (its GPU-seconds are in its error): wait for the other.
    let second = if primary_first {
        backup.await
    } else {
        primary.await
    };
    let wasted_gpu_seconds = match &first {
        Err(AttemptError::Retry {
            held_gpu_seconds, ..
        }) => *held_gpu_seconds,
        _ => 0.0,
    };
    Raced {
        result: second,
        attempts: 2,
        wasted_gpu_seconds,
    }
}

/// Runs a chunk to acceptance or to its final failure.
pub async fn run_chunk(
    context: &DispatchContext,
    work: &ChunkWork,
) -> Result<AcceptedChunk, DispatchError> {
    let config = &context.config;
    let mut delays = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(config.backoff_initial_ms))
        .with_max_delay(Duration::from_millis(config.backoff_max_ms))
        .with_jitter()
        .with_max_times(config.max_attempts.saturating_sub(1) as usize)
        .build();
    let index = work.range.index;
    let mut avoid = HashSet::new();
    let mut wasted = 0.0;
    let mut attempt = 1;
    loop {
        let raced = attempt_with_backup(context, work, attempt, &avoid).await;
        wasted += raced.wasted_gpu_seconds;
        attempt += raced.attempts - 1;
        match raced.result {
            Ok(mut accepted) => {
                accepted.attempts = attempt;
                accepted.wasted_gpu_seconds = wasted;
                return Ok(accepted);
            }
            Err(AttemptError::Retry {
                message,
                worker,
                held_gpu_seconds,
            }) => {
                wasted += held_gpu_seconds;
                avoid.extend(worker);
                match delays.next() {
                    Some(delay) => {
                        tracing::warn!(job = %work.job.id, chunk = index, attempt, error = %message, ?delay, "chunk attempt failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => {
                        return Err(DispatchError::Exhausted {
                            index,
                            attempts: attempt,
                            last: message,
                        })
                    }
                }
            }
            Err(AttemptError::Permanent(message)) => {
                return Err(DispatchError::Permanent { index, message })
            }
            Err(AttemptError::NoSlot(error)) => return Err(error.into()),
        }
        attempt += 1;
    }
}

/// One attempt in an `attempt` span (which names the worker once it has one), counted in
/// the metrics when it ends.
async fn attempt_counted(
    context: &DispatchContext,
    work: &ChunkWork,
    attempt: u32,
    avoid: &HashSet<String>,
    clock: &AttemptClock,
) -> Result<AcceptedChunk, AttemptError> {
    let span = tracing::info_span!("attempt", attempt, worker = tracing::field::Empty);
    let result = attempt_once(context, work, attempt, avoid, clock)
        .instrument(span)
        .await;
    let metrics = &context.metrics;
    match &result {
        Ok(chunk) => metrics.attempt_ended(AttemptOutcome::Accepted, chunk.result.gpu_seconds),
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
    avoid: &HashSet<String>,
    clock: &AttemptClock,
) -> Result<AcceptedChunk, AttemptError> {
    let range = work.range;
    let priority = QueuePriority {
        job_seq: work.job.seq,
        neg_frames: -((range.end_frame - range.start_frame) as i64),
        index: range.index,
    };
    let wait = Duration::from_secs_f64(context.config.worker_wait_seconds);
    let grant = context
        .fleet
        .acquire(priority, avoid.clone(), wait)
        .await
        .map_err(AttemptError::NoSlot)?;
    clock.start(&grant.worker.id, grant.worker.gpus_per_slot);
    tracing::Span::current().record("worker", grant.worker.name.as_str());
    let output = work
        .scratch
        .join(&format!(
            "chunks/{:05}-r{}-a{attempt}.{}",
            range.index,
            work.run,
            if work.lines { "jsonl" } else { "mp4" }
        ))
        .map_err(|e| AttemptError::Permanent(e.to_string()))?;
    let packet_log = if work.request.passthrough_streams.is_empty() {
        None
    } else {
        Some(
            work.scratch
                .join(&format!(
                    "chunks/{:05}-r{}-a{attempt}.packets",
                    range.index, work.run
                ))
                .map_err(|e| AttemptError::Permanent(e.to_string()))?,
        )
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
    let result = stream_chunk(context, work, &grant, request).await;
    let held_gpu_seconds = started.elapsed().as_secs_f64() * f64::from(grant.worker.gpus_per_slot);
    let worker_id = grant.worker.id.clone();
    drop(grant);
    let retry = |message: String| AttemptError::Retry {
        message,
        worker: Some(worker_id.clone()),
        held_gpu_seconds,
    };
    let result = match result {
        Ok(result) => result,
        Err(StreamError::Permanent(message)) => return Err(AttemptError::Permanent(message)),
        Err(StreamError::Retry(message)) => return Err(retry(message)),
    };
    let output_bytes = verify_objects(context, work, &output, packet_log.as_ref())
        .await
        .map_err(retry)?;
    Ok(AcceptedChunk {
        range,
        result,
        output,
        output_bytes,
        packet_log,
        attempts: attempt,
        wasted_gpu_seconds: 0.0,
        resumed: false,
        timeline: ChunkTimeline {
            started_seconds,
            accepted_seconds: since_accepted(),
        },
    })
}

/// Checks a chunk accepted before a restart before it is trusted again: its object still
/// exists with the size it had and holds the range's frames, and its packet log exists.
pub async fn recheck(
    context: &DispatchContext,
    work: &ChunkWork,
    previous: &AcceptedChunk,
) -> Result<(), String> {
    if previous.range != work.range {
        return Err(format!(
            "chunk {} was recorded for another plan",
            work.range.index
        ));
    }
    if work.request.passthrough_streams.is_empty() != previous.packet_log.is_none() {
        return Err(format!(
            "chunk {} was recorded with a different setting for copied streams",
            work.range.index
        ));
    }
    let size = verify_objects(
        context,
        work,
        &previous.output,
        previous.packet_log.as_ref(),
    )
    .await?;
    if size != previous.output_bytes {
        return Err(format!(
            "chunk {} object holds {size} bytes, {} when it was accepted",
            work.range.index, previous.output_bytes
        ));
    }
    Ok(())
}

/// Checks a chunk's objects (see [`verify_chunk`] and [`verify_lines`]) and that its packet
/// log exists; returns the chunk object's size.
async fn verify_objects(
    context: &DispatchContext,
    work: &ChunkWork,
    output: &ObjectUri,
    packet_log: Option<&ObjectUri>,
) -> Result<u64, String> {
    let range = &work.range;
    let storage = &context.storage;
    let size = if work.lines {
        verify_lines(storage, output, range).await?
    } else {
        verify_chunk(context, output, work).await?
    };
    if let Some(log) = packet_log {
        if let Err(error) = storage.size(log).await {
            return Err(format!(
                "chunk {} packet log is missing: {error}",
                range.index
            ));
        }
    }
    Ok(size)
}

enum StreamError {
    Retry(String),
    Permanent(String),
}

/// Sends the request and follows its event stream to the result.
async fn stream_chunk(
    context: &DispatchContext,
    work: &ChunkWork,
    grant: &SlotGrant,
    request: ProcessChunkRequest,
) -> Result<ChunkResult, StreamError> {
    let worker = &grant.worker;
    let deadline = Duration::from_secs_f64(context.config.event_timeout_seconds);
    let mut client = worker.client.clone();
    let classify = |status: tonic::Status| -> StreamError {
        let message = format!("worker {}: {}", worker.name, status.message());
        match status.code() {
            Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => {
                StreamError::Permanent(status.message().to_string())
            }
            Code::Unavailable | Code::Unknown => {
                context.fleet.remove(&worker.id, "its connection failed");
                StreamError::Retry(message)
            }
            _ => StreamError::Retry(message),
        }
    };
    let mut call = tonic::Request::new(request);
    propagation::inject_current(call.metadata_mut());
    let mut stream = match tokio::time::timeout(deadline, client.process_chunk(call)).await {
        Err(_) => {
            return Err(StreamError::Retry(format!(
                "worker {} did not answer within {:.0} s",
                worker.name,
                deadline.as_secs_f64()
            )))
        }
        Ok(Err(status)) => return Err(classify(status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    loop {
        match tokio::time::timeout(deadline, stream.message()).await {
            Err(_) => {
                return Err(StreamError::Retry(format!(
                    "worker {} sent nothing for {:.0} s",
                    worker.name,
                    deadline.as_secs_f64()
                )))
            }
            Ok(Err(status)) => return Err(classify(status)),
            Ok(Ok(None)) => {
                return Err(StreamError::Retry(format!(
                    "worker {} closed the stream without a result",
                    worker.name
                )))
            }
            Ok(Ok(Some(event))) => match event.event {
                Some(chunk_event::Event::Progress(progress)) => {
                    work.job.chunk_progress(work.range.index, &progress)
                }
                Some(chunk_event::Event::Result(result)) => return Ok(result),
                None => {}
            },
        }
    }
}

/// Checks a chunk object: exactly the range's frame count, starting at the range's first
/// timestamp (moved by the job's `pts_offset`). Returns the object's size.
async fn verify_chunk(
    context: &DispatchContext,
    output: &ObjectUri,
    work: &ChunkWork,
) -> Result<u64, String> {
    let range = &work.range;
    let storage = context.storage.clone();
    let object = output.clone();
    let runtime = tokio::runtime::Handle::current();
    let probed = context
        .blocking
        .spawn_blocking(move || {
            let reader = storage
                .open_reader(&object, runtime)
                .map_err(|e| e.to_string())?;
            let size = reader.size();
            media::probe(reader, object.file_name())
                .map(|info| (info, size))
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("checking chunk {} crashed: {e}", range.index))?
        .map_err(|e| format!("chunk {} output is unreadable: {e}", range.index))?;
    let (probed, size) = probed;
    let video = &probed.video;
    let expected = range.end_frame - range.start_frame;
    if video.frames.len() as u64 != expected {
        return Err(format!(
            "chunk {} output holds {} frames, expected {expected}",
            range.index,
            video.frames.len()
        ));
    }
    let chunk_base = ffmpeg_next::Rational::new(video.time_base.0, video.time_base.1);
    let first = video
        .frames
        .first()
        .map_or(0, |f| f.pts.rescale(chunk_base, work.time_base));
    let expected_first = range.start_pts + work.request.pts_offset;
    if first != expected_first {
        return Err(format!(
            "chunk {} output starts at pts {first}, expected {expected_first}",
            range.index
        ));
    }
    Ok(size)
}

/// Checks a JSON Lines chunk: one line per frame of the range, numbered from its start.
/// Returns the object's size.
async fn verify_lines(
    storage: &Storage,
    output: &ObjectUri,
    range: &ChunkRange,
) -> Result<u64, String> {
    let size = storage.size(output).await.map_err(|e| e.to_string())?;
    let bytes = storage
        .read_range(output, 0, size)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let expected = range.end_frame - range.start_frame;
    if lines.len() as u64 != expected {
        return Err(format!(
            "chunk {} holds {} lines, expected {expected}",
            range.index,
            lines.len()
        ));
    }
    let first: serde_json::Value = serde_json::from_str(lines[0])
        .map_err(|e| format!("chunk {} line 1 is not JSON: {e}", range.index))?;
    if first["frame"].as_u64() != Some(range.start_frame) {
        return Err(format!(
            "chunk {} starts at frame {}, expected {}",
            range.index, first["frame"], range.start_frame
        ));
    }
    Ok(size)
}
