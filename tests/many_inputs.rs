//! Jobs of several videos, end to end against Garage with real orchestrator and worker
//! processes: three inputs of different lengths, sizes and containers become three exact
//! outputs, their chunks numbered across the job and shared by the fleet, with one report
//! that breaks down per input and adds up to its totals; an input that cannot be read
//! fails the job with that input named, or is reported as skipped while the others finish
//! when the job asks.

use framefleet_testkit as support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use framefleet_common::proto::{JobInput, JobSpec, JobState};
use framefleet_common::storage::ObjectUri;
use support::*;

/// A job of `inputs` (each to its output), lossless lanczos at scale 1, 2 chunks each.
fn batch_spec(inputs: &[(ObjectUri, ObjectUri)], skip_unreadable: bool) -> JobSpec {
    let first = &inputs[0];
    JobSpec {
        input_uri: String::new(),
        output_uri: String::new(),
        inputs: inputs
            .iter()
            .map(|(input, output)| JobInput {
                input_uri: input.to_string(),
                output_uri: output.to_string(),
            })
            .collect(),
        skip_unreadable_inputs: skip_unreadable,
        ..lossless_spec(&first.0, &first.1, 1.0, 2)
    }
}

/// Three clips: 3 s 320x180 MP4 with audio, 5 s 256x144 Matroska with audio, 2 s 192x108
/// MP4 without; returns their paths.
fn three_clips(dir: &Path) -> Vec<PathBuf> {
    let paths = ["a.mp4", "b.mkv", "c.mp4"].map(|name| dir.join(name));
    clip_with_audio(&paths[0], "320x180", 24, 3, 24);
    clip_with_audio(&paths[1], "256x144", 25, 5, 25);
    encoded_clip(
        &paths[2],
        "size=192x108:rate=30",
        2,
        false,
        &["-c:v", "libx264", "-g", "30", "-pix_fmt", "yuv420p"],
    );
    paths.to_vec()
}

/// Uploads `paths` under `prefix/in/`; returns each with its output under `prefix/out/`.
async fn upload_all(paths: &[PathBuf], prefix: &str) -> Vec<(ObjectUri, ObjectUri)> {
    let mut pairs = Vec::new();
    for path in paths {
        let name = path.file_name().and_then(|n| n.to_str()).expect("name");
        let input = s3(&format!("{prefix}/in/{name}"));
        upload(path, &input).await;
        pairs.push((input, s3(&format!("{prefix}/out/{name}.out.mkv"))));
    }
    pairs
}

#[tokio::test(flavor = "multi_thread")]
async fn three_inputs_make_three_exact_outputs_and_one_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clips = three_clips(dir.path());
    let prefix = unique_prefix("many-inputs");
    let pairs = upload_all(&clips, &prefix).await;
    let cluster = Cluster::start(2, &[]);
    let mut client = cluster.client().await;
    let id = submit(&mut client, batch_spec(&pairs, false)).await;
    let snapshots = watch(&mut client, &id, Duration::from_secs(240)).await;
    let last = snapshots.last().expect("snapshots");
    assert_eq!(state(last), JobState::Succeeded, "{}", last.error);
    let progress = last.progress.clone().expect("progress");
    assert_eq!(progress.chunks_total, 6, "2 chunks for each of 3 inputs");

    for ((clip, (_, output)), size) in
        clips
            .iter()
            .zip(&pairs)
            .zip([(320, 180), (256, 144), (192, 108)])
    {
        let local = dir.path().join(format!("{}.out.mkv", output.file_name()));
        download(output, &local).await;
        assert_exact(clip, &local, size);
    }

    let report = report(&mut client, &id).await;
    assert_eq!(report["plan"]["chunks"], 6);
    let chunks = report["chunks"].as_array().expect("chunks");
    let indices: Vec<u64> = chunks
        .iter()
        .map(|c| c["index"].as_u64().unwrap_or(99))
        .collect();
    assert_eq!(
        indices,
        [0, 1, 2, 3, 4, 5],
        "chunks numbered across the job"
    );
    let inputs = report["inputs"].as_array().expect("inputs");
    assert_eq!(inputs.len(), 3);
    let mut gpu_seconds = 0.0;
    for ((entry, clip), (input, output)) in inputs.iter().zip(&clips).zip(&pairs) {
        let index = entry["index"].as_u64().unwrap_or(0);
        assert_eq!(entry["state"], "SUCCEEDED");
        assert_eq!(entry["input_uri"], input.to_string());
        assert_eq!(entry["output_uri"], output.to_string());
        assert_eq!(entry["plan"]["chunks"], 2);
        let frames = video_timing(clip).pts_seconds.len() as u64;
        assert_eq!(entry["totals"]["frames"].as_u64(), Some(frames), "{entry}");
        let own: Vec<&serde_json::Value> = chunks
            .iter()
            .filter(|c| c["input"].as_u64().unwrap_or(0) == index)
            .collect();
        assert_eq!(own.len(), 2, "input {index}'s chunks");
        let frames_of_chunks: u64 = own.iter().map(|c| c["frames"].as_u64().unwrap_or(0)).sum();
        assert_eq!(frames_of_chunks, frames);
        let size = std::fs::metadata(clip).expect("clip").len();
        assert_eq!(entry["totals"]["input_size_bytes"].as_u64(), Some(size));
        assert!(entry["totals"]["input_bytes_read"].as_u64().unwrap_or(0) >= size / 2);
        gpu_seconds += entry["totals"]["gpu_seconds"].as_f64().unwrap_or(0.0);
    }
    let totals = &report["totals"];
    assert!(
        (totals["gpu_seconds"].as_f64().unwrap_or(0.0) - gpu_seconds).abs() < 1e-9,
        "the inputs' GPU-seconds add up to the job's: {totals}"
    );
    let sizes: u64 = clips
        .iter()
        .map(|c| std::fs::metadata(c).expect("clip").len())
        .sum();
    assert_eq!(totals["input_size_bytes"].as_u64(), Some(sizes));
    assert!(
        list(&s3(&format!("{prefix}/out/.framefleet/")))
            .await
            .is_empty(),
        "temporary chunk objects are deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_input_fails_the_job_by_name_or_is_skipped_when_asked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.mp4");
    clip_with_audio(&good, "160x90", 24, 2, 24);
    let garbage = dir.path().join("garbage.mp4");
    std::fs::write(&garbage, b"not a video at all").expect("garbage");
    let prefix = unique_prefix("unreadable-input");
    let mut pairs = upload_all(&[good.clone(), garbage], &prefix).await;
    pairs.push((
        s3(&format!("{prefix}/in/missing.mp4")),
        s3(&format!("{prefix}/out/missing.mkv")),
    ));
    let cluster = Cluster::start(1, &[]);
    let mut client = cluster.client().await;

    let id = submit(&mut client, batch_spec(&pairs, false)).await;
    let last = watch(&mut client, &id, Duration::from_secs(120))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Failed);
    let garbage_uri = pairs[1].0.to_string();
    assert!(
        last.error.contains("input 2 of 3") && last.error.contains(&garbage_uri),
        "the error names the input: {}",
        last.error
    );
    let failed = report(&mut client, &id).await;
    assert_eq!(failed["inputs"][1]["state"], "FAILED", "{failed}");
    assert!(list(&s3(&format!("{prefix}/out/")))
        .await
        .iter()
        .all(|k| !k.ends_with(".out.mkv")));

    let id = submit(&mut client, batch_spec(&pairs, true)).await;
    let last = watch(&mut client, &id, Duration::from_secs(120))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Succeeded, "{}", last.error);
    let local = dir.path().join("good.out.mkv");
    download(&pairs[0].1, &local).await;
    assert_exact(&good, &local, (160, 90));
    let report = report(&mut client, &id).await;
    let states: Vec<&str> = report["inputs"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| i["state"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(states, ["SUCCEEDED", "SKIPPED", "SKIPPED"]);
    assert!(
        report["inputs"][2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{report}"
    );
    assert_eq!(
        report["plan"]["chunks"], 2,
        "only the readable input is cut"
    );
}
