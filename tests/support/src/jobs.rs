//! Jobs through the `Orchestrator` gRPC service: specs, submission, watching, reports.

use std::time::Duration;

use framefleet_common::auth::AttachToken;
use framefleet_common::proto::orchestrator_client::OrchestratorClient;
use framefleet_common::proto::{
    EncoderSettings, GetCostReportRequest, Job, JobSpec, JobState, ProcessorSpec, SubmitJobRequest,
    WatchJobRequest,
};
use framefleet_common::storage::ObjectUri;

/// A client of the `Orchestrator` service as the tests use it.
pub type Client = OrchestratorClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AttachToken>,
>;

/// A job spec: lanczos at `scale`, lossless x264 `ultrafast`, `chunks` fixed chunks.
pub fn lossless_spec(input: &ObjectUri, output: &ObjectUri, scale: f64, chunks: u32) -> JobSpec {
    JobSpec {
        input_uri: input.to_string(),
        output_uri: output.to_string(),
        processor: Some(ProcessorSpec {
            model: "lanczos".into(),
            scale,
            ..ProcessorSpec::default()
        }),
        encoder: Some(EncoderSettings {
            crf: 0,
            preset: "ultrafast".into(),
            lossless: true,
            ..EncoderSettings::default()
        }),
        chunks,
        ..JobSpec::default()
    }
}

/// Submits a job and returns its id.
pub async fn submit(client: &mut Client, spec: JobSpec) -> String {
    client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await
        .expect("submit")
        .into_inner()
        .job_id
}

/// Watches a job to its end (within `limit`) and returns every snapshot seen.
pub async fn watch(client: &mut Client, job_id: &str, limit: Duration) -> Vec<Job> {
    let mut snapshots = Vec::new();
    let follow = async {
        let mut stream = client
            .watch_job(WatchJobRequest {
                job_id: job_id.to_string(),
            })
            .await
            .expect("watch")
            .into_inner();
        while let Some(job) = stream.message().await.expect("watch stream") {
            snapshots.push(job);
        }
    };
    tokio::time::timeout(limit, follow)
        .await
        .unwrap_or_else(|_| panic!("job {job_id} did not end within {limit:?}"));
    snapshots
}

/// The state of a snapshot.
pub fn state(job: &Job) -> JobState {
    JobState::try_from(job.state).expect("known state")
}

/// A finished job's cost report as JSON.
pub async fn report(client: &mut Client, job_id: &str) -> serde_json::Value {
    let reply = client
        .get_cost_report(GetCostReportRequest {
            job_id: job_id.to_string(),
        })
        .await
        .expect("report")
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&reply.json).expect("report is JSON");
    // The typed report and its JSON are the same message (compared as text read back the
    // same way: serde_json's parser may round a float's last digit).
    let typed = serde_json::to_string(&reply.report.expect("a typed report")).expect("serializes");
    let typed: serde_json::Value = serde_json::from_str(&typed).expect("reads back");
    assert_eq!(typed, json, "the typed report and its JSON differ");
    json
}

/// Sums a numeric field over the report's chunks.
pub fn chunk_sum(report: &serde_json::Value, field: &str) -> f64 {
    report["chunks"]
        .as_array()
        .expect("chunks")
        .iter()
        .map(|c| c[field].as_f64().expect("numeric field"))
        .sum()
}
