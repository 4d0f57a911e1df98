//! Autoscaling end to end: the test plays KEDA against the orchestrator's external scaler,
//! through the real protocol (`StreamIsActive` for activation, `GetMetricSpec` and
//! `GetMetrics` for the count, KEDA's and the HPA's rules for the rest), and starts and
//! stops real worker processes to match while 20 jobs of mixed length arrive over a
//! minute. The fleet goes 0 -> N -> 0, every job succeeds frame-exact, a chunk runs twice
//! only as a recorded retry, every worker removed drains and exits cleanly, and
//! `framefleet workers` shows the fleet with each worker's cold start.

use framefleet_testkit as support;

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use framefleet_common::proto::externalscaler::external_scaler_client::ExternalScalerClient;
use framefleet_common::proto::externalscaler::{GetMetricsRequest, ScaledObjectRef};
use framefleet_common::proto::JobState;
use framefleet_common::storage::ObjectUri;
use support::*;

/// The `ScaledObject` the test plays: at most this many workers.
const MAX_REPLICAS: usize = 3;
/// KEDA's `pollingInterval`.
const POLLING: Duration = Duration::from_millis(500);
/// KEDA's `cooldownPeriod`: inactive this long before scaling to zero.
const COOLDOWN: Duration = Duration::from_secs(4);
/// The HPA's scale-down stabilization window: the highest recommendation within it wins.
const STABILIZATION: Duration = Duration::from_secs(2);

fn scaled_object() -> ScaledObjectRef {
    scaled_pool(&[("gpuType", "cpu"), ("slotsPerWorker", "1")])
}

/// Two pools of L4 workers watched beside the one the test scales, with no worker of their
/// own: one that takes any job (the chunks waiting for a slot count for it), and one that
/// only encodes with NVENC (the jobs, on libx264 once their runs chose, must not count).
fn l4_pools() -> [ScaledObjectRef; 2] {
    [
        scaled_pool(&[("gpuType", "L4"), ("slotsPerWorker", "1")]),
        scaled_pool(&[
            ("gpuType", "L4"),
            ("slotsPerWorker", "1"),
            ("encoders", "h264_nvenc"),
        ]),
    ]
}

fn scaled_pool(metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: "framefleet-workers".into(),
        namespace: "video".into(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// What the KEDA stand-in saw and did.
#[derive(Debug, Default)]
struct ScalingLog {
    /// Worker counts after each change, starting from 0.
    replicas: Vec<usize>,
    /// `StreamIsActive` values as pushed.
    pushed: Vec<bool>,
    /// Workers stopped by a scale-in, and whether each exited cleanly.
    drained: Vec<bool>,
    /// `framefleet workers --json` while the fleet was at its largest.
    listing: Option<serde_json::Value>,
    /// The metrics of the two L4 pools (any job, NVENC only), at each poll while active.
    l4_metrics: Vec<(f64, f64)>,
}

/// Plays KEDA until `done` turns true and the fleet is back at zero; `ready` fires once
/// the activity stream is open and has said where things stand.
async fn play_keda(
    mut cluster: Cluster,
    ready: tokio::sync::oneshot::Sender<()>,
    done: watch::Receiver<bool>,
) -> ScalingLog {
    let mut scaler = ExternalScalerClient::connect(cluster.url.clone())
        .await
        .expect("the scaler is served without a token");
    let spec = scaler
        .get_metric_spec(scaled_object())
        .await
        .expect("metric spec")
        .into_inner();
    let target = spec.metric_specs[0].target_size_float;
    assert_eq!(target, 1.0, "one slot per worker");
    let mut pushes = scaler
        .stream_is_active(scaled_object())
        .await
        .expect("stream")
        .into_inner();
    let first = pushes
        .message()
        .await
        .expect("stream")
        .expect("a first answer")
        .result;
    let _ = ready.send(());
    let (active_tx, active) = watch::channel(first);
    let (pushed_tx, mut pushed_rx) = tokio::sync::mpsc::unbounded_channel();
    pushed_tx.send(first).expect("open");
    tokio::spawn(async move {
        while let Ok(Some(reply)) = pushes.message().await {
            let _ = pushed_tx.send(reply.result);
            let _ = active_tx.send(reply.result);
        }
    });
    let mut log = ScalingLog {
        replicas: vec![0],
        ..ScalingLog::default()
    };
    let mut running: Vec<usize> = Vec::new();
    let mut stopping: Vec<Process> = Vec::new();
    let mut recommendations: VecDeque<(Instant, usize)> = VecDeque::new();
    let mut last_active = Instant::now();
    let mut next_name = 0;
    loop {
        // KEDA: active -> the HPA's ceil(metric / target) within 1..=max; inactive -> 1
        // through the cooldown, then 0. The HPA scales up at once and down to the highest
        // recommendation within its stabilization window.
        let recommendation = if *active.borrow() {
            last_active = Instant::now();
            let metric = slots_wanted(&mut scaler, scaled_object()).await;
            let [any, nvenc] = l4_pools();
            let any = slots_wanted(&mut scaler, any).await;
            log.l4_metrics
                .push((any, slots_wanted(&mut scaler, nvenc).await));
            ((metric / target).ceil() as usize).clamp(1, MAX_REPLICAS)
        } else if last_active.elapsed() < COOLDOWN && !running.is_empty() {
            1
        } else {
            0
        };
        recommendations.push_back((Instant::now(), recommendation));
        while recommendations
            .front()
            .is_some_and(|(at, _)| at.elapsed() > STABILIZATION)
        {
            recommendations.pop_front();
        }
        let desired = match recommendation {
            0 => 0,
            _ => recommendations.iter().map(|(_, n)| *n).max().unwrap_or(0),
        };
        while running.len() < desired {
            running.push(cluster.add_worker(&format!("scaled-{next_name}")));
            next_name += 1;
        }
        while running.len() > desired {
            // Like a ReplicaSet, remove the newest pod; it drains on SIGTERM.
            let index = running.pop().expect("a worker");
            let process = cluster.workers[index].take().expect("running");
            process.signal(libc::SIGTERM);
            stopping.push(process);
        }
        if log.replicas.last() != Some(&running.len()) {
            log.replicas.push(running.len());
        }
        reap(&mut stopping, &mut log.drained);
        if running.len() >= 2 && log.listing.is_none() {
            log.listing = fleet_listing(&cluster.url, running.len());
        }
        while let Ok(value) = pushed_rx.try_recv() {
            log.pushed.push(value);
        }
        if *done.borrow() && running.is_empty() && stopping.is_empty() {
            break;
        }
        tokio::time::sleep(POLLING).await;
    }
    let after = workers_json(&cluster.url);
    assert_eq!(
        after["workers"].as_array().map(Vec::len),
        Some(0),
        "every worker left the fleet: {after}"
    );
    log
}

/// The scaler's metric for `pool`.
async fn slots_wanted(
    scaler: &mut ExternalScalerClient<tonic::transport::Channel>,
    pool: ScaledObjectRef,
) -> f64 {
    scaler
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(pool),
            metric_name: String::new(),
        })
        .await
        .expect("metrics")
        .into_inner()
        .metric_values[0]
        .metric_value_float
}

/// Collects the stopped workers that have exited, recording whether each exited cleanly.
fn reap(stopping: &mut Vec<Process>, drained: &mut Vec<bool>) {
    stopping.retain_mut(|process| match process.child.try_wait() {
        Ok(Some(status)) => {
            drained.push(status.success());
            false
        }
        _ => true,
    });
}

/// `framefleet workers --json`, once all `count` workers have registered.
fn fleet_listing(url: &str, count: usize) -> Option<serde_json::Value> {
    let listing = workers_json(url);
    let registered = listing["workers"].as_array().map_or(0, Vec::len);
    (registered == count).then_some(listing)
}

fn workers_json(url: &str) -> serde_json::Value {
    let output = framefleet()
        .args(["workers", "--orchestrator", url, "--json"])
        .output()
        .expect("framefleet workers runs");
    assert!(
        output.status.success(),
        "framefleet workers failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("framefleet workers --json prints JSON")
}

/// The clips: (seconds, chunks) of mixed length, each uploaded once.
const CLIPS: [(u32, u32); 4] = [(1, 1), (2, 2), (3, 2), (4, 3)];

async fn upload_clips(dir: &Path, prefix: &str) -> Vec<(std::path::PathBuf, ObjectUri)> {
    let mut clips = Vec::new();
    for (seconds, _) in CLIPS {
        let local = dir.join(format!("in-{seconds}.mp4"));
        clip_with_audio(&local, "160x90", 30, seconds, 15);
        let uri = s3(&format!("{prefix}/in-{seconds}.mp4"));
        upload(&local, &uri).await;
        clips.push((local, uri));
    }
    clips
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_scales_from_zero_with_the_queue_and_back_without_losing_a_chunk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("autoscale");
    let clips = upload_clips(dir.path(), &prefix).await;
    let cluster = Cluster::start(0, &[]);
    let mut client = cluster.client().await;
    let url = cluster.url.clone();
    let (done_tx, done) = watch::channel(false);
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let keda = tokio::spawn(play_keda(cluster, ready_tx, done));
    ready.await.expect("the KEDA stand-in is watching");

    let mut jobs = Vec::new();
    for n in 0..20 {
        let (local, input) = &clips[n % CLIPS.len()];
        let chunks = CLIPS[n % CLIPS.len()].1;
        let output = s3(&format!("{prefix}/out-{n}.mp4"));
        let id = submit(&mut client, lossless_spec(input, &output, 2.0, chunks)).await;
        let mut watcher = client.clone();
        jobs.push((
            local.clone(),
            output,
            tokio::spawn(async move {
                let seen = watch(&mut watcher, &id, Duration::from_secs(240)).await;
                (id, seen.last().map(state))
            }),
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let mut retries = 0;
    for (n, (local, output, watcher)) in jobs.into_iter().enumerate() {
        let (id, end) = watcher.await.expect("watcher");
        assert_eq!(end, Some(JobState::Succeeded), "job {n} ({id})");
        let report = report(&mut client, &id).await;
        let chunks = report["chunks"].as_array().expect("chunks");
        assert_eq!(chunks.len() as u32, CLIPS[n % CLIPS.len()].1, "job {n}");
        retries += chunks
            .iter()
            .map(|c| c["attempts"].as_u64().expect("attempts") - 1)
            .sum::<u64>();
        let out = dir.path().join(format!("out-{n}.mp4"));
        download(&output, &out).await;
        assert_exact(&local, &out, (320, 180));
    }
    done_tx.send(true).expect("KEDA stand-in listens");
    let log = keda.await.expect("KEDA stand-in");
    eprintln!("autoscale: {log:?}, retries {retries}, orchestrator {url}");

    let most = log.replicas.iter().copied().max().unwrap_or(0);
    assert!(
        most >= 2,
        "the fleet grew with the queue: {:?}",
        log.replicas
    );
    assert_eq!(log.replicas.first(), Some(&0));
    assert_eq!(log.replicas.last(), Some(&0), "and went back to zero");
    assert_eq!(
        log.pushed.first(),
        Some(&false),
        "StreamIsActive says at once that nothing waits"
    );
    assert!(
        log.pushed.windows(2).any(|w| w == [false, true]),
        "StreamIsActive pushed the first arrival: {:?}",
        log.pushed
    );
    assert_eq!(log.pushed.last(), Some(&false), "and the drain");
    assert!(!log.drained.is_empty(), "workers were scaled in");
    assert!(
        log.drained.iter().all(|clean| *clean),
        "every worker removed drained and exited cleanly: {:?}",
        log.drained
    );
    // A chunk may be granted a worker in the instant it is told to stop: the chunk is
    // then retried, and the report records it; nothing else runs a chunk twice.
    assert!(
        retries <= log.drained.len() as u64,
        "{retries} retries for {} scale-ins",
        log.drained.len()
    );
    // Every job asked for H.264 and ran on libx264: while chunks waited for a slot (and so
    // counted for any L4 pool), none counted for the pool that offers only h264_nvenc.
    assert!(
        log.l4_metrics
            .iter()
            .any(|&(any, nvenc)| any >= 1.0 && nvenc == 0.0),
        "{:?}",
        log.l4_metrics
    );
    let listing = log
        .listing
        .expect("a listing while the fleet was at its largest");
    let workers = listing["workers"].as_array().expect("workers");
    assert!(workers.len() >= 2, "{listing}");
    for worker in workers {
        assert_eq!(worker["device"], "cpu", "{worker}");
        assert_eq!(worker["gpu_type"], "cpu", "{worker}");
        assert!(worker["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("scaled-")));
        let cold_start = worker["cold_start_seconds"].as_f64().expect("cold start");
        assert!(cold_start > 0.0, "{worker}");
    }
}
