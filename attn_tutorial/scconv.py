"""SCNet: self-calibrated convolutions.

Paper: Liu, Hou, Cheng, Wang, Feng, "Improving Convolutional Networks with Self-Calibrated
Convolutions", CVPR 2020. Official code: backseason/SCNet (``scnet.py``).

A self-calibrated convolution gates an ordinary 3×3 convolution with a sigmoid map computed
from a down-sampled (pooled) view of the same input, so each position sees a larger context.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._init import reset_torch_layers, resnet_conv_bn_init
from ._validate import (require_batch_statistics, require_bool, require_choice,
                        require_divisible, require_feature_map, require_int, require_min_size)

__all__ = ["SCConv", "SCBottleneck"]


class SCConv(nn.Module):
    """Self-calibrated convolution: ``out = BN(K4(BN(K3(x)) · sigmoid(x + up(BN(K2(pool_r(x)))))))``.

    Official: class ``SCConv``.

    Input x: B×C×H×W (H, W >= pooling_r). Output: B×C×H'×W' with H' = ⌊(H − 1)/stride⌋ + 1
    (3×3 convs with padding = dilation), i.e. only K4 changes the size.

    1. K2 path: AvgPool(r, stride r, floor) -> 3×3 conv (no bias) -> BN: B×C×⌊H/r⌋×⌊W/r⌋;
    2. up-sample to H×W: ``upsample="nearest"`` (official; ``F.interpolate``'s legacy nearest)
       or ``"bilinear"`` (the paper's wording; align_corners=False). Legacy nearest reads source
       row ⌊dst·s⌋ (clamped to in − 1) with s = in/out rounded to float32 and the product taken
       in float32 (float32, float16, bfloat16 inputs; torch 2.13). That is ⌊dst·in/out⌋ except
       where dst·in/out is a whole number and the rounding lands just below it: 24 pooled rows
       up-sampled to 74 read row 11 at dst = 37, not 12. float64 inputs take other index paths
       (1-D: the exact ⌊dst·in/out⌋; 2-D: float32 or double arithmetic depending on the output
       width). For H = 9, r = 4 rows 0-4 read pooled row 0 and rows 5-8 pooled row 1;
    3. gate = sigmoid(x + up) — the identity added is the SCConv *input*;
    4. y = BN(K3(x)) · gate, K3 a 3×3 conv with stride 1;
    5. out = BN(K4(y)), **K4 carries the stride**. No ReLU anywhere inside.

    All three 3×3 convs share padding, dilation and groups and have no bias. Input and output
    channels are equal (the identity is added to the up-sampled K2 output).

    Code vs paper: the paper up-samples bilinearly, the code uses nearest (``upsample``). The
    official code comment calls the pooled path "K3"; it is the paper's K2, named so here.

    Initialisation: official (kaiming-normal fan_out/relu convs, BN 1/0).

    ``attention_map(x)`` returns the calibration gate ``sigmoid(x + up(K2(x)))``, B×C×H×W.

    Errors: H or W smaller than ``pooling_r``; in train mode, a BatchNorm left with one value per
    channel (batch 1 with a 1×1 pooled map, i.e. pooling_r <= H, W < 2·pooling_r, or a 1×1
    strided output).
    """

    def __init__(self, channels: int, stride: int = 1, padding: int = 1, dilation: int = 1,
                 groups: int = 1, pooling_r: int = 4,
                 upsample: Literal["nearest", "bilinear"] = "nearest") -> None:
        super().__init__()
        require_int("channels", channels)
        require_int("stride", stride)
        require_int("dilation", dilation)
        require_int("pooling_r", pooling_r)
        require_divisible("channels", channels, "groups", groups)
        require_int("padding", padding, minimum=0)
        if padding != dilation:
            raise ValueError(
                f"padding={padding} must equal dilation={dilation}: a 3×3 conv keeps H×W only then, "
                "and K3(x) is multiplied by a gate of the input's size"
            )
        require_choice("upsample", upsample,
                       {"nearest": "official, legacy nearest", "bilinear": "paper"})
        self.channels = channels
        self.pooling_r = pooling_r
        self.stride = stride
        self.dilation = dilation
        self.upsample = upsample

        def conv3x3(conv_stride: int) -> nn.Conv2d:
            return nn.Conv2d(channels, channels, kernel_size=3, stride=conv_stride,
                             padding=padding, dilation=dilation, groups=groups, bias=False)

        self.pool = nn.AvgPool2d(kernel_size=pooling_r, stride=pooling_r)
        self.k2_conv = conv3x3(1)
        self.k2_bn = nn.BatchNorm2d(channels)
        self.k3_conv = conv3x3(1)
        self.k3_bn = nn.BatchNorm2d(channels)
        self.k4_conv = conv3x3(stride)
        self.k4_bn = nn.BatchNorm2d(channels)
        resnet_conv_bn_init(self)

    def reset_parameters(self) -> None:
        """The official initialisation (SCNet's network constructor), which construction applies:
        PyTorch's defaults, then :func:`resnet_conv_bn_init`."""
        reset_torch_layers(self)
        resnet_conv_bn_init(self)

    def _require_input(self, x: torch.Tensor) -> None:
        require_feature_map(x, self.channels)
        require_min_size(x, self.pooling_r, "pooling_r")
        B, _, H, W = x.shape
        r = self.pooling_r
        require_batch_statistics(
            self.training, B * (H // r) * (W // r), "the K2 BatchNorm",
            f"x has batch size 1 and H×W = {H}×{W}, which pooling_r={r} pools to a 1×1 map")
        Ho, Wo = ((n - 1) // self.stride + 1 for n in (H, W))  # 3×3, padding = dilation
        require_batch_statistics(
            self.training, B * Ho * Wo, "the K4 BatchNorm",
            f"x has batch size 1 and H×W = {H}×{W}, which stride={self.stride} takes to 1×1")

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The calibration gate sigmoid(x + up(K2(x))): B×C×H×W, values in (0, 1)."""
        self._require_input(x)
        context = self.k2_bn(self.k2_conv(self.pool(x)))
        if self.upsample == "nearest":
            up = F.interpolate(context, size=x.shape[-2:], mode="nearest")
        else:
            up = F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(x + up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H'×W'."""
        gate = self.attention_map(x)
        calibrated = self.k3_bn(self.k3_conv(x)) * gate
        return self.k4_bn(self.k4_conv(calibrated))


class SCBottleneck(nn.Module):
    """SCNet bottleneck: a plain 3×3 branch and an SCConv branch side by side.

    Official: class ``SCBottleneck`` (expansion 4).

    With g = int(planes · bottleneck_width / 64) · cardinality (planes / 2 by default):

    * branch a: Conv1×1(inplanes -> g) + BN + ReLU -> K1 = Conv3×3(stride, groups=cardinality)
      + BN -> ReLU;
    * branch b: Conv1×1(inplanes -> g) + BN + ReLU -> :class:`SCConv` (stride, r = pooling_r)
      -> ReLU;
    * if ``avd and (stride > 1 or is_first)``: both 3×3 ops run with stride 1 and a
      3×3 AvgPool(stride, padding 1, zero padding counted) strides each branch afterwards;
    * concat (a first) -> Conv1×1(2g -> 4·planes) + BN -> + residual -> ReLU.

    Input x: B×inplanes×H×W; output B×4·planes×H'×W'. ``downsample`` (any module) maps x to the
    residual; without it inplanes must equal 4·planes and stride must be 1.

    Code vs paper: the paper splits the channels of X, the input of the 3×3 conv it replaces,
    into two halves X1, X2; the code (and this module) makes them with two separate 1×1 convs
    (``conv1_a``, ``conv1_b``) from the block's input. That is the same function: one 1×1 conv
    to 2g channels, its BN and ReLU (all per channel), split in half, computes exactly X1, X2 of
    the code once its weights are the two convs' stacked (``tests/test_scconv.py`` maps the
    weights both ways). Only the initialisation differs: kaiming fan_out sees g outputs per conv
    instead of 2g, so the code's 1×1 weights start √2 larger. The SCConv up-sampling is nearest
    in the code, bilinear in the paper (``upsample``).

    Initialisation: official (kaiming-normal fan_out/relu convs, BN 1/0, no zero-gamma), also
    applied to ``downsample`` as the official network constructor does.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, cardinality: int = 1,
                 bottleneck_width: int = 32, avd: bool = False, dilation: int = 1,
                 is_first: bool = False, pooling_r: int = 4,
                 upsample: Literal["nearest", "bilinear"] = "nearest") -> None:
        super().__init__()
        require_int("inplanes", inplanes)
        require_int("planes", planes)
        require_int("stride", stride)
        require_int("cardinality", cardinality)
        require_int("bottleneck_width", bottleneck_width)
        require_int("dilation", dilation)
        require_int("pooling_r", pooling_r)
        require_bool("avd", avd)
        require_bool("is_first", is_first)
        group_width = int(planes * (bottleneck_width / 64.0)) * cardinality
        if group_width < 1:
            raise ValueError(
                f"planes={planes}, bottleneck_width={bottleneck_width}, cardinality={cardinality} "
                f"give group_width = int(planes·bottleneck_width/64)·cardinality = {group_width}; "
                "it must be >= 1"
            )
        if downsample is None and (stride != 1 or inplanes != planes * self.expansion):
            raise ValueError(
                f"without a downsample module the residual needs stride=1 and inplanes = "
                f"4·planes, got stride={stride}, inplanes={inplanes}, planes={planes}"
            )
        self.inplanes = inplanes
        self.avd = avd and (stride > 1 or is_first)
        inner_stride = 1 if self.avd else stride

        self.conv1_a = nn.Conv2d(inplanes, group_width, kernel_size=1, bias=False)
        self.bn1_a = nn.BatchNorm2d(group_width)
        self.conv1_b = nn.Conv2d(inplanes, group_width, kernel_size=1, bias=False)
        self.bn1_b = nn.BatchNorm2d(group_width)
        self.k1_conv = nn.Conv2d(group_width, group_width, kernel_size=3, stride=inner_stride,
                                 padding=dilation, dilation=dilation, groups=cardinality,
                                 bias=False)
        self.k1_bn = nn.BatchNorm2d(group_width)
        self.scconv = SCConv(group_width, stride=inner_stride, padding=dilation,
                             dilation=dilation, groups=cardinality, pooling_r=pooling_r,
                             upsample=upsample)
        self.avd_pool = nn.AvgPool2d(3, stride, padding=1) if self.avd else None
        self.conv3 = nn.Conv2d(group_width * 2, planes * self.expansion, kernel_size=1,
                               bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        resnet_conv_bn_init(self)

    def reset_parameters(self) -> None:
        """The official initialisation (SCNet's network constructor), ``downsample`` included,
        which construction applies: PyTorch's defaults, then :func:`resnet_conv_bn_init`."""
        reset_torch_layers(self)
        resnet_conv_bn_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×inplanes×H×W -> B×4·planes×H'×W'."""
        require_feature_map(x, self.inplanes)
        out_a = self.relu(self.bn1_a(self.conv1_a(x)))
        out_b = self.relu(self.bn1_b(self.conv1_b(x)))
        out_a = self.relu(self.k1_bn(self.k1_conv(out_a)))
        out_b = self.relu(self.scconv(out_b))
        if self.avd_pool is not None:
            out_a, out_b = self.avd_pool(out_a), self.avd_pool(out_b)
        out = self.bn3(self.conv3(torch.cat([out_a, out_b], dim=1)))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)
