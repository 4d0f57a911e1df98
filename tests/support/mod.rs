//! Test harness for the end-to-end tests: a real Garage S3 server on loopback, real
//! framefleet processes talking gRPC, media made with FFmpeg's lavfi sources, and ffprobe
//! to read results back.
//!
//! Garage is found through `GARAGE_BIN`, then
//! `~/.cache/framefleet/garage-2.5.0-metrics/bin/garage` (where `.ci/run` builds it, with
//! the `metrics` feature that counts the requests it serves), then `PATH`. One Garage is started per test binary, from a
//! thread that lives as long as the process and with `PR_SET_PDEATHSIG`, so it dies with
//! the tests. Every child process is killed when its handle drops.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use framefleet_common::auth::{self, AttachToken};
use framefleet_common::config::{StorageConfig, TlsConfig};
use framefleet_common::proto::orchestrator_client::OrchestratorClient;
use framefleet_common::proto::{
    EncoderSettings, GetCostReportRequest, Job, JobSpec, JobState, ProcessorSpec, SubmitJobRequest,
    WatchJobRequest,
};
use framefleet_common::storage::{ObjectUri, Storage};

/// A client of the `Orchestrator` service as the tests use it.
pub type Client = OrchestratorClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, AttachToken>,
>;

/// The test bucket Garage creates at start.
pub const BUCKET: &str = "framefleet-test";
const REGION: &str = "garage";
const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
const SECRET_KEY: &str = "7a1f0c3e5b9d2846a1f0c3e5b9d2846a1f0c3e5b9d2846a1f0c3e5b9d2846a1f";

/// A running Garage.
pub struct Garage {
    /// S3 endpoint, e.g. `http://127.0.0.1:39010`.
    pub endpoint: String,
    admin_port: u16,
    _directory: PathBuf,
}

impl Garage {
    /// S3 requests Garage has served since it started, by its own count (the
    /// `api_s3_request_counter` series of its admin `/metrics`).
    pub fn requests_served(&self) -> u64 {
        let (status, body) =
            http_get(self.admin_port, "/metrics").expect("Garage's admin API answers on /metrics");
        assert_eq!(
            status, 200,
            "Garage's /metrics: {body} (build Garage with the `metrics` feature: \
             scripts/setup.sh --garage)"
        );
        body.lines()
            .filter(|line| line.starts_with("api_s3_request_counter{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

/// The per-binary Garage, started on first use.
pub fn garage() -> &'static Garage {
    static GARAGE: OnceLock<Garage> = OnceLock::new();
    GARAGE.get_or_init(start_garage)
}

fn garage_binary() -> PathBuf {
    if let Ok(path) = std::env::var("GARAGE_BIN") {
        return PathBuf::from(path);
    }
    let cached = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/framefleet/garage-2.5.0-metrics/bin/garage");
    if cached.is_file() {
        return cached;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("garage"))
                .find(|p| p.is_file())
        })
        .expect(
            "the Garage S3 server is needed for these tests: run .ci/run once (it builds \
             Garage into ~/.cache/framefleet) or set GARAGE_BIN",
        )
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Attempts at starting Garage, each on fresh ports: a port picked free can be taken by
/// another process before Garage binds it.
const GARAGE_ATTEMPTS: usize = 3;

fn start_garage() -> Garage {
    let mut failures = Vec::new();
    for _ in 0..GARAGE_ATTEMPTS {
        match try_start_garage() {
            Ok(garage) => return garage,
            Err(failure) => failures.push(failure),
        }
    }
    panic!("Garage would not start: {failures:?}");
}

fn try_start_garage() -> Result<Garage, String> {
    let directory = tempfile::Builder::new()
        .prefix("framefleet-garage-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let (s3, rpc, admin) = (free_port(), free_port(), free_port());
    let config = directory.join("garage.toml");
    std::fs::write(
        &config,
        format!(
            "metadata_dir = \"{dir}/meta\"\ndata_dir = \"{dir}/data\"\ndb_engine = \"lmdb\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\n[s3_api]\ns3_region = \"{REGION}\"\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n\n\
             [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
            dir = directory.display()
        ),
    )
    .expect("write garage.toml");
    let binary = garage_binary();
    let log_path = directory.join("garage.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let (exited_tx, exited_rx) = std::sync::mpsc::channel();
    // The thread that spawns Garage waits on it for as long as it runs, so
    // PR_SET_PDEATHSIG (tied to that thread) fires only when the test process exits, and
    // an early exit (a port taken after all) is reported at once.
    std::thread::spawn(move || {
        let mut command = Command::new(binary);
        command
            .args(["-c"])
            .arg(&config)
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_RPC_SECRET", "3f".repeat(32))
            .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut command);
        let outcome = match command.spawn() {
            Ok(mut child) => format!("exited: {:?}", child.wait()),
            Err(e) => format!("did not start: {e}"),
        };
        let _ = exited_tx.send(outcome);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(admin, "/health").map(|(status, _)| status) != Some(200) {
        if let Ok(outcome) = exited_rx.try_recv() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!("Garage {outcome}; its log: {log}"));
        }
        if Instant::now() > deadline {
            return Err("Garage did not become healthy in 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Garage {
        endpoint: format!("http://127.0.0.1:{s3}"),
        admin_port: admin,
        _directory: directory,
    })
}

fn die_with_parent(command: &mut Command) {
    // SAFETY: runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Status and body of a plain HTTP GET on loopback.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Some((status, body.to_string()))
}

/// Storage settings for framefleet processes and for the tests' own client.
pub fn storage_config() -> StorageConfig {
    StorageConfig {
        s3_endpoint: garage().endpoint.clone(),
        s3_region: REGION.into(),
        s3_access_key_id: ACCESS_KEY.into(),
        s3_secret_access_key: SECRET_KEY.into(),
        ..StorageConfig::default()
    }
}

/// Environment that points a framefleet process at the test Garage.
pub fn storage_env() -> Vec<(String, String)> {
    let config = storage_config();
    vec![
        ("FRAMEFLEET_STORAGE__S3_ENDPOINT".into(), config.s3_endpoint),
        ("FRAMEFLEET_STORAGE__S3_REGION".into(), config.s3_region),
        (
            "FRAMEFLEET_STORAGE__S3_ACCESS_KEY_ID".into(),
            config.s3_access_key_id,
        ),
        (
            "FRAMEFLEET_STORAGE__S3_SECRET_ACCESS_KEY".into(),
            config.s3_secret_access_key,
        ),
    ]
}

/// A storage client on the test Garage.
pub fn storage() -> Storage {
    Storage::new(&storage_config())
}

/// `s3://framefleet-test/<key>`.
pub fn s3(key: &str) -> ObjectUri {
    format!("s3://{BUCKET}/{key}").parse().expect("valid key")
}

/// A fresh key prefix for one test.
pub fn unique_prefix(name: &str) -> String {
    format!("{name}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// Uploads a local file.
pub async fn upload(path: &Path, uri: &ObjectUri) {
    storage().upload_file(path, uri).await.expect("upload");
}

/// Downloads an object to a local file.
pub async fn download(uri: &ObjectUri, path: &Path) {
    let storage = storage();
    let size = storage.size(uri).await.expect("object exists");
    let bytes = storage.read_range(uri, 0, size).await.expect("download");
    std::fs::write(path, bytes).expect("write download");
}

/// Keys under a prefix.
pub async fn list(prefix: &ObjectUri) -> Vec<String> {
    storage()
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|uri| uri.to_string())
        .collect()
}

/// A child process killed on drop.
pub struct Process {
    /// The child.
    pub child: Child,
}

impl Process {
    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child with a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `framefleet` binary under test.
pub fn framefleet() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_framefleet"));
    command.envs(storage_env()).env("RUST_LOG", "warn");
    command
}

/// `framefleet local`, quiet, ready for its arguments.
pub fn framefleet_local() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_framefleet"));
    command.arg("local").env("RUST_LOG", "warn");
    command
}

/// An orchestrator and its workers, each its own process.
pub struct Cluster {
    /// Orchestrator URL.
    pub url: String,
    /// Worker gRPC URLs, by index.
    pub worker_urls: Vec<String>,
    /// The orchestrator process.
    pub orchestrator: Process,
    /// The worker processes.
    pub workers: Vec<Option<Process>>,
    settings: Vec<(String, String)>,
    /// Holds the orchestrator's job store (and the processes' logs when captured).
    state: tempfile::TempDir,
    capture_logs: bool,
}

impl Cluster {
    /// Starts an orchestrator (with its own job store) and `workers` workers with extra
    /// `FRAMEFLEET_*` settings; their logs go to the test's output.
    pub fn start(workers: usize, settings: &[(&str, &str)]) -> Cluster {
        Self::launch(workers, settings, false)
    }

    /// Like [`start`](Self::start), with every process's log written to a file for
    /// [`logs`](Self::logs) to read.
    pub fn start_with_logs(workers: usize, settings: &[(&str, &str)]) -> Cluster {
        Self::launch(workers, settings, true)
    }

    /// Everything the processes logged so far (when started with logs).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.state.path())
            .expect("state dir")
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "log") {
                all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        all
    }

    fn launch(workers: usize, settings: &[(&str, &str)], capture_logs: bool) -> Cluster {
        garage();
        let settings: Vec<(String, String)> = settings
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let state = tempfile::tempdir().expect("state dir");
        // A port picked free can be taken before the orchestrator binds it: then it exits
        // at once, and it is started again on another port.
        let logs = capture_logs.then(|| state.path().to_path_buf());
        let (port, orchestrator) = (0..3)
            .find_map(|_| {
                let port = free_port();
                start_orchestrator(port, &settings, state.path(), logs.as_deref())
                    .map(|p| (port, p))
            })
            .expect("the orchestrator starts and listens");
        let tls = settings
            .iter()
            .any(|(k, _)| k == "FRAMEFLEET_TLS__CERT_PATH");
        let scheme = if tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut worker_urls = Vec::new();
        let mut processes = Vec::new();
        for index in 0..workers {
            let worker_port = free_port();
            worker_urls.push(format!("{scheme}://127.0.0.1:{worker_port}"));
            let log = logs
                .as_ref()
                .map(|dir| dir.join(format!("worker-{index}.log")));
            processes.push(Some(spawn_quiet(
                framefleet()
                    .args(["worker", "--orchestrator", &url, "--listen"])
                    .arg(format!("127.0.0.1:{worker_port}"))
                    .args(["--name", &format!("worker-{index}")]),
                &settings,
                log.as_deref(),
            )));
        }
        Cluster {
            url,
            worker_urls,
            orchestrator,
            workers: processes,
            settings,
            state,
            capture_logs,
        }
    }

    /// Stops the orchestrator with `signal` (SIGKILL: no chance to clean up; SIGTERM: an
    /// orderly stop), waits for it to exit and starts it again on the same address and
    /// job store.
    pub fn restart_orchestrator(&mut self, signal: i32) {
        self.orchestrator.signal(signal);
        let _ = self.orchestrator.child.wait();
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("orchestrator port");
        let deadline = Instant::now() + Duration::from_secs(30);
        self.orchestrator = loop {
            let logs = self.capture_logs.then(|| self.state.path());
            if let Some(process) = start_orchestrator(port, &self.settings, self.state.path(), logs)
            {
                break process;
            }
            assert!(
                Instant::now() < deadline,
                "the orchestrator did not start again on port {port}"
            );
            std::thread::sleep(Duration::from_millis(200));
        };
    }

    /// The value of one of the cluster's settings (empty when unset).
    pub fn setting(&self, key: &str) -> &str {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// A client, retrying while the orchestrator starts; it presents the cluster's client
    /// token and trusts its CA when those are set.
    pub async fn client(&self) -> Client {
        let tls = TlsConfig {
            ca_path: self.setting("FRAMEFLEET_TLS__CA_PATH").to_string(),
            ..TlsConfig::default()
        };
        let token = AttachToken::new(self.setting("FRAMEFLEET_AUTH__CLIENT_TOKEN"));
        let endpoint = auth::endpoint(&self.url, &tls).expect("orchestrator endpoint");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match endpoint.connect().await {
                Ok(channel) => return OrchestratorClient::with_interceptor(channel, token),
                Err(e) => {
                    assert!(Instant::now() < deadline, "orchestrator unreachable: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Spawns a framefleet process with `settings`, its stdout discarded and its log (stderr)
/// appended to `log` when given.
fn spawn_quiet(
    command: &mut Command,
    settings: &[(String, String)],
    log: Option<&Path>,
) -> Process {
    command.envs(settings.iter().cloned());
    command.stdin(Stdio::null()).stdout(Stdio::null());
    if let Some(path) = log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("log file");
        command.stderr(file);
    }
    Process {
        child: command.spawn().expect("framefleet starts"),
    }
}

/// Starts an orchestrator on `port` with its job store in `state` (and its log in `logs`
/// when given); `None` when it exits or does not listen within 30 s.
fn start_orchestrator(
    port: u16,
    settings: &[(String, String)],
    state: &Path,
    logs: Option<&Path>,
) -> Option<Process> {
    let log = logs.map(|dir| dir.join("orchestrator.log"));
    let mut process = spawn_quiet(
        framefleet()
            .args(["orchestrator", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--store")
            .arg(state.join("jobs.sqlite3")),
        settings,
        log.as_deref(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(process);
        }
        if process.child.try_wait().ok().flatten().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Makes a clip with sound: testsrc2 at `size` (`WxH`) and `rate` fps with a sine tone,
/// x264 `yuv420p` with a keyframe every `gop` frames, AAC, `seconds` long.
pub fn clip_with_audio(path: &Path, size: &str, rate: u32, seconds: u32, gop: u32) {
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate={rate}"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=330:sample_rate=44100",
        "-t",
        &seconds.to_string(),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        &gop.to_string(),
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        path.to_str().expect("utf-8 path"),
    ]);
}

/// Makes `seconds` of testsrc2 `video` (`size=WxH:rate=R`), with a sine tone when `audio`,
/// encoded and muxed as `codecs` say (codec, filter and muxer options).
pub fn encoded_clip(path: &Path, video: &str, seconds: u32, audio: bool, codecs: &[&str]) {
    let source = format!("testsrc2={video}");
    let seconds = seconds.to_string();
    let mut args = vec!["-f", "lavfi", "-i", &source];
    if audio {
        args.extend(["-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000"]);
    }
    args.extend(["-t", &seconds, "-shortest"]);
    args.extend_from_slice(codecs);
    args.push(path.to_str().expect("utf-8 path"));
    ffmpeg(&args);
}

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
    let json = client
        .get_cost_report(GetCostReportRequest {
            job_id: job_id.to_string(),
        })
        .await
        .expect("report")
        .into_inner()
        .json;
    serde_json::from_str(&json).expect("report is JSON")
}

/// Runs ffmpeg with `args` (quiet, overwrite), panicking with its stderr on failure.
pub fn ffmpeg(args: &[&str]) {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ffprobe(args: &[&str], path: &Path) -> String {
    let output = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        output.status.success(),
        "ffprobe {args:?} {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Timing facts of a file's first video stream, read by ffprobe.
#[derive(Debug)]
pub struct VideoTiming {
    /// Width and height.
    pub size: (u32, u32),
    /// Time base denominator over numerator: ticks per second.
    pub ticks_per_second: f64,
    /// Presentation times of every shown frame, in seconds, in presentation order.
    pub pts_seconds: Vec<f64>,
    /// Stream duration in seconds.
    pub duration: f64,
}

/// Reads a file's video timing.
pub fn video_timing(path: &Path) -> VideoTiming {
    let stream = ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,time_base,duration",
            "-of",
            "default=noprint_wrappers=1",
        ],
        path,
    );
    let field = |name: &str| {
        stream
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or("0")
            .to_string()
    };
    let time_base = field("time_base");
    let (num, den) = time_base.split_once('/').unwrap_or(("1", "1"));
    let packets = shown_packet_times(path, &[]);
    let presented = || packets.iter().filter_map(|&(pts, _)| pts);
    let decoded = packets.iter().filter_map(|&(_, dts)| dts).count();
    let mut pts_seconds: Vec<f64> = if presented().next().is_none() {
        // No presentation times at all (H.264 in AVI): the container's frame clock shows
        // the k-th frame at the k-th decode time.
        packets.iter().filter_map(|&(_, dts)| dts).collect()
    } else if presented().count() < decoded {
        // Some packets lack one (a DVD's program stream): FFmpeg fills them in.
        shown_packet_times(path, &["-fflags", "+genpts"])
            .into_iter()
            .filter_map(|(pts, _)| pts)
            .collect()
    } else {
        presented().collect()
    };
    pts_seconds.sort_by(f64::total_cmp);
    VideoTiming {
        size: (
            field("width").parse().unwrap_or(0),
            field("height").parse().unwrap_or(0),
        ),
        ticks_per_second: den.parse::<f64>().unwrap_or(1.0) / num.parse::<f64>().unwrap_or(1.0),
        pts_seconds,
        duration: field("duration").parse().unwrap_or(0.0),
    }
}

/// Presentation and decode times, in seconds, of every shown video packet in file order
/// (`None` where the packet has none); `options` go before the input. Packets flagged D
/// (discard) are decoded as references only, never shown: an MP4 trimmed without
/// re-encoding keeps the frames before its cut that way.
fn shown_packet_times(path: &Path, options: &[&str]) -> Vec<(Option<f64>, Option<f64>)> {
    let mut args = options.to_vec();
    args.extend([
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=pts_time,dts_time,flags",
        "-of",
        "json",
    ]);
    let packets = ffprobe(&args, path);
    let parsed: serde_json::Value = serde_json::from_str(&packets).expect("ffprobe JSON");
    let seconds = |value: &serde_json::Value| value.as_str()?.parse().ok();
    parsed["packets"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|p| !p["flags"].as_str().unwrap_or_default().contains('D'))
        .map(|p| (seconds(&p["pts_time"]), seconds(&p["dts_time"])))
        .collect()
}

/// The file whose audio packets a copy of `input`'s audio must match: the input itself, or
/// for AAC in MPEG-TS (framed as ADTS there) its audio remuxed to MP4 by ffmpeg, which
/// drops the 7-byte ADTS headers as any MP4 muxer must.
fn audio_reference(input: &Path) -> PathBuf {
    if input.extension().is_none_or(|e| e != "ts") {
        return input.to_path_buf();
    }
    let codec = ffprobe(
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ],
        input,
    );
    if !codec.lines().any(|l| l.trim() == "aac") {
        return input.to_path_buf();
    }
    let reference = input.with_extension("audio-reference.mp4");
    ffmpeg(&[
        "-copyts",
        "-i",
        input.to_str().expect("utf-8 path"),
        "-map",
        "0:a?",
        "-c",
        "copy",
        reference.to_str().expect("utf-8 path"),
    ]);
    reference
}

/// Audio packets of every audio stream as `pts seconds,size,payload MD5`. Per-packet
/// durations are left out: MP4 derives them from sample times, Matroska rounds them to
/// milliseconds, so they change with the container while the packets do not.
pub fn audio_packets(path: &Path) -> Vec<String> {
    packet_fields(path, "a", &["pts_time", "size", "data_hash"])
}

/// The cues of every subtitle stream as `pts seconds,duration seconds,size,payload MD5`
/// (a cue's duration is how long it shows). An MP4 `mov_text` track's empty samples (two
/// zero bytes) are left out: they only fill the time no cue shows, and the MP4 muxer writes
/// them itself wherever the track has a gap or ends early.
pub fn subtitle_cues(path: &Path) -> Vec<String> {
    packet_fields(
        path,
        "s",
        &["pts_time", "duration_time", "size", "data_hash"],
    )
    .into_iter()
    .filter(|cue| cue.split(',').nth(2) != Some("2"))
    .collect()
}

/// The first subtitle stream as SubRip text, as FFmpeg converts it: cue times (as stored,
/// not moved to the file's start) and text, whatever the container's subtitle codec.
pub fn subtitles_as_srt(path: &Path) -> String {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-copyts", "-i"])
        .arg(path)
        .args(["-map", "0:s:0", "-c:s", "srt", "-f", "srt", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "reading the subtitles of {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The bytes of the file's cover art (its second video stream, an attached picture).
pub fn attached_picture(path: &Path) -> Vec<u8> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:1",
            "-c",
            "copy",
            "-frames:v",
            "1",
            "-f",
            "image2",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "reading the cover of {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The `fields` of every packet of the streams `select` picks, comma-joined, one string a
/// packet in file order. (Read as JSON: ffprobe's CSV breaks the line of a packet that
/// carries side data.)
fn packet_fields(path: &Path, select: &str, fields: &[&str]) -> Vec<String> {
    let json = ffprobe(
        &[
            "-select_streams",
            select,
            "-show_data_hash",
            "md5",
            "-show_entries",
            &format!("packet={}", fields.join(",")),
            "-of",
            "json",
        ],
        path,
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("ffprobe JSON");
    parsed["packets"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|packet| {
            fields
                .iter()
                .map(|key| packet[*key].as_str().unwrap_or_default())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// Seconds in one tick of the first audio stream's time base (0 without audio).
fn audio_tick(path: &Path) -> f64 {
    let time_base = ffprobe(
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=time_base",
            "-of",
            "csv=p=0",
        ],
        path,
    );
    time_base
        .trim()
        .split_once('/')
        .and_then(|(num, den)| Some(num.parse::<f64>().ok()? / den.parse::<f64>().ok()?))
        .unwrap_or(0.0)
}

/// Peak signal-to-noise ratio of `b` against `a` (8-bit samples), in dB.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "frame sizes differ");
    let squared: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let mse = squared / a.len() as f64;
    10.0 * (255.0 * 255.0 / mse.max(1e-12)).log10()
}

/// A field of the first video stream as ffprobe names it (`color_space`, `pix_fmt`), if set.
pub fn stream_field(path: &Path, field: &str) -> Option<String> {
    ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            &format!("stream={field}"),
            "-of",
            "default=noprint_wrappers=1",
        ],
        path,
    )
    .lines()
    .find_map(|l| l.strip_prefix(&format!("{field}=")).map(str::to_string))
    .filter(|value| value != "unknown")
}

/// A tag of one stream (`v:0`, `a:1`), if it has it.
pub fn stream_tag(path: &Path, stream: &str, tag: &str) -> Option<String> {
    ffprobe(
        &[
            "-select_streams",
            stream,
            "-show_entries",
            &format!("stream_tags={tag}"),
            "-of",
            "default=noprint_wrappers=1",
        ],
        path,
    )
    .lines()
    .find_map(|l| l.strip_prefix(&format!("TAG:{tag}=")).map(str::to_string))
}

/// The file's chapters as (start time in seconds, title), in order.
pub fn chapters(path: &Path) -> Vec<(String, String)> {
    let listing = ffprobe(
        &[
            "-show_entries",
            "chapter=start_time:chapter_tags=title",
            "-of",
            "json",
        ],
        path,
    );
    let parsed: serde_json::Value = serde_json::from_str(&listing).expect("ffprobe JSON");
    parsed["chapters"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|chapter| {
            (
                chapter["start_time"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                chapter["tags"]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// The display rotation of the first video stream, if it has one.
pub fn rotation(path: &Path) -> Option<String> {
    ffprobe(
        &[
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream_side_data=rotation",
            "-of",
            "default=noprint_wrappers=1",
        ],
        path,
    )
    .lines()
    .find_map(|l| l.strip_prefix("rotation=").map(str::to_string))
}

/// MD5 of every decoded video frame, in order (all of them: none dropped or repeated to
/// mend timestamps).
pub fn frame_hashes(path: &Path) -> Vec<String> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-map",
            "0:v:0",
            "-fps_mode",
            "passthrough",
            "-f",
            "framemd5",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "framemd5 of {} failed",
        path.display()
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|h| h.trim().to_string()))
        .collect()
}

/// Checks `output` against `input`: same frame count, every frame at the input's time (to
/// one tick of the output's time base), the same audio packets (payload and size exact,
/// time to the nearest tick of the output's audio time base: Matroska keeps milliseconds),
/// and the scaled size.
pub fn assert_exact(input: &Path, output: &Path, size: (u32, u32)) {
    assert_exact_moved(input, output, size, 0.0);
}

/// [`assert_exact`] for an output whose every stream was moved `moved` seconds later than
/// the input's (a job moves an input that starts before zero).
pub fn assert_exact_moved(input: &Path, output: &Path, size: (u32, u32), moved: f64) {
    let source = video_timing(input);
    let result = video_timing(output);
    assert_eq!(
        result.pts_seconds.len(),
        source.pts_seconds.len(),
        "{}: frame count differs from {}",
        output.display(),
        input.display()
    );
    let tick = 1.0 / result.ticks_per_second;
    for (i, (a, b)) in source
        .pts_seconds
        .iter()
        .zip(&result.pts_seconds)
        .enumerate()
    {
        assert!(
            (a + moved - b).abs() <= tick + 1e-9,
            "{}: frame {i} at {b} s, input at {a} s, moved by {moved} s",
            output.display()
        );
    }
    assert_eq!(result.size, size, "{}: output size", output.display());
    let (copied, original) = (
        audio_packets(output),
        audio_packets(&audio_reference(input)),
    );
    assert_eq!(
        copied.len(),
        original.len(),
        "{}: audio packet count differs from the input's",
        output.display()
    );
    let half_tick = audio_tick(output) / 2.0 + 1e-9;
    let same = |a: &str, b: &str| {
        let (a_pts, a_rest) = a.split_once(',').unwrap_or((a, ""));
        let (b_pts, b_rest) = b.split_once(',').unwrap_or((b, ""));
        let close = match (a_pts.parse::<f64>(), b_pts.parse::<f64>()) {
            (Ok(x), Ok(y)) => (x - y - moved).abs() <= half_tick,
            _ => a_pts == b_pts,
        };
        close && a_rest == b_rest
    };
    if let Some((i, (a, b))) = copied
        .iter()
        .zip(&original)
        .enumerate()
        .find(|(_, (a, b))| !same(a, b))
    {
        panic!(
            "{}: audio packet {i} is {a}, the input's is {b}",
            output.display()
        );
    }
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

/// A loopback TCP proxy in front of Garage that breaks ranged GETs: up to `cuts` responses
/// with status 206 and a body longer than `after_bytes` are cut after `after_bytes` bytes of
/// body, as a network reset mid-transfer would. Only the first response of each connection
/// is looked at, so how many cuts happen depends on connection reuse.
pub struct CuttingProxy {
    /// S3 endpoint to give clients, e.g. `http://127.0.0.1:40123`.
    pub endpoint: String,
    cuts_left: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    /// Cuts that may still happen.
    pub fn cuts_left(&self) -> usize {
        self.cuts_left.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Starts a [`CuttingProxy`] on the current runtime.
pub async fn cutting_proxy(cuts: usize, after_bytes: usize) -> CuttingProxy {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let (listener, endpoint) = proxy_listener().await;
    let cuts_left = Arc::new(AtomicUsize::new(cuts));
    let budget = cuts_left.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let budget = budget.clone();
            tokio::spawn(relay(client, move |partial, length| {
                let cut = partial
                    && length > after_bytes
                    && budget
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                            left.checked_sub(1)
                        })
                        .is_ok();
                cut.then_some(after_bytes)
            }));
        }
    });
    CuttingProxy {
        endpoint,
        cuts_left,
    }
}

/// A loopback proxy in front of Garage that fails a share of requests: of every
/// `every` connections one has its request answered `503 SlowDown` without reaching
/// Garage, or closed without an answer (the two alternate). The rest are relayed.
pub struct FaultyProxy {
    /// S3 endpoint to give clients.
    pub endpoint: String,
    faults: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl FaultyProxy {
    /// Requests failed so far.
    pub fn faults(&self) -> usize {
        self.faults.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Starts a [`FaultyProxy`] on the current runtime.
pub async fn faulty_proxy(every: usize) -> FaultyProxy {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (listener, endpoint) = proxy_listener().await;
    let faults = Arc::new(AtomicUsize::new(0));
    let counted = faults.clone();
    tokio::spawn(async move {
        let mut connections = 0usize;
        while let Ok((mut client, _)) = listener.accept().await {
            connections += 1;
            if connections % every != 0 {
                tokio::spawn(relay(client, |_, _| None));
                continue;
            }
            let fault = counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                // Take the request head first, as a failing server would.
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                if fault % 2 == 0 {
                    let body =
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>\
                                <Message>injected by the test proxy</Message></Error>";
                    let response = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/xml\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = client.write_all(response.as_bytes()).await;
                    let _ = client.shutdown().await;
                } else {
                    // A reset: the socket closes with unread request bytes pending, or
                    // with nothing sent back at all.
                    drop(client);
                }
            });
        }
    });
    FaultyProxy { endpoint, faults }
}

async fn proxy_listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    (listener, endpoint)
}

/// Relays one client connection to Garage. The response head is read first: `cut` sees
/// whether it is a ranged GET's (206) and its length, and may return how many body bytes
/// to pass before the connection is cut. Relayed responses ask the client not to reuse the
/// connection, so every request arrives on a connection of its own and can be looked at.
async fn relay(client: tokio::net::TcpStream, cut: impl FnOnce(bool, usize) -> Option<usize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let upstream = garage().endpoint.trim_start_matches("http://").to_string();
    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let requests = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut head = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    let body_start = loop {
        let Ok(n) = server_read.read(&mut buffer).await else {
            return;
        };
        if n == 0 {
            return;
        }
        head.extend_from_slice(&buffer[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head_text = String::from_utf8_lossy(&head[..body_start]).to_ascii_lowercase();
    let length: usize = head_text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    if let Some(after_bytes) = cut(head.starts_with(b"HTTP/1.1 206"), length) {
        let keep = (body_start + after_bytes).min(head.len());
        let _ = client_write.write_all(&head[..keep]).await;
        let mut sent = keep - body_start;
        while sent < after_bytes {
            let Ok(n) = server_read.read(&mut buffer).await else {
                break;
            };
            if n == 0 {
                break;
            }
            let take = n.min(after_bytes - sent);
            let _ = client_write.write_all(&buffer[..take]).await;
            sent += take;
        }
        requests.abort();
        return;
    }
    let mut relayed = head[..body_start - 2].to_vec();
    relayed.extend_from_slice(b"connection: close\r\n\r\n");
    relayed.extend_from_slice(&head[body_start..]);
    if client_write.write_all(&relayed).await.is_err() {
        return;
    }
    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    requests.abort();
}
