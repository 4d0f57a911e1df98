//! The worker processes of `framefleet local`: started as children of this process, kept
//! alive while the job runs, stopped with SIGTERM at the end.
//!
//! A worker that exits while the job runs (killed, crashed) is replaced by a fresh one, and
//! so is one that stays stopped (SIGSTOP: hung, as far as the job is concerned) for longer
//! than [`FROZEN_LIMIT`]: it is killed first, which breaks its chunk's stream so the
//! orchestrator retries that chunk at once instead of waiting out its event deadline. A
//! worker that fails as it starts (its settings cannot work) is not replaced: the job
//! stops with the worker's own error.

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

/// A worker that exits with an error this soon after starting could not start at all.
const STARTUP_GRACE: Duration = Duration::from_secs(5);

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
    /// GPUs to share out: the worker in slot `i` gets `cuda:{i % gpus}` when there are
    /// several (0 or 1 leaves `worker.device` as configured).
    pub gpus: u32,
    /// Threads each worker's libtorch may use on the CPU (`OMP_NUM_THREADS`), when the
    /// workers share this machine's cores; `None` leaves libtorch's default.
    pub cpu_threads: Option<u32>,
}

/// The running workers.
pub struct LocalWorkers {
    launch: WorkerLaunch,
    children: Vec<Running>,
    started: u32,
    frozen_since: HashMap<usize, Instant>,
}

/// One worker process.
struct Running {
    child: Child,
    /// Its number, which names it and its log file.
    index: u32,
    started: Instant,
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
        for slot in 0..count {
            let worker = workers.spawn(slot)?;
            workers.children.push(worker);
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
                if let Lost::AtStart(error) = why {
                    return error;
                }
                eprintln!("framefleet: local worker {slot} was lost: {why}; starting another");
                match self.spawn(slot as u32) {
                    Ok(worker) => self.children[slot] = worker,
                    Err(error) => return error,
                }
            }
        }
    }

    /// Why the worker in `slot` is lost, if it is: failed as it started, exited, or
    /// stopped for too long (then it is killed).
    async fn lost(&mut self, slot: usize) -> Option<Lost> {
        let Running {
            child,
            index,
            started,
        } = &mut self.children[slot];
        if let Ok(Some(status)) = child.try_wait() {
            self.frozen_since.remove(&slot);
            if status.code().is_some_and(|code| code != 0) && started.elapsed() < STARTUP_GRACE {
                let said = if self.launch.verbose {
                    "see its log above".to_string()
                } else {
                    last_line(&log_path(&self.launch.logs, *index))
                };
                return Some(Lost::AtStart(anyhow::anyhow!(
                    "local worker {slot} could not start ({status}): {said}"
                )));
            }
            return Some(Lost::Gone(format!("it exited ({status})")));
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
        Some(Lost::Gone(format!(
            "it was stopped for more than {} s",
            FROZEN_LIMIT.as_secs()
        )))
    }

    /// Stops every worker: SIGTERM (they finish or hand back what they hold), then a kill
    /// after [`STOP_GRACE`].
    pub async fn stop(self) {
        for worker in &self.children {
            if let Some(pid) = worker.child.id().and_then(|pid| i32::try_from(pid).ok()) {
                // SAFETY: kill(2) with a pid of our own child and a valid signal number.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
        for Running { mut child, .. } in self.children {
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Starts a worker for `slot` (which chooses its GPU when they are shared out).
    fn spawn(&mut self, slot: u32) -> anyhow::Result<Running> {
        let index = self.started;
        self.started += 1;
        Ok(Running {
            child: start_worker(index, slot, &self.launch)?,
            index,
            started: Instant::now(),
        })
    }
}

/// Why a worker is lost.
enum Lost {
    /// It failed as it started: replacing it would fail the same way.
    AtStart(anyhow::Error),
    /// It went away while running, or hung; a fresh one takes its place.
    Gone(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::AtStart(error) => write!(f, "{error}"),
            Lost::Gone(why) => f.write_str(why),
        }
    }
}

/// The last line a worker wrote to its log (its error, when it failed to start).
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("its log {} is empty", log.display()))
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

fn start_worker(index: u32, slot: u32, launch: &WorkerLaunch) -> anyhow::Result<Child> {
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
    if let Some(device) = gpu_for(slot, launch.gpus) {
        command.env("FRAMEFLEET_WORKER__DEVICE", device);
    }
    if let Some(threads) = launch.cpu_threads {
        command.env("OMP_NUM_THREADS", threads.to_string());
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

/// The GPU the worker in `slot` runs on when `gpus` are shared out, in turn; `None` with
/// one GPU or none (the configured device stands).
fn gpu_for(slot: u32, gpus: u32) -> Option<String> {
    (gpus > 1).then(|| format!("cuda:{}", slot % gpus))
}

fn log_path(logs: &Path, index: u32) -> PathBuf {
    logs.join(format!("worker-{index}.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_take_the_gpus_in_turn_when_there_are_several() {
        let devices: Vec<_> = (0..5).filter_map(|i| gpu_for(i, 2)).collect();
        assert_eq!(devices, ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]);
        assert_eq!(gpu_for(3, 1), None);
        assert_eq!(gpu_for(3, 0), None);
    }
}
