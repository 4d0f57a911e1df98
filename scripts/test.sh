#!/usr/bin/env bash
# Installs what the tests need (scripts/setup.sh --garage), then checks formatting and
# lints and runs every test. The end-to-end tests start their own Garage S3 server on
# 127.0.0.1 and real framefleet processes.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh --garage
export GARAGE_BIN="${GARAGE_BIN:-${FRAMEFLEET_CACHE:-$HOME/.cache/framefleet}/garage-2.5.0/bin/garage}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
