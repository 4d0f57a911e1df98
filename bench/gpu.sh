#!/usr/bin/env bash
# GPU model-stage benchmark, for a machine with CUDA PyTorch 2.11 and no Rust or FFmpeg:
# framefleet's libtorch networks (framefleet-model-bench, built elsewhere with
# `--features torch`, libtorch_cuda linked) against eager PyTorch running the same
# architectures and weights (bench/eager_realesrgan.py), 480x270 -> 1920x1080, in one run.
# usage: bench/gpu.sh DIR   (DIR holds framefleet-model-bench and the models' .param/.bin)
set -euo pipefail
dir=$1
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
run() {
  local model=$1 frames=$2
  for batch in 1 4 8; do
    "$dir/framefleet-model-bench" "$dir" "$model" 480 270 "$batch" "$frames" cuda
  done
  python3 "$(dirname "$0")/eager_realesrgan.py" "$dir/$model.param" "$dir/$model.bin" 480 270 "$frames" cuda
}
run realesr-animevideov3-x4 240
run realesrgan-x4plus 48
