#!/usr/bin/env bash
# Runs framefleet's main job on a sample clip with the embedded defaults: installs the
# Debian packages it needs, builds framefleet, makes a 10 s 640x360 clip with audio using
# FFmpeg's lavfi sources, and upscales it 2x with lanczos on 2 local workers.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
cargo build --release --locked --bin framefleet
mkdir -p demo
ffmpeg -v error -y -f lavfi -i testsrc2=size=640x360:rate=30 \
  -f lavfi -i sine=frequency=440:sample_rate=48000 -t 10 \
  -c:v libx264 -pix_fmt yuv420p -c:a aac -shortest demo/sample.mp4
target/release/framefleet local demo/sample.mp4 demo/sample-2x.mp4 \
  --workers 2 --scale 2 --report-json demo/report.json --report-html demo/report.html
