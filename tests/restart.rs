//! The job store, end to end: an orchestrator killed with SIGKILL (or stopped with
//! SIGTERM) in the middle of a 4-chunk job is started again on the same store; the job
//! resumes and succeeds with a frame-exact output, the chunks accepted before the stop are
//! re-checked and reused, not processed again, and no chunk object is left behind.

use framefleet_testkit as support;

use std::time::{Duration, Instant};

use framefleet_common::proto::worker_client::WorkerClient;
use framefleet_common::proto::{EncoderSettings, GetJobRequest, JobState, WorkerStatusRequest};
use support::*;

/// Chunks the workers have finished so far, by their own count.
async fn chunks_finished_by_workers(cluster: &Cluster) -> u64 {
    let mut total = 0;
    for url in &cluster.worker_urls {
        let mut worker = WorkerClient::connect(url.clone())
            .await
            .expect("worker reachable");
        total += worker
            .status(WorkerStatusRequest {})
            .await
            .expect("worker status")
            .into_inner()
            .chunks_done;
    }
    total
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestrator_killed_mid_job_resumes_it_without_recomputing_finished_chunks() {
    resumes_after(libc::SIGKILL, "restart-kill").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestrator_stopped_with_sigterm_leaves_the_job_to_its_next_start() {
    resumes_after(libc::SIGTERM, "restart-term").await;
}

/// Runs a 4-chunk job, stops the orchestrator with `signal` once a chunk is accepted,
/// starts it again and checks the job's end.
async fn resumes_after(signal: i32, name: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix(name);
    let local = dir.path().join("in.mp4");
    clip_with_audio(&local, "640x360", 30, 8, 30);
    let input = s3(&format!("{prefix}/in.mp4"));
    let output = s3(&format!("{prefix}/out.mp4"));
    upload(&local, &input).await;
    let mut cluster = Cluster::start(2, &[]);
    let mut client = cluster.client().await;
    let mut spec = lossless_spec(&input, &output, 2.0, 4);
    spec.encoder = Some(EncoderSettings {
        crf: 20,
        preset: "slow".into(),
        ..Default::default()
    });
    let id = submit(&mut client, spec).await;

    // Wait until at least one chunk is accepted (and so in the store) and some are not.
    let deadline = Instant::now() + Duration::from_secs(240);
    let done_before = loop {
        assert!(Instant::now() < deadline, "no chunk was accepted in time");
        let job = client
            .get_job(GetJobRequest { job_id: id.clone() })
            .await
            .expect("get job")
            .into_inner();
        assert!(
            !state(&job).is_terminal(),
            "the job ended before the kill: {}",
            job.error
        );
        let done = job.progress.map_or(0, |p| p.chunks_done);
        if done >= 1 {
            break done;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done_before < 4, "every chunk finished before the kill");
    let worked_before = chunks_finished_by_workers(&cluster).await;

    cluster.restart_orchestrator(signal);
    let mut client = cluster.client().await;
    let last = watch(&mut client, &id, Duration::from_secs(300))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Succeeded, "{}", last.error);

    let result = dir.path().join("out.mp4");
    download(&output, &result).await;
    assert_exact(&local, &result, (1280, 720));

    let report = report(&mut client, &id).await;
    let chunks = report["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), 4);
    let resumed = chunks
        .iter()
        .filter(|c| c["resumed"].as_bool() == Some(true))
        .count() as u64;
    assert!(
        resumed >= u64::from(done_before),
        "{done_before} chunks were accepted before the kill, only {resumed} reused: {chunks:?}"
    );
    // By the workers' own count, only chunks not yet accepted ran after the kill (plus at
    // most one per worker that was finishing as the orchestrator died).
    let worked_after = chunks_finished_by_workers(&cluster).await - worked_before;
    println!(
        "accepted before the kill: {done_before}; reused: {resumed}; finished by workers after it: {worked_after}"
    );
    assert!(
        worked_after <= (4 - resumed) + cluster.worker_urls.len() as u64,
        "workers finished {worked_after} chunks after the restart; {resumed} of 4 were reused"
    );
    let scratch = s3(&format!("{prefix}/.framefleet/"));
    assert_eq!(list(&scratch).await, Vec::<String>::new());
}
