//! Straggler detection: when every other chunk of a job is done and one still runs far
//! longer than its peers took (`dispatch.straggler_factor` times their median, and at least
//! `dispatch.straggler_min_seconds`), dispatch starts a backup attempt of it on another
//! worker and keeps whichever finishes first.

use std::sync::Mutex;
use std::time::Duration;

use framefleet_common::config::DispatchConfig;

/// How long the chunks of one job took, shared by the job's chunk dispatches.
#[derive(Debug)]
pub struct ChunkPeers {
    chunks: usize,
    done: Mutex<Vec<f64>>,
}

impl ChunkPeers {
    /// Peers of a job cut into `chunks` chunks, none done yet.
    pub fn new(chunks: usize) -> Self {
        Self {
            chunks,
            done: Mutex::default(),
        }
    }

    /// Records a chunk accepted after `seconds` of work.
    pub fn finished(&self, seconds: f64) {
        self.lock().push(seconds);
    }

    /// True when a chunk running for `elapsed` is the last one left and far slower than
    /// its peers were.
    pub fn is_straggler(&self, elapsed: Duration, config: &DispatchConfig) -> bool {
        if config.straggler_factor <= 0.0 {
            return false;
        }
        let mut done = self.lock().clone();
        if self.chunks < 2 || done.len() + 1 != self.chunks {
            return false;
        }
        done.sort_by(f64::total_cmp);
        let median = done[done.len() / 2];
        let elapsed = elapsed.as_secs_f64();
        elapsed >= config.straggler_min_seconds && elapsed > config.straggler_factor * median
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<f64>> {
        self.done.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_chunk_far_behind_its_peers_is_a_straggler() {
        let config = DispatchConfig {
            straggler_factor: 3.0,
            straggler_min_seconds: 5.0,
            ..DispatchConfig::default()
        };
        let peers = ChunkPeers::new(3);
        let secs = Duration::from_secs;
        peers.finished(2.0);
        assert!(
            !peers.is_straggler(secs(60), &config),
            "two chunks still run"
        );
        peers.finished(4.0);
        assert!(!peers.is_straggler(secs(4), &config), "under the minimum");
        assert!(
            !peers.is_straggler(secs(12), &config),
            "3x the median of 4 s is 12 s"
        );
        assert!(peers.is_straggler(secs(13), &config));
        let off = DispatchConfig {
            straggler_factor: 0.0,
            ..config.clone()
        };
        assert!(!peers.is_straggler(secs(600), &off));
        assert!(!ChunkPeers::new(1).is_straggler(secs(600), &config));
    }
}
