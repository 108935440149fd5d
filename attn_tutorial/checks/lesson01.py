"""Checkers for lesson 01 (ECA): exercises in ``solutions/01_eca.ipynb``.

1. ``check_kernel_size``: the paper's adaptive kernel size ψ(C).
2. ``check_eca_gate``: the ECA channel gate, B×C×H×W map and k taps -> B×C.
3. ``check_eca_matrix``: the banded C×C matrix that the 1-D conv over channels multiplies by.

Every checker runs the learner's function and the reference on float64 inputs with odd,
non-square and batch-1 sizes, and names the catalogued mistakes below when the learner's output
reproduces one of them. Each mistake is a real wrong implementation; the tests prove that each
differs from the reference (and from the others) on every case.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, reduce

from attn_tutorial.checks import register
from attn_tutorial.checks._core import Case, Checker, Mistake
from attn_tutorial.eca import banded_matrix, eca_kernel_size

__all__ = ["check_kernel_size", "check_eca_gate", "check_eca_matrix"]


# ------------------------------------------------------------------------ 1. ψ(C)
def ref_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """ψ(C): t = int(|(log2 C + b) / γ|), then the odd number t or t + 1."""
    return eca_kernel_size(channels, gamma, b)


def _psi_even(channels, gamma=2, b=1):
    return int(abs((math.log2(channels) + b) / gamma))


def _psi_round_down(channels, gamma=2, b=1):
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t - 1


def _psi_gamma_b_swapped(channels, gamma=2, b=1):
    t = int(abs((math.log2(channels) + gamma) / b))
    return t if t % 2 else t + 1


def _channels_case(c: int, seed: int) -> Case:
    return Case(f"C = {c}", lambda g, c=c: (c,), seed=seed)


check_kernel_size = register(
    Checker(
        "kernel_size",
        reference=ref_kernel_size,
        # every case has an even t, so forgetting the odd rounding shows on each one
        cases=[_channels_case(c, i) for i, c in enumerate((24, 150, 256, 2048))],
        mistakes=[
            Mistake("even kernel size: the rounding to an odd number is missing", _psi_even),
            Mistake("rounded down to the odd number below (t - 1) instead of up (t + 1)",
                    _psi_round_down),
            Mistake("gamma and b swapped: (log2 C + gamma) / b", _psi_gamma_b_swapped),
        ],
    ),
    "check_kernel_size",
)


# ------------------------------------------------------------------- 2. the ECA gate
def ref_eca_gate(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """sigmoid(conv1d over the channel axis of GAP(x)), zero padding (k-1)//2 at both ends."""
    k = weight.shape[0]
    y = reduce(x, "b c h w -> b 1 c", "mean")
    z = F.conv1d(y, rearrange(weight, "k -> 1 1 k"), padding=(k - 1) // 2)
    return torch.sigmoid(rearrange(z, "b 1 c -> b c"))


def _gate_conv_over_space(x, weight):
    k = weight.shape[0]
    b = x.shape[0]
    pixels = rearrange(x, "b c h w -> (b c) 1 (h w)")
    z = F.conv1d(pixels, rearrange(weight, "k -> 1 1 k"), padding=(k - 1) // 2)
    return torch.sigmoid(reduce(z, "(b c) 1 n -> b c", "mean", b=b))


def _gate_max_pool(x, weight):
    k = weight.shape[0]
    y = reduce(x, "b c h w -> b 1 c", "max")
    z = F.conv1d(y, rearrange(weight, "k -> 1 1 k"), padding=(k - 1) // 2)
    return torch.sigmoid(rearrange(z, "b 1 c -> b c"))


def _gate_no_sigmoid(x, weight):
    k = weight.shape[0]
    y = reduce(x, "b c h w -> b 1 c", "mean")
    z = F.conv1d(y, rearrange(weight, "k -> 1 1 k"), padding=(k - 1) // 2)
    return rearrange(z, "b 1 c -> b c")


def _gate_left_padding(x, weight):
    k = weight.shape[0]
    y = F.pad(reduce(x, "b c h w -> b 1 c", "mean"), (k - 1, 0))
    z = F.conv1d(y, rearrange(weight, "k -> 1 1 k"))
    return torch.sigmoid(rearrange(z, "b 1 c -> b c"))


def _gate_flipped_kernel(x, weight):
    return ref_eca_gate(x, torch.flip(weight, dims=[0]))


def _gate_case(shape: tuple[int, int, int, int], k: int, seed: int) -> Case:
    def make(g: torch.Generator, shape=shape, k=k):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        w = torch.randn(k, generator=g, dtype=torch.float64)
        return x, w

    return Case("x " + "×".join(map(str, shape)) + f", k = {k}", make, seed=seed)


check_eca_gate = register(
    Checker(
        "eca_gate",
        reference=ref_eca_gate,
        cases=[
            _gate_case((2, 16, 7, 9), 3, 0),
            _gate_case((1, 31, 5, 11), 5, 1),
            _gate_case((3, 24, 9, 7), 3, 2),
        ],
        mistakes=[
            Mistake("1-D conv over spatial positions instead of channels", _gate_conv_over_space),
            Mistake("max instead of mean pooling", _gate_max_pool),
            Mistake("missing sigmoid", _gate_no_sigmoid),
            Mistake("padding that shifts the channel window (all k-1 zeros on one side)",
                    _gate_left_padding),
            Mistake("kernel flipped: a true convolution instead of conv1d's cross-correlation",
                    _gate_flipped_kernel),
        ],
    ),
    "check_eca_gate",
)


# ------------------------------------------------------------- 3. the banded matrix
def ref_eca_matrix(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """M (C×C) with M[c, j] = weight[j - c + (k-1)//2] inside the band, 0 outside."""
    return banded_matrix(weight, channels)


def _matrix_transposed(weight, channels):
    return banded_matrix(weight, channels).T


def _matrix_shifted(weight, channels):
    k = weight.shape[0]
    c = rearrange(torch.arange(channels), "c -> c 1")
    j = rearrange(torch.arange(channels), "j -> 1 j")
    tap = j - c + (k - 1)  # as if all k-1 zeros were padded on the left
    inside = (tap >= 0) & (tap < k)
    return torch.where(inside, weight[tap.clamp(0, k - 1)], torch.zeros((), dtype=weight.dtype))


def _matrix_circular(weight, channels):
    k = weight.shape[0]
    pad = (k - 1) // 2
    basis = rearrange(torch.eye(channels, dtype=weight.dtype), "j c -> j 1 c")
    wrapped = F.pad(basis, (pad, pad), mode="circular")
    columns = F.conv1d(wrapped, rearrange(weight, "k -> 1 1 k"))  # response to each unit e_j
    return rearrange(columns, "j 1 c -> c j")


def _matrix_case(k: int, channels: int, seed: int) -> Case:
    def make(g: torch.Generator, k=k, channels=channels):
        return torch.randn(k, generator=g, dtype=torch.float64), channels

    return Case(f"k = {k}, C = {channels}", make, seed=seed)


check_eca_matrix = register(
    Checker(
        "eca_matrix",
        reference=ref_eca_matrix,
        cases=[_matrix_case(3, 7, 0), _matrix_case(5, 11, 1), _matrix_case(5, 4, 2)],
        mistakes=[
            Mistake("matrix transposed: the kernel runs backwards along the channels",
                    _matrix_transposed),
            Mistake("band shifted off the diagonal (padding that shifts the channel window)",
                    _matrix_shifted),
            Mistake("wrap-around (circular) padding instead of zeros at both ends",
                    _matrix_circular),
        ],
    ),
    "check_eca_matrix",
)
