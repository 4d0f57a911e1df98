//! `framefleet plan INPUT`: what a job would take and cost before it runs. The input is
//! probed and the job planned exactly as `framefleet local` would plan it on `--workers`
//! workers with the cost history at `--store`, but nothing runs: the what-if table shows
//! every chunk count weighed (predicted wall time, speedup, GPU-seconds, price) and the one
//! the planner chooses, with its rule. A running orchestrator answers the same question
//! for its own fleet and history over gRPC (`PlanJob`).

use std::path::PathBuf;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use framefleet_common::config::Config;
use framefleet_common::proto::Task;
use framefleet_orchestrator::planning::Target;
use framefleet_orchestrator::Orchestrator;

use crate::job_options::JobOptions;
use crate::local;
use crate::render;

/// `framefleet plan INPUT`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArgs {
    /// Input video file.
    pub input: PathBuf,
    /// The job's options, as `framefleet local` takes them.
    #[command(flatten)]
    pub job: JobOptions,
    /// GPU type to plan for (default: the configuration's `worker.gpu_type`).
    #[arg(long, default_value = "")]
    pub gpu_type: String,
    /// Workers to plan for, as `framefleet local --workers` would start them.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// The cost history, as `framefleet local --store` keeps it (default: the user's).
    #[arg(long)]
    pub store: Option<PathBuf>,
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
    let input = std::fs::canonicalize(&args.input)
        .with_context(|| format!("cannot read the input {}", args.input.display()))?;
    let mut config = Config::load(args.config.as_deref())?;
    framefleet_common::telemetry::init_logs("warn");
    local::on_this_machine(&mut config, args.workers, args.store.as_deref())?;
    let nowhere = tempfile::Builder::new()
        .prefix("framefleet-plan-")
        .tempdir()?;
    let extension = if args.job.spec_task() == Task::Infer {
        "jsonl"
    } else {
        "mp4"
    };
    let spec = args.job.spec(
        format!("file://{}", input.display()),
        format!(
            "file://{}",
            nowhere.path().join(format!("output.{extension}")).display()
        ),
        Default::default(),
    );
    let shutdown = CancellationToken::new();
    let orchestrator = Orchestrator::open(config, shutdown.clone()).await?;
    let target = Target {
        local_workers: args.workers,
        gpu_type: args.gpu_type.clone(),
    };
    let planned = orchestrator.plan_dry_run(spec, &target).await;
    shutdown.cancel();
    orchestrator.drain().await;
    let response = planned?.response();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        print!("{}", render::plan_table(&response));
    }
    Ok(())
}
