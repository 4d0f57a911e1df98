#!/usr/bin/env bash
# Benchmark: bytes read and chunk wall time with ranged reads against whole-object download.
# A 30 s 1280x720 clip with 2 s GOPs and audio (MP4, index at the end) is cut into 1, 2, 4
# and 8 chunks by `framefleet local` (lanczos 0.25x, x264 ultrafast, so reading and
# decoding dominate); each count runs once with ranged reads (the default) and once with
# `worker.whole_input_download`, where every chunk fetches the whole object as the system
# framefleet replaced did. Prints a table and writes bench/ranged.json.
# Usage: bench/ranged.sh   (SECONDS_OF_VIDEO=30 WORKERS=2 to change)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_OF_VIDEO="${SECONDS_OF_VIDEO:-30}"
WORKERS="${WORKERS:-2}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

scripts/setup.sh >/dev/null
cargo build --release --locked --bin framefleet >/dev/null 2>&1
FRAMEFLEET=target/release/framefleet

ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$SECONDS_OF_VIDEO" \
  -c:v libx264 -preset veryfast -g 60 -pix_fmt yuv420p -c:a aac -shortest "$WORK/input.mp4"

run() { # mode chunks
  local mode=$1 chunks=$2 whole=false
  [ "$mode" = whole ] && whole=true
  FRAMEFLEET_PLANNER__MAX_CHUNKS=8 FRAMEFLEET_WORKER__WHOLE_INPUT_DOWNLOAD=$whole "$FRAMEFLEET" local "$WORK/input.mp4" \
    "$WORK/out-$mode-$chunks.mp4" --workers "$WORKERS" --chunks "$chunks" --scale 0.25 \
    --crf 35 --preset ultrafast --report-json "$WORK/$mode-$chunks.json" >/dev/null 2>&1
}

for chunks in 1 2 4 8; do
  for mode in ranged whole; do
    run "$mode" "$chunks"
  done
done

python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
rows = []
for chunks in (1, 2, 4, 8):
    row = {"chunks": chunks}
    for mode in ("ranged", "whole"):
        report = json.load(open(f"{work}/{mode}-{chunks}.json"))
        totals = report["totals"]
        walls = [c["wall_seconds"] for c in report["chunks"]]
        row[mode] = {
            "workers_input_bytes": sum(c["bytes_read"] for c in report["chunks"]),
            "job_input_bytes": totals["input_bytes_read"],
            "input_size_bytes": totals["input_size_bytes"],
            "read_amplification": totals["read_amplification"],
            "requests": totals["requests"],
            "chunk_wall_seconds_mean": sum(walls) / len(walls),
            "chunk_wall_seconds_max": max(walls),
            "job_wall_seconds": totals["wall_seconds"],
        }
    rows.append(row)
print(f"{'N':>2} | {'ranged amp':>10} {'whole amp':>9} | {'ranged chunk s':>14} {'whole chunk s':>13} | {'ranged GETs':>11} {'whole GETs':>10}")
for row in rows:
    r, w = row["ranged"], row["whole"]
    print(f"{row['chunks']:>2} | {r['read_amplification']:>9.3f}x {w['read_amplification']:>8.3f}x | "
          f"{r['chunk_wall_seconds_mean']:>14.2f} {w['chunk_wall_seconds_mean']:>13.2f} | "
          f"{r['requests']:>11} {w['requests']:>10}")
json.dump(rows, open("bench/ranged.json", "w"), indent=2)
EOF
