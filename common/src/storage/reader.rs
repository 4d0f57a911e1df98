//! A blocking `Read + Seek` over an object, for FFmpeg's custom I/O (`StreamIo`).
//!
//! Reads go to storage as ranged GETs aligned to `read_block_bytes`. While the reader moves
//! forward through the object, each fetch doubles in size up to `read_ahead_bytes`, so a
//! sequential scan costs few requests (the window stays under 1/128 of the object, so
//! stopping mid-object wastes little); a jump (to MP4's `moov`, or a chunk's keyframe)
//! starts again with one block, so nothing far from what the demuxer touches is fetched.
//! A few sequential runs are followed at once (a fragment's video and audio lie apart and
//! are read alternately), and no fetch covers bytes already cached.
//! Recent fetches are kept, so going back and forth between the index and the frame data
//! does not fetch the same bytes twice. Bytes fetched but never handed to the demuxer are
//! counted as waste when they leave the cache or the reader is dropped.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;

use super::{ObjectUri, Storage, StorageError};

/// The read-ahead window stays under the object's size divided by this.
const WINDOW_FRACTION: u64 = 128;

/// Bytes of fetched data kept for re-reads.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Sequential runs followed at once: demuxers alternate between streams stored apart (a
/// fragment's video and audio runs), and each run keeps its own growing window.
const MAX_RUNS: usize = 4;

/// A run of back-to-back fetches: where the last one ended and how big it was.
#[derive(Debug, Clone, Copy)]
struct Run {
    end: u64,
    window: u64,
}

/// One fetched range and how far into it the demuxer has read.
struct Fetched {
    start: u64,
    data: Bytes,
    used_end: u64,
}

impl Fetched {
    fn contains(&self, position: u64) -> bool {
        position >= self.start && position < self.start + self.data.len() as u64
    }

    fn unused(&self) -> u64 {
        (self.data.len() as u64).saturating_sub(self.used_end)
    }
}

/// A seekable reader over one object. Its methods block on the runtime it was given, so it
/// must be used from a thread of its own, never from async code.
pub struct ObjectReader {
    storage: Storage,
    uri: ObjectUri,
    runtime: tokio::runtime::Handle,
    size: u64,
    position: u64,
    block_bytes: u64,
    max_window: u64,
    runs: VecDeque<Run>,
    cache: VecDeque<Fetched>,
    cached_bytes: u64,
}

impl ObjectReader {
    pub(super) fn open(
        storage: Storage,
        uri: ObjectUri,
        runtime: tokio::runtime::Handle,
        block_bytes: u64,
        max_window: u64,
    ) -> Result<Self, StorageError> {
        let size = runtime.block_on(storage.size(&uri))?;
        let block_bytes = block_bytes.max(1);
        // A reader that stops mid-object (a chunk's end) wastes at most one window: keep it
        // under 1/128 of the object, so even 8 chunks waste well under 10 %.
        // Whole blocks only, so fetches stay block-aligned and never overlap.
        let max_window =
            (max_window.min(size / WINDOW_FRACTION) / block_bytes).max(1) * block_bytes;
        Ok(Self {
            storage,
            uri,
            runtime,
            size,
            position: 0,
            block_bytes,
            max_window,
            runs: VecDeque::new(),
            cache: VecDeque::new(),
            cached_bytes: 0,
        })
    }

    /// Size of the object in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The same reader fetching the whole object with its first read (one GET), as a
    /// download would.
    pub fn whole_object(mut self) -> Self {
        self.block_bytes = self.size.max(1);
        self.max_window = self.block_bytes;
        self
    }

    /// The same reader with a smaller first fetch (and alignment), for readers that mostly
    /// jump between small index structures (an MP4's `moof` boxes) rather than stream.
    pub fn with_block_bytes(mut self, block_bytes: u64) -> Self {
        let block_bytes = block_bytes.clamp(1, self.block_bytes);
        self.max_window = (self.max_window / block_bytes).max(1) * block_bytes;
        self.block_bytes = block_bytes;
        self
    }

    /// Fetches the window starting at the block holding `position`: twice the last one of
    /// the run it continues, else one block, and never bytes already cached.
    fn fetch(&mut self, position: u64) -> io::Result<usize> {
        let start = position - position % self.block_bytes;
        let window = match self.runs.iter().position(|run| run.end == start) {
            Some(index) => self.runs.remove(index).map_or(self.block_bytes, |run| {
                (run.window * 2).min(self.max_window)
            }),
            None => self.block_bytes,
        };
        let next_cached = self
            .cache
            .iter()
            .map(|f| f.start)
            .filter(|&cached| cached > start)
            .min()
            .unwrap_or(self.size);
        let len = window.min(self.size - start).min(next_cached - start);
        let data = self
            .runtime
            .block_on(self.storage.read_range(&self.uri, start, len))
            .map_err(|e| {
                let kind = match &e {
                    StorageError::NotFound { .. } => io::ErrorKind::NotFound,
                    _ => io::ErrorKind::Other,
                };
                io::Error::new(kind, e.to_string())
            })?;
        self.runs.push_front(Run {
            end: start + data.len() as u64,
            window,
        });
        self.runs.truncate(MAX_RUNS);
        self.cached_bytes += data.len() as u64;
        self.cache.push_front(Fetched {
            start,
            data,
            used_end: 0,
        });
        while self.cached_bytes > CACHE_BYTES && self.cache.len() > 1 {
            if let Some(evicted) = self.cache.pop_back() {
                self.cached_bytes -= evicted.data.len() as u64;
                self.storage.record_waste(evicted.unused());
            }
        }
        Ok(0)
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let position = self.position;
        let index = match self.cache.iter().position(|f| f.contains(position)) {
            Some(index) => index,
            None => self.fetch(position)?,
        };
        let Some(fetched) = self.cache.get_mut(index) else {
            return Ok(0);
        };
        let offset = (position - fetched.start) as usize;
        let n = buf.len().min(fetched.data.len() - offset);
        if n == 0 {
            return Ok(0);
        }
        buf[..n].copy_from_slice(&fetched.data[offset..offset + n]);
        fetched.used_end = fetched.used_end.max((offset + n) as u64);
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectReader {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let position = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.size.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        match position {
            Some(position) => {
                self.position = position;
                Ok(position)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the object",
            )),
        }
    }
}

impl Drop for ObjectReader {
    fn drop(&mut self) {
        let unused: u64 = self.cache.iter().map(Fetched::unused).sum();
        self.storage.record_waste(unused);
    }
}
