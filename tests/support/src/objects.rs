//! Objects on the test Garage: a client, keys, uploads, downloads and listings.

use std::path::Path;

use framefleet_common::storage::{ObjectUri, Storage};

use crate::garage::{storage_config, BUCKET};

/// A storage client on the test Garage.
pub fn storage() -> Storage {
    Storage::new(&storage_config())
}

/// `s3://framefleet-test/<key>`.
pub fn s3(key: &str) -> ObjectUri {
    format!("s3://{BUCKET}/{key}").parse().expect("valid key")
}

/// A fresh key prefix for one test.
pub fn unique_prefix(name: &str) -> String {
    format!("{name}-{:08x}", rand_u32())
}

pub(crate) fn rand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// Uploads a local file.
pub async fn upload(path: &Path, uri: &ObjectUri) {
    storage().upload_file(path, uri).await.expect("upload");
}

/// Downloads an object to a local file.
pub async fn download(uri: &ObjectUri, path: &Path) {
    let storage = storage();
    let size = storage.size(uri).await.expect("object exists");
    let bytes = storage.read_range(uri, 0, size).await.expect("download");
    std::fs::write(path, bytes).expect("write download");
}

/// Keys under a prefix.
pub async fn list(prefix: &ObjectUri) -> Vec<String> {
    storage()
        .list(prefix)
        .await
        .expect("list")
        .into_iter()
        .map(|uri| uri.to_string())
        .collect()
}
