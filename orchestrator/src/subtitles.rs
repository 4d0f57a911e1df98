//! What a job does with the input's subtitle streams, and the one conversion the stitch
//! makes: text subtitles the output container cannot hold unchanged (SubRip in MP4,
//! `mov_text` in Matroska) are decoded and encoded again as the container's own text
//! subtitle codec, cue by cue, with their times and text; every other subtitle stream is
//! copied packet for packet, or, when neither is possible (a bitmap codec the container
//! does not know), left out with a note in the job's report.

use ffmpeg::{codec, Packet, Rational, Rescale};
use ffmpeg_next as ffmpeg;

use framefleet_common::media::CopiedStream;

use crate::stitch::{output_holds, StitchError};

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

/// Decides what the job does with `subtitle` for an output named `output_name`.
pub fn action(output_name: &str, subtitle: &CopiedStream) -> SubtitleAction {
    if output_holds(output_name, &subtitle.codec) == Some(true) {
        return SubtitleAction::Copy;
    }
    if let Some(to) = text_conversion(output_name, &subtitle.codec) {
        return SubtitleAction::Convert { to };
    }
    let extension = std::path::Path::new(output_name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("output");
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

/// Splits the input's subtitle streams into those the job carries (copied or converted)
/// and the rest, with a note for each one converted or left out: subtitles are worth
/// keeping but not worth failing a job over.
pub fn subtitles_kept(
    output_name: &str,
    subtitles: &[CopiedStream],
) -> (Vec<CopiedStream>, Vec<String>) {
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    for subtitle in subtitles {
        match action(output_name, subtitle) {
            SubtitleAction::Copy => kept.push(subtitle.clone()),
            SubtitleAction::Convert { to } => {
                notes.push(format!(
                    "subtitle stream {} ({}) was converted to {}, the text subtitles the \
                     output container holds",
                    subtitle.stream_index,
                    subtitle.codec,
                    to.name()
                ));
                kept.push(subtitle.clone());
            }
            SubtitleAction::LeaveOut(note) => notes.push(note),
        }
    }
    (kept, notes)
}

/// Text subtitle codecs a container may hold, in the order a conversion prefers them
/// after the container's own default (FFmpeg's MP4 muxer names none).
const TEXT_CODECS: [codec::Id; 4] = [
    codec::Id::MOV_TEXT,
    codec::Id::ASS,
    codec::Id::SUBRIP,
    codec::Id::WEBVTT,
];

/// The text subtitle codec to convert `codec` to for an output named `output_name`: the
/// container's default subtitle codec, else the first of [`TEXT_CODECS`] it holds. `None`
/// when `codec` is not a text codec FFmpeg decodes, or no text codec fits the container.
fn text_conversion(output_name: &str, codec: &str) -> Option<codec::Id> {
    let name = std::ffi::CString::new(output_name).ok()?;
    let codec = std::ffi::CString::new(codec).ok()?;
    // SAFETY: the calls read NUL-terminated strings that outlive them and return pointers
    // to static FFmpeg tables (or null), which are only read.
    let (source, default) = unsafe {
        use ffmpeg::ffi;
        let format = ffi::av_guess_format(std::ptr::null(), name.as_ptr(), std::ptr::null());
        let source = ffi::avcodec_descriptor_get_by_name(codec.as_ptr());
        if format.is_null() || source.is_null() {
            return None;
        }
        if (*source).props & ffi::AV_CODEC_PROP_TEXT_SUB == 0 {
            return None;
        }
        (
            codec::Id::from((*source).id),
            codec::Id::from((*format).subtitle_codec),
        )
    };
    ffmpeg::decoder::find(source)?;
    std::iter::once(default)
        .chain(TEXT_CODECS)
        .filter(|&to| to != codec::Id::None && is_text(to))
        .find(|&to| {
            ffmpeg::encoder::find(to).is_some()
                && output_holds(output_name, to.name()) == Some(true)
        })
}

/// Whether FFmpeg describes `id` as a text subtitle codec.
fn is_text(id: codec::Id) -> bool {
    // SAFETY: returns a pointer to a static FFmpeg table entry (or null), only read.
    unsafe {
        let descriptor = ffmpeg::ffi::avcodec_descriptor_get(id.into());
        !descriptor.is_null() && (*descriptor).props & ffmpeg::ffi::AV_CODEC_PROP_TEXT_SUB != 0
    }
}

/// Re-encodes one text subtitle stream's cues for the output.
pub struct SubtitleConverter {
    decoder: ffmpeg::decoder::Subtitle,
    encoder: ffmpeg::encoder::subtitle::Encoder,
    /// The input stream's time base, which packets come in and go out in.
    time_base: Rational,
    buffer: Vec<u8>,
    /// The target shows one cue at a time (`mov_text`): a cue is held until the next one
    /// arrives and cut short where they overlap, so every cue starts on time.
    one_at_a_time: bool,
    held: Option<Packet>,
}

/// Largest encoded cue: far above any real cue's text.
const MAX_CUE_BYTES: usize = 1 << 20;

impl SubtitleConverter {
    /// A converter from the input stream `from` to codec `to`.
    pub fn new(from: &ffmpeg::format::stream::Stream, to: codec::Id) -> Result<Self, StitchError> {
        let failed = |what: &str| {
            let what = what.to_string();
            move |e: ffmpeg::Error| {
                StitchError::Write(format!(
                    "cannot convert subtitle stream {} to {}: {what}: {e}",
                    from.index(),
                    to.name()
                ))
            }
        };
        let mut context = codec::context::Context::from_parameters(from.parameters())
            .map_err(failed("reading its parameters"))?;
        // SAFETY: the context is exclusively owned; `pkt_timebase` is a plain field that
        // lets the decoder time cues from their packets.
        unsafe {
            (*context.as_mut_ptr()).pkt_timebase = from.time_base().into();
        }
        let decoder = context
            .decoder()
            .subtitle()
            .map_err(failed("opening its decoder"))?;
        let codec = ffmpeg::encoder::find(to)
            .ok_or_else(|| StitchError::Write(format!("FFmpeg has no {} encoder", to.name())))?;
        let mut encoder = codec::context::Context::new_with_codec(codec)
            .encoder()
            .subtitle()
            .map_err(failed("preparing its encoder"))?;
        encoder.set_time_base(Rational::new(1, 1_000_000));
        // SAFETY: the encoder context is exclusively owned and not yet opened; it takes
        // ownership of a copy of the decoder's ASS header (FFmpeg frees it with the
        // context), which text encoders read their styles from.
        unsafe {
            let header = (*decoder.as_ptr()).subtitle_header;
            let size = (*decoder.as_ptr()).subtitle_header_size;
            if !header.is_null() && size > 0 {
                let length = usize::try_from(size).unwrap_or(0);
                let copy = ffmpeg::ffi::av_mallocz(length + 1).cast::<u8>();
                if copy.is_null() {
                    return Err(StitchError::Write("out of memory".into()));
                }
                std::ptr::copy_nonoverlapping(header, copy, length);
                (*encoder.as_mut_ptr()).subtitle_header = copy;
                (*encoder.as_mut_ptr()).subtitle_header_size = size;
            }
        }
        let encoder = encoder
            .open_as(codec)
            .map_err(failed("opening its encoder"))?;
        Ok(Self {
            decoder,
            encoder,
            time_base: from.time_base(),
            buffer: vec![0; MAX_CUE_BYTES],
            one_at_a_time: to == codec::Id::MOV_TEXT,
            held: None,
        })
    }

    /// The output stream's codec parameters.
    pub fn parameters(&self) -> codec::Parameters {
        codec::Parameters::from(&*self.encoder)
    }

    /// The input stream's time base, which converted cues are timed in.
    pub fn time_base(&self) -> Rational {
        self.time_base
    }

    /// Converts the cue of one input packet; returns the cue ready to write, if any: for
    /// most targets the packet's own, for a one-at-a-time target the one before it, ended
    /// no later than this one starts. Cues keep their start and duration (input time
    /// base). A packet that shows nothing (an MP4 track's filler between cues) gives none.
    pub fn convert(&mut self, packet: &Packet) -> Result<Option<Packet>, StitchError> {
        let Some(cue) = self.encode(packet)? else {
            return Ok(None);
        };
        if !self.one_at_a_time {
            return Ok(Some(cue));
        }
        let starts = cue.pts();
        Ok(self.held.replace(cue).map(|mut previous| {
            if let (Some(previous_start), Some(next_start)) = (previous.pts(), starts) {
                let room = next_start - previous_start;
                if previous.duration() > room && room > 0 {
                    previous.set_duration(room);
                }
            }
            previous
        }))
    }

    /// The cue still held once the input's packets are all converted.
    pub fn finish(&mut self) -> Option<Packet> {
        self.held.take()
    }

    fn encode(&mut self, packet: &Packet) -> Result<Option<Packet>, StitchError> {
        let mut cue = DecodedCue(ffmpeg::Subtitle::new());
        let decoded = self
            .decoder
            .decode(packet, &mut cue.0)
            .map_err(|e| StitchError::Write(format!("cannot decode a subtitle cue: {e}")))?;
        if !decoded || cue.0.rects().next().is_none() {
            return Ok(None);
        }
        let microseconds = Rational::new(1, 1_000_000);
        let milliseconds = Rational::new(1, 1000);
        let Some(start) = cue.0.pts() else {
            return Ok(None);
        };
        let start = start + i64::from(cue.0.start()).rescale(milliseconds, microseconds);
        let shown = i64::from(cue.0.end().saturating_sub(cue.0.start()));
        cue.0.set_pts(Some(start));
        cue.0.set_end(cue.0.end().saturating_sub(cue.0.start()));
        cue.0.set_start(0);
        // SAFETY: the buffer is writable for its length and the cue is a decoded subtitle;
        // FFmpeg writes at most `buffer.len()` bytes and returns their count.
        let written = unsafe {
            ffmpeg::ffi::avcodec_encode_subtitle(
                self.encoder.as_mut_ptr(),
                self.buffer.as_mut_ptr(),
                i32::try_from(self.buffer.len()).unwrap_or(i32::MAX),
                cue.0.as_ptr(),
            )
        };
        if written < 0 {
            return Err(StitchError::Write(format!(
                "cannot encode a subtitle cue: {}",
                ffmpeg::Error::from(written)
            )));
        }
        let mut out = Packet::copy(&self.buffer[..usize::try_from(written).unwrap_or(0)]);
        let pts = start.rescale(microseconds, self.time_base);
        out.set_pts(Some(pts));
        out.set_dts(Some(pts));
        out.set_duration(shown.rescale(milliseconds, self.time_base));
        out.set_flags(ffmpeg::packet::Flags::KEY);
        Ok(Some(out))
    }
}

/// A decoded cue, freed with FFmpeg's own call (the wrapper type does not free it).
struct DecodedCue(ffmpeg::Subtitle);

impl Drop for DecodedCue {
    fn drop(&mut self) {
        // SAFETY: the subtitle was zeroed or filled by the decoder; freeing it releases
        // its rectangles and leaves it empty.
        unsafe { ffmpeg::ffi::avsubtitle_free(self.0.as_mut_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(codec: &str) -> CopiedStream {
        CopiedStream {
            stream_index: 2,
            codec: codec.to_string(),
        }
    }

    #[test]
    fn text_subtitles_are_copied_where_they_fit_and_converted_where_not() {
        ffmpeg::init().expect("FFmpeg initialises");
        assert_eq!(action("out.mp4", &stream("mov_text")), SubtitleAction::Copy);
        assert_eq!(action("out.mkv", &stream("subrip")), SubtitleAction::Copy);
        assert_eq!(action("out.mkv", &stream("ass")), SubtitleAction::Copy);
        assert_eq!(
            action("out.mp4", &stream("subrip")),
            SubtitleAction::Convert {
                to: codec::Id::MOV_TEXT
            }
        );
        assert_eq!(
            action("out.mkv", &stream("mov_text")),
            SubtitleAction::Convert { to: codec::Id::ASS }
        );
    }

    #[test]
    fn bitmap_subtitles_an_output_cannot_hold_are_left_out_with_a_note() {
        ffmpeg::init().expect("FFmpeg initialises");
        let SubtitleAction::LeaveOut(note) = action("out.mp4", &stream("hdmv_pgs_subtitle")) else {
            panic!("PGS subtitles cannot go into MP4");
        };
        assert_eq!(
            note,
            "subtitle stream 2 (hdmv_pgs_subtitle) was left out: a .mp4 file cannot hold it; \
             choose an .mkv output to keep it"
        );
        let (kept, notes) =
            subtitles_kept("out.mp4", &[stream("subrip"), stream("hdmv_pgs_subtitle")]);
        assert_eq!(kept.len(), 1);
        assert_eq!(
            notes,
            [
                "subtitle stream 2 (subrip) was converted to mov_text, the text subtitles the \
                 output container holds"
                    .to_string(),
                note
            ]
        );
    }
}
