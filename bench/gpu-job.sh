#!/usr/bin/env bash
# Whole-job GPU benchmark, on a lent GPU machine (CUDA PyTorch 2.11, no Rust, no FFmpeg),
# all in one run so the ratios compare like with like. For each model and input size:
#   eager PyTorch   the same architecture and weights run the way Real-ESRGAN's own video
#                   script runs them (bench/eager_job.py: ffmpeg decode pipe, one frame at a
#                   time in fp16, 8-bit RGB on the host, ffmpeg libx264 encode pipe);
#   framefleet      `framefleet local`, one worker with one slot, one chunk;
#   shared GPU      one worker with SLOTS slots on the one GPU (worker.gpus = 1), SLOTS
#                   chunks, one loaded model serving them; for the 480x270 cases also SLOTS
#                   workers, one model each (is a model per slot faster?);
#   encoder alone   ffmpeg writing the same output (framefleet's frames, decoded to raw
#                   yuv420p beforehand) with the same encoder settings: the ceiling.
# Then, once: framefleet with NVDEC off (the decoder each chunk reports, and the frames'
# PSNR against NVDEC's); NVENC where the GPU has it (h264_nvenc, against its own
# encoder-alone ceiling); and an infer job, a TorchScript classifier
# (bench/make_classifier.py) on 1080p input, against eager PyTorch
# (bench/eager_infer.py). Every framefleet output is checked: its frame count and every
# frame time equal the input's; and for each model a 4-frame 480x270 clip is run on the GPU
# and on the CPU path, lossless, and their frames compared (PSNR, stated bound 40 dB: the
# GPU runs fp16). Framefleet's seconds are the job's (submit to stitched output, model load
# included, the local processes' start not), eager PyTorch's its own run (model load
# included, Python's imports not), the encoder's its process. Prints a table and writes
# OUTDIR/gpu-job.json (one row per run; rows.jsonl as they come) and OUTDIR/checks.jsonl.
# usage: bench/gpu-job.sh KIT OUTDIR [FRAMES]
#   KIT: what bench/gpu-kit.sh packed (kit.tar.xz, models/)
#   FRAMES: frames of every clip (default: each case's own, sized so the whole set runs in
#   under ten minutes on an H100)
# env: BENCH_DEVICE=cpu runs it all on the CPU path (to prove the script on a machine
#   without a GPU), BENCH_SLOTS (default 4) the chunks sharing the GPU, BENCH_FRAMEFLEET a
#   framefleet to run instead of the kit's, BENCH_MODELS the models to run (default all
#   three; the NVDEC, NVENC and infer runs are always made).
# With the device tool: run bench/gpu-kit.sh .gpu/kit here, then on the GPU machine
#   bench/gpu-job.sh .gpu/kit $OUT
# carrying .gpu/kit (about 45 MB).
set -euo pipefail
kit=$(cd "$1" && pwd)
mkdir -p "$2"
outdir=$(cd "$2" && pwd)
frames_override=${3:-}
device=${BENCH_DEVICE:-cuda}
slots=${BENCH_SLOTS:-4}
read -r -a models <<<"${BENCH_MODELS:-realesr-animevideov3-x2 realesr-animevideov3-x4 realesrgan-x4plus}"
bench=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar xJf "$kit/kit.tar.xz" -C "$work"
if torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
  have_torch=true
  export LD_LIBRARY_PATH="$work/lib:$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
else
  have_torch=false
  echo "no PyTorch here: the eager runs and the infer job are left out"
  export LD_LIBRARY_PATH="$work/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
export FRAMEFLEET_WORKER__MODEL_DIR="$kit/models"
[ "$device" = cpu ] && export FRAMEFLEET_WORKER__DEVICE=cpu
ff=$work/bin/ffmpeg
ffprobe=$work/bin/ffprobe
framefleet=${BENCH_FRAMEFLEET:-$work/bin/framefleet}
checks=$outdir/checks.jsonl
: >"$checks"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
echo "cores: $(nproc); device: $device; slots sharing: $slots"

rows=()
: >"$outdir/rows.jsonl"
# record CASE RUN SECONDS FRAMES [EXTRA-JSON-FIELDS]: one row of the table, also appended
# to OUTDIR/rows.jsonl at once (a run cut short still leaves what it measured).
record() {
  rows+=("{\"case\": \"$1\", \"run\": \"$2\", \"seconds\": $3, \"frames\": $4${5:+, $5}}")
  echo "${rows[-1]}" >>"$outdir/rows.jsonl"
  echo "$1 | $2: $3 s"
}
now() { date +%s.%N; }
since() { python3 -c "print(round($(now) - $1, 3))"; }
# report_field REPORT FIELD: a field of a cost report's totals.
report_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['totals'].get(sys.argv[2], 0))" "$1" "$2"; }
chunk_field() { python3 -c "import json,sys; print(','.join(sorted({c.get(sys.argv[2], '') for c in json.load(open(sys.argv[1]))['chunks']})))" "$1" "$2"; }

# clip WIDTH HEIGHT FRAMES PATH: testsrc2 at 30 fps with AAC audio, x264, 2 s GOPs.
clip() {
  "$ff" -v error -y -f lavfi -i "testsrc2=size=$1x$2:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -frames:v "$3" -c:v libx264 -preset veryfast -g 60 -pix_fmt yuv420p -c:a aac -shortest "$4"
}

# framefleet_job CASE RUN FRAMES INPUT OUTPUT REPORT ARGS...: one `framefleet local` job,
# its output checked against its input.
framefleet_job() {
  local case=$1 run=$2 frames=$3 input=$4 output=$5 report=$6
  shift 6
  local started
  started=$(now)
  "$framefleet" local "$input" "$output" --report-json "$report" "$@"
  local process
  process=$(since "$started")
  record "$case" "$run" "$(report_field "$report" wall_seconds)" "$frames" \
    "\"process_seconds\": $process, \"gpu_seconds\": $(report_field "$report" gpu_seconds), \"encoder\": \"$(chunk_field "$report" encoder)\", \"decoder\": \"$(chunk_field "$report" decoder)\", \"chunks\": $(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['chunks']))" "$report")"
  case $output in
    *.jsonl) ;;
    *) python3 "$bench/job_checks.py" exact "$ffprobe" "$input" "$output" | tee -a "$checks" ;;
  esac
}

# eager_baseline CASE FRAMES SCRIPT ARGS...: an eager PyTorch baseline; its seconds are the
# ones it measured itself (the last line it prints).
eager_baseline() {
  local case=$1 frames=$2 script=$3
  shift 3
  local started eager
  started=$(now)
  eager=$(python3 "$script" "$@" | tail -1)
  record "$case" "eager PyTorch" "$(python3 -c "import json,sys; print(round(json.loads(sys.argv[1])['seconds'], 3))" "$eager")" \
    "$frames" "\"process_seconds\": $(since "$started")"
}

# encoder_alone CASE FRAMES FROM ENCODER-ARGS...: ffmpeg encoding FROM's frames (decoded
# to raw beforehand, not timed) with the given encoder settings.
encoder_alone() {
  local case=$1 frames=$2 from=$3
  shift 3
  local raw=$work/raw.yuv size
  size=$("$ffprobe" -v error -select_streams v:0 -show_entries stream=width,height -of csv=s=x:p=0 "$from")
  "$ff" -v error -y -i "$from" -f rawvideo -pix_fmt yuv420p "$raw"
  local started
  started=$(now)
  "$ff" -v error -y -f rawvideo -pix_fmt yuv420p -s "$size" -r 30 -i "$raw" "$@" "$work/alone.mp4"
  record "$case" "encoder alone" "$(since "$started")" "$frames" "\"size\": \"$size\""
  rm -f "$raw"
}

x264=(-c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p)
# model, input size, frames (whole set under ten minutes on an H100).
cases=(
  "realesr-animevideov3-x2 480 270 300"
  "realesr-animevideov3-x2 960 540 150"
  "realesr-animevideov3-x4 480 270 300"
  "realesr-animevideov3-x4 960 540 120"
  "realesrgan-x4plus 480 270 60"
  "realesrgan-x4plus 960 540 24"
)
for entry in "${cases[@]}"; do
  read -r model width height frames <<<"$entry"
  [[ " ${models[*]} " == *" $model "* ]] || continue
  frames=${frames_override:-$frames}
  case="$model ${width}x${height}"
  input=$work/in-$width.mp4
  clip "$width" "$height" "$frames" "$input"
  out=$work/$model-$width
  if $have_torch; then
    eager_baseline "$case" "$frames" "$bench/eager_job.py" "$ff" "$kit/models/$model.param" "$kit/models/$model.bin" \
      "$input" "$out-eager.mp4" "$width" "$height" 30 "$device" veryfast 18
  fi
  framefleet_job "$case" "framefleet, 1 slot" "$frames" "$input" "$out-1.mp4" "$outdir/report-$model-$width-1.json" \
    --model "$model" --workers 1 --chunks 1 --crf 18 --preset veryfast
  FRAMEFLEET_WORKER__SLOTS=$slots FRAMEFLEET_WORKER__GPUS=1 framefleet_job "$case" "framefleet, $slots slots, 1 model" \
    "$frames" "$input" "$out-shared.mp4" "$outdir/report-$model-$width-shared.json" \
    --model "$model" --workers 1 --chunks "$slots" --crf 18 --preset veryfast
  if [ "$width" = 480 ]; then
    framefleet_job "$case" "framefleet, $slots workers, $slots models" "$frames" "$input" "$out-workers.mp4" \
      "$outdir/report-$model-$width-workers.json" \
      --model "$model" --workers "$slots" --chunks "$slots" --crf 18 --preset veryfast
  fi
  encoder_alone "$case" "$frames" "$out-shared.mp4" "${x264[@]}"
  if $have_torch; then
    python3 "$bench/job_checks.py" psnr "$ff" "$out-eager.mp4" "$out-1.mp4" | tee -a "$checks"
  fi
  rm -f "$out"-*.mp4
done

# Each model on the GPU against the CPU path, lossless, on 4 frames.
short=$work/short.mp4
clip 480 270 4 "$short"
for model in "${models[@]}"; do
  "$framefleet" local "$short" "$work/short-gpu.mkv" --model "$model" --lossless
  FRAMEFLEET_WORKER__DEVICE=cpu "$framefleet" local "$short" "$work/short-cpu.mkv" --model "$model" --lossless
  python3 "$bench/job_checks.py" exact "$ffprobe" "$short" "$work/short-gpu.mkv" | tee -a "$checks"
  python3 "$bench/job_checks.py" psnr "$ff" "$work/short-cpu.mkv" "$work/short-gpu.mkv" | tee -a "$checks"
done

# NVDEC against software decoding, same job.
input=$work/in-480.mp4
frames=${frames_override:-300}
clip 480 270 "$frames" "$input"
case="realesr-animevideov3-x4 480x270"
framefleet_job "$case" "framefleet, 1 slot, NVDEC allowed" "$frames" "$input" "$work/nvdec.mp4" \
  "$outdir/report-nvdec.json" --model realesr-animevideov3-x4 --workers 1 --chunks 1 --crf 18 --preset veryfast
FRAMEFLEET_WORKER__NVDEC=false framefleet_job "$case" "framefleet, 1 slot, software decode" "$frames" "$input" \
  "$work/software.mp4" "$outdir/report-software.json" --model realesr-animevideov3-x4 --workers 1 --chunks 1 \
  --crf 18 --preset veryfast
python3 "$bench/job_checks.py" psnr "$ff" "$work/software.mp4" "$work/nvdec.mp4" | tee -a "$checks"

# NVENC, where the GPU has the engine (T4, L4, L40S, A10G; not H100, H200, A100).
if "$ff" -v error -f lavfi -i testsrc2=size=256x256 -frames:v 1 -c:v h264_nvenc -f null - 2>/dev/null; then
  framefleet_job "$case" "framefleet, 1 slot, h264_nvenc" "$frames" "$input" "$work/nvenc.mp4" \
    "$outdir/report-nvenc.json" --model realesr-animevideov3-x4 --workers 1 --chunks 1 --crf 18 \
    --preset veryfast --encoder h264_nvenc
  FRAMEFLEET_WORKER__SLOTS=$slots FRAMEFLEET_WORKER__GPUS=1 framefleet_job "$case" \
    "framefleet, $slots slots, h264_nvenc" "$frames" "$input" "$work/nvenc-shared.mp4" \
    "$outdir/report-nvenc-shared.json" --model realesr-animevideov3-x4 --workers 1 --chunks "$slots" \
    --crf 18 --preset veryfast --encoder h264_nvenc
  encoder_alone "$case, h264_nvenc" "$frames" "$work/nvenc.mp4" -c:v h264_nvenc -preset p2 -rc vbr -cq 18 -b:v 0
else
  echo "no NVENC on this machine: the h264_nvenc runs are left out"
fi

# Infer: a TorchScript classifier on 1080p input.
if $have_torch; then
  classifier=$work/classifier.pt
  python3 "$bench/make_classifier.py" "$classifier"
  frames=${frames_override:-240}
  input=$work/in-1080.mp4
  clip 1920 1080 "$frames" "$input"
  case="infer classifier 1920x1080"
  eager_baseline "$case" "$frames" "$bench/eager_infer.py" "$ff" "$classifier" "$input" "$work/eager.jsonl" \
    1920 1080 "$device"
  framefleet_job "$case" "framefleet, 1 slot" "$frames" "$input" "$work/infer-1.jsonl" "$outdir/report-infer-1.json" \
    --task infer --model "$classifier" --top-k 5 --workers 1 --chunks 1
  FRAMEFLEET_WORKER__SLOTS=$slots FRAMEFLEET_WORKER__GPUS=1 framefleet_job "$case" "framefleet, $slots slots, 1 model" \
    "$frames" "$input" "$work/infer-shared.jsonl" "$outdir/report-infer-shared.json" \
    --task infer --model "$classifier" --top-k 5 --workers 1 --chunks "$slots"
  python3 "$bench/job_checks.py" infer "$work/eager.jsonl" "$work/infer-1.jsonl" | tee -a "$checks" || true
fi

python3 "$bench/job_checks.py" summary "$outdir/gpu-job.json" "${rows[@]}"
