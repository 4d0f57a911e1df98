//! What the CLI shows people: a live progress bar fed by `WatchJob`, the cost report (with
//! the plan's prediction beside what happened), the cost summary and a dry run's what-if
//! plan as tables.

use std::fmt::Write as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use framefleet_common::cost::{ChunkCost, CostReport, CostSummary};
use framefleet_common::proto::{Job, PlanJobResponse, Progress, WorkerSummary};
use framefleet_common::text::printable;

/// Follows a job's `WatchJob` stream until the job ends, drawing its progress (on a
/// terminal), and returns its final state.
pub async fn follow(mut stream: tonic::Streaming<Job>, job_id: &str) -> anyhow::Result<Job> {
    let bar = ProgressBar::new(1000);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut last = None;
    while let Some(job) = stream.message().await? {
        let progress = job.progress.clone().unwrap_or_default();
        bar.set_position((progress.percent * 10.0).round() as u64);
        bar.set_message(progress_line(&job, &progress));
        let terminal = job.state().is_terminal();
        last = Some(job);
        if terminal {
            break;
        }
    }
    bar.finish_and_clear();
    last.filter(|job| job.state().is_terminal()).ok_or_else(|| {
        anyhow::anyhow!("the orchestrator closed the watch before job {job_id} ended")
    })
}

/// The progress bar's message: state, phase, model frames, chunks and the time left.
fn progress_line(job: &Job, progress: &Progress) -> String {
    let mut line = format!(
        "{:>5.1}% {} {} frame {}/{} chunks {}/{}",
        progress.percent,
        job.state().label(),
        progress.phase,
        progress.frames_done,
        progress.frames_total,
        progress.chunks_done,
        progress.chunks_total
    );
    if progress.chunks_ahead > 0 && progress.phase == "waiting" {
        let _ = write!(
            line,
            " waiting for a slot: {} chunk{} ahead",
            progress.chunks_ahead,
            if progress.chunks_ahead == 1 { "" } else { "s" }
        );
    }
    if progress.seconds_remaining > 0.0 {
        let _ = write!(line, " ~{:.0} s left", progress.seconds_remaining.ceil());
    }
    line
}

/// One line about a job, for `status` and `list`.
pub fn job_line(job: &Job) -> String {
    let progress = job.progress.clone().unwrap_or_default();
    let mut line = format!(
        "{}  {:<9}  {:>5.1}%  frames {}/{}",
        job.id,
        job.state().label(),
        progress.percent,
        progress.frames_done,
        progress.frames_total
    );
    let priority = job.spec.as_ref().map_or("normal", |s| s.priority().label());
    if priority != "normal" {
        let _ = write!(line, "  {priority}");
    }
    if !job.tenant.is_empty() && job.tenant != "default" {
        let _ = write!(line, "  tenant {}", printable(&job.tenant));
    }
    if let Some(plan) = &job.plan {
        let _ = write!(line, "  chunks {} ({})", plan.chunks, plan.rule);
    }
    if !job.error.is_empty() {
        let _ = write!(line, "\n  error: {}", printable(&job.error));
    }
    line
}

/// The cost report as a table: one row per chunk, then the totals.
pub fn cost_table(report: &CostReport) -> String {
    let mut out = String::new();
    let plan = &report.plan();
    let _ = writeln!(out, "job {}  {}", report.job_id, report.state);
    let _ = writeln!(
        out,
        "plan: {} chunks, {} frames, {:.2} s of video ({})",
        plan.chunks, plan.frames, plan.duration_seconds, plan.rule
    );
    if let Some(line) = codecs_line(&report.chunks) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(
        out,
        "{:>5} {:>7} {:>3} {:<14} {:<5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "chunk",
        "frames",
        "try",
        "worker",
        "gpu",
        "download",
        "init",
        "decode",
        "process",
        "encode",
        "upload",
        "gpu-s",
        "usd"
    );
    for chunk in &report.chunks {
        let phase = |name: &str| chunk.phases.get(name).copied().unwrap_or(0.0);
        let _ = writeln!(
            out,
            "{:>5} {:>7} {:>3} {:<14} {:<5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.2} {:>10.6}",
            chunk.index,
            chunk.frames,
            chunk.attempts,
            truncate(&chunk.worker, 14),
            truncate(&chunk.gpu_type, 5),
            phase("download"),
            phase("init"),
            phase("decode"),
            phase("process"),
            phase("encode"),
            phase("upload"),
            chunk.gpu_seconds + chunk.wasted_gpu_seconds,
            chunk.cost_usd
        );
    }
    let totals = &report.totals();
    let _ = writeln!(
        out,
        "total: {} frames, {} attempts, {:.2} GPU-s ({:.2} wasted), ${:.6}, wall {:.2} s, \
         speedup {:.2}x over one chunk (est.)",
        totals.frames,
        totals.attempts,
        totals.gpu_seconds + totals.wasted_gpu_seconds,
        totals.wasted_gpu_seconds,
        totals.cost_usd,
        totals.wall_seconds,
        totals.speedup
    );
    let _ = writeln!(
        out,
        "storage: {} read ({} of the input, {:.2}x its size), {} written, {} requests \
         (probe {:.2} s, stitch {:.2} s)",
        bytes(totals.bytes_read),
        bytes(totals.input_bytes_read),
        totals.read_amplification,
        bytes(totals.bytes_written),
        totals.requests,
        report.orchestrator().probe_seconds,
        report.orchestrator().stitch_seconds
    );
    if let Some(outcome) = report.prediction_outcome() {
        let _ = writeln!(out, "plan: {}", outcome.describe(totals));
    }
    for chunk in &report.chunks {
        for failure in &chunk.failures {
            let _ = writeln!(out, "retried: chunk {} {failure}", chunk.index);
        }
    }
    if report.inputs.len() > 1 {
        out.push_str(&inputs_table(report));
    }
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// Each input of a job of several: its state, chunks, frames, GPU-seconds, price and what
/// it read of its input, then why any failed or was skipped.
fn inputs_table(report: &CostReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>5} {:<10} {:>6} {:>7} {:>9} {:>10} {:>7}  input",
        "input", "state", "chunks", "frames", "gpu-s", "usd", "read"
    );
    for input in &report.inputs {
        let totals = input.totals.unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>5} {:<10} {:>6} {:>7} {:>9.2} {:>10.6} {:>6.2}x  {}",
            input.index,
            input.state,
            input.plan.as_ref().map_or(0, |p| p.chunks),
            totals.frames,
            totals.gpu_seconds + totals.wasted_gpu_seconds,
            totals.cost_usd,
            totals.read_amplification,
            input.input_uri
        );
    }
    for input in report.inputs.iter().filter(|i| !i.error.is_empty()) {
        let _ = writeln!(out, "input {}: {}", input.index, input.error);
    }
    out
}

/// A dry run's what-if table: every chunk count weighed, its predicted wall time, speedup,
/// GPU-seconds and price, the one chosen marked, then the rule.
pub fn plan_table(plan: &PlanJobResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} frames, {:.2} s of video; `{}` on {} slot{} ({}); {} jobs of this kind in the \
         cost history",
        plan.frames,
        plan.duration_seconds,
        plan.kind,
        plan.slots,
        if plan.slots == 1 { "" } else { "s" },
        plan.gpu_type,
        plan.history_jobs
    );
    if !plan.candidates.is_empty() {
        let _ = writeln!(
            out,
            "{:>6} {:>9} {:>8} {:>9} {:>11}",
            "chunks", "wall s", "speedup", "GPU-s", "usd"
        );
        for candidate in &plan.candidates {
            let _ = writeln!(
                out,
                "{:>6} {:>9.2} {:>7.2}x {:>9.2} {:>11.6}{}",
                candidate.chunks,
                candidate.wall_seconds,
                candidate.speedup,
                candidate.gpu_seconds,
                candidate.cost_usd,
                if candidate.chunks == plan.chosen {
                    "  <- chosen"
                } else {
                    ""
                }
            );
        }
    }
    let _ = writeln!(out, "chosen: {} ({})", plan.chosen, plan.rule);
    out
}

/// What encoded and decoded the chunks (`None` for infer chunks, which encode nothing).
fn codecs_line(chunks: &[ChunkCost]) -> Option<String> {
    let distinct = |field: fn(&ChunkCost) -> &str| {
        let mut names: Vec<&str> = chunks.iter().map(field).filter(|n| !n.is_empty()).collect();
        names.sort_unstable();
        names.dedup();
        names.join(", ")
    };
    let encoders = distinct(|c| c.encoder.as_str());
    (!encoders.is_empty()).then(|| {
        format!(
            "encoder: {encoders}; decoder: {}",
            distinct(|c| c.decoder.as_str())
        )
    })
}

/// The fleet as a table: one row per worker, then the slots in all.
pub fn workers_table(workers: &[WorkerSummary]) -> String {
    let mut out = String::new();
    if workers.is_empty() {
        out.push_str(
            "no worker registered; start workers pointed at this orchestrator \
             (framefleet-worker --orchestrator URL)\n",
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{:<20} {:<28} {:<6} {:<6} {:>5} {:>5} {:>10} {:>7}  {:<30} state",
        "name", "address", "gpu", "device", "busy", "free", "cold start", "chunks", "encoders"
    );
    for worker in workers {
        let _ = writeln!(
            out,
            "{:<20} {:<28} {:<6} {:<6} {:>5} {:>5} {:>9.1}s {:>7}  {:<30} {}",
            printable(&worker.name),
            printable(&worker.address),
            printable(&worker.gpu_type),
            printable(&worker.device),
            worker.busy_slots,
            if worker.draining {
                0
            } else {
                worker.slots.saturating_sub(worker.busy_slots)
            },
            worker.cold_start_seconds,
            worker.chunks_done,
            worker.encoders.join(","),
            if worker.draining { "draining" } else { "ready" }
        );
        for chunk in &worker.running {
            let _ = writeln!(
                out,
                "    runs {} chunk {} (tenant {}, {})",
                printable(&chunk.job_id),
                chunk.chunk,
                printable(&chunk.tenant),
                printable(&chunk.priority)
            );
        }
    }
    let slots: u32 = workers
        .iter()
        .map(|w| if w.draining { w.busy_slots } else { w.slots })
        .sum();
    let busy: u32 = workers.iter().map(|w| w.busy_slots).sum();
    let _ = writeln!(
        out,
        "{} worker{}, {busy} of {slots} slots busy",
        workers.len(),
        if workers.len() == 1 { "" } else { "s" }
    );
    out
}

/// How `framefleet costs` groups its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Grouping {
    /// One row per GPU type.
    #[default]
    Gpu,
    /// One row per tenant.
    Tenant,
}

/// A cost summary as text: jobs by state, video, GPU time and money, then one row per GPU
/// type or per tenant (`by`).
pub fn cost_summary_table(summary: &CostSummary, by: Grouping) -> String {
    let mut out = String::new();
    let states: Vec<String> = summary
        .by_state
        .iter()
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    let _ = writeln!(out, "jobs: {} ({})", summary.jobs, states.join(", "));
    let _ = writeln!(
        out,
        "video: {:.1} min succeeded, {} frames produced",
        summary.video_seconds / 60.0,
        summary.frames
    );
    let _ = writeln!(
        out,
        "GPU-s: {:.2} ({:.2} wasted), ${:.6}, ${:.6} per minute of video",
        summary.gpu_seconds + summary.wasted_gpu_seconds,
        summary.wasted_gpu_seconds,
        summary.cost_usd,
        summary.usd_per_video_minute
    );
    let (head, count, rows) = use_rows(summary, by);
    let _ = writeln!(
        out,
        "{head:<12} {count:>7} {:>10} {:>10} {:>12}",
        "gpu-s", "wasted", "usd"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<12} {:>7} {:>10.2} {:>10.2} {:>12.6}",
            truncate(&printable(&row.name), 12),
            row.count,
            row.gpu_seconds,
            row.wasted_gpu_seconds,
            row.cost_usd
        );
    }
    if !summary.predictions.is_empty() {
        let _ = writeln!(
            out,
            "predicted wall time, off by (|predicted - measured| / measured):"
        );
        for (kind, accuracy) in &summary.predictions {
            let _ = writeln!(
                out,
                "  {kind}: {} jobs, median {:.0} %, worst {:.0} %",
                accuracy.jobs,
                accuracy.median_error * 100.0,
                accuracy.worst_error * 100.0
            );
        }
    }
    out
}

/// One row of the cost summary's grouping.
struct UseRow {
    name: String,
    count: u64,
    gpu_seconds: f64,
    wasted_gpu_seconds: f64,
    cost_usd: f64,
}

/// The grouping's column heads (name, count) and rows.
fn use_rows(summary: &CostSummary, by: Grouping) -> (&'static str, &'static str, Vec<UseRow>) {
    match by {
        Grouping::Gpu => {
            let rows = summary.by_gpu_type.iter().map(|(gpu, used)| UseRow {
                name: gpu.clone(),
                count: used.chunks,
                gpu_seconds: used.gpu_seconds,
                wasted_gpu_seconds: used.wasted_gpu_seconds,
                cost_usd: used.cost_usd,
            });
            ("gpu", "chunks", rows.collect())
        }
        Grouping::Tenant => {
            let rows = summary.by_tenant.iter().map(|(tenant, used)| UseRow {
                name: tenant.clone(),
                count: used.jobs,
                gpu_seconds: used.gpu_seconds,
                wasted_gpu_seconds: used.wasted_gpu_seconds,
                cost_usd: used.cost_usd,
            });
            ("tenant", "jobs", rows.collect())
        }
    }
}

fn truncate(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_job_shows_what_is_ahead_of_it() {
        let job = Job::default();
        let progress = Progress {
            phase: "waiting".into(),
            chunks_ahead: 7,
            chunks_total: 2,
            ..Progress::default()
        };
        let line = progress_line(&job, &progress);
        assert!(
            line.ends_with("waiting for a slot: 7 chunks ahead"),
            "{line}"
        );
    }

    #[test]
    fn the_workers_table_shows_each_worker_its_slots_and_whether_it_drains() {
        let worker = |name: &str, busy: u32, draining: bool| WorkerSummary {
            name: name.into(),
            address: format!("http://10.0.0.1:5006{busy}"),
            gpu_type: "L4".into(),
            device: "cuda".into(),
            slots: 2,
            busy_slots: busy,
            draining,
            cold_start_seconds: 41.34,
            chunks_done: 7,
            encoders: vec!["libx264".into(), "h264_nvenc".into()],
            ..WorkerSummary::default()
        };
        let table = workers_table(&[worker("gpu-a", 1, false), worker("gpu-b", 1, true)]);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(
            rows[1].starts_with("gpu-a") && rows[1].ends_with("ready"),
            "{table}"
        );
        assert!(
            rows[1].contains("41.3s")
                && rows[1].contains(" 7 ")
                && rows[1].contains("libx264,h264_nvenc"),
            "{table}"
        );
        assert!(rows[2].ends_with("draining"), "{table}");
        assert_eq!(rows[3], "2 workers, 2 of 3 slots busy");
        assert!(workers_table(&[]).contains("no worker registered"));
        let mut running = worker("gpu-c", 1, false);
        running.running = vec![framefleet_common::proto::RunningChunk {
            job_id: "job-7".into(),
            chunk: 3,
            tenant: "studio".into(),
            priority: "interactive".into(),
        }];
        let table = workers_table(&[running]);
        assert_eq!(
            table.lines().nth(2),
            Some("    runs job-7 chunk 3 (tenant studio, interactive)"),
            "{table}"
        );
    }

    #[test]
    fn the_table_shows_every_chunk_and_the_totals() {
        let mut report = CostReport {
            job_id: "job-1".into(),
            state: "SUCCEEDED".into(),
            chunks: vec![
                ChunkCost {
                    index: 0,
                    frames: 10,
                    attempts: 1,
                    gpu_type: "cpu".into(),
                    ..ChunkCost::default()
                },
                ChunkCost {
                    index: 1,
                    frames: 12,
                    attempts: 2,
                    gpu_type: "cpu".into(),
                    ..ChunkCost::default()
                },
            ],
            ..CostReport::default()
        };
        report.finalize(1.0, 0);
        let table = cost_table(&report);
        assert!(table.contains("total: 22 frames, 3 attempts"), "{table}");
        assert_eq!(table.lines().count(), 7);
        for chunk in &mut report.chunks {
            chunk.encoder = "libx265".into();
            chunk.decoder = "software".into();
        }
        let table = cost_table(&report);
        assert!(
            table.contains("encoder: libx265; decoder: software"),
            "{table}"
        );
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
