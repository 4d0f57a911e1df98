//! End-to-end exactness, every test of it in one place. A fleet (real orchestrator and
//! worker processes over gRPC, the Garage S3 server on loopback, inputs made with lavfi):
//! for every input kind (MPEG-TS included) and N = 1..4 chunks the output has the input's
//! frame count and timestamps, the input's audio packets, the scaled size, and (lossless)
//! the same decoded frames whatever N is. Then, through `framefleet local`, the inputs and
//! outputs that need more than that: Matroska timelines, trimmed MP4s, AVI and DVD sources
//! without presentation times, colours, deinterlacing, MPEG-TS clock wraps, subtitles,
//! chapters, attachments and cover art.

use framefleet_testkit as support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use framefleet_common::proto::{JobState, SubmitJobRequest};
use support::*;

/// One input kind: a name, the ffmpeg arguments that make it, its file extension and the
/// size it has.
struct Clip {
    name: &'static str,
    extension: &'static str,
    size: (u32, u32),
    args: Vec<&'static str>,
}

fn clips() -> Vec<Clip> {
    let audio = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"];
    vec![
        Clip {
            name: "cfr30-aac",
            extension: "mp4",
            size: (160, 120),
            args: [
                &["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30"][..],
                &audio,
                &[
                    "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "12",
                ],
                &["-c:a", "aac", "-shortest"],
            ]
            .concat(),
        },
        Clip {
            name: "vfr",
            extension: "mp4",
            size: (160, 120),
            args: vec![
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=160x120:rate=30",
                "-t",
                "3",
                "-vf",
                "select='lt(mod(n\\,7)\\,3)+eq(mod(n\\,11)\\,0)'",
                "-vsync",
                "vfr",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-g",
                "10",
            ],
        },
        Clip {
            name: "no-audio",
            extension: "mp4",
            size: (128, 96),
            args: vec![
                "-f",
                "lavfi",
                "-i",
                "mandelbrot=size=128x96:rate=24",
                "-t",
                "1.5",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
            ],
        },
        Clip {
            name: "one-frame",
            extension: "mp4",
            size: (96, 64),
            args: vec![
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=96x64:rate=25",
                "-frames:v",
                "1",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
            ],
        },
        Clip {
            name: "odd-size",
            extension: "mp4",
            size: (321, 241),
            args: vec![
                "-f",
                "lavfi",
                "-i",
                "testsrc2=size=320x240:rate=25",
                "-t",
                "1",
                "-vf",
                "scale=321:241",
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv444p",
                "-g",
                "8",
            ],
        },
        Clip {
            name: "matroska",
            extension: "mkv",
            size: (160, 90),
            args: [
                &["-f", "lavfi", "-i", "smptebars=size=160x90:rate=25"][..],
                &audio,
                &[
                    "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "10",
                ],
                &["-c:a", "aac", "-shortest"],
            ]
            .concat(),
        },
        Clip {
            // No index and timestamps that do not start at 0: seeks are estimates that
            // can land past a chunk's start, or past the last keyframe.
            name: "mpeg-ts",
            extension: "ts",
            size: (192, 108),
            args: [
                &["-f", "lavfi", "-i", "mandelbrot=size=192x108:rate=24"][..],
                &audio,
                &[
                    "-t", "5", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "48",
                ],
                &["-c:a", "aac", "-shortest"],
            ]
            .concat(),
        },
    ]
}

fn make(clip: &Clip, dir: &Path) -> PathBuf {
    let path = dir.join(format!("{}.{}", clip.name, clip.extension));
    let mut args = clip.args.clone();
    let target = path.to_string_lossy().into_owned();
    args.push(&target);
    ffmpeg(&args);
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn output_is_frame_exact_and_independent_of_the_chunk_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("exact");
    let cluster = Cluster::start(3, &[]);
    let mut client = cluster.client().await;

    let mut jobs = Vec::new();
    for clip in clips() {
        let local = make(&clip, dir.path());
        let input = s3(&format!("{prefix}/in/{}.{}", clip.name, clip.extension));
        upload(&local, &input).await;
        for chunks in 1..=4u32 {
            let output = s3(&format!("{prefix}/out/{}-n{chunks}.mp4", clip.name));
            let id = submit(&mut client, lossless_spec(&input, &output, 2.0, chunks)).await;
            jobs.push((clip.name, clip.size, local.clone(), chunks, output, id));
        }
    }

    let mut hashes: BTreeMap<&str, Vec<(u32, Vec<String>)>> = BTreeMap::new();
    for (name, size, local, chunks, output, id) in &jobs {
        let snapshots = watch(&mut client, id, Duration::from_secs(300)).await;
        let last = snapshots.last().expect("at least one snapshot");
        assert_eq!(
            state(last),
            JobState::Succeeded,
            "{name} with {chunks} chunks: {}",
            last.error
        );
        let downloaded = dir.path().join(format!("{name}-n{chunks}.mp4"));
        download(output, &downloaded).await;
        assert_exact(local, &downloaded, (size.0 * 2, size.1 * 2));
        hashes
            .entry(name)
            .or_default()
            .push((*chunks, frame_hashes(&downloaded)));
    }
    for (name, by_count) in &hashes {
        let (_, reference) = &by_count[0];
        assert!(!reference.is_empty(), "{name}: no frames decoded");
        for (chunks, frames) in &by_count[1..] {
            assert_eq!(
                frames, reference,
                "{name}: frames with {chunks} chunks differ from 1 chunk"
            );
        }
    }
    assert!(
        list(&s3(&format!("{prefix}/out/.framefleet/")))
            .await
            .is_empty(),
        "temporary chunk objects were left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn progress_rises_to_100_with_real_frame_counts_and_report_totals_add_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = unique_prefix("progress");
    let local = dir.path().join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=640x360:rate=30",
        "-t",
        "4",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        local.to_str().expect("utf-8 path"),
    ]);
    let input = s3(&format!("{prefix}/in.mp4"));
    let output = s3(&format!("{prefix}/out.mp4"));
    upload(&local, &input).await;
    let cluster = Cluster::start(3, &[]);
    let mut client = cluster.client().await;
    let mut spec = lossless_spec(&input, &output, 2.0, 3);
    spec.encoder = Some(framefleet_common::proto::EncoderSettings {
        crf: 20,
        preset: "medium".into(),
        ..Default::default()
    });
    let id = submit(&mut client, spec).await;
    let snapshots = watch(&mut client, &id, Duration::from_secs(300)).await;

    let last = snapshots.last().expect("snapshots");
    assert_eq!(state(last), JobState::Succeeded, "{}", last.error);
    let percents: Vec<f64> = snapshots
        .iter()
        .map(|s| s.progress.clone().unwrap_or_default().percent)
        .collect();
    assert!(
        percents.windows(2).all(|w| w[1] >= w[0]),
        "progress went backwards: {percents:?}"
    );
    assert_eq!(percents.last().copied(), Some(100.0));
    let progress = last.progress.clone().unwrap_or_default();
    assert_eq!((progress.frames_done, progress.frames_total), (120, 120));
    assert!(
        snapshots.iter().any(|s| {
            let p = s.progress.clone().unwrap_or_default();
            p.frames_done > 0
                && p.frames_done < p.frames_total
                && p.percent > 0.0
                && p.percent < 100.0
        }),
        "no intermediate progress with real frame counts was reported"
    );
    let phases: Vec<String> = snapshots
        .iter()
        .map(|s| s.progress.clone().unwrap_or_default().phase)
        .collect();
    let known = [
        "queued", "waiting", "init", "process", "encode", "upload", "stitch", "done",
    ];
    assert!(
        phases.iter().all(|p| known.contains(&p.as_str())),
        "{phases:?}"
    );
    assert!(
        phases.iter().any(|p| p == "process" || p == "encode"),
        "the phase never left set-up while the model ran: {phases:?}"
    );
    assert!(
        snapshots.iter().all(|s| {
            let p = s.progress.clone().unwrap_or_default();
            p.seconds_remaining == 0.0 || p.frames_done > 0
        }),
        "a time left was shown before any model frame"
    );

    let report = report(&mut client, &id).await;
    for key in ["plan", "chunks", "totals", "orchestrator", "pricing"] {
        assert!(report.get(key).is_some(), "report lacks `{key}`");
    }
    assert_eq!(report["plan"]["chunks"], 3);
    assert!(report["plan"]["rule"]
        .as_str()
        .is_some_and(|r| r.contains("fixed")));
    let chunks = report["chunks"].as_array().expect("chunks");
    assert_eq!(chunks.len(), 3);
    for (index, chunk) in chunks.iter().enumerate() {
        assert_eq!(chunk["index"], index);
        assert_eq!(chunk["attempts"], 1);
        assert_eq!(chunk["frames"], 40);
        assert!(chunk["gpu_seconds"].as_f64().is_some_and(|s| s > 0.0));
        for phase in ["download", "init", "decode", "process", "encode", "upload"] {
            assert!(
                chunk["phases"][phase].as_f64().is_some(),
                "chunk {index} lacks phase {phase}"
            );
        }
        assert!(chunk["phases"]["encode"].as_f64().is_some_and(|s| s > 0.0));
    }
    let totals = &report["totals"];
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
    assert!(close(
        totals["gpu_seconds"].as_f64().expect("gpu"),
        chunk_sum(&report, "gpu_seconds")
    ));
    assert!(close(
        totals["cost_usd"].as_f64().expect("cost"),
        chunk_sum(&report, "cost_usd")
    ));
    assert_eq!(
        totals["frames"].as_f64(),
        Some(chunk_sum(&report, "frames"))
    );
    assert_eq!(
        totals["attempts"].as_f64(),
        Some(chunk_sum(&report, "attempts"))
    );
    let orchestrator = &report["orchestrator"];
    assert_eq!(
        totals["bytes_read"].as_f64(),
        Some(
            chunk_sum(&report, "bytes_read") + orchestrator["bytes_read"].as_f64().expect("bytes")
        )
    );
    assert_eq!(
        totals["bytes_written"].as_f64(),
        Some(
            chunk_sum(&report, "bytes_written")
                + orchestrator["bytes_written"].as_f64().expect("bytes")
        )
    );
    assert!(totals["wall_seconds"].as_f64().is_some_and(|s| s > 0.0));
    let sequential = chunk_sum(&report, "wall_seconds")
        + orchestrator["probe_seconds"].as_f64().expect("probe")
        + orchestrator["stitch_seconds"].as_f64().expect("stitch");
    assert!(
        (totals["sequential_estimate_seconds"]
            .as_f64()
            .expect("estimate")
            - sequential)
            .abs()
            < 1e-6
    );
    assert_eq!(
        totals["input_bytes_read"].as_f64(),
        Some(
            chunk_sum(&report, "bytes_read")
                + orchestrator["input_bytes_read"].as_f64().expect("bytes")
        )
    );
    let input_size = std::fs::metadata(&local).expect("input").len() as f64;
    assert_eq!(totals["input_size_bytes"].as_f64(), Some(input_size));
    let amplification = totals["read_amplification"]
        .as_f64()
        .expect("amplification");
    assert!(
        (amplification * input_size - totals["input_bytes_read"].as_f64().unwrap_or(0.0)).abs()
            < 1.0
    );
    assert_eq!(
        totals["requests"].as_f64(),
        Some(chunk_sum(&report, "requests") + orchestrator["requests"].as_f64().expect("requests"))
    );
    assert!(totals["bytes_read"].as_f64().is_some_and(|b| b > 0.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_idempotency_key_returns_the_same_job() {
    let prefix = unique_prefix("idem");
    let cluster = Cluster::start(1, &[]);
    let mut client = cluster.client().await;
    let spec = lossless_spec(
        &s3(&format!("{prefix}/missing.mp4")),
        &s3(&format!("{prefix}/out.mp4")),
        1.0,
        1,
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let reply = client
            .submit_job(SubmitJobRequest {
                spec: Some(spec.clone()),
                idempotency_key: "same-key".into(),
            })
            .await
            .expect("submit")
            .into_inner();
        ids.push((reply.job_id, reply.created));
    }
    assert!(ids[0].1 && !ids[1].1 && !ids[2].1, "{ids:?}");
    assert!(ids.iter().all(|(id, _)| *id == ids[0].0));
    let mut other = spec.clone();
    other.chunks = 2;
    let conflict = client
        .submit_job(SubmitJobRequest {
            spec: Some(other),
            idempotency_key: "same-key".into(),
        })
        .await
        .expect_err("a different spec under the same key is refused");
    assert_eq!(conflict.code(), tonic::Code::AlreadyExists);
}

#[test]
fn matroska_outputs_keep_the_timestamps_of_early_audio() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, audio) in [("aac.mp4", "aac"), ("opus.mkv", "libopus")] {
        let input = dir.path().join(name);
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=24",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-g",
            "24",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            audio,
            "-shortest",
            input.to_str().expect("utf-8"),
        ]);
        let output = dir.path().join(format!("{name}.out.mkv"));
        lossless_local_job(&input, &output, 2, 2.0);
        assert_exact(&input, &output, (320, 180));
    }
}

/// An MP4 trimmed without re-encoding (`-ss` with stream copy, as phone and editor "trim"
/// features do) starts mid-GOP: its edit list makes the frames before the cut reference-only
/// (flagged discard), and only the frames after it are shown. The job must produce exactly
/// the shown frames, whatever the chunk count.
#[test]
fn an_mp4_trimmed_mid_gop_yields_exactly_its_shown_frames() {
    let dir = tempfile::tempdir().expect("temp dir");
    let whole = dir.path().join("whole.mp4");
    clip_with_audio(&whole, "320x180", 30, 6, 30);
    let trimmed = dir.path().join("trimmed.mp4");
    ffmpeg(&[
        "-ss",
        "1.3",
        "-i",
        whole.to_str().expect("utf-8"),
        "-t",
        "3",
        "-c",
        "copy",
        trimmed.to_str().expect("utf-8"),
    ]);
    let shown = video_timing(&trimmed).pts_seconds.len();
    assert!(
        (85..=95).contains(&shown),
        "{shown} shown frames in the trimmed clip"
    );
    let mut outputs = Vec::new();
    for chunks in [1, 3] {
        let output = dir.path().join(format!("out-{chunks}.mp4"));
        lossless_local_job(&trimmed, &output, chunks, 1.0);
        assert_exact(&trimmed, &output, (320, 180));
        outputs.push(frame_hashes(&output));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "frames differ between 1 and 3 chunks"
    );
}

/// An AVI as FFmpeg writes it: MPEG-4 Part 2 with MP3, and a header that counts one frame
/// more than the file holds (only an MP4 sample table is trusted to count frames).
#[test]
fn an_avi_runs_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("clip.avi");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=300:sample_rate=44100",
        "-t",
        "4",
        "-c:v",
        "mpeg4",
        "-q:v",
        "3",
        "-g",
        "25",
        "-c:a",
        "libmp3lame",
        "-shortest",
        input.to_str().expect("utf-8"),
    ]);
    let output = dir.path().join("out.mp4");
    lossless_local_job(&input, &output, 3, 1.0);
    assert_exact(&input, &output, (320, 240));
}

/// Containers that store a presentation time on some video packets only (a DVD's MPEG
/// program stream, MPEG-4 Part 2 with B-frames in AVI) or on none (H.264 with B-frames in
/// AVI, here with open GOPs) give every frame in place for any chunk count: frames at the
/// times FFmpeg fills in, or at the AVI's frame clock, and each frame the input's own.
/// Both failed before: "two video frames share timestamp", or every chunk two frames short
/// after three attempts.
#[test]
fn inputs_whose_packets_lack_presentation_times_keep_every_frame_in_place() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, codecs, note) in [
        (
            "dvd.vob",
            &[
                "-c:v",
                "mpeg2video",
                "-g",
                "12",
                "-bf",
                "2",
                "-c:a",
                "ac3",
                "-f",
                "vob",
            ][..],
            "FFmpeg filled them in",
        ),
        (
            "xvid.avi",
            &[
                "-c:v",
                "mpeg4",
                "-g",
                "25",
                "-bf",
                "2",
                "-vtag",
                "XVID",
                "-c:a",
                "libmp3lame",
            ][..],
            "FFmpeg filled them in",
        ),
        (
            "h264.avi",
            &[
                "-c:v",
                "libx264",
                "-bf",
                "3",
                "-x264-params",
                "open-gop=1:keyint=25:min-keyint=25:scenecut=0",
                "-c:a",
                "libmp3lame",
            ][..],
            "the AVI frame clock",
        ),
    ] {
        let input = dir.path().join(name);
        encoded_clip(&input, "size=160x90:rate=25", 4, true, codecs);
        let decoded = frame_hashes(&input);
        assert_eq!(decoded.len(), 100, "{name}");
        for chunks in [1, 3] {
            let output = dir.path().join(format!("{name}-{chunks}.mkv"));
            let printed = lossless_local_job(&input, &output, chunks, 1.0);
            assert!(printed.contains(note), "{name}: no note in {printed}");
            assert_exact(&input, &output, (160, 90));
            assert_eq!(
                frame_hashes(&output),
                decoded,
                "{name} in {chunks} chunks: frames differ from the input's"
            );
        }
    }
}

/// Colours come through the trip to 4:2:0 YUV as FFmpeg itself would carry them, and the
/// output is tagged so that players show them: an untagged SD input upscaled to HD is tagged
/// BT.601 (players guess the matrix of untagged video from its size, and would show BT.709
/// colours the input never had), tagged inputs keep their tags, and an RGB input is tagged
/// as the limited-range BT.601 it became (it was tagged "gbr", full range: a player read
/// the YUV planes as RGB; 24 dB against FFmpeg's own upscale of it).
#[test]
fn colours_come_through_and_are_tagged_as_players_need() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, codecs, expected) in [
        (
            "untagged.mp4",
            &["-c:v", "libx264", "-pix_fmt", "yuv420p"][..],
            "smpte170m",
        ),
        (
            "bt709.mp4",
            &[
                "-c:v",
                "libx264",
                "-pix_fmt",
                "yuv420p",
                "-colorspace",
                "bt709",
            ][..],
            "bt709",
        ),
        (
            "rgb.mkv",
            &["-c:v", "ffv1", "-pix_fmt", "gbrp"][..],
            "smpte170m",
        ),
    ] {
        let input = dir.path().join(name);
        encoded_clip(&input, "size=320x180:rate=25", 1, false, codecs);
        let output = dir.path().join(format!("hd-{name}.mkv"));
        lossless_local_job(&input, &output, 2, 4.0);
        assert_eq!(video_timing(&output).size, (1280, 720));
        assert_eq!(
            stream_field(&output, "color_space").as_deref(),
            Some(expected),
            "{name}"
        );
        assert_eq!(stream_field(&output, "color_range").as_deref(), Some("tv"));
        let reference = first_frame_rgb(&input, "scale=1280:720:flags=lanczos,format=rgb24");
        let psnr = psnr(&first_frame_rgb(&output, "format=rgb24"), &reference);
        assert!(
            psnr > 30.0,
            "{name}: {psnr:.2} dB from FFmpeg's own upscale"
        );
    }
}

/// The first frame of `path` as packed RGB bytes, through the filter chain `filters`.
fn first_frame_rgb(path: &std::path::Path, filters: &str) -> Vec<u8> {
    let output = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vf", filters, "-frames:v", "1", "-f", "rawvideo", "-"])
        .output()
        .expect("ffmpeg runs");
    assert!(output.status.success(), "decoding {}", path.display());
    output.stdout
}

/// `--deinterlace` gives exactly FFmpeg's own `bwdif` (one frame per frame) whatever the
/// chunking, chunk starts on keyframes included (each output frame is made from its
/// neighbours, so a chunk decodes the frame before its range and the one after it), with
/// every frame at its input time.
#[test]
fn deinterlacing_matches_ffmpeg_bwdif_for_any_chunk_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Interlaced H.264 in MP4: its index makes every seek land exactly on the keyframe.
    let input = dir.path().join("interlaced.mp4");
    encoded_clip(
        &input,
        "size=160x96:rate=50",
        4,
        true,
        &[
            "-vf",
            "tinterlace=interleave_top,fieldorder=tff",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-flags",
            "+ildct+ilme",
            "-x264-params",
            "interlaced=1:tff=1:keyint=25",
            "-bf",
            "2",
            "-c:a",
            "aac",
        ],
    );
    let reference = dir.path().join("bwdif.mkv");
    ffmpeg(&[
        "-i",
        input.to_str().expect("utf-8"),
        "-map",
        "0:v",
        "-vf",
        "bwdif=mode=send_frame:parity=auto:deint=interlaced",
        "-c:v",
        "ffv1",
        reference.to_str().expect("utf-8"),
    ]);
    let expected = frame_hashes(&reference);
    assert_eq!(expected.len(), 100);
    assert_ne!(expected, frame_hashes(&input), "the clip is not interlaced");
    for chunks in [1, 4] {
        let output = dir.path().join(format!("out-{chunks}.mkv"));
        lossless_local_job_with(&input, &output, chunks, 1.0, &["--deinterlace"]);
        assert_exact(&input, &output, (160, 96));
        let got = frame_hashes(&output);
        let differing = (0..expected.len()).find(|&i| got.get(i) != expected.get(i));
        assert_eq!(
            differing, None,
            "{chunks} chunks: this frame differs from FFmpeg's bwdif"
        );
    }
}

/// An MPEG-TS recorded in the minute before its 33-bit clock wraps: FFmpeg unwraps its
/// timestamps to below zero, where an MP4 cannot show a frame (its edit list hides it, so
/// every chunk's first frames went missing). The job moves every stream later by the same
/// amount, so the first frame is at 0 and the audio keeps its place; the report says so.
#[test]
fn an_mpeg_ts_about_to_wrap_its_clock_is_moved_to_start_at_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("wrap.ts");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x180:rate=24000/1001",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=500:sample_rate=48000",
        "-t",
        "3",
        "-c:v",
        "mpeg2video",
        "-g",
        "12",
        "-c:a",
        "mp2",
        "-shortest",
        "-output_ts_offset",
        "95400",
        input.to_str().expect("utf-8"),
    ]);
    let first = video_timing(&input).pts_seconds[0];
    assert!(
        first < -40.0,
        "the clip starts at {first} s, not below zero"
    );
    let mut outputs = Vec::new();
    for (chunks, extension) in [(1, "mp4"), (3, "mp4"), (3, "mkv")] {
        let output = dir.path().join(format!("out-{chunks}.{extension}"));
        let printed = lossless_local_job(&input, &output, chunks, 1.0);
        assert!(
            printed.contains("every stream of the output is moved"),
            "{printed}"
        );
        assert_exact_moved(&input, &output, (320, 180), -first);
        assert!(video_timing(&output).pts_seconds[0].abs() < 1e-3);
        outputs.push(frame_hashes(&output));
    }
    assert!(
        outputs.windows(2).all(|pair| pair[0] == pair[1]),
        "frames differ between chunk counts or containers"
    );
}

/// Subtitle tracks (MP4's `mov_text`, Matroska's SubRip) are copied packet for packet,
/// cues near and across chunk boundaries included, and chapters kept (an MP4 keeps their
/// titles in a text track's samples), whatever the chunk count; text subtitles the output
/// container cannot hold are converted to its own text codec.
#[test]
fn subtitles_and_chapters_pass_through_for_any_chunk_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cues = dir.path().join("cues.srt");
    std::fs::write(
        &cues,
        "1\n00:00:00,200 --> 00:00:01,100\nFirst\n\n\
         2\n00:00:01,900 --> 00:00:02,600\nAcross the first cut\n\n\
         3\n00:00:02,300 --> 00:00:02,500\nOverlapping\n\n\
         4\n00:00:03,950 --> 00:00:04,500\nJust before the second cut\n\n\
         5\n00:00:05,200 --> 00:00:05,900\nLast\n",
    )
    .expect("cues written");
    let chapter_file = dir.path().join("chapters.txt");
    std::fs::write(
        &chapter_file,
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=3000\ntitle=Start\n\
         [CHAPTER]\nTIMEBASE=1/1000\nSTART=3000\nEND=6000\ntitle=End\n",
    )
    .expect("chapters written");
    // The last input has no audio: only its video says how far a chunk has read.
    for (name, subtitle_codec, audio) in [
        ("clip.mp4", "mov_text", true),
        ("clip.mkv", "srt", true),
        ("silent.mkv", "srt", false),
    ] {
        let plain = dir.path().join(format!("plain-{name}"));
        clip_with_audio(&plain, "160x90", 24, 6, 24);
        let input = dir.path().join(name);
        let mut args = vec![
            "-i",
            plain.to_str().expect("utf-8"),
            "-i",
            cues.to_str().expect("utf-8"),
            "-i",
            chapter_file.to_str().expect("utf-8"),
            "-map",
            "0:v",
            "-map",
            "1",
            "-map_chapters",
            "2",
            "-c",
            "copy",
            "-c:s",
            subtitle_codec,
            "-metadata:s:s:0",
            "language=deu",
            input.to_str().expect("utf-8"),
        ];
        if audio {
            let after_video = args
                .iter()
                .position(|arg| *arg == "0:v")
                .map_or(0, |at| at + 1);
            args.splice(after_video..after_video, ["-map", "0:a"]);
        }
        ffmpeg(&args);
        let cues_in = subtitle_cues(&input);
        assert_eq!(cues_in.len(), 5, "{name}: {cues_in:?}");
        for chunks in [1, 3] {
            let output = dir.path().join(format!("out-{chunks}-{name}"));
            lossless_local_job(&input, &output, chunks, 1.0);
            assert_exact(&input, &output, (160, 90));
            assert_eq!(
                subtitle_cues(&output),
                cues_in,
                "{name}, {chunks} chunks: subtitles differ"
            );
            assert_eq!(
                stream_tag(&output, "s:0", "language").as_deref(),
                Some("deu")
            );
            assert_eq!(
                chapters(&output),
                [
                    ("0.000000".to_string(), "Start".to_string()),
                    ("3.000000".to_string(), "End".to_string())
                ],
                "{name}, {chunks} chunks: chapters differ"
            );
        }
    }
    // Across containers the text is converted (SubRip into MP4's mov_text, which shows one
    // cue at a time, mov_text into Matroska's ASS): the cues read back are those of
    // FFmpeg's own conversion of the input.
    for (from, to, codec) in [
        ("clip.mkv", "across.mp4", "mov_text"),
        ("clip.mp4", "across.mkv", "ass"),
    ] {
        let input = dir.path().join(from);
        let output = dir.path().join(to);
        let printed = lossless_local_job(&input, &output, 3, 1.0);
        assert!(
            printed.contains("note: subtitle stream 2 ("),
            "the conversion is not reported: {printed}"
        );
        assert_exact(&input, &output, (160, 90));
        let reference = dir.path().join(format!("reference-{to}"));
        ffmpeg(&[
            "-i",
            input.to_str().expect("utf-8"),
            "-map",
            "0:s",
            "-c:s",
            codec,
            reference.to_str().expect("utf-8"),
        ]);
        let cues = subtitles_as_srt(&reference);
        assert!(cues.contains("Across the first cut"), "{cues}");
        assert_eq!(subtitles_as_srt(&output), cues, "{from} -> {to}");
    }
}

/// A Matroska file's attachments (the fonts its styled subtitles name) and cover art are
/// kept byte for byte; an MP4 output keeps the cover and says it left the font out.
#[test]
fn attachments_and_cover_art_are_kept_where_the_container_holds_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let font = dir.path().join("Subtitle Font.ttf");
    let font_bytes: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&font, &font_bytes).expect("font written");
    let cover = dir.path().join("cover.png");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x64",
        "-frames:v",
        "1",
        cover.to_str().expect("utf-8"),
    ]);
    let plain = dir.path().join("plain.mkv");
    clip_with_audio(&plain, "160x90", 24, 3, 24);
    let input = dir.path().join("with attachments.mkv");
    ffmpeg(&[
        "-i",
        plain.to_str().expect("utf-8"),
        "-c",
        "copy",
        "-attach",
        font.to_str().expect("utf-8"),
        "-metadata:s:t:0",
        "mimetype=application/x-truetype-font",
        "-attach",
        cover.to_str().expect("utf-8"),
        "-metadata:s:t:1",
        "mimetype=image/png",
        input.to_str().expect("utf-8"),
    ]);
    let cover_bytes = std::fs::read(&cover).expect("cover");
    assert_eq!(attached_picture(&input), cover_bytes);

    let kept = dir.path().join("kept.mkv");
    lossless_local_job(&input, &kept, 2, 1.0);
    assert_exact(&input, &kept, (160, 90));
    let dumped = dir.path().join("dumped.ttf");
    ffmpeg(&[
        "-dump_attachment:t:0",
        dumped.to_str().expect("utf-8"),
        "-i",
        kept.to_str().expect("utf-8"),
        "-t",
        "0",
        "-f",
        "null",
        "-",
    ]);
    assert_eq!(std::fs::read(&dumped).expect("font dumped"), font_bytes);
    assert_eq!(
        stream_tag(&kept, "t:0", "filename").as_deref(),
        Some("Subtitle Font.ttf")
    );
    assert_eq!(attached_picture(&kept), cover_bytes);

    let mp4 = dir.path().join("kept.mp4");
    let printed = lossless_local_job(&input, &mp4, 2, 1.0);
    assert_exact(&input, &mp4, (160, 90));
    assert_eq!(attached_picture(&mp4), cover_bytes);
    assert!(
        printed
            .contains("note: attachment stream 2 (ttf) was left out: a .mp4 file cannot hold it"),
        "{printed}"
    );
}
