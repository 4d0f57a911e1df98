//! Planning from measured costs, end to end with real processes on CPU workers: a few
//! `framefleet local` jobs of two kinds (lanczos, and Real-ESRGAN on small clips) fill a
//! cost history; then `framefleet plan` keeps a short cheap job in one chunk, chooses the
//! slow one's count by the rule on its own predictions, and the predicted wall times of new
//! jobs of each kind (another length and frame size, at the chosen count and at another)
//! are compared with what the jobs then took. A store without history plans by the
//! thresholds and says so. `bench/planning.sh` measures the same on larger clips with the
//! release build; the bound here is loose because test machines are busy.

use framefleet_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::*;

/// Where the history lives and the models come from.
struct Machine {
    store: PathBuf,
    models: PathBuf,
    dir: PathBuf,
}

impl Machine {
    /// A clip of testsrc2 at `size`, `seconds` long, 30 fps, a keyframe a second.
    fn clip(&self, name: &str, size: &str, seconds: u32) -> PathBuf {
        let path = self.dir.join(format!("{name}.mp4"));
        encoded_clip(
            &path,
            &format!("size={size}:rate=30"),
            seconds,
            false,
            &["-c:v", "libx264", "-g", "30", "-pix_fmt", "yuv420p"],
        );
        path
    }

    /// Runs `framefleet local` on two workers and returns its report.
    fn run(&self, input: &Path, model: &str, chunks: Option<u32>) -> Value {
        let name = input.file_stem().and_then(|s| s.to_str()).expect("name");
        let tag = chunks.map_or("auto".to_string(), |n| n.to_string());
        let report = self.dir.join(format!("{name}-{tag}.json"));
        let mut command = framefleet_local();
        command
            .arg(input)
            .arg(self.dir.join(format!("{name}-{tag}.mp4")))
            .args(["--workers", "2", "--model", model, "--preset", "veryfast"])
            .arg("--store")
            .arg(&self.store)
            .arg("--report-json")
            .arg(&report);
        if let Some(chunks) = chunks {
            command.args(["--chunks", &chunks.to_string()]);
        }
        let result = self.env(&mut command).output().expect("framefleet runs");
        assert!(
            result.status.success(),
            "{model} on {name}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        serde_json::from_slice(&std::fs::read(report).expect("report")).expect("report JSON")
    }

    /// `framefleet plan --json` for `input` with `model` on two workers.
    fn plan(&self, store: &Path, input: &Path, model: &str) -> Value {
        let mut command = Command::new(framefleet_binary());
        command
            .arg("plan")
            .arg(input)
            .args(["--workers", "2", "--model", model, "--preset", "veryfast"])
            .arg("--store")
            .arg(store)
            .arg("--json");
        let result = self.env(&mut command).output().expect("framefleet runs");
        assert!(
            result.status.success(),
            "plan: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        serde_json::from_slice(&result.stdout).expect("plan JSON")
    }

    fn env<'a>(&self, command: &'a mut Command) -> &'a mut Command {
        command
            .env("FRAMEFLEET_WORKER__MODEL_DIR", &self.models)
            .env("FRAMEFLEET_WORKER__DEVICE", "cpu")
            .env("RUST_LOG", "warn")
    }
}

const NEURAL: &str = "realesr-animevideov3-x2";

fn number(value: &Value) -> f64 {
    value.as_f64().expect("a number")
}

/// The candidate for `chunks` in a plan's what-if table.
fn candidate(plan: &Value, chunks: u64) -> &Value {
    plan["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .find(|c| c["chunks"].as_u64() == Some(chunks))
        .unwrap_or_else(|| panic!("no candidate for {chunks} chunks: {plan}"))
}

/// The count the default rule picks from `plan`'s own predictions: the fastest within
/// 1.05x one chunk's GPU-seconds.
fn rule_pick(plan: &Value) -> u64 {
    let budget = number(&candidate(plan, 1)["gpu_seconds"]) * 1.05;
    plan["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .filter(|c| number(&c["gpu_seconds"]) <= budget)
        .min_by(|a, b| number(&a["wall_seconds"]).total_cmp(&number(&b["wall_seconds"])))
        .and_then(|c| c["chunks"].as_u64())
        .expect("one chunk is always within the budget")
}

/// Runs a new job of `model` on `input` with auto planning and with `other` chunks, and
/// returns (chunks, predicted wall, measured wall) for both.
fn predicted_and_measured(machine: &Machine, input: &Path, model: &str) -> Vec<(u64, f64, f64)> {
    let plan = machine.plan(&machine.store, input, model);
    let chosen = plan["chosen"].as_u64().expect("chosen");
    assert_eq!(chosen, rule_pick(&plan), "{plan}");
    assert!(
        plan["rule"].as_str().expect("rule").starts_with("auto: "),
        "{plan}"
    );
    let report = machine.run(input, model, None);
    let predicted = &report["plan"]["predicted"];
    assert_eq!(report["plan"]["profile"], "auto", "{report}");
    assert_eq!(report["plan"]["chunks"].as_u64(), Some(chosen), "{report}");
    assert_eq!(predicted["chunks"].as_u64(), Some(chosen), "{report}");
    let other: u64 = if chosen == 1 { 2 } else { 1 };
    let other_report = machine.run(input, model, Some(other as u32));
    vec![
        (
            chosen,
            number(&predicted["wall_seconds"]),
            number(&report["totals"]["wall_seconds"]),
        ),
        (
            other,
            number(&candidate(&plan, other)["wall_seconds"]),
            number(&other_report["totals"]["wall_seconds"]),
        ),
    ]
}

#[test]
fn auto_plans_from_the_history_of_its_own_jobs_and_predicts_what_they_take() {
    let dir = tempfile::tempdir().expect("temp dir");
    let machine = Machine {
        store: dir.path().join("history.sqlite3"),
        models: import_models(dir.path(), &framefleet_worker::models::default_wheel()),
        dir: dir.path().to_path_buf(),
    };
    let empty = machine.plan(
        &dir.path().join("empty.sqlite3"),
        &machine.clip("cheap-3s", "256x144", 3),
        "lanczos",
    );
    assert!(
        empty["rule"].as_str().expect("rule").starts_with(
            "no cost history for `lanczos x2, x264 veryfast on cpu` yet, so thresholds: light"
        ),
        "{empty}"
    );
    assert!(empty["candidates"].as_array().expect("list").is_empty());

    // The history: each kind at two sizes, once alone and once as two chunks sharing the
    // machine's two cores.
    let light = machine.clip("light-6s", "320x180", 6);
    machine.run(&light, "lanczos", Some(1));
    machine.run(&light, "lanczos", Some(2));
    machine.run(&machine.clip("light-4s", "480x270", 4), "lanczos", Some(1));
    let neural = machine.clip("neural-2s", "128x72", 2);
    machine.run(&neural, NEURAL, Some(1));
    machine.run(&neural, NEURAL, Some(2));
    machine.run(
        &machine.clip("neural-2s-wide", "160x90", 2),
        NEURAL,
        Some(1),
    );

    let cheap = machine.plan(
        &machine.store,
        &machine.clip("cheap-3s", "256x144", 3),
        "lanczos",
    );
    assert_eq!(cheap["chosen"], 1, "{cheap}");
    assert!(cheap["history_jobs"].as_u64() >= Some(3), "{cheap}");

    let mut figures = predicted_and_measured(
        &machine,
        &machine.clip("new-neural-3s", "144x80", 3),
        NEURAL,
    );
    figures.extend(predicted_and_measured(
        &machine,
        &machine.clip("new-light-5s", "400x224", 5),
        "lanczos",
    ));
    for &(chunks, predicted, measured) in &figures {
        let error = (predicted - measured).abs() / measured;
        eprintln!(
            "{chunks} chunks: predicted {predicted:.2} s, measured {measured:.2} s ({:.0} %)",
            error * 100.0
        );
        assert!(
            error < 0.5,
            "{chunks} chunks: predicted {predicted:.2} s against {measured:.2} s measured: {figures:?}"
        );
    }
}
