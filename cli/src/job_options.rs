//! The job flags `local` and `submit` share, and the spec they make.

use std::collections::HashMap;

use anyhow::bail;

use framefleet_common::proto::frame_selection::Rule;
use framefleet_common::proto::{
    EncoderSettings, FrameSelection, FrameTimes, JobInput, JobSpec, ProcessorSpec, RandomFrames,
    Task,
};

/// What a job produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskOption {
    /// Processed video.
    Process,
    /// One JSON line per frame from a TorchScript model (output name ends in .jsonl).
    Infer,
}

/// How urgently the job's chunks take free slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PriorityOption {
    /// Someone waits on it: its chunks take the next free slots.
    Interactive,
    /// The default.
    Normal,
    /// Runs when nothing more urgent waits (and never starves).
    Batch,
}

impl PriorityOption {
    /// The level as the wire names it.
    pub fn wire(self) -> framefleet_common::proto::Priority {
        use framefleet_common::proto::Priority;
        match self {
            PriorityOption::Interactive => Priority::Interactive,
            PriorityOption::Normal => Priority::Normal,
            PriorityOption::Batch => Priority::Batch,
        }
    }
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
    /// Output codec, `h264` or `hevc`, for which the orchestrator picks the encoder the
    /// fleet has on the most slots (NVENC on GPUs that carry it, else x264 or x265); or
    /// one encoder by name: `libx264`, `libx265`, `h264_nvenc`, `hevc_nvenc`.
    #[arg(long, default_value = "h264")]
    pub encoder: String,
    /// Constant rate factor (0-51, lower is better; NVENC's constant quality).
    #[arg(long, default_value_t = 18, conflicts_with = "lossless")]
    pub crf: u32,
    /// Lossless encoding (x264 qp 0, x265 and NVENC lossless modes).
    #[arg(long)]
    pub lossless: bool,
    /// Preset, by x264's names (ultrafast ... veryslow), mapped onto the job's encoder.
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
    /// For infer: the frames the model runs on: `all`, `every:K` (every K-th frame),
    /// `fps:R` (the frame shown at each tick of R per second), `at:T1,T2,...` (the frames
    /// shown at those seconds) or `random:N` (N frames drawn with --seed in --window).
    #[arg(long, default_value = "all", value_parser = parse_frames)]
    pub frames: FramesFlag,
    /// For `--frames random:N`: the draw's seed; the same seed picks the same frames.
    #[arg(long)]
    pub seed: Option<u64>,
    /// For `--frames random:N`: the seconds to draw from, `START:END` (`START:` runs to the
    /// end of the video).
    #[arg(long, value_parser = parse_window)]
    pub window: Option<(f64, f64)>,
    /// With several inputs: report an input that cannot be read as skipped and finish the
    /// others, instead of failing the job.
    #[arg(long)]
    pub skip_unreadable: bool,
    /// How urgently its chunks take free slots on a shared fleet.
    #[arg(long, value_enum, default_value_t = PriorityOption::Normal)]
    pub priority: PriorityOption,
    /// POST one signed JSON event to this URL when the job ends (see `notify` in the
    /// orchestrator's configuration).
    #[arg(long = "notify", value_name = "URL", default_value = "")]
    pub notify_url: String,
}

/// Which frames an infer job runs on, as `--frames` says.
#[derive(Debug, Clone, PartialEq)]
pub enum FramesFlag {
    /// Every frame.
    All,
    /// Every k-th frame.
    Every(u64),
    /// The frames shown at each tick of a rate.
    Fps(f64),
    /// The frames shown at these seconds.
    At(Vec<f64>),
    /// This many frames drawn at random.
    Random(u32),
}

/// Parses `--frames`.
fn parse_frames(text: &str) -> Result<FramesFlag, String> {
    let usage = || {
        format!("`{text}` is not a frame choice; use all, every:K, fps:R, at:T1,T2,... or random:N")
    };
    let number = |value: &str| value.trim().parse::<f64>().map_err(|_| usage());
    match text.split_once(':') {
        None if text == "all" => Ok(FramesFlag::All),
        Some(("every", k)) => k.parse().map(FramesFlag::Every).map_err(|_| usage()),
        Some(("fps", rate)) => number(rate).map(FramesFlag::Fps),
        Some(("at", times)) => times
            .split(',')
            .map(number)
            .collect::<Result<_, _>>()
            .map(FramesFlag::At),
        Some(("random", n)) => n.parse().map(FramesFlag::Random).map_err(|_| usage()),
        _ => Err(usage()),
    }
}

/// Parses `--window START:END` (END empty: to the end).
fn parse_window(text: &str) -> Result<(f64, f64), String> {
    let usage = || format!("`{text}` is not a window; use START:END in seconds, e.g. 0:10");
    let (start, end) = text.split_once(':').ok_or_else(usage)?;
    let start = start.trim().parse::<f64>().map_err(|_| usage())?;
    let end = match end.trim() {
        "" => 0.0,
        end => end.parse::<f64>().map_err(|_| usage())?,
    };
    Ok((start, end))
}

impl JobOptions {
    /// The task asked for.
    pub fn spec_task(&self) -> Task {
        match self.task {
            TaskOption::Process => Task::Process,
            TaskOption::Infer => Task::Infer,
        }
    }

    /// The frame choice for the spec (`None`: every frame); `--seed` and `--window` only
    /// go with `random:N`.
    fn frame_selection(&self) -> anyhow::Result<Option<FrameSelection>> {
        if !matches!(self.frames, FramesFlag::Random(_))
            && (self.seed.is_some() || self.window.is_some())
        {
            bail!("--seed and --window choose random frames: give them with --frames random:N");
        }
        let rule = match &self.frames {
            FramesFlag::All => return Ok(None),
            FramesFlag::Every(k) => Rule::Every(*k),
            FramesFlag::Fps(rate) => Rule::Fps(*rate),
            FramesFlag::At(times) => Rule::At(FrameTimes {
                seconds: times.clone(),
            }),
            FramesFlag::Random(count) => {
                let (window_start, window_end) = self.window.unwrap_or((0.0, 0.0));
                Rule::Random(RandomFrames {
                    count: *count,
                    seed: self.seed.unwrap_or(0),
                    window_start,
                    window_end,
                })
            }
        };
        Ok(Some(FrameSelection { rule: Some(rule) }))
    }

    /// The extension of this job's outputs: `jsonl` for infer, else `mp4`.
    pub fn output_extension(&self) -> &'static str {
        match self.task {
            TaskOption::Infer => "jsonl",
            TaskOption::Process => "mp4",
        }
    }

    /// The spec for `input` -> `output` with these options.
    pub fn spec(
        &self,
        input: String,
        output: String,
        labels: HashMap<String, String>,
    ) -> anyhow::Result<JobSpec> {
        self.spec_of(vec![(input, output)], labels)
    }

    /// The spec for each (input, output) of `pairs` with these options: a job of one
    /// input, or of the list when there are several.
    pub fn spec_of(
        &self,
        mut pairs: Vec<(String, String)>,
        labels: HashMap<String, String>,
    ) -> anyhow::Result<JobSpec> {
        if self.skip_unreadable && pairs.len() < 2 {
            bail!("--skip-unreadable is for jobs of several inputs");
        }
        // On the wire a scale of 0 means "not given" (1x): said here, it is a mistake.
        if !(self.scale.is_finite() && self.scale > 0.0) {
            bail!(
                "--scale {} is not a scale; give a factor from 0.05 to 16 (1 keeps the size)",
                self.scale
            );
        }
        let (input_uri, output_uri, inputs) = if pairs.len() == 1 {
            let (input, output) = pairs.remove(0);
            (input, output, Vec::new())
        } else {
            let inputs = pairs
                .into_iter()
                .map(|(input_uri, output_uri)| JobInput {
                    input_uri,
                    output_uri,
                })
                .collect();
            (String::new(), String::new(), inputs)
        };
        Ok(JobSpec {
            input_uri,
            output_uri,
            inputs,
            skip_unreadable_inputs: self.skip_unreadable,
            processor: Some(ProcessorSpec {
                model: self.model.clone(),
                scale: self.scale,
                deinterlace: self.deinterlace,
            }),
            encoder: Some(EncoderSettings {
                crf: if self.lossless { 0 } else { self.crf },
                preset: self.preset.clone(),
                lossless: self.lossless,
                encoder: self.encoder.clone(),
            }),
            chunks: self.chunks,
            profile: self.profile.clone(),
            labels,
            task: self.spec_task() as i32,
            top_k: self.top_k,
            deadline_seconds: self.deadline,
            max_cost_usd: self.max_cost,
            frames: self.frame_selection()?,
            priority: self.priority.wire() as i32,
            notify_url: self.notify_url.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_flags_parse_into_their_choice_or_say_the_forms() {
        assert_eq!(parse_frames("every:5"), Ok(FramesFlag::Every(5)));
        assert_eq!(parse_frames("fps:2.5"), Ok(FramesFlag::Fps(2.5)));
        assert_eq!(
            parse_frames("at:1,2.5, 3"),
            Ok(FramesFlag::At(vec![1.0, 2.5, 3.0]))
        );
        assert_eq!(parse_frames("random:10"), Ok(FramesFlag::Random(10)));
        let error = parse_frames("every").expect_err("no K");
        assert!(error.contains("every:K"), "{error}");
        assert!(parse_frames("at:1,x").is_err());
        assert_eq!(parse_window("2:8"), Ok((2.0, 8.0)));
        assert_eq!(parse_window("2:"), Ok((2.0, 0.0)));
        assert!(parse_window("2")
            .expect_err("no colon")
            .contains("START:END"));
    }
}
