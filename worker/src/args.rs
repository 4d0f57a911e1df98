//! Command-line arguments of a worker, shared by `framefleet-worker` and `framefleet worker`.

use std::net::SocketAddr;
use std::path::PathBuf;

use framefleet_common::config::{Config, ConfigError};

/// Runs a GPU worker that registers with an orchestrator and processes chunks.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Configuration file (TOML); `FRAMEFLEET_*` variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides worker.listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Orchestrator to register with (overrides worker.orchestrator_url).
    #[arg(long)]
    pub orchestrator: Option<String>,
    /// Name shown in reports (overrides worker.name).
    #[arg(long)]
    pub name: Option<String>,
}

impl WorkerArgs {
    /// The configuration these arguments select, overrides applied and validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.worker.listen = listen;
        }
        if let Some(url) = &self.orchestrator {
            config.worker.orchestrator_url = url.clone();
        }
        if let Some(name) = &self.name {
            config.worker.name = name.clone();
        }
        config.validate()?;
        Ok(config)
    }
}
