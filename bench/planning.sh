#!/usr/bin/env bash
# Benchmark: how close the cost model's predictions land. A fresh cost history learns from
# a few `framefleet local` jobs of two kinds on 2 CPU workers: lanczos 2x (640x360 10 s and
# 960x540 6 s, each as 1 and 2 chunks) and Real-ESRGAN realesr-animevideov3-x2 (160x90
# 4 s as 1 and 2 chunks, 240x136 3 s as 1). Then, for a new job of each kind on a clip of
# another length and size (lanczos 800x450 8 s, neural 200x112 5 s), `framefleet plan`
# predicts every chunk count, `framefleet local` runs the count `auto` chooses and one
# other, and the predicted wall times are compared with the measured ones. Prints a table
# and writes bench/planning.json.
# Usage: bench/planning.sh   (needs scripts/setup.sh --torch; LIBTORCH as the README says)
set -euo pipefail
cd "$(dirname "$0")/.."

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cache="${FRAMEFLEET_CACHE:-$HOME/.cache/framefleet}"
export LIBTORCH="${LIBTORCH:-$cache/torch-2.11.0/torch}"
export LIBTORCH_CPU_ONLY="${LIBTORCH_CPU_ONLY:-1}"

scripts/setup.sh --torch >/dev/null
cargo build --release --locked --bin framefleet --features framefleet-cli/torch >/dev/null 2>&1
FRAMEFLEET=target/release/framefleet
"$FRAMEFLEET" models --model-dir "$WORK/models" import >/dev/null
export FRAMEFLEET_WORKER__MODEL_DIR="$WORK/models" FRAMEFLEET_WORKER__DEVICE=cpu
NEURAL=realesr-animevideov3-x2

clip() { # name size seconds
  ffmpeg -v error -y -f lavfi -i "testsrc2=size=$2:rate=30" -t "$3" -c:v libx264 -g 30 \
    -pix_fmt yuv420p "$WORK/$1.mp4"
}

run() { # clip model chunks(0: auto)
  local chunks=()
  [ "$3" = 0 ] || chunks=(--chunks "$3")
  "$FRAMEFLEET" local "$WORK/$1.mp4" "$WORK/$1-$3.mp4" --workers 2 --model "$2" \
    --preset veryfast --store "$WORK/history.sqlite3" "${chunks[@]}" \
    --report-json "$WORK/$1-$3.json" >/dev/null
}

plan() { # clip model
  "$FRAMEFLEET" plan "$WORK/$1.mp4" --workers 2 --model "$2" --preset veryfast \
    --store "$WORK/history.sqlite3" --json >"$WORK/$1-plan.json"
}

clip light-a 640x360 10; run light-a lanczos 1; run light-a lanczos 2
clip light-b 960x540 6; run light-b lanczos 1; run light-b lanczos 2
clip neural-a 160x90 4; run neural-a "$NEURAL" 1; run neural-a "$NEURAL" 2
clip neural-b 240x136 3; run neural-b "$NEURAL" 1

clip light-new 800x450 8
clip neural-new 200x112 5
for job in "light-new lanczos" "neural-new $NEURAL"; do
  set -- $job
  plan "$1" "$2"
  chosen=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["chosen"])' "$WORK/$1-plan.json")
  other=$([ "$chosen" = 1 ] && echo 2 || echo 1)
  run "$1" "$2" 0
  run "$1" "$2" "$other"
  echo "$1 $chosen $other" >>"$WORK/new-jobs"
done

python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
rows = []
for line in open(f"{work}/new-jobs"):
    name, chosen, other = line.split()
    plan = json.load(open(f"{work}/{name}-plan.json"))
    by_count = {c["chunks"]: c for c in plan["candidates"]}
    for chunks, tag in ((int(chosen), "0"), (int(other), other)):
        report = json.load(open(f"{work}/{name}-{tag}.json"))
        measured = report["totals"]["wall_seconds"]
        predicted = by_count[chunks]["wall_seconds"]
        rows.append({
            "job": name,
            "kind": plan["kind"],
            "chunks": chunks,
            "chosen": chunks == int(chosen),
            "predicted_wall_seconds": predicted,
            "measured_wall_seconds": measured,
            "error": (predicted - measured) / measured,
            "predicted_gpu_seconds": by_count[chunks]["gpu_seconds"],
            "measured_gpu_seconds": report["totals"]["gpu_seconds"],
        })
    rows[-2]["rule"] = plan["rule"]
print(f"{'job':<11} {'N':>2} {'chosen':>6} | {'predicted s':>11} {'measured s':>10} {'error':>7} | {'pred GPU-s':>10} {'meas GPU-s':>10}")
for r in rows:
    print(f"{r['job']:<11} {r['chunks']:>2} {str(r['chosen']):>6} | {r['predicted_wall_seconds']:>11.2f} "
          f"{r['measured_wall_seconds']:>10.2f} {r['error']*100:>6.1f}% | "
          f"{r['predicted_gpu_seconds']:>10.2f} {r['measured_gpu_seconds']:>10.2f}")
for r in rows:
    if "rule" in r:
        print(f"{r['job']}: {r['rule']}")
json.dump({"rows": rows}, open("bench/planning.json", "w"), indent=2)
EOF
