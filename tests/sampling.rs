//! Sampled inference end to end (`framefleet local`, real worker processes, a TorchScript
//! module the test traces): the frames chosen by `--frames` are the same for 1 and 4 chunks
//! and for two runs with one seed, each line carries the chosen frame's index and time, the
//! values are the model applied to that frame as ffmpeg decodes it, and a job that takes
//! 10 frames of a two-minute MP4 reads a small fraction of the file.

use framefleet_testkit as support;

use std::path::Path;
use std::process::Command;

use support::*;
use tch::{CModule, Kind, Tensor};

/// Size of the clips the model sees.
const WIDTH: usize = 64;
const HEIGHT: usize = 48;

/// Traces a module that averages each frame into a 4x4 grid per colour: 48 values that
/// tell frames apart.
fn grid_module(path: &Path) {
    let example = Tensor::zeros(
        [1, 3, HEIGHT as i64, WIDTH as i64],
        (Kind::Float, tch::Device::Cpu),
    );
    let mut grid = |inputs: &[Tensor]| vec![inputs[0].adaptive_avg_pool2d([4, 4]).flatten(1, -1)];
    CModule::create_by_tracing("Grid", "forward", &[example], &mut grid)
        .expect("traces")
        .save(path)
        .expect("saves");
}

/// Runs an infer job with `args`; returns its lines and its report.
fn infer(
    input: &Path,
    output: &Path,
    module: &Path,
    args: &[&str],
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let report = output.with_extension("report.json");
    let result = framefleet_local()
        .arg(input)
        .arg(output)
        .args(["--task", "infer", "--workers", "2"])
        .arg("--model")
        .arg(module)
        .arg("--report-json")
        .arg(&report)
        .args(args)
        .env("FRAMEFLEET_WORKER__DEVICE", "cpu")
        .output()
        .expect("framefleet runs");
    assert!(
        result.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let lines = std::fs::read_to_string(output)
        .expect("output written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    let report = std::fs::read_to_string(&report).expect("report written");
    (
        lines,
        serde_json::from_str(&report).expect("report is JSON"),
    )
}

/// Every frame of `input` as ffmpeg decodes it, RGB24, in presentation order.
fn ffmpeg_frames(input: &Path) -> Vec<Vec<u8>> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(input)
        .args([
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(output.status.success());
    output
        .stdout
        .chunks(WIDTH * HEIGHT * 3)
        .map(<[u8]>::to_vec)
        .collect()
}

/// The grid module's values for one RGB24 frame, as the model's layout has them
/// (channel-major, then row, then column).
fn grid(frame: &[u8]) -> Vec<f64> {
    let (cell_w, cell_h) = (WIDTH / 4, HEIGHT / 4);
    let mut values = Vec::new();
    for channel in 0..3 {
        for row in 0..4 {
            for column in 0..4 {
                let mut sum = 0.0;
                for y in row * cell_h..(row + 1) * cell_h {
                    for x in column * cell_w..(column + 1) * cell_w {
                        sum += f64::from(frame[(y * WIDTH + x) * 3 + channel]);
                    }
                }
                values.push(sum / (cell_w * cell_h) as f64 / 255.0);
            }
        }
    }
    values
}

/// The frame indices of `lines`.
fn indices(lines: &[serde_json::Value]) -> Vec<u64> {
    lines
        .iter()
        .map(|l| l["frame"].as_u64().expect("frame"))
        .collect()
}

#[test]
fn chosen_frames_do_not_depend_on_the_chunking_and_are_the_model_on_those_frames() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("grid.pt");
    grid_module(&module);
    let input = dir.path().join("in.mp4");
    // 10 s at 25 fps, a keyframe every 25 frames, B-frames (x264's default).
    encoded_clip(
        &input,
        &format!("size={WIDTH}x{HEIGHT}:rate=25"),
        10,
        true,
        &[
            "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
        ],
    );
    let times = video_timing(&input).pts_seconds;
    let decoded = ffmpeg_frames(&input);
    assert_eq!(decoded.len(), times.len());
    let random = ["--frames", "random:12", "--seed", "7", "--window", "2:8"];
    let (one, _) = infer(
        &input,
        &dir.path().join("one.jsonl"),
        &module,
        &[&random[..], &["--chunks", "1"]].concat(),
    );
    let (four, report) = infer(
        &input,
        &dir.path().join("four.jsonl"),
        &module,
        &[&random[..], &["--chunks", "4"]].concat(),
    );
    let (again, _) = infer(
        &input,
        &dir.path().join("again.jsonl"),
        &module,
        &[&random[..], &["--chunks", "3"]].concat(),
    );
    assert_eq!(report["plan"]["chunks"], 4, "{}", report["plan"]);
    assert_eq!(one.len(), 12);
    assert_eq!(
        indices(&one),
        indices(&four),
        "1 and 4 chunks chose differently"
    );
    assert_eq!(
        indices(&one),
        indices(&again),
        "the same seed chose differently"
    );
    let (other_seed, _) = infer(
        &input,
        &dir.path().join("other.jsonl"),
        &module,
        &["--frames", "random:12", "--seed", "8", "--window", "2:8"],
    );
    assert_ne!(
        indices(&one),
        indices(&other_seed),
        "another seed chose the same"
    );
    let mut worst = 0.0_f64;
    for line in one.iter().chain(&four) {
        let index = line["frame"].as_u64().expect("frame") as usize;
        let time = line["time"].as_f64().expect("time");
        assert!(
            (2.0..8.0).contains(&time),
            "frame {index} at {time} s is outside the window"
        );
        assert!(
            (time - times[index]).abs() < 1e-3,
            "frame {index}: {time} s, ffprobe {} s",
            times[index]
        );
        let values: Vec<f64> = line["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_f64().expect("number"))
            .collect();
        let expected = grid(&decoded[index]);
        assert_eq!(values.len(), expected.len());
        for (got, want) in values.iter().zip(&expected) {
            worst = worst.max((got - want).abs());
        }
    }
    assert!(
        worst < 0.02,
        "model values differ from ffmpeg's frames by up to {worst}"
    );
    let neighbours_differ = one.iter().any(|line| {
        let index = line["frame"].as_u64().expect("frame") as usize;
        let near = grid(&decoded[index + 1]);
        let own = grid(&decoded[index]);
        near.iter().zip(&own).any(|(a, b)| (a - b).abs() > 0.05)
    });
    // The lines are about the frames they name: a neighbour would be told apart.
    assert!(
        neighbours_differ,
        "the clip's frames are too alike to tell them apart"
    );
}

#[test]
fn every_kth_frame_a_rate_and_explicit_times_pick_the_frames_shown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("grid.pt");
    grid_module(&module);
    let input = dir.path().join("in.mkv");
    encoded_clip(
        &input,
        &format!("size={WIDTH}x{HEIGHT}:rate=25"),
        6,
        false,
        &["-c:v", "libx264", "-g", "50", "-pix_fmt", "yuv420p"],
    );
    let frames = video_timing(&input).pts_seconds.len() as u64;
    let (every, _) = infer(
        &input,
        &dir.path().join("every.jsonl"),
        &module,
        &["--frames", "every:20", "--chunks", "2"],
    );
    assert_eq!(indices(&every), (0..frames).step_by(20).collect::<Vec<_>>());
    let (rate, _) = infer(
        &input,
        &dir.path().join("rate.jsonl"),
        &module,
        &["--frames", "fps:2"],
    );
    assert_eq!(
        indices(&rate),
        (0..frames)
            .step_by(25)
            .flat_map(|k| [k, k + 12])
            .filter(|&k| k < frames)
            .collect::<Vec<_>>()
    );
    let (at, _) = infer(
        &input,
        &dir.path().join("at.jsonl"),
        &module,
        &["--frames", "at:5.5,0.5,2.02,2.01", "--chunks", "2"],
    );
    // 0.5 s shows frame 12 (0.48 s), 2.01 and 2.02 s both frame 50, 5.5 s frame 137.
    assert_eq!(indices(&at), [12, 50, 137]);
    for (line, time) in at.iter().zip([0.48, 2.0, 5.48]) {
        assert!(
            (line["time"].as_f64().expect("time") - time).abs() < 1e-9,
            "{line}"
        );
    }
    let late = framefleet_local()
        .arg(&input)
        .arg(dir.path().join("late.jsonl"))
        .args(["--task", "infer", "--workers", "1", "--frames", "at:9"])
        .arg("--model")
        .arg(&module)
        .output()
        .expect("framefleet runs");
    let stderr = String::from_utf8_lossy(&late.stderr);
    assert!(!late.status.success());
    assert!(
        stderr.contains("no frame is shown at 9 s: the video ends at 6.000 s"),
        "{stderr}"
    );
}

#[test]
fn ten_frames_of_a_long_video_read_a_small_fraction_of_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("grid.pt");
    grid_module(&module);
    let input = dir.path().join("long.mp4");
    // Two minutes of 320x240 at 25 fps and 1 Mb/s, a keyframe every second, and sound.
    encoded_clip(
        &input,
        "size=320x240:rate=25",
        120,
        true,
        &[
            "-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-b:v", "1M", "-pix_fmt",
            "yuv420p", "-c:a", "aac",
        ],
    );
    let size = std::fs::metadata(&input).expect("input").len() as f64;
    let (lines, report) = infer(
        &input,
        &dir.path().join("ten.jsonl"),
        &module,
        &["--frames", "random:10", "--seed", "3", "--chunks", "2"],
    );
    assert_eq!(lines.len(), 10);
    let read = report["totals"]["input_bytes_read"]
        .as_f64()
        .expect("bytes read");
    let chunks_read = chunk_sum(&report, "bytes_read");
    eprintln!(
        "10 of 3000 frames: {read} bytes read of {size} ({:.3}), workers {chunks_read}, {}",
        read / size,
        report["chunks"]
    );
    assert!(
        read < size * 0.10,
        "read {read} bytes of a {size}-byte input"
    );
}

#[test]
fn several_videos_in_one_job_give_one_json_lines_file_each_with_the_same_frames() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("grid.pt");
    grid_module(&module);
    let inputs = ["first.mp4", "second.mkv", "third.mov"].map(|name| dir.path().join(name));
    for (input, seconds) in inputs.iter().zip([4, 6, 3]) {
        encoded_clip(
            input,
            &format!("size={WIDTH}x{HEIGHT}:rate=25"),
            seconds,
            false,
            &["-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p"],
        );
    }
    let choice = ["--frames", "random:6", "--seed", "5", "--window", "0.5:"];
    let (alone, _) = infer(
        &inputs[1],
        &dir.path().join("alone.jsonl"),
        &module,
        &choice,
    );
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).expect("output directory");
    let report = outdir.join("report.json");
    succeeds(
        framefleet_local()
            .args(&inputs)
            .arg(&outdir)
            .args(["--task", "infer", "--workers", "2", "--chunks", "2"])
            .arg("--model")
            .arg(&module)
            .arg("--report-json")
            .arg(&report)
            .args(choice)
            .env("FRAMEFLEET_WORKER__DEVICE", "cpu"),
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("JSON");
    assert_eq!(report["plan"]["chunks"], 6, "{}", report["plan"]);
    assert_eq!(report["inputs"].as_array().map(Vec::len), Some(3));
    for (input, stem) in inputs.iter().zip(["first", "second", "third"]) {
        let output = outdir.join(format!("{stem}.jsonl"));
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
            .unwrap_or_else(|e| panic!("{} not written: {e}", output.display()))
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        assert_eq!(lines.len(), 6, "{stem}");
        let uri = format!("file://{}", input.display());
        assert!(
            lines.iter().all(|l| l["input"] == uri.as_str()),
            "every line of {stem} names {uri}"
        );
        let times = video_timing(input).pts_seconds;
        for line in &lines {
            let index = line["frame"].as_u64().expect("frame") as usize;
            assert!((line["time"].as_f64().expect("time") - times[index]).abs() < 1e-3);
        }
        if stem == "second" {
            assert_eq!(
                indices(&lines),
                indices(&alone),
                "the same seed chose other frames of the same video in a job of several"
            );
        }
    }
}
