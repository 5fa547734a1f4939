"""Torch ResNets for in-plane biopsy patches (N, C, 17, 17) -> one logit per patch.

- ``small`` (default): an input BatchNorm, a 3x3 stem and two basic residual blocks (the second
  with stride 2: 17 -> 9), global average pooling, dropout, one linear unit. About 20 k
  parameters at width 16: sized for ~150 training samples.
- ``resnet50``: the seed's architecture, a ResNet-50 (bottleneck blocks 3-4-6-3, widths
  64-128-256-512, expansion 4) with two fully connected layers (256, 128) before the output
  node. ``stem="imagenet"`` is Keras' ``ResNet50(include_top=False)`` stem (7x7 stride 2 + max
  pool, convolutions with biases): with 9 channels it has the seed's 24,110,977 trainable
  parameters. The default ``stem="patch"`` (3x3 stride 1, no pool) suits 17 x 17 inputs better.

The models return logits (apply ``torch.sigmoid`` for P(label = 1)).
"""

from __future__ import annotations

import torch
from torch import nn

from pipelines.exceptions import InputError

__all__ = ["ARCHITECTURES", "PatchResNet50", "SmallResNet", "build_model", "count_parameters"]

ARCHITECTURES = ("small", "resnet50")


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.short is None else self.short(x)))


class SmallResNet(nn.Module):
    """Small ResNet for (N, C, H, W) patches: returns (N,) logits.

    Layers: BatchNorm2d(C) on the input (standardises each channel), conv 3x3 (width) + BN +
    ReLU, a basic block at full resolution, a basic block at stride 2 (2 x width), global
    average pooling, dropout, linear -> 1.
    """

    def __init__(self, in_channels: int, width: int = 16, dropout: float = 0.3):
        super().__init__()
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(2 * width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(self.input_norm(x))))
        return self.head(x).squeeze(1)


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4), with a projection shortcut on the
    first block of a stage (Keras places the stride on the first 1x1; torchvision on the 3x3:
    the latter here, which changes nothing in the parameter count)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, bias: bool = False):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=bias)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=bias)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=bias)
        self.bn3 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=bias),
                                       nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.short is None else self.short(x)))


class PatchResNet50(nn.Module):
    """ResNet-50 with the seed's head (GAP -> 256 -> 128 -> 1, ReLU); returns (N,) logits.

    ``stem="patch"``: conv 3x3 stride 1 (64) + BN + ReLU, stages at 17 -> 17 -> 9 -> 5 -> 3.
    ``stem="imagenet"``: Keras' conv 7x7 stride 2 + BN + ReLU + max pool 3x3 stride 2, and
    biases in every convolution (as ``keras.applications.ResNet50``).
    """

    def __init__(self, in_channels: int, stem: str = "patch", dropout: float = 0.0):
        super().__init__()
        if stem not in ("patch", "imagenet"):
            raise InputError(f"stem must be 'patch' or 'imagenet', got {stem!r}")
        bias = stem == "imagenet"
        if stem == "patch":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(64), nn.ReLU())
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=True),
                                      nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            for b in range(blocks):
                layers.append(Bottleneck(cin, width, stride if b == 0 else 1, bias=bias))
                cin = width * Bottleneck.expansion
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(cin, 256), nn.ReLU(), nn.Linear(256, 128),
                                  nn.ReLU(), nn.Linear(128, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x))).squeeze(1)


def build_model(arch: str, in_channels: int, seed: int = 0, **kwargs) -> nn.Module:
    """Return a freshly initialised model, its weights drawn from ``torch.manual_seed(seed)``.

    ``arch``: "small" (:class:`SmallResNet`; kwargs ``width``, ``dropout``) or "resnet50"
    (:class:`PatchResNet50`; kwargs ``stem``, ``dropout``). ``in_channels``: 9 for the seed's
    17 x 17 x 9 patches, 27 with one adjacent slice on each side.
    """
    if arch not in ARCHITECTURES:
        raise InputError(f"architecture must be one of {ARCHITECTURES}, got {arch!r}")
    if in_channels < 1:
        raise InputError(f"in_channels must be >= 1, got {in_channels}")
    torch.manual_seed(seed)
    if arch == "small":
        return SmallResNet(in_channels, **kwargs)
    return PatchResNet50(in_channels, **kwargs)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Return the number of (trainable) parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
