//! The worker's Prometheus metrics: chunks ended by outcome, frames produced and busy
//! seconds per pipeline phase (counted as chunks end), and the chunks running now (given
//! at each scrape by the server, which reads the worker's slots).

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use framefleet_common::phases::PerPhase;
use framefleet_common::telemetry::metrics;

/// One label: `(name, value)`.
type Label = [(&'static str, &'static str); 1];

/// How a chunk ended on this worker.
#[derive(Clone, Copy, Debug)]
pub enum ChunkOutcome {
    /// Uploaded with every frame.
    Done,
    /// Failed with an error.
    Failed,
    /// Cancelled: given up by the orchestrator, handed back, or past its deadline.
    Cancelled,
}

/// The worker's metrics.
pub struct WorkerMetrics {
    registry: Registry,
    chunks: Family<Label, Counter>,
    frames: Counter,
    phase_seconds: Family<Label, Counter<f64, AtomicU64>>,
    running: Gauge,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("framefleet_worker");
        let chunks = Family::<Label, Counter>::default();
        registry.register(
            "chunks",
            "Chunks that ended on this worker, by outcome (done, failed, cancelled)",
            chunks.clone(),
        );
        let frames = Counter::default();
        registry.register(
            "frames",
            "Frames of the chunks done (decoded, processed, encoded and uploaded)",
            frames.clone(),
        );
        let phase_seconds = Family::<Label, Counter<f64, AtomicU64>>::default();
        registry.register(
            "phase_seconds",
            "Busy seconds of done chunks, by pipeline phase",
            phase_seconds.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "chunks_running",
            "Chunks being processed now",
            running.clone(),
        );
        Self {
            registry,
            chunks,
            frames,
            phase_seconds,
            running,
        }
    }
}

impl WorkerMetrics {
    /// A chunk ended; a done one adds its frames and its busy seconds per phase.
    pub fn chunk_ended(&self, outcome: ChunkOutcome, frames: u64, phase_seconds: &PerPhase<f64>) {
        let label = match outcome {
            ChunkOutcome::Done => "done",
            ChunkOutcome::Failed => "failed",
            ChunkOutcome::Cancelled => "cancelled",
        };
        self.chunks.get_or_create(&[("outcome", label)]).inc();
        if let ChunkOutcome::Done = outcome {
            self.frames.inc_by(frames);
            for (phase, seconds) in phase_seconds.iter() {
                self.phase_seconds
                    .get_or_create(&[("phase", phase.label())])
                    .inc_by(*seconds);
            }
        }
    }

    /// Renders every metric, with `running` chunks being processed now.
    pub fn render(&self, running: u32) -> Result<String, std::fmt::Error> {
        self.running.set(i64::from(running));
        metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_chunks_add_frames_and_phase_seconds() {
        let metrics = WorkerMetrics::default();
        let seconds = [0.5, 0.0, 1.0, 2.0, 3.0, 0.25];
        let mut next = seconds.iter();
        let done = PerPhase::from_fn(|_| next.next().copied().unwrap_or_default());
        metrics.chunk_ended(ChunkOutcome::Done, 48, &done);
        metrics.chunk_ended(ChunkOutcome::Cancelled, 10, &PerPhase::splat(1.0));
        let text = metrics.render(2).expect("encodes");
        for line in [
            "framefleet_worker_chunks_total{outcome=\"done\"} 1",
            "framefleet_worker_chunks_total{outcome=\"cancelled\"} 1",
            "framefleet_worker_frames_total 48",
            "framefleet_worker_phase_seconds_total{phase=\"process\"} 2.0",
            "framefleet_worker_chunks_running 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }
}
