"""EPSANet: the Pyramid Split Attention (PSA) module and the EPSA bottleneck.

Paper: Zhang, Zu, Lu, Zou, Meng, "EPSANet: An Efficient Pyramid Split Attention Block on
Convolutional Neural Network", arXiv 2105.14447 (later versions: "Pyramid Squeeze Attention").
Official code: murufeng/EPSANet (``models/epsanet.py``, ``models/SE_weight_module.py``).

Several convolutions with growing kernels look at the same input; one shared SE block scores
each scale's channels, and a softmax over the scales decides, channel by channel, how much each
kernel size contributes.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn as nn
from einops import rearrange, reduce

from ._init import reset_torch_layers, resnet_conv_bn_init
from ._validate import (require_all, require_choice, require_divisible, require_feature_map,
                        require_int, require_positive_width)

__all__ = ["PSA", "EPSABlock"]


class PSA(nn.Module):
    """Pyramid split attention: multi-kernel convs, shared SE, softmax over scales.

    Official: class ``PSAModule`` (with ``SEWeightModule``).

    Input x: B×in_channels×H×W. Output: B×planes×H'×W' (H' = ⌊(H − 1)/stride⌋ + 1).
    With S scales (``len(conv_kernels)``, 4 by default) and Ps = planes / S:

    1. S parallel convs **on the full input**: conv s has kernel k_s, padding k_s // 2, the given
       stride, groups g_s, no bias, in_channels -> Ps; stacked on a ``scale`` axis:
       B×S×Ps×H'×W';
    2. **one shared** SE (GAP -> 1×1 conv Ps -> Ps // se_reduction, bias -> ReLU -> 1×1 conv
       -> Ps, bias -> sigmoid) scores every scale: B×S×Ps;
    3. softmax over the ``scale`` axis (for each channel index the S scales compete; this
       follows the sigmoid);
    4. features × attention, then the scales are concatenated along channels. The official code
       concatenates them **in reverse** ([k9, k7, k5, k3] by default) — ``concat_order=
       "official"``; ``"natural"`` gives [k3, k5, k7, k9].

    Code vs paper: the shared SE and the reversed concatenation are code facts not visible in
    the paper's figure. The branch convs read the whole input (``branch_input="full"``); the
    paper splits the input's channels into S parts, one per kernel, as a reader described it in
    murufeng/EPSANet issue #9, where the maintainer answered "follow the code";
    ``branch_input="split"`` gives that form: conv s reads only channels
    ``s·in_channels/S … (s+1)·in_channels/S − 1``. For the groups, ``conv_groups=(2, 4, 8, 16)``
    gives the rule G = 2^((K−1)/2), which differs from the code's (1, 4, 8, 16) only at K = 3; the
    paper's own rule is not quoted here, and the code's list is the one the maintainer says to
    follow (issue #9). The "Large" models the official README reports are not in its code.

    Kernels: padding k // 2 keeps ⌊(H − 1)/stride⌋ + 1 rows for an odd k but gives
    ⌊H/stride⌋ + 1 for an even k, so the scales can be stacked only when every kernel has the
    same parity (the official code has no check and fails in ``forward``); mixed kernels are
    refused at construction.

    ``attention_map(x)`` returns the softmax weights B×S×Ps in natural order (k3 first);
    ``gate_input(x)`` the pooled branch outputs B×S×Ps the SE reads to compute them.

    Initialisation: official (conv weights normal(0, sqrt(2/(k·k·out))), SE conv biases
    default).
    """

    def __init__(self, in_channels: int, planes: int, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 stride: int = 1, conv_groups: Sequence[int] = (1, 4, 8, 16),
                 se_reduction: int = 16,
                 concat_order: Literal["official", "natural"] = "official",
                 branch_input: Literal["full", "split"] = "full") -> None:
        super().__init__()
        require_int("in_channels", in_channels)
        require_int("planes", planes)
        require_int("stride", stride)
        conv_kernels = require_all("conv_kernels", conv_kernels)
        conv_groups = require_all("conv_groups", conv_groups)
        if len(conv_kernels) != len(conv_groups) or not conv_kernels:
            raise ValueError(
                f"conv_kernels={conv_kernels} and conv_groups={conv_groups} must be non-empty and "
                "of the same length (one group count per kernel)"
            )
        if len({k % 2 for k in conv_kernels}) > 1:
            raise ValueError(
                f"conv_kernels={conv_kernels} mixes odd and even kernels: with padding k // 2 an "
                "odd kernel keeps ⌊(H − 1)/stride⌋ + 1 rows and an even one gives ⌊H/stride⌋ + 1, "
                "so the scales cannot be stacked; use kernels of one parity (officially 3, 5, 7, 9)"
            )
        require_choice("concat_order", concat_order,
                       {"official": "reversed, largest kernel first", "natural": "k3 first"})
        require_choice("branch_input", branch_input,
                       {"full": "every branch reads the whole input (the code)",
                        "split": "branch s reads the s-th of S channel slices (the paper)"})
        num_scales = len(conv_kernels)
        require_divisible("planes", planes, "the number of kernels len(conv_kernels)", num_scales)
        split = planes // num_scales
        if branch_input == "split":
            require_divisible("in_channels", in_channels,
                              'the number of kernels len(conv_kernels) (branch_input="split")',
                              num_scales)
            branch_in = in_channels // num_scales
            branch_in_name = "in_channels // len(conv_kernels)"
        else:
            branch_in, branch_in_name = in_channels, "in_channels"
        for g in conv_groups:
            require_divisible(branch_in_name, branch_in, "a conv_groups entry", g)
            require_divisible("planes // len(conv_kernels)", split, "a conv_groups entry", g)
        se_hidden = require_positive_width("planes // len(conv_kernels)", split, se_reduction,
                                         "se_reduction")
        self.in_channels = in_channels
        self.num_scales = num_scales
        self.concat_order = concat_order
        self.branch_input = branch_input
        self.branches = nn.ModuleList(
            nn.Conv2d(branch_in, split, kernel_size=k, stride=stride, padding=k // 2, groups=g,
                      bias=False)
            for k, g in zip(conv_kernels, conv_groups)
        )
        self.se_reduce = nn.Conv2d(split, se_hidden, kernel_size=1)
        self.se_relu = nn.ReLU(inplace=True)
        self.se_expand = nn.Conv2d(se_hidden, split, kernel_size=1)
        resnet_conv_bn_init(self)

    def reset_parameters(self) -> None:
        """The official initialisation (EPSANet's network constructor), which construction
        applies: PyTorch's defaults, then :func:`resnet_conv_bn_init`."""
        reset_torch_layers(self)
        resnet_conv_bn_init(self)

    def _scales(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """The S branch outputs stacked on a ``scale`` axis: B×S×Ps×H'×W' (smallest kernel first,
        or largest first with ``reverse``)."""
        require_feature_map(x, self.in_channels)
        if self.branch_input == "split":
            parts = rearrange(x, "b (scale c) h w -> scale b c h w", scale=self.num_scales)
            scales = [branch(part) for branch, part in zip(self.branches, parts)]
        else:
            scales = [branch(x) for branch in self.branches]
        if reverse:
            scales.reverse()
        # torch.stack on dim 1 writes "b scale c h w" contiguously, so the final
        # "b scale c h w -> b (scale c) h w" is a free view (no extra copy)
        return torch.stack(scales, dim=1)

    def _attention(self, feats: torch.Tensor) -> torch.Tensor:
        """feats b scale c h w -> softmax over scale of the shared SE scores: b scale c 1 1."""
        pooled = reduce(feats, "b scale c h w -> (b scale) c 1 1", "mean")
        scores = torch.sigmoid(self.se_expand(self.se_relu(self.se_reduce(pooled))))
        scores = rearrange(scores, "(b scale) c 1 1 -> b scale c 1 1", scale=self.num_scales)
        return torch.softmax(scores, dim=1)  # dim 1 is the `scale` axis

    def gate_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the shared SE reads: each branch conv's output, globally average-pooled,
        B×S×Ps in natural order — the features behind each entry of :meth:`attention_map`
        (not the module's input ``x``, which the branch convs transform first)."""
        return reduce(self._scales(x), "b scale c h w -> b scale c", "mean")

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax weights per scale: B×S×Ps, natural order (smallest kernel first)."""
        return rearrange(self._attention(self._scales(x)), "b scale c 1 1 -> b scale c")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×in_channels×H×W -> B×planes×H'×W'."""
        # The shared SE and the softmax treat every scale alike, so stacking the scales in the
        # official (reversed: largest kernel first) order up front gives the official
        # concatenation directly.
        feats = self._scales(x, reverse=self.concat_order == "official")
        weighted = feats * self._attention(feats)
        return rearrange(weighted, "b scale c h w -> b (scale c) h w")


_ODD_FOR_RESIDUAL = ("with padding k // 2 only an odd kernel keeps the map's size, and the block "
                     "adds its output to the (downsampled) input")


class EPSABlock(nn.Module):
    """EPSANet bottleneck: a ResNet bottleneck whose 3×3 conv is a :class:`PSA`.

    Official: class ``EPSABlock`` (expansion 4).

    Conv1×1(inplanes -> planes, no bias) + BN + ReLU -> PSA(planes, planes, stride) + BN + ReLU
    -> Conv1×1(planes -> 4·planes, no bias) + BN -> + identity (or ``downsample(x)``) -> ReLU.

    Input x: B×inplanes×H×W; output B×4·planes×H'×W'. Without ``downsample`` inplanes must equal
    4·planes and stride must be 1.

    Initialisation: official (EPSANet constructor), also applied to ``downsample``.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 conv_groups: Sequence[int] = (1, 4, 8, 16), se_reduction: int = 16,
                 concat_order: Literal["official", "natural"] = "official",
                 branch_input: Literal["full", "split"] = "full") -> None:
        super().__init__()
        require_int("inplanes", inplanes)
        require_int("planes", planes)
        require_int("stride", stride)
        require_all("conv_kernels", conv_kernels, odd_because=_ODD_FOR_RESIDUAL)
        if downsample is None and (stride != 1 or inplanes != planes * self.expansion):
            raise ValueError(
                f"without a downsample module the residual needs stride=1 and inplanes = "
                f"4·planes, got stride={stride}, inplanes={inplanes}, planes={planes}"
            )
        self.inplanes = inplanes
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.psa = PSA(planes, planes, conv_kernels=conv_kernels, stride=stride,
                       conv_groups=conv_groups, se_reduction=se_reduction,
                       concat_order=concat_order, branch_input=branch_input)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        resnet_conv_bn_init(self)

    def reset_parameters(self) -> None:
        """The official initialisation (EPSANet's network constructor), ``downsample`` included,
        which construction applies: PyTorch's defaults, then :func:`resnet_conv_bn_init`."""
        reset_torch_layers(self)
        resnet_conv_bn_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×inplanes×H×W -> B×4·planes×H'×W'."""
        require_feature_map(x, self.inplanes)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.psa(out)))
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)
