//! Auth and TLS, end to end: an orchestrator and a worker serving TLS (certificates made
//! here with openssl) and requiring bearer tokens. Every RPC of the `Orchestrator`, `Fleet`
//! and `Worker` services refuses a call without a token, with a wrong one, or with the
//! other service's token (`UNAUTHENTICATED`), and serves one with the right token; a job
//! runs through the whole fleet over TLS; no token or storage secret shows in any log.
//! Reflection, in both protocol versions, lists each server's own services to a client
//! with the token, and hands out the descriptors a client needs to call them: a Python
//! client with grpcio-reflection alone lists the jobs and reads a typed cost report.

use framefleet_testkit as support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use framefleet_common::auth::{self, AttachToken};
use framefleet_common::config::TlsConfig;
use framefleet_common::proto::fleet_client::FleetClient;
use framefleet_common::proto::orchestrator_client::OrchestratorClient;
use framefleet_common::proto::worker_client::WorkerClient;
use framefleet_common::proto::{
    CancelJobRequest, DeregisterRequest, DrainRequest, GetCostReportRequest, GetJobRequest,
    HeartbeatRequest, JobState, ListJobsRequest, ProcessChunkRequest, RegisterWorkerRequest,
    SubmitJobRequest, WatchJobRequest, WorkerStatusRequest,
};
use support::*;
use tonic::Code;

/// The services a server's reflection lists (`v1` or `v1alpha` of the protocol), and the
/// files of the descriptors it gives for `symbol`; the error code when it refuses.
macro_rules! reflect {
    ($version:ident, $channel:expr, $token:expr, $symbol:expr) => {{
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        let mut client =
            ServerReflectionClient::with_interceptor($channel, AttachToken::new($token));
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol($symbol.to_string()),
        ]
        .map(|request| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        });
        async move {
            let mut replies = client
                .server_reflection_info(tokio_stream::iter(requests))
                .await?
                .into_inner();
            let (mut services, mut files) = (Vec::new(), Vec::new());
            while let Some(reply) = replies.message().await? {
                match reply.message_response {
                    Some(MessageResponse::ListServicesResponse(list)) => {
                        services.extend(list.service.into_iter().map(|s| s.name))
                    }
                    Some(MessageResponse::FileDescriptorResponse(found)) => files.extend(
                        found
                            .file_descriptor_proto
                            .iter()
                            .map(|bytes| String::from_utf8_lossy(bytes).into_owned()),
                    ),
                    other => panic!("unexpected reflection reply {other:?}"),
                }
            }
            services.sort();
            Ok::<_, tonic::Status>((services, files))
        }
    }};
}

const CLIENT_TOKEN: &str = "client-token-5f2c9a7e41d3b8";
const FLEET_TOKEN: &str = "fleet-token-0b7d3e9c15a2f6";

/// A CA and a certificate it signed for 127.0.0.1 and localhost, as PEM files in `dir`.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (apt install openssl)");
        assert!(
            status.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
    let mut ca = vec!["req", "-x509", "-nodes", "-days", "2"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&[
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-subj",
        "/CN=framefleet test CA",
    ]);
    run(&ca);
    let mut request = vec!["req", "-nodes"];
    request.extend_from_slice(&ec);
    request.extend_from_slice(&[
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&request);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write extensions");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

/// The error code of a call, `None` when it succeeded.
fn code<T>(result: Result<T, tonic::Status>) -> Option<Code> {
    result.err().map(|status| status.code())
}

/// Calls every RPC of the three services with these tokens and returns each call's error
/// code (`None` when it succeeded).
async fn call_everything(
    cluster: &Cluster,
    tls: &TlsConfig,
    client_token: &str,
    fleet_token: &str,
) -> Vec<(&'static str, Option<Code>)> {
    let channel = |url: &str| auth::endpoint(url, tls).expect("endpoint").connect_lazy();
    let orchestrator = channel(&cluster.url);
    let mut users =
        OrchestratorClient::with_interceptor(orchestrator.clone(), AttachToken::new(client_token));
    let mut fleet = FleetClient::with_interceptor(orchestrator, AttachToken::new(fleet_token));
    let mut worker = WorkerClient::with_interceptor(
        channel(&cluster.worker_urls[0]),
        AttachToken::new(fleet_token),
    );
    let missing = || "job-that-does-not-exist".to_string();
    vec![
        (
            "SubmitJob",
            code(users.submit_job(SubmitJobRequest::default()).await),
        ),
        (
            "GetJob",
            code(users.get_job(GetJobRequest { job_id: missing() }).await),
        ),
        (
            "WatchJob",
            code(users.watch_job(WatchJobRequest { job_id: missing() }).await),
        ),
        (
            "CancelJob",
            code(
                users
                    .cancel_job(CancelJobRequest { job_id: missing() })
                    .await,
            ),
        ),
        (
            "ListJobs",
            code(users.list_jobs(ListJobsRequest::default()).await),
        ),
        (
            "GetCostReport",
            code(
                users
                    .get_cost_report(GetCostReportRequest { job_id: missing() })
                    .await,
            ),
        ),
        (
            "RegisterWorker",
            code(
                fleet
                    .register_worker(RegisterWorkerRequest::default())
                    .await,
            ),
        ),
        (
            "Heartbeat",
            code(
                fleet
                    .heartbeat(HeartbeatRequest {
                        worker_id: missing(),
                    })
                    .await,
            ),
        ),
        (
            "Deregister",
            code(
                fleet
                    .deregister(DeregisterRequest {
                        worker_id: missing(),
                    })
                    .await,
            ),
        ),
        (
            "ProcessChunk",
            code(worker.process_chunk(ProcessChunkRequest::default()).await),
        ),
        ("Status", code(worker.status(WorkerStatusRequest {}).await)),
        // Last: with the right token it really drains the worker, which then exits.
        ("Drain", code(worker.drain(DrainRequest {}).await)),
    ]
}

/// Runs `tests/reflection_client.py` against the orchestrator at `url` (TLS checked
/// against `ca`): it must find the services, list job `id` and read its report.
fn python_reflection_client(url: &str, ca: &str, id: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/reflection_client.py");
    let address = url.trim_start_matches("https://");
    let output = Command::new("python3")
        .args([script, address, CLIENT_TOKEN, ca, id])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the Python reflection client failed (scripts/setup.sh --clients installs \
         grpcio-reflection): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let found: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the client prints JSON");
    let services = found["services"].to_string();
    assert!(
        services.contains("framefleet.v1.Orchestrator") && !services.contains("Worker"),
        "{services}"
    );
    assert!(found["jobs"].to_string().contains(id), "{found}");
    let report = &found["report"];
    assert_eq!(report["job_id"], id, "{report}");
    assert_eq!(report["state"], "SUCCEEDED");
    assert_eq!(
        report["chunks"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_needs_its_token_over_tls_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    certificates(dir.path());
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let cluster = Cluster::start_with_logs(
        1,
        &[
            ("FRAMEFLEET_AUTH__CLIENT_TOKEN", CLIENT_TOKEN),
            ("FRAMEFLEET_AUTH__FLEET_TOKEN", FLEET_TOKEN),
            ("FRAMEFLEET_TLS__CERT_PATH", &cert),
            ("FRAMEFLEET_TLS__KEY_PATH", &key),
            ("FRAMEFLEET_TLS__CA_PATH", &ca),
            ("RUST_LOG", "debug"),
        ],
    );
    assert!(cluster.url.starts_with("https://"));
    let tls = TlsConfig {
        ca_path: ca.clone(),
        ..TlsConfig::default()
    };

    // A job through the whole fleet: client -> orchestrator -> worker, all over TLS with
    // tokens (the worker registered with its fleet token, or nothing would run it).
    let prefix = unique_prefix("auth");
    let local = dir.path().join("in.mp4");
    clip_with_audio(&local, "320x180", 25, 2, 25);
    let input = s3(&format!("{prefix}/in.mp4"));
    let output = s3(&format!("{prefix}/out.mp4"));
    upload(&local, &input).await;
    let mut client = cluster.client().await;
    let id = submit(&mut client, lossless_spec(&input, &output, 1.0, 2)).await;
    let last = watch(&mut client, &id, Duration::from_secs(300))
        .await
        .pop()
        .expect("snapshots");
    assert_eq!(state(&last), JobState::Succeeded, "{}", last.error);

    // Reflection: both versions, behind the token, listing the server's own services.
    let channel = auth::endpoint(&cluster.url, &tls)
        .expect("endpoint")
        .connect_lazy();
    let symbol = "framefleet.v1.Orchestrator";
    let served = [
        "framefleet.v1.Fleet",
        "framefleet.v1.Orchestrator",
        "grpc.health.v1.Health",
    ];
    for (services, files) in [
        reflect!(v1alpha, channel.clone(), CLIENT_TOKEN, symbol)
            .await
            .expect("v1alpha reflection"),
        reflect!(v1, channel.clone(), CLIENT_TOKEN, symbol)
            .await
            .expect("v1 reflection"),
    ] {
        let ours: Vec<&str> = services
            .iter()
            .map(String::as_str)
            .filter(|name| !name.starts_with("grpc.reflection"))
            .collect();
        assert_eq!(ours, served, "{services:?}");
        assert!(
            files
                .iter()
                .any(|f| f.contains("framefleet/v1/orchestrator.proto")),
            "no descriptor of the Orchestrator service"
        );
    }
    let refused = reflect!(v1alpha, channel.clone(), "", symbol)
        .await
        .expect_err("reflection without a token");
    assert_eq!(refused.code(), Code::Unauthenticated);
    let worker = auth::endpoint(&cluster.worker_urls[0], &tls)
        .expect("endpoint")
        .connect_lazy();
    let (services, _) = reflect!(v1alpha, worker, FLEET_TOKEN, "framefleet.v1.Worker")
        .await
        .expect("the worker's reflection");
    assert!(
        services.contains(&"framefleet.v1.Worker".to_string())
            && !services.iter().any(|s| s.contains("Orchestrator")),
        "{services:?}"
    );

    // A client in another language with reflection alone: Python's grpcio-reflection.
    python_reflection_client(&cluster.url, &ca, &id);

    let wrong = "wrong-token-8c1e4f6a0d2b97";
    for (what, client_token, fleet_token) in [
        ("no token", "", ""),
        ("a wrong token", wrong, wrong),
        ("the other service's token", FLEET_TOKEN, CLIENT_TOKEN),
    ] {
        for (rpc, code) in call_everything(&cluster, &tls, client_token, fleet_token).await {
            assert_eq!(code, Some(Code::Unauthenticated), "{rpc} with {what}");
        }
    }
    for (rpc, code) in call_everything(&cluster, &tls, CLIENT_TOKEN, FLEET_TOKEN).await {
        assert_ne!(
            code,
            Some(Code::Unauthenticated),
            "{rpc} with the right token"
        );
        assert_ne!(code, Some(Code::Unavailable), "{rpc} did not get through");
    }

    // Plain HTTP/2 to a TLS server does not get an answer.
    let plain = OrchestratorClient::connect(cluster.url.replace("https://", "http://")).await;
    let refused = match plain {
        Err(_) => true,
        Ok(mut client) => client.list_jobs(ListJobsRequest::default()).await.is_err(),
    };
    assert!(refused, "a plain-text client was served");

    let logs = cluster.logs();
    assert!(
        logs.contains("registered with the orchestrator"),
        "no debug logs captured"
    );
    let secret = storage_config().s3_secret_access_key;
    for (name, value) in [
        ("the client token", CLIENT_TOKEN),
        ("the fleet token", FLEET_TOKEN),
        ("the wrong token", wrong),
        ("the S3 secret key", secret.as_str()),
    ] {
        assert!(!logs.contains(value), "{name} appears in the logs");
    }
}
