"""Analytic cost models: parameters, forward FLOPs and minimum memory traffic of every mechanism.

Each function takes the sizes (B, C, H, W) and the mechanism's hyper-parameters, with the
library's defaults (which are the official ones), and returns a :class:`Cost`. The formulas are
written from the architectures (each official module's layers), layer by layer, so a lesson
can *predict* a cost and then count it.

Conventions:

* **FLOPs are counted the way ``torch.utils.flop_counter.FlopCounterMode`` counts them** (and
  ``attn_tutorial.bench.count_flops``): 2 per multiply-add in matrix products (``mm``, ``addmm``,
  ``bmm``, attention) and convolutions, i.e. ``2 · (output elements) · (inputs per output)``.
  Biases, elementwise operations (activations, sigmoid, residual adds, products with a gate),
  softmax, normalisations (BatchNorm, LayerNorm, InstanceNorm), pooling and interpolation are
  **not** counted. So a gate like ECA costs almost nothing in FLOPs although it reads and writes
  the whole feature map: look at ``min_bytes`` for that.
* **params** is the number of trainable parameters (``sum(p.numel())``); BatchNorm running
  statistics are buffers and are not counted.
* **min_bytes** is the minimum memory traffic of one forward pass, for a roofline: read the input
  once, write the output once, read every parameter once, at ``dtype_bytes`` bytes per element
  (4 for float32, 2 for bf16/fp16). Real implementations move more (intermediates such as an N×N
  attention map); the ratio ``flops / min_bytes`` (:attr:`Cost.intensity`) is the best arithmetic
  intensity the mechanism could reach.

Token mechanisms (EMSA, multi-head EA, MHSA) work on N = H·W tokens of width C.

Every function refuses what the module it models refuses (a hidden width of 0, a kernel or group
count that does not fit, a string for a flag), with the same ``attn_tutorial._validate`` rules, and
sizes that are not integers (B may be 0, C, H, W and ``dtype_bytes`` must be >= 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ._validate import (require_all, require_bool, require_divisible, require_int, require_odd,
                        require_positive_width)
from .rest import overlapping_grid

__all__ = ["Cost", "se", "eca", "bam", "pam", "cam", "scconv", "psa", "emsa",
           "external_attention", "external_attention_mh", "mhsa", "conv_out_size"]


@dataclass(frozen=True)
class Cost:
    """Parameters, forward FLOPs (FlopCounterMode convention) and minimum bytes moved."""

    params: int
    flops: int
    min_bytes: int

    @property
    def intensity(self) -> float:
        """FLOPs per byte of the minimum traffic (roofline x-axis)."""
        if self.min_bytes <= 0:
            raise ValueError(f"min_bytes={self.min_bytes}: the intensity flops / min_bytes needs "
                             "a positive number of bytes")
        return self.flops / self.min_bytes


def _sizes(B: int, C: int, H: int, W: int, dtype_bytes: int) -> None:
    """B >= 0 (an empty batch costs its parameters), C, H, W and dtype_bytes >= 1."""
    require_int("B", B, minimum=0)
    for name, value in (("C", C), ("H", H), ("W", W), ("dtype_bytes", dtype_bytes)):
        require_int(name, value)


def _cost(params: int, flops: int, in_elems: int, out_elems: int, dtype_bytes: int) -> Cost:
    return Cost(params=params, flops=flops,
                min_bytes=dtype_bytes * (in_elems + out_elems + params))


def conv_out_size(size: int, kernel: int, stride: int = 1, padding: int = 0,
                  dilation: int = 1) -> int:
    """Output length of a convolution: ⌊(size + 2·padding − dilation·(kernel − 1) − 1)/stride⌋ + 1.

    Refuses a kernel (dilated) larger than the padded input, where a convolution has no output.
    """
    for name, value, minimum in (("size", size, 1), ("kernel", kernel, 1), ("stride", stride, 1),
                                 ("padding", padding, 0), ("dilation", dilation, 1)):
        require_int(name, value, minimum)
    span = dilation * (kernel - 1) + 1
    if span > size + 2 * padding:
        raise ValueError(f"kernel={kernel} (dilation {dilation}: span {span}) is larger than the "
                         f"padded input size={size} + 2·padding={2 * padding}")
    return (size + 2 * padding - span) // stride + 1


def se(B: int, C: int, H: int, W: int, reduction: int = 16, dtype_bytes: int = 4) -> Cost:
    """Squeeze-and-excitation: GAP, Linear(C→C/r, bias), ReLU, Linear(C/r→C, bias), gate.

    params = 2·C·(C/r) + C/r + C;  FLOPs = 2·B·C·(C/r) · 2 (the two Linear layers).
    ``min_bytes`` counts the map read once and written once, the least any implementation
    moves; the eager module reads it twice (the pool, then the product with the gate), which
    ``attn_tutorial.bench.measure.map_passes`` counts. The same holds for :func:`eca`.
    """
    _sizes(B, C, H, W, dtype_bytes)
    hidden = require_positive_width("channels", C, reduction, "reduction")
    params = 2 * C * hidden + hidden + C
    flops = 2 * B * C * hidden * 2
    return _cost(params, flops, B * C * H * W, B * C * H * W, dtype_bytes)


def eca(B: int, C: int, H: int, W: int, k: int = 3, dtype_bytes: int = 4) -> Cost:
    """ECA: GAP, a k-tap Conv1d across the C channels (no bias), sigmoid gate.

    params = k;  FLOPs = 2·B·C·k (one output per channel, k taps each).
    """
    _sizes(B, C, H, W, dtype_bytes)
    require_odd("k", k, "ECA's conv is centred on each channel only for odd k")
    return _cost(k, 2 * B * C * k, B * C * H * W, B * C * H * W, dtype_bytes)


def bam(B: int, C: int, H: int, W: int, reduction_ratio: int = 16, num_dilated_convs: int = 2,
        dtype_bytes: int = 4) -> Cost:
    """BAM with Cr = C // r.

    Channel gate: Linear(C→Cr, bias), BN1d(Cr), Linear(Cr→C, bias): FLOPs 2·B·C·Cr · 2.
    Spatial gate on the full H×W map (dilated convs keep the size): 1×1 conv C→Cr (bias) + BN,
    n × [3×3 conv Cr→Cr (bias) + BN], 1×1 conv Cr→1 (bias):
    FLOPs 2·B·H·W·(C·Cr + n·9·Cr² + Cr).
    """
    _sizes(B, C, H, W, dtype_bytes)
    cr = require_positive_width("channels", C, reduction_ratio, "reduction_ratio")
    n = require_int("num_dilated_convs", num_dilated_convs, minimum=0)
    params_channel = (C * cr + cr) + 2 * cr + (cr * C + C)
    params_spatial = (C * cr + cr) + 2 * cr + n * (9 * cr * cr + cr + 2 * cr) + (cr + 1)
    flops = 2 * B * C * cr * 2 + 2 * B * H * W * (C * cr + n * 9 * cr * cr + cr)
    return _cost(params_channel + params_spatial, flops, B * C * H * W, B * C * H * W,
                 dtype_bytes)


def pam(B: int, C: int, H: int, W: int, dtype_bytes: int = 4) -> Cost:
    """DANet position attention, N = H·W, C' = C // 8, attention materialised (N×N).

    q, k: 1×1 convs C→C' (bias); v: 1×1 conv C→C (bias); gamma.
    FLOPs = 2·B·N·(2·C·C' + C²)  (projections) + 2·B·N²·C' (energy) + 2·B·N²·C (A·V).
    """
    _sizes(B, C, H, W, dtype_bytes)
    n, cq = H * W, require_positive_width("channels", C, 8, "the PAM query/key reduction")
    params = 2 * (C * cq + cq) + (C * C + C) + 1
    flops = 2 * B * n * (2 * C * cq + C * C) + 2 * B * n * n * cq + 2 * B * n * n * C
    return _cost(params, flops, B * C * H * W, B * C * H * W, dtype_bytes)


def cam(B: int, C: int, H: int, W: int, dtype_bytes: int = 4) -> Cost:
    """DANet channel attention: only ``gamma``. Energy f·fᵀ (C×C over N = H·W) and A·f.

    FLOPs = 2·B·C²·N · 2.
    """
    _sizes(B, C, H, W, dtype_bytes)
    n = H * W
    return _cost(1, 2 * B * C * C * n * 2, B * C * H * W, B * C * H * W, dtype_bytes)


def scconv(B: int, C: int, H: int, W: int, stride: int = 1, dilation: int = 1, groups: int = 1,
           pooling_r: int = 4, dtype_bytes: int = 4) -> Cost:
    """SCConv: three 3×3 convs C→C (no bias, groups g, padding = dilation) with BN.

    K2 runs on the pooled ⌊H/r⌋×⌊W/r⌋ map, K3 on H×W, K4 (the strided one) produces
    H'×W' = conv_out_size(H, 3, stride, dilation, dilation) × (same for W).
    A 3×3 conv costs 2·B·C·(C/g)·9 per output position.
    params = 3·(C·(C/g)·9 + 2·C) (three convs and three BNs).
    """
    _sizes(B, C, H, W, dtype_bytes)
    require_int("stride", stride)
    require_int("dilation", dilation)
    require_int("pooling_r", pooling_r)
    require_divisible("C", C, "groups", groups)
    if min(H, W) < pooling_r:
        raise ValueError(f"H×W = {H}×{W} is smaller than pooling_r = {pooling_r}: SCConv's "
                         f"pooled branch needs H and W >= {pooling_r}")
    per_position = 2 * B * C * (C // groups) * 9
    hp, wp = H // pooling_r, W // pooling_r
    ho = conv_out_size(H, 3, stride, dilation, dilation)
    wo = conv_out_size(W, 3, stride, dilation, dilation)
    params = 3 * (C * (C // groups) * 9 + 2 * C)
    flops = per_position * (hp * wp + H * W + ho * wo)
    return _cost(params, flops, B * C * H * W, B * C * ho * wo, dtype_bytes)


def psa(B: int, C: int, H: int, W: int, planes: int | None = None,
        conv_kernels: Sequence[int] = (3, 5, 7, 9), conv_groups: Sequence[int] = (1, 4, 8, 16),
        stride: int = 1, se_reduction: int = 16, dtype_bytes: int = 4) -> Cost:
    """EPSANet PSA with S = len(conv_kernels) scales, Ps = planes / S (planes defaults to C).

    Branch s: conv k_s×k_s, C→Ps, groups g_s, padding k_s // 2, no bias:
    params Ps·(C/g_s)·k_s², FLOPs 2·B·Ps·(C/g_s)·k_s²·H'·W'.
    One shared SE (Ps → Ps/16 → Ps, 1×1 convs with bias) applied to each of the S branches:
    FLOPs 2·B·S·Ps·(Ps/16) · 2. Output B×planes×H'×W'.
    """
    _sizes(B, C, H, W, dtype_bytes)
    planes = C if planes is None else require_int("planes", planes)
    require_int("stride", stride)
    conv_kernels = require_all("conv_kernels", conv_kernels)
    conv_groups = require_all("conv_groups", conv_groups)
    if len(conv_kernels) != len(conv_groups) or not conv_kernels:
        raise ValueError(f"conv_kernels={conv_kernels} and conv_groups={conv_groups} must be "
                         "non-empty and of the same length (one group count per kernel)")
    s = len(conv_kernels)
    require_divisible("planes", planes, "the number of kernels len(conv_kernels)", s)
    ps = planes // s
    for g in conv_groups:
        require_divisible("C", C, "a conv_groups entry", g)
        require_divisible("planes // len(conv_kernels)", ps, "a conv_groups entry", g)
    hidden = require_positive_width("planes // len(conv_kernels)", ps, se_reduction,
                                    "se_reduction")
    params, flops = 0, 0
    ho = wo = 0
    for k, g in zip(conv_kernels, conv_groups):
        ho, wo = conv_out_size(H, k, stride, k // 2), conv_out_size(W, k, stride, k // 2)
        params += ps * (C // g) * k * k
        flops += 2 * B * ps * (C // g) * k * k * ho * wo
    params += (ps * hidden + hidden) + (hidden * ps + ps)
    flops += 2 * B * s * ps * hidden * 2
    return _cost(params, flops, B * C * H * W, B * planes * ho * wo, dtype_bytes)


def emsa(B: int, C: int, H: int, W: int, num_heads: int = 8, qkv_bias: bool = False,
         sr_ratio: int = 1, apply_transform: bool = False, dtype_bytes: int = 4) -> Cost:
    """ResT EMSA on N = H·W tokens of width C, h heads, M keys.

    q: Linear(C→C); kv: Linear(C→2C) on M tokens; proj: Linear(C→C, bias).
    sr > 1: depthwise conv kernel sr+1, stride sr, padding sr//2 (bias) + LayerNorm(C), so
    M = H''·W'', the grid of ``rest.overlapping_grid`` (what ``EMSA.key_grid`` returns);
    otherwise M = N.
    Attention: q·kᵀ and A·v, 2·B·N·M·C each; transform (h > 1): 1×1 conv h→h over the N×M map,
    2·B·h²·N·M.
    """
    _sizes(B, C, H, W, dtype_bytes)
    require_divisible("dim", C, "num_heads", num_heads)
    require_int("sr_ratio", sr_ratio)
    require_bool("qkv_bias", qkv_bias)
    require_bool("apply_transform", apply_transform)
    n, h = H * W, num_heads
    bias = C if qkv_bias else 0
    params = (C * C + bias) + (2 * C * C + 2 * bias) + (C * C + C)
    flops = 2 * B * n * C * C * 2  # q and proj
    if sr_ratio > 1:
        hr, wr = overlapping_grid(H, W, sr_ratio)
        m = hr * wr
        params += C * (sr_ratio + 1) ** 2 + C + 2 * C
        flops += 2 * B * C * (sr_ratio + 1) ** 2 * m
    else:
        m = n
    flops += 2 * B * m * C * 2 * C  # kv
    flops += 2 * B * n * m * C * 2  # logits and weights·values
    if apply_transform and h > 1:
        params += h * h + h
        flops += 2 * B * h * h * n * m
    return _cost(params, flops, B * n * C, B * n * C, dtype_bytes)


def external_attention(B: int, C: int, H: int, W: int, memory_size: int = 64,
                       tie_memories: bool = True, dtype_bytes: int = 4) -> Cost:
    """EANet block, N = H·W, S = memory size.

    1×1 conv C→C (bias); M_k (S×C) and M_v (C×S, = M_kᵀ when tied: one S·C parameter);
    1×1 conv C→C (no bias) + BN. FLOPs = 2·B·N·C² · 2 (convs) + 2·B·N·C·S · 2 (memories).
    """
    _sizes(B, C, H, W, dtype_bytes)
    require_int("memory_size", memory_size)
    require_bool("tie_memories", tie_memories)
    n, s = H * W, memory_size
    params = (C * C + C) + s * C * (1 if tie_memories else 2) + C * C + 2 * C
    flops = 2 * B * n * C * C * 2 + 2 * B * n * C * s * 2
    return _cost(params, flops, B * C * H * W, B * C * H * W, dtype_bytes)


def external_attention_mh(B: int, C: int, H: int, W: int, num_heads: int = 8,
                          memory_size: int = 64, expansion: int = 4,
                          dtype_bytes: int = 4) -> Cost:
    """EAMLP multi-head external attention on N = H·W tokens of width C.

    expand: Linear(C→eC) (e = 4); e·h heads of width d = C/h; M_k: Linear(d→S, bias) and
    M_v: Linear(S→d, bias), shared by the heads; proj: Linear(eC→C, bias).
    FLOPs = 2·B·N·C·eC · 2 (expand, proj) + 2·B·N·eC·S · 2 (the memories, over all heads).
    """
    _sizes(B, C, H, W, dtype_bytes)
    require_divisible("dim", C, "num_heads", num_heads)
    require_int("memory_size", memory_size)
    require_int("expansion", expansion)
    n, e, s = H * W, expansion, memory_size
    d = C // num_heads
    params = (C * e * C + e * C) + (d * s + s) + (s * d + d) + (e * C * C + C)
    flops = 2 * B * n * C * e * C * 2 + 2 * B * n * e * C * s * 2
    return _cost(params, flops, B * n * C, B * n * C, dtype_bytes)


def mhsa(B: int, C: int, H: int, W: int, num_heads: int = 8, qkv_bias: bool = True,
         dtype_bytes: int = 4) -> Cost:
    """Plain multi-head self-attention on N = H·W tokens of width C.

    The same FLOPs whether the N×N map is materialised or fused (SDPA). Note: on the CPU,
    FlopCounterMode does not see the fused flash-attention kernel, so ``count_flops`` of the
    ``use_sdpa=True`` path reports only the projections there; the formula is the full count.

    q, k, v: Linear(C→C); proj: Linear(C→C, bias). FLOPs = 2·B·N·C² · 4 + 2·B·N²·C · 2.
    The head count changes neither parameters nor FLOPs.
    """
    _sizes(B, C, H, W, dtype_bytes)
    require_divisible("dim", C, "num_heads", num_heads)
    require_bool("qkv_bias", qkv_bias)
    n = H * W
    params = 3 * (C * C + (C if qkv_bias else 0)) + C * C + C
    flops = 2 * B * n * C * C * 4 + 2 * B * n * n * C * 2
    return _cost(params, flops, B * n * C, B * n * C, dtype_bytes)
