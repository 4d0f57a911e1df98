//! `framefleet local` as a user runs it: plain local paths, the embedded defaults
//! (`file://` storage, worker child processes), a cost table on stdout, the JSON report and
//! the HTML waterfall on request, exit code 0 on success and a one-line error otherwise.
//! What it writes for many kinds of input is checked with the other exactness tests, in
//! `exactness.rs`.

use framefleet_testkit as support;

use support::*;

#[test]
fn local_runs_a_job_end_to_end_on_plain_paths() {
    let dir = tempfile::tempdir().expect("temp dir");
    let encoded = dir.path().join("encoded.mov");
    let input = dir.path().join("clip with spaces.mov");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=200x112:rate=24000/1001",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=523:sample_rate=44100",
        "-t",
        "2.5",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "20",
        "-c:a",
        "aac",
        "-metadata:s:a:0",
        "language=fra",
        // A camera's start timecode: a tmcd track whose one sample is in the sample data.
        "-timecode",
        "01:00:00:00",
        "-shortest",
        encoded.to_str().expect("utf-8"),
    ]);
    // A phone-style display rotation, set on a stream copy as cameras do, and two chapters
    // (a MOV keeps their titles in the samples of a text track).
    let chapter_file = dir.path().join("chapters.txt");
    std::fs::write(
        &chapter_file,
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1200\ntitle=Opening\n\
         [CHAPTER]\nTIMEBASE=1/1000\nSTART=1200\nEND=2500\ntitle=Main part\n",
    )
    .expect("chapters written");
    ffmpeg(&[
        "-i",
        encoded.to_str().expect("utf-8"),
        "-i",
        chapter_file.to_str().expect("utf-8"),
        "-map_chapters",
        "1",
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        input.to_str().expect("utf-8"),
    ]);
    let output = dir.path().join("out.mp4");
    let report_path = dir.path().join("report.json");
    let waterfall_path = dir.path().join("report.html");
    let result = framefleet_local()
        .arg(&input)
        .arg(&output)
        .args([
            "--workers",
            "3",
            "--chunks",
            "3",
            "--scale",
            "2",
            "--lossless",
            "--preset",
            "ultrafast",
        ])
        .arg("--report-json")
        .arg(&report_path)
        .arg("--report-html")
        .arg(&waterfall_path)
        .output()
        .expect("framefleet runs");
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "framefleet local failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(
        stdout.contains("SUCCEEDED") && stdout.contains("total: 60 frames"),
        "{stdout}"
    );
    assert_exact(&input, &output, (400, 224));
    assert_eq!(
        rotation(&output),
        rotation(&input),
        "the display rotation was lost"
    );
    assert_eq!(rotation(&input).as_deref(), Some("90"));
    for (stream, tag, value) in [
        ("v:0", "timecode", "01:00:00:00"),
        ("a:0", "language", "fra"),
    ] {
        assert_eq!(
            stream_tag(&output, stream, tag).as_deref(),
            Some(value),
            "the {tag} of {stream} was lost"
        );
    }
    assert_eq!(
        chapters(&output),
        [
            ("0.000000".to_string(), "Opening".to_string()),
            ("1.200000".to_string(), "Main part".to_string())
        ],
        "the chapters were lost"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("report written"))
            .expect("JSON");
    assert_eq!(report["plan"]["chunks"], 3);
    assert_eq!(report["totals"]["frames"], 60);
    assert_eq!(report["chunks"].as_array().map(Vec::len), Some(3));
    assert_timeline_holds(&report);
    let page = std::fs::read_to_string(&waterfall_path).expect("HTML report written");
    assert!(page.starts_with("<!DOCTYPE html>") && !page.contains("<script"));
    // A bar for the probe, one per chunk, one for the stitch.
    assert_eq!(page.matches("<g class=\"bar\">").count(), 5, "{page}");
    for chunk in 0..3 {
        assert!(page.contains(&format!(">chunk {chunk} · ")), "{page}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left beside the output: {leftovers:?}"
    );
}

/// A Matroska output keeps every timestamp of inputs whose audio starts before the video:
/// AAC from MP4 (its priming puts the first packet at -21 ms) and Opus from Matroska (its
/// pre-skip is a codec delay the reader takes off every block). FFmpeg moves every stream
/// to start at zero, or Opus by its pre-skip, unless the stitch prevents it.
#[test]
fn local_fails_with_one_clear_line_on_a_file_that_is_not_video() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("readme.mp4");
    std::fs::write(&input, "this is not a video\n".repeat(20)).expect("write");
    let result = framefleet_local()
        .arg(&input)
        .arg(dir.path().join("out.mp4"))
        .args(["--workers", "1"])
        .output()
        .expect("framefleet runs");
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("framefleet: ") && last.contains("not a readable media file"),
        "{stderr}"
    );
    assert!(!dir.path().join("out.mp4").exists());
}

#[test]
fn audio_the_output_container_cannot_hold_fails_before_any_chunk_runs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("camera.mov");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
        "-t",
        "1",
        "-c:v",
        "libx264",
        "-c:a",
        "pcm_s16le",
        input.to_str().expect("utf-8"),
    ]);
    let refused = framefleet_local()
        .arg(&input)
        .arg(dir.path().join("out.mp4"))
        .args(["--workers", "1", "--report-json"])
        .arg(dir.path().join("report.json"))
        .output()
        .expect("framefleet runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("pcm_s16le") && stderr.contains(".mkv"),
        "{stderr}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).expect("report"))
            .expect("JSON");
    assert_eq!(
        report["totals"]["attempts"], 0,
        "chunks ran before the refusal"
    );

    let kept = dir.path().join("out.mov");
    succeeds(framefleet_local().arg(&input).arg(&kept).args([
        "--workers",
        "1",
        "--lossless",
        "--preset",
        "ultrafast",
    ]));
    assert_exact(&input, &kept, (192, 128));
}

/// The processes `pid`'s threads started.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

#[test]
fn local_survives_its_workers_being_killed_and_frozen_mid_job() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in.mp4");
    clip_with_audio(&input, "640x360", 30, 12, 30);
    let output = dir.path().join("out.mp4");
    let report_path = dir.path().join("report.json");
    let mut local = framefleet_local()
        .arg(&input)
        .arg(&output)
        .args(["--workers", "2", "--chunks", "4", "--scale", "2"])
        .args(["--crf", "20", "--preset", "slow", "--report-json"])
        .arg(&report_path)
        .spawn()
        .expect("framefleet local starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let workers = loop {
        let workers = children(local.id());
        if workers.len() >= 2 {
            break workers;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the workers never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // Let them take their first chunks, then kill one and freeze the other.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on processes this test's child started, with valid signals.
    unsafe {
        libc::kill(workers[0] as i32, libc::SIGKILL);
        libc::kill(workers[1] as i32, libc::SIGSTOP);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        if let Some(status) = local.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = local.kill();
            panic!("framefleet local did not finish after its workers were lost");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    // SAFETY: as above; the frozen worker may already be gone.
    unsafe {
        libc::kill(workers[1] as i32, libc::SIGKILL);
    }
    assert!(status.success(), "framefleet local failed: {status}");
    assert_exact(&input, &output, (1280, 720));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report"))
            .expect("json");
    let attempts = report["totals"]["attempts"].as_u64().unwrap_or(0);
    assert!(
        attempts > 4,
        "the lost workers' chunks were not retried ({attempts} attempts for 4 chunks)"
    );
}
