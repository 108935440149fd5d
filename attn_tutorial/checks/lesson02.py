"""Checkers for lesson 02 (BAM): exercises in ``solutions/02_bam.ipynb``.

1. ``check_bam_fuse``: the fusion, ``x + x ⊙ σ(Mc ⊙ Ms)`` from the two branch outputs.
2. ``check_dilated_conv``: a 3×3 conv with dilation d that keeps H×W, written by spreading the
   kernel (zeros between its taps) instead of with ``dilation=``.
3. ``check_bam_block``: the whole module (the learner writes ``__init__`` and ``forward``).

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. ``tests/test_checks.py`` proves that every mistake fails on some case and
that any two are told apart; the comments at the cases say which case catches which slip.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, reduce

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "02_bam"  # exercises/02_bam.ipynb holds these exercises, in this order
__all__ = ["check_bam_fuse", "check_dilated_conv", "check_bam_block"]


# ------------------------------------------------------------------------- 1. the fusion
def ref_bam_fuse(x: torch.Tensor, mc: torch.Tensor, ms: torch.Tensor, *,
                 combine: str = "product", squash: str = "after", residual: bool = True,
                 spatial_axis: str = "batch") -> torch.Tensor:
    """``x + x ⊙ σ(Mc ⊙ Ms)``: x B×C×H×W, mc B×C (channel branch), ms B×H×W (spatial branch).

    Knobs: ``combine`` ("sum": the paper's Mc + Ms), ``squash`` ("per branch": σ(Mc) ⊙ σ(Ms)),
    ``residual`` (False: x ⊙ σ(·), the ``x +`` forgotten), ``spatial_axis`` ("channel": ms used
    without its channel axis, so its batch axis lines up with the channels: channel c of every
    image gets the map of image c; runs only when B = C or B = 1).
    """
    channel = rearrange(mc, "b c -> b c 1 1")
    spatial = rearrange(ms, "b h w -> b 1 h w") if spatial_axis == "batch" \
        else rearrange(ms, "b h w -> 1 b h w")
    if squash == "per branch":
        channel, spatial = torch.sigmoid(channel), torch.sigmoid(spatial)
    fused = channel * spatial if combine == "product" else channel + spatial
    attention = fused if squash == "per branch" else torch.sigmoid(fused)
    return x + x * attention if residual else x * attention


def _fuse_case(b: int, c: int, h: int, w: int, seed: int) -> Case:
    def make(g: torch.Generator, b=b, c=c, h=h, w=w):
        x = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
        mc = torch.randn(b, c, generator=g, dtype=torch.float64) * 2
        ms = torch.randn(b, h, w, generator=g, dtype=torch.float64) * 2
        return x, mc, ms

    return Case(f"x {b}×{c}×{h}×{w}, Mc {b}×{c}, Ms {b}×{h}×{w}", make, seed=seed)


check_bam_fuse = register(
    Checker(
        "bam_fuse",
        exercise="bam_fuse",
        tier="build",
        reference=ref_bam_fuse,
        cases=[
            # B = C > 1 (and B = 1): a spatial map without its channel axis still broadcasts,
            # so that slip gives wrong values instead of an error and can be named.
            _fuse_case(3, 3, 5, 7, 0),
            _fuse_case(1, 6, 5, 9, 1),   # batch 1: there the wrong axis happens to be right
            _fuse_case(4, 4, 6, 3, 2),
            _fuse_case(5, 5, 1, 6, 3),   # boundary: a single row (B = C, see above)
            _fuse_case(1, 1, 4, 1, 4),   # boundary: one channel, one column
        ],
        mistakes=[
            Mistake("sum and product swapped: σ(Mc + Ms) is the paper's form, the code (and this "
                    "exercise) multiplies, σ(Mc · Ms)", partial(ref_bam_fuse, combine="sum")),
            Mistake("residual forgotten: x ⊙ σ(Mc · Ms) instead of x + x ⊙ σ(Mc · Ms)",
                    partial(ref_bam_fuse, residual=False)),
            Mistake("sigmoid applied to each branch before fusing: σ(Mc) · σ(Ms) instead of "
                    "σ(Mc · Ms)", partial(ref_bam_fuse, squash="per branch")),
            Mistake("spatial map broadcast over the wrong axis: Ms (B×H×W) without a channel axis "
                    "lines its batch axis up with the channels; use 'b h w -> b 1 h w'",
                    partial(ref_bam_fuse, spatial_axis="channel")),
        ],
    )
)


# ------------------------------------------------------------ 2. the dilated convolution
def ref_dilated_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, dilation: int,
                     *, spacing: str = "dilation", padding: str = "dilation") -> torch.Tensor:
    """``conv2d(h, weight, bias, padding=d, dilation=d)`` for a 3×3 ``weight`` (O×C×3×3).

    Knobs: ``spacing`` ("one": the taps next to each other, an ordinary 3×3 conv; "four": d = 4
    hard-coded; "plus one": d zeros between the taps, so they lie d + 1 apart), ``padding``
    ("one": padding 1 whatever the dilation, so the map shrinks by 2(d − 1)).
    """
    d = {"dilation": dilation, "one": 1, "four": 4, "plus one": dilation + 1}[spacing]
    p = d if padding == "dilation" else 1
    return F.conv2d(h, weight, bias, padding=p, dilation=d)


def _conv_case(shape: tuple[int, int, int, int], out: int, dilation: int, seed: int) -> Case:
    def make(g: torch.Generator, shape=shape, out=out, d=dilation):
        h = torch.randn(*shape, generator=g, dtype=torch.float64)
        w = torch.randn(out, shape[1], 3, 3, generator=g, dtype=torch.float64)
        b = torch.randn(out, generator=g, dtype=torch.float64)
        return h, w, b, d

    return Case("h " + "×".join(map(str, shape)) + f", {out} filters, dilation {dilation}", make,
                seed=seed)


check_dilated_conv = register(
    Checker(
        "dilated_conv",
        exercise="dilated_conv",
        tier="build",
        reference=ref_dilated_conv,
        cases=[
            _conv_case((2, 3, 9, 11), 4, 2, 0),   # d = 2: "d = 4 hard-coded" fails here
            _conv_case((1, 2, 13, 10), 3, 3, 1),  # batch 1, odd d: taps d + 1 apart differ
            _conv_case((2, 4, 12, 14), 2, 4, 2),  # BAM's d = 4 on a map barely larger than 2d
            _conv_case((2, 3, 5, 4), 2, 1, 3),    # boundary: d = 1, an ordinary 3×3 conv
            _conv_case((1, 2, 3, 6), 3, 2, 4),    # boundary: H = 2d - 1, the smallest padding 1 keeps
        ],
        mistakes=[
            Mistake("dilation 1 instead of the given dilation: the taps are next to each other "
                    "(an ordinary 3×3 conv)", partial(ref_dilated_conv, spacing="one")),
            Mistake("dilation 4 hard-coded: the dilation argument is ignored",
                    partial(ref_dilated_conv, spacing="four")),
            Mistake("taps d + 1 apart: d zeros between the taps instead of d − 1",
                    partial(ref_dilated_conv, spacing="plus one")),
            Mistake("padding not equal to the dilation: with padding 1 the map shrinks by "
                    "2(d − 1) per conv; pad by d to keep H×W",
                    partial(ref_dilated_conv, padding="one")),
        ],
    )
)


# ----------------------------------------------------------------- 3. the whole module
class BAMBlockReference(nn.Module):
    """BAM as the authors' code computes it (global average for the pooling), with flat names:

    channel branch ``fc1`` (C→C/r) → ``bn1`` (BatchNorm1d) → ReLU → ``fc2`` (C/r→C);
    spatial branch ``conv_reduce`` (1×1, C→C/r) → ``bn_reduce`` → ReLU, then ``conv_d1`` →
    ``bn_d1`` → ReLU → ``conv_d2`` → ``bn_d2`` → ReLU (3×3, dilation d, padding d), then
    ``conv_out`` (1×1, C/r→1); ``out = x + x ⊙ σ(Mc ⊙ Ms)``.

    Knobs: ``pool`` ("max"), ``combine`` ("sum"), ``squash`` ("per branch"), ``residual``
    (False), ``used_dilation`` (1: the dilated convs built with dilation 1 and padding 1).
    The BNs get random affine parameters and running statistics at construction, so that a BN
    left out or put in the wrong place changes the output in eval mode.
    """

    def __init__(self, channels: int, reduction_ratio: int = 16, dilation: int = 4, *,
                 pool: str = "mean", combine: str = "product", squash: str = "after",
                 residual: bool = True, used_dilation: int | None = None) -> None:
        super().__init__()
        hidden = channels // reduction_ratio
        d = dilation if used_dilation is None else used_dilation
        self.fc1 = nn.Linear(channels, hidden)
        self.bn1 = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.conv_reduce = nn.Conv2d(channels, hidden, 1)
        self.bn_reduce = nn.BatchNorm2d(hidden)
        self.conv_d1 = nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d)
        self.bn_d1 = nn.BatchNorm2d(hidden)
        self.conv_d2 = nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d)
        self.bn_d2 = nn.BatchNorm2d(hidden)
        self.conv_out = nn.Conv2d(hidden, 1, 1)
        self.pool, self.combine, self.squash, self.residual = pool, combine, squash, residual
        with torch.no_grad():
            for bn in (self.bn1, self.bn_reduce, self.bn_d1, self.bn_d2):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.3)
                bn.running_mean.normal_(0.0, 0.3)
                bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mc = self.fc2(F.relu(self.bn1(self.fc1(reduce(x, "b c h w -> b c", self.pool)))))
        s = F.relu(self.bn_reduce(self.conv_reduce(x)))
        s = F.relu(self.bn_d1(self.conv_d1(s)))
        s = F.relu(self.bn_d2(self.conv_d2(s)))
        ms = self.conv_out(s)                                    # B×1×H×W
        channel = rearrange(mc, "b c -> b c 1 1")
        if self.squash == "per branch":
            channel, ms = torch.sigmoid(channel), torch.sigmoid(ms)
        fused = channel * ms if self.combine == "product" else channel + ms
        attention = fused if self.squash == "per branch" else torch.sigmoid(fused)
        return x + x * attention if self.residual else x * attention


def _block_case(shape: tuple[int, int, int, int], seed: int, **build) -> Case:
    knobs = "".join(f", {k} {v}" for k, v in build.items())
    return map_case(shape, seed, knobs, scale=2, build={"channels": shape[1], **build})


check_bam_block = register(
    ModuleChecker(
        "bam_block",
        exercise="BAMBlock",
        tier="build",
        reference=BAMBlockReference,
        cases=[
            _block_case((2, 16, 9, 11), 0, reduction_ratio=4, dilation=2),
            _block_case((1, 32, 10, 10), 1),                    # the defaults: r = 16, d = 4
            _block_case((3, 24, 7, 12), 2, reduction_ratio=8, dilation=3),
            # boundaries: d = 1, C / r = 1 hidden channel (the default r = 16 on C = 16)
            _block_case((2, 16, 5, 6), 3, dilation=1),
        ],
        mistakes=[
            Mistake("max pooling in the channel branch instead of the global average",
                    partial(BAMBlockReference, pool="max")),
            Mistake("sum and product swapped: σ(Mc + Ms) is the paper's form, the code "
                    "multiplies, σ(Mc · Ms)", partial(BAMBlockReference, combine="sum")),
            Mistake("sigmoid applied to each branch before fusing: σ(Mc) · σ(Ms)",
                    partial(BAMBlockReference, squash="per branch")),
            Mistake("residual forgotten: x ⊙ σ(Mc · Ms) instead of x + x ⊙ σ(Mc · Ms)",
                    partial(BAMBlockReference, residual=False)),
            Mistake("dilation 1 in the spatial branch: the 3×3 convs must use dilation d "
                    "(and padding d)", partial(BAMBlockReference, used_dilation=1)),
        ],
    )
)
