"""Checkers for lesson 03 (PSA, EPSANet): exercises in ``solutions/03_psa.ipynb``.

1. ``check_psa_param_count``: the parameters of a PSA module, by formula (an ``int``).
2. ``check_scale_weights``: the shared SE and the softmax over scales, B×S×C×H×W -> B×S×C.
3. ``check_psa_module`` (a module exercise): the learner's PSA ``nn.Module``, ``__init__`` and
   ``forward``, compared with the reference on the same weights (outputs and input gradients).

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference with
a knob turned. Slips that change *which* parameters exist (a separate SE per branch, groups
ignored, each branch reading only its channel split) cannot be run on the reference's weights, so
they are caught where they show: in the parameter count of exercise 1.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import einsum, rearrange, reduce

from attn_tutorial._init import resnet_conv_bn_init
from attn_tutorial.checks._core import Case, Mistake, Checker, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "03_psa"  # exercises/03_psa.ipynb holds these exercises, in this order
__all__ = ["check_psa_param_count", "check_scale_weights", "check_psa_module"]


# --------------------------------------------------------------- 1. the parameter count
def ref_psa_param_count(in_channels: int, planes: int, conv_kernels: Sequence[int],
                        conv_groups: Sequence[int], se_reduction: int = 16, *,
                        se: str = "shared", use_groups: bool = True, branch_in: str = "full",
                        se_width: str = "split", se_bias: bool = True,
                        conv_bias: bool = False) -> int:
    """Parameters of ``PSA(in_channels, planes, conv_kernels, conv_groups, se_reduction)``.

    S = len(conv_kernels) branches of Ps = planes / S output channels; conv s has
    k_s² · (in_channels / g_s) · Ps weights and no bias; one SE (Ps -> Ps // r -> Ps, with biases)
    is shared by all branches.

    Knobs: ``se`` ("per_branch": S separate SEs), ``use_groups`` (False: every conv dense),
    ``branch_in`` ("split": conv s reads in_channels / S channels), ``se_width`` ("planes": the
    SE on all planes channels), ``se_bias`` (False: the SE's biases forgotten), ``conv_bias``
    (True: a bias counted in every branch conv).
    """
    S = len(conv_kernels)
    ps = planes // S
    cin = in_channels // S if branch_in == "split" else in_channels
    convs = 0
    for k, g in zip(conv_kernels, conv_groups):
        g = g if use_groups else 1
        convs += k * k * (cin // g) * ps + (ps if conv_bias else 0)
    width = planes if se_width == "planes" else ps
    hidden = width // se_reduction
    one_se = 2 * width * hidden + ((hidden + width) if se_bias else 0)
    return convs + one_se * (S if se == "per_branch" else 1)


def _count_case(in_channels, planes, kernels, groups, reduction) -> Case:
    name = f"in {in_channels}, planes {planes}, k {tuple(kernels)}, g {tuple(groups)}, r {reduction}"
    return Case(name, lambda g, a=(in_channels, planes, tuple(kernels), tuple(groups), reduction): a)


check_psa_param_count = register(
    Checker(
        "psa_param_count",
        exercise="psa_param_count",
        tier="build",
        reference=ref_psa_param_count,
        cases=[
            _count_case(64, 64, (3, 5, 7, 9), (1, 4, 8, 16), 16),    # the official PSAModule(64, 64)
            _count_case(128, 256, (3, 5, 7, 9), (1, 4, 8, 16), 16),  # in != planes
            _count_case(36, 108, (3, 5, 7), (1, 3, 6), 4),           # three scales
            _count_case(64, 64, (3, 5, 7, 9), (1, 1, 1, 1), 4),      # dense, as the zoo's PSA
            # boundaries: a single scale; planes / S = 24 with r = 5 (remainder 4)
            _count_case(16, 32, (3,), (1,), 4),
            _count_case(24, 72, (3, 5, 7), (1, 2, 4), 5),
            # the default se_reduction = 16: called with four arguments
            Case("in 64, planes 128, k (3, 5, 7, 9), g (1, 4, 8, 16), r not given (16)",
                 lambda g: (64, 128, (3, 5, 7, 9), (1, 4, 8, 16))),
        ],
        mistakes=[
            Mistake("a separate SE per branch: the official code shares one SE by all the scales",
                    partial(ref_psa_param_count, se="per_branch")),
            Mistake("groups ignored: every branch conv counted as a dense conv",
                    partial(ref_psa_param_count, use_groups=False)),
            Mistake("each branch reading only its channel split (in_channels / S inputs): the "
                    "official convs read the full input",
                    partial(ref_psa_param_count, branch_in="split")),
            Mistake("the SE on all planes channels: it scores one branch of planes / S channels",
                    partial(ref_psa_param_count, se_width="planes")),
            Mistake("the SE's biases forgotten (its two 1×1 convs have biases)",
                    partial(ref_psa_param_count, se_bias=False)),
            Mistake("a bias counted in the branch convs (they have none)",
                    partial(ref_psa_param_count, conv_bias=True)),
        ],
    )
)


# ------------------------------------------------------ 2. shared SE, softmax over scales
def ref_scale_weights(feats: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                      w2: torch.Tensor, b2: torch.Tensor, *, pool: str = "mean",
                      relu: bool = True, sigmoid: bool = True, softmax: str = "scale"
                      ) -> torch.Tensor:
    """feats B×S×C×H×W (the branch outputs), one SE (w1 D×C, b1 D, w2 C×D, b2 C) applied to every
    scale: softmax over the scales of sigmoid(w2 · relu(w1 · GAP + b1) + b2), B×S×C.

    Knobs: ``pool`` ("max"), ``relu`` (False), ``sigmoid`` (False: the softmax of the raw
    logits), ``softmax`` ("channel": over the channel axis; "none": the sigmoid scores as they
    are).
    """
    pooled = reduce(feats, "b s c h w -> b s c", pool)
    hidden = einsum(pooled, w1, "b s c, d c -> b s d") + b1
    if relu:
        hidden = F.relu(hidden)
    z = einsum(hidden, w2, "b s d, c d -> b s c") + b2
    scores = torch.sigmoid(z) if sigmoid else z
    if softmax == "negated":  # exp(max − s): the stable-softmax shift the wrong way round
        return (-scores).softmax(dim=1)
    if softmax == "scale":
        return scores.softmax(dim=1)
    if softmax == "channel":
        return scores.softmax(dim=2)
    return scores


def _weights_case(b: int, s: int, c: int, h: int, w: int, d: int, seed: int) -> Case:
    def make(g: torch.Generator):
        feats = torch.randn(b, s, c, h, w, generator=g, dtype=torch.float64)
        feats = feats + torch.randn(b, s, c, 1, 1, generator=g, dtype=torch.float64)
        w1 = torch.randn(d, c, generator=g, dtype=torch.float64)
        b1 = torch.randn(d, generator=g, dtype=torch.float64) * 0.5
        w2 = torch.randn(c, d, generator=g, dtype=torch.float64)
        b2 = torch.randn(c, generator=g, dtype=torch.float64) * 0.5
        return feats, w1, b1, w2, b2

    return Case(f"feats {b}×{s}×{c}×{h}×{w}, hidden {d}", make, seed=seed)


check_scale_weights = register(
    Checker(
        "scale_weights",
        exercise="scale_weights",
        tier="build",
        reference=ref_scale_weights,
        cases=[
            _weights_case(2, 4, 16, 5, 7, 4, 0),
            _weights_case(1, 3, 12, 6, 5, 3, 1),   # batch 1, three scales
            _weights_case(3, 4, 8, 7, 7, 2, 2),
            _weights_case(2, 1, 6, 3, 4, 2, 3),   # boundary: a single scale (its weight is 1)
            _weights_case(1, 3, 5, 1, 1, 1, 4),   # boundary: a 1×1 map, one hidden unit
        ],
        mistakes=[
            Mistake("softmax over the channels instead of over the scales",
                    partial(ref_scale_weights, softmax="channel")),
            Mistake("the sigmoid missing before the softmax",
                    partial(ref_scale_weights, sigmoid=False)),
            Mistake("no softmax: the sigmoid scores are used as they are, so the scales do not "
                    "compete", partial(ref_scale_weights, softmax="none")),
            Mistake("max instead of mean pooling", partial(ref_scale_weights, pool="max")),
            Mistake("your answer computes the softmax of −scores over the scales: the "
                    "stable-softmax shift written max − s instead of s − max",
                    partial(ref_scale_weights, softmax="negated")),
            Mistake("the ReLU between the two SE layers missing",
                    partial(ref_scale_weights, relu=False)),
        ],
    )
)


# ------------------------------------------------------------------ 3. the PSA module
class PSAReference(nn.Module):
    """PSA as the official ``PSAModule`` computes it, with the parameter names of
    ``attn_tutorial.psa.PSA`` (``branches.N``, ``se_reduce``, ``se_expand``).

    Knobs: ``concat`` ("natural": [k3, k5, …] instead of the official reversed order),
    ``softmax`` ("channel"), ``sigmoid`` (False), ``weights_follow`` (False: the features are
    concatenated in reverse but their weights are not, so scale s is weighted by scale S−1−s's
    attention).
    """

    def __init__(self, in_channels: int, planes: int, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 conv_groups: Sequence[int] = (1, 4, 8, 16), se_reduction: int = 16, *,
                 concat: str = "reversed", softmax: str = "scale", sigmoid: bool = True,
                 weights_follow: bool = True) -> None:
        super().__init__()
        split = planes // len(conv_kernels)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, split, k, padding=k // 2, groups=g, bias=False)
            for k, g in zip(conv_kernels, conv_groups))
        self.se_reduce = nn.Conv2d(split, split // se_reduction, 1)
        self.se_expand = nn.Conv2d(split // se_reduction, split, 1)
        self.concat, self.softmax, self.sigmoid = concat, softmax, sigmoid
        self.weights_follow = weights_follow
        resnet_conv_bn_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([branch(x) for branch in self.branches], dim=1)  # b s c h w
        pooled = reduce(feats, "b s c h w -> (b s) c 1 1", "mean")
        z = self.se_expand(F.relu(self.se_reduce(pooled)))
        scores = torch.sigmoid(z) if self.sigmoid else z
        scores = rearrange(scores, "(b s) c 1 1 -> b s c 1 1", s=feats.shape[1])
        att = scores.softmax(dim=1 if self.softmax == "scale" else 2)
        if self.concat == "reversed":
            feats = feats.flip(1)
            if self.weights_follow:
                att = att.flip(1)
        return rearrange(feats * att, "b s c h w -> b (s c) h w")


class PSASolution(nn.Module):
    """What a correct learner hands in: the official PSA, written plainly."""

    def __init__(self, in_channels: int, planes: int, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 conv_groups: Sequence[int] = (1, 4, 8, 16), se_reduction: int = 16) -> None:
        super().__init__()
        split = planes // len(conv_kernels)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, split, k, padding=k // 2, groups=g, bias=False)
            for k, g in zip(conv_kernels, conv_groups))
        self.se_reduce = nn.Conv2d(split, split // se_reduction, 1)
        self.se_expand = nn.Conv2d(split // se_reduction, split, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.stack([branch(x) for branch in self.branches], dim=1)
        pooled = reduce(feats, "b s c h w -> (b s) c 1 1", "mean")
        scores = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(pooled))))
        att = rearrange(scores, "(b s) c 1 1 -> b s c 1 1", s=feats.shape[1]).softmax(dim=1)
        return rearrange((feats * att).flip(1), "b s c h w -> b (s c) h w")


def _x(shape: tuple[int, ...]):
    return lambda g: (torch.randn(*shape, generator=g, dtype=torch.float64),)


check_psa_module = register(
    ModuleChecker(
        "psa_module",
        exercise="MyPSA",
        tier="build",
        reference=PSAReference,
        solution=PSASolution,
        cases=[
            Case("PSA(16, 64), x 2×16×5×7", _x((2, 16, 5, 7)), seed=0,
                 build={"in_channels": 16, "planes": 64}),
            Case("PSA(32, 64), x 1×32×6×5", _x((1, 32, 6, 5)), seed=1,
                 build={"in_channels": 32, "planes": 64}),
            Case("PSA(8, 24, kernels (3, 5, 7), groups (1, 2, 4), r 4), x 3×8×5×6",
                 _x((3, 8, 5, 6)), seed=2,
                 build={"in_channels": 8, "planes": 24, "conv_kernels": (3, 5, 7),
                        "conv_groups": (1, 2, 4), "se_reduction": 4}),
            # boundaries: a single scale; a 1×1 map
            Case("PSA(8, 8, kernels (3,), groups (1,), r 4), x 2×8×4×3", _x((2, 8, 4, 3)),
                 seed=3, build={"in_channels": 8, "planes": 8, "conv_kernels": (3,),
                                "conv_groups": (1,), "se_reduction": 4}),
            Case("PSA(16, 64), x 2×16×1×1", _x((2, 16, 1, 1)), seed=4,
                 build={"in_channels": 16, "planes": 64}),
        ],
        mistakes=[
            Mistake("natural concat order [k3, k5, k7, k9]: the official code puts the largest "
                    "kernel first", partial(PSAReference, concat="natural")),
            Mistake("softmax over the channels instead of over the scales",
                    partial(PSAReference, softmax="channel")),
            Mistake("the sigmoid missing before the softmax",
                    partial(PSAReference, sigmoid=False)),
            Mistake("features concatenated in reverse but their weights not: the k3 weights "
                    "scale the k9 features", partial(PSAReference, weights_follow=False)),
        ],
    )
)
