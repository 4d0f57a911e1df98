//! The scheduling policy: which waiting chunk a free slot goes to, and which worker's slot
//! a chunk takes. Chunks wait in one queue ordered by [`QueuePriority`] (the job's
//! submission order, then longest chunk first, then index); a chunk takes the least loaded
//! worker with a free slot and its job's encoder, avoiding workers that failed it before.

use std::collections::{HashMap, HashSet};

use framefleet_common::codec::VideoEncoder;

use super::worker::Entry;

/// Where a chunk stands in the queue: lower sorts first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueuePriority {
    /// Submission order of the job.
    pub job_seq: u64,
    /// Longest chunk first: the chunk's frame count, negated.
    pub neg_frames: i64,
    /// Then by chunk index.
    pub index: u32,
}

/// The least loaded idle worker that has `encoder`, avoiding `avoid` unless every such
/// worker is in it.
pub(super) fn pick_worker(
    workers: &HashMap<String, Entry>,
    avoid: &HashSet<String>,
    encoder: Option<VideoEncoder>,
) -> Option<String> {
    let everyone_avoided = workers
        .iter()
        .filter(|(_, entry)| entry.encodes(encoder))
        .all(|(id, entry)| entry.draining || avoid.contains(id));
    workers
        .iter()
        .filter(|(_, entry)| entry.encodes(encoder))
        .filter(|(id, entry)| entry.free() > 0 && (everyone_avoided || !avoid.contains(*id)))
        .min_by(|(a_id, a), (b_id, b)| {
            let load = |e: &Entry| f64::from(e.busy()) / f64::from(e.info.slots);
            load(a).total_cmp(&load(b)).then_with(|| a_id.cmp(b_id))
        })
        .map(|(id, _)| id.clone())
}
