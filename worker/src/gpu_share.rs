//! Where a chunk's GPU-seconds are counted: each chunk is charged, moment by moment, its
//! share of the worker's GPUs.
//!
//! A worker holds `G` GPUs and runs up to `S` chunks at once. While `b` chunks run, each
//! holds `G / max(b, min(S, G))` GPUs: a slot that owns whole GPUs (`S <= G`) is charged
//! them, busy or not its neighbours; slots that share GPUs (`S > G`, several chunks feeding
//! one GPU so the host cores all encode) split them among the chunks running. The shares
//! of chunks running together add up to the GPUs in use, so a job's reported GPU-seconds
//! are the GPU time it really held. The ledger integrates one rate for every running
//! chunk (they all hold the same share at any moment): a chunk's charge is how far that
//! integral moved between its start and its end.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The worker's GPUs and the chunks sharing them.
#[derive(Debug)]
pub struct GpuLedger {
    gpus: f64,
    /// Chunks that hold whole GPUs at most: `min(slots, gpus)`.
    exclusive: f64,
    state: Mutex<Ledger>,
}

#[derive(Debug)]
struct Ledger {
    running: u32,
    /// GPU-seconds one running chunk has been charged since the ledger began.
    per_chunk: f64,
    updated: Instant,
}

/// One chunk's hold on its share of the GPUs, from [`GpuLedger::start`] to
/// [`GpuHold::finish`] (or its drop).
#[derive(Debug)]
pub struct GpuHold {
    ledger: Arc<GpuLedger>,
    from: f64,
    finished: bool,
}

impl GpuLedger {
    /// A ledger for a worker holding `gpus` GPUs and running up to `slots` chunks.
    pub fn new(gpus: u32, slots: u32) -> Arc<Self> {
        Arc::new(Self {
            gpus: f64::from(gpus),
            exclusive: f64::from(slots.min(gpus).max(1)),
            state: Mutex::new(Ledger {
                running: 0,
                per_chunk: 0.0,
                updated: Instant::now(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the integral up to `now` at the rate of the chunks running until then.
    fn advance(&self, ledger: &mut Ledger, now: Instant) {
        if ledger.running > 0 {
            let seconds = now.saturating_duration_since(ledger.updated).as_secs_f64();
            let share = self.gpus / f64::from(ledger.running).max(self.exclusive);
            ledger.per_chunk += seconds * share;
        }
        ledger.updated = now;
    }

    /// A chunk starts holding its share at `now`.
    pub fn start_at(self: &Arc<Self>, now: Instant) -> GpuHold {
        let mut ledger = self.lock();
        self.advance(&mut ledger, now);
        ledger.running += 1;
        GpuHold {
            ledger: self.clone(),
            from: ledger.per_chunk,
            finished: false,
        }
    }

    /// A chunk starts holding its share now.
    pub fn start(self: &Arc<Self>) -> GpuHold {
        self.start_at(Instant::now())
    }
}

impl GpuHold {
    /// The chunk lets go at `now`: the GPU-seconds it held.
    pub fn finish_at(mut self, now: Instant) -> f64 {
        self.release(now)
    }

    /// The chunk lets go now: the GPU-seconds it held.
    pub fn finish(self) -> f64 {
        self.finish_at(Instant::now())
    }

    fn release(&mut self, now: Instant) -> f64 {
        self.finished = true;
        let mut ledger = self.ledger.lock();
        self.ledger.advance(&mut ledger, now);
        ledger.running = ledger.running.saturating_sub(1);
        ledger.per_chunk - self.from
    }
}

impl Drop for GpuHold {
    fn drop(&mut self) {
        if !self.finished {
            self.release(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(origin: Instant, seconds: u64) -> Instant {
        origin + Duration::from_secs(seconds)
    }

    #[test]
    fn chunks_sharing_one_gpu_split_it_and_add_up_to_its_busy_time() {
        let ledger = GpuLedger::new(1, 2);
        let t0 = Instant::now();
        let a = ledger.start_at(at(t0, 0));
        let b = ledger.start_at(at(t0, 5));
        let a_charge = a.finish_at(at(t0, 10));
        let b_charge = b.finish_at(at(t0, 15));
        // a: 5 s alone + 5 s shared; b: 5 s shared + 5 s alone.
        assert!((a_charge - 7.5).abs() < 1e-9, "{a_charge}");
        assert!((b_charge - 7.5).abs() < 1e-9, "{b_charge}");
        assert!(
            (a_charge + b_charge - 15.0).abs() < 1e-9,
            "the GPU was busy 15 s"
        );
        // Idle time is nobody's: a chunk after a gap pays only its own seconds.
        let c = ledger.start_at(at(t0, 100));
        assert!((c.finish_at(at(t0, 104)) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn slots_that_own_their_gpus_are_charged_them_whoever_else_runs() {
        let ledger = GpuLedger::new(4, 2);
        let t0 = Instant::now();
        let a = ledger.start_at(at(t0, 0));
        let b = ledger.start_at(at(t0, 2));
        assert!((b.finish_at(at(t0, 4)) - 4.0).abs() < 1e-9, "2 s x 2 GPUs");
        assert!(
            (a.finish_at(at(t0, 10)) - 20.0).abs() < 1e-9,
            "10 s x 2 GPUs"
        );
    }

    #[test]
    fn four_chunks_on_two_gpus_hold_one_each_until_more_run() {
        let ledger = GpuLedger::new(2, 4);
        let t0 = Instant::now();
        let holds: Vec<GpuHold> = (0..4).map(|_| ledger.start_at(at(t0, 0))).collect();
        let charges: Vec<f64> = holds.into_iter().map(|h| h.finish_at(at(t0, 8))).collect();
        for charge in &charges {
            assert!((charge - 4.0).abs() < 1e-9, "{charges:?}");
        }
        let alone = ledger.start_at(at(t0, 20));
        assert!(
            (alone.finish_at(at(t0, 23)) - 3.0).abs() < 1e-9,
            "one GPU, not two"
        );
    }

    #[test]
    fn a_dropped_hold_leaves_the_share_to_the_others() {
        let ledger = GpuLedger::new(1, 2);
        let t0 = Instant::now();
        let a = ledger.start_at(at(t0, 0));
        let b = ledger.start_at(at(t0, 0));
        drop(b);
        // b dropped just now (real time, after t0 + 0): a ran alone from then on.
        let charge = a.finish_at(Instant::now() + Duration::from_secs(10));
        assert!(charge > 9.9, "{charge}");
    }
}
