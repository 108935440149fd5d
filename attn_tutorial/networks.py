"""The papers' ImageNet networks, built from this library's modules, and the authors' tables.

Every mechanism of the course sits somewhere in a real network; this module puts it there, at
the position the authors' code uses, and counts what the whole network costs:

* :class:`ResNet` — a plain ResNet (7×7 stem, four stages, global average pool, fc) with two
  hooks, ``make_block`` (what one residual block is) and ``after_stage`` (a module placed between
  stages). The ECA, BAM, SCNet and EPSANet networks are this ResNet with a different hook:
  ECA inside every block after the last BN, BAM after stages 1–3, SCNet's and EPSANet's
  bottlenecks as the blocks.
* :class:`ResT` — ResT v1 assembled from ``BasicStem``, ``PatchEmbed`` and ``Block``.
* :class:`EANetHead` — EANet's segmentation head around ``ExternalAttention``; DANet's head is
  :class:`attn_tutorial.danet.DANetHead` itself.

``build(name)`` gives a network by name (``NETWORKS`` lists them), on the meta device by default
so that counting a ResNet-152 costs no memory. ``count(name)`` returns parameters and FLOPs at
the authors' input size, ``table(names)`` the comparison with the authors' published numbers,
and ``python -m attn_tutorial networks`` prints it.

Counting conventions (the reason published numbers look different; ``CONVENTIONS`` has one
line each, and every row of the table names its own):

* **FLOPs** here are ``torch.utils.flop_counter.FlopCounterMode`` FLOPs: 2 per multiply-add of
  every convolution and matrix product (BN, activations and pooling are not counted). **MACs** are
  half of that. Most papers' "FLOPs" are MACs.
* **ECA-Net** counted with ``thop`` (``paras_flops.py``) and printed with its own
  ``clever_format``, which divides by **1024² and 1024³**: "24.37M" is 25,557,112 / 2²⁰; no module
  is skipped. The ``thop`` of the time (Aug 2019) also counts 4 ops per BN input element,
  (2·in − 1) per Linear output, (window + 1) per pooled output and nothing for ReLU, max-pool and
  sigmoid: :func:`count_thop` repeats those rules (``version="2019"``).
* **SCNet** (tool not named): "MAdds" are those thop-2019 ops, "FLOPs" count each multiply-add
  as 2 plus the same BN and pooling ops.
* **EPSANet** (tool not named): thop's May-2021 rules (MACs + 2 ops per BN element + pools).
* **BAM** (paper): MACs of the network with the stride on the first 1×1 conv of a strided block,
  as in the original Caffe ResNet whose ResNet-50 is the papers' 3.86 G baseline.
* **ResT**: parameters match; the README's FLOPs are below our MACs (which equal the repository's
  ``get_flops.py`` rule) and are not reproduced.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, reduce
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ._init import resnet_conv_bn_init
from .bam import BAM
from .danet import DANetHead
from .eca import ECA
from .external import ExternalAttention
from .psa import EPSABlock
from .rest import BasicStem, Block, PatchEmbed, _rest_init
from .scconv import SCBottleneck
from .show import count_params

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "ResT", "EANetHead", "NETWORKS", "build",
           "count", "count_thop", "count_thop_2019", "Count", "Published", "Row", "row", "table",
           "format_table", "CONVENTIONS", "main"]


# ============================================================================================
# A plain ResNet with two hooks
# ============================================================================================

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
    take work; the ECA and BAM authors' heads use ``AvgPool2d(7)``, which equals a global
    average only when the last map is 7×7 (a 224² input) and fails below that.
    """

    def __init__(self, make_block: BlockFactory, layers: Sequence[int], *,
                 after_stage: Callable[[int, int], nn.Module | None] | None = None,
                 num_classes: int = 1000) -> None:
        super().__init__()
        if len(layers) != 4 or any(n < 1 for n in layers):
            raise ValueError(f"layers={list(layers)} must be four positive block counts")
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


_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)),
           50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3)),
           152: (Bottleneck, (3, 8, 36, 3))}

#: the per-stage ECA kernels of the released checkpoints (README file names, ``--ksize``)
ECA_RELEASED_KERNELS = {18: (3, 5, 7, 7), 34: (3, 3, 5, 7), 50: (3, 5, 5, 7),
                        101: (3, 3, 5, 7), 152: (3, 3, 5, 7)}


def resnet(depth: int = 50, num_classes: int = 1000) -> ResNet:
    """The plain ResNet-18/34/50/101/152 (torchvision's layout), for comparison."""
    block, layers = _DEPTHS[depth]
    model = ResNet(plain_block(block), layers, num_classes=num_classes)
    resnet_conv_bn_init(model)
    return model


def eca_resnet(depth: int = 50, k_size: Sequence[int] | None = None,
               num_classes: int = 1000) -> ResNet:
    """ECA-ResNet (BangguWu/ECANet ``eca_resnet{depth}``): an :class:`ECA` in every block after
    the last BN. ``k_size``: one kernel per stage, default the released checkpoint's
    (:data:`ECA_RELEASED_KERNELS`; the authors' function default is (3, 3, 3, 3))."""
    if depth not in _DEPTHS:
        raise ValueError(f"depth={depth} must be one of {sorted(_DEPTHS)}")
    k_size = tuple(ECA_RELEASED_KERNELS[depth] if k_size is None else k_size)
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
    if depth not in (18, 34, 50, 101):
        raise ValueError(f"depth={depth} must be one of [18, 34, 50, 101] (the authors' choices)")
    block, layers = _DEPTHS[depth]
    model = ResNet(plain_block(block), layers,
                   after_stage=lambda c, stage: BAM(c) if stage <= 3 else None,
                   num_classes=num_classes)
    _init_bam_resnet_(model)
    return model


def scnet(depth: int = 50, num_classes: int = 1000) -> ResNet:
    """SCNet-50/101 (backseason/SCNet ``scnet50``/``scnet101``): :class:`SCBottleneck` blocks
    (bottleneck_width 32, pooling_r 4, no avd, plain 7×7 stem).

    Each SCConv pools by 4, so every block's input must be at least 4×4: the last stage runs at
    H/32, so H and W must be >= 128 (a clear ValueError below that, as in the SCConv)."""
    if depth not in (50, 101):
        raise ValueError(f"depth={depth} must be 50 or 101")

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
    if depth not in (50, 101):
        raise ValueError(f"depth={depth} must be 50 or 101")

    def make(inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
             stage: int) -> nn.Module:
        return EPSABlock(inplanes, planes, stride, downsample=downsample)
    make.expansion = 4  # type: ignore[attr-defined]
    model = ResNet(make, _DEPTHS[depth][1], num_classes=num_classes)
    resnet_conv_bn_init(model)
    return model


# ============================================================================================
# ResT v1
# ============================================================================================

class ResT(nn.Module):
    """ResT v1 (wofmanaf/ResT ``ResT``): stem, four stages of :class:`Block`, LN, pool, head.

    ``stem`` (:class:`BasicStem` with PA) → tokens → ``stage1`` blocks → feature map →
    ``patch_embed_2`` (:class:`PatchEmbed`, p = 2, PA) → ``stage2`` → ... → ``stage4`` → ``norm``
    (LayerNorm) → global average → ``head`` (Linear).

    Input B×3×H×W with H, W >= 32 (each stage's grid must be at least its reduction ratio: the
    EMSA refuses a smaller grid with a ValueError) and H or W > 32 (a 32×32 input leaves one
    token at stage 4, where the head transform's InstanceNorm cannot normalise a single weight:
    a ValueError). The authors' model needs H and W divisible by 32 (their PatchEmbed reports
    H//2 for odd grids and the next reshape fails); this one takes any such size and equals
    theirs where theirs works.
    """

    def __init__(self, embed_dims: Sequence[int] = (64, 128, 256, 512),
                 num_heads: Sequence[int] = (1, 2, 4, 8), mlp_ratios: Sequence[float] = (4, 4, 4, 4),
                 qkv_bias: bool = True, depths: Sequence[int] = (2, 2, 2, 2),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), apply_transform: bool = True,
                 drop_path_rate: float = 0.0, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = BasicStem(3, embed_dims[0], with_pos=True)
        for i in (2, 3, 4):
            self.add_module(f"patch_embed_{i}", PatchEmbed(2, embed_dims[i - 2],
                                                           embed_dims[i - 1], with_pos=True))
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        start = 0
        for i in range(4):
            self.add_module(f"stage{i + 1}", nn.ModuleList(
                Block(embed_dims[i], num_heads[i], mlp_ratios[i], qkv_bias,
                      drop_path=rates[start + j], sr_ratio=sr_ratios[i],
                      apply_transform=apply_transform)
                for j in range(depths[i])))
            start += depths[i]
        self.norm = nn.LayerNorm(embed_dims[3])
        self.head = nn.Linear(embed_dims[3], num_classes)
        self.apply(_rest_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.stem(x)
        H, W = fmap.shape[-2:]
        tokens = rearrange(fmap, "b c h w -> b (h w) c")
        for i in range(1, 5):
            if i > 1:
                fmap = rearrange(tokens, "b (h w) c -> b c h w", h=H, w=W)
                tokens, (H, W) = getattr(self, f"patch_embed_{i}")(fmap)
            blocks = getattr(self, f"stage{i}")
            if H * W == 1 and blocks[0].attn.apply_transform:
                raise ValueError(
                    f"x of shape {tuple(x.shape)} leaves a 1×1 grid at stage {i}: the head "
                    "transform's InstanceNorm needs more than one attention weight per head; "
                    "use H or W > 32 (e.g. 64)")
            for blk in blocks:
                tokens = blk(tokens, H, W)
        return self.head(reduce(self.norm(tokens), "b n c -> b c", "mean"))


_REST_VARIANTS = {"lite": dict(depths=(2, 2, 2, 2)),
                  "small": dict(depths=(2, 2, 6, 2)),
                  "base": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2)),
                  "large": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2))}


def rest(variant: str = "lite", num_classes: int = 1000, **kwargs) -> ResT:
    """ResTv1-Lite/S/B/L (``rest_lite`` ... ``rest_large``): qkv_bias and the head transform on."""
    if variant not in _REST_VARIANTS:
        raise ValueError(f"variant={variant!r} must be one of {list(_REST_VARIANTS)}")
    return ResT(num_classes=num_classes, **{**_REST_VARIANTS[variant], **kwargs})


# ============================================================================================
# Segmentation heads (output stride 8)
# ============================================================================================

class _ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()


class EANetHead(nn.Module):
    """EANet's segmentation head (MenghaoGuo/EANet ``EANet``, without the backbone):
    ``fc0`` Conv3×3(in→512)+BN+ReLU → ``linu`` :class:`ExternalAttention` (512) → ``fc1``
    Conv3×3(512→256)+BN+ReLU + Dropout2d(0.1) → ``fc2`` Conv1×1(256→classes). Input the
    backbone's B×in×H×W map, output B×classes×H×W (the authors then upsample bilinearly)."""

    def __init__(self, in_channels: int = 2048, num_classes: int = 21) -> None:
        super().__init__()
        self.fc0 = _ConvBNReLU(in_channels, 512)
        self.linu = ExternalAttention(512)
        self.fc1 = nn.Sequential(_ConvBNReLU(512, 256), nn.Dropout2d(0.1))
        self.fc2 = nn.Conv2d(256, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.linu(self.fc0(x))))


class _FirstOutput(nn.Module):
    """Counts a head that returns several outputs by its first (DANet: the sum branch)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)[0]


# ============================================================================================
# The table
# ============================================================================================

@dataclass(frozen=True)
class Published:
    """One row of an authors' table as printed (strings, so that "1.70" keeps its precision):
    parameters (M) and compute (G), the counting
    convention (a key of ``CONVENTIONS``), the unit base (10: decimal M/G; 2: 2²⁰/2³⁰, as the
    ECA script's ``clever_format`` prints), where it is printed, an optional second compute
    number (SCNet's "MAdds"), and ``tolerance``: how many units of the last printed digit ours may
    differ by (0 unless the authors' own tool on their own code does not give their digit)."""

    params_m: str
    compute_g: str
    convention: str
    unit: int
    source: str
    madds_g: str | None = None
    tolerance: int = 0
    note: str = ""


@dataclass(frozen=True)
class _Entry:
    build: Callable[[], nn.Module]
    input: tuple[int, int, int]      # C, H, W of the counted input
    small: tuple[int, int, int]      # a small input the network takes (tests)
    published: Published | None


_ECA_SRC = "BangguWu/ECANet README, ImageNet table"
_SC_SRC = "backseason/SCNet README, ImageNet table"
_EPSA_SRC = "murufeng/EPSANet README, Image Classification on ImageNet"
_REST_SRC = "wofmanaf/ResT README, ResTv1 ImageNet-1K 224x224"
_BAM_SRC = ("BAM paper (arXiv 1807.06514), ImageNet-1K table, as recalled (not re-read here: "
            "[unverified])")
_ECA_OWN_TOOL = ("thop (Aug 2019) run on the authors' own eca_resnet{d} gives {own} too: "
                 "their last digit is not reproduced by their code + tool")

NETWORKS: dict[str, _Entry] = {
    "resnet50": _Entry(lambda: resnet(50), (3, 224, 224), (3, 64, 64), None),
    **{f"eca_resnet{d}": _Entry(
        lambda d=d: eca_resnet(d), (3, 224, 224), (3, 64, 64),
        Published(p, g, "thop2019", 2, _ECA_SRC, tolerance=0 if own is None else 1,
                  note="" if own is None else _ECA_OWN_TOOL.format(d=d, own=own)))
       for d, p, g, own in ((18, "11.15", "1.70", None), (34, "20.79", "3.43", None),
                            (50, "24.37", "3.86", None), (101, "42.49", "7.35", "7.34G"),
                            (152, "57.41", "10.83", "57.40M/10.82G"))},
    "bam_resnet50": _Entry(lambda: bam_resnet(50), (3, 224, 224), (3, 64, 64),
                           Published("25.92", "3.94", "mac_caffe", 10, _BAM_SRC)),
    "scnet50": _Entry(lambda: scnet(50), (3, 224, 224), (3, 128, 128),
                      Published("25.56", "7.9", "scnet", 10, _SC_SRC, madds_g="4.0")),
    "scnet101": _Entry(lambda: scnet(101), (3, 224, 224), (3, 128, 128),
                       Published("44.57", "14.4", "scnet", 10, _SC_SRC, madds_g="7.2")),
    "epsanet50": _Entry(lambda: epsanet(50), (3, 224, 224), (3, 64, 64),
                        Published("22.56", "3.62", "thop2021", 10, _EPSA_SRC)),
    "epsanet101": _Entry(lambda: epsanet(101), (3, 224, 224), (3, 64, 64),
                         Published("38.90", "6.82", "thop2021", 10, _EPSA_SRC)),
    **{f"rest_{v}": _Entry(lambda v=v: rest(v), (3, 224, 224), (3, 64, 64),
                           Published(p, g, "rest", 10, _REST_SRC))
       for v, p, g in (("lite", "11", "1.4"), ("small", "14", "1.9"), ("base", "30", "4.3"),
                       ("large", "52", "7.9"))},
    "danet_head": _Entry(lambda: _FirstOutput(DANetHead(2048, 19)), (2048, 96, 96),
                         (2048, 12, 12), None),
    "eanet_head": _Entry(lambda: EANetHead(2048, 19), (2048, 96, 96), (2048, 12, 12), None),
}

#: what each convention counts, as printed in the table
CONVENTIONS = {
    "thop2019": "thop (Aug 2019): conv MACs + 4/BN elem + fc 2in-1 + pools; M=2^20, G=2^30",
    "scnet": "MAdds = thop 2019 ops; 'FLOPs' = 2 x MACs + thop's BN/pool ops",
    "thop2021": "thop (May 2021): conv/fc MACs + 2/BN elem + pools",
    "mac_caffe": "MACs with the stride on the first 1x1 conv (Caffe ResNet), not on the 3x3",
    "rest": "params only: our MACs (= their get_flops rule) are 6-10% above their G: not reproduced",
}

_UNITS = {10: (1e6, 1e9), 2: (2.0 ** 20, 2.0 ** 30)}


def _check_name(name: str) -> _Entry:
    if name not in NETWORKS:
        raise ValueError(f"network {name!r} is not known; choose from {', '.join(NETWORKS)}")
    return NETWORKS[name]


def build(name: str, device: torch.device | str = "meta") -> nn.Module:
    """The network ``name`` (see ``NETWORKS``), in eval mode, on ``device`` (meta by default:
    shapes only, no memory, no values)."""
    entry = _check_name(name)
    with torch.device(device):
        model = entry.build()
    return model.eval()


@dataclass(frozen=True)
class Count:
    """Parameters and FlopCounterMode FLOPs of one forward (batch 1) at ``input``."""

    name: str
    params: int
    flops: int
    input: tuple[int, int, int]

    @property
    def macs(self) -> int:
        return self.flops // 2


def _flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


class _ThopRules(TorchDispatchMode):
    """Counts ops the way ``thop.profile`` did (Lyken17/pytorch-OpCounter, its counting hooks as of
    ``version`` "2019" = Aug–Sep 2019 or "2021" = May 2021), at the level of the aten ops so that
    the count does not depend on how a module is split into submodules."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version = version
        self.ops = {"mac": 0, "norm": 0, "pool": 0, "linear_adds": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        ops = self.ops
        if name == "convolution":   # output elements × (Cin/groups · kernel + bias)
            weight, bias = args[1], args[2]
            ops["mac"] += out.numel() * (weight[0].numel() + (bias is not None))
        elif "batch_norm" in name:  # 2019: subtract, divide, gamma, beta; 2021: 2 (eval)
            ops["norm"] += (4 if self.version == "2019" else 2) * args[0].numel()
        elif name in ("addmm", "mm"):  # Linear: in multiplies (+ in - 1 adds in 2019)
            inner, outputs = args[-1].shape[0], out.shape[0] * out.shape[1]
            ops["mac"] += inner * outputs
            if self.version == "2019":
                ops["linear_adds"] += (inner - 1) * outputs
        elif name == "mean":        # adaptive average pool: (window adds + 1 divide) per output
            ops["pool"] += (args[0].numel() // max(out.numel(), 1) + 1) * out.numel()
        elif name == "avg_pool2d":  # 2019: (k·k adds + 1 divide) per output; 2021: 1
            kernel = args[1] if isinstance(args[1], (list, tuple)) else (args[1], args[1])
            window = kernel[0] * kernel[-1]
            ops["pool"] += (window + 1 if self.version == "2019" else 1) * out.numel()
        return out                  # ReLU, max-pool, sigmoid, add, mul: 0 ops (as thop)


def count_thop(model: nn.Module, x: torch.Tensor, version: str = "2019") -> dict[str, int]:
    """The op count ``thop.profile`` gave for ``model(x)``, split into ``mac`` (convolutions as
    multiply-adds, bias included, and Linear multiplies), ``norm`` (BN: 4 ops per input element in
    2019, 2 in 2021), ``pool`` (average pools) and ``linear_adds`` (2019 only: the in − 1 adds
    of every Linear output). ReLU, max-pool, sigmoid and element-wise products count 0, as in
    thop. ``sum(...)`` of it is thop's total."""
    if version not in ("2019", "2021"):
        raise ValueError(f"version={version!r} must be '2019' or '2021'")
    counter = _ThopRules(version)
    with torch.no_grad(), counter:
        model(x)
    return dict(counter.ops)


def count_thop_2019(model: nn.Module, x: torch.Tensor) -> int:
    """thop's total as of Aug–Sep 2019 (how the ECA-Net README counted, printed /1024³)."""
    return sum(count_thop(model, x, "2019").values())


def _count(name: str, model: nn.Module, x: torch.Tensor) -> Count:
    params = count_params(model)
    return Count(name, params, _flops(model, x), tuple(x.shape[1:]))


def _count_with_thop(name: str, model: nn.Module, x: torch.Tensor, version: str
                     ) -> tuple[Count, dict[str, int]]:
    """:func:`_count` and :func:`count_thop` from ONE forward (meta ops run in Python and cost
    about a millisecond each, so one pass instead of two halves the table's time)."""
    thop = _ThopRules(version)
    with torch.no_grad(), FlopCounterMode(display=False) as counter, thop:
        model(x)
    params = count_params(model)
    return (Count(name, params, int(counter.get_total_flops()), tuple(x.shape[1:])),
            dict(thop.ops))


def _input(entry: _Entry, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    c, h, w = entry.input
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else size
    return torch.empty(1, c, h, w, device="meta")


def count(name: str, size: int | tuple[int, int] | None = None) -> Count:
    """Parameters and FLOPs of network ``name`` for one input of ``size`` (H, W; default the
    authors' size: 224² for ImageNet networks, the 96² output-stride-8 map of a 768² Cityscapes
    crop for the heads), counted on the meta device."""
    entry = _check_name(name)
    return _count(name, build(name), _input(entry, size))


# --------------------------------------------------------------------------------------------
# Comparing with the authors' numbers
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One line of the table: our count, ours under the authors' convention and unit, theirs,
    and whether the two agree to the precision they print."""

    name: str
    params: int
    macs: int
    flops: int
    published: Published | None = None
    ours_params: float | None = None    # in the authors' unit
    ours_compute: float | None = None   # under the authors' convention and unit
    ours_madds: float | None = None     # SCNet's second number
    params_match: bool | None = None
    compute_match: bool | None = None

    @property
    def matches(self) -> bool | None:
        if self.published is None:
            return None
        return bool(self.params_match and self.compute_match)


def _digits(printed: str) -> int:
    """Decimals the authors print: "24.37" -> 2, "7.9" -> 1, "11" -> 0."""
    return len(printed.split(".")[1]) if "." in printed else 0


def _agrees(ours: float, printed: str, tolerance: int) -> bool:
    """``ours`` rounded to the authors' printed precision is their number (± ``tolerance`` units
    of the last digit)."""
    digits = _digits(printed)
    step = 10.0 ** -digits
    return abs(round(ours, digits) - float(printed)) <= tolerance * step + step * 1e-6


def _caffe_macs(model: ResNet, macs: int, size: int = 224) -> int:
    """MACs of the same network with the stride moved from the 3×3 conv to the first 1×1 conv of
    each strided block (the original Caffe ResNet; its ResNet-50 is the 3.858 GFLOPs baseline of
    the BAM and CBAM papers): that 1×1 conv then runs at the lower resolution."""
    side = size // 4                      # the stage-1 map after the stem
    for stage in (2, 3, 4):
        conv = getattr(model, f"layer{stage}")[0].conv1
        macs -= conv.in_channels * conv.out_channels * (side * side - (side // 2) ** 2)
        side //= 2
    return macs


def row(name: str) -> Row:
    """Our count of ``name`` next to the authors' published numbers."""
    entry = _check_name(name)
    model, x = build(name), _input(entry)
    pub = entry.published
    if pub is None:
        counted = _count(name, model, x)
        return Row(name, counted.params, counted.macs, counted.flops)
    version = "2021" if pub.convention == "thop2021" else "2019"
    counted, thop = _count_with_thop(name, model, x, version)
    unit_m, unit_g = (1e6, 1e9) if pub.unit == 10 else (2.0 ** 20, 2.0 ** 30)
    madds = None
    if pub.convention in ("thop2019", "thop2021"):
        compute = sum(thop.values())
    elif pub.convention == "scnet":
        madds = sum(thop.values()) / unit_g
        compute = counted.flops + thop["norm"] + thop["pool"]
    elif pub.convention == "mac_caffe":
        compute = _caffe_macs(model, counted.macs)
    else:
        compute = counted.macs
    ours_p, ours_c = counted.params / unit_m, compute / unit_g
    compute_ok = pub.convention != "rest" and _agrees(ours_c, pub.compute_g, pub.tolerance)
    if madds is not None:
        compute_ok = compute_ok and _agrees(madds, pub.madds_g, pub.tolerance)
    return Row(name, counted.params, counted.macs, counted.flops, pub, ours_p, ours_c, madds,
               _agrees(ours_p, pub.params_m, pub.tolerance), compute_ok)


def table(names: Sequence[str] | None = None) -> list[Row]:
    """Rows for ``names`` (default: every network in ``NETWORKS``), e.g.
    ``print(format_table(table(["eca_resnet18", "eca_resnet50"])))``."""
    return [row(n) for n in (NETWORKS if names is None else names)]


def format_table(rows: Sequence[Row]) -> str:
    """The table as text. Left: our parameters (M), MACs and FLOPs (G, FlopCounterMode) at the
    counted size. Right: ours in the authors' convention and unit, theirs, the ratio, whether
    they agree at their printed precision, and the convention."""
    head = (f"{'network':<14} {'params M':>8} {'MACs G':>7} {'FLOPs G':>7} | "
            f"{'ours (their way)':>17} {'authors':>13} {'ratio':>11} ok  convention")
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r.name:<14} {r.params / 1e6:>8.2f} {r.macs / 1e9:>7.2f} {r.flops / 1e9:>7.2f} |"
        p = r.published
        if p is None:
            what = ("no published number: the head alone on the 2048x96x96 map of a 768x768 "
                    "crop (output stride 8), 19 classes" if r.name.endswith("_head")
                    else "baseline: no attention")
            lines.append(f"{left} {'':>17} {'-':>13} {'':>11} --  {what}")
            continue
        dp, dc = max(_digits(p.params_m), 2), max(_digits(p.compute_g), 2)
        ours = f"{r.ours_params:.{dp}f}/{r.ours_compute:.{dc}f}"
        theirs = f"{p.params_m}/{p.compute_g}"
        ratio = (f"{r.ours_params / float(p.params_m):.3f}/"
                 f"{r.ours_compute / float(p.compute_g):.3f}")
        ok = "ok" if r.matches else ("p " if r.params_match else "NO")
        extra = [] if r.ours_madds is None else [f"MAdds ours {r.ours_madds:.2f} vs {p.madds_g}"]
        extra += [p.note] if p.note else []
        lines.append(f"{left} {ours:>17} {theirs:>13} {ratio:>11} {ok}  "
                     + "; ".join([CONVENTIONS[p.convention]] + extra))
    lines.append("ok: both numbers agree at the authors' printed precision; p: parameters only")
    return "\n".join(lines)


# ============================================================================================
# The authors' whole-network state_dicts (used by official.from_official)
# ============================================================================================

def _official_rule_tables():
    """The per-module renaming tables of :mod:`attn_tutorial.official` (imported late: official
    looks the network kinds up here)."""
    from . import official
    return official


def _uninitialised(make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` on the meta device, then given uninitialised CPU memory: ``from_official``
    overwrites every parameter and buffer (strictly; these networks have no non-persistent
    buffers), so running the initialisation first would only cost time (seconds for ResT's
    truncated normals)."""
    with torch.device("meta"):
        model = make()
    return model.to_empty(device="cpu")


def _resnet_rules(model: ResNet, block_rules: Callable[[str, nn.Module], list]) -> list:
    """Renaming rules for a whole ResNet: the stem and fc keep their names; every block's keys
    come from ``block_rules(prefix, block)``."""
    o = _official_rule_tables()
    rules = []
    for stage in range(1, 5):
        for index, block in enumerate(getattr(model, f"layer{stage}")):
            rules += block_rules(f"layer{stage}.{index}.", block)
    return rules + o._unchanged("conv1.", "bn1.", "fc.")


def _eca_block_rules(prefix: str, block: nn.Module) -> list:
    o = _official_rule_tables()
    return [o.Rule(prefix + "eca.", prefix + "attention.")] + o._unchanged(prefix)


def _eca_kernels(state_dict, depth: int) -> tuple[int, ...]:
    """Per-stage ECA kernel sizes read from the official keys ``layer{s}.0.eca.conv.weight``."""
    kernels = []
    for stage in range(1, 5):
        weight = state_dict.get(f"layer{stage}.0.eca.conv.weight")
        if weight is None:
            raise ValueError(f"missing key 'layer{stage}.0.eca.conv.weight' in the official "
                             f"state_dict of eca_resnet{depth} (needed to read k_size)")
        kernels.append(int(weight.shape[-1]))
    return tuple(kernels)


def _official_eca_resnet(depth: int):
    def make(*, state_dict, k_size: Sequence[int] | None = None, num_classes: int = 1000):
        """BangguWu/ECANet ``eca_resnet{depth}(k_size, num_classes)``; ``k_size`` is read from
        the state_dict when not given."""
        k_size = _eca_kernels(state_dict, depth) if k_size is None else tuple(int(k) for k in k_size)
        model = _uninitialised(lambda: eca_resnet(depth, k_size, num_classes))
        return model, _resnet_rules(model, _eca_block_rules)
    return make


def _official_bam_resnet50(*, state_dict, num_classes: int = 1000):
    """Jongchan/attention-module ``ResidualNet("ImageNet", 50, num_classes, "BAM")``."""
    o = _official_rule_tables()
    model = _uninitialised(lambda: bam_resnet(50, num_classes))
    rules = [r for s in (1, 2, 3) for r in o._under(f"bam{s}.", o._BAM_RULES,
                                                    f"after.layer{s}.")]
    return model, rules + _resnet_rules(model, lambda prefix, block: o._unchanged(prefix))


def _scbottleneck_rules(prefix: str, block: nn.Module) -> list:
    o = _official_rule_tables()
    return o._under(prefix, o._SCBOTTLENECK_RULES)


def _official_scnet(depth: int):
    def make(*, state_dict, num_classes: int = 1000):
        """backseason/SCNet ``scnet{depth}()`` (plain stem, no avd)."""
        model = _uninitialised(lambda: scnet(depth, num_classes))
        return model, _resnet_rules(model, _scbottleneck_rules)
    return make


def _epsa_block_rules(prefix: str, block: nn.Module) -> list:
    o = _official_rule_tables()
    return o._under(prefix, o._EPSA_BLOCK_RULES)


def _official_epsanet(depth: int):
    def make(*, state_dict, num_classes: int = 1000):
        """murufeng/EPSANet ``epsanet{depth}()`` ("Small")."""
        model = _uninitialised(lambda: epsanet(depth, num_classes))
        return model, _resnet_rules(model, _epsa_block_rules)
    return make


def _official_rest(variant: str):
    def make(*, state_dict, num_classes: int = 1000):
        """wofmanaf/ResT ``rest_{variant}(num_classes=...)`` (v1)."""
        o = _official_rule_tables()
        model = _uninitialised(lambda: rest(variant, num_classes))
        rules = (o._unchanged("stem.conv1.", "stem.norm1.", "stem.conv2.", "stem.norm2.",
                         "stem.conv3.") + o._under("stem.pos.", o._PA_RULES))
        for i in (2, 3, 4):
            p = f"patch_embed_{i}."
            rules += ([o.Rule(p + "conv.", p + "proj."), o.Rule(p + "norm.", p + "norm.")]
                      + o._under(p + "pos.", o._PA_RULES))
        block = (o._unchanged("norm1.", "norm2.", "mlp.fc1.", "mlp.fc2.")
                 + o._under("attn.", o._EMSA_RULES))
        for i in range(1, 5):
            for j in range(len(getattr(model, f"stage{i}"))):
                rules += o._under(f"stage{i}.{j}.", block)
        return model, rules + o._unchanged("norm.", "head.")
    return make


#: whole-network kinds for ``official.from_official``: name -> builder(state_dict=..., **official
#: constructor arguments) -> (our network, renaming rules)
OFFICIAL_NETWORKS = {
    **{f"eca_resnet{d}": _official_eca_resnet(d) for d in (18, 34, 50, 101, 152)},
    "bam_resnet50": _official_bam_resnet50,
    "scnet50": _official_scnet(50), "scnet101": _official_scnet(101),
    "epsanet50": _official_epsanet(50), "epsanet101": _official_epsanet(101),
    **{f"rest_{v}": _official_rest(v) for v in _REST_VARIANTS},
}


def main() -> int:
    """``python -m attn_tutorial networks``: print the table and how long it took."""
    start = time.perf_counter()
    print(format_table(table()), flush=True)
    print(f"\n(counted on the meta device in {time.perf_counter() - start:.1f} s; 'ours' and "
          "'authors' are params M / compute G in the authors' convention)")
    return 0
