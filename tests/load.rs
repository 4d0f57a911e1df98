//! Load: 100 small jobs submitted at once to an orchestrator with 3 workers, a fifth of
//! them repeating an earlier submission's idempotency key. Every repeat maps to the job its
//! key first created, every job reaches exactly one terminal state (SUCCEEDED), every
//! output has exactly the input's frames at the input's timestamps, and the bucket holds
//! the input and the outputs and nothing else.

use framefleet_testkit as support;

use std::time::Duration;

use framefleet_common::proto::{JobState, ListJobsRequest, SubmitJobRequest};
use support::*;

const SUBMISSIONS: usize = 100;
const DISTINCT: usize = 80;

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_jobs_at_once_each_end_once_with_exact_outputs_and_no_leftovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("load");
    let local = dir.path().join("in.mp4");
    clip_with_audio(&local, "160x120", 10, 1, 10);
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&local, &input).await;
    let cluster = Cluster::start(3, &[]);
    let client = cluster.client().await;

    // Submission k uses key k mod 80: the last 20 repeat the first 20, spec and all.
    let mut submissions = tokio::task::JoinSet::new();
    for k in 0..SUBMISSIONS {
        let mut client = client.clone();
        let key = format!("load-{}", k % DISTINCT);
        let output = s3(&format!("{prefix}/out/{key}.mp4"));
        let spec = lossless_spec(&input, &output, 1.0, 1 + (k % DISTINCT % 2) as u32);
        submissions.spawn(async move {
            let response = client
                .submit_job(SubmitJobRequest {
                    spec: Some(spec),
                    idempotency_key: key.clone(),
                })
                .await
                .expect("submitted")
                .into_inner();
            (key, response.job_id, output)
        });
    }
    let mut by_key = std::collections::BTreeMap::new();
    while let Some(submitted) = submissions.join_next().await {
        let (key, id, output) = submitted.expect("submission task");
        let first = by_key.entry(key.clone()).or_insert((id.clone(), output));
        assert_eq!(first.0, id, "two jobs for the key {key}");
    }
    assert_eq!(by_key.len(), DISTINCT);

    for (key, (id, output)) in &by_key {
        let mut client = client.clone();
        let snapshots = watch(&mut client, id, Duration::from_secs(600)).await;
        let terminal: Vec<_> = snapshots
            .iter()
            .filter(|job| state(job).is_terminal())
            .collect();
        assert_eq!(terminal.len(), 1, "{key}: {terminal:?}");
        assert_eq!(
            state(terminal[0]),
            JobState::Succeeded,
            "{key}: {}",
            terminal[0].error
        );
        let downloaded = dir.path().join(format!("{key}.mp4"));
        download(output, &downloaded).await;
        assert_exact(&local, &downloaded, (160, 120));
    }
    let mut client = client.clone();
    let listed = client
        .list_jobs(ListJobsRequest::default())
        .await
        .expect("list")
        .into_inner()
        .jobs;
    assert_eq!(listed.len(), DISTINCT, "one job per distinct key");
    assert!(listed.iter().all(|job| state(job) == JobState::Succeeded));

    let mut left = list(&s3(&format!("{prefix}/"))).await;
    left.sort();
    let mut expected: Vec<String> = by_key
        .values()
        .map(|(_, output)| output.to_string())
        .chain([input.to_string()])
        .collect();
    expected.sort();
    assert_eq!(left, expected, "only the input and the outputs remain");
}
