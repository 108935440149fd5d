"""Checkers for lesson 04 (SCNet, self-calibrated convolution): exercises in
``solutions/04_scconv.ipynb``, in this order.

1. ``check_nearest_rows`` (build): the source row of every output row in PyTorch's legacy
   nearest up-sampling as it computes it for float32 tensors, ``min(⌊d·s⌋, in − 1)`` with
   ``s = in/out`` and the product ``d·s`` rounded to float32, written without torch.
2. ``check_gate_rows`` (predict): the input rows that can move the calibration gate at output
   row ``h`` of a stride-1 SCConv, for an ``H``-row map pooled by ``r``; run with gradients off,
   with hidden cases, two of them maps of millions of rows (no gradient probe can answer them).
3. ``check_calibration_gate`` (build): the gate ``σ(x + up(conv3×3(avgpool_r(x))))`` of the K2
   path (its BatchNorm left out), B×C×H×W, float64 and one float32 boundary case, with the
   pooling and the up-sampling written as matrices in an einsum (an answer that calls a
   pooling, up-sampling or gather function is refused).
4. ``check_sc_split_conv`` (build, a module): the paper's channel-split form, the first half of
   the channels self-calibrated (K2, K3, K4), the second through K1, concatenated; stride on K1
   and K4. Checked in eval and train mode in float64, and on a float32 74×74, ``r = 3`` map.
5. ``check_calibration_gate_bilinear`` (extend): the gate with the paper's bilinear up-sampling
   (``align_corners=False``) written as index and weight arithmetic.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. The per-case comments say which case catches which slip;
``tests/test_checks.py`` proves that every mistake fails somewhere and that the mistakes are told
apart.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import (
    Case, Checker, Mistake, _CaseRun, hidden_cases, register,
)
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "04_scconv"  # exercises/04_scconv.ipynb holds these exercises, in this order
__all__ = ["check_nearest_rows", "check_gate_rows", "check_calibration_gate",
           "check_sc_split_conv", "check_calibration_gate_bilinear"]


# ------------------------------------------------------------- 1. legacy nearest rows
def source_row(d: int, out_size: int, in_size: int, rule: str = "float32") -> int:
    """The source row that destination row ``d`` (of ``out_size``) reads from ``in_size`` rows,
    for one row: what :func:`ref_nearest_rows` lists, computed alone (exercise 2 needs one row of
    a map up to 16 million rows high). ``rule`` as in :func:`ref_nearest_rows`."""
    scale = np.float32(in_size) / np.float32(out_size)
    product = np.float32(d) * scale  # float32 · float32 -> float32
    last = in_size - 1
    if rule == "float32":
        return min(int(np.floor(product)), last)
    if rule == "integer":
        return d * in_size // out_size
    if rule == "float64":
        return min(int(d * (in_size / out_size)), last)
    if rule == "product64":  # the scale rounded to float32, the product in float64
        return min(int(d * float(scale)), last)
    if rule == "half":
        return (2 * d + 1) * in_size // (2 * out_size)
    if rule == "half32":
        return min(int(np.floor((np.float32(d) + np.float32(0.5)) * scale)), last)
    if rule == "round":
        return min(int(np.floor(product + np.float32(0.5))), last)
    if rule == "python round":
        return round(float(product))
    if rule == "python round clamped":
        return min(round(float(product)), last)
    if rule == "floor half":
        return int(np.floor(product + np.float32(0.5)))
    if rule == "ceil":
        return min(int(np.ceil(product)), last)
    if rule == "ceil unclamped":
        return int(np.ceil(product))
    if rule == "repeat clamped":
        return min(d // (out_size // in_size), last)
    if rule == "repeat":
        return d // (out_size // in_size)
    raise ValueError(f"rule={rule!r}: unknown")


def ref_nearest_rows(out_size: int, in_size: int, *, rule: str = "float32") -> list[int]:
    """Source index of each of ``out_size`` destination rows read from ``in_size`` rows, as a
    list of Python ints.

    Knobs: ``rule`` = "float32" (PyTorch's legacy nearest on float32 tensors: ``s = in/out``
    and ``d·s`` rounded to float32, floored, clamped to ``in − 1``); "integer" (``⌊d·in/out⌋``
    exactly); "float64" (``⌊d·(in/out)⌋`` in Python floats; "product64": only the product);
    "half" (``⌊(d + ½)·in/out⌋``, "nearest-exact"; "half32" in float32); "round" (``d·s``
    rounded half up, clamped); "python round" (half to even; "python round clamped");
    "floor half" (``⌊d·s + ½⌋``, not clamped); "ceil" (``⌈d·s⌉``, clamped; "ceil unclamped");
    "repeat" (``d // (out // in)``; "repeat clamped"); "swapped" (the two arguments read the
    other way round: ``in_size`` rows listed, read from ``out_size``).
    """
    if rule == "swapped":
        return ref_nearest_rows(in_size, out_size)
    return [source_row(d, out_size, in_size, rule) for d in range(out_size)]


def _rows_case(out_size: int, in_size: int) -> Case:
    return Case(f"{in_size} rows up-sampled to {out_size}",
                lambda g, o=out_size, i=in_size: (o, i))


check_nearest_rows = register(
    Checker(
        "nearest_rows",
        exercise="nearest_rows",
        tier="build",
        reference=ref_nearest_rows,
        cases=[
            _rows_case(9, 2),    # the lesson's example: H = 9, r = 4
            _rows_case(13, 3),   # W = 13, r = 4
            _rows_case(8, 2),    # d = 2 reads 0.5: round() gives 0 (half to even), half up 1
            _rows_case(7, 3),    # r = 2, 7 rows: "repeat" runs past the last row
            # boundaries: the smallest sizes, one source row, out = in, remainders 2
            _rows_case(1, 1),
            _rows_case(4, 1),
            _rows_case(5, 5),
            _rows_case(11, 3),
            _rows_case(14, 4),
            # where the arithmetic matters: d·in/out a whole number that float32 rounds below
            # (the integer rule reads one row further), and where float64 rounds below instead
            _rows_case(74, 24),  # d = 37: float32 reads row 11, the integer rule 12
            _rows_case(82, 2),   # d = 41: float32 reads row 0, the integer rule 1
            _rows_case(98, 2),   # d = 49: float32 reads 1 like the integers, float64 reads 0
            _rows_case(44, 30),  # d = 22: float32 reads 15 like the integers, float64 reads 14
        ],
        mistakes=[
            Mistake("⌊d·in/out⌋ in exact integer arithmetic instead of PyTorch's float32 "
                    "arithmetic (it reads one row further where d·in/out is a whole number "
                    "that float32 rounds below)", partial(ref_nearest_rows, rule="integer")),
            Mistake("the arithmetic in float64 (Python floats) instead of float32: the scale "
                    "in/out or the product d·s", partial(ref_nearest_rows, rule="float64"),
                    variants=(partial(ref_nearest_rows, rule="product64"),)),
            Mistake("half-pixel centres ⌊(d + 0.5)·in/out⌋ ('nearest-exact') instead of legacy "
                    "nearest ⌊d·in/out⌋", partial(ref_nearest_rows, rule="half"),
                    variants=(partial(ref_nearest_rows, rule="half32"),)),
            Mistake("rounded d·in/out to the nearest index instead of taking the floor",
                    partial(ref_nearest_rows, rule="round"),
                    variants=(partial(ref_nearest_rows, rule="python round"),
                              partial(ref_nearest_rows, rule="python round clamped"),
                              partial(ref_nearest_rows, rule="floor half"))),
            Mistake("each pooled row repeated out // in times (indices run past the last row "
                    "when the size is not divisible)", partial(ref_nearest_rows, rule="repeat"),
                    variants=(partial(ref_nearest_rows, rule="repeat clamped"),)),
            Mistake("the ceiling ⌈d·s⌉ instead of the floor ⌊d·s⌋",
                    partial(ref_nearest_rows, rule="ceil"),
                    variants=(partial(ref_nearest_rows, rule="ceil unclamped"),)),
            Mistake("the arguments read the other way round: in_size rows listed, read from "
                    "out_size (the call is nearest_rows(out_size, in_size))",
                    partial(ref_nearest_rows, rule="swapped")),
        ],
    )
)


# ------------------------------------------------------------- 2. the rows a gate reads
def ref_gate_rows(H: int, r: int, h: int, *, rule: str = "float32", block: str = "",
                  window: bool = True, identity: bool = True, clamp: str = "pooled",
                  ceil: bool = False, k3: bool = False, span: bool = False,
                  once: bool = True) -> list[int]:
    """The input rows (sorted, distinct) that can move the gate ``σ(x + up(K2 ⋆ pool_r(x)))`` at
    output row ``h`` of an ``H``-row map: the pooled row ``k`` that row ``h`` reads (legacy
    nearest, ``rule`` as in :func:`ref_nearest_rows`, for row ``h`` alone), K2's window
    ``k − 1 … k + 1`` cut to the ``⌊H/r⌋`` pooled rows, each pooled row ``p`` the mean of input
    rows ``p·r … p·r + r − 1``, and row ``h`` itself (the identity).

    Knobs: ``rule``; ``block`` ("clamped": the pooled row taken as ``min(h // r, i − 1)``, the
    pooling cell row h sits in; "unclamped": ``h // r``); ``window`` (False: K2's 3×3 window
    left out, only pooled row k); ``identity`` (False: row h not added); ``clamp`` ("none": K2's
    padding rows k − 1 < 0 and k + 1 ≥ ⌊H/r⌋ counted as pooled rows, their input rows kept even
    outside 0 … H − 1; "rows": the same, cut to 0 … H − 1); ``ceil`` (the partial last pooling
    window kept: ⌈H/r⌉ pooled rows); ``k3`` (rows h − 1 … h + 1 of K3 added); ``span`` (every
    row from the first to the last, holes filled); ``once`` (False: a row reached twice, by
    the identity and a pooled row, listed twice).
    """
    i = -(-H // r) if ceil else H // r
    if block:
        k = h // r if block == "unclamped" else min(h // r, i - 1)
    else:
        k = source_row(h, H, i, rule)
    pooled = range(k - 1, k + 2) if window else range(k, k + 1)
    rows = [row for p in pooled if clamp != "pooled" or 0 <= p < i
            for row in range(p * r, p * r + r) if clamp == "none" or 0 <= row < H]
    if identity:
        rows.append(h)
    if k3:
        rows += [row for row in (h - 1, h, h + 1) if 0 <= row < H]
    if span:
        rows = list(range(min(rows), max(rows) + 1))
    return sorted(set(rows)) if once else sorted(rows)


def _field_case(H: int, r: int, h: int) -> Case:
    return Case(f"H = {H}, r = {r}, row {h}", lambda g, H=H, r=r, h=h: (H, r, h))


def _small_field(rng) -> tuple[int, int, int]:
    r = rng.randint(1, 6)
    H = rng.randint(r, 120)
    return H, r, rng.randint(0, H - 1)


def _large_field(rng) -> tuple[int, int, int]:
    # up to 16 million rows (below 2**24, so every row index is a float32 integer): a gradient
    # probe would need a map of H × r floats; one row's index is one float32 product. Drawn
    # where the float32 rule reads another pooled row than the integer rule, float64 and a
    # float32 scale with a float64 product (about one draw in 80)
    while True:
        r = rng.randint(2, 8)
        H = rng.randint(1_000_000, 16_000_000)
        h, i = rng.randint(0, H - 1), H // r
        rows = [source_row(h, H, i, rule) for rule in ("float32", "integer", "float64",
                                                      "product64")]
        if rows.count(rows[0]) == 1:
            return H, r, h


check_gate_rows = register(
    Checker(
        "gate_rows",
        exercise="gate_rows",
        tier="predict",
        reference=ref_gate_rows,
        cases=[
            # the smallest: one row, r = 1; r = 1 on more rows (no pooling: rows h − 1 … h + 1)
            _field_case(1, 1, 0),
            _field_case(6, 1, 0),
            _field_case(6, 1, 3),
            _field_case(6, 1, 5),
            # one pooled row (r ≤ H < 2r): the whole first window and the row itself
            _field_case(4, 4, 2),
            _field_case(7, 4, 6),    # SCNet-50's stage 4 at 224² (7×7, r = 4): rows 0-3 and 6
            _field_case(5, 3, 4),
            # the lesson's H = 9, r = 4, and dropped rows (H % r = 1, 2, 3)
            _field_case(9, 4, 0),
            _field_case(9, 4, 4),
            _field_case(9, 4, 8),    # row 8 is dropped by the pooling: only the identity reads it
            _field_case(10, 4, 9),   # rows 8, 9 dropped: row 8 is read by nobody
            _field_case(11, 4, 10),  # rows 8-10 dropped: a hole at rows 8, 9
            _field_case(11, 4, 8),   # row 8 reads pooled row 1: padding below it would add 9, 10
            _field_case(23, 4, 22),
            _field_case(20, 3, 19),
            _field_case(15, 2, 14),
            # away from the borders: 12 rows where K4's rows share a pooling cell, 16 straddling
            _field_case(28, 4, 14),
            _field_case(28, 4, 12),
            _field_case(28, 4, 27),  # the last row: K2's window cut at the bottom
            _field_case(13, 3, 12),
            _field_case(19, 4, 9),   # non-divisible: the pooled rows take 5, 5, 5, 4 rows
            _field_case(16, 2, 7),
            _field_case(56, 4, 30),
            # the float32 boundary: row 37 of 74 pooled by 3 reads pooled row 11, not 12
            _field_case(74, 3, 37),
            _field_case(74, 3, 36),
            _field_case(38, 3, 19),  # the scale in float32 but the product in float64 reads 5
            _field_case(98, 3, 49),  # float64 (Python floats) reads 15, float32 and integers 16
        ] + hidden_cases("hidden case", _small_field, count=4, seed=416)
          + hidden_cases("hidden tall-map case", _large_field, count=2, seed=4040),
        mistakes=[
            Mistake("the integer rule ⌊h·i/H⌋ for the pooled row instead of PyTorch's float32 "
                    "rule (row 37 of 74 pooled by 3 reads pooled row 11, not 12)",
                    partial(ref_gate_rows, rule="integer")),
            Mistake("the pooled row computed in float64 (Python floats) instead of float32",
                    partial(ref_gate_rows, rule="float64")),
            Mistake("the scale rounded to float32 but the product h·s in float64: both are "
                    "float32 (row 19 of 38 pooled by 3 reads pooled row 6, not 5)",
                    partial(ref_gate_rows, rule="product64")),
            Mistake("K2's 3×3 window left out: only the rows of the one pooled row that row h "
                    "reads", partial(ref_gate_rows, window=False)),
            Mistake("the identity left out: the gate is σ(x + up), so row h itself moves it",
                    partial(ref_gate_rows, identity=False)),
            Mistake("K2's padding rows counted as pooled rows at the borders (K2's window is "
                    "cut to the pooled rows that exist)", partial(ref_gate_rows, clamp="none"),
                    variants=(partial(ref_gate_rows, clamp="rows"),)),
            Mistake("the partial last pooling window kept (ceil mode): the pooling drops the "
                    "trailing H % r rows", partial(ref_gate_rows, ceil=True)),
            Mistake("K3's rows h − 1 … h + 1 added: K3 is multiplied by the gate, it does not "
                    "move it", partial(ref_gate_rows, k3=True)),
            Mistake("every row from the first to the last: a dropped row between the pooled "
                    "rows and row h moves nothing", partial(ref_gate_rows, span=True)),
            Mistake("a row listed twice when both the identity and a pooled row reach it (each "
                    "row once)", partial(ref_gate_rows, once=False)),
            Mistake("the pooled row taken as h // r, the pooling cell that row h sits in, "
                    "instead of the one the up-sampling reads (⌊h·s⌋, s = ⌊H/r⌋/H in float32)",
                    partial(ref_gate_rows, block="clamped"),
                    variants=(partial(ref_gate_rows, block="unclamped"),)),
        ],
    )
)


# ------------------------------------------------------------- 3. the calibration gate
def _upsample(context: torch.Tensor, size: tuple[int, int], mode: str,
              r: int = 0) -> torch.Tensor:
    """``context`` (B×C×i×j) brought to ``size``: "nearest" (F.interpolate's default, legacy
    nearest), "integer" (an index gather with ⌊d·in/out⌋ in integers), "repeat" (each pooled
    row repeated ``r`` times, the last one over the remainder: row d reads min(d // r, in − 1)),
    "bilinear" (align_corners=False), "corners" (bilinear,
    align_corners=True)."""
    if mode == "nearest":
        return F.interpolate(context, size=size, mode="nearest")
    if mode in ("integer", "repeat"):
        (H, W), (i, j) = size, context.shape[-2:]
        if mode == "integer":
            rows, cols = [d * i // H for d in range(H)], [d * j // W for d in range(W)]
        else:
            rows = [min(d // r, i - 1) for d in range(H)]
            cols = [min(d // r, j - 1) for d in range(W)]
        return context[:, :, rows][:, :, :, cols]
    return F.interpolate(context, size=size, mode="bilinear", align_corners=mode == "corners")


def _pool(x: torch.Tensor, r: int, pool: str) -> torch.Tensor:
    """Average pooling over r×r windows: "floor" (the official pooling: the trailing rows and
    columns that do not fill a window dropped), "ceil" (the partial last window kept, averaged
    over the rows it has), "ceil r" (kept, its sum divided by r per axis as if it were full),
    "adaptive" (``⌊H/r⌋ × ⌊W/r⌋`` windows spread over all the rows and columns)."""
    H, W = x.shape[-2:]
    if pool == "floor":
        return F.avg_pool2d(x, r, r)
    if pool == "ceil":
        return F.avg_pool2d(x, r, r, ceil_mode=True)
    if pool == "ceil r":
        pad = (0, -W % r, 0, -H % r)
        return F.avg_pool2d(F.pad(x, pad), r, r)
    return F.adaptive_avg_pool2d(x, (H // r, W // r))


def ref_calibration_gate(x: torch.Tensor, k2_weight: torch.Tensor, pooling_r: int, *,
                         identity: bool = True, upsample: str = "nearest",
                         pool: str = "floor", conv_first: bool = False) -> torch.Tensor:
    """σ(x + up(conv3×3(avgpool_r(x)))): x B×C×H×W, k2_weight C×C×3×3 -> B×C×H×W. Written
    with PyTorch's pooling and up-sampling (the learner writes both as matrices).

    Knobs: ``identity`` (False: σ(up) alone), ``upsample`` (a mode of :func:`_upsample`),
    ``pool`` (a mode of :func:`_pool`), ``conv_first`` (the 3×3 conv at full resolution, then
    the pooling).
    """
    H, W = x.shape[-2:]
    r = pooling_r
    if conv_first:
        context = _pool(F.conv2d(x, k2_weight, padding=1), r, pool)
    else:
        context = F.conv2d(_pool(x, r, pool), k2_weight, padding=1)
    up = _upsample(context, (H, W), upsample, r)
    return torch.sigmoid(x + up if identity else up)


# What exercise 3 asks the learner to write as matrices, so not to call (PyTorch's and einops'
# pooling, up-sampling and gathering).
_NOT_IN_MATRIX_FORM = (
    "interpolate", "upsample", "Upsample", "avg_pool2d", "avg_pool1d", "adaptive_avg_pool2d",
    "AvgPool2d", "AdaptiveAvgPool2d", "reduce", "mean", "repeat_interleave", "index_select",
    "gather", "take_along_dim",
)


def _gate_case(shape: tuple[int, int, int, int], r: int, seed: int,
               dtype: torch.dtype = torch.float64) -> Case:
    def make(g: torch.Generator, shape=shape, r=r):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        w = torch.randn(shape[1], shape[1], 3, 3, generator=g, dtype=torch.float64) * 0.5
        return x.to(dtype), w.to(dtype), r

    label = "" if dtype == torch.float64 else f" ({str(dtype).split('.')[-1]})"
    return Case("x " + "×".join(map(str, shape)) + f", r = {r}" + label, make, seed=seed)


# 74×74 pooled by 3 (24×24): row and column 37 read pooled row 11 in float32, not 12
_FLOAT32_GATE = _gate_case((1, 2, 74, 74), 3, 5, torch.float32)

check_calibration_gate = register(
    Checker(
        "calibration_gate",
        exercise="calibration_gate",
        tier="build",
        reference=ref_calibration_gate,
        cases=[
            # float64 cases keep off the sizes where float32 and the integer rule disagree:
            # F.interpolate on a float64 map may compute the index in double precision there
            _gate_case((2, 6, 9, 13), 4, 0),   # H % r, W % r != 0: ceil, adaptive, repeat
            _gate_case((1, 4, 8, 8), 4, 1),    # batch 1, divisible
            _gate_case((3, 5, 7, 10), 2, 2),   # r = 2, odd channels
            _gate_case((2, 3, 5, 6), 1, 3),    # boundary: r = 1, no pooling at all
            _gate_case((1, 3, 11, 6), 4, 4),   # boundary: remainders 11 % 4 = 3, 6 % 4 = 2
            _gate_case((2, 1, 4, 5), 4, 6),    # boundary: one channel, one pooled row (H = r)
            _FLOAT32_GATE,                     # float32: the integer index rule differs here
        ],
        mistakes=[
            Mistake("σ(up) without the identity: the gate is σ(x + up), x the input",
                    partial(ref_calibration_gate, identity=False)),
            Mistake("the one-hot rows from ⌊d·in/out⌋ in integers instead of PyTorch's float32 "
                    "rule (74 rows from 24 read row 11 at d = 37, not 12)",
                    partial(ref_calibration_gate, upsample="integer")),
            Mistake("the up-sampling as each pooled row repeated r times (row d reads "
                    "min(d // r, i − 1)) instead of legacy nearest's ⌊d·i/H⌋",
                    partial(ref_calibration_gate, upsample="repeat")),
            Mistake("the partial last window kept in the pooling matrix (ceil mode): the "
                    "official pooling floors and drops the trailing rows and columns",
                    partial(ref_calibration_gate, pool="ceil"),
                    variants=(partial(ref_calibration_gate, pool="ceil r"),)),
            Mistake("adaptive pooling: ⌊H/r⌋ windows spread over all H rows instead of r-row "
                    "windows that drop the trailing H % r rows",
                    partial(ref_calibration_gate, pool="adaptive")),
            Mistake("the 3×3 conv runs before the pooling instead of on the pooled map",
                    partial(ref_calibration_gate, conv_first=True)),
        ],
        forbidden=_NOT_IN_MATRIX_FORM,
        forbidden_reason="the exercise asks for the pooling and the up-sampling as matrices in an "
                         "einsum; the lesson's section 4 writes them with reduce and a gather",
    )
)


# ------------------------------------------------- 4. the module: the paper's channel split
class SCSplitReference(nn.Module):
    """The paper's self-calibrated split conv, with knobs for the slips.

    x (B×C×H×W, C even) is split into X1 (the first C/2 channels) and X2 (the second); X1 goes
    through the self-calibration (K2, K3, K4, as the official ``SCConv``), X2 through K1; the
    output is [Y1, Y2] concatenated on the channels. Parameters (the names the learner's module
    must use): ``k1_conv, k1_bn, …, k4_conv, k4_bn`` (3×3 convs C/2 -> C/2, no bias, with
    ``groups`` groups, dilation ``dilation`` and padding ``dilation``, as the official
    ``SCBottleneck`` builds them; BatchNorm2d). K1 and K4 carry the stride. Built with random BN weights and running
    statistics, so that eval mode is not the identity.

    Knobs: ``identity`` (False: σ(up) alone), ``upsample`` (a mode of :func:`_upsample`),
    ``stride_on`` ("k3": K3 strided, the gate subsampled ``[::s, ::s]`` to fit, K4 stride 1),
    ``gate_on`` ("k4": the gate multiplies K4's output, subsampled to fit, instead of K3's),
    ``relu`` (a ReLU after K3's BN), ``order`` ("swapped": K1 on the first half, the calibration
    on the second, output [Y1, Y2]; "reversed": the right halves, output [Y2, Y1]; "code": K1's
    half first in and out, as the official code and the library's ``SCSplitConv``),
    ``split`` ("parity": X1 the even channels, X2 the odd ones), ``k2_norm`` (False: K2's
    BatchNorm left out of the context), ``k2_dilated`` (False: K2, on the pooled map, not
    dilated).
    """

    def __init__(self, channels: int, stride: int = 1, pooling_r: int = 4, groups: int = 1,
                 dilation: int = 1, *, identity: bool = True, upsample: str = "nearest", stride_on: str = "k4",
                 gate_on: str = "k3", relu: bool = False, order: str = "paper",
                 split: str = "halves", k2_norm: bool = True,
                 k2_dilated: bool = True) -> None:
        super().__init__()
        self.stride, self.pooling_r = stride, pooling_r
        self.identity, self.upsample = identity, upsample
        self.stride_on, self.gate_on, self.relu = stride_on, gate_on, relu
        self.order, self.split, self.k2_norm = order, split, k2_norm
        g = channels // 2
        s3, s4 = (stride, 1) if stride_on == "k3" else (1, stride)

        def conv(s: int, d: int = dilation) -> nn.Conv2d:
            return nn.Conv2d(g, g, 3, stride=s, padding=d, dilation=d, groups=groups, bias=False)

        self.k1_conv, self.k1_bn = conv(stride), nn.BatchNorm2d(g)
        self.k2_conv, self.k2_bn = conv(1, dilation if k2_dilated else 1), nn.BatchNorm2d(g)
        self.k3_conv, self.k3_bn = conv(s3), nn.BatchNorm2d(g)
        self.k4_conv, self.k4_bn = conv(s4), nn.BatchNorm2d(g)
        with torch.no_grad():
            for bn in (self.k1_bn, self.k2_bn, self.k3_bn, self.k4_bn):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.3)
                bn.running_mean.normal_(0.0, 0.3)
                bn.running_var.uniform_(0.5, 1.5)

    def calibrated(self, x: torch.Tensor) -> torch.Tensor:
        """Y1: the self-calibrated half (the official SCConv's forward)."""
        r, s = self.pooling_r, self.stride
        context = self.k2_conv(F.avg_pool2d(x, r, r))
        if self.k2_norm:
            context = self.k2_bn(context)
        up = _upsample(context, tuple(x.shape[-2:]), self.upsample)
        gate = torch.sigmoid(x + up if self.identity else up)
        y = self.k3_bn(self.k3_conv(x))
        if self.relu:
            y = F.relu(y)
        if self.gate_on == "k4":
            return self.k4_bn(self.k4_conv(y)) * gate[..., ::s, ::s]
        if self.stride_on == "k3":
            gate = gate[..., ::s, ::s]
        return self.k4_bn(self.k4_conv(y * gate))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split == "parity":
            x1, x2 = x[:, 0::2], x[:, 1::2]
        else:
            x1, x2 = x.chunk(2, dim=1)
        if self.order in ("swapped", "code"):
            x1, x2 = x2, x1
        y1, y2 = self.calibrated(x1), self.k1_bn(self.k1_conv(x2))
        return torch.cat([y2, y1] if self.order in ("reversed", "code") else [y1, y2], dim=1)


class _SplitChecker(ModuleChecker):
    """The module checker with float32 cases: there the module runs in float32, eval mode, and
    its output alone is compared (at float32's tolerance); float64 cases are checked in full."""

    @staticmethod
    def _is_float32(case: Case) -> bool:
        return case.inputs()[0].dtype == torch.float32

    def evaluate(self, subject, case: Case, args: tuple):
        if args[0].dtype != torch.float32:
            return super().evaluate(subject, case, args)
        module = self._module(subject, case).float().eval()
        with torch.no_grad():
            return {"eval (float32): output": module(*args)}

    def recognise(self, runs: list[_CaseRun]) -> list[str]:
        names = Checker.recognise(self, runs)  # the catalogue, over every case
        if names:
            return names
        # the engine's train-mode findings, on the float64 cases (which run train mode)
        return super().recognise([r for r in runs if not self._is_float32(r.case)])


def _split_case(shape: tuple[int, int, int, int], stride: int, r: int, seed: int,
                groups: int = 1, dilation: int = 1) -> Case:
    more = f", groups {groups}, dilation {dilation}" if (groups, dilation) != (1, 1) else ""
    return map_case(shape, seed, f", stride {stride}, r = {r}" + more,
                    build={"channels": shape[1], "stride": stride, "pooling_r": r,
                           "groups": groups, "dilation": dilation})


def _float32_split_case(shape: tuple[int, int, int, int], r: int, seed: int) -> Case:
    return Case("x " + "×".join(map(str, shape)) + f" (float32), stride 1, r = {r}",
                lambda g: (torch.randn(*shape, generator=g, dtype=torch.float64).float(),),
                seed=seed, build={"channels": shape[1], "stride": 1, "pooling_r": r})


check_sc_split_conv = register(
    _SplitChecker(
        "sc_split_conv",
        exercise="MySCSplitConv",
        tier="build",
        reference=SCSplitReference,
        cases=[
            # batch 1, stride 2, odd halves (3 channels), depthwise, dilated: K2 on a 4×4 map
            _split_case((1, 6, 9, 8), 2, 2, 1, groups=3, dilation=2),
            _split_case((2, 4, 11, 6), 2, 4, 3),   # boundary: remainders 11 % 4 = 3, 6 % 4 = 2
            _split_case((2, 2, 5, 6), 1, 1, 4),    # boundary: two channels (halves of one), r = 1
            # the default stride = 1, pooling_r = 4, built with the channels only; H % 4 = 1
            map_case((2, 4, 9, 8), 5, ", stride, r, groups, dilation not given (1, 4, 1, 1)",
                     build={"channels": 4}),
            # float32, 74×74 pooled by 3: row and column 37 read pooled row 11, not 12
            _float32_split_case((1, 2, 74, 74), 3, 6),
        ],
        mistakes=[
            Mistake("σ(up) without the identity: the gate is σ(x + up), x the input",
                    partial(SCSplitReference, identity=False)),
            Mistake("bilinear instead of nearest up-sampling (the official code uses "
                    "F.interpolate's default, legacy nearest)",
                    partial(SCSplitReference, upsample="bilinear")),
            Mistake("the index rule ⌊d·in/out⌋ in integers instead of PyTorch's float32 rule "
                    "(wrong only on float32 maps, e.g. 74×74 with r = 3)",
                    partial(SCSplitReference, upsample="integer")),
            Mistake("the stride on K3 instead of K4 (in the calibrated half only K4, the last "
                    "conv, is strided)", partial(SCSplitReference, stride_on="k3")),
            Mistake("gating the wrong path: the gate multiplies K4's output instead of K3's",
                    partial(SCSplitReference, gate_on="k4")),
            Mistake("a ReLU after K3's BatchNorm: there is no ReLU inside the split conv",
                    partial(SCSplitReference, relu=True)),
            Mistake("the halves swapped: K1 on the first half and the calibration on the second",
                    partial(SCSplitReference, order="swapped")),
            Mistake("the outputs concatenated in the wrong order: [Y2, Y1] instead of [Y1, Y2]",
                    partial(SCSplitReference, order="reversed")),
            Mistake("the channels split by parity (even, odd) instead of into the first and "
                    "second half", partial(SCSplitReference, split="parity")),
            Mistake("K2's BatchNorm left out: the context is BN(K2 ⋆ AvgPool_r(X1))",
                    partial(SCSplitReference, k2_norm=False)),
            Mistake("K2 not dilated: the official code gives all four convs the same dilation, "
                    "K2 on the pooled map too", partial(SCSplitReference, k2_dilated=False)),
        ],
    )
)


# ------------------------------------------------- 5. extend: the paper's bilinear up-sampling
def bilinear_weights(out_size: int, in_size: int, *, mode: str = "half-pixel",
                     clamp: bool | str = True) -> torch.Tensor:
    """The out×in matrix of linear up-sampling: row d sits at source position
    p = (d + ½)·in/out − ½ ("half-pixel", align_corners=False), d·(in − 1)/(out − 1)
    ("corners", align_corners=True) or d·in/out ("no shift"); clamped at 0 unless ``clamp`` is
    False (then int() truncates toward 0 and the weight extrapolates), "wrap" (lo = ⌊p⌋ = −1,
    which an index reads as the last row) or "weight" (the index clamped at 0, the weight
    p − ⌊p⌋ from the unclamped p); it takes rows lo = ⌊p⌋ and min(lo + 1, in − 1) with weights
    1 − (p − lo) and p − lo. float64."""
    A = torch.zeros(out_size, in_size, dtype=torch.float64)
    for d in range(out_size):
        if mode == "half-pixel":
            p = (d + 0.5) * in_size / out_size - 0.5
        elif mode == "corners":
            p = d * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        else:
            p = d * in_size / out_size
        if clamp in ("wrap", "weight"):
            lo = math.floor(p)
            frac = p - lo
            if clamp == "weight":
                lo = max(lo, 0)
            hi = min(lo + 1, in_size - 1)
            A[d, lo] += 1.0 - frac  # lo = -1: the last row
            A[d, hi] += frac
            continue
        if clamp:
            p = max(p, 0.0)
        lo = min(int(p), in_size - 1)
        hi = min(lo + 1, in_size - 1)
        A[d, lo] += 1.0 - (p - lo)
        A[d, hi] += p - lo
    return A


def ref_calibration_gate_bilinear(x: torch.Tensor, k2_weight: torch.Tensor, pooling_r: int, *,
                                  identity: bool = True, mode: str = "half-pixel",
                                  clamp: bool | str = True) -> torch.Tensor:
    """σ(x + bilinear_up(conv3×3(avgpool_r(x)))), the paper's bilinear ``Up``
    (``F.interpolate(mode="bilinear", align_corners=False)``): x B×C×H×W -> B×C×H×W.

    Knobs: ``identity`` (False: σ(up) alone); ``mode`` ("nearest": the official code's legacy
    nearest; "corners"; "no shift": see :func:`bilinear_weights`); ``clamp`` (False: positions
    below 0 not clamped, the first rows extrapolate; "wrap", "weight": see
    :func:`bilinear_weights`).
    """
    H, W = x.shape[-2:]
    context = F.conv2d(F.avg_pool2d(x, pooling_r, pooling_r), k2_weight, padding=1)
    if mode == "half-pixel" and clamp is True:
        up = F.interpolate(context, size=(H, W), mode="bilinear", align_corners=False)
    elif mode == "nearest":
        up = F.interpolate(context, size=(H, W), mode="nearest")
    else:
        i, j = context.shape[-2:]
        rows = bilinear_weights(H, i, mode=mode, clamp=clamp).to(context.dtype)
        cols = bilinear_weights(W, j, mode=mode, clamp=clamp).to(context.dtype)
        up = torch.einsum("hi,bcij,wj->bchw", rows, context, cols)
    return torch.sigmoid(x + up if identity else up)


check_calibration_gate_bilinear = register(
    Checker(
        "calibration_gate_bilinear",
        exercise="calibration_gate_bilinear",
        tier="extend",
        reference=ref_calibration_gate_bilinear,
        cases=[
            _gate_case((2, 3, 9, 13), 4, 0),   # the lesson's 9 rows from 2: rows 0-1 clamped
            _gate_case((1, 2, 8, 8), 4, 1),    # batch 1, divisible
            _gate_case((2, 3, 7, 10), 2, 2),   # r = 2, odd rows
            _gate_case((2, 2, 5, 6), 1, 3),    # boundary: r = 1, the up-sampling is the identity
            _gate_case((1, 2, 11, 6), 4, 4),   # boundary: remainders 3 and 2
            _gate_case((2, 1, 4, 5), 4, 6),    # boundary: one channel, one pooled row (constant)
        ],
        mistakes=[
            Mistake("nearest instead of bilinear: the official code's legacy nearest, not the "
                    "paper's bilinear Up", partial(ref_calibration_gate_bilinear, mode="nearest")),
            Mistake("align_corners=True (p = d·(in − 1)/(out − 1)) instead of half-pixel "
                    "centres (align_corners=False)",
                    partial(ref_calibration_gate_bilinear, mode="corners")),
            Mistake("the source position d·in/out without the half-pixel shift "
                    "(d + ½)·in/out − ½", partial(ref_calibration_gate_bilinear, mode="no shift")),
            Mistake("positions before the first pooled row not clamped at 0: the first rows "
                    "extrapolate", partial(ref_calibration_gate_bilinear, clamp=False),
                    variants=(
                        # ⌊p⌋ = −1 without the clamp: the index wraps to the last pooled row
                        partial(ref_calibration_gate_bilinear, clamp="wrap"),
                        # the index clamped at 0, the weight p − ⌊p⌋ from the unclamped p
                        partial(ref_calibration_gate_bilinear, clamp="weight"),
                    )),
            Mistake("σ(up) without the identity: the gate is σ(x + up), x the input",
                    partial(ref_calibration_gate_bilinear, identity=False)),
        ],
    )
)
