"""The segmentation heads of DANet and EANet (output stride 8, without their backbones).

DANet's head is :class:`attn_tutorial.danet.DANetHead` itself; EANet's is :class:`EANetHead`
below, around :class:`~attn_tutorial.external.ExternalAttention`. Both take any H, W >= 1."""

from __future__ import annotations

import torch
import torch.nn as nn

from .._validate import require_int
from ..external import ExternalAttention

__all__ = ["EANetHead", "FirstOutput"]


class _ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()


class EANetHead(nn.Module):
    """EANet's segmentation head (MenghaoGuo/EANet ``EANet``, without the backbone):
    ``fc0`` Conv3×3(in→512)+BN+ReLU → ``linu`` :class:`ExternalAttention` (512) → ``fc1``
    Conv3×3(512→256)+BN+ReLU + Dropout2d(0.1) → ``fc2`` Conv1×1(256→classes). Input the
    backbone's B×in×H×W map (any H, W >= 1), output B×classes×H×W (the authors then upsample
    bilinearly). ``tie_memories``: M_v = M_kᵀ as in the authors' constructor (see
    :class:`ExternalAttention`)."""

    def __init__(self, in_channels: int = 2048, num_classes: int = 21,
                 tie_memories: bool = True) -> None:
        super().__init__()
        require_int("in_channels", in_channels)
        require_int("num_classes", num_classes)
        if not isinstance(tie_memories, bool):
            raise ValueError(f"tie_memories={tie_memories!r} must be True or False")
        self.fc0 = _ConvBNReLU(in_channels, 512)
        self.linu = ExternalAttention(512, tie_memories=tie_memories)
        self.fc1 = nn.Sequential(_ConvBNReLU(512, 256), nn.Dropout2d(0.1))
        self.fc2 = nn.Conv2d(256, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(self.linu(self.fc0(x))))


class FirstOutput(nn.Module):
    """Counts a head that returns several outputs by its first (DANet: the sum branch)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)[0]
