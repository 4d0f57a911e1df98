//! Broken transfers: a loopback proxy in front of the Garage S3 server cuts ranged GETs in
//! the middle of their body. Reads resume from the byte where they stopped, a job through
//! the proxy still produces the exact output, and each resumed request is counted.

mod support;

use std::time::Duration;

use framefleet_common::config::StorageConfig;
use framefleet_common::proto::JobState;
use framefleet_common::storage::Storage;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_ranged_get_cut_mid_body_resumes_where_it_stopped() {
    let prefix = unique_prefix("resume");
    let data: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("object.bin");
    std::fs::write(&local, &data).expect("write");
    let uri = s3(&format!("{prefix}/object.bin"));
    upload(&local, &uri).await;

    let proxy = cutting_proxy(3, 100_000).await;
    let storage = Storage::new(&StorageConfig {
        s3_endpoint: proxy.endpoint.clone(),
        ..storage_config()
    })
    .counted();
    let read = storage
        .read_range(&uri, 0, data.len() as u64)
        .await
        .expect("read resumes");
    assert_eq!(proxy.cuts_left(), 0, "the proxy never cut the transfer");
    assert!(read[..] == data[..], "resumed bytes differ from the object");
    assert_eq!(
        storage.counters().requests(),
        4,
        "one request plus three resumptions"
    );
    assert_eq!(storage.counters().bytes_read(), data.len() as u64);
}

/// Runs one job through `endpoint` and returns its report.
async fn job_through(
    endpoint: &str,
    input: &framefleet_common::storage::ObjectUri,
    output: &str,
) -> serde_json::Value {
    let cluster = Cluster::start(2, &[("FRAMEFLEET_STORAGE__S3_ENDPOINT", endpoint)]);
    let mut client = cluster.client().await;
    let output = s3(output);
    let id = submit(&mut client, lossless_spec(input, &output, 1.0, 2)).await;
    let last = watch(&mut client, &id, Duration::from_secs(300))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Succeeded, "{}", last.error);
    report(&mut client, &id).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_through_broken_transfers_is_exact_and_counts_each_retried_request() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("resume-job");
    let local = dir.path().join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=44100",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "25",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        local.to_str().expect("utf-8"),
    ]);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&local, &input).await;

    let clean = job_through(&garage().endpoint, &input, &format!("{prefix}/clean.mp4")).await;
    // The job's ranged reads here are at least 4 KiB (the probe's index reads) and mostly
    // 16 KiB blocks: cut them after 2000 bytes.
    let proxy = cutting_proxy(4, 2_000).await;
    let broken = job_through(&proxy.endpoint, &input, &format!("{prefix}/broken.mp4")).await;
    let cuts = 4 - proxy.cuts_left();
    assert!(cuts >= 1, "the proxy never cut a transfer");
    let downloaded = dir.path().join("broken.mp4");
    download(&s3(&format!("{prefix}/broken.mp4")), &downloaded).await;
    assert_exact(&local, &downloaded, (640, 360));
    let requests =
        |report: &serde_json::Value| report["totals"]["requests"].as_u64().expect("requests");
    assert_eq!(
        requests(&broken),
        requests(&clean) + cuts as u64,
        "each of the {cuts} cut transfers should cost exactly one more request"
    );
    assert_eq!(
        broken["totals"]["input_bytes_read"],
        clean["totals"]["input_bytes_read"]
    );
}
