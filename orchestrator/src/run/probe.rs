//! The job's first step: reading what the input is (on a blocking thread, under a
//! deadline) and refusing inputs beyond the configured limits before any GPU work.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use framefleet_common::config::LimitsConfig;
use framefleet_common::media::{self, MediaInfo, ProbeError};
use framefleet_common::storage::{ObjectUri, Storage, StorageError};

/// Longest a probe may take before the job fails.
const PROBE_DEADLINE: Duration = Duration::from_secs(300);

/// Why the input cannot be processed.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The input could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The input is not a processable video.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// The input is beyond a configured limit.
    #[error("{0}")]
    OverLimit(String),
    /// The probe took too long.
    #[error("probing the input took longer than {0} s; the storage is too slow or the file is pathological")]
    Timeout(u64),
    /// The probe's thread died.
    #[error("internal error: the probe crashed: {0}")]
    Crashed(String),
}

/// Probes the input on a blocking thread, under [`PROBE_DEADLINE`], and checks it against
/// `limits`; returns what it is and its size in bytes. An object over
/// `limits.max_input_bytes` is refused before any read; once `stop` is cancelled (the job
/// was), the probe's next read fails, so its thread ends within a read.
pub async fn probe_within_limits(
    io: &Storage,
    input: &ObjectUri,
    limits: &LimitsConfig,
    blocking: &TaskTracker,
    stop: CancellationToken,
) -> Result<(MediaInfo, u64), InputError> {
    let storage = io.clone();
    let uri = input.clone();
    let runtime = tokio::runtime::Handle::current();
    let max_bytes = limits.max_input_bytes;
    let probing = blocking.spawn_blocking(move || -> Result<(MediaInfo, u64), InputError> {
        let reader = storage
            .open_reader(&uri, runtime)?
            .with_block_bytes(media::INDEX_BLOCK_BYTES)
            .stopped_by(stop);
        let size = reader.size();
        if size > max_bytes {
            return Err(InputError::OverLimit(format!(
                "the input is {size} bytes; this orchestrator takes at most {max_bytes} \
                 (limits.max_input_bytes)"
            )));
        }
        Ok((media::probe(reader, uri.file_name())?, size))
    });
    let (info, size) = match tokio::time::timeout(PROBE_DEADLINE, probing).await {
        Err(_) => return Err(InputError::Timeout(PROBE_DEADLINE.as_secs())),
        Ok(Err(e)) => return Err(InputError::Crashed(e.to_string())),
        Ok(Ok(result)) => result?,
    };
    check_limits(&info, size, limits)?;
    Ok((info, size))
}

/// Longest side of an output picture: what H.264 and HEVC encoders take.
pub const MAX_OUTPUT_SIDE: u32 = 16384;

/// Fails a job whose output pictures, the input's `scale`d (each side rounded up to even,
/// as the workers do), would be larger than `limits.max_output_pixels` or wider or taller
/// than encoders take: refused after the probe, before any chunk runs.
pub fn check_output_size(
    info: &MediaInfo,
    scale: f64,
    limits: &LimitsConfig,
) -> Result<(), InputError> {
    let side = |size: u32| u64::from(media::scaled_dimension(size, scale));
    let (width, height) = (side(info.video.width), side(info.video.height));
    let pixels = width * height;
    if pixels > limits.max_output_pixels {
        return Err(InputError::OverLimit(format!(
            "scaled {scale}x, the {}x{} input would give {width}x{height} pictures ({pixels} \
             pixels), more than {} (limits.max_output_pixels); use a smaller scale or raise \
             the limit",
            info.video.width, info.video.height, limits.max_output_pixels
        )));
    }
    if width.max(height) > u64::from(MAX_OUTPUT_SIDE) {
        return Err(InputError::OverLimit(format!(
            "scaled {scale}x, the {}x{} input would give {width}x{height} pictures; encoders \
             take at most {MAX_OUTPUT_SIDE} pixels a side (a fixed bound); use a smaller scale",
            info.video.width, info.video.height
        )));
    }
    Ok(())
}

/// Fails a probed input that is longer, has more frames or bigger pictures than the
/// limits allow, naming the limit.
fn check_limits(info: &MediaInfo, size: u64, limits: &LimitsConfig) -> Result<(), InputError> {
    let video = &info.video;
    let frames = video.frames.len() as u64;
    let duration = video.duration_seconds();
    let pixels = u64::from(video.width) * u64::from(video.height);
    let over = |what: String, key: &str| {
        Err(InputError::OverLimit(format!(
            "the input {what}; raise {key} to accept it"
        )))
    };
    if frames > limits.max_frames {
        return over(
            format!("has {frames} frames, more than {}", limits.max_frames),
            "limits.max_frames",
        );
    }
    if duration > limits.max_duration_seconds {
        return over(
            format!(
                "lasts {duration:.1} s, more than {} s",
                limits.max_duration_seconds
            ),
            "limits.max_duration_seconds",
        );
    }
    if pixels > limits.max_pixels {
        return over(
            format!(
                "is {}x{} ({pixels} pixels), more than {} pixels",
                video.width, video.height, limits.max_pixels
            ),
            "limits.max_pixels",
        );
    }
    tracing::debug!(frames, duration, pixels, size, "input within limits");
    Ok(())
}
