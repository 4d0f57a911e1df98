//! One job as the orchestrator holds it: its spec, its state published to watchers, its
//! cancel signal, its measured progress and, at the end, its cost report.
//!
//! Progress is folded from the workers' per-phase events: each chunk's completion is the
//! weighted sum of its phases' fractions, the job's is the frame-weighted mean of its
//! chunks' (95 %) plus the stitch (5 %). It never goes backwards, even when a chunk is
//! retried, and reaches 100 % only on success.

use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use framefleet_common::cost::CostReport;
use framefleet_common::phases::PerPhase;
use framefleet_common::proto::{ChunkProgress, Job, JobState, Phase, Plan, Progress};

use crate::validate::ValidJob;

/// Share of a chunk's work in `phase`.
fn phase_weight(phase: Phase) -> f64 {
    match phase {
        Phase::Unspecified => 0.0,
        Phase::Download | Phase::Init => 0.05,
        Phase::Decode | Phase::Encode => 0.2,
        Phase::Process => 0.4,
        Phase::Upload => 0.1,
    }
}

/// Share of the job that is chunk work; the rest is the stitch.
const CHUNK_SHARE: f64 = 95.0;

/// A job held by the orchestrator.
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// Submission order, used for queue priority.
    pub seq: u64,
    /// What was asked, checked and parsed.
    pub request: ValidJob,
    /// Fires when the job is cancelled.
    pub cancel: CancellationToken,
    /// When the job was accepted.
    pub accepted: Instant,
    state: watch::Sender<Job>,
    progress: Mutex<ProgressFold>,
    report: Mutex<Option<CostReport>>,
}

#[derive(Default)]
struct ProgressFold {
    frames_per_chunk: Vec<u64>,
    done: Vec<PerPhase<u64>>,
    chunks_done: Vec<bool>,
    percent: f64,
}

impl JobRecord {
    /// A new queued job.
    pub fn new(id: String, seq: u64, request: ValidJob) -> Self {
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let snapshot = Job {
            id: id.clone(),
            spec: Some(request.spec.clone()),
            state: JobState::Queued as i32,
            created_at,
            progress: Some(Progress::default()),
            ..Job::default()
        };
        Self {
            id,
            seq,
            request,
            cancel: CancellationToken::new(),
            accepted: Instant::now(),
            state: watch::Sender::new(snapshot),
            progress: Mutex::default(),
            report: Mutex::default(),
        }
    }

    /// A job read back from the job store at start, from its last recorded `snapshot`: an
    /// ended one as it ended, with its `report`; any other queued again, to be resumed.
    pub fn restore(
        id: String,
        seq: u64,
        request: ValidJob,
        mut snapshot: Job,
        report: Option<CostReport>,
    ) -> Self {
        let terminal = snapshot.state().is_terminal();
        if !terminal {
            snapshot.set_state(JobState::Queued);
        }
        Self {
            id,
            seq,
            request,
            cancel: CancellationToken::new(),
            accepted: Instant::now(),
            state: watch::Sender::new(snapshot),
            progress: Mutex::default(),
            report: Mutex::new(report.filter(|_| terminal)),
        }
    }

    /// The job as clients see it now.
    pub fn snapshot(&self) -> Job {
        self.state.borrow().clone()
    }

    /// Current state.
    pub fn state(&self) -> JobState {
        self.state.borrow().state()
    }

    /// A receiver that sees every later change.
    pub fn subscribe(&self) -> watch::Receiver<Job> {
        self.state.subscribe()
    }

    /// Moves to a non-terminal state (ignored once terminal).
    pub fn set_state(&self, state: JobState) {
        self.state.send_if_modified(|job| {
            if job.state().is_terminal() || job.state() == state {
                return false;
            }
            job.set_state(state);
            true
        });
    }

    /// Records the plan and sizes the progress fold to it.
    pub fn set_plan(&self, plan: &Plan) {
        {
            let mut fold = self.lock_progress();
            fold.frames_per_chunk = plan
                .ranges
                .iter()
                .map(|r| r.end_frame - r.start_frame)
                .collect();
            fold.done = vec![PerPhase::default(); plan.ranges.len()];
            fold.chunks_done = vec![false; plan.ranges.len()];
        }
        self.state.send_modify(|job| {
            job.plan = Some(plan.clone());
            job.progress = Some(Progress {
                frames_total: plan.frames,
                chunks_total: plan.chunks,
                phase: "queued".into(),
                ..Progress::default()
            });
        });
    }

    /// Folds one progress event of chunk `index` into the job's progress.
    pub fn chunk_progress(&self, index: u32, event: &ChunkProgress) {
        let progress = {
            let mut fold = self.lock_progress();
            let Some(done) = fold
                .done
                .get_mut(index as usize)
                .and_then(|done| done.get_mut(event.phase()))
            else {
                return;
            };
            *done = (*done).max(event.frames_done);
            fold.progress()
        };
        self.publish_progress(progress);
    }

    /// Marks chunk `index` finished and accepted.
    pub fn chunk_done(&self, index: u32) {
        let progress = {
            let mut fold = self.lock_progress();
            let frames = fold
                .frames_per_chunk
                .get(index as usize)
                .copied()
                .unwrap_or(0);
            if let Some(done) = fold.done.get_mut(index as usize) {
                *done = PerPhase::splat(frames);
            }
            if let Some(flag) = fold.chunks_done.get_mut(index as usize) {
                *flag = true;
            }
            fold.progress()
        };
        self.publish_progress(progress);
    }

    fn publish_progress(&self, progress: Progress) {
        self.state.send_if_modified(|job| {
            if job.progress.as_ref() == Some(&progress) {
                return false;
            }
            job.progress = Some(progress);
            true
        });
    }

    /// The snapshot this job would show once ended as `state` (with `error`), for the
    /// job store to record before [`finish`](Self::finish) publishes it.
    pub fn ending(&self, state: JobState, error: Option<String>) -> Job {
        let mut job = self.snapshot();
        job.set_state(state);
        job.error = error.unwrap_or_default();
        job.finished_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        if state == JobState::Succeeded {
            if let Some(progress) = &mut job.progress {
                progress.percent = 100.0;
                progress.frames_done = progress.frames_total;
                progress.chunks_done = progress.chunks_total;
                progress.phase = "done".into();
            }
        }
        job
    }

    /// Publishes the job's end (a snapshot from [`ending`](Self::ending)). Only the first
    /// call has any effect; the report is stored before watchers see the terminal state.
    pub fn finish(&self, ended: Job, report: Option<CostReport>) -> bool {
        if self.state().is_terminal() {
            return false;
        }
        if let Some(report) = report {
            *self.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        }
        self.state.send_if_modified(|job| {
            if job.state().is_terminal() {
                return false;
            }
            *job = ended;
            true
        })
    }

    /// The cost report, once the job has ended.
    pub fn report(&self) -> Option<CostReport> {
        self.report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Marks the stitch as started in the progress.
    pub fn stitching(&self) {
        self.set_state(JobState::Stitching);
        self.state.send_modify(|job| {
            if let Some(progress) = &mut job.progress {
                progress.phase = "stitch".into();
            }
        });
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, ProgressFold> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ProgressFold {
    fn progress(&mut self) -> Progress {
        let total: u64 = self.frames_per_chunk.iter().sum();
        let mut weighted = 0.0;
        let mut frames_done = 0;
        let mut slowest: Option<Phase> = None;
        for ((frames, done), finished) in self
            .frames_per_chunk
            .iter()
            .zip(&self.done)
            .zip(&self.chunks_done)
        {
            let fraction: f64 = done
                .iter()
                .map(|(phase, &d)| {
                    phase_weight(phase) * (d as f64 / (*frames).max(1) as f64).min(1.0)
                })
                .sum();
            weighted += fraction * *frames as f64;
            frames_done += done.value_or(Phase::Encode, 0).min(*frames);
            if !finished {
                let phase = done
                    .iter()
                    .find(|(_, &d)| d < *frames)
                    .map_or(Phase::Upload, |(phase, _)| phase);
                slowest = Some(slowest.map_or(phase, |s: Phase| s.min(phase)));
            }
        }
        let percent = CHUNK_SHARE * weighted / (total.max(1) as f64);
        self.percent = self.percent.max(percent);
        Progress {
            percent: self.percent,
            frames_done,
            frames_total: total,
            phase: slowest.map_or("stitch", Phase::label).to_string(),
            chunks_done: self.chunks_done.iter().filter(|&&d| d).count() as u32,
            chunks_total: self.frames_per_chunk.len() as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use framefleet_common::proto::{ChunkRange, JobSpec};

    fn plan(sizes: &[u64]) -> Plan {
        let mut start = 0;
        Plan {
            chunks: sizes.len() as u32,
            frames: sizes.iter().sum(),
            ranges: sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    start += n;
                    ChunkRange {
                        index: i as u32,
                        start_frame: start - n,
                        end_frame: start,
                        ..ChunkRange::default()
                    }
                })
                .collect(),
            ..Plan::default()
        }
    }

    fn event(phase: Phase, frames: u64) -> ChunkProgress {
        ChunkProgress {
            phase: phase as i32,
            frames_done: frames,
            frames_total: 10,
        }
    }

    #[test]
    fn progress_is_weighted_monotonic_and_complete_only_on_success() {
        let spec = JobSpec {
            input_uri: "file:///in.mp4".into(),
            output_uri: "file:///out.mp4".into(),
            ..JobSpec::default()
        };
        let request = ValidJob::parse(spec, &Default::default()).expect("valid");
        let job = JobRecord::new("j".into(), 0, request);
        job.set_plan(&plan(&[10, 10]));
        job.chunk_progress(0, &event(Phase::Process, 10));
        let after_process = job.snapshot().progress.unwrap_or_default();
        assert!((after_process.percent - 95.0 * 0.4 * 0.5).abs() < 1e-9);
        assert_eq!(after_process.phase, "download");
        // A retry starting over does not take progress back.
        job.chunk_progress(0, &event(Phase::Process, 2));
        assert_eq!(
            job.snapshot().progress.unwrap_or_default().percent,
            after_process.percent
        );
        job.chunk_done(0);
        job.chunk_done(1);
        let chunks_done = job.snapshot().progress.unwrap_or_default();
        assert!((chunks_done.percent - 95.0).abs() < 1e-9);
        assert_eq!(chunks_done.frames_done, 20);
        assert!(job.finish(job.ending(JobState::Succeeded, None), None));
        assert_eq!(job.snapshot().progress.unwrap_or_default().percent, 100.0);
        assert!(!job.finish(job.ending(JobState::Failed, Some("late".into())), None));
        assert_eq!(job.state(), JobState::Succeeded);
    }
}
