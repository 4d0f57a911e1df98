//! The typed job: what [`validate`](super::validate) makes of a spec, and the only form of
//! it that later stages read. URIs are parsed, defaults are filled, the model, scale,
//! encoder, chunking and frame choice are checked values. The spec itself is kept only to
//! be stored and echoed back to clients.

use framefleet_common::codec::{EncoderRequest, VideoEncoder};
use framefleet_common::config::ProfileConfig;
use framefleet_common::proto::{EncoderSettings, JobSpec, ProcessorSpec, Task};
use framefleet_common::storage::{ObjectUri, StorageError};

use super::frames::FrameChoice;

/// What a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobTask {
    /// A video: every frame processed, encoded, stitched with the input's other streams.
    Process,
    /// JSON Lines: one line of model output per frame.
    Infer,
}

impl JobTask {
    /// The task as the wire names it (what workers are sent).
    pub fn wire(self) -> Task {
        match self {
            JobTask::Process => Task::Process,
            JobTask::Infer => Task::Infer,
        }
    }
}

/// How urgently a job's chunks take free slots; the most urgent level waiting is served
/// first (see the fleet's policy for how batch work still gets through).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Someone waits on it.
    Interactive,
    /// The default.
    #[default]
    Normal,
    /// Runs when nothing more urgent waits.
    Batch,
}

impl Priority {
    /// Every level, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::Interactive, Priority::Normal, Priority::Batch];

    /// The level's position in [`Priority::ALL`].
    pub fn rank(self) -> usize {
        self as usize
    }

    /// The level's name, as the CLI and the scaler's metadata spell it.
    pub fn label(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Normal => "normal",
            Priority::Batch => "batch",
        }
    }
}

/// One input of a job and where its output goes, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct InputPair {
    /// Where the input is read.
    pub input: ObjectUri,
    /// Where its output is written.
    pub output: ObjectUri,
}

/// What runs on every frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Processor {
    /// `lanczos`, a catalog model, or the path of a TorchScript module (infer jobs: always
    /// a path).
    pub model: String,
    /// How much output pictures are scaled (1 for infer jobs).
    pub scale: f64,
    /// Whether interlaced frames are deinterlaced first.
    pub deinterlace: bool,
}

impl Processor {
    /// The processor as workers are sent it.
    pub fn wire(&self) -> ProcessorSpec {
        ProcessorSpec {
            model: self.model.clone(),
            scale: self.scale,
            deinterlace: self.deinterlace,
        }
    }
}

/// How a video job's chunks are encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoding {
    /// What the job asks to be encoded with: a codec (the run picks the encoder the fleet
    /// has most of) or one encoder by name.
    pub request: EncoderRequest,
    /// x264's preset name, mapped by the workers onto the run's encoder.
    pub preset: String,
    /// Constant rate factor, 0-51 (not used when lossless).
    pub crf: u32,
    /// Lossless encoding.
    pub lossless: bool,
}

impl Encoding {
    /// The settings workers are sent for a run written with `encoder` (the request's own
    /// name before a run has chosen one).
    pub fn wire(&self, encoder: Option<VideoEncoder>) -> EncoderSettings {
        let name = match (encoder, self.request) {
            (Some(encoder), _) => encoder.name(),
            (None, EncoderRequest::Codec(codec)) => codec.name(),
            (None, EncoderRequest::Encoder(exact)) => exact.name(),
        };
        EncoderSettings {
            crf: self.crf,
            preset: self.preset.clone(),
            lossless: self.lossless,
            encoder: name.into(),
        }
    }
}

/// A threshold profile of the configuration, looked up when the job was checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Its name (`neural`, `light`, or one configured).
    pub name: String,
    /// Its thresholds.
    pub thresholds: ProfileConfig,
}

/// What `auto` weighs the chunk counts for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The fastest count within `planner.max_gpu_seconds_ratio` of one chunk's GPU-seconds.
    Efficient,
    /// The cheapest count done within this many seconds.
    Deadline(f64),
    /// The fastest count costing at most this many USD.
    PriceCap(f64),
}

/// How the job asks to be cut into chunks.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunking {
    /// This many chunks (within `limits.max_chunks` and `planner.max_chunks`).
    Fixed(u32),
    /// From the input's duration by a threshold profile the job named.
    Thresholds(Profile),
    /// From the cost history toward `goal`; by the `fallback` profile (the model's default:
    /// `light` for lanczos, `neural` for models) while the history knows nothing of the kind.
    Auto {
        /// What the count is chosen for.
        goal: Goal,
        /// Thresholds used without a cost model.
        fallback: Profile,
    },
}

/// A job spec that passed the checks, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidJob {
    /// The spec with its defaults filled in: what the job store keeps and clients are
    /// shown, and what idempotent submissions compare. Nothing downstream reads it.
    pub spec: JobSpec,
    /// Every input with its output, in the order the spec names them: one for a job of
    /// `input_uri` and `output_uri`, one per entry of `inputs` otherwise.
    pub inputs: Vec<InputPair>,
    /// What the job produces.
    pub task: JobTask,
    /// What runs on every frame.
    pub processor: Processor,
    /// How a video job is encoded (`None` for infer: nothing is encoded).
    pub encoding: Option<Encoding>,
    /// The frames it runs on (infer jobs may choose; video jobs take every frame).
    pub frames: FrameChoice,
    /// How urgently its chunks take free slots.
    pub priority: Priority,
    /// Where one signed event is POSTed when it ends (its host checked against
    /// `notify.allowed_hosts`).
    pub notify: Option<reqwest::Url>,
    /// How it is cut into chunks.
    pub chunking: Chunking,
    /// Values an infer job keeps per frame (0: every one).
    pub top_k: u32,
    /// Whether a job of several inputs skips those it cannot read instead of failing.
    pub skip_unreadable_inputs: bool,
    /// Whether it names a list of inputs (`JobSpec.inputs`), even of one.
    pub(super) batch: bool,
    /// Under which prefix the job's temporary objects go (see [`ValidJob::scratch`]).
    pub(super) scratch_root: ObjectUri,
}

impl ValidJob {
    /// Where job `job_id`'s temporary chunk objects go: `<scratch>/jobs/<job>/`, the
    /// scratch root being `orchestrator.scratch_uri` or `.framefleet/` beside the (first)
    /// output.
    pub fn scratch(&self, job_id: &str) -> Result<ObjectUri, StorageError> {
        self.scratch_root.join(&format!("jobs/{job_id}"))
    }

    /// True for jobs that write JSON Lines instead of video.
    pub fn is_infer(&self) -> bool {
        self.task == JobTask::Infer
    }

    /// True for a job of several inputs (`JobSpec.inputs`).
    pub fn is_batch(&self) -> bool {
        self.batch
    }

    /// What a video job asks to be encoded with (`None` for infer).
    pub fn encoder(&self) -> Option<EncoderRequest> {
        self.encoding.as_ref().map(|e| e.request)
    }
}
