//! FFmpeg plumbing shared by the probe, the worker's decoder and the orchestrator's stitch:
//! one-time initialisation, opening an input through framefleet's own I/O, and a packet
//! reader that surfaces errors and never spins.
//!
//! `Input::packets()` retries forever on `InvalidData` and ends silently on other errors,
//! so framefleet never uses it on input a user gave: [`PacketReader`] reads with
//! `Packet::read`, gives up after a few consecutive errors and says why.

pub mod isobmff;
pub mod packet_log;
mod probe;
pub mod sample_index;

use std::io::{Read, Seek};
use std::sync::Once;

use ffmpeg_next as ffmpeg;

pub use probe::{
    probe, CopiedStream, FragmentStart, FrameStamp, MediaInfo, ProbeError, TimestampSource,
    VideoInfo,
};

/// Bytes FFmpeg asks for per read from framefleet's I/O. Small, because FFmpeg reads this
/// far ahead of what it demuxes, and a chunk's last read is partly past its end.
const IO_BUFFER_BYTES: usize = 32 * 1024;

/// Block size for storage readers that mostly read container indexes (the probe, the
/// stitch's look at the input's headers): an MP4 fragment's `moof` is a few KiB.
pub const INDEX_BLOCK_BYTES: u64 = 4096;

/// Consecutive read errors tolerated before an input is declared corrupt.
const MAX_CONSECUTIVE_READ_ERRORS: u32 = 8;

/// Initialises FFmpeg once per process and keeps its log to errors.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Err(e) = ffmpeg::init() {
            tracing::error!(error = %e, "FFmpeg failed to initialise");
        }
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
    });
}

/// Opens a demuxer over any seekable reader (an [`ObjectReader`](crate::storage::ObjectReader)
/// in practice). `name` (the object's file name) helps format detection.
pub fn open_input<R>(reader: R, name: &str) -> Result<ffmpeg::format::context::Input, ffmpeg::Error>
where
    R: Read + Seek + Send + 'static,
{
    open_input_with(reader, name, &[])
}

/// [`open_input`] with demuxer options, e.g. `("fflags", "+noparse")`.
pub fn open_input_with<R>(
    reader: R,
    name: &str,
    options: &[(&str, &str)],
) -> Result<ffmpeg::format::context::Input, ffmpeg::Error>
where
    R: Read + Seek + Send + 'static,
{
    init();
    let io =
        ffmpeg::format::context::StreamIo::from_read_seek_with_capacity(reader, IO_BUFFER_BYTES)?;
    let dictionary = (!options.is_empty()).then(|| dictionary(options));
    ffmpeg::format::input_from_stream(io, Some(name), dictionary)
}

fn dictionary(options: &[(&str, &str)]) -> ffmpeg::Dictionary<'static> {
    let mut dictionary = ffmpeg::Dictionary::new();
    for (key, value) in options {
        dictionary.set(key, value);
    }
    dictionary
}

/// Tells the demuxer to skip the streams `skip` picks: an MP4 demuxer then reads none of
/// their bytes.
pub fn discard_streams(input: &mut ffmpeg::format::context::Input, skip: impl Fn(usize) -> bool) {
    for index in (0..input.nb_streams() as usize).filter(|&i| skip(i)) {
        if let Some(mut stream) = input.stream_mut(index) {
            // SAFETY: the stream belongs to `input`, which is exclusively borrowed;
            // `discard` is a plain field the demuxer reads before each packet.
            unsafe {
                (*stream.as_mut_ptr()).discard = ffmpeg::ffi::AVDiscard::AVDISCARD_ALL;
            }
        }
    }
}

/// Opens an input to decode it from wherever the caller seeks: like [`open_input_with`],
/// but FFmpeg's stream analysis (`avformat_find_stream_info`, which decodes the first
/// frames of the file) runs only when the container's headers leave a stream undescribed
/// (MPEG-TS, for one). A chunk in the middle of an MP4 or Matroska file then reads its
/// index and its own frames, not the start of the file too.
pub fn open_input_for_decoding<R>(
    reader: R,
    name: &str,
    options: &[(&str, &str)],
) -> Result<ffmpeg::format::context::Input, ffmpeg::Error>
where
    R: Read + Seek + Send + 'static,
{
    init();
    let mut io =
        ffmpeg::format::context::StreamIo::from_read_seek_with_capacity(reader, IO_BUFFER_BYTES)?;
    let name = std::ffi::CString::new(name).map_err(|_| ffmpeg::Error::InvalidData)?;
    let dictionary = dictionary(options);
    // SAFETY: mirrors ffmpeg-next's `input_from_stream`: the context is allocated here,
    // given the custom I/O (which the returned `Input` owns and keeps alive), opened, and
    // closed again on failure; the dictionary is handed over and taken back.
    unsafe {
        use ffmpeg::ffi;
        let mut context = ffi::avformat_alloc_context();
        if context.is_null() {
            return Err(ffmpeg::Error::Other {
                errno: ffmpeg::util::error::ENOMEM,
            });
        }
        (*context).pb = io.as_mut_ptr();
        (*context).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
        let mut raw_options = dictionary.disown();
        let opened = ffi::avformat_open_input(
            &mut context,
            name.as_ptr(),
            std::ptr::null_mut(),
            &mut raw_options,
        );
        ffmpeg::Dictionary::own(raw_options);
        if opened < 0 {
            return Err(ffmpeg::Error::from(opened));
        }
        if !headers_describe_every_stream(context) {
            let analysed = ffi::avformat_find_stream_info(context, std::ptr::null_mut());
            if analysed < 0 {
                ffi::avformat_close_input(&mut context);
                return Err(ffmpeg::Error::from(analysed));
            }
        }
        Ok(ffmpeg::format::context::Input::wrap_with_custom_io(
            context, io,
        ))
    }
}

/// True when every stream already has a codec and, for video, a frame size.
///
/// # Safety
/// `context` must be an opened input context.
unsafe fn headers_describe_every_stream(context: *mut ffmpeg::ffi::AVFormatContext) -> bool {
    use ffmpeg::ffi;
    // SAFETY: the caller guarantees an opened context, whose `nb_streams` streams and their
    // codec parameters are allocated.
    unsafe {
        let count = (*context).nb_streams as usize;
        count > 0
            && (0..count).all(|i| {
                let parameters = (**(*context).streams.add(i)).codecpar;
                (*parameters).codec_id != ffi::AVCodecID::AV_CODEC_ID_NONE
                    && ((*parameters).codec_type != ffi::AVMediaType::AVMEDIA_TYPE_VIDEO
                        || ((*parameters).width > 0 && (*parameters).height > 0))
            })
    }
}

/// Opens an input for its streams' parameters and metadata, not its packets: an MP4 or
/// MOV is opened with its sample data reading as zeros, so only its index is fetched.
/// Reading packets from the returned input gives zeros for MP4 samples. Two exceptions: a
/// MOV or MP4 start timecode lives in the first sample of its timecode track, and chapter
/// titles in the samples of a chapter text track, so when a stream has a timecode or the
/// input has chapters it is opened again reading samples for real (the bytes already
/// fetched are reused).
pub fn open_input_headers<R>(
    mut reader: R,
    name: &str,
) -> Result<ffmpeg::format::context::Input, ffmpeg::Error>
where
    R: Read + Seek + Send + 'static,
{
    let size = reader
        .seek(std::io::SeekFrom::End(0))
        .map_err(|_| ffmpeg::Error::InvalidData)?;
    let boxed = isobmff::starts_with_a_box(&mut reader);
    let reader = isobmff::HollowReader::new(reader, size, boxed);
    if !boxed {
        return open_input_with(reader, name, &[]);
    }
    let real = reader.twin(false);
    let hollow = open_input_with(reader, name, &[("fflags", "+noparse")])?;
    let has_timecode = hollow
        .streams()
        .any(|stream| stream.metadata().get("timecode").is_some());
    if has_timecode || hollow.chapters().next().is_some() {
        open_input_with(real, name, &[])
    } else {
        Ok(hollow)
    }
}

/// Reads packets one by one, surfacing read errors instead of looping on them.
#[derive(Debug, Default)]
pub struct PacketReader {
    packets: u64,
}

/// Reading packets failed for good.
#[derive(Debug, thiserror::Error)]
#[error("reading packet {packet} failed: {source}; the file is corrupt or truncated")]
pub struct ReadError {
    /// Packets read successfully before the failure.
    pub packet: u64,
    /// FFmpeg's error.
    #[source]
    pub source: ffmpeg::Error,
}

impl PacketReader {
    /// The next packet, `None` at the end of the input.
    pub fn next(
        &mut self,
        input: &mut ffmpeg::format::context::Input,
    ) -> Result<Option<ffmpeg::Packet>, ReadError> {
        let mut errors = 0;
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(input) {
                Ok(()) => {
                    self.packets += 1;
                    return Ok(Some(packet));
                }
                Err(ffmpeg::Error::Eof) => return Ok(None),
                Err(ffmpeg::Error::Other { errno })
                    if errno == ffmpeg::util::error::EAGAIN && errors < 64 =>
                {
                    errors += 1;
                }
                Err(source) => {
                    errors += 1;
                    if errors >= MAX_CONSECUTIVE_READ_ERRORS {
                        return Err(ReadError {
                            packet: self.packets,
                            source,
                        });
                    }
                }
            }
        }
    }
}

/// A picture side `size` scaled by `scale`, rounded to the nearest even number of at
/// least 2 as `yuv420p` needs: what the workers produce, and what the orchestrator checks
/// against the output limits before any chunk runs.
pub fn scaled_dimension(size: u32, scale: f64) -> u32 {
    let scaled = (f64::from(size) * scale).round().max(2.0) as u32;
    scaled.saturating_add(scaled % 2)
}

/// The `movie_timescale` to give FFmpeg's MP4 muxer for a video stream in `time_base`.
///
/// Edit lists (written for B-frames' negative decode times and for streams that do not
/// start at 0) are expressed in the movie timescale, 1000 by default, which rounds a
/// chunk's start to the millisecond. The muxer gives the track a timescale of the time
/// base's denominator, doubled until it reaches 10000; using the same value for the movie
/// keeps every edit exact.
pub fn mp4_movie_timescale(time_base: ffmpeg::Rational) -> i64 {
    let mut timescale = i64::from(time_base.denominator().max(1));
    while timescale < 10_000 {
        timescale *= 2;
    }
    timescale
}

/// Copies what describes how a frame is displayed (sample aspect ratio, colour matrix,
/// primaries, transfer and range) from a decoded frame to the frame made from it, which
/// swscale and the models leave blank. `range_converted` is true when the processor
/// already converted a full-range (`yuvj`) source to limited range.
///
/// A standard-definition frame without a colour matrix is written down as BT.601, the
/// matrix every player assumes for it: players guess the matrix of untagged video from its
/// size, so an upscale left untagged would play with BT.709 colours once it is HD. (An
/// untagged HD frame stays untagged: FFmpeg reads it as BT.601, size-guessing players as
/// BT.709, and the output keeps that same ambiguity rather than settle it wrongly.) An RGB
/// source became limited-range BT.601 YUV on the way, and is tagged so.
pub fn copy_picture_properties(
    from: &ffmpeg::frame::Video,
    to: &mut ffmpeg::frame::Video,
    range_converted: bool,
) {
    use ffmpeg::color::Space;
    let rgb = is_rgb_format(from.format());
    let standard_definition = from.width() < 1280 && from.height() <= 576;
    to.set_color_space(match from.color_space() {
        _ if rgb => Space::SMPTE170M,
        Space::Unspecified if standard_definition => Space::SMPTE170M,
        space => space,
    });
    to.set_color_primaries(from.color_primaries());
    to.set_color_transfer_characteristic(from.color_transfer_characteristic());
    to.set_color_range(if range_converted || rgb {
        ffmpeg::color::Range::MPEG
    } else {
        from.color_range()
    });
    let aspect = from.aspect_ratio();
    // SAFETY: `to` owns a valid AVFrame; this writes one plain field ffmpeg-next has no
    // setter for.
    unsafe {
        (*to.as_mut_ptr()).sample_aspect_ratio = aspect.into();
    }
}

/// True for pixel formats that hold RGB samples, or palette entries in RGB (GIF): swscale
/// turns them into limited-range BT.601 YUV, whatever the frame's colour tags say.
pub fn is_rgb_format(format: ffmpeg::format::Pixel) -> bool {
    let rgb_flags = ffmpeg::ffi::AV_PIX_FMT_FLAG_RGB | ffmpeg::ffi::AV_PIX_FMT_FLAG_PAL;
    let rgb_flags = u64::try_from(rgb_flags).unwrap_or(0);
    // SAFETY: a descriptor FFmpeg returns points at its static, immutable format table.
    format
        .descriptor()
        .is_some_and(|descriptor| unsafe { (*descriptor.as_ptr()).flags } & rgb_flags != 0)
}

/// True for the deprecated full-range `yuvj*` pixel formats, which swscale converts to
/// limited range when it outputs plain `yuv*`.
pub fn is_full_range_format(format: ffmpeg::format::Pixel) -> bool {
    use ffmpeg::format::Pixel;
    matches!(
        format,
        Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P | Pixel::YUVJ440P | Pixel::YUVJ411P
    )
}

/// Compares timestamp `a` in time base `a_base` with `b` in `b_base`, exactly (no rounding
/// to a common base).
pub fn compare_timestamps(
    a: i64,
    a_base: ffmpeg::Rational,
    b: i64,
    b_base: ffmpeg::Rational,
) -> std::cmp::Ordering {
    let left = i128::from(a) * i128::from(a_base.numerator()) * i128::from(b_base.denominator());
    let right = i128::from(b) * i128::from(b_base.numerator()) * i128::from(a_base.denominator());
    left.cmp(&right)
}

/// Presentation timestamp of a decoded frame: FFmpeg's best-effort timestamp, which is the
/// packet's pts when there is one.
pub fn frame_pts(frame: &ffmpeg::frame::Video) -> Option<i64> {
    frame.timestamp().or_else(|| frame.pts())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_standard_definition_is_written_down_as_bt601() {
        let copied = |width, height, space| {
            let mut from = ffmpeg::frame::Video::new(ffmpeg::format::Pixel::YUV420P, width, height);
            from.set_color_space(space);
            let mut to =
                ffmpeg::frame::Video::new(ffmpeg::format::Pixel::YUV420P, width * 4, height * 4);
            copy_picture_properties(&from, &mut to, false);
            to.color_space()
        };
        use ffmpeg::color::Space;
        assert_eq!(copied(720, 576, Space::Unspecified), Space::SMPTE170M);
        assert_eq!(copied(640, 360, Space::Unspecified), Space::SMPTE170M);
        assert_eq!(copied(1280, 720, Space::Unspecified), Space::Unspecified);
        assert_eq!(copied(640, 360, Space::BT709), Space::BT709);
        assert_eq!(copied(1920, 1080, Space::BT709), Space::BT709);
    }

    #[test]
    fn rgb_sources_are_tagged_as_the_limited_bt601_they_became() {
        use ffmpeg::format::Pixel;
        for format in [Pixel::RGB24, Pixel::GBRP, Pixel::BGRA, Pixel::PAL8] {
            let mut from = ffmpeg::frame::Video::new(format, 1920, 1080);
            from.set_color_space(ffmpeg::color::Space::RGB);
            from.set_color_range(ffmpeg::color::Range::JPEG);
            let mut to = ffmpeg::frame::Video::new(Pixel::YUV420P, 3840, 2160);
            copy_picture_properties(&from, &mut to, false);
            assert_eq!(
                to.color_space(),
                ffmpeg::color::Space::SMPTE170M,
                "{format:?}"
            );
            assert_eq!(to.color_range(), ffmpeg::color::Range::MPEG, "{format:?}");
        }
        assert!(!is_rgb_format(Pixel::YUV420P) && !is_rgb_format(Pixel::YUVJ420P));
    }

    #[test]
    fn timestamps_compare_exactly_across_time_bases() {
        let video = ffmpeg::Rational::new(1, 15360);
        let audio = ffmpeg::Rational::new(1, 48000);
        // One second in each.
        assert!(compare_timestamps(48000, audio, 15360, video).is_eq());
        assert!(compare_timestamps(47999, audio, 15360, video).is_lt());
        assert!(compare_timestamps(48001, audio, 15360, video).is_gt());
    }
}
