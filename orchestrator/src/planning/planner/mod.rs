//! The planner: how many chunks a job gets and which frames each one holds.
//!
//! The count comes from, in order: the job's own fixed count; `auto`, the cost model's
//! predictions for every candidate count chosen by the job's goal ([`auto`]), once the
//! cost history knows the job's kind; else the duration thresholds of a profile
//! ([`thresholds`]), the rule then saying no history decided it. `auto` weighs counts
//! from 1 up to `planner.max_chunks`, never more than the frames, and never a chunk
//! shorter than `planner.min_chunk_seconds` rounded up to whole GOPs. The frames are then
//! cut into ranges ([`cut`]). The plan records the rule in words, the figures that decided
//! it, and the prediction for the count chosen (each count predicted as it would be cut,
//! its longest chunk deciding the wall time). An infer job that chooses frames
//! ([`FrameChoice`]) is planned over its chosen frames: they are what its chunks produce,
//! and the thresholds weigh them as the seconds they would fill at the video's rate.

pub mod auto;
pub mod cut;
pub mod thresholds;

use framefleet_common::config::PlannerConfig;
use framefleet_common::cost::PlanCandidate;
use framefleet_common::media::VideoInfo;
use framefleet_common::proto::{ChosenFrame, Plan};

use crate::jobs::frames::FrameChoice;
use crate::jobs::validate::{Chunking, Goal};
use crate::planning::cost_model::{Capacity, CostModel, Cut, JobShape, Prediction};
use crate::planning::selection::SelectionError;

/// A job's plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The input holds no frames.
    #[error("the input has no video frames to process")]
    NoFrames,
    /// The job's frame choice does not fit the video.
    #[error(transparent)]
    Selection(#[from] SelectionError),
}

/// What the planner weighs besides the video.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    /// How the job asks to be cut.
    pub chunking: &'a Chunking,
    /// The frames it runs on.
    pub frames: &'a FrameChoice,
    /// The cost history's key for it.
    pub kind: &'a str,
    /// The model of its kind, when the history holds one.
    pub model: Option<&'a CostModel>,
    /// Where it would run.
    pub capacity: Capacity,
    /// Seconds its probe took.
    pub probe_seconds: f64,
}

/// A plan and the profile that made it (`auto`, `fixed`, or a threshold profile).
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// The plan.
    pub plan: Plan,
    /// How its count was chosen.
    pub profile: String,
    /// The frames the job chose, in order (empty: every frame).
    pub chosen: Vec<ChosenFrame>,
}

/// Plans `video` for the job in `context`.
pub fn plan(
    video: &VideoInfo,
    context: &PlanContext<'_>,
    config: &PlannerConfig,
) -> Result<Planned, PlanError> {
    let chosen = context.frames.frames(video)?;
    let frames = chosen.as_ref().map_or(video.frames.len(), Vec::len) as u64;
    if frames == 0 {
        return Err(PlanError::NoFrames);
    }
    let shape = JobShape {
        frames,
        pixels: u64::from(video.width) * u64::from(video.height),
        probe_seconds: context.probe_seconds,
    };
    let longest = |n: u32| match &chosen {
        Some(_) => frames.div_ceil(u64::from(n)),
        None => cut::longest(video, n, config.keyframe_slack),
    };
    let predict = |n: u32| {
        context.model.map(|model| {
            let cut = Cut {
                chunks: n,
                longest_frames: longest(n),
            };
            model.predict(&shape, cut, &context.capacity)
        })
    };
    let most = match &chosen {
        Some(_) => u32::try_from(frames)
            .unwrap_or(u32::MAX)
            .min(config.max_chunks.max(1)),
        None => most_chunks(video, config),
    };
    let candidates: Vec<Prediction> = (1..=most).filter_map(predict).collect();
    let seconds = match &chosen {
        Some(_) => frames as f64 * video.duration_seconds() / video.frames.len().max(1) as f64,
        None => video.duration_seconds(),
    };
    let (count, mut rule, profile) = count(seconds, context, config, &candidates);
    let mut count = count;
    if count > config.max_chunks {
        count = config.max_chunks;
        rule.push_str(&format!(", capped by max_chunks {}", config.max_chunks));
    }
    if u64::from(count) > frames {
        count = frames as u32;
        rule.push_str(&format!(", limited to the {frames} frames the job runs on"));
    }
    let count = count.max(1);
    let ranges = match &chosen {
        Some(chosen) => {
            rule.push_str(&format!(", over the {frames} frames the job chose"));
            cut::chosen_ranges(video, chosen, count)
        }
        None => {
            let (ranges, moved) = cut::ranges(video, count, config.keyframe_slack);
            if moved {
                rule.push_str(", boundaries moved onto keyframes");
            }
            ranges
        }
    };
    let one = candidates.first().map_or(0.0, |c| c.wall_seconds);
    let to_candidate = |p: Prediction| candidate(p, one);
    Ok(Planned {
        plan: Plan {
            chunks: count,
            rule,
            ranges,
            frames,
            duration_seconds: video.duration_seconds(),
            predicted: predict(count).map(to_candidate),
            candidates: candidates.into_iter().map(to_candidate).collect(),
            kind: context.kind.to_string(),
        },
        profile,
        chosen: chosen.map_or_else(Vec::new, |chosen| cut::chosen_frames(video, &chosen)),
    })
}

/// The count before the caps, its rule, and the profile that chose it.
fn count(
    seconds: f64,
    context: &PlanContext<'_>,
    config: &PlannerConfig,
    candidates: &[Prediction],
) -> (u32, String, String) {
    let (goal, fallback) = match context.chunking {
        Chunking::Fixed(chunks) => {
            let rule = format!("fixed: the job asked for {chunks}");
            return (*chunks, rule, "fixed".to_string());
        }
        Chunking::Thresholds(profile) => {
            let (count, rule) = thresholds::count(profile, seconds);
            return (count, rule, profile.name.clone());
        }
        Chunking::Auto { goal, fallback } => (goal, fallback),
    };
    if candidates.is_empty() {
        let (count, rule) = thresholds::count(fallback, seconds);
        let rule = format!(
            "no cost history for `{}` yet, so thresholds: {rule}",
            context.kind
        );
        return (count, rule, fallback.name.clone());
    }
    let choice = auto::choose(candidates, auto_goal(*goal, config));
    let jobs = context.model.map_or(0, CostModel::jobs);
    let rule = format!(
        "{} [{jobs} jobs of `{}` in the cost history]",
        choice.rule, context.kind
    );
    (choice.chunks, rule, "auto".to_string())
}

/// What the job wants from `auto`: its deadline, else its price cap, else speed within
/// the GPU-seconds ratio.
fn auto_goal(goal: Goal, config: &PlannerConfig) -> auto::Goal {
    match goal {
        Goal::Deadline(seconds) => auto::Goal::Deadline(seconds),
        Goal::PriceCap(usd) => auto::Goal::PriceCap(usd),
        Goal::Efficient => auto::Goal::Efficient {
            ratio: config.max_gpu_seconds_ratio,
        },
    }
}

/// The most chunks `auto` weighs: `max_chunks`, and no chunk shorter than
/// `min_chunk_seconds` rounded up to whole GOPs (when the input has regular keyframes).
pub fn most_chunks(video: &VideoInfo, config: &PlannerConfig) -> u32 {
    let frames = video.frames.len() as u64;
    let duration = video.duration_seconds();
    let rate = if duration > 0.0 {
        frames as f64 / duration
    } else {
        1.0
    };
    let mut shortest = ((config.min_chunk_seconds * rate).ceil() as u64).max(1);
    if let Some(gop) = typical_gop(video) {
        shortest = shortest.div_ceil(gop) * gop;
    }
    let most = (frames / shortest).max(1);
    u32::try_from(most)
        .unwrap_or(u32::MAX)
        .min(config.max_chunks.max(1))
}

/// The median distance between keyframes, in frames (`None` with fewer than two).
fn typical_gop(video: &VideoInfo) -> Option<u64> {
    let keyframes: Vec<usize> = video
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.keyframe)
        .map(|(i, _)| i)
        .collect();
    let mut gaps: Vec<u64> = keyframes.windows(2).map(|w| (w[1] - w[0]) as u64).collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied()
}

fn candidate(prediction: Prediction, one_chunk_wall: f64) -> PlanCandidate {
    PlanCandidate {
        chunks: prediction.chunks,
        wall_seconds: prediction.wall_seconds,
        gpu_seconds: prediction.gpu_seconds,
        cost_usd: prediction.cost_usd,
        stitch_seconds: prediction.stitch_seconds,
        speedup: if prediction.wall_seconds > 0.0 {
            one_chunk_wall / prediction.wall_seconds
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planning::cost_model::History;
    use crate::planning::samples::{ChunkSample, JobSample};
    use framefleet_common::media::{FrameStamp, TimestampSource};
    use framefleet_common::proto::ChunkRange;

    /// How a lanczos job asking for `chunks` (0: none; any count, to test the caps) and
    /// `profile` is cut, as the submission checks type it.
    fn chunking(chunks: u32, profile: &str) -> Chunking {
        if chunks > 0 {
            return Chunking::Fixed(chunks);
        }
        let spec = framefleet_common::proto::JobSpec {
            input_uri: "s3://bucket/in.mp4".into(),
            output_uri: "s3://bucket/out.mp4".into(),
            profile: profile.into(),
            ..Default::default()
        };
        crate::jobs::validate::check(spec, &Default::default())
            .expect("valid")
            .chunking
    }

    fn context<'a>(chunking: &'a Chunking, model: Option<&'a CostModel>) -> PlanContext<'a> {
        PlanContext {
            chunking,
            frames: &FrameChoice::All,
            kind: "lanczos x2, x264 medium on cpu",
            model,
            capacity: Capacity {
                slots: 4,
                hosts: 4,
                warm_slots: 4,
                starting_slots: 0,
                cold_start_seconds: 0.0,
                gpus_per_slot: 1.0,
                price_per_gpu_second: 0.0001,
            },
            probe_seconds: 0.1,
        }
    }

    /// The plan of `requested` chunks.
    fn fixed(input: &VideoInfo, requested: u32, config: &PlannerConfig) -> Plan {
        let spec = chunking(requested, "");
        plan(input, &context(&spec, None), config)
            .expect("plan")
            .plan
    }

    fn video(frames: usize, step: i64, time_base: (i32, i32)) -> VideoInfo {
        VideoInfo {
            stream_index: 0,
            codec: "h264".into(),
            width: 64,
            height: 48,
            time_base,
            frame_rate: (0, 1),
            frames: (0..frames)
                .map(|i| FrameStamp {
                    pts: i as i64 * step + (i as i64 % 3),
                    keyframe: i % 10 == 0,
                })
                .collect(),
            end_pts: frames as i64 * step,
            fragments: Vec::new(),
            timestamps: TimestampSource::default(),
        }
    }

    #[test]
    fn ranges_cover_every_frame_once_with_exact_timestamps() {
        let config = PlannerConfig::default();
        let input = video(103, 512, (1, 15360));
        for requested in 1..=4 {
            let plan = fixed(&input, requested, &config);
            assert_eq!(plan.ranges.len(), requested as usize);
            let mut next = 0;
            for range in &plan.ranges {
                assert_eq!(range.start_frame, next);
                assert_eq!(range.start_pts, input.frames[next as usize].pts);
                assert!(range.keyframe_pts <= range.start_pts);
                next = range.end_frame;
            }
            assert_eq!(next, 103);
            assert_eq!(plan.ranges.last().map(|r| r.end_pts), Some(input.end_pts));
            let sizes: Vec<u64> = plan
                .ranges
                .iter()
                .map(|r| r.end_frame - r.start_frame)
                .collect();
            // Near-equal: a boundary moves at most a tenth of a chunk, onto a keyframe.
            let nominal = 103 / u64::from(requested);
            assert!(
                sizes
                    .iter()
                    .all(|&s| s.abs_diff(nominal) <= nominal / 5 + 1),
                "{sizes:?}"
            );
            for range in &plan.ranges[1..] {
                let on_keyframe = input.frames[range.start_frame as usize].keyframe;
                let nominal_start = 103 * u64::from(range.index) / u64::from(requested);
                assert!(
                    on_keyframe || range.start_frame == nominal_start,
                    "chunk {} starts at {}",
                    range.index,
                    range.start_frame
                );
                if on_keyframe {
                    assert_eq!(range.keyframe_pts, range.start_pts);
                }
            }
        }
    }

    fn with_gop(frames: usize, gop: usize) -> VideoInfo {
        let mut input = video(frames, 1, (1, 30));
        for (i, frame) in input.frames.iter_mut().enumerate() {
            frame.pts = i as i64;
            frame.keyframe = i % gop == 0;
        }
        input
    }

    #[test]
    fn every_chunk_starts_on_a_keyframe_when_that_keeps_them_even() {
        let config = PlannerConfig {
            max_chunks: 8,
            ..PlannerConfig::default()
        };
        // 30 s at 30 fps with 2 s GOPs: 15 GOPs into 8 chunks.
        let input = with_gop(900, 60);
        let plan = fixed(&input, 8, &config);
        let even = 900_f64 / 8.0;
        for range in &plan.ranges {
            assert_eq!(range.keyframe_pts, range.start_pts, "{range:?}");
            let length = (range.end_frame - range.start_frame) as f64;
            assert!(length <= even * 1.25 + 1.0, "{range:?}");
        }
        assert!(plan.rule.contains("keyframes"), "{}", plan.rule);
    }

    #[test]
    fn sparse_keyframes_keep_chunks_even_and_decode_from_the_gop_head() {
        let config = PlannerConfig {
            max_chunks: 8,
            ..PlannerConfig::default()
        };
        // 250-frame GOPs (x264's default) leave 4 keyframes for 8 chunks.
        let input = with_gop(900, 250);
        let plan = fixed(&input, 8, &config);
        assert_eq!(plan.chunks, 8);
        for range in &plan.ranges {
            let length = range.end_frame - range.start_frame;
            assert!(length.abs_diff(112) <= 12, "{range:?}");
            assert_eq!(
                range.keyframe_pts,
                input.keyframe_at_or_before(range.start_frame as usize)
            );
        }
        // With no slack, only boundaries near a keyframe move.
        let strict = PlannerConfig {
            keyframe_slack: 0.0,
            ..config
        };
        let plan = fixed(&with_gop(900, 60), 8, &strict);
        assert!(plan.ranges.iter().any(|r| r.keyframe_pts != r.start_pts));
    }

    #[test]
    fn chosen_frames_are_cut_into_even_runs_that_decode_from_their_keyframes() {
        let config = PlannerConfig::default();
        let input = with_gop(900, 60);
        let spec = chunking(4, "");
        let every = FrameChoice::Every(7);
        let planned = plan(
            &input,
            &PlanContext {
                frames: &every,
                ..context(&spec, None)
            },
            &config,
        )
        .expect("plan");
        let (plan, chosen) = (planned.plan, planned.chosen);
        assert_eq!(plan.frames, 129);
        assert_eq!(chosen.len(), 129);
        let counts: Vec<u64> = plan.ranges.iter().map(ChunkRange::frame_count).collect();
        assert_eq!(counts, [32, 32, 32, 33]);
        for range in &plan.ranges {
            assert_eq!(range.start_frame % 7, 0, "{range:?}");
            assert_eq!(range.keyframe_pts, range.start_pts - range.start_pts % 60);
            assert_eq!((range.end_frame - 1) % 7, 0, "{range:?}");
        }
        assert!(chosen
            .iter()
            .all(|c| c.pts == c.index as i64 && c.keyframe_pts == c.pts - c.pts % 60));
        assert!(
            plan.rule.contains("over the 129 frames the job chose"),
            "{}",
            plan.rule
        );
    }

    #[test]
    fn counts_are_capped_by_config_and_by_frames() {
        let config = PlannerConfig {
            max_chunks: 3,
            ..PlannerConfig::default()
        };
        let capped = fixed(&video(100, 1, (1, 30)), 8, &config);
        assert_eq!(capped.chunks, 3);
        assert!(capped.rule.contains("max_chunks 3"));
        let one_frame = fixed(&video(1, 1, (1, 30)), 3, &config);
        assert_eq!(one_frame.chunks, 1);
    }

    /// A history of one 1-chunk job: 100 frames at `per_frame` s each, 1 s fixed.
    fn model(per_frame: f64) -> CostModel {
        CostModel::fit(History {
            chunks: vec![ChunkSample {
                host: "h".into(),
                sharing: 1,
                pixels: 64 * 48,
                frames: 100,
                span_seconds: 1.0 + 100.0 * per_frame,
                stream_seconds: 100.0 * per_frame,
                model_load_seconds: 0.0,
            }],
            jobs: vec![JobSample {
                chunks: 1,
                frames: 100,
                pixels: 64 * 48,
                probe_seconds: 0.1,
                dispatch_seconds: 0.1,
                stitch_seconds: 0.1,
                other_seconds: 0.1,
                wall_seconds: 0.0,
            }],
        })
        .expect("model")
    }

    #[test]
    fn auto_plans_from_history_and_says_so_and_thresholds_stand_in_without_it() {
        let config = PlannerConfig::default();
        let long = with_gop(900, 30); // 30 s, 1 s GOPs.
        let spec = chunking(0, "");
        let without = plan(&long, &context(&spec, None), &config).expect("plan");
        assert_eq!(without.profile, "light");
        assert!(
            without.plan.rule.starts_with(
                "no cost history for `lanczos x2, x264 medium on cpu` yet, so thresholds: light"
            ),
            "{}",
            without.plan.rule
        );
        assert!(without.plan.predicted.is_none() && without.plan.candidates.is_empty());

        let slow = model(1.0);
        let with = plan(&long, &context(&spec, Some(&slow)), &config).expect("plan");
        assert_eq!(with.profile, "auto");
        assert_eq!(with.plan.chunks, 4, "{}", with.plan.rule);
        assert!(with
            .plan
            .rule
            .contains("[1 jobs of `lanczos x2, x264 medium on cpu`"));
        assert_eq!(with.plan.candidates.len(), 4);
        let predicted = with.plan.predicted.expect("predicted");
        assert_eq!(predicted.chunks, 4);
        assert!(predicted.speedup > 3.0, "{predicted:?}");

        let cheap = model(0.001);
        let with = plan(&long, &context(&spec, Some(&cheap)), &config).expect("plan");
        assert_eq!(with.plan.chunks, 1, "{}", with.plan.rule);

        // A fixed count is predicted too, and a named profile keeps its thresholds.
        let four = chunking(4, "");
        let fixed = plan(&long, &context(&four, Some(&cheap)), &config).expect("plan");
        assert_eq!(fixed.plan.predicted.map(|p| p.chunks), Some(4));
        let light = chunking(0, "light");
        let named = plan(&long, &context(&light, Some(&slow)), &config).expect("plan");
        // 30 s is not under light's 30 s threshold: 2 chunks, where auto chose 4.
        assert_eq!(named.plan.chunks, 2);
        assert!(named.plan.rule.starts_with("light:"), "{}", named.plan.rule);
    }

    #[test]
    fn auto_never_cuts_a_chunk_shorter_than_the_gop_aligned_minimum() {
        let config = PlannerConfig {
            max_chunks: 64,
            ..PlannerConfig::default()
        };
        // 10 s at 30 fps: with 2 s GOPs, chunks of at least one GOP, so at most 5.
        assert_eq!(most_chunks(&with_gop(300, 60), &config), 5);
        // With a single keyframe, the 1 s minimum alone: 10.
        assert_eq!(most_chunks(&with_gop(300, 1000), &config), 10);
        // Never more than max_chunks, never fewer than one.
        assert_eq!(
            most_chunks(&with_gop(3000, 30), &PlannerConfig::default()),
            4
        );
        assert_eq!(most_chunks(&with_gop(5, 30), &config), 1);
        let spec = chunking(0, "");
        let slow = model(1.0);
        let planned =
            plan(&with_gop(300, 60), &context(&spec, Some(&slow)), &config).expect("plan");
        assert!(planned.plan.chunks <= 5, "{}", planned.plan.rule);
        assert!(planned.plan.candidates.len() == 5);
    }
}
