"""DANet: Dual Attention Network — position (PAM) and channel (CAM) attention.

Paper: Fu, Liu, Tian, Li, Bao, Fang, Lu, "Dual Attention Network for Scene Segmentation",
CVPR 2019 (arXiv 1809.02983). Official code: junfu1115/DANet (``encoding/nn/da_att.py`` for
the modules, ``encoding/models/sseg/danet.py`` for the head).

PAM lets every position attend to every other position (N×N attention, N = H·W); CAM lets every
channel attend to every other channel (C×C attention). Both add their result to the input through
a learnable scalar ``gamma`` that starts at 0, so a fresh module is the identity.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import einsum, rearrange

from ._init import reset_torch_layers
from ._validate import (require_batch_statistics, require_bool, require_choice,
                        require_feature_map, require_int, require_optional_int,
                        require_positive_width, require_probability)

__all__ = ["PAM", "CAM", "DANetHead"]


class PAM(nn.Module):
    """Position attention module: ``y = gamma · (V Aᵀ) + x`` with ``A = softmax_j(q_i · k_j)``.

    Official: class ``PAM_Module``.

    Input x: B×C×H×W, output B×C×H×W; N = H·W tokens in row-major order ``(h w)``.

    * q, k = 1×1 convs C -> C//8 (bias), v = 1×1 conv C -> C (bias);
    * energy[b, i, j] = q[b, :, i] · k[b, :, j], **no** 1/sqrt(d) scaling;
    * A = softmax over the key axis j (each query row i sums to 1);
    * out[b, :, i] = Σ_j A[b, i, j] · v[b, :, j];  y = gamma · out + x, gamma initialised to 0.

    Args:
        channels: C (>= 8, since q/k have C // 8 channels).
        use_sdpa: compute the same thing with ``F.scaled_dot_product_attention(scale=1.0)``
            (equal up to rounding). This does not by itself avoid the N×N map: PyTorch's
            fused flash kernel needs q, k and v of one width, and PAM's v has C channels
            against C // 8 for q and k, so on the CPU SDPA takes its math path, which
            materialises the map (lesson 05 measures it and shows a way round). PyTorch's CUDA
            memory-efficient kernel checks only that q and k have one width (plus alignment),
            so on a GPU the fused path may accept PAM's shapes.

    Code vs paper: the paper describes C-channel query/key maps; the official code (and this
    module) uses C // 8 (following SAGAN). Neither scales the energy. The paper calls gamma
    alpha and writes the map as s_ji = softmax over i of B_i · C_j with j the query (arXiv
    1809.02983, Eq. 1-2): the same map as A here, its indices named the other way round.

    The sign of a trained gamma means nothing on its own: v = W_v x + b_v is learned, and
    gamma · (A v) = (−gamma) · (A (−v)), so negating gamma, W_v and b_v together gives the same
    module. Read gamma · out (gamma · W_v), not gamma (lesson 05 measures it on the zoo).

    ``attention_map(x)`` returns A (B×N×N, rows = queries) for lessons.
    """

    def __init__(self, channels: int, use_sdpa: bool = False) -> None:
        super().__init__()
        require_int("channels", channels)
        qk_channels = require_positive_width("channels", channels, 8, "the PAM query/key reduction")
        require_bool("use_sdpa", use_sdpa)
        self.channels = channels
        self.use_sdpa = use_sdpa
        self.query = nn.Conv2d(channels, qk_channels, kernel_size=1)
        self.key = nn.Conv2d(channels, qk_channels, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def reset_parameters(self) -> None:
        """The authors' initialisation, which construction applies: PyTorch's default for the 1×1
        convs (the official file sets none), gamma = 0."""
        reset_torch_layers(self)
        nn.init.zeros_(self.gamma)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """A: B×N×N, A[b, i, j] = weight of key position j for query position i (rows sum to 1)."""
        require_feature_map(x, self.channels)
        q = rearrange(self.query(x), "b d h w -> b (h w) d")
        k = rearrange(self.key(x), "b d h w -> b d (h w)")
        return torch.softmax(torch.bmm(q, k), dim=-1)  # energy b i j, softmax over keys j

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W."""
        require_feature_map(x, self.channels)
        height = x.shape[2]
        if self.use_sdpa:
            q = rearrange(self.query(x), "b d h w -> b 1 (h w) d")
            k = rearrange(self.key(x), "b d h w -> b 1 (h w) d")
            v = rearrange(self.value(x), "b c h w -> b 1 (h w) c")
            out = F.scaled_dot_product_attention(q, k, v, scale=1.0)
            out = rearrange(out, "b 1 (h w) c -> b c h w", h=height)
        else:
            attention = self.attention_map(x)  # b i j
            v = rearrange(self.value(x), "b c h w -> b c (h w)")
            out = einsum(v, attention, "b c j, b i j -> b c i")
            out = rearrange(out, "b c (h w) -> b c h w", h=height)
        return self.gamma * out + x


CAM_VARIANTS = {"official": "softmax(max − E)", "paper": "softmax(E)"}


class CAM(nn.Module):
    """Channel attention module: ``y = gamma · (A f) + x`` with A from the channel Gram matrix.

    Official: class ``CAM_Module``.

    Input x: B×C×H×W, output B×C×H×W. No convolutions; the only parameter is ``gamma`` (init 0).

    * f = x as B×C×N; energy E[b, c, c'] = Σ_n f[b, c, n] f[b, c', n];
    * ``variant="official"``: A = softmax_c'(max_c'' E[b, c, c''] − E[b, c, c']), computed like
      the official code (row max minus energy). Softmax ignores the shift, so this is
      softmax(−E): the *least* similar channels get the most weight;
    * ``variant="paper"``: A = softmax_c'(E), as written in the paper;
    * out[b, c, :] = Σ_c' A[b, c, c'] f[b, c', :];  y = gamma · out + x.

    Code vs paper: the sign of the energy (above). The authors kept max − E on purpose
    (junfu1115/DANet issue #9: to "prevent loss divergence during training"; issue #48: the
    paper's form was tried and "the performance is not good"), so the published results come
    from the official form. Neither scales the energy, so CAM softmaxes are very peaked for
    large N.

    Read the map with ``gamma`` and its sign (the paper calls it beta): CAM has no value conv,
    so out mixes the input channels themselves with weights >= 0; in the DANet head its input
    comes after a ReLU (>= 0), so out >= 0 and a negative gamma subtracts the channels its
    attention gathers (lesson 05 shows the zoo's models).

    ``attention_map(x)`` returns A (B×C×C, rows sum to 1) for lessons.
    """

    def __init__(self, channels: int | None = None,
                 variant: Literal["official", "paper"] = "official") -> None:
        super().__init__()
        require_optional_int("channels", channels)
        require_choice("variant", variant, CAM_VARIANTS)
        self.channels = channels
        self.variant = variant
        self.gamma = nn.Parameter(torch.zeros(1))

    def reset_parameters(self) -> None:
        """The authors' initialisation, which construction applies: gamma = 0."""
        nn.init.zeros_(self.gamma)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """A: B×C×C, A[b, c, c'] = weight of channel c' for output channel c (rows sum to 1)."""
        require_feature_map(x, self.channels)
        f = rearrange(x, "b c h w -> b c (h w)")
        energy = torch.bmm(f, f.transpose(1, 2))  # b c c'
        if self.variant == "official":
            energy = energy.max(dim=-1, keepdim=True).values - energy
        return torch.softmax(energy, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×C×H×W -> B×C×H×W."""
        attention = self.attention_map(x)
        f = rearrange(x, "b c h w -> b c (h w)")
        out = rearrange(torch.bmm(attention, f), "b c (h w) -> b c h w", h=x.shape[2])
        return self.gamma * out + x


def _conv3x3_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


def _classifier(in_channels: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(in_channels, num_classes, kernel_size=1))


class DANetHead(nn.Module):
    """The DANet segmentation head: a PAM branch and a CAM branch, summed.

    Official: class ``DANetHead``.

    Each branch: Conv3×3(in -> inter, no bias) + BN + ReLU -> PAM (or CAM) ->
    Conv3×3(inter -> inter, no bias) + BN + ReLU. The two branch outputs are summed; the sum,
    the PAM branch and the CAM branch each go through Dropout2d(dropout) + Conv1×1(inter ->
    num_classes, bias).

    Input x: B×in_channels×H×W. Output: a tuple ``(sum_logits, pam_logits, cam_logits)``, each
    B×num_classes×H×W (the official order). In the official model in_channels = 2048 and
    inter_channels = 512. Official submodule names: ``conv5a``/``conv5c`` (the branches' input
    convs, here ``pam_in``/``cam_in``), ``sa``/``sc`` (the modules), ``conv51``/``conv52``
    (``pam_out``/``cam_out``), ``conv6``/``conv7``/``conv8`` (the PAM, CAM and sum classifiers).

    Args:
        in_channels: channels of the backbone feature map.
        num_classes: output channels of each classifier.
        inter_channels: branch width, ``in_channels // 4`` by default (>= 8 for the PAM).
        cam_variant: ``"official"`` or ``"paper"`` (see :class:`CAM`).
        dropout: Dropout2d probability before each classifier (0.1 officially).
        use_sdpa: passed to the :class:`PAM`.

    Initialisation: PyTorch defaults (the official file sets none) and gamma = 0.
    """

    def __init__(self, in_channels: int, num_classes: int, inter_channels: int | None = None,
                 cam_variant: Literal["official", "paper"] = "official", dropout: float = 0.1,
                 use_sdpa: bool = False) -> None:
        super().__init__()
        require_int("in_channels", in_channels)
        require_int("num_classes", num_classes)
        require_optional_int("inter_channels", inter_channels)
        require_probability("dropout", dropout)
        require_choice("cam_variant", cam_variant, CAM_VARIANTS)
        require_bool("use_sdpa", use_sdpa)
        pam_rule = "the PAM's query/key width is inter_channels // 8"
        if inter_channels is None:
            require_int("in_channels", in_channels, 32,
                        f"inter_channels defaults to in_channels // 4 and {pam_rule}")
            inter_channels = in_channels // 4
        require_int("inter_channels", inter_channels, 8, pam_rule)
        self.in_channels = in_channels
        self.pam_in = _conv3x3_bn_relu(in_channels, inter_channels)
        self.cam_in = _conv3x3_bn_relu(in_channels, inter_channels)
        self.pam = PAM(inter_channels, use_sdpa=use_sdpa)
        self.cam = CAM(inter_channels, variant=cam_variant)
        self.pam_out = _conv3x3_bn_relu(inter_channels, inter_channels)
        self.cam_out = _conv3x3_bn_relu(inter_channels, inter_channels)
        self.classifier_pam = _classifier(inter_channels, num_classes, dropout)
        self.classifier_cam = _classifier(inter_channels, num_classes, dropout)
        self.classifier_sum = _classifier(inter_channels, num_classes, dropout)

    def reset_parameters(self) -> None:
        """The authors' initialisation, which construction applies: PyTorch's defaults (the
        official file sets none) and gamma = 0 in both attention modules."""
        reset_torch_layers(self)
        nn.init.zeros_(self.pam.gamma)
        nn.init.zeros_(self.cam.gamma)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: B×in×H×W -> (sum, pam-only, cam-only) logits, each B×classes×H×W."""
        require_feature_map(x, self.in_channels)
        B, _, H, W = x.shape
        require_batch_statistics(self.training, B * H * W, "the branch BatchNorms",
                                 f"x has batch size 1 and H×W = {H}×{W}")
        # Same call order as the official head, so train-mode dropout masks match for one seed.
        pam_feat = self.pam_out(self.pam(self.pam_in(x)))
        pam_logits = self.classifier_pam(pam_feat)
        cam_feat = self.cam_out(self.cam(self.cam_in(x)))
        cam_logits = self.classifier_cam(cam_feat)
        return self.classifier_sum(pam_feat + cam_feat), pam_logits, cam_logits
