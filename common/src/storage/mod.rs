//! Object storage: one client for `file://` (the embedded default), `s3://` (Cloudflare
//! R2, AWS, Garage, MinIO, any S3) and read-only `https://` inputs ([`web`]: CDNs, public
//! buckets, presigned URLs), with byte accounting on every request.
//!
//! - [`Storage::read_range`] serves ranged reads; [`ObjectReader`] wraps it as a blocking
//!   `Read + Seek` for FFmpeg's custom I/O, so a chunk reads only the bytes it needs.
//! - [`Upload`] streams bytes out: a temporary file renamed into place, or an S3 multipart
//!   upload (a single PUT when the object is small).
//! - Every request adds to the [`IoCounters`] the client was made with.
//! - [`AccessPolicy`] says which buckets and local paths jobs may name, and
//!   [`LocalFiles`] keeps every `file://` open, create and delete beneath those roots.

mod access;
mod local;
pub mod patience;
mod reader;
mod s3;
mod upload;
mod uri;
pub mod web;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::config::StorageConfig;
pub use access::AccessPolicy;
pub use local::LocalFiles;
pub use reader::{FetchLimit, ObjectReader, ReadFailure, ReadHorizon};
use s3::S3Ops;
pub use upload::Upload;
pub use uri::ObjectUri;
use web::WebObjects;

/// A storage request that failed, or a URI that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URI does not parse or escapes its root.
    #[error("invalid object URI `{uri}`: {reason}")]
    BadUri {
        /// The URI as given.
        uri: String,
        /// Why it was refused and what would be accepted.
        reason: String,
    },
    /// The object does not exist.
    #[error("object {uri} does not exist; check the URI and that it was uploaded")]
    NotFound {
        /// The missing object.
        uri: String,
    },
    /// `s3://` was used but no credentials are configured.
    #[error(
        "{uri} needs S3 credentials: set storage.s3_access_key_id and \
         storage.s3_secret_access_key (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
    )]
    NoS3Credentials {
        /// The URI that needed them.
        uri: String,
    },
    /// The file system refused the request in a way no retry changes: outside the local
    /// roots, a parent that is not a directory, a name too long, no permission, a
    /// read-only file system, not a regular file.
    #[error("{operation} {uri} cannot succeed: {message}")]
    Refused {
        /// What was being done, e.g. `PUT`.
        operation: &'static str,
        /// The object concerned.
        uri: String,
        /// The system's own message.
        message: String,
    },
    /// The storage service or the file system refused or failed the request.
    #[error("{operation} {uri} failed: {message}")]
    Request {
        /// What was being done, e.g. `GET`.
        operation: &'static str,
        /// The object concerned.
        uri: String,
        /// The service's or the system's own message.
        message: String,
        /// Whether retrying the same request may succeed (5xx, timeouts, resets).
        transient: bool,
    },
}

impl StorageError {
    /// True when the same request may succeed if retried.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StorageError::Request {
                transient: true,
                ..
            }
        )
    }

    fn io(operation: &'static str, uri: &ObjectUri, error: std::io::Error) -> Self {
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::NotFound => {
                return StorageError::NotFound {
                    uri: uri.to_string(),
                }
            }
            ErrorKind::PermissionDenied
            | ErrorKind::NotADirectory
            | ErrorKind::IsADirectory
            | ErrorKind::InvalidFilename
            | ErrorKind::ReadOnlyFilesystem
            | ErrorKind::InvalidInput
            | ErrorKind::Unsupported => {
                return StorageError::Refused {
                    operation,
                    uri: uri.to_string(),
                    message: error.to_string(),
                }
            }
            _ => {}
        }
        StorageError::Request {
            operation,
            uri: uri.to_string(),
            transient: matches!(
                error.kind(),
                std::io::ErrorKind::Interrupted | std::io::ErrorKind::TimedOut
            ),
            message: error.to_string(),
        }
    }
}

/// Bytes and requests moved through one [`Storage`] handle (a chunk, a probe, a stitch).
#[derive(Debug, Default)]
pub struct IoCounters {
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    requests: AtomicU64,
    retried_requests: AtomicU64,
    bytes_wasted: AtomicU64,
}

impl IoCounters {
    /// Bytes received from storage.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Bytes sent to storage.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }

    /// Requests made (GET, HEAD, PUT, part, DELETE, LIST).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Of the requests, those that resumed a ranged GET whose transfer broke off.
    pub fn retried_requests(&self) -> u64 {
        self.retried_requests.load(Ordering::Relaxed)
    }

    /// Bytes read from storage but never handed to a reader's caller (read-ahead past
    /// where the demuxer stopped, block alignment).
    pub fn bytes_wasted(&self) -> u64 {
        self.bytes_wasted.load(Ordering::Relaxed)
    }

    fn record(&self, read: u64, written: u64) {
        self.record_requests(read, written, 1);
    }

    fn record_requests(&self, read: u64, written: u64, requests: u64) {
        self.bytes_read.fetch_add(read, Ordering::Relaxed);
        self.bytes_written.fetch_add(written, Ordering::Relaxed);
        self.requests.fetch_add(requests, Ordering::Relaxed);
    }
}

/// The error for writing, listing or deleting a web object.
fn read_only(uri: &ObjectUri, operation: &'static str) -> StorageError {
    StorageError::Request {
        operation,
        uri: uri.to_string(),
        message: "web URLs are read-only inputs; write outputs to s3:// or file://".into(),
        transient: false,
    }
}

/// One ranged GET (with its resumed requests) while it runs. It counts what was received
/// even when the read fails or is cancelled (a read-ahead dropped at a chunk's end), and
/// then counts those bytes as waste too: nobody got them. It logs one debug line when done.
pub(super) struct Transfer {
    counters: Arc<IoCounters>,
    uri: String,
    offset: u64,
    asked: u64,
    started: std::time::Instant,
    received: AtomicU64,
    requests: AtomicU64,
    finished: bool,
}

impl Transfer {
    fn new(counters: Arc<IoCounters>, uri: &ObjectUri, offset: u64, asked: u64) -> Self {
        Self {
            counters,
            uri: uri.to_string(),
            offset,
            asked,
            started: std::time::Instant::now(),
            received: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            finished: false,
        }
    }

    /// One more request sent for this read.
    pub(super) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// `bytes` more arrived.
    pub(super) fn receive(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        let received = self.received.load(Ordering::Relaxed);
        let requests = self.requests.load(Ordering::Relaxed);
        self.counters.record_requests(received, 0, requests);
        self.counters
            .retried_requests
            .fetch_add(requests.saturating_sub(1), Ordering::Relaxed);
        if !self.finished {
            self.counters
                .bytes_wasted
                .fetch_add(received, Ordering::Relaxed);
        }
        tracing::debug!(
            uri = %self.uri,
            offset = self.offset,
            asked = self.asked,
            got = received,
            requests,
            seconds = self.started.elapsed().as_secs_f64(),
            outcome = if self.finished { "done" } else { "failed or cancelled" },
            "storage GET"
        );
    }
}

/// A storage client bound to one set of counters. Cheap to clone.
#[derive(Clone)]
pub struct Storage {
    s3: Option<aws_sdk_s3::Client>,
    local: LocalFiles,
    web: WebObjects,
    part_bytes: u64,
    block_bytes: u64,
    read_ahead_bytes: u64,
    counters: Arc<IoCounters>,
}

impl Storage {
    /// Builds a client from configuration; S3 is available when credentials are set in it
    /// or in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub fn new(config: &StorageConfig) -> Self {
        Self {
            s3: s3::client(config),
            local: LocalFiles::new(&config.local_roots),
            web: WebObjects::new(config),
            part_bytes: config.multipart_part_bytes,
            block_bytes: config.read_block_bytes,
            read_ahead_bytes: config.read_ahead_bytes,
            counters: Arc::default(),
        }
    }

    /// The same client, counting into fresh counters (one per chunk, probe or stitch).
    pub fn counted(&self) -> Self {
        Self {
            counters: Arc::default(),
            web: self.web.fresh(),
            ..self.clone()
        }
    }

    /// The version (size, validator) of a web object as this handle first read it.
    pub fn web_version(&self, uri: &ObjectUri) -> Option<(u64, String)> {
        match uri {
            ObjectUri::Web(url) => self.web.version(url),
            _ => None,
        }
    }

    /// Makes this handle's reads of a web object insist on `version` (the one its job's
    /// probe read); other URIs are left alone.
    pub fn pin_web_version(&self, uri: &ObjectUri, version: (u64, &str)) {
        if let ObjectUri::Web(url) = uri {
            self.web.pin(url, version.0, version.1);
        }
    }

    /// The local files this client reaches: beneath `storage.local_roots` when set.
    pub fn local_files(&self) -> LocalFiles {
        self.local.clone()
    }

    /// What this handle has moved so far.
    pub fn counters(&self) -> &IoCounters {
        &self.counters
    }

    /// Size of an object in bytes.
    pub async fn size(&self, uri: &ObjectUri) -> Result<u64, StorageError> {
        let size = match uri {
            ObjectUri::File(path) => {
                let (local, path) = (self.local.clone(), path.clone());
                blocking(uri, "STAT", move || {
                    Ok(local.open(&path)?.metadata()?.len())
                })
                .await?
            }
            ObjectUri::S3 { bucket, key } => self.s3(uri)?.size(bucket, key, uri).await?,
            ObjectUri::Web(url) => {
                let mut transfer = Transfer::new(self.counters.clone(), uri, 0, 1);
                let size = self.web.size(url, uri, &transfer).await?;
                transfer.finish();
                return Ok(size);
            }
        };
        self.counters.record(0, 0);
        Ok(size)
    }

    /// Reads `len` bytes at `offset` (fewer at the end of the object). Dropping the future
    /// cancels the read: the bytes it had received by then are counted as read and wasted.
    pub async fn read_range(
        &self,
        uri: &ObjectUri,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, StorageError> {
        let mut transfer = Transfer::new(self.counters.clone(), uri, offset, len);
        let bytes = match uri {
            ObjectUri::File(path) => {
                let (local, path) = (self.local.clone(), path.clone());
                transfer.request();
                let bytes = blocking(uri, "GET", move || {
                    read_file_range(&local.open(&path)?, offset, len)
                })
                .await?;
                transfer.receive(bytes.len());
                bytes
            }
            ObjectUri::S3 { bucket, key } => {
                self.s3(uri)?
                    .read_range(bucket, key, offset, len, uri, &transfer)
                    .await?
            }
            ObjectUri::Web(url) => {
                self.web
                    .read_range(url, uri, offset, len, &transfer)
                    .await?
            }
        };
        transfer.finish();
        Ok(bytes)
    }

    /// Checks, before any work is spent on it, that a file can be written at `uri`: its
    /// folders are made (beneath the roots) and a hidden file is created there and removed.
    /// An `s3://` object is not checked here (its bucket's policy decides at the upload).
    pub async fn check_writable(&self, uri: &ObjectUri) -> Result<(), StorageError> {
        let path = match uri {
            ObjectUri::File(path) => path.clone(),
            ObjectUri::S3 { .. } => return Ok(()),
            ObjectUri::Web(_) => return Err(read_only(uri, "PUT")),
        };
        let local = self.local.clone();
        blocking(uri, "PUT", move || {
            let parent = path.parent().unwrap_or(Path::new("/"));
            let dir = local.create_dir_all(parent)?;
            let name = format!(".framefleet-write-check-{:016x}", rand::random::<u64>());
            dir.create_new(&name)?;
            dir.remove(&name)
        })
        .await
    }

    /// Starts a streaming upload to `uri`; nothing is visible there until
    /// [`Upload::finish`].
    pub fn upload(&self, uri: &ObjectUri) -> Result<Upload, StorageError> {
        Upload::new(self.clone(), uri.clone())
    }

    /// Uploads a local file to `uri` and returns its size.
    pub async fn upload_file(&self, path: &Path, uri: &ObjectUri) -> Result<u64, StorageError> {
        use tokio::io::AsyncReadExt;
        let local = ObjectUri::File(path.to_path_buf());
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| StorageError::io("READ", &local, e))?;
        let mut upload = self.upload(uri)?;
        let mut buffer = vec![0u8; 1024 * 1024];
        loop {
            let n = match file.read(&mut buffer).await {
                Ok(n) => n,
                Err(e) => {
                    upload.abort().await;
                    return Err(StorageError::io("READ", &local, e));
                }
            };
            if n == 0 {
                break;
            }
            if let Err(e) = upload.write(&buffer[..n]).await {
                upload.abort().await;
                return Err(e);
            }
        }
        upload.finish().await
    }

    /// Every object under a prefix (a directory for `file://`), as URIs.
    pub async fn list(&self, prefix: &ObjectUri) -> Result<Vec<ObjectUri>, StorageError> {
        self.counters.record(0, 0);
        match prefix {
            ObjectUri::File(dir) => {
                let (local, dir) = (self.local.clone(), dir.clone());
                let files = blocking(prefix, "LIST", move || local.list(&dir)).await?;
                Ok(files.into_iter().map(ObjectUri::File).collect())
            }
            ObjectUri::S3 { bucket, key } => {
                let keys = self.s3(prefix)?.list(bucket, key, prefix).await?;
                Ok(keys
                    .into_iter()
                    .map(|key| ObjectUri::S3 {
                        bucket: bucket.clone(),
                        key,
                    })
                    .collect())
            }
            ObjectUri::Web(_) => Err(read_only(prefix, "LIST")),
        }
    }

    /// Deletes one object; a missing object is not an error.
    pub async fn delete(&self, uri: &ObjectUri) -> Result<(), StorageError> {
        self.counters.record(0, 0);
        match uri {
            ObjectUri::File(path) => {
                let (local, path) = (self.local.clone(), path.clone());
                match blocking(uri, "DELETE", move || local.remove_file(&path)).await {
                    Err(StorageError::NotFound { .. }) => Ok(()),
                    other => other,
                }
            }
            ObjectUri::S3 { bucket, key } => self.s3(uri)?.delete(bucket, key, uri).await,
            ObjectUri::Web(_) => Err(read_only(uri, "DELETE")),
        }
    }

    /// Deletes every object under a prefix (for `file://`, the directory and all in it) and
    /// returns how many objects went.
    pub async fn delete_prefix(&self, prefix: &ObjectUri) -> Result<usize, StorageError> {
        let objects = match self.list(prefix).await {
            Err(StorageError::NotFound { .. }) => return Ok(0),
            other => other?,
        };
        for object in &objects {
            self.delete(object).await?;
        }
        if let ObjectUri::File(dir) = prefix {
            let (local, dir) = (self.local.clone(), dir.clone());
            match blocking(prefix, "DELETE", move || local.remove_dir_all(&dir)).await {
                Ok(()) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(objects.len())
    }

    /// A blocking `Read + Seek` over an object for FFmpeg. Call it from a dedicated
    /// thread (not from async code): its reads block on `runtime`.
    pub fn open_reader(
        &self,
        uri: &ObjectUri,
        runtime: tokio::runtime::Handle,
    ) -> Result<ObjectReader, StorageError> {
        ObjectReader::open(
            self.clone(),
            uri.clone(),
            runtime,
            self.block_bytes,
            self.read_ahead_bytes,
        )
    }

    fn s3(&self, uri: &ObjectUri) -> Result<&aws_sdk_s3::Client, StorageError> {
        self.s3
            .as_ref()
            .ok_or_else(|| StorageError::NoS3Credentials {
                uri: uri.to_string(),
            })
    }

    fn record_write(&self, bytes: u64) {
        self.counters.record(0, bytes);
    }

    fn record_waste(&self, bytes: u64) {
        self.counters
            .bytes_wasted
            .fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Runs file-system work for `uri` on a blocking thread; its error is `operation`'s.
async fn blocking<T: Send + 'static>(
    uri: &ObjectUri,
    operation: &'static str,
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StorageError::Request {
            operation,
            uri: uri.to_string(),
            message: e.to_string(),
            transient: false,
        })?
        .map_err(|e| StorageError::io(operation, uri, e))
}

/// Up to `len` bytes of `file` at `offset` (fewer at its end).
fn read_file_range(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let size = file.metadata()?.len();
    let len = len.min(size.saturating_sub(offset));
    let mut buffer = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut buffer, offset)?;
    Ok(Bytes::from(buffer))
}
