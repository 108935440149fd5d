"""Checkers for lesson 04 (SCNet, self-calibrated convolution): exercises in
``solutions/04_scconv.ipynb``.

1. ``check_nearest_rows``: the source row of every output row in PyTorch's legacy nearest
   up-sampling, ``⌊dst · in / out⌋``.
2. ``check_calibration_gate``: the gate ``σ(x + up(conv3×3(avgpool_r(x))))`` of the K2 path
   (its BatchNorm left out), B×C×H×W.
3. ``check_scconv`` (a module exercise): the whole self-calibrated convolution, K2/K3/K4 with
   their BatchNorms and the stride on K4, checked in eval mode with random BN statistics.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. The per-case comments say which case catches which slip;
``tests/test_checks.py`` proves that every mistake fails somewhere and that the mistakes are told
apart.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "04_scconv"  # exercises/04_scconv.ipynb holds these exercises, in this order
__all__ = ["check_nearest_rows", "check_calibration_gate", "check_scconv"]


# ------------------------------------------------------------- 1. legacy nearest rows
def ref_nearest_rows(out_size: int, in_size: int, *, rule: str = "floor") -> list[int]:
    """Source index of each of ``out_size`` destination rows read from ``in_size`` rows, as a
    list of ints.

    Knobs: ``rule`` = "floor" (legacy nearest, ``⌊d·in/out⌋``, in integer arithmetic), "half"
    (``⌊(d + ½)·in/out⌋``, PyTorch's "nearest-exact"), "round" (``d·in/out`` rounded half up,
    clamped to the last row), "repeat" (``d // (out // in)``: each source row repeated
    ``out // in`` times).
    """
    if rule == "floor":
        return [d * in_size // out_size for d in range(out_size)]
    if rule == "half":
        return [(2 * d + 1) * in_size // (2 * out_size) for d in range(out_size)]
    if rule == "round":
        return [min((2 * d * in_size + out_size) // (2 * out_size), in_size - 1)
                for d in range(out_size)]
    if rule == "python round":  # round() of the float: half to even, not clamped
        return [round(d * in_size / out_size) for d in range(out_size)]
    return [d // (out_size // in_size) for d in range(out_size)]


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
            _rows_case(8, 2),    # divisible: every rule but "half" and "round" agree
            _rows_case(7, 3),    # r = 2, 7 rows: "repeat" runs past the last row
            # boundaries: one source row, out = in, remainders 11 % 3 = 2 and 14 % 4 = 2
            _rows_case(4, 1),
            _rows_case(5, 5),
            _rows_case(11, 3),
            _rows_case(14, 4),
            _rows_case(44, 30),  # d · (30/44) in floating point truncates below d·30 // 44
        ],
        mistakes=[
            Mistake("half-pixel centres ⌊(d + 0.5)·in/out⌋ ('nearest-exact') instead of legacy "
                    "nearest ⌊d·in/out⌋", partial(ref_nearest_rows, rule="half")),
            Mistake("rounded d·in/out to the nearest index instead of taking the floor",
                    partial(ref_nearest_rows, rule="round"),
                    variants=(partial(ref_nearest_rows, rule="python round"),)),
            Mistake("each pooled row repeated out // in times (indices run past the last row "
                    "when the size is not divisible)", partial(ref_nearest_rows, rule="repeat")),
        ],
    )
)


# ------------------------------------------------------------- 2. the calibration gate
def ref_calibration_gate(x: torch.Tensor, k2_weight: torch.Tensor, pooling_r: int, *,
                         identity: bool = True, upsample: str = "nearest",
                         ceil_mode: bool = False, pool: str = "avg",
                         conv_first: bool = False) -> torch.Tensor:
    """σ(x + up(conv3×3(avgpool_r(x)))): x B×C×H×W, k2_weight C×C×3×3 -> B×C×H×W.

    Knobs: ``identity`` (False: σ(up) alone), ``upsample`` ("nearest"; "bilinear"; "scale":
    ``scale_factor=r``, which gives ⌊H/r⌋·r rows, not H, and x cropped to match so that the sum
    runs), ``ceil_mode`` (pooling
    keeps the partial last window), ``pool`` ("max"), ``conv_first`` (the 3×3 conv at full
    resolution, then the pooling).
    """
    H, W = x.shape[-2:]
    r = pooling_r
    pool_fn = F.avg_pool2d if pool == "avg" else F.max_pool2d
    if conv_first:
        context = pool_fn(F.conv2d(x, k2_weight, padding=1), r, r, ceil_mode=ceil_mode)
    else:
        context = F.conv2d(pool_fn(x, r, r, ceil_mode=ceil_mode), k2_weight, padding=1)
    if upsample == "nearest":
        up = F.interpolate(context, size=(H, W), mode="nearest")
    elif upsample == "bilinear":
        up = F.interpolate(context, size=(H, W), mode="bilinear", align_corners=False)
    else:  # scale_factor=r: ⌊H/r⌋·r rows; the input cropped to fit
        up = F.interpolate(context, scale_factor=r, mode="nearest")
        x = x[..., :up.shape[-2], :up.shape[-1]]
    return torch.sigmoid(x + up if identity else up)


def _gate_case(shape: tuple[int, int, int, int], r: int, seed: int) -> Case:
    def make(g: torch.Generator, shape=shape, r=r):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        w = torch.randn(shape[1], shape[1], 3, 3, generator=g, dtype=torch.float64) * 0.5
        return x, w, r

    return Case("x " + "×".join(map(str, shape)) + f", r = {r}", make, seed=seed)


check_calibration_gate = register(
    Checker(
        "calibration_gate",
        exercise="calibration_gate",
        tier="build",
        reference=ref_calibration_gate,
        cases=[
            _gate_case((2, 6, 9, 13), 4, 0),   # H % r, W % r != 0: ceil mode, scale_factor, bilinear
            _gate_case((1, 4, 8, 8), 4, 1),    # batch 1, divisible: scale_factor is right here
            _gate_case((3, 5, 7, 10), 2, 2),   # r = 2, odd channels
            _gate_case((2, 3, 5, 6), 1, 3),    # boundary: r = 1, no pooling at all
            _gate_case((1, 3, 11, 6), 4, 4),   # boundary: remainders 11 % 4 = 3, 6 % 4 = 2
        ],
        mistakes=[
            Mistake("σ(up) without the identity: the gate is σ(x + up), x the input",
                    partial(ref_calibration_gate, identity=False)),
            Mistake("bilinear instead of nearest up-sampling (the official code uses "
                    "F.interpolate's default, legacy nearest)",
                    partial(ref_calibration_gate, upsample="bilinear")),
            Mistake("the up-sampled map is not brought back to H×W: scale_factor=r gives "
                    "⌊H/r⌋·r rows, not H (and x was cropped to fit)",
                    partial(ref_calibration_gate, upsample="scale")),
            Mistake("ceil-mode pooling: the partial last window is kept (the official pooling "
                    "floors and drops it)", partial(ref_calibration_gate, ceil_mode=True)),
            Mistake("max instead of average pooling", partial(ref_calibration_gate, pool="max")),
            Mistake("the 3×3 conv runs before the pooling instead of on the pooled map",
                    partial(ref_calibration_gate, conv_first=True)),
        ],
    )
)


# ------------------------------------------------------------------- 3. the module
class SCConvReference(nn.Module):
    """The self-calibrated convolution of the official code, with knobs for the slips.

    Parameters (the names the learner's module must use): ``k2_conv``, ``k2_bn``, ``k3_conv``,
    ``k3_bn``, ``k4_conv``, ``k4_bn`` (3×3 convs, no bias, padding 1; BatchNorm2d). Built with
    random BN weights and running statistics, so that eval mode is not the identity.

    Knobs: ``identity`` (False: σ(up) alone), ``upsample`` ("bilinear"), ``stride_on`` ("k3":
    K3 strided, the gate subsampled ``[::s, ::s]`` to fit, K4 stride 1), ``gate_on`` ("k4": the
    gate multiplies K4's output, subsampled to fit, instead of K3's), ``relu`` (True: a ReLU after
    K3's BN, as in a plain conv-BN-ReLU block).
    """

    def __init__(self, channels: int, stride: int = 1, pooling_r: int = 4, *,
                 identity: bool = True, upsample: str = "nearest", stride_on: str = "k4",
                 gate_on: str = "k3", relu: bool = False) -> None:
        super().__init__()
        self.stride, self.pooling_r = stride, pooling_r
        self.identity, self.upsample = identity, upsample
        self.stride_on, self.gate_on, self.relu = stride_on, gate_on, relu
        s3, s4 = (stride, 1) if stride_on == "k3" else (1, stride)

        def conv(s: int) -> nn.Conv2d:
            return nn.Conv2d(channels, channels, 3, stride=s, padding=1, bias=False)

        self.k2_conv, self.k2_bn = conv(1), nn.BatchNorm2d(channels)
        self.k3_conv, self.k3_bn = conv(s3), nn.BatchNorm2d(channels)
        self.k4_conv, self.k4_bn = conv(s4), nn.BatchNorm2d(channels)
        with torch.no_grad():
            for bn in (self.k2_bn, self.k3_bn, self.k4_bn):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.3)
                bn.running_mean.normal_(0.0, 0.3)
                bn.running_var.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, s = self.pooling_r, self.stride
        context = self.k2_bn(self.k2_conv(F.avg_pool2d(x, r, r)))
        if self.upsample == "nearest":
            up = F.interpolate(context, size=x.shape[-2:], mode="nearest")
        else:
            up = F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False)
        gate = torch.sigmoid(x + up if self.identity else up)
        y = self.k3_bn(self.k3_conv(x))
        if self.relu:
            y = F.relu(y)
        if self.gate_on == "k4":
            return self.k4_bn(self.k4_conv(y)) * gate[..., ::s, ::s]
        if self.stride_on == "k3":
            gate = gate[..., ::s, ::s]
        return self.k4_bn(self.k4_conv(y * gate))


def _module_case(shape: tuple[int, int, int, int], stride: int, r: int, seed: int) -> Case:
    return map_case(shape, seed, f", stride {stride}, r = {r}",
                    build={"channels": shape[1], "stride": stride, "pooling_r": r})


check_scconv = register(
    ModuleChecker(
        "scconv",
        exercise="MySCConv",
        tier="build",
        reference=SCConvReference,
        cases=[
            _module_case((2, 4, 9, 13), 1, 4, 0),   # non-divisible, stride 1
            _module_case((1, 6, 8, 8), 2, 4, 1),    # batch 1, stride 2: where the stride sits
            _module_case((2, 3, 7, 10), 2, 2, 2),   # odd sizes, stride 2, r = 2
            _module_case((2, 3, 11, 6), 2, 4, 3),   # boundary: remainders 11 % 4 = 3, 6 % 4 = 2
            _module_case((2, 4, 5, 6), 1, 1, 4),    # boundary: r = 1
            # the default stride = 1, pooling_r = 4: built with the channels only
            map_case((2, 4, 9, 8), 5, ", stride and r not given (1, 4)", build={"channels": 4}),
        ],
        mistakes=[
            Mistake("σ(up) without the identity: the gate is σ(x + up), x the input",
                    partial(SCConvReference, identity=False)),
            Mistake("bilinear instead of nearest up-sampling (the official code uses "
                    "F.interpolate's default, legacy nearest)",
                    partial(SCConvReference, upsample="bilinear")),
            Mistake("the stride on K3 instead of K4 (only K4, the last conv, is strided)",
                    partial(SCConvReference, stride_on="k3")),
            Mistake("gating the wrong path: the gate multiplies K4's output instead of K3's",
                    partial(SCConvReference, gate_on="k4")),
            Mistake("a ReLU after K3's BatchNorm: there is no ReLU inside SCConv",
                    partial(SCConvReference, relu=True)),
        ],
    )
)
