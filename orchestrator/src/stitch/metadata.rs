//! What the output keeps of the input besides packets: stream tags, dispositions, display
//! side data (rotation, HDR), chapters, attachments and cover art.

use ffmpeg::codec::packet::side_data::Type as SideDataType;
use ffmpeg::{format, Packet, Rational};
use ffmpeg_next as ffmpeg;

use framefleet_common::media::MediaInfo;

use super::error::{write_error, StitchError};
use super::timeline::Shift;

/// Stream side data that says how to show the video (rotation, HDR, 3D, 360°): kept on the
/// re-encoded video so phone footage is not shown sideways.
pub const DISPLAY_SIDE_DATA: [SideDataType; 5] = [
    SideDataType::DisplayMatrix,
    SideDataType::MasteringDisplayMetadata,
    SideDataType::ContentLightLevel,
    SideDataType::Stereo3d,
    SideDataType::DataSpherical,
];

/// The input stream's tags worth keeping: timecode, language, title, handler and the like.
/// Statistics a Matroska writer left (bit rate, byte and frame counts, duration) are
/// dropped, as is the `encoder` of a `reencoded` stream: the output's would differ.
pub fn kept_tags(from: &format::stream::Stream, reencoded: bool) -> ffmpeg::Dictionary<'static> {
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
pub fn add_attachments(
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
pub fn attached_picture(stream: &format::stream::Stream) -> Option<Vec<u8>> {
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
pub fn copy_disposition(from: &format::stream::Stream, to: &mut format::stream::StreamMut) {
    // SAFETY: both dispositions are plain integers; `to` belongs to an output context not
    // yet started and is exclusively borrowed.
    unsafe {
        (*to.as_mut_ptr()).disposition = (*from.as_ptr()).disposition;
    }
}

/// Copies the input's chapters (start, end, title and other tags) to the output: chapter
/// marks are the input's timeline, which the output keeps (moved with it by `shift`).
pub fn copy_chapters(
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

/// Copies the side data of `from` that says how to show the video ([`DISPLAY_SIDE_DATA`]).
pub fn copy_display_side_data(from: &format::stream::Stream, to: &mut format::stream::StreamMut) {
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

/// Gives `stream` the sample-entry tag `tag` (a FourCC, little-endian) before the header
/// is written.
pub fn set_codec_tag(stream: &mut ffmpeg::format::stream::StreamMut<'_>, tag: u32) {
    // SAFETY: the stream's codec parameters are allocated by its output context and
    // exclusively borrowed through `stream`.
    unsafe {
        (*stream.parameters().as_mut_ptr()).codec_tag = tag;
    }
}

/// Adds a stream to `output` that takes packets of `parameters` unchanged, in `time_base`.
pub fn add_copy_stream(
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
