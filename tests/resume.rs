//! Storage faults: loopback proxies in front of the Garage S3 server cut ranged GETs in the
//! middle of their body, or fail a share of all requests (503 SlowDown, connection reset).
//! Reads resume from the byte where they stopped, each resumed request is counted, and jobs
//! through either proxy still produce the exact output and leave nothing behind.

use framefleet_testkit as support;

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
    clip_with_audio(&local, "640x360", 25, 4, 25);
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
    let retried = |report: &serde_json::Value| report["totals"]["retried_requests"].as_u64();
    assert_eq!(retried(&clean), Some(0));
    assert_eq!(
        retried(&broken),
        Some(cuts as u64),
        "each of the {cuts} cut transfers should cost exactly one resumed request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_through_storage_that_fails_one_request_in_five_succeed_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("flaky");
    let local = dir.path().join("in.mp4");
    clip_with_audio(&local, "640x360", 25, 6, 25);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&local, &input).await;
    let proxy = faulty_proxy(5).await;
    let cluster = Cluster::start(
        2,
        &[("FRAMEFLEET_STORAGE__S3_ENDPOINT", proxy.endpoint.as_str())],
    );
    let mut client = cluster.client().await;
    let mut jobs = Vec::new();
    for (index, chunks) in [2u32, 3].into_iter().enumerate() {
        let output = s3(&format!("{prefix}/out-{index}.mp4"));
        let id = submit(&mut client, lossless_spec(&input, &output, 1.0, chunks)).await;
        jobs.push((id, output));
    }
    for (id, output) in &jobs {
        let last = watch(&mut client, id, Duration::from_secs(300))
            .await
            .pop()
            .expect("snapshots");
        assert_eq!(state(&last), JobState::Succeeded, "{}", last.error);
        let downloaded = dir.path().join(output.file_name());
        download(output, &downloaded).await;
        assert_exact(&local, &downloaded, (640, 360));
    }
    assert!(
        proxy.faults() >= 10,
        "the proxy failed only {} requests",
        proxy.faults()
    );
    assert!(list(&s3(&format!("{prefix}/.framefleet/")))
        .await
        .is_empty());
}
