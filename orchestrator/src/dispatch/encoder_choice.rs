//! The one encoder every chunk of a job's run is written with, chosen once when the run
//! starts: what the job asked for by name; for a codec, the encoder of the chunks it kept
//! from before a restart (so a resumed job does not mix encoders), else the one the fleet
//! has on the most slots ([`choose_encoder`](framefleet_common::codec::choose_encoder)).
//! Dispatch then sends the chunks only to workers that have it, and acceptance refuses a
//! chunk that another encoder wrote.

use framefleet_common::codec::{EncoderRequest, VideoEncoder};

use crate::fleet::Fleet;
use crate::jobs::accepted::AcceptedChunk;
use crate::jobs::validate::ValidJob;

/// The encoder for this run of `job` (`None` for a job that encodes nothing), given the
/// chunks `trusted` from before a restart and the fleet registered now.
pub fn for_run(job: &ValidJob, trusted: &[AcceptedChunk], fleet: &Fleet) -> Option<VideoEncoder> {
    let request = job.encoder()?;
    if let EncoderRequest::Codec(codec) = request {
        let kept = trusted
            .iter()
            .filter_map(|chunk| VideoEncoder::from_reported(&chunk.result.encoder))
            .find(|encoder| encoder.codec() == codec);
        if kept.is_some() {
            return kept;
        }
    }
    fleet.offer(&job.processor.model, Some(request)).encoder
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use framefleet_common::config::Config;
    use framefleet_common::proto::{
        ChunkRange, ChunkResult, EncoderSettings, JobSpec, RegisterWorkerRequest,
    };

    use super::*;
    use crate::fleet::registration::RegistrationPolicy;
    use crate::fleet::WorkerAccess;
    use crate::jobs::validate;

    fn job(encoder: &str) -> ValidJob {
        let spec = JobSpec {
            input_uri: "file:///tmp/in.mp4".into(),
            output_uri: "file:///tmp/out.mp4".into(),
            encoder: Some(EncoderSettings {
                encoder: encoder.into(),
                ..EncoderSettings::default()
            }),
            ..JobSpec::default()
        };
        validate::check(spec, &Config::default()).expect("valid")
    }

    fn kept(encoder: &str) -> AcceptedChunk {
        AcceptedChunk {
            range: ChunkRange::default(),
            result: ChunkResult {
                encoder: encoder.into(),
                ..ChunkResult::default()
            },
            output: "file:///tmp/chunk.mp4".parse().expect("uri"),
            output_bytes: 1,
            packet_log: None,
            attempts: 1,
            wasted_gpu_seconds: 0.0,
        }
    }

    #[tokio::test]
    async fn a_resumed_job_keeps_the_encoder_its_kept_chunks_were_written_with() {
        let fleet = Fleet::new(
            Duration::from_secs(10),
            WorkerAccess::default(),
            Duration::from_secs(60),
        );
        // A fleet of NVENC workers only: a new H.264 job takes NVENC.
        let policy = RegistrationPolicy::new(&Config::default()).expect("policy");
        let worker = policy
            .check(RegisterWorkerRequest {
                address: "http://127.0.0.1:1".into(),
                gpu_type: "cpu".into(),
                slots: 2,
                gpus_per_slot: 1,
                encoders: vec!["libx264".into(), "h264_nvenc".into()],
                ..RegisterWorkerRequest::default()
            })
            .await
            .expect("a valid registration");
        fleet.register(worker).expect("registers");
        let h264 = job("h264");
        assert_eq!(for_run(&h264, &[], &fleet), Some(VideoEncoder::H264Nvenc));
        // Resumed with chunks x264 wrote before the restart: it stays x264, not a mix.
        let resumed = for_run(&h264, &[kept("libx264")], &fleet);
        assert_eq!(resumed, Some(VideoEncoder::Libx264));
        // Kept chunks of another codec, or an encoder asked by name, do not decide.
        assert_eq!(
            for_run(&h264, &[kept("libx265")], &fleet),
            Some(VideoEncoder::H264Nvenc)
        );
        let exact = job("libx264");
        assert_eq!(
            for_run(&exact, &[kept("h264_nvenc")], &fleet),
            Some(VideoEncoder::Libx264)
        );
    }
}
