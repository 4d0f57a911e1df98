//! The one encoder every chunk of a job's run is written with, chosen once when the run
//! starts: what the job asked for by name; for a codec, the encoder of the chunks it kept
//! from before a restart (so a resumed job does not mix encoders), else the one the fleet
//! has on the most slots ([`choose_encoder`](framefleet_common::codec::choose_encoder)).
//! Dispatch then sends the chunks only to workers that have it, and acceptance refuses a
//! chunk that another encoder wrote.

use framefleet_common::codec::{EncoderRequest, VideoEncoder};

use crate::accepted::AcceptedChunk;
use crate::fleet::Fleet;
use crate::validate::ValidJob;

/// The encoder for this run of `job` (`None` for a job that encodes nothing), given the
/// chunks `trusted` from before a restart and the fleet registered now.
pub fn for_run(job: &ValidJob, trusted: &[AcceptedChunk], fleet: &Fleet) -> Option<VideoEncoder> {
    let request = job.encoder?;
    if let EncoderRequest::Codec(codec) = request {
        let kept = trusted
            .iter()
            .filter_map(|chunk| VideoEncoder::from_reported(&chunk.result.encoder))
            .find(|encoder| encoder.codec() == codec);
        if kept.is_some() {
            return kept;
        }
    }
    fleet.offer(job.model(), Some(request)).encoder
}
