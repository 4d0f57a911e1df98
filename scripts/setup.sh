#!/usr/bin/env bash
# Installs what framefleet needs on a Debian 12 machine: FFmpeg's libraries and CLI, protoc
# and libclang from Debian, and (with --garage) the Garage S3 server used by the tests,
# built from crates.io once and cached under ~/.cache/framefleet.
# Usage: scripts/setup.sh [--garage]
set -euo pipefail

CACHE="${FRAMEFLEET_CACHE:-$HOME/.cache/framefleet}"
GARAGE_VERSION=2.5.0
PACKAGES=(ffmpeg libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev
  libavfilter-dev libavdevice-dev libclang-dev pkg-config protobuf-compiler bc)

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

if [ "${1:-}" = "--garage" ]; then
  garage="$CACHE/garage-$GARAGE_VERSION/bin/garage"
  if [ ! -x "$garage" ]; then
    echo "setup: building Garage $GARAGE_VERSION into $CACHE (about 7 minutes on 2 cores, once)"
    cargo install "garage@$GARAGE_VERSION" --locked --no-default-features \
      --features bundled-libs,lmdb --root "$CACHE/garage-$GARAGE_VERSION" --quiet
  fi
  echo "setup: Garage at $garage"
fi
