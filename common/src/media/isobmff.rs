//! Just enough of the ISO base media file format (MP4, MOV, fragmented MP4) to read less
//! of an input: a walk over its top-level boxes, and two readers built on it.
//!
//! - [`HollowReader`], for the probe: once switched on, it answers reads of sample data
//!   (the payload of every `mdat` box) with zeros instead of fetching them, while box
//!   headers and indexes (`moov`, `moof`) are read for real. FFmpeg's MOV demuxer takes
//!   every timestamp and flag from the index, never from sample bytes, so the probe sees
//!   the same packets without downloading the video.
//! - [`SkipFragments`], for a worker's chunk of a fragmented MP4: it shows FFmpeg a `skip`
//!   box over the fragments before the chunk's own, so the demuxer jumps from the header
//!   straight to them without reading (or walking) the ones in between. Byte offsets are
//!   unchanged, so absolute offsets in `tfhd`, `sidx` or `mfra` stay right.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use crate::storage::FetchLimit;

/// True when the object opens with an ISO BMFF box (`ftyp`, `moov`, …), the containers
/// whose index carries every sample's timestamp. Leaves the reader at its start.
pub fn starts_with_a_box<R: Read + Seek>(reader: &mut R) -> bool {
    let mut header = [0u8; 8];
    let read = reader.seek(SeekFrom::Start(0)).is_ok() && reader.read_exact(&mut header).is_ok();
    let rewound = reader.seek(SeekFrom::Start(0)).is_ok();
    read && rewound
        && matches!(
            &header[4..8],
            b"ftyp" | b"moov" | b"mdat" | b"free" | b"skip" | b"wide" | b"styp"
        )
}

/// Where the index ends when it comes before the sample data (a "fast start" MP4, or a
/// fragmented MP4's `moov`): the end of the `moov` box, found by walking box headers from
/// the start up to it or to the first `mdat`. `None` when sample data comes first (the
/// index at the end) or the object is not ISO BMFF. A reader can then fetch the index
/// without reading ahead into the sample data.
pub fn leading_index_end<R: Read + Seek>(reader: &mut R) -> io::Result<Option<u64>> {
    let size = reader.seek(SeekFrom::End(0))?;
    if !starts_with_a_box(reader) {
        return Ok(None);
    }
    let mut boxes = TopLevelBoxes::default();
    while !boxes.finished && boxes.movie.is_none() && boxes.sample_data.is_empty() {
        boxes.walk_until(reader, size, boxes.next_header)?;
    }
    reader.seek(SeekFrom::Start(0))?;
    Ok(boxes
        .movie
        .filter(|_| boxes.sample_data.is_empty())
        .map(|movie| movie.end))
}

/// Size of a box header with a 64-bit size.
const LARGE_HEADER_BYTES: u64 = 16;

/// The top-level boxes of a file, learned by walking their headers in order.
#[derive(Debug, Default)]
pub struct TopLevelBoxes {
    next_header: u64,
    finished: bool,
    /// Byte ranges of every `mdat` payload found so far (sample data).
    pub sample_data: Vec<Range<u64>>,
    /// Byte range of the `moov` box (the index), once found.
    pub movie: Option<Range<u64>>,
    /// Offsets of every `moof` box found so far (one per fragment), in file order.
    pub fragments: Vec<u64>,
    /// True when some fragment's track runs lack a `tfdt` (base decode time): their
    /// timestamps then depend on every fragment before, so none may be skipped.
    pub untimed_fragments: bool,
}

impl TopLevelBoxes {
    /// Reads box headers until the walk has passed `position` or reached the end. A header
    /// that makes no sense (smaller than itself, or past the end) ends the walk.
    pub fn walk_until<R: Read + Seek>(
        &mut self,
        reader: &mut R,
        size: u64,
        position: u64,
    ) -> io::Result<()> {
        while !self.finished && self.next_header <= position {
            let start = self.next_header;
            if start + 8 > size {
                self.finished = true;
                break;
            }
            let mut header = [0u8; 16];
            reader.seek(SeekFrom::Start(start))?;
            let available = usize::try_from((size - start).min(LARGE_HEADER_BYTES)).unwrap_or(8);
            reader.read_exact(&mut header[..available])?;
            let kind = [header[4], header[5], header[6], header[7]];
            let (header_bytes, box_bytes) =
                match u32::from_be_bytes([header[0], header[1], header[2], header[3]]) {
                    0 => (8, size - start),
                    1 if available == 16 => {
                        let large = u64::from_be_bytes([
                            header[8], header[9], header[10], header[11], header[12], header[13],
                            header[14], header[15],
                        ]);
                        (LARGE_HEADER_BYTES, large)
                    }
                    small => (8, u64::from(small)),
                };
            if box_bytes < header_bytes {
                self.finished = true;
                break;
            }
            let end = start.saturating_add(box_bytes).min(size);
            match &kind {
                b"mdat" => self.sample_data.push(start + header_bytes..end),
                b"moov" => self.movie = Some(start..end),
                b"moof" => {
                    self.fragments.push(start);
                    if !self.untimed_fragments
                        && !fragment_has_decode_times(reader, start + header_bytes..end)?
                    {
                        self.untimed_fragments = true;
                    }
                }
                _ => {}
            }
            self.next_header = start.saturating_add(box_bytes);
            if self.next_header >= size {
                self.finished = true;
            }
        }
        Ok(())
    }

    /// Where the walk stopped: boxes after it are not known yet.
    fn walked_until(&self) -> u64 {
        if self.finished {
            u64::MAX
        } else {
            self.next_header
        }
    }

    /// The sample-data range holding `position`, if any.
    fn sample_data_at(&self, position: u64) -> Option<&Range<u64>> {
        self.sample_data.iter().find(|r| r.contains(&position))
    }

    /// Where the next sample-data range after `position` starts, if any is known.
    fn next_sample_data_after(&self, position: u64) -> Option<u64> {
        self.sample_data
            .iter()
            .map(|r| r.start)
            .filter(|&start| start > position)
            .min()
    }

    /// The fragment (`moof` offset) whose data holds byte `position`: the last one before it.
    pub fn fragment_holding(&self, position: u64) -> Option<u64> {
        let after = self.fragments.partition_point(|&offset| offset < position);
        after.checked_sub(1).map(|i| self.fragments[i])
    }
}

/// The object behind one or more [`HollowReader`]s, and what is known of its boxes.
struct Source<R> {
    inner: R,
    boxes: TopLevelBoxes,
}

/// Largest `moof` read to check its decode times; a bigger one counts as untimed.
const MAX_MOOF_BYTES: u64 = 1 << 20;

/// True when every track fragment (`traf`) in the `moof` payload at `payload` carries a
/// `tfdt`.
fn fragment_has_decode_times<R: Read + Seek>(
    reader: &mut R,
    payload: Range<u64>,
) -> io::Result<bool> {
    let length = payload.end.saturating_sub(payload.start);
    if length > MAX_MOOF_BYTES {
        return Ok(false);
    }
    let mut bytes = vec![0u8; usize::try_from(length).unwrap_or(0)];
    reader.seek(SeekFrom::Start(payload.start))?;
    reader.read_exact(&mut bytes)?;
    let track_fragments: Vec<&[u8]> = children(&bytes)
        .filter(|(kind, _)| kind == b"traf")
        .map(|(_, body)| body)
        .collect();
    Ok(!track_fragments.is_empty()
        && track_fragments
            .iter()
            .all(|traf| children(traf).any(|(kind, _)| &kind == b"tfdt")))
}

/// The child boxes in `bytes` as (type, payload), stopping at the first malformed header.
fn children(bytes: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let size = usize::try_from(u32::from_be_bytes(rest.get(..4)?.try_into().ok()?)).ok()?;
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let body = rest.get(8..size)?;
        rest = rest.get(size..)?;
        Some((kind, body))
    })
}

/// A reader that, when hollow, returns zeros for sample data instead of fetching it (see
/// the module documentation). Twins made with [`twin`](Self::twin) share the source, so
/// what one fetched (and cached) serves the other.
pub struct HollowReader<R> {
    source: Arc<Mutex<Source<R>>>,
    size: u64,
    position: u64,
    hollow: bool,
}

impl<R: Read + Seek> HollowReader<R> {
    /// Wraps `inner`, `size` bytes long; `hollow` chooses whether sample data is skipped.
    pub fn new(inner: R, size: u64, hollow: bool) -> Self {
        Self {
            source: Arc::new(Mutex::new(Source {
                inner,
                boxes: TopLevelBoxes::default(),
            })),
            size,
            position: 0,
            hollow,
        }
    }

    /// Another reader over the same source, at its start.
    pub fn twin(&self, hollow: bool) -> Self {
        Self {
            source: self.source.clone(),
            size: self.size,
            position: 0,
            hollow,
        }
    }

    /// True when sample data reads as zeros.
    pub fn is_hollow(&self) -> bool {
        self.hollow
    }

    /// Reads exactly `buf.len()` real bytes at `position`.
    pub fn read_exact_at(&self, position: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut source = self.lock();
        source.inner.seek(SeekFrom::Start(position))?;
        source.inner.read_exact(buf)
    }

    /// Limits how far the source fetches ahead (see [`FetchLimit`]).
    pub fn limit_fetches(&self, end: Option<u64>)
    where
        R: FetchLimit,
    {
        self.lock().inner.limit_fetches(end);
    }

    /// Runs `look` on the top-level boxes walked so far.
    pub fn with_boxes<T>(&self, look: impl FnOnce(&TopLevelBoxes) -> T) -> T {
        look(&self.lock().boxes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Source<R>> {
        self.source.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<R: Read + Seek> Read for HollowReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.position >= self.size {
            return Ok(0);
        }
        let remaining = usize::try_from(self.size - self.position).unwrap_or(usize::MAX);
        let mut wanted = buf.len().min(remaining);
        let position = self.position;
        let mut guard = self.lock();
        let source = &mut *guard;
        if self.hollow {
            source
                .boxes
                .walk_until(&mut source.inner, self.size, position)?;
            if let Some(range) = source.boxes.sample_data_at(position) {
                let zeros = usize::try_from(range.end - position)
                    .unwrap_or(usize::MAX)
                    .min(wanted);
                drop(guard);
                buf[..zeros].fill(0);
                self.position += zeros as u64;
                return Ok(zeros);
            }
            let known = source.boxes.walked_until();
            let next_data = source.boxes.next_sample_data_after(position);
            if let Some(stop) = next_data
                .map_or(known, |start| start.min(known))
                .checked_sub(position)
            {
                wanted = usize::try_from(stop).map_or(wanted, |stop| stop.min(wanted));
            }
        }
        source.inner.seek(SeekFrom::Start(position))?;
        let read = source.inner.read(&mut buf[..wanted])?;
        drop(guard);
        self.position += read as u64;
        Ok(read)
    }
}

impl<R> Seek for HollowReader<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.position = resolve(to, self.position, self.size)?;
        Ok(self.position)
    }
}

/// A reader over a fragmented MP4 that hides `skipped` (whole fragments before a chunk's
/// own) behind a `skip` box header. See the module documentation.
pub struct SkipFragments<R> {
    inner: R,
    size: u64,
    position: u64,
    header_at: u64,
    header: [u8; LARGE_HEADER_BYTES as usize],
}

impl<R: Read + Seek> SkipFragments<R> {
    /// Wraps `inner`; `skipped` must start at the first fragment and end at another one
    /// (the probe's fragment offsets), and be at least 16 bytes long. With an empty
    /// `skipped` the reader changes nothing.
    pub fn new(mut inner: R, skipped: Range<u64>) -> io::Result<Self> {
        let size = inner.seek(SeekFrom::End(0))?;
        let mut header = [0u8; LARGE_HEADER_BYTES as usize];
        header[..4].copy_from_slice(&1u32.to_be_bytes());
        header[4..8].copy_from_slice(b"skip");
        header[8..].copy_from_slice(&(skipped.end - skipped.start).to_be_bytes());
        let header_at = if skipped.end.saturating_sub(skipped.start) >= LARGE_HEADER_BYTES
            && skipped.end <= size
        {
            skipped.start
        } else {
            u64::MAX
        };
        Ok(Self {
            inner,
            size,
            position: 0,
            header_at,
            header,
        })
    }
}

impl<R: Read + Seek> Read for SkipFragments<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let header = self.header_at..self.header_at.saturating_add(LARGE_HEADER_BYTES);
        if header.contains(&self.position) {
            let from = usize::try_from(self.position - header.start).unwrap_or(0);
            let count = (self.header.len() - from).min(buf.len());
            buf[..count].copy_from_slice(&self.header[from..from + count]);
            self.position += count as u64;
            return Ok(count);
        }
        let mut wanted = buf.len();
        if self.position < header.start {
            let until = usize::try_from(header.start - self.position).unwrap_or(usize::MAX);
            wanted = wanted.min(until);
        }
        self.inner.seek(SeekFrom::Start(self.position))?;
        let read = self.inner.read(&mut buf[..wanted])?;
        self.position += read as u64;
        Ok(read)
    }
}

impl<R> Seek for SkipFragments<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.position = resolve(to, self.position, self.size)?;
        Ok(self.position)
    }
}

fn resolve(to: SeekFrom, position: u64, size: u64) -> io::Result<u64> {
    let target = match to {
        SeekFrom::Start(offset) => Some(offset),
        SeekFrom::Current(delta) => position.checked_add_signed(delta),
        SeekFrom::End(delta) => size.checked_add_signed(delta),
    };
    target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut out = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(payload);
        out
    }

    fn fragmented() -> Vec<u8> {
        let mut file = boxed(b"ftyp", b"isom");
        file.extend(boxed(b"moov", &[7; 20]));
        for fragment in 1..=3u8 {
            let traf = boxed(b"traf", &boxed(b"tfdt", &[fragment; 4]));
            file.extend(boxed(b"moof", &traf));
            file.extend(boxed(b"mdat", &[fragment + 100; 40]));
        }
        file
    }

    #[test]
    fn the_walk_finds_fragments_and_sample_data() {
        let file = fragmented();
        let mut boxes = TopLevelBoxes::default();
        boxes
            .walk_until(&mut Cursor::new(&file), file.len() as u64, u64::MAX)
            .expect("walk");
        assert_eq!(boxes.fragments, vec![40, 116, 192]);
        assert!(!boxes.untimed_fragments);
        assert_eq!(boxes.sample_data[0], 76..116);
        assert_eq!(boxes.fragment_holding(70), Some(40));
        assert_eq!(boxes.fragment_holding(200), Some(192));
        assert_eq!(boxes.fragment_holding(10), None);
    }

    #[test]
    fn a_leading_index_ends_at_its_moov_and_a_trailing_one_is_not_leading() {
        let first = fragmented();
        let found = leading_index_end(&mut Cursor::new(&first)).expect("walk");
        assert_eq!(found, Some(40), "ftyp (12 bytes) then moov (28 bytes)");
        let mut last = boxed(b"ftyp", b"isom");
        last.extend(boxed(b"mdat", &[1; 64]));
        last.extend(boxed(b"moov", &[7; 20]));
        assert_eq!(
            leading_index_end(&mut Cursor::new(&last)).expect("walk"),
            None
        );
        let matroska = [0x1a, 0x45, 0xdf, 0xa3, 0, 0, 0, 0];
        assert_eq!(
            leading_index_end(&mut Cursor::new(&matroska)).expect("walk"),
            None
        );
    }

    #[test]
    fn fragments_without_decode_times_are_flagged() {
        let mut file = boxed(b"ftyp", b"isom");
        file.extend(boxed(b"moof", &boxed(b"traf", &boxed(b"trun", &[0; 8]))));
        file.extend(boxed(b"mdat", &[1; 8]));
        let mut boxes = TopLevelBoxes::default();
        boxes
            .walk_until(&mut Cursor::new(&file), file.len() as u64, u64::MAX)
            .expect("walk");
        assert!(boxes.untimed_fragments);
    }

    #[test]
    fn a_hollow_reader_zeroes_sample_data_and_reads_the_rest() {
        let file = fragmented();
        let plain = HollowReader::new(Cursor::new(file.clone()), file.len() as u64, false);
        let mut reader = plain.twin(true);
        let mut real = Vec::new();
        plain.twin(false).read_to_end(&mut real).expect("read");
        assert_eq!(real, file);
        let mut hollow = Vec::new();
        reader.read_to_end(&mut hollow).expect("read");
        assert_eq!(hollow.len(), file.len());
        assert_eq!(hollow[..76], file[..76], "headers and indexes stay real");
        assert!(hollow[76..116].iter().all(|&b| b == 0));
        assert_eq!(hollow[116..152], file[116..152]);
        let mut sample = [0u8; 4];
        reader.read_exact_at(80, &mut sample).expect("read");
        assert_eq!(sample, [101; 4], "real bytes on demand");
        assert_eq!(reader.with_boxes(|b| b.fragments.len()), 3);
    }

    #[test]
    fn skipped_fragments_read_as_one_skip_box() {
        let file = fragmented();
        let mut reader = SkipFragments::new(Cursor::new(file.clone()), 40..192).expect("reader");
        let mut shown = Vec::new();
        reader.read_to_end(&mut shown).expect("read");
        assert_eq!(shown.len(), file.len());
        assert_eq!(shown[..40], file[..40]);
        assert_eq!(&shown[40..48], &[0, 0, 0, 1, b's', b'k', b'i', b'p']);
        assert_eq!(
            u64::from_be_bytes(shown[48..56].try_into().expect("8")),
            152
        );
        assert_eq!(shown[56..], file[56..]);
        let mut walk = TopLevelBoxes::default();
        walk.walk_until(&mut Cursor::new(&shown), shown.len() as u64, u64::MAX)
            .expect("walk");
        assert_eq!(
            walk.fragments,
            vec![192],
            "only the chunk's fragments remain"
        );
    }
}
