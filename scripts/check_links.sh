#!/usr/bin/env bash
# Builds framefleet's binaries with the default features and fails if any of them needs a
# CUDA or NVIDIA driver library to load. The default build must run on any machine: the
# GPU video engines (NVENC, NVDEC) are reached through FFmpeg, which loads the driver's
# libraries at run time only where they exist, and CUDA libtorch comes only with the
# `torch` feature. Prints each binary's verdict.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked --workspace --bins
# Library names, as the dynamic loader resolves them for each binary (ldd follows the
# libraries' own dependencies too).
gpu_libraries='^(libcuda|libcudart|libcublas|libcudnn|libcufft|libcurand|libcusparse|libnvrtc|libnvidia-|libnvcuvid|libcupti|libnvToolsExt|libtorch_cuda|libc10_cuda)'
failed=0
for binary in framefleet framefleet-orchestrator framefleet-worker; do
    path="target/debug/$binary"
    needed=$(ldd "$path" | awk '{print $1}')
    if found=$(grep -E "$gpu_libraries" <<<"$needed"); then
        echo "check_links: $binary needs GPU libraries to start: $(tr '\n' ' ' <<<"$found")" >&2
        failed=1
    else
        echo "check_links: $binary ($(wc -l <<<"$needed") libraries) needs no CUDA or driver library"
    fi
done
exit "$failed"
