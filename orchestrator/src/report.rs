//! Builds a job's cost report from what its run recorded.

use std::collections::BTreeMap;

use framefleet_common::cost::{ChunkCost, CostReport, OrchestratorCost, PlanSummary};
use framefleet_common::proto::{JobState, Plan};

use crate::accepted::{ChunkTiming, FinishedChunk};
use crate::job::JobRecord;
use crate::job_io::JobIo;

/// What a job's run recorded as it went.
#[derive(Debug, Default)]
pub struct RunLog {
    /// Planner profile used.
    pub profile: String,
    /// The plan, once made.
    pub plan: Option<Plan>,
    /// Chunks accepted so far.
    pub accepted: Vec<FinishedChunk>,
    /// When probing began, in seconds since the job was accepted.
    pub probe_started_seconds: f64,
    /// Seconds spent probing.
    pub probe_seconds: f64,
    /// When stitching began, in seconds since the job was accepted.
    pub stitch_started_seconds: f64,
    /// Seconds spent stitching and uploading.
    pub stitch_seconds: f64,
    /// Size of the input object.
    pub input_size_bytes: u64,
    /// Input frame size, width times height.
    pub input_pixels: u64,
    /// Notes for the report's reader.
    pub notes: Vec<String>,
}

/// The cost report of `job` as it ends in `state`.
pub fn build(
    job: &JobRecord,
    log: &RunLog,
    io: &JobIo,
    pricing: &BTreeMap<String, f64>,
    state: JobState,
) -> CostReport {
    let plan = log.plan.clone().unwrap_or_default();
    let mut chunks: Vec<ChunkCost> = log.accepted.iter().map(chunk_cost).collect();
    chunks.sort_by_key(|c| c.index);
    let mut report = CostReport {
        job_id: job.id.clone(),
        state: state.label().to_string(),
        input_uri: job.request.spec.input_uri.clone(),
        output_uri: job.request.spec.output_uri.clone(),
        plan: Some(PlanSummary {
            chunks: plan.chunks,
            rule: plan.rule,
            profile: log.profile.clone(),
            frames: plan.frames,
            duration_seconds: plan.duration_seconds,
            predicted: plan.predicted,
            candidates: plan.candidates,
            kind: plan.kind,
        }),
        chunks,
        orchestrator: Some(orchestrator_cost(log, io)),
        pricing: pricing.clone(),
        notes: log.notes.clone(),
        ..CostReport::default()
    };
    report.finalize(job.accepted.elapsed().as_secs_f64(), log.input_size_bytes);
    report
}

fn orchestrator_cost(log: &RunLog, io: &JobIo) -> OrchestratorCost {
    let all = [
        io.input.counters(),
        io.scratch.counters(),
        io.output.counters(),
    ];
    OrchestratorCost {
        probe_started_seconds: log.probe_started_seconds,
        probe_seconds: log.probe_seconds,
        stitch_started_seconds: log.stitch_started_seconds,
        stitch_seconds: log.stitch_seconds,
        bytes_read: all.iter().map(|c| c.bytes_read()).sum(),
        input_bytes_read: io.input.counters().bytes_read(),
        bytes_written: all.iter().map(|c| c.bytes_written()).sum(),
        requests: all.iter().map(|c| c.requests()).sum(),
        retried_requests: all.iter().map(|c| c.retried_requests()).sum(),
    }
}

fn chunk_cost(finished: &FinishedChunk) -> ChunkCost {
    let chunk = &finished.chunk;
    let result = &chunk.result;
    let timeline = finished.timeline();
    ChunkCost {
        index: chunk.range.index,
        start_frame: chunk.range.start_frame,
        end_frame: chunk.range.end_frame,
        frames: result.frames,
        attempts: chunk.attempts,
        worker: result.worker_name.clone(),
        gpu_type: result.gpu_type.clone(),
        device: result.device.clone(),
        gpu_seconds: result.gpu_seconds,
        wasted_gpu_seconds: chunk.wasted_gpu_seconds,
        failures: finished.failures.clone(),
        cost_usd: 0.0,
        phases: result
            .phases
            .iter()
            .map(|timing| (timing.phase().label().to_string(), timing.seconds))
            .collect(),
        bytes_read: result.bytes_read,
        bytes_written: result.bytes_written,
        requests: result.requests,
        retried_requests: result.retried_requests,
        bytes_wasted: result.bytes_wasted,
        wall_seconds: result.wall_seconds,
        resumed: finished.timing == ChunkTiming::Reused,
        started_seconds: timeline.started_seconds,
        accepted_seconds: timeline.accepted_seconds,
        model_load_seconds: result.model_load_seconds,
    }
}
