"""Checkers for lesson 00 (einops for vision attention): exercises in ``solutions/00_einops.ipynb``.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference with
a knob turned (``functools.partial``). The cases (float64, odd, non-square and batch-1 sizes) are
chosen so that every mistake fails on at least one of them; ``tests/test_checks.py`` proves it.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange, reduce

from attn_tutorial.checks._cases import feature_map_cases, map_case, token_cases
from attn_tutorial.checks._core import Case, Checker, Mistake, register

NOTEBOOK = "00_einops"  # exercises/00_einops.ipynb holds these exercises, in this order
__all__ = [
    "check_to_tokens",
    "check_from_tokens",
    "check_split_heads",
    "check_attention_scores",
    "check_global_avg_pool",
    "check_dilated_conv_by_phases",
]


# ------------------------------------------------------------------ 1. feature map -> tokens
def ref_to_tokens(x: torch.Tensor, *, order: str = "h w", channels_last: bool = True,
                  reshape_only: bool = False) -> torch.Tensor:
    """B×C×H×W → B×(H·W)×C, tokens in row-major (raster) order.

    Knobs: ``order`` ("w h": column-major), ``channels_last`` (False: b c (h w)),
    ``reshape_only`` (x.reshape(b, h*w, c): channels and pixels mixed).
    """
    if reshape_only:
        b, c, h, w = x.shape
        return x.reshape(b, h * w, c)
    if not channels_last:
        return rearrange(x, f"b c h w -> b c ({order})")
    return rearrange(x, f"b c h w -> b ({order}) c")


check_to_tokens = register(
    Checker(
        "to_tokens",
        exercise="to_tokens",
        tier="build",
        reference=ref_to_tokens,
        cases=[*feature_map_cases(),
               # boundaries: a single row, a single column, a single channel
               map_case((2, 5, 1, 7), 3, ": one row"), map_case((3, 4, 6, 1), 4, ": one column"),
               map_case((2, 1, 3, 4), 5, ": one channel")],
        mistakes=[
            Mistake("column-major flattening (w h) instead of row-major (h w)",
                    partial(ref_to_tokens, order="w h")),
            Mistake("forgot to move channels last (b c (h w))",
                    partial(ref_to_tokens, channels_last=False)),
            Mistake("reshape without permute: channels and pixels mixed (x.reshape(b, h*w, c))",
                    partial(ref_to_tokens, reshape_only=True)),
        ],
    )
)


# ------------------------------------------------------------------ 2. tokens -> feature map
def ref_from_tokens(t: torch.Tensor, h: int, w: int, *, order: str = "h w",
                    channels_first: bool = True, reshape_only: bool = False) -> torch.Tensor:
    """B×(H·W)×C tokens in row-major order → B×C×H×W.

    Knobs: ``order`` ("w h"), ``channels_first`` (False: b h w c), ``reshape_only``.
    """
    if reshape_only:
        b, n, c = t.shape
        return t.reshape(b, c, h, w)
    target = "b c h w" if channels_first else "b h w c"
    return rearrange(t, f"b ({order}) c -> {target}", h=h, w=w)


check_from_tokens = register(
    Checker(
        "from_tokens",
        exercise="from_tokens",
        tier="build",
        reference=ref_from_tokens,
        # boundaries: a grid of one row, of one column
        cases=token_cases(((2, 7, 9, 16), (1, 4, 4, 32), (3, 5, 3, 8), (2, 1, 7, 5),
                           (1, 6, 1, 3))),
        mistakes=[
            Mistake("column-major unflattening (w h) instead of row-major (h w)",
                    partial(ref_from_tokens, order="w h")),
            Mistake("reshape without permute: channels and pixels mixed (t.reshape(b, c, h, w))",
                    partial(ref_from_tokens, reshape_only=True)),
            Mistake("forgot to move channels first (b h w c)",
                    partial(ref_from_tokens, channels_first=False)),
        ],
    )
)


# ------------------------------------------------------------------ 3. split heads
def ref_split_heads(t: torch.Tensor, heads: int, *, split: str = "heads d",
                    heads_first: bool = True, reshape_only: bool = False) -> torch.Tensor:
    """B×N×(heads·d) → B×heads×N×d; the head index is the slow factor of the channel axis.

    Knobs: ``split`` ("d heads": heads as the fast factor), ``heads_first`` (False: b n heads d),
    ``reshape_only``.
    """
    if reshape_only:
        b, n, c = t.shape
        return t.reshape(b, heads, n, c // heads)
    target = "b heads n d" if heads_first else "b n heads d"
    return rearrange(t, f"b n ({split}) -> {target}", heads=heads)


def _split_cases() -> list[Case]:
    # (B, N, C, heads); boundaries: one head, heads = C (d = 1), one token
    shapes = ((2, 63, 24, 3), (1, 16, 32, 4), (3, 15, 12, 2), (2, 5, 6, 1), (1, 4, 6, 6),
              (2, 1, 8, 2))
    return [
        Case(
            f"tokens {b}×{n}×{c}, heads={heads}",
            lambda g, b=b, n=n, c=c, heads=heads: (
                torch.randn(b, n, c, generator=g, dtype=torch.float64), heads),
            seed=i,
        )
        for i, (b, n, c, heads) in enumerate(shapes)
    ]


check_split_heads = register(
    Checker(
        "split_heads",
        exercise="split_heads",
        tier="build",
        reference=ref_split_heads,
        cases=_split_cases(),
        mistakes=[
            Mistake("heads as the fast factor (d heads) instead of the slow factor (heads d)",
                    partial(ref_split_heads, split="d heads")),
            Mistake("forgot to move heads before tokens (b n heads d)",
                    partial(ref_split_heads, heads_first=False)),
            Mistake("reshape without permute: tokens and heads mixed (t.reshape(b, heads, n, d))",
                    partial(ref_split_heads, reshape_only=True)),
        ],
    )
)


# ------------------------------------------------------------------ 4. attention scores
def ref_attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float, *,
                         softmax_over: str = "keys", scale_how: str = "multiply",
                         layout: str = "b h i j", negate: bool = False) -> torch.Tensor:
    """softmax_j(scale · q_i · k_j): B×heads×N×d, B×heads×M×d → B×heads×N×M, rows sum to 1.

    Knobs: ``softmax_over`` ("queries"), ``scale_how`` ("none", "divide", "after" the softmax,
    "d**-0.5": the usual value used instead of the argument), ``layout`` ("b h j i": keys on the
    rows), ``negate`` (softmax of −scores).
    """
    scores = torch.einsum(f"b h i d, b h j d -> {layout}", q, k)
    if scale_how == "multiply":
        scores = scores * scale
    elif scale_how == "divide":
        scores = scores / scale
    elif scale_how == "d**-0.5":
        scores = scores * q.shape[-1] ** -0.5
    axis = layout.split().index("j" if softmax_over == "keys" else "i")
    if negate:  # exp(max − s) / Σ: the stable-softmax shift written the wrong way round
        scores = -scores
    attn = scores.softmax(dim=axis)
    return attn * scale if scale_how == "after" else attn


def _score_cases() -> list[Case]:
    # (B, heads, N queries, M keys, d, scale): N ≠ M in two cases, N = M in one (batch 1). No
    # scale equals d**-0.5 or 1, so ignoring the argument or forgetting it fails on every case.
    # Boundaries: a single key (every row is 1), a single query, d = 1; scale = 300: scores up
    # to ~10³, beyond exp's float64 range (e^709), so the softmax must subtract the row's max.
    shapes = ((2, 3, 7, 5, 8, 0.3), (1, 2, 6, 6, 4, 1.7), (3, 1, 5, 9, 6, 0.25),
              (2, 2, 5, 1, 3, 0.6), (1, 2, 1, 4, 3, 1.3), (2, 1, 4, 3, 1, 0.8),
              (1, 2, 4, 5, 8, 300.0))
    return [
        Case(
            f"q {b}×{h}×{n}×{d}, k {b}×{h}×{m}×{d}, scale={s:.3g}",
            lambda g, b=b, h=h, n=n, m=m, d=d, s=s: (
                torch.randn(b, h, n, d, generator=g, dtype=torch.float64),
                torch.randn(b, h, m, d, generator=g, dtype=torch.float64),
                s,
            ),
            seed=i,
        )
        for i, (b, h, n, m, d, s) in enumerate(shapes)
    ]


def _columns_sum_to_one(out, q, k, scale) -> bool:
    """The map has the right shape and each column (one key, all queries) sums to 1: a softmax
    over the query axis, whatever else was done."""
    return tuple(out.shape) == (*q.shape[:3], k.shape[2]) and \
        bool(torch.allclose(out.sum(dim=-2), torch.ones((), dtype=out.dtype)))


check_attention_scores = register(
    Checker(
        "attention_scores",
        exercise="attention_scores",
        tier="build",
        reference=ref_attention_scores,
        cases=_score_cases(),
        mistakes=[
            Mistake("softmax over the query axis instead of the key axis",
                    partial(ref_attention_scores, softmax_over="queries"),
                    holds=_columns_sum_to_one),
            Mistake("forgot to multiply the scores by scale",
                    partial(ref_attention_scores, scale_how="none")),
            Mistake("divided by scale instead of multiplying by it",
                    partial(ref_attention_scores, scale_how="divide")),
            Mistake("applied scale after the softmax instead of before it",
                    partial(ref_attention_scores, scale_how="after")),
            Mistake("used d ** -0.5 instead of the scale argument",
                    partial(ref_attention_scores, scale_how="d**-0.5")),
            Mistake("your answer computes softmax(−scores): the stable-softmax shift written "
                    "max − s instead of s − max", partial(ref_attention_scores, negate=True)),
            Mistake("keys on the rows (b h j i): the transpose of the attention map",
                    partial(ref_attention_scores, layout="b h j i")),
        ],
    )
)


# ------------------------------------------------------------------ 5. global average pooling
def ref_global_avg_pool(x: torch.Tensor, *, op: str = "mean", over: str = "space",
                        keepdims: bool = False) -> torch.Tensor:
    """B×C×H×W → B×C, the mean over all H·W positions of each channel.

    Knobs: ``op`` ("max", "sum"), ``over`` ("channels"), ``keepdims`` (B×C×1×1).
    """
    if over == "channels":
        return reduce(x, "b c h w -> b h w", op)
    return reduce(x, "b c h w -> b c 1 1" if keepdims else "b c h w -> b c", op)


check_global_avg_pool = register(
    Checker(
        "global_avg_pool",
        exercise="global_avg_pool",
        tier="build",
        reference=ref_global_avg_pool,
        cases=[*feature_map_cases(),
               # boundaries: a 1×1 map, a single row
               map_case((2, 3, 1, 1), 3, ": a 1×1 map"), map_case((1, 4, 1, 6), 4, ": one row")],
        mistakes=[
            Mistake("max instead of mean pooling", partial(ref_global_avg_pool, op="max")),
            Mistake("sum instead of mean (forgot to divide by H·W)",
                    partial(ref_global_avg_pool, op="sum")),
            Mistake("averaged over the channel axis instead of the spatial axes (b h w)",
                    partial(ref_global_avg_pool, over="channels")),
            Mistake("kept the spatial axes (b c 1 1) instead of returning B×C",
                    partial(ref_global_avg_pool, keepdims=True)),
        ],
    )
)


# ------------------------------------------------------------------ 6. dilated conv by phases
def ref_dilated_conv_by_phases(x: torch.Tensor, weight: torch.Tensor, d: int, *,
                               split: str = "h dh", padding: int | None = 1,
                               merge: str = "b dh dw", dilated: bool = True) -> torch.Tensor:
    """A 3×3 conv with dilation d and padding d, computed as an ordinary conv on d×d phases.

    H and W must be multiples of d. It equals ``F.conv2d(x, weight, padding=d, dilation=d)``
    (the tests prove it). Knobs: ``split`` ("dh h": contiguous blocks instead of every d-th
    pixel), ``padding`` (None: d on the sub-maps), ``merge`` ("b dw dh"), ``dilated`` (False:
    an ordinary 3×3 conv on the full map).
    """
    if not dilated:
        return F.conv2d(x, weight, padding=1)
    hs, ws = split, split.replace("h", "w")
    phases = rearrange(x, f"b c ({hs}) ({ws}) -> (b dh dw) c h w", dh=d, dw=d)
    y = F.conv2d(phases, weight, padding=d if padding is None else padding)
    return rearrange(y, f"({merge}) c h w -> b c ({hs}) ({ws})", b=x.shape[0], dh=d, dw=d)


def _dilated_cases() -> list[Case]:
    # (B, C_in, C_out, H, W, d): H, W multiples of d; non-square; batch 1; odd H.
    # Boundaries: d = 1 (an ordinary conv), H = d (one row per phase).
    shapes = ((2, 3, 5, 8, 12, 4), (1, 2, 3, 6, 10, 2), (3, 4, 2, 9, 6, 3), (2, 2, 3, 5, 4, 1),
              (1, 3, 2, 4, 8, 4))
    return [
        Case(
            f"x {b}×{ci}×{h}×{w}, weight {co}×{ci}×3×3, d={d}",
            lambda g, b=b, ci=ci, co=co, h=h, w=w, d=d: (
                torch.randn(b, ci, h, w, generator=g, dtype=torch.float64),
                torch.randn(co, ci, 3, 3, generator=g, dtype=torch.float64),
                d,
            ),
            seed=i,
        )
        for i, (b, ci, co, h, w, d) in enumerate(shapes)
    ]


check_dilated_conv_by_phases = register(
    Checker(
        "dilated_conv_by_phases",
        exercise="dilated_conv_by_phases",
        tier="build",
        reference=ref_dilated_conv_by_phases,
        cases=_dilated_cases(),
        mistakes=[
            Mistake("phases as the slow factor (dh h): contiguous blocks instead of every d-th "
                    "pixel", partial(ref_dilated_conv_by_phases, split="dh h")),
            Mistake("padding d on the sub-maps instead of 1",
                    partial(ref_dilated_conv_by_phases, padding=None)),
            Mistake("merged the phases back in the wrong order ((b dw dh) instead of (b dh dw))",
                    partial(ref_dilated_conv_by_phases, merge="b dw dh")),
            Mistake("ordinary 3×3 conv on the full map (the dilation is missing)",
                    partial(ref_dilated_conv_by_phases, dilated=False)),
        ],
    )
)
