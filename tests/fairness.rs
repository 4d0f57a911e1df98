//! No head-of-line blocking, with real processes: an orchestrator and two one-slot workers.
//! A short job submitted while a long, many-chunk job holds the fleet takes the next slot
//! that frees, so it ends within 1.5x of its idle latency plus one of the long job's
//! chunks, not behind the whole long job.

use framefleet_testkit as support;

use std::time::{Duration, Instant};

use framefleet_common::proto::{EncoderSettings, JobState, ListWorkersRequest};
use support::*;

/// Runs `spec` to its end and returns its id and how long it took from submission.
async fn timed(client: &mut Client, spec: framefleet_common::proto::JobSpec) -> (String, f64) {
    let started = Instant::now();
    let id = submit(client, spec).await;
    let snapshots = watch(client, &id, Duration::from_secs(600)).await;
    let last = snapshots.last().expect("a snapshot");
    assert_eq!(state(last), JobState::Succeeded, "{last:?}");
    (id, started.elapsed().as_secs_f64())
}

/// Slots busy across the fleet.
async fn busy_slots(client: &mut Client) -> u32 {
    let workers = client
        .list_workers(ListWorkersRequest {})
        .await
        .expect("workers")
        .into_inner()
        .workers;
    workers.iter().map(|w| w.busy_slots).sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_job_is_not_held_behind_a_long_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("fairness");
    let (long_clip, short_clip) = (dir.path().join("long.mp4"), dir.path().join("short.mp4"));
    clip_with_audio(&long_clip, "320x240", 25, 16, 25);
    clip_with_audio(&short_clip, "320x240", 25, 2, 25);
    let (long_in, short_in) = (
        s3(&format!("{prefix}/long.mp4")),
        s3(&format!("{prefix}/short.mp4")),
    );
    upload(&long_clip, &long_in).await;
    upload(&short_clip, &short_in).await;
    let cluster = Cluster::start(2, &[("FRAMEFLEET_PLANNER__MAX_CHUNKS", "12")]);
    let mut client = cluster.client().await;

    let short = |name: &str| lossless_spec(&short_in, &s3(&format!("{prefix}/{name}.mp4")), 2.0, 1);
    let (_, idle) = timed(&mut client, short("idle")).await;

    // x264's slowest preset makes each of its chunks seconds long while its output, and so
    // its stitch, stays small.
    let mut long_spec = lossless_spec(&long_in, &s3(&format!("{prefix}/long-out.mp4")), 2.0, 12);
    long_spec.encoder = Some(EncoderSettings {
        crf: 30,
        preset: "veryslow".into(),
        ..EncoderSettings::default()
    });
    let long_id = submit(&mut client, long_spec).await;
    // Once the long job holds both slots, the short one arrives behind it.
    let holding = Instant::now();
    loop {
        if busy_slots(&mut client).await >= 2 || holding.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, busy) = timed(&mut client, short("busy")).await;

    let snapshots = watch(&mut client, &long_id, Duration::from_secs(600)).await;
    assert_eq!(
        state(snapshots.last().expect("a snapshot")),
        JobState::Succeeded
    );
    let long = report(&mut client, &long_id).await;
    let chunk_walls: Vec<f64> = long["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c["wall_seconds"].as_f64().unwrap_or(0.0))
        .collect();
    let longest_chunk = chunk_walls.iter().copied().fold(0.0, f64::max);
    let whole = long["totals"]["wall_seconds"].as_f64().unwrap_or(0.0);
    let bound = 1.5 * (idle + longest_chunk);
    println!(
        "short job: idle {idle:.1} s, behind the long job {busy:.1} s (bound {bound:.1} s); \
         long job {whole:.1} s, chunks up to {longest_chunk:.1} s, orchestrator {}",
        long["orchestrator"]
    );
    assert!(
        busy <= bound,
        "the short job took {busy:.1} s behind the long one: more than 1.5 x (its idle \
         {idle:.1} s + one long chunk {longest_chunk:.1} s)"
    );
}
