//! A cluster of real processes: one orchestrator (with its own job store) and its workers,
//! talking gRPC on loopback; workers can be killed, replaced and cut off.

use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use framefleet_common::auth::{self, AttachToken};
use framefleet_common::config::TlsConfig;
use framefleet_common::proto::orchestrator_client::OrchestratorClient;

use crate::child::Process;
use crate::garage::garage;
use crate::jobs::Client;
use crate::ports::free_port;
use crate::process::{framefleet, spawn_quiet};

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
        let mut cluster = Cluster {
            url,
            worker_urls: Vec::new(),
            orchestrator,
            workers: Vec::new(),
            settings,
            state,
            capture_logs,
        };
        for index in 0..workers {
            cluster.add_worker(&format!("worker-{index}"));
        }
        cluster
    }

    /// Starts one more worker named `name`, registering with the orchestrator; returns its
    /// index in `workers` and `worker_urls`.
    pub fn add_worker(&mut self, name: &str) -> usize {
        self.add_worker_with(name, &[])
    }

    /// [`add_worker`](Self::add_worker) with `settings` of its own over the cluster's.
    pub fn add_worker_with(&mut self, name: &str, settings: &[(&str, &str)]) -> usize {
        let scheme = self.url.split_once("://").map_or("http", |(s, _)| s);
        let worker_port = free_port();
        self.worker_urls
            .push(format!("{scheme}://127.0.0.1:{worker_port}"));
        let log = self
            .capture_logs
            .then(|| self.state.path().join(format!("{name}.log")));
        let mut all = self.settings.clone();
        all.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.workers.push(Some(spawn_quiet(
            framefleet()
                .args(["worker", "--orchestrator", &self.url, "--listen"])
                .arg(format!("127.0.0.1:{worker_port}"))
                .args(["--name", name]),
            &all,
            log.as_deref(),
        )));
        self.workers.len() - 1
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

/// Starts an orchestrator on `port` with its job store in `state` (and its log in `logs`
/// when given); `None` when it exits or does not listen within 30 s.
pub(crate) fn start_orchestrator(
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
