//! What a job's run records as it goes, one log per input: the plan, the accepted chunks,
//! the probe's and the stitch's times, the input's size and what became of it (done,
//! failed or skipped). The report and the
//! cost samples are built from these logs when the job ends.

use std::sync::{Mutex, MutexGuard};

use framefleet_common::proto::Plan;
use framefleet_common::storage::Storage;

use crate::jobs::accepted::FinishedChunk;
use crate::jobs::io::JobIo;
use crate::jobs::validate::{InputPair, ValidJob};

/// What one input's run recorded.
#[derive(Debug, Default)]
pub struct RunLog {
    /// Planner profile used.
    pub profile: String,
    /// The plan, once made, its chunks numbered in the job's numbering.
    pub plan: Option<Plan>,
    /// Chunks accepted so far.
    pub accepted: Vec<FinishedChunk>,
    /// When probing began, in seconds since the job was accepted.
    pub probe_started_seconds: f64,
    /// Seconds spent probing.
    pub probe_seconds: f64,
    /// When stitching began, in seconds since the job was accepted.
    pub stitch_started_seconds: f64,
    /// Seconds spent stitching and uploading.
    pub stitch_seconds: f64,
    /// Size of the input object.
    pub input_size_bytes: u64,
    /// Input frame size, width times height.
    pub input_pixels: u64,
    /// Notes for the report's reader.
    pub notes: Vec<String>,
    /// Why this input failed the job or was skipped.
    pub error: Option<String>,
    /// The input could not be read and the job skips such inputs.
    pub skipped: bool,
}

/// One input of a job as it runs: what it reads and writes, its own storage counters (so
/// the report can say what each input read) and its log.
pub struct InputRun {
    /// Position in the job's list of inputs.
    pub index: u32,
    /// The input and its output.
    pub pair: InputPair,
    /// Its storage traffic, counted apart from the other inputs'.
    pub io: JobIo,
    log: Mutex<RunLog>,
}

impl InputRun {
    /// One run per input of `request`, each with fresh counters over `storage`.
    pub fn for_job(request: &ValidJob, storage: &Storage) -> Vec<InputRun> {
        request
            .inputs
            .iter()
            .zip(0u32..)
            .map(|(pair, index)| InputRun {
                index,
                pair: pair.clone(),
                io: JobIo::new(storage),
                log: Mutex::default(),
            })
            .collect()
    }

    /// The input's log, to read or add to.
    pub fn log(&self) -> MutexGuard<'_, RunLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The input's file name, which names it in messages and notes.
    pub fn name(&self) -> &str {
        self.pair.input.file_name()
    }
}
