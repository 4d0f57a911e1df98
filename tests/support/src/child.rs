//! Child processes of the tests: killed when their handle drops, and with the test
//! process (`PR_SET_PDEATHSIG`) if it dies first.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// A child process killed on drop.
pub struct Process {
    /// The child.
    pub child: Child,
}

impl Process {
    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child with a valid signal.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn die_with_parent(command: &mut Command) {
    // SAFETY: runs in the forked child before exec and only calls prctl, which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}
