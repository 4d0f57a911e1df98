"""Eager PyTorch baseline for bench/gpu.sh: the same Real-ESRGAN architectures and the same
ncnn weights as framefleet, run the way Real-ESRGAN's own video script does (one frame at a
time, fp16 on CUDA, float output copied to the host and turned into 8-bit there).

usage: eager_realesrgan.py MODEL.param MODEL.bin WIDTH HEIGHT FRAMES cuda|cpu
Prints one JSON line: model_fps (network alone, batch 1) and stage_fps (frame in, 8-bit
frame out, per frame).
"""

import json
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

FP16_TAG = 0x01306B47


def parse_param(path):
    lines = [l.strip() for l in open(path, encoding="utf-8").read().splitlines() if l.strip()]
    layers = []
    for line in lines[2:]:
        fields = line.split()
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        outputs = fields[4 + n_in:4 + n_in + n_out]
        params = {}
        for pair in fields[4 + n_in + n_out:]:
            key, value = pair.split("=")
            if int(key) > -23300:
                params[int(key)] = float(value)
        layers.append((kind, name, outputs, params))
    return layers


class Weights:
    def __init__(self, path):
        self.data = open(path, "rb").read()
        self.offset = 0

    def take(self, count, dtype):
        size = count * np.dtype(dtype).itemsize
        array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += size
        return array

    def conv(self, params):
        out_ch, kernel, count = int(params[0]), int(params.get(1, 1)), int(params[6])
        (tag,) = struct.unpack_from("<I", self.data, self.offset)
        self.offset += 4
        assert tag == FP16_TAG, hex(tag)
        weight = self.take(count, np.float16).astype(np.float32)
        self.offset += (4 - (count * 2) % 4) % 4
        bias = self.take(out_ch, np.float32) if params.get(5, 0) else np.zeros(out_ch, np.float32)
        in_ch = count // (out_ch * kernel * kernel)
        conv = torch.nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)
        conv.weight.data = torch.from_numpy(weight.reshape(out_ch, in_ch, kernel, kernel).copy())
        conv.bias.data = torch.from_numpy(bias.copy())
        return conv


class Compact(torch.nn.Module):
    """SRVGGNetCompact (realesr-animevideov3)."""

    def __init__(self, layers, weights):
        super().__init__()
        self.body = torch.nn.ModuleList()
        self.rescale = None
        for kind, _, outputs, params in layers:
            if kind == "Convolution":
                self.body.append(weights.conv(params))
            elif kind == "PReLU":
                act = torch.nn.PReLU(int(params.get(0, 1)))
                act.weight.data = torch.from_numpy(weights.take(int(params.get(0, 1)), np.float32).copy())
                self.body.append(act)
            elif kind == "PixelShuffle":
                self.shuffle = int(params[0])
            elif kind == "Interp" and "output" in outputs:
                self.rescale = params[1]

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        out = F.pixel_shuffle(out, self.shuffle)
        out = out + F.interpolate(x, scale_factor=self.shuffle, mode="nearest")
        if self.rescale is not None:
            out = F.interpolate(out, scale_factor=self.rescale, mode="bicubic", align_corners=False)
        return out


class Rrdb(torch.nn.Module):
    """RRDBNet (RealESRGAN_x4plus)."""

    def __init__(self, layers, weights):
        super().__init__()
        convs = [weights.conv(p) for kind, _, _, p in layers if kind == "Convolution"]
        blocks = (len(convs) - 6) // 15
        self.first = convs[0]
        self.blocks = torch.nn.ModuleList(torch.nn.ModuleList(convs[1 + 15 * b:16 + 15 * b]) for b in range(blocks))
        self.body, self.up1, self.up2, self.high, self.last = convs[-5:]

    @staticmethod
    def dense(convs, x):
        features = [x]
        for conv in convs[:4]:
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), 0.2))
        return convs[4](torch.cat(features, 1)) * 0.2 + x

    def forward(self, x):
        feat = self.first(x)
        body = feat
        for block in self.blocks:
            inner = body
            for r in range(3):
                inner = self.dense(block[5 * r:5 * r + 5], inner)
            body = inner * 0.2 + body
        feat = feat + self.body(body)
        feat = F.leaky_relu(self.up1(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        feat = F.leaky_relu(self.up2(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.last(F.leaky_relu(self.high(feat), 0.2))


def main():
    param, weights_path, width, height, frames, device = sys.argv[1:]
    width, height, frames = int(width), int(height), int(frames)
    layers = parse_param(param)
    weights = Weights(weights_path)
    model = (Compact if any(k == "PReLU" for k, *_ in layers) else Rrdb)(layers, weights).eval()
    half = device == "cuda"
    model = model.to(device)
    if half:
        model = model.half()
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def stage(image):
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
        if half:
            tensor = tensor.half()
        with torch.no_grad():
            out = model(tensor)
        out = out.squeeze(0).float().cpu().clamp_(0, 1).numpy()
        return (out.transpose(1, 2, 0) * 255.0).round().astype(np.uint8)

    for _ in range(2):
        stage(frame)
    sync()
    x = torch.from_numpy(frame).permute(2, 0, 1).float().div(255).unsqueeze(0).to(device)
    if half:
        x = x.half()
    started = time.perf_counter()
    with torch.no_grad():
        for _ in range(frames):
            model(x)
    sync()
    model_fps = frames / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(frames):
        stage(frame)
    sync()
    stage_fps = frames / (time.perf_counter() - started)
    print(json.dumps({"runtime": "eager PyTorch " + torch.__version__, "device": device,
                      "dtype": "fp16" if half else "fp32", "input": [width, height], "batch": 1,
                      "frames": frames, "model_fps": model_fps, "stage_fps": stage_fps}))


if __name__ == "__main__":
    main()
