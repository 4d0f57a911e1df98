//! What a job carries of the input besides its video frames and audio, decided once from
//! the probe and the output's container, before any chunk runs, and again by the stitch:
//! subtitle streams (copied packet for packet, or converted to the container's own text
//! codec by [`super::subtitles`]), attachments and cover art (held in the headers), and a
//! note in the job's report for each stream converted or left out. Subtitles and fonts are
//! worth keeping, but not worth failing a job over.

use ffmpeg::codec;
use ffmpeg_next as ffmpeg;

use framefleet_common::media::{CopiedStream, MediaInfo};

use super::container::OutputContainer;

/// What the job does with one subtitle stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubtitleAction {
    /// The output holds the codec: packets are copied.
    Copy,
    /// A text codec the output cannot hold: cues are encoded again with `to`.
    Convert {
        /// The output container's own text subtitle codec.
        to: codec::Id,
    },
    /// Neither: the stream is left out, and the note says why and what to do.
    LeaveOut(String),
}

/// Decides what the job does with `subtitle` for an `output` container.
pub fn subtitle_action(output: &OutputContainer, subtitle: &CopiedStream) -> SubtitleAction {
    if output.holds(&subtitle.codec) == Some(true) {
        return SubtitleAction::Copy;
    }
    if let Some(to) = text_conversion(output, &subtitle.codec) {
        return SubtitleAction::Convert { to };
    }
    let extension = output.extension();
    SubtitleAction::LeaveOut(format!(
        "subtitle stream {} ({}) was left out: a .{extension} file cannot hold it; choose {} \
         to keep it",
        subtitle.stream_index,
        subtitle.codec,
        if subtitle.codec == "mov_text" {
            "an .mp4 or .mov output"
        } else {
            "an .mkv output"
        }
    ))
}

/// What a job carries besides its video and audio, and what it tells the user about it.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    /// Subtitle streams copied or converted (their packets travel in the chunks' logs).
    pub subtitles: Vec<CopiedStream>,
    /// Attachments and attached pictures the stitch copies from the input's headers.
    pub attachments: Vec<CopiedStream>,
    /// One line per stream converted or left out, for the job's report.
    pub notes: Vec<String>,
}

/// Decides what a job writing to `output` carries of the input `info` describes.
pub fn plan(output: &OutputContainer, info: &MediaInfo) -> Carried {
    let mut carried = Carried::default();
    let extension = output.extension();
    for subtitle in &info.subtitles {
        match subtitle_action(output, subtitle) {
            SubtitleAction::Copy => carried.subtitles.push(subtitle.clone()),
            SubtitleAction::Convert { to } => {
                carried.notes.push(format!(
                    "subtitle stream {} ({}) was converted to {}, the text subtitles a \
                     .{extension} file holds",
                    subtitle.stream_index,
                    subtitle.codec,
                    to.name()
                ));
                carried.subtitles.push(subtitle.clone());
            }
            SubtitleAction::LeaveOut(note) => carried.notes.push(note),
        }
    }
    for attachment in &info.attachments {
        if output.holds_attachment(&attachment.codec) {
            carried.attachments.push(attachment.clone());
        } else {
            carried.notes.push(format!(
                "attachment stream {} ({}) was left out: a .{extension} file cannot hold it; \
                 choose an .mkv output to keep it",
                attachment.stream_index, attachment.codec
            ));
        }
    }
    for other in &info.left_out {
        carried.notes.push(format!(
            "stream {} ({}) was left out: a job carries one video stream and the input's \
             audio, subtitles, chapters, attachments and cover art",
            other.stream_index, other.codec
        ));
    }
    carried
}

/// Text subtitle codecs a container may hold, in the order a conversion prefers them
/// after the container's own default (FFmpeg's MP4 muxer names none).
const TEXT_CODECS: [codec::Id; 4] = [
    codec::Id::MOV_TEXT,
    codec::Id::ASS,
    codec::Id::SUBRIP,
    codec::Id::WEBVTT,
];

/// The text subtitle codec to convert `codec` to for the `output` container: the
/// container's default subtitle codec, else the first of [`TEXT_CODECS`] it holds. `None`
/// when `codec` is not a text codec FFmpeg decodes, or no text codec fits the container.
fn text_conversion(output: &OutputContainer, codec: &str) -> Option<codec::Id> {
    let codec = std::ffi::CString::new(codec).ok()?;
    // SAFETY: reads a NUL-terminated string that outlives the call and returns a pointer
    // to a static FFmpeg table (or null), which is only read.
    let source = unsafe {
        let source = ffmpeg::ffi::avcodec_descriptor_get_by_name(codec.as_ptr());
        if source.is_null() || (*source).props & ffmpeg::ffi::AV_CODEC_PROP_TEXT_SUB == 0 {
            return None;
        }
        codec::Id::from((*source).id)
    };
    ffmpeg::decoder::find(source)?;
    output
        .default_text_subtitle()
        .into_iter()
        .chain(TEXT_CODECS)
        .filter(|&to| is_text(to))
        .find(|&to| ffmpeg::encoder::find(to).is_some() && output.holds(to.name()) == Some(true))
}

/// Whether FFmpeg describes `id` as a text subtitle codec.
fn is_text(id: codec::Id) -> bool {
    // SAFETY: returns a pointer to a static FFmpeg table entry (or null), only read.
    unsafe {
        let descriptor = ffmpeg::ffi::avcodec_descriptor_get(id.into());
        !descriptor.is_null() && (*descriptor).props & ffmpeg::ffi::AV_CODEC_PROP_TEXT_SUB != 0
    }
}

#[cfg(test)]
mod tests {
    use framefleet_common::media::{TimestampSource, VideoInfo};

    use super::*;

    fn stream(index: usize, codec: &str) -> CopiedStream {
        CopiedStream {
            stream_index: index,
            codec: codec.to_string(),
        }
    }

    #[test]
    fn text_subtitles_are_copied_where_they_fit_and_converted_where_not() {
        ffmpeg::init().expect("FFmpeg initialises");
        let action = |output: &str, codec: &str| {
            subtitle_action(&OutputContainer::for_name(output), &stream(2, codec))
        };
        assert_eq!(action("out.mp4", "mov_text"), SubtitleAction::Copy);
        assert_eq!(action("out.mkv", "subrip"), SubtitleAction::Copy);
        assert_eq!(action("out.mkv", "ass"), SubtitleAction::Copy);
        assert_eq!(
            action("out.mp4", "subrip"),
            SubtitleAction::Convert {
                to: codec::Id::MOV_TEXT
            }
        );
        assert_eq!(
            action("out.mkv", "mov_text"),
            SubtitleAction::Convert { to: codec::Id::ASS }
        );
    }

    #[test]
    fn what_an_output_cannot_hold_is_left_out_with_a_note_saying_what_to_do() {
        ffmpeg::init().expect("FFmpeg initialises");
        let info = |attachments: Vec<CopiedStream>| MediaInfo {
            format: "matroska,webm".into(),
            video: VideoInfo {
                stream_index: 0,
                codec: "h264".into(),
                width: 64,
                height: 64,
                time_base: (1, 25),
                frame_rate: (25, 1),
                frames: Vec::new(),
                end_pts: 0,
                fragments: Vec::new(),
                timestamps: TimestampSource::default(),
            },
            audio: Vec::new(),
            subtitles: vec![stream(2, "subrip"), stream(3, "hdmv_pgs_subtitle")],
            attachments,
            left_out: vec![stream(6, "bin_data")],
        };
        let into_mp4 = plan(
            &OutputContainer::for_name("out.mp4"),
            &info(vec![stream(4, "ttf"), stream(5, "png")]),
        );
        assert_eq!(
            into_mp4
                .subtitles
                .iter()
                .map(|s| s.stream_index)
                .collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(
            into_mp4
                .attachments
                .iter()
                .map(|s| s.stream_index)
                .collect::<Vec<_>>(),
            [5],
            "MP4 holds cover art, not fonts"
        );
        assert_eq!(
            into_mp4.notes,
            [
                "subtitle stream 2 (subrip) was converted to mov_text, the text subtitles a \
                 .mp4 file holds",
                "subtitle stream 3 (hdmv_pgs_subtitle) was left out: a .mp4 file cannot hold \
                 it; choose an .mkv output to keep it",
                "attachment stream 4 (ttf) was left out: a .mp4 file cannot hold it; choose an \
                 .mkv output to keep it",
                "stream 6 (bin_data) was left out: a job carries one video stream and the \
                 input's audio, subtitles, chapters, attachments and cover art",
            ]
        );
        let into_mkv = plan(
            &OutputContainer::for_name("out.mkv"),
            &info(vec![stream(4, "ttf"), stream(5, "png")]),
        );
        assert_eq!(into_mkv.subtitles.len(), 2);
        assert_eq!(into_mkv.attachments.len(), 2);
        assert_eq!(into_mkv.notes.len(), 1, "{:?}", into_mkv.notes);
    }
}
