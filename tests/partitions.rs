//! Partitions, with real network namespaces (root, as the CI runs the tests): a worker in
//! a namespace of its own reaches the orchestrator and the S3 server over two links that
//! the tests cut mid-chunk with `ip link set`.
//!
//! - Cut off entirely: the orchestrator gives the chunk up once the worker's lease lapses
//!   and another worker does it; the cut-off worker notices the dead connection and drops
//!   its copy; when the links come back it rejoins the fleet, and nothing it did late
//!   reaches the output or stays in the bucket.
//! - Cut off from storage alone: the worker fails its chunk with the storage error, the
//!   report records why, and the chunk is done elsewhere.
//! - The orchestrator cut off from storage for a while (a relay in front of Garage taken
//!   down mid-job): its chunk checks and its stitch wait for storage to come back; no
//!   chunk runs twice and the job succeeds.
//!
//! Every job ends frame-exact, and its temporary objects are gone.

use framefleet_testkit as support;

use std::time::{Duration, Instant};

use framefleet_common::proto::{JobState, ListWorkersRequest, WatchJobRequest};
use framefleet_common::storage::ObjectUri;
use support::*;

/// The orchestrator's lease in these tests: short, so a partition shows quickly.
const LEASE: &str = "3";

/// How long a cut-off worker takes to notice its orchestrator is gone: its HTTP/2 pings
/// (every 5 s) go unanswered for 5 s.
const WORKER_NOTICES: Duration = Duration::from_secs(12);

fn orchestrator_port(cluster: &Cluster) -> u16 {
    cluster
        .url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("orchestrator port")
}

/// Waits until a worker named `name` is registered (and not draining).
async fn until_registered(client: &mut Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let workers = client
            .list_workers(ListWorkersRequest {})
            .await
            .expect("ListWorkers")
            .into_inner()
            .workers;
        if workers.iter().any(|w| w.name == name && !w.draining) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never registered: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until job `id`'s model has done a frame.
async fn until_processing(client: &mut Client, id: &str) {
    let mut stream = client
        .watch_job(WatchJobRequest { job_id: id.into() })
        .await
        .expect("watch")
        .into_inner();
    while let Some(job) = stream.message().await.expect("watch stream") {
        if job.progress.as_ref().is_some_and(|p| p.frames_done > 0) {
            return;
        }
        assert!(
            !state(&job).is_terminal(),
            "the job ended before the cut: {job:?}"
        );
    }
}

/// A one-chunk job of an 8 s clip, submitted once `worker` is registered.
struct Scenario {
    dir: tempfile::TempDir,
    prefix: String,
    local: std::path::PathBuf,
    output: ObjectUri,
}

async fn scenario(name: &str) -> Scenario {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix(name);
    let local = dir.path().join("in.mp4");
    clip_with_audio(&local, "640x360", 30, 8, 30);
    upload(&local, &s3(&format!("{prefix}/in.mp4"))).await;
    let output = s3(&format!("{prefix}/out.mp4"));
    Scenario {
        dir,
        prefix,
        local,
        output,
    }
}

impl Scenario {
    async fn submit(&self, client: &mut Client) -> String {
        let input = s3(&format!("{}/in.mp4", self.prefix));
        submit(client, lossless_spec(&input, &self.output, 2.0, 1)).await
    }

    /// The job succeeded exactly, on `rescuer`, after one failed attempt whose reason
    /// holds `why`; its temporary objects are gone.
    async fn check(&self, client: &mut Client, id: &str, rescuer: &str, why: &[&str]) {
        let seen = watch(client, id, Duration::from_secs(180)).await;
        let last = seen.last().expect("a snapshot");
        assert_eq!(state(last), JobState::Succeeded, "{last:?}");
        let report = report(client, id).await;
        let chunk = &report["chunks"][0];
        assert_eq!(chunk["attempts"], 2, "{chunk}");
        assert_eq!(chunk["worker"], rescuer, "{chunk}");
        let failure = chunk["failures"][0].as_str().unwrap_or_default();
        for word in why {
            assert!(
                failure.contains(word),
                "`{word}` not in the failure: {chunk}"
            );
        }
        let out = self.dir.path().join("out.mp4");
        download(&self.output, &out).await;
        assert_exact(&self.local, &out, (1280, 720));
    }

    async fn assert_clean(&self) {
        let left = list(&s3(&format!("{}/.framefleet/", self.prefix))).await;
        assert!(left.is_empty(), "temporary objects left: {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_mid_chunk_loses_it_and_rejoins_with_nothing_late_kept() {
    let job = scenario("partition-isolated").await;
    let mut cluster = Cluster::start(0, &[("FRAMEFLEET_ORCHESTRATOR__LEASE_SECONDS", LEASE)]);
    let mut client = cluster.client().await;
    let namespace = Namespace::create(orchestrator_port(&cluster)).await;
    let _cut_off = namespace.start_worker("cut-off", &[], None);
    until_registered(&mut client, "cut-off").await;
    let id = job.submit(&mut client).await;
    until_processing(&mut client, &id).await;
    namespace.cut(Link::Control);
    namespace.cut(Link::Storage);
    let cut = Instant::now();
    cluster.add_worker("rescuer");
    job.check(&mut client, &id, "rescuer", &["cut-off", "left the fleet"])
        .await;
    // Keep the links down until the cut-off worker has noticed: whatever it still held
    // is dropped, not uploaded once the links are back.
    tokio::time::sleep(WORKER_NOTICES.saturating_sub(cut.elapsed())).await;
    namespace.restore(Link::Control);
    namespace.restore(Link::Storage);
    until_registered(&mut client, "cut-off").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    job.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_cut_off_from_storage_fails_its_chunk_with_the_storage_error() {
    let job = scenario("partition-storage").await;
    let mut cluster = Cluster::start(0, &[("FRAMEFLEET_ORCHESTRATOR__LEASE_SECONDS", LEASE)]);
    let mut client = cluster.client().await;
    let namespace = Namespace::create(orchestrator_port(&cluster)).await;
    let storage_waits = [
        ("FRAMEFLEET_STORAGE__CONNECT_TIMEOUT_SECONDS", "1"),
        ("FRAMEFLEET_STORAGE__ATTEMPT_TIMEOUT_SECONDS", "5"),
        ("FRAMEFLEET_STORAGE__MAX_ATTEMPTS", "2"),
    ];
    let _cut_off = namespace.start_worker("no-storage", &storage_waits, None);
    until_registered(&mut client, "no-storage").await;
    let id = job.submit(&mut client).await;
    until_processing(&mut client, &id).await;
    namespace.cut(Link::Storage);
    cluster.add_worker("rescuer");
    // The S3 SDK's own words for a server it cannot reach, not a decoder's complaint.
    let unreachable = ["no-storage", "s3://", "dispatch failure"];
    job.check(&mut client, &id, "rescuer", &unreachable).await;
    namespace.restore(Link::Storage);
    job.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_orchestrator_cut_off_from_storage_waits_for_it_and_fails_nothing() {
    let job = scenario("partition-orchestrator").await;
    let relay = outage_relay().await;
    let mut cluster = Cluster::start(
        0,
        &[
            ("FRAMEFLEET_STORAGE__S3_ENDPOINT", &relay.endpoint),
            ("FRAMEFLEET_STORAGE__CONNECT_TIMEOUT_SECONDS", "1"),
            ("FRAMEFLEET_STORAGE__MAX_ATTEMPTS", "2"),
        ],
    );
    let mut client = cluster.client().await;
    let direct = garage().endpoint.clone();
    for name in ["worker-0", "worker-1"] {
        cluster.add_worker_with(name, &[("FRAMEFLEET_STORAGE__S3_ENDPOINT", &direct)]);
    }
    let input = s3(&format!("{}/in.mp4", job.prefix));
    let id = submit(&mut client, lossless_spec(&input, &job.output, 2.0, 2)).await;
    until_processing(&mut client, &id).await;
    relay.take_down();
    tokio::time::sleep(Duration::from_secs(10)).await;
    relay.bring_back();
    let seen = watch(&mut client, &id, Duration::from_secs(180)).await;
    let last = seen.last().expect("a snapshot");
    assert_eq!(state(last), JobState::Succeeded, "{last:?}");
    let report = report(&mut client, &id).await;
    for chunk in report["chunks"].as_array().expect("chunks") {
        assert_eq!(chunk["attempts"], 1, "no chunk ran again: {chunk}");
    }
    let out = job.dir.path().join("out.mp4");
    download(&job.output, &out).await;
    assert_exact(&job.local, &out, (1280, 720));
    job.assert_clean().await;
}
