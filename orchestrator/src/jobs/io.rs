//! A job's storage traffic, counted apart by what it touches, so the cost report can say
//! how much of the input the orchestrator read and what the chunks and the output cost.

use framefleet_common::storage::Storage;

/// The storage handles of one job's run.
pub struct JobIo {
    /// Reads of the job's input (probe, the stitch's look at its headers).
    pub input: Storage,
    /// Chunk objects: checks, stitch reads, deletes.
    pub scratch: Storage,
    /// The output upload.
    pub output: Storage,
}

impl JobIo {
    /// Fresh counters over `storage`.
    pub fn new(storage: &Storage) -> Self {
        Self {
            input: storage.counted(),
            scratch: storage.counted(),
            output: storage.counted(),
        }
    }
}
