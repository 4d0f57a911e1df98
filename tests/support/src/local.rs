//! Jobs run with `framefleet local`, as a user runs them, and the checks of the report
//! they write.

use std::path::Path;

use crate::process::framefleet_local;

/// Runs `framefleet local` on two workers, lossless, with `chunks` chunks at `scale`,
/// checks it succeeded and returns what it printed.
pub fn lossless_local_job(input: &Path, output: &Path, chunks: u32, scale: f64) -> String {
    lossless_local_job_with(input, output, chunks, scale, &[])
}

/// [`lossless_local_job`] with more options for `framefleet local`.
pub fn lossless_local_job_with(
    input: &Path,
    output: &Path,
    chunks: u32,
    scale: f64,
    options: &[&str],
) -> String {
    let result = framefleet_local()
        .arg(input)
        .arg(output)
        .args(["--workers", "2", "--lossless", "--preset", "ultrafast"])
        .args([
            "--chunks",
            &chunks.to_string(),
            "--scale",
            &scale.to_string(),
        ])
        .args(options)
        .output()
        .expect("framefleet runs");
    assert!(
        result.status.success(),
        "{} with {chunks} chunks: {}",
        input.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8_lossy(&result.stdout).into_owned()
}

/// The report's clock: the probe, then every chunk held between its start and its
/// acceptance, then the stitch once all are in, all within the job's wall time.
pub fn assert_timeline_holds(report: &serde_json::Value) {
    let seconds = |value: &serde_json::Value| value.as_f64().expect("seconds");
    let orchestrator = &report["orchestrator"];
    let probe_end =
        seconds(&orchestrator["probe_started_seconds"]) + seconds(&orchestrator["probe_seconds"]);
    let stitch_start = seconds(&orchestrator["stitch_started_seconds"]);
    let wall = seconds(&report["totals"]["wall_seconds"]);
    for chunk in report["chunks"].as_array().expect("chunks") {
        let started = seconds(&chunk["started_seconds"]);
        let accepted = seconds(&chunk["accepted_seconds"]);
        let held = seconds(&chunk["wall_seconds"]);
        assert!(
            started >= probe_end,
            "chunk started before the probe ended: {report}"
        );
        assert!(
            accepted >= started + held - 0.05,
            "chunk accepted before it was done: {report}"
        );
        assert!(
            stitch_start >= accepted,
            "stitch began before chunk was accepted: {report}"
        );
    }
    assert!(
        stitch_start + seconds(&orchestrator["stitch_seconds"]) <= wall + 0.05,
        "{report}"
    );
}
