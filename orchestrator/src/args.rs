//! Command-line arguments of the orchestrator, shared by `framefleet-orchestrator` and
//! `framefleet orchestrator`.

use std::net::SocketAddr;
use std::path::PathBuf;

use framefleet_common::config::{Config, ConfigError};

/// Runs the orchestrator: accepts jobs, plans them, dispatches chunks to workers.
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestratorArgs {
    /// Configuration file (TOML); `FRAMEFLEET_*` variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides orchestrator.listen).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The job store file (overrides orchestrator.store_path).
    #[arg(long)]
    pub store: Option<PathBuf>,
}

impl OrchestratorArgs {
    /// The configuration these arguments select, overrides applied and validated.
    pub fn load_config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config.as_deref())?;
        if let Some(listen) = self.listen {
            config.orchestrator.listen = listen;
        }
        if let Some(store) = &self.store {
            config.orchestrator.store_path = store.display().to_string();
        }
        config.validate()?;
        Ok(config)
    }
}
