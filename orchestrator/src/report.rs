//! Builds a job's cost report from what its run recorded: a report per input (its plan,
//! chunks, the orchestrator's work on it), then, for a job of several inputs, one report
//! over all of them with each input's plan and sums listed in `inputs`.

use std::collections::BTreeMap;

use framefleet_common::cost::{ChunkCost, CostReport, InputCost, OrchestratorCost, PlanSummary};
use framefleet_common::proto::JobState;

use crate::jobs::accepted::{ChunkTiming, FinishedChunk};
use crate::jobs::io::JobIo;
use crate::jobs::record::JobRecord;
use crate::jobs::run_log::{InputRun, RunLog};

/// The cost report of `job` as it ends in `state`, from the runs of its `inputs`.
pub fn build(
    job: &JobRecord,
    inputs: &[InputRun],
    pricing: &BTreeMap<String, f64>,
    state: JobState,
) -> CostReport {
    let wall_seconds = job.accepted.elapsed().as_secs_f64();
    let parts: Vec<CostReport> = inputs
        .iter()
        .map(|input| {
            let mut part = input_report(&job.id, input, pricing, state);
            part.finalize(wall_seconds, input.log().input_size_bytes);
            part
        })
        .collect();
    let entries: Vec<InputCost> = parts
        .iter()
        .zip(inputs)
        .map(|(part, input)| input_cost(part, input, state))
        .collect();
    let mut report = if parts.len() == 1 {
        parts.into_iter().next().unwrap_or_default()
    } else {
        combine(parts, inputs, wall_seconds)
    };
    report.inputs = entries;
    report.tenant = job.tenant.name.to_string();
    report
}

/// One input's report: its plan, its chunks and the orchestrator's work on it.
fn input_report(
    job_id: &str,
    input: &InputRun,
    pricing: &BTreeMap<String, f64>,
    state: JobState,
) -> CostReport {
    let log = input.log();
    let plan = log.plan.clone().unwrap_or_default();
    let mut chunks: Vec<ChunkCost> = log
        .accepted
        .iter()
        .map(|finished| chunk_cost(finished, input.index))
        .collect();
    chunks.sort_by_key(|c| c.index);
    CostReport {
        job_id: job_id.to_string(),
        state: state.label().to_string(),
        input_uri: input.pair.input.to_string(),
        output_uri: input.pair.output.to_string(),
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
        orchestrator: Some(orchestrator_cost(&log, &input.io)),
        pricing: pricing.clone(),
        notes: log.notes.clone(),
        ..CostReport::default()
    }
}

/// The `inputs` entry of one input's (finalized) report.
fn input_cost(part: &CostReport, input: &InputRun, state: JobState) -> InputCost {
    let log = input.log();
    let state = match (&log.error, log.skipped) {
        (_, true) => "SKIPPED",
        (Some(_), false) if state == JobState::Succeeded => "FAILED",
        _ => state.label(),
    };
    InputCost {
        index: input.index,
        input_uri: part.input_uri.clone(),
        output_uri: part.output_uri.clone(),
        state: state.to_string(),
        error: log.error.clone().unwrap_or_default(),
        plan: part.plan.clone(),
        totals: part.totals,
    }
}

/// One report over the reports of a job's inputs: every chunk, the orchestrator's work
/// added up, the plans summed (each input's own is in `inputs`), notes naming their input.
fn combine(parts: Vec<CostReport>, inputs: &[InputRun], wall_seconds: f64) -> CostReport {
    let mut report = CostReport {
        job_id: parts[0].job_id.clone(),
        state: parts[0].state.clone(),
        pricing: parts[0].pricing.clone(),
        ..CostReport::default()
    };
    let mut plan = PlanSummary::default();
    let mut orchestrator = OrchestratorCost {
        probe_started_seconds: f64::MAX,
        stitch_started_seconds: f64::MAX,
        ..OrchestratorCost::default()
    };
    let mut input_size_bytes = 0;
    for (part, input) in parts.into_iter().zip(inputs) {
        let own = part.plan.unwrap_or_default();
        plan.chunks += own.chunks;
        plan.frames += own.frames;
        plan.duration_seconds += own.duration_seconds;
        if plan.profile.is_empty() {
            (plan.profile, plan.kind) = (own.profile, own.kind);
        }
        if !own.rule.is_empty() {
            plan.rule = join(&plan.rule, &format!("{}: {}", input.name(), own.rule));
        }
        add_orchestrator(&mut orchestrator, &part.orchestrator.unwrap_or_default());
        input_size_bytes += part.totals.map_or(0, |t| t.input_size_bytes);
        report.chunks.extend(part.chunks);
        report
            .notes
            .extend(part.notes.iter().map(|n| format!("{}: {n}", input.name())));
    }
    for started in [
        &mut orchestrator.probe_started_seconds,
        &mut orchestrator.stitch_started_seconds,
    ] {
        if *started == f64::MAX {
            *started = 0.0;
        }
    }
    report.chunks.sort_by_key(|c| c.index);
    report.plan = Some(plan);
    report.orchestrator = Some(orchestrator);
    report.finalize(wall_seconds, input_size_bytes);
    report
}

/// `rule` and `more` as one line.
fn join(rule: &str, more: &str) -> String {
    if rule.is_empty() {
        more.to_string()
    } else {
        format!("{rule}; {more}")
    }
}

/// Adds one input's orchestrator work to the job's: times and traffic summed, the
/// earliest start of each step kept.
fn add_orchestrator(sum: &mut OrchestratorCost, part: &OrchestratorCost) {
    sum.probe_started_seconds = sum.probe_started_seconds.min(part.probe_started_seconds);
    if part.stitch_seconds > 0.0 {
        sum.stitch_started_seconds = sum.stitch_started_seconds.min(part.stitch_started_seconds);
    }
    sum.probe_seconds += part.probe_seconds;
    sum.stitch_seconds += part.stitch_seconds;
    sum.bytes_read += part.bytes_read;
    sum.input_bytes_read += part.input_bytes_read;
    sum.bytes_written += part.bytes_written;
    sum.requests += part.requests;
    sum.retried_requests += part.retried_requests;
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

fn chunk_cost(finished: &FinishedChunk, input: u32) -> ChunkCost {
    let chunk = &finished.chunk;
    let result = &chunk.result;
    let timeline = finished.timeline();
    ChunkCost {
        index: chunk.range.index,
        input,
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
        encoder: result.encoder.clone(),
        decoder: result.decoder.clone(),
    }
}
