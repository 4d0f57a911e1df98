//! The planner: how many chunks a job gets and which frames each one holds.
//!
//! The count comes from the duration thresholds of the job's profile (or the job's own fixed
//! count), capped by `max_chunks` and by the number of frames. Frames are then cut into
//! contiguous ranges of near-equal length, each carried as frame indices and as timestamps
//! (with the keyframe to start decoding from), so variable frame rate input stays exact.
//! Chunks start on keyframes whenever that keeps them within `planner.keyframe_slack` of
//! an even share: such a chunk decodes (and reads) nothing before its start. Otherwise only
//! the boundaries with a keyframe within a tenth of a chunk move onto it.

use framefleet_common::config::PlannerConfig;
use framefleet_common::media::VideoInfo;
use framefleet_common::proto::{ChunkRange, Plan};

/// A job's plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The job names a profile the configuration does not have.
    #[error("unknown planner profile `{profile}`; configured profiles: {known}")]
    UnknownProfile {
        /// The profile asked for.
        profile: String,
        /// Profiles that exist.
        known: String,
    },
    /// The input holds no frames.
    #[error("the input has no video frames to process")]
    NoFrames,
}

/// The profile a job uses: its own, or `light` for lanczos and `neural` for models.
pub fn profile_for(requested: &str, model: &str) -> String {
    if !requested.is_empty() {
        requested.to_string()
    } else if model.is_empty() || model == "lanczos" {
        "light".to_string()
    } else {
        "neural".to_string()
    }
}

/// Cuts `video` into chunks: `requested` chunks when non-zero, else by `profile`'s
/// thresholds.
pub fn plan(
    video: &VideoInfo,
    requested: u32,
    profile: &str,
    config: &PlannerConfig,
) -> Result<Plan, PlanError> {
    let frames = video.frames.len() as u64;
    if frames == 0 {
        return Err(PlanError::NoFrames);
    }
    let duration = video.duration_seconds();
    let (mut count, mut rule) = if requested > 0 {
        (requested, format!("fixed: the job asked for {requested}"))
    } else {
        let thresholds = config
            .profiles
            .get(profile)
            .ok_or_else(|| PlanError::UnknownProfile {
                profile: profile.to_string(),
                known: config
                    .profiles
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        match thresholds
            .thresholds
            .iter()
            .find(|t| duration < t.below_seconds)
        {
            Some(t) => (
                t.chunks,
                format!(
                    "{profile}: duration {duration:.2} s < {} s -> {}",
                    t.below_seconds, t.chunks
                ),
            ),
            None => (
                thresholds.otherwise,
                format!(
                    "{profile}: duration {duration:.2} s >= every threshold -> {}",
                    thresholds.otherwise
                ),
            ),
        }
    };
    if count > config.max_chunks {
        count = config.max_chunks;
        rule.push_str(&format!(", capped by max_chunks {}", config.max_chunks));
    }
    if u64::from(count) > frames {
        count = frames as u32;
        rule.push_str(&format!(", limited to the {frames} frames of the input"));
    }
    let count = count.max(1);
    let bounds = boundaries(video, count, config.keyframe_slack);
    if bounds
        .iter()
        .enumerate()
        .any(|(i, &b)| b != frames * i as u64 / u64::from(count))
    {
        rule.push_str(", boundaries moved onto keyframes");
    }
    let ranges = (0..count)
        .map(|index| {
            let (start, end) = (bounds[index as usize], bounds[index as usize + 1]);
            let end_pts = match video.frames.get(end as usize) {
                Some(next) => next.pts,
                None => video.end_pts,
            };
            let keyframe_pts = video.keyframe_at_or_before(start as usize);
            let skip = video.skippable_before(keyframe_pts);
            ChunkRange {
                index,
                start_frame: start,
                end_frame: end,
                start_pts: video.frames[start as usize].pts,
                end_pts,
                keyframe_pts,
                skip_from: skip.start,
                skip_to: skip.end,
            }
        })
        .collect();
    Ok(Plan {
        chunks: count,
        rule,
        ranges,
        frames,
        duration_seconds: duration,
    })
}

/// `count + 1` frame indices cutting the video into near-equal ranges. Every range starts on
/// a keyframe when that keeps the longest within `slack` of an even share (no chunk then
/// reads or decodes anything before its range); otherwise each inner boundary moves onto
/// the nearest keyframe within a tenth of a chunk, when there is one.
fn boundaries(video: &VideoInfo, count: u32, slack: f64) -> Vec<u64> {
    let frames = video.frames.len() as u64;
    let count = u64::from(count);
    let keyframes: Vec<u64> = video
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.keyframe)
        .map(|(i, _)| i as u64)
        .collect();
    if let Some(aligned) = keyframe_aligned(frames, count, &keyframes) {
        let longest = aligned
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(frames);
        if longest as f64 <= frames.div_ceil(count) as f64 * (1.0 + slack) {
            return aligned;
        }
    }
    let tolerance = frames / count / 10;
    let mut bounds = vec![0];
    for i in 1..count {
        let nominal = frames * i / count;
        let next_nominal = frames * (i + 1) / count;
        let previous = bounds[bounds.len() - 1];
        let snapped = keyframes
            .iter()
            .copied()
            .filter(|&k| k > previous && k < next_nominal && k.abs_diff(nominal) <= tolerance)
            .min_by_key(|&k| k.abs_diff(nominal));
        bounds.push(snapped.unwrap_or(nominal).max(previous + 1));
    }
    bounds.push(frames);
    bounds
}

/// Boundaries where every inner one is the keyframe nearest its even position (keeping
/// enough keyframes for the boundaries after it); `None` when there are fewer keyframes
/// than inner boundaries.
fn keyframe_aligned(frames: u64, count: u64, keyframes: &[u64]) -> Option<Vec<u64>> {
    let inner: Vec<u64> = keyframes.iter().copied().filter(|&k| k > 0).collect();
    let needed = usize::try_from(count.saturating_sub(1)).ok()?;
    if inner.len() < needed {
        return None;
    }
    let mut bounds = vec![0];
    let mut first_free = 0;
    for i in 1..=needed {
        let nominal = frames * i as u64 / count;
        let last_usable = inner.len() - 1 - (needed - i);
        let pick = (first_free..=last_usable).min_by_key(|&j| inner[j].abs_diff(nominal))?;
        bounds.push(inner[pick]);
        first_free = pick + 1;
    }
    bounds.push(frames);
    Some(bounds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_common::media::{FrameStamp, TimestampSource};

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
    fn thresholds_choose_the_count_and_the_rule_says_why() {
        let config = PlannerConfig::default();
        // 1/1000 time base, 40 ms frames.
        let short = video(50, 40, (1, 1000)); // 2 s
        let medium = video(125, 40, (1, 1000)); // 5 s
        let long = video(500, 40, (1, 1000)); // 20 s
        assert_eq!(plan(&short, 0, "neural", &config).expect("plan").chunks, 1);
        assert_eq!(plan(&medium, 0, "neural", &config).expect("plan").chunks, 2);
        let neural_long = plan(&long, 0, "neural", &config).expect("plan");
        assert_eq!(neural_long.chunks, 4);
        assert!(
            neural_long.rule.starts_with("neural: duration 20.00 s"),
            "{}",
            neural_long.rule
        );
        assert_eq!(plan(&long, 0, "light", &config).expect("plan").chunks, 1);
    }

    #[test]
    fn ranges_cover_every_frame_once_with_exact_timestamps() {
        let config = PlannerConfig::default();
        let input = video(103, 512, (1, 15360));
        for requested in 1..=4 {
            let plan = plan(&input, requested, "light", &config).expect("plan");
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
        let plan = plan(&input, 8, "light", &config).expect("plan");
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
        let plan = plan(&input, 8, "light", &config).expect("plan");
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
        let plan = super::plan(&with_gop(900, 60), 8, "light", &strict).expect("plan");
        assert!(plan.ranges.iter().any(|r| r.keyframe_pts != r.start_pts));
    }

    #[test]
    fn counts_are_capped_by_config_and_by_frames() {
        let config = PlannerConfig {
            max_chunks: 3,
            ..PlannerConfig::default()
        };
        let capped = plan(&video(100, 1, (1, 30)), 8, "light", &config).expect("plan");
        assert_eq!(capped.chunks, 3);
        assert!(capped.rule.contains("max_chunks 3"));
        let one_frame = plan(&video(1, 1, (1, 30)), 3, "light", &config).expect("plan");
        assert_eq!(one_frame.chunks, 1);
        assert!(plan(&video(10, 1, (1, 30)), 0, "nope", &config).is_err());
        assert_eq!(profile_for("", "lanczos"), "light");
        assert_eq!(profile_for("", "realesr-animevideov3-x2"), "neural");
    }
}
