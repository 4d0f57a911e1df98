//! A packet log: compressed packets written one after another with every field the muxer
//! needs (stream, timestamps, duration, flags, the side data that matters for audio), so
//! they can be muxed later exactly as the demuxer gave them.
//!
//! Workers write the input's audio packets of their chunk's span to one; the stitch reads
//! the logs back in chunk order. Containers would not do: each rounds or rebases
//! timestamps somewhere (MP4 edit lists, Matroska milliseconds, NUT durations).
//!
//! Layout: the magic `FFPKTLG1`, then per packet, little-endian: stream `u32`, pts `i64`,
//! dts `i64` (`i64::MIN` when absent), duration `i64`, flags `i32`, side data count `u32`
//! and per entry kind `u8` + length `u32` + bytes, then the payload length `u32` and bytes.

use std::io::{self, Read, Write};

use ffmpeg::codec::packet::side_data::Type as SideDataType;
use ffmpeg::packet::Mut;
use ffmpeg_next as ffmpeg;

const MAGIC: &[u8; 8] = b"FFPKTLG1";

/// Largest payload or side data entry accepted when reading (a corrupt log must not make
/// the reader allocate gigabytes).
const MAX_FIELD_BYTES: u32 = 64 * 1024 * 1024;

/// Side data kept with a packet, with the tag each has in the log.
const KEPT_SIDE_DATA: [(u8, SideDataType); 3] = [
    (1, SideDataType::SkipSamples),
    (2, SideDataType::NewExtraData),
    (3, SideDataType::ParamChange),
];

/// Writes packets to a log.
pub struct PacketLogWriter<W: Write> {
    out: W,
    packets: u64,
}

impl<W: Write> PacketLogWriter<W> {
    /// Starts a log on `out`.
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        Ok(Self { out, packets: 0 })
    }

    /// Appends one packet.
    pub fn write(&mut self, packet: &ffmpeg::Packet) -> io::Result<()> {
        let out = &mut self.out;
        let stream = u32::try_from(packet.stream()).map_err(invalid)?;
        out.write_all(&stream.to_le_bytes())?;
        out.write_all(&packet.pts().unwrap_or(i64::MIN).to_le_bytes())?;
        out.write_all(&packet.dts().unwrap_or(i64::MIN).to_le_bytes())?;
        out.write_all(&packet.duration().to_le_bytes())?;
        out.write_all(&packet.flags().bits().to_le_bytes())?;
        let kept: Vec<(u8, Vec<u8>)> = packet
            .side_data()
            .filter_map(|side| {
                KEPT_SIDE_DATA
                    .iter()
                    .find(|(_, kind)| *kind == side.kind())
                    .map(|(tag, _)| (*tag, side.data().to_vec()))
            })
            .collect();
        out.write_all(&u32::try_from(kept.len()).map_err(invalid)?.to_le_bytes())?;
        for (tag, data) in kept {
            out.write_all(&[tag])?;
            out.write_all(&u32::try_from(data.len()).map_err(invalid)?.to_le_bytes())?;
            out.write_all(&data)?;
        }
        let data = packet.data().unwrap_or(&[]);
        out.write_all(&u32::try_from(data.len()).map_err(invalid)?.to_le_bytes())?;
        out.write_all(data)?;
        self.packets += 1;
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads packets back from a log.
pub struct PacketLogReader<R: Read> {
    input: R,
}

impl<R: Read> PacketLogReader<R> {
    /// Opens a log, checking its magic.
    pub fn new(mut input: R) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a framefleet packet log",
            ));
        }
        Ok(Self { input })
    }

    /// The next packet, `None` at the end of the log.
    pub fn next_packet(&mut self) -> io::Result<Option<ffmpeg::Packet>> {
        let mut stream = [0u8; 4];
        match self.input.read_exact(&mut stream) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let stream = u32::from_le_bytes(stream);
        let timestamp = |value: i64| (value != i64::MIN).then_some(value);
        let pts = timestamp(self.i64()?);
        let dts = timestamp(self.i64()?);
        let duration = self.i64()?;
        let flags = self.i32()?;
        let side_count = self.u32()?;
        let mut side = Vec::new();
        for _ in 0..side_count {
            let mut tag = [0u8; 1];
            self.input.read_exact(&mut tag)?;
            let data = self.bytes()?;
            let kind = KEPT_SIDE_DATA
                .iter()
                .find(|(known, _)| *known == tag[0])
                .map(|(_, kind)| *kind)
                .ok_or_else(|| invalid(format!("unknown side data tag {}", tag[0])))?;
            side.push((kind, data));
        }
        let mut packet = ffmpeg::Packet::copy(&self.bytes()?);
        packet.set_stream(usize::try_from(stream).map_err(invalid)?);
        packet.set_pts(pts);
        packet.set_dts(dts);
        packet.set_duration(duration);
        packet.set_flags(ffmpeg::packet::Flags::from_bits_truncate(flags));
        for (kind, data) in side {
            add_side_data(&mut packet, kind, &data)?;
        }
        Ok(Some(packet))
    }

    fn i64(&mut self) -> io::Result<i64> {
        let mut bytes = [0u8; 8];
        self.input.read_exact(&mut bytes)?;
        Ok(i64::from_le_bytes(bytes))
    }

    fn i32(&mut self) -> io::Result<i32> {
        let mut bytes = [0u8; 4];
        self.input.read_exact(&mut bytes)?;
        Ok(i32::from_le_bytes(bytes))
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut bytes = [0u8; 4];
        self.input.read_exact(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn bytes(&mut self) -> io::Result<Vec<u8>> {
        let length = self.u32()?;
        if length > MAX_FIELD_BYTES {
            return Err(invalid(format!("a field of {length} bytes")));
        }
        let mut data = vec![0u8; length as usize];
        self.input.read_exact(&mut data)?;
        Ok(data)
    }
}

fn add_side_data(packet: &mut ffmpeg::Packet, kind: SideDataType, data: &[u8]) -> io::Result<()> {
    // SAFETY: `packet` owns a valid AVPacket; FFmpeg allocates `data.len()` bytes for the
    // entry (or returns null), and the copy stays within both buffers.
    unsafe {
        let target =
            ffmpeg::ffi::av_packet_new_side_data(packet.as_mut_ptr(), kind.into(), data.len());
        if target.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "cannot allocate packet side data",
            ));
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), target, data.len());
    }
    Ok(())
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_come_back_exactly_as_written() {
        super::super::init();
        let mut first = ffmpeg::Packet::copy(b"aac frame one");
        first.set_stream(1);
        first.set_pts(Some(-1024));
        first.set_dts(Some(-1024));
        first.set_duration(1024);
        first.set_flags(ffmpeg::packet::Flags::KEY);
        add_side_data(
            &mut first,
            SideDataType::SkipSamples,
            &[0, 4, 0, 0, 0, 0, 0, 0, 0, 0],
        )
        .expect("side data");
        let mut second = ffmpeg::Packet::copy(b"two");
        second.set_stream(2);
        let mut writer = PacketLogWriter::new(Vec::new()).expect("writer");
        writer.write(&first).expect("write");
        writer.write(&second).expect("write");
        assert_eq!(writer.packets(), 2);
        let log = writer.finish().expect("finish");

        let mut reader = PacketLogReader::new(log.as_slice()).expect("reader");
        let read = reader.next_packet().expect("read").expect("first");
        assert_eq!(read.data(), first.data());
        assert_eq!(
            (read.stream(), read.pts(), read.dts()),
            (1, Some(-1024), Some(-1024))
        );
        assert_eq!((read.duration(), read.is_key()), (1024, true));
        let side: Vec<_> = read
            .side_data()
            .map(|s| (s.kind(), s.data().to_vec()))
            .collect();
        assert_eq!(
            side,
            vec![(
                SideDataType::SkipSamples,
                vec![0, 4, 0, 0, 0, 0, 0, 0, 0, 0]
            )]
        );
        let read = reader.next_packet().expect("read").expect("second");
        assert_eq!((read.stream(), read.pts(), read.dts()), (2, None, None));
        assert!(reader.next_packet().expect("end").is_none());
        assert!(PacketLogReader::new(&b"not a log"[..]).is_err());
    }
}
