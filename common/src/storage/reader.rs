//! A blocking `Read + Seek` over an object, for FFmpeg's custom I/O (`StreamIo`).
//!
//! Reads go to storage as ranged GETs aligned to `read_block_bytes`. While the reader moves
//! forward through the object, each fetch doubles in size up to `read_ahead_bytes` (and
//! under 1/256 of the object), and the next window is already being fetched on the runtime
//! while the demuxer works through the current one, so storage latency overlaps decoding.
//! A jump (to MP4's `moov`, or a chunk's keyframe) starts again with one block and no
//! read-ahead, so nothing far from what the demuxer touches is fetched.
//! A few sequential runs are followed at once (a fragment's video and audio lie apart and
//! are read alternately), and no fetch covers bytes already cached or being fetched.
//! Recent fetches are kept, so going back and forth between the index and the frame data
//! does not fetch the same bytes twice.
//!
//! A user that knows where the bytes it needs end (a demuxer's sample index told it) sets a
//! [`ReadHorizon`]: no fetch then reaches past it (rounded up to a block), so a reader
//! that jumps from one short span to the next wastes nothing at each span's end.
//!
//! When the reader is dropped (the chunk's frames are decoded), reads still in flight are
//! cancelled at once, and the drop waits until they are gone, so their requests are counted
//! before the chunk reports them. Bytes fetched but never handed to the demuxer are counted
//! as waste: when they leave the cache, when the reader is dropped, or, for a cancelled
//! read, as many as had arrived. A stop wastes at most the current window and one read-ahead: under 1/128
//! of the object.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ObjectUri, Storage, StorageError};

/// The read-ahead window stays under the object's size divided by this.
const WINDOW_FRACTION: u64 = 256;

/// Bytes of fetched data kept for re-reads.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Sequential runs followed at once: demuxers alternate between streams stored apart (a
/// fragment's video and audio runs), and each run keeps its own growing window.
const MAX_RUNS: usize = 4;

/// Read-aheads in flight at once; an older one is cancelled when a newer one starts.
const MAX_READ_AHEADS: usize = 2;

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

/// A window being fetched ahead of the demuxer, on the runtime.
struct ReadAhead {
    start: u64,
    len: u64,
    window: u64,
    task: JoinHandle<Result<Bytes, StorageError>>,
}

impl ReadAhead {
    fn covers(&self, position: u64) -> bool {
        position >= self.start && position < self.start + self.len
    }
}

/// The storage error behind a reader's failed read, kept for whoever handed the reader to
/// FFmpeg: FFmpeg passes on only "Input/output error", which would blame the file for an
/// unreachable S3 server.
#[derive(Debug, Clone, Default)]
pub struct ReadFailure(Arc<Mutex<Option<(String, bool)>>>);

impl ReadFailure {
    /// What failed the last failed read, if one failed.
    pub fn last(&self) -> Option<String> {
        self.lock().as_ref().map(|(message, _)| message.clone())
    }

    /// True when the last failed read failed in a way a later try may not (the server
    /// unreachable, a 5xx): see [`StorageError::is_transient`].
    pub fn transient(&self) -> bool {
        self.lock()
            .as_ref()
            .is_some_and(|(_, transient)| *transient)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, bool)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, error: StorageError) -> io::Error {
        let kind = match &error {
            StorageError::NotFound { .. } => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        };
        let message = error.to_string();
        *self.lock() = Some((message.clone(), error.is_transient()));
        io::Error::new(kind, message)
    }
}

/// How far ahead a reader may fetch: the end of the bytes its user knows it needs, shared so
/// it can be set while the reader is inside FFmpeg. Unset, the reader fetches ahead freely.
#[derive(Debug, Clone)]
pub struct ReadHorizon(Arc<AtomicU64>);

impl Default for ReadHorizon {
    fn default() -> Self {
        ReadHorizon(Arc::new(AtomicU64::new(u64::MAX)))
    }
}

impl ReadHorizon {
    /// Fetch nothing at or past byte `end` ahead of need (`None`: no limit). Reads past it
    /// still succeed, one block at a time.
    pub fn set(&self, end: Option<u64>) {
        self.0.store(end.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A reader that can be told where the bytes its user needs end, so it fetches nothing past
/// them ahead of need: an [`ObjectReader`] sets its [`ReadHorizon`]; files and in-memory
/// buffers, which fetch nothing ahead, have nothing to limit.
pub trait FetchLimit {
    /// Fetch nothing at or past byte `end` ahead of need (`None`: no limit).
    fn limit_fetches(&self, end: Option<u64>);
}

impl FetchLimit for ObjectReader {
    fn limit_fetches(&self, end: Option<u64>) {
        self.horizon.set(end);
    }
}

impl FetchLimit for std::fs::File {
    fn limit_fetches(&self, _end: Option<u64>) {}
}

impl<T> FetchLimit for std::io::Cursor<T> {
    fn limit_fetches(&self, _end: Option<u64>) {}
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
    read_aheads: VecDeque<ReadAhead>,
    failure: ReadFailure,
    horizon: ReadHorizon,
    /// Once cancelled, every fetch fails: a reader whose job was cancelled stops reading.
    stop: Option<CancellationToken>,
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
        // A reader that stops mid-object (a chunk's end) wastes at most one window and one
        // read-ahead: keep each under 1/256 of the object, so even 8 chunks waste well
        // under 10 %.
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
            read_aheads: VecDeque::new(),
            failure: ReadFailure::default(),
            horizon: ReadHorizon::default(),
            stop: None,
        })
    }

    /// Where the storage error behind a failed read is kept (shared, so it can be read
    /// after the reader went into FFmpeg).
    pub fn failure(&self) -> ReadFailure {
        self.failure.clone()
    }

    /// The handle that limits how far this reader fetches ahead.
    pub fn horizon(&self) -> ReadHorizon {
        self.horizon.clone()
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

    /// The same reader, failing every fetch once `stop` is cancelled (its job was), so the
    /// FFmpeg work reading through it ends at its next read instead of running on.
    pub fn stopped_by(mut self, stop: CancellationToken) -> Self {
        self.stop = Some(stop);
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

    /// Makes the bytes at `position` cached and returns their index in the cache: from a
    /// read-ahead covering them, else by fetching the window starting at their block (twice
    /// the last one of the run it continues, else one block, and never bytes already cached
    /// or being fetched). A run that continues starts its next window's read-ahead.
    fn fetch(&mut self, position: u64) -> io::Result<usize> {
        if self
            .stop
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            return Err(io::Error::other(
                "the read was stopped: its job was cancelled",
            ));
        }
        if let Some(index) = self.read_aheads.iter().position(|r| r.covers(position)) {
            if let Some(ahead) = self.read_aheads.remove(index) {
                let data = self
                    .runtime
                    .block_on(ahead.task)
                    .map_err(|e| io::Error::other(format!("read-ahead task ended: {e}")))?
                    .map_err(|e| self.failure.record(e))?;
                let end = ahead.start + data.len() as u64;
                self.keep(ahead.start, data, ahead.window);
                self.read_ahead(end, ahead.window);
                return Ok(0);
            }
        }
        let start = position - position % self.block_bytes;
        let continued = self
            .runs
            .iter()
            .position(|run| run.end == start)
            .and_then(|index| self.runs.remove(index));
        let window = continued.map_or(self.block_bytes, |run| self.grown(run.window));
        let len = self.span(start, window);
        let data = self
            .runtime
            .block_on(self.storage.read_range(&self.uri, start, len))
            .map_err(|e| self.failure.record(e))?;
        let end = start + data.len() as u64;
        self.keep(start, data, window);
        if continued.is_some() {
            self.read_ahead(end, window);
        }
        Ok(0)
    }

    /// The window after one of `window` bytes in a sequential run: twice as big, up to the
    /// largest.
    fn grown(&self, window: u64) -> u64 {
        (window * 2).min(self.max_window)
    }

    /// How much a fetch of `window` bytes at `start` takes: no further than the object's
    /// end, the next byte already cached or being fetched, or the horizon (one block when
    /// the demuxer is already past it).
    fn span(&self, start: u64, window: u64) -> u64 {
        let horizon = self.horizon_block();
        let allowed = if start < horizon {
            horizon - start
        } else {
            self.block_bytes
        };
        window
            .min(allowed)
            .min(self.size - start)
            .min(self.next_held(start) - start)
    }

    /// The horizon rounded up to a whole block, so fetches stay block-aligned.
    fn horizon_block(&self) -> u64 {
        self.horizon
            .get()
            .checked_next_multiple_of(self.block_bytes)
            .unwrap_or(u64::MAX)
    }

    /// The first byte after `start` that is cached or being fetched (the object's end when
    /// none is).
    fn next_held(&self, start: u64) -> u64 {
        let cached = self.cache.iter().map(|f| f.start);
        let fetching = self.read_aheads.iter().map(|r| r.start);
        cached
            .chain(fetching)
            .filter(|&held| held > start)
            .min()
            .unwrap_or(self.size)
    }

    /// Caches fetched bytes at the front (index 0) and records the run they extend.
    fn keep(&mut self, start: u64, data: Bytes, window: u64) {
        self.runs.retain(|run| run.end != start);
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
    }

    /// Starts fetching the window after one of `window` bytes that ended at `start`.
    fn read_ahead(&mut self, start: u64, window: u64) {
        let held = self.cache.iter().any(|f| f.contains(start))
            || self.read_aheads.iter().any(|r| r.covers(start));
        if start >= self.size || start >= self.horizon_block() || held {
            return;
        }
        let window = self.grown(window);
        let len = self.span(start, window);
        let (storage, uri) = (self.storage.clone(), self.uri.clone());
        let task = self
            .runtime
            .spawn(async move { storage.read_range(&uri, start, len).await });
        self.read_aheads.push_front(ReadAhead {
            start,
            len,
            window,
            task,
        });
        while self.read_aheads.len() > MAX_READ_AHEADS {
            if let Some(oldest) = self.read_aheads.pop_back() {
                self.cancel(oldest);
            }
        }
    }

    /// Cancels a read-ahead at once, and waits until the runtime has dropped it, so its
    /// requests and bytes are counted before anyone reads the counters (a chunk's report is
    /// made as soon as its reader is gone). One that had finished holds bytes nobody will
    /// use, counted as waste here; one still running counts what it had received as waste
    /// when it is dropped.
    fn cancel(&self, ahead: ReadAhead) {
        ahead.task.abort();
        if let Ok(Ok(data)) = self.runtime.block_on(ahead.task) {
            self.storage.record_waste(data.len() as u64);
        }
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
        for ahead in std::mem::take(&mut self.read_aheads) {
            self.cancel(ahead);
        }
        let unused: u64 = self.cache.iter().map(Fetched::unused).sum();
        self.storage.record_waste(unused);
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::StorageConfig;

    const OBJECT_BYTES: usize = 16 * 1024 * 1024;

    /// A 16 MiB object of varied bytes and a runtime for the reader to block on.
    fn object() -> (tempfile::NamedTempFile, Vec<u8>, tokio::runtime::Runtime) {
        let bytes: Vec<u8> = (0..OBJECT_BYTES)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut file, &bytes).expect("write object");
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        (file, bytes, runtime)
    }

    fn reader(file: &tempfile::NamedTempFile, runtime: &tokio::runtime::Runtime) -> ObjectReader {
        Storage::new(&StorageConfig::default())
            .counted()
            .open_reader(
                &ObjectUri::File(file.path().into()),
                runtime.handle().clone(),
            )
            .expect("open reader")
    }

    /// Waits for cancelled reads to be dropped by the runtime, then checks that every byte
    /// received was either handed to the caller or counted as waste.
    fn assert_every_byte_accounted(storage: &Storage, handed: u64) {
        let counters = storage.counters();
        let deadline = Instant::now() + Duration::from_secs(5);
        while counters.bytes_read() != handed + counters.bytes_wasted() {
            assert!(
                Instant::now() < deadline,
                "read {} bytes, handed {handed}, counted {} as waste",
                counters.bytes_read(),
                counters.bytes_wasted()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_sequential_scan_reads_the_object_once_in_growing_windows() {
        let (file, bytes, runtime) = object();
        let mut reader = reader(&file, &runtime);
        let storage = reader.storage.clone();
        let mut read = Vec::new();
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let n = reader.read(&mut buffer).expect("read");
            if n == 0 {
                break;
            }
            read.extend_from_slice(&buffer[..n]);
        }
        assert!(
            read == bytes,
            "the reader returned other bytes than the object's"
        );
        assert!(reader.read_aheads.is_empty(), "a read-ahead past the end");
        drop(reader);
        let counters = storage.counters();
        assert_eq!(counters.bytes_read(), OBJECT_BYTES as u64);
        assert_eq!(counters.bytes_wasted(), 0);
        // 16 KiB blocks doubling to 64 KiB windows (1/256 of the object): about 256
        // requests, where 16 KiB fetches would take 1024.
        assert!(
            counters.requests() < 300,
            "{} requests",
            counters.requests()
        );
    }

    #[test]
    fn a_reader_whose_job_was_cancelled_reads_no_further() {
        let (file, _, runtime) = object();
        let stop = CancellationToken::new();
        let mut reader = reader(&file, &runtime).stopped_by(stop.clone());
        let mut buffer = vec![0u8; 4096];
        assert!(reader.read(&mut buffer).expect("read") > 0);
        stop.cancel();
        reader
            .seek(SeekFrom::Start(OBJECT_BYTES as u64 / 2))
            .expect("seek");
        let error = reader.read(&mut buffer).expect_err("stopped");
        assert!(error.to_string().contains("cancelled"), "{error}");
    }

    #[test]
    fn stopping_mid_object_cancels_read_ahead_and_counts_what_it_fetched_as_waste() {
        let (file, bytes, runtime) = object();
        let mut reader = reader(&file, &runtime);
        let storage = reader.storage.clone();
        let mut buffer = vec![0u8; 4096];
        let wanted = OBJECT_BYTES / 4;
        let mut read = Vec::new();
        while read.len() < wanted {
            let n = reader.read(&mut buffer).expect("read");
            read.extend_from_slice(&buffer[..n]);
        }
        assert!(read[..] == bytes[..read.len()]);
        assert!(
            !reader.read_aheads.is_empty(),
            "no read-ahead while streaming"
        );
        drop(reader);
        assert_every_byte_accounted(&storage, read.len() as u64);
        let waste = storage.counters().bytes_wasted();
        assert!(
            waste < OBJECT_BYTES as u64 / 128,
            "a stop wasted {waste} bytes, more than 1/128 of the object"
        );
    }

    #[test]
    fn a_horizon_stops_fetches_at_the_bytes_needed_yet_reads_past_it_still_work() {
        let (file, bytes, runtime) = object();
        let mut reader = reader(&file, &runtime);
        let storage = reader.storage.clone();
        let block = reader.block_bytes;
        let (start, end) = (
            OBJECT_BYTES as u64 / 2,
            OBJECT_BYTES as u64 / 2 + 5 * block + 100,
        );
        reader.horizon().set(Some(end));
        reader.seek(SeekFrom::Start(start)).expect("seek");
        let mut span = vec![0u8; (end - start) as usize];
        reader.read_exact(&mut span).expect("read the span");
        assert!(span[..] == bytes[start as usize..end as usize]);
        assert!(
            reader.read_aheads.is_empty(),
            "a read-ahead went past the horizon"
        );
        let mut after = vec![0u8; 10];
        reader
            .read_exact(&mut after)
            .expect("read past the horizon");
        assert!(after[..] == bytes[end as usize..end as usize + 10]);
        drop(reader);
        assert_every_byte_accounted(&storage, end - start + 10);
        let waste = storage.counters().bytes_wasted();
        assert!(waste < 2 * block, "{waste} bytes wasted around a horizon");
    }

    #[test]
    fn jumps_between_index_and_frames_return_the_right_bytes() {
        let (file, bytes, runtime) = object();
        let mut reader = reader(&file, &runtime);
        let storage = reader.storage.clone();
        let mut handed = 0;
        for (offset, len) in [
            (OBJECT_BYTES - 70_000, 70_000),
            (1000, 200_000),
            (OBJECT_BYTES - 5000, 100),
            (5_000_000, 300_000),
            (150_000, 10),
        ] {
            reader.seek(SeekFrom::Start(offset as u64)).expect("seek");
            let mut got = vec![0u8; len];
            reader.read_exact(&mut got).expect("read");
            assert!(got[..] == bytes[offset..offset + len], "bytes at {offset}");
            handed += len as u64;
        }
        drop(reader);
        let counters = storage.counters();
        assert!(counters.bytes_read() >= handed);
        assert!(counters.bytes_read() < OBJECT_BYTES as u64 / 8);
    }
}
