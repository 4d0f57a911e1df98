//! framefleet-worker: a GPU worker process.
//!
//! A worker loads `worker.preload_models`, registers itself with the orchestrator
//! ([`registration`], reporting its cold start), serves the `Worker`
//! gRPC service ([`service`], [`server`]), and runs each chunk it accepts through the
//! [`pipeline`]: ranged reads of the input, decode from the keyframe before the chunk
//! (on the GPU's [`nvdec`] engines where it has them),
//! [`processor`] (lanczos, and neural [`models`] on libtorch with the `torch` feature),
//! encode with the job's encoder (the [`codecs`] found at start: x264, x265, NVENC where
//! the GPU has it) and a streaming upload, with measured [`pipeline::progress`] streamed back
//! as it goes; each result names the [`host`] it ran on and the GPU-seconds [`gpu_share`] charged. Each chunk is a span that joins its job's trace, and [`metrics`] feed the
//! Prometheus endpoint.

pub mod args;
pub mod codecs;
pub mod gpu_share;
pub mod host;
pub mod metrics;
pub mod models;
pub mod nvdec;
pub mod pipeline;
pub mod processor;
pub mod registration;
pub mod server;
pub mod service;

pub use args::WorkerArgs;
pub use server::{serve, ServeError};

/// Runs a worker from its command-line arguments until Ctrl-C or SIGTERM.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    #[cfg(feature = "torch")]
    processor::neural::check_device(&config.worker.device).map_err(anyhow::Error::msg)?;
    let telemetry = framefleet_common::telemetry::init(&config.telemetry, "framefleet-worker")?;
    let served = serve(config, framefleet_common::signals::shutdown_token()).await;
    telemetry.shutdown().await;
    Ok(served?)
}
