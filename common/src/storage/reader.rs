//! A blocking `Read + Seek` over an object, for FFmpeg's custom I/O (`StreamIo`).
//!
//! Reads go to storage in aligned blocks through ranged GETs, and the last few blocks are
//! kept, so a demuxer that jumps between the index and the frame data (MP4's `moov` and
//! `mdat`) does not fetch the same bytes twice and never downloads what it does not touch.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};

use bytes::Bytes;

use super::{ObjectUri, Storage, StorageError};

/// Blocks kept in memory; enough for a demuxer alternating between two or three places.
const CACHED_BLOCKS: usize = 4;

/// A seekable reader over one object. Its methods block on the runtime it was given, so it
/// must be used from a thread of its own, never from async code.
pub struct ObjectReader {
    storage: Storage,
    uri: ObjectUri,
    runtime: tokio::runtime::Handle,
    size: u64,
    position: u64,
    block_bytes: u64,
    cache: VecDeque<(u64, Bytes)>,
}

impl ObjectReader {
    pub(super) fn open(
        storage: Storage,
        uri: ObjectUri,
        runtime: tokio::runtime::Handle,
        block_bytes: u64,
    ) -> Result<Self, StorageError> {
        let size = runtime.block_on(storage.size(&uri))?;
        Ok(Self {
            storage,
            uri,
            runtime,
            size,
            position: 0,
            block_bytes,
            cache: VecDeque::with_capacity(CACHED_BLOCKS),
        })
    }

    /// Size of the object in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object read.
    pub fn uri(&self) -> &ObjectUri {
        &self.uri
    }

    fn block(&mut self, start: u64) -> io::Result<Bytes> {
        if let Some(index) = self.cache.iter().position(|(at, _)| *at == start) {
            let entry = self.cache.remove(index).expect("index found above");
            let data = entry.1.clone();
            self.cache.push_front(entry);
            return Ok(data);
        }
        let data = self
            .runtime
            .block_on(self.storage.read_range(&self.uri, start, self.block_bytes))
            .map_err(|e| {
                let kind = match &e {
                    StorageError::NotFound { .. } => io::ErrorKind::NotFound,
                    _ => io::ErrorKind::Other,
                };
                io::Error::new(kind, e.to_string())
            })?;
        if self.cache.len() == CACHED_BLOCKS {
            self.cache.pop_back();
        }
        self.cache.push_front((start, data.clone()));
        Ok(data)
    }
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.position >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let start = self.position - self.position % self.block_bytes;
        let block = self.block(start)?;
        let offset = usize::try_from(self.position - start).unwrap_or(usize::MAX);
        if offset >= block.len() {
            return Ok(0);
        }
        let n = buf.len().min(block.len() - offset);
        buf[..n].copy_from_slice(&block[offset..offset + n]);
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
