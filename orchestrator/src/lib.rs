//! framefleet-orchestrator: turns one long GPU job into N short ones.
//!
//! From the outside in:
//!
//! - [`server`] and [`service`]: the `Orchestrator` (users) and `Fleet` (workers) gRPC
//!   services on one listener, with health and reflection, and KEDA's external
//!   [`scaler`] beside them; a worker's registration is checked into a typed one in
//!   [`registration`].
//! - [`orchestrator`]: the central [`Orchestrator`]: accepts jobs ([`validate`] into a
//!   [`validate::ValidJob`], recorded in the [`job_store`], indexed in [`live_jobs`]),
//!   cancels them, resumes them after a restart.
//! - [`runner`]: runs one job: [`probe`], [`planning`] (the [`planner`] fed the
//!   [`cost_model`] of the job's kind, fitted from the [`cost_history`]; an infer job's
//!   chosen frames from [`selection`]), the run's encoder ([`encoder_choice`]), [`dispatch`] of
//!   every chunk to the [`fleet`] (retries, backup races against [`straggler`]s),
//!   [`acceptance`] of each chunk, [`stitch`], cleanup, the cost [`report`], and the run's
//!   [`cost_samples`] added to the history.
//! - Below them, shared by several: [`job`] (a job's state, progress and report),
//!   [`accepted`] (an accepted chunk, stored and at run time), [`job_io`] (a job's counted
//!   storage traffic), [`run_log`] (what a run records, per input), [`sqlite_file`] (opening the job store's and the cost history's
//!   databases), [`patience`] (waiting out a storage outage) and [`metrics`] (the
//!   Prometheus counters). Each job is also one
//!   trace (spans `job` > `probe`, `chunk` > `attempt`, `stitch`), which the workers'
//!   spans join.

pub mod acceptance;
pub mod accepted;
pub mod args;
pub mod cost_history;
pub mod cost_model;
pub mod cost_samples;
pub mod dispatch;
pub mod encoder_choice;
pub mod fleet;
pub mod job;
pub mod job_io;
pub mod job_store;
pub mod live_jobs;
pub mod metrics;
pub mod orchestrator;
pub mod patience;
pub mod planner;
pub mod planning;
pub mod probe;
pub mod registration;
pub mod report;
pub mod run_log;
pub mod runner;
pub mod scaler;
pub mod selection;
pub mod server;
pub mod service;
pub mod sqlite_file;
pub mod stitch;
pub mod straggler;
pub mod validate;

pub use args::OrchestratorArgs;
pub use orchestrator::Orchestrator;
pub use server::{serve, serve_on, ServeError};

/// Runs the orchestrator from its command-line arguments until Ctrl-C or SIGTERM.
pub async fn run(args: OrchestratorArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    let telemetry =
        framefleet_common::telemetry::init(&config.telemetry, "framefleet-orchestrator")?;
    let served = serve(config, framefleet_common::signals::shutdown_token()).await;
    telemetry.shutdown().await;
    Ok(served?)
}
