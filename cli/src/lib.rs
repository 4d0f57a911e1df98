//! framefleet-cli: the `framefleet` command.
//!
//! - `local`: one job on this machine, with an in-process orchestrator and worker child
//!   processes on loopback and `file://` storage ([`local`]).
//! - `plan`: what a job would take and cost for each chunk count, from the cost history,
//!   without running it ([`plan`]).
//! - `submit`, `watch`, `status`, `cancel`, `cost`, `costs`, `list`, `workers`: a client of
//!   a running orchestrator ([`remote`]).
//! - `models import|list`: the neural model cache ([`models`]).
//! - `orchestrator`, `worker`: run the servers, as their own binaries do.
//!
//! The command modules do not import one another: what they share is below them.
//! [`client`] connects to an orchestrator, follows a job and words its errors;
//! [`this_machine`] configures an orchestrator for workers on this machine (`local`, and
//! `plan` without `--orchestrator`). [`job_options`] are the job flags `local` and `submit` share; [`outputs`] names each
//! input's output when they are given several inputs and one output directory.
//! [`render`] draws the progress bar and the cost table, [`waterfall`] the cost report as an
//! HTML timing waterfall.

pub mod client;
pub mod job_options;
pub mod local;
pub mod local_workers;
pub mod models;
pub mod outputs;
pub mod plan;
pub mod remote;
pub mod render;
pub mod this_machine;
pub mod waterfall;

use clap::{Parser, Subcommand};

/// framefleet: chunked GPU video processing.
#[derive(Debug, Parser)]
#[command(name = "framefleet", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one job on this machine: an orchestrator and N local workers.
    Local(local::LocalArgs),
    /// Predict what a job would take and cost for each chunk count, without running it.
    Plan(plan::PlanArgs),
    /// Submit a job to an orchestrator.
    Submit(remote::SubmitArgs),
    /// Follow a job's progress until it ends.
    Watch(remote::JobArgs),
    /// Show a job's state.
    Status(remote::JobArgs),
    /// Cancel a job.
    Cancel(remote::JobArgs),
    /// Show a finished job's cost report.
    Cost(remote::CostArgs),
    /// Add up what the jobs that ended recently cost, by state and GPU type.
    Costs(remote::CostsArgs),
    /// List the orchestrator's jobs.
    List(remote::ListArgs),
    /// List the fleet's workers: slots busy and free, draining, cold start, chunks done.
    Workers(remote::ListArgs),
    /// Install and list neural models.
    Models(models::ModelsArgs),
    /// Run an orchestrator.
    Orchestrator(framefleet_orchestrator::OrchestratorArgs),
    /// Run a worker.
    Worker(framefleet_worker::WorkerArgs),
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Local(args) => local::run(args).await,
        Command::Plan(args) => plan::run(args).await,
        Command::Submit(args) => remote::submit(args).await,
        Command::Watch(args) => remote::watch(args).await,
        Command::Status(args) => remote::status(args).await,
        Command::Cancel(args) => remote::cancel(args).await,
        Command::Cost(args) => remote::cost(args).await,
        Command::List(args) => remote::list(args).await,
        Command::Workers(args) => remote::workers(args).await,
        Command::Costs(args) => remote::costs(args).await,
        Command::Models(args) => models::run(args),
        Command::Orchestrator(args) => framefleet_orchestrator::run(args).await,
        Command::Worker(args) => framefleet_worker::run(args).await,
    }
}
