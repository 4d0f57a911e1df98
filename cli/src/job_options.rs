//! The job flags `local` and `submit` share, and the spec they make.

use std::collections::HashMap;

use framefleet_common::proto::{EncoderSettings, JobSpec, ProcessorSpec, Task};

/// What a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskOption {
    /// Processed video.
    Process,
    /// One JSON line per frame from a TorchScript model (output name ends in .jsonl).
    Infer,
}

/// How to process and encode a job.
#[derive(Debug, Clone, clap::Args)]
pub struct JobOptions {
    /// Processor: `lanczos`, a Real-ESRGAN model (`framefleet models list`), or the absolute
    /// path of a TorchScript module.
    #[arg(long, default_value = "lanczos")]
    pub model: String,
    /// Process the video, or infer one vector per frame into JSON Lines.
    #[arg(long, value_enum, default_value_t = TaskOption::Process)]
    pub task: TaskOption,
    /// For infer: keep the k largest values per frame (0 keeps all).
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    /// Scale factor for width and height.
    #[arg(long, default_value_t = 2.0)]
    pub scale: f64,
    /// Deinterlace the frames flagged interlaced first (FFmpeg's bwdif, one frame per frame),
    /// for DVD and broadcast sources: a model would otherwise enlarge the combing.
    #[arg(long)]
    pub deinterlace: bool,
    /// x264 constant rate factor (0-51, lower is better).
    #[arg(long, default_value_t = 18, conflicts_with = "lossless")]
    pub crf: u32,
    /// Lossless x264 encoding (qp 0).
    #[arg(long)]
    pub lossless: bool,
    /// x264 preset.
    #[arg(long, default_value = "medium")]
    pub preset: String,
    /// Fixed chunk count; 0 lets the planner choose.
    #[arg(long, default_value_t = 0)]
    pub chunks: u32,
    /// Planner profile: `auto` (from the cost history of jobs like this one), or the
    /// duration thresholds of `light`, `neural` or a configured profile. Empty: `auto` once
    /// the history knows the job's kind, else thresholds by model.
    #[arg(long, default_value = "")]
    pub profile: String,
    /// `auto` picks the cheapest chunk count predicted to finish within this many seconds.
    #[arg(long, default_value_t = 0.0, conflicts_with = "max_cost")]
    pub deadline: f64,
    /// `auto` picks the fastest chunk count predicted to cost at most this many USD.
    #[arg(long, default_value_t = 0.0)]
    pub max_cost: f64,
}

impl JobOptions {
    /// The task asked for.
    pub fn spec_task(&self) -> Task {
        match self.task {
            TaskOption::Process => Task::Process,
            TaskOption::Infer => Task::Infer,
        }
    }

    /// The spec for `input` -> `output` with these options.
    pub fn spec(&self, input: String, output: String, labels: HashMap<String, String>) -> JobSpec {
        JobSpec {
            input_uri: input,
            output_uri: output,
            processor: Some(ProcessorSpec {
                model: self.model.clone(),
                scale: self.scale,
                deinterlace: self.deinterlace,
            }),
            encoder: Some(EncoderSettings {
                crf: if self.lossless { 0 } else { self.crf },
                preset: self.preset.clone(),
                lossless: self.lossless,
            }),
            chunks: self.chunks,
            profile: self.profile.clone(),
            labels,
            task: self.spec_task() as i32,
            top_k: self.top_k,
            deadline_seconds: self.deadline,
            max_cost_usd: self.max_cost,
        }
    }
}
