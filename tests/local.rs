//! `framefleet local` as a user runs it: plain local paths, the embedded defaults
//! (`file://` storage, worker child processes), a cost table on stdout, the JSON report and
//! the HTML waterfall on request, exit code 0 on success and a one-line error otherwise.

mod support;

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

/// Runs `framefleet local` on two workers, lossless, with `chunks` chunks at `scale`,
/// checks it succeeded and returns what it printed.
fn lossless_local_job(
    input: &std::path::Path,
    output: &std::path::Path,
    chunks: u32,
    scale: f64,
) -> String {
    lossless_local_job_with(input, output, chunks, scale, &[])
}

/// [`lossless_local_job`] with more options for `framefleet local`.
fn lossless_local_job_with(
    input: &std::path::Path,
    output: &std::path::Path,
    chunks: u32,
    scale: f64,
    options: &[&str],
) -> String {
    let result = framefleet_local()
        .arg(input)
        .arg(output)
        .args(["--workers", "2", "--lossless", "--preset", "ultrafast"])
        .args([
            "--chunks",
            &chunks.to_string(),
            "--scale",
            &scale.to_string(),
        ])
        .args(options)
        .output()
        .expect("framefleet runs");
    assert!(
        result.status.success(),
        "{} with {chunks} chunks: {}",
        input.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    String::from_utf8_lossy(&result.stdout).into_owned()
}

/// The report's clock: the probe, then every chunk held between its start and its
/// acceptance, then the stitch once all are in, all within the job's wall time.
fn assert_timeline_holds(report: &serde_json::Value) {
    let seconds = |value: &serde_json::Value| value.as_f64().expect("seconds");
    let orchestrator = &report["orchestrator"];
    let probe_end =
        seconds(&orchestrator["probe_started_seconds"]) + seconds(&orchestrator["probe_seconds"]);
    let stitch_start = seconds(&orchestrator["stitch_started_seconds"]);
    let wall = seconds(&report["totals"]["wall_seconds"]);
    for chunk in report["chunks"].as_array().expect("chunks") {
        let started = seconds(&chunk["started_seconds"]);
        let accepted = seconds(&chunk["accepted_seconds"]);
        let held = seconds(&chunk["wall_seconds"]);
        assert!(
            started >= probe_end,
            "chunk started before the probe ended: {report}"
        );
        assert!(
            accepted >= started + held - 0.05,
            "chunk accepted before it was done: {report}"
        );
        assert!(
            stitch_start >= accepted,
            "stitch began before chunk was accepted: {report}"
        );
    }
    assert!(
        stitch_start + seconds(&orchestrator["stitch_seconds"]) <= wall + 0.05,
        "{report}"
    );
}

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
    let result = framefleet_local()
        .arg(&input)
        .arg(&kept)
        .args(["--workers", "1", "--lossless", "--preset", "ultrafast"])
        .output()
        .expect("framefleet runs");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
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
