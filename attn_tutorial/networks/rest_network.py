"""ResT v1 as a whole network (wofmanaf/ResT ``ResT``, ``rest_lite`` ... ``rest_large``), assembled
from :class:`~attn_tutorial.rest.BasicStem`, :class:`~attn_tutorial.rest.PatchEmbed` and
:class:`~attn_tutorial.rest.Block`."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from einops import rearrange, reduce

from .._validate import require_choice, require_int
from ..rest import BasicStem, Block, PatchEmbed, _rest_init

__all__ = ["ResT", "rest", "REST_VARIANTS"]


class ResT(nn.Module):
    """ResT v1 (wofmanaf/ResT ``ResT``): stem, four stages of :class:`Block`, LN, pool, head.

    ``stem`` (:class:`BasicStem` with PA) → tokens → ``stage1`` blocks → feature map →
    ``patch_embed_2`` (:class:`PatchEmbed`, p = 2, PA) → ``stage2`` → ... → ``stage4`` → ``norm``
    (LayerNorm) → global average → ``head`` (Linear).

    Input size: the stem gives a ⌈H/4⌉ × ⌈W/4⌉ grid and each patch embedding halves it rounding
    up (⌈H/8⌉, ⌈H/16⌉, ⌈H/32⌉). This network takes B×3×H×W when

    * H, W >= 17: the stage-4 patch embedding needs a grid of at least 2 (its patch size) on its
      input, ⌈H/16⌉ >= 2 (a ValueError naming ``patch_size`` below), and
    * H > 32 or W > 32: otherwise stage 4 has a single token, where the head transform's
      InstanceNorm cannot normalise a single attention weight (a ValueError).

    The authors' ``ResT`` takes far fewer sizes: their ``PatchEmbed`` reports the grid as
    ``H // 2`` while its conv gives ⌈H/2⌉, so every grid fed to a patch embedding must be even:
    ⌈H/4⌉ and ⌈W/4⌉ must be multiples of 8 (H, W in 32k − 3 ... 32k: 61×93 and 221×93 run, 60×60
    fails with a reshape error), and not both equal to 8 (at H, W <= 32 their InstanceNorm fails
    on the single stage-4 token). Where theirs runs, this one computes the same.
    """

    def __init__(self, embed_dims: Sequence[int] = (64, 128, 256, 512),
                 num_heads: Sequence[int] = (1, 2, 4, 8), mlp_ratios: Sequence[float] = (4, 4, 4, 4),
                 qkv_bias: bool = True, depths: Sequence[int] = (2, 2, 2, 2),
                 sr_ratios: Sequence[int] = (8, 4, 2, 1), apply_transform: bool = True,
                 drop_path_rate: float = 0.0, num_classes: int = 1000) -> None:
        super().__init__()
        require_int("num_classes", num_classes)
        self.stem = BasicStem(3, embed_dims[0], with_pos=True)
        for i in (2, 3, 4):
            self.add_module(f"patch_embed_{i}", PatchEmbed(2, embed_dims[i - 2],
                                                           embed_dims[i - 1], with_pos=True))
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        start = 0
        for i in range(4):
            self.add_module(f"stage{i + 1}", nn.ModuleList(
                Block(embed_dims[i], num_heads[i], mlp_ratios[i], qkv_bias,
                      drop_path=rates[start + j], sr_ratio=sr_ratios[i],
                      apply_transform=apply_transform)
                for j in range(depths[i])))
            start += depths[i]
        self.norm = nn.LayerNorm(embed_dims[3])
        self.head = nn.Linear(embed_dims[3], num_classes)
        self.apply(_rest_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.stem(x)
        H, W = fmap.shape[-2:]
        tokens = rearrange(fmap, "b c h w -> b (h w) c")
        for i in range(1, 5):
            if i > 1:
                fmap = rearrange(tokens, "b (h w) c -> b c h w", h=H, w=W)
                tokens, (H, W) = getattr(self, f"patch_embed_{i}")(fmap)
            blocks = getattr(self, f"stage{i}")
            if H * W == 1 and blocks[0].attn.apply_transform:
                raise ValueError(
                    f"x of shape {tuple(x.shape)} leaves a 1×1 grid at stage {i}: the head "
                    "transform's InstanceNorm needs more than one attention weight per head; "
                    "use H or W > 32 (e.g. 64)")
            for blk in blocks:
                tokens = blk(tokens, H, W)
        return self.head(reduce(self.norm(tokens), "b n c -> b c", "mean"))


REST_VARIANTS = {"lite": dict(depths=(2, 2, 2, 2)),
                  "small": dict(depths=(2, 2, 6, 2)),
                  "base": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 6, 2)),
                  "large": dict(embed_dims=(96, 192, 384, 768), depths=(2, 2, 18, 2))}


def rest(variant: str = "lite", num_classes: int = 1000, **kwargs) -> ResT:
    """ResTv1-Lite/S/B/L (``rest_lite`` ... ``rest_large``): qkv_bias and the head transform on."""
    require_choice("variant", variant, {v: f"rest_{v}" for v in REST_VARIANTS})
    return ResT(num_classes=num_classes, **{**REST_VARIANTS[variant], **kwargs})
