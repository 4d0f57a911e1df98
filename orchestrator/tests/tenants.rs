//! Tenants over real gRPC on 127.0.0.1: whose a job is comes from the token that submitted
//! it; a tenant sees, watches, cancels and costs its own jobs only (another's is not
//! found), lists only its own, and is refused past its `max_queued_jobs` with the limit
//! named; the operator token sees every job; idempotency keys are each tenant's own.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

use framefleet_common::auth::AttachToken;
use framefleet_common::config::{Config, TenantConfig};
use framefleet_common::proto::orchestrator_client::OrchestratorClient;
use framefleet_common::proto::{
    CancelJobRequest, GetJobRequest, JobSpec, ListJobsRequest, SubmitJobRequest,
};
use framefleet_orchestrator::{serve_on, Orchestrator};

/// A real MP4 from the probe corpus.
const CLIP: &str = "../fuzz/corpus/probe/index-first.mp4";

const STUDIO: &str = "studio-token-0123456789";
const LAB: &str = "lab-token-0123456789abc";
const OPERATOR: &str = "operator-token-0123456789";

type Client = OrchestratorClient<InterceptedService<Channel, AttachToken>>;

/// An orchestrator with tenants `studio` (at most one job queued) and `lab`, an operator
/// token, its files under `root` and no worker: jobs stay unfinished.
async fn start(root: &Path) -> (String, CancellationToken) {
    let mut config = Config::default();
    config.storage.local_roots = vec![root.display().to_string()];
    config.orchestrator.store_path = String::new();
    config.dispatch.worker_wait_seconds = 600.0;
    config.auth.operator_token = OPERATOR.into();
    config.tenants = BTreeMap::from([
        (
            "studio".to_string(),
            TenantConfig {
                token: STUDIO.into(),
                max_queued_jobs: 1,
                ..TenantConfig::default()
            },
        ),
        (
            "lab".to_string(),
            TenantConfig {
                token: LAB.into(),
                weight: 3.0,
                ..TenantConfig::default()
            },
        ),
    ]);
    config.validate().expect("a valid configuration");
    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::open(config, shutdown.clone())
        .await
        .expect("opens");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(serve_on(listener, orchestrator, shutdown.clone()));
    (format!("http://{address}"), shutdown)
}

async fn client(url: &str, token: &str) -> Client {
    let channel = Channel::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    OrchestratorClient::with_interceptor(channel, AttachToken::new(token))
}

/// Submits a lanczos job of `root`'s clip into `output`, with `key`.
async fn submit(
    client: &mut Client,
    root: &Path,
    output: &str,
    key: &str,
) -> Result<String, tonic::Status> {
    let spec = JobSpec {
        input_uri: format!("file://{}", root.join("in.mp4").display()),
        output_uri: format!("file://{}", root.join(output).display()),
        ..JobSpec::default()
    };
    let reply = client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: key.into(),
        })
        .await?;
    Ok(reply.into_inner().job_id)
}

async fn listed(client: &mut Client) -> Vec<(String, String)> {
    let jobs = client
        .list_jobs(ListJobsRequest::default())
        .await
        .expect("lists")
        .into_inner()
        .jobs;
    jobs.into_iter().map(|job| (job.id, job.tenant)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_sees_its_own_jobs_within_its_quota() {
    let root = tempfile::tempdir().expect("root");
    std::fs::copy(CLIP, root.path().join("in.mp4")).expect("clip");
    let (url, shutdown) = start(root.path()).await;
    let (mut studio, mut lab) = (client(&url, STUDIO).await, client(&url, LAB).await);
    let mut operator = client(&url, OPERATOR).await;

    let theirs = submit(&mut studio, root.path(), "a.mp4", "order-1")
        .await
        .expect("accepted");
    let refused = submit(&mut studio, root.path(), "b.mp4", "order-2")
        .await
        .expect_err("over studio's quota");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("tenants.studio.max_queued_jobs")
            && refused.message().contains('1'),
        "{}",
        refused.message()
    );
    // The same key from another tenant is another job, not studio's.
    let ours = submit(&mut lab, root.path(), "c.mp4", "order-1")
        .await
        .expect("accepted");
    assert_ne!(ours, theirs);

    assert_eq!(
        listed(&mut studio).await,
        vec![(theirs.clone(), "studio".into())]
    );
    assert_eq!(listed(&mut lab).await, vec![(ours.clone(), "lab".into())]);
    assert_eq!(listed(&mut operator).await.len(), 2);

    for status in [
        lab.get_job(GetJobRequest {
            job_id: theirs.clone(),
        })
        .await
        .expect_err("another tenant's job"),
        lab.cancel_job(CancelJobRequest {
            job_id: theirs.clone(),
        })
        .await
        .expect_err("another tenant's job"),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    }
    let seen = operator
        .get_job(GetJobRequest {
            job_id: theirs.clone(),
        })
        .await
        .expect("the operator sees every job")
        .into_inner();
    assert_eq!(seen.tenant, "studio");
    let cancelled = studio.cancel_job(CancelJobRequest { job_id: theirs }).await;
    assert!(cancelled.is_ok(), "a tenant cancels its own job");

    let anonymous = client(&url, "")
        .await
        .list_jobs(ListJobsRequest::default())
        .await;
    let refused = anonymous.expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("tenants.NAME.token"),
        "{}",
        refused.message()
    );
    shutdown.cancel();
}
