//! Frame processors: a batch of decoded frames in, a batch of processed frames out.
//!
//! - [`Lanczos`]: swscale on the CPU, the model-free default, always available.
//! - `neural` (feature `torch`): Real-ESRGAN catalog models and TorchScript modules on
//!   libtorch, CUDA when present, in batches and tiles that fit the device ([`batching`]).
//!
//! A processor is built inside the processing thread and stays there (FFmpeg's scaler
//! contexts are not thread-safe), so the trait has no `Send` bound. Every processor emits
//! `yuv420p` frames, the encoder's input format, and keeps each frame's timestamp.

use ffmpeg::format::Pixel;
use ffmpeg::frame::Video as VideoFrame;
use ffmpeg::software::scaling;
pub mod batching;
#[cfg(feature = "torch")]
pub mod device_memory;
#[cfg(feature = "torch")]
pub mod neural;

use ffmpeg_next as ffmpeg;

use framefleet_common::media::{copy_picture_properties, is_full_range_format, scaled_dimension};
use framefleet_common::proto::ProcessorSpec;

/// A processor could not be built or failed on a frame.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The job names a model this worker does not have.
    #[error("unknown model `{0}`; this worker offers: {offered}", offered = offered_models())]
    UnknownModel(String),
    /// The model failed to load or to run.
    #[error("the model failed: {0}")]
    Model(String),
    /// The device had no memory left for one frame, even in the smallest tiles (a larger
    /// batch that runs out is halved and run again instead, see [`batching`]).
    #[error(
        "the device ran out of memory: {0}; lower worker.tile_size, free the GPU of other \
         work, or use a GPU with more memory"
    )]
    OutOfMemory(String),
    /// The job's parameters cannot work.
    #[error("invalid processor settings: {0}")]
    Invalid(String),
    /// FFmpeg failed on a frame.
    #[error("processing a frame failed: {0}")]
    Frame(#[from] ffmpeg::Error),
}

/// One per-frame operation. Implementations keep state (scalers, models) across batches.
pub trait FrameProcessor {
    /// Processes a batch in order; the output has one frame per input frame, with the same
    /// timestamps.
    fn process(&mut self, frames: Vec<VideoFrame>) -> Result<Vec<VideoFrame>, ProcessError>;
    /// Where the work runs: `cpu` or `cuda`.
    fn device(&self) -> &'static str;
    /// Seconds building this processor spent loading a model (0: none, or already loaded).
    fn model_load_seconds(&self) -> f64 {
        0.0
    }
}

/// What building a processor needs from the worker.
#[derive(Debug, Clone)]
pub struct ProcessorSettings {
    /// Where neural models are installed.
    pub model_dir: std::path::PathBuf,
    /// `auto` (CUDA when present) or `cpu`.
    pub device: String,
    /// Largest tile side for neural models, in input pixels (0: whole frames).
    pub tile_size: u32,
    /// The local files a job's TorchScript module may be read from (`storage.local_roots`).
    pub files: framefleet_common::storage::LocalFiles,
}

/// The models this worker can run, for error messages.
fn offered_models() -> String {
    let mut names = vec!["lanczos"];
    if cfg!(feature = "torch") {
        names.extend(crate::models::CATALOG.iter().map(|m| m.name));
        names.push("/path/to/module.pt (TorchScript)");
    } else {
        names.push("(neural models need a worker built with --features torch)");
    }
    names.join(", ")
}

/// Builds the processor a job asks for.
pub fn build(
    spec: &ProcessorSpec,
    settings: &ProcessorSettings,
) -> Result<Box<dyn FrameProcessor>, ProcessError> {
    match spec.model.as_str() {
        "" | "lanczos" => Ok(Box::new(Lanczos::new(spec.scale)?)),
        #[cfg(feature = "torch")]
        model => {
            let neural = neural::NeuralSettings {
                model_dir: settings.model_dir.clone(),
                device: neural::select_device(&settings.device),
                tile_size: i64::from(settings.tile_size),
                files: settings.files.clone(),
            };
            Ok(Box::new(neural::Neural::new(model, &neural)?))
        }
        #[cfg(not(feature = "torch"))]
        other => {
            let _ = settings;
            Err(ProcessError::UnknownModel(other.to_string()))
        }
    }
}

/// Loads `model` into this process's model cache (a no-op for `lanczos`), so chunks of it
/// start warm; returns the seconds loading took.
pub fn preload(model: &str, settings: &ProcessorSettings) -> Result<f64, ProcessError> {
    let spec = ProcessorSpec {
        model: model.to_string(),
        ..ProcessorSpec::default()
    };
    Ok(build(&spec, settings)?.model_load_seconds())
}

/// Lanczos resampling through swscale: the model-free default, always available.
pub struct Lanczos {
    scale: f64,
    scaler: Option<(Pixel, u32, u32, scaling::Context)>,
}

impl Lanczos {
    /// A scaler by `scale` (1.0 only converts to `yuv420p`).
    pub fn new(scale: f64) -> Result<Self, ProcessError> {
        let scale = if scale == 0.0 { 1.0 } else { scale };
        if !(scale.is_finite() && (0.05..=16.0).contains(&scale)) {
            return Err(ProcessError::Invalid(format!(
                "scale {scale} is outside 0.05-16"
            )));
        }
        Ok(Self {
            scale,
            scaler: None,
        })
    }

    /// Output size for an input of `width` x `height`.
    pub fn output_size(&self, width: u32, height: u32) -> (u32, u32) {
        (
            scaled_dimension(width, self.scale),
            scaled_dimension(height, self.scale),
        )
    }

    fn scaler_for(&mut self, frame: &VideoFrame) -> Result<&mut scaling::Context, ProcessError> {
        let key = (frame.format(), frame.width(), frame.height());
        let stale = self
            .scaler
            .as_ref()
            .is_none_or(|(format, w, h, _)| (*format, *w, *h) != key);
        if stale {
            let (out_w, out_h) = self.output_size(key.1, key.2);
            let context = scaling::Context::get(
                key.0,
                key.1,
                key.2,
                Pixel::YUV420P,
                out_w,
                out_h,
                scaling::Flags::LANCZOS
                    | scaling::Flags::ACCURATE_RND
                    | scaling::Flags::FULL_CHR_H_INT,
            )?;
            self.scaler = Some((key.0, key.1, key.2, context));
        }
        match &mut self.scaler {
            Some((_, _, _, context)) => Ok(context),
            None => Err(ProcessError::Invalid("scaler missing".into())),
        }
    }
}

impl FrameProcessor for Lanczos {
    fn process(&mut self, frames: Vec<VideoFrame>) -> Result<Vec<VideoFrame>, ProcessError> {
        frames
            .into_iter()
            .map(|frame| {
                let scaler = self.scaler_for(&frame)?;
                let mut out = VideoFrame::empty();
                scaler.run(&frame, &mut out)?;
                out.set_pts(frame.pts());
                copy_picture_properties(&frame, &mut out, is_full_range_format(frame.format()));
                Ok(out)
            })
            .collect()
    }

    fn device(&self) -> &'static str {
        "cpu"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: u32, height: u32, pts: i64) -> VideoFrame {
        let mut frame = VideoFrame::new(Pixel::YUV420P, width, height);
        for plane in 0..3 {
            let stride = frame.stride(plane);
            let data = frame.data_mut(plane);
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = ((i % stride) * 3 + i / stride) as u8;
            }
        }
        frame.set_pts(Some(pts));
        frame.set_color_range(ffmpeg::color::Range::JPEG);
        // SAFETY: the frame owns a valid AVFrame.
        unsafe {
            (*frame.as_mut_ptr()).sample_aspect_ratio = ffmpeg::Rational::new(4, 3).into();
        }
        frame
    }

    /// The visible luma pixels, row by row (stride padding left out).
    fn luma_rows(frame: &VideoFrame) -> Vec<u8> {
        let (stride, width) = (frame.stride(0), frame.width() as usize);
        frame
            .data(0)
            .chunks(stride)
            .take(frame.height() as usize)
            .flat_map(|row| row[..width].to_vec())
            .collect()
    }

    #[test]
    fn lanczos_scales_size_keeps_timestamps_and_is_deterministic() {
        framefleet_common::media::init();
        let mut lanczos = Lanczos::new(2.0).expect("valid scale");
        let out = lanczos
            .process(vec![gradient(33, 17, 7), gradient(33, 17, 9)])
            .expect("scales");
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].width(), out[0].height()), (66, 34));
        assert_eq!(out[0].format(), Pixel::YUV420P);
        assert_eq!((out[0].pts(), out[1].pts()), (Some(7), Some(9)));
        assert_eq!(out[0].aspect_ratio(), ffmpeg::Rational::new(4, 3));
        assert_eq!(out[0].color_range(), ffmpeg::color::Range::JPEG);
        let again = lanczos.process(vec![gradient(33, 17, 7)]).expect("scales");
        assert_eq!(luma_rows(&out[0]), luma_rows(&again[0]));
    }

    #[test]
    fn odd_results_round_to_even_and_bad_settings_are_refused() {
        assert_eq!(scaled_dimension(321, 1.0), 322);
        assert_eq!(scaled_dimension(321, 2.0), 642);
        assert!(Lanczos::new(f64::NAN).is_err());
        let settings = ProcessorSettings {
            model_dir: std::path::PathBuf::from("/nonexistent"),
            device: "cpu".into(),
            tile_size: 0,
            files: framefleet_common::storage::LocalFiles::new(&[]),
        };
        let error = build(
            &ProcessorSpec {
                model: "magic".into(),
                scale: 2.0,
                ..ProcessorSpec::default()
            },
            &settings,
        )
        .err()
        .expect("unknown model");
        assert!(error.to_string().contains("magic"));
    }
}
