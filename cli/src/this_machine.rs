//! An orchestrator on this machine, as `framefleet local` runs one and `framefleet plan`
//! plans for one: the configuration for workers on loopback, and where this machine's cost
//! history lives.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use framefleet_common::config::{Config, TlsConfig};

/// Sets `config` up for an orchestrator in this process with `workers` workers on this
/// machine: no job store (one command, one job: nothing to resume after it exits), the
/// cost history at `store` or in the user's data folder, plans for those workers, and no
/// TLS (everything talks over loopback; tokens from the configuration still apply, and the
/// workers read the same configuration).
pub fn on_this_machine(
    config: &mut Config,
    workers: u32,
    store: Option<&Path>,
) -> anyhow::Result<()> {
    config.orchestrator.store_path = String::new();
    config.planner.history_path = history_path(store)?.display().to_string();
    config.planner.fleet_slots = workers * config.worker.slots.max(1);
    config.planner.fleet_hosts = 1;
    config.tls = TlsConfig::default();
    Ok(())
}

/// The cost history's file: `store`, else `$XDG_DATA_HOME/framefleet/history.sqlite3`,
/// else `~/.local/share/framefleet/history.sqlite3`.
pub fn history_path(store: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(store) = store {
        return Ok(store.to_path_buf());
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .context(
            "neither XDG_DATA_HOME nor HOME is set; give the cost history a place with --store",
        )?;
    Ok(data.join("framefleet/history.sqlite3"))
}
