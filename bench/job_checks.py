"""Output checks and the summary of bench/gpu-job.sh, with the kit's ffmpeg and ffprobe.

usage:
  job_checks.py exact FFPROBE INPUT OUTPUT     frame count and every frame time, input vs output
  job_checks.py psnr FFMPEG A B                mean PSNR (dB) of B's frames against A's
  job_checks.py infer A.jsonl B.jsonl          agreement of two infer outputs (lines, values)
  job_checks.py summary OUT.json ROW...        table and JSON of the runs (one JSON per ROW)
Each check prints one JSON line; `exact` and `infer` exit 1 when the outputs disagree.
"""

import json
import re
import subprocess
import sys

# Matroska keeps milliseconds; MP4 keeps the input's time base.
TIME_TOLERANCE_SECONDS = 0.0011


def frame_times(ffprobe, path):
    out = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pts_time", "-of", "csv=p=0", path],
        check=True, capture_output=True, text=True).stdout
    return sorted(float(line) for line in out.split() if line.strip() not in ("", "N/A"))


def exact(ffprobe, source, output):
    want, got = frame_times(ffprobe, source), frame_times(ffprobe, output)
    worst = max((abs(a - b) for a, b in zip(want, got)), default=0.0)
    ok = len(want) == len(got) and worst <= TIME_TOLERANCE_SECONDS
    print(json.dumps({"check": "exact", "output": output, "frames_in": len(want),
                      "frames_out": len(got), "worst_time_error_s": worst, "ok": ok}))
    return ok


def psnr(ffmpeg, reference, candidate):
    run = subprocess.run(
        [ffmpeg, "-hide_banner", "-i", candidate, "-i", reference, "-lavfi", "psnr",
         "-an", "-c:v", "rawvideo", "-f", "null", "-"], capture_output=True, text=True)
    found = re.findall(r"average:(\S+)", run.stderr)
    value = found[-1] if found else "nan"
    db = float("inf") if value == "inf" else float(value)
    print(json.dumps({"check": "psnr", "reference": reference, "candidate": candidate,
                      "psnr_db": db if db != float("inf") else "inf"}))
    return db


def infer(first, second):
    def lines(path):
        return [json.loads(line) for line in open(path) if line.strip()]
    a, b = lines(first), lines(second)
    same_top = sum(x["top"][0]["index"] == y["top"][0]["index"] for x, y in zip(a, b))
    worst = max((abs(p["value"] - q["value"]) for x, y in zip(a, b)
                 for p, q in zip(x["top"], y["top"])), default=0.0)
    # Random weights give near-uniform scores, so the top index may differ on a tie; what
    # must hold is a line per frame and values that agree closely.
    ok = len(a) == len(b) and worst < 1e-3
    print(json.dumps({"check": "infer", "lines": [len(a), len(b)], "same_top1": same_top,
                      "worst_value_difference": worst, "ok": ok}))
    return ok


def summary(path, rows):
    rows = [json.loads(row) for row in rows]
    eager = {row["case"]: row["seconds"] for row in rows if row["run"] == "eager PyTorch"}
    ceiling = {row["case"]: row["seconds"] for row in rows if row["run"] == "encoder alone"}
    for row in rows:
        row["fps"] = row["frames"] / row["seconds"] if row["seconds"] > 0 else 0.0
        if row["case"] in eager:
            row["vs_eager"] = eager[row["case"]] / row["seconds"]
        if row["case"] in ceiling:
            row["vs_encoder_alone"] = ceiling[row["case"]] / row["seconds"]
    print(f"{'case':<36} {'run':<34} {'s':>7} {'fps':>7} {'vs eager':>9} {'vs enc':>7}")
    for row in rows:
        ratios = [f"{row[k]:.2f}x" if k in row else "-" for k in ("vs_eager", "vs_encoder_alone")]
        print(f"{row['case']:<36} {row['run']:<34} {row['seconds']:>7.2f} {row['fps']:>7.1f}"
              f" {ratios[0]:>9} {ratios[1]:>7}")
    json.dump(rows, open(path, "w"), indent=1)


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "exact":
        sys.exit(0 if exact(*args) else 1)
    elif command == "psnr":
        psnr(*args)
    elif command == "infer":
        sys.exit(0 if infer(*args) else 1)
    elif command == "summary":
        summary(args[0], args[1:])
    else:
        sys.exit(f"unknown command {command}; see the usage at the top of {sys.argv[0]}")


if __name__ == "__main__":
    main()
