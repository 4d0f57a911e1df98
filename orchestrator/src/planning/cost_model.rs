//! The cost model: what a job of a known kind will take and cost for each chunk count,
//! fitted from the kind's history.
//!
//! For F frames cut into N chunks on S slots spread over H machines, with t_f the
//! per-frame streaming time of a chunk (its slowest stage, the others overlapping it), o
//! the fixed cost of a chunk on a warm worker, L the model load a cold worker adds, and
//! the job's own fixed costs (probe, dispatch latency, stitch, the rest):
//!
//! - waves W = ceil(N / S); chunks sharing a machine p = ceil(min(N, S) / H); the longest
//!   chunk of the cut F_max (chunks start on keyframes, so they are not all F / N long);
//! - wall T(N) = max(probe + dispatch, C) + W * (o + F_max * t_f(p)) + L (when a slot is
//!   cold) + stitch(F, N) + rest, where C counts only when a chunk needs a slot of a worker
//!   still to start: the measured cold start (process start to registered) of workers
//!   that start when the job arrives (an autoscaled fleet woken by it, or `framefleet
//!   local`'s), overlapping the probe;
//! - GPU-seconds G(N) = (N * o + cold slots * L + F * t_f(p)) * GPUs per slot, priced by
//!   the GPU type's rate: the slot time reports charge (a starting worker's boot is the
//!   fleet's cost, not the job's).
//!
//! Every term is a robust estimate over the history: a weighted median, recent samples
//! weighing more (weights halve every [`HALF_LIFE`] samples), so one outlier (a worker
//! that was swapping) moves nothing. t_f is read at the job's sharing p and frame size:
//! from samples that shared their machine as the job will when there are some, else from
//! the nearest sharing scaled by p / p' (chunks on one machine split its throughput until
//! measured otherwise); a frame size without samples is interpolated in pixels between
//! the two nearest sizes measured, or scaled in proportion to pixels from the only one.

use std::collections::BTreeMap;

use crate::planning::samples::{ChunkSample, JobSample};

/// Samples after which a sample's weight has halved (counted from the newest).
pub const HALF_LIFE: f64 = 8.0;

/// How far, as a ratio of frame sizes in pixels, the model stretches what it measured: a
/// job whose frames are more than this many times larger or smaller than every size in
/// the history is not predicted from it (planned as without history). A 1x1 clip's time
/// per frame is all overhead; scaled to a 160x90 job it predicted 14,400 times too much.
pub const MAX_PIXEL_RATIO: f64 = 4.0;

/// What the history holds for one kind of job, newest last.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// Computed chunks.
    pub chunks: Vec<ChunkSample>,
    /// Whole jobs.
    pub jobs: Vec<JobSample>,
}

/// Where a job would run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Worker slots free for the job's chunks.
    pub slots: u32,
    /// Machines those slots are on.
    pub hosts: u32,
    /// Slots whose worker already has the job's model loaded.
    pub warm_slots: u32,
    /// Of `slots`, those of workers not yet registered (an autoscaled fleet planned at its
    /// configured size, started when the job arrives): a chunk placed there waits for a
    /// worker's cold start.
    pub starting_slots: u32,
    /// A worker's measured cold start, process start to registered with its models
    /// loaded (0 when never measured).
    pub cold_start_seconds: f64,
    /// GPUs one slot holds.
    pub gpus_per_slot: f64,
    /// USD per GPU-second of the GPU type.
    pub price_per_gpu_second: f64,
}

/// The job being predicted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobShape {
    /// Frames to produce.
    pub frames: u64,
    /// Input frame size, in pixels.
    pub pixels: u64,
    /// Seconds its probe took (measured: planning comes after it).
    pub probe_seconds: f64,
}

/// How a job would be cut: what the wall time waits for is its longest chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    /// Chunks.
    pub chunks: u32,
    /// Frames of the longest.
    pub longest_frames: u64,
}

impl Cut {
    /// `chunks` near-equal chunks of `frames` frames.
    pub fn even(frames: u64, chunks: u32) -> Self {
        Self {
            chunks,
            longest_frames: frames.div_ceil(u64::from(chunks.max(1))),
        }
    }
}

/// What one chunk count is predicted to take and cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Chunks.
    pub chunks: u32,
    /// Submit to done, in seconds.
    pub wall_seconds: f64,
    /// GPU-seconds the chunks hold.
    pub gpu_seconds: f64,
    /// Their price.
    pub cost_usd: f64,
    /// Of the wall time, the stitch at the end.
    pub stitch_seconds: f64,
}

/// The fitted model of one kind of job.
#[derive(Debug, Clone, PartialEq)]
pub struct CostModel {
    chunks: Vec<ChunkSample>,
    jobs: Vec<JobSample>,
}

impl CostModel {
    /// The model of `history`; `None` until it holds a whole job and its chunks.
    pub fn fit(history: History) -> Option<Self> {
        if history.jobs.is_empty() || history.chunks.is_empty() {
            return None;
        }
        Some(Self {
            chunks: history.chunks,
            jobs: history.jobs,
        })
    }

    /// True when some measured frame size is within [`MAX_PIXEL_RATIO`] of `pixels`, so
    /// the model may predict a job of that size.
    pub fn covers(&self, pixels: u64) -> bool {
        let pixels = pixels.max(1) as f64;
        self.chunks.iter().any(|chunk| {
            let measured = chunk.pixels.max(1) as f64;
            measured.max(pixels) / measured.min(pixels) <= MAX_PIXEL_RATIO
        })
    }

    /// Whole jobs it learned from.
    pub fn jobs(&self) -> usize {
        self.jobs.len()
    }

    /// The prediction for `job` cut as `cut` on `capacity`.
    pub fn predict(&self, job: &JobShape, cut: Cut, capacity: &Capacity) -> Prediction {
        let n = cut.chunks.max(1);
        let slots = capacity.slots.max(1);
        let running = n.min(slots);
        let sharing = running.div_ceil(capacity.hosts.max(1));
        let waves = f64::from(n.div_ceil(slots));
        let per_frame = self.per_frame_seconds(job.pixels, sharing);
        let fixed = self.fixed_seconds(sharing);
        let load = self.model_load_seconds();
        let cold = running.saturating_sub(capacity.warm_slots);
        let starting = running.saturating_sub(slots.saturating_sub(capacity.starting_slots));
        let cold_start = capacity.cold_start_seconds;
        let frames = job.frames as f64;
        let chunk_seconds = fixed + cut.longest_frames as f64 * per_frame;
        let stitch = self.stitch_seconds(job.frames, n);
        let lead = job.probe_seconds + self.job_median(|j| j.dispatch_seconds);
        let wall = if starting > 0 {
            lead.max(cold_start)
        } else {
            lead
        } + waves * chunk_seconds
            + if cold > 0 { load } else { 0.0 }
            + stitch
            + self.job_median(|j| j.other_seconds);
        let gpu_seconds = (f64::from(n) * fixed + f64::from(cold) * load + frames * per_frame)
            * capacity.gpus_per_slot;
        Prediction {
            chunks: n,
            wall_seconds: wall,
            gpu_seconds,
            cost_usd: gpu_seconds * capacity.price_per_gpu_second,
            stitch_seconds: stitch,
        }
    }

    /// t_f at `pixels` for chunks `sharing` a machine.
    fn per_frame_seconds(&self, pixels: u64, sharing: u32) -> f64 {
        let (nearest, factor) = nearest_sharing(&self.chunks, sharing);
        let mut by_size: BTreeMap<u64, Vec<(f64, f64)>> = BTreeMap::new();
        for (sample, weight) in weighted(&self.chunks) {
            if sample.sharing == nearest {
                by_size
                    .entry(sample.pixels)
                    .or_default()
                    .push((sample.per_frame_seconds(), weight));
            }
        }
        let sizes: Vec<(f64, f64)> = by_size
            .into_iter()
            .map(|(size, values)| (size as f64, weighted_median(values)))
            .collect();
        at_size(&sizes, pixels as f64) * factor
    }

    /// o for chunks sharing a machine as `sharing` will (or the nearest measured).
    fn fixed_seconds(&self, sharing: u32) -> f64 {
        let (nearest, _) = nearest_sharing(&self.chunks, sharing);
        weighted_median(
            weighted(&self.chunks)
                .filter(|(s, _)| s.sharing == nearest)
                .map(|(s, w)| (s.fixed_seconds(), w))
                .collect(),
        )
    }

    /// L: the model load of cold chunks (0 when no chunk ever loaded one).
    fn model_load_seconds(&self) -> f64 {
        weighted_median(
            weighted(&self.chunks)
                .filter(|(s, _)| s.model_load_seconds > 0.0)
                .map(|(s, w)| (s.model_load_seconds, w))
                .collect(),
        )
    }

    /// The stitch of `frames` frames from `chunks` chunks: a least-squares line over the
    /// jobs' frames and chunk counts, as far as the history varies them, else the median
    /// per frame.
    fn stitch_seconds(&self, frames: u64, chunks: u32) -> f64 {
        let points: Vec<([f64; 3], f64, f64)> = weighted(&self.jobs)
            .map(|(j, w)| {
                (
                    [1.0, j.frames as f64, f64::from(j.chunks)],
                    j.stitch_seconds,
                    w,
                )
            })
            .collect();
        if let Some(fit) = least_squares(&points) {
            let value = fit[0] + fit[1] * frames as f64 + fit[2] * f64::from(chunks);
            if fit.iter().all(|c| *c >= 0.0) && value > 0.0 {
                return value;
            }
        }
        frames as f64 * self.job_median(|j| j.stitch_seconds / j.frames.max(1) as f64)
    }

    fn job_median(&self, value: impl Fn(&JobSample) -> f64) -> f64 {
        weighted_median(weighted(&self.jobs).map(|(j, w)| (value(j), w)).collect())
    }
}

/// A worker's cold start as the model plans with it: the weighted median of `measured`
/// (oldest first), 0 when nothing was measured.
pub fn typical_cold_start(measured: &[f64]) -> f64 {
    weighted_median(weighted(measured).map(|(s, w)| (*s, w)).collect())
}

/// The samples with their recency weights (the last is the newest, weight 1).
fn weighted<T>(samples: &[T]) -> impl Iterator<Item = (&T, f64)> {
    let newest = samples.len().saturating_sub(1);
    samples
        .iter()
        .enumerate()
        .map(move |(i, s)| (s, 0.5_f64.powf((newest - i) as f64 / HALF_LIFE)))
}

/// The sharing measured nearest to `wanted` (the smaller on a tie), and how much slower
/// per frame `wanted` is assumed to be: chunks on one machine split its throughput.
fn nearest_sharing(chunks: &[ChunkSample], wanted: u32) -> (u32, f64) {
    let nearest = chunks
        .iter()
        .map(|c| c.sharing)
        .min_by_key(|&s| (s.abs_diff(wanted), s))
        .unwrap_or(wanted)
        .max(1);
    (nearest, f64::from(wanted.max(1)) / f64::from(nearest))
}

/// The value at `x` of `(x, y)` points sorted by x: exact when measured, else on the line
/// through the two nearest (in ratio), else in proportion to x from the nearest.
fn at_size(points: &[(f64, f64)], x: f64) -> f64 {
    if let Some(&(_, y)) = points.iter().find(|(px, _)| *px == x) {
        return y;
    }
    let distance = |px: f64| (px.max(1.0) / x.max(1.0)).ln().abs();
    let mut nearest: Vec<(f64, f64)> = points.to_vec();
    nearest.sort_by(|a, b| distance(a.0).total_cmp(&distance(b.0)));
    match nearest.as_slice() {
        [] => 0.0,
        [(x1, y1), (x2, y2), ..] if x1 != x2 => {
            let slope = (y2 - y1) / (x2 - x1);
            let value = y1 + slope * (x - x1);
            if slope > 0.0 && value > 0.0 {
                value
            } else {
                y1 * x / x1.max(1.0)
            }
        }
        [(x1, y1), ..] => y1 * x / x1.max(1.0),
    }
}

/// The weighted median of `(value, weight)` pairs (0 when empty).
fn weighted_median(mut values: Vec<(f64, f64)>) -> f64 {
    values.retain(|(v, w)| v.is_finite() && *w > 0.0);
    values.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = values.iter().map(|(_, w)| w).sum();
    let mut seen = 0.0;
    for (value, weight) in &values {
        seen += weight;
        if seen >= total / 2.0 {
            return *value;
        }
    }
    0.0
}

/// Weighted least squares of `y` on up to three features, dropping those that do not
/// vary (the first, the constant, always stays); `None` when the points cannot fix them.
fn least_squares(points: &[([f64; 3], f64, f64)]) -> Option<[f64; 3]> {
    let varies = |k: usize| {
        points
            .iter()
            .any(|(x, _, _)| (x[k] - points[0].0[k]).abs() > 1e-9)
    };
    let used: Vec<usize> = (0..3).filter(|&k| k == 0 || varies(k)).collect();
    let m = used.len();
    if points.len() < m + 1 || m < 2 {
        return None;
    }
    let mut a = vec![vec![0.0; m + 1]; m];
    for (x, y, w) in points {
        for (r, &i) in used.iter().enumerate() {
            for (c, &j) in used.iter().enumerate() {
                a[r][c] += w * x[i] * x[j];
            }
            a[r][m] += w * x[i] * y;
        }
    }
    let solved = solve(a)?;
    let mut fit = [0.0; 3];
    for (r, &i) in used.iter().enumerate() {
        fit[i] = solved[r];
    }
    Some(fit)
}

/// Gaussian elimination with partial pivoting on an augmented m x (m + 1) matrix.
fn solve(mut a: Vec<Vec<f64>>) -> Option<Vec<f64>> {
    let m = a.len();
    for col in 0..m {
        let pivot = (col..m).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let factor = row[col] / pivot_row[col];
                for (value, pivot_value) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *value -= factor * pivot_value;
                }
            }
        }
    }
    Some((0..m).map(|i| a[i][m] / a[i][i]).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(sharing: u32, pixels: u64, frames: u64, per_frame: f64, fixed: f64) -> ChunkSample {
        ChunkSample {
            host: "h".into(),
            sharing,
            pixels,
            frames,
            span_seconds: fixed + frames as f64 * per_frame,
            stream_seconds: frames as f64 * per_frame,
            model_load_seconds: 0.0,
        }
    }

    fn job(chunks: u32, frames: u64, stitch: f64) -> JobSample {
        JobSample {
            chunks,
            frames,
            pixels: 100,
            probe_seconds: 0.0,
            dispatch_seconds: 0.5,
            stitch_seconds: stitch,
            other_seconds: 0.25,
            wall_seconds: 0.0,
        }
    }

    fn fleet(slots: u32, hosts: u32) -> Capacity {
        Capacity {
            slots,
            hosts,
            warm_slots: slots,
            starting_slots: 0,
            cold_start_seconds: 0.0,
            gpus_per_slot: 1.0,
            price_per_gpu_second: 0.001,
        }
    }

    /// A model of 0.1 s a frame and 2 s a chunk, and a job of 400 frames probed in 1 s.
    fn steady_model() -> (CostModel, JobShape) {
        let model = CostModel::fit(History {
            chunks: vec![chunk(1, 100, 100, 0.1, 2.0)],
            jobs: vec![job(1, 100, 1.0)],
        })
        .expect("model");
        let shape = JobShape {
            frames: 400,
            pixels: 100,
            probe_seconds: 1.0,
        };
        (model, shape)
    }

    #[test]
    fn wall_and_gpu_seconds_follow_waves_and_fixed_costs() {
        let (model, shape) = steady_model();
        let one = model.predict(&shape, Cut::even(400, 1), &fleet(8, 8));
        // probe 1 + dispatch 0.5 + (2 + 40) + stitch 4 (0.01 s a frame) + rest 0.25.
        assert!((one.wall_seconds - 47.75).abs() < 1e-9, "{one:?}");
        assert!((one.gpu_seconds - 42.0).abs() < 1e-9);
        assert!((one.cost_usd - 0.042).abs() < 1e-9);
        let four = model.predict(&shape, Cut::even(400, 4), &fleet(2, 2));
        // Two waves of (2 + 10).
        assert!((four.wall_seconds - (1.0 + 0.5 + 24.0 + 4.0 + 0.25)).abs() < 1e-9);
        assert!((four.gpu_seconds - 48.0).abs() < 1e-9);
    }

    #[test]
    fn chunks_on_workers_still_to_start_wait_for_their_cold_start() {
        let (model, shape) = steady_model();
        // Two slots registered, six more of an autoscaled fleet that start in 30 s.
        let fleet = Capacity {
            starting_slots: 6,
            cold_start_seconds: 30.0,
            ..fleet(8, 8)
        };
        let two = model.predict(&shape, Cut::even(400, 2), &fleet);
        let four = model.predict(&shape, Cut::even(400, 4), &fleet);
        assert!(
            (two.wall_seconds - (1.5 + 22.0 + 4.0 + 0.25)).abs() < 1e-9,
            "{two:?}"
        );
        // The cold start overlaps the probe and dispatch (1.5 s).
        assert!((four.wall_seconds - (30.0 + 12.0 + 4.0 + 0.25)).abs() < 1e-9);
        // The job pays its slots' time only: two chunks' fixed costs more.
        assert!((four.gpu_seconds - two.gpu_seconds - 2.0 * 2.0).abs() < 1e-9);
        assert!((two.stitch_seconds - 4.0).abs() < 1e-9);
    }

    #[test]
    fn one_outlier_moves_nothing_and_recent_samples_win() {
        let mut chunks = vec![chunk(1, 100, 100, 0.1, 1.0); 5];
        chunks.insert(2, chunk(1, 100, 100, 5.0, 30.0));
        let model = CostModel::fit(History {
            chunks,
            jobs: vec![job(1, 100, 1.0)],
        })
        .expect("model");
        assert!((model.per_frame_seconds(100, 1) - 0.1).abs() < 1e-9);
        let mut drifting = vec![chunk(1, 100, 100, 0.2, 1.0); 6];
        drifting.extend(vec![chunk(1, 100, 100, 0.1, 1.0); 5]);
        let model = CostModel::fit(History {
            chunks: drifting,
            jobs: vec![job(1, 100, 1.0)],
        })
        .expect("model");
        assert!((model.per_frame_seconds(100, 1) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn unseen_sizes_scale_with_pixels_and_sharing_splits_a_machine() {
        let model = CostModel::fit(History {
            chunks: vec![chunk(1, 1000, 50, 0.11, 1.0), chunk(1, 4000, 50, 0.41, 1.0)],
            jobs: vec![job(1, 50, 1.0)],
        })
        .expect("model");
        // Between the two sizes measured: on their line.
        assert!((model.per_frame_seconds(2000, 1) - 0.21).abs() < 1e-9);
        // Two chunks on one machine: each streams half as fast until measured.
        assert!((model.per_frame_seconds(1000, 2) - 0.22).abs() < 1e-9);
        let one_size = CostModel::fit(History {
            chunks: vec![chunk(2, 1000, 50, 0.3, 1.0)],
            jobs: vec![job(2, 100, 1.0)],
        })
        .expect("model");
        assert!(one_size.covers(1000) && one_size.covers(3000) && one_size.covers(250));
        assert!(
            !one_size.covers(14_400) && !one_size.covers(1),
            "no stretching a size far past what was measured"
        );
        assert!((one_size.per_frame_seconds(3000, 2) - 0.9).abs() < 1e-9);
        assert!((one_size.per_frame_seconds(1000, 1) - 0.15).abs() < 1e-9);
    }

    #[test]
    fn the_stitch_is_fitted_on_frames_and_chunks_when_the_history_varies_them() {
        let jobs = vec![
            job(1, 100, 0.2 + 0.01 * 100.0 + 0.1),
            job(2, 100, 0.2 + 0.01 * 100.0 + 0.2),
            job(4, 300, 0.2 + 0.01 * 300.0 + 0.4),
            job(1, 300, 0.2 + 0.01 * 300.0 + 0.1),
        ];
        let model = CostModel::fit(History {
            chunks: vec![chunk(1, 100, 100, 0.1, 1.0)],
            jobs,
        })
        .expect("model");
        assert!((model.stitch_seconds(200, 8) - (0.2 + 2.0 + 0.8)).abs() < 1e-6);
        assert!(CostModel::fit(History::default()).is_none());
    }
}
