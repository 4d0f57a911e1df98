"""A TorchScript image classifier for the infer benchmark (bench/gpu-job.sh), made on the
GPU machine from its own PyTorch: a ResNet-style network (stem, four stages of two residual
blocks, 64 to 512 channels, global pooling, 1000 logits) that first resizes any frame to
224x224, as a deployed classifier does. Its weights are random and fixed by a seed: the
benchmark measures speed and checks that framefleet and eager PyTorch agree, not accuracy.

usage: make_classifier.py OUT.pt
"""

import sys

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, channels_in, channels_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                          nn.BatchNorm2d(channels_out))
            if stride != 1 or channels_in != channels_out else nn.Identity()
        )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        widths = [64, 128, 256, 512]
        stages = []
        for index, width in enumerate(widths):
            before = widths[max(index - 1, 0)]
            stride = 1 if index == 0 else 2
            stages += [Block(before, width, stride), Block(width, width, 1)]
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(512, 1000)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        x = self.stages(self.stem(x))
        return torch.softmax(self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)), dim=1)


def main():
    torch.manual_seed(7)
    model = Classifier().eval()
    torch.jit.script(model).save(sys.argv[1])


if __name__ == "__main__":
    main()
