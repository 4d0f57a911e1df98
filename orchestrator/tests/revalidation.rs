//! A stored job is checked again when it resumes, under the configuration of the day: a
//! job accepted while its input's folder was a storage root, and stored unfinished, fails
//! at the next start once that folder is no longer a root, with a message that says why,
//! instead of reading outside the roots. A job that still passes resumes as before.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use framefleet_common::config::Config;
use framefleet_common::proto::{JobSpec, JobState};
use framefleet_orchestrator::Orchestrator;

/// A real MP4 from the probe corpus.
const CLIP: &str = "../fuzz/corpus/probe/index-first.mp4";

/// An orchestrator keeping its jobs in `store`, reading and writing only under `roots`,
/// waiting long for workers (none start here).
fn config(store: &Path, roots: &[&Path]) -> Config {
    let mut config = Config::default();
    config.orchestrator.store_path = store.display().to_string();
    config.storage.local_roots = roots.iter().map(|r| r.display().to_string()).collect();
    config.dispatch.worker_wait_seconds = 600.0;
    config
}

/// A lanczos job of `input` into `output`.
fn spec(input: &Path, output: &Path) -> JobSpec {
    JobSpec {
        input_uri: format!("file://{}", input.display()),
        output_uri: format!("file://{}", output.display()),
        ..JobSpec::default()
    }
}

/// Submits a job under the first configuration and stops the orchestrator with it
/// unfinished (no worker ever registers); returns its id.
async fn store_unfinished(config: Config, job: JobSpec) -> String {
    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::open(config, shutdown.clone())
        .await
        .expect("opens");
    let (record, created) = orchestrator
        .submit("", job, orchestrator.tenants.default_tenant())
        .await
        .expect("accepted");
    assert!(created);
    shutdown.cancel();
    orchestrator.drain().await;
    record.id.clone()
}

/// The job `id` of the store under `config` once it stops changing for a while, or ends;
/// the orchestrator is stopped after.
async fn reopened(config: Config, id: &str) -> framefleet_common::proto::Job {
    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::open(config, shutdown.clone())
        .await
        .expect("opens, whatever its stored jobs");
    let job = settled(&orchestrator, id).await;
    shutdown.cancel();
    orchestrator.drain().await;
    job
}

/// The job's state once it stops changing for a while, or ends.
async fn settled(orchestrator: &Orchestrator, id: &str) -> framefleet_common::proto::Job {
    let record = orchestrator.jobs.get(id).expect("restored");
    let mut updates = record.subscribe();
    loop {
        if record.state().is_terminal() {
            return record.snapshot();
        }
        if tokio::time::timeout(Duration::from_secs(3), updates.changed())
            .await
            .is_err()
        {
            return record.snapshot();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_job_outside_todays_roots_fails_at_resume_and_says_why() {
    let dir = tempfile::tempdir().expect("dir");
    let (old_root, new_root) = (dir.path().join("old"), dir.path().join("new"));
    for root in [&old_root, &new_root] {
        std::fs::create_dir_all(root).expect("root");
    }
    let input = old_root.join("in.mp4");
    std::fs::copy(CLIP, &input).expect("clip");
    let store = dir.path().join("jobs.sqlite");

    let id = store_unfinished(
        config(&store, &[&old_root, &new_root]),
        spec(&input, &old_root.join("out.mp4")),
    )
    .await;

    let job = reopened(config(&store, &[&new_root]), &id).await;
    assert_eq!(job.state(), JobState::Failed, "{job:?}");
    assert!(
        job.error.contains("storage.local_roots") && job.error.contains("earlier configuration"),
        "the error says which setting refused it and why now: {}",
        job.error
    );
    assert!(!new_root.join("out.mp4").exists() && !old_root.join("out.mp4").exists());

    // The same store opened again: the job stays failed and is listed.
    let again = reopened(config(&store, &[&new_root]), &id).await;
    assert_eq!(again.state(), JobState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_job_that_still_passes_resumes() {
    let dir = tempfile::tempdir().expect("dir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("root");
    let input = root.join("in.mp4");
    std::fs::copy(CLIP, &input).expect("clip");
    let store = dir.path().join("jobs.sqlite");
    let id = store_unfinished(
        config(&store, &[&root]),
        spec(&input, &root.join("out.mp4")),
    )
    .await;

    let job = reopened(config(&store, &[&root]), &id).await;
    assert!(
        !job.state().is_terminal(),
        "it waits for workers again: {job:?}"
    );
}
