"""Eager PyTorch whole-job baseline for bench/gpu-job.sh: upscale a video the way
Real-ESRGAN's own video script does. One ffmpeg process decodes the input to 8-bit RGB on a
pipe, the network (the same architecture and ncnn weights as framefleet, from
eager_realesrgan.py) runs one frame at a time, fp16 on CUDA, its float output is copied to
the host and turned into 8-bit RGB there, and a second ffmpeg process converts it to
yuv420p, encodes it with libx264 and muxes the input's audio back in.

usage: eager_job.py FFMPEG MODEL.param MODEL.bin INPUT OUTPUT WIDTH HEIGHT RATE cuda|cpu
       [PRESET CRF]
Prints one JSON line: frames, seconds, fps.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eager_realesrgan import Compact, Rrdb, Weights, parse_param  # noqa: E402


def load(param, weights, device):
    layers = parse_param(param)
    model = (Compact if any(k == "PReLU" for k, *_ in layers) else Rrdb)(layers, Weights(weights))
    model = model.eval().to(device)
    return model.half() if device == "cuda" else model


class RgbFrames:
    """The input's frames as 8-bit RGB arrays, from an ffmpeg process on a pipe (how
    Real-ESRGAN's video script and most Python inference scripts read video)."""

    def __init__(self, ffmpeg, source, width, height):
        self.shape = (height, width, 3)
        self.process = subprocess.Popen(
            [ffmpeg, "-v", "error", "-i", source, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
            stdout=subprocess.PIPE,
        )

    def __iter__(self):
        frame_bytes = self.shape[0] * self.shape[1] * 3
        while True:
            raw = self.process.stdout.read(frame_bytes)
            if len(raw) < frame_bytes:
                return
            yield np.frombuffer(raw, np.uint8).reshape(self.shape)

    def finish(self):
        """Waits for ffmpeg; true when it decoded the whole input."""
        return self.process.wait() == 0


def main():
    ffmpeg, param, weights, source, target, width, height, rate, device = sys.argv[1:10]
    preset = sys.argv[10] if len(sys.argv) > 10 else "veryfast"
    crf = sys.argv[11] if len(sys.argv) > 11 else "18"
    width, height = int(width), int(height)
    started = time.perf_counter()
    model = load(param, weights, device)
    half = device == "cuda"
    decoder = RgbFrames(ffmpeg, source, width, height)
    encoder = None
    frames = 0
    with torch.no_grad():
        for image in decoder:
            tensor = torch.from_numpy(image.copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
            tensor = tensor.to(device)
            if half:
                tensor = tensor.half()
            out = model(tensor).squeeze(0).float().cpu().clamp_(0, 1).numpy()
            out = (out.transpose(1, 2, 0) * 255.0).round().astype(np.uint8)
            if encoder is None:
                out_height, out_width = out.shape[:2]
                encoder = subprocess.Popen(
                    [ffmpeg, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                     "-s", f"{out_width}x{out_height}", "-r", rate, "-i", "-",
                     "-i", source, "-map", "0:v", "-map", "1:a?", "-c:a", "copy",
                     "-c:v", "libx264", "-preset", preset, "-crf", crf, "-pix_fmt", "yuv420p",
                     target],
                    stdin=subprocess.PIPE,
                )
            encoder.stdin.write(out.tobytes())
            frames += 1
    decoded = decoder.finish()
    if encoder is not None:
        encoder.stdin.close()
        encoder.wait()
    seconds = time.perf_counter() - started
    ok = decoded and encoder is not None and encoder.returncode == 0
    print(json.dumps({"runtime": "eager PyTorch " + torch.__version__, "device": device,
                      "frames": frames, "seconds": seconds, "fps": frames / seconds, "ok": ok}))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
