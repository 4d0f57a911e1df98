//! Measured progress of one chunk: frames done per phase, updated by the pipeline's stages
//! and sampled by the server, which streams the changes to the orchestrator.

use std::sync::atomic::{AtomicU64, Ordering};

use framefleet_common::proto::{ChunkProgress, Phase};

/// Frames done per phase of one chunk; every stage writes its own counter.
#[derive(Debug)]
pub struct ChunkProgressCounters {
    total: u64,
    done: [AtomicU64; 6],
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
        if let Some(counter) = slot(&self.done, phase) {
            counter.fetch_max(frames.min(self.total), Ordering::Relaxed);
        }
    }

    /// Marks `phase` complete.
    pub fn finish(&self, phase: Phase) {
        self.set(phase, self.total);
    }

    /// Frames done in `phase`.
    pub fn get(&self, phase: Phase) -> u64 {
        slot(&self.done, phase).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// One progress message per phase whose count differs from `last` (which is updated).
    pub fn changes(&self, last: &mut [u64; 6]) -> Vec<ChunkProgress> {
        Phase::ALL
            .iter()
            .enumerate()
            .filter_map(|(i, &phase)| {
                let now = self.get(phase);
                (now != last[i]).then(|| {
                    last[i] = now;
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

fn slot(done: &[AtomicU64; 6], phase: Phase) -> Option<&AtomicU64> {
    Phase::ALL
        .iter()
        .position(|&p| p == phase)
        .map(|i| &done[i])
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
        let mut last = [0; 6];
        let changes = progress.changes(&mut last);
        assert_eq!(changes.len(), 2);
        assert!(progress.changes(&mut last).is_empty());
    }
}
