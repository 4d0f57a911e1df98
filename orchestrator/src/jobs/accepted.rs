//! What an accepted chunk is, in the two forms the orchestrator holds it: the durable
//! record ([`AcceptedChunk`], what the job store keeps so a restart can reuse the chunk)
//! and the run-time record ([`FinishedChunk`], that record plus how this run came by it,
//! which the cost report draws). Both sit below dispatch, the job store and the report,
//! which all share them.

use framefleet_common::proto::{ChunkRange, ChunkResult};
use framefleet_common::storage::ObjectUri;

/// A chunk whose objects passed the acceptance checks, as the job store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedChunk {
    /// The range it holds.
    pub range: ChunkRange,
    /// The worker's report of the accepted attempt.
    pub result: ChunkResult,
    /// The chunk object.
    pub output: ObjectUri,
    /// Its size in bytes when it was accepted.
    pub output_bytes: u64,
    /// The packet log of the input's copied streams (audio, subtitles) in the chunk's
    /// span, when the job copies any.
    pub packet_log: Option<ObjectUri>,
    /// Attempts made, the accepted one included.
    pub attempts: u32,
    /// GPU-seconds of failed attempts, measured by the orchestrator.
    pub wasted_gpu_seconds: f64,
}

/// How this run of the orchestrator came by an accepted chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ChunkTiming {
    /// Dispatched in this run: when its accepted attempt held a worker's slot.
    Ran(ChunkTimeline),
    /// Accepted before a restart and reused after its objects passed the checks again;
    /// it held no slot in this run.
    Reused,
}

/// When an accepted attempt held its worker's slot, in seconds since the job was accepted
/// by this orchestrator run: what the report's waterfall draws.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChunkTimeline {
    /// The attempt got its slot and sent the chunk.
    pub started_seconds: f64,
    /// The chunk object passed its checks.
    pub accepted_seconds: f64,
}

/// An accepted chunk as the current run holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedChunk {
    /// What the job store keeps.
    pub chunk: AcceptedChunk,
    /// How this run came by it.
    pub timing: ChunkTiming,
    /// Why each of this run's attempts that was not accepted failed, oldest first.
    pub failures: Vec<String>,
}

impl FinishedChunk {
    /// A chunk accepted before a restart and trusted again.
    pub fn reused(chunk: AcceptedChunk) -> Self {
        Self {
            chunk,
            timing: ChunkTiming::Reused,
            failures: Vec::new(),
        }
    }

    /// When it held its slot in this run (zeros for a reused chunk).
    pub fn timeline(&self) -> ChunkTimeline {
        match self.timing {
            ChunkTiming::Ran(timeline) => timeline,
            ChunkTiming::Reused => ChunkTimeline::default(),
        }
    }
}
