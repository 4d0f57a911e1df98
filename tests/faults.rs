//! End-to-end fault handling with real processes and the Garage S3 server: a worker
//! killed mid-chunk, hung (SIGSTOP), or stopped with SIGTERM or a `Drain` call (it finishes
//! its chunk within its grace, or hands it back), bad inputs, limits and storage restrictions,
//! cancel, and an empty fleet. Every job reaches exactly one
//! terminal state, with a message a person can act on, and leaves no chunk objects.

use framefleet_testkit as support;

use std::time::{Duration, Instant};

use framefleet_common::proto::worker_client::WorkerClient;
use framefleet_common::proto::{
    CancelJobRequest, DrainRequest, GetJobRequest, JobState, SubmitJobRequest, WorkerStatusRequest,
};
use support::*;
use tonic::Code;

fn slow_spec(
    input: &framefleet_common::storage::ObjectUri,
    output: &framefleet_common::storage::ObjectUri,
    chunks: u32,
) -> framefleet_common::proto::JobSpec {
    let mut spec = lossless_spec(input, output, 2.0, chunks);
    spec.encoder = Some(framefleet_common::proto::EncoderSettings {
        crf: 20,
        preset: "slow".into(),
        ..Default::default()
    });
    spec
}

/// The index of a worker that holds a chunk, once one does.
async fn busy_worker(cluster: &Cluster) -> usize {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "no worker ever held a chunk");
        for (index, url) in cluster.worker_urls.iter().enumerate() {
            let Ok(mut worker) = WorkerClient::connect(url.clone()).await else {
                continue;
            };
            let Ok(status) = worker.status(WorkerStatusRequest {}).await else {
                continue;
            };
            if !status.into_inner().current_chunks.is_empty() {
                return index;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads a 6 s clip, runs a slow 3-chunk job on a 3-worker cluster with `settings`, and
/// does `fault` to a worker once it holds a chunk. Returns the job's report after checking
/// it succeeded with the exact output and left no chunk objects.
async fn job_surviving(
    name: &str,
    settings: &[(&str, &str)],
    fault: impl FnOnce(&mut Cluster, usize),
) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix(name);
    let local = dir.path().join("in.mp4");
    clip_with_audio(&local, "640x360", 30, 6, 30);
    let input = s3(&format!("{prefix}/in.mp4"));
    let output = s3(&format!("{prefix}/out.mp4"));
    upload(&local, &input).await;
    let mut cluster = Cluster::start(3, settings);
    let mut client = cluster.client().await;
    let id = submit(&mut client, slow_spec(&input, &output, 3)).await;
    let victim = busy_worker(&cluster).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fault(&mut cluster, victim);
    let last = watch(&mut client, &id, Duration::from_secs(300))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Succeeded, "{name}: {}", last.error);
    let downloaded = dir.path().join("out.mp4");
    download(&output, &downloaded).await;
    assert_exact(&local, &downloaded, (1280, 720));
    assert!(list(&s3(&format!("{prefix}/.framefleet/")))
        .await
        .is_empty());
    report(&mut client, &id).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stopped_with_sigterm_finishes_its_chunk_and_leaves() {
    worker_leaves_after_its_chunk("sigterm", |worker, _| worker.signal(libc::SIGTERM)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_asked_to_drain_finishes_its_chunk_and_leaves() {
    worker_leaves_after_its_chunk("drain", |_, url| {
        let status = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                let mut worker = WorkerClient::connect(url.to_string())
                    .await
                    .expect("worker reachable");
                worker
                    .drain(DrainRequest {})
                    .await
                    .expect("drain")
                    .into_inner()
            })
        });
        assert!(status.draining, "{status:?}");
        assert_eq!(status.current_chunks.len(), 1, "{status:?}");
    })
    .await;
}

/// Stops (with `stop`, given the process and its URL) the worker that holds a chunk of a
/// slow job; checks that it finished that chunk itself (within its grace) and then exited.
async fn worker_leaves_after_its_chunk(name: &str, stop: impl FnOnce(&Process, &str)) {
    let mut stopped = None;
    let report = job_surviving(name, &[], |cluster, victim| {
        let worker = cluster.workers[victim].take().expect("worker process");
        stop(&worker, &cluster.worker_urls[victim]);
        stopped = Some((worker, format!("worker-{victim}")));
    })
    .await;
    let (mut worker, worker_name) = stopped.expect("a worker was stopped");
    let chunks = report["chunks"].as_array().expect("chunks");
    assert!(
        chunks
            .iter()
            .any(|c| c["worker"] == worker_name.as_str() && c["attempts"] == 1),
        "{name}: {worker_name} did not finish its chunk: {chunks:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while worker.child.try_wait().ok().flatten().is_none() {
        assert!(
            Instant::now() < deadline,
            "{name}: {worker_name} still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `signal` to the worker that holds a chunk, leaving its process in the cluster.
fn signal_victim(signal: i32) -> impl FnOnce(&mut Cluster, usize) {
    move |cluster, victim| {
        if let Some(worker) = &cluster.workers[victim] {
            worker.signal(signal);
        }
    }
}

/// Asserts that some chunk of the report needed a second attempt.
fn assert_a_chunk_was_retried(report: &serde_json::Value, what: &str) {
    let chunks = report["chunks"].as_array().expect("chunks");
    assert!(
        chunks.iter().any(|c| c["attempts"] == 2),
        "{what}: no chunk shows a second attempt: {chunks:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_grace_runs_out_hands_its_chunk_back() {
    let settings = [("FRAMEFLEET_WORKER__DRAIN_GRACE_SECONDS", "0")];
    let report = job_surviving("handback", &settings, signal_victim(libc::SIGTERM)).await;
    assert_a_chunk_was_retried(&report, "the handed back chunk");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_worker_loses_its_chunk_to_another() {
    let settings = [("FRAMEFLEET_DISPATCH__EVENT_TIMEOUT_SECONDS", "8")];
    let report = job_surviving("sigstop", &settings, signal_victim(libc::SIGSTOP)).await;
    assert_a_chunk_was_retried(&report, "the hung worker's chunk");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_straggling_chunk_gets_a_backup_and_the_first_to_finish_wins() {
    // The victim is frozen but keeps its stream open, and the event deadline is far away:
    // only straggler detection can rescue the chunk in time.
    let settings = [
        ("FRAMEFLEET_DISPATCH__STRAGGLER_FACTOR", "2"),
        ("FRAMEFLEET_DISPATCH__STRAGGLER_MIN_SECONDS", "1"),
        ("FRAMEFLEET_DISPATCH__EVENT_TIMEOUT_SECONDS", "600"),
    ];
    let started = Instant::now();
    let report = job_surviving("straggler", &settings, signal_victim(libc::SIGSTOP)).await;
    assert!(
        started.elapsed() < Duration::from_secs(240),
        "the job waited for the frozen worker"
    );
    let chunks = report["chunks"].as_array().expect("chunks");
    let backed_up = chunks
        .iter()
        .find(|c| c["attempts"] == 2)
        .unwrap_or_else(|| panic!("no chunk had a backup attempt: {chunks:?}"));
    assert!(
        backed_up["wasted_gpu_seconds"]
            .as_f64()
            .is_some_and(|s| s > 0.0),
        "the cancelled attempt's GPU-seconds are not counted as waste: {backed_up}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_chunk_costs_one_retry_not_the_job() {
    let report = job_surviving("kill", &[], signal_victim(libc::SIGKILL)).await;
    assert_a_chunk_was_retried(&report, "the killed worker's chunk");
    let attempts: u64 = report["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .filter_map(|c| c["attempts"].as_u64())
        .sum();
    assert_eq!(report["totals"]["attempts"].as_u64(), Some(attempts));
    assert!(report["totals"]["wasted_gpu_seconds"]
        .as_f64()
        .is_some_and(|s| s > 0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_fail_fast_with_clear_messages_and_the_orchestrator_keeps_serving() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("bad");
    let good = dir.path().join("good.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=160x120:rate=25",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        good.to_str().expect("utf-8"),
    ]);
    let faststart = dir.path().join("faststart.mp4");
    ffmpeg(&[
        "-i",
        good.to_str().expect("utf-8"),
        "-c",
        "copy",
        "-movflags",
        "+faststart",
        faststart.to_str().expect("utf-8"),
    ]);
    let matroska = dir.path().join("whole.mkv");
    ffmpeg(&[
        "-i",
        good.to_str().expect("utf-8"),
        "-c",
        "copy",
        matroska.to_str().expect("utf-8"),
    ]);
    let bytes = std::fs::read(&good).expect("read");
    let fast = std::fs::read(&faststart).expect("read");
    let mkv = std::fs::read(&matroska).expect("read");
    let mut noise = Vec::with_capacity(200_000);
    let mut seed = 0x2545_f491_u32;
    for _ in 0..200_000 {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        noise.push(seed as u8);
    }
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        ("corrupt.mp4", noise, &["not a readable media file"]),
        (
            "truncated-index-at-end.mp4",
            bytes[..bytes.len() / 2].to_vec(),
            &["not a readable media file"],
        ),
        (
            "truncated-index-first.mp4",
            fast[..fast.len() * 6 / 10].to_vec(),
            &["truncated"],
        ),
        (
            "truncated.mkv",
            mkv[..mkv.len() * 6 / 10].to_vec(),
            &["truncated"],
        ),
        (
            "notes.mp4",
            b"just some text, not a video\n".repeat(50),
            &["not a readable media file"],
        ),
    ];
    let cluster = Cluster::start(3, &[]);
    let mut client = cluster.client().await;
    let mut jobs = Vec::new();
    for (name, content, expected) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        let input = s3(&format!("{prefix}/in/{name}"));
        upload(&path, &input).await;
        let output = s3(&format!("{prefix}/out/{name}"));
        jobs.push((
            name.to_string(),
            submit(&mut client, lossless_spec(&input, &output, 2.0, 2)).await,
            *expected,
        ));
    }
    let missing_output = s3(&format!("{prefix}/out/missing.mp4"));
    jobs.push((
        "missing".into(),
        submit(
            &mut client,
            lossless_spec(
                &s3(&format!("{prefix}/in/nope.mp4")),
                &missing_output,
                2.0,
                2,
            ),
        )
        .await,
        &["does not exist"],
    ));
    for (name, id, expected) in &jobs {
        let started = Instant::now();
        let snapshots = watch(&mut client, id, Duration::from_secs(60)).await;
        let last = snapshots.last().expect("snapshots");
        assert_eq!(state(last), JobState::Failed, "{name} should fail");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} took {:?} to fail",
            started.elapsed()
        );
        assert!(
            expected.iter().any(|text| last.error.contains(text)),
            "{name}: error `{}` does not say {expected:?}",
            last.error
        );
        let report = report(&mut client, id).await;
        assert_eq!(report["state"], "FAILED");
    }

    let input = s3(&format!("{prefix}/in/good.mp4"));
    upload(&good, &input).await;
    let output = s3(&format!("{prefix}/out/good.mp4"));
    let id = submit(&mut client, lossless_spec(&input, &output, 2.0, 2)).await;
    let last = watch(&mut client, &id, Duration::from_secs(120))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Succeeded, "{}", last.error);
    assert!(list(&s3(&format!("{prefix}/out/.framefleet/")))
        .await
        .is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_ends_the_job_and_removes_its_chunks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("cancel");
    let local = dir.path().join("in.mp4");
    clip_with_audio(&local, "640x360", 30, 8, 30);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&local, &input).await;
    let cluster = Cluster::start(3, &[]);
    let mut client = cluster.client().await;
    let output = s3(&format!("{prefix}/out.mp4"));
    let id = submit(&mut client, slow_spec(&input, &output, 4)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = client
            .get_job(GetJobRequest { job_id: id.clone() })
            .await
            .expect("get")
            .into_inner();
        let progress = job.progress.unwrap_or_default();
        if progress.chunks_done >= 1 || progress.frames_done > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never started processing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .cancel_job(CancelJobRequest { job_id: id.clone() })
        .await
        .expect("cancel");
    let last = watch(&mut client, &id, Duration::from_secs(30))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Cancelled);
    assert!(list(&s3(&format!("{prefix}/.framefleet/")))
        .await
        .is_empty());
    assert!(
        list(&output).await.is_empty(),
        "a cancelled job wrote its output"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_fleet_fails_the_job_at_the_deadline_with_that_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("empty");
    let local = dir.path().join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=25",
        "-t",
        "1",
        "-c:v",
        "libx264",
        local.to_str().expect("utf-8"),
    ]);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&local, &input).await;
    let cluster = Cluster::start(0, &[("FRAMEFLEET_DISPATCH__WORKER_WAIT_SECONDS", "2")]);
    let mut client = cluster.client().await;
    let id = submit(
        &mut client,
        lossless_spec(&input, &s3(&format!("{prefix}/out.mp4")), 1.0, 1),
    )
    .await;
    let last = watch(&mut client, &id, Duration::from_secs(30))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Failed);
    assert!(
        last.error.contains("no worker registered within 2 s"),
        "{}",
        last.error
    );
}

/// Submits a job that must be refused and returns the refusal.
async fn refused(
    client: &mut Client,
    spec: framefleet_common::proto::JobSpec,
    key: &str,
) -> tonic::Status {
    client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: key.into(),
        })
        .await
        .expect_err("refused")
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_and_storage_restrictions_refuse_with_the_setting_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("limits");
    let long = dir.path().join("long.mp4");
    clip_with_audio(&long, "160x120", 25, 4, 25);
    let short = dir.path().join("short.mp4");
    clip_with_audio(&short, "160x120", 25, 1, 25);
    let (long_input, short_input) = (
        s3(&format!("{prefix}/long.mp4")),
        s3(&format!("{prefix}/short.mp4")),
    );
    upload(&long, &long_input).await;
    upload(&short, &short_input).await;
    let bucket = format!("[{BUCKET}]");
    // No workers: accepted jobs stay queued, so the queue limit can be reached.
    let cluster = Cluster::start(
        0,
        &[
            ("FRAMEFLEET_LIMITS__MAX_FRAMES", "50"),
            ("FRAMEFLEET_LIMITS__MAX_CHUNKS", "4"),
            ("FRAMEFLEET_LIMITS__MAX_QUEUED_JOBS", "2"),
            ("FRAMEFLEET_STORAGE__ALLOWED_BUCKETS", &bucket),
        ],
    );
    let mut client = cluster.client().await;
    let output = |name: &str| s3(&format!("{prefix}/out/{name}.mp4"));
    let too_many_chunks = refused(
        &mut client,
        lossless_spec(&short_input, &output("a"), 1.0, 5),
        "",
    )
    .await;
    assert_eq!(too_many_chunks.code(), Code::InvalidArgument);
    assert!(too_many_chunks.message().contains("limits.max_chunks"));
    let mut elsewhere = lossless_spec(&short_input, &output("b"), 1.0, 1);
    elsewhere.input_uri = "s3://someone-elses-bucket/in.mp4".into();
    let other_bucket = refused(&mut client, elsewhere, "").await;
    assert_eq!(other_bucket.code(), Code::InvalidArgument);
    assert!(other_bucket.message().contains("storage.allowed_buckets"));
    let bad_key = refused(
        &mut client,
        lossless_spec(&short_input, &output("c"), 1.0, 1),
        "a key",
    )
    .await;
    assert_eq!(bad_key.code(), Code::InvalidArgument);

    // Over the frame limit: accepted, then failed by the probe with the limit named.
    let id = submit(
        &mut client,
        lossless_spec(&long_input, &output("long"), 1.0, 1),
    )
    .await;
    let last = watch(&mut client, &id, Duration::from_secs(60))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Failed);
    assert!(last.error.contains("limits.max_frames"), "{}", last.error);

    // Two jobs wait for workers; a third is refused until one ends, a repeat is not.
    let mut queued = Vec::new();
    for name in ["q1", "q2"] {
        let response = client
            .submit_job(SubmitJobRequest {
                spec: Some(lossless_spec(&short_input, &output(name), 1.0, 1)),
                idempotency_key: name.into(),
            })
            .await
            .expect("queued")
            .into_inner();
        queued.push(response.job_id);
    }
    let full = refused(
        &mut client,
        lossless_spec(&short_input, &output("q3"), 1.0, 1),
        "q3",
    )
    .await;
    assert_eq!(full.code(), Code::ResourceExhausted);
    assert!(full.message().contains("limits.max_queued_jobs"));
    let repeat = client
        .submit_job(SubmitJobRequest {
            spec: Some(lossless_spec(&short_input, &output("q1"), 1.0, 1)),
            idempotency_key: "q1".into(),
        })
        .await
        .expect("a repeated key is answered")
        .into_inner();
    assert_eq!(repeat.job_id, queued[0]);
    client
        .cancel_job(CancelJobRequest {
            job_id: queued[0].clone(),
        })
        .await
        .expect("cancel");
    watch(&mut client, &queued[0], Duration::from_secs(30)).await;
    client
        .submit_job(SubmitJobRequest {
            spec: Some(lossless_spec(&short_input, &output("q3"), 1.0, 1)),
            idempotency_key: "q3".into(),
        })
        .await
        .expect("room again once a job ended");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_past_the_workers_deadline_is_stopped_and_the_job_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("deadline");
    let local = dir.path().join("in.mp4");
    clip_with_audio(&local, "640x360", 30, 6, 30);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&local, &input).await;
    let cluster = Cluster::start(
        1,
        &[
            ("FRAMEFLEET_WORKER__CHUNK_DEADLINE_SECONDS", "0.5"),
            ("FRAMEFLEET_DISPATCH__MAX_ATTEMPTS", "2"),
        ],
    );
    let mut client = cluster.client().await;
    let output = s3(&format!("{prefix}/out.mp4"));
    let id = submit(&mut client, slow_spec(&input, &output, 1)).await;
    let last = watch(&mut client, &id, Duration::from_secs(120))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Failed);
    assert!(
        last.error.contains("worker.chunk_deadline_seconds"),
        "{}",
        last.error
    );
    assert!(list(&s3(&format!("{prefix}/.framefleet/")))
        .await
        .is_empty());
}
