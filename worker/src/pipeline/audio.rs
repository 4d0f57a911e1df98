//! Audio pass-through: while the decode stage demuxes its chunk, the input's audio packets
//! whose decode time falls in the chunk's span are written, untouched, to a packet log that
//! the stitch muxes into the output.
//!
//! The worker reads those bytes anyway (audio is interleaved with the video it decodes), so
//! the input is read once for the whole job instead of once more by the stitch. Spans are
//! cut by decode time against the chunks' start timestamps, the first open at the start and
//! the last at the end, so every packet lands in exactly one chunk; packets are never cut,
//! rounded or re-encoded, and AAC priming stays with the first chunk.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use ffmpeg::{Packet, Rational};
use ffmpeg_next as ffmpeg;

use framefleet_common::media::compare_timestamps;
use framefleet_common::media::packet_log::PacketLogWriter;

use super::ChunkError;

/// A chunk's span, as video timestamps in the video time base: audio packets decoding at
/// or after `start` and before `end` belong to it. `None` leaves that side open.
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
    /// Not an audio stream being copied, or outside the span.
    Ignored,
    /// Written to the log.
    Kept,
    /// The first packet of a stream came after the span's start although the stream has
    /// earlier packets: the seek landed too late for audio, and packets may be missing.
    Late,
}

struct StreamState {
    time_base: Rational,
    start_time: Option<i64>,
    seen: bool,
    past_end: bool,
}

/// Writes the span's audio packets to a packet log file.
pub(super) struct AudioCollector {
    log: PacketLogWriter<BufWriter<File>>,
    streams: HashMap<usize, StreamState>,
    span: Span,
}

impl AudioCollector {
    /// Starts (or starts over) the log at `path` for `streams` of `input`.
    pub fn new(
        path: &Path,
        streams: &[usize],
        input: &ffmpeg::format::context::Input,
        span: Span,
    ) -> Result<Self, ChunkError> {
        let failed =
            |e: std::io::Error| ChunkError::Encode(format!("cannot write the audio log: {e}"));
        let file = File::create(path).map_err(failed)?;
        let log = PacketLogWriter::new(BufWriter::new(file)).map_err(failed)?;
        let mut states = HashMap::new();
        for &index in streams {
            let stream = input.stream(index).ok_or_else(|| {
                ChunkError::Invalid(format!("the input has no audio stream {index}"))
            })?;
            let start_time = first_timestamp(&stream);
            states.insert(
                index,
                StreamState {
                    time_base: stream.time_base(),
                    start_time,
                    seen: false,
                    past_end: false,
                },
            );
        }
        Ok(Self {
            log,
            streams: states,
            span,
        })
    }

    /// Offers a demuxed packet: kept when it is audio of the span.
    pub fn offer(&mut self, packet: &Packet) -> Result<Offer, ChunkError> {
        let Some(state) = self.streams.get_mut(&packet.stream()) else {
            return Ok(Offer::Ignored);
        };
        let Some(time) = packet.dts().or(packet.pts()) else {
            return Ok(Offer::Ignored);
        };
        let first = !state.seen;
        state.seen = true;
        let before_start = self.span.start.is_some_and(|start| {
            compare_timestamps(time, state.time_base, start, self.span.time_base).is_lt()
        });
        let after_start = self.span.start.is_some_and(|start| {
            compare_timestamps(time, state.time_base, start, self.span.time_base).is_gt()
        });
        if first && after_start {
            let stream_begins_here = state.start_time.is_some_and(|begin| time <= begin);
            if !stream_begins_here {
                return Ok(Offer::Late);
            }
        }
        let past_end = self.span.end.is_some_and(|end| {
            compare_timestamps(time, state.time_base, end, self.span.time_base).is_ge()
        });
        if past_end {
            state.past_end = true;
        }
        if before_start || past_end {
            return Ok(Offer::Ignored);
        }
        self.log
            .write(packet)
            .map_err(|e| ChunkError::Encode(format!("cannot write the audio log: {e}")))?;
        Ok(Offer::Kept)
    }

    /// True while some stream has not yet reached the span's end (with an open end, until
    /// the input ends).
    pub fn wants_more(&self) -> bool {
        self.streams.values().any(|state| !state.past_end)
    }

    /// Flushes the log; returns the packets it holds.
    pub fn finish(self) -> Result<u64, ChunkError> {
        let packets = self.log.packets();
        self.log
            .finish()
            .map_err(|e| ChunkError::Encode(format!("cannot write the audio log: {e}")))?;
        Ok(packets)
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
