//! The stitch: joins the accepted chunks, in index order, into the final file without
//! re-encoding, and copies the input's audio and subtitle streams unchanged, once, for the
//! whole job (audio re-encoded or remuxed per chunk drifts: AAC priming and per-chunk
//! rounding add up). Those packets come from the chunks' packet logs, where the workers
//! wrote each input packet of their span exactly as demuxed, so every packet is copied once
//! with its own timestamps and the stitch reads only the input's headers (for MP4, its
//! index).
//!
//! The input's stream tags (timecode, language, titles), dispositions (default, forced),
//! display side data (rotation, HDR) and chapters are carried over. Chunks are opened one at
//! a time, so a job with hundreds of chunks never holds hundreds of files. Each frame keeps
//! its input timestamp and gets its input duration back from the probe; an input that
//! starts before zero is moved as a whole, every stream together ([`timeline_note`]). Video
//! and copied packets are merged in decode-time order. MP4 and MOV outputs are written with
//! the index first (`faststart`), so they play before they are fully downloaded. The stitch
//! is a pure function of the chunk objects and the input, so it can be run again. Infer
//! jobs' JSON Lines chunks are simply concatenated in order ([`concatenate`]).

use std::collections::HashMap;
use std::path::Path;

use ffmpeg::codec::packet::side_data::Type as SideDataType;
use ffmpeg::{format, media, Packet, Rational, Rescale};
use ffmpeg_next as ffmpeg;

use framefleet_common::media::packet_log::PacketLogReader;
use framefleet_common::media::{
    compare_timestamps, mp4_movie_timescale, open_input, open_input_headers, MediaInfo,
    PacketReader, ReadError, VideoInfo, INDEX_BLOCK_BYTES,
};
use framefleet_common::storage::{ObjectReader, ObjectUri, Storage, StorageError};

use crate::carry::{self, SubtitleAction};
use crate::subtitles::SubtitleConverter;

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

/// Checks, before any chunk is processed, that the output container can hold the input's
/// audio unchanged (MP4 cannot hold PCM, for one), so a job does not fail after all its
/// GPU work.
pub fn check_container(output_name: &str, info: &MediaInfo) -> Result<(), StitchError> {
    for audio in &info.audio {
        if output_holds(output_name, &audio.codec) == Some(false) {
            return Err(StitchError::Write(format!(
                "a .{} file cannot hold the input's {} audio, which framefleet copies \
                 unchanged; choose a .mov output (or .mkv, which rounds timestamps to milliseconds)",
                extension(output_name),
                audio.codec
            )));
        }
    }
    Ok(())
}

/// Whether the container that `output_name`'s extension chooses can hold `codec` unchanged:
/// `None` when FFmpeg does not know the container, the codec, or the answer.
pub(crate) fn output_holds(output_name: &str, codec: &str) -> Option<bool> {
    let name = std::ffi::CString::new(output_name).ok()?;
    let codec = std::ffi::CString::new(codec).ok()?;
    // SAFETY: the calls read NUL-terminated strings that outlive them and return pointers
    // to static FFmpeg tables (or null), which are only read.
    let answer = unsafe {
        let format =
            ffmpeg::ffi::av_guess_format(std::ptr::null(), name.as_ptr(), std::ptr::null());
        let descriptor = ffmpeg::ffi::avcodec_descriptor_get_by_name(codec.as_ptr());
        if format.is_null() || descriptor.is_null() {
            return None;
        }
        ffmpeg::ffi::avformat_query_codec(
            format,
            (*descriptor).id,
            ffmpeg::ffi::FF_COMPLIANCE_NORMAL,
        )
    };
    match answer {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

fn extension(output_name: &str) -> &str {
    Path::new(output_name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("output")
}

/// What the stitch wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stitched {
    /// Video packets (frames) written.
    pub video_packets: u64,
    /// Audio and subtitle packets copied.
    pub passthrough_packets: u64,
}

fn write_error(what: &str) -> impl Fn(ffmpeg::Error) -> StitchError + '_ {
    move |e| StitchError::Write(format!("{what}: {e}"))
}

/// What the stitch joins.
pub struct Parts {
    /// The chunk objects, in index order.
    pub chunks: Vec<ObjectUri>,
    /// The chunks' packet logs of copied streams, in index order (empty when the job
    /// copies no stream).
    pub packet_logs: Vec<ObjectUri>,
    /// The job's input, for its streams' parameters and metadata.
    pub input: ObjectUri,
}

/// Where the stitch reads from: the input (for its headers) and the chunk objects, through
/// separately counted storage handles.
pub struct Sources {
    /// Storage for the job's input.
    pub input: Storage,
    /// Storage for the chunk objects.
    pub chunks: Storage,
    /// The runtime the blocking readers wait on.
    pub runtime: tokio::runtime::Handle,
}

/// Joins the chunks and their packet logs into the local file `output` (its extension
/// chooses the container). Blocking: run it on a thread of its own.
pub fn stitch(
    sources: &Sources,
    parts: &Parts,
    info: &MediaInfo,
    output: &Path,
) -> Result<Stitched, StitchError> {
    let (chunks, input) = (parts.chunks.as_slice(), &parts.input);
    let open_from =
        |storage: &Storage, uri: &ObjectUri| -> Result<format::context::Input, StitchError> {
            let reader: ObjectReader = storage.open_reader(uri, sources.runtime.clone())?;
            open_input(reader, uri.file_name())
                .map_err(|e| StitchError::Write(format!("cannot open {uri}: {e}")))
        };
    let open = |uri: &ObjectUri| open_from(&sources.chunks, uri);
    let first_chunk = chunks
        .first()
        .ok_or_else(|| StitchError::Write("there are no chunks to stitch".into()))?;
    let video_parameters = {
        let chunk = open(first_chunk)?;
        let stream = chunk
            .streams()
            .best(media::Type::Video)
            .ok_or_else(|| StitchError::Write(format!("{first_chunk} holds no video")))?;
        stream.parameters()
    };
    let source = {
        let reader = sources
            .input
            .open_reader(input, sources.runtime.clone())?
            .with_block_bytes(INDEX_BLOCK_BYTES);
        open_input_headers(reader, input.file_name())
            .map_err(|e| StitchError::Write(format!("cannot open {input}: {e}")))?
    };
    let mut output_context =
        format::output(&output).map_err(write_error("cannot create the output"))?;
    let video_time_base = Rational::new(info.video.time_base.0, info.video.time_base.1);
    let shift = Shift {
        pts: info.video.timeline_shift(),
        time_base: video_time_base,
    };
    add_copy_stream(&mut output_context, video_parameters, video_time_base)?;
    if let (Some(from), Some(mut to)) = (
        source.stream(info.video.stream_index),
        output_context.stream_mut(0),
    ) {
        copy_display_side_data(&from, &mut to);
        to.set_metadata(kept_tags(&from, true));
        // The MOV/MP4 muxer writes a timecode track only for a stream with a known rate.
        to.set_avg_frame_rate(Rational::new(
            info.video.frame_rate.0,
            info.video.frame_rate.1,
        ));
    }
    // Input stream index -> (output stream index, input time base) of each copied stream,
    // and the converter of each subtitle stream re-encoded for the output's container.
    let mut copied_map = vec![None; source.nb_streams() as usize];
    let mut converters: HashMap<usize, SubtitleConverter> = HashMap::new();
    let output_name = output.to_string_lossy();
    let audio = info.audio.iter().map(|copied| (copied, false));
    let subtitle = info.subtitles.iter().map(|copied| (copied, true));
    for (copied, is_subtitle) in audio.chain(subtitle) {
        let Some(stream) = source.stream(copied.stream_index) else {
            continue;
        };
        let position = output_context.nb_streams() as usize;
        let conversion = match carry::subtitle_action(&output_name, copied) {
            SubtitleAction::Convert { to } if is_subtitle => Some(to),
            _ => None,
        };
        let parameters = match conversion {
            Some(to) => {
                let converter = SubtitleConverter::new(&stream, to)?;
                let parameters = converter.parameters();
                converters.insert(position, converter);
                parameters
            }
            None => stream.parameters(),
        };
        add_copy_stream(&mut output_context, parameters, stream.time_base())?;
        if let Some(mut to) = output_context.stream_mut(position) {
            to.set_metadata(kept_tags(&stream, false));
            copy_disposition(&stream, &mut to);
        }
        if let Some(slot) = copied_map.get_mut(copied.stream_index) {
            *slot = Some((position, stream.time_base()));
        }
    }
    let name = output_context.format().name().to_string();
    let matroska = name.contains("matroska") || name.contains("webm");
    let pictures = add_attachments(&source, info, &mut output_context, matroska)?;
    output_context.set_metadata(source.metadata().to_owned());
    copy_chapters(&source, &mut output_context, shift)?;
    let mut options = ffmpeg::Dictionary::new();
    if name.contains("mp4") || name.contains("mov") {
        options.set("movflags", "+faststart");
        options.set(
            "movie_timescale",
            &mp4_movie_timescale(video_time_base).to_string(),
        );
    } else {
        // Matroska and WebM: by default FFmpeg shifts every stream so the earliest packet
        // is at zero, moving the video by the audio's priming (AAC from MP4 starts at
        // -21 ms, Opus at minus its pre-skip). Matroska holds negative times; keep them.
        options.set("avoid_negative_ts", "disabled");
    }
    output_context.write_header_with(options).map_err(|e| {
        let copied: Vec<&str> = info
            .audio
            .iter()
            .chain(&info.subtitles)
            .map(|a| a.codec.as_str())
            .collect();
        StitchError::Write(format!(
            "the {name} container cannot hold these streams (video h264, copied: {}): {e}; \
             choose a .mkv output to keep every audio codec",
            if copied.is_empty() {
                "none".to_string()
            } else {
                copied.join(", ")
            }
        ))
    })?;
    let out_time_bases: Vec<Rational> = output_context.streams().map(|s| s.time_base()).collect();
    for (out_index, mut picture) in pictures {
        write(&mut picture, out_index, &mut output_context)?;
    }
    let copied_shifts: Vec<i64> = output_context
        .streams()
        .zip(&out_time_bases)
        .map(|(stream, &time_base)| {
            if matroska {
                opus_delay_shift(&stream.parameters(), time_base)
            } else {
                0
            }
        })
        .collect();

    let mut video = ChunkPackets {
        chunks,
        next_chunk: 0,
        current: None,
        open: &open,
    };
    let mut copied = PassthroughPackets {
        logs: &parts.packet_logs,
        next_log: 0,
        current: None,
        map: &copied_map,
        sources,
        shift,
    };
    let mut next_video = video.next()?;
    let mut next_copied = copied.next()?;
    let durations = frame_durations(info, shift.pts);
    let mut stitched = Stitched::default();
    let mut last_video_dts: Option<i64> = None;
    loop {
        let take_video = match (&next_video, &next_copied) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((v, v_tb)), Some((a, _, a_tb))) => earlier(v, *v_tb, a, *a_tb),
        };
        if take_video {
            let Some((mut packet, time_base)) = next_video.take() else {
                break;
            };
            packet.rescale_ts(time_base, video_time_base);
            if let Some(duration) = packet.pts().and_then(|pts| durations.get(&pts)) {
                packet.set_duration(*duration);
            }
            packet.rescale_ts(video_time_base, out_time_bases[0]);
            keep_dts_increasing(&mut packet, &mut last_video_dts);
            write(&mut packet, 0, &mut output_context)?;
            stitched.video_packets += 1;
            next_video = video.next()?;
        } else {
            let Some((mut packet, out_index, time_base)) = next_copied.take() else {
                break;
            };
            next_copied = copied.next()?;
            if let Some(converter) = converters.get_mut(&out_index) {
                match converter.convert(&packet)? {
                    Some(cue) => packet = cue,
                    None => continue,
                }
            }
            packet.rescale_ts(time_base, out_time_bases[out_index]);
            let shift = copied_shifts[out_index];
            if shift != 0 {
                packet.set_pts(packet.pts().map(|pts| pts + shift));
                packet.set_dts(packet.dts().map(|dts| dts + shift));
            }
            write(&mut packet, out_index, &mut output_context)?;
            stitched.passthrough_packets += 1;
        }
    }
    for (&out_index, converter) in &mut converters {
        if let Some(mut cue) = converter.finish() {
            cue.rescale_ts(converter.time_base(), out_time_bases[out_index]);
            write(&mut cue, out_index, &mut output_context)?;
            stitched.passthrough_packets += 1;
        }
    }
    output_context
        .write_trailer()
        .map_err(write_error("cannot finish the output"))?;
    let expected = info.video.frames.len() as u64;
    if stitched.video_packets != expected {
        return Err(StitchError::FrameCount {
            got: stitched.video_packets,
            expected,
        });
    }
    Ok(stitched)
}

/// How far to move an Opus stream's packets, in the output's `time_base`, so a Matroska
/// reader gets the input's timestamps back. Readers subtract the track's `CodecDelay`
/// (the encoder's pre-skip) from every block; FFmpeg 5.x's Matroska muxer writes that
/// delay but, unlike later versions, does not add it to the blocks, so every Opus packet
/// would come back earlier by the delay. This adds it as the reader will take it off
/// (pre-skip at 48 kHz, to nanoseconds, to the track's time base, each step rounded as
/// FFmpeg's reader does). Zero for other codecs and other FFmpeg versions.
fn opus_delay_shift(parameters: &ffmpeg::codec::Parameters, time_base: Rational) -> i64 {
    // SAFETY: `avformat_version` reads a constant; the parameters pointer is valid for
    // the stream's lifetime and only read.
    let (major, padding, codec) = unsafe {
        let par = &*parameters.as_ptr();
        (
            ffmpeg::ffi::avformat_version() >> 16,
            i64::from(par.initial_padding),
            par.codec_id,
        )
    };
    if major != 59 || codec != ffmpeg::ffi::AVCodecID::AV_CODEC_ID_OPUS || padding <= 0 {
        return 0;
    }
    let nanoseconds = padding.rescale(Rational::new(1, 48_000), Rational::new(1, 1_000_000_000));
    nanoseconds.rescale(Rational::new(1, 1_000_000_000), time_base)
}

/// Every input frame's duration by its output timestamp (its input timestamp plus
/// `offset`): the gap to the next frame, or to the end of the stream for the last one.
/// Containers do not all keep packet durations, and MP4 needs the last one to get the
/// stream's length right.
fn frame_durations(info: &MediaInfo, offset: i64) -> HashMap<i64, i64> {
    let frames = &info.video.frames;
    frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let next = frames.get(i + 1).map_or(info.video.end_pts, |f| f.pts);
            (frame.pts + offset, next - frame.pts)
        })
        .collect()
}

/// How far the whole output is moved so that its first frame is not before zero (see
/// `VideoInfo::timeline_shift`): the chunks' frames already carry it, and every copied
/// packet and chapter is moved by as much.
#[derive(Debug, Clone, Copy)]
struct Shift {
    /// The move, in the video's time base.
    pts: i64,
    /// The video's time base.
    time_base: Rational,
}

impl Shift {
    /// The move in `time_base`.
    fn in_time_base(self, time_base: Rational) -> i64 {
        self.pts.rescale(self.time_base, time_base)
    }

    /// Moves a packet whose timestamps are in `time_base`.
    fn apply(self, packet: &mut Packet, time_base: Rational) {
        if self.pts != 0 {
            let by = self.in_time_base(time_base);
            packet.set_pts(packet.pts().map(|pts| pts + by));
            packet.set_dts(packet.dts().map(|dts| dts + by));
        }
    }
}

/// The report's note for an input whose timestamps start before zero, saying how far the
/// output was moved; `None` when nothing moves.
pub fn timeline_note(video: &VideoInfo) -> Option<String> {
    let shift = video.timeline_shift();
    (shift > 0).then(|| {
        let seconds = video.seconds(shift);
        format!(
            "the input's timestamps start {seconds:.6} s before zero (an MPEG-TS clock \
             wrap, or a cut with negative times); every stream of the output is moved \
             {seconds:.6} s later so that its first frame is at 0 (an MP4 hides frames before 0)"
        )
    })
}

/// Stream side data that says how to show the video (rotation, HDR, 3D, 360°): kept on the
/// re-encoded video so phone footage is not shown sideways.
const DISPLAY_SIDE_DATA: [SideDataType; 5] = [
    SideDataType::DisplayMatrix,
    SideDataType::MasteringDisplayMetadata,
    SideDataType::ContentLightLevel,
    SideDataType::Stereo3d,
    SideDataType::DataSpherical,
];

/// The input stream's tags worth keeping: timecode, language, title, handler and the like.
/// Statistics a Matroska writer left (bit rate, byte and frame counts, duration) are
/// dropped, as is the `encoder` of a `reencoded` stream: the output's would differ.
fn kept_tags(from: &format::stream::Stream, reencoded: bool) -> ffmpeg::Dictionary<'static> {
    const STATISTICS: [&str; 5] = [
        "BPS",
        "DURATION",
        "NUMBER_OF_FRAMES",
        "NUMBER_OF_BYTES",
        "_STATISTICS_",
    ];
    let mut kept = ffmpeg::Dictionary::new();
    for (key, value) in from.metadata().iter() {
        let statistic = STATISTICS.iter().any(|s| key.starts_with(s));
        let stale = reencoded && key.eq_ignore_ascii_case("encoder");
        if !statistic && !stale {
            kept.set(key, value);
        }
    }
    kept
}

/// Adds the attachments and attached pictures `info` lists (the job kept those the output
/// holds) as streams of `output`, with their tags (file name, MIME type) and dispositions;
/// returns each attached picture's one packet, to write once the header is. Matroska
/// keeps cover art as an attachment (`cover.png`, as Matroska tools name it), not as a
/// one-frame video track.
fn add_attachments(
    source: &format::context::Input,
    info: &MediaInfo,
    output: &mut format::context::Output,
    matroska: bool,
) -> Result<Vec<(usize, Packet)>, StitchError> {
    let mut pictures = Vec::new();
    for attachment in &info.attachments {
        let Some(stream) = source.stream(attachment.stream_index) else {
            continue;
        };
        let position = output.nb_streams() as usize;
        add_copy_stream(output, stream.parameters(), stream.time_base())?;
        let Some(mut to) = output.stream_mut(position) else {
            continue;
        };
        let mut tags = kept_tags(&stream, false);
        let picture = attached_picture(&stream);
        match picture {
            Some(bytes) if matroska => {
                if tags.get("filename").is_none() {
                    let extension = match attachment.codec.as_str() {
                        "mjpeg" => "jpg",
                        other => other,
                    };
                    tags.set("filename", &format!("cover.{extension}"));
                }
                // SAFETY: `to` belongs to an output context not yet started and is
                // exclusively borrowed; its parameters take ownership of a padded copy of
                // the picture as extradata, which is what Matroska writes for an attachment.
                unsafe {
                    let parameters = &mut *to.parameters().as_mut_ptr();
                    let padded = bytes.len() + ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
                    let extradata = ffmpeg::ffi::av_mallocz(padded).cast::<u8>();
                    if extradata.is_null() {
                        return Err(StitchError::Write("out of memory".into()));
                    }
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), extradata, bytes.len());
                    ffmpeg::ffi::av_freep(std::ptr::addr_of_mut!(parameters.extradata).cast());
                    parameters.extradata = extradata;
                    parameters.extradata_size = i32::try_from(bytes.len()).unwrap_or(0);
                    parameters.codec_type = ffmpeg::ffi::AVMediaType::AVMEDIA_TYPE_ATTACHMENT;
                }
            }
            Some(bytes) => {
                copy_disposition(&stream, &mut to);
                let mut packet = Packet::copy(&bytes);
                packet.set_pts(Some(0));
                packet.set_dts(Some(0));
                packet.set_flags(ffmpeg::packet::Flags::KEY);
                pictures.push((position, packet));
            }
            None => copy_disposition(&stream, &mut to),
        }
        to.set_metadata(tags);
    }
    Ok(pictures)
}

/// The picture of an attached picture stream (cover art); `None` for other streams.
fn attached_picture(stream: &format::stream::Stream) -> Option<Vec<u8>> {
    // SAFETY: the stream belongs to an open input borrowed for this call; its attached
    // picture packet (empty unless the stream is one) is only read, and copied.
    unsafe {
        let packet = &(*stream.as_ptr()).attached_pic;
        let size = usize::try_from(packet.size).unwrap_or(0);
        (!packet.data.is_null() && size > 0)
            .then(|| std::slice::from_raw_parts(packet.data, size).to_vec())
    }
}

/// Gives `to` the dispositions of `from` (default, forced, cover art).
fn copy_disposition(from: &format::stream::Stream, to: &mut format::stream::StreamMut) {
    // SAFETY: both dispositions are plain integers; `to` belongs to an output context not
    // yet started and is exclusively borrowed.
    unsafe {
        (*to.as_mut_ptr()).disposition = (*from.as_ptr()).disposition;
    }
}

/// Copies the input's chapters (start, end, title and other tags) to the output: chapter
/// marks are the input's timeline, which the output keeps (moved with it by `shift`).
fn copy_chapters(
    source: &format::context::Input,
    output: &mut format::context::Output,
    shift: Shift,
) -> Result<(), StitchError> {
    for chapter in source.chapters() {
        let title = chapter
            .metadata()
            .get("title")
            .unwrap_or_default()
            .to_string();
        let by = shift.in_time_base(chapter.time_base());
        let mut copied = output
            .add_chapter(
                chapter.id(),
                chapter.time_base(),
                chapter.start() + by,
                chapter.end().max(chapter.start()) + by,
                title,
            )
            .map_err(write_error("cannot copy the input's chapters"))?;
        for (key, value) in chapter.metadata().iter() {
            copied.set_metadata(key, value);
        }
    }
    Ok(())
}

fn copy_display_side_data(from: &format::stream::Stream, to: &mut format::stream::StreamMut) {
    for side in from.side_data() {
        if !DISPLAY_SIDE_DATA.contains(&side.kind()) {
            continue;
        }
        let data = side.data();
        // SAFETY: `to` is a stream of an output context not yet started; FFmpeg allocates
        // `data.len()` bytes for the new entry and returns null on failure, and the copy
        // stays within both buffers.
        unsafe {
            let target = ffmpeg::ffi::av_stream_new_side_data(
                to.as_mut_ptr(),
                side.kind().into(),
                data.len(),
            );
            if !target.is_null() {
                std::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len());
            }
        }
    }
}

fn add_copy_stream(
    output: &mut format::context::Output,
    parameters: ffmpeg::codec::Parameters,
    time_base: Rational,
) -> Result<(), StitchError> {
    let mut stream = output
        .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))
        .map_err(write_error("cannot add a stream"))?;
    stream.set_parameters(parameters);
    // SAFETY: the stream was just created by this output context and its codec parameters
    // are allocated and exclusively borrowed through `stream`. A container's codec tag
    // (NUT's `H264`) is meaningless in another container and must be cleared.
    unsafe {
        (*stream.parameters().as_mut_ptr()).codec_tag = 0;
    }
    stream.set_time_base(time_base);
    Ok(())
}

fn write(
    packet: &mut Packet,
    stream: usize,
    output: &mut format::context::Output,
) -> Result<(), StitchError> {
    packet.set_stream(stream);
    packet.set_position(-1);
    packet
        .write_interleaved(output)
        .map_err(write_error("cannot write a packet"))
}

/// True when `a` decodes no later than `b` (exact rational comparison of decode times).
fn earlier(a: &Packet, a_base: Rational, b: &Packet, b_base: Rational) -> bool {
    let time = |p: &Packet| p.dts().or(p.pts()).unwrap_or(i64::MIN);
    compare_timestamps(time(a), a_base, time(b), b_base).is_le()
}

/// Chunks joined end to end can make decode timestamps repeat at a boundary; nudge them
/// forward by a tick where that keeps them at or before the presentation timestamp.
fn keep_dts_increasing(packet: &mut Packet, last: &mut Option<i64>) {
    if let (Some(dts), Some(previous)) = (packet.dts(), *last) {
        if dts <= previous {
            let nudged = previous + 1;
            if packet.pts().is_none_or(|pts| nudged <= pts) {
                packet.set_dts(Some(nudged));
            }
        }
    }
    *last = packet.dts().or(*last);
}

/// Video packets of every chunk in order, one chunk open at a time.
struct ChunkPackets<'a, F> {
    chunks: &'a [ObjectUri],
    next_chunk: usize,
    current: Option<(
        format::context::Input,
        PacketReader,
        usize,
        Rational,
        &'a ObjectUri,
    )>,
    open: &'a F,
}

impl<F> ChunkPackets<'_, F>
where
    F: Fn(&ObjectUri) -> Result<format::context::Input, StitchError>,
{
    fn next(&mut self) -> Result<Option<(Packet, Rational)>, StitchError> {
        loop {
            if let Some((input, reader, stream, time_base, uri)) = &mut self.current {
                match reader.next(input) {
                    Ok(Some(packet)) if packet.stream() == *stream => {
                        return Ok(Some((packet, *time_base)))
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => self.current = None,
                    Err(source) => {
                        return Err(StitchError::Read {
                            uri: uri.to_string(),
                            source,
                        })
                    }
                }
            }
            let Some(uri) = self.chunks.get(self.next_chunk) else {
                return Ok(None);
            };
            self.next_chunk += 1;
            let input = (self.open)(uri)?;
            let stream = input
                .streams()
                .best(media::Type::Video)
                .ok_or_else(|| StitchError::Write(format!("{uri} holds no video")))?;
            let (index, time_base) = (stream.index(), stream.time_base());
            self.current = Some((input, PacketReader::default(), index, time_base, uri));
        }
    }
}

/// The copied packets of every chunk's log in order, with the output stream each goes to.
struct PassthroughPackets<'a> {
    logs: &'a [ObjectUri],
    next_log: usize,
    current: Option<(
        PacketLogReader<std::io::BufReader<ObjectReader>>,
        &'a ObjectUri,
    )>,
    map: &'a [Option<(usize, Rational)>],
    sources: &'a Sources,
    /// Moves each packet with the job's video (see [`Shift`]).
    shift: Shift,
}

impl PassthroughPackets<'_> {
    fn next(&mut self) -> Result<Option<(Packet, usize, Rational)>, StitchError> {
        loop {
            if let Some((log, uri)) = &mut self.current {
                let packet = log.next_packet().map_err(|e| {
                    StitchError::Write(format!("reading the packet log {uri} failed: {e}"))
                })?;
                match packet {
                    Some(packet) => {
                        if let Some(Some((out_index, time_base))) = self.map.get(packet.stream()) {
                            let mut packet = packet;
                            self.shift.apply(&mut packet, *time_base);
                            return Ok(Some((packet, *out_index, *time_base)));
                        }
                        continue;
                    }
                    None => self.current = None,
                }
            }
            let Some(uri) = self.logs.get(self.next_log) else {
                return Ok(None);
            };
            self.next_log += 1;
            let reader = self
                .sources
                .chunks
                .open_reader(uri, self.sources.runtime.clone())?;
            let log = PacketLogReader::new(std::io::BufReader::new(reader)).map_err(|e| {
                StitchError::Write(format!("{uri} is not a readable packet log: {e}"))
            })?;
            self.current = Some((log, uri));
        }
    }
}

/// Joins JSON Lines chunks (infer jobs) in index order into `output`, streaming each chunk
/// through in blocks.
pub async fn concatenate(
    chunks_storage: &Storage,
    output_storage: &Storage,
    chunks: &[ObjectUri],
    output: &ObjectUri,
) -> Result<u64, StitchError> {
    const BLOCK: u64 = 4 * 1024 * 1024;
    let mut upload = output_storage.upload(output)?;
    for chunk in chunks {
        let size = chunks_storage.size(chunk).await?;
        let mut offset = 0;
        while offset < size {
            let block = match chunks_storage.read_range(chunk, offset, BLOCK).await {
                Ok(block) => block,
                Err(e) => {
                    upload.abort().await;
                    return Err(e.into());
                }
            };
            if block.is_empty() {
                break;
            }
            offset += block.len() as u64;
            if let Err(e) = upload.write(&block).await {
                upload.abort().await;
                return Err(e.into());
            }
        }
    }
    Ok(upload.finish().await?)
}
