//! End-to-end exactness: real orchestrator and worker processes over gRPC, the Garage S3
//! server on loopback, inputs made with lavfi. For every input kind (MPEG-TS included)
//! and N = 1..4 chunks the output has the input's frame count and timestamps, the input's audio packets, the
//! scaled size, and (lossless) the same decoded frames whatever N is.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use framefleet_common::proto::{JobState, SubmitJobRequest};
use support::*;

/// One input kind: a name, the ffmpeg arguments that make it, its file extension and the
/// size it has.
struct Clip {
    name: &'static str,
    extension: &'static str,
    size: (u32, u32),
    args: Vec<&'static str>,
}

fn clips() -> Vec<Clip> {
    let audio = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"];
    vec![
        Clip {
            name: "cfr30-aac",
            extension: "mp4",
            size: (160, 120),
            args: [
                &["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30"][..],
                &audio,
                &[
                    "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "12",
                ],
                &["-c:a", "aac", "-shortest"],
            ]
            .concat(),
        },
        Clip {
            name: "vfr",
            extension: "mp4",
            size: (160, 120),
            args: vec![
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x120:rate=30",
                "-t",
                "3",
                "-vf",
                "select='lt(mod(n\\,7)\\,3)+eq(mod(n\\,11)\\,0)'",
                "-vsync",
                "vfr",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-g",
                "10",
            ],
        },
        Clip {
            name: "no-audio",
            extension: "mp4",
            size: (128, 96),
            args: vec![
                "-f",
                "lavfi",
                "-i",
                "mandelbrot=size=128x96:rate=24",
                "-t",
                "1.5",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
            ],
        },
        Clip {
            name: "one-frame",
            extension: "mp4",
            size: (96, 64),
            args: vec![
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=96x64:rate=25",
                "-frames:v",
                "1",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
            ],
        },
        Clip {
            name: "odd-size",
            extension: "mp4",
            size: (321, 241),
            args: vec![
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-t",
                "1",
                "-vf",
                "scale=321:241",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv444p",
                "-g",
                "8",
            ],
        },
        Clip {
            name: "matroska",
            extension: "mkv",
            size: (160, 90),
            args: [
                &["-f", "lavfi", "-i", "smptebars=size=160x90:rate=25"][..],
                &audio,
                &[
                    "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10",
                ],
                &["-c:a", "aac", "-shortest"],
            ]
            .concat(),
        },
        Clip {
            // No index and timestamps that do not start at 0: seeks are estimates that
            // can land past a chunk's start, or past the last keyframe.
            name: "mpeg-ts",
            extension: "ts",
            size: (192, 108),
            args: [
                &["-f", "lavfi", "-i", "mandelbrot=size=192x108:rate=24"][..],
                &audio,
                &[
                    "-t", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "48",
                ],
                &["-c:a", "aac", "-shortest"],
            ]
            .concat(),
        },
    ]
}

fn make(clip: &Clip, dir: &Path) -> PathBuf {
    let path = dir.join(format!("{}.{}", clip.name, clip.extension));
    let mut args = clip.args.clone();
    let target = path.to_string_lossy().into_owned();
    args.push(&target);
    ffmpeg(&args);
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_frame_exact_and_independent_of_the_chunk_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("exact");
    let cluster = Cluster::start(3, &[]);
    let mut client = cluster.client().await;

    let mut jobs = Vec::new();
    for clip in clips() {
        let local = make(&clip, dir.path());
        let input = s3(&format!("{prefix}/in/{}.{}", clip.name, clip.extension));
        upload(&local, &input).await;
        for chunks in 1..=4u32 {
            let output = s3(&format!("{prefix}/out/{}-n{chunks}.mp4", clip.name));
            let id = submit(&mut client, lossless_spec(&input, &output, 2.0, chunks)).await;
            jobs.push((clip.name, clip.size, local.clone(), chunks, output, id));
        }
    }

    let mut hashes: BTreeMap<&str, Vec<(u32, Vec<String>)>> = BTreeMap::new();
    for (name, size, local, chunks, output, id) in &jobs {
        let snapshots = watch(&mut client, id, Duration::from_secs(300)).await;
        let last = snapshots.last().expect("at least one snapshot");
        assert_eq!(
            state(last),
            JobState::Succeeded,
            "{name} with {chunks} chunks: {}",
            last.error
        );
        let downloaded = dir.path().join(format!("{name}-n{chunks}.mp4"));
        download(output, &downloaded).await;
        assert_exact(local, &downloaded, (size.0 * 2, size.1 * 2));
        hashes
            .entry(name)
            .or_default()
            .push((*chunks, frame_hashes(&downloaded)));
    }
    for (name, by_count) in &hashes {
        let (_, reference) = &by_count[0];
        assert!(!reference.is_empty(), "{name}: no frames decoded");
        for (chunks, frames) in &by_count[1..] {
            assert_eq!(
                frames, reference,
                "{name}: frames with {chunks} chunks differ from 1 chunk"
            );
        }
    }
    assert!(
        list(&s3(&format!("{prefix}/out/.framefleet/")))
            .await
            .is_empty(),
        "temporary chunk objects were left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_rises_to_100_with_real_frame_counts_and_report_totals_add_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("progress");
    let local = dir.path().join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        local.to_str().expect("utf-8 path"),
    ]);
    let input = s3(&format!("{prefix}/in.mp4"));
    let output = s3(&format!("{prefix}/out.mp4"));
    upload(&local, &input).await;
    let cluster = Cluster::start(3, &[]);
    let mut client = cluster.client().await;
    let mut spec = lossless_spec(&input, &output, 2.0, 3);
    spec.encoder = Some(framefleet_common::proto::EncoderSettings {
        crf: 20,
        preset: "medium".into(),
        lossless: false,
    });
    let id = submit(&mut client, spec).await;
    let snapshots = watch(&mut client, &id, Duration::from_secs(300)).await;

    let last = snapshots.last().expect("snapshots");
    assert_eq!(state(last), JobState::Succeeded, "{}", last.error);
    let percents: Vec<f64> = snapshots
        .iter()
        .map(|s| s.progress.clone().unwrap_or_default().percent)
        .collect();
    assert!(
        percents.windows(2).all(|w| w[1] >= w[0]),
        "progress went backwards: {percents:?}"
    );
    assert_eq!(percents.last().copied(), Some(100.0));
    let progress = last.progress.clone().unwrap_or_default();
    assert_eq!((progress.frames_done, progress.frames_total), (120, 120));
    assert!(
        snapshots.iter().any(|s| {
            let p = s.progress.clone().unwrap_or_default();
            p.frames_done > 0
                && p.frames_done < p.frames_total
                && p.percent > 0.0
                && p.percent < 100.0
        }),
        "no intermediate progress with real frame counts was reported"
    );

    let report = report(&mut client, &id).await;
    for key in ["plan", "chunks", "totals", "orchestrator", "pricing"] {
        assert!(report.get(key).is_some(), "report lacks `{key}`");
    }
    assert_eq!(report["plan"]["chunks"], 3);
    assert!(report["plan"]["rule"]
        .as_str()
        .is_some_and(|r| r.contains("fixed")));
    let chunks = report["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), 3);
    for (index, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk["index"], index);
        assert_eq!(chunk["attempts"], 1);
        assert_eq!(chunk["frames"], 40);
        assert!(chunk["gpu_seconds"].as_f64().is_some_and(|s| s > 0.0));
        for phase in ["download", "init", "decode", "process", "encode", "upload"] {
            assert!(
                chunk["phases"][phase].as_f64().is_some(),
                "chunk {index} lacks phase {phase}"
            );
        }
        assert!(chunk["phases"]["encode"].as_f64().is_some_and(|s| s > 0.0));
    }
    let totals = &report["totals"];
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(close(
        totals["gpu_seconds"].as_f64().expect("gpu"),
        chunk_sum(&report, "gpu_seconds")
    ));
    assert!(close(
        totals["cost_usd"].as_f64().expect("cost"),
        chunk_sum(&report, "cost_usd")
    ));
    assert_eq!(
        totals["frames"].as_f64(),
        Some(chunk_sum(&report, "frames"))
    );
    assert_eq!(
        totals["attempts"].as_f64(),
        Some(chunk_sum(&report, "attempts"))
    );
    let orchestrator = &report["orchestrator"];
    assert_eq!(
        totals["bytes_read"].as_f64(),
        Some(
            chunk_sum(&report, "bytes_read") + orchestrator["bytes_read"].as_f64().expect("bytes")
        )
    );
    assert_eq!(
        totals["bytes_written"].as_f64(),
        Some(
            chunk_sum(&report, "bytes_written")
                + orchestrator["bytes_written"].as_f64().expect("bytes")
        )
    );
    assert!(totals["wall_seconds"].as_f64().is_some_and(|s| s > 0.0));
    let sequential = chunk_sum(&report, "wall_seconds")
        + orchestrator["probe_seconds"].as_f64().expect("probe")
        + orchestrator["stitch_seconds"].as_f64().expect("stitch");
    assert!(
        (totals["sequential_estimate_seconds"]
            .as_f64()
            .expect("estimate")
            - sequential)
            .abs()
            < 1e-6
    );
    assert_eq!(
        totals["input_bytes_read"].as_f64(),
        Some(
            chunk_sum(&report, "bytes_read")
                + orchestrator["input_bytes_read"].as_f64().expect("bytes")
        )
    );
    let input_size = std::fs::metadata(&local).expect("input").len() as f64;
    assert_eq!(totals["input_size_bytes"].as_f64(), Some(input_size));
    let amplification = totals["read_amplification"]
        .as_f64()
        .expect("amplification");
    assert!(
        (amplification * input_size - totals["input_bytes_read"].as_f64().unwrap_or(0.0)).abs()
            < 1.0
    );
    assert_eq!(
        totals["requests"].as_f64(),
        Some(chunk_sum(&report, "requests") + orchestrator["requests"].as_f64().expect("requests"))
    );
    assert!(totals["bytes_read"].as_f64().is_some_and(|b| b > 0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_idempotency_key_returns_the_same_job() {
    let prefix = unique_prefix("idem");
    let cluster = Cluster::start(1, &[]);
    let mut client = cluster.client().await;
    let spec = lossless_spec(
        &s3(&format!("{prefix}/missing.mp4")),
        &s3(&format!("{prefix}/out.mp4")),
        1.0,
        1,
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = client
            .submit_job(SubmitJobRequest {
                spec: Some(spec.clone()),
                idempotency_key: "same-key".into(),
            })
            .await
            .expect("submit")
            .into_inner();
        ids.push((reply.job_id, reply.created));
    }
    assert!(ids[0].1 && !ids[1].1 && !ids[2].1, "{ids:?}");
    assert!(ids.iter().all(|(id, _)| *id == ids[0].0));
    let mut other = spec.clone();
    other.chunks = 2;
    let conflict = client
        .submit_job(SubmitJobRequest {
            spec: Some(other),
            idempotency_key: "same-key".into(),
        })
        .await
        .expect_err("a different spec under the same key is refused");
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);
}
