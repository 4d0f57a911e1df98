//! The S3 side of [`Storage`](super::Storage): client construction for R2/AWS/Garage and
//! the few requests framefleet makes, with errors mapped to [`StorageError`].

use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::{Bytes, BytesMut};

use super::{ObjectUri, StorageError, Transfer};
use crate::config::StorageConfig;

/// Times a broken ranged GET is resumed before the read fails.
const RESUME_ATTEMPTS: usize = 5;

/// Builds the S3 client, or `None` when no credentials are configured anywhere.
pub(super) fn client(config: &StorageConfig) -> Option<Client> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let key_id = Some(config.s3_access_key_id.clone())
        .filter(|v| !v.is_empty())
        .or_else(|| from_env("AWS_ACCESS_KEY_ID"))?;
    let secret = Some(config.s3_secret_access_key.clone())
        .filter(|v| !v.is_empty())
        .or_else(|| from_env("AWS_SECRET_ACCESS_KEY"))?;
    let mut builder = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(config.s3_region.clone()))
        .credentials_provider(Credentials::new(key_id, secret, None, None, "framefleet"))
        .force_path_style(config.s3_force_path_style)
        // R2 and Garage reject checksums the upload was not created with: send them only
        // when an operation requires one.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs_f64(config.connect_timeout_seconds))
                .operation_attempt_timeout(Duration::from_secs_f64(config.attempt_timeout_seconds))
                .build(),
        );
    if !config.s3_endpoint.is_empty() {
        builder = builder.endpoint_url(config.s3_endpoint.clone());
    }
    Some(Client::from_conf(builder.build()))
}

fn request_error<E>(
    operation: &'static str,
    uri: &ObjectUri,
    error: SdkError<E, HttpResponse>,
) -> StorageError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let status = error.raw_response().map(|raw| raw.status().as_u16());
    let transient = match &error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => status.is_some_and(|code| code >= 500 || code == 429),
        _ => false,
    };
    let message = match error.code() {
        Some(code) => format!(
            "{code}: {}",
            error.message().unwrap_or("no message from the server")
        ),
        None => DisplayErrorContext(&error).to_string(),
    };
    StorageError::Request {
        operation,
        uri: uri.to_string(),
        message,
        transient,
    }
}

/// The S3 operations framefleet needs, on one client.
pub(super) trait S3Ops {
    async fn size(&self, bucket: &str, key: &str, uri: &ObjectUri) -> Result<u64, StorageError>;
    /// Returns the bytes, counting each request (more than one when a broken transfer was
    /// resumed) and each piece received into `transfer`.
    async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        len: u64,
        uri: &ObjectUri,
        transfer: &Transfer,
    ) -> Result<Bytes, StorageError>;
    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        uri: &ObjectUri,
    ) -> Result<(), StorageError>;
    async fn start_multipart(
        &self,
        bucket: &str,
        key: &str,
        uri: &ObjectUri,
    ) -> Result<String, StorageError>;
    async fn put_part(
        &self,
        target: (&str, &str, &str),
        number: i32,
        body: Bytes,
        uri: &ObjectUri,
    ) -> Result<CompletedPart, StorageError>;
    async fn complete_multipart(
        &self,
        target: (&str, &str, &str),
        parts: Vec<CompletedPart>,
        uri: &ObjectUri,
    ) -> Result<(), StorageError>;
    async fn abort_multipart(&self, target: (&str, &str, &str));
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        uri: &ObjectUri,
    ) -> Result<Vec<String>, StorageError>;
    async fn delete(&self, bucket: &str, key: &str, uri: &ObjectUri) -> Result<(), StorageError>;
}

impl S3Ops for Client {
    async fn size(&self, bucket: &str, key: &str, uri: &ObjectUri) -> Result<u64, StorageError> {
        match self.head_object().bucket(bucket).key(key).send().await {
            Ok(head) => Ok(head.content_length().unwrap_or(0).max(0) as u64),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => {
                Err(StorageError::NotFound {
                    uri: uri.to_string(),
                })
            }
            Err(e) => Err(request_error("HEAD", uri, e)),
        }
    }

    async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        offset: u64,
        len: u64,
        uri: &ObjectUri,
        transfer: &Transfer,
    ) -> Result<Bytes, StorageError> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let end = offset + len;
        let mut data = BytesMut::with_capacity(usize::try_from(len).unwrap_or(0).min(64 << 20));
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_jitter()
            .with_max_times(RESUME_ATTEMPTS)
            .build();
        loop {
            let from = offset + data.len() as u64;
            if from >= end {
                return Ok(data.freeze());
            }
            transfer.request();
            let failure = match self
                .get_object()
                .bucket(bucket)
                .key(key)
                .range(format!("bytes={from}-{}", end - 1))
                .send()
                .await
            {
                Ok(response) => {
                    let mut body = response.body;
                    loop {
                        match body.try_next().await {
                            Ok(Some(piece)) => {
                                transfer.receive(piece.len());
                                data.extend_from_slice(&piece);
                            }
                            Ok(None) => return Ok(data.freeze()),
                            Err(e) => {
                                break format!("the body broke off after {} bytes: {e}", data.len())
                            }
                        }
                    }
                }
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                    return Err(StorageError::NotFound {
                        uri: uri.to_string(),
                    })
                }
                Err(e) if e.code() == Some("InvalidRange") => return Ok(data.freeze()),
                Err(e) => {
                    let error = request_error("GET", uri, e);
                    if !error.is_transient() {
                        return Err(error);
                    }
                    error.to_string()
                }
            };
            match delays.next() {
                Some(delay) => {
                    tracing::warn!(%uri, from, error = %failure, ?delay, "ranged GET failed; resuming from the byte where it stopped");
                    tokio::time::sleep(delay).await;
                }
                None => {
                    return Err(StorageError::Request {
                        operation: "GET",
                        uri: uri.to_string(),
                        message: failure,
                        transient: true,
                    })
                }
            }
        }
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        uri: &ObjectUri,
    ) -> Result<(), StorageError> {
        self.put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| request_error("PUT", uri, e))
    }

    async fn start_multipart(
        &self,
        bucket: &str,
        key: &str,
        uri: &ObjectUri,
    ) -> Result<String, StorageError> {
        let created = self
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| request_error("CREATE-MULTIPART", uri, e))?;
        created
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| StorageError::Request {
                operation: "CREATE-MULTIPART",
                uri: uri.to_string(),
                message: "the server returned no upload id".into(),
                transient: false,
            })
    }

    async fn put_part(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        number: i32,
        body: Bytes,
        uri: &ObjectUri,
    ) -> Result<CompletedPart, StorageError> {
        let part = self
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| request_error("PUT-PART", uri, e))?;
        Ok(CompletedPart::builder()
            .set_e_tag(part.e_tag().map(str::to_string))
            .part_number(number)
            .build())
    }

    async fn complete_multipart(
        &self,
        (bucket, key, upload_id): (&str, &str, &str),
        parts: Vec<CompletedPart>,
        uri: &ObjectUri,
    ) -> Result<(), StorageError> {
        self.complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| request_error("COMPLETE-MULTIPART", uri, e))
    }

    async fn abort_multipart(&self, (bucket, key, upload_id): (&str, &str, &str)) {
        if let Err(e) = self
            .abort_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(bucket, key, error = %DisplayErrorContext(&e), "aborting a multipart upload failed");
        }
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        uri: &ObjectUri,
    ) -> Result<Vec<String>, StorageError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| request_error("LIST", uri, e))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_string)),
            );
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    async fn delete(&self, bucket: &str, key: &str, uri: &ObjectUri) -> Result<(), StorageError> {
        self.delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| request_error("DELETE", uri, e))
    }
}
