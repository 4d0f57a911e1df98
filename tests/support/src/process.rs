//! framefleet child processes: the binary under test, killed when their handle drops and
//! with the test process.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crate::child::Process;
use crate::garage::storage_env;

/// The `framefleet` binary under test.
pub fn framefleet() -> Command {
    let mut command = Command::new(framefleet_binary());
    command.envs(storage_env()).env("RUST_LOG", "warn");
    command
}

/// `framefleet local`, quiet, ready for its arguments, with a cost history of its own (a
/// fresh data folder), so what other tests ran does not change how it plans; pass
/// `--store` to share one.
pub fn framefleet_local() -> Command {
    let mut command = Command::new(framefleet_binary());
    command
        .arg("local")
        .env("RUST_LOG", "warn")
        .env("XDG_DATA_HOME", fresh_data_folder());
    command
}

/// Runs `command` to its end and returns what it wrote, failing the test with its stderr
/// when it exits unsuccessfully: the check every run that must work repeats.
pub fn succeeds(command: &mut Command) -> Output {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// An empty folder, under one temporary folder per test process.
fn fresh_data_folder() -> PathBuf {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = ROOT.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("framefleet-test-data-")
            .tempdir()
            .expect("a temporary folder")
    });
    root.path()
        .join(NEXT.fetch_add(1, Ordering::Relaxed).to_string())
}

/// Spawns a framefleet process with `settings`, its stdout discarded and its log (stderr)
/// appended to `log` when given.
pub(crate) fn spawn_quiet(
    command: &mut Command,
    settings: &[(String, String)],
    log: Option<&Path>,
) -> Process {
    command.envs(settings.iter().cloned());
    command.stdin(Stdio::null()).stdout(Stdio::null());
    if let Some(path) = log {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("log file");
        command.stderr(file);
    }
    Process {
        child: command.spawn().expect("framefleet starts"),
    }
}

/// Where the `framefleet` binary under test is: `FRAMEFLEET_BIN`, else beside the test
/// binary's folder (cargo puts the tests in `target/<profile>/deps/`, and `cargo build
/// --bins` the binary in `target/<profile>/`).
pub fn framefleet_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FRAMEFLEET_BIN") {
        return PathBuf::from(path);
    }
    let test = std::env::current_exe().expect("the test binary's path");
    let profile = test
        .parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps");
    let binary = profile.join("framefleet");
    assert!(
        binary.is_file(),
        "no framefleet binary at {}: build it first (cargo build --workspace --all-features \
         --bins, as scripts/test.sh does) or set FRAMEFLEET_BIN",
        binary.display()
    );
    binary
}
