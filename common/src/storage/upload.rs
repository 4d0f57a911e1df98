//! Streaming uploads: bytes arrive in pieces and become one object only on `finish`.
//!
//! `file://` writes a hidden temporary file beside the target and renames it into place,
//! both through the target's directory opened beneath its storage root ([`super::local`]);
//! `s3://` buffers one part, then switches to a multipart upload (a single PUT when the
//! whole object fits in one part). An unfinished upload leaves nothing behind once aborted.

use std::sync::Arc;

use aws_sdk_s3::types::CompletedPart;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::local::OpenDir;
use super::s3::S3Ops;
use super::{ObjectUri, Storage, StorageError};

/// An object being written. Call [`Upload::finish`] to publish it or [`Upload::abort`] to
/// drop it.
pub struct Upload {
    storage: Storage,
    uri: ObjectUri,
    target: Target,
    written: u64,
}

enum Target {
    File {
        /// The target's directory, opened (and made) at the first write.
        dir: Option<Arc<OpenDir>>,
        /// The target's name in it.
        name: String,
        /// The temporary file's name in it.
        temporary: String,
        file: Option<tokio::fs::File>,
    },
    S3 {
        bucket: String,
        key: String,
        buffer: BytesMut,
        multipart: Option<(String, Vec<CompletedPart>)>,
    },
}

impl Upload {
    pub(super) fn new(storage: Storage, uri: ObjectUri) -> Result<Self, StorageError> {
        let target = match &uri {
            ObjectUri::File(path) => {
                let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                    StorageError::BadUri {
                        uri: uri.to_string(),
                        reason: "a file upload needs a file name".into(),
                    }
                })?;
                Target::File {
                    dir: None,
                    name: name.to_string(),
                    temporary: format!(".{name}.partial-{:016x}", rand::random::<u64>()),
                    file: None,
                }
            }
            ObjectUri::S3 { bucket, key } => {
                storage.s3(&uri)?;
                Target::S3 {
                    bucket: bucket.clone(),
                    key: key.clone(),
                    buffer: BytesMut::new(),
                    multipart: None,
                }
            }
            ObjectUri::Web(_) => return Err(super::read_only(&uri, "PUT")),
        };
        Ok(Self {
            storage,
            uri,
            target,
            written: 0,
        })
    }

    /// Appends bytes to the object.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.written += data.len() as u64;
        self.open_file().await?;
        match &mut self.target {
            Target::File { file, .. } => {
                if let Some(file) = file {
                    file.write_all(data)
                        .await
                        .map_err(|e| StorageError::io("PUT", &self.uri, e))?;
                }
                Ok(())
            }
            Target::S3 { buffer, .. } => {
                buffer.extend_from_slice(data);
                while self.buffered() >= self.storage.part_bytes {
                    self.send_part().await?;
                }
                Ok(())
            }
        }
    }

    /// Publishes the object and returns its size in bytes.
    pub async fn finish(mut self) -> Result<u64, StorageError> {
        match self.target {
            Target::File { .. } => self.finish_file().await?,
            Target::S3 { .. } => self.finish_s3().await?,
        }
        tracing::debug!(uri = %self.uri, bytes = self.written, "storage PUT done");
        Ok(self.written)
    }

    async fn finish_file(&mut self) -> Result<(), StorageError> {
        self.open_file().await?;
        let Target::File {
            dir,
            name,
            temporary,
            file,
        } = &mut self.target
        else {
            return Ok(());
        };
        let (Some(opened), Some(mut written)) = (dir.clone(), file.take()) else {
            return Ok(());
        };
        let (name, temporary) = (name.clone(), temporary.clone());
        let (cleanup, leftover) = (opened.clone(), temporary.clone());
        let publish = async move {
            written.flush().await?;
            written.sync_all().await?;
            drop(written);
            tokio::task::spawn_blocking(move || opened.rename(&temporary, &name))
                .await
                .map_err(std::io::Error::other)?
        };
        if let Err(error) = publish.await {
            let _ = tokio::task::spawn_blocking(move || cleanup.remove(&leftover)).await;
            return Err(StorageError::io("PUT", &self.uri, error));
        }
        self.storage.record_write(self.written);
        Ok(())
    }

    async fn finish_s3(&mut self) -> Result<(), StorageError> {
        let storage = self.storage.clone();
        let client = storage.s3(&self.uri)?;
        let started = matches!(
            &self.target,
            Target::S3 {
                multipart: Some(_),
                ..
            }
        );
        if started && self.buffered() > 0 {
            self.send_part().await?;
        }
        let Target::S3 {
            bucket,
            key,
            buffer,
            multipart,
        } = &mut self.target
        else {
            return Ok(());
        };
        match multipart.take() {
            None => {
                let body = buffer.split().freeze();
                let size = body.len() as u64;
                client.put(bucket, key, body, &self.uri).await?;
                storage.record_write(size);
            }
            Some((upload_id, parts)) => {
                let result = client
                    .complete_multipart((bucket, key, &upload_id), parts, &self.uri)
                    .await;
                if result.is_err() {
                    client.abort_multipart((bucket, key, &upload_id)).await;
                }
                result?;
                storage.record_write(0);
            }
        }
        Ok(())
    }

    /// Drops everything written so far.
    pub async fn abort(mut self) {
        match &mut self.target {
            Target::File {
                dir,
                temporary,
                file,
                ..
            } => {
                drop(file.take());
                if let Some(dir) = dir.take() {
                    let temporary = temporary.clone();
                    let _ = tokio::task::spawn_blocking(move || dir.remove(&temporary)).await;
                }
            }
            Target::S3 {
                bucket,
                key,
                multipart,
                ..
            } => {
                if let (Some((upload_id, _)), Ok(client)) =
                    (multipart.take(), self.storage.s3(&self.uri))
                {
                    client.abort_multipart((bucket, key, &upload_id)).await;
                }
            }
        }
    }

    /// For a file target not yet begun: opens (making it) the target's directory beneath
    /// its root and creates the temporary file in it.
    async fn open_file(&mut self) -> Result<(), StorageError> {
        let (
            Target::File {
                dir,
                temporary,
                file: file @ None,
                ..
            },
            ObjectUri::File(path),
        ) = (&mut self.target, &self.uri)
        else {
            return Ok(());
        };
        let (local, parent, name) = (
            self.storage.local.clone(),
            path.parent()
                .unwrap_or(std::path::Path::new("/"))
                .to_path_buf(),
            temporary.clone(),
        );
        let (opened, created) = super::blocking(&self.uri, "PUT", move || {
            let opened = local.create_dir_all(&parent)?;
            let created = opened.create_new(&name)?;
            Ok((Arc::new(opened), tokio::fs::File::from_std(created)))
        })
        .await?;
        *dir = Some(opened);
        *file = Some(created);
        Ok(())
    }

    fn buffered(&self) -> u64 {
        match &self.target {
            Target::S3 { buffer, .. } => buffer.len() as u64,
            Target::File { .. } => 0,
        }
    }

    /// Sends one full part (or the last, shorter one) of a multipart upload.
    async fn send_part(&mut self) -> Result<(), StorageError> {
        let storage = self.storage.clone();
        let client = storage.s3(&self.uri)?;
        let Target::S3 {
            bucket,
            key,
            buffer,
            multipart,
        } = &mut self.target
        else {
            return Ok(());
        };
        if multipart.is_none() {
            let upload_id = client.start_multipart(bucket, key, &self.uri).await?;
            storage.record_write(0);
            *multipart = Some((upload_id, Vec::new()));
        }
        let take = buffer
            .len()
            .min(usize::try_from(storage.part_bytes).unwrap_or(usize::MAX));
        let body: Bytes = buffer.split_to(take).freeze();
        let size = body.len() as u64;
        if let Some((upload_id, parts)) = multipart {
            let number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
            let part = client
                .put_part((bucket, key, upload_id), number, body, &self.uri)
                .await?;
            parts.push(part);
            storage.record_write(size);
        }
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Target::File {
            dir: Some(dir),
            temporary,
            file: Some(_),
            ..
        } = &self.target
        {
            let _ = dir.remove(temporary);
        }
    }
}
