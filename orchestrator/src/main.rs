//! `framefleet-orchestrator`: parses arguments, runs the orchestrator, maps the result to
//! an exit code.

use clap::Parser;

/// The framefleet orchestrator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    orchestrator: framefleet_orchestrator::OrchestratorArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match framefleet_orchestrator::run(Cli::parse().orchestrator).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("framefleet-orchestrator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
