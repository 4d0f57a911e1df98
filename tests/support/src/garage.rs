//! The S3 server of the tests: one real Garage per test binary on loopback, started on
//! first use from a thread that lives as long as the process and with `PR_SET_PDEATHSIG`,
//! so it dies with the tests; and the settings that point framefleet at it.
//!
//! Garage is found through `GARAGE_BIN`, then
//! `~/.cache/framefleet/garage-2.5.0-metrics/bin/garage` (where `.ci/run` builds it, with
//! the `metrics` feature that counts the requests it serves), then `PATH`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use framefleet_common::config::StorageConfig;

use crate::child::die_with_parent;
use crate::ports::free_port;

/// The test bucket Garage creates at start.
pub const BUCKET: &str = "framefleet-test";

pub(crate) const REGION: &str = "garage";

pub(crate) const ACCESS_KEY: &str = "GK0123456789abcdef01234567";

pub(crate) const SECRET_KEY: &str =
    "7a1f0c3e5b9d2846a1f0c3e5b9d2846a1f0c3e5b9d2846a1f0c3e5b9d2846a1f";

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

pub(crate) fn garage_binary() -> PathBuf {
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

/// Attempts at starting Garage, each on fresh ports: a port picked free can be taken by
/// another process before Garage binds it.
pub(crate) const GARAGE_ATTEMPTS: usize = 3;

pub(crate) fn start_garage() -> Garage {
    let mut failures = Vec::new();
    for _ in 0..GARAGE_ATTEMPTS {
        match try_start_garage() {
            Ok(garage) => return garage,
            Err(failure) => failures.push(failure),
        }
    }
    panic!("Garage would not start: {failures:?}");
}

pub(crate) fn try_start_garage() -> Result<Garage, String> {
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
