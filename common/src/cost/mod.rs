//! The cost report of a job: how it was cut, what every chunk did and held, and what that
//! cost. It is stored with the job, served by `GetCostReport` as JSON, and printed as a
//! table or drawn as an HTML timing waterfall by the CLI (chunks placed on the job's clock
//! by `started_seconds` / `accepted_seconds`).
//!
//! GPU-seconds of a chunk are the wall time its accepted attempt held a worker's slot, from
//! accept to upload done, times the GPUs per slot. Attempts that failed are measured by the
//! orchestrator and reported apart as `wasted_gpu_seconds`; both are priced.
//! `totals` are sums over `chunks` for GPU time and cost; bytes and requests add the
//! orchestrator's own (probe, chunk checks, stitch, output) to the chunks'.
//! `totals.input_bytes_read` counts reads of the job's input object alone (workers' ranged
//! reads plus the orchestrator's probe and audio copy), and `read_amplification` divides it
//! by the input's size. [`CostSummary`] adds up the reports of many jobs.

mod summary;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use summary::{CostSummary, GpuTypeUse};

/// A job's cost report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// The job.
    pub job_id: String,
    /// Terminal state, e.g. `SUCCEEDED`.
    pub state: String,
    /// Input URI.
    pub input_uri: String,
    /// Output URI.
    pub output_uri: String,
    /// How the job was cut.
    pub plan: PlanSummary,
    /// One entry per chunk, in index order.
    pub chunks: Vec<ChunkCost>,
    /// The orchestrator's own work and storage traffic.
    pub orchestrator: OrchestratorCost,
    /// USD per GPU-second used for pricing, by GPU type.
    pub pricing: BTreeMap<String, f64>,
    /// Sums over the job.
    pub totals: Totals,
    /// What the job did differently from what was asked, for the user to read (an input
    /// stream the output container could not hold, for one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The plan part of a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlanSummary {
    /// Number of chunks.
    pub chunks: u32,
    /// The rule that chose that number.
    pub rule: String,
    /// Planner profile used.
    pub profile: String,
    /// Frames in the input.
    pub frames: u64,
    /// Input duration in seconds.
    pub duration_seconds: f64,
}

/// One chunk in a report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChunkCost {
    /// Chunk index (output order).
    pub index: u32,
    /// First frame (inclusive).
    pub start_frame: u64,
    /// Last frame (exclusive).
    pub end_frame: u64,
    /// Frames produced.
    pub frames: u64,
    /// Attempts made, the accepted one included.
    pub attempts: u32,
    /// Worker that produced the accepted attempt.
    pub worker: String,
    /// GPU type of that worker.
    pub gpu_type: String,
    /// Where the frames were processed (`cpu` or `cuda`).
    pub device: String,
    /// GPU-seconds of the accepted attempt.
    pub gpu_seconds: f64,
    /// GPU-seconds of attempts that failed or were abandoned.
    pub wasted_gpu_seconds: f64,
    /// Price of `gpu_seconds + wasted_gpu_seconds`.
    pub cost_usd: f64,
    /// Busy seconds per phase (download, init, decode, process, encode, upload); phases
    /// overlap, so they add up to more than `wall_seconds`.
    pub phases: BTreeMap<String, f64>,
    /// Wall time of the accepted attempt, from accept to upload done.
    pub wall_seconds: f64,
    /// Bytes the accepted attempt read from storage (all of it the job's input).
    pub bytes_read: u64,
    /// Bytes it wrote to storage.
    pub bytes_written: u64,
    /// Storage requests it made.
    pub requests: u64,
    /// Of those, requests that resumed a broken transfer.
    #[serde(default)]
    pub retried_requests: u64,
    /// Bytes it fetched but never decoded (read-ahead past its range, block alignment).
    pub bytes_wasted: u64,
    /// True when the chunk was accepted before an orchestrator restart and reused after
    /// its object was checked again, not recomputed.
    #[serde(default)]
    pub resumed: bool,
    /// When the accepted attempt got its worker's slot, in seconds since the job was
    /// accepted (0 for a resumed chunk).
    #[serde(default)]
    pub started_seconds: f64,
    /// When its object passed the checks, in seconds since the job was accepted.
    #[serde(default)]
    pub accepted_seconds: f64,
}

/// The orchestrator's share of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorCost {
    /// When probing began, in seconds since the job was accepted (after any wait for a
    /// running slot).
    #[serde(default)]
    pub probe_started_seconds: f64,
    /// Seconds spent probing the input.
    pub probe_seconds: f64,
    /// When stitching began, in seconds since the job was accepted.
    #[serde(default)]
    pub stitch_started_seconds: f64,
    /// Seconds spent stitching and uploading the output.
    pub stitch_seconds: f64,
    /// Bytes read from storage (probe, chunk checks, stitch).
    pub bytes_read: u64,
    /// Of those, bytes of the job's input (probe, and the audio for the stitch).
    pub input_bytes_read: u64,
    /// Bytes written to storage (the output).
    pub bytes_written: u64,
    /// Storage requests made.
    pub requests: u64,
    /// Of those, requests that resumed a broken transfer.
    #[serde(default)]
    pub retried_requests: u64,
}

/// Sums over a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Frames produced.
    pub frames: u64,
    /// Attempts over all chunks.
    pub attempts: u32,
    /// GPU-seconds of accepted attempts.
    pub gpu_seconds: f64,
    /// GPU-seconds of failed attempts.
    pub wasted_gpu_seconds: f64,
    /// Price of all GPU-seconds.
    pub cost_usd: f64,
    /// Wall time from submit to the terminal state.
    pub wall_seconds: f64,
    /// Bytes read from storage by workers and orchestrator.
    pub bytes_read: u64,
    /// Bytes written to storage by workers and orchestrator.
    pub bytes_written: u64,
    /// Bytes of the input object read, by workers and orchestrator together.
    pub input_bytes_read: u64,
    /// Size of the input object.
    pub input_size_bytes: u64,
    /// `input_bytes_read / input_size_bytes`: how many copies of the input the job read.
    pub read_amplification: f64,
    /// Storage requests by workers and orchestrator.
    pub requests: u64,
    /// Of those, requests that resumed a broken transfer.
    #[serde(default)]
    pub retried_requests: u64,
    /// Bytes the workers fetched but never decoded.
    pub bytes_wasted: u64,
    /// The same job run as one chunk on one worker: the chunks' wall times one after the
    /// other, plus probe and stitch.
    pub sequential_estimate_seconds: f64,
    /// `sequential_estimate_seconds / wall_seconds`.
    pub speedup: f64,
}

/// Price of one GPU-second of `gpu_type`; unknown types cost nothing and say so in logs.
pub fn price_per_second(pricing: &BTreeMap<String, f64>, gpu_type: &str) -> f64 {
    pricing.get(gpu_type).copied().unwrap_or_else(|| {
        tracing::warn!(
            gpu_type,
            "no price configured for this GPU type; counting it as free"
        );
        0.0
    })
}

impl CostReport {
    /// Prices every chunk and recomputes `totals` from the chunks and the orchestrator's
    /// share; `wall_seconds` is the job's measured wall time, `input_size_bytes` the size of
    /// its input object.
    pub fn finalize(&mut self, wall_seconds: f64, input_size_bytes: u64) {
        for chunk in &mut self.chunks {
            let price = price_per_second(&self.pricing, &chunk.gpu_type);
            chunk.cost_usd = (chunk.gpu_seconds + chunk.wasted_gpu_seconds) * price;
        }
        let chunks = &self.chunks;
        let input_bytes_read =
            chunks.iter().map(|c| c.bytes_read).sum::<u64>() + self.orchestrator.input_bytes_read;
        let sequential: f64 = chunks.iter().map(|c| c.wall_seconds).sum::<f64>()
            + self.orchestrator.probe_seconds
            + self.orchestrator.stitch_seconds;
        self.totals = Totals {
            frames: chunks.iter().map(|c| c.frames).sum(),
            attempts: chunks.iter().map(|c| c.attempts).sum(),
            gpu_seconds: chunks.iter().map(|c| c.gpu_seconds).sum(),
            wasted_gpu_seconds: chunks.iter().map(|c| c.wasted_gpu_seconds).sum(),
            cost_usd: chunks.iter().map(|c| c.cost_usd).sum(),
            wall_seconds,
            bytes_read: chunks.iter().map(|c| c.bytes_read).sum::<u64>()
                + self.orchestrator.bytes_read,
            bytes_written: chunks.iter().map(|c| c.bytes_written).sum::<u64>()
                + self.orchestrator.bytes_written,
            input_bytes_read,
            input_size_bytes,
            read_amplification: if input_size_bytes > 0 {
                input_bytes_read as f64 / input_size_bytes as f64
            } else {
                0.0
            },
            requests: chunks.iter().map(|c| c.requests).sum::<u64>() + self.orchestrator.requests,
            retried_requests: chunks.iter().map(|c| c.retried_requests).sum::<u64>()
                + self.orchestrator.retried_requests,
            bytes_wasted: chunks.iter().map(|c| c.bytes_wasted).sum(),
            sequential_estimate_seconds: sequential,
            speedup: if wall_seconds > 0.0 {
                sequential / wall_seconds
            } else {
                0.0
            },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_the_sums_of_the_chunks_and_prices_apply_per_gpu_type() {
        let chunk = |index, gpu: &str, seconds, wasted| ChunkCost {
            index,
            frames: 10,
            attempts: 1 + u32::from(wasted > 0.0),
            gpu_type: gpu.into(),
            gpu_seconds: seconds,
            wasted_gpu_seconds: wasted,
            phases: BTreeMap::from([
                ("process".to_string(), seconds),
                ("encode".to_string(), seconds),
            ]),
            wall_seconds: seconds,
            bytes_read: 100,
            bytes_written: 50,
            requests: 3,
            ..ChunkCost::default()
        };
        let mut report = CostReport {
            chunks: vec![chunk(0, "T4", 10.0, 0.0), chunk(1, "H100", 10.0, 5.0)],
            orchestrator: OrchestratorCost {
                bytes_read: 7,
                input_bytes_read: 5,
                bytes_written: 3,
                requests: 4,
                ..OrchestratorCost::default()
            },
            pricing: crate::config::default_pricing(),
            ..CostReport::default()
        };
        report.finalize(10.0, 410);
        let totals = &report.totals;
        assert_eq!(totals.frames, 20);
        assert_eq!(totals.attempts, 3);
        assert_eq!(totals.gpu_seconds, 20.0);
        assert_eq!(totals.wasted_gpu_seconds, 5.0);
        let expected = 10.0 * 0.000164 + 15.0 * 0.001097;
        assert!((totals.cost_usd - expected).abs() < 1e-12);
        assert_eq!(totals.bytes_read, 207);
        assert_eq!(totals.bytes_written, 103);
        assert!((totals.speedup - 2.0).abs() < 1e-9);
        assert_eq!(totals.input_bytes_read, 205);
        assert_eq!(totals.read_amplification, 0.5);
        assert_eq!(totals.requests, 10);
    }
}
