#!/usr/bin/env bash
# Benchmark: the same lanczos 2x upscale and x264 encode of a 1280x720 clip with audio, done
# by plain ffmpeg and by `framefleet local` with 1 worker / 1 chunk and 2 workers / 2 chunks,
# in one run. Prints a table and writes bench/results.json. Figures are ratios against the
# ffmpeg baseline measured in the same run.
# Usage: bench/run.sh   (SECONDS_OF_VIDEO=30 PRESET=veryfast CRF=18 REPEAT=1 to change)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_OF_VIDEO="${SECONDS_OF_VIDEO:-30}"
PRESET="${PRESET:-veryfast}"
CRF="${CRF:-18}"
REPEAT="${REPEAT:-1}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

scripts/setup.sh >/dev/null
cargo build --release --locked --bin framefleet >/dev/null 2>&1
FRAMEFLEET=target/release/framefleet

ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30" \
  -f lavfi -i "sine=frequency=440:sample_rate=48000" -t "$SECONDS_OF_VIDEO" \
  -c:v libx264 -preset veryfast -pix_fmt yuv420p -c:a aac -shortest "$WORK/input.mp4"

now() { date +%s.%N; }

# Best wall time of REPEAT runs of a command.
best_of() {
  local best=""
  for _ in $(seq "$REPEAT"); do
    local start end elapsed
    start=$(now)
    "$@" >/dev/null 2>&1
    end=$(now)
    elapsed=$(echo "$end - $start" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$elapsed < $best" | bc -l)" = 1 ]; then best=$elapsed; fi
  done
  echo "$best"
}

ffmpeg_run() {
  ffmpeg -v error -y -i "$WORK/input.mp4" \
    -vf "scale=iw*2:ih*2:flags=lanczos+accurate_rnd+full_chroma_int,format=yuv420p" \
    -c:v libx264 -preset "$PRESET" -crf "$CRF" -c:a copy "$WORK/ffmpeg.mp4"
}

framefleet_run() {
  local workers=$1
  "$FRAMEFLEET" local "$WORK/input.mp4" "$WORK/framefleet-$workers.mp4" \
    --workers "$workers" --chunks "$workers" --scale 2 --crf "$CRF" --preset "$PRESET" \
    --report-json "$WORK/report-$workers.json"
}

baseline=$(best_of ffmpeg_run)
one=$(best_of framefleet_run 1)
two=$(best_of framefleet_run 2)

frames=$(ffprobe -v error -select_streams v -count_packets -show_entries stream=nb_read_packets \
  -of csv=p=0 "$WORK/input.mp4")
ratio() { echo "scale=3; $1 / $baseline" | bc -l; }

printf '%-34s %10s %10s\n' "run" "wall s" "vs ffmpeg"
printf '%-34s %10.2f %10s\n' "ffmpeg (lanczos 2x, x264 $PRESET)" "$baseline" "1.000"
printf '%-34s %10.2f %10s\n' "framefleet local 1 worker/1 chunk" "$one" "$(ratio "$one")"
printf '%-34s %10.2f %10s\n' "framefleet local 2 workers/2 chunks" "$two" "$(ratio "$two")"

cat > bench/results.json <<JSON
{
  "machine": "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB",
  "input": {"width": 1280, "height": 720, "seconds": $SECONDS_OF_VIDEO, "frames": $frames, "audio": "aac"},
  "work": {"scale": 2, "filter": "lanczos", "encoder": "libx264", "preset": "$PRESET", "crf": $CRF},
  "repeat": $REPEAT,
  "wall_seconds": {"ffmpeg": $baseline, "framefleet_1x1": $one, "framefleet_2x2": $two},
  "ratio_vs_ffmpeg": {"framefleet_1x1": $(ratio "$one"), "framefleet_2x2": $(ratio "$two")}
}
JSON
echo "wrote bench/results.json"
