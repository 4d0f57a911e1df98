//! framefleet child processes: the binary under test, killed when their handle drops and
//! with the test process.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::child::Process;
use crate::garage::storage_env;

/// The `framefleet` binary under test.
pub fn framefleet() -> Command {
    let mut command = Command::new(framefleet_binary());
    command.envs(storage_env()).env("RUST_LOG", "warn");
    command
}

/// `framefleet local`, quiet, ready for its arguments.
pub fn framefleet_local() -> Command {
    let mut command = Command::new(framefleet_binary());
    command.arg("local").env("RUST_LOG", "warn");
    command
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
/// binary's folder (cargo puts integration tests in `target/<profile>/deps/` and builds the
/// package's binaries into `target/<profile>/` before running them).
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
        "no framefleet binary at {}: run the tests with cargo test, which builds it, or set \
         FRAMEFLEET_BIN",
        binary.display()
    );
    binary
}
