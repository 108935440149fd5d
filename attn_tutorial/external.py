"""External attention: two small learnable memories and a double normalisation.

Paper: Meng-Hao Guo, Zheng-Ning Liu, Tai-Jiang Mu and Shi-Min Hu, "Beyond Self-attention:
External Attention using Two Linear Layers for Visual Tasks", arXiv 2105.02358 (TPAMI 2022).
Official code: MenghaoGuo/EANet (``model_torch.py`` class ``External_attention``, and
``EAMLP/models/transformer_block.py`` class ``Attention``).

The core works on tokens ``... × N × C``: logits against a key memory M_k (S×C), a softmax over
the N tokens (not over the memory!), an l1 normalisation over the S memory slots, and a value
memory M_v (C×S) back to C channels. :class:`ExternalAttention` applies it to a B×C×H×W feature
map, :class:`MultiHeadExternalAttention` to B×N×C tokens split into heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._init import reset_torch_layers
from ._validate import (require_batch_statistics, require_bool, require_divisible,
                        require_feature_map, require_floating, require_int, require_number,
                        require_probability, require_tokens)

__all__ = ["double_normalise", "external_attention", "ExternalAttention",
           "MultiHeadExternalAttention"]


def double_normalise(logits: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """The double normalisation of logits ``... × N × S``.

    First a softmax over the N tokens (axis −2), so each memory slot's weights over the tokens
    sum to 1; then each token's weights are divided by their sum over the S slots (axis −1) plus
    ``eps`` = 1e-9, so each token's row over the memory sums to 1 (up to eps).

    A token whose weights all underflow to 0 gets 0 / eps = 0. In float16 1e-9 is itself 0
    (the smallest float16 is 2^-24 ≈ 6e-8) and 0 / 0 would be NaN, so a positive eps is raised
    to the dtype's smallest positive number where it is smaller (float16: 2^-24; float32,
    float64 and bfloat16 keep 1e-9). ``eps=0`` is the plain division.
    """
    require_floating("logits", logits)
    require_number("eps", eps, minimum=0)
    attn = logits.softmax(dim=-2)
    smallest = torch.finfo(attn.dtype).tiny * torch.finfo(attn.dtype).eps  # float16: 2^-24
    eps = max(eps, smallest) if eps > 0 else eps  # 1e-9 is 0 in float16
    return attn / (eps + attn.sum(dim=-1, keepdim=True))


def external_attention(x: torch.Tensor, memory_key: torch.Tensor, memory_value: torch.Tensor,
                       key_bias: torch.Tensor | None = None,
                       value_bias: torch.Tensor | None = None,
                       attn_drop: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """External attention of tokens ``x`` (... × N × C) with memories M_k (S×C) and M_v (C×S).

    ``attn = double_normalise(x M_kᵀ + key_bias)`` (... × N × S), optional dropout on it, then
    ``out = attn M_vᵀ + value_bias`` (... × N × C). Returns ``(out, attn)``, attn before dropout.
    """
    require_floating("x", x)
    C, S = x.shape[-1], memory_key.shape[0]
    for name, memory, shape in (("memory_key", memory_key, (S, C)),
                                ("memory_value", memory_value, (C, S))):
        if tuple(memory.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(memory.shape)} but x's C={C} and "
                             f"memory_key's S={S} need {shape}")
    attn = double_normalise(F.linear(x, memory_key, key_bias))
    dropped = attn if attn_drop is None else attn_drop(attn)
    return F.linear(dropped, memory_value, value_bias), attn


class ExternalAttention(nn.Module):
    """The external-attention block of the EANet segmentation head (official
    ``External_attention(c)``).

    Official: ``External_attention`` in ``model_torch.py``.

    Input B×C×H×W, output B×C×H×W:
    ``relu(x + BN(conv_out(M_v · double_normalise(M_k · conv_in(x)))))`` with conv_in a 1×1
    conv with bias, M_k a S×C memory (no bias), softmax over the N = H·W pixels, l1 over the S
    slots (+1e-9), M_v a C×S memory (no bias), conv_out a 1×1 conv without bias, then BatchNorm.

    Code vs paper:

    * ``tie_memories=True`` (default, the official code): M_v is M_kᵀ. The official module assigns
      a permuted view of ``linear_0``'s storage to ``linear_1``: two Parameters on one storage,
      which stay exact transposes through any optimiser's steps, each step writing two updates
      into the storage. Here the tie is ONE parameter ``memory_key.weight`` used twice, whose
      gradient is the sum of both uses'. The two agree step for step only under plain SGD (with
      or without momentum, both linear in the gradient): weight decay is applied once per
      Parameter, so the shared storage decays about twice as fast, and Adam/AdamW normalise each
      Parameter's gradient separately (lesson 07, section 5, measures both). A tie by shared
      storage lasts only until a conversion copies it: ``Module._apply`` with a real change
      (``.cuda()``, ``.double()``, ``.half()``) gives each parameter its own copy (a no-op such
      as ``.float()`` on float32 keeps the one storage), and so does ``copy.deepcopy`` (an EMA
      copy, for example). The official ``train_torch.py`` calls ``.cuda()`` on the network before
      it builds the optimiser, so the released training updated two memories that started equal.
      ``tie_memories=False`` gives the independent memory M_v of the paper's description.
    * S = 64 is hard-coded in the code (``memory_size=64`` here).
    * The segmentation code uses SyncBN (momentum 0.1); this uses BatchNorm2d(momentum 0.1).

    Official init: 1×1 convs normal(0, √(2/C)), conv_in bias at PyTorch's default; M_k
    normal(0, √(2/S)) then, with the tie, overwritten through the shared storage by M_v's
    normal(0, √(2/C)), so a tied memory ends with std √(2/C); untied M_v normal(0, √(2/C));
    BN weight 1, bias 0.

    Errors: wrong rank, channels != ``channels``, ``memory_size`` < 1; in train mode, batch 1
    with a 1×1 map (the BatchNorm has one value per channel).
    ``attention_map(x)`` returns the double-normalised weights B×N×S (tokens first; the
    official code holds them as B×S×N).
    """

    def __init__(self, channels: int, memory_size: int = 64, tie_memories: bool = True) -> None:
        super().__init__()
        require_int("channels", channels)
        require_int("memory_size", memory_size)
        require_bool("tie_memories", tie_memories)
        self.channels = channels
        self.memory_size = memory_size
        self.tie_memories = tie_memories
        self.conv_in = nn.Conv2d(channels, channels, kernel_size=1, bias=True)
        self.memory_key = nn.Linear(channels, memory_size, bias=False)
        self.memory_value = None if tie_memories else nn.Linear(memory_size, channels, bias=False)
        self.conv_out = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.norm = nn.BatchNorm2d(channels, momentum=0.1)
        self._official_weights()

    def reset_parameters(self) -> None:
        """The official initialisation (above), which construction applies: PyTorch's defaults
        (the conv_in bias keeps its), then the official weights."""
        reset_torch_layers(self)
        self._official_weights()

    def _official_weights(self) -> None:
        std_c = math.sqrt(2.0 / self.channels)
        for conv in (self.conv_in, self.conv_out):
            nn.init.normal_(conv.weight, 0.0, std_c)
        if self.tie_memories:
            nn.init.normal_(self.memory_key.weight, 0.0, std_c)
        else:
            nn.init.normal_(self.memory_key.weight, 0.0, math.sqrt(2.0 / self.memory_size))
            nn.init.normal_(self.memory_value.weight, 0.0, std_c)

    @property
    def memory_value_weight(self) -> torch.Tensor:
        """M_v (C×S): the transpose of M_k when tied, else its own parameter."""
        if self.memory_value is None:
            return self.memory_key.weight.t()
        return self.memory_value.weight

    def _pixel_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """conv_in(x) as tokens B×N×C (N = H·W, row-major)."""
        require_feature_map(x, self.channels)
        B, _, H, W = x.shape
        require_batch_statistics(self.training, B * H * W, "the output BatchNorm",
                                 f"x has batch size 1 and H×W = {H}×{W}")
        # two steps so the tokens are a transposed view, not a copy
        flat = rearrange(self.conv_in(x), "b c h w -> b c (h w)")
        return rearrange(flat, "b c n -> b n c")

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The double-normalised weights B×N×S."""
        return double_normalise(F.linear(self._pixel_tokens(x), self.memory_key.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W."""
        tokens = self._pixel_tokens(x)
        out, _ = external_attention(tokens, self.memory_key.weight, self.memory_value_weight)
        out = rearrange(out, "b (h w) c -> b c h w", h=x.shape[2], w=x.shape[3])
        return F.relu(self.norm(self.conv_out(out)) + x)


class MultiHeadExternalAttention(nn.Module):
    """Multi-head external attention of EAMLP (the official ``Attention`` in
    ``EAMLP/models/transformer_block.py``), a drop-in for self-attention in a ViT block.

    Input B×N×dim, output B×N×dim:

    1. ``expand`` = Linear(dim → 4·dim, bias).
    2. Split into 4·num_heads heads of width d = dim/num_heads (heads the slow factor,
       einops ``(heads d)``).
    3. ``memory_key`` = Linear(d → 64, bias), shared by all heads; softmax over the N tokens;
       l1 over the 64 slots (+1e-9); attention dropout.
    4. ``memory_value`` = Linear(64 → d, bias); merge heads; ``proj`` = Linear(4·dim → dim);
       dropout.

    Code vs paper: there is no 1/√d scaling and no tie here; the expansion factor 4 and the
    memory 256/4 = 64 are hard-coded in the code (``expansion=4``, ``memory_size=64`` here). The
    official constructor accepts ``qkv_bias`` and ``qk_scale`` and ignores them; they are left
    out. Init as T2T-ViT: Linear weights truncated normal std 0.02, biases 0.

    Errors: ``dim`` not divisible by ``num_heads``; ``x`` not B×N×dim.
    ``attention_map(x)`` returns the double-normalised weights B×(4·num_heads)×N×64.
    """

    def __init__(self, dim: int, num_heads: int = 8, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, memory_size: int = 64, expansion: int = 4) -> None:
        super().__init__()
        require_int("dim", dim)
        require_int("num_heads", num_heads)
        require_divisible("dim", dim, "num_heads", num_heads)
        require_int("memory_size", memory_size)
        require_int("expansion", expansion)
        require_probability("attn_drop", attn_drop)
        require_probability("proj_drop", proj_drop)
        self.dim = dim
        self.heads = expansion * num_heads
        head_dim = dim // num_heads
        self.expand = nn.Linear(dim, expansion * dim)
        self.memory_key = nn.Linear(head_dim, memory_size)
        self.memory_value = nn.Linear(memory_size, head_dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(expansion * dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation (T2T-ViT's): Linear weights truncated normal std 0.02,
        biases 0."""
        for lin in (self.expand, self.memory_key, self.memory_value, self.proj):
            nn.init.trunc_normal_(lin.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(lin.bias)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        require_tokens(x, self.dim)
        return rearrange(self.expand(x), "b n (heads d) -> b heads n d", heads=self.heads)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The double-normalised weights B×heads×N×S (before dropout)."""
        return double_normalise(self.memory_key(self._heads(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×N×dim -> B×N×dim."""
        out, _ = external_attention(self._heads(x), self.memory_key.weight,
                                    self.memory_value.weight, self.memory_key.bias,
                                    self.memory_value.bias, self.attn_drop)
        out = rearrange(out, "b heads n d -> b n (heads d)")
        return self.proj_drop(self.proj(out))
