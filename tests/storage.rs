//! The storage layer against a real S3 server (Garage on loopback): multipart uploads of
//! large objects, single PUTs of small ones, ranged reads, listing, prefix deletes, and
//! byte accounting.

use framefleet_testkit as support;

use std::io::{Read, Seek, SeekFrom};

use framefleet_common::config::StorageConfig;
use framefleet_common::storage::{Storage, StorageError};
use support::*;

fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_objects_go_up_in_parts_and_come_back_in_ranges() {
    let config = StorageConfig {
        multipart_part_bytes: 5 * 1024 * 1024,
        read_block_bytes: 64 * 1024,
        ..storage_config()
    };
    let storage = Storage::new(&config).counted();
    let prefix = unique_prefix("storage");
    let data = pattern(12 * 1024 * 1024 + 12345);
    let dir = tempfile::tempdir().expect("temp dir");
    let local = dir.path().join("big.bin");
    std::fs::write(&local, &data).expect("write");

    let big = s3(&format!("{prefix}/big.bin"));
    let written = storage
        .upload_file(&local, &big)
        .await
        .expect("multipart upload");
    assert_eq!(written, data.len() as u64);
    assert_eq!(storage.size(&big).await.expect("size"), data.len() as u64);
    // Create, three parts, complete.
    assert!(
        storage.counters().requests() >= 5,
        "{}",
        storage.counters().requests()
    );
    assert_eq!(storage.counters().bytes_written(), data.len() as u64);

    let small = s3(&format!("{prefix}/nested/small.bin"));
    let mut upload = storage.upload(&small).expect("upload");
    upload.write(&data[..1000]).await.expect("write");
    upload.write(&data[1000..3000]).await.expect("write");
    assert_eq!(upload.finish().await.expect("put"), 3000);

    let range = storage
        .read_range(&big, 5 * 1024 * 1024 - 10, 20)
        .await
        .expect("range");
    assert_eq!(
        &range[..],
        &data[5 * 1024 * 1024 - 10..5 * 1024 * 1024 + 10]
    );
    let tail = storage
        .read_range(&big, data.len() as u64 - 5, 100)
        .await
        .expect("tail");
    assert_eq!(&tail[..], &data[data.len() - 5..]);

    let reader_storage = storage.clone();
    let reader_uri = big.clone();
    let expected = data.clone();
    let runtime = tokio::runtime::Handle::current();
    let read_back = tokio::task::spawn_blocking(move || {
        let counted = reader_storage.counted();
        let mut reader = counted.open_reader(&reader_uri, runtime).expect("reader");
        let mut middle = vec![0u8; 100_000];
        reader.seek(SeekFrom::Start(7_000_000)).expect("seek");
        reader.read_exact(&mut middle).expect("read");
        assert_eq!(&middle[..], &expected[7_000_000..7_100_000]);
        let read = counted.counters().bytes_read();
        // Only the blocks touched are fetched, not the object.
        assert!(
            read <= 100_000 + 2 * 64 * 1024,
            "read {read} bytes for 100000"
        );
        read
    })
    .await
    .expect("reader thread");
    assert!(read_back > 0);

    let listed = list(&s3(&format!("{prefix}/"))).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        storage
            .delete_prefix(&s3(&format!("{prefix}/")))
            .await
            .expect("delete"),
        2
    );
    assert!(list(&s3(&format!("{prefix}/"))).await.is_empty());
    assert!(matches!(
        storage.size(&big).await,
        Err(StorageError::NotFound { .. })
    ));
}
