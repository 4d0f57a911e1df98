//! The worker processes of `framefleet local`: started as children of this process, kept
//! alive while the job runs, stopped with SIGTERM at the end.
//!
//! A worker that exits while the job runs (killed, crashed) is replaced by a fresh one, and
//! so is one that stays stopped (SIGSTOP: hung, as far as the job is concerned) for longer
//! than [`FROZEN_LIMIT`]: it is killed first, which breaks its chunk's stream so the
//! orchestrator retries that chunk at once instead of waiting out its event deadline.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// How long a worker gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often the workers are looked at.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// How long a worker may stay stopped before it is replaced.
pub const FROZEN_LIMIT: Duration = Duration::from_secs(10);

/// How the workers are started.
pub struct WorkerLaunch {
    /// The orchestrator they register with.
    pub url: String,
    /// Configuration file they read (the orchestrator's).
    pub config: Option<PathBuf>,
    /// Their logs go to stderr (else to files in `logs`).
    pub verbose: bool,
    /// Where their log files go.
    pub logs: PathBuf,
}

/// The running workers.
pub struct LocalWorkers {
    launch: WorkerLaunch,
    children: Vec<Child>,
    started: u32,
    frozen_since: HashMap<usize, Instant>,
}

impl LocalWorkers {
    /// Starts `count` workers.
    pub fn start(count: u32, launch: WorkerLaunch) -> anyhow::Result<Self> {
        let mut workers = Self {
            launch,
            children: Vec::new(),
            started: 0,
            frozen_since: HashMap::new(),
        };
        for _ in 0..count {
            let child = workers.spawn()?;
            workers.children.push(child);
        }
        Ok(workers)
    }

    /// Replaces workers that exit or stay stopped, until a replacement cannot be started
    /// (the error). Meant to run beside the job and be dropped when it ends.
    pub async fn supervise(&mut self) -> anyhow::Error {
        loop {
            tokio::time::sleep(CHECK_INTERVAL).await;
            for slot in 0..self.children.len() {
                let Some(why) = self.lost(slot).await else {
                    continue;
                };
                eprintln!("framefleet: local worker {slot} was lost: {why}; starting another");
                match self.spawn() {
                    Ok(child) => self.children[slot] = child,
                    Err(error) => return error,
                }
            }
        }
    }

    /// Why the worker in `slot` is lost, if it is: exited, or stopped for too long (then
    /// it is killed).
    async fn lost(&mut self, slot: usize) -> Option<String> {
        let child = &mut self.children[slot];
        if let Ok(Some(status)) = child.try_wait() {
            self.frozen_since.remove(&slot);
            return Some(format!("it exited ({status})"));
        }
        let stopped = child.id().is_some_and(is_stopped);
        if !stopped {
            self.frozen_since.remove(&slot);
            return None;
        }
        let since = *self.frozen_since.entry(slot).or_insert_with(Instant::now);
        if since.elapsed() < FROZEN_LIMIT {
            return None;
        }
        self.frozen_since.remove(&slot);
        let _ = child.kill().await;
        Some(format!(
            "it was stopped for more than {} s",
            FROZEN_LIMIT.as_secs()
        ))
    }

    /// Stops every worker: SIGTERM (they finish or hand back what they hold), then a kill
    /// after [`STOP_GRACE`].
    pub async fn stop(self) {
        for worker in &self.children {
            if let Some(pid) = worker.id().and_then(|pid| i32::try_from(pid).ok()) {
                // SAFETY: kill(2) with a pid of our own child and a valid signal number.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        for mut worker in self.children {
            if tokio::time::timeout(STOP_GRACE, worker.wait())
                .await
                .is_err()
            {
                let _ = worker.kill().await;
            }
        }
    }

    fn spawn(&mut self) -> anyhow::Result<Child> {
        let index = self.started;
        self.started += 1;
        start_worker(index, &self.launch)
    }
}

/// True when the process is stopped (state `T` in `/proc/<pid>/stat`).
fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, after_name) = stat.rsplit_once(')')?;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "T")
        })
        .unwrap_or(false)
}

fn start_worker(index: u32, launch: &WorkerLaunch) -> anyhow::Result<Child> {
    let program = std::env::current_exe().context("cannot find the framefleet executable")?;
    let mut command = Command::new(program);
    command
        .arg("worker")
        .args(["--orchestrator", &launch.url, "--listen", "127.0.0.1:0"])
        .args(["--name", &format!("local-{index}")])
        .env("FRAMEFLEET_TLS__CERT_PATH", "")
        .env("FRAMEFLEET_TLS__KEY_PATH", "")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(config) = &launch.config {
        command.arg("--config").arg(config);
    }
    if launch.verbose {
        command.stderr(Stdio::inherit());
    } else {
        let log = std::fs::File::create(log_path(&launch.logs, index))?;
        command.stderr(Stdio::from(log));
    }
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs in the forked child before exec and only calls prctl, which
    // is async-signal-safe. It asks the kernel to SIGTERM the worker if this process dies.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .with_context(|| format!("cannot start worker {index}"))
}

fn log_path(logs: &Path, index: u32) -> PathBuf {
    logs.join(format!("worker-{index}.log"))
}
