//! A fleet with `storage.local_roots` set, tried as a hostile client would: files swapped
//! for links out of the root after submission, a model outside the root, hostile labels,
//! and the dry run that used to fail on every input with roots set. Real orchestrator and
//! worker processes on 127.0.0.1, local files only.

use std::path::Path;
use std::time::Duration;

use framefleet_common::proto::{JobSpec, JobState, ProcessorSpec, SubmitJobRequest};
use framefleet_common::storage::ObjectUri;
use framefleet_testkit::cluster::Cluster;
use framefleet_testkit::jobs::{lossless_spec, state, submit, watch, Client};
use framefleet_testkit::media::clip_with_audio;
use framefleet_testkit::process::{framefleet, succeeds};

fn file(path: &Path) -> ObjectUri {
    ObjectUri::File(path.to_path_buf())
}

/// Every file under `dir`, as paths relative to it.
fn everything_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("folder").flatten() {
            let path = entry.path();
            if entry.file_type().expect("type").is_dir() {
                pending.push(path.clone());
            }
            let relative = path.strip_prefix(dir).expect("under").display().to_string();
            found.push(relative);
        }
    }
    found.sort();
    found
}

/// The refusal of a submission that must be refused.
async fn refused(client: &mut Client, spec: JobSpec) -> tonic::Status {
    client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await
        .expect_err("refused")
}

fn roots_setting(root: &Path) -> String {
    format!("[\"{}\"]", root.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_swapped_for_a_link_out_of_the_root_after_submission_is_never_followed() {
    let root = tempfile::tempdir().expect("root");
    let outside = tempfile::tempdir().expect("outside");
    let root = root.path().canonicalize().expect("resolved");
    let (busy, input) = (root.join("busy.mp4"), root.join("in.mp4"));
    clip_with_audio(&busy, "320x240", 25, 6, 25);
    clip_with_audio(&input, "160x120", 25, 1, 25);
    clip_with_audio(&outside.path().join("secret.mp4"), "160x120", 25, 2, 25);
    std::fs::create_dir(root.join("out")).expect("output folder");
    let roots = roots_setting(&root);
    let cluster = Cluster::start(1, &[("FRAMEFLEET_STORAGE__LOCAL_ROOTS", &roots)]);
    let mut client = cluster.client().await;

    // The one slot is busy, so the second job waits with its input and output named.
    let first = submit(
        &mut client,
        lossless_spec(&file(&busy), &file(&root.join("busy-out.mp4")), 2.0, 1),
    )
    .await;
    let output = root.join("out/in.mp4");
    let second = submit(
        &mut client,
        lossless_spec(&file(&input), &file(&output), 1.0, 1),
    )
    .await;
    std::fs::remove_file(&input).expect("input removed");
    std::os::unix::fs::symlink(outside.path().join("secret.mp4"), &input).expect("input link");
    std::fs::remove_dir_all(root.join("out")).expect("output folder removed");
    std::os::unix::fs::symlink(outside.path(), root.join("out")).expect("output link");

    let updates = watch(&mut client, &second, Duration::from_secs(120)).await;
    let last = updates.last().expect("updates");
    assert_eq!(state(last), JobState::Failed, "{last:?}");
    assert!(
        last.error.contains("outside the local roots"),
        "the error names the escape: {}",
        last.error
    );
    assert_eq!(
        everything_under(outside.path()),
        ["secret.mp4"],
        "nothing was written outside the root: no output, no chunk scratch"
    );
    let busy_updates = watch(&mut client, &first, Duration::from_secs(120)).await;
    let busy_state = busy_updates.last().map(state);
    assert_eq!(
        busy_state,
        Some(JobState::Succeeded),
        "the other job is unharmed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn models_labels_and_dry_runs_keep_to_the_roots_and_bounds() {
    let root = tempfile::tempdir().expect("root");
    let root = root.path().canonicalize().expect("resolved");
    let input = root.join("in.mp4");
    clip_with_audio(&input, "160x120", 25, 1, 25);
    let roots = roots_setting(&root);
    let cluster = Cluster::start(0, &[("FRAMEFLEET_STORAGE__LOCAL_ROOTS", &roots)]);
    let mut client = cluster.client().await;
    let output = root.join("out.mp4");

    // A process job's TorchScript model outside the roots is refused before any worker
    // loads it, whether or not the file exists (no existence oracle).
    for model in ["/etc/hostname.pt", "/nonexistent/x.pt"] {
        let mut spec = lossless_spec(&file(&input), &file(&output), 1.0, 1);
        spec.processor = Some(ProcessorSpec {
            model: model.into(),
            scale: 1.0,
            ..ProcessorSpec::default()
        });
        let refused = refused(&mut client, spec).await;
        assert!(
            refused.message().contains("storage.local_roots"),
            "{model}: {}",
            refused.message()
        );
        assert!(
            !refused.message().contains("No such file"),
            "{}",
            refused.message()
        );
    }

    // 100,000 labels are refused, naming the limit; the job list keeps working.
    let mut spec = lossless_spec(&file(&input), &file(&output), 1.0, 1);
    spec.labels = (0..100_000)
        .map(|i| (format!("k{i}"), "v".into()))
        .collect();
    let refused = refused(&mut client, spec).await;
    assert!(
        refused.message().contains("limits.max_labels"),
        "{}",
        refused.message()
    );
    let listed = succeeds(framefleet().args(["list", "--orchestrator", &cluster.url]));
    assert!(listed.status.success());

    // The dry run plans an input inside the roots without naming an output.
    let planned = succeeds(framefleet().args([
        "plan",
        &file(&input).to_string(),
        "--orchestrator",
        &cluster.url,
        "--json",
    ]));
    let plan: serde_json::Value =
        serde_json::from_slice(&planned.stdout).expect("the plan is JSON");
    assert_eq!(plan["frames"], 25, "{plan}");
    assert!(!root.join("dry-run").exists() && !Path::new("/dry-run").exists());
}
