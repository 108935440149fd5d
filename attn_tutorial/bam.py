"""BAM: Bottleneck Attention Module.

Paper: Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018 (arXiv 1807.06514).
Official code: Jongchan/attention-module (``MODELS/bam.py``).

A channel map Mc (B×C×1×1, from a global average and a bottleneck MLP) and a spatial map Ms
(B×1×H×W, from a bottleneck of dilated 3×3 convs) are combined into one B×C×H×W attention
``1 + sigmoid(Mc ∘ Ms)`` that rescales the input. ``∘`` is a product in the released code and a
sum in the paper.

Where the BatchNorms sit. The released code (``MODELS/bam.py``) normalises only hidden layers: the
MLP's hidden layer and the spatial branch's reduced and dilated maps; neither branch's *output*
has a BN. The paper's equations in Section 3, Mc(F) = BN(MLP(AvgPool(F))) (page 4) and
Ms(F) = BN(f1×1(f3×3(f3×3(f1×1(F))))) (page 5), put one BN on each branch's output; issue #49 of
the official repository quotes both against the code (no reply from the authors). The paper's
reason for the channel branch's BN: to adjust its scale to the spatial branch's output.
``BAM(fusion="paper")`` builds the paper's form (sum and the two output BNs), ``fusion="sum"``
the sum with the code's BN placement.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from einops.layers.torch import Rearrange, Reduce

from ._init import reset_torch_layers
from ._validate import (require_batch_statistics, require_bool, require_choice,
                        require_feature_map, require_int, require_positive_width)

__all__ = ["BAMChannelGate", "BAMSpatialGate", "BAM"]


def _bam_init(module: nn.Module) -> None:
    """The official ResNet constructor's init: conv weights kaiming-normal (fan_out), BN weight 1,
    every bias 0 (Linear biases included), Linear weights at PyTorch's default."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
            nn.init.zeros_(m.bias)


class _BAMBranch(nn.Module):
    """What the two branches share: BAM's official initialisation."""

    def reset_parameters(self) -> None:
        """BAM's official initialisation of this branch (see :class:`BAM`; a branch built on its
        own keeps PyTorch's default init until this is called)."""
        reset_torch_layers(self)
        _bam_init(self)


class BAMChannelGate(_BAMBranch):
    """BAM channel branch: global average pool -> MLP with one hidden BN+ReLU layer.

    Official: class ``ChannelGate``.

    ``GAP(x)`` (B×C) -> Linear(C -> C//r, bias) -> BatchNorm1d -> ReLU -> Linear(C//r -> C, bias),
    returned as B×C×1×1 (it broadcasts against B×C×H×W). No BN and no activation on the output
    (the code); ``output_bn=True`` adds a BatchNorm1d(C) on the output (the paper's equation).

    Pooling (official vs this module): the official code calls ``avg_pool2d`` with an H×H window
    and stride H, which equals a global average only for square maps (H = W). For W < H it raises,
    for H <= W < 2H it averages only the left H×H block, for W >= 2H the first Linear gets the wrong
    width. This module always takes the true global average over H×W, so it matches the official
    code exactly on square maps and is the (intended) global pooling on non-square ones.

    Other official/paper differences: the official ``ChannelGate`` cannot be built as published
    (a ``NameError`` on an undefined ``gate_activation``); the paper's equation (Section 3, page 4;
    see the module docstring) puts a BN on the branch output, the code only
    on the hidden layer (the default here).

    In train mode a batch of 1 is refused with a ``ValueError`` (BatchNorm1d needs >= 2 values
    per channel).
    """

    def __init__(self, channels: int, reduction_ratio: int = 16, output_bn: bool = False) -> None:
        super().__init__()
        require_int("channels", channels)
        hidden = require_positive_width("channels", channels, reduction_ratio, "reduction_ratio")
        require_bool("output_bn", output_bn)
        self.channels = channels
        self.pool = Reduce("b c h w -> b c", "mean")
        self.fc_reduce = nn.Linear(channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU()
        self.fc_expand = nn.Linear(hidden, channels)
        self.out_bn = nn.BatchNorm1d(channels) if output_bn else nn.Identity()
        self.to_map = Rearrange("b c -> b c 1 1")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> Mc: B×C×1×1."""
        require_feature_map(x, self.channels)
        require_batch_statistics(self.training, x.shape[0],
                                 "the channel gate's BatchNorm1d (after the global average)",
                                 f"x has batch size 1 (shape {tuple(x.shape)})", spatial=False)
        hidden = self.relu(self.bn(self.fc_reduce(self.pool(x))))
        return self.to_map(self.out_bn(self.fc_expand(hidden)))


class BAMSpatialGate(_BAMBranch):
    """BAM spatial branch: 1×1 reduce -> dilated 3×3 convs -> 1×1 to a single map.

    Official: class ``SpatialGate``.

    Conv1×1(C -> C//r, bias) + BN + ReLU, then ``num_dilated_convs`` times
    Conv3×3(C//r -> C//r, dilation d, padding d, bias) + BN + ReLU, then Conv1×1(C//r -> 1, bias).
    Input B×C×H×W, output Ms: B×1×H×W (it broadcasts against B×C×H×W; the official code
    ``expand_as`` the input, which is the same broadcast). No BN on the output (the code);
    ``output_bn=True`` adds a BatchNorm2d(1) on the output map (the paper's equation, see the
    module docstring).
    """

    def __init__(self, channels: int, reduction_ratio: int = 16, dilation: int = 4,
                 num_dilated_convs: int = 2, output_bn: bool = False) -> None:
        super().__init__()
        require_int("channels", channels)
        hidden = require_positive_width("channels", channels, reduction_ratio, "reduction_ratio")
        require_bool("output_bn", output_bn)
        require_int("dilation", dilation)
        require_int("num_dilated_convs", num_dilated_convs, minimum=0)
        self.channels = channels
        self.reduce = nn.Conv2d(channels, hidden, kernel_size=1)
        self.reduce_bn = nn.BatchNorm2d(hidden)
        self.dilated = nn.ModuleList(
            nn.Conv2d(hidden, hidden, kernel_size=3, padding=dilation, dilation=dilation)
            for _ in range(num_dilated_convs)
        )
        self.dilated_bn = nn.ModuleList(nn.BatchNorm2d(hidden) for _ in range(num_dilated_convs))
        self.relu = nn.ReLU()
        self.project = nn.Conv2d(hidden, 1, kernel_size=1)
        self.out_bn = nn.BatchNorm2d(1) if output_bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> Ms: B×1×H×W."""
        require_feature_map(x, self.channels)
        h = self.relu(self.reduce_bn(self.reduce(x)))
        for conv, bn in zip(self.dilated, self.dilated_bn):
            h = self.relu(bn(conv(h)))
        return self.out_bn(self.project(h))


class BAM(nn.Module):
    """Bottleneck Attention Module: ``y = x * (1 + sigmoid(Mc ∘ Ms))``.

    Official: class ``BAM`` (placed after ResNet stages 1-3).

    Input x: B×C×H×W (any H, W); output: B×C×H×W.

    Args:
        channels: C, fixed at construction.
        reduction_ratio: r; both branches work at width C // r (must be >= 1).
        dilation: dilation (and padding) of the spatial branch's 3×3 convs.
        num_dilated_convs: how many dilated 3×3 convs the spatial branch stacks.
        fusion: ``"official"`` (default): ``1 + sigmoid(Mc * Ms)``, the product of the released
            code, with which the README's ImageNet checkpoint was trained (issues #1, #39, #52 of
            the official repository ask why it differs from the paper), BN on the hidden layers only; ``"sum"``: ``1 + sigmoid(Mc + Ms)`` with the code's BN
            placement (the sum alone); ``"paper"``: the paper's form, the sum *and* a BN on each
            branch's output (``out_bn`` in both gates: Mc = BN(MLP(GAP F)), Ms = BN(convs(F))).

    Where the official code and the paper disagree:
      * fusion: product in code, sum in the paper (``fusion`` above);
      * BN placement: the paper's equations (Section 3, quoted in issue #49;
        see the module docstring) normalise each branch's output, the code only the hidden layers;
      * channel pooling: the code pools an H×H window (global only for square maps; see
        :class:`BAMChannelGate`; issue #50); this module always pools globally;
      * init: the official ResNet constructor zeroes the BN weight of keys containing
        ``"SpatialGate"``, a rule written for CBAM (attribute ``SpatialGate``, ``MODELS/cbam.py``)
        that never matches BAM's attribute ``spatial_att``; so no BN of BAM is zeroed, here either.

    Initialisation follows the official ResNet constructor: conv weights kaiming-normal
    (fan_out), BN weight 1, every bias 0 (Linear biases included), channel-gate Linear weights at
    PyTorch's default.

    Train mode with batch 1 raises ``ValueError`` (the BatchNorm1d of the channel gate cannot
    normalise one sample); eval mode accepts batch 1.
    """

    def __init__(self, channels: int, reduction_ratio: int = 16, dilation: int = 4,
                 num_dilated_convs: int = 2,
                 fusion: Literal["official", "sum", "paper"] = "official") -> None:
        super().__init__()
        require_choice("fusion", fusion, {
            "official": "product Mc * Ms", "sum": "sum Mc + Ms, the code's BNs",
            "paper": "sum Mc + Ms with a BN on each branch's output"})
        self.channels = channels
        self.fusion = fusion
        output_bn = fusion == "paper"
        self.channel_gate = BAMChannelGate(channels, reduction_ratio, output_bn=output_bn)
        self.spatial_gate = BAMSpatialGate(channels, reduction_ratio, dilation, num_dilated_convs,
                                           output_bn=output_bn)
        _bam_init(self)

    def reset_parameters(self) -> None:
        """The official initialisation (the ResNet constructor of the official repository), which
        construction applies: PyTorch's defaults, then :func:`_bam_init`."""
        reset_torch_layers(self)
        _bam_init(self)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map ``M(F) = sigmoid(Mc ∘ Ms)``: B×C×H×W, values in (0, 1).

        The block returns ``F + F ⊙ M(F)``, i.e. ``(1 + M(F)) ⊙ F``.
        """
        require_feature_map(x, self.channels)
        mc, ms = self.channel_gate(x), self.spatial_gate(x)
        combined = mc * ms if self.fusion == "official" else mc + ms
        return torch.sigmoid(combined)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W."""
        return (1 + self.attention_map(x)) * x
