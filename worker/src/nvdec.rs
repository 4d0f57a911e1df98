//! Decoding on the GPU's video engines (NVDEC), through FFmpeg's `cuda` hwaccel.
//!
//! The hwaccel runs inside FFmpeg's own decoders (h264, hevc, vp9, av1, ...): the same
//! parser, reordering and timestamps as software decoding, so a chunk's frames are exactly
//! those software would give; only the pixel reconstruction moves to the GPU. Each
//! decoded surface is copied back to host memory (NV12, or P010 for 10-bit) and the rest
//! of the pipeline sees an ordinary frame.
//!
//! Fallback happens at three levels:
//! - no CUDA device at start (no driver, no GPU): [`Nvdec::open`] gives `None` and every
//!   chunk decodes in software;
//! - a stream the engine cannot take (a codec, profile or size it lacks): FFmpeg's format
//!   negotiation drops the hwaccel when it fails to start and decodes that stream in
//!   software (except AV1, whose native decoder has no software path: such a chunk fails
//!   and takes the next level);
//! - a chunk whose GPU decoding failed: its input is marked ([`Nvdec::failed`]), so the
//!   retry of that chunk, and every later chunk of that input on this worker, decodes in
//!   software. The mark is per input, not per codec: one damaged file must not take the
//!   engine away from every other job.
//!
//! The device is loaded through FFmpeg at run time (`libcuda` from the driver); nothing
//! here links a CUDA library.

use std::collections::VecDeque;
use std::sync::Mutex;

use ffmpeg::frame::Video as VideoFrame;
use ffmpeg_next as ffmpeg;

/// What a chunk's frames were decoded with, as reported for each chunk.
pub const SOFTWARE_DECODER: &str = "software";

/// The GPU decoder's name in reports.
pub const NVDEC: &str = "nvdec";

/// Inputs remembered as failing on the GPU; the oldest is forgotten beyond this.
const FAILED_INPUTS_KEPT: usize = 1024;

/// A CUDA device FFmpeg decodes on, shared by every chunk of the worker, and the inputs
/// whose GPU decoding failed here.
pub struct Nvdec {
    device: DeviceRef,
    failed: FailedInputs,
}

/// The inputs whose GPU decoding failed on this worker, the latest
/// [`FAILED_INPUTS_KEPT`] of them.
#[derive(Debug, Default)]
struct FailedInputs(Mutex<VecDeque<String>>);

impl FailedInputs {
    fn contains(&self, input: &str) -> bool {
        self.0
            .lock()
            .is_ok_and(|inputs| inputs.iter().any(|known| known == input))
    }

    fn insert(&self, input: &str) {
        if let Ok(mut inputs) = self.0.lock() {
            if !inputs.iter().any(|known| known == input) {
                if inputs.len() == FAILED_INPUTS_KEPT {
                    inputs.pop_front();
                }
                inputs.push_back(input.to_string());
            }
        }
    }
}

/// One reference to FFmpeg's CUDA device context.
struct DeviceRef(*mut ffmpeg::ffi::AVBufferRef);

// SAFETY: an AVBufferRef's count is atomic and FFmpeg's CUDA device context is made to be
// shared by decoders on several threads (the ffmpeg CLI does so); this reference is only
// read until it is dropped.
unsafe impl Send for DeviceRef {}
// SAFETY: as above; `&DeviceRef` only hands out new references.
unsafe impl Sync for DeviceRef {}

impl Drop for DeviceRef {
    fn drop(&mut self) {
        // SAFETY: the reference is ours, and released once.
        unsafe { ffmpeg::ffi::av_buffer_unref(&mut self.0) }
    }
}

impl std::fmt::Debug for Nvdec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvdec")
            .field("failed", &self.failed)
            .finish()
    }
}

impl Nvdec {
    /// Creates a CUDA device on the first GPU the driver shows (`CUDA_VISIBLE_DEVICES`
    /// chooses it), or `None` where there is none. Blocking: it loads the driver.
    pub fn open() -> Option<Self> {
        let mut device: *mut ffmpeg::ffi::AVBufferRef = std::ptr::null_mut();
        // SAFETY: `device` is a valid out-pointer, set only on success; a null name and
        // options pick the default device.
        let created = unsafe {
            ffmpeg::ffi::av_hwdevice_ctx_create(
                &mut device,
                ffmpeg::ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA,
                std::ptr::null(),
                std::ptr::null_mut(),
                0,
            )
        };
        (created >= 0 && !device.is_null()).then(|| Self {
            device: DeviceRef(device),
            failed: FailedInputs::default(),
        })
    }

    /// The decoder a stream of `codec` in `input` decodes with on the GPU: FFmpeg's
    /// default one for the codec when it has the `cuda` hwaccel, else another that has it
    /// (for AV1 the default is libdav1d, software only, and FFmpeg's own `av1` decoder
    /// takes the hwaccel); `None` when none has, or the input failed on the GPU here.
    pub fn decoder_for(&self, codec: ffmpeg::codec::Id, input: &str) -> Option<ffmpeg::Codec> {
        if self.failed.contains(input) {
            return None;
        }
        ffmpeg::decoder::find(codec)
            .filter(|&default| has_cuda_hwaccel(default))
            .or_else(|| decoders_of(codec).find(|&decoder| has_cuda_hwaccel(decoder)))
    }

    /// Records that decoding `input` on the GPU failed: its chunks decode in software on
    /// this worker from now on (the failed chunk's retry among them).
    pub fn failed(&self, input: &str, why: &str) {
        tracing::warn!(
            input,
            why,
            "NVDEC failed; this input decodes in software from now on"
        );
        self.failed.insert(input);
    }

    /// Makes the decoder `context` will open decode on the GPU where FFmpeg can start the
    /// hwaccel for its stream (else it decodes in software, as without this call). The
    /// decoder runs one thread: the GPU does the work, and frame threads would each hold
    /// surfaces of their own.
    pub fn attach(&self, context: &mut ffmpeg::codec::context::Context) {
        context.set_threading(ffmpeg::codec::threading::Config::count(1));
        // SAFETY: the context is not open yet; it takes its own reference to the device,
        // released when the context is freed, and the callback is a plain function.
        unsafe {
            let raw = context.as_mut_ptr();
            (*raw).hw_device_ctx = ffmpeg::ffi::av_buffer_ref(self.device.0);
            (*raw).get_format = Some(prefer_cuda);
        }
    }
}

/// Every decoder FFmpeg has for `codec`, in its order of preference.
fn decoders_of(codec: ffmpeg::codec::Id) -> impl Iterator<Item = ffmpeg::Codec> {
    let mut state: *mut std::ffi::c_void = std::ptr::null_mut();
    std::iter::from_fn(move || {
        // SAFETY: FFmpeg walks its static codec table through `state`, then gives null.
        let next = unsafe { ffmpeg::ffi::av_codec_iterate(&mut state) };
        // SAFETY: non-null entries are static codecs.
        (!next.is_null()).then(|| unsafe { ffmpeg::Codec::wrap(next) })
    })
    .filter(move |candidate| candidate.is_decoder() && candidate.id() == codec)
}

/// Whether `codec` can decode through the `cuda` hwaccel on a device context.
fn has_cuda_hwaccel(codec: ffmpeg::Codec) -> bool {
    (0..)
        .map_while(|index| {
            // SAFETY: FFmpeg returns a static config for each index, then null.
            let config = unsafe { ffmpeg::ffi::avcodec_get_hw_config(codec.as_ptr(), index) };
            // SAFETY: non-null configs are static and valid.
            unsafe { config.as_ref() }
        })
        .any(|config| {
            config.device_type == ffmpeg::ffi::AVHWDeviceType::AV_HWDEVICE_TYPE_CUDA
                && config.methods & ffmpeg::ffi::AV_CODEC_HW_CONFIG_METHOD_HW_DEVICE_CTX as i32 != 0
        })
}

/// FFmpeg's format negotiation: the GPU's surfaces when the decoder offers them, else what
/// FFmpeg would choose by itself (called again without CUDA if the hwaccel fails to start).
unsafe extern "C" fn prefer_cuda(
    context: *mut ffmpeg::ffi::AVCodecContext,
    formats: *const ffmpeg::ffi::AVPixelFormat,
) -> ffmpeg::ffi::AVPixelFormat {
    use ffmpeg::ffi::AVPixelFormat::{AV_PIX_FMT_CUDA, AV_PIX_FMT_NONE};
    let mut next = formats;
    // SAFETY: FFmpeg passes a list ended by AV_PIX_FMT_NONE.
    unsafe {
        while *next != AV_PIX_FMT_NONE {
            if *next == AV_PIX_FMT_CUDA {
                return AV_PIX_FMT_CUDA;
            }
            next = next.add(1);
        }
        ffmpeg::ffi::avcodec_default_get_format(context, formats)
    }
}

/// Whether `frame` is a GPU surface (to be downloaded before anything reads its pixels).
pub fn on_gpu(frame: &VideoFrame) -> bool {
    // SAFETY: reading the format field of a valid frame.
    let format = unsafe { (*frame.as_ptr()).format };
    format == ffmpeg::ffi::AVPixelFormat::AV_PIX_FMT_CUDA as i32
}

/// Copies a GPU surface into a host frame of the surface's own layout (NV12, P010, ...),
/// with the surface's timestamps and colour properties.
pub fn download(surface: &VideoFrame) -> Result<VideoFrame, String> {
    // SAFETY: reading a field of a valid frame.
    if unsafe { (*surface.as_ptr()).hw_frames_ctx.is_null() } {
        return Err("a decoded frame said it was on the GPU but has no GPU surface".into());
    }
    let mut host = VideoFrame::empty();
    // SAFETY: both frames are valid and `surface` has a frames context; `host` is empty,
    // so FFmpeg allocates it in the surface's software format and size.
    let copied = unsafe {
        let copied = ffmpeg::ffi::av_hwframe_transfer_data(host.as_mut_ptr(), surface.as_ptr(), 0);
        if copied < 0 {
            copied
        } else {
            ffmpeg::ffi::av_frame_copy_props(host.as_mut_ptr(), surface.as_ptr())
        }
    };
    if copied < 0 {
        return Err(format!(
            "copying a decoded frame from the GPU failed: {}",
            ffmpeg::Error::from(copied)
        ));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_codecs_have_the_cuda_hwaccel_and_others_do_not() {
        framefleet_common::media::init();
        for codec in [ffmpeg::codec::Id::H264, ffmpeg::codec::Id::HEVC] {
            let decoder = ffmpeg::decoder::find(codec).expect("Debian's FFmpeg decodes it");
            assert!(has_cuda_hwaccel(decoder), "{codec:?}");
        }
        // AV1's default decoder (libdav1d) is software only; FFmpeg's own comes first of
        // those that take the GPU (before av1_cuvid, whose own parser would time frames).
        let av1 = decoders_of(ffmpeg::codec::Id::AV1).find(|&decoder| has_cuda_hwaccel(decoder));
        assert_eq!(
            av1.map(|decoder| decoder.name().to_string()).as_deref(),
            Some("av1")
        );
        let png = ffmpeg::decoder::find(ffmpeg::codec::Id::PNG).expect("png decoder");
        assert!(!has_cuda_hwaccel(png));
    }

    #[test]
    fn failed_inputs_are_remembered_once_each_and_the_oldest_forgotten_first() {
        let failed = FailedInputs::default();
        failed.insert("s3://in/a.mp4");
        failed.insert("s3://in/a.mp4");
        assert!(failed.contains("s3://in/a.mp4") && !failed.contains("s3://in/b.mp4"));
        for index in 0..FAILED_INPUTS_KEPT {
            failed.insert(&format!("s3://in/{index}.mp4"));
        }
        assert!(!failed.contains("s3://in/a.mp4"), "the oldest goes first");
        assert!(failed.contains("s3://in/0.mp4") && failed.contains("s3://in/1023.mp4"));
        assert_eq!(
            failed.0.lock().map(|inputs| inputs.len()).ok(),
            Some(FAILED_INPUTS_KEPT)
        );
    }

    #[test]
    fn without_a_gpu_there_is_no_device_and_frames_stay_on_the_host() {
        framefleet_common::media::init();
        if std::path::Path::new("/dev/nvidiactl").exists() {
            return;
        }
        assert!(Nvdec::open().is_none());
        let frame = VideoFrame::new(ffmpeg::format::Pixel::NV12, 16, 16);
        assert!(!on_gpu(&frame));
        assert!(
            download(&frame).is_err(),
            "a host frame has no GPU surface to copy"
        );
    }
}
