//! `framefleet local`: one job on this machine with the embedded defaults.
//!
//! The orchestrator runs in this process on a loopback port; each worker is a child
//! process (`framefleet worker`), so one crashing cannot take the others down. Storage is
//! `file://`: the input and output are local paths, and chunk objects live in a temporary
//! directory that is removed at the end. Workers die with this process (`PR_SET_PDEATHSIG`)
//! and are stopped with SIGTERM when the job ends.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use framefleet_common::auth::AttachToken;
use framefleet_common::config::{Config, TlsConfig};
use framefleet_common::cost::CostReport;
use framefleet_common::proto::{
    CancelJobRequest, GetCostReportRequest, JobState, SubmitJobRequest,
};
use framefleet_orchestrator::{serve_on, Orchestrator};

use crate::job_options::JobOptions;
use crate::remote::{self, status_error};
use crate::render;

/// How long a worker gets to stop after SIGTERM before it is killed.
const WORKER_STOP_GRACE: Duration = Duration::from_secs(5);

/// `framefleet local INPUT OUTPUT`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// Input video file.
    pub input: PathBuf,
    /// Output file (.mp4, .mov or .mkv).
    pub output: PathBuf,
    /// Worker processes to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Processing and encoding options.
    #[command(flatten)]
    pub job: JobOptions,
    /// Also write the cost report as JSON to this file.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// Configuration file for the orchestrator and the workers.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Show the orchestrator's and workers' logs on stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// Runs the job and prints its cost report; fails with a one-line error otherwise.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let input = std::fs::canonicalize(&args.input)
        .with_context(|| format!("cannot read the input {}", args.input.display()))?;
    anyhow::ensure!(
        input.is_file(),
        "the input {} is not a file",
        input.display()
    );
    let output = absolute_output(&args.output)?;
    let mut config = Config::load(args.config.as_deref())?;
    framefleet_common::telemetry::init(if args.verbose { "info" } else { "warn" });
    let scratch = tempfile::Builder::new()
        .prefix("framefleet-local-")
        .tempdir()?;
    config.orchestrator.scratch_uri =
        format!("file://{}", scratch.path().join("scratch").display());
    // One command, one job: nothing to resume after it exits.
    config.orchestrator.store_path = String::new();
    // Everything talks over loopback: no TLS (the workers are told the same). Tokens from
    // the configuration still apply, and the workers read the same configuration.
    config.tls = TlsConfig::default();
    let token = AttachToken::new(&config.auth.client_token);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::open(config, shutdown.clone()).await?;
    let server = tokio::spawn(serve_on(listener, orchestrator, shutdown.clone()));
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut workers = Vec::new();
    for index in 0..args.workers {
        workers.push(start_worker(index, &url, &args, &logs)?);
    }

    let result = run_job(&url, token, &args, &input, &output).await;
    stop_workers(workers).await;
    shutdown.cancel();
    let _ = server.await;
    if result.is_err() && !args.verbose {
        let kept = scratch.keep();
        eprintln!(
            "framefleet: worker logs kept in {}",
            kept.join("logs").display()
        );
    }
    result
}

fn absolute_output(output: &Path) -> anyhow::Result<PathBuf> {
    let name = output
        .file_name()
        .with_context(|| format!("the output {} has no file name", output.display()))?;
    let parent = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = std::fs::canonicalize(&parent)
        .with_context(|| format!("the output directory {} does not exist", parent.display()))?;
    Ok(parent.join(name))
}

fn start_worker(index: u32, url: &str, args: &LocalArgs, logs: &Path) -> anyhow::Result<Child> {
    let program = std::env::current_exe().context("cannot find the framefleet executable")?;
    let mut command = Command::new(program);
    command
        .arg("worker")
        .args(["--orchestrator", url, "--listen", "127.0.0.1:0"])
        .args(["--name", &format!("local-{index}")])
        .env("FRAMEFLEET_TLS__CERT_PATH", "")
        .env("FRAMEFLEET_TLS__KEY_PATH", "")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    if let Some(config) = &args.config {
        command.arg("--config").arg(config);
    }
    if args.verbose {
        command.stderr(Stdio::inherit());
    } else {
        let log = std::fs::File::create(logs.join(format!("worker-{index}.log")))?;
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

async fn stop_workers(workers: Vec<Child>) {
    for worker in &workers {
        if let Some(pid) = worker.id().and_then(|pid| i32::try_from(pid).ok()) {
            // SAFETY: kill(2) with a pid of our own child and a valid signal number.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    for mut worker in workers {
        if tokio::time::timeout(WORKER_STOP_GRACE, worker.wait())
            .await
            .is_err()
        {
            let _ = worker.kill().await;
        }
    }
}

async fn run_job(
    url: &str,
    token: AttachToken,
    args: &LocalArgs,
    input: &Path,
    output: &Path,
) -> anyhow::Result<()> {
    let mut client = remote::connect(url, &TlsConfig::default(), token)
        .await
        .context("cannot reach the local orchestrator")?;
    let spec = args.job.spec(
        format!("file://{}", input.display()),
        format!("file://{}", output.display()),
        Default::default(),
    );
    let job_id = client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .job_id;
    let job = tokio::select! {
        job = render::follow(&mut client, &job_id) => job?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("framefleet: interrupted; cancelling the job");
            client.cancel_job(CancelJobRequest { job_id: job_id.clone() }).await.map_err(status_error)?;
            render::follow(&mut client, &job_id).await?
        }
    };
    let report = client
        .get_cost_report(GetCostReportRequest {
            job_id: job_id.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .json;
    if let Some(path) = &args.report_json {
        std::fs::write(path, &report)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    match render::state_of(&job) {
        JobState::Succeeded => {
            let parsed: CostReport = serde_json::from_str(&report)?;
            print!("{}", render::cost_table(&parsed));
            println!("output: {}", output.display());
            Ok(())
        }
        JobState::Cancelled => anyhow::bail!("the job was cancelled"),
        _ => anyhow::bail!("{}", job.error),
    }
}
