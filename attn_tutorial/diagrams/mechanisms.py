"""One short spec per mechanism: build the library module, run it, place its tensors.

Each spec takes the example configuration (keywords) and returns ``(title, subtitle, items,
arrows)`` for :func:`~attn_tutorial.diagrams.layout.render`. Every box holds a tensor the run
produced: a forward hook's capture, ``attention_map``, the output, or an einops pattern from an
arrow executed on a captured tensor.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
from einops import einsum, rearrange, reduce
from torch import nn

from .. import attention, bam, danet, eca, external, networks, psa, rest, scconv
from .layout import Arrow, Box, Merge, describe, example_input, op, run
from .pipeline import _plug_and_compare


def _wrap(text: str, width: int = 30) -> str:
    """A long layer description on lines of at most ``width`` characters, broken after commas."""
    lines = [""]
    for part in text.split(", "):
        longer = f"{lines[-1]}, {part}" if lines[-1] else part
        if len(longer) > width and lines[-1]:
            lines[-1] += ","
            lines.append(part)
        else:
            lines[-1] = longer
    return "\n".join(lines)


def _self_attention(B, C, H, W, heads):
    m = attention.SelfAttention2d(C, num_heads=heads)
    x = example_input(B, C, H, W)
    y, got = run(m, x, "attn.q", "attn.k", "attn.v", "attn.proj")
    split = "b n (heads d) -> b heads n d"
    q, k, v = (rearrange(got[f"attn.{n}"], split, heads=heads) for n in "qkv")
    a = m.attention_map(x)
    items = [
        Box("x", "x", "B×C×H×W", x, (1, 0)),
        Box("t", "tokens", "B×N×C", rearrange(x, "b c h w -> b (h w) c"), (1, 1)),
        Box("q", "queries q", "B×h×N×d", q, (0, 2.7)),
        Box("k", "keys k", "B×h×N×d", k, (1, 2.7)),
        Box("v", "values v", "B×h×N×d", v, (2, 2.7)),
        Merge("qk", "⊗", (0.5, 3.6)),
        Box("A", "weights A (rows: queries)", "B×h×N×N", a, (0.5, 4.6), "map"),
        Merge("av", "⊗", (1.5, 5.5)),
        Box("o", "A·v, heads merged", "B×N×C", rearrange(a @ v, "b heads n d -> b n (heads d)"),
            (1.5, 6.5)),
        Box("p", "projected tokens", "B×N×C", got["attn.proj"], (1.5, 7.5)),
        Box("y", "y (no residual)", "B×C×H×W", y, (1.5, 8.5)),
    ]
    arrows = [Arrow("x", "t", "b c h w -> b (h w) c  (N = H·W)", t=0.45)]
    arrows += [Arrow("t", n, **op(f"{n}: {describe(lin)}\n{split}", lin), via=((c, 1.6),),
                     label_at=(c, 2.05))
               for c, (n, lin) in enumerate((("q", m.attn.q), ("k", m.attn.k), ("v", m.attn.v)))]
    arrows += [
        Arrow("q", "qk"), Arrow("k", "qk"),
        Arrow("qk", "A", "einsum b h n d, b h m d -> b h n m  (q·kᵀ)\n"
                         f"× d^-½ (d = C/h = {C // heads}), softmax over keys m"),
        Arrow("A", "av"), Arrow("v", "av", via=((2, 5.5),)),
        Arrow("av", "o", "einsum b h n m, b h m d -> b h n d;  b h n d -> b n (h d)"),
        Arrow("o", "p", **op(describe(m.attn.proj), m.attn.proj)),
        Arrow("p", "y", "b (h w) c -> b c h w"),
    ]
    return ("Self-attention (baseline): every position attends to all N = H·W positions",
            "Vaswani et al. 2017, arXiv 1706.03762; attn_tutorial.attention.SelfAttention2d",
            items, arrows)


def _bam(B, C, H, W, reduction_ratio, dilation):
    m = bam.BAM(C, reduction_ratio=reduction_ratio, dilation=dilation)
    x = example_input(B, C, H, W)
    cg, sg = m.channel_gate, m.spatial_gate
    n = len(sg.dilated)
    last = f"spatial_gate.dilated_bn.{n - 1}" if n else "spatial_gate.reduce_bn"
    y, got = run(m, x, "channel_gate.pool", "channel_gate.relu", "channel_gate",
                 "spatial_gate.reduce_bn", last, "spatial_gate")
    items = [
        Box("x", "x", "B×C×H×W", x, (1, 0)),
        Box("gap", "channel averages", "B×C", got["channel_gate.pool"], (0, 1.2)),
        Box("hid", "hidden", "B×C/r", got["channel_gate.relu"], (0, 2.4)),
        Box("mc", "channel map Mc", "B×C×1×1", got["channel_gate"], (0, 3.6)),
        Box("s1", "reduced", "B×C/r×H×W", got["spatial_gate.reduce_bn"], (2, 1.2)),
        Box("s2", f"after {n} dilated convs", "B×C/r×H×W", got[last], (2, 2.4)),
        Box("ms", "spatial map Ms", "B×1×H×W", got["spatial_gate"], (2, 3.6)),
        Merge("f", "⊙", (1, 4.4)),
        Box("M", "attention M = σ(Mc ⊙ Ms)", "B×C×H×W", m.attention_map(x), (1, 5.4), "map"),
        Merge("out", "⊙", (1, 6.4)),
        Box("y", "y = x ⊙ (1 + M) = x + x ⊙ M", "B×C×H×W", y, (1, 7.2)),
    ]
    conv3 = describe(sg.dilated[0]) if n else "none"
    arrows = [
        Arrow("x", "gap", "reduce b c h w -> b c, mean\n(authors' code: an H×H avg-pool\n"
                          "window, the same only when H = W)", t=0.55),
        Arrow("gap", "hid", **op(f"{describe(cg.fc_reduce)}, BN, ReLU", cg.fc_reduce, cg.bn)),
        Arrow("hid", "mc", **op(f"{describe(cg.fc_expand)};  b c -> b c 1 1", cg.fc_expand)),
        Arrow("x", "s1", **op(f"{describe(sg.reduce)}, BN, ReLU", sg.reduce, sg.reduce_bn),
              t=0.55),
        Arrow("s1", "s2", **op(_wrap(f"{n} × ({conv3}, BN, ReLU)", 36), sg.dilated,
                               sg.dilated_bn)),
        Arrow("s2", "ms", **op(describe(sg.project), sg.project)),
        Arrow("mc", "f"), Arrow("ms", "f"),
        Arrow("f", "M", "broadcast to B×C×H×W, sigmoid σ"),
        Arrow("M", "out", "scale 1 + M, in (1, 2)"),
        Arrow("x", "out", "identity", via=((2.55, 0), (2.55, 6.4)), residual=True, t=0.8),
        Arrow("out", "y"),
    ]
    return ("BAM: a channel map and a spatial map, fused, scale the input by 1 + σ",
            "Park et al. 2018, arXiv 1807.06514; attn_tutorial.bam.BAM (official fusion Mc ⊙ Ms)",
            items, arrows)


def _pam(B, C, H, W):
    m = danet.PAM(C)
    x = example_input(B, C, H, W)
    y, got = run(m, x, "query", "key", "value")
    q = rearrange(got["query"], "b d h w -> b (h w) d")
    k = rearrange(got["key"], "b d h w -> b d (h w)")
    v = rearrange(got["value"], "b c h w -> b c (h w)")
    a = m.attention_map(x)
    out = rearrange(einsum(v, a, "b c j, b i j -> b c i"), "b c (h w) -> b c h w", h=H)
    items = [
        Box("x", "x", "B×C×H×W", x, (1, 0)),
        Box("q", "queries", "B×N×C/8", q, (0, 1.8)),
        Box("k", "keys", "B×C/8×N", k, (1, 1.8)),
        Box("v", "values", "B×C×N", v, (2, 1.8)),
        Merge("qk", "⊗", (0.5, 2.7)),
        Box("A", "A (rows: queries i)", "B×N×N", a, (0.5, 3.7), "map"),
        Merge("av", "⊗", (1.5, 4.6)),
        Box("o", "gathered values", "B×C×H×W", out, (1.5, 5.6)),
        Merge("sum", "+", (1.5, 6.7)),
        Box("y", "y = γ · out + x", "B×C×H×W", y, (1.5, 7.5)),
    ]
    arrows = [Arrow("x", key, **op(f"{describe(conv)}\n{pattern}", conv), via=((c, 0.6),),
                    label_at=(c, 1.15))
              for c, (key, conv, pattern) in enumerate((("q", m.query, "b d h w -> b (h w) d"),
                                                        ("k", m.key, "b d h w -> b d (h w)"),
                                                        ("v", m.value, "b c h w -> b c (h w)")))]
    arrows += [
        Arrow("q", "qk"), Arrow("k", "qk"),
        Arrow("qk", "A", "einsum b i d, b d j -> b i j  (q·k)\n"
                         "energy without 1/√d, softmax over keys j"),
        Arrow("A", "av"), Arrow("v", "av", via=((2, 4.6),)),
        Arrow("av", "o", "einsum b c j, b i j -> b c i;  b c (h w) -> b c h w"),
        Arrow("o", "sum", **op("× γ (starts at 0)", nn.ParameterList([m.gamma]))),
        Arrow("x", "sum", "identity", via=((2.55, 0), (2.55, 6.7)), residual=True, t=0.8),
        Arrow("sum", "y"),
    ]
    return ("PAM (DANet position attention): every position gathers values from all positions",
            "Fu et al. 2019, arXiv 1809.02983; attn_tutorial.danet.PAM", items, arrows)


def _cam(B, C, H, W):
    m = danet.CAM(C)
    x = example_input(B, C, H, W)
    y, _ = run(m, x)
    f = rearrange(x, "b c h w -> b c (h w)")
    energy = einsum(f, f, "b c n, b k n -> b c k")
    a = m.attention_map(x)
    out = rearrange(einsum(a, f, "b c k, b k n -> b c n"), "b c (h w) -> b c h w", h=H)
    items = [
        Box("x", "x", "B×C×H×W", x, (0.5, 0)),
        Box("f", "f: channels as rows", "B×C×N", f, (0.5, 1)),
        Box("E", "energy E = f·fᵀ (Gram)", "B×C×C", energy, (0.5, 2)),
        Box("A", "A (rows: channels c)", "B×C×C", a, (0.5, 3.2), "map"),
        Merge("af", "⊗", (0.5, 4.0)),
        Box("o", "mixed channels", "B×C×H×W", out, (0.5, 5.0)),
        Merge("sum", "+", (0.5, 6.1)),
        Box("y", "y = γ · out + x", "B×C×H×W", y, (0.5, 6.9)),
    ]
    arrows = [
        Arrow("x", "f", "b c h w -> b c (h w)  (N = H·W)"),
        Arrow("f", "E", "einsum b c n, b k n -> b c k"),
        Arrow("E", "A", "softmax over k of (rowmax_k E − E) = softmax(−E):\n"
                        "the least similar channels get the most weight\n"
                        "(the paper writes softmax(E))"),
        Arrow("A", "af"), Arrow("f", "af", via=((1.1, 1), (1.1, 4.0))),
        Arrow("af", "o", "einsum b c k, b k n -> b c n;  b c (h w) -> b c h w"),
        Arrow("o", "sum", **op("× γ (starts at 0)", m)),
        Arrow("x", "sum", "identity", via=((1.45, 0), (1.45, 6.1)), residual=True, t=0.75),
        Arrow("sum", "y"),
    ]
    return ("CAM (DANet channel attention): every channel is a mix of all channels",
            "Fu et al. 2019, arXiv 1809.02983; attn_tutorial.danet.CAM (only γ is learnt)",
            items, arrows)


def _eca_se(B, C, H, W, reduction):
    e, s = eca.ECA(C, adaptive=True), eca.SE(C, reduction=reduction)   # k = ψ(C)
    k, pad = e.conv.kernel_size[0], e.conv.padding[0]
    x = example_input(B, C, H, W)
    ye, ge = run(e, x, "conv")
    ys, gs = run(s, x, "fc_reduce", "fc_expand")
    gap = reduce(x, "b c h w -> b c", "mean")
    items = [Box("x", "x", "B×C×H×W", x, (1, 0)),
             Box("elog", "logits", "B×C", rearrange(ge["conv"], "b 1 c -> b c"), (0, 2.5)),
             Box("shid", "hidden", "B×C/r", gs["fc_reduce"], (2, 2.05)),
             Box("slog", "logits", "B×C", gs["fc_expand"], (2, 3.1))]
    arrows = [Arrow("egap", "elog", **op(f"b c -> b 1 c;  conv1d along C,\n"
                                         f"k = ψ(C) = {k} for C = {C},\n"
                                         f"zero padding {pad} at both ends of C", e.conv)),
              Arrow("sgap", "shid", **op(f"{describe(s.fc_reduce)}, ReLU", s.fc_reduce)),
              Arrow("shid", "slog", **op(describe(s.fc_expand), s.fc_expand)),
              Arrow("elog", "eg", "sigmoid σ"), Arrow("slog", "sg", "sigmoid σ")]
    for side, col, module, out in (("e", 0, e, ye), ("s", 2, s, ys)):
        name = "ECA" if side == "e" else "SE"
        items += [Box(f"{side}gap", "channel averages", "B×C", gap, (col, 1)),
                  Box(f"{side}g", "gate σ(logits)", "B×C", module.attention_map(x), (col, 4.15),
                      "map"),
                  Merge(f"{side}m", "⊙", (col, 5.05)),
                  Box(f"{side}y", f"{name}: x ⊙ gate", "B×C×H×W", out, (col, 5.85))]
        arrows += [Arrow("x", f"{side}gap", "reduce b c h w -> b c, mean", t=0.6),
                   Arrow(f"{side}g", f"{side}m", "b c -> b c 1 1, broadcast"),
                   Arrow(f"{side}m", f"{side}y"),
                   Arrow("x", f"{side}m", via=((1, 5.05),))]
    return ("ECA (left) beside SE (right): the same channel gate, a k-tap conv instead of an MLP",
            "Wang et al. 2020, arXiv 1910.03151; Hu et al. 2018, arXiv 1709.01507; "
            "attn_tutorial.eca", items, arrows)


def _scconv(B, C, H, W, pooling_r, stride):
    m = scconv.SCConv(C, stride=stride, pooling_r=pooling_r)
    x = example_input(B, C, H, W)
    y, got = run(m, x, "pool", "k2_bn", "k3_bn")
    up = nn.functional.interpolate(got["k2_bn"], size=(H, W), mode=m.upsample)
    gate = m.attention_map(x)
    items = [
        Box("x", "x", "B×C×H×W", x, (1, 0)),
        Box("p", "pooled", "B×C×⌊H/r⌋×⌊W/r⌋", got["pool"], (0, 1.2)),
        Box("k2", "context", "B×C×⌊H/r⌋×⌊W/r⌋", got["k2_bn"], (0, 2.4)),
        Box("up", "context, up-sampled", "B×C×H×W", up, (0, 3.5)),
        Merge("add", "+", (0, 4.3)),
        Box("g", "gate σ(x + up)", "B×C×H×W", gate, (0, 5.1), "map"),
        Box("k3", "features", "B×C×H×W", got["k3_bn"], (2, 2.4)),
        Merge("mul", "⊙", (1, 5.9)),
        Box("cal", "calibrated features", "B×C×H×W", gate * got["k3_bn"], (1, 6.7)),
        Box("y", "y (K4 carries the stride)", "B×C×H′×W′", y, (1, 7.9)),
    ]
    arrows = [
        Arrow("x", "p", f"{describe(m.pool)}  (r = {pooling_r})", t=0.75),
        Arrow("p", "k2", **op(f"K2: {describe(m.k2_conv)}, BN", m.k2_conv, m.k2_bn)),
        Arrow("k2", "up", f"{m.upsample} up-sampling to H×W"),
        Arrow("up", "add"),
        Arrow("x", "add", via=((-0.45, 0), (-0.45, 4.3))),   # x itself, no parameters
        Arrow("add", "g", "sigmoid σ"),
        Arrow("x", "k3", **op(f"K3: {describe(m.k3_conv)}, BN", m.k3_conv, m.k3_bn),
              via=((2, 0),), label_at=(2, 1.2)),
        Arrow("g", "mul"), Arrow("k3", "mul", via=((2, 5.9),)),
        Arrow("mul", "cal"),
        Arrow("cal", "y", **op(f"K4: {describe(m.k4_conv)}, BN", m.k4_conv, m.k4_bn)),
    ]
    return ("SCConv: a pooled context gates a 3×3 conv, so each position sees a wider field",
            f"Liu et al. 2020 (CVPR); attn_tutorial.scconv.SCConv ({m.upsample} up-sampling, "
            "as the official code). This is the self-calibrated half of\nSCNet's operator: the "
            "channel split, the plain K1 branch and the concat are in scconv.SCBottleneck; "
            "no skip connection here", items, arrows)


def _psa(B, C, H, W, planes, stride):
    m = psa.PSA(C, planes, stride=stride)
    x = example_input(B, C, H, W)
    S = m.num_scales
    y, got = run(m, x, "se_expand", *(f"branches.{i}" for i in range(S)))
    feats = rearrange([got[f"branches.{i}"] for i in range(S)], "scale b c h w -> b scale c h w")
    scores = rearrange(got["se_expand"], "(b scale) c 1 1 -> b scale c", scale=S)
    items = [Box("x", "x", "B×C×H×W", x, ((S - 1) / 2, 0))]
    items += [Box(f"f{i}", f"scale {i}, kernel {conv.kernel_size[0]}", "B×Ps×H′×W′",
                  got[f"branches.{i}"], (i, 1.7)) for i, conv in enumerate(m.branches)]
    items += [
        Box("st", "scales stacked", "B×S×Ps×H′×W′", feats, ((S - 1) / 2, 2.8)),
        Box("sc", "SE scores σ(…)", "B×S×Ps", scores, ((S - 1) / 2 - 1, 4.3)),
        Box("a", "A: softmax over scales", "B×S×Ps", m.attention_map(x),
            ((S - 1) / 2 - 1, 5.3), "map"),
        Merge("mul", "⊙", ((S - 1) / 2, 6.1)),
        Box("y", "y: scales side by side", "B×(S·Ps)×H′×W′", y, ((S - 1) / 2, 6.9)),
    ]
    arrows = [Arrow("x", f"f{i}", **op(_wrap(describe(conv), 26), conv), via=((i, 0.6),),
                    label_at=(i, 1.1)) for i, conv in enumerate(m.branches)]
    arrows += [Arrow(f"f{i}", "st") for i in range(S)]
    arrows += [
        Arrow("st", "sc", **op("mean over h w, then one SE shared by all scales:\n"
                               f"{describe(m.se_reduce)}, ReLU, {describe(m.se_expand)}, σ",
                               m.se_reduce, m.se_expand), into_label=True),
        Arrow("sc", "a", "softmax over the scale axis"),
        Arrow("a", "mul", "b scale c -> b scale c 1 1", t=0.45),
        Arrow("st", "mul", via=(((S - 1) / 2 + 1, 2.8), ((S - 1) / 2 + 1, 6.1))),
        Arrow("mul", "y", "b scale c h w -> b (scale c) h w, largest kernel first"),
    ]
    return ("PSA (EPSANet): S kernel sizes, one shared SE, softmax over the scales per channel",
            "Zhang et al. 2021, arXiv 2105.14447; attn_tutorial.psa.PSA (official: whole input "
            f"to every branch)\nS = {S} scales, Ps = planes/S = {planes // S} channels per scale; "
            "groups g: a conv in g independent channel groups", items, arrows)


def _emsa(B, in_ch, H, W, patch, C, heads, sr):
    if sr < 2 or heads < 2:
        raise ValueError(f"draw('emsa') got sr={sr}, heads={heads}: the diagram shows the reduced "
                         "key grid and the head mixing, which need sr >= 2 and heads >= 2")
    embed = rest.PatchEmbed(patch, in_ch, C, with_pos=True)
    m = rest.EMSA(C, num_heads=heads, qkv_bias=True, sr_ratio=sr, apply_transform=True)
    img = example_input(B, in_ch, H, W)
    (tokens, (h, w)), got = run(embed, img, "norm", "pos.gate")
    y, e = run(m, tokens, "q", "reduce", "reduce_norm", "kv", H=h, W=w)
    q = rearrange(e["q"], "b n (heads d) -> b heads n d", heads=heads)
    k, v = rearrange(e["kv"], "b m (two heads d) -> two b heads m d", two=2, heads=heads)
    a = m.attention_map(tokens, h, w)
    items = [   # column 0: patch embedding with PA; columns 1-3: EMSA
        Box("img", "① previous stage's feature map", "B×Cin×H×W", img, (0, 0)),
        Box("e", "embedded", "B×C×H′×W′", got["norm"], (0, 1.2)),
        Box("g", "PA gate σ(dw conv)", "B×C×H′×W′", torch.sigmoid(got["pos.gate"]), (0, 2.4),
            "map"),
        Merge("pa", "⊙", (0, 3.2)),
        Box("t", "tokens", "B×N×C", tokens, (0, 4.2)),
        Box("t2", "② EMSA input: the tokens", "B×N×C", tokens, (2, 0)),
        Box("r", "reduced grid", "B×C×H″×W″", e["reduce"], (3, 1.3)),
        Box("kt", "key tokens", "B×M×C", e["reduce_norm"], (3, 2.6)),
        Box("kv", "keys k (values v alike)", "B×h×M×d", k, (3, 3.9)),
        Box("q", "queries q", "B×h×N×d", q, (1, 3.9)),
        Merge("qk", "⊗", (2, 4.7)),
        Box("A", "weights A (after the InstanceNorm:\neach row sums to 0, some are < 0)",
            "B×h×N×M", a, (2, 6.0), "map"),
        Merge("av", "⊗", (2.5, 6.8)),
        Box("y", "y", "B×N×C", y, (2.5, 8.1)),
    ]
    arrows = [
        Arrow("img", "e", **op(_wrap(f"{describe(embed.proj)}, BN"), embed.proj, embed.norm)),
        Arrow("e", "g", **op(_wrap(describe(embed.pos.gate)), embed.pos.gate)),
        Arrow("g", "pa"), Arrow("e", "pa", via=((-0.42, 1.2), (-0.42, 3.2))),
        Arrow("pa", "t", "b c h w -> b (h w) c\nN = H′·W′"),
        Arrow("t2", "q", **op(f"{describe(m.q)}\nb n (h d) -> b h n d", m.q), t=0.55),
        Arrow("t2", "r", **op(f"b (h w) c -> b c h w\n{_wrap(describe(m.reduce))}", m.reduce),
              t=0.55),
        Arrow("r", "kt", **op("b c h w -> b (h w) c, LayerNorm", m.reduce_norm)),
        Arrow("kt", "kv", **op(f"{describe(m.kv)}\nb m (two h d) -> two b h m d", m.kv)),
        Arrow("q", "qk"), Arrow("kv", "qk"),
        Arrow("qk", "A", **op("einsum b h n d, b h m d -> b h n m, × d^-½\n"
                              f"{describe(m.head_mix)} across heads,\n"
                              "softmax over M keys, InstanceNorm", m.head_mix)),
        Arrow("A", "av"), Arrow("kv", "av", via=((3, 6.8),), op="v", t=0.5),
        Arrow("av", "y", **op(f"b h n d -> b n (h d)\n{describe(m.proj)}", m.proj)),
    ]
    stage = _rest_stage(in_ch, C, patch, heads, sr)
    setting = (f"the settings of ResTv1-Lite/S stage {stage}" if stage
               else "a configuration no ResT stage uses")
    return ("ResT: ① patch embedding with pixel attention (PA), ② EMSA on a reduced key grid",
            "Zhang & Yang 2021, arXiv 2105.13677; attn_tutorial.rest: PatchEmbed(with_pos=True), "
            "EMSA(qkv_bias=True, apply_transform=True)\n① sits between two stages (the image "
            f"itself enters through a stem of 3×3 convs); {setting}",
            items, arrows)


def _rest_stage(in_ch, C, patch, heads, sr) -> int | None:
    """The ResT stage (2-4) whose patch embedding and EMSA these settings are, if any, read from
    the defaults of :class:`attn_tutorial.networks.ResT` (ResTv1-Lite and -S)."""
    defaults = {k: v.default for k, v in inspect.signature(networks.ResT).parameters.items()}
    dims, all_heads, srs = defaults["embed_dims"], defaults["num_heads"], defaults["sr_ratios"]
    for i in range(1, 4):
        if (in_ch, C, patch, heads, sr) == (dims[i - 1], dims[i], 2, all_heads[i], srs[i]):
            return i + 1
    return None


def _external(B, C, H, W, memory_size):
    m = external.ExternalAttention(C, memory_size=memory_size)
    x = example_input(B, C, H, W)
    y, got = run(m, x, "conv_in", "norm")
    tokens = rearrange(got["conv_in"], "b c h w -> b (h w) c")
    memory = m.memory_key.weight.detach()
    a = m.attention_map(x)
    items = [
        Box("x", "x", "B×C×H×W", x, (0.5, 0)),
        Box("t", "tokens", "B×N×C", tokens, (0.5, 1.2)),
        Box("mk", f"memory M_k: {memory.numel():,} learnable parameters", "S×C", memory,
            (1.5, 1.2), "param"),
        Merge("k", "⊗", (0.5, 2.1)),
        Box("l", "logits", "B×N×S", einsum(tokens, memory, "b n c, s c -> b n s"), (0.5, 2.9)),
        Box("A", "A: double-normalised", "B×N×S", a, (0.5, 4.1), "map"),
        Merge("v", "⊗", (0.5, 4.85)),
        Box("o", "read from memory", "B×N×C",
            einsum(a, m.memory_value_weight.detach(), "b n s, c s -> b n c"), (0.5, 5.8)),
        Box("n", "projected", "B×C×H×W", got["norm"], (0.5, 7.0)),
        Merge("sum", "+", (0.5, 7.8)),
        Box("y", "y = ReLU(x + projected)", "B×C×H×W", y, (0.5, 8.6)),
    ]
    tie = ("M_v = M_kᵀ: the released code\nties two Parameters by sharing\nstorage "
           "(paper: two memories)" if m.tie_memories else "its own memory M_v")
    eps = inspect.signature(external.double_normalise).parameters["eps"].default
    arrows = [
        Arrow("x", "t", **op(f"{describe(m.conv_in)};  b c h w -> b (h w) c", m.conv_in)),
        Arrow("t", "k"), Arrow("mk", "k", "einsum b n c, s c -> b n s", t=0.45),
        Arrow("k", "l"),
        Arrow("l", "A", f"softmax over the N tokens, then\n÷ (sum over the S slots + ε), "
                        f"ε = {eps:g}".replace("e-0", "e-")),
        Arrow("A", "v"), Arrow("mk", "v", tie, via=((1.5, 4.85),)),
        Arrow("v", "o", "einsum b n s, c s -> b n c"),
        Arrow("o", "n", **op(f"b (h w) c -> b c h w;  {describe(m.conv_out)}, BN", m.conv_out,
                             m.norm)),
        Arrow("n", "sum"),
        Arrow("x", "sum", "identity", via=((-0.05, 0), (-0.05, 7.8)), residual=True, t=0.7),
        Arrow("sum", "y", "ReLU"),
    ]
    return ("External attention (EANet): N tokens attend to S learnable memory slots",
            "Guo et al. 2021, arXiv 2105.02358; attn_tutorial.external.ExternalAttention",
            items, arrows)


SPECS: dict[str, tuple[Callable, dict]] = {
    "self_attention": (_self_attention, dict(B=2, C=64, H=14, W=14, heads=4)),
    "eca_se": (_eca_se, dict(B=2, C=64, H=14, W=14, reduction=16)),
    "bam": (_bam, dict(B=2, C=64, H=14, W=14, reduction_ratio=16, dilation=4)),
    "psa": (_psa, dict(B=2, C=64, H=14, W=14, planes=64, stride=1)),
    "scconv": (_scconv, dict(B=2, C=64, H=14, W=14, pooling_r=4, stride=1)),
    "pam": (_pam, dict(B=2, C=64, H=14, W=14)),
    "cam": (_cam, dict(B=2, C=64, H=14, W=14)),
    # ResTv1-Lite/S stage 3 on a 224×224 image: stage 2's 28×28 map, 128 -> 256 channels
    "emsa": (_emsa, dict(B=2, in_ch=128, H=28, W=28, patch=2, C=256, heads=4, sr=2)),
    "external": (_external, dict(B=2, C=128, H=14, W=14, memory_size=64)),   # S ≠ C
    # lesson 09: the tiny network on the course's 32×32 images, 4 classes
    "plug_and_compare": (_plug_and_compare, dict(B=2, size=32, classes=4)),
}

