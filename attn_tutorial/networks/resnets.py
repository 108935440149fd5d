"""The ResNet family of the papers: a plain ResNet with two hooks, and the ECA, BAM, SCNet and
EPSANet networks built from it.

:class:`ResNet` is a plain ImageNet ResNet (7×7 stem, four stages, global average pool, fc) with
two hooks, ``make_block`` (what one residual block is) and ``after_stage`` (a module placed
between stages). ECA sits inside every block after the last BN, BAM after stages 1–3, SCNet's
and EPSANet's bottlenecks are the blocks.

Input sizes (eval mode): the stem gives ⌈H/4⌉ rows and each strided stage halves them rounding
up, ⌈H/8⌉, ⌈H/16⌉, ⌈H/32⌉ (the same for W); the head pools globally, so the plain, ECA, BAM and
EPSANet networks take every H, W >= 1. SCNet needs H, W >= 97 (see :func:`scnet`). In train
mode every BatchNorm also needs more than one value per channel: a batch of one needs a last map
larger than 1×1 (H or W > 32), and BAM's channel-gate BatchNorm, which follows a global average,
a batch of two or more.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
from einops import reduce

from .._init import resnet_conv_bn_init
from .._validate import require_all, require_int
from ..bam import BAM
from ..eca import ECA
from ..psa import EPSABlock
from ..scconv import SCBottleneck

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "plain_block", "resnet", "eca_resnet",
           "bam_resnet", "scnet", "epsanet", "ECA_RELEASED_KERNELS"]


def _imagenet_conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """ResNet-18/34 block: 3×3 conv + BN + ReLU, 3×3 conv + BN, ``attention`` (if any), + residual,
    ReLU. ``attention`` sits after the last BN, before the addition (ECA's position)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _imagenet_conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _imagenet_conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention = attention
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.attention is not None:
            out = self.attention(out)
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class Bottleneck(nn.Module):
    """ResNet-50+ bottleneck (stride on the 3×3 conv, as in torchvision and the authors' code):
    1×1, 3×3, 1×1 convs with BN, ``attention`` (if any) after the last BN, + residual, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, attention: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _imagenet_conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.attention = attention
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.attention is not None:
            out = self.attention(out)
        out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


#: make_block(inplanes, planes, stride, downsample, stage) -> a residual block (stage is 1..4)
BlockFactory = Callable[[int, int, int, "nn.Module | None", int], nn.Module]


def plain_block(block: type[BasicBlock] | type[Bottleneck],
                attention: Callable[[int, int], nn.Module] | None = None) -> BlockFactory:
    """A ``make_block`` for :class:`ResNet`: ``block`` with ``attention(channels, stage)`` (a
    module for the block's output channels, or None) after its last BN."""
    def make(inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
             stage: int) -> nn.Module:
        att = None if attention is None else attention(planes * block.expansion, stage)
        return block(inplanes, planes, stride, downsample, att)
    make.expansion = block.expansion  # type: ignore[attr-defined]
    return make


class ResNet(nn.Module):
    """A ResNet for ImageNet with hooks for "attention at this position".

    Stem: 7×7 conv (stride 2) + BN + ReLU + 3×3 max-pool (stride 2); ``layer1`` ... ``layer4`` with
    ``layers`` blocks of widths 64, 128, 256, 512 (× expansion), the first block of stages 2–4
    strided (1×1 conv + BN shortcut where the shape changes); global average pool; ``fc``.

    Args:
        make_block: ``make_block(inplanes, planes, stride, downsample, stage)`` returns one
            residual block; it must have an ``expansion`` attribute (see :func:`plain_block`).
        layers: blocks per stage, e.g. (3, 4, 6, 3) for 50 layers.
        after_stage: ``after_stage(channels, stage)`` returns a module placed after that stage
            (kept in ``self.after["layer1"]`` ...), or None for no module (BAM: stages 1–3).
        num_classes: outputs of ``fc``.

    Input B×3×H×W, output B×num_classes. The head pools globally, so any H, W that the blocks
    take work. The BAM authors' ``ResidualNet`` head is ``AvgPool2d(7)`` (stride 7) and a flatten
    into ``fc``: it runs only when the last map is 7 to 13 on each side (193 <= H, W <= 416), and
    it is a global average only at 7×7 (H, W <= 224); on a larger map it averages the top-left
    7×7 window. The ECA authors' ``ResNet`` class has an ``AvgPool2d(7, stride=1)`` too, but every
    ``eca_resnet*`` function replaces it with ``AdaptiveAvgPool2d(1)``, a global average at every
    size, as here (their networks run at 67×61).
    """

    def __init__(self, make_block: BlockFactory, layers: Sequence[int], *,
                 after_stage: Callable[[int, int], nn.Module | None] | None = None,
                 num_classes: int = 1000) -> None:
        super().__init__()
        layers = require_all("layers", layers)
        if len(layers) != 4:
            raise ValueError(f"layers={list(layers)} must be four positive block counts")
        require_int("num_classes", num_classes)
        expansion = make_block.expansion  # type: ignore[attr-defined]
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.after = nn.ModuleDict()
        inplanes = 64
        for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if stage == 1 else 2
            downsample = None
            if stride != 1 or inplanes != planes * expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes * expansion, kernel_size=1, stride=stride,
                              bias=False),
                    nn.BatchNorm2d(planes * expansion))
            stage_blocks = [make_block(inplanes, planes, stride, downsample, stage)]
            inplanes = planes * expansion
            stage_blocks += [make_block(inplanes, planes, 1, None, stage)
                             for _ in range(1, blocks)]
            self.add_module(f"layer{stage}", nn.Sequential(*stage_blocks))
            module = None if after_stage is None else after_stage(inplanes, stage)
            if module is not None:
                self.after[f"layer{stage}"] = module
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, stage)(x)
            if stage in self.after:
                x = self.after[stage](x)
        return self.fc(reduce(x, "b c h w -> b c", "mean"))


def _init_bam_resnet_(model: ResNet) -> None:
    """The BAM authors' init, matched on their state_dict key names: weights of keys containing
    ``conv`` kaiming-normal (fan_out), of keys containing ``bn`` 1, every bias 0, fc weight
    kaiming-normal (fan_in). Their shortcut keys (``downsample.0/1``) contain neither, so the
    shortcut conv keeps PyTorch's default init; BAM's own init is :meth:`BAM.reset_parameters`."""
    for name, m in model.named_modules():
        if name.startswith("after."):
            continue
        if isinstance(m, nn.Conv2d) and ".downsample." not in f".{name}.":
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.BatchNorm2d) and ".downsample." not in f".{name}.":
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.kaiming_normal_(model.fc.weight)
    nn.init.zeros_(model.fc.bias)


def _require_depth(depth: object, depths: Sequence[int]) -> None:
    if not any(type(depth) is int and depth == d for d in depths):
        raise ValueError(f"depth={depth!r} must be one of {list(depths)}")


_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
           50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3)),
           152: (Bottleneck, (3, 8, 36, 3))}

#: the per-stage ECA kernels of the released checkpoints (README file names, ``--ksize``)
ECA_RELEASED_KERNELS = {18: (3, 5, 7, 7), 34: (3, 3, 5, 7), 50: (3, 5, 5, 7),
                        101: (3, 3, 5, 7), 152: (3, 3, 5, 7)}


def resnet(depth: int = 50, num_classes: int = 1000) -> ResNet:
    """The plain ResNet-18/34/50/101/152 (torchvision's layout), for comparison."""
    _require_depth(depth, _DEPTHS)
    block, layers = _DEPTHS[depth]
    model = ResNet(plain_block(block), layers, num_classes=num_classes)
    resnet_conv_bn_init(model)
    return model


def eca_resnet(depth: int = 50, k_size: Sequence[int] | None = None,
               num_classes: int = 1000) -> ResNet:
    """ECA-ResNet (BangguWu/ECANet ``eca_resnet{depth}``): an :class:`ECA` in every block after
    the last BN. ``k_size``: one kernel per stage, default the released checkpoint's
    (:data:`ECA_RELEASED_KERNELS`; the authors' function default is (3, 3, 3, 3))."""
    _require_depth(depth, _DEPTHS)
    k_size = require_all("k_size", ECA_RELEASED_KERNELS[depth] if k_size is None else k_size)
    if len(k_size) != 4:
        raise ValueError(f"k_size={list(k_size)} must give one kernel per stage (4 entries)")
    block, layers = _DEPTHS[depth]
    model = ResNet(plain_block(block, lambda c, stage: ECA(c, k_size[stage - 1])), layers,
                   num_classes=num_classes)
    resnet_conv_bn_init(model)
    return model


def bam_resnet(depth: int = 50, num_classes: int = 1000) -> ResNet:
    """BAM-ResNet (Jongchan/attention-module ``ResidualNet("ImageNet", depth, ..., "BAM")``): a
    :class:`BAM` after stages 1, 2 and 3 (between the stages, none inside blocks)."""
    _require_depth(depth, (18, 34, 50, 101))
    block, layers = _DEPTHS[depth]
    model = ResNet(plain_block(block), layers,
                   after_stage=lambda c, stage: BAM(c) if stage <= 3 else None,
                   num_classes=num_classes)
    _init_bam_resnet_(model)
    return model


def scnet(depth: int = 50, num_classes: int = 1000) -> ResNet:
    """SCNet-50/101 (backseason/SCNet ``scnet50``/``scnet101``): :class:`SCBottleneck` blocks
    (bottleneck_width 32, pooling_r 4, no avd, plain 7×7 stem).

    Input size: each SCConv average-pools its input by 4 (kernel 4, stride 4), so every SCConv
    input must be at least 4×4. The smallest are those of stage 4 after its first block, at
    ⌈H/32⌉ × ⌈W/32⌉; so ⌈H/32⌉ >= 4 and ⌈W/32⌉ >= 4, that is H, W >= 97 (97×97 and 97×127 run,
    96 does not). Below that the SCConv raises a ValueError naming ``pooling_r``; the authors'
    network raises a RuntimeError from the pooling at the same sizes."""
    _require_depth(depth, (50, 101))

    def make(inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
             stage: int) -> nn.Module:
        return SCBottleneck(inplanes, planes, stride, downsample=downsample,
                            is_first=stage != 1)
    make.expansion = 4  # type: ignore[attr-defined]
    model = ResNet(make, _DEPTHS[depth][1], num_classes=num_classes)
    resnet_conv_bn_init(model)
    return model


def epsanet(depth: int = 50, num_classes: int = 1000) -> ResNet:
    """EPSANet-50/101 "Small" (murufeng/EPSANet ``epsanet50``/``epsanet101``): :class:`EPSABlock`
    blocks, kernels (3, 5, 7, 9), groups (1, 4, 8, 16)."""
    _require_depth(depth, (50, 101))

    def make(inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
             stage: int) -> nn.Module:
        return EPSABlock(inplanes, planes, stride, downsample=downsample)
    make.expansion = 4  # type: ignore[attr-defined]
    model = ResNet(make, _DEPTHS[depth][1], num_classes=num_classes)
    resnet_conv_bn_init(model)
    return model
