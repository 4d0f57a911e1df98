//! The orchestrator's Prometheus metrics: jobs submitted and ended by state, chunk attempts
//! by outcome and accepted chunks' GPU-seconds (counted as they happen), and the jobs
//! queued and running, chunks waiting for a slot, registered workers and their slots
//! (read from live state at each scrape).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use framefleet_common::proto::JobState;
use framefleet_common::telemetry::metrics;

/// One label: `(name, value)`.
type Label = [(&'static str, &'static str); 1];

/// The orchestrator's metrics.
pub struct OrchestratorMetrics {
    registry: Registry,
    jobs_submitted: Counter,
    jobs_ended: Family<Label, Counter>,
    chunk_attempts: Family<Label, Counter>,
    chunk_gpu_seconds: Histogram,
    gpu_seconds: Counter<f64, AtomicU64>,
    jobs: Family<Label, Gauge>,
    chunks_waiting: Gauge,
    workers: Gauge,
    slots: Family<Label, Gauge>,
}

/// How a chunk attempt ended.
#[derive(Clone, Copy, Debug)]
pub enum AttemptOutcome {
    /// Its object passed the checks.
    Accepted,
    /// It failed; the chunk may be retried.
    Failed,
}

impl Default for OrchestratorMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("framefleet");
        let jobs_submitted = Counter::default();
        registry.register(
            "jobs_submitted",
            "Jobs accepted by SubmitJob (repeats of an idempotency key not counted)",
            jobs_submitted.clone(),
        );
        let jobs_ended = Family::<Label, Counter>::default();
        registry.register(
            "jobs_ended",
            "Jobs that reached a terminal state, by state",
            jobs_ended.clone(),
        );
        let chunk_attempts = Family::<Label, Counter>::default();
        registry.register(
            "chunk_attempts",
            "Chunk attempts that ended, by outcome (accepted or failed)",
            chunk_attempts.clone(),
        );
        let chunk_gpu_seconds = Histogram::new(exponential_buckets(0.5, 2.0, 14));
        registry.register(
            "chunk_gpu_seconds",
            "GPU-seconds of each accepted chunk attempt",
            chunk_gpu_seconds.clone(),
        );
        let gpu_seconds = Counter::<f64, AtomicU64>::default();
        registry.register(
            "gpu_seconds",
            "GPU-seconds of ended jobs, wasted attempts included",
            gpu_seconds.clone(),
        );
        let jobs = Family::<Label, Gauge>::default();
        registry.register(
            "jobs",
            "Jobs not yet ended, by state (queued: waiting for a running permit)",
            jobs.clone(),
        );
        let chunks_waiting = Gauge::default();
        registry.register(
            "chunks_waiting",
            "Chunks waiting for a free worker slot (the queue depth)",
            chunks_waiting.clone(),
        );
        let workers = Gauge::default();
        registry.register("workers", "Registered workers", workers.clone());
        let slots = Family::<Label, Gauge>::default();
        registry.register(
            "worker_slots",
            "Slots of the registered workers, by state (busy or free)",
            slots.clone(),
        );
        Self {
            registry,
            jobs_submitted,
            jobs_ended,
            chunk_attempts,
            chunk_gpu_seconds,
            gpu_seconds,
            jobs,
            chunks_waiting,
            workers,
            slots,
        }
    }
}

impl OrchestratorMetrics {
    /// A job was accepted.
    pub fn job_submitted(&self) {
        self.jobs_submitted.inc();
    }

    /// A job ended in `state` after using `gpu_seconds`.
    pub fn job_ended(&self, state: JobState, gpu_seconds: f64) {
        self.jobs_ended
            .get_or_create(&[("state", state_label(state))])
            .inc();
        if gpu_seconds.is_finite() && gpu_seconds > 0.0 {
            self.gpu_seconds.inc_by(gpu_seconds);
        }
    }

    /// A chunk attempt ended; `gpu_seconds` of an accepted one go into the histogram.
    pub fn attempt_ended(&self, outcome: AttemptOutcome, gpu_seconds: f64) {
        let label = match outcome {
            AttemptOutcome::Accepted => {
                self.chunk_gpu_seconds.observe(gpu_seconds);
                "accepted"
            }
            AttemptOutcome::Failed => "failed",
        };
        self.chunk_attempts
            .get_or_create(&[("outcome", label)])
            .inc();
    }

    /// Renders every metric, with the gauges set to `now`.
    pub fn render(&self, now: &Gauges) -> Result<String, std::fmt::Error> {
        let mut open = [
            ("queued", 0i64),
            ("probing", 0),
            ("running", 0),
            ("stitching", 0),
        ];
        for &state in &now.job_states {
            if let Some(slot) = open
                .iter_mut()
                .find(|(name, _)| *name == state_label(state))
            {
                slot.1 += 1;
            }
        }
        for (state, count) in open {
            self.jobs.get_or_create(&[("state", state)]).set(count);
        }
        self.chunks_waiting.set(now.chunks_waiting as i64);
        self.workers.set(now.workers as i64);
        self.slots
            .get_or_create(&[("state", "busy")])
            .set(i64::from(now.busy_slots));
        self.slots
            .get_or_create(&[("state", "free")])
            .set(i64::from(now.slots.saturating_sub(now.busy_slots)));
        metrics::encode(&self.registry)
    }
}

/// The live state the gauges show, read at each scrape.
#[derive(Debug, Default)]
pub struct Gauges {
    /// The state of every job held.
    pub job_states: Vec<JobState>,
    /// Chunks waiting for a slot.
    pub chunks_waiting: usize,
    /// Registered workers.
    pub workers: usize,
    /// Their slots.
    pub slots: u32,
    /// Of which busy.
    pub busy_slots: u32,
}

/// Lower-case state names, as Prometheus labels usually are.
fn state_label(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "unspecified",
        JobState::Queued => "queued",
        JobState::Probing => "probing",
        JobState::Running => "running",
        JobState::Stitching => "stitching",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_exposed_with_their_labels() {
        let metrics = OrchestratorMetrics::default();
        metrics.job_submitted();
        metrics.job_ended(JobState::Succeeded, 12.5);
        metrics.attempt_ended(AttemptOutcome::Accepted, 3.0);
        metrics.attempt_ended(AttemptOutcome::Failed, 0.0);
        let now = Gauges {
            job_states: vec![JobState::Running, JobState::Queued, JobState::Running],
            chunks_waiting: 3,
            workers: 2,
            slots: 4,
            busy_slots: 1,
        };
        let text = metrics.render(&now).expect("encodes");
        for line in [
            "framefleet_jobs_submitted_total 1",
            "framefleet_jobs_ended_total{state=\"succeeded\"} 1",
            "framefleet_chunk_attempts_total{outcome=\"accepted\"} 1",
            "framefleet_chunk_attempts_total{outcome=\"failed\"} 1",
            "framefleet_gpu_seconds_total 12.5",
            "framefleet_chunk_gpu_seconds_count 1",
            "framefleet_jobs{state=\"running\"} 2",
            "framefleet_chunks_waiting 3",
            "framefleet_worker_slots{state=\"free\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
