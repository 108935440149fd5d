"""Load the authors' weights into this library's modules: ``from_official(kind, state_dict, ...)``.

Every mechanism in ``attn_tutorial`` computes what the authors' released code computes, but its
parameters have our own, readable names (``channel_gate.fc_reduce`` instead of
``channel_att.gate_c.gate_c_fc_0``). This module is the bridge. For each *kind* it knows

1. how to build our module from the **official constructor arguments** (same names, same
   defaults), and
2. a table of **renaming rules**: an official key prefix and the prefix it becomes here.

``from_official`` builds the module, renames every key of the official ``state_dict`` and loads
it **strictly**: every official key must be consumed, none of ours may be missing, every shape
must match; otherwise a ``ValueError`` names the offending official key. The module takes the
dtype and device of the state_dict's tensors. Its forward takes the official forward's arguments
and returns the official outputs, so it can replace the official module in the authors' models.

>>> sd = official_bam.state_dict()                  # doctest: +SKIP
>>> bam = from_official("bam", sd, gate_channel=256)  # doctest: +SKIP

Kinds (``OFFICIAL_KINDS``), the official class, and where our module differs on purpose:

=========================  ===================================================  ================
kind                       official class (repository)                          ours
=========================  ===================================================  ================
``bam``                    ``BAM`` (Jongchan/attention-module)                  ``bam.BAM``
``pam``, ``cam``           ``PAM_Module``, ``CAM_Module`` (junfu1115/DANet)     ``danet.PAM/CAM``
``eca``, ``eca_ns``        ``eca_layer`` (BangguWu/ECANet, two files)           ``eca.ECA/ECANS``
``scconv``                 ``SCConv`` (backseason/SCNet)                        ``scconv.SCConv``
``scbottleneck``           ``SCBottleneck`` (backseason/SCNet)                  ``SCBottleneck``
``psa``, ``epsa_block``    ``PSAModule``, ``EPSABlock`` (murufeng/EPSANet)      ``psa.PSA/...``
``emsa``                   ``Attention`` (wofmanaf/ResT, v1)                    ``rest.EMSA``
``rest_pa``                ``PA``                                               ``rest.PA``
``rest_patch_embed``       ``PatchEmbed``                                       ``PatchEmbed``
``rest_block``             ``Block``                                            ``rest.Block``
``external_attention``     ``External_attention`` (MenghaoGuo/EANet)            ``external...``
``external_attention_mh``  EAMLP ``Attention`` (MenghaoGuo/EANet)               ``MultiHead...``
=========================  ===================================================  ================

Whole networks (``OFFICIAL_NETWORKS``, defined in :mod:`attn_tutorial.networks.loaders`:
``eca_resnet18`` ... ``eca_resnet152``, ``bam_resnet50``, ``scnet50``, ``scnet101``,
``epsanet50``, ``epsanet101``, ``rest_lite`` ... ``rest_large``, and the segmentation heads
``danet_head`` and ``eanet_head``) load the same way, from the authors' state_dict of the whole
network (of the head alone for the two heads). The renaming tables shared by both live in
:mod:`attn_tutorial._official_keys`.

Where the official code is broken, the loaded module does the right thing instead:

* ``bam``: the official channel gate pools an H×H window (a global average only for square
  maps; wrong or crashing otherwise). Ours always pools globally, so the two agree exactly on
  square maps. The official ``ChannelGate`` cannot even be built as published (``NameError``).
* ``rest_patch_embed``: the official forward reports the grid as ``(H // p, W // p)``, which is
  wrong when the conv really produces ⌈H/p⌉ (odd sizes at p = 2). Ours returns the true grid; on
  sizes where the official value is right, the two agree.
"""

from __future__ import annotations

import copy
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ._official_keys import (BAM_RULES, CAM_RULES, EPSA_BLOCK_RULES, EMSA_RULES, PA_RULES,
                             PAM_RULES, PATCH_EMBED_RULES, PSA_RULES, REST_BLOCK_RULES,
                             SCBOTTLENECK_RULES, SCCONV_RULES, Rule, external_attention_rules,
                             memories_are_tied, unchanged)
from .bam import BAM
from .danet import CAM, PAM
from .eca import ECA, ECANS
from .external import ExternalAttention, MultiHeadExternalAttention
from .networks.loaders import OFFICIAL_NETWORKS
from .psa import PSA, EPSABlock
from .rest import EMSA, PA, Block, PatchEmbed
from .scconv import SCBottleneck, SCConv

__all__ = ["OFFICIAL_KINDS", "OFFICIAL_NETWORKS", "Rule", "from_official", "official_rules",
           "memories_are_tied"]


# --------------------------------------------------------------------------------------------
# One builder per kind: the official constructor's signature -> (our module, renaming rules).
# The renaming tables are in attn_tutorial._official_keys (the whole networks use them too).
# --------------------------------------------------------------------------------------------

def _bam(gate_channel: int) -> tuple[nn.Module, list[Rule]]:
    """``BAM(gate_channel)``: r = 16, two dilated convs (dilation 4), product fusion."""
    return BAM(gate_channel), BAM_RULES


def _pam(in_dim: int) -> tuple[nn.Module, list[Rule]]:
    """``PAM_Module(in_dim)``."""
    return PAM(in_dim), PAM_RULES


def _cam(in_dim: int) -> tuple[nn.Module, list[Rule]]:
    """``CAM_Module(in_dim)``: softmax(max − E), the official sign."""
    return CAM(in_dim, variant="official"), CAM_RULES


def _eca(channel: int, k_size: int = 3) -> tuple[nn.Module, list[Rule]]:
    """``eca_layer(channel, k_size=3)`` of ``eca_module.py``. The official code ignores
    ``channel``; here it is kept and inputs must have that many channels."""
    return ECA(channel, k_size), unchanged("conv.")


def _eca_ns(channel: int, k_size: int) -> tuple[nn.Module, list[Rule]]:
    """``eca_layer(channel, k_size)`` of ``eca_ns.py`` (a k-tap kernel per channel)."""
    return ECANS(channel, k_size), unchanged("conv.")


def _scconv(inplanes: int, planes: int, stride: int, padding: int, dilation: int, groups: int,
            pooling_r: int) -> tuple[nn.Module, list[Rule]]:
    """``SCConv(inplanes, planes, stride, padding, dilation, groups, pooling_r, BatchNorm2d)``.

    The official class needs inplanes == planes (its input is added to the K2 path)."""
    if inplanes != planes:
        raise ValueError(f"inplanes={inplanes} must equal planes={planes}: SCConv adds its input "
                         "to the output of the K2 path")
    module = SCConv(planes, stride=stride, padding=padding, dilation=dilation, groups=groups,
                    pooling_r=pooling_r)
    return module, SCCONV_RULES


def _scbottleneck(inplanes: int, planes: int, stride: int = 1,
                  downsample: nn.Module | None = None, cardinality: int = 1,
                  bottleneck_width: int = 32, avd: bool = False, dilation: int = 1,
                  is_first: bool = False) -> tuple[nn.Module, list[Rule]]:
    """``SCBottleneck(...)`` with BatchNorm2d. ``downsample`` (None or any module, its keys under
    ``downsample.``) is deep-copied, so the caller's module is never modified."""
    module = SCBottleneck(inplanes, planes, stride=stride,
                          downsample=copy.deepcopy(downsample), cardinality=cardinality,
                          bottleneck_width=bottleneck_width, avd=avd, dilation=dilation,
                          is_first=is_first)
    return module, SCBOTTLENECK_RULES


def _check_four(conv_kernels: Sequence[int], conv_groups: Sequence[int]) -> None:
    if len(conv_kernels) != 4 or len(conv_groups) != 4:
        raise ValueError(f"conv_kernels={list(conv_kernels)} and conv_groups={list(conv_groups)} "
                         "must have 4 entries each: the official PSAModule has exactly four "
                         "branches (conv_1 ... conv_4)")


def _official_psa(inplans: int, planes: int, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                  stride: int = 1, conv_groups: Sequence[int] = (1, 4, 8, 16)) -> tuple[nn.Module, list[Rule]]:
    """``PSAModule(inplans, planes, conv_kernels, stride, conv_groups)`` (official reversed
    concatenation, SE reduction 16)."""
    _check_four(conv_kernels, conv_groups)
    module = PSA(inplans, planes, conv_kernels=conv_kernels, stride=stride,
                 conv_groups=conv_groups)
    return module, PSA_RULES


def _epsa_block(inplanes: int, planes: int, stride: int = 1,
                downsample: nn.Module | None = None, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                conv_groups: Sequence[int] = (1, 4, 8, 16)) -> tuple[nn.Module, list[Rule]]:
    """``EPSABlock(inplanes, planes, stride, downsample, BatchNorm2d, conv_kernels,
    conv_groups)``; ``downsample`` as in ``scbottleneck``."""
    _check_four(conv_kernels, conv_groups)
    module = EPSABlock(inplanes, planes, stride=stride, downsample=copy.deepcopy(downsample),
                       conv_kernels=conv_kernels, conv_groups=conv_groups)
    return module, EPSA_BLOCK_RULES


def _emsa(dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
          attn_drop: float = 0.0, proj_drop: float = 0.0, sr_ratio: int = 1,
          apply_transform: bool = False) -> tuple[nn.Module, list[Rule]]:
    """ResT v1 ``Attention(...)``; forward ``(x, H, W)``."""
    module = EMSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                  attn_drop=attn_drop, proj_drop=proj_drop, sr_ratio=sr_ratio,
                  apply_transform=apply_transform)
    return module, EMSA_RULES


def _rest_pa(dim: int) -> tuple[nn.Module, list[Rule]]:
    """ResT v1 ``PA(dim)``."""
    return PA(dim), PA_RULES


def _rest_patch_embed(patch_size: int = 16, in_ch: int = 3, out_ch: int = 768,
                      with_pos: bool = False) -> tuple[nn.Module, list[Rule]]:
    """ResT v1 ``PatchEmbed(...)``; forward x -> (tokens, (H', W')) with the TRUE grid."""
    module = PatchEmbed(patch_size=patch_size, in_ch=in_ch, out_ch=out_ch, with_pos=with_pos)
    return module, PATCH_EMBED_RULES


def _rest_block(dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                drop_path: float = 0.0, sr_ratio: int = 1,
                apply_transform: bool = False) -> tuple[nn.Module, list[Rule]]:
    """ResT v1 ``Block(...)`` (LayerNorm, GELU); forward ``(x, H, W)``."""
    module = Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                   drop=drop, attn_drop=attn_drop, drop_path=drop_path, sr_ratio=sr_ratio,
                   apply_transform=apply_transform)
    return module, REST_BLOCK_RULES


def _external_attention(c: int, *, state_dict: Mapping[str, torch.Tensor]
                        ) -> tuple[nn.Module, list[Rule]]:
    """EANet ``External_attention(c)`` (S = 64). Tied memories (M_v = M_kᵀ, one parameter) when
    the two official memory weights are exact transposes, independent memories otherwise."""
    tied = memories_are_tied(state_dict)
    module = ExternalAttention(c, memory_size=64, tie_memories=tied)
    return module, external_attention_rules(tied)


def _external_attention_mh(dim: int, num_heads: int = 8, qkv_bias: bool = False,
                           qk_scale: float | None = None, attn_drop: float = 0.0,
                           proj_drop: float = 0.0) -> tuple[nn.Module, list[Rule]]:
    """EAMLP ``Attention(dim, num_heads, ...)``; ``qkv_bias`` and ``qk_scale`` are accepted and
    ignored, as in the official class."""
    del qkv_bias, qk_scale
    module = MultiHeadExternalAttention(dim, num_heads=num_heads, attn_drop=attn_drop,
                                        proj_drop=proj_drop)
    rules = [Rule("trans_dims.", "expand."), Rule("linear_0.", "memory_key."),
             Rule("linear_1.", "memory_value."), Rule("proj.", "proj.")]
    return module, rules


_BUILDERS: dict[str, Callable[..., tuple[nn.Module, list[Rule]]]] = {
    "bam": _bam,
    "pam": _pam,
    "cam": _cam,
    "eca": _eca,
    "eca_ns": _eca_ns,
    "scconv": _scconv,
    "scbottleneck": _scbottleneck,
    "psa": _official_psa,
    "epsa_block": _epsa_block,
    "emsa": _emsa,
    "rest_pa": _rest_pa,
    "rest_patch_embed": _rest_patch_embed,
    "rest_block": _rest_block,
    "external_attention": _external_attention,
    "external_attention_mh": _external_attention_mh,
}
_NEEDS_STATE_DICT = {"external_attention"}  # the builder looks at the weights (the tie)

OFFICIAL_KINDS: list[str] = list(_BUILDERS)


# --------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------

def _require_state_dict(state_dict: object) -> None:
    """A state_dict is a mapping of key names to tensors, not a file name or a tensor."""
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"state_dict is a {type(state_dict).__name__}: expected a state_dict mapping; load "
            "the file with torch.load first (e.g. from_official(kind, torch.load(path)))"
        )


def _build(kind: str, state_dict: Mapping[str, torch.Tensor], kwargs: dict
           ) -> tuple[nn.Module, list[Rule]]:
    _require_state_dict(state_dict)
    if not isinstance(kind, str):
        raise ValueError(f"kind={kind!r} must be a string, one of {OFFICIAL_KINDS} or the whole "
                         f"networks {list(OFFICIAL_NETWORKS)}")
    if kind not in _BUILDERS:
        if kind in OFFICIAL_NETWORKS:
            return OFFICIAL_NETWORKS[kind](state_dict=state_dict, **kwargs)
        raise ValueError(f"kind={kind!r} is not one of {OFFICIAL_KINDS} or the whole networks "
                         f"{list(OFFICIAL_NETWORKS)}")
    if kind in _NEEDS_STATE_DICT:
        return _BUILDERS[kind](state_dict=state_dict, **kwargs)
    return _BUILDERS[kind](**kwargs)


def official_rules(kind: str, state_dict: Mapping[str, torch.Tensor] | None = None,
                   **kwargs) -> list[Rule]:
    """The renaming rules used for ``kind`` with these official constructor arguments."""
    return _build(kind, {} if state_dict is None else state_dict, kwargs)[1]


def _dtype_class(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    if t.is_complex():
        return "complex"
    return "floating-point" if t.is_floating_point() else "integer"


def _float_like(state_dict: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    return next((t for t in state_dict.values()
                 if isinstance(t, torch.Tensor) and t.is_floating_point()), None)


def from_official(kind: str, state_dict: Mapping[str, torch.Tensor], **kwargs) -> nn.Module:
    """Our module for ``kind``, built like the official class with ``kwargs`` (the official
    argument names and defaults), holding the official ``state_dict``.

    Strict: every key must be a string, every official key must be consumed, none of our
    parameters/buffers may be left without an official key, every shape must match, and every
    tensor must be of the same class of dtype as ours (floating point for weights and
    statistics, integer for ``num_batches_tracked``: an integer or bool tensor is not silently
    converted into a weight); otherwise a ``ValueError`` names the official key. The module is
    moved to the dtype and device of the state_dict's floating tensors and returned in train
    mode (as a freshly built official module is); call ``.eval()`` as you would on the official
    one. A state_dict without ``num_batches_tracked`` entries (saved by PyTorch before 0.4.1) is
    accepted, as torch's strict loading accepts it: the counters start at 0.
    """
    module, rules = _build(kind, state_dict, kwargs)
    like = _float_like(state_dict)
    if like is not None:
        module.to(device=like.device, dtype=like.dtype)
    expected = module.state_dict()
    shown = ", ".join(f"{k}={type(v).__name__ if isinstance(v, nn.Module) else repr(v)}"
                      for k, v in kwargs.items())
    where = f"from_official({kind!r}, ..., {shown})"

    loaded: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ValueError(f"{where}: the state_dict has the key {key!r} (a "
                             f"{type(key).__name__}); state_dict keys are strings, the official "
                             "module's parameter and buffer names")
        rule = next((r for r in rules if r.matches(key)), None)
        ours = rule.rename(key) if rule is not None else None
        if rule is None or (ours is not None and ours not in expected):
            raise ValueError(f"{where}: unexpected key {key!r} in the official state_dict "
                             "(the official module built with these arguments has no such entry)")
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: state_dict[{key!r}] is a {type(value).__name__}, "
                             "not a tensor")
        if ours is None:  # consumed (a tied memory), nothing to load
            continue
        need = tuple(expected[ours].shape) + ((1,) if rule.kernel_axis else ())
        if tuple(value.shape) != need:
            raise ValueError(f"{where}: state_dict[{key!r}] has shape {tuple(value.shape)}, "
                             f"expected {need}")
        if _dtype_class(value) != _dtype_class(expected[ours]):
            raise ValueError(f"{where}: state_dict[{key!r}] has dtype {value.dtype}, expected "
                             f"{_dtype_class(expected[ours])} values like our {ours!r} "
                             f"({expected[ours].dtype}); loading would convert them silently")
        loaded[ours] = value[..., 0] if rule.kernel_axis else value

    for ours in expected:
        # torch's strict loading accepts a BatchNorm without num_batches_tracked (what PyTorch
        # before 0.4.1 saved) and keeps the module's counter (0 here); so does this
        if ours not in loaded and not ours.endswith("num_batches_tracked"):
            official = next((r.official + ours[len(r.ours):] for r in rules
                             if r.ours is not None and ours.startswith(r.ours)
                             and (r.official.endswith(".") or ours == r.ours)), ours)
            raise ValueError(f"{where}: missing key {official!r} in the official state_dict "
                             f"(needed for our {ours!r})")
    module.load_state_dict(loaded, strict=True)
    return module
