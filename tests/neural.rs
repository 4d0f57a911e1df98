//! Neural jobs end to end on CPU workers (`framefleet local`, real worker processes):
//! Real-ESRGAN animevideov3 x2 and x4 with real weights, and a TorchScript module the test
//! traces itself. Frame counts and timestamps stay exact, the size follows the model's
//! scale, with lossless encoding the frames do not depend on the chunk count, and the
//! upscaled frames are ncnn's on the same decoded frames, as close as 4:2:0 allows.

use framefleet_testkit as support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;
use tch::{CModule, Kind, Tensor};

/// Runs `framefleet local` with the models in `model_dir`; panics with its stderr on failure.
fn run_local(model_dir: &Path, input: &Path, output: &Path, model: &str, chunks: u32) {
    let result = framefleet_local()
        .arg(input)
        .arg(output)
        .args([
            "--model",
            model,
            "--lossless",
            "--preset",
            "ultrafast",
            "--workers",
            "2",
        ])
        .args(["--chunks", &chunks.to_string()])
        .env("FRAMEFLEET_WORKER__MODEL_DIR", model_dir)
        .env("FRAMEFLEET_WORKER__DEVICE", "cpu")
        .output()
        .expect("framefleet runs");
    assert!(
        result.status.success(),
        "{model} with {chunks} chunks failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

fn import_models(dir: &Path) -> PathBuf {
    support::import_models(dir, &framefleet_worker::models::default_wheel())
}

#[test]
fn real_esrgan_jobs_are_exact_and_independent_of_the_chunk_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let models = import_models(dir.path());
    let input = dir.path().join("anime.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=24",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "0.5",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "4",
        "-c:a",
        "aac",
        "-shortest",
        input.to_str().expect("utf-8"),
    ]);
    let mut hashes = Vec::new();
    for chunks in [1, 2] {
        let output = dir.path().join(format!("x2-{chunks}.mp4"));
        run_local(&models, &input, &output, "realesr-animevideov3-x2", chunks);
        assert_exact(&input, &output, (128, 96));
        hashes.push(frame_hashes(&output));
    }
    assert_eq!(hashes[0], hashes[1], "frames differ between 1 and 2 chunks");

    let tiny = dir.path().join("tiny.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=32x24:rate=10",
        "-frames:v",
        "3",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        tiny.to_str().expect("utf-8"),
    ]);
    let output = dir.path().join("x4.mp4");
    run_local(&models, &tiny, &output, "realesr-animevideov3-x4", 2);
    assert_exact(&tiny, &output, (128, 96));
}

/// What a person checking framefleet against Tencent's ncnn would do: decode the input to
/// RGB with the ffmpeg CLI, run the same weights through ncnn frame by frame, and compare
/// with the job's output decoded the same way. A 4:2:0 output cannot hold ncnn's RGB
/// exactly, so the bar is the reference's own trip through 4:2:0 and back (the best any
/// such output can do): framefleet must come within 0.25 dB of it. Converting the input
/// to RGB differently from FFmpeg's default (full chroma interpolation) costs 1.5 dB here.
#[test]
fn upscaled_frames_match_ncnn_run_on_the_frames_ffmpeg_decodes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let models = import_models(dir.path());
    let input = small_clip(dir.path(), 3);
    let output = dir.path().join("out.mp4");
    run_local(&models, &input, &output, "realesr-animevideov3-x2", 2);
    let (width, height) = (128, 96);
    let ours = rgb_frames(&output, width, height);
    let (param, bin) =
        framefleet_worker::models::installed_files(&models, "realesr-animevideov3-x2")
            .expect("installed");
    let decoded = rgb_frames(&input, 64, 48);
    assert_eq!(ours.len(), decoded.len());
    for (index, (frame, source)) in ours.iter().zip(&decoded).enumerate() {
        let reference = ncnn_upscale(&param, &bin, source, (64, 48), dir.path());
        assert_eq!(
            reference.len(),
            frame.len(),
            "frame {index}: size differs from ncnn's"
        );
        let best = psnr(
            &reference,
            &through_420(&reference, width, height, dir.path()),
        );
        let got = psnr(&reference, frame);
        println!("frame {index}: {got:.2} dB against ncnn, 4:2:0 bound {best:.2} dB");
        assert!(
            got >= best - 0.25,
            "frame {index}: {got:.2} dB against ncnn, the 4:2:0 bound is {best:.2} dB"
        );
    }
}

/// A 64x48 H.264 clip of `frames` frames at 10 fps, `in.mp4` in `dir`.
fn small_clip(dir: &Path, frames: u32) -> PathBuf {
    let input = dir.join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=10",
        "-frames:v",
        &frames.to_string(),
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        input.to_str().expect("utf-8"),
    ]);
    input
}

/// Every frame of `path` as packed RGB, as the ffmpeg CLI converts it by default.
fn rgb_frames(path: &Path, width: usize, height: usize) -> Vec<Vec<u8>> {
    raw_video(path, "null", "rgb24")
        .chunks_exact(width * height * 3)
        .map(<[u8]>::to_vec)
        .collect()
}

/// One packed RGB frame upscaled by ncnn (`tests/ncnn_reference.py`), rounded to 8 bits.
fn ncnn_upscale(
    param: &Path,
    bin: &Path,
    rgb: &[u8],
    size: (usize, usize),
    work: &Path,
) -> Vec<u8> {
    let (width, height) = size;
    let planar: Vec<u8> = (0..3)
        .flat_map(|channel| rgb.iter().skip(channel).step_by(3))
        .flat_map(|&v| (f32::from(v) / 255.0).to_le_bytes())
        .collect();
    let (source, target) = (work.join("frame.f32"), work.join("upscaled.f32"));
    std::fs::write(&source, planar).expect("write frame");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ncnn_reference.py");
    let run = Command::new("python3")
        .arg(script)
        .args([param, bin, &source])
        .args(["3", &height.to_string(), &width.to_string()])
        .arg(&target)
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "ncnn failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let values: Vec<u8> = std::fs::read(&target)
        .expect("ncnn output")
        .chunks_exact(4)
        .map(|b| {
            (f32::from_le_bytes([b[0], b[1], b[2], b[3]]).clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect();
    let plane = values.len() / 3;
    (0..plane)
        .flat_map(|i| [values[i], values[plane + i], values[2 * plane + i]])
        .collect()
}

/// A packed RGB frame after the ffmpeg CLI turns it into `yuv420p` and back.
fn through_420(rgb: &[u8], width: usize, height: usize, work: &Path) -> Vec<u8> {
    let (source, target) = (work.join("frame.rgb"), work.join("frame.yuv"));
    std::fs::write(&source, rgb).expect("write frame");
    let size = format!("{width}x{height}");
    let raw = |from: &Path, from_format: &str, to_format: &str, to: &str| {
        let output = succeeds(
            Command::new("ffmpeg")
                .args([
                    "-v",
                    "error",
                    "-y",
                    "-f",
                    "rawvideo",
                    "-pix_fmt",
                    from_format,
                    "-s",
                    &size,
                    "-i",
                ])
                .arg(from)
                .args(["-f", "rawvideo", "-pix_fmt", to_format, to]),
        );
        output.stdout
    };
    raw(&source, "rgb24", "yuv420p", target.to_str().expect("utf-8"));
    raw(&target, "yuv420p", "rgb24", "-")
}

/// Every frame of `path` through the ffmpeg `filter`, as raw `pixel_format`, one after
/// the other.
fn raw_video(path: &Path, filter: &str, pixel_format: &str) -> Vec<u8> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            filter,
            "-f",
            "rawvideo",
            "-pix_fmt",
            pixel_format,
            "-",
        ])
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "decoding {} failed",
        path.display()
    );
    output.stdout
}

#[test]
fn a_torchscript_module_runs_as_a_job_and_matches_the_model_applied_directly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module_path = dir.path().join("mirror.pt");
    trace_mirror(&module_path);

    let input = dir.path().join("in.mp4");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=96x64:rate=25",
        "-t",
        "0.4",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        input.to_str().expect("utf-8"),
    ]);
    let output = dir.path().join("out.mp4");
    run_local(
        dir.path(),
        &input,
        &output,
        module_path.to_str().expect("utf-8"),
        2,
    );
    assert_exact(&input, &output, (96, 64));
    assert_mirrored(&input, &output);
}

/// Checks that `output`'s frames are `input`'s mirrored left to right (within what
/// lossless 4:2:0 round trips allow).
fn assert_mirrored(input: &Path, output: &Path) {
    let ours = raw_video(output, "null", "gray");
    let expected = raw_video(input, "hflip", "gray");
    assert_eq!(ours.len(), expected.len());
    let mean = ours
        .iter()
        .zip(&expected)
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / ours.len() as f64;
    assert!(
        mean < 1.5,
        "the job's frames are not the input mirrored (mean luma difference {mean})"
    );
}

/// Saves a TorchScript module that mirrors frames left to right.
fn trace_mirror(path: &Path) {
    let example = Tensor::zeros([1, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let mut mirror = |inputs: &[Tensor]| vec![inputs[0].flip([3])];
    CModule::create_by_tracing("Mirror", "forward", &[example], &mut mirror)
        .expect("traces")
        .save(path)
        .expect("saves");
}

/// The mirror module saved at `traced`, rewritten into `out` so that a batch of more than
/// one frame raises `message` as libtorch raises its errors (a TorchScript archive holds
/// its code as text, compiled again when loaded).
fn mirror_failing_on_batches(traced: &Path, out: &Path, message: &str) {
    let script = r#"
import sys, zipfile
source, target, message = sys.argv[1:4]
raise_line = (
    "    if torch.gt(torch.size(argument_1, 0), 1):\n"
    f"      ops.prim.RaiseException({message!r}, \"builtins.RuntimeError\")\n"
    "    else:\n      pass\n"
)
with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
    for entry in old.infolist():
        data = old.read(entry.filename)
        if entry.filename.endswith(".debug_pkl"):
            continue
        if entry.filename.endswith("code/__torch__.py"):
            code = data.decode()
            assert "    return torch.flip" in code, code
            data = code.replace("    return torch.flip", raise_line + "    return torch.flip").encode()
        new.writestr(entry.filename, data)
"#;
    let run = Command::new("python3")
        .args(["-c", script])
        .args([traced, out])
        .arg(message)
        .output()
        .expect("python3 runs");
    assert!(
        run.status.success(),
        "rewriting the module failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// A batch that runs out of device memory (simulated: the module raises libtorch's CUDA
/// out-of-memory error for any batch of more than one frame) is run again in smaller
/// batches: the job succeeds with every frame processed. The same module raising any
/// other error for those batches fails the job, which shows the worker did send it
/// batches of several frames (`worker.batch_frames` is 4).
#[test]
fn a_batch_out_of_device_memory_is_shrunk_and_run_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = small_clip(dir.path(), 12);
    let traced = dir.path().join("mirror.pt");
    trace_mirror(&traced);
    let oom = dir.path().join("oom.pt");
    mirror_failing_on_batches(
        &traced,
        &oom,
        "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.74 GiB total capacity)",
    );
    let output = dir.path().join("out.mp4");
    run_local(dir.path(), &input, &output, oom.to_str().expect("utf-8"), 1);
    assert_exact(&input, &output, (64, 48));
    assert_mirrored(&input, &output);

    let broken = dir.path().join("broken.pt");
    mirror_failing_on_batches(&traced, &broken, "shape mismatch in layer 3");
    let stderr = failing_local(&input, broken.to_str().expect("utf-8"), "cpu");
    assert!(stderr.contains("shape mismatch in layer 3"), "{stderr}");
}

/// A TorchScript module that is missing or is not one fails the job at once (no retry on
/// other workers: they read the same path) with one line naming the file and the fix,
/// without libtorch's C++ backtrace.
#[test]
fn a_module_that_cannot_be_loaded_fails_the_job_at_once_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = small_clip(dir.path(), 4);
    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, "not a module").expect("write");
    let missing = dir.path().join("missing.pt");
    for (module, reason) in [(&garbage, "not a ZIP archive"), (&missing, "No such file")] {
        let stderr = failing_local(&input, module.to_str().expect("utf-8"), "cpu");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains(&format!(
                "cannot load the TorchScript module {}",
                module.display()
            )) && last.contains(reason)
                && last.contains("torch.jit.save"),
            "{stderr}"
        );
        assert!(!stderr.contains("Exception raised from"), "{stderr}");
        assert!(!stderr.contains("attempt failed"), "retried: {stderr}");
    }
}

/// A worker whose settings cannot work (a GPU this machine does not have) fails as it
/// starts; `framefleet local` stops at once with the worker's own reason instead of
/// starting replacements that fail the same way, forever.
#[test]
fn a_worker_that_cannot_start_stops_the_job_with_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = small_clip(dir.path(), 2);
    let started = std::time::Instant::now();
    let stderr = failing_local(&input, "lanczos", "cuda:99");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("could not start") && last.contains("worker.device is cuda:99"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// Runs `framefleet local` on `input` with `model` on `device`, expecting it to fail;
/// returns what it printed on stderr.
fn failing_local(input: &Path, model: &str, device: &str) -> String {
    let output = input.with_file_name("failed.mp4");
    let result = framefleet_local()
        .arg(input)
        .arg(output)
        .args(["--model", model])
        .env("FRAMEFLEET_WORKER__DEVICE", device)
        .output()
        .expect("framefleet runs");
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(!result.status.success(), "{stderr}");
    stderr
}

/// Runs an infer job through `framefleet local` and returns its JSON lines.
fn infer_lines(
    input: &Path,
    output: &Path,
    module: &Path,
    chunks: u32,
    top_k: u32,
) -> Vec<serde_json::Value> {
    succeeds(
        framefleet_local()
            .arg(input)
            .arg(output)
            .args(["--task", "infer", "--workers", "2"])
            .arg("--model")
            .arg(module)
            .args([
                "--chunks",
                &chunks.to_string(),
                "--top-k",
                &top_k.to_string(),
            ])
            .env("FRAMEFLEET_WORKER__DEVICE", "cpu"),
    );
    std::fs::read_to_string(output)
        .expect("output written")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

#[test]
fn infer_jobs_write_one_line_per_frame_in_order_whatever_the_chunk_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = dir.path().join("mean-colour.pt");
    let example = Tensor::zeros([2, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let mut mean =
        |inputs: &[Tensor]| vec![inputs[0].mean_dim([2i64, 3].as_slice(), false, Kind::Float)];
    CModule::create_by_tracing("MeanColour", "forward", &[example], &mut mean)
        .expect("traces")
        .save(&module)
        .expect("saves");
    let input = dir.path().join("in.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=64x48:rate=25",
        "-t",
        "1.2",
        "-vf",
        "select='not(eq(n\\,7))'",
        "-vsync",
        "vfr",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "6",
        input.to_str().expect("utf-8"),
    ]);
    let expected = video_timing(&input).pts_seconds;
    let one = infer_lines(&input, &dir.path().join("one.jsonl"), &module, 1, 0);
    let two = infer_lines(&input, &dir.path().join("two.jsonl"), &module, 2, 0);
    assert_eq!(one.len(), expected.len(), "one line per input frame");
    for (index, (line, time)) in one.iter().zip(&expected).enumerate() {
        assert_eq!(line["frame"].as_u64(), Some(index as u64));
        let seconds = line["time"].as_f64().expect("time");
        assert!(
            (seconds - time).abs() < 1e-3,
            "frame {index} at {seconds} s, input at {time} s"
        );
        let values = line["values"].as_array().expect("values");
        assert_eq!(values.len(), 3);
        assert!(values
            .iter()
            .all(|v| v.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v))));
    }
    assert_eq!(one, two, "lines differ between 1 and 2 chunks");
    let top = infer_lines(&input, &dir.path().join("top.jsonl"), &module, 2, 1);
    assert_eq!(top.len(), expected.len());
    assert!(top
        .iter()
        .all(|l| l["top"].as_array().map(Vec::len) == Some(1)));
}
