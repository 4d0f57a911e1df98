//! `SummarizeCosts` and `framefleet costs` against a real cluster (Garage on loopback):
//! the reports of the jobs that ended add up, by state and GPU type, and the time range and
//! labels pick which jobs count. `framefleet plan --orchestrator` asks the cluster's own
//! fleet and cost history, which learns from the jobs it runs.

use framefleet_testkit as support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use framefleet_common::cost::CostSummary;
use framefleet_common::proto::{JobState, SummarizeCostsRequest};
use framefleet_common::storage::ObjectUri;
use support::*;

async fn summarize(client: &mut Client, ended_after: f64, labels: &[(&str, &str)]) -> CostSummary {
    let json = client
        .summarize_costs(SummarizeCostsRequest {
            ended_after,
            ended_before: 0.0,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await
        .expect("summarize")
        .into_inner()
        .json;
    serde_json::from_str(&json).expect("summary JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn ended_jobs_add_up_by_time_and_label() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("costs");
    let clip = dir.path().join("in.mp4");
    clip_with_audio(&clip, "320x180", 24, 2, 24);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&clip, &input).await;
    let text = dir.path().join("notes.mp4");
    std::fs::write(&text, "not a video").expect("text file");
    let not_video = s3(&format!("{prefix}/notes.mp4"));
    upload(&text, &not_video).await;

    let cluster = Cluster::start(2, &[]);
    let mut client = cluster.client().await;
    let started = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let mut ids = Vec::new();
    for (name, source, team, chunks) in [
        ("a1", &input, "a", 2),
        ("a2", &not_video, "a", 1),
        ("b1", &input, "b", 1),
    ] {
        let mut spec = lossless_spec(source, &s3(&format!("{prefix}/{name}.mp4")), 1.0, chunks);
        spec.labels.insert("team".into(), team.into());
        let id = submit(&mut client, spec).await;
        watch(&mut client, &id, Duration::from_secs(120)).await;
        ids.push(id);
    }
    let mut reports = Vec::new();
    for id in &ids {
        reports.push(report(&mut client, id).await);
    }
    let total = |field: &str| -> f64 {
        reports
            .iter()
            .map(|r| r["totals"][field].as_f64().expect("number"))
            .sum()
    };

    let all = summarize(&mut client, 0.0, &[]).await;
    assert_eq!(all.jobs, 3, "{all:?}");
    assert_eq!(all.by_state.get("SUCCEEDED"), Some(&2));
    assert_eq!(all.by_state.get("FAILED"), Some(&1));
    assert!((all.gpu_seconds - total("gpu_seconds")).abs() < 1e-9);
    assert_eq!(all.frames, 2 * 48);
    assert_eq!(all.by_gpu_type["cpu"].chunks, 3, "two chunks and one");
    assert!(
        (all.video_seconds - 4.0).abs() < 0.1,
        "{}",
        all.video_seconds
    );

    let team_a = summarize(&mut client, 0.0, &[("team", "a")]).await;
    assert_eq!((team_a.jobs, team_a.frames), (2, 48));
    assert_eq!(summarize(&mut client, 0.0, &[("team", "c")]).await.jobs, 0);
    assert_eq!(summarize(&mut client, started, &[]).await.jobs, 3);
    assert_eq!(summarize(&mut client, started + 3600.0, &[]).await.jobs, 0);

    let printed = framefleet()
        .args([
            "costs",
            "--since",
            "1h",
            "--label",
            "team=b",
            "--orchestrator",
            &cluster.url,
        ])
        .output()
        .expect("framefleet costs runs");
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    assert!(stdout.contains("jobs: 1 (SUCCEEDED 1)"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("cpu ")), "{stdout}");
    let refused = framefleet()
        .args([
            "costs",
            "--since",
            "5 weeks",
            "--orchestrator",
            &cluster.url,
        ])
        .output()
        .expect("framefleet costs runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("e.g. 24h"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `framefleet plan --orchestrator URL --json`, as a script would run it.
fn remote_plan(url: &str, input: &ObjectUri) -> serde_json::Value {
    let output = framefleet()
        .args(["plan", &input.to_string(), "--orchestrator", url, "--json"])
        .args(["--scale", "2", "--lossless", "--preset", "ultrafast"])
        .output()
        .expect("framefleet plan runs");
    assert!(
        output.status.success(),
        "framefleet plan failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("framefleet plan --json prints JSON")
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_asks_a_running_orchestrator_which_learns_from_its_own_jobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("remote-plan");
    let clip = dir.path().join("in.mp4");
    clip_with_audio(&clip, "320x180", 24, 4, 24);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&clip, &input).await;
    let cluster = Cluster::start(2, &[]);
    let mut client = cluster.client().await;

    let before = remote_plan(&cluster.url, &input);
    assert_eq!(before["history_jobs"], 0, "{before}");
    let rule = before["rule"].as_str().expect("rule");
    assert!(rule.starts_with("no cost history for"), "{rule}");
    assert_eq!(before["slots"], 2, "the fleet registered now: {before}");

    let mut spec = lossless_spec(&input, &s3(&format!("{prefix}/out.mp4")), 2.0, 2);
    spec.chunks = 0;
    let id = submit(&mut client, spec).await;
    let seen = watch(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(seen.last().map(state), Some(JobState::Succeeded));

    let after = remote_plan(&cluster.url, &input);
    assert_eq!(after["history_jobs"], 1, "{after}");
    let rule = after["rule"].as_str().expect("rule");
    assert!(rule.starts_with("auto:"), "{rule}");
    let candidates = after["candidates"].as_array().expect("candidates");
    assert!(!candidates.is_empty(), "{after}");
    for candidate in candidates {
        assert!(
            candidate["wall_seconds"].as_f64().is_some_and(|s| s > 0.0),
            "{candidate}"
        );
        assert!(
            candidate["stitch_seconds"]
                .as_f64()
                .is_some_and(|s| s > 0.0),
            "{candidate}"
        );
    }
    let chosen = after["chosen"].as_u64().expect("chosen");
    assert!(candidates.iter().any(|c| c["chunks"] == chosen), "{after}");
}
