//! Which frames an infer job runs its model on (`JobSpec.frames`): every frame, every k-th
//! frame, the frames shown at the ticks of a rate, the frames shown at given times, or `n`
//! frames drawn at random within a time window with a seed.
//!
//! A job's choice is checked once at submission into a [`FrameChoice`], and resolved
//! against the probed video into frame indices here, on the orchestrator: the chunks are
//! then cut over the chosen frames, so the same job picks the same frames however many
//! chunks or workers run it. Times are seconds on the video stream's clock (the `time` of
//! the output lines); the frame shown at a time is the last one whose timestamp is not
//! after it. The random draw uses its own generator (SplitMix64 and a partial
//! Fisher-Yates shuffle), so a seed means the same frames in every version.

use framefleet_common::media::VideoInfo;

use crate::jobs::frames::FrameChoice;

/// A frame choice that cannot be resolved against the video it was made for.
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    /// A time asked for is at or after the video's end.
    #[error(
        "no frame is shown at {time} s: the video ends at {end:.3} s; choose times before its end"
    )]
    AfterEnd {
        /// The time asked for.
        time: f64,
        /// The video's end, seconds.
        end: f64,
    },
    /// The random window holds no frame.
    #[error("no frame is shown between {start} s and {end:.3} s (the video runs from {first:.3} s to {last:.3} s); choose a window inside it")]
    EmptyWindow {
        /// Window start.
        start: f64,
        /// Window end.
        end: f64,
        /// The video's first frame time.
        first: f64,
        /// The video's end.
        last: f64,
    },
}

impl FrameChoice {
    /// The chosen frames' indices into `video.frames`, ascending and distinct; `None` when
    /// the job takes every frame.
    pub fn frames(&self, video: &VideoInfo) -> Result<Option<Vec<usize>>, SelectionError> {
        let total = video.frames.len();
        let mut chosen = match self {
            FrameChoice::All => return Ok(None),
            FrameChoice::Every(k) => (0..total).step_by(*k as usize).collect(),
            FrameChoice::Rate(rate) => at_rate(video, *rate),
            FrameChoice::At(times) => times
                .iter()
                .map(|&time| shown_at(video, time))
                .collect::<Result<Vec<_>, _>>()?,
            FrameChoice::Random {
                count,
                seed,
                start,
                end,
            } => drawn(video, *count, *seed, *start, *end)?,
        };
        chosen.sort_unstable();
        chosen.dedup();
        Ok(Some(chosen))
    }
}

/// `seconds` on the stream's clock in ticks, rounded down (with a millionth of a tick of
/// tolerance, so that 1.0 s names the frame at exactly 1.0 s despite rounding).
fn ticks(video: &VideoInfo, seconds: f64) -> i64 {
    let (num, den) = (f64::from(video.time_base.0), f64::from(video.time_base.1));
    (seconds * den / num.max(1.0) + 1e-6).floor() as i64
}

/// The frame shown at `time`: the last whose timestamp is not after it (the first frame
/// for a time before it).
fn shown_at(video: &VideoInfo, time: f64) -> Result<usize, SelectionError> {
    let at = ticks(video, time);
    if at >= video.end_pts {
        return Err(SelectionError::AfterEnd {
            time,
            end: video.seconds(video.end_pts),
        });
    }
    Ok(video
        .frames
        .partition_point(|f| f.pts <= at)
        .saturating_sub(1))
}

/// The frames shown at `first + k / rate` seconds, up to the video's end.
///
/// The work is bounded by the frames, never by the rate: the ticks are not walked one by
/// one, but after each frame the walk jumps to the last tick before the next frame starts
/// (at most three steps a frame), and a rate finer than the stream's clock takes every
/// frame, since every frame then holds a tick.
fn at_rate(video: &VideoInfo, rate: f64) -> Vec<usize> {
    let Some(first) = video.frames.first() else {
        return Vec::new();
    };
    let clock_rate = f64::from(video.time_base.1) / f64::from(video.time_base.0.max(1));
    if rate >= clock_rate {
        return (0..video.frames.len()).collect();
    }
    let start = video.seconds(first.pts);
    let mut chosen: Vec<usize> = Vec::new();
    let mut tick: u64 = 0;
    loop {
        let time = start + tick as f64 / rate;
        if ticks(video, time) >= video.end_pts {
            break;
        }
        let Ok(frame) = shown_at(video, time) else {
            break;
        };
        if chosen.last() != Some(&frame) {
            chosen.push(frame);
        }
        let Some(next) = video.frames.get(frame + 1) else {
            break;
        };
        // Saturating: a jump past u64 ends the walk at the video's end.
        let before_next = ((video.seconds(next.pts) - start) * rate).floor() as u64;
        tick = before_next.max(tick.saturating_add(1));
    }
    chosen
}

/// `count` frames drawn with `seed` among those whose timestamps fall in the window.
fn drawn(
    video: &VideoInfo,
    count: u32,
    seed: u64,
    start: f64,
    end: Option<f64>,
) -> Result<Vec<usize>, SelectionError> {
    let from = ticks(video, start);
    let to = end.map_or(video.end_pts, |end| ticks(video, end));
    let mut pool: Vec<usize> = (0..video.frames.len())
        .filter(|&i| (from..to).contains(&video.frames[i].pts))
        .collect();
    if pool.is_empty() {
        return Err(SelectionError::EmptyWindow {
            start,
            end: end.unwrap_or_else(|| video.seconds(video.end_pts)),
            first: video.frames.first().map_or(0.0, |f| video.seconds(f.pts)),
            last: video.seconds(video.end_pts),
        });
    }
    let take = (count as usize).min(pool.len());
    let mut generator = SplitMix64(seed);
    for i in 0..take {
        let j = i + generator.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(take);
    Ok(pool)
}

/// Sebastiano Vigna's SplitMix64: small, fixed forever, and good enough to spread a draw.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (Lemire's multiply-shift; the bias is below 2^-32 for any
    /// frame count).
    fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use framefleet_common::media::{FrameStamp, TimestampSource};
    use framefleet_common::proto::frame_selection::Rule;
    use framefleet_common::proto::{FrameSelection, FrameTimes, RandomFrames};

    /// `frames` frames at 25 fps in a 1/12800 time base, starting at `first` ticks, a
    /// keyframe every 25.
    fn video(frames: usize, first: i64) -> VideoInfo {
        VideoInfo {
            stream_index: 0,
            codec: "h264".into(),
            width: 64,
            height: 64,
            time_base: (1, 12800),
            frame_rate: (25, 1),
            frames: (0..frames)
                .map(|i| FrameStamp {
                    pts: first + 512 * i as i64,
                    keyframe: i % 25 == 0,
                })
                .collect(),
            end_pts: first + 512 * frames as i64,
            fragments: Vec::new(),
            timestamps: TimestampSource::Presentation,
        }
    }

    fn choose(rule: Rule) -> Result<FrameChoice, String> {
        FrameChoice::check(Some(&FrameSelection { rule: Some(rule) }))
    }

    fn chosen(choice: &FrameChoice, video: &VideoInfo) -> Vec<usize> {
        choice
            .frames(video)
            .expect("resolves")
            .expect("a selection")
    }

    #[test]
    fn every_kth_and_a_rate_pick_evenly_spaced_frames() {
        let clip = video(100, 0);
        assert_eq!(
            chosen(&choose(Rule::Every(30)).expect("valid"), &clip),
            [0, 30, 60, 90]
        );
        // 25 fps sampled at 2 fps: every 12.5 frames, the frame shown at each tick.
        let rate = chosen(&choose(Rule::Fps(2.0)).expect("valid"), &clip);
        assert_eq!(rate, [0, 12, 25, 37, 50, 62, 75, 87]);
        // Faster than the video: every frame once.
        assert_eq!(
            chosen(&choose(Rule::Fps(100.0)).expect("valid"), &clip).len(),
            100
        );
        assert_eq!(choose(Rule::Every(1)).expect("valid"), FrameChoice::All);
        assert!(FrameChoice::All.frames(&clip).expect("valid").is_none());
    }

    #[test]
    fn a_time_names_the_frame_shown_then() {
        let clip = video(100, 1024);
        let times = FrameTimes {
            seconds: vec![1.0, 0.0, 0.11, 1.0, 3.99],
        };
        // 1.0 s is frame 23 exactly (1024 + 23 * 512 = 12800 ticks); 0 s is before the
        // first frame (0.08 s), so the first; 0.11 s still shows frame 0; 3.99 s frame 97.
        assert_eq!(
            chosen(&choose(Rule::At(times)).expect("valid"), &clip),
            [0, 23, 97]
        );
        let late = FrameTimes {
            seconds: vec![4.08],
        };
        let error = choose(Rule::At(late))
            .expect("valid")
            .frames(&clip)
            .expect_err("refused");
        assert!(
            error.to_string().contains("the video ends at 4.080 s"),
            "{error}"
        );
        let negative = FrameTimes {
            seconds: vec![-1.0],
        };
        assert!(choose(Rule::At(negative))
            .expect_err("refused")
            .contains("0 or more"));
    }

    #[test]
    fn a_seeded_draw_is_reproducible_inside_its_window() {
        let clip = video(3000, 0);
        let draw = |seed| {
            choose(Rule::Random(RandomFrames {
                count: 10,
                seed,
                window_start: 10.0,
                window_end: 20.0,
            }))
            .expect("valid")
        };
        let first = chosen(&draw(7), &clip);
        assert_eq!(first, chosen(&draw(7), &clip));
        assert_ne!(first, chosen(&draw(8), &clip));
        assert_eq!(first.len(), 10);
        assert!(first.iter().all(|&i| (250..500).contains(&i)), "{first:?}");
        // More than the window holds: all of them.
        let all = choose(Rule::Random(RandomFrames {
            count: 1000,
            seed: 1,
            window_start: 0.0,
            window_end: 2.0,
        }))
        .expect("valid");
        assert_eq!(chosen(&all, &clip), (0..50).collect::<Vec<_>>());
        let outside = choose(Rule::Random(RandomFrames {
            count: 1,
            seed: 1,
            window_start: 500.0,
            window_end: 0.0,
        }))
        .expect("valid");
        let error = outside.frames(&clip).expect_err("refused").to_string();
        assert!(error.contains("choose a window inside it"), "{error}");
    }

    /// The frames shown at each tick, found by visiting every tick: what `at_rate` must
    /// equal without doing it.
    fn every_tick(video: &VideoInfo, rate: f64) -> Vec<usize> {
        let start = video.seconds(video.frames[0].pts);
        let mut chosen: Vec<usize> = (0u64..)
            .map(|k| start + k as f64 / rate)
            .take_while(|&time| ticks(video, time) < video.end_pts)
            .filter_map(|time| shown_at(video, time).ok())
            .collect();
        chosen.dedup();
        chosen
    }

    #[test]
    fn a_rate_picks_what_visiting_every_tick_would_at_any_rate() {
        let clip = video(250, 300);
        for rate in [
            0.3, 1.0, 2.0, 7.5, 24.0, 25.0, 29.97, 60.0, 1000.0, 12_799.0,
        ] {
            assert_eq!(at_rate(&clip, rate), every_tick(&clip, rate), "{rate} fps");
        }
    }

    #[test]
    fn an_absurd_rate_takes_every_frame_at_once_instead_of_walking_its_ticks() {
        // fps:1e12 once walked 10^13 ticks (and 1e300 never ended): the walk is bounded
        // by the frames whatever number the rate is written with.
        let clip = video(3000, 0);
        for rate in [1e6, 12_800.0, 1e12, 1e300, f64::MAX] {
            let choice = choose(Rule::Fps(rate)).expect("valid");
            assert_eq!(chosen(&choice, &clip).len(), 3000, "{rate} fps");
        }
        let tiny = choose(Rule::Fps(1e-300)).expect("valid");
        assert_eq!(chosen(&tiny, &clip), [0]);
    }

    #[test]
    fn nonsense_is_refused_with_what_to_fix() {
        assert!(choose(Rule::Every(0))
            .expect_err("refused")
            .contains("K of 1 or more"));
        assert!(choose(Rule::Fps(f64::NAN))
            .expect_err("refused")
            .contains("above 0"));
        let backwards = RandomFrames {
            count: 3,
            seed: 0,
            window_start: 5.0,
            window_end: 2.0,
        };
        assert!(choose(Rule::Random(backwards))
            .expect_err("refused")
            .contains("ends before it starts"));
        let none = FrameTimes { seconds: vec![] };
        assert!(choose(Rule::At(none))
            .expect_err("refused")
            .contains("at least one"));
    }
}
