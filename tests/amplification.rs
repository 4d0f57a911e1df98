//! Ranged reads, end to end against the Garage S3 server: a 30 s 1280x720 clip with 2 s
//! GOPs and audio, as MP4 with its index at the end or first, as fragmented MP4 and as
//! Matroska, cut into 1, 2, 4 and 8 chunks. Whatever the count, the workers together read
//! about one copy of the input (at most 1.10x its size, 8 chunks included: each chunk reads
//! the index, its own packets and its audio, and stops there), not one per chunk; for MP4
//! so does the whole job (probe, workers and stitch). The requests the
//! report counts are the requests Garage counts it served.

use framefleet_testkit as support;

use std::time::Duration;

use framefleet_common::proto::{EncoderSettings, JobState};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn workers_read_about_one_copy_of_the_input_whatever_the_chunk_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("ranged");
    let source = dir.path().join("source.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "30",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-g",
        "60",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-shortest",
        source.to_str().expect("utf-8"),
    ]);
    let variants: [(&str, &[&str]); 4] = [
        ("index-at-end.mp4", &[]),
        ("index-first.mp4", &["-movflags", "+faststart"]),
        ("fragmented.mp4", &["-movflags", "frag_keyframe+empty_moov"]),
        ("matroska.mkv", &[]),
    ];
    let cluster = Cluster::start(3, &[("FRAMEFLEET_PLANNER__MAX_CHUNKS", "8")]);
    let mut client = cluster.client().await;
    for (name, flags) in variants {
        let local = dir.path().join(name);
        let mut args = vec!["-i", source.to_str().expect("utf-8"), "-c", "copy"];
        args.extend_from_slice(flags);
        args.push(local.to_str().expect("utf-8"));
        ffmpeg(&args);
        let size = std::fs::metadata(&local).expect("input").len() as f64;
        let input = s3(&format!("{prefix}/in/{name}"));
        upload(&local, &input).await;
        for chunks in [1u32, 2, 4, 8] {
            let output = s3(&format!("{prefix}/out/{name}-{chunks}.mp4"));
            let mut spec = lossless_spec(&input, &output, 0.25, chunks);
            spec.encoder = Some(EncoderSettings {
                crf: 35,
                preset: "ultrafast".into(),
                ..Default::default()
            });
            let served_before = garage().requests_served();
            let id = submit(&mut client, spec).await;
            let last = watch(&mut client, &id, Duration::from_secs(300))
                .await
                .pop()
                .expect("snapshots");
            assert_eq!(
                state(&last),
                JobState::Succeeded,
                "{name} x{chunks}: {}",
                last.error
            );
            let report = report(&mut client, &id).await;
            let reported = report["totals"]["requests"].as_u64().unwrap_or(0);
            let served = served_since(served_before, reported).await;
            // framefleet counts a request when it sends it; Garage when its handler ends.
            // A read-ahead cancelled in flight (at most two per reader: each chunk's, the
            // probe's, the stitch's) is counted by framefleet and by Garage only if its
            // handler finished first. So Garage may count those fewer, and never more.
            let cancelled_in_flight = 2 * (u64::from(chunks) + 2);
            assert!(
                served <= reported && reported <= served + cancelled_in_flight,
                "{name} x{chunks}: Garage served {served} requests for the job; the report says \
                 {reported} (at most {cancelled_in_flight} more allowed, for read-aheads \
                 cancelled in flight)"
            );
            let workers = chunk_sum(&report, "bytes_read");
            let limit = 1.10 * size;
            println!(
                "{name} x{chunks}: workers read {workers} bytes of {size} ({:.3}x), waste {}, total input reads {:.3}x, {served} requests",
                workers / size,
                chunk_sum(&report, "bytes_wasted"),
                report["totals"]["read_amplification"].as_f64().unwrap_or(0.0)
            );
            assert!(
                workers <= limit,
                "{name} with {chunks} chunks: workers read {workers} bytes, more than {limit} (1.10x {size})"
            );
            // MP4 is probed from its index and the stitch reads only its headers, so the
            // whole job reads about one copy too. Matroska's probe reads it whole: its
            // timestamps live next to the frames.
            let job = report["totals"]["input_bytes_read"]
                .as_f64()
                .unwrap_or(f64::MAX);
            if name.ends_with(".mp4") {
                assert!(
                    job <= limit,
                    "{name} with {chunks} chunks: the job read {job} bytes of its input, more than {limit}"
                );
            } else {
                assert!(
                    job <= 2.0 * limit,
                    "{name} with {chunks} chunks: the job read {job} bytes"
                );
            }
            assert_eq!(report["plan"]["chunks"], chunks);
        }
    }
}

/// Requests Garage counts as served since it had counted `before`, once its count reaches
/// `expected` or stops short of it for 3 s: Garage counts a request when its handler ends,
/// which for a transfer the client broke off (a cancelled read-ahead) can come a moment
/// after the client has moved on.
async fn served_since(before: u64, expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let served = garage().requests_served() - before;
        if served >= expected || tokio::time::Instant::now() >= deadline {
            return served;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
