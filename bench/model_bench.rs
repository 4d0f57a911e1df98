//! `framefleet-model-bench`: frames per second of framefleet's neural processing stage on
//! libtorch, without FFmpeg, so it runs wherever libtorch does (the GPU machines carry
//! PyTorch's libtorch but no FFmpeg).
//!
//! Two figures per run, both after warm-up and with the device synchronised:
//! - `model_fps`: the network alone on a batch already on the device;
//! - `stage_fps`: what the worker's process stage does per batch: 8-bit RGB frames from
//!   the host, to the device, fp16 (CUDA) or fp32 (CPU), the network, conversion to 8-bit
//!   YUV 4:2:0 on the device, and the copy back.
//!
//! usage: framefleet-model-bench MODEL_DIR MODEL WIDTH HEIGHT BATCH FRAMES cpu|cuda
//! Prints one JSON line.

use std::time::Instant;

use anyhow::Context as _;
use framefleet_worker::models;
use framefleet_worker::models::colour::{rgb_to_yuv420, Matrix};
use framefleet_worker::models::network::Network;
use tch::{Device, Kind, Tensor};

fn sync(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 8,
        "usage: framefleet-model-bench MODEL_DIR MODEL WIDTH HEIGHT BATCH FRAMES cpu|cuda"
    );
    let number = |i: usize| -> anyhow::Result<i64> {
        args[i]
            .parse()
            .with_context(|| format!("argument {i} must be a number"))
    };
    let (width, height, batch, frames) = (number(3)?, number(4)?, number(5)?, number(6)?);
    let device = if args[7] == "cuda" {
        Device::Cuda(0)
    } else {
        Device::Cpu
    };
    let kind = if device.is_cuda() {
        Kind::Half
    } else {
        Kind::Float
    };
    let info = models::find(&args[2]).context("unknown model")?;
    let (param, bin) = models::installed_files(std::path::Path::new(&args[1]), info.name)?;

    let started = Instant::now();
    let network = Network::from_ncnn(info, &param, &bin, device, kind)?;
    let load_seconds = started.elapsed().as_secs_f64();

    let pixels: Vec<u8> = (0..(batch * height * width * 3) as usize)
        .map(|i| ((i * 2_654_435_761) >> 13) as u8)
        .collect();
    let host = Tensor::from_slice(&pixels).view([batch, height, width, 3]);
    let stage = |network: &Network| -> anyhow::Result<usize> {
        let input = host
            .f_to_device(device)?
            .f_permute([0, 3, 1, 2])?
            .f_to_kind(kind)?
            .f_div_scalar(255.0)?;
        let output = network.forward(&input)?;
        let planes = rgb_to_yuv420(&output, Matrix::Bt709)?;
        Ok(planes.y.len())
    };
    let on_device = host
        .to_device(device)
        .permute([0, 3, 1, 2])
        .to_kind(kind)
        .divide_scalar(255.0);
    for _ in 0..2 {
        stage(&network)?;
    }
    sync(device);
    let rounds = (frames / batch).max(1);

    let started = Instant::now();
    for _ in 0..rounds {
        let _ = network.forward(&on_device)?;
    }
    sync(device);
    let model_fps = (rounds * batch) as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut luma = 0;
    for _ in 0..rounds {
        luma += stage(&network)?;
    }
    sync(device);
    let stage_fps = (rounds * batch) as f64 / started.elapsed().as_secs_f64();

    println!(
        "{}",
        serde_json::json!({
            "runtime": "framefleet (tch, libtorch)",
            "model": info.name,
            "device": if device.is_cuda() { "cuda" } else { "cpu" },
            "dtype": if device.is_cuda() { "fp16" } else { "fp32" },
            "input": [width, height],
            "output": [width * i64::from(info.scale), height * i64::from(info.scale)],
            "batch": batch,
            "frames": rounds * batch,
            "load_seconds": load_seconds,
            "model_fps": model_fps,
            "stage_fps": stage_fps,
            "luma_bytes": luma,
        })
    );
    Ok(())
}
