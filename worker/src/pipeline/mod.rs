//! The chunk pipeline: fetch -> decode -> process -> encode -> upload.
//!
//! Decode, process and encode each run on a dedicated thread, joined by bounded channels,
//! so a slow stage holds the ones before it back instead of filling memory, and the model
//! works while the next frames are decoded and the previous ones encoded. The encoder
//! writes a local MP4 (the container needs to seek back to finish its index), which the
//! upload stage then sends to storage, as a multipart upload when it is large. The decode
//! stage also passes the input's audio and subtitle packets of the chunk's span through to
//! a packet log (see [`passthrough`]), uploaded beside the chunk for the stitch. Every stage
//! records the time it is busy (not the time it waits on its neighbours) into a
//! [`PhaseClock`], and its frames done into the chunk's [`ChunkProgressCounters`].
//!
//! A chunk is done only when exactly its frames (`end_frame - start_frame`, or the frames
//! an infer job chose) went through every stage and the object is uploaded; anything else
//! is an error and the upload is aborted.

mod decode;
mod deinterlace;
mod encode;
mod infer;
mod passthrough;
pub mod progress;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ffmpeg_next::frame::Video as VideoFrame;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use framefleet_common::codec::VideoEncoder;
use framefleet_common::media::TimestampSource;
use framefleet_common::phases::PerPhase;
use framefleet_common::proto::{
    ChosenFrame, ChunkRange, EncoderSettings, Phase, ProcessorSpec, Task,
};
use framefleet_common::storage::{ObjectUri, Storage, StorageError};

use crate::processor::{self, ProcessError};
use progress::ChunkProgressCounters;

/// Why a chunk failed.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The request itself cannot work (bad URI, unknown model, bad settings).
    #[error("invalid chunk request: {0}")]
    Invalid(String),
    /// Reading the input or writing the output failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The input could not be opened or decoded.
    #[error("decoding the input failed: {0}")]
    Decode(String),
    /// Decoding stopped because reading the input from storage failed (the storage's
    /// error; worth a retry, perhaps on another worker).
    #[error("reading the input failed: {0}")]
    InputRead(String),
    /// The processor failed.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The encoder or muxer failed.
    #[error("encoding the chunk failed: {0}")]
    Encode(String),
    /// Fewer or more frames came out than the range holds.
    #[error("chunk produced {got} frames in {phase}, expected {expected}")]
    FrameCount {
        /// Stage that counted.
        phase: &'static str,
        /// Frames counted.
        got: u64,
        /// Frames in the range.
        expected: u64,
    },
    /// The orchestrator went away or cancelled the chunk.
    #[error("the chunk was cancelled")]
    Cancelled,
    /// A neighbouring stage stopped first; its own error is the one to report.
    #[error("a neighbouring pipeline stage stopped")]
    Disconnected,
    /// A stage thread could not start or died.
    #[error("pipeline stage {0} crashed")]
    Crashed(&'static str),
}

/// Everything a worker needs to process one chunk.
#[derive(Debug, Clone)]
pub struct ChunkSpec {
    /// The job's input.
    pub input: ObjectUri,
    /// Where the encoded chunk goes.
    pub output: ObjectUri,
    /// The frames to produce.
    pub range: ChunkRange,
    /// Index of the video stream in the input.
    pub stream_index: usize,
    /// What to do to each frame.
    pub processor: ProcessorSpec,
    /// How to encode: preset, crf, lossless.
    pub encoder: EncoderSettings,
    /// The encoder the job chose, one this worker has.
    pub video_encoder: VideoEncoder,
    /// The GPU decoder the chunk may decode on (`None`: software).
    pub nvdec: Option<Arc<crate::nvdec::Nvdec>>,
    /// Frames per processing batch.
    pub batch_frames: usize,
    /// Where models are and which device runs them.
    pub settings: processor::ProcessorSettings,
    /// Encode a video chunk, or write one JSON line per frame (infer).
    pub task: Task,
    /// For infer: the k largest values per frame (0 keeps all).
    pub top_k: u32,
    /// Time base of the input's video stream, kept for the output.
    pub time_base: ffmpeg_next::Rational,
    /// Average frame rate of the input, `0/1` when unknown.
    pub frame_rate: ffmpeg_next::Rational,
    /// Added to every output frame's timestamp, so that no frame of the job is before zero
    /// (see `VideoInfo::timeline_shift`).
    pub pts_offset: i64,
    /// The input is a fragmented MP4 (read fragment by fragment, skipping
    /// `range.skip_from..range.skip_to`).
    pub fragmented_input: bool,
    /// Where decoded frames take their timestamps from (the probe's finding).
    pub timestamps: TimestampSource,
    /// Fetch the whole input in one GET instead of ranged reads.
    pub whole_input: bool,
    /// The input's streams to pass through for the stitch, if any.
    pub passthrough: Option<Passthrough>,
    /// For infer jobs that chose frames: the chunk's chosen frames, ascending, all within
    /// `range` (empty: every frame of the range).
    pub chosen: Vec<ChosenFrame>,
    /// A web input's size and validator as the job's probe read them: the chunk reads that
    /// version or fails.
    pub input_version: Option<(u64, String)>,
}

/// Which input packets (audio, subtitles) a chunk passes through, and where they go.
#[derive(Debug, Clone)]
pub struct Passthrough {
    /// Input streams to copy.
    pub streams: Vec<usize>,
    /// Where the packet log goes.
    pub output: ObjectUri,
    /// The chunk is the job's last: its span runs to the end of the input.
    pub last_chunk: bool,
}

impl ChunkSpec {
    /// Frames the chunk must produce.
    pub fn frames(&self) -> u64 {
        if self.chosen.is_empty() {
            self.range.end_frame.saturating_sub(self.range.start_frame)
        } else {
            self.chosen.len() as u64
        }
    }

    /// The input's index of the chunk's `k`-th frame.
    pub fn frame_index(&self, k: u64) -> u64 {
        match self.chosen.get(k as usize) {
            Some(chosen) => chosen.index,
            None => self.range.start_frame + k,
        }
    }
}

/// What a finished chunk produced.
#[derive(Debug, Clone)]
pub struct ChunkOutput {
    /// Frames encoded and uploaded.
    pub frames: u64,
    /// Output frame size.
    pub width: u32,
    /// Output frame height.
    pub height: u32,
    /// Busy seconds per phase.
    pub phase_seconds: PerPhase<f64>,
    /// Where processing ran.
    pub device: &'static str,
    /// Audio and subtitle packets passed through.
    pub passthrough_packets: u64,
    /// Seconds spent loading the model (0 when the worker had it loaded).
    pub model_load_seconds: f64,
    /// The encoder that wrote the chunk (`None` for infer).
    pub encoder: Option<VideoEncoder>,
    /// What decoded the input.
    pub decoder: &'static str,
}

/// Busy time per phase, added to by every stage, and the part of `init` that loaded a
/// model.
#[derive(Debug, Default)]
pub struct PhaseClock {
    nanos: PerPhase<AtomicU64>,
    model_load_nanos: AtomicU64,
}

impl PhaseClock {
    /// Adds `elapsed` to `phase`.
    pub fn add(&self, phase: Phase, elapsed: Duration) {
        if let Some(counter) = self.nanos.get(phase) {
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            counter.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// Runs `work` and adds its duration to `phase`.
    pub fn time<T>(&self, phase: Phase, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        self.add(phase, started.elapsed());
        result
    }

    /// Seconds per phase.
    pub fn seconds(&self) -> PerPhase<f64> {
        self.nanos
            .map(|_, nanos| nanos.load(Ordering::Relaxed) as f64 / 1e9)
    }

    /// Seconds of `phase`.
    pub fn seconds_of(&self, phase: Phase) -> f64 {
        self.seconds().value_or(phase, 0.0)
    }

    /// Records that loading the model took `seconds` (already counted in `init`).
    pub fn model_loaded(&self, seconds: f64) {
        let nanos = (seconds.max(0.0) * 1e9) as u64;
        self.model_load_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Seconds spent loading the model.
    pub fn model_load_seconds(&self) -> f64 {
        self.model_load_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// What every stage shares: progress, timing and the cancel signal.
#[derive(Clone)]
pub(crate) struct StageContext {
    pub progress: Arc<ChunkProgressCounters>,
    pub clock: Arc<PhaseClock>,
    pub cancel: CancellationToken,
}

impl StageContext {
    pub(crate) fn check_cancelled(&self) -> Result<(), ChunkError> {
        if self.cancel.is_cancelled() {
            Err(ChunkError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Runs one chunk to the end: on success the chunk object exists at `spec.output`, on
/// failure nothing is left there.
pub async fn run_chunk(
    spec: ChunkSpec,
    storage: Storage,
    progress: Arc<ChunkProgressCounters>,
    clock: Arc<PhaseClock>,
    cancel: CancellationToken,
) -> Result<ChunkOutput, ChunkError> {
    let context = StageContext {
        progress,
        clock,
        cancel,
    };
    if spec.frames() == 0 {
        return Err(ChunkError::Invalid(
            "the chunk range holds no frames".into(),
        ));
    }
    let files = ChunkFiles::create(&spec)?;
    let (decoded_tx, decoded_rx) = sync_channel::<VideoFrame>(spec.batch_frames.max(1) * 2);
    let decoding = {
        let (spec, storage, context) = (spec.clone(), storage.clone(), context.clone());
        let runtime = tokio::runtime::Handle::current();
        let log_path = files
            .packet_log
            .as_ref()
            .map(|file| file.path().to_path_buf());
        spawn_stage("decode", move || {
            decode::run(
                &spec,
                &storage,
                runtime,
                &context,
                decoded_tx,
                log_path.as_deref(),
            )
        })
    };
    let path = files.chunk.path().to_path_buf();
    let produced = if spec.task == Task::Infer {
        infer_stages(&spec, &context, decoding, decoded_rx, path).await?
    } else {
        video_stages(&spec, &context, decoding, decoded_rx, path).await?
    };
    context.check_cancelled()?;
    upload(&spec, &storage, &context, &files).await?;
    let encoded = produced.encoded;
    Ok(ChunkOutput {
        frames: encoded.frames,
        width: encoded.width,
        height: encoded.height,
        phase_seconds: context.clock.seconds(),
        device: produced.device,
        passthrough_packets: produced.decoded.passthrough_packets,
        model_load_seconds: context.clock.model_load_seconds(),
        encoder: (spec.task != Task::Infer).then_some(spec.video_encoder),
        decoder: produced.decoded.decoder,
    })
}

/// The local files a chunk is written to before its upload.
struct ChunkFiles {
    /// The encoded chunk (or its JSON Lines).
    chunk: tempfile::NamedTempFile,
    /// The packet log of copied streams, when the job copies any.
    packet_log: Option<tempfile::NamedTempFile>,
}

impl ChunkFiles {
    fn create(spec: &ChunkSpec) -> Result<Self, ChunkError> {
        let chunk = tempfile::Builder::new()
            .prefix("framefleet-chunk-")
            .suffix(if spec.task == Task::Infer {
                ".jsonl"
            } else {
                ".mp4"
            })
            .tempfile()
            .map_err(|e| {
                ChunkError::Encode(format!("cannot create a temporary chunk file: {e}"))
            })?;
        let packet_log = match &spec.passthrough {
            Some(_) => Some(
                tempfile::Builder::new()
                    .prefix("framefleet-packets-")
                    .tempfile()
                    .map_err(|e| {
                        ChunkError::Encode(format!("cannot create a temporary packet log: {e}"))
                    })?,
            ),
            None => None,
        };
        Ok(Self { chunk, packet_log })
    }
}

/// What the stages after decoding produced.
struct Produced {
    device: &'static str,
    decoded: decode::DecodeOutcome,
    encoded: encode::Encoded,
}

/// Decoded frames into the model, one JSON line per frame into `path`.
async fn infer_stages(
    spec: &ChunkSpec,
    context: &StageContext,
    decoding: oneshot::Receiver<Result<decode::DecodeOutcome, ChunkError>>,
    decoded_rx: Receiver<VideoFrame>,
    path: std::path::PathBuf,
) -> Result<Produced, ChunkError> {
    let inferring = {
        let (spec, context) = (spec.clone(), context.clone());
        spawn_stage("infer", move || {
            infer::run(&spec, &context, decoded_rx, &path)
        })
    };
    let decoded = decoding.await.unwrap_or(Err(ChunkError::Crashed("decode")));
    match (
        decoded,
        inferring.await.unwrap_or(Err(ChunkError::Crashed("infer"))),
    ) {
        (Ok(decoded), Ok((frames, device))) => Ok(Produced {
            device,
            decoded,
            encoded: encode::Encoded {
                frames,
                width: 0,
                height: 0,
            },
        }),
        (decoded, inferred) => Err(first_cause([decoded.err(), inferred.err(), None])),
    }
}

/// Decoded frames through the processor and the encoder into `path`.
async fn video_stages(
    spec: &ChunkSpec,
    context: &StageContext,
    decoding: oneshot::Receiver<Result<decode::DecodeOutcome, ChunkError>>,
    decoded_rx: Receiver<VideoFrame>,
    path: std::path::PathBuf,
) -> Result<Produced, ChunkError> {
    let (processed_tx, processed_rx) = sync_channel::<VideoFrame>(spec.batch_frames.max(1) * 2);
    let processing = {
        let (spec, context) = (spec.clone(), context.clone());
        spawn_stage("process", move || {
            process(&spec, &context, decoded_rx, processed_tx)
        })
    };
    let encoding = {
        let (spec, context) = (spec.clone(), context.clone());
        spawn_stage("encode", move || {
            encode::run(&spec, &context, processed_rx, &path)
        })
    };
    let results = (
        decoding.await.unwrap_or(Err(ChunkError::Crashed("decode"))),
        processing
            .await
            .unwrap_or(Err(ChunkError::Crashed("process"))),
        encoding.await.unwrap_or(Err(ChunkError::Crashed("encode"))),
    );
    match results {
        (Ok(decoded), Ok(device), Ok(encoded)) => Ok(Produced {
            device,
            decoded,
            encoded,
        }),
        (decoded, processed, encoded) => {
            Err(first_cause([decoded.err(), processed.err(), encoded.err()]))
        }
    }
}

/// Uploads the chunk (and its packet log), unless the chunk is cancelled first.
async fn upload(
    spec: &ChunkSpec,
    storage: &Storage,
    context: &StageContext,
    files: &ChunkFiles,
) -> Result<(), ChunkError> {
    let started = Instant::now();
    let upload = async {
        storage
            .upload_file(files.chunk.path(), &spec.output)
            .await?;
        if let (Some(passthrough), Some(log)) = (&spec.passthrough, &files.packet_log) {
            storage.upload_file(log.path(), &passthrough.output).await?;
        }
        Ok::<_, StorageError>(())
    }
    .instrument(tracing::info_span!("upload"));
    tokio::select! {
        uploaded = upload => { uploaded?; }
        _ = context.cancel.cancelled() => return Err(ChunkError::Cancelled),
    }
    context.clock.add(Phase::Upload, started.elapsed());
    context.progress.finish(Phase::Upload);
    Ok(())
}

/// The error that started a failure: the first one that is not a neighbour's disconnect.
fn first_cause(errors: [Option<ChunkError>; 3]) -> ChunkError {
    let mut errors: Vec<ChunkError> = errors.into_iter().flatten().collect();
    let cause = errors
        .iter()
        .position(|e| matches!(e, ChunkError::Cancelled))
        .or_else(|| {
            errors
                .iter()
                .position(|e| !matches!(e, ChunkError::Disconnected))
        });
    match cause {
        Some(i) => errors.swap_remove(i),
        None => ChunkError::Disconnected,
    }
}

/// Runs a stage on a named thread of its own, in a span named after it (a child of the
/// chunk's), and hands its result back to async code.
fn spawn_stage<T, F>(name: &'static str, work: F) -> oneshot::Receiver<Result<T, ChunkError>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ChunkError> + Send + 'static,
{
    let (done_tx, done_rx) = oneshot::channel();
    let span = tracing::info_span!("stage", otel.name = name);
    let spawned = std::thread::Builder::new()
        .name(format!("chunk-{name}"))
        .spawn(move || {
            let _entered = span.enter();
            let _ = done_tx.send(work());
        });
    if let Err(e) = spawned {
        tracing::error!(stage = name, error = %e, "could not start a pipeline thread");
    }
    done_rx
}

/// The process stage: batches decoded frames through the job's processor.
fn process(
    spec: &ChunkSpec,
    context: &StageContext,
    decoded: Receiver<VideoFrame>,
    processed: SyncSender<VideoFrame>,
) -> Result<&'static str, ChunkError> {
    let mut processor = context.clock.time(Phase::Init, || {
        processor::build(&spec.processor, &spec.settings)
    })?;
    context.clock.model_loaded(processor.model_load_seconds());
    let batch_size = spec.batch_frames.max(1);
    let mut done = 0u64;
    while let Ok(first) = decoded.recv() {
        context.check_cancelled()?;
        let mut batch = vec![first];
        while batch.len() < batch_size {
            match decoded.try_recv() {
                Ok(frame) => batch.push(frame),
                Err(_) => break,
            }
        }
        let expected = batch.len();
        let frames = context
            .clock
            .time(Phase::Process, || processor.process(batch))?;
        if frames.len() != expected {
            return Err(ChunkError::FrameCount {
                phase: "process",
                got: frames.len() as u64,
                expected: expected as u64,
            });
        }
        for frame in frames {
            processed
                .send(frame)
                .map_err(|_| ChunkError::Disconnected)?;
            done += 1;
        }
        context.progress.set(Phase::Process, done);
    }
    if done != spec.frames() {
        return Err(ChunkError::FrameCount {
            phase: "process",
            got: done,
            expected: spec.frames(),
        });
    }
    Ok(processor.device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_real_error_wins_over_disconnects() {
        let error = first_cause([
            Some(ChunkError::Disconnected),
            Some(ChunkError::Encode("x264 refused".into())),
            None,
        ]);
        assert!(error.to_string().contains("x264 refused"));
        let error = first_cause([
            Some(ChunkError::Decode("bad".into())),
            Some(ChunkError::Cancelled),
            None,
        ]);
        assert!(matches!(error, ChunkError::Cancelled));
    }

    #[test]
    fn phase_clock_adds_per_phase() {
        let clock = PhaseClock::default();
        clock.add(Phase::Decode, Duration::from_millis(1500));
        clock.add(Phase::Decode, Duration::from_millis(500));
        assert_eq!(clock.seconds_of(Phase::Decode), 2.0);
        assert_eq!(clock.seconds_of(Phase::Download), 0.0);
    }
}
