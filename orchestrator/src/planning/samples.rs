//! What one run of a job teaches the cost model: a sample per chunk it computed (the
//! chunk's per-frame streaming time and its fixed costs, on its machine, at its frame
//! size, beside how many chunks shared that machine) and one for the job (probe, dispatch
//! latency, stitch, the rest). Samples are keyed by the job's [`kind`]: what decides a
//! chunk's cost besides its length and frame size.

use framefleet_common::codec::VideoEncoder;
use framefleet_common::proto::Phase;

use crate::jobs::accepted::{ChunkTiming, FinishedChunk};
use crate::jobs::run_log::RunLog;
use crate::jobs::validate::ValidJob;

/// The cost history's key for a job: its task, processor (model, scale, deinterlacing),
/// its encoder and preset (x264's presets differ several times over in speed, and NVENC
/// runs beside the cores instead of on them) and the GPU type it runs on, e.g.
/// `realesr-animevideov3-x2 x2, x264 medium on cpu` or `..., h264_nvenc fast on T4`.
pub fn kind(job: &ValidJob, encoder: Option<VideoEncoder>, gpu_type: &str) -> String {
    let processor = &job.processor;
    let deinterlace = if processor.deinterlace {
        " deinterlaced"
    } else {
        ""
    };
    let name = match encoder.unwrap_or(VideoEncoder::Libx264) {
        VideoEncoder::Libx264 => "x264",
        VideoEncoder::Libx265 => "x265",
        other => other.name(),
    };
    let output = match &job.encoding {
        None => "infer".to_string(),
        Some(encoding) if encoding.lossless => format!("{name} {} lossless", encoding.preset),
        Some(encoding) => format!("{name} {}", encoding.preset),
    };
    format!(
        "{} x{}{deinterlace}, {output} on {gpu_type}",
        processor.model, processor.scale
    )
}

/// One computed chunk, as the cost model reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkSample {
    /// Machine the worker ran on.
    pub host: String,
    /// Chunks of the job running on that machine at this chunk's midpoint, itself
    /// included: they shared its cores and GPUs.
    pub sharing: u32,
    /// Input frame size, in pixels.
    pub pixels: u64,
    /// Frames it produced.
    pub frames: u64,
    /// From getting its slot to passing the acceptance checks.
    pub span_seconds: f64,
    /// Of the worker's wall time, what was not init or upload: the frames streaming through
    /// decode, model and encode.
    pub stream_seconds: f64,
    /// Of init, the model load (0 on a warm worker).
    pub model_load_seconds: f64,
}

impl ChunkSample {
    /// Seconds per frame of the streaming pipeline (its slowest stage, as the others overlap
    /// it).
    pub fn per_frame_seconds(&self) -> f64 {
        self.stream_seconds / self.frames.max(1) as f64
    }

    /// What the chunk paid whatever its length, on a warm worker: reading up to the first
    /// frame, the decode lead, the encoder's tail, upload, the orchestrator's checks.
    pub fn fixed_seconds(&self) -> f64 {
        (self.span_seconds - self.stream_seconds - self.model_load_seconds).max(0.0)
    }
}

/// One job's fixed costs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSample {
    /// Chunks it was cut into.
    pub chunks: u32,
    /// Frames it produced.
    pub frames: u64,
    /// Input frame size, in pixels.
    pub pixels: u64,
    /// Seconds probing the input.
    pub probe_seconds: f64,
    /// From the plan to the first chunk holding a slot (workers starting, dispatch).
    pub dispatch_seconds: f64,
    /// Seconds stitching and uploading the output.
    pub stitch_seconds: f64,
    /// The rest of the wall time: queueing, the gap between the chunks and the stitch,
    /// cleanup.
    pub other_seconds: f64,
    /// Submit to end.
    pub wall_seconds: f64,
}

/// What a run adds to the history.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCosts {
    /// See [`kind`].
    pub kind: String,
    /// The job (only when it succeeded, so its stitch is measured).
    pub job: Option<JobSample>,
    /// Every chunk computed in this run (not those reused after a restart).
    pub chunks: Vec<ChunkSample>,
}

impl JobCosts {
    /// The samples of a run that recorded `log` and took `wall_seconds`; `succeeded` says
    /// whether it got through the stitch.
    pub fn from_run(job: &ValidJob, log: &RunLog, wall_seconds: f64, succeeded: bool) -> Self {
        let ran: Vec<&FinishedChunk> = log
            .accepted
            .iter()
            .filter(|f| matches!(f.timing, ChunkTiming::Ran(_)))
            .collect();
        let gpu_type = ran
            .first()
            .map_or("cpu", |f| f.chunk.result.gpu_type.as_str());
        let encoder = ran
            .first()
            .and_then(|f| VideoEncoder::from_reported(&f.chunk.result.encoder));
        let chunks = ran
            .iter()
            .map(|finished| chunk_sample(finished, &ran, log.input_pixels))
            .collect();
        let whole_run = succeeded && ran.len() == log.accepted.len() && !ran.is_empty();
        Self {
            kind: kind(job, encoder, gpu_type),
            job: whole_run.then(|| job_sample(log, &ran, wall_seconds)),
            chunks,
        }
    }
}

fn chunk_sample(finished: &FinishedChunk, all: &[&FinishedChunk], pixels: u64) -> ChunkSample {
    let result = &finished.chunk.result;
    let timeline = finished.timeline();
    let phase = |wanted: Phase| {
        result
            .phases
            .iter()
            .filter(|t| t.phase() == wanted)
            .map(|t| t.seconds)
            .sum::<f64>()
    };
    let stream = (result.wall_seconds - phase(Phase::Init) - phase(Phase::Upload)).max(0.0);
    let midpoint = (timeline.started_seconds + timeline.accepted_seconds) / 2.0;
    let sharing = all
        .iter()
        .filter(|other| other.chunk.result.host == result.host)
        .filter(|other| {
            let t = other.timeline();
            t.started_seconds <= midpoint && midpoint <= t.accepted_seconds
        })
        .count();
    ChunkSample {
        host: result.host.clone(),
        sharing: u32::try_from(sharing.max(1)).unwrap_or(u32::MAX),
        pixels,
        frames: result.frames,
        span_seconds: timeline.accepted_seconds - timeline.started_seconds,
        stream_seconds: stream,
        model_load_seconds: result.model_load_seconds,
    }
}

fn job_sample(log: &RunLog, ran: &[&FinishedChunk], wall_seconds: f64) -> JobSample {
    let first_start = ran
        .iter()
        .map(|f| f.timeline().started_seconds)
        .fold(f64::INFINITY, f64::min);
    let last_accept = ran
        .iter()
        .map(|f| f.timeline().accepted_seconds)
        .fold(0.0, f64::max);
    let planned = log.probe_started_seconds + log.probe_seconds;
    let dispatch = (first_start - planned).max(0.0);
    let measured = log.probe_seconds + dispatch + (last_accept - first_start) + log.stitch_seconds;
    JobSample {
        chunks: u32::try_from(ran.len()).unwrap_or(u32::MAX),
        frames: ran.iter().map(|f| f.chunk.result.frames).sum(),
        pixels: log.input_pixels,
        probe_seconds: log.probe_seconds,
        dispatch_seconds: dispatch,
        stitch_seconds: log.stitch_seconds,
        other_seconds: (wall_seconds - measured).max(0.0),
        wall_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::jobs::accepted::{AcceptedChunk, ChunkTimeline};
    use framefleet_common::proto::{ChunkRange, ChunkResult, JobSpec, PhaseTiming, ProcessorSpec};
    use framefleet_common::storage::ObjectUri;

    fn finished(index: u32, host: &str, started: f64, accepted: f64) -> FinishedChunk {
        let timing = |phase: Phase, seconds| PhaseTiming {
            phase: phase as i32,
            seconds,
        };
        FinishedChunk {
            chunk: AcceptedChunk {
                range: ChunkRange {
                    index,
                    ..ChunkRange::default()
                },
                result: ChunkResult {
                    frames: 100,
                    wall_seconds: accepted - started - 0.5,
                    phases: vec![
                        timing(Phase::Init, 2.0),
                        timing(Phase::Process, 6.0),
                        timing(Phase::Upload, 0.5),
                    ],
                    model_load_seconds: 1.5,
                    host: host.into(),
                    gpu_type: "T4".into(),
                    ..ChunkResult::default()
                },
                output: ObjectUri::File("/c".into()),
                output_bytes: 1,
                packet_log: None,
                attempts: 1,
                wasted_gpu_seconds: 0.0,
            },
            timing: ChunkTiming::Ran(ChunkTimeline {
                started_seconds: started,
                accepted_seconds: accepted,
            }),
            failures: Vec::new(),
        }
    }

    #[test]
    fn a_run_splits_into_streaming_fixed_and_job_costs_and_counts_machine_sharing() {
        let log = RunLog {
            accepted: vec![
                finished(0, "a", 1.0, 11.0),
                finished(1, "a", 1.2, 11.2),
                finished(2, "b", 1.1, 11.1),
            ],
            probe_started_seconds: 0.1,
            probe_seconds: 0.4,
            stitch_seconds: 1.0,
            input_pixels: 640 * 360,
            ..RunLog::default()
        };
        let spec = JobSpec {
            input_uri: "s3://bucket/in.mp4".into(),
            output_uri: "s3://bucket/out.mp4".into(),
            processor: Some(ProcessorSpec {
                model: "realesr-animevideov3-x2".into(),
                scale: 2.0,
                deinterlace: false,
            }),
            ..JobSpec::default()
        };
        let valid = crate::jobs::validate::check(spec, &Default::default()).expect("valid");
        let costs = JobCosts::from_run(&valid, &log, 13.0, true);
        assert_eq!(costs.kind, "realesr-animevideov3-x2 x2, x264 medium on T4");
        let sharing: Vec<u32> = costs.chunks.iter().map(|c| c.sharing).collect();
        assert_eq!(sharing, vec![2, 2, 1]);
        let chunk = &costs.chunks[0];
        // Worker wall 9.5 s less init 2 and upload 0.5: 7 s of streaming for 100 frames.
        assert!((chunk.per_frame_seconds() - 0.07).abs() < 1e-9);
        // Span 10 s less streaming 7 s and the 1.5 s model load.
        assert!((chunk.fixed_seconds() - 1.5).abs() < 1e-9);
        let job = costs.job.expect("a whole successful run");
        assert!((job.dispatch_seconds - 0.5).abs() < 1e-9);
        // 13 s less probe 0.4, dispatch 0.5, chunks 10.2 and stitch 1.
        assert!((job.other_seconds - 0.9).abs() < 1e-9, "{job:?}");
        assert_eq!(job.frames, 300);
        assert!(JobCosts::from_run(&valid, &log, 13.0, false).job.is_none());
    }
}
