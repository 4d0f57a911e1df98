//! Hostile requests, fuzzed: random and extreme values in every field of `SubmitJob`,
//! `PlanJob` and `RegisterWorker` go to a real orchestrator on 127.0.0.1 (its file roots
//! set, a real clip inside them, so the requests that pass reach the probe and the
//! planner). Each must be answered, accepted or refused, within a deadline; the process
//! must not panic, nor hold more than [`MEMORY_BOUND`] at any point; a job that was
//! accepted must end within [`CANCEL_DEADLINE`] of its cancel; and `ListJobs` must still
//! answer, every page, after all of it.
//!
//! `PROPTEST_CASES` sets how many requests of each kind are sent (150 by default).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use framefleet_common::config::Config;
use framefleet_common::proto::fleet_client::FleetClient;
use framefleet_common::proto::frame_selection::Rule;
use framefleet_common::proto::orchestrator_client::OrchestratorClient;
use framefleet_common::proto::{
    CancelJobRequest, EncoderSettings, FrameSelection, FrameTimes, GetJobRequest, JobInput,
    JobSpec, ListJobsRequest, PlanJobRequest, ProcessorSpec, RandomFrames, RegisterWorkerRequest,
    SubmitJobRequest,
};
use framefleet_orchestrator::{serve_on, Orchestrator};

/// Longest one request may go unanswered before it counts as a hang.
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);
/// Longest an accepted job may run on after its cancel.
const CANCEL_DEADLINE: Duration = Duration::from_secs(5);
/// Most resident memory the process (orchestrator and test together) may reach.
const MEMORY_BOUND: u64 = 1 << 30;

/// The clip the requests that pass probe: a real MP4 from the probe corpus.
const CLIP: &str = "../fuzz/corpus/probe/index-first.mp4";

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb * 1024)
}

/// A string a hostile client might send: empty, plain, huge, with control characters or
/// escape sequences, or any.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9._/-]{1,24}",
        any::<String>(),
        (1usize..200_000).prop_map(|n| "x".repeat(n)),
        Just("a\nforged log line\u{1b}[2J".to_string()),
    ]
}

/// An extreme or ordinary number.
fn number() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(1e300),
        Just(1e12),
        Just(-1.0),
        Just(1e-300),
        0.01..64.0f64,
        any::<f64>(),
    ]
}

fn count() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(1), 2..300u32, Just(u32::MAX), any::<u32>()]
}

/// A URI: the clip, a place in the root, outside it, a traversal, a bad scheme, a name
/// too long, or any text.
fn uri(root: &str) -> impl Strategy<Value = String> {
    let (in_root, long_names) = (root.to_string(), root.to_string());
    prop_oneof![
        Just(format!("file://{root}/clip.mp4")),
        "[a-z]{1,8}".prop_map(move |name| format!("file://{in_root}/out/{name}.mp4")),
        Just(format!("file://{root}/out/result.jsonl")),
        Just("file:///etc/passwd".to_string()),
        Just(format!("file://{root}/../escape.mp4")),
        Just("http://169.254.169.254/latest/meta-data".to_string()),
        Just("unix:///var/run/docker.sock".to_string()),
        (1usize..300).prop_map(move |n| format!("file://{long_names}/{}.mp4", "n".repeat(n))),
        text(),
    ]
}

fn selection() -> impl Strategy<Value = Option<FrameSelection>> {
    let rule = prop_oneof![
        any::<u64>().prop_map(Rule::Every),
        number().prop_map(Rule::Fps),
        proptest::collection::vec(number(), 0..50)
            .prop_map(|seconds| Rule::At(FrameTimes { seconds })),
        (count(), any::<u64>(), number(), number()).prop_map(|(count, seed, start, end)| {
            Rule::Random(RandomFrames {
                count,
                seed,
                window_start: start,
                window_end: end,
            })
        }),
    ];
    proptest::option::of(rule.prop_map(|rule| FrameSelection { rule: Some(rule) }))
}

fn labels() -> impl Strategy<Value = HashMap<String, String>> {
    prop_oneof![
        Just(HashMap::new()),
        proptest::collection::hash_map("[a-z]{1,8}", "[a-z]{0,8}", 0..8),
        proptest::collection::hash_map(text(), text(), 0..4),
        (1usize..120_000).prop_map(|n| (0..n).map(|i| (format!("k{i}"), "v".into())).collect()),
    ]
}

fn model(root: &str) -> impl Strategy<Value = String> {
    prop_oneof![
        Just("lanczos".to_string()),
        Just(format!("{root}/model.pt")),
        Just("/elsewhere/x.pt".to_string()),
        text(),
    ]
}

fn encoder() -> impl Strategy<Value = EncoderSettings> {
    (
        count(),
        prop_oneof![Just("fast".to_string()), text()],
        any::<bool>(),
        prop_oneof![Just(String::new()), Just("h264".to_string()), text()],
    )
        .prop_map(|(crf, preset, lossless, encoder)| EncoderSettings {
            crf,
            preset,
            lossless,
            encoder,
        })
}

/// Every field of a job spec, random and extreme.
fn spec(root: &str) -> impl Strategy<Value = JobSpec> {
    let places = (
        uri(root),
        uri(root),
        proptest::collection::vec((uri(root), uri(root)), 0..3),
        any::<bool>(),
        prop_oneof![Just(0i32), Just(1), Just(3), any::<i32>()],
        prop_oneof![
            Just(String::new()),
            Just("http://127.0.0.1:9/hook".to_string()),
            text()
        ],
    );
    let processing = (model(root), number(), any::<bool>(), encoder(), count());
    let planning = (
        prop_oneof![Just(String::new()), Just("auto".to_string()), text()],
        labels(),
        prop_oneof![Just(0i32), Just(1), Just(2), any::<i32>()],
        count(),
        (number(), number()),
        selection(),
    );
    (places, processing, planning).prop_map(
        |(
            (input, output, inputs, skip, priority, notify_url),
            (model, scale, deinterlace, encoder, chunks),
            (profile, labels, task, top_k, (deadline, max_cost), frames),
        )| {
            let single = inputs.is_empty();
            JobSpec {
                input_uri: if single { input } else { String::new() },
                output_uri: if single { output } else { String::new() },
                inputs: inputs
                    .into_iter()
                    .map(|(input_uri, output_uri)| JobInput {
                        input_uri,
                        output_uri,
                    })
                    .collect(),
                processor: Some(ProcessorSpec {
                    model,
                    scale,
                    deinterlace,
                }),
                encoder: Some(encoder),
                chunks,
                profile,
                labels,
                task,
                top_k,
                deadline_seconds: deadline,
                max_cost_usd: max_cost,
                frames,
                skip_unreadable_inputs: skip,
                priority,
                notify_url,
            }
        },
    )
}

/// Every field of a worker's registration, random and extreme.
fn registration() -> impl Strategy<Value = RegisterWorkerRequest> {
    let who = (
        prop_oneof![
            Just("http://127.0.0.1:9".to_string()),
            Just("http://169.254.169.254:80".to_string()),
            Just("unix:///var/run/x.sock".to_string()),
            text(),
        ],
        text(),
        prop_oneof![Just("cpu".to_string()), Just("L4".to_string()), text()],
        prop_oneof![Just("cpu".to_string()), Just("cuda:0".to_string()), text()],
    );
    let size = (count(), count(), count(), number(), any::<bool>());
    let holds = (
        prop_oneof![
            proptest::collection::vec(text(), 0..4),
            (1usize..100_000).prop_map(|n| vec!["m".to_string(); n]),
        ],
        proptest::collection::vec(prop_oneof![Just("libx264".to_string()), text()], 0..4),
        proptest::collection::vec(prop_oneof![Just("software".to_string()), text()], 0..3),
    );
    (who, size, holds).prop_map(
        |(
            (address, name, gpu_type, device),
            (slots, gpus_per_slot, gpus, cold_start_seconds, rejoining),
            (models, encoders, decoders),
        )| RegisterWorkerRequest {
            address,
            name,
            gpu_type,
            slots,
            gpus_per_slot,
            device,
            cold_start_seconds,
            models,
            rejoining,
            gpus,
            encoders,
            decoders,
        },
    )
}

/// The orchestrator under test, on a runtime of its own (so a request that wedges it
/// fails the client's deadline instead of stopping the test), and clients of it.
struct Under {
    users: OrchestratorClient<Channel>,
    fleet: FleetClient<Channel>,
    runtime: tokio::runtime::Runtime,
    server: Option<tokio::runtime::Runtime>,
    accepted: AtomicUsize,
}

impl Drop for Under {
    fn drop(&mut self) {
        // Not waiting for the server's threads: a wedged one would never return.
        if let Some(server) = self.server.take() {
            server.shutdown_background();
        }
    }
}

impl Under {
    fn start(root: &Path) -> (Self, CancellationToken) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("server runtime");
        let mut config = Config::default();
        config.storage.local_roots = vec![root.display().to_string()];
        config.orchestrator.store_path = String::new();
        config.limits.max_queued_jobs = 10_000;
        let shutdown = CancellationToken::new();
        let address = server.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let address = listener.local_addr().expect("address");
            let orchestrator = Orchestrator::open(config, shutdown.clone())
                .await
                .expect("opens");
            tokio::spawn(serve_on(listener, orchestrator, shutdown.clone()));
            address
        });
        let (users, fleet) = runtime.block_on(async {
            let channel = Channel::from_shared(format!("http://{address}"))
                .expect("url")
                .connect()
                .await
                .expect("connects");
            (
                OrchestratorClient::new(channel.clone()),
                FleetClient::new(channel),
            )
        });
        let under = Self {
            users,
            fleet,
            runtime,
            server: Some(server),
            accepted: AtomicUsize::new(0),
        };
        (under, shutdown)
    }

    /// Runs one request under the answer deadline; a hang fails the case.
    fn answer<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = T>,
    ) -> Result<T, TestCaseError> {
        self.runtime
            .block_on(async { tokio::time::timeout(ANSWER_DEADLINE, request).await })
            .map_err(|_| {
                TestCaseError::fail(format!("{what} went unanswered for {ANSWER_DEADLINE:?}"))
            })
    }

    fn submit(&self, spec: JobSpec, key: String) -> Result<(), TestCaseError> {
        let mut users = self.users.clone();
        let request = SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: key,
        };
        let reply = self.answer("SubmitJob", async move { users.submit_job(request).await })?;
        if let Ok(reply) = reply {
            let reply = reply.into_inner();
            if reply.created {
                self.accepted.fetch_add(1, Ordering::Relaxed);
            }
            self.cancel_and_see_it_end(&reply.job_id)?;
        }
        Ok(())
    }

    /// Cancels an accepted job and waits for it to reach a terminal state.
    fn cancel_and_see_it_end(&self, job_id: &str) -> Result<(), TestCaseError> {
        let mut users = self.users.clone();
        let id = job_id.to_string();
        let ended = self.answer("CancelJob", async move {
            let asked = Instant::now();
            let _ = users
                .cancel_job(CancelJobRequest { job_id: id.clone() })
                .await;
            while asked.elapsed() < CANCEL_DEADLINE {
                let job = users.get_job(GetJobRequest { job_id: id.clone() }).await;
                if job.is_ok_and(|job| job.into_inner().state().is_terminal()) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        })?;
        prop_assert!(
            ended,
            "job {job_id} still runs {CANCEL_DEADLINE:?} after its cancel"
        );
        Ok(())
    }

    fn plan(&self, spec: JobSpec, workers: u32, gpu_type: String) -> Result<(), TestCaseError> {
        let mut users = self.users.clone();
        let request = PlanJobRequest {
            spec: Some(spec),
            workers,
            gpu_type,
        };
        let _ = self.answer("PlanJob", async move { users.plan_job(request).await })?;
        Ok(())
    }

    fn register(&self, request: RegisterWorkerRequest) -> Result<(), TestCaseError> {
        let mut fleet = self.fleet.clone();
        let _ = self.answer("RegisterWorker", async move {
            fleet.register_worker(request).await
        })?;
        Ok(())
    }

    /// Every page of `ListJobs`, each answered; the jobs listed.
    fn list_every_page(&self) -> usize {
        let mut users = self.users.clone();
        self.runtime.block_on(async move {
            let (mut listed, mut page_token) = (0, String::new());
            loop {
                let page = users
                    .list_jobs(ListJobsRequest {
                        page_token,
                        ..ListJobsRequest::default()
                    })
                    .await
                    .expect("ListJobs answers after hostile requests")
                    .into_inner();
                listed += page.jobs.len();
                if page.next_page_token.is_empty() {
                    return listed;
                }
                page_token = page.next_page_token;
            }
        })
    }
}

fn within_memory() -> Result<(), TestCaseError> {
    let resident = resident_bytes();
    prop_assert!(
        resident < MEMORY_BOUND,
        "resident memory {resident} bytes, over {MEMORY_BOUND}"
    );
    Ok(())
}

fn runner_config() -> RunnerConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(150);
    RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    }
}

/// A job on the clip that selects frames at `rate` per second (the memory bomb when the
/// walk followed the rate).
fn rate_job(root: &str, rate: f64) -> JobSpec {
    JobSpec {
        input_uri: format!("file://{root}/clip.mp4"),
        output_uri: format!("file://{root}/out/rate.jsonl"),
        processor: Some(ProcessorSpec {
            model: format!("{root}/model.pt"),
            ..ProcessorSpec::default()
        }),
        task: 2,
        frames: Some(FrameSelection {
            rule: Some(Rule::Fps(rate)),
        }),
        ..JobSpec::default()
    }
}

#[test]
fn hostile_requests_are_answered_bounded_and_end_when_cancelled() {
    let panics = Arc::new(AtomicUsize::new(0));
    let seen = panics.clone();
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::Relaxed);
        previous(info);
    }));
    let root = tempfile::tempdir().expect("root");
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join(CLIP);
    std::fs::copy(&clip, root.path().join("clip.mp4")).expect("the probe corpus holds the clip");
    let root_text = root.path().display().to_string();
    let (under, shutdown) = Under::start(root.path());

    TestRunner::new(runner_config())
        .run(&(spec(&root_text), text()), |(spec, key)| {
            under.submit(spec, key)?;
            within_memory()
        })
        .expect("SubmitJob");
    TestRunner::new(runner_config())
        .run(
            &(spec(&root_text), count(), text()),
            |(spec, workers, gpu_type)| {
                under.plan(spec, workers, gpu_type)?;
                within_memory()
            },
        )
        .expect("PlanJob");
    TestRunner::new(runner_config())
        .run(&registration(), |request| {
            under.register(request)?;
            within_memory()
        })
        .expect("RegisterWorker");

    // The known bombs, every run: a rate written with absurd numbers, on the clip.
    for rate in [1e12, 1e300, f64::MAX] {
        let job = rate_job(&root_text, rate);
        under
            .plan(job.clone(), 0, String::new())
            .expect("PlanJob answers");
        under
            .submit(job, String::new())
            .expect("the job ends on its cancel");
        within_memory().expect("memory");
    }
    let listed = under.list_every_page();
    assert_eq!(
        listed,
        under.accepted.load(Ordering::Relaxed),
        "every accepted job is listed"
    );
    within_memory().expect("memory after the run");
    shutdown.cancel();
    assert_eq!(
        panics.load(Ordering::Relaxed),
        0,
        "a request made the orchestrator panic"
    );
}
