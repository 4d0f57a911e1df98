//! The packets the stitch merges: the chunks' video packets, one chunk open at a time,
//! and the copied streams' packets from the chunks' packet logs, in decode-time order.

use ffmpeg::{format, media, Packet, Rational};
use ffmpeg_next as ffmpeg;

use framefleet_common::media::packet_log::PacketLogReader;
use framefleet_common::media::{compare_timestamps, PacketReader};
use framefleet_common::storage::{ObjectReader, ObjectUri, Storage};

use super::error::{write_error, StitchError};
use super::timeline::Shift;

/// Writes `packet` to output stream `stream`, interleaved.
pub fn write(
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
pub fn earlier(a: &Packet, a_base: Rational, b: &Packet, b_base: Rational) -> bool {
    let time = |p: &Packet| p.dts().or(p.pts()).unwrap_or(i64::MIN);
    compare_timestamps(time(a), a_base, time(b), b_base).is_le()
}

/// Chunks joined end to end can make decode timestamps repeat at a boundary; nudge them
/// forward by a tick where that keeps them at or before the presentation timestamp.
pub fn keep_dts_increasing(packet: &mut Packet, last: &mut Option<i64>) {
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
pub struct ChunkPackets<'a, F> {
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

impl<'a, F> ChunkPackets<'a, F>
where
    F: Fn(&ObjectUri) -> Result<format::context::Input, StitchError>,
{
    /// The video packets of `chunks`, each opened with `open` when its turn comes.
    pub fn new(chunks: &'a [ObjectUri], open: &'a F) -> Self {
        Self {
            chunks,
            next_chunk: 0,
            current: None,
            open,
        }
    }

    /// The next video packet and its time base; `None` after the last chunk.
    pub fn next(&mut self) -> Result<Option<(Packet, Rational)>, StitchError> {
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
pub struct PassthroughPackets<'a> {
    logs: &'a [ObjectUri],
    next_log: usize,
    current: Option<(
        PacketLogReader<std::io::BufReader<ObjectReader>>,
        &'a ObjectUri,
    )>,
    map: &'a [Option<(usize, Rational)>],
    /// Where the logs are read, and the runtime the blocking reads wait on.
    storage: &'a Storage,
    runtime: tokio::runtime::Handle,
    /// Moves each packet with the job's video (see [`Shift`]).
    shift: Shift,
}

impl<'a> PassthroughPackets<'a> {
    /// The packets of `logs` (read from `storage`) for the input streams `map` sends to
    /// an output stream (with that stream's index and the input's time base), each moved
    /// by `shift`.
    pub fn new(
        logs: &'a [ObjectUri],
        map: &'a [Option<(usize, Rational)>],
        storage: &'a Storage,
        runtime: tokio::runtime::Handle,
        shift: Shift,
    ) -> Self {
        Self {
            logs,
            next_log: 0,
            current: None,
            map,
            storage,
            runtime,
            shift,
        }
    }

    /// The next copied packet, its output stream and its time base; `None` at the end.
    pub fn next(&mut self) -> Result<Option<(Packet, usize, Rational)>, StitchError> {
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
            let reader = self.storage.open_reader(uri, self.runtime.clone())?;
            let log = PacketLogReader::new(std::io::BufReader::new(reader)).map_err(|e| {
                StitchError::Write(format!("{uri} is not a readable packet log: {e}"))
            })?;
            self.current = Some((log, uri));
        }
    }
}
