"""Checkers for lesson 00 (einops for vision attention): exercises in ``solutions/00_einops.ipynb``.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference with
a knob turned (``functools.partial``). The cases (float64, odd, non-square and batch-1 sizes) are
chosen so that every mistake fails on at least one of them; ``tests/test_checks.py`` proves it.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat

from attn_tutorial.checks._cases import feature_map_cases, map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, hidden_cases, register

NOTEBOOK = "00_einops"  # exercises/00_einops.ipynb holds these exercises, in this order
__all__ = [
    "check_to_tokens",
    "check_from_tokens",
    "check_split_heads",
    "check_attention_scores",
    "check_global_avg_pool",
    "check_dilated_conv_by_phases",
    "check_patches_shape",
    "check_overlapping_patches",
]


# ------------------------------------------------------------------ 1. feature map -> tokens
def ref_to_tokens(x: torch.Tensor, cls: torch.Tensor, *, order: str = "h w",
                  channels_last: bool = True, reshape_only: bool = False,
                  cls_at: str = "first") -> torch.Tensor:
    """B×C×H×W map and a C-vector class token → B×(1 + H·W)×C: token 0 is ``cls`` in every
    image, token 1 + h·W + w the pixel (h, w) (row-major).

    Knobs: ``order`` ("w h": column-major), ``channels_last`` (False: b c (1 + h w)),
    ``reshape_only`` (x.reshape(b, h*w, c): channels and pixels mixed), ``cls_at`` ("last").
    """
    b, c, h, w = x.shape
    if reshape_only:
        pixels = x.reshape(b, h * w, c)
    else:
        pixels = rearrange(x, f"b c h w -> b ({order}) c")
    tokens = [repeat(cls, "c -> b 1 c", b=b), pixels]
    tokens = torch.cat(tokens if cls_at == "first" else tokens[::-1], dim=1)
    return tokens if channels_last else rearrange(tokens, "b n c -> b c n")


def _map_and_cls(shape: tuple[int, int, int, int], seed: int, label: str = "") -> Case:
    return Case("x " + "×".join(map(str, shape)) + f", cls {shape[1]}{label}",
                lambda g: (torch.randn(*shape, generator=g, dtype=torch.float64),
                           torch.randn(shape[1], generator=g, dtype=torch.float64)),
                seed=seed)


check_to_tokens = register(
    Checker(
        "to_tokens",
        exercise="to_tokens",
        tier="build",
        reference=ref_to_tokens,
        cases=[_map_and_cls((2, 16, 7, 9), 0), _map_and_cls((1, 32, 8, 8), 1),
               _map_and_cls((3, 24, 5, 11), 2),
               # boundaries: a single row, a single column, a single channel, a 1×1 map
               _map_and_cls((2, 5, 1, 7), 3, ": one row"),
               _map_and_cls((3, 4, 6, 1), 4, ": one column"),
               _map_and_cls((2, 1, 3, 4), 5, ": one channel"),
               _map_and_cls((2, 3, 1, 1), 6, ": a 1×1 map")],
        mistakes=[
            Mistake("column-major flattening (w h) instead of row-major (h w)",
                    partial(ref_to_tokens, order="w h")),
            Mistake("forgot to move channels last (b c n)",
                    partial(ref_to_tokens, channels_last=False)),
            Mistake("reshape without permute: channels and pixels mixed (x.reshape(b, h*w, c))",
                    partial(ref_to_tokens, reshape_only=True)),
            Mistake("class token appended after the pixels instead of put first",
                    partial(ref_to_tokens, cls_at="last")),
        ],
    )
)


# ------------------------------------------------------------------ 2. tokens -> feature map
def ref_from_tokens(t: torch.Tensor, h: int, w: int, *, order: str = "h w",
                    channels_first: bool = True, reshape_only: bool = False,
                    drop: str = "first") -> torch.Tensor:
    """B×(1 + H·W)×C tokens, the class token first and the pixels in row-major order → the
    pixels' map B×C×H×W (the class token dropped).

    Knobs: ``order`` ("w h"), ``channels_first`` (False: b h w c), ``reshape_only``,
    ``drop`` ("last": the last token dropped instead of the class token).
    """
    pixels = t[:, 1:] if drop == "first" else t[:, :-1]
    if reshape_only:
        b, n, c = pixels.shape
        return pixels.reshape(b, c, h, w)
    target = "b c h w" if channels_first else "b h w c"
    return rearrange(pixels, f"b ({order}) c -> {target}", h=h, w=w)


def _token_cases() -> list[Case]:
    # (B, H, W, C): odd and non-square grids, batch 1; boundaries: one row, one column, 1×1
    shapes = ((2, 7, 9, 16), (1, 4, 4, 32), (3, 5, 3, 8), (2, 1, 7, 5), (1, 6, 1, 3),
              (2, 1, 1, 4))
    return [
        Case(f"tokens {b}×(1 + {h * w})×{c} on a {h}×{w} grid",
             lambda g, b=b, h=h, w=w, c=c: (
                 torch.randn(b, 1 + h * w, c, generator=g, dtype=torch.float64), h, w),
             seed=i)
        for i, (b, h, w, c) in enumerate(shapes)
    ]


check_from_tokens = register(
    Checker(
        "from_tokens",
        exercise="from_tokens",
        tier="build",
        reference=ref_from_tokens,
        cases=_token_cases(),
        mistakes=[
            Mistake("column-major unflattening (w h) instead of row-major (h w)",
                    partial(ref_from_tokens, order="w h")),
            Mistake("reshape without permute: channels and pixels mixed (t.reshape(b, c, h, w))",
                    partial(ref_from_tokens, reshape_only=True)),
            Mistake("forgot to move channels first (b h w c)",
                    partial(ref_from_tokens, channels_first=False)),
            Mistake("dropped the last token instead of the class token (t[:, :-1]): every "
                    "pixel shifted by one", partial(ref_from_tokens, drop="last")),
        ],
    )
)


# ------------------------------------------------------------------ 3. split heads
def ref_split_heads(x: torch.Tensor, heads: int, *, split: str = "heads d",
                    order: str = "h w", heads_first: bool = True,
                    reshape_only: bool = False) -> torch.Tensor:
    """A B×(heads·d)×H×W map → B×heads×(H·W)×d: head i owns the channels i·d … i·d + d − 1,
    the pixels in row-major order.

    Knobs: ``split`` ("d heads": heads as the fast factor), ``order`` ("w h"), ``heads_first``
    (False: b (h w) heads d), ``reshape_only`` (x.reshape(b, heads, h*w, d)).
    """
    if reshape_only:
        b, c, h, w = x.shape
        return x.reshape(b, heads, h * w, c // heads)
    target = "b heads (h w) d" if heads_first else "b (h w) heads d"
    target = target.replace("h w", order)
    return rearrange(x, f"b ({split}) h w -> {target}", heads=heads)


def _split_cases() -> list[Case]:
    # (B, C, H, W, heads): odd and non-square maps, batch 1; boundaries: one head, heads = C
    # (d = 1), a 1×1 map (a single token)
    shapes = ((2, 24, 7, 9, 3), (1, 32, 4, 4, 4), (3, 12, 5, 3, 2), (2, 6, 3, 5, 1),
              (1, 6, 2, 3, 6), (2, 8, 1, 1, 2))
    return [
        Case(f"x {b}×{c}×{h}×{w}, heads={heads}",
             lambda g, b=b, c=c, h=h, w=w, heads=heads: (
                 torch.randn(b, c, h, w, generator=g, dtype=torch.float64), heads),
             seed=i)
        for i, (b, c, h, w, heads) in enumerate(shapes)
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
            Mistake("column-major tokens (w h) instead of row-major (h w)",
                    partial(ref_split_heads, order="w h")),
            Mistake("forgot to move heads before tokens (b n heads d)",
                    partial(ref_split_heads, heads_first=False)),
            Mistake("reshape without permute: pixels and channels mixed "
                    "(x.reshape(b, heads, h*w, d))", partial(ref_split_heads, reshape_only=True)),
        ],
    )
)


# ------------------------------------------------------------------ 4. attention scores
def ref_attention_scores(q: torch.Tensor, k: torch.Tensor, heads: int, scale: float, *,
                         split: str = "heads d", softmax_over: str = "keys",
                         scale_how: str = "multiply", layout: str = "b h i j",
                         negate: bool = False) -> torch.Tensor:
    """softmax_j(scale · q_i · k_j) per head: tokens B×N×(heads·d), B×M×(heads·d) →
    B×heads×N×M, rows sum to 1; head i owns the channels i·d … i·d + d − 1.

    Knobs: ``split`` ("d heads"; "none": one head over all C channels, repeated),
    ``softmax_over`` ("queries"), ``scale_how`` ("none", "divide", "after" the softmax,
    "d**-0.5": the usual value used instead of the argument), ``layout`` ("b h j i": keys on
    the rows), ``negate`` (softmax of −scores).
    """
    if split == "none":
        qh, kh = (repeat(t, "b n c -> b heads n c", heads=heads) for t in (q, k))
    else:
        qh, kh = (rearrange(t, f"b n ({split}) -> b heads n d", heads=heads) for t in (q, k))
    scores = torch.einsum(f"b h i d, b h j d -> {layout}", qh, kh)
    if scale_how == "multiply":
        scores = scores * scale
    elif scale_how == "divide":
        scores = scores / scale
    elif scale_how == "d**-0.5":
        scores = scores * qh.shape[-1] ** -0.5
    axis = layout.split().index("j" if softmax_over == "keys" else "i")
    if negate:  # exp(max − s) / Σ: the stable-softmax shift written the wrong way round
        scores = -scores
    attn = scores.softmax(dim=axis)
    return attn * scale if scale_how == "after" else attn


def _score_cases() -> list[Case]:
    # (B, heads, N queries, M keys, d, scale): N ≠ M in two cases, N = M in one (batch 1). No
    # scale equals d**-0.5 or 1, so ignoring the argument or forgetting it fails on every case.
    # Boundaries: a single key (every row is 1), a single query, d = 1, one head; scale = 300:
    # scores up to ~10³, beyond exp's float64 range (e^709): the softmax must subtract the max.
    shapes = ((2, 3, 7, 5, 8, 0.3), (1, 2, 6, 6, 4, 1.7), (3, 1, 5, 9, 6, 0.25),
              (2, 2, 5, 1, 3, 0.6), (1, 2, 1, 4, 3, 1.3), (2, 3, 4, 3, 1, 0.8),
              (1, 2, 4, 5, 8, 300.0))
    return [
        Case(
            f"q {b}×{n}×{h}·{d}, k {b}×{m}×{h}·{d}, heads={h}, scale={s:.3g}",
            lambda g, b=b, h=h, n=n, m=m, d=d, s=s: (
                torch.randn(b, n, h * d, generator=g, dtype=torch.float64),
                torch.randn(b, m, h * d, generator=g, dtype=torch.float64),
                h, s,
            ),
            seed=i,
        )
        for i, (b, h, n, m, d, s) in enumerate(shapes)
    ]


def _columns_sum_to_one(out, q, k, heads, scale) -> bool:
    """The map has the right shape and each column (one key, all queries) sums to 1: a softmax
    over the query axis, whatever else was done."""
    return tuple(out.shape) == (q.shape[0], heads, q.shape[1], k.shape[1]) and \
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
            Mistake("heads as the fast factor (d heads) instead of the slow factor (heads d)",
                    partial(ref_attention_scores, split="d heads")),
            Mistake("no split into heads: one score map over all C channels, repeated per head",
                    partial(ref_attention_scores, split="none")),
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
                               merge: str = "b dh dw", dilated: bool = True,
                               pad_at: str = "end") -> torch.Tensor:
    """A 3×3 conv with dilation d and padding d on a map of any size, computed as an ordinary
    conv on d×d phases: zero-pad H and W at the end (bottom, right) up to multiples of d, split,
    convolve, interleave, crop back to H×W. It equals ``F.conv2d(x, weight, padding=d,
    dilation=d)`` (the tests prove it).

    Knobs: ``split`` ("dh h": contiguous blocks instead of every d-th pixel), ``padding``
    (None: d on the sub-maps), ``merge`` ("b dw dh"), ``dilated`` (False: an ordinary 3×3 conv
    on the full map), ``pad_at`` ("start": the zeros at the top and left, yet the first H×W
    kept). Zeros at the top and left with the last H×W kept is right too (the tests prove it).
    """
    if not dilated:
        return F.conv2d(x, weight, padding=1)
    b, _, h, w = x.shape
    ph, pw = (-h) % d, (-w) % d
    x = F.pad(x, (0, pw, 0, ph) if pad_at == "end" else (pw, 0, ph, 0))
    hs, ws = split, split.replace("h", "w")
    phases = rearrange(x, f"b c ({hs}) ({ws}) -> (b dh dw) c h w", dh=d, dw=d)
    y = F.conv2d(phases, weight, padding=d if padding is None else padding)
    y = rearrange(y, f"({merge}) c h w -> b c ({hs}) ({ws})", b=b, dh=d, dw=d)
    return y[:, :, :h, :w]


def _dilated_cases() -> list[Case]:
    # (B, C_in, C_out, H, W, d): non-square; batch 1; odd H; H, W multiples of d in three cases
    # and not in three (remainders 1 and 2, one per axis). Boundaries: d = 1 (an ordinary conv),
    # H = d (one row per phase), H < d (some phases empty), a 1×1 map.
    shapes = ((2, 3, 5, 8, 12, 4), (1, 2, 3, 7, 10, 3), (3, 4, 2, 9, 6, 3), (2, 2, 3, 5, 4, 1),
              (1, 3, 2, 4, 8, 4), (2, 2, 3, 6, 9, 4), (1, 2, 2, 2, 5, 3), (2, 1, 2, 1, 1, 2))
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
        # "without dilation=": the outputs cannot tell, so an answer whose code names it (a
        # keyword, an nn.Conv2d built with it, an attribute) is refused before it runs
        forbidden=("dilation",),
        mistakes=[
            Mistake("phases as the slow factor (dh h): contiguous blocks instead of every d-th "
                    "pixel", partial(ref_dilated_conv_by_phases, split="dh h")),
            Mistake("padding d on the sub-maps instead of 1",
                    partial(ref_dilated_conv_by_phases, padding=None)),
            Mistake("merged the phases back in the wrong order ((b dw dh) instead of (b dh dw))",
                    partial(ref_dilated_conv_by_phases, merge="b dw dh")),
            Mistake("ordinary 3×3 conv on the full map (the dilation is missing)",
                    partial(ref_dilated_conv_by_phases, dilated=False)),
            Mistake("zeros added at the top and left, then the first H×W kept: the output "
                    "shifted by the padding", partial(ref_dilated_conv_by_phases,
                                                      pad_at="start")),
        ],
    )
)


# ------------------------------------------------------------------ 7. predict: patch shape
def ref_patches_shape(b: int, c: int, h: int, w: int, p: int, s: int, *, count: str = "floor",
                      features: str = "p p c", layout: str = "b l f",
                      square: bool = False) -> tuple[int, int, int]:
    """The shape (B, L, p·p·C) of ``overlapping_patches(x, p, s)`` for a B×C×H×W map:
    L = nh·nw with nh = (H − p) // s + 1 whole patches per column, nw likewise per row.

    Knobs: ``count`` ("ceil": a last partial patch counted; "round"; "no+1"; "h//s": p
    ignored; "h//p": s ignored), ``features`` ("p c"), ``layout`` ("b f l": F.unfold's),
    ``square`` (the column count used for the rows too).
    """
    def along(n: int) -> int:
        if count == "ceil":
            return -(-(n - p) // s) + 1
        if count == "round":
            return round((n - p) / s) + 1
        if count == "no+1":
            return (n - p) // s
        if count == "h//s":
            return n // s
        if count == "h//p":
            return n // p
        return (n - p) // s + 1

    tokens = along(h) * (along(h) if square else along(w))
    feats = p * p * c if features == "p p c" else p * c
    return (b, feats, tokens) if layout == "b f l" else (b, tokens, feats)


def _shape_cases() -> list[Case]:
    # (B, C, H, W, p, s). (H − p) % s and (W − p) % s run over 0, 1 and ≥ 2; H ≠ W in most.
    # Boundaries: p = 1, s = 1, p = H (one row of patches), p = H = W (a single patch), s = p (no
    # overlap), s > p (gaps between patches), B = 1, C = 1, a fraction (H − p) / s of exactly .5.
    sizes = ((2, 3, 7, 9, 3, 2), (1, 8, 8, 11, 3, 3), (4, 2, 10, 6, 4, 3), (2, 5, 9, 9, 2, 2),
             (3, 1, 5, 12, 3, 1), (1, 4, 6, 4, 1, 1), (2, 3, 4, 7, 4, 2), (1, 2, 5, 5, 5, 3),
             (2, 6, 12, 8, 4, 4), (1, 3, 14, 10, 2, 5), (2, 2, 11, 13, 3, 4), (5, 7, 16, 16, 8, 4),
             (1, 1, 1, 1, 1, 1), (3, 2, 9, 7, 5, 2), (2, 16, 224, 224, 16, 16),
             (1, 3, 224, 200, 16, 12), (2, 4, 7, 3, 3, 1), (1, 3, 13, 9, 3, 2),
             (2, 1, 10, 10, 3, 6), (1, 5, 6, 17, 2, 3))
    shown = [Case(f"B={b} C={c} H={h} W={w} p={p} s={s}",
                  lambda g, a=(b, c, h, w, p, s): a) for b, c, h, w, p, s in sizes]
    return shown + hidden_cases("hidden case", _draw_patch_config, count=5, seed=7)


def _draw_patch_config(rng) -> tuple[int, int, int, int, int, int]:
    """A legal (B, C, H, W, p, s): 1 ≤ p ≤ min(H, W), s ≥ 1, sizes up to 64."""
    h, w = rng.randint(1, 64), rng.randint(1, 64)
    return (rng.randint(1, 4), rng.randint(1, 16), h, w, rng.randint(1, min(h, w)),
            rng.randint(1, 9))


check_patches_shape = register(
    Checker(
        "patches_shape",
        exercise="patches_shape",
        tier="predict",
        reference=ref_patches_shape,
        cases=_shape_cases(),
        mistakes=[
            Mistake("counted a last, partial patch: ceil((H − p) / s) + 1 instead of "
                    "(H − p) // s + 1", partial(ref_patches_shape, count="ceil")),
            Mistake("rounded (H − p) / s to the nearest integer instead of flooring it",
                    partial(ref_patches_shape, count="round")),
            Mistake("forgot the + 1: (H − p) // s patches per column, the first one is missing",
                    partial(ref_patches_shape, count="no+1")),
            Mistake("H // s patches per column: the patch size is ignored",
                    partial(ref_patches_shape, count="h//s")),
            Mistake("H // p patches per column: the non-overlapping count, the stride is ignored",
                    partial(ref_patches_shape, count="h//p")),
            Mistake("p·C features per token instead of p·p·C",
                    partial(ref_patches_shape, features="p c")),
            Mistake("F.unfold's layout (B, p·p·C, L) instead of tokens (B, L, p·p·C)",
                    partial(ref_patches_shape, layout="b f l")),
            Mistake("the count along H used for W too (a square map assumed)",
                    partial(ref_patches_shape, square=True)),
        ],
    )
)


# ------------------------------------------------------------------ 8. extend: overlapping patches
def ref_overlapping_patches(x: torch.Tensor, p: int, s: int, *, features: str = "p1 p2 c",
                            grid: str = "nh nw", ignore_stride: bool = False,
                            reshape_only: bool = False, last: str = "whole") -> torch.Tensor:
    """p×p patches every s pixels (top-left first, whole patches only) → B×L×(p·p·C) tokens:
    patch (r, q) of the nh×nw grid is token r·nw + q, its feature (i·p + j)·C + c is
    x[b, c, r·s + i, q·s + j].

    Knobs: ``features`` ("c p1 p2": F.unfold's order; "p2 p1 c": the patch transposed),
    ``grid`` ("nw nh": column-major), ``ignore_stride`` (stride p), ``reshape_only``
    (unfold, then reshape without moving the channels), ``last`` ("partial": zero-padded
    patches at the end counted; "dropped": the last whole patch of each row and column missing).
    """
    b, c, h, w = x.shape
    if last == "partial":
        x = F.pad(x, (0, (-(w - p)) % s, 0, (-(h - p)) % s))
    step = p if ignore_stride else s
    windows = x.unfold(2, p, step).unfold(3, p, step)  # b c nh nw p1 p2
    if last == "dropped":
        windows = windows[:, :, :len(range(0, h - p, s)), :len(range(0, w - p, s))]
    if reshape_only:
        return windows.reshape(b, -1, c * p * p)
    return rearrange(windows, f"b c nh nw p1 p2 -> b ({grid}) ({features})")


def _patch_cases() -> list[Case]:
    # (B, C, H, W, p, s): (H − p) % s of 0, 1 and 2; overlapping (s < p), touching (s = p) and
    # gapped (s > p); non-square. Boundaries: p = s = 1 (every pixel a token), p = H (one row of
    # patches), p = H = W (a single patch), C = 1, B = 1.
    sizes = ((2, 3, 7, 9, 3, 2), (1, 2, 8, 11, 3, 3), (2, 2, 6, 5, 4, 1), (1, 3, 7, 8, 2, 3),
             (2, 1, 3, 4, 1, 1), (1, 3, 4, 6, 4, 2), (2, 2, 5, 5, 5, 3), (1, 2, 9, 6, 4, 3))
    return [
        Case(f"x {b}×{c}×{h}×{w}, p={p}, s={s}",
             lambda g, b=b, c=c, h=h, w=w, p=p, s=s: (
                 torch.randn(b, c, h, w, generator=g, dtype=torch.float64), p, s),
             seed=i)
        for i, (b, c, h, w, p, s) in enumerate(sizes)
    ]


check_overlapping_patches = register(
    Checker(
        "overlapping_patches",
        exercise="overlapping_patches",
        tier="extend",
        reference=ref_overlapping_patches,
        cases=_patch_cases(),
        mistakes=[
            Mistake("features in F.unfold's order (c p1 p2) instead of (p1 p2 c)",
                    partial(ref_overlapping_patches, features="c p1 p2")),
            Mistake("each patch transposed: features (p2 p1 c) instead of (p1 p2 c)",
                    partial(ref_overlapping_patches, features="p2 p1 c")),
            Mistake("column-major patch grid (nw nh) instead of row-major (nh nw)",
                    partial(ref_overlapping_patches, grid="nw nh")),
            Mistake("non-overlapping p×p patches: the stride s is ignored",
                    partial(ref_overlapping_patches, ignore_stride=True)),
            Mistake("unfold then reshape without permute: channels and pixels mixed",
                    partial(ref_overlapping_patches, reshape_only=True)),
            Mistake("zero-padded the map and counted a last, partial patch",
                    partial(ref_overlapping_patches, last="partial")),
            Mistake("the last whole patch of each row and column is missing "
                    "(range(0, H − p, s) instead of range(0, H − p + 1, s))",
                    partial(ref_overlapping_patches, last="dropped")),
        ],
    )
)
