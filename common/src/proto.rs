//! Generated gRPC code for `framefleet.v1`, plus small conversions used on both sides; and
//! KEDA's external scaler protocol ([`externalscaler`]), which the orchestrator serves.

#[allow(missing_docs, clippy::all)]
mod generated {
    tonic::include_proto!("framefleet.v1");
}

/// KEDA's external scaler protocol (`proto/keda/externalscaler.proto`, vendored).
#[allow(missing_docs, clippy::all)]
pub mod externalscaler {
    tonic::include_proto!("externalscaler");
}

pub use generated::*;

/// Encoded file descriptor set of `framefleet.v1`, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("framefleet_descriptor");

/// True when a worker's `ProcessChunk` error means the request cannot succeed on any
/// worker (`INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION`; see `worker.proto`): the
/// chunk fails at once instead of being retried. Workers answer with these codes, the
/// orchestrator decides by this function.
pub fn is_permanent_chunk_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::InvalidArgument | tonic::Code::NotFound | tonic::Code::FailedPrecondition
    )
}

impl Phase {
    /// Lower-case name used in reports and progress output, e.g. `"decode"`.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Unspecified => "unspecified",
            Phase::Download => "download",
            Phase::Init => "init",
            Phase::Decode => "decode",
            Phase::Process => "process",
            Phase::Encode => "encode",
            Phase::Upload => "upload",
        }
    }

    /// Every real phase, in pipeline order.
    pub const ALL: [Phase; 6] = [
        Phase::Download,
        Phase::Init,
        Phase::Decode,
        Phase::Process,
        Phase::Encode,
        Phase::Upload,
    ];
}

impl ChunkRange {
    /// Frames the chunk produces: its chosen frames when the job chose some, else every
    /// frame of its span.
    pub fn frame_count(&self) -> u64 {
        if self.chosen_frames > 0 {
            self.chosen_frames
        } else {
            self.end_frame.saturating_sub(self.start_frame)
        }
    }
}

impl JobState {
    /// True for `SUCCEEDED`, `FAILED` and `CANCELLED`: the job will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    /// Short upper-case name for people, e.g. `"RUNNING"`.
    pub fn label(self) -> &'static str {
        match self {
            JobState::Unspecified => "UNSPECIFIED",
            JobState::Queued => "QUEUED",
            JobState::Probing => "PROBING",
            JobState::Running => "RUNNING",
            JobState::Stitching => "STITCHING",
            JobState::Succeeded => "SUCCEEDED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }
}

impl Rational {
    /// The value as a float, 0 when the denominator is 0.
    pub fn as_f64(&self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            f64::from(self.num) / f64::from(self.den)
        }
    }
}

impl Priority {
    /// The level as `--priority` spells it (unspecified: `normal`).
    pub fn label(self) -> &'static str {
        match self {
            Priority::Interactive => "interactive",
            Priority::Batch => "batch",
            Priority::Unspecified | Priority::Normal => "normal",
        }
    }
}

impl Job {
    /// The job as JSON for scripts and notifications (`framefleet status --json`): id,
    /// tenant, priority, state, error, progress, and the plan's chunk count and rule.
    pub fn to_json(&self) -> serde_json::Value {
        let progress = self.progress.clone().unwrap_or_default();
        serde_json::json!({
            "job_id": self.id,
            "tenant": self.tenant,
            "priority": self.spec.as_ref().map_or("normal", |s| s.priority().label()),
            "state": self.state().label(),
            "error": self.error,
            "percent": progress.percent,
            "frames_done": progress.frames_done,
            "frames_total": progress.frames_total,
            "chunks": self.plan.as_ref().map(|p| p.chunks),
            "rule": self.plan.as_ref().map(|p| p.rule.clone()),
        })
    }
}
