//! Why a stitch fails, shared by every part of it.

use ffmpeg_next as ffmpeg;

use framefleet_common::media::ReadError;
use framefleet_common::storage::StorageError;

/// Why the stitch failed.
#[derive(Debug, thiserror::Error)]
pub enum StitchError {
    /// A chunk or the input could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A packet could not be read.
    #[error("reading {uri} during the stitch failed: {source}")]
    Read {
        /// The object being read.
        uri: String,
        /// The read error.
        #[source]
        source: ReadError,
    },
    /// FFmpeg refused the output.
    #[error("writing the output failed: {0}")]
    Write(String),
    /// The chunks do not add up to the input.
    #[error("the chunks hold {got} video frames but the input has {expected}")]
    FrameCount {
        /// Frames stitched.
        got: u64,
        /// Frames in the input.
        expected: u64,
    },
}

/// Maps an FFmpeg error while writing `what` to a [`StitchError::Write`].
pub fn write_error(what: &str) -> impl Fn(ffmpeg::Error) -> StitchError + '_ {
    move |e| StitchError::Write(format!("{what}: {e}"))
}
