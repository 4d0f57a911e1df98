#!/usr/bin/env bash
# Installs what the tests need (scripts/setup.sh --garage --torch --clients), then checks
# formatting and lints, the Kubernetes manifests (scripts/check_deploy.py), that the
# default build links no CUDA or driver library (scripts/check_links.sh), and runs every
# test. The end-to-end tests start their own Garage S3 server on 127.0.0.1 and real
# framefleet processes.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --garage --torch --clients
cache="${FRAMEFLEET_CACHE:-$HOME/.cache/framefleet}"
export GARAGE_BIN="${GARAGE_BIN:-$cache/garage-2.5.0-metrics/bin/garage}"
# The neural processors (feature `torch`) build against the cached libtorch; its CUDA half
# is not installed here, so the binaries are linked CPU-only.
export LIBTORCH="${LIBTORCH:-$cache/torch-2.11.0/torch}"
export LIBTORCH_CPU_ONLY="${LIBTORCH_CPU_ONLY:-1}"

cargo fmt --all -- --check
python3 scripts/check_deploy.py
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
scripts/check_links.sh
# The end-to-end tests (tests/, their own crate) run the framefleet binary: build it first.
cargo build --workspace --all-features --locked --bins
cargo test --workspace --all-features --locked
