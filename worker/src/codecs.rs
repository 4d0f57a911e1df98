//! The video codecs this worker has, found when it starts, and the options each encoder
//! takes for a job's settings.
//!
//! An encoder counts as present only if FFmpeg can open a session with it here: Debian's
//! FFmpeg lists `h264_nvenc` and `hevc_nvenc` on every machine, and loads the driver's
//! NVENC library only when one is opened, so a machine without an NVIDIA GPU (or with one
//! that has no NVENC engine, like the H100) gets a clean refusal and offers the software
//! encoders alone. NVDEC counts as present when FFmpeg can create a CUDA device (the
//! driver is loaded at run time the same way); the build links no CUDA or driver library.
//! The orchestrator learns the list from the registration and sends a job's chunks only
//! to workers that have the job's encoder.

use std::sync::Arc;

use ffmpeg_next as ffmpeg;

use framefleet_common::codec::VideoEncoder;
use framefleet_common::proto::EncoderSettings;

use crate::nvdec::{Nvdec, NVDEC, SOFTWARE_DECODER};

/// Default constant rate factor when a job gives none.
pub const DEFAULT_CRF: u32 = 18;

/// Default preset when a job gives none.
pub const DEFAULT_PRESET: &str = "medium";

/// Frame size the encoders are opened at to see whether they work (NVENC refuses frames
/// under 145x49 or so).
const PROBE_SIZE: u32 = 256;

/// The worker's encoders and decoders.
#[derive(Debug, Clone)]
pub struct Codecs {
    encoders: Vec<VideoEncoder>,
    nvdec: Option<Arc<Nvdec>>,
}

/// An encoder `worker.encoders` lists cannot be opened here.
#[derive(Debug, thiserror::Error)]
#[error(
    "worker.encoders lists {encoder}, but it cannot be opened on this machine ({why}); \
     remove it, or run this worker where it exists (NVENC needs an NVIDIA GPU that has the \
     engine, such as a T4, L4, L40S or A10G, and its driver)"
)]
pub struct MissingEncoder {
    /// The encoder listed.
    pub encoder: VideoEncoder,
    /// What FFmpeg said.
    pub why: String,
}

impl Codecs {
    /// Opens every encoder FFmpeg knows and keeps those that work, restricted to `wanted`
    /// (`worker.encoders`, already validated; empty keeps all). Each one `wanted` names
    /// must work. With `hardware_decode` (`worker.nvdec`), opens a CUDA device to decode
    /// on. Blocking: opening NVENC loads the driver and takes a moment.
    pub fn detect(wanted: &[VideoEncoder], hardware_decode: bool) -> Result<Self, MissingEncoder> {
        let mut encoders = Vec::new();
        for encoder in VideoEncoder::ALL {
            let listed = wanted.contains(&encoder);
            if !(wanted.is_empty() || listed) {
                continue;
            }
            match try_open(encoder) {
                Ok(()) => encoders.push(encoder),
                Err(why) if listed => return Err(MissingEncoder { encoder, why }),
                Err(why) => tracing::debug!(%encoder, %why, "encoder not available"),
            }
        }
        let nvdec = hardware_decode.then(Nvdec::open).flatten().map(Arc::new);
        tracing::info!(
            encoders = ?encoders.iter().map(|e| e.name()).collect::<Vec<_>>(),
            nvdec = nvdec.is_some(),
            "video codecs found"
        );
        Ok(Self { encoders, nvdec })
    }

    /// A worker with exactly these encoders and software decoding (tests and tools that
    /// know what they run on).
    pub fn with_encoders(encoders: Vec<VideoEncoder>) -> Self {
        Self {
            encoders,
            nvdec: None,
        }
    }

    /// The GPU decoder, where the worker has one.
    pub fn nvdec(&self) -> Option<&Arc<Nvdec>> {
        self.nvdec.as_ref()
    }

    /// True when the worker can encode with `encoder`.
    pub fn has(&self, encoder: VideoEncoder) -> bool {
        self.encoders.contains(&encoder)
    }

    /// The encoders' FFmpeg names, for the registration and `Status`.
    pub fn encoder_names(&self) -> Vec<String> {
        self.encoders.iter().map(|e| e.name().to_string()).collect()
    }

    /// The decoders, for the registration and `Status`: software always, NVDEC when a
    /// CUDA device opens.
    pub fn decoder_names(&self) -> Vec<String> {
        let mut names = vec![SOFTWARE_DECODER.to_string()];
        if self.nvdec.is_some() {
            names.push(NVDEC.to_string());
        }
        names
    }
}

/// Opens `encoder` on a small frame with the default settings.
fn try_open(encoder: VideoEncoder) -> Result<(), String> {
    let codec = ffmpeg::encoder::find_by_name(encoder.name())
        .ok_or_else(|| "this FFmpeg was built without it".to_string())?;
    let mut context = ffmpeg::codec::context::Context::new_with_codec(codec)
        .encoder()
        .video()
        .map_err(|e| e.to_string())?;
    context.set_width(PROBE_SIZE);
    context.set_height(PROBE_SIZE);
    context.set_format(ffmpeg::format::Pixel::YUV420P);
    context.set_time_base(ffmpeg::Rational::new(1, 25));
    let options = encoder_options(encoder, &EncoderSettings::default());
    context
        .open_as_with(codec, options)
        .map(drop)
        .map_err(|e| format!("FFmpeg could not open it: {e}"))
}

/// The preset a job gave (x264's names), or the default.
fn preset_of(settings: &EncoderSettings) -> &str {
    if settings.preset.is_empty() {
        DEFAULT_PRESET
    } else {
        settings.preset.as_str()
    }
}

/// The rate factor a job gave, or the default.
fn crf_of(settings: &EncoderSettings) -> u32 {
    if settings.crf == 0 {
        DEFAULT_CRF
    } else {
        settings.crf
    }
}

/// NVENC's preset (p1 fastest to p7 best) nearest an x264 preset in its trade of speed
/// against quality.
fn nvenc_preset(x264: &str) -> &'static str {
    match x264 {
        "ultrafast" | "superfast" => "p1",
        "veryfast" => "p2",
        "faster" => "p3",
        "fast" => "p4",
        "medium" => "p5",
        "slow" => "p6",
        _ => "p7",
    }
}

/// The FFmpeg options that give `encoder` a job's settings: x264's and x265's own preset
/// and crf (qp 0 / `lossless=1` when lossless); for NVENC, the nearest preset and
/// constant-quality VBR at the crf's value (or its lossless tuning).
pub fn encoder_options(
    encoder: VideoEncoder,
    settings: &EncoderSettings,
) -> ffmpeg::Dictionary<'static> {
    let mut options = ffmpeg::Dictionary::new();
    let preset = preset_of(settings);
    let crf = crf_of(settings).to_string();
    match encoder {
        VideoEncoder::Libx264 => {
            options.set("preset", preset);
            if settings.lossless {
                options.set("qp", "0");
            } else {
                options.set("crf", &crf);
            }
        }
        VideoEncoder::Libx265 => {
            options.set("preset", preset);
            if settings.lossless {
                options.set("x265-params", "log-level=error:lossless=1");
            } else {
                options.set("x265-params", "log-level=error");
                options.set("crf", &crf);
            }
        }
        VideoEncoder::H264Nvenc | VideoEncoder::HevcNvenc => {
            options.set("preset", nvenc_preset(preset));
            if settings.lossless {
                options.set("tune", "lossless");
            } else {
                options.set("rc", "vbr");
                options.set("cq", &crf);
                options.set("b", "0");
            }
        }
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_encoders_open_here_and_nvenc_does_not_without_its_driver() {
        framefleet_common::media::init();
        let found = Codecs::detect(&[], true).expect("nothing listed, nothing required");
        assert!(found.has(VideoEncoder::Libx264));
        assert!(found.has(VideoEncoder::Libx265));
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return;
        }
        // A machine without an NVIDIA driver: NVENC is listed by FFmpeg but cannot open,
        // so the worker falls back to the software encoders and software decoding.
        assert!(!found.has(VideoEncoder::H264Nvenc));
        assert_eq!(found.decoder_names(), ["software"]);
        let error = Codecs::detect(&[VideoEncoder::Libx264, VideoEncoder::HevcNvenc], true)
            .expect_err("a listed encoder that cannot open stops the worker");
        let message = error.to_string();
        assert!(
            message.contains("hevc_nvenc") && message.contains("remove it"),
            "{message}"
        );
        let only = Codecs::detect(&[VideoEncoder::Libx264], true).expect("x264 opens");
        assert_eq!(only.encoder_names(), ["libx264"]);
    }

    #[test]
    fn nvenc_gets_the_nearest_preset_and_constant_quality() {
        let settings = EncoderSettings {
            crf: 23,
            preset: "veryfast".into(),
            ..EncoderSettings::default()
        };
        let options = encoder_options(VideoEncoder::H264Nvenc, &settings);
        assert_eq!(options.get("preset"), Some("p2"));
        assert_eq!(options.get("cq"), Some("23"));
        let lossless = EncoderSettings {
            lossless: true,
            ..settings
        };
        let options = encoder_options(VideoEncoder::HevcNvenc, &lossless);
        assert_eq!(options.get("tune"), Some("lossless"));
        assert_eq!(options.get("cq"), None);
        let x265 = encoder_options(VideoEncoder::Libx265, &lossless);
        assert_eq!(x265.get("x265-params"), Some("log-level=error:lossless=1"));
    }
}
