"""ResT v1: efficient multi-head self-attention (EMSA), pixel attention (PA) and patch embedding.

Paper: Qing-Long Zhang and Yu-Bin Yang, "ResT: An Efficient Transformer for Visual Recognition",
NeurIPS 2021, arXiv 2105.13677. Official code: wofmanaf/ResT (``models/rest.py``, v1 only).

Token modules take ``x`` of shape B×N×C together with the grid ``H, W`` (N = H·W, row-major,
einops ``(h w)``); feature-map modules take B×C×H×W. Every default computes what the authors'
released code computes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._validate import check_divisible, check_feature_map, check_min_size, check_tokens

__all__ = ["EMSA", "PA", "PatchEmbed", "BasicStem", "Mlp", "DropPath", "Block", "init_official"]


def init_official(module: nn.Module) -> None:
    """The official ResT initialisation, for one module (use with ``model.apply``).

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


def _check_grid(H: int, W: int, minimum: int, what: str) -> None:
    """Tokens carry no spatial shape, so the grid (H, W) is checked on its own."""
    if H < minimum or W < minimum:
        raise ValueError(
            f"the token grid H×W = {H}×{W} is smaller than {what} = {minimum}; "
            f"H and W must both be >= {minimum}"
        )


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


class EMSA(nn.Module):
    """Efficient multi-head self-attention of ResT v1 (the official ``Attention`` class).

    Paper: "ResT: An Efficient Transformer for Visual Recognition", NeurIPS 2021 (arXiv
    2105.13677); official code: wofmanaf/ResT.

    Input ``x``: B×N×C with N = H·W, and the grid ``H, W``. Output: B×N×C.

    With ``h`` heads of width ``d = C / h`` (heads are the slow factor of C, einops ``(heads d)``):

    1. q = Linear(C→C)(x).
    2. If ``sr_ratio > 1`` the keys and values come from a reduced grid: tokens → B×C×H×W, a
       depthwise Conv2d (kernel sr+1, stride sr, padding sr//2, with bias), tokens again, and
       LayerNorm(C). The reduced grid has M = H''·W'' keys with
       H'' = ⌊(H + 2⌊sr/2⌋ − sr − 1)/sr⌋ + 1 (⌈H/sr⌉ for even sr).
    3. k, v from one Linear(C→2C) laid out ``(two heads d)``, k first.
    4. logits = q·kᵀ·scale (scale = ``qk_scale`` or d^−½), B×h×N×M.
    5. If ``apply_transform`` and h > 1: a 1×1 Conv2d(h→h, bias) mixing heads, softmax over the M
       keys, then InstanceNorm2d(h) (no affine, no running stats; the same in train and eval).
       Otherwise softmax over keys only. After the InstanceNorm the weights are not convex: rows
       do not sum to 1 and can be negative.
    6. attention dropout, weights·v, merge heads, Linear(C→C), dropout.

    Code vs paper: no disagreement is known for the computation. Quirks kept from the code: with
    one head the transform is silently off; the reduction conv is overlapping (kernel sr+1), not
    PVT's kernel = stride conv. **Single-key quirk:** when the reduced grid is a single key
    (H'' = W'' = 1, e.g. H, W <= sr for even sr) the softmax is 1, the InstanceNorm makes it 0,
    and the transformed output collapses to the projection bias for every token.

    Errors: ``dim`` not divisible by ``num_heads``; ``x`` not B×N×dim; N != H·W; H or W smaller
    than ``sr_ratio`` (a grid smaller than one reduction stride is refused).

    ``attention_map(x, H, W)`` returns the weights (B×h×N×M, before dropout) for lessons.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 sr_ratio: int = 1, apply_transform: bool = False) -> None:
        super().__init__()
        check_divisible("dim", dim, "num_heads", num_heads)
        if sr_ratio < 1:
            raise ValueError(f"sr_ratio={sr_ratio} must be >= 1")
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
        self.apply(init_official)

    def key_grid(self, H: int, W: int) -> tuple[int, int]:
        """The grid of keys/values (H'', W'') for a query grid H×W.

        With ``sr_ratio`` > 1 the reduction conv (kernel sr+1, stride sr, padding sr//2) gives
        H'' = ⌊(H + 2⌊sr/2⌋ − sr − 1)/sr⌋ + 1 (likewise W''); with sr = 1 the keys are the queries.
        """
        sr = self.sr_ratio
        if sr == 1:
            return H, W
        return tuple((n + 2 * (sr // 2) - sr - 1) // sr + 1 for n in (H, W))

    def _check(self, x: torch.Tensor, H: int, W: int) -> None:
        check_tokens(x, self.dim, (H, W))
        if self.sr_ratio > 1:
            _check_grid(H, W, self.sr_ratio, "sr_ratio")

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
        """The attention weights B×heads×N×M (after the transform, before dropout)."""
        self._check(x, H, W)
        return self._weights_and_values(x, H, W)[0]

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        self._check(x, H, W)
        weights, v = self._weights_and_values(x, H, W)
        out = rearrange(self.attn_drop(weights) @ v, "b heads n d -> b n (heads d)")
        return self.proj_drop(self.proj(out))


class PA(nn.Module):
    """Pixel attention of ResT v1: ``x ⊙ sigmoid(depthwise3×3(x))``.

    Paper: "ResT: An Efficient Transformer for Visual Recognition", NeurIPS 2021 (arXiv
    2105.13677); official code: wofmanaf/ResT. Input and output B×C×H×W. The gate is a
    depthwise 3×3 conv (padding 1, with bias). Code and paper agree.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.gate = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=True)
        self.apply(init_official)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The pixel gate ``sigmoid(depthwise3×3(x))``: B×C×H×W, values in (0, 1)."""
        check_feature_map(x, self.dim)
        return torch.sigmoid(self.gate(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W."""
        return x * self.attention_map(x)


class PatchEmbed(nn.Module):
    """Overlapping patch embedding of ResT v1: conv → BN → (PA) → tokens.

    Paper: "ResT: An Efficient Transformer for Visual Recognition", NeurIPS 2021 (arXiv
    2105.13677); official code: wofmanaf/ResT.

    Input B×in_ch×H×W. Conv2d(in_ch→out_ch, kernel p+1, stride p, padding p//2, bias), BatchNorm2d,
    PA if ``with_pos``, then tokens. Returns ``(tokens, (H', W'))`` with tokens B×(H'·W')×out_ch
    and the TRUE output grid H' = ⌊(H + 2⌊p/2⌋ − p − 1)/p⌋ + 1 (⌈H/p⌉ for even p).

    Code vs this module: the official code reports ``(H // p, W // p)``, which is wrong for odd
    sizes (a 7×9 input at p = 2 gives a 4×5 grid, 20 tokens, reported as 3×4); this module returns
    the grid the conv really produced. The gradient reaching the BatchNorm is made contiguous (a
    layout-only change) to dodge the PyTorch CPU batch-1 BatchNorm gradient bug.

    Errors: wrong rank, channels != in_ch, H or W smaller than ``patch_size``.
    """

    def __init__(self, patch_size: int = 16, in_ch: int = 3, out_ch: int = 768,
                 with_pos: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_ch = in_ch
        self.proj = nn.Conv2d(in_ch, out_ch, kernel_size=patch_size + 1, stride=patch_size,
                              padding=patch_size // 2, bias=True)
        self.norm = nn.BatchNorm2d(out_ch)
        self.pos = PA(out_ch) if with_pos else None
        self.apply(init_official)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        check_feature_map(x, self.in_ch)
        check_min_size(x, self.patch_size, "patch_size")
        x = self.norm(self.proj(x))
        x = _contiguous_grad(x)
        if self.pos is not None:
            x = self.pos(x)
        H, W = x.shape[-2:]
        return rearrange(x, "b c h w -> b (h w) c"), (H, W)


class BasicStem(nn.Module):
    """The ResT v1 stem: three 3×3 convs (strides 2, 1, 2), then PA if ``with_pos``.

    Paper: "ResT: An Efficient Transformer for Visual Recognition", NeurIPS 2021 (arXiv
    2105.13677); official code: wofmanaf/ResT (``BasicStem``).

    Input B×in_ch×H×W, output B×out_ch×H'×W' (a feature map, about H/4 × W/4). Layers:
    conv 3×3/2 to out_ch//2 (no bias) + BN + ReLU; conv 3×3/1 (no bias) + BN + ReLU; conv 3×3/2
    to out_ch (no bias) with NO BatchNorm; PA. The ResT model builds it with ``with_pos=True``.

    Errors: wrong rank, channels != in_ch, ``out_ch`` < 2 (hidden width 0).
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 64, with_pos: bool = False) -> None:
        super().__init__()
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
        self.apply(init_official)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_feature_map(x, self.in_ch)
        x = F.relu(self.norm1(self.conv1(x)))
        x = F.relu(self.norm2(self.conv2(x)))
        x = self.conv3(x)
        return x if self.pos is None else self.pos(x)


class Mlp(nn.Module):
    """The transformer MLP: Linear(C→hidden), GELU, dropout, Linear(hidden→C), dropout.

    Input and output B×N×C. As in wofmanaf/ResT (``Mlp``, taken from timm).
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole sample's branch with probability ``p`` and
    scale the kept ones by 1/(1−p); the identity in eval or when ``p`` is 0 (as timm's DropPath).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path={p} must be in [0, 1)")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class Block(nn.Module):
    """The ResT v1 transformer block (pre-norm).

    Paper: "ResT: An Efficient Transformer for Visual Recognition", NeurIPS 2021 (arXiv
    2105.13677); official code: wofmanaf/ResT (``Block``).

    ``x ← x + DropPath(EMSA(LN(x), H, W))``, then ``x ← x + DropPath(MLP(LN(x)))`` with the MLP
    Linear(C→mlp_ratio·C), GELU, Linear(→C). Input B×N×C with the grid ``H, W``; output B×N×C.
    The official class uses ``drop`` for both the MLP dropout and EMSA's ``proj_drop``; so does
    this one. Errors as in :class:`EMSA`.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, sr_ratio: int = 1, apply_transform: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EMSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                         attn_drop=attn_drop, proj_drop=drop, sr_ratio=sr_ratio,
                         apply_transform=apply_transform)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.apply(init_official)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        check_tokens(x, self.norm1.normalized_shape[0], (H, W))
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))
