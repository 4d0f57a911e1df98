//! The probe: what a video is, and the timestamp and keyframe flag of every one of its
//! frames, read from packet headers. The planner cuts chunks from this list, so it must be
//! exact for variable frame rate input as well as constant.
//!
//! For containers with a sample index (MP4, MOV, fragmented MP4) the probe reads the index
//! and the first frames only: once a frame has decoded, every stream is set to
//! `AVDISCARD_ALL`, and FFmpeg's MOV demuxer then returns each sample's timestamps and flags
//! from the index without reading its bytes. A truncated file is caught by checking that
//! every indexed sample lies inside the object. Other containers (Matroska, MPEG-TS) carry
//! timestamps only next to the data, so they are read whole; a Matroska file cut short is
//! caught by the video length its header declares.
//!
//! A few containers leave presentation timestamps off some packets (MPEG program streams,
//! AVI with B-frames) or store none: the probe then reads the input a second time with
//! FFmpeg filling them in, or takes AVI's frame clock, and tells the workers which
//! ([`TimestampSource`]).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

use ffmpeg_next as ffmpeg;
use serde::{Deserialize, Serialize};

use super::isobmff::{leading_index_end, starts_with_a_box, HollowReader, TopLevelBoxes};
use super::{discard_streams, open_input_with, PacketReader};
use crate::proto::FrameTimestamps;
use crate::storage::FetchLimit;

/// Packets fed to the decoder to prove the stream decodes before giving up.
const MAX_PACKETS_TO_FIRST_FRAME: usize = 256;

/// True for a packet decoded only as a reference and never shown, such as the frames an
/// MP4 edit list cuts from the start of a trimmed file (`AV_PKT_FLAG_DISCARD`). Read from
/// the raw flags: ffmpeg-next's `Packet::flags` keeps only the key and corrupt bits.
fn is_discarded(packet: &ffmpeg::Packet) -> bool {
    // SAFETY: `as_ptr` points at the packet's own `AVPacket`, valid while it is borrowed.
    let flags = unsafe { (*ffmpeg::packet::Ref::as_ptr(packet)).flags };
    flags & ffmpeg::ffi::AV_PKT_FLAG_DISCARD != 0
}

/// Why an input cannot be processed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// FFmpeg could not recognise the container.
    #[error("{name} is not a readable media file ({source}); give a video such as MP4, MKV, MOV or MPEG-TS")]
    Open {
        /// The object's file name.
        name: String,
        /// FFmpeg's error.
        #[source]
        source: ffmpeg::Error,
    },
    /// The container holds no video stream.
    #[error("{name} has no video stream; framefleet processes video")]
    NoVideo {
        /// The object's file name.
        name: String,
    },
    /// The container or codec cannot be used.
    #[error("{name}: {reason}")]
    Unsupported {
        /// The object's file name.
        name: String,
        /// What is wrong, in words a person can act on.
        reason: String,
    },
    /// Reading stopped on an error before the end.
    #[error("{name}: {source}")]
    Read {
        /// The object's file name.
        name: String,
        /// The read error.
        #[source]
        source: super::ReadError,
    },
}

/// The timestamp of one video frame and whether it is a keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameStamp {
    /// Presentation timestamp, in the video stream's time base.
    pub pts: i64,
    /// True when decoding can start at this frame.
    pub keyframe: bool,
}

/// The video stream of an input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VideoInfo {
    /// Index of the stream in the container.
    pub stream_index: usize,
    /// Codec name, e.g. `h264`.
    pub codec: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Time base of the stream, `(num, den)`.
    pub time_base: (i32, i32),
    /// Average frame rate as an exact rational, `(num, den)`; `(0, 1)` when unknown.
    pub frame_rate: (i32, i32),
    /// Every frame in presentation order.
    pub frames: Vec<FrameStamp>,
    /// Timestamp just after the last frame (its pts plus its duration).
    pub end_pts: i64,
    /// For a fragmented MP4: where each fragment holding a keyframe starts, in file order,
    /// so a chunk can skip the fragments before its own. Empty for other inputs.
    #[serde(default)]
    pub fragments: Vec<FragmentStart>,
    /// Where the frames' timestamps come from: workers must read the input the same way.
    #[serde(default)]
    pub timestamps: TimestampSource,
}

/// Where a video's frame timestamps come from. Most containers store a presentation
/// timestamp with every packet; a few store them on some packets only, or store decode
/// timestamps alone, and the frames' times must then be derived, the same way by the probe
/// and by every worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestampSource {
    /// Every packet carries its presentation timestamp.
    #[default]
    Presentation,
    /// Some packets carry none (MPEG program streams such as DVD VOBs, raw MPEG video, XviD
    /// in AVI): FFmpeg's demuxer fills them in from the packets that follow (`genpts`).
    Generated,
    /// No packet carries one, only decode timestamps (H.264 with B-frames in AVI): the
    /// container's clock gives the k-th frame shown the k-th decode timestamp.
    DecodeOrder,
}

/// The wire's name for each source, as the orchestrator sends it with every chunk.
impl From<TimestampSource> for FrameTimestamps {
    fn from(source: TimestampSource) -> Self {
        match source {
            TimestampSource::Presentation => FrameTimestamps::Presentation,
            TimestampSource::Generated => FrameTimestamps::Generated,
            TimestampSource::DecodeOrder => FrameTimestamps::DecodeOrder,
        }
    }
}

impl From<FrameTimestamps> for TimestampSource {
    fn from(timestamps: FrameTimestamps) -> Self {
        match timestamps {
            FrameTimestamps::Presentation => Self::Presentation,
            FrameTimestamps::Generated => Self::Generated,
            FrameTimestamps::DecodeOrder => Self::DecodeOrder,
        }
    }
}

impl TimestampSource {
    /// The demuxer flags that read the input this way (`+genpts` for generated ones).
    pub fn demuxer_flags(self) -> &'static str {
        match self {
            TimestampSource::Generated => "+genpts",
            TimestampSource::Presentation | TimestampSource::DecodeOrder => "",
        }
    }

    /// What a job's report says about frame times derived this way; `None` when the
    /// packets carried them.
    pub fn report_note(self) -> Option<&'static str> {
        match self {
            TimestampSource::Presentation => None,
            TimestampSource::Generated => Some(
                "some video packets of the input carry no presentation time (an MPEG program \
                 stream such as a DVD VOB, or B-frames in AVI): FFmpeg filled them in from the \
                 packets that follow, as `ffmpeg -fflags +genpts` does, and the probe read the \
                 input twice",
            ),
            TimestampSource::DecodeOrder => Some(
                "the input's video packets carry decode times only (H.264 with B-frames in \
                 AVI): frames follow the AVI frame clock, the k-th shown at the k-th decode \
                 time, and every chunk decodes from the start of the file",
            ),
        }
    }
}

/// Where one fragment of a fragmented MP4 starts, and its first keyframe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FragmentStart {
    /// Byte offset of the fragment's `moof` box.
    pub offset: u64,
    /// Presentation timestamp of its first keyframe.
    pub keyframe_pts: i64,
}

impl VideoInfo {
    /// The bytes a chunk decoding from the keyframe at `keyframe_pts` need not read: the
    /// fragments from the first up to the one holding that keyframe. Empty when nothing
    /// can be skipped.
    pub fn skippable_before(&self, keyframe_pts: i64) -> std::ops::Range<u64> {
        let Some(first) = self.fragments.first() else {
            return 0..0;
        };
        let own = self
            .fragments
            .iter()
            .rev()
            .find(|f| f.keyframe_pts <= keyframe_pts)
            .map_or(first.offset, |f| f.offset);
        first.offset..own
    }

    /// How far a job moves every output timestamp, in the stream's time base, so that no
    /// frame is before zero: minus the first frame's timestamp when that is negative, else
    /// 0. An MP4 cannot show a frame before zero (its edit list hides it), so an input whose
    /// timestamps start below zero (an MPEG-TS recorded in the minute before its 33-bit
    /// clock wraps, which FFmpeg unwraps below zero; a Matroska file cut with negative
    /// times) is moved as a whole, every stream together, as the ffmpeg CLI does.
    pub fn timeline_shift(&self) -> i64 {
        self.frames
            .first()
            .map_or(0, |f| f.pts.saturating_neg().max(0))
    }

    /// Seconds from the first frame to the end of the last.
    pub fn duration_seconds(&self) -> f64 {
        let first = self.frames.first().map_or(0, |f| f.pts);
        self.seconds(self.end_pts - first)
    }

    /// `ticks` of the stream's time base in seconds.
    pub fn seconds(&self, ticks: i64) -> f64 {
        ticks as f64 * f64::from(self.time_base.0) / f64::from(self.time_base.1)
    }

    /// Timestamp of the last keyframe at or before frame `index` (the first frame's when
    /// none is marked).
    pub fn keyframe_at_or_before(&self, index: usize) -> i64 {
        self.frames[..=index.min(self.frames.len().saturating_sub(1))]
            .iter()
            .rev()
            .find(|f| f.keyframe)
            .or(self.frames.first())
            .map_or(0, |f| f.pts)
    }
}

/// An audio or subtitle stream, copied unchanged into the output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopiedStream {
    /// Index of the stream in the container.
    pub stream_index: usize,
    /// FFmpeg's codec name, e.g. `aac`.
    pub codec: String,
}

/// What the probe learned about an input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaInfo {
    /// Container format name as FFmpeg reports it, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub format: String,
    /// The first video stream.
    pub video: VideoInfo,
    /// Every audio stream.
    pub audio: Vec<CopiedStream>,
    /// Every subtitle stream (text or bitmap) of a codec FFmpeg knows.
    #[serde(default)]
    pub subtitles: Vec<CopiedStream>,
    /// Streams held whole in the container's headers: attachments (a Matroska file's
    /// fonts) and attached pictures (cover art).
    #[serde(default)]
    pub attachments: Vec<CopiedStream>,
    /// Every other stream (timed metadata, other video), which no output carries.
    #[serde(default)]
    pub left_out: Vec<CopiedStream>,
}

/// Probes an input: opens it, lists every video frame's timestamp and keyframe flag from
/// the packets, and decodes the first frame to prove the stream can be decoded.
pub fn probe<R>(mut reader: R, name: &str) -> Result<MediaInfo, ProbeError>
where
    R: Read + Seek + FetchLimit + Send + 'static,
{
    let object_size = reader
        .seek(SeekFrom::End(0))
        .and_then(|size| reader.seek(SeekFrom::Start(0)).map(|_| size))
        .map_err(|e| ProbeError::Unsupported {
            name: name.to_string(),
            reason: format!("its size could not be read ({e})"),
        })?;
    let boxed = starts_with_a_box(&mut reader);
    let source = HollowReader::new(reader, object_size, false);
    if boxed {
        // An index before the sample data is read without fetching ahead into the samples.
        source.limit_fetches(leading_index_end(&mut source.twin(false)).unwrap_or(None));
        match probe_with(source.twin(true), &source, name, object_size, false) {
            Ok(Probed::Info(info)) => return Ok(*info),
            Ok(Probed::SomePtsMissing) => {
                tracing::debug!("index-only probe found packets without timestamps")
            }
            Err(e) => {
                tracing::debug!(error = %e, "index-only probe failed; reading the whole input")
            }
        }
        source.limit_fetches(None);
    }
    match probe_with(source.twin(false), &source, name, object_size, false)? {
        Probed::Info(info) => Ok(*info),
        // A second read of the whole input, for the few containers that need it.
        Probed::SomePtsMissing => {
            match probe_with(source.twin(false), &source, name, object_size, true)? {
                Probed::Info(info) => Ok(*info),
                Probed::SomePtsMissing => Err(ProbeError::Unsupported {
                    name: name.to_string(),
                    reason: "some video packets carry no timestamp and FFmpeg cannot fill \
                             them in; remux it into MKV with timestamps first"
                        .into(),
                }),
            }
        }
    }
}

/// What one probing pass found.
enum Probed {
    /// The input, with every frame's timestamp.
    Info(Box<MediaInfo>),
    /// Some video packets carry a presentation timestamp and some do not: read it again
    /// with FFmpeg filling them in.
    SomePtsMissing,
}

/// Video codecs FFmpeg's MOV demuxer passes through without a parser, so packets' flags
/// and timestamps come from the index alone, whatever the sample bytes hold.
const INDEX_ONLY_CODECS: [&str; 6] = ["h264", "hevc", "av1", "vp9", "vp8", "prores"];

/// A video packet held back (by position) to decode the first frame from real bytes.
struct HeldPacket {
    position: u64,
    size: usize,
    pts: Option<i64>,
    dts: Option<i64>,
    key: bool,
}

/// Probes through `reader`: a hollow one (sample data reads as zeros) gives timestamps and
/// flags from the index, and the first frame is then decoded from bytes read for real
/// through `source`; a plain one decodes as it reads. With `generate_pts`, FFmpeg fills in
/// the presentation timestamps that packets lack.
fn probe_with<R>(
    reader: HollowReader<R>,
    source: &HollowReader<R>,
    name: &str,
    object_size: u64,
    generate_pts: bool,
) -> Result<Probed, ProbeError>
where
    R: Read + Seek + FetchLimit + Send + 'static,
{
    let hollow = reader.is_hollow();
    let unsupported = |reason: String| ProbeError::Unsupported {
        name: name.to_string(),
        reason,
    };
    let (mut input, mut stream) = open_video(reader, name, generate_pts)?;
    let (audio, subtitles, attachments, left_out) = other_streams(&input, stream.index);
    // The probe needs video timestamps only; an MP4 demuxer then skips the audio bytes.
    discard_streams(&mut input, |index| index != stream.index);
    let mut scan = scan_packets(&mut input, &mut stream, hollow, name)?;
    if hollow {
        scan.decoded_first =
            decode_held(&scan.held, source, &mut stream.decoder, &mut scan.decoded);
    } else if !scan.decoded_first && !scan.frames.is_empty() {
        let _ = stream.decoder.send_eof();
        scan.decoded_first = stream.decoder.receive_frame(&mut scan.decoded).is_ok();
    }
    check_complete(&input, &stream, &scan, object_size).map_err(unsupported)?;
    let timestamps = match scan.without_pts {
        0 if generate_pts => TimestampSource::Generated,
        0 => TimestampSource::Presentation,
        // Each frame was listed at its decode timestamp.
        all if all == scan.frames.len() => TimestampSource::DecodeOrder,
        _ => return Ok(Probed::SomePtsMissing),
    };
    let mut frames = std::mem::take(&mut scan.frames);
    frames.sort_by_key(|f| f.pts);
    let mut seen = HashSet::with_capacity(frames.len());
    if let Some(duplicate) = frames.iter().find(|f| !seen.insert(f.pts)) {
        return Err(unsupported(format!(
            "two video frames share timestamp {}; the stream's timestamps are broken",
            duplicate.pts
        )));
    }
    let fragments = if hollow {
        source.with_boxes(|boxes| fragment_starts(boxes, &scan.keyframe_positions))
    } else {
        Vec::new()
    };
    let (time_base, rate) = (stream.time_base, stream.rate);
    let frame_rate = (rate.numerator(), rate.denominator());
    let end_pts = end_of_last_frame(&frames, scan.last_duration, time_base, frame_rate);
    let video = VideoInfo {
        stream_index: stream.index,
        codec: stream.codec_id.name().to_string(),
        width: stream.width,
        height: stream.height,
        time_base: (time_base.numerator(), time_base.denominator()),
        frame_rate,
        frames,
        end_pts,
        fragments,
        timestamps,
    };
    if let Some(declared) = stream.declared_duration {
        let span = video.duration_seconds();
        if cut_short(declared, video.seconds(end_pts), span) {
            return Err(unsupported(format!(
                "the file is truncated: its header says the video lasts {declared:.3} s but \
                 only {span:.3} s of it could be read; upload the complete file"
            )));
        }
    }
    Ok(Probed::Info(Box::new(MediaInfo {
        format: stream.format,
        video,
        audio,
        subtitles,
        attachments,
        left_out,
    })))
}

/// The video stream a probe reads, as the demuxer and decoder describe it.
struct VideoStream {
    index: usize,
    /// Frames the container's index lists (0 when it lists none).
    indexed_frames: u64,
    declared_duration: Option<f64>,
    time_base: ffmpeg::Rational,
    rate: ffmpeg::Rational,
    codec_id: ffmpeg::codec::Id,
    decoder: ffmpeg::decoder::Video,
    width: u32,
    height: u32,
    /// The container's short name.
    format: String,
}

/// Opens the input and its moving video stream (not cover art), with a decoder for it.
fn open_video<R>(
    reader: HollowReader<R>,
    name: &str,
    generate_pts: bool,
) -> Result<(ffmpeg::format::context::Input, VideoStream), ProbeError>
where
    R: Read + Seek + Send + 'static,
{
    let hollow = reader.is_hollow();
    // Hollow samples are zeros: a parser must not look at them (it would clear the
    // keyframe flags the index gives).
    let options: &[(&str, &str)] = if hollow {
        &[("fflags", "+noparse")]
    } else if generate_pts {
        &[("fflags", TimestampSource::Generated.demuxer_flags())]
    } else {
        &[]
    };
    let input = open_input_with(reader, name, options).map_err(|source| ProbeError::Open {
        name: name.to_string(),
        source,
    })?;
    let unsupported = |reason: String| ProbeError::Unsupported {
        name: name.to_string(),
        reason,
    };
    let moving = |stream: &ffmpeg::format::stream::Stream| {
        stream.parameters().medium() == ffmpeg::media::Type::Video && !is_attached_picture(stream)
    };
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .filter(|stream| moving(stream))
        .or_else(|| input.streams().find(|stream| moving(stream)))
        .ok_or_else(|| ProbeError::NoVideo {
            name: name.to_string(),
        })?;
    let parameters = stream.parameters();
    let codec_id = parameters.id();
    let decoder = ffmpeg::codec::context::Context::from_parameters(parameters)
        .and_then(|context| context.decoder().video())
        .map_err(|e| unsupported(format!("no decoder for video codec {codec_id:?} ({e})")))?;
    let video = VideoStream {
        index: stream.index(),
        indexed_frames: u64::try_from(stream.frames()).unwrap_or(0),
        declared_duration: declared_duration(&stream),
        time_base: stream.time_base(),
        rate: stream.avg_frame_rate(),
        codec_id,
        width: decoder.width(),
        height: decoder.height(),
        decoder,
        format: input.format().name().to_string(),
    };
    if video.width == 0 || video.height == 0 {
        return Err(unsupported("the video stream has no frame size".into()));
    }
    if video.time_base.numerator() <= 0 || video.time_base.denominator() <= 0 {
        return Err(unsupported(
            "the video stream has no valid time base".into(),
        ));
    }
    if hollow
        && !(reads_timestamps_from_index(&video.format)
            && INDEX_ONLY_CODECS.contains(&codec_id.name()))
    {
        return Err(unsupported(format!(
            "{} with {} video is not read from its index alone",
            video.format,
            codec_id.name()
        )));
    }
    Ok((input, video))
}

/// The input's streams other than the video at `video_index`: audio and subtitles (the
/// job copies them), attachments and cover art, and what it leaves out.
fn other_streams(
    input: &ffmpeg::format::context::Input,
    video_index: usize,
) -> (
    Vec<CopiedStream>,
    Vec<CopiedStream>,
    Vec<CopiedStream>,
    Vec<CopiedStream>,
) {
    let describe = |s: &ffmpeg::format::stream::Stream| CopiedStream {
        stream_index: s.index(),
        codec: s.parameters().id().name().to_string(),
    };
    let copied = |medium: ffmpeg::media::Type| -> Vec<CopiedStream> {
        input
            .streams()
            .filter(|s| s.parameters().medium() == medium)
            .filter(|s| s.parameters().id() != ffmpeg::codec::Id::None && !is_hidden(s))
            .map(|s| describe(&s))
            .collect()
    };
    let (mut attachments, mut left_out) = (Vec::new(), Vec::new());
    for other in input.streams() {
        let medium = other.parameters().medium();
        let copied = matches!(
            medium,
            ffmpeg::media::Type::Audio | ffmpeg::media::Type::Subtitle
        ) && other.parameters().id() != ffmpeg::codec::Id::None;
        if other.index() == video_index || is_hidden(&other) || copied {
            continue;
        }
        if medium == ffmpeg::media::Type::Attachment || is_attached_picture(&other) {
            attachments.push(describe(&other));
        } else {
            left_out.push(describe(&other));
        }
    }
    (
        copied(ffmpeg::media::Type::Audio),
        copied(ffmpeg::media::Type::Subtitle),
        attachments,
        left_out,
    )
}

/// What one pass over the video packets found.
struct PacketScan {
    /// Every frame's timestamp, in packet order.
    frames: Vec<FrameStamp>,
    /// Each keyframe's timestamp and byte position.
    keyframe_positions: Vec<(i64, isize)>,
    /// The first packets of a hollow read, decoded later from the real bytes.
    held: Vec<HeldPacket>,
    /// Packets the container marks as discarded.
    discarded: u64,
    /// Duration of the packet with the highest timestamp.
    last_duration: i64,
    /// Packets without a presentation timestamp.
    without_pts: usize,
    /// A frame was decoded (the stream is decodable).
    decoded_first: bool,
    decoded: ffmpeg::frame::Video,
}

/// Reads every packet of the video stream, listing its frames and decoding the first.
fn scan_packets(
    input: &mut ffmpeg::format::context::Input,
    stream: &mut VideoStream,
    hollow: bool,
    name: &str,
) -> Result<PacketScan, ProbeError> {
    let mut scan = PacketScan {
        frames: Vec::new(),
        keyframe_positions: Vec::new(),
        held: Vec::new(),
        discarded: 0,
        last_duration: 0,
        without_pts: 0,
        decoded_first: false,
        decoded: ffmpeg::frame::Video::empty(),
    };
    let mut max_pts: Option<i64> = None;
    let mut fed = 0usize;
    let mut reader = PacketReader::default();
    loop {
        let packet = reader.next(input).map_err(|source| ProbeError::Read {
            name: name.to_string(),
            source,
        })?;
        let Some(packet) = packet else { break };
        if packet.stream() != stream.index {
            continue;
        }
        if !scan.decoded_first && fed < MAX_PACKETS_TO_FIRST_FRAME {
            fed += 1;
            if hollow {
                scan.held.push(HeldPacket {
                    position: u64::try_from(packet.position()).unwrap_or(u64::MAX),
                    size: packet.size(),
                    pts: packet.pts(),
                    dts: packet.dts(),
                    key: packet.is_key(),
                });
            } else if stream.decoder.send_packet(&packet).is_ok()
                && stream.decoder.receive_frame(&mut scan.decoded).is_ok()
            {
                scan.decoded_first = true;
            }
        }
        if is_discarded(&packet) {
            scan.discarded += 1;
            continue;
        }
        if packet.pts().is_none() {
            scan.without_pts += 1;
        }
        let pts = packet
            .pts()
            .or(packet.dts())
            .ok_or_else(|| ProbeError::Unsupported {
                name: name.to_string(),
                reason: "video packets carry no timestamps; remux it into MP4 or MKV first".into(),
            })?;
        scan.frames.push(FrameStamp {
            pts,
            keyframe: packet.is_key(),
        });
        if packet.is_key() {
            scan.keyframe_positions.push((pts, packet.position()));
        }
        if max_pts.is_none_or(|max| pts > max) {
            max_pts = Some(pts);
            scan.last_duration = packet.duration();
        }
    }
    Ok(scan)
}

/// Refuses a stream with no frames, a file cut short of what its index lists, and a
/// stream of which no frame decodes; says why.
fn check_complete(
    input: &ffmpeg::format::context::Input,
    stream: &VideoStream,
    scan: &PacketScan,
    object_size: u64,
) -> Result<(), String> {
    if scan.frames.is_empty() {
        return Err("the video stream has no frames".into());
    }
    let read = scan.frames.len() as u64 + scan.discarded;
    let indexed_frames = stream.indexed_frames;
    // Only an MP4/MOV sample table counts every frame; an AVI header's frame count, for
    // one, may include frames that were never written.
    if reads_timestamps_from_index(&stream.format) && indexed_frames > 0 && read < indexed_frames {
        return Err(format!(
            "the file is truncated: its index lists {indexed_frames} video frames but only \
             {read} could be read; upload the complete file"
        ));
    }
    if let Some(end) = indexed_data_end(input).filter(|&end| end > object_size) {
        return Err(format!(
            "the file is truncated: its index places samples up to byte {end} but the object \
             holds {object_size} bytes; upload the complete file"
        ));
    }
    if !scan.decoded_first {
        return Err("no frame of the video stream could be decoded; the file is corrupt".into());
    }
    Ok(())
}

/// The video stream's length a Matroska header declares, in seconds: the `DURATION`
/// statistics tag its writer fills in once the file is complete, so a file cut short after
/// that (a broken upload or copy) still declares its full length. `None` for other
/// containers and for files written without it (live recordings).
fn declared_duration(stream: &ffmpeg::format::stream::Stream) -> Option<f64> {
    let metadata = stream.metadata();
    let value = metadata
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("DURATION"))?
        .1;
    parse_clock(value).filter(|&seconds| seconds > 0.0)
}

/// Whether a stream declared `declared` seconds long was cut short, when what could be read
/// ends at `end` seconds and spans `span`. FFmpeg writes the end timestamp as `DURATION`,
/// mkvmerge the span: the file is whole when either matches (to half a second and 1 % of
/// the length) or when it declares less than was read.
fn cut_short(declared: f64, end: f64, span: f64) -> bool {
    let tolerance = 0.5 + 0.01 * declared.min(span).max(0.0);
    declared - span > tolerance && (declared - end).abs() > tolerance
}

/// `HH:MM:SS.fraction` in seconds.
fn parse_clock(value: &str) -> Option<f64> {
    let mut parts = value.trim().splitn(3, ':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    (hours >= 0.0 && minutes >= 0.0 && seconds >= 0.0)
        .then_some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// True for a track the demuxer reads for its own use: a QuickTime chapter track (its
/// samples are the chapters' titles, which the output gets as chapters) or a timecode
/// track (its one sample is the start timecode, which the output gets as a tag).
fn is_hidden(stream: &ffmpeg::format::stream::Stream) -> bool {
    const TIMECODE_TAG: u32 = u32::from_le_bytes(*b"tmcd");
    // SAFETY: the stream belongs to an open input borrowed for this call; both fields are
    // plain values, only read.
    let (discard, tag) = unsafe {
        let raw = stream.as_ptr();
        ((*raw).discard, (*(*raw).codecpar).codec_tag)
    };
    discard == ffmpeg::ffi::AVDiscard::AVDISCARD_ALL || tag == TIMECODE_TAG
}

/// True for a stream that holds one picture (cover art), not moving video.
fn is_attached_picture(stream: &ffmpeg::format::stream::Stream) -> bool {
    stream
        .disposition()
        .contains(ffmpeg::format::stream::Disposition::ATTACHED_PIC)
}

/// Decodes the first frame from the held packets' real bytes (fetching nothing past them);
/// true when one came out.
fn decode_held<R: Read + Seek + FetchLimit>(
    held: &[HeldPacket],
    source: &HollowReader<R>,
    decoder: &mut ffmpeg::decoder::Video,
    decoded: &mut ffmpeg::frame::Video,
) -> bool {
    let end = held.iter().map(|p| p.position + p.size as u64).max();
    source.limit_fetches(end);
    let decoded_one = decode_first(held, source, decoder, decoded);
    source.limit_fetches(None);
    decoded_one
}

/// Sends the held packets to the decoder until a frame comes out; true when one did.
fn decode_first<R: Read + Seek>(
    held: &[HeldPacket],
    source: &HollowReader<R>,
    decoder: &mut ffmpeg::decoder::Video,
    decoded: &mut ffmpeg::frame::Video,
) -> bool {
    for packet in held {
        let mut data = vec![0u8; packet.size];
        if source.read_exact_at(packet.position, &mut data).is_err() {
            return false;
        }
        let mut real = ffmpeg::Packet::copy(&data);
        real.set_pts(packet.pts);
        real.set_dts(packet.dts);
        if packet.key {
            real.set_flags(ffmpeg::packet::Flags::KEY);
        }
        if decoder.send_packet(&real).is_ok() && decoder.receive_frame(decoded).is_ok() {
            return true;
        }
    }
    let _ = decoder.send_eof();
    decoder.receive_frame(decoded).is_ok()
}

/// For a fragmented MP4 whose fragments carry their own decode times: where each fragment
/// holding a keyframe starts, with its first keyframe. Empty otherwise.
fn fragment_starts(boxes: &TopLevelBoxes, keyframes: &[(i64, isize)]) -> Vec<FragmentStart> {
    if boxes.fragments.len() < 2 || boxes.untimed_fragments {
        return Vec::new();
    }
    let mut starts: Vec<FragmentStart> = Vec::new();
    for &(pts, position) in keyframes {
        let Some(offset) = u64::try_from(position)
            .ok()
            .and_then(|p| boxes.fragment_holding(p))
        else {
            continue;
        };
        match starts.last() {
            Some(last) if last.offset >= offset => {}
            _ => starts.push(FragmentStart {
                offset,
                keyframe_pts: pts,
            }),
        }
    }
    starts
}

/// True for demuxers that take every packet's timestamps and flags from an index
/// (FFmpeg's MOV/MP4 demuxer).
fn reads_timestamps_from_index(format: &str) -> bool {
    format.split(',').any(|name| name == "mov" || name == "mp4")
}

/// The byte just past the last sample the container's index lists, over every stream;
/// `None` for containers without an index.
fn indexed_data_end(input: &ffmpeg::format::context::Input) -> Option<u64> {
    let mut end = None;
    for stream in input.streams() {
        // SAFETY: the stream belongs to `input`, alive for this loop; the index entries
        // FFmpeg returns stay valid until the demuxer reads again, and are only read here
        // (a null entry is skipped).
        let pointer = unsafe { stream.as_ptr() }.cast_mut();
        let entries = unsafe { ffmpeg::ffi::avformat_index_get_entries_count(pointer) };
        for i in 0..entries {
            let entry = unsafe { ffmpeg::ffi::avformat_index_get_entry(pointer, i).as_ref() };
            let Some(entry) = entry else {
                continue;
            };
            let size = i64::from(entry.size());
            if entry.pos >= 0 {
                let last = u64::try_from(entry.pos + size).unwrap_or(0);
                end = Some(end.map_or(last, |e: u64| e.max(last)));
            }
        }
    }
    end
}

/// The last frame's pts plus its duration: from its packet when known, else from the
/// average frame rate, else from the median gap between frames, else one tick.
fn end_of_last_frame(
    frames: &[FrameStamp],
    packet_duration: i64,
    time_base: ffmpeg::Rational,
    frame_rate: (i32, i32),
) -> i64 {
    let last = frames.last().map_or(0, |f| f.pts);
    let duration = if packet_duration > 0 {
        packet_duration
    } else if frame_rate.0 > 0 && frame_rate.1 > 0 {
        // One frame at `rate` in ticks of `time_base`: den_tb / (num_tb * rate).
        let ticks = (i128::from(time_base.denominator()) * i128::from(frame_rate.1))
            / (i128::from(time_base.numerator()) * i128::from(frame_rate.0));
        i64::try_from(ticks).unwrap_or(1)
    } else {
        let mut gaps: Vec<i64> = frames.windows(2).map(|w| w[1].pts - w[0].pts).collect();
        gaps.sort_unstable();
        gaps.get(gaps.len() / 2).copied().unwrap_or(1)
    };
    last + duration.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Makes a 4 s clip with half-second GOPs, B-frames and audio; `extra` adds muxer flags.
    fn clip(dir: &std::path::Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
        let mut codecs = vec![
            "-c:v", "libx264", "-g", "15", "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac",
        ];
        codecs.extend_from_slice(extra);
        encoded_clip(dir, name, &codecs)
    }

    /// Makes a 4 s 30 fps clip with audio, encoded and muxed as `codecs` say.
    fn encoded_clip(dir: &std::path::Path, name: &str, codecs: &[&str]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut args = vec![
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "4",
            "-shortest",
        ];
        args.extend_from_slice(codecs);
        args.push(path.to_str().expect("utf-8"));
        let status = std::process::Command::new("ffmpeg")
            .args(&args)
            .status()
            .expect("ffmpeg runs");
        assert!(status.success());
        path
    }

    fn info(probed: Result<Probed, ProbeError>) -> MediaInfo {
        match probed.expect("probed") {
            Probed::Info(info) => *info,
            Probed::SomePtsMissing => panic!("the pass asked for generated timestamps"),
        }
    }

    fn probe_both(path: &std::path::Path) -> (MediaInfo, MediaInfo) {
        let file = std::fs::File::open(path).expect("clip");
        let size = file.metadata().expect("size").len();
        let source = HollowReader::new(file, size, false);
        let hollow = info(probe_with(
            source.twin(true),
            &source,
            "clip.mp4",
            size,
            false,
        ));
        let full = info(probe_with(
            source.twin(false),
            &source,
            "clip.mp4",
            size,
            false,
        ));
        (hollow, full)
    }

    #[test]
    fn the_index_gives_the_same_frames_as_reading_everything() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, flags) in [
            ("end.mp4", &[][..]),
            ("first.mp4", &["-movflags", "+faststart"][..]),
            (
                "fragmented.mp4",
                &["-movflags", "frag_keyframe+empty_moov"][..],
            ),
        ] {
            let (hollow, full) = probe_both(&clip(dir.path(), name, flags));
            assert_eq!(hollow.video.frames.len(), 120, "{name}");
            assert_eq!(hollow.video.frames, full.video.frames, "{name}");
            assert_eq!(hollow.video.end_pts, full.video.end_pts, "{name}");
            assert_eq!(
                (
                    hollow.video.width,
                    hollow.video.height,
                    hollow.video.frame_rate
                ),
                (full.video.width, full.video.height, full.video.frame_rate),
                "{name}"
            );
            assert_eq!(hollow.video.time_base, full.video.time_base, "{name}");
            assert_eq!(hollow.audio.len(), 1, "{name}");
            let keyframes = hollow.video.frames.iter().filter(|f| f.keyframe).count();
            assert_eq!(keyframes, 8, "{name}");
            if name == "fragmented.mp4" {
                assert_eq!(hollow.video.fragments.len(), 8, "one fragment per GOP");
                let second = hollow.video.fragments[1];
                assert_eq!(
                    hollow.video.skippable_before(second.keyframe_pts),
                    hollow.video.fragments[0].offset..second.offset
                );
            } else {
                assert!(hollow.video.fragments.is_empty(), "{name}");
            }
        }
    }

    fn stamps(pts: &[i64]) -> Vec<FrameStamp> {
        pts.iter()
            .map(|&pts| FrameStamp {
                pts,
                keyframe: pts % 100 == 0,
            })
            .collect()
    }

    #[test]
    fn timestamps_missing_from_some_or_all_packets_are_derived() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, codecs, expected) in [
            (
                "clip.mp4",
                &["-c:v", "libx264", "-bf", "2"][..],
                TimestampSource::Presentation,
            ),
            (
                "dvd.vob",
                &["-c:v", "mpeg2video", "-bf", "2", "-c:a", "ac3", "-f", "vob"][..],
                TimestampSource::Generated,
            ),
            (
                "xvid.avi",
                &["-c:v", "mpeg4", "-bf", "2", "-vtag", "XVID", "-c:a", "mp3"][..],
                TimestampSource::Generated,
            ),
            (
                "h264.avi",
                &["-c:v", "libx264", "-bf", "3", "-c:a", "mp3"][..],
                TimestampSource::DecodeOrder,
            ),
        ] {
            let path = encoded_clip(dir.path(), name, codecs);
            let file = std::fs::File::open(&path).expect("clip");
            let video = probe(file, name).expect(name).video;
            assert_eq!(video.timestamps, expected, "{name}");
            assert_eq!(video.frames.len(), 120, "{name}");
            let steps: Vec<i64> = video
                .frames
                .windows(2)
                .map(|w| w[1].pts - w[0].pts)
                .collect();
            assert!(
                steps.iter().all(|&step| step == steps[0] && step > 0),
                "{name}: frames are not one frame apart: {steps:?}"
            );
        }
    }

    #[test]
    fn last_frame_duration_prefers_the_packet_then_the_rate_then_the_gaps() {
        let frames = stamps(&[0, 512, 1024]);
        let tb = ffmpeg::Rational::new(1, 15360);
        assert_eq!(end_of_last_frame(&frames, 700, tb, (30, 1)), 1724);
        assert_eq!(end_of_last_frame(&frames, 0, tb, (30, 1)), 1536);
        assert_eq!(end_of_last_frame(&frames, 0, tb, (0, 1)), 1536);
    }

    #[test]
    fn matroska_duration_tags_parse_as_seconds() {
        assert_eq!(parse_clock("10:00:02.500000000"), Some(36_002.5));
        assert_eq!(parse_clock("00:00:04.000000000"), Some(4.0));
        assert_eq!(parse_clock("4.0"), None);
        assert_eq!(parse_clock("aa:00:01"), None);
    }

    #[test]
    fn a_declared_length_beyond_both_end_and_span_means_cut_short() {
        // Whole files: FFmpeg declares the end (10 h in), mkvmerge the span.
        assert!(!cut_short(36_002.0, 36_002.0, 2.0));
        assert!(!cut_short(2.0, 36_002.0, 2.0));
        assert!(!cut_short(4.0, 4.0, 4.0));
        assert!(!cut_short(3.0, 2.7, 3.3));
        // Cut short: what was read ends early by either measure.
        assert!(cut_short(36_002.0, 36_000.8, 0.8));
        assert!(cut_short(2.0, 36_000.8, 0.8));
        assert!(cut_short(4.0, 1.6, 1.6));
    }

    #[test]
    fn keyframe_lookup_finds_the_last_keyframe_at_or_before() {
        let video = VideoInfo {
            stream_index: 0,
            codec: "h264".into(),
            width: 2,
            height: 2,
            time_base: (1, 1000),
            frame_rate: (0, 1),
            frames: stamps(&[0, 40, 80, 100, 140]),
            end_pts: 180,
            fragments: Vec::new(),
            timestamps: TimestampSource::default(),
        };
        assert_eq!(video.keyframe_at_or_before(2), 0);
        assert_eq!(video.keyframe_at_or_before(3), 100);
        assert_eq!(video.keyframe_at_or_before(4), 100);
        assert!((video.duration_seconds() - 0.18).abs() < 1e-9);
        assert_eq!(video.timeline_shift(), 0);
        let early = VideoInfo {
            frames: stamps(&[-300, -200, -100, 0]),
            ..video
        };
        assert_eq!(early.timeline_shift(), 300);
    }
}
