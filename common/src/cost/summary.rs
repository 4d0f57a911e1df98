//! What many jobs cost together: the reports of the jobs that ended in a time range (and
//! carry the labels asked for) summed, by state and by GPU type, with the price of a minute
//! of finished video. Served by `SummarizeCosts`; a report's chunks tell which GPU types
//! the money went to.

use super::{CostReport, CostSummary};

impl CostSummary {
    /// Adds one ended job's report.
    pub fn add(&mut self, report: &CostReport) {
        let totals = report.totals();
        self.jobs += 1;
        *self.by_state.entry(report.state.clone()).or_default() += 1;
        self.frames += totals.frames;
        self.gpu_seconds += totals.gpu_seconds;
        self.wasted_gpu_seconds += totals.wasted_gpu_seconds;
        self.cost_usd += totals.cost_usd;
        self.wall_seconds += totals.wall_seconds;
        if report.state == "SUCCEEDED" {
            self.video_seconds += report.plan().duration_seconds;
            self.succeeded_cost_usd += totals.cost_usd;
        }
        for chunk in &report.chunks {
            let used = self.by_gpu_type.entry(chunk.gpu_type.clone()).or_default();
            used.chunks += 1;
            used.gpu_seconds += chunk.gpu_seconds;
            used.wasted_gpu_seconds += chunk.wasted_gpu_seconds;
            used.cost_usd += chunk.cost_usd;
        }
        self.usd_per_video_minute = if self.video_seconds > 0.0 {
            self.succeeded_cost_usd / (self.video_seconds / 60.0)
        } else {
            0.0
        };
    }

    /// The sums as pretty-printed JSON, with the message's field names.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::{ChunkCost, PlanSummary};

    fn report(state: &str, video_seconds: f64, chunks: &[(&str, f64, f64)]) -> CostReport {
        let mut report = CostReport {
            state: state.into(),
            plan: Some(PlanSummary {
                duration_seconds: video_seconds,
                ..PlanSummary::default()
            }),
            chunks: chunks
                .iter()
                .map(|&(gpu, used, wasted)| ChunkCost {
                    gpu_type: gpu.into(),
                    gpu_seconds: used,
                    wasted_gpu_seconds: wasted,
                    frames: 10,
                    attempts: 1,
                    ..ChunkCost::default()
                })
                .collect(),
            pricing: [("T4".to_string(), 0.001), ("H100".to_string(), 0.01)].into(),
            ..CostReport::default()
        };
        report.finalize(5.0, 0);
        report
    }

    #[test]
    fn jobs_add_up_by_state_and_gpu_type() {
        let mut summary = CostSummary::default();
        summary.add(&report(
            "SUCCEEDED",
            60.0,
            &[("T4", 100.0, 0.0), ("H100", 10.0, 2.0)],
        ));
        summary.add(&report("FAILED", 30.0, &[("T4", 50.0, 50.0)]));
        assert_eq!(summary.jobs, 2);
        assert_eq!(summary.by_state["SUCCEEDED"], 1);
        assert_eq!(summary.by_state["FAILED"], 1);
        assert_eq!(summary.frames, 30);
        assert_eq!(summary.gpu_seconds, 160.0);
        assert_eq!(summary.wasted_gpu_seconds, 52.0);
        let t4 = &summary.by_gpu_type["T4"];
        assert_eq!(
            (t4.chunks, t4.gpu_seconds, t4.wasted_gpu_seconds),
            (2, 150.0, 50.0)
        );
        assert!((t4.cost_usd - 0.2).abs() < 1e-12);
        assert!((summary.cost_usd - (0.2 + 0.12)).abs() < 1e-12);
        // Only the succeeded job's money and minute count: (0.1 + 0.12) USD for 1 minute.
        assert_eq!(summary.video_seconds, 60.0);
        assert!((summary.usd_per_video_minute - 0.22).abs() < 1e-12);
        assert_eq!(summary.wall_seconds, 10.0);
    }
}
