"""Runs an ncnn model on the CPU in fp32: the independent reference for framefleet's tch
networks (Tencent's ncnn runtime from PyPI, not framefleet code).

usage: ncnn_reference.py MODEL.param MODEL.bin INPUT.f32 CHANNELS HEIGHT WIDTH OUTPUT.f32

INPUT.f32 holds CHANNELS x HEIGHT x WIDTH little-endian floats (RGB in [0, 1]); the output
is written the same way and its shape printed as "C H W".
"""

import sys

import ncnn
import numpy as np


def main() -> None:
    param, weights, source, channels, height, width, target = sys.argv[1:]
    data = np.fromfile(source, dtype=np.float32).reshape(int(channels), int(height), int(width))
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.use_fp16_packed = False
    net.opt.use_fp16_storage = False
    net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    if net.load_param(param) != 0 or net.load_model(weights) != 0:
        sys.exit(f"ncnn could not load {param} / {weights}")
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(np.ascontiguousarray(data)))
    status, output = extractor.extract("output")
    if status != 0:
        sys.exit(f"ncnn failed with status {status}")
    result = np.array(output, dtype=np.float32)
    result.tofile(target)
    print(*result.shape)


if __name__ == "__main__":
    main()
