"""ResT v1: efficient multi-head self-attention (EMSA), pixel attention (PA) and patch embedding.

Paper: Qing-Long Zhang and Yu-Bin Yang, "ResT: An Efficient Transformer for Visual Recognition",
NeurIPS 2021, arXiv 2105.13677. Official code: wofmanaf/ResT (``models/rest.py``, v1 only).

Token modules take ``x`` of shape B×N×C together with the grid ``H, W`` (N = H·W, row-major,
einops ``(h w)``); feature-map modules take B×C×H×W. Every default computes what the authors'
released code computes.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._init import reset_torch_layers
from ._validate import (require_batch_statistics, require_bool, require_divisible,
                        require_feature_map, require_floating, require_int, require_min_size,
                        require_number, require_probability, require_tokens)

__all__ = ["EMSA", "PA", "PatchEmbed", "BasicStem", "Mlp", "DropPath", "Block", "overlapping_grid"]


def overlapping_grid(H: int, W: int, stride: int) -> tuple[int, int]:
    """The grid ResT's overlapping convs produce: kernel s+1, stride s, padding s//2.

    H' = ⌊(H + 2⌊s/2⌋ − s − 1)/s⌋ + 1 (⌈H/s⌉ for even s), likewise W'. The one place this is
    written: EMSA's reduced key grid (s = ``sr_ratio``), the patch embedding's output grid
    (s = ``patch_size``) and ``cost.emsa`` use it. A result below 1 (odd s with a side of 1)
    means the conv refuses the input.
    """
    for name, value in (("H", H), ("W", W), ("stride", stride)):
        require_int(name, value)
    return tuple((n + 2 * (stride // 2) - stride - 1) // stride + 1 for n in (H, W))


def _rest_init(module: nn.Module) -> None:
    """The official ResT initialisation, for one module (used with ``model.apply``).

    Conv2d and Linear weights: truncated normal, std 0.02 (cut at ±2, i.e. never in practice);
    Linear biases 0; Conv2d biases keep PyTorch's default; LayerNorm/BatchNorm weight 1, bias 0.
    """
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-2.0, b=2.0)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _contiguous_grad(t: torch.Tensor) -> torch.Tensor:
    """Identity forward; in backward, make the incoming gradient contiguous.

    PyTorch 2.x on CPU returns a silently wrong input gradient from ``batch_norm`` at batch 1 when
    the gradient reaching it has the channels-last-like layout with a degenerate batch stride that
    the backward of a token flattening produces. A contiguous gradient avoids that; it changes the
    layout only, never the values.
    """
    if t.requires_grad:
        t.register_hook(lambda g: None if g is None else g.contiguous())
    return t


class _ResTModule(nn.Module):
    """What every ResT module shares: the official initialisation."""

    def reset_parameters(self) -> None:
        """The official ResT initialisation, which construction applies: PyTorch's defaults, then
        :func:`_rest_init` on every layer (sub-modules included)."""
        reset_torch_layers(self)
        self.apply(_rest_init)


class EMSA(_ResTModule):
    """Efficient multi-head self-attention of ResT v1 (the official ``Attention`` class).

    Input ``x``: B×N×C with N = H·W, and the grid ``H, W``. Output: B×N×C.

    With ``h`` heads of width ``d = C / h`` (heads are the slow factor of C, einops ``(heads d)``):

    1. q = Linear(C→C)(x).
    2. If ``sr_ratio > 1`` the keys and values come from a reduced grid: tokens → B×C×H×W, a
       depthwise Conv2d (kernel sr+1, stride sr, padding sr//2, with bias), tokens again, and
       LayerNorm(C). The reduced grid (:meth:`key_grid`) has M = H''·W'' keys with
       H'' = ⌊(H + 2⌊sr/2⌋ − sr − 1)/sr⌋ + 1 (⌈H/sr⌉ for even sr), ≥ 1 for every H ≥ 1 at even
       sr (9×6 at sr = 8 gives 2×1 keys, 1×16 at sr = 4 gives 1×4).
    3. k, v from one Linear(C→2C) laid out ``(two heads d)``, k first.
    4. logits = q·kᵀ·scale (scale = ``qk_scale`` or d^−½), B×h×N×M.
    5. If ``apply_transform`` and h > 1: a 1×1 Conv2d(h→h, bias) mixing heads, softmax over the M
       keys, then InstanceNorm2d(h) (no affine, no running stats; the same in train and eval).
       Otherwise softmax over keys only. After the InstanceNorm the weights are not convex: rows
       sum to exactly 0 (each softmax row sums to 1, so a map's mean is 1/M) and about half are
       negative. Each (b, head) map gets mean 0 and variance var/(var + 1e-5), var being the
       map's variance before the norm: near 1 only when var >> 1e-5. At the authors'
       initialisation, on unit-scale tokens (a LayerNorm's output, as in a ResT block), the
       softmax rows are within a few 1e-4 of uniform (var ~ 1e-9), so the weights are small
       (var(A) ~ 1e-4) and the transform starts turned down (not off).
       Dead biases: a bias added to every key shifts each query's logits by a constant, which
       the softmax ignores (in any softmax attention); with the transform, rows summing to 0
       make a bias added to every value vanish too. So with the transform the whole ``kv``
       bias has no effect on the output.
    6. attention dropout, weights·v, merge heads, Linear(C→C), dropout.

    Code vs paper: no disagreement is known for the computation. Quirks kept from the code: with
    one head the transform is silently off; the reduction conv is overlapping (kernel sr+1), not
    PVT's kernel = stride conv. **Single-key quirk:** when the reduced grid is a single key
    (H'' = W'' = 1, e.g. H, W <= sr for even sr) the softmax is 1, so every token gets the same
    output; with the transform the InstanceNorm makes the weight 0 and the output collapses to
    the projection bias. A ``UserWarning`` says so.

    Errors: ``dim`` not divisible by ``num_heads``; ``x`` not B×N×dim; N != H·W; a grid the
    reduction conv refuses (H'' or W'' < 1: odd sr with H or W = 1). Any grid the authors'
    conv accepts is accepted.

    ``attention_map(x, H, W)`` returns the weights (B×h×N×M, before dropout) for lessons.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 sr_ratio: int = 1, apply_transform: bool = False) -> None:
        super().__init__()
        require_int("dim", dim)
        require_int("num_heads", num_heads)
        require_divisible("dim", dim, "num_heads", num_heads)
        require_int("sr_ratio", sr_ratio)
        if qk_scale is not None:
            require_number("qk_scale", qk_scale, positive=True)
        require_probability("attn_drop", attn_drop)
        require_probability("proj_drop", proj_drop)
        require_bool("qkv_bias", qkv_bias)
        require_bool("apply_transform", apply_transform)
        self.dim = dim
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.sr_ratio = sr_ratio

        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if sr_ratio > 1:
            self.reduce = nn.Conv2d(dim, dim, kernel_size=sr_ratio + 1, stride=sr_ratio,
                                    padding=sr_ratio // 2, groups=dim, bias=True)
            self.reduce_norm = nn.LayerNorm(dim)
        self.apply_transform = apply_transform and num_heads > 1
        if self.apply_transform:
            self.head_mix = nn.Conv2d(num_heads, num_heads, kernel_size=1, bias=True)
            self.head_norm = nn.InstanceNorm2d(num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.apply(_rest_init)

    def key_grid(self, H: int, W: int) -> tuple[int, int]:
        """The grid of keys/values (H'', W'') for a query grid H×W.

        With ``sr_ratio`` > 1 the reduction conv (kernel sr+1, stride sr, padding sr//2) gives
        H'' = ⌊(H + 2⌊sr/2⌋ − sr − 1)/sr⌋ + 1 (likewise W''; :func:`overlapping_grid`); with
        sr = 1 the keys are the queries.
        """
        if self.sr_ratio == 1:
            return H, W
        return overlapping_grid(H, W, self.sr_ratio)

    def _require_input(self, x: torch.Tensor, H: int, W: int) -> None:
        require_tokens(x, self.dim, (H, W))
        Hk, Wk = self.key_grid(H, W)
        if self.apply_transform and Hk * Wk * H * W == 1:
            raise ValueError(
                "apply_transform=True normalises each head's N×M attention map with an "
                f"InstanceNorm2d, which needs more than one value, but the token grid H×W = "
                f"{H}×{W} gives a 1×1 map (in train and eval mode); use a larger grid"
            )
        if self.sr_ratio == 1:
            return
        sr = self.sr_ratio
        if Hk < 1 or Wk < 1:
            raise ValueError(
                f"the token grid H×W = {H}×{W} is too small for sr_ratio={sr}: the reduction conv "
                f"(kernel {sr + 1}, stride {sr}, padding {sr // 2}) needs H, W >= "
                f"{sr + 1 - 2 * (sr // 2)} and would give a {Hk}×{Wk} key grid"
            )
        if Hk * Wk == 1:
            warnings.warn(
                f"the token grid H×W = {H}×{W} reduces to a single key at sr_ratio={sr}: every "
                "token attends to the same key and gets the same output"
                + (" (with apply_transform, the projection bias)" if self.apply_transform else ""),
                stacklevel=3,
            )

    def _weights_and_values(self, x: torch.Tensor, H: int, W: int
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        q = rearrange(self.q(x), "b n (heads d) -> b heads n d", heads=self.num_heads)
        source = x
        if self.sr_ratio > 1:
            grid = rearrange(x, "b (h w) c -> b c h w", h=H, w=W)
            source = self.reduce_norm(rearrange(self.reduce(grid), "b c h w -> b (h w) c"))
        k, v = rearrange(self.kv(source), "b m (two heads d) -> two b heads m d",
                         two=2, heads=self.num_heads)
        logits = (q @ k.transpose(-2, -1)) * self.scale          # b heads n m
        if self.apply_transform:
            weights = self.head_norm(self.head_mix(logits).softmax(dim=-1))
        else:
            weights = logits.softmax(dim=-1)
        return weights, v

    def attention_map(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """The attention weights B×heads×N×M (N = H·W queries, M = H''·W'' keys of
        :meth:`key_grid`; after the transform, before dropout)."""
        self._require_input(x, H, W)
        return self._weights_and_values(x, H, W)[0]

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """x: B×N×C with N = H·W -> B×N×C."""
        self._require_input(x, H, W)
        weights, v = self._weights_and_values(x, H, W)
        out = rearrange(self.attn_drop(weights) @ v, "b heads n d -> b n (heads d)")
        return self.proj_drop(self.proj(out))


class PA(_ResTModule):
    """Pixel attention of ResT v1: ``x ⊙ sigmoid(depthwise3×3(x))``.

    Official: class ``PA``. Input and output B×C×H×W. The gate is a depthwise 3×3 conv
    (padding 1, with bias). Code and paper agree. ``attention_map(x)`` returns the gate,
    B×C×H×W.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        require_int("dim", dim)
        self.dim = dim
        self.gate = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=True)
        self.apply(_rest_init)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The pixel gate ``sigmoid(depthwise3×3(x))``: B×C×H×W, values in (0, 1)."""
        require_feature_map(x, self.dim)
        return torch.sigmoid(self.gate(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W."""
        return x * self.attention_map(x)


class PatchEmbed(_ResTModule):
    """Overlapping patch embedding of ResT v1: conv → BN → (PA) → tokens.

    Official: class ``PatchEmbed``.

    Input B×in_ch×H×W. Conv2d(in_ch→out_ch, kernel p+1, stride p, padding p//2, bias), BatchNorm2d,
    PA if ``with_pos``, then tokens. Returns ``(tokens, (H', W'))`` with tokens B×(H'·W')×out_ch
    and the TRUE output grid H' = ⌊(H + 2⌊p/2⌋ − p − 1)/p⌋ + 1 (⌈H/p⌉ for even p;
    :func:`overlapping_grid`).

    Code vs this module: the official code reports ``(H // p, W // p)``, which is wrong for odd
    sizes (a 7×9 input at p = 2 gives a 4×5 grid, 20 tokens, reported as 3×4); this module returns
    the grid the conv really produced. The gradient reaching the BatchNorm is made contiguous (a
    layout-only change) to dodge the PyTorch CPU batch-1 BatchNorm gradient bug.

    Errors: wrong rank, channels != in_ch, H or W smaller than ``patch_size``; in train mode,
    batch 1 with a 1×1 output grid (H, W <= patch_size for even p), where the BatchNorm has
    one value per channel.
    """

    def __init__(self, patch_size: int = 16, in_ch: int = 3, out_ch: int = 768,
                 with_pos: bool = False) -> None:
        super().__init__()
        require_int("patch_size", patch_size)
        require_int("in_ch", in_ch)
        require_int("out_ch", out_ch)
        require_bool("with_pos", with_pos)
        self.patch_size = patch_size
        self.in_ch = in_ch
        self.proj = nn.Conv2d(in_ch, out_ch, kernel_size=patch_size + 1, stride=patch_size,
                              padding=patch_size // 2, bias=True)
        self.norm = nn.BatchNorm2d(out_ch)
        self.pos = PA(out_ch) if with_pos else None
        self.apply(_rest_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x: B×in_ch×H×W -> (tokens B×(H'·W')×out_ch, (H', W'))."""
        require_feature_map(x, self.in_ch)
        require_min_size(x, self.patch_size, "patch_size")
        B, _, H, W = x.shape
        Ho, Wo = overlapping_grid(H, W, self.patch_size)
        require_batch_statistics(
            self.training, B * Ho * Wo, "the patch embedding's BatchNorm",
            f"x has batch size 1 and H×W = {H}×{W}, which patch_size={self.patch_size} embeds "
            "as a 1×1 grid")
        x = self.norm(self.proj(x))
        x = _contiguous_grad(x)
        if self.pos is not None:
            x = self.pos(x)
        H, W = x.shape[-2:]
        return rearrange(x, "b c h w -> b (h w) c"), (H, W)


class BasicStem(_ResTModule):
    """The ResT v1 stem: three 3×3 convs (strides 2, 1, 2), then PA if ``with_pos``.

    Official: class ``BasicStem``.

    Input B×in_ch×H×W, output B×out_ch×H'×W' (a feature map, about H/4 × W/4). Layers:
    conv 3×3/2 to out_ch//2 (no bias) + BN + ReLU; conv 3×3/1 (no bias) + BN + ReLU; conv 3×3/2
    to out_ch (no bias) with NO BatchNorm; PA. The ResT model builds it with ``with_pos=True``.

    Errors: wrong rank, channels != in_ch, ``out_ch`` < 2 (hidden width 0); in train mode,
    batch 1 with H, W <= 2 (the first BatchNorm sees a 1×1 map).
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 64, with_pos: bool = False) -> None:
        super().__init__()
        require_int("in_ch", in_ch)
        require_int("out_ch", out_ch)
        require_bool("with_pos", with_pos)
        if out_ch // 2 < 1:
            raise ValueError(f"out_ch={out_ch} is too small: the hidden width out_ch // 2 would "
                             f"be {out_ch // 2}; use out_ch >= 2")
        hidden = out_ch // 2
        self.in_ch = in_ch
        self.conv1 = nn.Conv2d(in_ch, hidden, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, kernel_size=3, stride=1, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, out_ch, kernel_size=3, stride=2, padding=1, bias=False)
        self.pos = PA(out_ch) if with_pos else None
        self.apply(_rest_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×in_ch×H×W -> B×out_ch×H'×W' (H' = ⌊(H − 1)/4⌋ + 1)."""
        require_feature_map(x, self.in_ch)
        B, _, H, W = x.shape
        first = ((H - 1) // 2 + 1) * ((W - 1) // 2 + 1)  # the map after the stride-2 conv1
        require_batch_statistics(
            self.training, B * first, "the stem's first BatchNorm",
            f"x has batch size 1 and H×W = {H}×{W}, which the stride-2 first conv takes to 1×1")
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        x = self.conv3(x)
        return x if self.pos is None else self.pos(x)


class Mlp(nn.Module):
    """The transformer MLP: Linear(C→hidden), GELU, dropout, Linear(hidden→C), dropout.

    Input and output ...×C (B×N×C in the block). Official: class ``Mlp`` (taken from timm).
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        require_int("dim", dim)
        require_int("hidden", hidden)
        require_probability("drop", drop)
        self.dim = dim
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def reset_parameters(self) -> None:
        """PyTorch's default init, which construction applies (a :class:`Block` applies ResT's
        official init to its MLP)."""
        reset_torch_layers(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: ...×C -> ...×C (B×N×C in the block; any leading axes)."""
        require_floating("x", x, self.dim)
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole sample's branch with probability ``p`` and
    scale the kept ones by 1/(1−p); the identity in eval or when ``p`` is 0 (as timm's DropPath).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = require_probability("p", p, below_one=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(_ResTModule):
    """The ResT v1 transformer block (pre-norm).

    Official: class ``Block``.

    ``x ← x + DropPath(EMSA(LN(x), H, W))``, then ``x ← x + DropPath(MLP(LN(x)))`` with the MLP
    Linear(C→mlp_ratio·C), GELU, Linear(→C). Input B×N×C with the grid ``H, W``; output B×N×C.
    The official class uses ``drop`` for both the MLP dropout and EMSA's ``proj_drop``; so does
    this one. Errors as in :class:`EMSA`.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, sr_ratio: int = 1, apply_transform: bool = False) -> None:
        super().__init__()
        require_int("dim", dim)
        require_number("mlp_ratio", mlp_ratio, positive=True)
        require_int("int(dim * mlp_ratio)", int(dim * mlp_ratio), why=f"the MLP's hidden width "
                    f"for dim={dim}, mlp_ratio={mlp_ratio!r}")
        require_probability("drop", drop)
        require_probability("drop_path", drop_path, below_one=True)
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EMSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                         attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio,
                         apply_transform=apply_transform)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.apply(_rest_init)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """x: B×N×C with N = H·W -> B×N×C."""
        require_tokens(x, self.dim, (H, W))
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))
