//! One job as the orchestrator holds it: its spec, its state published to watchers, its
//! cancel signal, its measured progress and, at the end, its cost report.
//!
//! Progress is folded from the workers' per-phase events: each chunk's completion is the
//! weighted sum of its phases' fractions, the job's is the frame-weighted mean of its
//! chunks' (95 %) plus the stitch (5 %). It never goes backwards, even when a chunk is
//! retried, and reaches 100 % only on success. The frames shown are the frames the model
//! has done; the phase is the one the least advanced chunk is really in (`waiting` for a
//! worker's slot, `init` while it opens the input and loads the model, then `process`,
//! `encode`, `upload`); the time remaining is the model's frames left at its measured
//! rate plus the stitch the cost model predicts, and before a rate is measured, what the
//! cost model predicted for the whole job less the time it has run.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use framefleet_common::codec::VideoEncoder;
use framefleet_common::cost::CostReport;
use framefleet_common::phases::PerPhase;
use framefleet_common::proto::{ChunkProgress, Job, JobState, Phase, Plan, Progress};

use crate::jobs::tenant::{Tenant, Tenants};
use crate::jobs::validate::ValidJob;

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

/// Shortest span the model's rate is measured over before a time left is shown: frames
/// arrive in batches, and two chunks' first batches a moment apart would otherwise
/// promise the job done in a second.
const MIN_RATE_SECONDS: f64 = 5.0;

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
    /// Whom it belongs to, and that tenant's share of the fleet.
    pub tenant: Arc<Tenant>,
    /// Fires when the job is cancelled.
    pub cancel: CancellationToken,
    /// When the job was accepted.
    pub accepted: Instant,
    state: watch::Sender<Job>,
    progress: Mutex<ProgressFold>,
    report: Mutex<Option<CostReport>>,
    /// The encoder the current run writes the chunks with, once the run chose it.
    encoder: Mutex<Option<VideoEncoder>>,
}

#[derive(Default)]
struct ProgressFold {
    frames_per_chunk: Vec<u64>,
    done: Vec<PerPhase<u64>>,
    stages: Vec<ChunkStage>,
    percent: f64,
    /// When the model's first frame of the job was reported, and the job's model frames
    /// then: where the measured rate starts.
    rate_start: Option<(Instant, u64)>,
    /// The cost model's prediction for the plan, when it made one: (when the job was
    /// accepted, its whole wall time, its stitch).
    predicted: Option<(Instant, f64, f64)>,
    /// Whether its chunks are encoded: then the time left follows the frames encoded,
    /// which the slowest stage (model or encoder) sets, not the model's alone.
    encodes: bool,
    /// What the queue serves before this job's next waiting chunk.
    chunks_ahead: u32,
}

/// Where a chunk stands between dispatch and acceptance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkStage {
    /// Waiting for a worker's slot.
    #[default]
    Waiting,
    /// An attempt holds a slot.
    Running,
    /// Accepted.
    Done,
}

impl JobRecord {
    /// A new queued job of `tenant`'s.
    pub fn new(id: String, seq: u64, request: ValidJob, tenant: Arc<Tenant>) -> Self {
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let snapshot = Job {
            id: id.clone(),
            spec: Some(request.spec.clone()),
            state: JobState::Queued as i32,
            created_at,
            tenant: tenant.name.to_string(),
            progress: Some(Progress {
                phase: "queued".into(),
                ..Progress::default()
            }),
            ..Job::default()
        };
        Self {
            id,
            seq,
            request,
            tenant,
            cancel: CancellationToken::new(),
            accepted: Instant::now(),
            state: watch::Sender::new(snapshot),
            progress: Mutex::default(),
            report: Mutex::default(),
            encoder: Mutex::new(None),
        }
    }

    /// A job read back from the job store at start, from its last recorded `snapshot`: an
    /// ended one as it ended, with its `report`; any other queued again, to be resumed.
    /// Its tenant is the snapshot's, with that tenant's share of today (`tenants`).
    pub fn restore(
        id: String,
        seq: u64,
        request: ValidJob,
        mut snapshot: Job,
        report: Option<CostReport>,
        tenants: &Tenants,
    ) -> Self {
        if snapshot.tenant.is_empty() {
            snapshot.tenant = Tenant::DEFAULT.to_string();
        }
        let tenant = tenants.get(&snapshot.tenant);
        let terminal = snapshot.state().is_terminal();
        if !terminal {
            snapshot.set_state(JobState::Queued);
        }
        Self {
            id,
            seq,
            request,
            tenant,
            cancel: CancellationToken::new(),
            accepted: Instant::now(),
            state: watch::Sender::new(snapshot),
            progress: Mutex::default(),
            report: Mutex::new(report.filter(|_| terminal)),
            encoder: Mutex::new(None),
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

    /// Records the encoder the run chose for the job's chunks.
    pub fn set_encoder(&self, encoder: Option<VideoEncoder>) {
        *self.encoder.lock().unwrap_or_else(|p| p.into_inner()) = encoder;
    }

    /// Whether workers offering `offered` can run the job's chunks: every worker for a
    /// job that encodes nothing (infer); else those with the run's encoder or, before a
    /// run chose one, with what the job asked for (the encoder named, or one of the codec).
    pub fn runs_on(&self, offered: &[VideoEncoder]) -> bool {
        let chosen = *self.encoder.lock().unwrap_or_else(|p| p.into_inner());
        match (chosen, self.request.encoder()) {
            (Some(encoder), _) => offered.contains(&encoder),
            (None, Some(request)) => request.served_by(offered),
            (None, None) => true,
        }
    }

    /// Records the plan and sizes the progress fold to it.
    pub fn set_plan(&self, plan: &Plan) {
        {
            let mut fold = self.lock_progress();
            fold.frames_per_chunk = plan.ranges.iter().map(|r| r.frame_count()).collect();
            fold.done = vec![PerPhase::default(); plan.ranges.len()];
            fold.stages = vec![ChunkStage::Waiting; plan.ranges.len()];
            fold.predicted = plan
                .predicted
                .as_ref()
                .map(|p| (self.accepted, p.wall_seconds, p.stitch_seconds));
            fold.encodes = !self.request.is_infer();
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
            fold.progress(Instant::now())
        };
        self.publish_progress(progress);
    }

    /// Chunk `index` got a worker's slot (`true`) or lost it and waits for another.
    pub fn chunk_running(&self, index: u32, running: bool) {
        let progress = {
            let mut fold = self.lock_progress();
            let Some(stage) = fold.stages.get_mut(index as usize) else {
                return;
            };
            if *stage == ChunkStage::Done {
                return;
            }
            *stage = if running {
                ChunkStage::Running
            } else {
                ChunkStage::Waiting
            };
            fold.progress(Instant::now())
        };
        self.publish_progress(progress);
    }

    /// True while one of the job's planned chunks waits for a worker's slot.
    pub fn has_waiting_chunk(&self) -> bool {
        self.lock_progress().stages.contains(&ChunkStage::Waiting)
    }

    /// How many chunks of other jobs the fleet's queue serves before this job's next
    /// waiting chunk (0 when none waits).
    pub fn set_chunks_ahead(&self, chunks: u32) {
        let progress = {
            let mut fold = self.lock_progress();
            if fold.chunks_ahead == chunks || fold.stages.is_empty() {
                return;
            }
            fold.chunks_ahead = chunks;
            fold.progress(Instant::now())
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
            if let Some(stage) = fold.stages.get_mut(index as usize) {
                *stage = ChunkStage::Done;
            }
            fold.progress(Instant::now())
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

    /// Worker slots this job wants now: one while it waits to start or is probed (it will
    /// want at least one), its chunks not yet accepted while it runs (waiting for a slot,
    /// holding one, or between retries), none once it stitches or has ended.
    pub fn slots_wanted(&self) -> u32 {
        match self.state() {
            JobState::Unspecified | JobState::Queued | JobState::Probing => 1,
            JobState::Running => {
                let fold = self.lock_progress();
                let open = fold
                    .stages
                    .iter()
                    .filter(|&&s| s != ChunkStage::Done)
                    .count();
                if fold.stages.is_empty() {
                    1
                } else {
                    u32::try_from(open).unwrap_or(u32::MAX)
                }
            }
            JobState::Stitching | JobState::Succeeded | JobState::Failed | JobState::Cancelled => 0,
        }
    }

    /// Marks the stitch as started in the progress; the time left is then the stitch the
    /// cost model predicted (0 without a prediction).
    pub fn stitching(&self) {
        self.set_state(JobState::Stitching);
        let stitch = self.lock_progress().predicted.map_or(0.0, |(_, _, s)| s);
        self.state.send_modify(|job| {
            if let Some(progress) = &mut job.progress {
                progress.phase = "stitch".into();
                progress.seconds_remaining = stitch;
            }
        });
    }

    fn lock_progress(&self) -> std::sync::MutexGuard<'_, ProgressFold> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ProgressFold {
    /// The job's progress as of `now`.
    fn progress(&mut self, now: Instant) -> Progress {
        let total: u64 = self.frames_per_chunk.iter().sum();
        let mut weighted = 0.0;
        let mut frames_done = 0;
        let mut through = 0;
        let mut slowest: Option<(u8, &'static str)> = None;
        for ((frames, done), stage) in self
            .frames_per_chunk
            .iter()
            .zip(&self.done)
            .zip(&self.stages)
        {
            let fraction: f64 = done
                .iter()
                .map(|(phase, &d)| {
                    phase_weight(phase) * (d as f64 / (*frames).max(1) as f64).min(1.0)
                })
                .sum();
            weighted += fraction * *frames as f64;
            let modelled = done.value_or(Phase::Process, 0).min(*frames);
            frames_done += modelled;
            through += if self.encodes {
                modelled.min(done.value_or(Phase::Encode, 0))
            } else {
                modelled
            };
            if let Some(current) = current_phase(*stage, done, *frames) {
                slowest = Some(slowest.map_or(current, |s| s.min(current)));
            }
        }
        let percent = CHUNK_SHARE * weighted / (total.max(1) as f64);
        self.percent = self.percent.max(percent);
        Progress {
            percent: self.percent,
            frames_done,
            frames_total: total,
            phase: slowest.map_or("stitch", |(_, label)| label).to_string(),
            chunks_done: self
                .stages
                .iter()
                .filter(|&&s| s == ChunkStage::Done)
                .count() as u32,
            chunks_total: self.frames_per_chunk.len() as u32,
            seconds_remaining: self.seconds_remaining(now, through, total),
            chunks_ahead: if self.stages.contains(&ChunkStage::Waiting) {
                self.chunks_ahead
            } else {
                0
            },
        }
    }

    /// Seconds until the job is done: the frames left at the rate measured since its
    /// first frame through the pipeline (encoded, for a video job; through the model for
    /// an infer job), plus the predicted stitch. Until that rate spans
    /// [`MIN_RATE_SECONDS`], the predicted wall time less the time run (0 without one).
    fn seconds_remaining(&mut self, now: Instant, frames_done: u64, total: u64) -> f64 {
        let (stitch, predicted_left) = match self.predicted {
            Some((accepted, wall, stitch)) => {
                let run = now.duration_since(accepted).as_secs_f64();
                (stitch, (wall - run).max(stitch))
            }
            None => (0.0, 0.0),
        };
        let Some((since, at_start)) = self.rate_start else {
            if frames_done > 0 {
                self.rate_start = Some((now, frames_done));
            }
            return predicted_left;
        };
        let seconds = now.duration_since(since).as_secs_f64();
        let frames = frames_done.saturating_sub(at_start);
        if frames == 0 || seconds < MIN_RATE_SECONDS {
            return predicted_left;
        }
        total.saturating_sub(frames_done) as f64 * seconds / frames as f64 + stitch
    }
}

/// The phase a chunk is in, with its place in pipeline order (lower is less advanced);
/// `None` once it is accepted. A chunk whose model has done no frame yet is in `init`
/// (opening its input, loading the model): the one-shot phases count no frames.
fn current_phase(
    stage: ChunkStage,
    done: &PerPhase<u64>,
    frames: u64,
) -> Option<(u8, &'static str)> {
    let unfinished = |phase| done.value_or(phase, 0) < frames;
    match stage {
        ChunkStage::Done => None,
        ChunkStage::Waiting => Some((0, "waiting")),
        ChunkStage::Running if done.value_or(Phase::Process, 0) == 0 => Some((1, "init")),
        ChunkStage::Running if unfinished(Phase::Process) => Some((2, "process")),
        ChunkStage::Running if unfinished(Phase::Encode) => Some((3, "encode")),
        ChunkStage::Running => Some((4, "upload")),
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
        let request = crate::jobs::validate::check(spec, &Default::default()).expect("valid");
        let job = JobRecord::new("j".into(), 0, request, Tenant::default_tenant());
        job.set_plan(&plan(&[10, 10]));
        job.chunk_running(0, true);
        job.chunk_running(1, true);
        job.chunk_progress(0, &event(Phase::Process, 10));
        let after_process = job.snapshot().progress.unwrap_or_default();
        assert!((after_process.percent - 95.0 * 0.4 * 0.5).abs() < 1e-9);
        assert_eq!(
            after_process.phase, "init",
            "chunk 1 has no model frame yet"
        );
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

    #[test]
    fn progress_shows_model_frames_the_real_phase_and_a_measured_time_left() {
        let mut fold = ProgressFold {
            frames_per_chunk: vec![100, 100],
            done: vec![PerPhase::default(); 2],
            stages: vec![ChunkStage::Waiting; 2],
            ..ProgressFold::default()
        };
        let start = Instant::now();
        let at = |seconds: u64| start + std::time::Duration::from_secs(seconds);
        assert_eq!(fold.progress(at(0)).phase, "waiting");
        fold.stages = vec![ChunkStage::Running, ChunkStage::Waiting];
        assert_eq!(
            fold.progress(at(1)).phase,
            "waiting",
            "the least advanced chunk"
        );
        fold.stages[1] = ChunkStage::Running;
        // Decoded frames and a loading model: still setting up.
        *fold.done[0].get_mut(Phase::Decode).expect("phase") = 8;
        let loading = fold.progress(at(2));
        assert_eq!((loading.phase.as_str(), loading.frames_done), ("init", 0));
        assert_eq!(loading.seconds_remaining, 0.0, "no rate yet");
        for (chunk, frames) in [(0, 10), (1, 10)] {
            *fold.done[chunk].get_mut(Phase::Process).expect("phase") = frames;
        }
        let first = fold.progress(at(10));
        assert_eq!((first.phase.as_str(), first.frames_done), ("process", 20));
        // The other chunk's batch a moment later is no rate to go by.
        *fold.done[1].get_mut(Phase::Process).expect("phase") = 14;
        assert_eq!(fold.progress(at(11)).seconds_remaining, 0.0);
        *fold.done[1].get_mut(Phase::Process).expect("phase") = 10;
        // 40 more model frames in 20 s: 2 frames/s, 140 to go.
        for chunk in 0..2 {
            *fold.done[chunk].get_mut(Phase::Process).expect("phase") = 30;
        }
        let later = fold.progress(at(30));
        assert_eq!(later.frames_done, 60);
        assert!((later.seconds_remaining - 70.0).abs() < 1e-9, "{later:?}");
        *fold.done[0].get_mut(Phase::Process).expect("phase") = 100;
        *fold.done[1].get_mut(Phase::Process).expect("phase") = 100;
        *fold.done[1].get_mut(Phase::Encode).expect("phase") = 100;
        assert_eq!(fold.progress(at(40)).phase, "encode");
        fold.stages = vec![ChunkStage::Done; 2];
        assert_eq!(fold.progress(at(41)).phase, "stitch");
    }

    #[test]
    fn the_time_left_of_a_video_job_follows_the_encoder_when_it_is_slower() {
        let start = Instant::now();
        let at = |seconds: u64| start + std::time::Duration::from_secs(seconds);
        let mut fold = ProgressFold {
            frames_per_chunk: vec![250],
            done: vec![PerPhase::default()],
            stages: vec![ChunkStage::Running],
            encodes: true,
            ..ProgressFold::default()
        };
        let mut report = |process: u64, encode: u64, seconds: u64| {
            *fold.done[0].get_mut(Phase::Process).expect("phase") = process;
            *fold.done[0].get_mut(Phase::Encode).expect("phase") = encode;
            fold.progress(at(seconds))
        };
        report(40, 10, 10);
        // The model raced ahead (160 of 250 frames) while 20 more frames were encoded in
        // 10 s: 2 frames/s through the pipeline, 220 frames to go.
        let now = report(160, 30, 20);
        assert!(
            (now.seconds_remaining - 110.0).abs() < 1e-9,
            "the encoder's rate, not the model's: {now:?}"
        );
        assert_eq!(
            now.frames_done, 160,
            "the bar still counts the model's frames"
        );
    }

    #[test]
    fn a_waiting_job_says_what_the_queue_serves_first() {
        let mut fold = ProgressFold {
            frames_per_chunk: vec![10, 10],
            done: vec![PerPhase::default(); 2],
            stages: vec![ChunkStage::Running, ChunkStage::Waiting],
            chunks_ahead: 7,
            ..ProgressFold::default()
        };
        assert_eq!(fold.progress(Instant::now()).chunks_ahead, 7);
        fold.stages[1] = ChunkStage::Running;
        assert_eq!(
            fold.progress(Instant::now()).chunks_ahead,
            0,
            "nothing is ahead once no chunk waits"
        );
    }

    #[test]
    fn the_time_left_counts_the_predicted_stitch_and_starts_from_the_prediction() {
        let start = Instant::now();
        let at = |seconds: u64| start + std::time::Duration::from_secs(seconds);
        let mut fold = ProgressFold {
            frames_per_chunk: vec![100],
            done: vec![PerPhase::default()],
            stages: vec![ChunkStage::Running],
            predicted: Some((start, 60.0, 8.0)),
            ..ProgressFold::default()
        };
        // No rate yet: the prediction less the time run, never below the stitch.
        assert!((fold.progress(at(10)).seconds_remaining - 50.0).abs() < 1e-9);
        assert!((fold.progress(at(59)).seconds_remaining - 8.0).abs() < 1e-9);
        *fold.done[0].get_mut(Phase::Process).expect("phase") = 10;
        fold.progress(at(20));
        *fold.done[0].get_mut(Phase::Process).expect("phase") = 30;
        // 20 frames in 10 s, 70 to go: 35 s, then the 8 s stitch.
        let measured = fold.progress(at(30));
        assert!(
            (measured.seconds_remaining - 43.0).abs() < 1e-9,
            "{measured:?}"
        );
    }
}
