"""ECA: Efficient Channel Attention, with SE and the ECA paper's ablation variants beside it.

Paper: Wang, Wu, Zhu, Li, Zuo, Hu, "ECA-Net: Efficient Channel Attention for Deep Convolutional
Neural Networks", CVPR 2020 (arXiv 1910.03151). Official code: BangguWu/ECANet
(``models/eca_module.py``, ``models/eca_ns.py``). The baseline SE: Hu, Shen, Sun,
"Squeeze-and-Excitation Networks", CVPR 2018 (arXiv 1709.01507); official code hujie-frank/SENet
(Caffe). The ablation variants SE-Var1/2/3 and SE-GC are the ECA paper's (Table 2), with no
official code.

Every module here is a *channel gate*: average each channel over space (GAP, B×C), map the C
averages to C logits, squash them with a sigmoid, and rescale the input channel by channel. They
differ only in the map from C averages to C logits, and every one of them except SE is a C×C
matrix, which ``channel_matrix()`` returns:

=============  ==========================================  =================================
module         logits from the averages ``y`` (B×C)          C×C matrix
=============  ==========================================  =================================
``SE``         ``W2 relu(W1 y + b1) + b2`` (C -> C/r -> C)  none (nonlinear; W2·W1 shown)
``SEVar1``     ``y``                                         identity (no parameters)
``SEVar2``     ``w ⊙ y``                                     diagonal (C parameters)
``SEVar3``     ``W y``                                       full (C² parameters)
``SEGC``       group conv, G groups                          block diagonal (C²/G parameters)
``ECA``        1-D conv over the channel axis, k taps        banded, one shared k-tap row (k)
``ECANS``      k taps per channel                            banded, a row per channel (C·k)
=============  ==========================================  =================================
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, reduce, einsum

from ._init import reset_torch_layers
from ._validate import (require_bool, require_divisible, require_feature_map, require_int,
                        require_number, require_odd, require_optional_int,
                        require_positive_width, require_tensor)

__all__ = [
    "eca_kernel_size", "banded_matrix", "ECA", "ECANS",
    "SE", "SEVar1", "SEVar2", "SEVar3", "SEGC",
]


def eca_kernel_size(channels: int, gamma: float = 2, b: float = 1) -> int:
    """The paper's adaptive kernel size ψ(C): ``|log2(C)/γ + b/γ|`` rounded to an odd integer.

    Integer form: ``t = int(|(log2 C + b) / γ|)``, ``k = t`` if t is odd else ``t + 1`` (so the
    ties 4.0 and 6.0 round up). With γ = 2, b = 1: C = 16, 32, 64 -> 3; 128 ... 1024 -> 5;
    2048 -> 7. The official code has no such function: its modules take a fixed ``k_size``.
    """
    require_int("channels", channels)
    require_number("gamma", gamma, positive=True)
    require_number("b", b)
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 == 1 else t + 1


_ODD_K = ("the conv pads (k_size - 1) // 2 zeros at each end of the channel axis, which keeps C "
          "outputs centred on their channels only for odd k_size")


def banded_matrix(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """The C×C matrix of a zero-padded, centred 1-D cross-correlation over the channel axis.

    ``kernel`` is k taps (shared by all channels, shape k) or one row of k taps per channel
    (shape C×k). Entry ``[c, j]`` is the weight with which channel j enters output c:
    ``kernel[.., j - c + (k - 1) // 2]`` when that index lies in 0..k-1, else 0.
    """
    k = require_tensor("kernel", kernel).shape[-1]
    require_odd("k_size", k, _ODD_K)
    require_int("channels", channels)
    pad = (k - 1) // 2
    out = torch.arange(channels, device=kernel.device)
    src = torch.arange(channels, device=kernel.device)
    tap = rearrange(src, "j -> 1 j") - rearrange(out, "c -> c 1") + pad  # C×C tap index
    inside = (tap >= 0) & (tap < k)
    tap = tap.clamp(0, k - 1)
    if kernel.dim() == 1:
        values = kernel[tap]
    else:
        values = torch.gather(kernel, 1, tap)
    return torch.where(inside, values, torch.zeros((), dtype=kernel.dtype, device=kernel.device))


class _ChannelGate(nn.Module):
    """Shared forward of every gate here: ``x * sigmoid(logits(GAP(x)))``."""

    channels: int | None

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset_parameters(self) -> None:
        """The authors' initialisation, which construction applies: PyTorch's default init of
        every layer (the official models leave these gates at it)."""
        reset_torch_layers(self)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The channel weights: x B×C×H×W -> gate B×C, values in (0, 1)."""
        require_feature_map(x, self.channels)
        return torch.sigmoid(self.logits(reduce(x, "b c h w -> b c", "mean")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W."""
        return x * rearrange(self.attention_map(x), "b c -> b c 1 1")


class ECA(_ChannelGate):
    """Efficient Channel Attention: a k-tap 1-D conv across the channel axis of the GAP.

    Official: ``eca_layer`` in ``models/eca_module.py``.

    ``y = GAP(x)`` (B×C); ``z = conv1d(y, w)`` with one k-tap kernel ``w`` shared by all
    channels, no bias, ``(k - 1) // 2`` zeros padded at both ends of the channel axis, so
    ``z[c] = sum_i w[i] y[c + i - (k-1)//2]``; ``out = x * sigmoid(z)``. Channel neighbours are
    neighbours in index order. Input and output B×C×H×W, any H and W. Parameters: k.

    Args:
        channels: C. Optional for the fixed-k form (the official ``channel`` argument is unused);
            when given, inputs must have C channels. Required with ``adaptive=True``.
        k_size: the kernel size k, odd. Default 3 (the official default). Not allowed together
            with ``adaptive=True``.
        adaptive: ``False`` (default, the official code): k is ``k_size``. ``True`` (the paper):
            k = ψ(C) = :func:`eca_kernel_size` (C, gamma, b).
        gamma, b: the constants of ψ (paper: γ = 2, b = 1).

    Where the official code and the paper disagree:
      * the paper chooses k adaptively from C with ψ; the official module takes a fixed
        ``k_size`` and has no ψ code (``adaptive`` above);
      * the released checkpoints used hand-picked per-stage k that are not ψ(C): ResNet-50
        3, 5, 5, 7 where ψ gives 5, 5, 5, 7 (ResNet-18 3, 5, 7, 7; ResNet-34, -101, -152
        3, 3, 5, 7; MobileNetV2 1 for its narrow stages, else 3: ``c <= 96`` in the code
        published with the checkpoint, ``c < 96`` since BangguWu/ECANet#32, 2020).

    Initialisation: the conv keeps PyTorch's default Conv1d init, U(±1/√k), as in the official
    models (their ResNet init touches only Conv2d and BatchNorm).

    Parameter names: official ``conv.weight`` [1, 1, k] -> ``conv.weight`` [1, 1, k].
    """

    def __init__(self, channels: int | None = None, k_size: int | None = None, *,
                 adaptive: bool = False, gamma: float = 2, b: float = 1) -> None:
        super().__init__()
        if require_bool("adaptive", adaptive):
            if channels is None:
                raise ValueError("adaptive=True needs channels: the paper's k = ψ(C) depends on C")
            if k_size is not None:
                raise ValueError(
                    f"k_size={k_size!r} together with adaptive=True: give either a fixed k_size "
                    "(official) or adaptive=True (paper, k = ψ(C)), not both"
                )
            k_size = eca_kernel_size(channels, gamma, b)
        elif k_size is None:
            k_size = 3
        require_optional_int("channels", channels)
        self.channels = channels
        self.k_size = require_odd("k_size", k_size, _ODD_K)
        self.adaptive = adaptive
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """GAP values B×C -> logits B×C: the 1-D conv runs along the channel axis."""
        along_channels = rearrange(pooled, "b c -> b 1 c")  # C is the conv's "length"
        return rearrange(self.conv(along_channels), "b 1 c -> b c")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W; the same as ``x * attention_map(x)``, with the pooled channels laid out
        as the conv's length from the start (two einops calls instead of four: the module is so
        cheap that a few microseconds of shape bookkeeping are visible next to the official)."""
        require_feature_map(x, self.channels)
        logits = self.conv(reduce(x, "b c h w -> b 1 c", "mean"))  # b 1 c: C is the "length"
        return x * torch.sigmoid(rearrange(logits, "b 1 c -> b c 1 1"))

    def channel_matrix(self, channels: int | None = None) -> torch.Tensor:
        """The banded C×C matrix M with ``logits = einsum(y, M, 'b j, c j -> b c')``.

        Every row holds the same k taps, shifted one column per row (a Toeplitz band of width k).
        """
        channels = channels if channels is not None else self.channels
        if channels is None:
            raise ValueError("channel_matrix needs channels: pass channels=C (built without it)")
        return banded_matrix(rearrange(self.conv.weight, "1 1 k -> k"), channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}, adaptive={self.adaptive}"


class ECANS(_ChannelGate):
    """ECA-NS ("non-shared"), the ECA paper's ablation: a k-tap kernel of its own per channel.

    The paper's ablation of weight sharing. Official: ``eca_layer`` in ``models/eca_ns.py``.

    ``z[c] = sum_i w[c, i] y[c + i - (k-1)//2]`` with zeros outside 0..C-1: the channel axis of
    the GAP is cut into C overlapping windows of k neighbours, and each channel takes its own
    weighted sum of its window. ``out = x * sigmoid(z)``. B×C×H×W -> B×C×H×W. Parameters: C·k.

    The official code gets the windows with ``unfold`` and applies a depthwise Conv1d (groups=C)
    to them; here the windows are cut with ``Tensor.unfold`` and contracted with ``einsum``; the
    weight keeps the depthwise conv's layout and default init, U(±1/√k).

    Parameter names: official ``conv.weight`` [C, 1, k] -> ``conv.weight`` [C, 1, k].
    """

    def __init__(self, channels: int, k_size: int = 3) -> None:
        super().__init__()
        require_int("channels", channels)
        self.channels = channels
        self.k_size = require_odd("k_size", k_size, _ODD_K)
        self.conv = nn.Conv1d(channels, channels, kernel_size=k_size, groups=channels, bias=False)

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        pad = (self.k_size - 1) // 2
        windows = F.pad(pooled, (pad, pad)).unfold(-1, self.k_size, 1)  # B×C×k
        taps = rearrange(self.conv.weight, "c 1 k -> c k")
        return einsum(windows, taps, "b c k, c k -> b c")

    def channel_matrix(self) -> torch.Tensor:
        """The banded C×C matrix: the same band as ECA, but every row has its own k taps."""
        return banded_matrix(rearrange(self.conv.weight, "c 1 k -> c k"), self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, k_size={self.k_size}"


class SE(_ChannelGate):
    """Squeeze-and-Excitation, the baseline that ECA simplifies.

    The SE paper's block (cited above), as compared in the ECA paper.

    ``y = GAP(x)`` (B×C) -> Linear(C -> C//r, bias) -> ReLU -> Linear(C//r -> C, bias) -> sigmoid
    -> ``out = x * gate``. B×C×H×W -> B×C×H×W. Parameters: 2·C·(C//r) + C//r + C.
    The ECA paper's objection: the bottleneck C -> C/r (dimensionality reduction) makes the
    correspondence between a channel and its weight indirect.

    Parameters: ``fc_reduce`` and ``fc_expand`` (``nn.Linear``). The official SE code is Caffe;
    a PyTorch checkpoint that stores the two layers as 1×1 convs maps by dropping the trailing
    ``1×1`` of each weight.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        require_int("channels", channels)
        hidden = require_positive_width("channels", channels, reduction, "reduction")
        self.channels = channels
        self.fc_reduce = nn.Linear(channels, hidden)
        self.relu = nn.ReLU()
        self.fc_expand = nn.Linear(hidden, channels)

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc_expand(self.relu(self.fc_reduce(pooled)))

    def channel_matrix(self) -> torch.Tensor:
        """``W_expand @ W_reduce`` (C×C): SE's linear part with the ReLU and biases left out.

        Not SE's exact map (the ReLU sits between the two layers); shown because its rank is at
        most C // r: every channel's weight is squeezed through C // r numbers.
        """
        return self.fc_expand.weight @ self.fc_reduce.weight


class SEVar1(_ChannelGate):
    """SE-Var1 (ECA paper ablation): no parameters, ``gate = sigmoid(GAP(x))``.

    No official code for the variants (the ECA repository releases ECA and ECA-NS only).
    B×C×H×W -> B×C×H×W.
    """

    def __init__(self, channels: int | None = None) -> None:
        super().__init__()
        require_optional_int("channels", channels)
        self.channels = channels

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled

    def channel_matrix(self, channels: int | None = None) -> torch.Tensor:
        """The identity: each channel's logit is its own average."""
        channels = channels if channels is not None else self.channels
        if channels is None:
            raise ValueError("channel_matrix needs channels: pass channels=C (built without it)")
        return torch.eye(channels)


class SEVar2(_ChannelGate):
    """SE-Var2 (ECA paper ablation): one weight per channel, ``gate = sigmoid(w ⊙ GAP(x))``.

    Channels never mix:
    the C×C matrix is diagonal. No bias (the paper writes the map as a matrix). The weight starts
    like a depthwise 1×1 conv's default init, U(-1, 1). B×C×H×W -> B×C×H×W. Parameters: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        require_int("channels", channels)
        self.channels = channels
        self.weight = nn.Parameter(torch.empty(channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """U(-1, 1), a depthwise 1×1 conv's default init (no official code)."""
        nn.init.uniform_(self.weight, -1.0, 1.0)

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled * self.weight

    def channel_matrix(self) -> torch.Tensor:
        """diag(w)."""
        return torch.diag(self.weight)


class SEVar3(_ChannelGate):
    """SE-Var3 (ECA paper ablation): one full C×C layer, ``gate = sigmoid(W GAP(x))``.

    Every channel interacts with every other, without dimensionality reduction. No bias (the
    paper writes the map as a matrix). B×C×H×W -> B×C×H×W. Parameters: C².
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        require_int("channels", channels)
        self.channels = channels
        self.fc = nn.Linear(channels, channels, bias=False)

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)

    def channel_matrix(self) -> torch.Tensor:
        """W, full C×C."""
        return self.fc.weight


class SEGC(_ChannelGate):
    """SE-GC (ECA paper ablation): a group convolution C -> C with G groups on the GAP.

    The paper tries G = 2, 4, 8, …. Channel c interacts only with the C/G channels of its own
    group: the C×C matrix is block diagonal with G blocks of (C/G)×(C/G). A 1×1
    ``nn.Conv2d(C, C, 1, groups=G, bias=False)`` on the B×C×1×1 average, default init.
    B×C×H×W -> B×C×H×W. Parameters: C²/G.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        require_int("channels", channels)
        require_divisible("channels", channels, "groups", groups)
        self.channels = channels
        self.groups = groups
        self.conv = nn.Conv2d(channels, channels, kernel_size=1, groups=groups, bias=False)

    def logits(self, pooled: torch.Tensor) -> torch.Tensor:
        as_map = rearrange(pooled, "b c -> b c 1 1")
        return rearrange(self.conv(as_map), "b c 1 1 -> b c")

    def channel_matrix(self) -> torch.Tensor:
        """Block diagonal: G blocks, block g maps the inputs of group g to its outputs."""
        blocks = rearrange(self.conv.weight, "(g o) i 1 1 -> g o i", g=self.groups)
        return torch.block_diag(*blocks)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, groups={self.groups}"
