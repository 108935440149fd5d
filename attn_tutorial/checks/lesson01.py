"""Checkers for lesson 01 (ECA): exercises in ``solutions/01_eca.ipynb``.

1. ``check_kernel_size`` (predict): the paper's adaptive kernel size ψ(C), over 22 (C, γ, b)
   and 6 hidden ones.
2. ``check_eca_gate``: the ECA channel gate, B×C×H×W map and k taps -> B×C.
3. ``check_eca_matrix``: the banded C×C matrix that the 1-D conv over channels multiplies by.
4. ``check_eca_module``: the paper's ECA as a module on channels-last tokens B×N×C
   (``__init__`` picks k = ψ(C), ``forward`` gates the tokens), a module exercise.
5. ``check_eca_ns_gate`` (extend): ECA-NS, the paper's ablation without weight sharing: a C×k
   kernel, one row of k taps per channel -> the B×C gate.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. The cases are chosen so that every mistake fails on at least one of them
(``tests/test_checks.py`` proves it), and the per-case comments say which case catches which slip.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, reduce, repeat

import torch.nn as nn

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, hidden_cases, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "01_eca"  # exercises/01_eca.ipynb holds these exercises, in this order
__all__ = ["check_kernel_size", "check_eca_gate", "check_eca_matrix", "check_eca_module",
           "check_eca_ns_gate"]


# ------------------------------------------------------------------------ 1. ψ(C)
def ref_kernel_size(channels: int, gamma: float = 2, b: float = 1, *, to_int=int,
                    log=math.log2, odd: str = "up", use_arguments: bool = True,
                    swap_gamma_b: bool = False, drop: str = "") -> int:
    """ψ(C): t = int(|(log2 C + b) / γ|), then the odd number t or t + 1.

    Knobs (the right answer by default): ``to_int`` (round, math.ceil), ``log`` (math.log,
    math.log10), ``odd`` ("up", "down", "none"), ``use_arguments`` (False: γ = 2, b = 1
    hard-coded), ``swap_gamma_b``, ``drop`` ("b" or "gamma" forgotten). It equals the paper's
    |t|_odd read as the odd number nearest to t, the larger one when t is an even integer
    (t in [2m, 2m + 2) gives 2m + 1; the tests prove it against 2·floor(t/2) + 1).
    """
    if not use_arguments:
        gamma, b = 2, 1
    if swap_gamma_b:
        gamma, b = b, gamma
    if drop == "b":
        b = 0
    if drop == "gamma":
        gamma = 1
    if drop == "b division":  # log2(C) / γ + b: b not divided by γ
        t = to_int(abs(log(channels) / gamma + b))
    else:
        t = to_int(abs((log(channels) + b) / gamma))
    if odd == "float":  # the parity of the float t tested, int() only at the end
        t = abs((log(channels) + b) / gamma)
        return int(t if t % 2 else t + 1)
    if odd == "none" or t % 2 == 1:
        return t
    return t + 1 if odd == "up" else t - 1


def _integer_log2(channels: int) -> int:
    """⌊log2 C⌋ (``C.bit_length() - 1``): a learner's exact integer log, one bit too coarse."""
    return channels.bit_length() - 1


def _half_up(v: float) -> int:
    """Rounding half up, ⌊v + ½⌋: a learner's round() that differs from Python's at even .5."""
    return math.floor(v + 0.5)


def _psi_case(channels: int, gamma: float | None = None, b: float | None = None) -> Case:
    if gamma is None:
        return Case(f"C = {channels}", lambda g, c=channels: (c,))
    return Case(f"C = {channels}, gamma = {gamma}, b = {b}",
                lambda g, c=channels, gm=gamma, bb=b: (c, gm, bb))


check_kernel_size = register(
    Checker(
        "kernel_size",
        exercise="kernel_size",
        tier="predict",
        reference=ref_kernel_size,
        cases=[
            _psi_case(24),    # t = 2.79 -> 2, even: the odd rounding; log10 and "forgot γ" fail
            _psi_case(40),    # t = 3.16: ceil gives 4 -> 5, round gives 3
            _psi_case(64),    # t = 3.5: round and ceil give 5, int gives 3
            _psi_case(150),   # t = 4.11: natural log gives 3, forgetting b gives 3
            _psi_case(1024),  # t = 5.5: round/ceil give 7, natural log 3
            _psi_case(2048),  # t = 6.0 exactly: even, goes up to 7
            _psi_case(512, 3, 2),  # γ and b are used: hard-coding 2 and 1 gives 5, not 3
            # boundaries: the smallest C (t = 0, even: k = 1), C = 3 (t = 1)
            _psi_case(1),
            _psi_case(3),
            _psi_case(16, 1.5, 0.5),  # t = 3.0 exactly with non-integer γ and b: 3 is odd
            _psi_case(64, 3, 3),  # t = 3: b not divided by γ gives 5, round() still 3
            _psi_case(2),     # t = 1.0 exactly: odd, k = 1
            _psi_case(8),     # t = 2.0: even, up to 3
            _psi_case(96),    # t = 3.79: MobileNetV2's threshold width, int gives 3
            _psi_case(128),   # t = 4.0: even, up to 5 (the lesson's check by hand)
            _psi_case(255),   # t = 4.497 -> 4 -> 5, one channel below 256 (t = 4.5)
            _psi_case(4096),  # t = 6.5: round gives 6 -> 7 as well, ceil 7
            _psi_case(1 << 15),  # t = 8.0: k = 9, the widest in any released network times two
            _psi_case(6, 1, 0.25),  # γ = 1, b = 0.25: t = 2.83 -> 2 -> 3; swapped γ, b: 14 -> 15
            _psi_case(1000, 2.5, 0.5),  # t = 4.19 -> 4 -> 5 with non-integer γ and b
            # the integer log2 ⌊log2 C⌋ fails here (and above at C = 1000): with γ = 2, b = 1 it
            # never changes int(t), with other γ and b it does
            _psi_case(48, 1.5, 0.5),  # t = 4.06 -> 5; ⌊log2 48⌋ = 5 gives t = 3.67 -> 3
            _psi_case(200, 1, 0.5),   # t = 8.14 -> 9; ⌊log2 200⌋ = 7 gives 7
            # hidden: C over the whole range, defaults and other γ, b
            *hidden_cases("hidden case", lambda rng: (rng.randint(1, 4096),), count=2, seed=101),
            *hidden_cases("hidden case with γ, b", lambda rng: (
                rng.randint(2, 4096), rng.choice((1, 1.5, 2.5, 3)), rng.choice((0.5, 1.5, 2))),
                count=4, seed=102),
        ],
        mistakes=[
            Mistake("even kernel size: the rounding to an odd number is missing",
                    partial(ref_kernel_size, odd="none")),
            Mistake("the parity of the float t tested (t % 2 on 4.5 is truthy), int() only at "
                    "the end: an even kernel size", partial(ref_kernel_size, odd="float")),
            Mistake("integer log2 (C.bit_length() - 1, ⌊log2 C⌋) instead of the real log2 C",
                    partial(ref_kernel_size, log=_integer_log2)),
            Mistake("rounded down to the odd number below (t - 1) instead of up (t + 1)",
                    partial(ref_kernel_size, odd="down")),
            Mistake("t rounded to the nearest integer (round(), or half up) instead of "
                    "truncated with int()", partial(ref_kernel_size, to_int=round),
                    variants=(partial(ref_kernel_size, to_int=_half_up),)),
            Mistake("math.ceil() instead of int(): t must be truncated, not rounded up",
                    partial(ref_kernel_size, to_int=math.ceil)),
            Mistake("natural log instead of log2", partial(ref_kernel_size, log=math.log)),
            Mistake("log10 instead of log2", partial(ref_kernel_size, log=math.log10)),
            Mistake("gamma and b swapped: (log2 C + gamma) / b",
                    partial(ref_kernel_size, swap_gamma_b=True)),
            Mistake("forgot b: log2(C) / gamma", partial(ref_kernel_size, drop="b")),
            Mistake("forgot to divide by gamma: log2(C) + b", partial(ref_kernel_size, drop="gamma")),
            Mistake("b not divided by gamma: log2(C) / gamma + b instead of (log2(C) + b) / gamma",
                    partial(ref_kernel_size, drop="b division")),
            Mistake("gamma = 2 and b = 1 hard-coded: the arguments are ignored",
                    partial(ref_kernel_size, use_arguments=False)),
        ],
    )
)


# ------------------------------------------------------------------- 2. the ECA gate
def _squash(z: torch.Tensor, how: str) -> torch.Tensor:
    if how == "sigmoid":
        return torch.sigmoid(z)
    if how == "softmax":
        return z.softmax(dim=-1)
    return z


def ref_eca_gate(x: torch.Tensor, weight: torch.Tensor, *, pool: str = "mean",
                 over: str = "channels", padding: str = "both", flip: bool = False,
                 squash: str = "sigmoid") -> torch.Tensor:
    """sigmoid(conv1d over the channel axis of GAP(x)), zero padding (k-1)//2 at both ends.

    Knobs: ``pool`` ("max", "sum"), ``over`` ("space": the conv runs over pixels), ``padding``
    ("left", "right": all k-1 zeros on one side; "circular"), ``flip`` (a true convolution),
    ``squash`` ("none", "softmax" over channels).
    """
    k = weight.shape[0]
    if flip:
        weight = torch.flip(weight, dims=[0])
    taps = rearrange(weight, "k -> 1 1 k")
    if over == "space":
        pixels = rearrange(x, "b c h w -> (b c) 1 (h w)")
        z = F.conv1d(pixels, taps, padding=(k - 1) // 2)
        return _squash(reduce(z, "(b c) 1 n -> b c", pool, b=x.shape[0]), squash)
    y = reduce(x, "b c h w -> b 1 c", pool)
    half = (k - 1) // 2
    if padding == "both":
        y = F.pad(y, (half, half))
    elif padding == "left":
        y = F.pad(y, (k - 1, 0))
    elif padding == "right":
        y = F.pad(y, (0, k - 1))
    elif padding == "circular":
        y = F.pad(y, (half, half), mode="circular")
    z = F.conv1d(y, taps)
    return _squash(rearrange(z, "b 1 c -> b c"), squash)


def _gate_case(shape: tuple[int, int, int, int], k: int, seed: int) -> Case:
    def make(g: torch.Generator, shape=shape, k=k):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        w = torch.randn(k, generator=g, dtype=torch.float64)
        return x, w

    return Case("x " + "×".join(map(str, shape)) + f", k = {k}", make, seed=seed)


def _gates_sum_to_one(out, x, weight) -> bool:
    """B×C gates that sum to 1 over the channels: they compete, as after a softmax."""
    return tuple(out.shape) == tuple(x.shape[:2]) and x.shape[1] > 1 and \
        bool(torch.allclose(out.sum(dim=1), torch.ones((), dtype=out.dtype)))


check_eca_gate = register(
    Checker(
        "eca_gate",
        exercise="eca_gate",
        tier="build",
        reference=ref_eca_gate,
        cases=[
            _gate_case((2, 16, 7, 9), 3, 0),
            _gate_case((1, 31, 5, 11), 5, 1),
            _gate_case((3, 24, 9, 7), 3, 2),
            # boundaries: k = 1 (no neighbours), a single channel, k longer than C
            _gate_case((2, 6, 4, 5), 1, 3),
            _gate_case((2, 1, 3, 4), 3, 4),
            _gate_case((1, 3, 4, 4), 5, 5),
        ],
        mistakes=[
            Mistake("1-D conv over spatial positions instead of channels",
                    partial(ref_eca_gate, over="space")),
            Mistake("max instead of mean pooling", partial(ref_eca_gate, pool="max")),
            Mistake("sum instead of mean pooling (forgot to divide by H·W)",
                    partial(ref_eca_gate, pool="sum")),
            Mistake("missing sigmoid", partial(ref_eca_gate, squash="none")),
            Mistake("softmax over the channels instead of a sigmoid per channel",
                    partial(ref_eca_gate, squash="softmax"), holds=_gates_sum_to_one),
            Mistake("padding that shifts the channel window (all k-1 zeros on the left)",
                    partial(ref_eca_gate, padding="left")),
            Mistake("padding that shifts the channel window (all k-1 zeros on the right)",
                    partial(ref_eca_gate, padding="right")),
            Mistake("wrap-around (circular) padding instead of zeros at both ends",
                    partial(ref_eca_gate, padding="circular")),
            Mistake("kernel flipped: a true convolution instead of conv1d's cross-correlation",
                    partial(ref_eca_gate, flip=True)),
        ],
    )
)


# ------------------------------------------------------------- 3. the banded matrix
def ref_eca_matrix(weight: torch.Tensor, channels: int, *, padding: str = "both",
                   transpose: bool = False, circular: bool = False,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """M (C×C) with M[c, j] = weight[j - c + (k-1)//2] inside the band, 0 outside.

    Knobs: ``padding`` ("left": all k-1 zeros on the left, the band shifted off the diagonal),
    ``transpose``, ``circular`` (indices wrap around modulo C), ``dtype`` (float32 instead of
    the weight's dtype).
    """
    k = weight.shape[0]
    c = rearrange(torch.arange(channels), "c -> c 1")
    j = rearrange(torch.arange(channels), "j -> 1 j")
    offset = j - c
    if circular:  # the entry for every j that lands on the tap after wrapping around
        m = torch.zeros(channels, channels, dtype=weight.dtype)
        for tap in range(k):
            m += torch.where((offset - (tap - (k - 1) // 2)) % channels == 0, weight[tap], 0.0)
    else:
        tap = offset + ((k - 1) // 2 if padding == "both" else k - 1)
        inside = (tap >= 0) & (tap < k)
        m = torch.where(inside, weight[tap.clamp(0, k - 1)], torch.zeros((), dtype=weight.dtype))
    if transpose:
        m = m.T
    return m if dtype is None else m.to(dtype)


def _matrix_case(k: int, channels: int, seed: int) -> Case:
    def make(g: torch.Generator, k=k, channels=channels):
        return torch.randn(k, generator=g, dtype=torch.float64), channels

    return Case(f"k = {k}, C = {channels}", make, seed=seed)


check_eca_matrix = register(
    Checker(
        "eca_matrix",
        exercise="eca_matrix",
        tier="build",
        reference=ref_eca_matrix,
        cases=[
            _matrix_case(3, 7, 0),
            _matrix_case(5, 11, 1),
            _matrix_case(5, 4, 2),  # the kernel is longer than C
            _matrix_case(7, 2, 3),  # offsets ±3 beyond the matrix: torch.diag(…, ±3) sums break
            _matrix_case(1, 5, 4),  # boundary: k = 1, the diagonal alone
            _matrix_case(3, 1, 5),  # boundary: a single channel
        ],
        mistakes=[
            Mistake("matrix transposed: the kernel runs backwards along the channels",
                    partial(ref_eca_matrix, transpose=True)),
            Mistake("band shifted off the diagonal (padding that shifts the channel window)",
                    partial(ref_eca_matrix, padding="left")),
            Mistake("wrap-around (circular) padding instead of zeros at both ends",
                    partial(ref_eca_matrix, circular=True)),
        ],
    )
)


# ------------------------------------------------------------------------ 4. the module
class ECAReference(nn.Module):
    """The paper's ECA on channels-last tokens B×N×C: ``conv`` a Conv1d(1, 1, k = ψ(C), padding
    (k - 1) // 2, no bias) over the channel axis of the tokens' mean, then ``t · σ(z)``, B×N×C.
    The parameter is named ``conv.weight`` as in the library's ``ECA`` and the official
    ``eca_layer``; on ``rearrange(x, "b c h w -> b (h w) c")`` it equals ``ECA`` on ``x``.

    Knobs: ``pool`` ("max", "sum"), ``over`` ("channels": the mean over each token's channels, the
    conv along the tokens, one gate per token), ``squash`` ("none": no sigmoid; "softmax": a
    softmax over the channels), ``residual`` (True: ``t + t · σ(z)``, BAM's form).
    """

    def __init__(self, channels: int, gamma: float = 2, b: float = 1, *, pool: str = "mean",
                 over: str = "tokens", squash: str = "sigmoid", residual: bool = False) -> None:
        super().__init__()
        k = ref_kernel_size(channels, gamma, b)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.pool, self.over, self.squash, self.residual = pool, over, squash, residual

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        if self.over == "channels":
            z = rearrange(self.conv(reduce(t, "b n c -> b 1 n", self.pool)), "b 1 n -> b n 1")
        else:
            z = self.conv(reduce(t, "b n c -> b 1 c", self.pool))      # B×1×C
        if self.squash == "sigmoid":
            gate = torch.sigmoid(z)
        elif self.squash == "softmax":
            gate = torch.softmax(z, dim=-1)
        else:
            gate = z
        return t + t * gate if self.residual else t * gate


def _module_case(shape: tuple[int, int, int], seed: int, **build) -> Case:
    k = ref_kernel_size(shape[2], build.get("gamma", 2), build.get("b", 1))
    knobs = "".join(f", {name} = {v}" for name, v in build.items())
    return Case("tokens " + "×".join(map(str, shape)) + f"{knobs} (k = {k})",
                lambda g: (torch.randn(*shape, generator=g, dtype=torch.float64) * 2,),
                seed=seed, build={"channels": shape[2], **build})


check_eca_module = register(
    ModuleChecker(
        "eca_module",
        exercise="MyECA",
        tier="build",
        reference=ECAReference,
        cases=[
            _module_case((2, 63, 16), 0),     # ψ(16) = 3, 63 tokens (a 7×9 map)
            _module_case((1, 30, 256), 1),    # ψ(256) = 5: a k fixed at 3 has the wrong shape
            _module_case((2, 12, 512), 2, gamma=3, b=2),  # γ, b passed on: k = 3, not ψ(512) = 5
            _module_case((2, 15, 4), 3),      # boundary: ψ(4) = 1, a single tap
            _module_case((3, 1, 8), 4),       # boundary: a single token
        ],
        mistakes=[
            Mistake("max pooling instead of the average over the tokens",
                    partial(ECAReference, pool="max")),
            Mistake("sum instead of the average over the tokens (forgot to divide by N)",
                    partial(ECAReference, pool="sum")),
            Mistake("pooled over the channels instead of the tokens: one gate per token, the "
                    "conv along the tokens", partial(ECAReference, over="channels")),
            Mistake("sigmoid missing: the gate is σ(conv(y)), not conv(y)",
                    partial(ECAReference, squash="none")),
            Mistake("softmax over the channels instead of a sigmoid per channel: ECA's gates "
                    "do not compete", partial(ECAReference, squash="softmax")),
            Mistake("gate added as a residual, t + t·σ(z) (BAM's form, lesson 02): ECA "
                    "multiplies, t·σ(z)", partial(ECAReference, residual=True)),
        ],
    )
)


# ------------------------------------------------------------------- 5. extend: ECA-NS
def ref_eca_ns_gate(x: torch.Tensor, weight: torch.Tensor, *, pool: str = "mean",
                    rows: str = "own", padding: str = "both", flip: bool = False,
                    squash: str = "sigmoid") -> torch.Tensor:
    """ECA-NS: z[b, c] = Σ_i weight[c, i] · y[b, c + i − (k−1)/2], zeros outside 0..C−1, where
    y is the spatial mean; the gate σ(z), B×C. weight: C×k, row c the taps of channel c.

    Knobs: ``rows`` ("first": row 0 shared by every channel, ECA; "mean": the rows' mean
    shared; "neighbour": the tap on channel j read from row j, the band transposed; "centre":
    only the middle tap, a grouped conv1d run on a length-1 signal), ``pool`` ("max"),
    ``padding`` ("left": all k−1 zeros on the left; "circular"), ``flip``, ``squash``
    ("none", "softmax").
    """
    channels, k = weight.shape
    half = (k - 1) // 2
    if flip:
        weight = torch.flip(weight, dims=[1])
    y = reduce(x, "b c h w -> b c", pool)
    if padding == "left":
        padded = F.pad(y, (k - 1, 0))
    elif padding == "circular":
        padded = rearrange(F.pad(rearrange(y, "b c -> b 1 c"), (half, half), mode="circular"),
                           "b 1 c -> b c")
    else:
        padded = F.pad(y, (half, half))
    windows = padded.unfold(1, k, 1)                                   # b c k: c's neighbours
    if rows == "first":
        weight = repeat(weight[0], "k -> c k", c=channels)
    elif rows == "mean":
        weight = repeat(weight.mean(dim=0), "k -> c k", c=channels)
    elif rows == "centre":
        weight = weight * (torch.arange(k) == half).to(weight.dtype)
    elif rows == "neighbour":  # channel j's row, tap k−1−i, weighs y[j] in z[c] (j = c + i − half)
        j = (torch.arange(channels)[:, None] + torch.arange(k)[None] - half).clamp(0, channels - 1)
        weight = weight[j, torch.arange(k - 1, -1, -1)[None]]
    z = einsum(windows, weight, "b c k, c k -> b c")
    return _squash(z, squash)


def _ns_case(shape: tuple[int, int, int, int], k: int, seed: int) -> Case:
    def make(g: torch.Generator, shape=shape, k=k):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        return x, torch.randn(shape[1], k, generator=g, dtype=torch.float64)

    return Case("x " + "×".join(map(str, shape)) + f", weight {shape[1]}×{k}", make, seed=seed)


check_eca_ns_gate = register(
    Checker(
        "eca_ns_gate",
        exercise="eca_ns_gate",
        tier="extend",
        reference=ref_eca_ns_gate,
        cases=[
            _ns_case((2, 6, 5, 7), 3, 0),
            _ns_case((1, 9, 4, 6), 5, 1),
            _ns_case((3, 8, 3, 5), 3, 2),
            # boundaries: k = 1 (SE-Var2: one weight per channel), a single channel, k > C
            _ns_case((2, 5, 3, 4), 1, 3),
            _ns_case((2, 1, 3, 3), 3, 4),
            _ns_case((1, 3, 4, 5), 5, 5),
        ],
        mistakes=[
            Mistake("one kernel shared by every channel (row 0): that is ECA, not ECA-NS",
                    partial(ref_eca_ns_gate, rows="first"),
                    variants=(partial(ref_eca_ns_gate, rows="mean"),)),
            Mistake("the tap on channel j read from row j instead of row c: the band "
                    "transposed", partial(ref_eca_ns_gate, rows="neighbour")),
            Mistake("only the centre tap: a grouped conv1d over a signal of length 1 "
                    "(SE-Var2, no neighbours)", partial(ref_eca_ns_gate, rows="centre")),
            Mistake("kernel rows flipped: a true convolution instead of cross-correlation",
                    partial(ref_eca_ns_gate, flip=True)),
            Mistake("max instead of mean pooling", partial(ref_eca_ns_gate, pool="max")),
            Mistake("missing sigmoid", partial(ref_eca_ns_gate, squash="none")),
            Mistake("softmax over the channels instead of a sigmoid per channel",
                    partial(ref_eca_ns_gate, squash="softmax"), holds=_gates_sum_to_one),
            Mistake("padding that shifts the channel window (all k-1 zeros on the left)",
                    partial(ref_eca_ns_gate, padding="left")),
            Mistake("wrap-around (circular) padding instead of zeros at both ends",
                    partial(ref_eca_ns_gate, padding="circular")),
        ],
    )
)
