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

Whole networks (``attn_tutorial.networks.OFFICIAL_NETWORKS``: ``eca_resnet18`` ... ``eca_resnet152``,
``bam_resnet50``, ``scnet50``, ``scnet101``, ``epsanet50``, ``epsanet101``, ``rest_lite`` ...
``rest_large``) load the same way, from the authors' full-network state_dict.

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
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from .bam import BAM
from .danet import CAM, PAM
from .eca import ECA, ECANS
from .external import ExternalAttention, MultiHeadExternalAttention
from .psa import PSA, EPSABlock
from .rest import EMSA, PA, Block, PatchEmbed
from .scconv import SCBottleneck, SCConv

__all__ = ["OFFICIAL_KINDS", "Rule", "from_official", "official_rules"]


@dataclass(frozen=True)
class Rule:
    """One renaming rule: an official key (or key prefix ending in ``.``) and ours.

    ``ours=None`` marks an official key that is checked and consumed but not loaded (EANet's tied
    memory ``linear_1.weight``, which is the transpose of ``linear_0.weight``).
    ``kernel_axis=True``: the official tensor has a trailing length-1 kernel axis (a Conv1d with
    kernel 1 standing in for a Linear); it is dropped.
    """

    official: str
    ours: str | None
    kernel_axis: bool = False

    def matches(self, key: str) -> bool:
        if self.official.endswith("."):
            return key.startswith(self.official)
        return key == self.official

    def rename(self, key: str) -> str | None:
        if self.ours is None:
            return None
        return self.ours + key[len(self.official):]


def _unchanged(*prefixes: str) -> list[Rule]:
    """Rules for submodules whose names are the same in both codes."""
    return [Rule(p, p) for p in prefixes]


def _under(prefix: str, rules: Sequence[Rule], ours_prefix: str | None = None) -> list[Rule]:
    """The same rules for a submodule: official ``prefix`` + key -> ours ``ours_prefix`` + key."""
    ours_prefix = prefix if ours_prefix is None else ours_prefix
    return [Rule(prefix + r.official, None if r.ours is None else ours_prefix + r.ours,
                 r.kernel_axis) for r in rules]


# --------------------------------------------------------------------------------------------
# One builder per kind: the official constructor's signature -> (our module, renaming rules).
# --------------------------------------------------------------------------------------------

_BAM_RULES = [
    Rule("channel_att.gate_c.gate_c_fc_0.", "channel_gate.fc_reduce."),
    Rule("channel_att.gate_c.gate_c_bn_1.", "channel_gate.bn."),
    Rule("channel_att.gate_c.gate_c_fc_final.", "channel_gate.fc_expand."),
    Rule("spatial_att.gate_s.gate_s_conv_reduce0.", "spatial_gate.reduce."),
    Rule("spatial_att.gate_s.gate_s_bn_reduce0.", "spatial_gate.reduce_bn."),
    Rule("spatial_att.gate_s.gate_s_conv_di_0.", "spatial_gate.dilated.0."),
    Rule("spatial_att.gate_s.gate_s_bn_di_0.", "spatial_gate.dilated_bn.0."),
    Rule("spatial_att.gate_s.gate_s_conv_di_1.", "spatial_gate.dilated.1."),
    Rule("spatial_att.gate_s.gate_s_bn_di_1.", "spatial_gate.dilated_bn.1."),
    Rule("spatial_att.gate_s.gate_s_conv_final.", "spatial_gate.project."),
]


def _bam(gate_channel: int) -> tuple[nn.Module, list[Rule]]:
    """``BAM(gate_channel)``: r = 16, two dilated convs (dilation 4), product fusion."""
    return BAM(gate_channel), _BAM_RULES


def _pam(in_dim: int) -> tuple[nn.Module, list[Rule]]:
    """``PAM_Module(in_dim)``."""
    rules = [Rule("gamma", "gamma"), Rule("query_conv.", "query."), Rule("key_conv.", "key."),
             Rule("value_conv.", "value.")]
    return PAM(in_dim), rules


def _cam(in_dim: int) -> tuple[nn.Module, list[Rule]]:
    """``CAM_Module(in_dim)``: softmax(max − E), the official sign."""
    return CAM(in_dim, variant="official"), [Rule("gamma", "gamma")]


def _eca(channel: int, k_size: int = 3) -> tuple[nn.Module, list[Rule]]:
    """``eca_layer(channel, k_size=3)`` of ``eca_module.py``. The official code ignores
    ``channel``; here it is kept and inputs must have that many channels."""
    return ECA(channel, k_size), _unchanged("conv.")


def _eca_ns(channel: int, k_size: int) -> tuple[nn.Module, list[Rule]]:
    """``eca_layer(channel, k_size)`` of ``eca_ns.py`` (a k-tap kernel per channel)."""
    return ECANS(channel, k_size), _unchanged("conv.")


_SCCONV_RULES = [
    Rule("k2.1.", "k2_conv."), Rule("k2.2.", "k2_bn."),  # k2.0 is the pooling, no parameters
    Rule("k3.0.", "k3_conv."), Rule("k3.1.", "k3_bn."),
    Rule("k4.0.", "k4_conv."), Rule("k4.1.", "k4_bn."),
]


def _scconv(inplanes: int, planes: int, stride: int, padding: int, dilation: int, groups: int,
            pooling_r: int) -> tuple[nn.Module, list[Rule]]:
    """``SCConv(inplanes, planes, stride, padding, dilation, groups, pooling_r, BatchNorm2d)``.

    The official class needs inplanes == planes (its input is added to the K2 path)."""
    if inplanes != planes:
        raise ValueError(f"inplanes={inplanes} must equal planes={planes}: SCConv adds its input "
                         "to the output of the K2 path")
    module = SCConv(planes, stride=stride, padding=padding, dilation=dilation, groups=groups,
                    pooling_r=pooling_r)
    return module, _SCCONV_RULES


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
    return module, _SCBOTTLENECK_RULES


_PSA_RULES = [
    Rule("conv_1.", "branches.0."), Rule("conv_2.", "branches.1."),
    Rule("conv_3.", "branches.2."), Rule("conv_4.", "branches.3."),
    Rule("se.fc1.", "se_reduce."), Rule("se.fc2.", "se_expand."),
]

# Whole blocks (also used by attn_tutorial.networks for the papers' ResNets).
_SCBOTTLENECK_RULES = (_unchanged("conv1_a.", "bn1_a.", "conv1_b.", "bn1_b.")
                       + [Rule("k1.0.", "k1_conv."), Rule("k1.1.", "k1_bn.")]
                       + _under("scconv.", _SCCONV_RULES)
                       + _unchanged("conv3.", "bn3.", "downsample."))
_EPSA_BLOCK_RULES = (_unchanged("conv1.", "bn1.") + _under("conv2.", _PSA_RULES, "psa.")
                     + _unchanged("bn2.", "conv3.", "bn3.", "downsample."))


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
    return module, _PSA_RULES


def _epsa_block(inplanes: int, planes: int, stride: int = 1,
                downsample: nn.Module | None = None, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                conv_groups: Sequence[int] = (1, 4, 8, 16)) -> tuple[nn.Module, list[Rule]]:
    """``EPSABlock(inplanes, planes, stride, downsample, BatchNorm2d, conv_kernels,
    conv_groups)``; ``downsample`` as in ``scbottleneck``."""
    _check_four(conv_kernels, conv_groups)
    module = EPSABlock(inplanes, planes, stride=stride, downsample=copy.deepcopy(downsample),
                       conv_kernels=conv_kernels, conv_groups=conv_groups)
    return module, _EPSA_BLOCK_RULES


_EMSA_RULES = (_unchanged("q.", "kv.", "proj.")
               + [Rule("sr.", "reduce."), Rule("sr_norm.", "reduce_norm."),
                  Rule("transform_conv.", "head_mix.")])


def _emsa(dim: int, num_heads: int = 8, qkv_bias: bool = False, qk_scale: float | None = None,
          attn_drop: float = 0.0, proj_drop: float = 0.0, sr_ratio: int = 1,
          apply_transform: bool = False) -> tuple[nn.Module, list[Rule]]:
    """ResT v1 ``Attention(...)``; forward ``(x, H, W)``."""
    module = EMSA(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                  attn_drop=attn_drop, proj_drop=proj_drop, sr_ratio=sr_ratio,
                  apply_transform=apply_transform)
    return module, _EMSA_RULES


_PA_RULES = [Rule("pa_conv.", "gate.")]


def _rest_pa(dim: int) -> tuple[nn.Module, list[Rule]]:
    """ResT v1 ``PA(dim)``."""
    return PA(dim), _PA_RULES


def _rest_patch_embed(patch_size: int = 16, in_ch: int = 3, out_ch: int = 768,
                      with_pos: bool = False) -> tuple[nn.Module, list[Rule]]:
    """ResT v1 ``PatchEmbed(...)``; forward x -> (tokens, (H', W')) with the TRUE grid."""
    module = PatchEmbed(patch_size=patch_size, in_ch=in_ch, out_ch=out_ch, with_pos=with_pos)
    rules = [Rule("conv.", "proj."), Rule("norm.", "norm.")] + _under("pos.", _PA_RULES)
    return module, rules


def _rest_block(dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                qk_scale: float | None = None, drop: float = 0.0, attn_drop: float = 0.0,
                drop_path: float = 0.0, sr_ratio: int = 1,
                apply_transform: bool = False) -> tuple[nn.Module, list[Rule]]:
    """ResT v1 ``Block(...)`` (LayerNorm, GELU); forward ``(x, H, W)``."""
    module = Block(dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                   drop=drop, attn_drop=attn_drop, drop_path=drop_path, sr_ratio=sr_ratio,
                   apply_transform=apply_transform)
    rules = _unchanged("norm1.", "norm2.", "mlp.fc1.", "mlp.fc2.") + _under("attn.", _EMSA_RULES)
    return module, rules


def memories_are_tied(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when EANet's ``linear_1.weight`` (c×S×1) is exactly ``linear_0.weight`` (S×c×1) with
    its first two axes swapped, as the official constructor makes it (shared storage)."""
    key, value = state_dict.get("linear_0.weight"), state_dict.get("linear_1.weight")
    if key is None or value is None or key.dim() != 3:
        return False
    return torch.equal(value, key.transpose(0, 1))


def _external_attention(c: int, *, state_dict: Mapping[str, torch.Tensor]
                        ) -> tuple[nn.Module, list[Rule]]:
    """EANet ``External_attention(c)`` (S = 64). Tied memories (M_v = M_kᵀ, one parameter) when
    the two official memory weights are exact transposes, independent memories otherwise."""
    tied = memories_are_tied(state_dict)
    module = ExternalAttention(c, memory_size=64, tie_memories=tied)
    rules = [Rule("conv1.", "conv_in."),
             Rule("linear_0.weight", "memory_key.weight", kernel_axis=True),
             Rule("linear_1.weight", None if tied else "memory_value.weight", kernel_axis=True),
             Rule("conv2.0.", "conv_out."), Rule("conv2.1.", "norm.")]
    return module, rules


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
    if kind not in _BUILDERS:
        from .networks import OFFICIAL_NETWORKS  # whole networks: their kinds live there
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


def _float_like(state_dict: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
    return next((t for t in state_dict.values()
                 if isinstance(t, torch.Tensor) and t.is_floating_point()), None)


def from_official(kind: str, state_dict: Mapping[str, torch.Tensor], **kwargs) -> nn.Module:
    """Our module for ``kind``, built like the official class with ``kwargs`` (the official
    argument names and defaults), holding the official ``state_dict``.

    Strict: every official key must be consumed, none of our parameters/buffers may be left
    without an official key, every shape must match; otherwise a ``ValueError`` names the
    official key. The module is moved to the dtype and device of the state_dict's floating
    tensors and returned in train mode (as a freshly built official module is); call ``.eval()``
    as you would on the official one. A state_dict without ``num_batches_tracked`` entries (saved
    by PyTorch before 0.4.1) is accepted, as torch's strict loading accepts it: the counters
    start at 0.
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
