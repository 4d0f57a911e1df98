//! framefleet-orchestrator: turns one long GPU job into N short ones.
//!
//! - [`service`] and [`server`]: the `Orchestrator` (users) and `Fleet` (workers) gRPC
//!   services, with health and reflection.
//! - [`runner`]: accepts jobs ([`validate`], [`store`]) and runs each one: probe,
//!   [`planner`], [`dispatch`] to the [`fleet`] with retries, [`stitch`] (of what
//!   [`carry`] keeps besides video and audio, converting [`subtitles`] where needed),
//!   cleanup and the cost [`report`]; [`job`] holds a job's state, progress and report.
//! - [`metrics`]: what the Prometheus endpoint shows; each job is also one trace (spans
//!   `job` > `probe`, `chunk` > `attempt`, `stitch`), which the workers' spans join.

pub mod args;
pub mod carry;
pub mod dispatch;
pub mod fleet;
pub mod job;
pub mod journal;
pub mod metrics;
pub mod planner;
pub mod report;
pub mod runner;
pub mod server;
pub mod service;
pub mod stitch;
pub mod store;
pub mod straggler;
pub mod subtitles;
pub mod validate;

pub use args::OrchestratorArgs;
pub use runner::Orchestrator;
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
