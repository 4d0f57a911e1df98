//! Stream pass-through: while the decode stage demuxes its chunk, the input's audio and
//! subtitle packets whose decode time falls in the chunk's span are written, untouched, to
//! a packet log that the stitch muxes into the output.
//!
//! The worker reads those bytes anyway (they are interleaved with the video it decodes), so
//! the input is read once for the whole job instead of once more by the stitch. Spans are
//! cut by decode time against the chunks' start timestamps, the first open at the start and
//! the last at the end, so every packet lands in exactly one chunk; packets are never cut,
//! rounded or re-encoded, and AAC priming stays with the first chunk.
//!
//! Audio is dense: a gap after a seek means the seek landed too late, and a stream is done
//! with its first packet past the span, or, where the input's sample index lists every
//! packet (MP4, MOV), with its last packet before the span's end, so nothing after it need
//! be read. Subtitles are sparse: minutes may pass between two packets, so a late first
//! packet proves nothing, and waiting for the next packet past the span could mean reading
//! to the end of the input. A subtitle stream is done with its
//! first packet past the span, or once the other streams are [`SPARSE_SLACK_SECONDS`] past
//! it: muxers interleave packets by decode time, so a subtitle of the span comes before
//! them.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use ffmpeg::{Packet, Rational};
use ffmpeg_next as ffmpeg;

use framefleet_common::media::packet_log::PacketLogWriter;
use framefleet_common::media::{compare_timestamps, sample_index};

use super::ChunkError;

/// How far past the span's end the dense streams must be before a sparse stream with no
/// packet past the span is taken as done. FFmpeg's muxers write packets in decode-time
/// order; this covers the looser interleaving of other muxers and of MPEG-TS subtitles.
const SPARSE_SLACK_SECONDS: i64 = 5;

/// A chunk's span, as video timestamps in the video time base: packets decoding at or
/// after `start` and before `end` belong to it. `None` leaves that side open.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    /// Start of the span (the chunk's first frame), unless the chunk is the first.
    pub start: Option<i64>,
    /// End of the span (the next chunk's first frame), unless the chunk is the last.
    pub end: Option<i64>,
    /// Time base of both.
    pub time_base: Rational,
}

/// What happened to an offered packet.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Offer {
    /// Not a stream being copied, or outside the span.
    Ignored,
    /// Written to the log.
    Kept,
    /// The first packet of an audio stream came after the span's start although the
    /// stream has earlier packets: the seek landed too late, and packets may be missing.
    Late,
}

struct StreamState {
    time_base: Rational,
    start_time: Option<i64>,
    /// A subtitle stream: packets may be far apart.
    sparse: bool,
    seen: bool,
    past_end: bool,
    /// Decode time of the stream's last packet before the span's end, from the sample
    /// index: once it is in, the stream is done.
    last_in_span: Option<i64>,
}

/// Writes the span's packets of the copied streams to a packet log file.
pub(super) struct PassthroughCollector {
    log: PacketLogWriter<BufWriter<File>>,
    streams: HashMap<usize, StreamState>,
    span: Span,
    /// The video stream: its packets say how far the demuxer has read.
    video_stream: usize,
    /// The latest decode time of a video or audio packet, in `span.time_base`.
    dense_time: Option<i64>,
}

impl PassthroughCollector {
    /// Starts (or starts over) the log at `path` for `streams` of `input`, whose video
    /// stream is `video_stream`; `indexed` when the input's sample index lists every packet
    /// (not a fragmented MP4, whose index grows as fragments are read).
    pub fn new(
        path: &Path,
        streams: &[usize],
        input: &ffmpeg::format::context::Input,
        video_stream: usize,
        span: Span,
        indexed: bool,
    ) -> Result<Self, ChunkError> {
        let failed =
            |e: std::io::Error| ChunkError::Encode(format!("cannot write the packet log: {e}"));
        let file = File::create(path).map_err(failed)?;
        let log = PacketLogWriter::new(BufWriter::new(file)).map_err(failed)?;
        let mut states = HashMap::new();
        for &index in streams {
            let stream = input.stream(index).ok_or_else(|| {
                ChunkError::Invalid(format!("the input has no stream {index} to copy"))
            })?;
            let start_time = first_timestamp(&stream);
            let time_base = stream.time_base();
            let last_in_span = span.end.filter(|_| indexed).and_then(|end| {
                sample_index::last_decode_time_before(input, index, end, span.time_base)
            });
            // A stream whose packets all come before the span has none in it.
            let ended_before = match (last_in_span, span.start) {
                (Some(last), Some(start)) => {
                    compare_timestamps(last, time_base, start, span.time_base).is_lt()
                }
                _ => false,
            };
            states.insert(
                index,
                StreamState {
                    time_base,
                    start_time,
                    sparse: stream.parameters().medium() == ffmpeg::media::Type::Subtitle,
                    seen: false,
                    past_end: ended_before,
                    last_in_span,
                },
            );
        }
        Ok(Self {
            log,
            streams: states,
            span,
            video_stream,
            dense_time: None,
        })
    }

    /// Offers a demuxed packet: kept when it is a copied stream's packet of the span. Video
    /// packets are offered too, as the measure of how far the demuxer has read.
    pub fn offer(&mut self, packet: &Packet) -> Result<Offer, ChunkError> {
        let Some(time) = packet.dts().or(packet.pts()) else {
            return Ok(Offer::Ignored);
        };
        if packet.stream() == self.video_stream {
            self.advance(time, self.span.time_base);
            return Ok(Offer::Ignored);
        }
        let Some(state) = self.streams.get_mut(&packet.stream()) else {
            return Ok(Offer::Ignored);
        };
        let (time_base, sparse) = (state.time_base, state.sparse);
        let first = !state.seen;
        state.seen = true;
        let before_start = self.span.start.is_some_and(|start| {
            compare_timestamps(time, time_base, start, self.span.time_base).is_lt()
        });
        let after_start = self.span.start.is_some_and(|start| {
            compare_timestamps(time, time_base, start, self.span.time_base).is_gt()
        });
        if first && after_start && !sparse {
            let stream_begins_here = state.start_time.is_some_and(|begin| time <= begin);
            if !stream_begins_here {
                return Ok(Offer::Late);
            }
        }
        let past_end = self.span.end.is_some_and(|end| {
            compare_timestamps(time, time_base, end, self.span.time_base).is_ge()
        });
        // Past the span, or the span's last packet (kept below): the stream is done.
        if past_end || state.last_in_span.is_some_and(|last| time >= last) {
            state.past_end = true;
        }
        if !sparse {
            self.advance(time, time_base);
        }
        if before_start || past_end {
            return Ok(Offer::Ignored);
        }
        self.log
            .write(packet)
            .map_err(|e| ChunkError::Encode(format!("cannot write the packet log: {e}")))?;
        Ok(Offer::Kept)
    }

    /// True while some stream may still have packets of the span ahead (with an open end,
    /// until the input ends).
    pub fn wants_more(&self) -> bool {
        let dense_far_past = match (self.span.end, self.dense_time) {
            (Some(end), Some(latest)) => latest >= end.saturating_add(self.slack_ticks()),
            _ => false,
        };
        self.streams.values().any(|state| {
            let done = state.past_end || (state.sparse && dense_far_past);
            !done
        })
    }

    /// Decode time of copied stream `index`'s last packet before the span's end, where the
    /// sample index says.
    pub fn last_in_span(&self, index: usize) -> Option<i64> {
        self.streams.get(&index)?.last_in_span
    }

    /// True when only video packets can say how far the demuxer has read: the copied
    /// streams are all sparse and one of them is not done.
    pub fn needs_video(&self) -> bool {
        self.streams.values().all(|state| state.sparse) && self.wants_more()
    }

    /// Flushes the log; returns the packets it holds.
    pub fn finish(self) -> Result<u64, ChunkError> {
        let packets = self.log.packets();
        self.log
            .finish()
            .map_err(|e| ChunkError::Encode(format!("cannot write the packet log: {e}")))?;
        Ok(packets)
    }

    fn advance(&mut self, time: i64, time_base: Rational) {
        let time = ffmpeg::Rescale::rescale(&time, time_base, self.span.time_base);
        if self.dense_time.is_none_or(|latest| time > latest) {
            self.dense_time = Some(time);
        }
    }

    fn slack_ticks(&self) -> i64 {
        let Rational(numerator, denominator) = self.span.time_base;
        SPARSE_SLACK_SECONDS.saturating_mul(i64::from(denominator)) / i64::from(numerator.max(1))
    }
}

/// The stream's first timestamp: its start time, else its first index entry's.
fn first_timestamp(stream: &ffmpeg::format::stream::Stream) -> Option<i64> {
    let start = stream.start_time();
    if start != ffmpeg::ffi::AV_NOPTS_VALUE {
        return Some(start);
    }
    // SAFETY: the stream belongs to an open input borrowed for this call; the entry
    // pointer is only read, before the demuxer runs again.
    unsafe {
        let pointer = stream.as_ptr().cast_mut();
        ffmpeg::ffi::avformat_index_get_entry(pointer, 0)
            .as_ref()
            .map(|entry| entry.timestamp)
    }
}
