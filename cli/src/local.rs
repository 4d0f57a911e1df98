//! `framefleet local`: one job on this machine with the embedded defaults.
//!
//! The orchestrator runs in this process on a loopback port; each worker is a child
//! process (`framefleet worker`), so one crashing cannot take the others down. Storage is
//! `file://`: the input (or an `https://` URL) and the output are local paths, and chunk
//! objects live in a temporary
//! directory that is removed at the end. Workers die with this process (`PR_SET_PDEATHSIG`),
//! are replaced when one is lost mid-job, and are stopped with SIGTERM when the job ends
//! ([`crate::local_workers`]). Every job adds to a cost history of this machine (the
//! user's data folder, or `--store`), from which `auto` plans the next ones.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use framefleet_common::auth::AttachToken;
use framefleet_common::config::{Config, TlsConfig};
use framefleet_common::proto::{
    CancelJobRequest, GetCostReportRequest, JobState, SubmitJobRequest,
};
use framefleet_orchestrator::{serve_on, Orchestrator};

use crate::client::{self, status_error};
use crate::job_options::JobOptions;
use crate::local_workers::{LocalWorkers, WorkerLaunch};
use crate::outputs::outputs_in;
use crate::render;
use crate::this_machine::on_this_machine;

/// `framefleet local INPUT OUTPUT` or `framefleet local INPUT... OUTDIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// Input video files (or https:// URLs), then the output: a file (.mp4, .mov or .mkv;
    /// .jsonl for infer) for one input, else an existing directory where each input's
    /// output is named after it (`<stem>.mp4`, or `<stem>.jsonl` for infer). An output
    /// that exists is replaced once the new one is complete.
    #[arg(num_args = 2.., required = true, value_name = "INPUT... OUTPUT")]
    pub paths: Vec<PathBuf>,
    /// Worker processes to start.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Processing and encoding options.
    #[command(flatten)]
    pub job: JobOptions,
    /// Also write the cost report as JSON to this file.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// Also write the cost report as a self-contained HTML timing waterfall to this file.
    #[arg(long)]
    pub report_html: Option<PathBuf>,
    /// Configuration file for the orchestrator and the workers.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The cost history this machine's jobs learn from and add to (an SQLite file;
    /// default: `$XDG_DATA_HOME/framefleet/history.sqlite3`, or under `~/.local/share`).
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// Show the orchestrator's and workers' logs on stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// Runs the job and prints its cost report; fails with a one-line error otherwise.
pub async fn run(args: LocalArgs) -> anyhow::Result<()> {
    let pairs = local_pairs(&args)?;
    let mut config = Config::load(args.config.as_deref())?;
    framefleet_common::telemetry::init_logs(if args.verbose { "info" } else { "warn" });
    let scratch = tempfile::Builder::new()
        .prefix("framefleet-local-")
        .tempdir()?;
    config.orchestrator.scratch_uri =
        format!("file://{}", scratch.path().join("scratch").display());
    on_this_machine(&mut config, args.workers, args.store.as_deref())?;
    let token = AttachToken::new(&config.auth.client_token);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let (gpus, cpu_threads) = machine_shares(&config.worker.device, args.workers);
    let orchestrator = Orchestrator::open(config, shutdown.clone()).await?;
    let server = tokio::spawn(serve_on(listener, orchestrator, shutdown.clone()));
    let logs = scratch.path().join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut workers = LocalWorkers::start(
        args.workers,
        WorkerLaunch {
            url: url.clone(),
            config: args.config.clone(),
            verbose: args.verbose,
            logs,
            gpus,
            cpu_threads,
        },
    )?;
    let result = tokio::select! {
        result = run_job(&url, token, &args, &pairs) => result,
        error = workers.supervise() => Err(error),
    };
    workers.stop().await;
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

/// How `workers` local workers share this machine for `device` (`worker.device`): the GPUs
/// to take in turn when `auto` finds several, and the threads each may use when they run
/// on the CPU (unless `OMP_NUM_THREADS` says otherwise).
fn machine_shares(device: &str, workers: u32) -> (u32, Option<u32>) {
    let gpus = if device == "auto" { cuda_devices() } else { 0 };
    let on_cpu = device == "cpu" || (device == "auto" && gpus == 0);
    let threads =
        (on_cpu && std::env::var_os("OMP_NUM_THREADS").is_none()).then(|| cores_each(workers));
    (gpus, threads)
}

/// The cores each of `workers` CPU workers gets when they share this machine: libtorch
/// otherwise gives every worker a thread per core, and `workers` times too many threads
/// fight over the cores (two workers on two cores ran a neural job 40 % slower).
fn cores_each(workers: u32) -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from(cores)
        .unwrap_or(u32::MAX)
        .div_ceil(workers.max(1))
        .max(1)
}

/// GPUs libtorch sees (none without the `torch` feature).
fn cuda_devices() -> u32 {
    #[cfg(feature = "torch")]
    {
        u32::try_from(tch::Cuda::device_count()).unwrap_or(0)
    }
    #[cfg(not(feature = "torch"))]
    {
        0
    }
}

/// Each input's URI and the local path of its output: one input and an output file, or
/// inputs and an existing output directory, each output named after its input.
fn local_pairs(args: &LocalArgs) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let (output, inputs) = args
        .paths
        .split_last()
        .context("give the input and the output")?;
    let output = local_path(output, "output")?;
    if let [input] = inputs {
        if !output.is_dir() {
            return Ok(vec![(input_uri(input)?, absolute_output(&output)?)]);
        }
    }
    let directory = std::fs::canonicalize(&output).with_context(|| {
        format!(
            "the output directory {} does not exist; create it first (with several inputs the \
             last argument is the directory their outputs go to)",
            output.display()
        )
    })?;
    anyhow::ensure!(
        directory.is_dir(),
        "with several inputs the last argument is the directory their outputs go to, and {} \
         is a file",
        directory.display()
    );
    // A job of several inputs reports an unreadable one itself (or skips it, if asked).
    let inputs = inputs
        .iter()
        .map(|input| batch_input_uri(input))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outputs = outputs_in(
        &inputs,
        &directory.display().to_string(),
        args.job.output_extension(),
    )?;
    Ok(inputs
        .into_iter()
        .zip(outputs.into_iter().map(PathBuf::from))
        .collect())
}

/// One of several inputs as a URI: a web URL as given, else the `file://` URI of its
/// absolute path, whether or not the file is there (the job says so if not).
fn batch_input_uri(given: &Path) -> anyhow::Result<String> {
    if let Some(url) = web_url(given) {
        return Ok(url);
    }
    let input = local_path(given, "input")?;
    let absolute = std::path::absolute(&input)
        .with_context(|| format!("cannot make the input {} an absolute path", input.display()))?;
    let resolved = std::fs::canonicalize(&absolute).unwrap_or(absolute);
    Ok(format!("file://{}", resolved.display()))
}

/// The input as a URI: a web URL as given, else a local file's `file://` URI.
fn input_uri(given: &Path) -> anyhow::Result<String> {
    if let Some(url) = web_url(given) {
        return Ok(url);
    }
    let input = local_path(given, "input")?;
    let input = std::fs::canonicalize(&input)
        .with_context(|| format!("cannot read the input {}", input.display()))?;
    anyhow::ensure!(
        input.is_file(),
        "the input {} is not a file",
        input.display()
    );
    Ok(format!("file://{}", input.display()))
}

/// `given` when it is an `https://` or `http://` URL.
fn web_url(given: &Path) -> Option<String> {
    let text = given.to_string_lossy();
    (text.starts_with("https://") || text.starts_with("http://")).then(|| text.into_owned())
}

/// A local path given plainly or as a `file://` URI; any other URI is refused with the
/// command that takes it (`local` stores everything on this machine).
fn local_path(given: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let text = given.to_string_lossy();
    if let Some(path) = text.strip_prefix("file://") {
        return Ok(PathBuf::from(path));
    }
    match text.split_once("://") {
        Some(("s3", _)) => anyhow::bail!(
            "framefleet local takes a local {what} file, not {text}; for s3:// objects run \
             an orchestrator and workers and use `framefleet submit` (see the README)"
        ),
        Some((scheme, _)) if !scheme.is_empty() && !scheme.contains('/') => anyhow::bail!(
            "framefleet local takes a local {what} file, not {text}; framefleet reads local \
             paths, file://, s3:// and (inputs) https:// URIs, so copy it here first"
        ),
        _ => Ok(given.to_path_buf()),
    }
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

async fn run_job(
    url: &str,
    token: AttachToken,
    args: &LocalArgs,
    pairs: &[(String, PathBuf)],
) -> anyhow::Result<()> {
    let mut client = client::connect(url, &TlsConfig::default(), token)
        .await
        .context("cannot reach the local orchestrator")?;
    let spec = args.job.spec_of(
        pairs
            .iter()
            .map(|(input, output)| (input.clone(), format!("file://{}", output.display())))
            .collect(),
        Default::default(),
    )?;
    let job_id = client
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            idempotency_key: String::new(),
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .job_id;
    let watched = client::watch_stream(&mut client, &job_id).await?;
    let job = tokio::select! {
        job = render::follow(watched, &job_id) => job?,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("framefleet: interrupted; cancelling the job");
            client.cancel_job(CancelJobRequest { job_id: job_id.clone() }).await.map_err(status_error)?;
            render::follow(client::watch_stream(&mut client, &job_id).await?, &job_id).await?
        }
    };
    let report = client
        .get_cost_report(GetCostReportRequest {
            job_id: job_id.clone(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let parsed = client::report_of(report)?;
    if let Some(path) = &args.report_json {
        std::fs::write(path, parsed.to_json())
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    if let Some(path) = &args.report_html {
        client::write_waterfall(path, &parsed)?;
    }
    match job.state() {
        JobState::Succeeded => {
            print!("{}", render::cost_table(&parsed));
            for input in &parsed.inputs {
                match input.state.as_str() {
                    "SKIPPED" => println!("skipped: {} ({})", input.input_uri, input.error),
                    _ => println!("output: {}", input.output_uri.trim_start_matches("file://")),
                }
            }
            Ok(())
        }
        JobState::Cancelled => anyhow::bail!("the job was cancelled"),
        _ => anyhow::bail!("{}", job.error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_workers_share_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        assert_eq!(cores_each(1), cores);
        assert_eq!(cores_each(cores), 1);
        assert_eq!(cores_each(cores * 4), 1);
    }

    #[test]
    fn local_paths_may_be_file_uris_and_other_uris_are_refused_with_the_way_out() {
        assert_eq!(
            local_path(Path::new("file:///videos/in.mp4"), "input").expect("file URI"),
            PathBuf::from("/videos/in.mp4")
        );
        assert_eq!(
            local_path(Path::new("clips/in.mp4"), "input").expect("plain path"),
            PathBuf::from("clips/in.mp4")
        );
        let refused = local_path(Path::new("s3://bucket/in.mp4"), "input")
            .expect_err("an S3 URI")
            .to_string();
        assert!(
            refused.contains("not s3://bucket/in.mp4") && refused.contains("framefleet submit"),
            "{refused}"
        );
        let web = local_path(Path::new("ftp://example.com/in.mp4"), "input")
            .expect_err("an FTP URL")
            .to_string();
        assert!(web.contains("copy it here first"), "{web}");
        assert_eq!(
            input_uri(Path::new("https://example.com/in.mp4")).expect("a web input"),
            "https://example.com/in.mp4"
        );
    }
}
