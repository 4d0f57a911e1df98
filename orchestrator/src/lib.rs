//! framefleet-orchestrator: turns one long GPU job into N short ones.
//!
//! Its folders are the stages a job goes through, from the outside in; each imports only
//! from the ones listed after it:
//!
//! - [`api`]: the `Orchestrator` (users) and `Fleet` (workers) gRPC services on one
//!   listener, with health and reflection, and KEDA's external scaler beside them.
//! - [`orchestrator`]: the central [`Orchestrator`]: accepts jobs, cancels them, resumes
//!   them after a restart.
//! - [`run`]: runs one job: its probe, its plan, the run's encoder, dispatch of every
//!   chunk, the stitch, cleanup, the cost report and the samples for the cost history.
//! - [`planning`]: the planner and its cost model, history and samples; an infer job's
//!   chosen frames.
//! - [`dispatch`]: one chunk to acceptance or its final failure: attempts, retries, backup
//!   races against stragglers, acceptance, the encoder a run writes with.
//! - [`stitch`]: the accepted chunks and the input's other streams into the output.
//! - [`report`]: the job's cost report, built from its run logs; [`notify`]: the signed
//!   event POSTed to a job's `notify_url` when it ends, kept until delivered.
//! - [`fleet`]: the workers: their registration, their slots and the queue of chunks
//!   waiting for one (with the scheduling policy that orders it), and the views the planner
//!   and the scaler take.
//! - [`jobs`]: a job as the orchestrator holds it: its validation into the typed job every
//!   stage reads, its record, the live set, the job store, the run log.
//! - Below them all: [`metrics`] (the Prometheus counters) and [`args`] (the command line).
//!   Waiting out a storage outage is `framefleet_common::storage::patience`.
//!
//! Each job is also one trace (spans `job` > `probe`, `chunk` > `attempt`, `stitch`),
//! which the workers' spans join.

pub mod api;
pub mod args;
pub mod dispatch;
pub mod fleet;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod orchestrator;
pub mod planning;
pub mod report;
pub mod run;
pub mod stitch;

pub use api::server::{serve, serve_on, ServeError};
pub use args::OrchestratorArgs;
pub use orchestrator::Orchestrator;

/// Runs the orchestrator from its command-line arguments until Ctrl-C or SIGTERM.
pub async fn run(args: OrchestratorArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    let telemetry =
        framefleet_common::telemetry::init(&config.telemetry, "framefleet-orchestrator")?;
    let served = serve(config, framefleet_common::signals::shutdown_token()).await;
    telemetry.shutdown().await;
    Ok(served?)
}
