"""Checkers for lesson 06 (ResT): exercises in ``solutions/06_rest.ipynb``.

1. ``check_overlapping_grid``: the grid of ResT's overlapping convs (kernel s+1, stride s,
   padding s//2): EMSA's reduced key grid and the patch embedding's output grid.
2. ``check_emsa_weights``: EMSA's attention weights from projected queries and keys, with the
   head mixing (1×1 conv over heads), the softmax over keys and the InstanceNorm.
3. ``check_emsa_module`` (a module exercise): EMSA on a feature map, with the official parameter
   names ``q``, ``kv``, ``proj``, ``sr``, ``sr_norm``, ``transform_conv``.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. The comments on the cases say which case catches which slip
(``tests/test_checks.py`` proves that every mistake fails somewhere and that any two differ).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from einops import einsum, rearrange

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "06_rest"  # exercises/06_rest.ipynb holds these exercises, in this order
__all__ = ["check_overlapping_grid", "check_emsa_weights", "check_emsa_module"]


# ------------------------------------------------------------ 1. the overlapping grid
def ref_overlapping_grid(H: int, W: int, stride: int, *, kernel_extra: int = 1,
                         padding: str = "half", form: str = "conv",
                         swap: bool = False) -> tuple[int, int]:
    """(H', W') of a conv with kernel s+1, stride s, padding s//2:
    H' = ⌊(H + 2⌊s/2⌋ − (s+1))/s⌋ + 1.

    Knobs: ``kernel_extra`` (0: kernel s), ``padding`` ("zero"), ``form`` ("floor": H // s as
    the authors' PatchEmbed reports; "ceil": ⌈H/s⌉), ``swap`` (W' first).
    """
    s = stride
    k = s + kernel_extra
    p = s // 2 if padding == "half" else 0

    def side(n: int) -> int:
        if form == "floor":
            return n // s
        if form == "ceil":
            return -(-n // s)
        return (n + 2 * p - k) // s + 1

    out = (side(H), side(W))
    return (out[1], out[0]) if swap else out


def _grid_case(H: int, W: int, s: int) -> Case:
    return Case(f"H×W = {H}×{W}, stride {s}", lambda g, H=H, W=W, s=s: (H, W, s))


check_overlapping_grid = register(
    Checker(
        "overlapping_grid",
        exercise="overlapping_grid",
        tier="build",
        reference=ref_overlapping_grid,
        cases=[
            _grid_case(56, 56, 8),   # ResT stage 1 (224² input): 7×7 keys
            _grid_case(7, 9, 2),     # odd sides: H // 2 gives 3×4, the conv 4×5
            _grid_case(9, 6, 8),     # non-square, smaller than two strides
            _grid_case(7, 10, 3),    # odd stride: ⌈H/3⌉ is not the conv's grid
            _grid_case(16, 12, 4),   # divisible sides: kernel s or padding 0 still differ
            # boundaries: stride 1 (kernel 2, padding 0), a side of 1, remainders 3 and 2
            _grid_case(5, 7, 1),
            _grid_case(1, 4, 2),
            _grid_case(11, 14, 4),
            # H = 1 with an odd stride: the numerator 1 + 2 − 4 is negative, ⌊−1/3⌋ = −1, so
            # H' = 0 (int() would truncate toward 0 and give 1)
            _grid_case(1, 4, 3),
        ],
        mistakes=[
            Mistake("kernel sr instead of sr+1 (a PVT-style kernel = stride conv)",
                    partial(ref_overlapping_grid, kernel_extra=0)),
            Mistake("padding 0 instead of sr//2", partial(ref_overlapping_grid, padding="zero")),
            Mistake("grid reported as H // sr (what the authors' PatchEmbed returns): wrong on "
                    "odd sizes", partial(ref_overlapping_grid, form="floor")),
            Mistake("⌈H/sr⌉: the conv's grid for even strides only",
                    partial(ref_overlapping_grid, form="ceil")),
            Mistake("H and W swapped: return (H', W')", partial(ref_overlapping_grid, swap=True)),
        ],
    )
)


# --------------------------------------------------------------- 2. EMSA's weights
def _instance_norm(a: torch.Tensor, unbiased: bool = False,
                   eps_inside: bool = True) -> torch.Tensor:
    """InstanceNorm2d(h) without affine: each (b, head) N×M map to mean 0, variance 1.
    Knobs: ``unbiased`` (the variance divided by N·M − 1), ``eps_inside`` (False: σ + ε)."""
    mean = a.mean(dim=(-2, -1), keepdim=True)
    var = a.var(dim=(-2, -1), unbiased=unbiased, keepdim=True)
    if not eps_inside:
        return (a - mean) / (torch.sqrt(var) + 1e-5)
    return (a - mean) / torch.sqrt(var + 1e-5)


def ref_emsa_weights(q: torch.Tensor, k: torch.Tensor, num_heads: int, mix_weight: torch.Tensor,
                     mix_bias: torch.Tensor, *, split: str = "(h d)", scale: str = "d",
                     order: str = "mix softmax norm", softmax_over: str = "keys",
                     one_head_transform: bool = False, norm: str = "biased") -> torch.Tensor:
    """EMSA's weights B×h×N×M from q (B×N×C) and k (B×M×C), h heads of width d = C/h.

    logits = q·kᵀ·d^−½ per head (heads the slow factor of C); for h > 1: a 1×1 conv over the
    heads (``mix_weight`` h×h, ``mix_bias`` h), softmax over the M keys, InstanceNorm of every
    N×M map; for h = 1 only the softmax.

    Knobs: ``split`` ("(d h)"), ``scale`` ("none", "C": 1/√C), ``order`` ("mix norm softmax",
    "softmax mix norm", "mix softmax": the InstanceNorm forgotten), ``softmax_over``
    ("queries"), ``one_head_transform`` (the transform also with one head).
    """
    qh = rearrange(q, f"b n {split} -> b h n d", h=num_heads)
    kh = rearrange(k, f"b m {split} -> b h m d", h=num_heads)
    logits = einsum(qh, kh, "b h n d, b h m d -> b h n m")
    if scale == "d":
        logits = logits * qh.shape[-1] ** -0.5
    elif scale == "C":
        logits = logits * q.shape[-1] ** -0.5
    dim = -1 if softmax_over == "keys" else -2

    def mix(a: torch.Tensor) -> torch.Tensor:
        return einsum(mix_weight, a, "g h, b h n m -> b g n m") + rearrange(mix_bias, "g -> g 1 1")

    if num_heads == 1 and not one_head_transform:
        return logits.softmax(dim=dim)
    def instance_norm(a: torch.Tensor) -> torch.Tensor:
        return _instance_norm(a, unbiased=norm == "unbiased", eps_inside=norm != "eps outside")

    steps = {"mix": mix, "softmax": lambda a: a.softmax(dim=dim), "norm": instance_norm}
    out = logits
    for step in order.split():
        out = steps[step](out)
    return out


def _weights_case(B: int, N: int, M: int, C: int, h: int, seed: int) -> Case:
    def make(g: torch.Generator, B=B, N=N, M=M, C=C, h=h):
        q = torch.randn(B, N, C, generator=g, dtype=torch.float64)
        k = torch.randn(B, M, C, generator=g, dtype=torch.float64)
        w = torch.randn(h, h, generator=g, dtype=torch.float64)
        bias = torch.randn(h, generator=g, dtype=torch.float64)
        return q, k, h, w, bias

    return Case(f"q {B}×{N}×{C}, k {B}×{M}×{C}, {h} head{'s' if h > 1 else ''}", make, seed=seed)


check_emsa_weights = register(
    Checker(
        "emsa_weights",
        exercise="emsa_weights",
        tier="build",
        reference=ref_emsa_weights,
        cases=[
            _weights_case(2, 12, 4, 8, 2, 0),
            _weights_case(1, 15, 6, 12, 3, 1),   # batch 1, three heads of width 4
            _weights_case(2, 10, 10, 6, 1, 2),   # one head: the transform is off
            _weights_case(1, 7, 3, 16, 4, 3),
            _weights_case(2, 5, 1, 6, 2, 4),     # boundary: a single key
            _weights_case(1, 6, 3, 4, 4, 5),     # boundary: heads of width d = 1
        ],
        mistakes=[
            Mistake("heads as the fast factor of C, (d h), instead of the slow factor (h d)",
                    partial(ref_emsa_weights, split="(d h)")),
            Mistake("scale d^-½ forgotten", partial(ref_emsa_weights, scale="none")),
            Mistake("scaled by 1/√C (the full width) instead of 1/√d (one head's width)",
                    partial(ref_emsa_weights, scale="C")),
            Mistake("InstanceNorm before the softmax (it comes after)",
                    partial(ref_emsa_weights, order="mix norm softmax")),
            Mistake("softmax before the head mixing (the 1×1 conv mixes the logits)",
                    partial(ref_emsa_weights, order="softmax mix norm")),
            Mistake("InstanceNorm forgotten after the softmax",
                    partial(ref_emsa_weights, order="mix softmax")),
            Mistake("softmax over the queries instead of the keys",
                    partial(ref_emsa_weights, softmax_over="queries")),
            Mistake("head mixing and InstanceNorm applied with one head (the authors' code "
                    "turns them off)", partial(ref_emsa_weights, one_head_transform=True)),
            Mistake("InstanceNorm with the unbiased variance (÷ (N·M − 1)): InstanceNorm "
                    "divides by N·M", partial(ref_emsa_weights, norm="unbiased")),
            Mistake("ε outside the square root, (a − mean) / (σ + ε): InstanceNorm divides by "
                    "√(σ² + ε)", partial(ref_emsa_weights, norm="eps outside")),
        ],
    )
)


# ------------------------------------------------------------- 3. the EMSA module
class EMSAMap(nn.Module):
    """EMSA on a feature map (B×C×H×W -> B×C×H×W) with the official parameter names; qkv bias
    and the head transform on, as in every released ResT.

    Knobs: ``padding`` ("zero"), ``layer_norm`` (False: forgotten on the reduced tokens),
    ``kv_order`` ("vk": the halves of ``kv`` swapped), ``reduce`` (False: keys from all
    tokens), ``transform`` (False: head mixing and InstanceNorm left out).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, *, padding: str = "half",
                 layer_norm: bool = True, kv_order: str = "kv", reduce: bool = True,
                 transform: bool = True) -> None:
        super().__init__()
        self.num_heads, self.sr_ratio = num_heads, sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio + 1, stride=sr_ratio,
                                padding=sr_ratio // 2 if padding == "half" else 0, groups=dim)
            self.sr_norm = nn.LayerNorm(dim)
        if num_heads > 1:
            self.transform_conv = nn.Conv2d(num_heads, num_heads, 1)
        self.layer_norm, self.kv_order = layer_norm, kv_order
        self.reduce, self.transform = reduce, transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        tokens = rearrange(x, "b c h w -> b (h w) c")
        q = rearrange(self.q(tokens), "b n (h d) -> b h n d", h=self.num_heads)
        source = tokens
        if self.sr_ratio > 1 and self.reduce:
            source = rearrange(self.sr(x), "b c h w -> b (h w) c")
            if self.layer_norm:
                source = self.sr_norm(source)
        k, v = rearrange(self.kv(source), "b m (two h d) -> two b h m d", two=2, h=self.num_heads)
        if self.kv_order == "vk":
            k, v = v, k
        a = einsum(q, k, "b h n d, b h m d -> b h n m") * q.shape[-1] ** -0.5
        if self.num_heads > 1 and self.transform:
            a = _instance_norm(self.transform_conv(a).softmax(dim=-1))
        else:
            a = a.softmax(dim=-1)
        out = rearrange(einsum(a, v, "b h n m, b h m d -> b h n d"), "b h n d -> b n (h d)")
        return rearrange(self.proj(out), "b (h w) c -> b c h w", h=H, w=W)


def _map_case(shape: tuple[int, int, int, int], heads: int, sr: int, seed: int) -> Case:
    label = f", {heads} head{'s' if heads > 1 else ''}, sr {sr}"
    return map_case(shape, seed, label,
                    build={"dim": shape[1], "num_heads": heads, "sr_ratio": sr})


check_emsa_module = register(
    ModuleChecker(
        "emsa_module",
        exercise="MyEMSA",
        tier="build",
        reference=EMSAMap,
        cases=[
            _map_case((2, 16, 7, 9), 2, 2, 0),   # odd sides: a 4×5 key grid
            _map_case((1, 12, 9, 6), 3, 4, 1),   # batch 1, a 3×2 key grid
            _map_case((1, 8, 5, 5), 1, 2, 2),    # one head: no head mixing
            _map_case((2, 8, 4, 5), 2, 1, 3),    # sr 1: keys are the tokens, no sr conv
            _map_case((2, 8, 7, 6), 2, 4, 4),    # boundary: remainders 7 % 4 = 3, 6 % 4 = 2
            _map_case((2, 4, 5, 5), 4, 2, 5),    # boundary: heads of width d = 1
        ],
        mistakes=[
            Mistake("padding 0 in the reduction conv (kernel sr+1, stride sr needs padding "
                    "sr//2)", partial(EMSAMap, padding="zero")),
            Mistake("LayerNorm forgotten on the reduced tokens",
                    partial(EMSAMap, layer_norm=False)),
            Mistake("keys and values swapped: the first half of kv is k, the second v",
                    partial(EMSAMap, kv_order="vk")),
            Mistake("keys and values from all H·W tokens: the spatial reduction is skipped",
                    partial(EMSAMap, reduce=False)),
            Mistake("head mixing and InstanceNorm left out (every released ResT has them on)",
                    partial(EMSAMap, transform=False)),
        ],
    )
)
