"""Checkers for lesson 00 (einops for vision attention): exercises in ``solutions/00_einops.ipynb``.

Every checker compares the learner's function with a reference written in einops, on float64
inputs with odd, non-square and batch-1 sizes, and names the catalogued mistakes below when the
learner's output reproduces one of them. Each mistake is a real wrong implementation; the tests
prove that every one of them differs from the reference (and from the others) on every case.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, reduce

from attn_tutorial.checks import register
from attn_tutorial.checks._cases import feature_map_cases, token_cases
from attn_tutorial.checks._core import Case, Checker, Mistake

__all__ = [
    "check_to_tokens",
    "check_from_tokens",
    "check_split_heads",
    "check_attention_scores",
    "check_global_avg_pool",
    "check_dilated_conv_by_phases",
]


# ------------------------------------------------------------------ 1. feature map -> tokens
def ref_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """B×C×H×W → B×(H·W)×C, tokens in row-major (raster) order."""
    return rearrange(x, "b c h w -> b (h w) c")


def _tokens_column_major(x):
    return rearrange(x, "b c h w -> b (w h) c")


def _tokens_channels_first(x):
    return rearrange(x, "b c h w -> b c (h w)")


def _tokens_reshape_only(x):
    b, c, h, w = x.shape
    return x.reshape(b, h * w, c)


check_to_tokens = register(
    Checker(
        "to_tokens",
        reference=ref_to_tokens,
        cases=feature_map_cases(),
        mistakes=[
            Mistake("column-major flattening (w h) instead of row-major (h w)", _tokens_column_major),
            Mistake("forgot to move channels last (b c (h w))", _tokens_channels_first),
            Mistake(
                "reshape without permute: channels and pixels mixed (x.reshape(b, h*w, c))",
                _tokens_reshape_only,
            ),
        ],
    ),
    "check_to_tokens",
)


# ------------------------------------------------------------------ 2. tokens -> feature map
def ref_from_tokens(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """B×(H·W)×C tokens in row-major order → B×C×H×W."""
    return rearrange(t, "b (h w) c -> b c h w", h=h, w=w)


def _from_tokens_column_major(t, h, w):
    return rearrange(t, "b (w h) c -> b c h w", h=h, w=w)


def _from_tokens_reshape_only(t, h, w):
    b, n, c = t.shape
    return t.reshape(b, c, h, w)


def _from_tokens_channels_last(t, h, w):
    return rearrange(t, "b (h w) c -> b h w c", h=h, w=w)


check_from_tokens = register(
    Checker(
        "from_tokens",
        reference=ref_from_tokens,
        cases=token_cases(),
        mistakes=[
            Mistake("column-major unflattening (w h) instead of row-major (h w)",
                    _from_tokens_column_major),
            Mistake("reshape without permute: channels and pixels mixed (t.reshape(b, c, h, w))",
                    _from_tokens_reshape_only),
            Mistake("forgot to move channels first (b h w c)", _from_tokens_channels_last),
        ],
    ),
    "check_from_tokens",
)


# ------------------------------------------------------------------ 3. split heads
def ref_split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """B×N×(heads·d) → B×heads×N×d; the head index is the slow factor of the channel axis."""
    return rearrange(t, "b n (heads d) -> b heads n d", heads=heads)


def _heads_fast(t, heads):
    return rearrange(t, "b n (d heads) -> b heads n d", heads=heads)


def _heads_not_moved(t, heads):
    return rearrange(t, "b n (heads d) -> b n heads d", heads=heads)


def _heads_reshape_only(t, heads):
    b, n, c = t.shape
    return t.reshape(b, heads, n, c // heads)


def _split_cases() -> list[Case]:
    shapes = ((2, 63, 24, 3), (1, 16, 32, 4), (3, 15, 12, 2))  # (B, N, C, heads)
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
        reference=ref_split_heads,
        cases=_split_cases(),
        mistakes=[
            Mistake("heads as the fast factor (d heads) instead of the slow factor (heads d)",
                    _heads_fast),
            Mistake("forgot to move heads before tokens (b n heads d)", _heads_not_moved),
            Mistake("reshape without permute: tokens and heads mixed (t.reshape(b, heads, n, d))",
                    _heads_reshape_only),
        ],
    ),
    "check_split_heads",
)


# ------------------------------------------------------------------ 4. attention scores
def ref_attention_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax_j(scale · q_i · k_j): B×heads×N×d, B×heads×M×d → B×heads×N×M, rows sum to 1."""
    scores = torch.einsum("b h i d, b h j d -> b h i j", q, k) * scale
    return scores.softmax(dim=-1)


def _softmax_queries(q, k, scale):
    return (torch.einsum("b h i d, b h j d -> b h i j", q, k) * scale).softmax(dim=-2)


def _no_scale(q, k, scale):
    return torch.einsum("b h i d, b h j d -> b h i j", q, k).softmax(dim=-1)


def _divide_scale(q, k, scale):
    return (torch.einsum("b h i d, b h j d -> b h i j", q, k) / scale).softmax(dim=-1)


def _scale_after_softmax(q, k, scale):
    return torch.einsum("b h i d, b h j d -> b h i j", q, k).softmax(dim=-1) * scale


def _keys_on_rows(q, k, scale):
    return (torch.einsum("b h i d, b h j d -> b h j i", q, k) * scale).softmax(dim=-1)


def _score_cases() -> list[Case]:
    # (B, heads, N queries, M keys, d, scale): N ≠ M in two cases, N = M in one (batch 1).
    shapes = ((2, 3, 7, 5, 8, 8 ** -0.5), (1, 2, 6, 6, 4, 0.5), (3, 1, 5, 9, 6, 6 ** -0.5))
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


check_attention_scores = register(
    Checker(
        "attention_scores",
        reference=ref_attention_scores,
        cases=_score_cases(),
        mistakes=[
            Mistake("softmax over the query axis instead of the key axis", _softmax_queries),
            Mistake("forgot to multiply the scores by scale", _no_scale),
            Mistake("divided by scale instead of multiplying by it", _divide_scale),
            Mistake("applied scale after the softmax instead of before it", _scale_after_softmax),
            Mistake("keys on the rows (b h j i): the transpose of the attention map",
                    _keys_on_rows),
        ],
    ),
    "check_attention_scores",
)


# ------------------------------------------------------------------ 5. global average pooling
def ref_global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """B×C×H×W → B×C, the mean over all H·W positions of each channel."""
    return reduce(x, "b c h w -> b c", "mean")


def _pool_max(x):
    return reduce(x, "b c h w -> b c", "max")


def _pool_sum(x):
    return reduce(x, "b c h w -> b c", "sum")


def _pool_channels(x):
    return reduce(x, "b c h w -> b h w", "mean")


def _pool_keepdims(x):
    return reduce(x, "b c h w -> b c 1 1", "mean")


check_global_avg_pool = register(
    Checker(
        "global_avg_pool",
        reference=ref_global_avg_pool,
        cases=feature_map_cases(),
        mistakes=[
            Mistake("max instead of mean pooling", _pool_max),
            Mistake("sum instead of mean (forgot to divide by H·W)", _pool_sum),
            Mistake("averaged over the channel axis instead of the spatial axes (b h w)",
                    _pool_channels),
            Mistake("kept the spatial axes (b c 1 1) instead of returning B×C", _pool_keepdims),
        ],
    ),
    "check_global_avg_pool",
)


# ------------------------------------------------------------------ 6. dilated conv by phases
def ref_dilated_conv_by_phases(x: torch.Tensor, weight: torch.Tensor, d: int) -> torch.Tensor:
    """A 3×3 conv with dilation d and padding d, computed as an ordinary conv on d×d phases.

    H and W must be multiples of d. The reference uses the phase route; it equals
    ``F.conv2d(x, weight, padding=d, dilation=d)`` (the tests prove it).
    """
    b = x.shape[0]
    phases = rearrange(x, "b c (h dh) (w dw) -> (b dh dw) c h w", dh=d, dw=d)
    y = F.conv2d(phases, weight, padding=1)
    return rearrange(y, "(b dh dw) c h w -> b c (h dh) (w dw)", b=b, dh=d, dw=d)


def _phases_blocks(x, weight, d):
    b = x.shape[0]
    phases = rearrange(x, "b c (dh h) (dw w) -> (b dh dw) c h w", dh=d, dw=d)
    y = F.conv2d(phases, weight, padding=1)
    return rearrange(y, "(b dh dw) c h w -> b c (dh h) (dw w)", b=b, dh=d, dw=d)


def _phases_padding_d(x, weight, d):
    b = x.shape[0]
    phases = rearrange(x, "b c (h dh) (w dw) -> (b dh dw) c h w", dh=d, dw=d)
    y = F.conv2d(phases, weight, padding=d)
    return rearrange(y, "(b dh dw) c h w -> b c (h dh) (w dw)", b=b, dh=d, dw=d)


def _phases_swapped_back(x, weight, d):
    b = x.shape[0]
    phases = rearrange(x, "b c (h dh) (w dw) -> (b dh dw) c h w", dh=d, dw=d)
    y = F.conv2d(phases, weight, padding=1)
    return rearrange(y, "(b dw dh) c h w -> b c (h dh) (w dw)", b=b, dh=d, dw=d)


def _undilated(x, weight, d):
    return F.conv2d(x, weight, padding=1)


def _dilated_cases() -> list[Case]:
    # (B, C_in, C_out, H, W, d): H, W multiples of d; non-square; batch 1; odd H.
    shapes = ((2, 3, 5, 8, 12, 4), (1, 2, 3, 6, 10, 2), (3, 4, 2, 9, 6, 3))
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
        reference=ref_dilated_conv_by_phases,
        cases=_dilated_cases(),
        mistakes=[
            Mistake("phases as the slow factor (dh h): contiguous blocks instead of every d-th "
                    "pixel", _phases_blocks),
            Mistake("padding d on the sub-maps instead of 1", _phases_padding_d),
            Mistake("merged the phases back in the wrong order ((b dw dh) instead of (b dh dw))",
                    _phases_swapped_back),
            Mistake("ordinary 3×3 conv on the full map (the dilation is missing)", _undilated),
        ],
    ),
    "check_dilated_conv_by_phases",
)
