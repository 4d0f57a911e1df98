//! The cost report of a job: how it was cut, what every chunk did and held, and what that
//! cost. Its schema is `proto/framefleet/v1/cost.proto`: the report is that message,
//! stored with the job, served typed by `GetCostReport` (with the same message as JSON),
//! and printed as a table or drawn as an HTML timing waterfall by the CLI (chunks placed
//! on the job's clock by `started_seconds` / `accepted_seconds`). This module adds what
//! the messages do: pricing and totals.
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

pub use crate::proto::{
    ChunkCost, CostReport, CostSummary, GpuTypeUse, InputCost, OrchestratorCost, PlanCandidate,
    PlanSummary, PredictionAccuracy, Totals,
};

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
        let orchestrator = self.orchestrator.unwrap_or_default();
        let input_bytes_read =
            chunks.iter().map(|c| c.bytes_read).sum::<u64>() + orchestrator.input_bytes_read;
        let predicted_one_chunk = self
            .plan
            .as_ref()
            .and_then(|plan| plan.candidates.iter().find(|c| c.chunks == 1))
            .map(|one| one.wall_seconds)
            .filter(|&seconds| seconds > 0.0);
        let sequential = predicted_one_chunk.unwrap_or_else(|| {
            chunks.iter().map(|c| c.wall_seconds).sum::<f64>()
                + orchestrator.probe_seconds
                + orchestrator.stitch_seconds
        });
        self.totals = Some(Totals {
            frames: chunks.iter().map(|c| c.frames).sum(),
            attempts: chunks.iter().map(|c| c.attempts).sum(),
            gpu_seconds: chunks.iter().map(|c| c.gpu_seconds).sum(),
            wasted_gpu_seconds: chunks.iter().map(|c| c.wasted_gpu_seconds).sum(),
            cost_usd: chunks.iter().map(|c| c.cost_usd).sum(),
            wall_seconds,
            bytes_read: chunks.iter().map(|c| c.bytes_read).sum::<u64>() + orchestrator.bytes_read,
            bytes_written: chunks.iter().map(|c| c.bytes_written).sum::<u64>()
                + orchestrator.bytes_written,
            input_bytes_read,
            input_size_bytes,
            read_amplification: if input_size_bytes > 0 {
                input_bytes_read as f64 / input_size_bytes as f64
            } else {
                0.0
            },
            requests: chunks.iter().map(|c| c.requests).sum::<u64>() + orchestrator.requests,
            retried_requests: chunks.iter().map(|c| c.retried_requests).sum::<u64>()
                + orchestrator.retried_requests,
            bytes_wasted: chunks.iter().map(|c| c.bytes_wasted).sum(),
            sequential_estimate_seconds: sequential,
            speedup: if wall_seconds > 0.0 {
                sequential / wall_seconds
            } else {
                0.0
            },
        });
    }

    /// The totals ([`finalize`](Self::finalize) sets them; zeros before).
    pub fn totals(&self) -> Totals {
        self.totals.unwrap_or_default()
    }

    /// The plan part (empty when the job ended before it was planned).
    pub fn plan(&self) -> PlanSummary {
        self.plan.clone().unwrap_or_default()
    }

    /// The orchestrator's share.
    pub fn orchestrator(&self) -> OrchestratorCost {
        self.orchestrator.unwrap_or_default()
    }

    /// The report as pretty-printed JSON, with the message's field names.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// What was predicted for the job's chunk count against what happened; `None` for a
    /// job planned without a prediction or that did not succeed.
    pub fn prediction_outcome(&self) -> Option<PredictionOutcome> {
        let predicted = self.plan.as_ref()?.predicted?;
        let totals = self.totals();
        if self.state != "SUCCEEDED" || totals.wall_seconds <= 0.0 {
            return None;
        }
        let relative = |predicted: f64, measured: f64| {
            if measured > 0.0 {
                (predicted - measured) / measured
            } else {
                0.0
            }
        };
        Some(PredictionOutcome {
            predicted,
            wall_error: relative(predicted.wall_seconds, totals.wall_seconds),
            gpu_seconds_error: relative(predicted.gpu_seconds, totals.gpu_seconds),
        })
    }
}

/// A prediction beside what happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictionOutcome {
    /// What the plan predicted for its count.
    pub predicted: PlanCandidate,
    /// `(predicted - measured) / measured` of the wall time (0.1: predicted 10 % long).
    pub wall_error: f64,
    /// The same for GPU-seconds.
    pub gpu_seconds_error: f64,
}

impl PredictionOutcome {
    /// One line for people: the prediction and how far off it was.
    pub fn describe(&self, measured: &Totals) -> String {
        format!(
            "predicted {:.2} s wall, {:.2} GPU-s, ${:.6}; measured {:.2} s ({:+.0} %), {:.2} GPU-s ({:+.0} %)",
            self.predicted.wall_seconds,
            self.predicted.gpu_seconds,
            self.predicted.cost_usd,
            measured.wall_seconds,
            self.wall_error * 100.0,
            measured.gpu_seconds,
            self.gpu_seconds_error * 100.0
        )
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
            orchestrator: Some(OrchestratorCost {
                bytes_read: 7,
                input_bytes_read: 5,
                bytes_written: 3,
                requests: 4,
                ..OrchestratorCost::default()
            }),
            pricing: crate::config::default_pricing(),
            ..CostReport::default()
        };
        report.finalize(10.0, 410);
        let totals = report.totals();
        assert_eq!(totals.frames, 20);
        assert_eq!(totals.attempts, 3);
        assert_eq!(totals.gpu_seconds, 20.0);
        assert_eq!(totals.wasted_gpu_seconds, 5.0);
        let expected = 10.0 * 0.000164 + 15.0 * 0.001097;
        assert!((totals.cost_usd - expected).abs() < 1e-12);
        assert_eq!(totals.bytes_read, 207);
        assert_eq!(totals.bytes_written, 103);
        assert!(
            (totals.speedup - 2.0).abs() < 1e-9,
            "no plan: the chunks end to end"
        );
        // With the plan's cost model, one chunk's predicted wall time (workers sharing a
        // machine run each chunk slower than one would alone, so their sum overstates it).
        report.plan = Some(PlanSummary {
            candidates: vec![
                PlanCandidate {
                    chunks: 1,
                    wall_seconds: 11.0,
                    ..PlanCandidate::default()
                },
                PlanCandidate {
                    chunks: 2,
                    wall_seconds: 10.5,
                    ..PlanCandidate::default()
                },
            ],
            ..PlanSummary::default()
        });
        report.finalize(10.0, 410);
        assert!((report.totals().speedup - 1.1).abs() < 1e-9);
        assert!((report.totals().sequential_estimate_seconds - 11.0).abs() < 1e-9);
        assert_eq!(totals.input_bytes_read, 205);
        assert_eq!(totals.read_amplification, 0.5);
        assert_eq!(totals.requests, 10);
        let json = report.to_json();
        let back: CostReport = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, report);
        assert!(json.contains("\"read_amplification\": 0.5"), "{json}");
    }

    /// The replies as clients built before the report was typed decode them.
    #[derive(Clone, PartialEq, prost::Message)]
    struct UntypedReport {
        #[prost(string, tag = "1")]
        job_id: String,
        #[prost(string, tag = "2")]
        json: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct UntypedSummary {
        #[prost(string, tag = "1")]
        json: String,
    }

    #[test]
    fn older_clients_still_read_the_json_of_typed_replies() {
        use crate::proto::{GetCostReportResponse, SummarizeCostsResponse};
        use prost::Message;
        let report = CostReport {
            job_id: "job-1".into(),
            state: "SUCCEEDED".into(),
            ..CostReport::default()
        };
        let reply = GetCostReportResponse {
            job_id: report.job_id.clone(),
            json: report.to_json(),
            report: Some(report.clone()),
        };
        let old = UntypedReport::decode(reply.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(old.job_id, "job-1");
        let parsed: CostReport = serde_json::from_str(&old.json).expect("JSON");
        assert_eq!(parsed, report);
        let mut summary = CostSummary::default();
        summary.add(&report);
        let reply = SummarizeCostsResponse {
            json: summary.to_json(),
            summary: Some(summary),
        };
        let old = UntypedSummary::decode(reply.encode_to_vec().as_slice()).expect("decodes");
        assert!(old.json.contains("\"jobs\": 1"), "{}", old.json);
    }
}
