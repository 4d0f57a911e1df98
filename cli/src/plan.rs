//! `framefleet plan INPUT`: what a job would take and cost before it runs. The input is
//! probed and the job planned exactly as `framefleet local` would plan it on `--workers`
//! workers with the cost history at `--store`, but nothing runs: the what-if table shows
//! every chunk count weighed (predicted wall time, speedup, GPU-seconds, price) and the one
//! the planner chooses, with its rule. With `--orchestrator URL` a running orchestrator
//! answers instead, over gRPC (`PlanJob`), for its own fleet (or `--workers` workers) and
//! its own history; INPUT is then the URI it reads.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use framefleet_common::auth::AttachToken;
use framefleet_common::config::{Config, TlsConfig};
use framefleet_common::proto::{JobSpec, PlanJobRequest, PlanJobResponse, Task};
use framefleet_orchestrator::planning::Target;
use framefleet_orchestrator::Orchestrator;

use crate::client;
use crate::job_options::JobOptions;
use crate::render;
use crate::this_machine::on_this_machine;

/// Workers planned for on this machine when `--workers` is not given, as `framefleet
/// local` starts them.
const LOCAL_WORKERS: u32 = 2;

/// `framefleet plan INPUT`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Input video: a file here, or with `--orchestrator` the URI the orchestrator reads
    /// (`s3://bucket/key`, `file:///path`).
    pub input: String,
    /// The job's options, as `framefleet local` takes them.
    #[command(flatten)]
    pub job: JobOptions,
    /// GPU type to plan for (default: the configuration's `worker.gpu_type`).
    #[arg(long, default_value = "")]
    pub gpu_type: String,
    /// Workers to plan for, as `framefleet local --workers` would start them (default 2;
    /// with `--orchestrator`, its fleet).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: Option<u32>,
    /// The cost history, as `framefleet local --store` keeps it (default: the user's).
    #[arg(long, conflicts_with = "orchestrator")]
    pub store: Option<PathBuf>,
    /// Ask this running orchestrator instead, for its fleet and its cost history.
    #[arg(long)]
    pub orchestrator: Option<String>,
    /// Bearer token the orchestrator requires (its `auth.client_token`).
    #[arg(long, env = "FRAMEFLEET_AUTH__CLIENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM of the CA that signed the orchestrator's certificate, for `https://`.
    #[arg(long, env = "FRAMEFLEET_TLS__CA_PATH")]
    pub ca: Option<String>,
    /// Configuration file, as `framefleet local --config` takes it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print JSON: `{"chosen": N, "rule": "...", "candidates": [{"chunks": N,
    /// "wall_seconds": x, "gpu_seconds": y, "cost_usd": z, "speedup": s}, ...], ...}`.
    #[arg(long)]
    pub json: bool,
}

/// Plans the job and prints the what-if table (or its JSON).
pub async fn run(args: PlanArgs) -> anyhow::Result<()> {
    let response = match &args.orchestrator {
        Some(url) => ask(url, &args).await?,
        None => plan_here(&args).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        print!("{}", render::plan_table(&response));
    }
    Ok(())
}

/// The dry run of a running orchestrator at `url`.
async fn ask(url: &str, args: &PlanArgs) -> anyhow::Result<PlanJobResponse> {
    let tls = TlsConfig {
        ca_path: args.ca.clone().unwrap_or_default(),
        ..TlsConfig::default()
    };
    let token = AttachToken::new(args.token.as_deref().unwrap_or_default());
    let mut client = client::connect(url, &tls, token).await?;
    let request = PlanJobRequest {
        // A dry run writes nothing: the orchestrator takes a spec without an output.
        spec: Some(
            args.job
                .spec(args.input.clone(), String::new(), Default::default())?,
        ),
        workers: args.workers.unwrap_or(0),
        gpu_type: args.gpu_type.clone(),
    };
    Ok(client
        .plan_job(request)
        .await
        .map_err(client::status_error)?
        .into_inner())
}

/// The dry run of an orchestrator in this process, as `framefleet local` would plan.
async fn plan_here(args: &PlanArgs) -> anyhow::Result<PlanJobResponse> {
    let input = std::fs::canonicalize(&args.input)
        .with_context(|| format!("cannot read the input {}", args.input))?;
    let workers = args.workers.unwrap_or(LOCAL_WORKERS);
    let mut config = Config::load(args.config.as_deref())?;
    framefleet_common::telemetry::init_logs("warn");
    on_this_machine(&mut config, workers, args.store.as_deref())?;
    let nowhere = tempfile::Builder::new()
        .prefix("framefleet-plan-")
        .tempdir()?;
    let spec = spec(args, format!("file://{}", input.display()), nowhere.path())?;
    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::open(config, shutdown.clone()).await?;
    let target = Target {
        local_workers: workers,
        gpu_type: args.gpu_type.clone(),
    };
    let planned = orchestrator.plan_dry_run(spec, &target).await;
    shutdown.cancel();
    orchestrator.drain().await;
    Ok(planned?.response())
}

/// The job planned: `input`, with an output in `nowhere` (nothing is written).
fn spec(args: &PlanArgs, input: String, nowhere: &Path) -> anyhow::Result<JobSpec> {
    let extension = if args.job.spec_task() == Task::Infer {
        "jsonl"
    } else {
        "mp4"
    };
    let output = format!(
        "file://{}",
        nowhere.join(format!("output.{extension}")).display()
    );
    args.job.spec(input, output, Default::default())
}
