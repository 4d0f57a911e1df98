//! A job's choice of frames (`JobSpec.frames`), checked once at submission into a
//! [`FrameChoice`]: every frame, every k-th, the frames at the ticks of a rate, at given
//! times, or `n` drawn at random in a window with a seed. Resolving a choice against the
//! probed video is planning's work (`planning::selection`).

use framefleet_common::proto::frame_selection::Rule;
use framefleet_common::proto::{FrameSelection, FrameTimes, RandomFrames};

/// The most explicit times one job may list.
const MAX_TIMES: usize = 100_000;

/// A job's frame choice, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameChoice {
    /// Every frame.
    All,
    /// Frames 0, k, 2k, ...
    Every(u64),
    /// The frame shown at each tick of this many frames per second, from the first frame.
    Rate(f64),
    /// The frames shown at these times (seconds).
    At(Vec<f64>),
    /// `count` frames drawn with `seed` among those shown in `[start, end)` seconds (`end`
    /// `None`: to the end of the video).
    Random {
        /// Frames to draw.
        count: u32,
        /// The draw's seed.
        seed: u64,
        /// Start of the window, seconds.
        start: f64,
        /// End of the window, seconds (exclusive).
        end: Option<f64>,
    },
}

impl FrameChoice {
    /// Checks the job's selection (absent: every frame); the error says what to fix.
    pub fn check(selection: Option<&FrameSelection>) -> Result<Self, String> {
        let Some(rule) = selection.and_then(|s| s.rule.as_ref()) else {
            return Ok(FrameChoice::All);
        };
        match rule {
            Rule::Every(0) => Err("frames every:K needs K of 1 or more".into()),
            Rule::Every(1) => Ok(FrameChoice::All),
            Rule::Every(k) => Ok(FrameChoice::Every(*k)),
            Rule::Fps(rate) if rate.is_finite() && *rate > 0.0 => Ok(FrameChoice::Rate(*rate)),
            Rule::Fps(rate) => Err(format!(
                "frames fps:{rate} needs a rate above 0 frames per second"
            )),
            Rule::At(FrameTimes { seconds }) => check_times(seconds),
            Rule::Random(random) => check_random(random),
        }
    }
}

fn check_times(seconds: &[f64]) -> Result<FrameChoice, String> {
    if seconds.is_empty() {
        return Err("frames at: needs at least one time, e.g. at:1.5,3".into());
    }
    if seconds.len() > MAX_TIMES {
        return Err(format!(
            "frames at: lists {} times; at most {MAX_TIMES} fit one job",
            seconds.len()
        ));
    }
    match seconds.iter().find(|t| !t.is_finite() || **t < 0.0) {
        Some(bad) => Err(format!(
            "frames at: time {bad} is not a time in the video; give seconds of 0 or more"
        )),
        None => Ok(FrameChoice::At(seconds.to_vec())),
    }
}

fn check_random(random: &RandomFrames) -> Result<FrameChoice, String> {
    let (start, end) = (random.window_start, random.window_end);
    if random.count == 0 {
        return Err("frames random:N needs N of 1 or more".into());
    }
    if !start.is_finite() || start < 0.0 || !end.is_finite() || end < 0.0 {
        return Err(format!(
            "the window {start}:{end} is not a time span; give START:END in seconds, 0 or more"
        ));
    }
    if end != 0.0 && end <= start {
        return Err(format!(
            "the window {start}:{end} ends before it starts; give START:END with END after START"
        ));
    }
    Ok(FrameChoice::Random {
        count: random.count,
        seed: random.seed,
        start,
        end: (end > 0.0).then_some(end),
    })
}
