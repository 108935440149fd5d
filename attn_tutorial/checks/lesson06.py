"""Checkers for lesson 06 (ResT): exercises in ``solutions/06_rest.ipynb``.

1. ``check_rest_grids`` (predict): the token grid and EMSA's key grid at each of ResT's four
   stages for an image size and the stages' reductions ``sr_ratios``.
2. ``check_emsa_weights`` (build): EMSA's attention weights from projected query and key maps,
   with the head mixing (1×1 conv over heads), the softmax over keys and the InstanceNorm.
3. ``check_emsa_module`` (build, a module exercise): EMSA as cross-attention between two feature
   maps (queries from x, keys and values from y reduced by sr), with the official parameter
   names ``q``, ``kv``, ``proj``, ``sr``, ``sr_norm``, ``transform_conv``.
4. ``check_talking_heads_weights`` (extend): talking-heads attention's weights (Shazeer et al.,
   arXiv 2003.02436), which mix the heads before *and* after the softmax, with no norm.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. The comments on the cases say which case catches which slip
(``tests/test_checks.py`` proves that every mistake fails somewhere and that any two differ).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn as nn
from einops import einsum, rearrange

from attn_tutorial.checks._core import Case, Checker, Mistake, hidden_cases, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "06_rest"  # exercises/06_rest.ipynb holds these exercises, in this order
__all__ = ["check_rest_grids", "check_emsa_weights", "check_emsa_module",
           "check_talking_heads_weights"]


# ------------------------------------------------------ 1. the grids of every ResT stage
def _conv_side(n: int, kernel: int, stride: int, padding: int) -> int:
    """PyTorch's conv output side: ⌊(n + 2·padding − kernel)/stride⌋ + 1."""
    return (n + 2 * padding - kernel) // stride + 1


def ref_rest_grids(H: int, W: int, sr_ratios: tuple[int, ...] = (8, 4, 2, 1), *,
                   grids: str = "conv", keys: str = "conv", sr_one: str = "tokens",
                   stem_strides: int = 2, embed_first: bool = False,
                   swap: bool = False) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per ResT stage, ((H_i, W_i), (Hk_i, Wk_i)): the token grid and EMSA's key grid.

    The stem's 3×3 convs (padding 1, strides 2, 1, 2) give stage 1's grid, a patch embedding
    (kernel 3, stride 2, padding 1) each later stage's; the keys come from a conv of kernel
    sr+1, stride sr, padding sr//2 when sr > 1, and are the tokens when sr = 1.

    Knobs: ``grids`` ("floor": H // 4, H // 8, …; "embed floor": the stem's grid right, each
    patch embedding's n // 2, the grid the authors' ``PatchEmbed`` reports), ``keys`` ("ceil":
    ⌈n/sr⌉; "floor": n // sr; "floor, at least 1": max(n // sr, 1); "kernel sr": kernel sr,
    padding sr // 2; "no padding"), ``sr_one`` ("conv": the formula also at sr = 1),
    ``stem_strides`` (1: one stride-2 conv in the stem), ``embed_first`` (a patch
    embedding before stage 1 too), ``swap`` (each pair (W, H)).
    """
    def stem(n: int) -> int:
        if grids == "floor":
            return n // 4 if stem_strides == 2 else n // 2
        n = _conv_side(n, 3, 2, 1)
        n = _conv_side(n, 3, 1, 1)
        return _conv_side(n, 3, 2, 1) if stem_strides == 2 else n

    def embed(n: int) -> int:
        return n // 2 if grids in ("floor", "embed floor") else _conv_side(n, 3, 2, 1)

    def key(n: int, sr: int) -> int:
        if sr == 1 and sr_one == "tokens":
            return n
        if keys == "ceil":
            return -(-n // sr)
        if keys == "floor":
            return n // sr
        if keys == "floor, at least 1":
            return max(n // sr, 1)
        kernel = sr if keys == "kernel sr" else sr + 1
        return _conv_side(n, kernel, sr, 0 if keys == "no padding" else sr // 2)

    sides, out = [stem(H), stem(W)], []
    for i, sr in enumerate(sr_ratios):
        if i > 0 or embed_first:
            sides = [embed(n) for n in sides]
        grid, key_grid = tuple(sides), tuple(key(n, sr) for n in sides)
        out.append((grid[::-1], key_grid[::-1]) if swap else (grid, key_grid))
    return out


def _grids_case(H: int, W: int, sr: tuple[int, ...] | None = None) -> Case:
    if sr is None:  # called with the default sr_ratios
        return Case(f"{H}×{W} image, default sr_ratios", lambda g, H=H, W=W: (H, W))
    return Case(f"{H}×{W} image, sr_ratios {sr}", lambda g, H=H, W=W, sr=sr: (H, W, sr))


def _legal(H: int, W: int, sr_ratios: tuple[int, ...]) -> bool:
    """Whether every reduction conv accepts its stage's grid (an odd sr needs a side ≥ 2)."""
    return all(min(grid) >= 2 or sr % 2 == 0 or sr == 1
               for (grid, _), sr in zip(ref_rest_grids(H, W, sr_ratios), sr_ratios))


def _draw_grids(rng) -> tuple:
    """A legal (H, W, sr_ratios): sides 1 to 400, reductions 1 to 9."""
    while True:
        H, W = rng.randint(1, 400), rng.randint(1, 400)
        sr = tuple(rng.randint(1, 9) for _ in range(4))
        if _legal(H, W, sr):
            return H, W, sr


check_rest_grids = register(
    Checker(
        "rest_grids",
        exercise="rest_grids",
        tier="predict",
        reference=ref_rest_grids,
        cases=[
            _grids_case(224, 224),          # ResT's ImageNet size: 7×7 keys in every stage
            _grids_case(225, 225),          # one more pixel: every grid rounds up
            _grids_case(100, 150),          # non-square, not multiples of 32
            _grids_case(65, 97),
            _grids_case(32, 32),            # a single key in every stage
            _grids_case(7, 200),
            # boundaries: the smallest image, sides of 2 and 3
            _grids_case(1, 1),
            _grids_case(2, 3),
            _grids_case(33, 31, (8, 4, 2, 1)),
            # odd reductions: ⌈n/sr⌉ is not the conv's grid
            _grids_case(50, 70, (3, 3, 3, 1)),
            _grids_case(99, 101, (5, 3, 3, 3)),
            _grids_case(64, 57, (3, 3, 3, 3)),   # stage 4: a side of 2 at sr = 3 (the smallest)
            _grids_case(300, 222, (7, 5, 3, 2)),
            _grids_case(73, 81, (9, 1, 1, 1)),
            _grids_case(45, 45, (1, 2, 3, 4)),
            # every sr = 1 (no reduction): the keys are the tokens
            _grids_case(37, 29, (1, 1, 1, 1)),
            _grids_case(224, 224, (16, 8, 4, 2)),
            _grids_case(9, 13, (2, 2, 2, 2)),    # grids of 1 with even sr: one key
            _grids_case(200, 120, (6, 6, 6, 6)),  # an even sr that is not a power of 2
            _grids_case(1, 9, (4, 4, 4, 4)),      # a side of 1 at every stage
            # hidden: drawn from the whole domain, never printed (a table of the printed
            # answers fails them)
            *hidden_cases("hidden case", _draw_grids, count=5, seed=606),
        ],
        mistakes=[
            Mistake("token grids H // 4, H // 8, H // 16, H // 32 (floor division): the stem's "
                    "and the patch embeddings' stride-2 convs with padding 1 round up, "
                    "⌈H/4⌉, ⌈H/8⌉, …",
                    partial(ref_rest_grids, grids="floor"),
                    variants=(partial(ref_rest_grids, grids="floor", keys="floor"),
                              partial(ref_rest_grids, grids="floor", keys="ceil"))),
            Mistake("token grids of the authors' `PatchEmbed`, which reports (H // p, W // p): "
                    "each patch embedding's conv (kernel 3, stride 2, padding 1) gives "
                    "⌈n/2⌉, not n // 2", partial(ref_rest_grids, grids="embed floor")),
            Mistake("key grid ⌈n/sr⌉: the reduction conv's grid for even sr only (for odd sr "
                    "it is ⌊(n − 2)/sr⌋ + 1)", partial(ref_rest_grids, keys="ceil")),
            Mistake("key grid n // sr: floor division, or PVT's reduction conv (kernel = stride = "
                    "sr, no padding), which gives exactly n // sr; ResT's conv has kernel sr + 1 "
                    "and padding sr // 2", partial(ref_rest_grids, keys="floor"),
                    variants=(partial(ref_rest_grids, keys="floor, at least 1"),)),
            Mistake("reduction conv with kernel sr (and padding sr // 2) instead of sr + 1",
                    partial(ref_rest_grids, keys="kernel sr")),
            Mistake("reduction conv without padding (0 instead of sr // 2)",
                    partial(ref_rest_grids, keys="no padding")),
            Mistake("sr = 1 run through the conv formula (kernel 2, padding 0: one key fewer "
                    "per side): with sr = 1 there is no conv, the keys are the tokens",
                    partial(ref_rest_grids, sr_one="conv")),
            Mistake("the stem reduces the image by 2, not 4 (it has two stride-2 convs)",
                    partial(ref_rest_grids, stem_strides=1)),
            Mistake("a patch embedding before stage 1 too (stage 1's grid is the stem's)",
                    partial(ref_rest_grids, embed_first=True)),
            Mistake("H and W swapped: each pair is (rows, columns)",
                    partial(ref_rest_grids, swap=True)),
        ],
    )
)


# --------------------------------------------------------------- 2. EMSA's weights
def _instance_norm(a: torch.Tensor, unbiased: bool = False, eps_inside: bool = True,
                   over: str = "map", eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm2d(h) without affine: each (b, head) N×M map to mean 0, variance
    var/(var + ε). Knobs: ``unbiased`` (the variance divided by N·M − 1), ``eps_inside``
    (False: σ + ε), ``over`` ("row": each query's row of M, "heads": all heads' maps of a
    batch item together), ``eps`` (0: ε forgotten)."""
    dims = {"map": (-2, -1), "row": (-1,), "heads": (-3, -2, -1)}[over]
    mean = a.mean(dim=dims, keepdim=True)
    var = a.var(dim=dims, unbiased=unbiased, keepdim=True)
    if not eps_inside:
        return (a - mean) / (torch.sqrt(var) + eps)
    return (a - mean) / torch.sqrt(var + eps)


def ref_emsa_weights(q: torch.Tensor, k: torch.Tensor, num_heads: int, mix_weight: torch.Tensor,
                     mix_bias: torch.Tensor, *, split: str = "(h d)", scale: str = "d",
                     order: str = "mix softmax norm", softmax_over: str = "keys",
                     one_head_transform: bool = False, norm: str = "biased",
                     mix_layout: str = "g h", flatten: str = "(y x)",
                     flatten_keys: str | None = None) -> torch.Tensor:
    """EMSA's weights B×h×N×M from the maps q (B×C×H×W) and k (B×C×Hk×Wk), N = H·W and
    M = Hk·Wk positions flattened row-major, h heads of width d = C/h.

    logits = q·kᵀ·d^−½ per head (heads the slow factor of C); for h > 1: a 1×1 conv over the
    heads (``mix_weight`` h×h, ``mix_bias`` h), softmax over the M keys, InstanceNorm of every
    N×M map; for h = 1 only the softmax.

    Knobs: ``split`` ("(d h)"), ``scale`` ("none", "C": 1/√C), ``order`` ("mix norm softmax",
    "softmax mix norm", "mix softmax": the InstanceNorm forgotten), ``softmax_over``
    ("queries"), ``one_head_transform`` (the transform also with one head), ``norm``
    ("unbiased", "eps outside", "per row", "all heads", "no eps"), ``mix_layout`` ("h g": the
    mixing matrix transposed), ``flatten`` ("(x y)": positions flattened column-major),
    ``flatten_keys`` (the keys' flattening when it differs from the queries').
    """
    q = rearrange(q, f"b c y x -> b {flatten} c")
    k = rearrange(k, f"b c y x -> b {flatten_keys or flatten} c")
    qh = rearrange(q, f"b n {split} -> b h n d", h=num_heads)
    kh = rearrange(k, f"b m {split} -> b h m d", h=num_heads)
    logits = einsum(qh, kh, "b h n d, b h m d -> b h n m")
    if scale == "d":
        logits = logits * qh.shape[-1] ** -0.5
    elif scale == "C":
        logits = logits * q.shape[-1] ** -0.5
    dim = -1 if softmax_over == "keys" else -2

    def mix(a: torch.Tensor) -> torch.Tensor:
        mixed = einsum(mix_weight, a, f"{mix_layout}, b h n m -> b g n m")
        return mixed + rearrange(mix_bias, "g -> g 1 1")

    if num_heads == 1 and not one_head_transform:
        return logits.softmax(dim=dim)
    def instance_norm(a: torch.Tensor) -> torch.Tensor:
        over = {"per row": "row", "all heads": "heads"}.get(norm, "map")
        return _instance_norm(a, unbiased=norm == "unbiased", eps_inside=norm != "eps outside",
                              over=over, eps=0.0 if norm == "no eps" else 1e-5)

    steps = {"mix": mix, "softmax": lambda a: a.softmax(dim=dim), "norm": instance_norm}
    out = logits
    for step in order.split():
        out = steps[step](out)
    return out


def _weights_case(B: int, C: int, grid: tuple[int, int], key_grid: tuple[int, int], h: int,
                  seed: int) -> Case:
    (H, W), (Hk, Wk) = grid, key_grid

    def make(g: torch.Generator):
        q = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
        k = torch.randn(B, C, Hk, Wk, generator=g, dtype=torch.float64)
        w = torch.randn(h, h, generator=g, dtype=torch.float64)
        bias = torch.randn(h, generator=g, dtype=torch.float64)
        return q, k, h, w, bias

    return Case(f"q {B}×{C}×{H}×{W}, k {B}×{C}×{Hk}×{Wk}, {h} head{'s' if h > 1 else ''}",
                make, seed=seed)


def _unit_variance(out: torch.Tensor, q, k, num_heads: int, *_) -> bool:
    """Every finite (b, head) map has variance 1: the InstanceNorm without its ε (with it, the
    variance is var/(var + 1e-5) < 1; a single key's 0/0 maps are NaN and left out)."""
    if num_heads == 1:
        return True
    var = out.var(dim=(-2, -1), unbiased=False)
    var = var[torch.isfinite(var)]
    return bool(torch.allclose(var, torch.ones_like(var), rtol=0, atol=1e-9))


check_emsa_weights = register(
    Checker(
        "emsa_weights",
        exercise="emsa_weights",
        tier="build",
        reference=ref_emsa_weights,
        cases=[
            _weights_case(2, 8, (3, 4), (2, 2), 2, 0),
            _weights_case(1, 12, (5, 3), (3, 2), 3, 1),  # batch 1, three heads of width 4
            _weights_case(2, 6, (2, 5), (2, 5), 1, 2),   # one head: the transform is off
            _weights_case(1, 16, (7, 1), (3, 1), 4, 3),  # boundary: maps one column wide
            _weights_case(2, 6, (1, 5), (1, 1), 2, 4),   # boundary: a single key, one row
            _weights_case(1, 4, (2, 3), (1, 3), 4, 5),   # boundary: heads of width d = 1
        ],
        mistakes=[
            Mistake("heads as the fast factor of C, (d h), instead of the slow factor (h d)",
                    partial(ref_emsa_weights, split="(d h)")),
            Mistake("positions flattened column-major, (w h): the tokens are the map's "
                    "positions row-major, (h w)", partial(ref_emsa_weights, flatten="(x y)"),
                    variants=(partial(ref_emsa_weights, flatten_keys="(x y)"),
                              partial(ref_emsa_weights, flatten="(x y)", flatten_keys="(y x)"))),
            Mistake("InstanceNorm over each query's row of M weights instead of over the whole "
                    "N×M map of a head", partial(ref_emsa_weights, norm="per row")),
            Mistake("InstanceNorm over all heads' maps together instead of each head's N×M map "
                    "on its own", partial(ref_emsa_weights, norm="all heads")),
            Mistake("ε forgotten in the InstanceNorm: it divides by √(var + 1e-5)",
                    partial(ref_emsa_weights, norm="no eps"), holds=_unit_variance),
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
            Mistake("head-mixing matrix transposed: out[g] = Σ_h mix_weight[h, g]·logits[h] "
                    "(einsum \"h g, …\"); a 1×1 conv weight is [out, in]: "
                    "out[g] = Σ_h mix_weight[g, h]·logits[h]",
                    partial(ref_emsa_weights, mix_layout="h g")),
        ],
    )
)


# ------------------------------------------------------------- 3. the EMSA module
class EMSAMap(nn.Module):
    """EMSA as cross-attention between two feature maps with the official parameter names:
    queries from every position of ``x`` (B×C×H×W), keys and values from ``y`` (B×C×Hy×Wy)
    reduced by the ``sr`` conv; returns B×C×H×W. qkv bias and the head transform on, as in
    every released ResT.

    Knobs: ``padding`` ("zero"), ``layer_norm`` (False: forgotten on the reduced tokens),
    ``kv_order`` ("vk": the halves of ``kv`` swapped), ``reduce`` (False: keys from all
    positions of y), ``transform`` (False: head mixing and InstanceNorm left out), ``split``
    ("(d h)": heads the fast factor of C), ``source`` ("x": keys and values from x, the
    self-attention of the lesson).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, *, padding: str = "half",
                 layer_norm: bool = True, kv_order: str = "kv", reduce: bool = True,
                 transform: bool = True, split: str = "(h d)", source: str = "y") -> None:
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
        self.split, self.source = split, source

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if self.source == "x":
            y = x
        tokens = rearrange(x, "b c h w -> b (h w) c")
        q = rearrange(self.q(tokens), f"b n {self.split} -> b h n d", h=self.num_heads)
        source = rearrange(y, "b c h w -> b (h w) c")
        if self.sr_ratio > 1 and self.reduce:
            source = rearrange(self.sr(y), "b c h w -> b (h w) c")
            if self.layer_norm:
                source = self.sr_norm(source)
        k, v = rearrange(self.kv(source), f"b m (two {self.split[1:-1]}) -> two b h m d",
                         two=2, h=self.num_heads)
        if self.kv_order == "vk":
            k, v = v, k
        a = einsum(q, k, "b h n d, b h m d -> b h n m") * q.shape[-1] ** -0.5
        if self.num_heads > 1 and self.transform:
            a = _instance_norm(self.transform_conv(a).softmax(dim=-1))
        else:
            a = a.softmax(dim=-1)
        out = rearrange(einsum(a, v, "b h n m, b h m d -> b h n d"),
                        f"b h n d -> b n {self.split}")
        return rearrange(self.proj(out), "b (h w) c -> b c h w", h=H, w=W)


def _pair_case(B: int, C: int, grid: tuple[int, int], y_grid: tuple[int, int], heads: int,
               sr: int, seed: int) -> Case:
    """Two seeded float64 maps, x B×C×H×W and y B×C×Hy×Wy (batch ≥ 2: the train-mode step
    doubles only a batch-1 x, never y)."""
    def make(g: torch.Generator):
        return (torch.randn(B, C, *grid, generator=g, dtype=torch.float64),
                torch.randn(B, C, *y_grid, generator=g, dtype=torch.float64))

    name = (f"x {B}×{C}×{grid[0]}×{grid[1]}, y {B}×{C}×{y_grid[0]}×{y_grid[1]}, {heads} "
            f"head{'s' if heads > 1 else ''}, sr {sr}")
    return Case(name, make, seed=seed, build={"dim": C, "num_heads": heads, "sr_ratio": sr})


check_emsa_module = register(
    ModuleChecker(
        "emsa_module",
        exercise="MyEMSA",
        tier="build",
        reference=EMSAMap,
        cases=[
            _pair_case(2, 8, (3, 4), (7, 9), 2, 2, 0),    # odd y: a 4×5 key grid
            _pair_case(2, 12, (5, 2), (7, 6), 3, 4, 1),   # a 2×2 key grid; remainders 3 and 2
            _pair_case(2, 8, (4, 4), (5, 5), 1, 2, 2),    # one head: no head mixing
            _pair_case(2, 8, (4, 5), (3, 2), 2, 1, 3),    # sr 1: keys are y's positions
            _pair_case(2, 4, (3, 3), (5, 5), 4, 2, 5),    # boundary: heads of width d = 1
            _pair_case(2, 8, (1, 2), (3, 3), 2, 2, 6),    # boundary: x one row high
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
            Mistake("heads as the fast factor of C, (d h), instead of the slow factor (h d)",
                    partial(EMSAMap, split="(d h)")),
            Mistake("keys and values from x (self-attention) instead of from y",
                    partial(EMSAMap, source="x"), variants=(
                        partial(EMSAMap, source="x", reduce=False),)),
        ],
        input_names=("x", "y"),
    )
)


# ------------------------------------------------------- 4. talking-heads attention's weights
def ref_talking_heads_weights(q: torch.Tensor, k: torch.Tensor, num_heads: int,
                              logits_mix: torch.Tensor, weights_mix: torch.Tensor, *,
                              split: str = "(h d)", scale: str = "d",
                              layouts: tuple[str, str] = ("g h", "g h"), post: bool = True,
                              swap_mixes: bool = False, softmax_over: str = "keys",
                              instance_norm: bool = False, one_head_plain: bool = False,
                              renormalise: bool = False,
                              both_before: bool = False) -> torch.Tensor:
    """Talking-heads attention's weights B×h×N×M (Shazeer et al., arXiv 2003.02436): logits
    q·kᵀ·d^−½ per head (heads the slow factor of C), mixed across heads by ``logits_mix``
    (h×h, [out, in]), softmax over the M keys, mixed again by ``weights_mix``; no bias, no norm,
    for every number of heads.

    Knobs: ``split`` ("(d h)"), ``scale`` ("C"), ``layouts`` (einops layout of each matrix,
    "h g": transposed), ``post`` (False: no mixing after the softmax), ``swap_mixes`` (the two
    matrices exchanged), ``softmax_over`` ("queries", "heads"), ``instance_norm`` (EMSA's norm
    at the end), ``one_head_plain`` (with one head only the softmax, EMSA's rule),
    ``renormalise`` (each row divided by its sum at the end), ``both_before`` (both mixings
    before the softmax, none after). ``scale`` also takes "none".
    """
    qh = rearrange(q, f"b n {split} -> b h n d", h=num_heads)
    kh = rearrange(k, f"b m {split} -> b h m d", h=num_heads)
    d_or_c = {"d": qh.shape[-1], "C": q.shape[-1], "none": 1}[scale]
    logits = einsum(qh, kh, "b h n d, b h m d -> b h n m") * d_or_c ** -0.5
    dim = {"keys": -1, "queries": -2, "heads": 1}[softmax_over]
    if num_heads == 1 and one_head_plain:
        return logits.softmax(dim=dim)
    first, second = (weights_mix, logits_mix) if swap_mixes else (logits_mix, weights_mix)
    weights = einsum(first, logits, f"{layouts[0]}, b h n m -> b g n m")
    if both_before:
        weights = einsum(second, weights, f"{layouts[1]}, b h n m -> b g n m")
    weights = weights.softmax(dim=dim)
    if post and not both_before:
        weights = einsum(second, weights, f"{layouts[1]}, b h n m -> b g n m")
    if renormalise:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return _instance_norm(weights) if instance_norm else weights


def _talking_case(B: int, N: int, M: int, C: int, h: int, seed: int) -> Case:
    def make(g: torch.Generator, B=B, N=N, M=M, C=C, h=h):
        q = torch.randn(B, N, C, generator=g, dtype=torch.float64)
        k = torch.randn(B, M, C, generator=g, dtype=torch.float64)
        pre = torch.randn(h, h, generator=g, dtype=torch.float64)
        post = torch.randn(h, h, generator=g, dtype=torch.float64)
        return q, k, h, pre, post

    return Case(f"q {B}×{N}×{C}, k {B}×{M}×{C}, {h} head{'s' if h > 1 else ''}", make, seed=seed)


check_talking_heads_weights = register(
    Checker(
        "talking_heads_weights",
        exercise="talking_heads_weights",
        tier="extend",
        reference=ref_talking_heads_weights,
        cases=[
            _talking_case(2, 6, 4, 8, 2, 10),
            _talking_case(1, 5, 3, 12, 3, 11),   # batch 1, three heads of width 4
            _talking_case(2, 4, 5, 6, 1, 12),    # boundary: one head, the mixings are scalars
            _talking_case(1, 3, 4, 4, 4, 13),    # boundary: heads of width d = 1
            _talking_case(2, 4, 1, 6, 2, 14),    # boundary: a single key
        ],
        mistakes=[
            Mistake("both mixing matrices applied transposed, as [in, out] (einsum \"h g, …\"): "
                    "here they are [out, in], out[g] = Σ_h mix[g, h]·a[h]",
                    partial(ref_talking_heads_weights, layouts=("h g", "h g"))),
            Mistake("logits_mix transposed (einsum \"h g, …\" before the softmax)",
                    partial(ref_talking_heads_weights, layouts=("h g", "g h"))),
            Mistake("weights_mix transposed (einsum \"h g, …\" after the softmax)",
                    partial(ref_talking_heads_weights, layouts=("g h", "h g"))),
            Mistake("the weights are not mixed after the softmax (that is EMSA's transform "
                    "without its InstanceNorm)", partial(ref_talking_heads_weights, post=False)),
            Mistake("the two matrices exchanged: weights_mix before the softmax, logits_mix "
                    "after", partial(ref_talking_heads_weights, swap_mixes=True)),
            Mistake("softmax over the queries instead of the keys",
                    partial(ref_talking_heads_weights, softmax_over="queries")),
            Mistake("softmax over the heads instead of the keys",
                    partial(ref_talking_heads_weights, softmax_over="heads")),
            Mistake("an InstanceNorm at the end (EMSA's; talking-heads attention has none)",
                    partial(ref_talking_heads_weights, instance_norm=True)),
            Mistake("with one head only the softmax (EMSA's rule): talking-heads attention "
                    "mixes for every number of heads",
                    partial(ref_talking_heads_weights, one_head_plain=True)),
            Mistake("scaled by 1/√C (the full width) instead of 1/√d (one head's width)",
                    partial(ref_talking_heads_weights, scale="C")),
            Mistake("scale d^-½ forgotten", partial(ref_talking_heads_weights, scale="none")),
            Mistake("rows renormalised to sum to 1 after the second mixing (its rows sum to "
                    "Σ_h weights_mix[g, h])",
                    partial(ref_talking_heads_weights, renormalise=True)),
            Mistake("both mixings before the softmax (weights_mix mixes the softmax's output)",
                    partial(ref_talking_heads_weights, both_before=True)),
            Mistake("heads as the fast factor of C, (d h), instead of the slow factor (h d)",
                    partial(ref_talking_heads_weights, split="(d h)")),
        ],
    )
)
