//! Neural processors on libtorch: the Real-ESRGAN catalog models (fp16 on CUDA, float on
//! CPU) and user TorchScript modules (fed in the type of their own parameters, float for a
//! module exported as usual), batched.
//!
//! Frames go to RGB at their own size with swscale (cheap: input resolution) exactly as the
//! ffmpeg CLI converts them by default, so a model sees what Real-ESRGAN's own scripts and
//! ncnn tools see for the same video (`tests/neural.rs` holds the output to ncnn's on those
//! frames), then to the device as one `N x 3 x H x W` batch. The model's output is turned
//! into 8-bit YUV 4:2:0 on the device (limited range, with the input's own BT.709 or BT.601
//! matrix both ways), so what crosses back to the host is 1.5 bytes per pixel instead of 12
//! (a 4x frame is 16 times the input's pixels). Each model is loaded once per worker process
//! and kept.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use ffmpeg::format::Pixel;
use ffmpeg::frame::Video as VideoFrame;
use ffmpeg::software::scaling;
use ffmpeg_next as ffmpeg;
use tch::{Device, Kind, Tensor};

use framefleet_common::config::cuda_index;
use framefleet_common::media::copy_picture_properties;

use super::batching::{frames_that_fit, run_shrinking, smaller_tile, Learned};
use super::device_memory;
use super::{FrameProcessor, ProcessError};
use crate::models::colour::{rgb_to_yuv420, Matrix};
use crate::models::network::Network;
use crate::models::{self, ModelError};

/// Where neural models run and where they are installed.
#[derive(Debug, Clone)]
pub struct NeuralSettings {
    /// The model cache.
    pub model_dir: PathBuf,
    /// The libtorch device.
    pub device: Device,
    /// Largest tile side in input pixels; larger frames run in overlapping tiles (0: never).
    pub tile_size: i64,
    /// Where a TorchScript module may be read from: opened beneath the storage roots.
    pub files: framefleet_common::storage::LocalFiles,
}

/// Context around each tile, in input pixels: beyond the compact network's receptive
/// radius (tiles are then exact), and enough for RRDBNet's to keep seams under 1e-2
/// (`tests/models.rs` measures both).
const TILE_PAD: i64 = 32;

/// The device `requested` names (`worker.device`): `cpu`; `cuda:N`, GPU N when libtorch
/// sees it (the worker checks at start, [`check_device`]); `auto`, the first GPU when
/// there is one, else the CPU.
pub fn select_device(requested: &str) -> Device {
    match cuda_index(requested) {
        Some(index) if (index as i64) < tch::Cuda::device_count() => Device::Cuda(index),
        _ if requested == "cpu" => Device::Cpu,
        _ => Device::cuda_if_available(),
    }
}

/// Refuses a `cuda:N` this machine does not have, so a worker does not start on the wrong
/// device.
pub fn check_device(requested: &str) -> Result<(), String> {
    let Some(index) = cuda_index(requested) else {
        return Ok(());
    };
    match tch::Cuda::device_count() {
        count if (index as i64) < count => Ok(()),
        0 => Err(format!(
            "worker.device is {requested} but libtorch sees no CUDA device; use auto or cpu"
        )),
        count => Err(format!(
            "worker.device is {requested} but libtorch sees {count} CUDA devices; choose \
             cuda:0 to cuda:{}, or auto",
            count - 1
        )),
    }
}

/// Name of a device for reports: `cuda` or `cpu`.
pub fn device_label(device: Device) -> &'static str {
    if device.is_cuda() {
        "cuda"
    } else {
        "cpu"
    }
}

type Shared = Arc<Mutex<Network>>;

/// Loads `model` once per process: a catalog name or a TorchScript file path. Returns it
/// with the seconds this call spent loading it (0 when it was already loaded): the cold
/// start a chunk pays, which the orchestrator's cost model learns apart from the rest.
fn load(model: &str, settings: &NeuralSettings) -> Result<(Shared, f64), ProcessError> {
    static LOADED: OnceLock<Mutex<HashMap<String, Shared>>> = OnceLock::new();
    let cache = LOADED.get_or_init(Mutex::default);
    let key = format!("{model}@{:?}", settings.device);
    if let Some(network) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok((network.clone(), 0.0));
    }
    let started = std::time::Instant::now();
    let network = if let Some(info) = models::find(model) {
        let (param, bin) =
            models::installed_files(&settings.model_dir, model).map_err(model_error)?;
        let kind = if settings.device.is_cuda() {
            Kind::Half
        } else {
            Kind::Float
        };
        Network::from_ncnn(info, &param, &bin, settings.device, kind).map_err(model_error)?
    } else if is_torchscript_path(model) {
        let path = model.strip_prefix("file://").unwrap_or(model);
        Network::from_torchscript(std::path::Path::new(path), &settings.files, settings.device)
            .map_err(model_error)?
    } else {
        return Err(ProcessError::UnknownModel(model.to_string()));
    };
    let shared = Arc::new(Mutex::new(network));
    cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, shared.clone());
    Ok((shared, started.elapsed().as_secs_f64()))
}

/// True when `model` names a TorchScript file rather than a catalog model.
pub fn is_torchscript_path(model: &str) -> bool {
    let path = model.strip_prefix("file://").unwrap_or(model);
    path.starts_with('/')
        && [".pt", ".pth", ".ts", ".torchscript"]
            .iter()
            .any(|e| path.ends_with(e))
}

fn model_error(error: ModelError) -> ProcessError {
    match error {
        ModelError::NotInstalled { .. }
        | ModelError::Io { .. }
        | ModelError::TorchScript { .. } => ProcessError::Invalid(error.to_string()),
        other => ProcessError::Model(other.to_string()),
    }
}

/// A libtorch error as a processing error: running out of device (or host) memory is
/// told apart, so the batch can shrink and run again, and so is a module whose
/// `forward()` does not take one batch tensor, which no retry can fix.
fn torch_error(error: tch::TchError) -> ProcessError {
    let message = models::torch_message(&error);
    if message.contains("out of memory") || message.contains("can't allocate memory") {
        ProcessError::OutOfMemory(message)
    } else if is_signature_error(&message) {
        ProcessError::Invalid(format!(
            "the module's forward() does not take one tensor of frames (N x 3 x H x W): {message}"
        ))
    } else {
        ProcessError::Model(message)
    }
}

/// True for TorchScript's complaints about the arguments `forward()` was called with.
fn is_signature_error(message: &str) -> bool {
    message.contains("forward()")
        && ["argument", "Expected a value of type", "expected at most"]
            .iter()
            .any(|clue| message.contains(clue))
}

/// One batch of same-size frames through the network in tiles of the given side.
type BatchRun<U> = fn(&mut Neural, &[VideoFrame], i64) -> Result<Vec<U>, ProcessError>;

/// What fitted on the device, per model, device and frame size, for this worker's life.
static FITTED: OnceLock<Learned> = OnceLock::new();

/// A neural processor for one model on one device.
pub struct Neural {
    network: Shared,
    /// The model and device, naming what [`FITTED`] learns.
    key: String,
    tile_size: i64,
    device: Device,
    /// The element type the network takes.
    kind: Kind,
    to_rgb: Option<(Pixel, u32, u32, scaling::Context)>,
    /// Seconds [`Neural::new`] spent loading the model (0 when it was cached).
    load_seconds: f64,
}

impl Neural {
    /// Loads (or reuses) `model`.
    pub fn new(model: &str, settings: &NeuralSettings) -> Result<Self, ProcessError> {
        let (network, load_seconds) = load(model, settings)?;
        let kind = network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .input_kind();
        Ok(Self {
            network,
            key: format!("{model}@{:?}", settings.device),
            tile_size: settings.tile_size,
            device: settings.device,
            kind,
            to_rgb: None,
            load_seconds,
        })
    }

    fn rgb(&mut self, frame: &VideoFrame) -> Result<VideoFrame, ProcessError> {
        let key = (frame.format(), frame.width(), frame.height());
        if self
            .to_rgb
            .as_ref()
            .is_none_or(|(f, w, h, _)| (*f, *w, *h) != key)
        {
            let context = scaling::Context::get(
                key.0,
                key.1,
                key.2,
                Pixel::RGB24,
                key.1,
                key.2,
                scaling::Flags::BICUBIC,
            )?;
            self.to_rgb = Some((key.0, key.1, key.2, context));
        }
        let mut rgb = VideoFrame::empty();
        if let Some((_, _, _, context)) = &mut self.to_rgb {
            set_input_matrix(context, frame);
            context.run(frame, &mut rgb)?;
        }
        Ok(rgb)
    }

    /// The batch as an `N x 3 x H x W` tensor on the device, RGB in `[0, 1]`. The 8-bit
    /// pixels are written straight into one host tensor, pinned on CUDA so that the copy
    /// to the device is queued without blocking the host.
    fn input_batch(&mut self, frames: &[VideoFrame]) -> Result<Tensor, ProcessError> {
        let (width, height) = (frames[0].width() as usize, frames[0].height() as usize);
        let (row_bytes, frame_bytes) = (width * 3, width * height * 3);
        let shape = [frames.len() as i64, height as i64, width as i64, 3];
        let mut host = Tensor::f_empty(shape, (Kind::Uint8, Device::Cpu)).map_err(torch_error)?;
        if self.device.is_cuda() {
            host = host.f_pin_memory(self.device).map_err(torch_error)?;
        }
        // SAFETY: `host` is a new contiguous uint8 tensor of exactly this many bytes, only
        // reached through this slice until the copy below.
        let pixels = unsafe {
            std::slice::from_raw_parts_mut(host.data_ptr().cast::<u8>(), frames.len() * frame_bytes)
        };
        for (frame, target) in frames.iter().zip(pixels.chunks_exact_mut(frame_bytes)) {
            let rgb = self.rgb(frame)?;
            let (stride, data) = (rgb.stride(0), rgb.data(0));
            for (row, line) in target.chunks_exact_mut(row_bytes).enumerate() {
                line.copy_from_slice(&data[row * stride..row * stride + row_bytes]);
            }
        }
        host.f_to_device_(self.device, Kind::Uint8, self.device.is_cuda(), false)
            .and_then(|t| t.f_permute([0, 3, 1, 2]))
            .and_then(|t| t.f_to_kind(self.kind))
            .and_then(|t| t.f_div_scalar(255.0))
            .map_err(torch_error)
    }

    fn forward(&self, input: &Tensor, tile: i64) -> Result<Tensor, ProcessError> {
        self.network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forward_tiled(input, tile, TILE_PAD)
            .map_err(torch_error)
    }

    /// Runs `run` over same-size `frames` in batches and tiles that fit the device: what
    /// fitted before for this model and size, else as many frames as the device's free
    /// memory holds (all of them on the CPU) in the configured tiles; a batch that runs out
    /// of memory is halved, a single frame that does, cut into smaller tiles
    /// ([`batching`](super::batching)).
    fn fitting<U>(
        &mut self,
        frames: &[VideoFrame],
        run: BatchRun<U>,
    ) -> Result<Vec<U>, ProcessError> {
        let (width, height) = (i64::from(frames[0].width()), i64::from(frames[0].height()));
        let key = format!("{} {width}x{height}", self.key);
        let fitted = FITTED.get_or_init(Learned::default);
        // Sized once per model and frame size: later, libtorch's cache holds memory that
        // the device no longer reports free, though batches can use it.
        let (mut limit, mut tile) = fitted.get(&key).unwrap_or_else(|| {
            let first = (self.frames_free_memory_holds(width, height), self.tile_size);
            fitted.record(&key, first.0, first.1);
            first
        });
        let before = (limit, tile);
        // Only catalog networks (a fixed scale) can run in tiles.
        let tileable = self
            .network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .scale()
            .is_some();
        let out = run_shrinking(frames, &mut limit, |batch| loop {
            match run(self, batch, tile) {
                Err(ProcessError::OutOfMemory(why)) if batch.len() == 1 => {
                    let Some(smaller) = smaller_tile(tile, width, height).filter(|_| tileable)
                    else {
                        return Err(ProcessError::OutOfMemory(format!(
                            "{why} (one frame of {width}x{height}, in tiles of {tile})"
                        )));
                    };
                    tracing::warn!(%why, tile = smaller, "one frame ran out of memory; cutting it into smaller tiles");
                    tile = smaller;
                }
                done => return done,
            }
        })?;
        if (limit, tile) != before {
            fitted.record(&key, limit, tile);
        }
        Ok(out)
    }

    /// Frames of `width x height` (in tiles of the configured side) that the memory free on
    /// the device holds at the network's estimated working set; unbounded where either is
    /// unknown (the CPU, TorchScript modules).
    fn frames_free_memory_holds(&self, width: i64, height: i64) -> usize {
        let Some(free) = device_memory::free_bytes(self.device) else {
            return usize::MAX;
        };
        let per_pixel = self
            .network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bytes_per_input_pixel();
        let Some(per_pixel) = per_pixel else {
            return usize::MAX;
        };
        let side = |length: i64| match self.tile_size {
            tile if tile > 0 && tile < length => tile + 2 * TILE_PAD,
            _ => length,
        };
        let pixels = (side(width) * side(height)).max(1) as u64;
        frames_that_fit(free, pixels * per_pixel)
    }

    /// Runs the model on same-size frames and returns one vector per frame (the output's
    /// dimensions after the first, flattened).
    pub fn infer(&mut self, frames: &[VideoFrame]) -> Result<Vec<Vec<f32>>, ProcessError> {
        self.fitting(frames, Self::infer_batch)
    }

    fn infer_batch(
        &mut self,
        frames: &[VideoFrame],
        tile: i64,
    ) -> Result<Vec<Vec<f32>>, ProcessError> {
        let input = self.input_batch(frames)?;
        let output = self.forward(&input, tile)?;
        let rows = output
            .f_to_kind(Kind::Float)
            .and_then(|t| t.f_to_device(Device::Cpu))
            .and_then(|t| t.f_flatten(1, -1))
            .and_then(|t| t.f_contiguous())
            .map_err(torch_error)?;
        let size = rows.size();
        if size.first().copied() != Some(frames.len() as i64) {
            return Err(ProcessError::Model(format!(
                "the model returned {size:?} for {} frames; infer models return one vector per frame",
                frames.len()
            )));
        }
        let flat = Vec::<f32>::try_from(rows.f_flatten(0, -1).map_err(torch_error)?)
            .map_err(torch_error)?;
        Ok(flat
            .chunks(size[1].max(1) as usize)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// Runs one batch of same-size frames in tiles of `tile` and returns YUV 4:2:0 frames.
    fn run_batch(
        &mut self,
        frames: &[VideoFrame],
        tile: i64,
    ) -> Result<Vec<VideoFrame>, ProcessError> {
        let input = self.input_batch(frames)?;
        let output = self.forward(&input, tile)?;
        let planes = rgb_to_yuv420(&output, matrix_of(&frames[0])).map_err(torch_error)?;
        let (out_h, out_w) = (planes.height, planes.width);
        let mut result = Vec::with_capacity(frames.len());
        for (index, source) in frames.iter().enumerate() {
            let mut frame = VideoFrame::new(Pixel::YUV420P, out_w as u32, out_h as u32);
            for (plane, (data, w, h)) in [
                (&planes.y, out_w, out_h),
                (&planes.u, out_w / 2, out_h / 2),
                (&planes.v, out_w / 2, out_h / 2),
            ]
            .into_iter()
            .enumerate()
            {
                let stride = frame.stride(plane);
                let offset = index * w * h;
                let target = frame.data_mut(plane);
                for row in 0..h {
                    target[row * stride..row * stride + w]
                        .copy_from_slice(&data[offset + row * w..offset + (row + 1) * w]);
                }
            }
            frame.set_pts(source.pts());
            copy_picture_properties(source, &mut frame, true);
            frame.set_color_range(ffmpeg::color::Range::MPEG);
            result.push(frame);
        }
        Ok(result)
    }
}

/// The matrix a frame's YUV values use: BT.709 when tagged so, else BT.601 (FFmpeg's
/// default for untagged video).
fn matrix_of(frame: &VideoFrame) -> Matrix {
    match frame.color_space() {
        ffmpeg::color::Space::BT709 => Matrix::Bt709,
        _ => Matrix::Bt601,
    }
}

/// Makes swscale read `frame` with its own matrix and range (it assumes BT.601 otherwise).
fn set_input_matrix(context: &mut scaling::Context, frame: &VideoFrame) {
    let colorspace = match matrix_of(frame) {
        Matrix::Bt709 => ffmpeg::ffi::SWS_CS_ITU709,
        Matrix::Bt601 => ffmpeg::ffi::SWS_CS_ITU601,
    };
    let full_range = i32::from(
        frame.color_range() == ffmpeg::color::Range::JPEG
            || framefleet_common::media::is_full_range_format(frame.format()),
    );
    // SAFETY: the context is a live SwsContext owned by `context`; the coefficient table
    // is a static of libswscale; the call only sets conversion parameters.
    unsafe {
        let table = ffmpeg::ffi::sws_getCoefficients(colorspace);
        ffmpeg::ffi::sws_setColorspaceDetails(
            context.as_mut_ptr(),
            table,
            full_range,
            table,
            1,
            0,
            1 << 16,
            1 << 16,
        );
    }
}

impl FrameProcessor for Neural {
    fn process(&mut self, frames: Vec<VideoFrame>) -> Result<Vec<VideoFrame>, ProcessError> {
        let mut out = Vec::with_capacity(frames.len());
        let mut start = 0;
        while start < frames.len() {
            let size = (frames[start].width(), frames[start].height());
            let end = frames[start..]
                .iter()
                .position(|f| (f.width(), f.height()) != size)
                .map_or(frames.len(), |i| start + i);
            out.extend(self.fitting(&frames[start..end], Self::run_batch)?);
            start = end;
        }
        Ok(out)
    }

    fn device(&self) -> &'static str {
        device_label(self.device)
    }

    fn model_load_seconds(&self) -> f64 {
        self.load_seconds
    }
}
