"""Checkers for lesson 02 (BAM): exercises in ``solutions/02_bam.ipynb``, in this order.

1. ``check_bam_fuse`` (build): the fusion on *tokens* ``B×N×C`` (N = H·W, row by row), with the
   code's product or the paper's sum, ``x + x ⊙ σ(Mc ∘ Ms)`` (the lesson fuses ``B×C×H×W`` maps,
   product only).
2. ``check_dilated_conv`` (build): a size-keeping k×k conv (k odd) with one dilation per axis,
   ``(dh, dw)``, without ``dilation=`` (the lesson spreads a 3×3 kernel with one dilation).
3. ``check_spatial_footprint`` (predict): the receptive field and the number of input pixels that
   matter for a spatial branch with n stacked 3×3 convs of dilation d.
4. ``check_bam_block`` (build): the whole module with one dilated conv per entry of a
   ``dilations`` tuple, each its own dilation, held in ``nn.ModuleList``s (the lesson's module
   has exactly two convs of one dilation, as separate attributes).
5. ``check_bam_paper_fuse`` (extend): the paper's fusion with its two output BatchNorms, in
   training mode (batch statistics), ``x + x ⊙ σ(BN(Mc) + BN(Ms))``.

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
from attn_tutorial.checks._core import Case, Checker, Mistake, hidden_cases, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "02_bam"  # exercises/02_bam.ipynb holds these exercises, in this order
__all__ = ["check_bam_fuse", "check_dilated_conv", "check_spatial_footprint", "check_bam_block",
           "check_bam_paper_fuse"]


def _squash(z: torch.Tensor, how: str) -> torch.Tensor:
    return torch.tanh(z) if how == "tanh" else torch.sigmoid(z)


def _tanh_gate(out, x, *rest) -> bool:
    """The factor ``out / x`` lies in (0, 2), below 1 somewhere and above 1 somewhere: a gate in
    (−1, 1) that takes both signs, as ``1 + tanh(·)`` does; ``1 + σ(·)`` is above 1 everywhere,
    ``σ(·)`` below 1 everywhere."""
    keep = x.abs() > 1e-6
    gate = (out / x)[keep] - 1
    return bool((gate.abs() < 1).all()) and bool((gate < -1e-9).any()) \
        and bool((gate > 1e-9).any())


TANH = "gate squashed with tanh instead of the sigmoid: the factor 1 + tanh(·) falls below 1"


# ----------------------------------------------------------------- 1. the fusion, on tokens
def ref_bam_fuse(x: torch.Tensor, mc: torch.Tensor, ms: torch.Tensor, fusion: str = "product",
                 *, fusions: str = "as given", squash: str = "after", residual: bool = True,
                 order: str = "h w") -> torch.Tensor:
    """``x + x ⊙ σ(Mc ∘ Ms)`` on tokens: x B×N×C with N = H·W row by row, mc B×C, ms B×H×W;
    ``∘`` the product (``fusion="product"``, the code) or the sum (``"sum"``, the paper).

    Knobs: ``fusions`` ("always product", "always sum": the argument ignored; "swapped"),
    ``squash``
    ("per branch": σ(Mc) ∘ σ(Ms); "tanh"), ``residual`` (False: x ⊙ σ(·)), ``order`` ("w h":
    the map flattened column by column).
    """
    combine = {"as given": fusion, "always product": "product", "always sum": "sum",
               "swapped": {"product": "sum", "sum": "product"}[fusion]}[fusions]
    channel = rearrange(mc, "b c -> b 1 c")
    spatial = rearrange(ms, f"b h w -> b ({order}) 1")
    if squash == "per branch":
        channel, spatial = torch.sigmoid(channel), torch.sigmoid(spatial)
    fused = channel * spatial if combine == "product" else channel + spatial
    attention = fused if squash == "per branch" else _squash(fused, squash)
    return x + x * attention if residual else x * attention


def _fuse_case(b: int, c: int, h: int, w: int, fusion: str | None, seed: int) -> Case:
    def make(g: torch.Generator, b=b, c=c, h=h, w=w, fusion=fusion):
        x = torch.randn(b, h * w, c, generator=g, dtype=torch.float64)
        mc = torch.randn(b, c, generator=g, dtype=torch.float64) * 2
        ms = torch.randn(b, h, w, generator=g, dtype=torch.float64) * 2
        return (x, mc, ms) if fusion is None else (x, mc, ms, fusion)

    said = "default fusion" if fusion is None else f"fusion={fusion!r}"
    return Case(f"x {b}×{h * w}×{c} tokens of a {h}×{w} grid, {said}", make, seed=seed)


check_bam_fuse = register(
    Checker(
        "bam_fuse",
        exercise="bam_fuse",
        tier="build",
        reference=ref_bam_fuse,
        cases=[
            _fuse_case(3, 4, 3, 4, None, 0),      # the default argument: the product
            _fuse_case(2, 5, 4, 3, "sum", 1),     # H ≠ W: a column-major flattening differs
            _fuse_case(1, 3, 5, 2, "product", 2),  # batch 1
            _fuse_case(2, 6, 2, 5, "sum", 3),
            _fuse_case(2, 1, 3, 2, "product", 4),  # boundary: one channel
            _fuse_case(3, 2, 1, 1, "sum", 5),      # boundary: one token (a 1×1 grid)
            _fuse_case(2, 3, 1, 6, "product", 6),  # boundary: one row
        ],
        mistakes=[
            Mistake("fusion argument ignored: always the product σ(Mc · Ms), also for "
                    "fusion='sum'", partial(ref_bam_fuse, fusions="always product")),
            Mistake("fusion argument ignored: always the paper's sum σ(Mc + Ms), also for "
                    "fusion='product'", partial(ref_bam_fuse, fusions="always sum")),
            Mistake("sum and product swapped: fusion='product' is σ(Mc · Ms) (the code), "
                    "fusion='sum' is σ(Mc + Ms) (the paper)",
                    partial(ref_bam_fuse, fusions="swapped")),
            Mistake("residual forgotten: x ⊙ σ(·) instead of x + x ⊙ σ(·)",
                    partial(ref_bam_fuse, residual=False)),
            Mistake("sigmoid applied to each branch before fusing: σ(Mc) ∘ σ(Ms) instead of "
                    "σ(Mc ∘ Ms)", partial(ref_bam_fuse, squash="per branch")),
            Mistake("spatial map flattened column by column, (w h), instead of row by row, "
                    "(h w), the order of the tokens", partial(ref_bam_fuse, order="w h")),
            Mistake(TANH, partial(ref_bam_fuse, squash="tanh"), holds=_tanh_gate),
        ],
    )
)


# ------------------------------------------------------------ 2. the dilated convolution
def ref_dilated_conv(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     dilation: tuple[int, int], *, spacing: str = "given",
                     padding: str = "reach", flip: bool = False,
                     use_bias: bool = True) -> torch.Tensor:
    """``conv2d(h, weight, bias, padding=(dh·(k−1)/2, dw·(k−1)/2), dilation=(dh, dw))`` for a
    k×k ``weight`` (O×C×k×k, k odd): the map keeps its H×W (computed with the kernel spread by
    hand; the tests compare it with ``dilation=``).

    Knobs: ``spacing`` ("swapped": (dw, dh); "height for both": (dh, dh); "one": (1, 1), an
    ordinary conv; "plus one": taps d + 1 apart), ``padding`` ("d": (dh, dw), right for
    k = 3 only; "kernel": (k−1)/2 whatever the dilation), ``flip`` (True: the kernel turned by
    180°, a true convolution instead of PyTorch's cross-correlation), ``use_bias`` (False).
    """
    dh, dw = dilation
    used = {"given": (dh, dw), "swapped": (dw, dh), "height for both": (dh, dh), "one": (1, 1),
            "plus one": (dh + 1, dw + 1)}[spacing]
    half = weight.shape[-1] // 2
    pad = {"reach": (used[0] * half, used[1] * half), "d": used,
           "kernel": (half, half)}[padding]
    kernel = _spread(weight.flip(-2, -1) if flip else weight, *used)
    return F.conv2d(h, kernel, bias if use_bias else None, padding=pad)


def _spread(weight: torch.Tensor, dh: int, dw: int) -> torch.Tensor:
    """The k×k kernel spread to (dh·(k−1)+1)×(dw·(k−1)+1), zeros between its taps (written
    without ``dilation=``, the name the exercise forbids: a mistake run as a learner's answer
    must not be refused for it)."""
    o, c, kh, kw = weight.shape
    spread = weight.new_zeros(o, c, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    spread[:, :, ::dh, ::dw] = weight
    return spread


def _conv_case(shape: tuple[int, int, int, int], out: int, k: int, dilation: tuple[int, int],
               seed: int) -> Case:
    def make(g: torch.Generator, shape=shape, out=out, k=k, d=dilation):
        h = torch.randn(*shape, generator=g, dtype=torch.float64)
        w = torch.randn(out, shape[1], k, k, generator=g, dtype=torch.float64)
        b = torch.randn(out, generator=g, dtype=torch.float64)
        return h, w, b, d

    filters = "1 filter" if out == 1 else f"{out} filters"
    return Case("h " + "×".join(map(str, shape)) + f", {filters} {k}×{k}, dilation {dilation}",
                make, seed=seed)


check_dilated_conv = register(
    Checker(
        "dilated_conv",
        exercise="dilated_conv",
        tier="build",
        reference=ref_dilated_conv,
        # the exercise: the dilation built by hand (so no knob value of the reference may be
        # the string "dilation": a mistake run as an answer would be refused for it)
        forbidden=("dilation",),
        cases=[
            _conv_case((2, 3, 9, 11), 4, 3, (2, 3), 0),    # dh ≠ dw: swapped axes differ
            _conv_case((1, 2, 13, 10), 3, 5, (2, 1), 1),   # k = 5: padding (dh, dw) shrinks it
            _conv_case((2, 2, 7, 12), 2, 3, (1, 4), 2),
            _conv_case((1, 2, 11, 9), 2, 5, (3, 2), 3),
            _conv_case((2, 3, 5, 4), 2, 1, (3, 2), 4),     # boundary: k = 1 (no reach at all)
            _conv_case((1, 2, 4, 6), 3, 3, (1, 1), 5),     # boundary: d = (1, 1), a plain conv
            _conv_case((2, 2, 1, 9), 2, 3, (1, 3), 6),     # boundary: H = 1
            _conv_case((1, 3, 6, 1), 1, 3, (2, 1), 7),     # boundary: W = 1, one filter
        ],
        mistakes=[
            Mistake("dilations of the two axes swapped: dh spaces the taps along the width, dw "
                    "along the height", partial(ref_dilated_conv, spacing="swapped")),
            Mistake("the height's dilation dh used along both axes",
                    partial(ref_dilated_conv, spacing="height for both")),
            Mistake("dilation 1: the taps are next to each other (an ordinary k×k conv)",
                    partial(ref_dilated_conv, spacing="one")),
            Mistake("taps d + 1 apart: d zeros between the taps instead of d − 1",
                    partial(ref_dilated_conv, spacing="plus one")),
            Mistake("padding (dh, dw): right for a 3×3 kernel only, a k×k kernel needs "
                    "d·(k − 1)/2 per axis", partial(ref_dilated_conv, padding="d")),
            Mistake("padding (k − 1)/2 whatever the dilation: the map shrinks by (d − 1)·(k − 1) "
                    "along each axis", partial(ref_dilated_conv, padding="kernel")),
            Mistake("kernel flipped (turned by 180°): F.conv2d correlates, tap (i, j) of the "
                    "kernel meets the input at offset (i·dh, j·dw) from the window's corner",
                    partial(ref_dilated_conv, flip=True)),
            Mistake("bias forgotten: the O values of `bias` are never added",
                    partial(ref_dilated_conv, use_bias=False)),
        ],
    )
)


# ----------------------------------------------------- 3. predict: the spatial footprint
def ref_spatial_footprint(n: int, d: int, *, side: str = "right",
                          active: str = "right") -> tuple[int, int]:
    """(side of the receptive field, input pixels that matter) of one output pixel of BAM's
    spatial branch with ``n`` stacked 3×3 convs of dilation ``d`` between its 1×1 convs.

    Each conv adds an offset in {−d, 0, d} per axis: the sums are the multiples of d from −nd to
    nd, so the box has side ``1 + 2nd`` and ``2n + 1`` of its positions per axis are reached.

    Knobs: ``side`` ("one conv": 1 + 2d; "spans added": n·(2d + 1); "area": the box's area
    instead of its side), ``active`` ("box": every pixel of the box; "paths": 9ⁿ, as if no two
    paths met; "one axis": 2n + 1).
    """
    box = 1 + 2 * n * d
    s = {"right": box, "one conv": 1 + 2 * d, "spans added": n * (2 * d + 1),
         "area": box * box}[side]
    a = {"right": (2 * n + 1) ** 2, "box": box * box, "paths": 9 ** n,
         "one axis": 2 * n + 1}[active]
    return (s, a)


def _first(value: int):
    # n = 0 left out: there a learner's special case (a side of 1) may hide the slip
    return lambda out, n, d: n == 0 or out[0] == value(n, d)


def _second(value: int):
    return lambda out, n, d: out[1] == value(n, d)


FOOTPRINTS = [(0, 1), (0, 3), (1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (2, 3), (2, 4), (2, 5),
              (3, 1), (3, 2), (3, 4), (3, 7), (4, 1), (4, 3), (5, 2), (6, 1), (1, 9), (7, 3)]

check_spatial_footprint = register(
    Checker(
        "spatial_footprint",
        exercise="spatial_footprint",
        tier="predict",
        reference=ref_spatial_footprint,
        # n = 0 (the 1×1 convs alone) and d = 1 (dense: every pixel of the box matters) are the
        # boundaries; n = 2, d = 4 is the lesson's 17×17 with 25; n = 1 makes "one conv" right.
        cases=[Case(f"n = {n}, d = {d}", lambda g, n=n, d=d: (n, d)) for n, d in FOOTPRINTS]
        + hidden_cases("hidden case", lambda rng: (rng.randint(0, 9), rng.randint(1, 12)), 6,
                       seed=2),
        mistakes=[
            Mistake("receptive field of one conv, 1 + 2d, whatever n",
                    partial(ref_spatial_footprint, side="one conv"),
                    holds=_first(lambda n, d: 1 + 2 * d)),
            Mistake("receptive field n·(2d + 1): the kernels' spans added, instead of their "
                    "reaches 2d (1 + 2nd)", partial(ref_spatial_footprint, side="spans added"),
                    holds=_first(lambda n, d: n * (2 * d + 1))),
            Mistake("receptive field returned as the box's area, not its side",
                    partial(ref_spatial_footprint, side="area"),
                    holds=_first(lambda n, d: (1 + 2 * n * d) ** 2)),
            Mistake("every pixel of the box counted: the holes between the taps matter to no "
                    "output", partial(ref_spatial_footprint, active="box"),
                    holds=_second(lambda n, d: (1 + 2 * n * d) ** 2)),
            Mistake("9ⁿ pixels: the paths multiplied, as if no two paths reached the same pixel",
                    partial(ref_spatial_footprint, active="paths"),
                    holds=_second(lambda n, d: 9 ** n)),
            Mistake("active pixels counted along one axis only: 2n + 1 instead of (2n + 1)²",
                    partial(ref_spatial_footprint, active="one axis"),
                    holds=_second(lambda n, d: 2 * n + 1)),
        ],
    )
)


# ----------------------------------------------------------------- 4. the whole module
def _batch_statistics_always(bn: nn.Module, t: torch.Tensor) -> torch.Tensor:
    """``bn`` applied with the batch's statistics whatever its mode, its running statistics
    neither used nor updated (``F.batch_norm(..., None, None, ..., training=True)``)."""
    return F.batch_norm(t, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)


class BAMBlockReference(nn.Module):
    """BAM as the authors' code computes it (global average for the pooling), with one dilated
    3×3 conv per entry of ``dilations`` (conv i: dilation and padding ``dilations[i]``), held
    in two ``nn.ModuleList``s:

    channel branch ``fc1`` (C→m) → ``bn1`` (BatchNorm1d) → ReLU → ``fc2`` (m→C), m = C // r;
    spatial branch ``conv_reduce`` (1×1, C→m) → ``bn_reduce`` → ReLU, then for each i
    ``convs[i]`` → ``bns[i]`` → ReLU, then ``conv_out`` (1×1, m→1);
    ``out = x + x ⊙ σ(Mc ⊙ Ms)``.

    Knobs: ``pool`` ("max"; "H×H": the authors' ``avg_pool2d(x, H, stride=H)``, the mean of
    the first H columns on an H×W map with H ≤ W < 2H), ``combine`` ("sum"), ``squash``
    ("per branch", "tanh"), ``residual`` (False), ``spacing`` ("one": every conv dilation 1;
    "first": every conv ``dilations[0]``),
    ``eps`` (the BNs' ε; ``eps_dilated``: the ``bns``' alone), ``statistics`` ("batch always": the spatial branch's BNs normalise with
    the batch's statistics, in eval mode too; "batch always, dilated": only the ``bns``). The BNs get
    random affine parameters and running statistics at construction, so that a BN left out or
    put in the wrong place changes the output in eval mode.
    """

    def __init__(self, channels: int, reduction_ratio: int = 16,
                 dilations: tuple[int, ...] = (4, 4), *, pool: str = "mean",
                 combine: str = "product", squash: str = "after", residual: bool = True,
                 spacing: str = "given", eps: float = 1e-5, eps_dilated: float | None = None,
                 statistics: str = "running", runs: int | None = None) -> None:
        super().__init__()
        m = channels // reduction_ratio
        used = {"given": tuple(dilations), "one": (1,) * len(dilations),
                "first": tuple(dilations[:1]) * len(dilations)}[spacing]
        self.fc1 = nn.Linear(channels, m)
        self.bn1 = nn.BatchNorm1d(m, eps=eps)
        self.fc2 = nn.Linear(m, channels)
        self.conv_reduce = nn.Conv2d(channels, m, 1)
        self.bn_reduce = nn.BatchNorm2d(m, eps=eps)
        self.convs = nn.ModuleList(nn.Conv2d(m, m, 3, padding=d, dilation=d) for d in used)
        self.bns = nn.ModuleList(nn.BatchNorm2d(m, eps=eps if eps_dilated is None else eps_dilated)
                                 for _ in used)
        self.conv_out = nn.Conv2d(m, 1, 1)
        self.pool, self.combine, self.squash, self.residual = pool, combine, squash, residual
        self.statistics = statistics
        self.runs = len(used) if runs is None else min(runs, len(used))
        with torch.no_grad():
            for bn in (self.bn1, self.bn_reduce, *self.bns):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.3)
                bn.running_mean.normal_(0.0, 0.3)
                bn.running_var.uniform_(0.5, 1.5)

    def _norm(self, bn: nn.Module, t: torch.Tensor, dilated: bool = False) -> torch.Tensor:
        always = self.statistics == "batch always" or \
            (self.statistics == "batch always, dilated" and dilated)
        return _batch_statistics_always(bn, t) if always else bn(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool == "H×H":
            pooled = F.avg_pool2d(x, x.shape[2], stride=x.shape[2]).flatten(1)
        else:
            pooled = reduce(x, "b c h w -> b c", self.pool)
        mc = self.fc2(F.relu(self.bn1(self.fc1(pooled))))  # (batch 1 in eval: no batch form)
        s = F.relu(self._norm(self.bn_reduce, self.conv_reduce(x)))
        for conv, bn in list(zip(self.convs, self.bns))[:self.runs]:
            s = F.relu(self._norm(bn, conv(s), dilated=True))
        ms = self.conv_out(s)                                    # B×1×H×W
        channel = rearrange(mc, "b c -> b c 1 1")
        if self.squash == "per branch":
            channel, ms = torch.sigmoid(channel), torch.sigmoid(ms)
        fused = channel * ms if self.combine == "product" else channel + ms
        attention = fused if self.squash == "per branch" else _squash(fused, self.squash)
        return x + x * attention if self.residual else x * attention


def _block_case(shape: tuple[int, int, int, int], seed: int, **build) -> Case:
    knobs = "".join(f", {k} {v}" for k, v in build.items())
    return map_case(shape, seed, knobs, scale=2, build={"channels": shape[1], **build})


BATCH_ALWAYS = ("batch statistics in eval mode too: a spatial BN called in training form "
                "(F.batch_norm with training=True) normalises every batch with its own mean and "
                "variance, and its running statistics are never used nor updated")

check_bam_block = register(
    ModuleChecker(
        "bam_block",
        exercise="BAMBlock",
        tier="build",
        reference=BAMBlockReference,
        cases=[
            # three different dilations (the first for all, 1 for all differ), H < W
            _block_case((3, 16, 9, 11), 0, reduction_ratio=4, dilations=(2, 1, 3)),
            _block_case((1, 32, 10, 10), 1),               # the defaults: r = 16, (4, 4)
            # boundaries: one conv of dilation 1 and m = C / r = 1 hidden channel (the default
            # r = 16 on C = 16); no dilated conv at all (an empty tuple) with r = 1 (m = C)
            _block_case((2, 16, 5, 6), 3, dilations=(1,)),
            _block_case((2, 8, 4, 5), 4, reduction_ratio=1, dilations=()),
        ],
        mistakes=[
            Mistake("max pooling in the channel branch instead of the global average",
                    partial(BAMBlockReference, pool="max")),
            Mistake("the authors' H×H average pooling, avg_pool2d(x, H, stride=H): on an H×W map "
                    "with W > H it averages the first H columns only, not the whole map",
                    partial(BAMBlockReference, pool="H×H")),
            Mistake("sum and product swapped: σ(Mc + Ms) is the paper's form, the code "
                    "multiplies, σ(Mc · Ms)", partial(BAMBlockReference, combine="sum")),
            Mistake("sigmoid applied to each branch before fusing: σ(Mc) · σ(Ms)",
                    partial(BAMBlockReference, squash="per branch")),
            Mistake("residual forgotten: x ⊙ σ(Mc · Ms) instead of x + x ⊙ σ(Mc · Ms)",
                    partial(BAMBlockReference, residual=False)),
            Mistake("dilation 1 in the spatial branch: conv i must use dilations[i] (and "
                    "padding dilations[i])", partial(BAMBlockReference, spacing="one")),
            Mistake("the first dilation used for every conv: conv i must use dilations[i]",
                    partial(BAMBlockReference, spacing="first")),
            Mistake("only the first two dilated convs applied, whatever len(dilations) (the "
                    "others are built but never run)", partial(BAMBlockReference, runs=2)),
            Mistake("BatchNorm ε = 1e-3 (the Keras default) instead of PyTorch's 1e-5",
                    partial(BAMBlockReference, eps=1e-3),
                    variants=(partial(BAMBlockReference, eps_dilated=1e-3),)),
            Mistake(BATCH_ALWAYS, partial(BAMBlockReference, statistics="batch always"),
                    variants=(partial(BAMBlockReference, statistics="batch always, dilated"),)),
            Mistake(TANH, partial(BAMBlockReference, squash="tanh"), holds=_tanh_gate),
        ],
    )
)


# --------------------------------------------- 5. extend: the paper's form, train mode
EPS = 1e-5  # PyTorch's BatchNorm default


def _batch_norm(t: torch.Tensor, axes: str, gamma: torch.Tensor, beta: torch.Tensor, *,
                unbiased: bool = False, eps_on: str = "variance",
                statistics: str = "batch", eps: float = EPS) -> torch.Tensor:
    """Normalise ``t`` over the einops axes ``axes`` (e.g. "b" or "b h w") with its own
    statistics (``statistics="running"``: a fresh BN's running mean 0 and variance 1, as in eval
    mode), then scale by ``gamma`` and shift by ``beta`` (already broadcastable)."""
    names = t.dim() == 2 and "b c" or "b h w"
    kept = " ".join("1" if a in axes.split() else a for a in names.split())
    mean = reduce(t, f"{names} -> {kept}", "mean")
    n = t.numel() // mean.numel()
    var = reduce((t - mean) ** 2, f"{names} -> {kept}", "sum") / (n - 1 if unbiased else n)
    if statistics == "running":
        mean, var = torch.zeros_like(mean), torch.ones_like(var)
    scale = torch.sqrt(var + eps) if eps_on == "variance" else torch.sqrt(var) + eps
    return (t - mean) / scale * gamma + beta


def ref_bam_paper_fuse(x: torch.Tensor, mc: torch.Tensor, ms: torch.Tensor,
                       gamma_c: torch.Tensor, beta_c: torch.Tensor, gamma_s: torch.Tensor,
                       beta_s: torch.Tensor, *, mc_axes: str = "b", ms_axes: str = "b h w",
                       unbiased: bool = False, eps_on: str = "variance", normalise: bool = True,
                       statistics: str = "batch", eps: float = EPS,
                       affine: bool = True, combine: str = "sum") -> torch.Tensor:
    """The paper's BAM fusion in training mode: ``x + x ⊙ σ(BN_c(Mc) + BN_s(Ms))``.

    x B×C×H×W, mc B×C, ms B×H×W; ``BN_c`` is BatchNorm1d(C) (each channel over the batch),
    ``BN_s`` BatchNorm2d(1) (the one channel over the batch and the map), both with the batch's
    biased variance, ε = 1e-5, then γ and β (gamma_c, beta_c: C values; gamma_s, beta_s: 1).

    Knobs: ``mc_axes`` ("c": each image over its channels), ``ms_axes`` ("h w": each image
    alone; "b": each pixel over the batch), ``unbiased`` (True: N − 1), ``eps_on``
    ("deviation": ε added to the standard deviation), ``statistics`` ("running": a fresh BN in
    eval mode, mean 0 and variance 1), ``eps`` (1e-3: the Keras default), ``normalise``
    (False: no output BNs),
    ``affine`` (False: γ, β not applied), ``combine`` ("product").
    """
    if normalise:
        gc, bc = (gamma_c, beta_c) if affine else (1.0, 0.0)
        gs, bs = (gamma_s, beta_s) if affine else (1.0, 0.0)
        how = dict(unbiased=unbiased, eps_on=eps_on, statistics=statistics, eps=eps)
        mc = _batch_norm(mc, mc_axes, gc, bc, **how)
        ms = _batch_norm(ms, ms_axes, gs, bs, **how)
    channel, spatial = rearrange(mc, "b c -> b c 1 1"), rearrange(ms, "b h w -> b 1 h w")
    fused = channel + spatial if combine == "sum" else channel * spatial
    return x + x * torch.sigmoid(fused)


def _paper_case(b: int, c: int, h: int, w: int, seed: int) -> Case:
    def make(g: torch.Generator, b=b, c=c, h=h, w=w):
        def rand(*shape):
            return torch.randn(*shape, generator=g, dtype=torch.float64)

        x = rand(b, c, h, w)
        mc = rand(b, c) * 3 + rand(1, c)            # per-channel offsets: the BN removes them
        ms = rand(b, h, w) * 2 + rand(b, 1, 1)      # per-image offsets: only the batch's go
        return (x, mc, ms, 1 + 0.5 * rand(c), 0.5 * rand(c), 1 + 0.5 * rand(1), 0.5 * rand(1))

    return Case(f"x {b}×{c}×{h}×{w}, Mc {b}×{c}, Ms {b}×{h}×{w}", make, seed=seed)


check_bam_paper_fuse = register(
    Checker(
        "bam_paper_fuse",
        exercise="bam_paper_fuse",
        tier="extend",
        reference=ref_bam_paper_fuse,
        cases=[
            _paper_case(2, 3, 4, 5, 0),     # boundary: the smallest batch BatchNorm1d accepts
            _paper_case(3, 4, 3, 6, 1),
            _paper_case(4, 1, 2, 3, 2),     # boundary: one channel
            _paper_case(2, 5, 1, 1, 3),     # boundary: a 1×1 map (Ms has B values in all)
            _paper_case(3, 2, 5, 2, 4),
        ],
        mistakes=[
            Mistake("Ms normalised over each image's own map (h, w) instead of over the batch "
                    "and the map (b, h, w): BatchNorm2d(1) pools every image",
                    partial(ref_bam_paper_fuse, ms_axes="h w")),
            Mistake("Ms normalised per pixel over the batch (b) instead of over (b, h, w)",
                    partial(ref_bam_paper_fuse, ms_axes="b")),
            Mistake("Mc normalised over each image's channels instead of each channel over the "
                    "batch", partial(ref_bam_paper_fuse, mc_axes="c")),
            Mistake("unbiased variance (divided by N − 1): BatchNorm normalises with the "
                    "biased variance (divided by N)", partial(ref_bam_paper_fuse, unbiased=True)),
            Mistake("ε added to the standard deviation instead of the variance",
                    partial(ref_bam_paper_fuse, eps_on="deviation")),
            Mistake("normalised with a fresh BN's running statistics (mean 0, variance 1), as "
                    "in eval mode, instead of the batch's", partial(ref_bam_paper_fuse,
                                                                    statistics="running")),
            Mistake("ε = 1e-3 (the Keras default) instead of PyTorch's 1e-5",
                    partial(ref_bam_paper_fuse, eps=1e-3)),
            Mistake("output BNs left out: σ(Mc + Ms), the sum without the paper's BNs",
                    partial(ref_bam_paper_fuse, normalise=False)),
            Mistake("γ and β not applied: the BNs' affine parameters left out",
                    partial(ref_bam_paper_fuse, affine=False)),
            Mistake("product instead of the paper's sum: σ(BN(Mc) · BN(Ms))",
                    partial(ref_bam_paper_fuse, combine="product")),
        ],
    )
)
