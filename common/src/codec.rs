//! Video encoders a job can be written with, and how a job's encoder is chosen.
//!
//! Every chunk of a job must come out of the same encoder with the same settings, or the
//! chunks cannot be joined without re-encoding (and would look different side by side).
//! A job asks for a codec (`h264`, `hevc`) or one encoder by its FFmpeg name; the
//! orchestrator turns a codec into one encoder, from what the fleet's workers have, with
//! [`choose_encoder`], and then dispatches the job's chunks only to workers that have it.
//! Workers find out which encoders they have when they start (software ones always; NVENC
//! only where the GPU and its driver carry it).

use std::fmt;
use std::str::FromStr;

/// A video codec a job's output can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 / AVC: plays everywhere.
    H264,
    /// H.265 / HEVC: about half the bits of H.264 for the same quality.
    Hevc,
}

impl VideoCodec {
    /// FFmpeg's name for the codec, as a probe of the output reports it.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "h264",
            VideoCodec::Hevc => "hevc",
        }
    }
}

/// An FFmpeg video encoder framefleet writes chunks with (named in configuration by its
/// FFmpeg name).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum VideoEncoder {
    /// x264 on the CPU cores: every worker has it, the fallback of every H.264 job.
    Libx264,
    /// x265 on the CPU cores.
    Libx265,
    /// NVENC H.264 on the GPU's video engine (T4, L4, L40S, A10G; not H100, H200, A100).
    H264Nvenc,
    /// NVENC HEVC on the GPU's video engine.
    HevcNvenc,
}

impl VideoEncoder {
    /// Every encoder, software ones first.
    pub const ALL: [VideoEncoder; 4] = [
        VideoEncoder::Libx264,
        VideoEncoder::Libx265,
        VideoEncoder::H264Nvenc,
        VideoEncoder::HevcNvenc,
    ];

    /// FFmpeg's name for the encoder (`libx264`, `h264_nvenc`, ...).
    pub fn name(self) -> &'static str {
        match self {
            VideoEncoder::Libx264 => "libx264",
            VideoEncoder::Libx265 => "libx265",
            VideoEncoder::H264Nvenc => "h264_nvenc",
            VideoEncoder::HevcNvenc => "hevc_nvenc",
        }
    }

    /// The codec it writes.
    pub fn codec(self) -> VideoCodec {
        match self {
            VideoEncoder::Libx264 | VideoEncoder::H264Nvenc => VideoCodec::H264,
            VideoEncoder::Libx265 | VideoEncoder::HevcNvenc => VideoCodec::Hevc,
        }
    }

    /// True for an encoder on the GPU's video engine.
    pub fn is_hardware(self) -> bool {
        matches!(self, VideoEncoder::H264Nvenc | VideoEncoder::HevcNvenc)
    }

    /// The name a worker of an older version reports for an encoder: empty meant libx264.
    pub fn from_reported(name: &str) -> Option<Self> {
        if name.is_empty() {
            Some(VideoEncoder::Libx264)
        } else {
            name.parse().ok()
        }
    }
}

impl fmt::Display for VideoEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not an encoder or codec framefleet knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown encoder `{0}`; use a codec (h264, hevc) or an encoder (libx264, libx265, \
     h264_nvenc, hevc_nvenc)"
)]
pub struct UnknownEncoder(pub String);

impl FromStr for VideoEncoder {
    type Err = UnknownEncoder;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        VideoEncoder::ALL
            .into_iter()
            .find(|encoder| encoder.name() == name)
            .ok_or_else(|| UnknownEncoder(name.to_string()))
    }
}

/// What a job asks to be encoded with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderRequest {
    /// Any encoder of the codec: the orchestrator picks one from the fleet.
    Codec(VideoCodec),
    /// Exactly this encoder: the job runs only on workers that have it.
    Encoder(VideoEncoder),
}

impl FromStr for EncoderRequest {
    type Err = UnknownEncoder;

    /// Parses a job's `encoder` field: empty or `h264` (the default), `hevc`, or an
    /// encoder's FFmpeg name.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "" | "h264" => Ok(EncoderRequest::Codec(VideoCodec::H264)),
            "hevc" | "h265" => Ok(EncoderRequest::Codec(VideoCodec::Hevc)),
            name => name.parse().map(EncoderRequest::Encoder),
        }
    }
}

impl EncoderRequest {
    /// Whether workers offering `offered` can take the job: they have the encoder named,
    /// or one of the codec asked for.
    pub fn served_by(self, offered: &[VideoEncoder]) -> bool {
        match self {
            EncoderRequest::Codec(codec) => offered.iter().any(|e| e.codec() == codec),
            EncoderRequest::Encoder(encoder) => offered.contains(&encoder),
        }
    }

    /// The codec the output will be in.
    pub fn codec(self) -> VideoCodec {
        match self {
            EncoderRequest::Codec(codec) => codec,
            EncoderRequest::Encoder(encoder) => encoder.codec(),
        }
    }
}

/// The one encoder a job's chunks are all written with. An exact request is kept. For a
/// codec, `offered` lists each encoder with the slots of the registered workers that
/// have it: the job takes the codec's encoder on the most slots, so it can use as much
/// of the fleet as possible, and the hardware one on a tie (it leaves the host cores to
/// decoding and frees the model from a CPU encoder's pace). With no worker offering the
/// codec yet (a fleet scaling from zero), the software encoder, which every worker has.
pub fn choose_encoder(request: EncoderRequest, offered: &[(VideoEncoder, u32)]) -> VideoEncoder {
    let codec = match request {
        EncoderRequest::Encoder(encoder) => return encoder,
        EncoderRequest::Codec(codec) => codec,
    };
    offered
        .iter()
        .filter(|(encoder, slots)| encoder.codec() == codec && *slots > 0)
        .max_by_key(|(encoder, slots)| (*slots, encoder.is_hardware()))
        .map(|(encoder, _)| *encoder)
        .unwrap_or(match codec {
            VideoCodec::H264 => VideoEncoder::Libx264,
            VideoCodec::Hevc => VideoEncoder::Libx265,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_say_what_exists() {
        for encoder in VideoEncoder::ALL {
            assert_eq!(encoder.name().parse::<VideoEncoder>(), Ok(encoder));
        }
        let error = "av1_nvenc"
            .parse::<EncoderRequest>()
            .expect_err("no AV1 encoder");
        assert!(error.to_string().contains("h264_nvenc"), "{error}");
        assert_eq!(
            "".parse::<EncoderRequest>(),
            Ok(EncoderRequest::Codec(VideoCodec::H264))
        );
        assert_eq!(VideoEncoder::from_reported(""), Some(VideoEncoder::Libx264));
    }

    #[test]
    fn an_exact_request_is_kept_whatever_the_fleet_has() {
        let request = EncoderRequest::Encoder(VideoEncoder::H264Nvenc);
        assert_eq!(
            choose_encoder(request, &[(VideoEncoder::Libx264, 8)]),
            VideoEncoder::H264Nvenc
        );
    }

    #[test]
    fn a_codec_takes_the_encoder_on_the_most_slots_hardware_on_a_tie() {
        let h264 = EncoderRequest::Codec(VideoCodec::H264);
        // Two T4 workers (NVENC) and six H100 ones (none): x264 uses all eight.
        let mixed = [
            (VideoEncoder::Libx264, 8),
            (VideoEncoder::H264Nvenc, 2),
            (VideoEncoder::HevcNvenc, 2),
        ];
        assert_eq!(choose_encoder(h264, &mixed), VideoEncoder::Libx264);
        // A fleet of T4s only: every slot has NVENC, so the job takes it.
        let t4s = [(VideoEncoder::Libx264, 4), (VideoEncoder::H264Nvenc, 4)];
        assert_eq!(choose_encoder(h264, &t4s), VideoEncoder::H264Nvenc);
        let hevc = EncoderRequest::Codec(VideoCodec::Hevc);
        assert_eq!(choose_encoder(hevc, &t4s), VideoEncoder::Libx265);
        assert_eq!(choose_encoder(hevc, &mixed), VideoEncoder::HevcNvenc);
        assert_eq!(choose_encoder(h264, &[]), VideoEncoder::Libx264);
    }
}
