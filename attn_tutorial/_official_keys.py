"""The authors' state_dict key names, module by module, as renaming rules.

A :class:`Rule` maps an official key (or key prefix) to ours. The tables below are shared by
:mod:`attn_tutorial.official` (one module at a time) and :mod:`attn_tutorial.networks.loaders`
(whole networks, where the same modules sit under a prefix such as ``layer2.0.``). They import
nothing from either, so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

__all__ = ["Rule", "memories_are_tied"]


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


def unchanged(*prefixes: str) -> list[Rule]:
    """Rules for submodules whose names are the same in both codes."""
    return [Rule(p, p) for p in prefixes]


def under(prefix: str, rules: Sequence[Rule], ours_prefix: str | None = None) -> list[Rule]:
    """The same rules for a submodule: official ``prefix`` + key -> ours ``ours_prefix`` + key."""
    ours_prefix = prefix if ours_prefix is None else ours_prefix
    return [Rule(prefix + r.official, None if r.ours is None else ours_prefix + r.ours,
                 r.kernel_axis) for r in rules]


# Jongchan/attention-module BAM
BAM_RULES = [
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

# junfu1115/DANet PAM_Module and CAM_Module
PAM_RULES = [Rule("gamma", "gamma"), Rule("query_conv.", "query."), Rule("key_conv.", "key."),
             Rule("value_conv.", "value.")]
CAM_RULES = [Rule("gamma", "gamma")]

# backseason/SCNet SCConv (k2.0 is the pooling, no parameters) and SCBottleneck
SCCONV_RULES = [
    Rule("k2.1.", "k2_conv."), Rule("k2.2.", "k2_bn."),
    Rule("k3.0.", "k3_conv."), Rule("k3.1.", "k3_bn."),
    Rule("k4.0.", "k4_conv."), Rule("k4.1.", "k4_bn."),
]
SCBOTTLENECK_RULES = (unchanged("conv1_a.", "bn1_a.", "conv1_b.", "bn1_b.")
                      + [Rule("k1.0.", "k1_conv."), Rule("k1.1.", "k1_bn.")]
                      + under("scconv.", SCCONV_RULES)
                      + unchanged("conv3.", "bn3.", "downsample."))

# murufeng/EPSANet PSAModule and EPSABlock
PSA_RULES = [
    Rule("conv_1.", "branches.0."), Rule("conv_2.", "branches.1."),
    Rule("conv_3.", "branches.2."), Rule("conv_4.", "branches.3."),
    Rule("se.fc1.", "se_reduce."), Rule("se.fc2.", "se_expand."),
]
EPSA_BLOCK_RULES = (unchanged("conv1.", "bn1.") + under("conv2.", PSA_RULES, "psa.")
                    + unchanged("bn2.", "conv3.", "bn3.", "downsample."))

# wofmanaf/ResT v1 Attention, PA, PatchEmbed, Block
EMSA_RULES = (unchanged("q.", "kv.", "proj.")
              + [Rule("sr.", "reduce."), Rule("sr_norm.", "reduce_norm."),
                 Rule("transform_conv.", "head_mix.")])
PA_RULES = [Rule("pa_conv.", "gate.")]
PATCH_EMBED_RULES = [Rule("conv.", "proj."), Rule("norm.", "norm.")] + under("pos.", PA_RULES)
REST_BLOCK_RULES = (unchanged("norm1.", "norm2.", "mlp.fc1.", "mlp.fc2.")
                    + under("attn.", EMSA_RULES))


# MenghaoGuo/EANet External_attention

def memories_are_tied(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True when EANet's ``linear_1.weight`` (c×S×1) is exactly ``linear_0.weight`` (S×c×1) with
    its first two axes swapped, as the official constructor makes it (shared storage)."""
    key, value = state_dict.get("linear_0.weight"), state_dict.get("linear_1.weight")
    if not isinstance(key, torch.Tensor) or not isinstance(value, torch.Tensor) or key.dim() != 3:
        return False
    return value.shape == key.transpose(0, 1).shape and torch.equal(value, key.transpose(0, 1))


def external_attention_rules(tied: bool) -> list[Rule]:
    """``External_attention(c)``: the memories are Conv1d weights with a kernel axis; with tied
    memories ``linear_1.weight`` is checked and consumed, not loaded."""
    return [Rule("conv1.", "conv_in."),
            Rule("linear_0.weight", "memory_key.weight", kernel_axis=True),
            Rule("linear_1.weight", None if tied else "memory_value.weight", kernel_axis=True),
            Rule("conv2.0.", "conv_out."), Rule("conv2.1.", "norm.")]
