//! Which encoder writes a job, against a real cluster (Garage on loopback) whose workers
//! differ in what they have: workers report the encoders they found when they started
//! (NVENC does not open on a machine without its driver, so they fall back to the
//! software ones), a job asking for a codec gets the encoder the fleet has on the most
//! slots, a job never mixes encoders (its chunks go only to workers that have its
//! encoder, whatever else is idle), and a job asking for an encoder no worker has fails
//! with a message that says what to do. Slots that share one GPU are charged their share.

use framefleet_testkit as support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use framefleet_common::proto::{EncoderSettings, Job, JobState, ListWorkersRequest};
use framefleet_common::storage::ObjectUri;
use support::*;

/// `spec` encoded with `encoder` (a codec or an encoder's name).
fn with_encoder(
    mut spec: framefleet_common::proto::JobSpec,
    encoder: &str,
) -> framefleet_common::proto::JobSpec {
    spec.encoder = Some(EncoderSettings {
        encoder: encoder.into(),
        ..spec.encoder.unwrap_or_default()
    });
    spec
}

/// The distinct values of a text field over a report's chunks, in order.
fn chunk_values(report: &serde_json::Value, field: &str) -> Vec<String> {
    let values: BTreeSet<String> = report["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c[field].as_str().unwrap_or_default().to_string())
        .collect();
    values.into_iter().collect()
}

/// Downloads `output` into `dir` and checks it is `codec` video holding `clip`'s frames
/// at their timestamps, with its audio.
async fn assert_exact_as(codec: &str, output: &ObjectUri, clip: &Path, dir: &Path) {
    let file = dir.join(format!("{codec}.mp4"));
    download(output, &file).await;
    assert_eq!(stream_field(&file, "codec_name").as_deref(), Some(codec));
    assert_exact(clip, &file, (320, 180));
}

async fn finished(client: &mut Client, id: &str) -> Job {
    let events = watch(client, id, Duration::from_secs(180)).await;
    events.last().cloned().expect("a final event")
}

/// Runs `spec` to success; returns its cost report.
async fn succeeded(
    client: &mut Client,
    spec: framefleet_common::proto::JobSpec,
) -> serde_json::Value {
    let id = submit(client, spec).await;
    let job = finished(client, &id).await;
    assert_eq!(state(&job), JobState::Succeeded, "{}", job.error);
    report(client, &id).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_written_by_one_encoder_on_the_workers_that_have_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("encoders");
    let clip = dir.path().join("in.mp4");
    clip_with_audio(&clip, "320x180", 24, 3, 24);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&clip, &input).await;

    let mut cluster = Cluster::start(0, &[("FRAMEFLEET_DISPATCH__WORKER_WAIT_SECONDS", "3")]);
    cluster.add_worker_with(
        "x264-only",
        &[("FRAMEFLEET_WORKER__ENCODERS", "[\"libx264\"]")],
    );
    cluster.add_worker_with("every-encoder", &[("FRAMEFLEET_WORKER__SLOTS", "2")]);
    let mut client = cluster.client().await;
    let workers = loop {
        let listed = client
            .list_workers(ListWorkersRequest {})
            .await
            .expect("ListWorkers")
            .into_inner()
            .workers;
        if listed.len() == 2 {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for worker in &workers {
        assert_eq!(worker.decoders, ["software"], "no NVDEC without a GPU");
        assert!(
            !worker.encoders.iter().any(|e| e.contains("nvenc")),
            "NVENC cannot open here, so it is not offered: {:?}",
            worker.encoders
        );
    }
    let every = workers
        .iter()
        .find(|w| w.name == "every-encoder")
        .expect("listed");
    assert_eq!(every.encoders, ["libx264", "libx265"]);

    // HEVC: only one worker has an encoder for it, so every chunk goes there, though the
    // other worker sits idle.
    let hevc_out = s3(&format!("{prefix}/hevc.mp4"));
    let spec = with_encoder(lossless_spec(&input, &hevc_out, 1.0, 4), "hevc");
    let hevc_report = succeeded(&mut client, spec).await;
    assert_eq!(chunk_values(&hevc_report, "encoder"), ["libx265"]);
    assert_eq!(chunk_values(&hevc_report, "worker"), ["every-encoder"]);
    assert_eq!(chunk_values(&hevc_report, "decoder"), ["software"]);
    assert_exact_as("hevc", &hevc_out, &clip, dir.path()).await;
    // Apple's players play HEVC in MP4 only under the `hvc1` tag, not FFmpeg's `hev1`.
    assert_eq!(
        stream_field(&dir.path().join("hevc.mp4"), "codec_tag_string").as_deref(),
        Some("hvc1")
    );

    // H.264 (the default): x264 is on every slot, so the orchestrator picks it.
    let h264_out = s3(&format!("{prefix}/h264.mp4"));
    let h264_report = succeeded(&mut client, lossless_spec(&input, &h264_out, 1.0, 4)).await;
    assert_eq!(chunk_values(&h264_report, "encoder"), ["libx264"]);
    assert_exact_as("h264", &h264_out, &clip, dir.path()).await;

    // NVENC by name: no worker has it, so the job fails saying what to do.
    let nvenc_out = s3(&format!("{prefix}/nvenc.mp4"));
    let spec = with_encoder(lossless_spec(&input, &nvenc_out, 1.0, 1), "h264_nvenc");
    let id = submit(&mut client, spec).await;
    let job = finished(&mut client, &id).await;
    assert_eq!(state(&job), JobState::Failed);
    assert!(
        job.error.contains("no worker with h264_nvenc") && job.error.contains("another encoder"),
        "{}",
        job.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_sharing_one_gpu_are_charged_their_share_of_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("gpu-share");
    let clip = dir.path().join("in.mp4");
    clip_with_audio(&clip, "320x180", 24, 4, 24);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&clip, &input).await;
    // One worker, one GPU, two slots: the job's two chunks run side by side on it.
    let cluster = Cluster::start(
        1,
        &[
            ("FRAMEFLEET_WORKER__SLOTS", "2"),
            ("FRAMEFLEET_WORKER__GPUS", "1"),
        ],
    );
    let mut client = cluster.client().await;
    let output = s3(&format!("{prefix}/out.mp4"));
    let report = succeeded(&mut client, lossless_spec(&input, &output, 2.0, 2)).await;
    let chunks = report["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), 2);
    let span = |c: &serde_json::Value| {
        let started = c["started_seconds"].as_f64().expect("started");
        (started, started + c["wall_seconds"].as_f64().expect("wall"))
    };
    let (a, b) = (span(&chunks[0]), span(&chunks[1]));
    let overlap = (a.1.min(b.1) - a.0.max(b.0)).max(0.0);
    assert!(overlap > 0.0, "the chunks ran side by side: {a:?} {b:?}");
    // While both ran, each held half the GPU: together they are charged the GPU's busy
    // time, the union of their spans, not the sum of their wall times.
    let union = (a.1 - a.0) + (b.1 - b.0) - overlap;
    let charged = chunk_sum(&report, "gpu_seconds");
    let walls = chunk_sum(&report, "wall_seconds");
    assert!(
        (charged - union).abs() <= 0.05 * union + 0.1,
        "charged {charged} GPU-seconds for {union} s of GPU time (walls add to {walls})"
    );
    assert!(
        charged < walls - 0.5 * overlap,
        "charged {charged}, walls {walls}"
    );
}
