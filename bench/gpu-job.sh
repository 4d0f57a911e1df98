#!/usr/bin/env bash
# Whole-job GPU benchmark, on a lent GPU machine (CUDA PyTorch 2.11, no Rust, no FFmpeg):
# framefleet local (one CUDA worker, fp16, batched, colour conversion on the GPU, decode /
# model / encode overlapped) against eager PyTorch running the same architecture and
# weights the way Real-ESRGAN's own video script does (bench/eager_job.py), on the same
# 480x270 clip to 1920x1080, same x264 settings, in one run. Prints a table and one JSON
# line per run, and writes OUTDIR/gpu-job.json.
# usage: bench/gpu-job.sh KIT OUTDIR [SECONDS] [MODELS...]
#   KIT: what bench/gpu-kit.sh packed (kit.tar.xz, models/)
# With the device tool: run bench/gpu-kit.sh .gpu/kit here, then on the GPU machine
#   bench/gpu-job.sh .gpu/kit $OUT 10 realesr-animevideov3-x4 realesrgan-x4plus
# carrying .gpu/kit (about 43 MB).
set -euo pipefail
kit=$(cd "$1" && pwd)
outdir=$2
seconds=${3:-10}
shift $(( $# < 3 ? $# : 3 ))
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(realesr-animevideov3-x4)
bench=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
mkdir -p "$outdir"
tar xJf "$kit/kit.tar.xz" -C "$work"
torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$work/lib:$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FRAMEFLEET_WORKER__MODEL_DIR="$kit/models"
ff=$work/bin/ffmpeg
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
nproc

clip=$work/clip.mp4
"$ff" -v error -f lavfi -i "testsrc2=size=480x270:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
  -t "$seconds" -c:v libx264 -preset veryfast -g 60 -pix_fmt yuv420p -c:a aac -shortest "$clip"
frames=$(( seconds * 30 ))

results=()
run() {
  local name=$1; shift
  local started ended
  started=$(date +%s.%N)
  "$@"
  ended=$(date +%s.%N)
  local wall
  wall=$(python3 -c "print(round($ended - $started, 3))")
  echo "$name: $wall s"
  results+=("{\"run\": \"$name\", \"wall_seconds\": $wall, \"frames\": $frames}")
}

for model in "${models[@]}"; do
  run "eager PyTorch, $model" python3 "$bench/eager_job.py" "$ff" \
    "$kit/models/$model.param" "$kit/models/$model.bin" "$clip" "$work/eager-$model.mp4" 480 270 30 cuda veryfast 18
  for workers in 1 2; do
    run "framefleet, $model, $workers worker(s) on the GPU" "$work/bin/framefleet" local "$clip" \
      "$work/ff-$model-$workers.mp4" --model "$model" --workers "$workers" --chunks "$workers" \
      --crf 18 --preset veryfast --report-json "$outdir/report-$model-$workers.json"
  done
done

python3 - "$outdir/gpu-job.json" "${results[@]}" <<'EOF'
import json, sys
rows = [json.loads(r) for r in sys.argv[2:]]
baseline = {}
for row in rows:
    model = row["run"].split(", ")[1]
    if row["run"].startswith("eager"):
        baseline[model] = row["wall_seconds"]
    row["fps"] = row["frames"] / row["wall_seconds"]
    row["vs_eager"] = baseline.get(model, row["wall_seconds"]) / row["wall_seconds"]
print(f"{'run':<58} {'wall s':>8} {'fps':>7} {'vs eager':>9}")
for row in rows:
    print(f"{row['run']:<58} {row['wall_seconds']:>8.2f} {row['fps']:>7.1f} {row['vs_eager']:>8.2f}x")
json.dump(rows, open(sys.argv[1], "w"), indent=1)
EOF
