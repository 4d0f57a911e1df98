//! `framefleet`: parses arguments, runs the command, maps the result to an exit code.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match framefleet_cli::run(framefleet_cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("framefleet: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
