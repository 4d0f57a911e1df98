//! `auto` planning: which chunk count to run, chosen from the cost model's predictions
//! for every candidate count by the job's goal, with the rule written out in words and the
//! figures that decided it.
//!
//! - By default, the fastest count whose GPU-seconds stay within
//!   `planner.max_gpu_seconds_ratio` of one chunk's: speed that costs (almost) nothing.
//! - With a deadline, the cheapest count predicted to finish within it.
//! - With a price cap, the fastest count predicted to cost at most that.

use crate::planning::cost_model::Prediction;

/// What the job wants from its chunk count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// The fastest count within `ratio` times one chunk's GPU-seconds.
    Efficient {
        /// `planner.max_gpu_seconds_ratio`.
        ratio: f64,
    },
    /// The cheapest count done within this many seconds.
    Deadline(f64),
    /// The fastest count costing at most this many USD.
    PriceCap(f64),
}

/// The count chosen and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// Chunks.
    pub chunks: u32,
    /// The rule, with its figures.
    pub rule: String,
}

/// Chooses among `candidates` (one per count, 1 first) for `goal`.
pub fn choose(candidates: &[Prediction], goal: Goal) -> Choice {
    let Some(one) = candidates.first() else {
        return Choice {
            chunks: 1,
            rule: "auto: no candidate counts; 1 chunk".to_string(),
        };
    };
    match goal {
        Goal::Efficient { ratio } => efficient(candidates, one, ratio),
        Goal::Deadline(seconds) => deadline(candidates, seconds),
        Goal::PriceCap(usd) => price_cap(candidates, usd),
    }
}

fn efficient(candidates: &[Prediction], one: &Prediction, ratio: f64) -> Choice {
    let budget = one.gpu_seconds * ratio;
    let chosen = fastest(candidates.iter().filter(|c| c.gpu_seconds <= budget)).unwrap_or(one);
    let mut rule = format!(
        "auto: {}, the fastest within {ratio}x of one chunk's GPU-seconds: {}",
        chunks(chosen.chunks),
        figures(chosen, one)
    );
    let faster = fastest(
        candidates
            .iter()
            .filter(|c| c.wall_seconds < chosen.wall_seconds),
    );
    if let Some(faster) = faster {
        rule.push_str(&format!(
            "; {} would take {:.1} s but {:.1} GPU-s ({:.2}x)",
            chunks(faster.chunks),
            faster.wall_seconds,
            faster.gpu_seconds,
            faster.gpu_seconds / one.gpu_seconds.max(f64::MIN_POSITIVE)
        ));
    }
    Choice {
        chunks: chosen.chunks,
        rule,
    }
}

fn deadline(candidates: &[Prediction], seconds: f64) -> Choice {
    let one = &candidates[0];
    let in_time = candidates.iter().filter(|c| c.wall_seconds <= seconds);
    match cheapest(in_time) {
        Some(chosen) => Choice {
            chunks: chosen.chunks,
            rule: format!(
                "deadline {seconds} s: {}, the cheapest predicted to finish in time: {}",
                chunks(chosen.chunks),
                figures(chosen, one)
            ),
        },
        None => {
            let chosen = fastest(candidates.iter()).unwrap_or(one);
            Choice {
                chunks: chosen.chunks,
                rule: format!(
                    "deadline {seconds} s: no count is predicted to meet it; {}, the fastest: {}",
                    chunks(chosen.chunks),
                    figures(chosen, one)
                ),
            }
        }
    }
}

fn price_cap(candidates: &[Prediction], usd: f64) -> Choice {
    let one = &candidates[0];
    let affordable = candidates.iter().filter(|c| c.cost_usd <= usd);
    match fastest(affordable) {
        Some(chosen) => Choice {
            chunks: chosen.chunks,
            rule: format!(
                "price cap ${usd}: {}, the fastest predicted within it: {}",
                chunks(chosen.chunks),
                figures(chosen, one)
            ),
        },
        None => {
            let chosen = cheapest(candidates.iter()).unwrap_or(one);
            Choice {
                chunks: chosen.chunks,
                rule: format!(
                    "price cap ${usd}: no count is predicted within it; {}, the cheapest: {}",
                    chunks(chosen.chunks),
                    figures(chosen, one)
                ),
            }
        }
    }
}

/// The fastest of `candidates`, the fewer chunks on a tie.
fn fastest<'a>(candidates: impl Iterator<Item = &'a Prediction>) -> Option<&'a Prediction> {
    candidates.min_by(|a, b| {
        a.wall_seconds
            .total_cmp(&b.wall_seconds)
            .then(a.chunks.cmp(&b.chunks))
    })
}

/// The cheapest of `candidates`, the faster on a tie.
fn cheapest<'a>(candidates: impl Iterator<Item = &'a Prediction>) -> Option<&'a Prediction> {
    candidates.min_by(|a, b| {
        a.gpu_seconds
            .total_cmp(&b.gpu_seconds)
            .then(a.wall_seconds.total_cmp(&b.wall_seconds))
    })
}

fn chunks(count: u32) -> String {
    if count == 1 {
        "1 chunk".to_string()
    } else {
        format!("{count} chunks")
    }
}

/// A candidate's figures, against one chunk's.
fn figures(chosen: &Prediction, one: &Prediction) -> String {
    format!(
        "predicted {:.1} s ({:.2}x faster than 1 chunk), {:.1} GPU-s ({:.2}x), ${:.4}",
        chosen.wall_seconds,
        one.wall_seconds / chosen.wall_seconds.max(f64::MIN_POSITIVE),
        chosen.gpu_seconds,
        chosen.gpu_seconds / one.gpu_seconds.max(f64::MIN_POSITIVE),
        chosen.cost_usd
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planning::cost_model::{Capacity, CostModel, Cut, History, JobShape};
    use crate::planning::samples::{ChunkSample, JobSample};

    /// A history shaped like the reference table of the system framefleet replaces
    /// (DESIGN.md: 449 frames of Real-ESRGAN on T4s: 1 GPU 310 s, 2 GPUs 160.8 s, 4 GPUs
    /// 87.0 s): 295.2 s of frames (t_f 0.657 s), 4.5 s fixed per chunk, and a job's own
    /// 10.3 s (probe 1, dispatch 0.5, stitch 8.5, the rest 0.3). Five chunks would cost
    /// 1.06x the GPU-seconds of one, four 1.045x.
    fn reference_history() -> History {
        let per_frame = 295.2 / 449.0;
        let chunk = |frames: u64| ChunkSample {
            host: String::new(),
            sharing: 1,
            pixels: 270 * 480,
            frames,
            span_seconds: 4.5 + frames as f64 * per_frame,
            stream_seconds: frames as f64 * per_frame,
            model_load_seconds: 0.0,
        };
        let job = |chunks: u32| JobSample {
            chunks,
            frames: 449,
            pixels: 270 * 480,
            probe_seconds: 1.0,
            dispatch_seconds: 0.5,
            stitch_seconds: 8.5,
            other_seconds: 0.3,
            wall_seconds: 0.0,
        };
        let mut history = History::default();
        for n in [1u64, 2, 4] {
            history.chunks.extend((0..n).map(|_| chunk(449 / n)));
            history.jobs.push(job(n as u32));
        }
        history
    }

    fn t4_fleet(gpus: u32) -> Capacity {
        Capacity {
            slots: gpus,
            hosts: gpus,
            warm_slots: gpus,
            starting_slots: 0,
            cold_start_seconds: 0.0,
            gpus_per_slot: 1.0,
            price_per_gpu_second: 0.000164,
        }
    }

    fn predictions(model: &CostModel, frames: u64, most: u32, fleet: &Capacity) -> Vec<Prediction> {
        let shape = JobShape {
            frames,
            pixels: 270 * 480,
            probe_seconds: 1.0,
        };
        (1..=most)
            .map(|n| model.predict(&shape, Cut::even(frames, n), fleet))
            .collect()
    }

    #[test]
    fn the_reference_table_picks_four_chunks_not_eight() {
        let model = CostModel::fit(reference_history()).expect("model");
        let candidates = predictions(&model, 449, 8, &t4_fleet(8));
        // The table's measured walls at 1, 2 and 4 GPUs, within 3 %.
        for (n, measured) in [(1usize, 310.0), (2, 160.8), (4, 87.0)] {
            let predicted = candidates[n - 1].wall_seconds;
            assert!(
                (predicted - measured).abs() / measured < 0.03,
                "{n}: {predicted}"
            );
        }
        let choice = choose(&candidates, Goal::Efficient { ratio: 1.05 });
        assert_eq!(choice.chunks, 4, "{}", choice.rule);
        assert!(
            choice
                .rule
                .starts_with("auto: 4 chunks, the fastest within 1.05x"),
            "{}",
            choice.rule
        );
        assert!(
            choice.rule.contains("8 chunks would take"),
            "{}",
            choice.rule
        );
        // On 2 GPUs, 4 chunks run in two waves: 2 is as fast and cheaper.
        let two_gpus = predictions(&model, 449, 8, &t4_fleet(2));
        assert_eq!(choose(&two_gpus, Goal::Efficient { ratio: 1.05 }).chunks, 2);
    }

    #[test]
    fn a_cheap_ten_second_job_stays_one_chunk() {
        // Lanczos-like: 2 ms a frame, half a second fixed per chunk, 300 frames.
        let chunk = ChunkSample {
            host: String::new(),
            sharing: 1,
            pixels: 1000,
            frames: 300,
            span_seconds: 0.5 + 0.6,
            stream_seconds: 0.6,
            model_load_seconds: 0.0,
        };
        let job = JobSample {
            chunks: 1,
            frames: 300,
            pixels: 1000,
            probe_seconds: 0.1,
            dispatch_seconds: 0.1,
            stitch_seconds: 0.2,
            other_seconds: 0.1,
            wall_seconds: 1.5,
        };
        let model = CostModel::fit(History {
            chunks: vec![chunk],
            jobs: vec![job],
        })
        .expect("model");
        let shape = JobShape {
            frames: 300,
            pixels: 1000,
            probe_seconds: 0.1,
        };
        let candidates: Vec<Prediction> = (1..=4)
            .map(|n| model.predict(&shape, Cut::even(300, n), &t4_fleet(4)))
            .collect();
        let choice = choose(&candidates, Goal::Efficient { ratio: 1.05 });
        assert_eq!(choice.chunks, 1, "{}", choice.rule);
        assert!(choice.rule.contains("but"), "{}", choice.rule);
    }

    #[test]
    fn a_deadline_buys_the_cheapest_count_in_time_and_a_cap_the_fastest_within_it() {
        let model = CostModel::fit(reference_history()).expect("model");
        let candidates = predictions(&model, 449, 8, &t4_fleet(8));
        let in_time = choose(&candidates, Goal::Deadline(120.0));
        assert_eq!(in_time.chunks, 3, "{}", in_time.rule);
        assert!(in_time.rule.starts_with("deadline 120 s: 3 chunks"));
        let impossible = choose(&candidates, Goal::Deadline(10.0));
        assert_eq!(impossible.chunks, 8);
        assert!(impossible.rule.contains("no count is predicted to meet it"));
        let two_price = candidates[1].cost_usd;
        let capped = choose(&candidates, Goal::PriceCap(two_price));
        assert_eq!(capped.chunks, 2, "{}", capped.rule);
        let too_low = choose(&candidates, Goal::PriceCap(0.0001));
        assert_eq!(too_low.chunks, 1);
        assert!(too_low.rule.contains("the cheapest"));
    }
}
