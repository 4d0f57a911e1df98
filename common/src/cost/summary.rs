//! What many jobs cost together: the reports of the jobs that ended in a time range (and
//! carry the labels asked for) summed, by state and by GPU type, with the price of a minute
//! of finished video, and how far the planner's predictions were off by kind of job.
//! Served by `SummarizeCosts`; a report's chunks tell which GPU types the money went to.

use super::{CostReport, CostSummary, PredictionAccuracy};

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
        if let Some(outcome) = report.prediction_outcome() {
            let accuracy = self.predictions.entry(report.plan().kind).or_default();
            accuracy.add(outcome.wall_error.abs());
        }
        let tenant = if report.tenant.is_empty() {
            "default"
        } else {
            report.tenant.as_str()
        };
        let used = self.by_tenant.entry(tenant.to_string()).or_default();
        used.jobs += 1;
        used.gpu_seconds += totals.gpu_seconds;
        used.wasted_gpu_seconds += totals.wasted_gpu_seconds;
        used.cost_usd += totals.cost_usd;
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

impl PredictionAccuracy {
    /// Adds one job's relative wall-time error.
    pub fn add(&mut self, error: f64) {
        self.errors.push(error);
        self.jobs = self.errors.len() as u64;
        let mut sorted = self.errors.clone();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        self.median_error = if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        self.worst_error = sorted.last().copied().unwrap_or(0.0);
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
    fn jobs_add_up_by_tenant() {
        let mut summary = CostSummary::default();
        let mut studio = report("SUCCEEDED", 60.0, &[("T4", 100.0, 0.0)]);
        studio.tenant = "studio".into();
        summary.add(&studio);
        summary.add(&studio);
        summary.add(&report("FAILED", 0.0, &[("T4", 10.0, 5.0)]));
        let used = &summary.by_tenant["studio"];
        assert_eq!(used.jobs, 2);
        assert!((used.gpu_seconds - 200.0).abs() < 1e-9);
        assert!((used.cost_usd - 0.2).abs() < 1e-9, "{used:?}");
        let default = &summary.by_tenant["default"];
        assert_eq!(
            default.jobs, 1,
            "a report without a tenant is the default's"
        );
        assert!((default.wasted_gpu_seconds - 5.0).abs() < 1e-9);
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

    #[test]
    fn prediction_errors_are_kept_by_kind_with_their_median_and_worst() {
        let predicted = |state: &str, kind: &str, wall: f64| {
            let mut report = report(state, 10.0, &[("T4", 1.0, 0.0)]);
            let plan = report.plan.as_mut().expect("plan");
            plan.kind = kind.into();
            plan.predicted = Some(crate::cost::PlanCandidate {
                chunks: 1,
                wall_seconds: wall,
                ..Default::default()
            });
            report
        };
        let mut summary = CostSummary::default();
        // Measured wall is 5 s: predictions of 6, 4, 5.5 and 10 s are off by 20 %, 20 %,
        // 10 % and 100 %; the failed job is not counted.
        for wall in [6.0, 4.0, 5.5] {
            summary.add(&predicted("SUCCEEDED", "a", wall));
        }
        summary.add(&predicted("SUCCEEDED", "b", 10.0));
        summary.add(&predicted("FAILED", "a", 50.0));
        summary.add(&report("SUCCEEDED", 10.0, &[("T4", 1.0, 0.0)]));
        let a = &summary.predictions["a"];
        assert_eq!(a.jobs, 3);
        assert!((a.median_error - 0.2).abs() < 1e-9, "{a:?}");
        assert!((a.worst_error - 0.2).abs() < 1e-9);
        assert!((summary.predictions["b"].worst_error - 1.0).abs() < 1e-9);
        assert_eq!(summary.predictions.len(), 2);
    }
}
