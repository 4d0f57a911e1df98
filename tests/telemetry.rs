//! Telemetry end to end: an orchestrator and two workers (real processes, Garage on
//! loopback) export their spans over OTLP/gRPC to a collector served here on 127.0.0.1,
//! and serve Prometheus metrics. A two-chunk job must be one trace: the orchestrator's
//! `job` span is its root, the `probe`, `chunk` > `attempt` and `stitch` spans hang under
//! it, and each worker's `chunk` span (with its pipeline stages) is the child of the
//! attempt that sent it. The metrics endpoints count the job, its chunk attempts, the
//! workers and the frames they made.

use framefleet_testkit as support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use support::*;
use tokio_util::sync::CancellationToken;

/// A span as the collector received it, with the service that sent it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    attributes: HashMap<String, String>,
}

/// An OTLP trace collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("collector lock").clone()
    }
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().expect("collector lock");
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    kept.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves a collector on a free loopback port until `stop`; returns it and its URL.
async fn collector(stop: CancellationToken) -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("collector port");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            ),
    );
    (collector, url)
}

/// The value of an unlabelled or labelled sample in a Prometheus text page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let (name, value) = line.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

fn scrape(port: u16) -> String {
    let (status, body) = http_get(port, "/metrics").expect("metrics endpoint answers");
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_one_trace_across_processes_and_is_counted_in_metrics() {
    let stop = CancellationToken::new();
    let (collector, otlp) = collector(stop.clone()).await;
    let orchestrator_metrics = free_port();
    let telemetry = [
        ("FRAMEFLEET_TELEMETRY__OTLP_ENDPOINT", otlp.as_str()),
        // Export every 200 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let orchestrator_listen = format!("127.0.0.1:{orchestrator_metrics}");
    let mut settings = telemetry.to_vec();
    settings.push((
        "FRAMEFLEET_TELEMETRY__METRICS_LISTEN",
        orchestrator_listen.as_str(),
    ));
    let cluster = Cluster::start(0, &settings);
    // Workers of their own, each with its own metrics port.
    let worker_metrics = [free_port(), free_port()];
    let _workers: Vec<Process> = worker_metrics
        .iter()
        .enumerate()
        .map(|(index, port)| Process {
            child: framefleet()
                .args(["worker", "--orchestrator", &cluster.url, "--listen"])
                .arg(format!("127.0.0.1:{}", free_port()))
                .args(["--name", &format!("traced-{index}")])
                .envs(telemetry)
                .env(
                    "FRAMEFLEET_TELEMETRY__METRICS_LISTEN",
                    format!("127.0.0.1:{port}"),
                )
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("worker starts"),
        })
        .collect();

    let dir = tempfile::tempdir().expect("temp dir");
    let clip = dir.path().join("in.mp4");
    clip_with_audio(&clip, "320x180", 24, 4, 24);
    let prefix = unique_prefix("telemetry");
    let input = s3(&format!("{prefix}/in.mp4"));
    upload(&clip, &input).await;
    let output = s3(&format!("{prefix}/out.mp4"));
    let mut client = cluster.client().await;
    let job_id = submit(&mut client, lossless_spec(&input, &output, 1.0, 2)).await;
    let snapshots = watch(&mut client, &job_id, Duration::from_secs(120)).await;
    let last = snapshots.last().expect("a snapshot");
    assert_eq!(
        state(last),
        framefleet_common::proto::JobState::Succeeded,
        "{last:?}"
    );

    // The workers export their spans on their own schedule: wait for both chunks' stages.
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = collector.spans();
        let uploads = spans
            .iter()
            .filter(|s| s.service == "framefleet-worker" && s.name == "upload")
            .count();
        let ended = spans.iter().any(|s| s.name == "job");
        if uploads >= 2 && ended {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the collector got {} spans, not both chunks' uploads and the job: {spans:#?}",
            spans.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let job = spans
        .iter()
        .find(|s| s.name == "job" && s.attributes.get("job") == Some(&job_id))
        .expect("the orchestrator's job span");
    assert_eq!(job.service, "framefleet-orchestrator");
    assert!(job.parent_span_id.is_empty(), "the job span is the root");
    let trace: Vec<&Received> = spans
        .iter()
        .filter(|s| s.trace_id == job.trace_id)
        .collect();
    let by_id: HashMap<&[u8], &Received> = trace.iter().map(|s| (&s.span_id[..], *s)).collect();
    let parent = |span: &Received| -> &Received {
        by_id
            .get(&span.parent_span_id[..])
            .unwrap_or_else(|| panic!("span {} has no parent in the job's trace", span.name))
    };
    for name in ["probe", "stitch"] {
        let span = trace
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in the job's trace"));
        assert_eq!(parent(span).name, "job");
    }
    let worker_chunks: Vec<&&Received> = trace
        .iter()
        .filter(|s| s.service == "framefleet-worker" && s.name == "chunk")
        .collect();
    let mut indices: Vec<&str> = worker_chunks
        .iter()
        .map(|s| s.attributes.get("chunk").map_or("", String::as_str))
        .collect();
    indices.sort();
    assert_eq!(
        indices,
        ["0", "1"],
        "each chunk's worker span is in the job's trace"
    );
    for chunk in worker_chunks {
        assert_eq!(chunk.attributes.get("job"), Some(&job_id));
        let attempt = parent(chunk);
        assert_eq!(
            (attempt.service.as_str(), attempt.name.as_str()),
            ("framefleet-orchestrator", "attempt"),
            "a worker's chunk span is the child of the attempt that sent it"
        );
        assert!(attempt
            .attributes
            .get("worker")
            .is_some_and(|w| w.starts_with("traced-")));
        let dispatched = parent(attempt);
        assert_eq!(dispatched.name, "chunk");
        assert_eq!(
            dispatched.attributes.get("chunk"),
            chunk.attributes.get("chunk")
        );
        assert_eq!(parent(dispatched).name, "job");
        let mut stages: Vec<&str> = trace
            .iter()
            .filter(|s| s.parent_span_id == chunk.span_id)
            .map(|s| s.name.as_str())
            .collect();
        stages.sort();
        assert_eq!(stages, ["decode", "encode", "process", "upload"]);
    }

    let frames = video_timing(&clip).pts_seconds.len() as f64;
    let page = scrape(orchestrator_metrics);
    for (series, value) in [
        ("framefleet_jobs_submitted_total", 1.0),
        ("framefleet_jobs_ended_total{state=\"succeeded\"}", 1.0),
        ("framefleet_chunk_attempts_total{outcome=\"accepted\"}", 2.0),
        ("framefleet_chunk_gpu_seconds_count", 2.0),
        ("framefleet_workers", 2.0),
        ("framefleet_worker_slots{state=\"busy\"}", 0.0),
        ("framefleet_chunks_waiting", 0.0),
        ("framefleet_jobs{state=\"running\"}", 0.0),
    ] {
        assert_eq!(sample(&page, series), Some(value), "{series} in:\n{page}");
    }
    let gpu_seconds = sample(&page, "framefleet_gpu_seconds_total").expect("GPU-seconds");
    let report = report(&mut client, &job_id).await;
    let reported = report["totals"]["gpu_seconds"]
        .as_f64()
        .expect("report GPU-seconds");
    assert!(
        (gpu_seconds - reported).abs() < 1e-6,
        "{gpu_seconds} vs report {reported}"
    );
    let pages: Vec<String> = worker_metrics.iter().map(|&port| scrape(port)).collect();
    let total = |series: &str| -> f64 {
        pages
            .iter()
            .map(|page| sample(page, series).unwrap_or(0.0))
            .sum()
    };
    assert_eq!(
        total("framefleet_worker_chunks_total{outcome=\"done\"}"),
        2.0
    );
    assert_eq!(total("framefleet_worker_frames_total"), frames);
    assert!(total("framefleet_worker_phase_seconds_total{phase=\"encode\"}") > 0.0);
    assert_eq!(total("framefleet_worker_chunks_running"), 0.0);
    stop.cancel();
}
