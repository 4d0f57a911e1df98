//! Measured progress of one chunk: frames done per phase, updated by the pipeline's stages
//! and sampled by the server, which streams the changes to the orchestrator.

use std::sync::atomic::{AtomicU64, Ordering};

use framefleet_common::phases::PerPhase;
use framefleet_common::proto::{ChunkProgress, Phase};

/// Frames done per phase of one chunk; every stage writes its own counter.
#[derive(Debug)]
pub struct ChunkProgressCounters {
    total: u64,
    done: PerPhase<AtomicU64>,
}

impl ChunkProgressCounters {
    /// Counters for a chunk of `total` frames.
    pub fn new(total: u64) -> Self {
        Self {
            total,
            done: Default::default(),
        }
    }

    /// Sets the frames done in `phase` (never beyond the total, never backwards).
    pub fn set(&self, phase: Phase, frames: u64) {
        if let Some(counter) = self.done.get(phase) {
            counter.fetch_max(frames.min(self.total), Ordering::Relaxed);
        }
    }

    /// Marks `phase` complete.
    pub fn finish(&self, phase: Phase) {
        self.set(phase, self.total);
    }

    /// Frames done in `phase`.
    pub fn get(&self, phase: Phase) -> u64 {
        self.done
            .get(phase)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// One progress message per phase whose count differs from `last` (which is updated).
    pub fn changes(&self, last: &mut PerPhase<u64>) -> Vec<ChunkProgress> {
        Phase::ALL
            .into_iter()
            .filter_map(|phase| {
                let now = self.get(phase);
                let seen = last.get_mut(phase)?;
                (now != *seen).then(|| {
                    *seen = now;
                    ChunkProgress {
                        phase: phase as i32,
                        frames_done: now,
                        frames_total: self.total,
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_only_rise_and_report_changes_once() {
        let progress = ChunkProgressCounters::new(10);
        progress.set(Phase::Decode, 4);
        progress.set(Phase::Decode, 2);
        progress.set(Phase::Process, 40);
        assert_eq!(progress.get(Phase::Decode), 4);
        assert_eq!(progress.get(Phase::Process), 10);
        let mut last = PerPhase::default();
        let changes = progress.changes(&mut last);
        assert_eq!(changes.len(), 2);
        assert!(progress.changes(&mut last).is_empty());
    }
}
