"""The benchmark matrix: which modules are timed, at which shapes, dtypes, passes and compile modes.

A :class:`MatrixRow` is one thing to time. Its ``hyper`` dict is the single place where the
module's hyper-parameters are written: the same dict builds the module (``row.build()``) and
feeds the cost model (``row.cost(dtype_bytes)``), so the two cannot disagree (ECA's kernel 3,
say, is written once). The table :data:`SUBJECTS` says, per mechanism, how a ``hyper`` dict turns
into a module and into an :mod:`attn_tutorial.cost` call.

Groups (``GROUPS``):

* ``channel``  — ECA, SE, BAM at the ResNet-50 stage shapes (eager and compiled, fp32 and bf16);
* ``conv``     — SCConv and PSA against the plain 3×3 convolution each replaces;
* ``danet``    — PAM materialised vs PAM through SDPA vs compiled, and CAM (C = 512, 32²…192²);
* ``external`` — external attention against PAM on the same maps;
* ``emsa``     — ResT's EMSA at the ResT stage shapes against full multi-head self-attention;
* ``scaling``  — time and peak memory against N = H·W for self-attention (materialised, SDPA),
  EMSA (sr 2, 4, 8) and external attention.

``quick`` shrinks every group to tiny sizes, eager float32 only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import nn

from attn_tutorial import cost
from attn_tutorial.attention import MultiHeadSelfAttention, SelfAttention2d
from attn_tutorial.bam import BAM
from attn_tutorial.bench.timing import PASSES
from attn_tutorial.danet import CAM, PAM
from attn_tutorial.eca import ECA, SE
from attn_tutorial.external import ExternalAttention
from attn_tutorial.psa import PSA
from attn_tutorial.rest import EMSA
from attn_tutorial.scconv import SCConv

__all__ = ["GROUPS", "TITLES", "SUBJECTS", "Subject", "MatrixRow", "build_rows"]

GROUPS = ("channel", "conv", "danet", "external", "emsa", "scaling")

TITLES = {
    "channel": "Channel attention (ECA, SE, BAM) at ResNet-50 stage shapes",
    "conv": "SCConv and PSA against the 3×3 convolution they replace",
    "danet": "DANet PAM (materialised, SDPA, compiled) and CAM",
    "external": "External attention against PAM on the same maps",
    "emsa": "ResT EMSA against full multi-head self-attention at ResT stage shapes",
    "scaling": "Time and memory against N = H·W (log-log slopes)",
}


@dataclass(frozen=True)
class Subject:
    """How a mechanism's ``hyper`` dict becomes a module and a cost-model call.

    ``module(C, hyper)`` builds the module for C channels; ``cost(B, C, H, W, hyper, dtype_bytes)``
    returns its forward :class:`attn_tutorial.cost.Cost`. ``tokens``: the input is B×N×C (else
    B×C×H×W); ``grid_args``: ``forward(x, H, W)``.
    """

    module: Callable[[int, dict[str, Any]], nn.Module]
    cost: Callable[[int, int, int, int, dict[str, Any], int], cost.Cost]
    tokens: bool = False
    grid_args: bool = False


def _dense_conv_cost(B: int, C: int, H: int, W: int, kernel_size: int,
                     dtype_bytes: int) -> cost.Cost:
    """A C→C convolution without bias, 'same' padding: 2·B·C·C·k²·H·W FLOPs."""
    params = C * C * kernel_size**2
    return cost.Cost(params=params, flops=2 * B * params * H * W,
                     min_bytes=dtype_bytes * (2 * B * C * H * W + params))


def _dense_conv(C: int, h: dict[str, Any]) -> nn.Module:
    if h["bias"]:
        raise ValueError("hyper['bias']=True: the cost model of the dense conv has no bias")
    return nn.Conv2d(C, C, kernel_size=h["kernel_size"], padding=h["kernel_size"] // 2,
                     bias=False)


SUBJECTS: dict[str, Subject] = {
    "SE": Subject(lambda C, h: SE(C, **h),
                  lambda B, C, H, W, h, d: cost.se(B, C, H, W, h["reduction"], dtype_bytes=d)),
    "ECA": Subject(lambda C, h: ECA(C, **h),
                   lambda B, C, H, W, h, d: cost.eca(B, C, H, W, k=h["k_size"], dtype_bytes=d)),
    "BAM": Subject(lambda C, h: BAM(C, **h),
                   lambda B, C, H, W, h, d: cost.bam(
                       B, C, H, W, reduction_ratio=h["reduction_ratio"],
                       num_dilated_convs=h["num_dilated_convs"], dtype_bytes=d)),
    "Conv2d": Subject(_dense_conv,
                      lambda B, C, H, W, h, d: _dense_conv_cost(B, C, H, W, h["kernel_size"], d)),
    "SCConv": Subject(lambda C, h: SCConv(C, **h),
                      lambda B, C, H, W, h, d: cost.scconv(B, C, H, W, pooling_r=h["pooling_r"],
                                                           dtype_bytes=d)),
    "PSA": Subject(lambda C, h: PSA(C, C, **h),
                   lambda B, C, H, W, h, d: cost.psa(
                       B, C, H, W, conv_kernels=h["conv_kernels"], conv_groups=h["conv_groups"],
                       se_reduction=h["se_reduction"], dtype_bytes=d)),
    "PAM": Subject(lambda C, h: PAM(C, **h),
                   lambda B, C, H, W, h, d: cost.pam(B, C, H, W, dtype_bytes=d)),
    "CAM": Subject(lambda C, h: CAM(C, **h),
                   lambda B, C, H, W, h, d: cost.cam(B, C, H, W, dtype_bytes=d)),
    "ExternalAttention": Subject(
        lambda C, h: ExternalAttention(C, **h),
        lambda B, C, H, W, h, d: cost.external_attention(B, C, H, W, h["memory_size"],
                                                         dtype_bytes=d)),
    "MHSA": Subject(lambda C, h: MultiHeadSelfAttention(C, **h),
                    lambda B, C, H, W, h, d: cost.mhsa(B, C, H, W, h["num_heads"],
                                                       qkv_bias=h["qkv_bias"], dtype_bytes=d),
                    tokens=True),
    "SelfAttention2d": Subject(
        lambda C, h: SelfAttention2d(C, **h),
        lambda B, C, H, W, h, d: cost.mhsa(B, C, H, W, h["num_heads"], qkv_bias=h["qkv_bias"],
                                           dtype_bytes=d)),
    "EMSA": Subject(lambda C, h: EMSA(C, **h),
                    lambda B, C, H, W, h, d: cost.emsa(
                        B, C, H, W, h["num_heads"], qkv_bias=h["qkv_bias"],
                        sr_ratio=h["sr_ratio"], apply_transform=h["apply_transform"],
                        dtype_bytes=d),
                    tokens=True, grid_args=True),
}


@dataclass(frozen=True)
class MatrixRow:
    """One measurement of the matrix: a module at one shape, dtype, pass and compile mode."""

    group: str
    name: str                       # e.g. "PAM (SDPA)"; baselines are named by this
    mechanism: str                  # a key of SUBJECTS
    impl: str                       # "eager", "materialised", "sdpa"
    shape: dict[str, int]           # B, C, H, W (tokens: N = H·W of width C)
    hyper: dict[str, Any]           # the module's keyword arguments, also fed to the cost model
    baseline: str | None            # name of the baseline row in the same setting
    dtype: str = "float32"
    pass_: str = "forward"
    compile: str = "none"           # "none" or a torch.compile mode ("default")
    series: str | None = None       # scaling sweep: the curve this point belongs to
    priority: int = 0               # lower runs first when a time budget is set

    @property
    def subject(self) -> Subject:
        return SUBJECTS[self.mechanism]

    @property
    def tokens(self) -> bool:
        return self.subject.tokens

    @property
    def grid_args(self) -> bool:
        return self.subject.grid_args

    @property
    def sdpa(self) -> bool:
        return bool(self.hyper.get("use_sdpa", False))

    def build(self) -> nn.Module:
        return self.subject.module(self.shape["C"], dict(self.hyper))

    def cost(self, dtype_bytes: int) -> cost.Cost:
        s = self.shape
        return self.subject.cost(s["B"], s["C"], s["H"], s["W"], self.hyper, dtype_bytes)

    def replace(self, **changes: Any) -> "MatrixRow":
        return dataclasses.replace(self, **changes)


def _shape(B: int, C: int, H: int, W: int) -> dict[str, int]:
    return {"B": B, "C": C, "H": H, "W": W}


SE_HYPER = {"reduction": 16}
ECA_HYPER = {"k_size": 3}
BAM_HYPER = {"reduction_ratio": 16, "dilation": 4, "num_dilated_convs": 2}


def _channel_rows(quick: bool) -> list[MatrixRow]:
    B, shapes = (2, [(32, 14), (64, 7)]) if quick else (32, [(256, 56), (512, 28), (1024, 14),
                                                              (2048, 7)])
    rows = []
    for C, S in shapes:
        sh = _shape(B, C, S, S)
        rows += [MatrixRow("channel", "SE", "SE", "eager", sh, SE_HYPER, "SE"),
                 MatrixRow("channel", "ECA", "ECA", "eager", sh, ECA_HYPER, "SE"),
                 MatrixRow("channel", "BAM", "BAM", "eager", sh, BAM_HYPER, "SE")]
    return _expand(rows, quick, dtypes=("float32", "bfloat16"), compiled=True)


def _conv_rows(quick: bool) -> list[MatrixRow]:
    B, shapes = (2, [(64, 8)]) if quick else (32, [(64, 56), (128, 28), (256, 14), (512, 7)])
    rows = []
    for C, S in shapes:
        sh = _shape(B, C, S, S)
        rows += [
            MatrixRow("conv", "conv3x3", "Conv2d", "eager", sh,
                      {"kernel_size": 3, "bias": False}, "conv3x3"),
            MatrixRow("conv", "SCConv", "SCConv", "eager", sh,
                      {"pooling_r": 4, "upsample": "nearest"}, "conv3x3"),
            MatrixRow("conv", "PSA", "PSA", "eager", sh,
                      {"conv_kernels": (3, 5, 7, 9), "conv_groups": (1, 4, 8, 16),
                       "se_reduction": 16}, "conv3x3"),
        ]
    return _expand(rows, quick, dtypes=("float32", "bfloat16"), compiled=False)


COMPILED_PAM = "PAM (materialised, compiled)"


def _pam_rows(group: str, B: int, C: int, S: int, compiled: bool) -> list[MatrixRow]:
    sh = _shape(B, C, S, S)
    base = "PAM (materialised)"
    rows = [MatrixRow(group, base, "PAM", "materialised", sh, {"use_sdpa": False}, base),
            MatrixRow(group, "PAM (SDPA)", "PAM", "sdpa", sh, {"use_sdpa": True}, base)]
    if compiled:  # the compiled rows' baseline: compiled against compiled
        rows.append(MatrixRow(group, COMPILED_PAM, "PAM", "materialised", sh,
                              {"use_sdpa": False}, COMPILED_PAM, compile="default"))
    return rows


def _danet_rows(quick: bool) -> list[MatrixRow]:
    # Full: 32²…128² as in DANet's use, plus 192² where the materialised N×N maps
    # (B·N² floats each) no longer fit: the OOM is caught and recorded.
    B, C, sizes = (2, 64, [8, 16]) if quick else (8, 512, [32, 48, 64, 96, 128, 192])
    rows = []
    for S in sizes:
        rows += _pam_rows("danet", B, C, S, compiled=not quick)
        sh = _shape(B, C, S, S)
        rows.append(MatrixRow("danet", "CAM", "CAM", "eager", sh, {"variant": "official"},
                              "PAM (materialised)"))
        if not quick:
            rows.append(MatrixRow("danet", "CAM (compiled)", "CAM", "eager", sh,
                                  {"variant": "official"}, COMPILED_PAM, compile="default"))
    return _expand(rows, quick, dtypes=("float32", "bfloat16"), compiled=False)


def _external_rows(quick: bool) -> list[MatrixRow]:
    # Sizes around the FLOP crossover N* = 2C/3 + 16S/9 (C = 64: N* = 156.4, between 12² and
    # 13²; C = 512: N* = 455.1, between 21² and 22²) as well as far past it.
    B, C, sizes = (2, 64, [8, 10, 12, 13, 14, 15, 16, 20]) if quick else (
        8, 512, [16, 20, 21, 22, 24, 32, 64, 96, 128])
    rows = []
    for S in sizes:
        rows += _pam_rows("external", B, C, S, compiled=False)
        rows.append(MatrixRow("external", "External attention", "ExternalAttention", "eager",
                              _shape(B, C, S, S), {"memory_size": 64}, "PAM (materialised)"))
    return _expand(rows, quick, dtypes=("float32",), compiled=False)


def _emsa_rows(quick: bool) -> list[MatrixRow]:
    # ResT-Base stages: (dim, heads, sr, grid) at a 224² input; quick: two tiny stages.
    B, stages = (2, [(32, 1, 4, 16), (64, 2, 2, 8)]) if quick else (
        32, [(64, 1, 8, 56), (128, 2, 4, 28), (256, 4, 2, 14), (512, 8, 1, 7)])
    rows = []
    base = "MHSA (materialised)"
    for dim, heads, sr, S in stages:
        sh = _shape(B, dim, S, S)
        mhsa = {"num_heads": heads, "qkv_bias": True}
        rows += [
            MatrixRow("emsa", base, "MHSA", "materialised", sh, {**mhsa, "use_sdpa": False},
                      base),
            MatrixRow("emsa", "MHSA (SDPA)", "MHSA", "sdpa", sh, {**mhsa, "use_sdpa": True},
                      base),
            MatrixRow("emsa", "EMSA", "EMSA", "materialised", sh,
                      {**mhsa, "sr_ratio": sr, "apply_transform": heads > 1}, base),
        ]
    return _expand(rows, quick, dtypes=("float32",), compiled=False)


def _scaling_rows(quick: bool) -> list[MatrixRow]:
    # Eight (quick) or nine sizes: the upper half of N, where the slopes are read, has 4 or 5.
    B, C, sizes = (1, 32, [8, 12, 16, 20, 24, 28, 32, 40]) if quick else (
        1, 64, [16, 24, 32, 48, 64, 96, 128, 160, 192])
    rows = []
    base = "self-attention (materialised)"
    for S in sizes:
        sh = _shape(B, C, S, S)
        rows += [
            MatrixRow("scaling", base, "SelfAttention2d", "materialised", sh,
                      {"num_heads": 1, "qkv_bias": True, "use_sdpa": False}, base, series=base),
            MatrixRow("scaling", "self-attention (SDPA)", "SelfAttention2d", "sdpa", sh,
                      {"num_heads": 1, "qkv_bias": True, "use_sdpa": True}, base,
                      series="self-attention (SDPA)"),
        ]
        for sr in (2, 4, 8):
            if S < sr + 1:
                continue
            rows.append(MatrixRow(
                "scaling", f"EMSA sr={sr}", "EMSA", "materialised", sh,
                {"num_heads": 1, "qkv_bias": True, "sr_ratio": sr, "apply_transform": False},
                base, series=f"EMSA sr={sr}"))
        rows.append(MatrixRow("scaling", "external attention", "ExternalAttention", "eager", sh,
                              {"memory_size": 64}, base, series="external attention"))
    return rows  # forward, float32, eager only


def _expand(rows: list[MatrixRow], quick: bool, dtypes: Sequence[str],
            compiled: bool) -> list[MatrixRow]:
    """Every row in each pass; full mode adds bf16 and, where asked, compiled copies.

    A compiled copy is named ``"<name> (compiled)"`` and its baseline is the compiled copy of
    the eager row's baseline: compiled is compared with compiled.

    ``priority`` orders a budgeted run: forward float32 eager first (what the lesson reads),
    then forward+backward, then bf16, then compiled.
    """
    out = []
    for d, dtype in enumerate(("float32",) if quick else dtypes):
        for p, pass_ in enumerate(PASSES):
            for r in rows:
                eager = 0 if r.compile == "none" else 3
                out.append(r.replace(dtype=dtype, pass_=pass_, priority=p + 2 * d + eager))
                if compiled and not quick and r.compile == "none":
                    out.append(r.replace(dtype=dtype, pass_=pass_, compile="default",
                                         name=f"{r.name} (compiled)",
                                         baseline=f"{r.baseline} (compiled)",
                                         priority=p + 2 * d + 3))
    return out


_GROUP_ROWS = {"channel": _channel_rows, "conv": _conv_rows, "danet": _danet_rows,
               "external": _external_rows, "emsa": _emsa_rows, "scaling": _scaling_rows}


def build_rows(group: str, quick: bool) -> list[MatrixRow]:
    """The rows of one group of the matrix (``quick``: tiny sizes, eager float32)."""
    if not isinstance(group, str) or group not in _GROUP_ROWS:
        raise ValueError(f"group={group!r} must be one of {GROUPS}")
    if not isinstance(quick, bool):
        raise ValueError(f"quick={quick!r} must be True or False")
    return _GROUP_ROWS[group](quick)
