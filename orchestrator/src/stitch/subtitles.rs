//! The one conversion the stitch makes: text subtitles the output container cannot hold
//! unchanged (SubRip in MP4, `mov_text` in Matroska) are decoded and encoded again as the
//! container's own text subtitle codec, cue by cue, with their times and text (see
//! [`super::carry`] for when).

use ffmpeg::{codec, Packet, Rational, Rescale};
use ffmpeg_next as ffmpeg;

use super::error::StitchError;

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
