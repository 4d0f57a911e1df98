//! `framefleet-worker`: parses arguments, runs the worker, maps the result to an exit code.

use clap::Parser;

/// A framefleet GPU worker.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    worker: framefleet_worker::WorkerArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match framefleet_worker::run(Cli::parse().worker).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("framefleet-worker: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
