//! Cutting a video into a given number of chunks: contiguous ranges of near-equal
//! length, each carried as frame indices and as timestamps (with the keyframe to start
//! decoding from), so variable frame rate input stays exact. Chunks start on keyframes
//! whenever that keeps them within `planner.keyframe_slack` of an even share: such a chunk
//! decodes (and reads) nothing before its start. Otherwise only the boundaries with a
//! keyframe within a tenth of a chunk move onto it. An infer job that chose some frames is
//! cut over its chosen frames instead ([`chosen_ranges`]): each chunk holds a run of them.

use framefleet_common::media::VideoInfo;
use framefleet_common::proto::{ChosenFrame, ChunkRange};

/// The ranges of `count` chunks of `video` (at least one frame each), and whether any
/// boundary moved off its even position onto a keyframe.
pub fn ranges(video: &VideoInfo, count: u32, slack: f64) -> (Vec<ChunkRange>, bool) {
    let frames = video.frames.len() as u64;
    let bounds = boundaries(video, count, slack);
    let moved = bounds
        .iter()
        .enumerate()
        .any(|(i, &b)| b != frames * i as u64 / u64::from(count));
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
                chosen_frames: 0,
            }
        })
        .collect();
    (ranges, moved)
}

/// The ranges of `count` chunks over the chosen frames of `video` (indices ascending, at
/// least `count`): near-equal runs of chosen frames, each range spanning from its first
/// chosen frame to just after its last, with `chosen_frames` its run's length.
pub fn chosen_ranges(video: &VideoInfo, chosen: &[usize], count: u32) -> Vec<ChunkRange> {
    let total = chosen.len();
    let count = count as usize;
    (0..count)
        .map(|index| {
            let run = &chosen[total * index / count..total * (index + 1) / count];
            let (first, last) = (run[0], run[run.len() - 1]);
            let keyframe_pts = video.keyframe_at_or_before(first);
            let skip = video.skippable_before(keyframe_pts);
            ChunkRange {
                index: index as u32,
                start_frame: first as u64,
                end_frame: last as u64 + 1,
                start_pts: video.frames[first].pts,
                end_pts: video.frames.get(last + 1).map_or(video.end_pts, |f| f.pts),
                keyframe_pts,
                skip_from: skip.start,
                skip_to: skip.end,
                chosen_frames: run.len() as u64,
            }
        })
        .collect()
}

/// The chosen frames of `video` as chunks are told them: index, timestamp and the keyframe
/// decoding starts from.
pub fn chosen_frames(video: &VideoInfo, chosen: &[usize]) -> Vec<ChosenFrame> {
    chosen
        .iter()
        .map(|&index| ChosenFrame {
            index: index as u64,
            pts: video.frames[index].pts,
            keyframe_pts: video.keyframe_at_or_before(index),
        })
        .collect()
}

/// Frames of the longest of `count` chunks of `video`, as [`ranges`] cuts them.
pub fn longest(video: &VideoInfo, count: u32, slack: f64) -> u64 {
    boundaries(video, count, slack)
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or(0)
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
