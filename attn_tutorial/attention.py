"""The baseline: plain multi-head scaled dot-product self-attention, on tokens and on feature maps.

Paper: Ashish Vaswani et al., "Attention Is All You Need", NeurIPS 2017, arXiv 1706.03762.
There is no official PyTorch repository for this baseline (the authors released
tensorflow/tensor2tensor); this is the textbook form the other mechanisms are compared with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._init import reset_torch_layers
from ._validate import (require_bool, require_divisible, require_feature_map, require_int,
                        require_probability, require_tokens)

__all__ = ["MultiHeadSelfAttention", "SelfAttention2d"]


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over tokens B×N×dim (output B×N×dim).

    q, k, v = three Linear(dim→dim) maps split into ``num_heads`` heads of width d = dim/heads
    (heads the slow factor, einops ``(heads d)``); weights = softmax over keys of q·kᵀ·d^−½
    (B×heads×N×N); out = weights·v, heads merged, Linear(dim→dim).

    ``use_sdpa=True`` runs ``F.scaled_dot_product_attention`` (fused, never materialises the
    N×N map); ``use_sdpa=False`` writes the same computation out step by step. They agree to
    rounding; with ``attn_drop`` > 0 in training they draw different dropout masks.
    ``attention_map(x)`` returns the weights, B×heads×N×N.

    Errors: ``dim`` not divisible by ``num_heads``; ``x`` not B×N×dim.
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, use_sdpa: bool = True) -> None:
        super().__init__()
        require_int("dim", dim)
        require_int("num_heads", num_heads)
        require_divisible("dim", dim, "num_heads", num_heads)
        require_probability("attn_drop", attn_drop)
        require_probability("proj_drop", proj_drop)
        require_bool("qkv_bias", qkv_bias)
        require_bool("use_sdpa", use_sdpa)
        self.dim = dim
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.use_sdpa = use_sdpa
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def reset_parameters(self) -> None:
        """PyTorch's default init of the four Linear layers, which construction applies (the
        textbook form has no initialisation of its own)."""
        reset_torch_layers(self)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        require_tokens(x, self.dim)
        split = "b n (heads d) -> b heads n d"
        return tuple(rearrange(lin(x), split, heads=self.num_heads)
                     for lin in (self.q, self.k, self.v))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The weights B×heads×N×N; each row sums to 1 over the keys."""
        q, k, _ = self._qkv(x)
        return ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×N×dim -> B×N×dim."""
        q, k, v = self._qkv(x)
        if self.use_sdpa:
            p = self.attn_drop.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        else:
            weights = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            out = self.attn_drop(weights) @ v
        out = rearrange(out, "b heads n d -> b n (heads d)")
        return self.proj_drop(self.proj(out))


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H·W positions of a feature map B×C×H×W.

    The map becomes N = H·W tokens in row-major order (einops ``(h w)``), goes
    through :class:`MultiHeadSelfAttention`, and is folded back to B×C×H×W;
    ``residual=True`` adds the input. One head by default (the plain form used as the
    baseline for position attention); every position attends to every other, so the cost grows
    as (H·W)². ``attention_map(x)`` returns the weights, B×heads×(H·W)×(H·W).

    Errors: wrong rank; channels != ``channels``; ``channels`` not divisible by ``num_heads``.
    """

    def __init__(self, channels: int, num_heads: int = 1, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, residual: bool = False,
                 use_sdpa: bool = True) -> None:
        super().__init__()
        require_int("channels", channels)
        require_bool("residual", residual)
        self.channels = channels
        self.residual = residual
        self.attn = MultiHeadSelfAttention(channels, num_heads, qkv_bias, attn_drop, proj_drop,
                                           use_sdpa)

    def reset_parameters(self) -> None:
        """PyTorch's default init, which construction applies (see
        :meth:`MultiHeadSelfAttention.reset_parameters`)."""
        self.attn.reset_parameters()

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The weights B×heads×(H·W)×(H·W)."""
        require_feature_map(x, self.channels)
        return self.attn.attention_map(rearrange(x, "b c h w -> b (h w) c"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W."""
        require_feature_map(x, self.channels)
        out = self.attn(rearrange(x, "b c h w -> b (h w) c"))
        out = rearrange(out, "b (h w) c -> b c h w", h=x.shape[2], w=x.shape[3])
        return x + out if self.residual else out
