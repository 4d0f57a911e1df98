//! Configuration shared by every framefleet binary.
//!
//! Sources, later ones winning: the built-in defaults of [`Config::default`], a TOML file
//! (`framefleet.toml` or the one named on the command line), then environment variables
//! prefixed `FRAMEFLEET_` with `__` between levels (`FRAMEFLEET_DISPATCH__MAX_ATTEMPTS=5`).
//! Unknown keys and bad values are rejected with the offending key named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// A configuration that could not be loaded or does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a key has the wrong type or name.
    #[error("invalid configuration: {0}")]
    Load(Box<figment::Error>),
    /// A key parsed but its value cannot work.
    #[error("invalid configuration: `{key}` {reason}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `dispatch.max_attempts`.
        key: String,
        /// What is wrong with its value and what would be accepted.
        reason: String,
    },
}

/// Everything a framefleet process can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The orchestrator's server and job handling.
    pub orchestrator: OrchestratorConfig,
    /// A GPU worker's server and how it joins the fleet.
    pub worker: WorkerConfig,
    /// Object storage credentials and upload tuning.
    pub storage: StorageConfig,
    /// How many chunks a job is cut into.
    pub planner: PlannerConfig,
    /// Retries and deadlines of chunk dispatch.
    pub dispatch: DispatchConfig,
    /// USD per second of one GPU, by GPU type (`cpu` for CPU workers).
    pub pricing: BTreeMap<String, f64>,
    /// Logging and tracing.
    pub telemetry: TelemetryConfig,
    /// What one job and the orchestrator as a whole may take on.
    pub limits: LimitsConfig,
    /// Bearer tokens callers must present.
    pub auth: AuthConfig,
    /// TLS for the gRPC servers and the clients that call them.
    pub tls: TlsConfig,
    /// Who shares the fleet (`[tenants.NAME]`): each tenant's token, weight and quotas.
    /// Empty: one tenant, `default`, whose token is `auth.client_token`.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// The events POSTed to a job's `notify_url` when it ends.
    pub notify: NotifyConfig,
}

/// Job notifications (webhooks).
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The key of each event's HMAC-SHA256 signature (`FRAMEFLEET_NOTIFY__SECRET`); jobs
    /// asking for notifications are refused while it is empty.
    pub secret: String,
    /// How long an event that is not answered with a 2xx is tried again, with backoff.
    pub retry_seconds: f64,
    /// Hosts notification URLs may name (`host` or `host:port`); empty: any public host.
    /// Private, loopback and metadata addresses are refused unless listed.
    pub allowed_hosts: Vec<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            secret: String::new(),
            retry_seconds: 86_400.0,
            allowed_hosts: Vec::new(),
        }
    }
}

impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("retry_seconds", &self.retry_seconds)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// One tenant of a shared fleet.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// The bearer token its clients send (`FRAMEFLEET_TENANTS__NAME__TOKEN`).
    pub token: String,
    /// Its share of the fleet's slots against the other tenants' (1: equal).
    pub weight: f64,
    /// Most slots its chunks hold at once (0: no cap).
    pub max_slots: u32,
    /// Most of its jobs queued or running at once (0: only `limits.max_queued_jobs`).
    pub max_queued_jobs: u32,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            token: String::new(),
            weight: 1.0,
            max_slots: 0,
            max_queued_jobs: 0,
        }
    }
}

impl std::fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfig")
            .field("token", &"<redacted>")
            .field("weight", &self.weight)
            .field("max_slots", &self.max_slots)
            .field("max_queued_jobs", &self.max_queued_jobs)
            .finish()
    }
}

/// Limits against absurd or hostile jobs: checked at submit (chunks, queue) and after the
/// probe (size, duration, frames, picture size); a job over one is refused or fails with
/// the limit named.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest input object, in bytes.
    pub max_input_bytes: u64,
    /// Longest input, in seconds.
    pub max_duration_seconds: f64,
    /// Most frames in an input.
    pub max_frames: u64,
    /// Largest picture, width x height in pixels.
    pub max_pixels: u64,
    /// Most chunks a job may ask for.
    pub max_chunks: u32,
    /// Most inputs one job may name (`JobSpec.inputs`).
    pub max_inputs: u32,
    /// Jobs running at once; the others wait in the queue.
    pub max_running_jobs: u32,
    /// Jobs accepted and not yet ended; submissions beyond it are refused
    /// (`RESOURCE_EXHAUSTED`) until some end.
    pub max_queued_jobs: u32,
    /// Largest output picture, width x height in pixels (the input's scaled): checked
    /// after the probe, before any chunk runs.
    pub max_output_pixels: u64,
    /// Most labels one job may carry.
    pub max_labels: u32,
    /// Longest label key or value, in bytes.
    pub max_label_bytes: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_input_bytes: 64 << 30,
            max_duration_seconds: 6.0 * 3600.0,
            max_frames: 2_000_000,
            max_pixels: 7680 * 4320,
            max_chunks: 256,
            max_inputs: 256,
            max_running_jobs: 8,
            max_queued_jobs: 1000,
            max_output_pixels: 7680 * 4320,
            max_labels: 32,
            max_label_bytes: 256,
        }
    }
}

/// Bearer tokens; an empty one turns its check off.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Token users of the `Orchestrator` service must send (the CLI reads it from
    /// `FRAMEFLEET_AUTH__CLIENT_TOKEN`).
    pub client_token: String,
    /// Token between the orchestrator and its workers, both ways.
    pub fleet_token: String,
    /// Token of the fleet's operators: every tenant's jobs, listed, watched, cancelled
    /// and costed (empty: none).
    pub operator_token: String,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |token: &str| if token.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("AuthConfig")
            .field("client_token", &shown(&self.client_token))
            .field("fleet_token", &shown(&self.fleet_token))
            .field("operator_token", &shown(&self.operator_token))
            .finish()
    }
}

/// TLS files (PEM); all empty means plain HTTP/2.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// This server's certificate chain; set it (with `key_path`) to serve TLS.
    pub cert_path: String,
    /// This server's private key.
    pub key_path: String,
    /// The CA that signed the servers' certificates, for clients calling `https://` URLs.
    pub ca_path: String,
}

/// The orchestrator's own settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// Address the gRPC server binds (Orchestrator, Fleet, health, reflection).
    pub listen: SocketAddr,
    /// Where temporary chunk objects go (`file:///dir` or `s3://bucket/prefix`); empty puts
    /// them beside each job's output, under `.framefleet/`.
    pub scratch_uri: String,
    /// Seconds a worker's lease lasts without a heartbeat before it is dropped.
    pub lease_seconds: f64,
    /// The job store (an SQLite file, created when missing): accepted jobs survive a
    /// restart and resume from it. Empty keeps jobs in memory only.
    pub store_path: String,
    /// How long a job waits out a storage outage at the orchestrator: a chunk check that
    /// cannot reach storage looks again with backoff for this long before the chunk is run
    /// again, and so does the stitch before the job fails.
    pub storage_patience_seconds: f64,
    /// Hosts and networks workers may register from: host names, IP addresses or CIDR
    /// blocks (`10.0.0.0/8`). Empty allows any host but a link-local (the cloud metadata
    /// service's), multicast, broadcast or unspecified address. The orchestrator dials
    /// what a worker registers, with the fleet token: this keeps that dial in the fleet.
    pub worker_hosts: Vec<String>,
}

/// A worker's own settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address the worker's gRPC server binds; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Address the orchestrator should dial; empty derives it from the bound address.
    pub advertise_url: String,
    /// The orchestrator this worker registers with.
    pub orchestrator_url: String,
    /// Name shown in reports; empty uses the host name and port.
    pub name: String,
    /// GPU type used for pricing (`cpu` for CPU-only workers).
    pub gpu_type: String,
    /// Chunks processed at once.
    pub slots: u32,
    /// GPUs one slot holds; GPU-seconds are wall seconds times this.
    pub gpus_per_slot: u32,
    /// GPUs the worker holds; 0 means `slots x gpus_per_slot`, each slot owning its own.
    /// With more slots than GPUs (several chunks sharing one GPU, so the host cores all
    /// encode while one model serves them) a chunk is charged, at each moment, its share
    /// of the GPUs among the chunks running then: together they are charged exactly the
    /// GPU time the worker was busy.
    pub gpus: u32,
    /// Video encoders this worker offers, by FFmpeg name (`libx264`, `libx265`,
    /// `h264_nvenc`, `hevc_nvenc`); empty offers every one it can open when it starts.
    /// Each one listed must open, or the worker refuses to start.
    pub encoders: Vec<crate::codec::VideoEncoder>,
    /// Decode on the GPU's video engines (NVDEC) when FFmpeg can open a CUDA device here;
    /// streams the engine cannot take, and codecs whose GPU decoding failed, still decode
    /// in software. `false` decodes everything in software.
    pub nvdec: bool,
    /// Frames per processing batch.
    pub batch_frames: u32,
    /// Where neural models are installed (`framefleet models import`); empty means
    /// `~/.cache/framefleet/models`.
    pub model_dir: String,
    /// Where neural models run: `auto` (CUDA when libtorch sees a GPU, else CPU), `cpu`,
    /// or `cuda:N` (GPU N of this machine; `framefleet local` gives its workers one GPU
    /// each this way when it sees several).
    pub device: String,
    /// Largest tile side for neural models, in input pixels: bigger frames run in
    /// overlapping tiles so they fit in memory (0: always whole frames).
    pub tile_size: u32,
    /// Fetch the whole input object in one GET before decoding, as the system framefleet
    /// replaced did, instead of ranged reads of what the chunk needs. For storage that
    /// serves ranges badly, and as the baseline of `bench/ranged.sh`.
    pub whole_input_download: bool,
    /// On SIGTERM the worker deregisters and takes no new chunk; the chunks it holds get
    /// this many seconds to finish, then are cancelled and so handed back (the orchestrator
    /// retries them elsewhere). Keep it under the platform's kill deadline (Kubernetes:
    /// `terminationGracePeriodSeconds`, 30 by default).
    pub drain_grace_seconds: f64,
    /// Longest a chunk may run on this worker (decode, model, encode, upload) before it is
    /// cancelled and reported as `DEADLINE_EXCEEDED`, so nothing wedges a slot forever.
    pub chunk_deadline_seconds: f64,
    /// Models loaded before the worker registers, so its first chunks start warm and the
    /// cold start it reports (process start to registered) includes them: for autoscaled
    /// workers that serve one model.
    pub preload_models: Vec<String>,
}

/// Object storage settings. Credentials may also come from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` when not set here.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// S3-compatible endpoint, e.g. `https://<account>.r2.cloudflarestorage.com`; empty
    /// uses AWS.
    pub s3_endpoint: String,
    /// Signing region; Cloudflare R2 wants `auto`.
    pub s3_region: String,
    /// Access key id.
    pub s3_access_key_id: String,
    /// Secret access key (never logged).
    pub s3_secret_access_key: String,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most non-AWS servers.
    pub s3_force_path_style: bool,
    /// Size of one multipart upload part, in bytes (S3 needs at least 5 MiB).
    pub multipart_part_bytes: u64,
    /// Alignment and smallest size of a ranged read, in bytes.
    pub read_block_bytes: u64,
    /// Largest ranged read: while reads stay sequential, each one doubles up to this.
    pub read_ahead_bytes: u64,
    /// Buckets jobs may read and write (`s3://`); empty allows any.
    pub allowed_buckets: Vec<String>,
    /// Local directories jobs may read and write (`file://`); empty allows any path. Each
    /// is opened when the process starts, and every file a job touches is opened beneath
    /// one of them (a link that leads out is refused, whenever it was made).
    pub local_roots: Vec<String>,
    /// Hosts `https://` and `http://` inputs may name, as `host` or `host:port`; empty
    /// allows any public host. A host whose address is loopback, private, link-local or
    /// the cloud metadata service's is refused unless listed here.
    pub allowed_hosts: Vec<String>,
    /// Longest wait for a connection to the S3 server, per try.
    pub connect_timeout_seconds: f64,
    /// Longest one try of one S3 request may take (a stalled transfer fails sooner: the
    /// SDK's stalled-stream protection).
    pub attempt_timeout_seconds: f64,
    /// Tries of one S3 request (the first included) before it fails: with the two above,
    /// how long storage may stay unreachable before a chunk or a job reports it.
    pub max_attempts: u32,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_region", &self.s3_region)
            .field("s3_access_key_id", &self.s3_access_key_id)
            .field("s3_secret_access_key", &"<redacted>")
            .field("s3_force_path_style", &self.s3_force_path_style)
            .field("multipart_part_bytes", &self.multipart_part_bytes)
            .field("read_block_bytes", &self.read_block_bytes)
            .field("read_ahead_bytes", &self.read_ahead_bytes)
            .field("allowed_buckets", &self.allowed_buckets)
            .field("local_roots", &self.local_roots)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("connect_timeout_seconds", &self.connect_timeout_seconds)
            .field("attempt_timeout_seconds", &self.attempt_timeout_seconds)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// Chunk-count rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PlannerConfig {
    /// Upper bound on the chunks of any job.
    pub max_chunks: u32,
    /// `auto` planning: the fastest chunk count whose predicted GPU-seconds stay within
    /// this factor of one chunk's (1.05: at most 5 % more GPU time for the speed).
    pub max_gpu_seconds_ratio: f64,
    /// `auto` cuts no chunk shorter than this many seconds of video, rounded up to whole
    /// GOPs when the input's keyframes are regular.
    pub min_chunk_seconds: f64,
    /// The cost history `auto` learns from, an SQLite file; empty keeps it in the job
    /// store's file (`orchestrator.store_path`), or in memory when that is empty too.
    pub history_path: String,
    /// Most recent samples of a kind of job the cost model reads (older ones are kept but
    /// no longer weigh).
    pub history_samples: u32,
    /// Worker slots `auto` plans for when fewer are registered: an autoscaled fleet's
    /// maximum (0: the slots registered now).
    pub fleet_slots: u32,
    /// Machines those `fleet_slots` are on (0: a machine per slot not yet registered).
    /// `framefleet local` sets both for its workers on this one machine.
    pub fleet_hosts: u32,
    /// How much longer than an even share (0.25 = 25 %) a chunk may grow so that every
    /// chunk starts on a keyframe. A chunk starting on a keyframe reads and decodes nothing
    /// before its range; one starting mid-GOP re-reads and re-decodes the GOP's head, which
    /// the previous chunk also reads. When no keyframe-aligned plan is that even, only the
    /// boundaries with a keyframe within a tenth of a chunk move onto it.
    pub keyframe_slack: f64,
    /// Duration thresholds per profile (`neural`, `light`, or your own).
    pub profiles: BTreeMap<String, ProfileConfig>,
}

/// Duration thresholds of one profile: the first threshold the input is shorter than wins.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// `(below_seconds, chunks)` pairs in increasing order of `below_seconds`.
    pub thresholds: Vec<Threshold>,
    /// Chunks for inputs at least as long as every threshold.
    pub otherwise: u32,
}

/// Inputs shorter than `below_seconds` get `chunks` chunks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    /// Exclusive upper bound on the input's duration, in seconds.
    pub below_seconds: f64,
    /// Chunk count for inputs below it.
    pub chunks: u32,
}

/// Retries and deadlines of chunk dispatch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Attempts per chunk, the first included.
    pub max_attempts: u32,
    /// First retry delay, in milliseconds (doubles each retry, with jitter).
    pub backoff_initial_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub backoff_max_ms: u64,
    /// Seconds a chunk waits for an idle worker before the job fails.
    pub worker_wait_seconds: f64,
    /// Seconds without any event from a worker before its attempt is abandoned.
    pub event_timeout_seconds: f64,
    /// A job's last running chunk gets a backup attempt on another worker once it has run
    /// this many times longer than the median of its peers (0 turns backups off).
    pub straggler_factor: f64,
    /// ...and at least this many seconds: short chunks are not worth a second GPU.
    pub straggler_min_seconds: f64,
    /// A priority level left without a free slot this long while its chunks wait takes the
    /// next one, so batch work slows under urgent work but never stops.
    pub starvation_seconds: f64,
}

/// Logging and tracing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `tracing` filter directive, e.g. `info` or `framefleet_worker=debug`.
    pub log: String,
    /// OTLP/gRPC collector to send spans to, `http://host:port` (e.g. an OpenTelemetry
    /// Collector or Jaeger on 4317); empty sends none.
    pub otlp_endpoint: String,
    /// Address of the Prometheus `/metrics` endpoint, e.g. `0.0.0.0:9464`; empty serves
    /// none.
    pub metrics_listen: String,
}

impl TelemetryConfig {
    /// The metrics endpoint's address, when one is configured (validated at load).
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics_listen.parse().ok()
    }
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            scratch_uri: String::new(),
            lease_seconds: 10.0,
            store_path: "framefleet-jobs.sqlite3".into(),
            storage_patience_seconds: 300.0,
            worker_hosts: Vec::new(),
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_url: String::new(),
            orchestrator_url: "http://127.0.0.1:50051".into(),
            name: String::new(),
            gpu_type: "cpu".into(),
            slots: 1,
            gpus_per_slot: 1,
            gpus: 0,
            encoders: Vec::new(),
            nvdec: true,
            batch_frames: 4,
            model_dir: String::new(),
            device: "auto".into(),
            tile_size: 1024,
            whole_input_download: false,
            drain_grace_seconds: 25.0,
            chunk_deadline_seconds: 3600.0,
            preload_models: Vec::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            s3_endpoint: String::new(),
            s3_region: "auto".into(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_force_path_style: true,
            multipart_part_bytes: 8 * 1024 * 1024,
            read_block_bytes: 16 * 1024,
            read_ahead_bytes: 4 * 1024 * 1024,
            allowed_buckets: Vec::new(),
            local_roots: Vec::new(),
            allowed_hosts: Vec::new(),
            connect_timeout_seconds: 10.0,
            attempt_timeout_seconds: 120.0,
            max_attempts: 5,
        }
    }
}

impl Default for PlannerConfig {
    fn default() -> Self {
        let profile = |pairs: &[(f64, u32)], otherwise| ProfileConfig {
            thresholds: pairs
                .iter()
                .map(|&(below_seconds, chunks)| Threshold {
                    below_seconds,
                    chunks,
                })
                .collect(),
            otherwise,
        };
        Self {
            max_chunks: 4,
            max_gpu_seconds_ratio: 1.05,
            min_chunk_seconds: 1.0,
            history_path: String::new(),
            history_samples: 64,
            fleet_slots: 0,
            fleet_hosts: 0,
            keyframe_slack: 0.25,
            profiles: BTreeMap::from([
                ("neural".to_string(), profile(&[(3.0, 1), (10.0, 2)], 4)),
                ("light".to_string(), profile(&[(30.0, 1), (90.0, 2)], 4)),
            ]),
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_initial_ms: 200,
            backoff_max_ms: 5_000,
            worker_wait_seconds: 60.0,
            event_timeout_seconds: 60.0,
            straggler_factor: 3.0,
            straggler_min_seconds: 30.0,
            starvation_seconds: 60.0,
        }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log: "info".into(),
            otlp_endpoint: String::new(),
            metrics_listen: String::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            orchestrator: OrchestratorConfig::default(),
            worker: WorkerConfig::default(),
            storage: StorageConfig::default(),
            planner: PlannerConfig::default(),
            dispatch: DispatchConfig::default(),
            pricing: default_pricing(),
            telemetry: TelemetryConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            tenants: BTreeMap::new(),
            notify: NotifyConfig::default(),
        }
    }
}

/// Per-second USD prices of one GPU from public serverless price lists; `cpu` is free.
pub fn default_pricing() -> BTreeMap<String, f64> {
    [
        ("cpu", 0.0),
        ("T4", 0.000164),
        ("L4", 0.000222),
        ("L40S", 0.000542),
        ("A100-80GB", 0.000694),
        ("H100", 0.001097),
    ]
    .into_iter()
    .map(|(gpu, price)| (gpu.to_string(), price))
    .collect()
}

/// N of a `worker.device` setting `cuda:N` (GPU N of the machine); `None` for any other.
pub fn cuda_index(device: &str) -> Option<usize> {
    let index: u16 = device.strip_prefix("cuda:")?.parse().ok()?;
    Some(usize::from(index))
}

impl Config {
    /// Loads defaults, then `file` (when given; it must exist), then `FRAMEFLEET_*`
    /// variables, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid {
                    key: "--config".into(),
                    reason: format!("names {}, which is not a readable file", path.display()),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        Self::from_figment(figment.merge(Env::prefixed("FRAMEFLEET_").split("__")))
    }

    /// Extracts and validates a configuration from any figment (used by tests too).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.dispatch.validate()?;
        self.limits.validate()?;
        self.validate_access()?;
        self.worker.validate()?;
        if !(self.orchestrator.lease_seconds.is_finite() && self.orchestrator.lease_seconds > 0.5) {
            return invalid("orchestrator.lease_seconds", "must be more than 0.5");
        }
        let patience = self.orchestrator.storage_patience_seconds;
        if !(patience.is_finite() && patience >= 0.0) {
            return invalid(
                "orchestrator.storage_patience_seconds",
                "must be a number of seconds, 0 or more",
            );
        }
        if !self.pricing.contains_key(&self.worker.gpu_type) {
            return invalid(
                "worker.gpu_type",
                &format!(
                    "is `{}`, which has no price in `pricing`; add one or use one of: {}",
                    self.worker.gpu_type,
                    self.pricing.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        if let Some((gpu, _)) = self
            .pricing
            .iter()
            .find(|(_, price)| !(price.is_finite() && **price >= 0.0))
        {
            return invalid(
                &format!("pricing.{gpu}"),
                "must be a non-negative number of USD per second",
            );
        }
        self.storage.validate()?;
        self.planner.validate()?;
        self.telemetry.validate()
    }

    /// Tokens and TLS files.
    fn validate_access(&self) -> Result<(), ConfigError> {
        let mut tokens = vec![
            ("auth.client_token".to_string(), &self.auth.client_token),
            ("auth.fleet_token".to_string(), &self.auth.fleet_token),
            ("auth.operator_token".to_string(), &self.auth.operator_token),
        ];
        for (name, tenant) in &self.tenants {
            let key = format!("tenants.{name}");
            let named = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !named {
                return invalid(&key, "needs a name of 1-64 letters, digits and . _ -");
            }
            if tenant.token.is_empty() {
                return invalid(
                    &format!("{key}.token"),
                    "must be set: it is how the tenant is known",
                );
            }
            if !(tenant.weight.is_finite() && tenant.weight > 0.0) {
                return invalid(&format!("{key}.weight"), "must be a positive number");
            }
            tokens.push((format!("{key}.token"), &tenant.token));
        }
        for (index, (key, token)) in tokens.iter().enumerate() {
            let printable = token.bytes().all(|b| b.is_ascii_graphic());
            if !token.is_empty() && (token.len() < 16 || !printable) {
                return invalid(
                    key,
                    "must be empty (no check) or at least 16 printable ASCII characters without spaces",
                );
            }
            if let Some((other, _)) = tokens[..index]
                .iter()
                .find(|(_, earlier)| !token.is_empty() && earlier == token)
            {
                return invalid(
                    key,
                    &format!("is the same token as {other}; give each its own"),
                );
            }
        }
        if !(self.notify.retry_seconds.is_finite() && self.notify.retry_seconds >= 0.0) {
            return invalid("notify.retry_seconds", "must be 0 or more seconds");
        }
        if self.tls.cert_path.is_empty() != self.tls.key_path.is_empty() {
            return invalid(
                "tls.key_path",
                "and tls.cert_path must be set together (or both left empty for plain HTTP/2)",
            );
        }
        Ok(())
    }
}

impl LimitsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let limits = self;
        for (key, value) in [
            ("limits.max_input_bytes", limits.max_input_bytes),
            ("limits.max_frames", limits.max_frames),
            ("limits.max_pixels", limits.max_pixels),
            ("limits.max_chunks", u64::from(limits.max_chunks)),
            ("limits.max_inputs", u64::from(limits.max_inputs)),
            (
                "limits.max_running_jobs",
                u64::from(limits.max_running_jobs),
            ),
            ("limits.max_queued_jobs", u64::from(limits.max_queued_jobs)),
            ("limits.max_output_pixels", limits.max_output_pixels),
            ("limits.max_label_bytes", u64::from(limits.max_label_bytes)),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if !(limits.max_duration_seconds.is_finite() && limits.max_duration_seconds > 0.0) {
            return invalid(
                "limits.max_duration_seconds",
                "must be a positive number of seconds",
            );
        }
        Ok(())
    }
}

impl WorkerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(self.chunk_deadline_seconds.is_finite() && self.chunk_deadline_seconds > 0.0) {
            return invalid(
                "worker.chunk_deadline_seconds",
                "must be a positive number of seconds",
            );
        }
        if !(self.drain_grace_seconds.is_finite() && self.drain_grace_seconds >= 0.0) {
            return invalid(
                "worker.drain_grace_seconds",
                "must be a number of seconds, 0 or more",
            );
        }
        if self.slots == 0 {
            return invalid("worker.slots", "must be at least 1");
        }
        if self.gpus_per_slot == 0 {
            return invalid("worker.gpus_per_slot", "must be at least 1");
        }
        if self.gpus > 0 && self.gpus < self.slots && self.gpus_per_slot > 1 {
            return invalid(
                "worker.gpus_per_slot",
                "must be 1 when slots share GPUs (worker.gpus below worker.slots)",
            );
        }
        if !(["auto", "cpu"].contains(&self.device.as_str()) || cuda_index(&self.device).is_some())
        {
            return invalid("worker.device", "must be `auto`, `cpu` or `cuda:N`");
        }
        if self.batch_frames == 0 {
            return invalid("worker.batch_frames", "must be at least 1");
        }
        Ok(())
    }
}

impl WorkerConfig {
    /// GPUs the worker holds: `gpus`, or `slots x gpus_per_slot` when that is 0.
    pub fn gpus_held(&self) -> u32 {
        if self.gpus == 0 {
            self.slots.saturating_mul(self.gpus_per_slot)
        } else {
            self.gpus
        }
    }
}

impl StorageConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.multipart_part_bytes < 5 * 1024 * 1024 {
            return invalid(
                "storage.multipart_part_bytes",
                "must be at least 5 MiB (5242880), the S3 minimum part size",
            );
        }
        if self.read_block_bytes < 4096 {
            return invalid("storage.read_block_bytes", "must be at least 4096");
        }
        if self.read_ahead_bytes < self.read_block_bytes {
            return invalid(
                "storage.read_ahead_bytes",
                "must be at least storage.read_block_bytes",
            );
        }
        for (key, seconds) in [
            (
                "storage.connect_timeout_seconds",
                self.connect_timeout_seconds,
            ),
            (
                "storage.attempt_timeout_seconds",
                self.attempt_timeout_seconds,
            ),
        ] {
            if !(seconds.is_finite() && seconds > 0.0) {
                return invalid(key, "must be a positive number of seconds");
            }
        }
        if self.max_attempts == 0 {
            return invalid("storage.max_attempts", "must be at least 1");
        }
        Ok(())
    }
}

/// A configuration error for `key`, saying why its value is refused.
fn invalid(key: &str, reason: &str) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

impl TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: format!("telemetry.{key}"),
                reason: reason.into(),
            })
        };
        let endpoint = &self.otlp_endpoint;
        let host = endpoint.strip_prefix("http://").unwrap_or_default();
        if !endpoint.is_empty() && host.is_empty() {
            return invalid(
                "otlp_endpoint",
                "must be http://host:port (OTLP over gRPC without TLS: run a collector beside \
                 the process and let it forward over TLS), or empty for none",
            );
        }
        if !self.metrics_listen.is_empty() && self.metrics_address().is_none() {
            return invalid(
                "metrics_listen",
                "must be an address such as 0.0.0.0:9464, or empty for no endpoint",
            );
        }
        Ok(())
    }
}

impl PlannerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_chunks == 0 {
            return Err(ConfigError::Invalid {
                key: "planner.max_chunks".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !(0.0..=10.0).contains(&self.keyframe_slack) {
            return Err(ConfigError::Invalid {
                key: "planner.keyframe_slack".into(),
                reason: "must be between 0 (chunks exactly even) and 10".into(),
            });
        }
        if !(self.max_gpu_seconds_ratio.is_finite() && self.max_gpu_seconds_ratio >= 1.0) {
            return invalid(
                "planner.max_gpu_seconds_ratio",
                "must be at least 1 (1: no extra GPU time for speed)",
            );
        }
        if !(self.min_chunk_seconds.is_finite() && self.min_chunk_seconds >= 0.0) {
            return invalid("planner.min_chunk_seconds", "must be 0 or more");
        }
        if self.history_samples == 0 {
            return invalid("planner.history_samples", "must be at least 1");
        }
        if self.profiles.contains_key("auto") {
            return invalid(
                "planner.profiles.auto",
                "is reserved for planning from the cost history; name the profile otherwise",
            );
        }
        for required in ["neural", "light"] {
            if !self.profiles.contains_key(required) {
                return Err(ConfigError::Invalid {
                    key: format!("planner.profiles.{required}"),
                    reason: "is required (jobs pick it by processor)".into(),
                });
            }
        }
        for (name, profile) in &self.profiles {
            let key = format!("planner.profiles.{name}");
            let increasing = profile
                .thresholds
                .windows(2)
                .all(|pair| pair[0].below_seconds < pair[1].below_seconds);
            let positive = profile.otherwise > 0
                && profile
                    .thresholds
                    .iter()
                    .all(|t| t.chunks > 0 && t.below_seconds.is_finite());
            if !increasing || !positive {
                return Err(ConfigError::Invalid {
                    key,
                    reason: "needs thresholds in increasing order of below_seconds and chunk \
                             counts of at least 1"
                        .into(),
                });
            }
        }
        Ok(())
    }
}

impl DispatchConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: format!("dispatch.{key}"),
                reason: reason.into(),
            })
        };
        if self.max_attempts == 0 {
            return invalid("max_attempts", "must be at least 1");
        }
        if !(self.straggler_factor.is_finite() && self.straggler_factor >= 0.0) {
            return invalid("straggler_factor", "must be 0 (off) or a positive factor");
        }
        if !(self.straggler_min_seconds.is_finite() && self.straggler_min_seconds >= 0.0) {
            return invalid("straggler_min_seconds", "must be 0 or more seconds");
        }
        if self.backoff_initial_ms > self.backoff_max_ms {
            return invalid("backoff_initial_ms", "must not exceed backoff_max_ms");
        }
        if !positive(self.worker_wait_seconds) {
            return invalid("worker_wait_seconds", "must be positive");
        }
        if !positive(self.event_timeout_seconds) {
            return invalid("event_timeout_seconds", "must be positive");
        }
        if !positive(self.starvation_seconds) {
            return invalid("starvation_seconds", "must be positive");
        }
        Ok(())
    }
}

/// A finite number above zero.
fn positive(value: f64) -> bool {
    value.is_finite() && value > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    #[test]
    fn defaults_validate_and_match_the_documented_thresholds() {
        let config = Config::default();
        config.validate().expect("defaults are valid");
        let neural = &config.planner.profiles["neural"];
        assert_eq!(neural.thresholds[0].below_seconds, 3.0);
        assert_eq!(neural.otherwise, 4);
        assert_eq!(config.pricing["H100"], 0.001097);
    }

    #[test]
    fn the_example_file_lists_every_default() {
        let example = include_str!("../../deploy/framefleet.example.toml");
        let config = from_toml(example).expect("the example parses");
        assert_eq!(config, Config::default());
    }

    #[test]
    fn the_kubernetes_configuration_is_valid() {
        let deployed = include_str!("../../deploy/kubernetes/framefleet.toml");
        let config = from_toml(deployed).expect("deploy/kubernetes/framefleet.toml loads");
        assert_eq!(
            config.telemetry.metrics_address().map(|a| a.port()),
            Some(9464)
        );
        assert_eq!(config.worker.model_dir, "/models");
    }

    #[test]
    fn toml_overrides_defaults() {
        let config = from_toml("[dispatch]\nmax_attempts = 7\n").expect("valid");
        assert_eq!(config.dispatch.max_attempts, 7);
        assert_eq!(config.dispatch.backoff_max_ms, 5_000);
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let error = from_toml("[dispatch]\nmax_attempt = 7\n").expect_err("unknown key");
        assert!(error.to_string().contains("max_attempt"), "{error}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let error = from_toml("[worker]\nslots = 0\n").expect_err("zero slots");
        assert!(error.to_string().contains("worker.slots"), "{error}");
        let error = from_toml("[worker]\ngpu_type = \"B200\"\n").expect_err("no price");
        assert!(error.to_string().contains("worker.gpu_type"), "{error}");
        let error = from_toml("[worker]\ndevice = \"gpu\"\n").expect_err("no such device");
        assert!(error.to_string().contains("cuda:N"), "{error}");
        let pinned = from_toml("[worker]\ndevice = \"cuda:1\"\n").expect("one GPU of several");
        assert_eq!(pinned.worker.device, "cuda:1");
    }

    #[test]
    fn telemetry_endpoints_are_checked() {
        let error =
            from_toml("[telemetry]\notlp_endpoint = \"collector:4317\"\n").expect_err("no scheme");
        assert!(
            error.to_string().contains("telemetry.otlp_endpoint"),
            "{error}"
        );
        let error = from_toml("[telemetry]\nmetrics_listen = \"9464\"\n").expect_err("no host");
        assert!(
            error.to_string().contains("telemetry.metrics_listen"),
            "{error}"
        );
        let config = from_toml(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nmetrics_listen = \"127.0.0.1:9464\"\n",
        )
        .expect("valid");
        assert_eq!(
            config.telemetry.metrics_address().map(|a| a.port()),
            Some(9464)
        );
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let storage = StorageConfig {
            s3_secret_access_key: "hunter2-secret".into(),
            ..StorageConfig::default()
        };
        assert!(!format!("{storage:?}").contains("hunter2"));
    }
}
