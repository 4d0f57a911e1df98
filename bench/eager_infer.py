"""Eager PyTorch whole-job baseline for the infer benchmark (bench/gpu-job.sh): classify
every frame of a video the way a Python inference script does. One ffmpeg process decodes
the input to 8-bit RGB on a pipe; each frame becomes a float tensor in [0, 1] on the device,
the TorchScript module runs on it, and its five largest values are copied back and written
as one JSON line per frame (what framefleet's `--task infer --top-k 5` writes).

usage: eager_infer.py FFMPEG MODULE.pt INPUT OUTPUT.jsonl WIDTH HEIGHT cuda|cpu
Prints one JSON line: frames, seconds, fps.
"""

import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eager_job import RgbFrames  # noqa: E402


def main():
    ffmpeg, module, source, target, width, height, device = sys.argv[1:8]
    width, height = int(width), int(height)
    started = time.perf_counter()
    model = torch.jit.load(module, map_location=device).eval()
    decoder = RgbFrames(ffmpeg, source, width, height)
    frames = 0
    with torch.no_grad(), open(target, "w") as out:
        for image in decoder:
            tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
            values, indices = model(tensor.to(device)).topk(5, dim=1)
            top = [{"index": int(i), "value": float(v)}
                   for v, i in zip(values[0].cpu().tolist(), indices[0].cpu().tolist())]
            out.write(json.dumps({"frame": frames, "top": top}) + "\n")
            frames += 1
    decoded = decoder.finish()
    seconds = time.perf_counter() - started
    ok = decoded and frames > 0
    print(json.dumps({"runtime": "eager PyTorch " + torch.__version__, "device": device,
                      "frames": frames, "seconds": seconds, "fps": frames / seconds, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
