//! The cost report as a self-contained HTML page: a timing waterfall (inline SVG, no
//! scripts, no external files) with one row for the probe, one per chunk and one for the
//! stitch, each bar where it ran on the job's clock, plus the chunk table and the totals.
//!
//! A chunk's bar spans the time its accepted attempt held a worker's slot. Pipeline phases
//! overlap (decode, process and encode run at once), so the thin bar under it shows how
//! the busy seconds split between phases, not when each ran; every bar's tooltip (an SVG
//! `<title>`) gives the exact figures. Chunks reused after an orchestrator restart held
//! nothing in this run and are listed without a bar.

use std::fmt::Write as _;

use framefleet_common::cost::{ChunkCost, CostReport, InputCost};

/// Phase names in pipeline order, with their colours.
const PHASES: [(&str, &str); 6] = [
    ("download", "#8c8c8c"),
    ("init", "#b07aa1"),
    ("decode", "#4e79a7"),
    ("process", "#e15759"),
    ("encode", "#59a14f"),
    ("upload", "#f28e2b"),
];

const LABEL_WIDTH: f64 = 230.0;
const PLOT_WIDTH: f64 = 720.0;
const ROW_HEIGHT: f64 = 30.0;
const AXIS_HEIGHT: f64 = 28.0;

/// Renders `report` as a complete HTML document.
pub fn html(report: &CostReport) -> String {
    let mut page = String::new();
    let title = format!("framefleet job {}", report.job_id);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    summary(&mut page, report);
    page.push_str("<h2>Timeline</h2>\n");
    svg(&mut page, report);
    legend(&mut page);
    chunk_table(&mut page, report);
    page.push_str("</body>\n</html>\n");
    page
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #ddd}\
th{background:#f4f4f4}td.l,th.l{text-align:left}\
.legend span{display:inline-block;margin-right:14px}\
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}\
svg text{font:12px system-ui,sans-serif}";

/// The report's one input (or output), or each of its several inputs' joined.
fn describe(report: &CostReport, of: fn(&InputCost) -> &String, one: &str) -> String {
    if report.inputs.len() > 1 {
        report
            .inputs
            .iter()
            .map(|input| of(input).as_str())
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        one.to_string()
    }
}

fn summary(page: &mut String, report: &CostReport) {
    let totals = &report.totals();
    let plan = &report.plan();
    let rows = [
        ("state", report.state.clone()),
        (
            "input",
            describe(report, |i| &i.input_uri, &report.input_uri),
        ),
        (
            "output",
            describe(report, |i| &i.output_uri, &report.output_uri),
        ),
        (
            "plan",
            format!(
                "{} chunks, {} frames, {:.2} s of video ({}, profile {})",
                plan.chunks, plan.frames, plan.duration_seconds, plan.rule, plan.profile
            ),
        ),
        ("wall time", format!("{:.2} s", totals.wall_seconds)),
        (
            "prediction",
            report.prediction_outcome().map_or_else(
                || "none (no cost history for this kind of job when it was planned)".to_string(),
                |outcome| outcome.describe(totals),
            ),
        ),
        (
            "GPU-seconds",
            format!(
                "{:.2} ({:.2} wasted on failed or abandoned attempts)",
                totals.gpu_seconds + totals.wasted_gpu_seconds,
                totals.wasted_gpu_seconds
            ),
        ),
        ("cost", format!("${:.6}", totals.cost_usd)),
        (
            "speedup",
            format!("{:.2}x over one chunk (est.)", totals.speedup),
        ),
        (
            "storage",
            format!(
                "{} bytes read ({:.2}x the input), {} written, {} requests",
                totals.bytes_read, totals.read_amplification, totals.bytes_written, totals.requests
            ),
        ),
    ];
    page.push_str("<table>\n");
    for (name, value) in rows {
        let _ = writeln!(
            page,
            "<tr><th class=\"l\">{name}</th><td class=\"l\">{}</td></tr>",
            escape(&value)
        );
    }
    page.push_str("</table>\n");
}

/// One bar of the waterfall.
struct Bar {
    label: String,
    start: f64,
    seconds: f64,
    colour: &'static str,
    tooltip: String,
    /// Busy seconds per phase, drawn as a thin split under the bar (chunks only).
    split: Vec<(&'static str, f64)>,
}

/// The probe, the chunks and the stitch; the probe or stitch of a job that failed before
/// finishing them is left out.
fn bars(report: &CostReport) -> Vec<Bar> {
    let orchestrator = &report.orchestrator();
    let step = |label: &str, start: f64, seconds: f64, what: &str| Bar {
        label: format!("{label} (orchestrator)"),
        start,
        seconds,
        colour: "#76b7b2",
        tooltip: format!("{what}: {seconds:.2} s"),
        split: Vec::new(),
    };
    let mut bars = Vec::new();
    if orchestrator.probe_seconds > 0.0 {
        bars.push(step(
            "probe",
            orchestrator.probe_started_seconds,
            orchestrator.probe_seconds,
            "probe",
        ));
    }
    bars.extend(report.chunks.iter().map(chunk_bar));
    if orchestrator.stitch_seconds > 0.0 {
        bars.push(step(
            "stitch",
            orchestrator.stitch_started_seconds,
            orchestrator.stitch_seconds,
            "stitch and upload",
        ));
    }
    bars
}

fn chunk_bar(chunk: &ChunkCost) -> Bar {
    let label = format!(
        "chunk {} · {} · {}",
        chunk.index, chunk.worker, chunk.device
    );
    let phase = |name: &str| chunk.phases.get(name).copied().unwrap_or(0.0);
    let mut tooltip = format!(
        "chunk {}: frames {}..{} ({}), attempt {} on {}, held {:.2} s, {:.2} GPU-s",
        chunk.index,
        chunk.start_frame,
        chunk.end_frame,
        chunk.frames,
        chunk.attempts,
        chunk.worker,
        chunk.wall_seconds,
        chunk.gpu_seconds
    );
    for (name, _) in PHASES {
        let _ = write!(tooltip, "\n{name}: {:.2} s busy", phase(name));
    }
    if chunk.resumed {
        tooltip.push_str("\nreused from before an orchestrator restart");
    }
    Bar {
        label,
        start: chunk.started_seconds,
        seconds: if chunk.resumed {
            0.0
        } else {
            chunk.wall_seconds
        },
        colour: "#4e79a7",
        tooltip,
        split: PHASES
            .iter()
            .map(|&(name, colour)| (colour, phase(name)))
            .collect(),
    }
}

fn svg(page: &mut String, report: &CostReport) {
    let bars = bars(report);
    let end = bars
        .iter()
        .map(|bar| bar.start + bar.seconds)
        .fold(report.totals().wall_seconds, f64::max)
        .max(1e-3);
    let scale = PLOT_WIDTH / end;
    let height = AXIS_HEIGHT + ROW_HEIGHT * bars.len() as f64;
    let width = LABEL_WIDTH + PLOT_WIDTH + 20.0;
    let _ = writeln!(
        page,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"job timeline\">"
    );
    let step = tick_step(end);
    let mut tick = 0.0;
    while tick <= end + 1e-9 {
        let x = LABEL_WIDTH + tick * scale;
        let _ = writeln!(
            page,
            "<line x1=\"{x:.1}\" y1=\"{AXIS_HEIGHT}\" x2=\"{x:.1}\" y2=\"{height}\" stroke=\"#e4e4e4\"/>\
             <text x=\"{x:.1}\" y=\"16\" text-anchor=\"middle\">{} s</text>",
            trim(tick)
        );
        tick += step;
    }
    for (row, bar) in bars.iter().enumerate() {
        let y = AXIS_HEIGHT + ROW_HEIGHT * row as f64;
        let x = LABEL_WIDTH + bar.start * scale;
        let w = (bar.seconds * scale).max(if bar.seconds > 0.0 { 1.0 } else { 0.0 });
        let _ = writeln!(
            page,
            "<g class=\"bar\"><title>{}</title>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"14\" fill=\"{}\"/>",
            escape(&bar.tooltip),
            LABEL_WIDTH - 8.0,
            y + 15.0,
            escape(&bar.label),
            y + 4.0,
            bar.colour
        );
        let busy: f64 = bar.split.iter().map(|(_, seconds)| seconds).sum();
        if busy > 0.0 && w > 0.0 {
            let mut offset = x;
            for (colour, seconds) in &bar.split {
                let part = w * seconds / busy;
                if part > 0.0 {
                    let _ = write!(
                        page,
                        "<rect x=\"{offset:.1}\" y=\"{:.1}\" width=\"{part:.1}\" height=\"5\" fill=\"{colour}\"/>",
                        y + 20.0
                    );
                    offset += part;
                }
            }
        }
        page.push_str("</g>\n");
    }
    page.push_str("</svg>\n");
}

/// A round step (1, 2 or 5 times a power of ten) cutting `end` seconds into at most 8.
fn tick_step(end: f64) -> f64 {
    let raw = end / 8.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| end / step <= 8.0 + 1e-9)
        .unwrap_or(raw)
}

/// A tick label without needless decimals.
fn trim(seconds: f64) -> String {
    let text = format!("{seconds:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn legend(page: &mut String) {
    page.push_str("<p class=\"legend\">Under each chunk, busy seconds by phase (phases overlap): ");
    for (name, colour) in PHASES {
        let _ = write!(
            page,
            "<span><i style=\"background:{colour}\"></i>{name}</span>"
        );
    }
    page.push_str("</p>\n");
}

fn chunk_table(page: &mut String, report: &CostReport) {
    page.push_str(
        "<h2>Chunks</h2>\n<table>\n<tr><th>chunk</th><th>frames</th><th>attempts</th>\
                   <th class=\"l\">worker</th><th class=\"l\">GPU</th><th class=\"l\">device</th>",
    );
    for (name, _) in PHASES {
        let _ = write!(page, "<th>{name} s</th>");
    }
    page.push_str("<th>held s</th><th>GPU-s</th><th>wasted GPU-s</th><th>USD</th></tr>\n");
    for chunk in &report.chunks {
        let _ = write!(
            page,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
             <td class=\"l\">{}</td>",
            chunk.index,
            if chunk.resumed { " (reused)" } else { "" },
            chunk.frames,
            chunk.attempts,
            escape(&chunk.worker),
            escape(&chunk.gpu_type),
            escape(&chunk.device)
        );
        for (name, _) in PHASES {
            let seconds = chunk.phases.get(name).copied().unwrap_or(0.0);
            let _ = write!(page, "<td>{seconds:.2}</td>");
        }
        let _ = writeln!(
            page,
            "<td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.6}</td></tr>",
            chunk.wall_seconds, chunk.gpu_seconds, chunk.wasted_gpu_seconds, chunk.cost_usd
        );
    }
    page.push_str("</table>\n");
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_common::cost::OrchestratorCost;

    fn report() -> CostReport {
        let phases = |process: f64| {
            [("decode", 1.0), ("process", process), ("encode", 2.0)]
                .into_iter()
                .map(|(name, seconds)| (name.to_string(), seconds))
                .collect()
        };
        let mut report = CostReport {
            job_id: "job-<1>".into(),
            state: "SUCCEEDED".into(),
            input_uri: "s3://bucket/a&b.mp4".into(),
            chunks: vec![
                ChunkCost {
                    index: 0,
                    frames: 10,
                    attempts: 1,
                    worker: "w<script>".into(),
                    phases: phases(3.0),
                    started_seconds: 1.0,
                    wall_seconds: 6.0,
                    ..ChunkCost::default()
                },
                ChunkCost {
                    index: 1,
                    frames: 12,
                    attempts: 2,
                    worker: "w2".into(),
                    phases: phases(5.0),
                    started_seconds: 1.5,
                    wall_seconds: 8.0,
                    ..ChunkCost::default()
                },
            ],
            orchestrator: Some(OrchestratorCost {
                probe_started_seconds: 0.0,
                probe_seconds: 1.0,
                stitch_started_seconds: 9.5,
                stitch_seconds: 0.5,
                ..OrchestratorCost::default()
            }),
            ..CostReport::default()
        };
        report.finalize(10.0, 0);
        report
    }

    #[test]
    fn every_row_is_drawn_where_it_ran() {
        let page = html(&report());
        // 720 px for 10 s: 72 px a second, after the 230 px label column.
        for (x, width) in [(230.0, 72.0), (302.0, 432.0), (338.0, 576.0), (914.0, 36.0)] {
            let bar = format!("x=\"{x:.1}\" y=");
            assert!(page.contains(&bar), "no bar at {x}: {page}");
            assert!(page.contains(&format!("width=\"{width:.1}\"")), "{page}");
        }
        assert_eq!(page.matches("<g class=\"bar\">").count(), 4);
        // The split under chunk 1 (1 + 5 + 2 busy seconds over 576 px) keeps proportions.
        assert!(page.contains("width=\"360.0\" height=\"5\""), "{page}");
    }

    #[test]
    fn the_page_is_self_contained_and_escapes_what_users_named() {
        let page = html(&report());
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        assert!(!page.contains("<script"), "no scripts: {page}");
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "no external files"
        );
        assert!(page.contains("job-&lt;1&gt;"));
        assert!(page.contains("a&amp;b.mp4"));
        assert!(page.contains("w&lt;script&gt;"));
    }

    #[test]
    fn a_job_that_failed_at_the_probe_draws_no_empty_rows() {
        let page = html(&CostReport {
            state: "FAILED".into(),
            ..CostReport::default()
        });
        assert_eq!(page.matches("<g class=\"bar\">").count(), 0, "{page}");
    }

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(10.0), 2.0);
        assert_eq!(tick_step(0.7), 0.1);
        assert_eq!(tick_step(95.0), 20.0);
        assert_eq!(trim(2.50), "2.5");
        assert_eq!(trim(4.0), "4");
    }
}
