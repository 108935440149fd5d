"""The authors' whole-network state_dicts: how their keys map onto our networks.

``OFFICIAL_NETWORKS`` maps a whole-network kind of :func:`attn_tutorial.official.from_official`
to a builder ``make(state_dict=..., **official constructor arguments) -> (our network, renaming
rules)``; ``from_official`` then renames and loads strictly. The per-module renaming tables come
from :mod:`attn_tutorial._official_keys`, so this file does not import ``official`` (which
imports this file).

Whole networks: ``eca_resnet18`` ... ``eca_resnet152``, ``bam_resnet50``, ``scnet50``,
``scnet101``, ``epsanet50``, ``epsanet101``, ``rest_lite`` ... ``rest_large``. Segmentation
heads, from the state_dict of the head alone: ``danet_head`` (junfu1115/DANet ``DANetHead``;
in the authors' ``DANet`` model its keys start with ``head.``: strip that prefix and leave the
backbone's keys out) and ``eanet_head`` (MenghaoGuo/EANet ``EANet`` without its backbone: its
keys ``fc0.``, ``linu.``, ``fc1.``, ``fc2.``; leave the ``extractor.`` keys out).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn as nn

from .._official_keys import (BAM_RULES, CAM_RULES, EPSA_BLOCK_RULES, PA_RULES, PAM_RULES,
                              PATCH_EMBED_RULES, REST_BLOCK_RULES, SCBOTTLENECK_RULES, Rule,
                              external_attention_rules, memories_are_tied, unchanged, under)
from .._validate import require_all, require_int
from ..danet import DANetHead
from .heads import EANetHead
from .resnets import ResNet, bam_resnet, eca_resnet, epsanet, scnet
from .rest_network import REST_VARIANTS, rest

__all__ = ["OFFICIAL_NETWORKS"]


def _uninitialised(make: Callable[[], nn.Module]) -> nn.Module:
    """``make()`` on the meta device, then given uninitialised CPU memory: ``from_official``
    overwrites every parameter and buffer (strictly; these networks have no non-persistent
    buffers), so running the initialisation first would only cost time (seconds for ResT's
    truncated normals)."""
    with torch.device("meta"):
        model = make()
    return model.to_empty(device="cpu")


def _resnet_rules(model: ResNet, block_rules: Callable[[str], list[Rule]]) -> list[Rule]:
    """Renaming rules for a whole ResNet: the stem and fc keep their names; every block's keys
    come from ``block_rules(prefix)``."""
    rules = []
    for stage in range(1, 5):
        for index in range(len(getattr(model, f"layer{stage}"))):
            rules += block_rules(f"layer{stage}.{index}.")
    return rules + unchanged("conv1.", "bn1.", "fc.")


def _eca_block_rules(prefix: str) -> list[Rule]:
    return [Rule(prefix + "eca.", prefix + "attention.")] + unchanged(prefix)


def _eca_kernels(state_dict: Mapping[str, torch.Tensor], depth: int) -> tuple[int, ...]:
    """Per-stage ECA kernel sizes read from the official keys ``layer{s}.0.eca.conv.weight``."""
    kernels = []
    for stage in range(1, 5):
        key = f"layer{stage}.0.eca.conv.weight"
        weight = state_dict.get(key)
        if weight is None:
            raise ValueError(f"missing key {key!r} in the official state_dict of "
                             f"eca_resnet{depth} (needed to read k_size)")
        if not isinstance(weight, torch.Tensor) or weight.dim() != 3:
            raise ValueError(f"state_dict[{key!r}] must be a 1×1×k tensor to read k_size from, "
                             f"got {getattr(weight, 'shape', type(weight).__name__)}")
        kernels.append(int(weight.shape[-1]))
    return tuple(kernels)


def _official_eca_resnet(depth: int):
    def make(*, state_dict, k_size: Sequence[int] | None = None, num_classes: int = 1000):
        """BangguWu/ECANet ``eca_resnet{depth}(k_size, num_classes)``; ``k_size`` is read from
        the state_dict when not given."""
        k_size = (_eca_kernels(state_dict, depth) if k_size is None
                  else require_all("k_size", k_size))
        model = _uninitialised(lambda: eca_resnet(depth, k_size, num_classes))
        return model, _resnet_rules(model, _eca_block_rules)
    return make


def _official_bam_resnet50(*, state_dict, num_classes: int = 1000):
    """Jongchan/attention-module ``ResidualNet("ImageNet", 50, num_classes, "BAM")``."""
    model = _uninitialised(lambda: bam_resnet(50, num_classes))
    rules = [r for s in (1, 2, 3) for r in under(f"bam{s}.", BAM_RULES, f"after.layer{s}.")]
    return model, rules + _resnet_rules(model, unchanged)


def _official_scnet(depth: int):
    def make(*, state_dict, num_classes: int = 1000):
        """backseason/SCNet ``scnet{depth}()`` (plain stem, no avd)."""
        model = _uninitialised(lambda: scnet(depth, num_classes))
        return model, _resnet_rules(model, lambda prefix: under(prefix, SCBOTTLENECK_RULES))
    return make


def _official_epsanet(depth: int):
    def make(*, state_dict, num_classes: int = 1000):
        """murufeng/EPSANet ``epsanet{depth}()`` ("Small")."""
        model = _uninitialised(lambda: epsanet(depth, num_classes))
        return model, _resnet_rules(model, lambda prefix: under(prefix, EPSA_BLOCK_RULES))
    return make


def _official_rest(variant: str):
    def make(*, state_dict, num_classes: int = 1000):
        """wofmanaf/ResT ``rest_{variant}(num_classes=...)`` (v1)."""
        model = _uninitialised(lambda: rest(variant, num_classes))
        rules = (unchanged("stem.conv1.", "stem.norm1.", "stem.conv2.", "stem.norm2.",
                           "stem.conv3.") + under("stem.pos.", PA_RULES))
        for i in (2, 3, 4):
            rules += under(f"patch_embed_{i}.", PATCH_EMBED_RULES)
        for i in range(1, 5):
            for j in range(len(getattr(model, f"stage{i}"))):
                rules += under(f"stage{i}.{j}.", REST_BLOCK_RULES)
        return model, rules + unchanged("norm.", "head.")
    return make


def _official_danet_head(*, state_dict, in_channels: int, out_channels: int):
    """junfu1115/DANet ``DANetHead(in_channels, out_channels, norm_layer=BatchNorm2d)``: inter
    channels in_channels // 4, CAM with the official softmax(max − E); forward returns the
    official tuple (sum, PAM-only, CAM-only logits)."""
    require_int("in_channels", in_channels)
    require_int("out_channels", out_channels)
    model = _uninitialised(lambda: DANetHead(in_channels, out_channels))
    rules = ([Rule("conv5a.", "pam_in."), Rule("conv5c.", "cam_in.")]
             + under("sa.", PAM_RULES, "pam.") + under("sc.", CAM_RULES, "cam.")
             + [Rule("conv51.", "pam_out."), Rule("conv52.", "cam_out."),
                # conv6/7/8 are Dropout2d (index 0, no parameters) + the 1×1 classifier
                Rule("conv6.1.", "classifier_pam.1."), Rule("conv7.1.", "classifier_cam.1."),
                Rule("conv8.1.", "classifier_sum.1.")])
    return model, rules


def _official_eanet_head(*, state_dict, n_classes: int):
    """MenghaoGuo/EANet ``EANet(n_classes, n_layers)`` without its backbone (``extractor``):
    ``fc0`` ConvBNReLU(2048 → 512), ``linu`` External_attention(512), ``fc1`` ConvBNReLU(512 →
    256) + Dropout2d(0.1), ``fc2`` Conv1×1(256 → n_classes); the bilinear upsampling to the image
    size that follows in the authors' forward is not part of the head. Tied memories when the
    two official memory weights are exact transposes (as the authors' constructor makes them)."""
    require_int("n_classes", n_classes)
    linu = {k[len("linu."):]: v for k, v in state_dict.items()
            if isinstance(k, str) and k.startswith("linu.")}
    tied = memories_are_tied(linu)
    model = _uninitialised(lambda: EANetHead(2048, n_classes, tie_memories=tied))
    rules = (unchanged("fc0.", "fc1.0.", "fc2.")
             + under("linu.", external_attention_rules(tied)))
    return model, rules


#: whole-network kinds for ``official.from_official``: name -> builder(state_dict=..., **official
#: constructor arguments) -> (our network, renaming rules)
OFFICIAL_NETWORKS = {
    **{f"eca_resnet{d}": _official_eca_resnet(d) for d in (18, 34, 50, 101, 152)},
    "bam_resnet50": _official_bam_resnet50,
    "scnet50": _official_scnet(50), "scnet101": _official_scnet(101),
    "epsanet50": _official_epsanet(50), "epsanet101": _official_epsanet(101),
    **{f"rest_{v}": _official_rest(v) for v in REST_VARIANTS},
    "danet_head": _official_danet_head,
    "eanet_head": _official_eanet_head,
}
