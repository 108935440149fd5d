"""from_official: state_dicts with the OFFICIAL key names and shapes (written out from the spec's
state_dict sections) load strictly, and the loaded module computes the official computation —
checked against functional references written from the spec equations that read the raw
official tensors (float64, eval mode, odd non-square sizes, batch 1)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attn_tutorial.official import (OFFICIAL_KINDS, from_official, memories_are_tied,
                                    official_rules)

DT = torch.float64
TOL = 1e-9


# ------------------------------------------------------------------ official-style state_dicts

class SD(dict):
    """A state_dict under construction: seeded random tensors with official key names."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.g = torch.Generator().manual_seed(seed)

    def w(self, key: str, *shape: int, scale: float = 0.4) -> None:
        self[key] = torch.randn(shape, generator=self.g, dtype=DT) * scale

    def bn(self, prefix: str, n: int) -> None:
        self.w(prefix + "weight", n, scale=0.3)
        self[prefix + "weight"] += 1
        self.w(prefix + "bias", n, scale=0.3)
        self.w(prefix + "running_mean", n, scale=0.3)
        self[prefix + "running_var"] = torch.rand(n, generator=self.g, dtype=DT) + 0.5
        self[prefix + "num_batches_tracked"] = torch.tensor(11)


def sd_bam(C: int, seed: int = 0) -> SD:
    r = C // 16
    sd = SD(seed)
    sd.w("channel_att.gate_c.gate_c_fc_0.weight", r, C)
    sd.w("channel_att.gate_c.gate_c_fc_0.bias", r)
    sd.bn("channel_att.gate_c.gate_c_bn_1.", r)
    sd.w("channel_att.gate_c.gate_c_fc_final.weight", C, r)
    sd.w("channel_att.gate_c.gate_c_fc_final.bias", C)
    sd.w("spatial_att.gate_s.gate_s_conv_reduce0.weight", r, C, 1, 1)
    sd.w("spatial_att.gate_s.gate_s_conv_reduce0.bias", r)
    sd.bn("spatial_att.gate_s.gate_s_bn_reduce0.", r)
    for i in range(2):
        sd.w(f"spatial_att.gate_s.gate_s_conv_di_{i}.weight", r, r, 3, 3)
        sd.w(f"spatial_att.gate_s.gate_s_conv_di_{i}.bias", r)
        sd.bn(f"spatial_att.gate_s.gate_s_bn_di_{i}.", r)
    sd.w("spatial_att.gate_s.gate_s_conv_final.weight", 1, r, 1, 1)
    sd.w("spatial_att.gate_s.gate_s_conv_final.bias", 1)
    return sd


def sd_pam(C: int, seed: int = 0) -> SD:
    sd = SD(seed)
    sd.w("gamma", 1, scale=1.0)
    for name, out in (("query_conv", C // 8), ("key_conv", C // 8), ("value_conv", C)):
        sd.w(f"{name}.weight", out, C, 1, 1)
        sd.w(f"{name}.bias", out)
    return sd


def sd_cam(seed: int = 0) -> SD:
    sd = SD(seed)
    sd.w("gamma", 1, scale=1.0)
    return sd


def sd_eca(k: int, seed: int = 0) -> SD:
    sd = SD(seed)
    sd.w("conv.weight", 1, 1, k)
    return sd


def sd_eca_ns(C: int, k: int, seed: int = 0) -> SD:
    sd = SD(seed)
    sd.w("conv.weight", C, 1, k)
    return sd


def add_scconv(sd: SD, prefix: str, C: int, groups: int) -> None:
    sd.w(prefix + "k2.1.weight", C, C // groups, 3, 3)
    sd.bn(prefix + "k2.2.", C)
    sd.w(prefix + "k3.0.weight", C, C // groups, 3, 3)
    sd.bn(prefix + "k3.1.", C)
    sd.w(prefix + "k4.0.weight", C, C // groups, 3, 3)
    sd.bn(prefix + "k4.1.", C)


def sd_scconv(C: int, groups: int, seed: int = 0) -> SD:
    sd = SD(seed)
    add_scconv(sd, "", C, groups)
    return sd


def sd_scbottleneck(inplanes: int, planes: int, cardinality: int, width: int,
                    downsample: bool, seed: int = 0) -> SD:
    g = int(planes * width / 64) * cardinality
    sd = SD(seed)
    for branch in ("a", "b"):
        sd.w(f"conv1_{branch}.weight", g, inplanes, 1, 1)
        sd.bn(f"bn1_{branch}.", g)
    sd.w("k1.0.weight", g, g // cardinality, 3, 3)
    sd.bn("k1.1.", g)
    add_scconv(sd, "scconv.", g, cardinality)
    sd.w("conv3.weight", 4 * planes, 2 * g, 1, 1)
    sd.bn("bn3.", 4 * planes)
    if downsample:
        sd.w("downsample.0.weight", 4 * planes, inplanes, 1, 1)
        sd.bn("downsample.1.", 4 * planes)
    return sd


def add_psa(sd: SD, prefix: str, inplans: int, planes: int, kernels, groups) -> None:
    ps = planes // 4
    for i, (k, g) in enumerate(zip(kernels, groups)):
        sd.w(f"{prefix}conv_{i + 1}.weight", ps, inplans // g, k, k, scale=0.2)
    sd.w(prefix + "se.fc1.weight", ps // 16, ps, 1, 1)
    sd.w(prefix + "se.fc1.bias", ps // 16)
    sd.w(prefix + "se.fc2.weight", ps, ps // 16, 1, 1)
    sd.w(prefix + "se.fc2.bias", ps)


def sd_psa(inplans, planes, kernels, groups, seed: int = 0) -> SD:
    sd = SD(seed)
    add_psa(sd, "", inplans, planes, kernels, groups)
    return sd


def sd_epsa_block(inplanes: int, planes: int, downsample: bool, seed: int = 0) -> SD:
    sd = SD(seed)
    sd.w("conv1.weight", planes, inplanes, 1, 1)
    sd.bn("bn1.", planes)
    add_psa(sd, "conv2.", planes, planes, (3, 5, 7, 9), (1, 4, 8, 16))
    sd.bn("bn2.", planes)
    sd.w("conv3.weight", 4 * planes, planes, 1, 1, scale=0.2)
    sd.bn("bn3.", 4 * planes)
    if downsample:
        sd.w("downsample.0.weight", 4 * planes, inplanes, 1, 1)
        sd.bn("downsample.1.", 4 * planes)
    return sd


def add_emsa(sd: SD, prefix: str, dim: int, heads: int, qkv_bias: bool, sr: int,
             transform: bool) -> None:
    sd.w(prefix + "q.weight", dim, dim)
    sd.w(prefix + "kv.weight", 2 * dim, dim)
    if qkv_bias:
        sd.w(prefix + "q.bias", dim)
        sd.w(prefix + "kv.bias", 2 * dim)
    sd.w(prefix + "proj.weight", dim, dim)
    sd.w(prefix + "proj.bias", dim)
    if sr > 1:
        sd.w(prefix + "sr.weight", dim, 1, sr + 1, sr + 1)
        sd.w(prefix + "sr.bias", dim)
        sd.w(prefix + "sr_norm.weight", dim)
        sd.w(prefix + "sr_norm.bias", dim)
    if transform and heads > 1:
        sd.w(prefix + "transform_conv.weight", heads, heads, 1, 1, scale=1.0)
        sd.w(prefix + "transform_conv.bias", heads)


def sd_emsa(dim, heads, qkv_bias, sr, transform, seed: int = 0) -> SD:
    sd = SD(seed)
    add_emsa(sd, "", dim, heads, qkv_bias, sr, transform)
    return sd


def sd_pa(dim: int, seed: int = 0, prefix: str = "", sd: SD | None = None) -> SD:
    sd = SD(seed) if sd is None else sd
    sd.w(prefix + "pa_conv.weight", dim, 1, 3, 3)
    sd.w(prefix + "pa_conv.bias", dim)
    return sd


def sd_patch_embed(p: int, cin: int, cout: int, with_pos: bool, seed: int = 0) -> SD:
    sd = SD(seed)
    sd.w("conv.weight", cout, cin, p + 1, p + 1)
    sd.w("conv.bias", cout)
    sd.bn("norm.", cout)
    if with_pos:
        sd_pa(cout, prefix="pos.", sd=sd)
    return sd


def sd_block(dim, heads, mlp_ratio, qkv_bias, sr, transform, seed: int = 0) -> SD:
    sd = SD(seed)
    hidden = int(dim * mlp_ratio)
    for norm in ("norm1", "norm2"):
        sd.w(f"{norm}.weight", dim, scale=0.3)
        sd[f"{norm}.weight"] += 1
        sd.w(f"{norm}.bias", dim)
    add_emsa(sd, "attn.", dim, heads, qkv_bias, sr, transform)
    sd.w("mlp.fc1.weight", hidden, dim)
    sd.w("mlp.fc1.bias", hidden)
    sd.w("mlp.fc2.weight", dim, hidden)
    sd.w("mlp.fc2.bias", dim)
    return sd


def sd_external(c: int, tied: bool, seed: int = 0) -> SD:
    sd = SD(seed)
    sd.w("conv1.weight", c, c, 1, 1)
    sd.w("conv1.bias", c)
    sd.w("linear_0.weight", 64, c, 1)
    if tied:  # what the official constructor's shared storage gives
        sd["linear_1.weight"] = sd["linear_0.weight"].permute(1, 0, 2).clone()
    else:
        sd.w("linear_1.weight", c, 64, 1)
    sd.w("conv2.0.weight", c, c, 1, 1)
    sd.bn("conv2.1.", c)
    return sd


def sd_external_mh(dim: int, heads: int, seed: int = 0) -> SD:
    d = dim // heads
    sd = SD(seed)
    sd.w("trans_dims.weight", 4 * dim, dim)
    sd.w("trans_dims.bias", 4 * dim)
    sd.w("linear_0.weight", 64, d, scale=1.0)
    sd.w("linear_0.bias", 64)
    sd.w("linear_1.weight", d, 64)
    sd.w("linear_1.bias", d)
    sd.w("proj.weight", dim, 4 * dim)
    sd.w("proj.bias", dim)
    return sd


def downsample(inplanes: int, out: int, stride: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out))


# ------------------------------------------------------ references from the spec's equations

def bn_eval(x, sd, prefix, eps=1e-5):
    """Eval-mode BatchNorm over axis 1 from the raw running statistics."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = sd[prefix + "running_mean"].reshape(shape)
    var = sd[prefix + "running_var"].reshape(shape)
    return ((x - mean) / torch.sqrt(var + eps) * sd[prefix + "weight"].reshape(shape)
            + sd[prefix + "bias"].reshape(shape))


def conv(x, sd, prefix, **kw):
    return F.conv2d(x, sd[prefix + "weight"], sd.get(prefix + "bias"), **kw)


def layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def softmax(x, dim):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def ref_bam(sd, x):
    p = "channel_att.gate_c."
    avg = x.mean(dim=(2, 3))  # square maps: the official H×H window is the whole map
    h = avg @ sd[p + "gate_c_fc_0.weight"].T + sd[p + "gate_c_fc_0.bias"]
    h = torch.relu(bn_eval(h, sd, p + "gate_c_bn_1."))
    mc = h @ sd[p + "gate_c_fc_final.weight"].T + sd[p + "gate_c_fc_final.bias"]
    p = "spatial_att.gate_s."
    s = torch.relu(bn_eval(conv(x, sd, p + "gate_s_conv_reduce0."), sd, p + "gate_s_bn_reduce0."))
    for i in range(2):
        s = conv(s, sd, p + f"gate_s_conv_di_{i}.", padding=4, dilation=4)
        s = torch.relu(bn_eval(s, sd, p + f"gate_s_bn_di_{i}."))
    ms = conv(s, sd, p + "gate_s_conv_final.")                       # B×1×H×W
    return (1 + torch.sigmoid(mc[:, :, None, None] * ms)) * x


def ref_pam(sd, x):
    B, C, H, W = x.shape
    q = conv(x, sd, "query_conv.").reshape(B, -1, H * W)
    k = conv(x, sd, "key_conv.").reshape(B, -1, H * W)
    v = conv(x, sd, "value_conv.").reshape(B, C, H * W)
    out = torch.zeros_like(v)
    for b in range(B):
        for i in range(H * W):
            a = softmax((q[b, :, i:i + 1] * k[b]).sum(0), 0)       # over key positions j
            out[b, :, i] = (v[b] * a).sum(1)
    return sd["gamma"] * out.reshape(B, C, H, W) + x


def ref_cam(sd, x):
    B, C, H, W = x.shape
    f = x.reshape(B, C, H * W)
    out = torch.zeros_like(f)
    for b in range(B):
        for c in range(C):
            e = (f[b, c] * f[b]).sum(1)                             # E[c, c'] over c'
            a = softmax(e.max() - e, 0)
            out[b, c] = (a[:, None] * f[b]).sum(0)
    return sd["gamma"] * out.reshape(B, C, H, W) + x


def ref_eca(sd, x):
    """ECA is ECA-NS with one kernel shared by every channel."""
    w = sd["conv.weight"]                                           # 1×1×k
    return ref_eca_ns({"conv.weight": w.expand(x.shape[1], 1, w.shape[-1])}, x)


def ref_eca_ns(sd, x):
    w = sd["conv.weight"][:, 0]                                     # C×k
    C, k = w.shape
    y = x.mean(dim=(2, 3))
    z = torch.zeros_like(y)
    for c in range(C):
        for i in range(k):
            j = c + i - (k - 1) // 2
            if 0 <= j < C:
                z[:, c] += w[c, i] * y[:, j]
    return x * torch.sigmoid(z)[:, :, None, None]


def ref_scconv(sd, x, prefix="", stride=1, dilation=1, groups=1, r=4):
    H, W = x.shape[-2:]
    kw = dict(padding=dilation, dilation=dilation, groups=groups)
    small = bn_eval(conv(F.avg_pool2d(x, r, r), sd, prefix + "k2.1.", **kw), sd, prefix + "k2.2.")
    h, w = small.shape[-2:]
    rows = torch.div(torch.arange(H) * h, H, rounding_mode="floor")  # legacy nearest
    cols = torch.div(torch.arange(W) * w, W, rounding_mode="floor")
    up = small[:, :, rows][:, :, :, cols]
    gate = torch.sigmoid(x + up)
    y = bn_eval(conv(x, sd, prefix + "k3.0.", **kw), sd, prefix + "k3.1.") * gate
    return bn_eval(conv(y, sd, prefix + "k4.0.", stride=stride, **kw), sd, prefix + "k4.1.")


def ref_scbottleneck(sd, x, stride, cardinality, avd, ds):
    a = torch.relu(bn_eval(conv(x, sd, "conv1_a."), sd, "bn1_a."))
    b = torch.relu(bn_eval(conv(x, sd, "conv1_b."), sd, "bn1_b."))
    inner = 1 if avd else stride
    a = torch.relu(bn_eval(conv(a, sd, "k1.0.", stride=inner, padding=1, groups=cardinality),
                           sd, "k1.1."))
    b = torch.relu(ref_scconv(sd, b, "scconv.", stride=inner, groups=cardinality))
    if avd:
        a, b = F.avg_pool2d(a, 3, stride, 1), F.avg_pool2d(b, 3, stride, 1)
    out = bn_eval(conv(torch.cat([a, b], 1), sd, "conv3."), sd, "bn3.")
    res = bn_eval(conv(x, sd, "downsample.0.", stride=stride), sd, "downsample.1.") if ds else x
    return torch.relu(out + res)


def ref_psa(sd, x, kernels, groups, stride=1, prefix=""):
    feats = [conv(x, sd, f"{prefix}conv_{i + 1}.", stride=stride, padding=k // 2, groups=g)
             for i, (k, g) in enumerate(zip(kernels, groups))]
    scores = []
    for f in feats:                                                 # one SE, shared
        s = torch.relu(conv(f.mean(dim=(2, 3), keepdim=True), sd, prefix + "se.fc1."))
        scores.append(torch.sigmoid(conv(s, sd, prefix + "se.fc2.")))
    att = softmax(torch.stack(scores, 0), 0)                        # over the four scales
    weighted = [f * a for f, a in zip(feats, att)]
    return torch.cat(weighted[::-1], 1)                             # reversed concatenation


def ref_epsa_block(sd, x):
    out = torch.relu(bn_eval(conv(x, sd, "conv1."), sd, "bn1."))
    out = torch.relu(bn_eval(ref_psa(sd, out, (3, 5, 7, 9), (1, 4, 8, 16), prefix="conv2."),
                             sd, "bn2."))
    out = bn_eval(conv(out, sd, "conv3."), sd, "bn3.")
    res = bn_eval(conv(x, sd, "downsample.0."), sd, "downsample.1.")
    return torch.relu(out + res)


def ref_emsa(sd, x, H, W, heads, sr, transform, qk_scale=None, prefix=""):
    B, N, C = x.shape
    d = C // heads
    lin = lambda t, name: t @ sd[prefix + name + ".weight"].T + sd.get(prefix + name + ".bias", 0)
    q = lin(x, "q")
    src = x
    if sr > 1:
        grid = x.transpose(1, 2).reshape(B, C, H, W)
        red = F.conv2d(grid, sd[prefix + "sr.weight"], sd[prefix + "sr.bias"], stride=sr,
                       padding=sr // 2, groups=C)
        src = layer_norm(red.flatten(2).transpose(1, 2), sd[prefix + "sr_norm.weight"],
                         sd[prefix + "sr_norm.bias"])
    kv = lin(src, "kv")
    k, v = kv[..., :C], kv[..., C:]
    scale = qk_scale or d ** -0.5
    out = torch.zeros_like(q)
    for b in range(B):
        logits = torch.stack([q[b, :, h * d:(h + 1) * d] @ k[b, :, h * d:(h + 1) * d].T * scale
                              for h in range(heads)])               # heads×N×M
        if transform and heads > 1:
            mix = sd[prefix + "transform_conv.weight"][:, :, 0, 0]
            logits = (torch.tensordot(mix, logits, dims=([1], [0]))
                      + sd[prefix + "transform_conv.bias"][:, None, None])
            a = softmax(logits, -1)
            mean = a.mean(dim=(1, 2), keepdim=True)
            var = ((a - mean) ** 2).mean(dim=(1, 2), keepdim=True)
            a = (a - mean) / torch.sqrt(var + 1e-5)                 # InstanceNorm per head
        else:
            a = softmax(logits, -1)
        for h in range(heads):
            out[b, :, h * d:(h + 1) * d] = a[h] @ v[b, :, h * d:(h + 1) * d]
    return lin(out, "proj")


def ref_pa(sd, x, prefix=""):
    return x * torch.sigmoid(F.conv2d(x, sd[prefix + "pa_conv.weight"], sd[prefix + "pa_conv.bias"],
                                      padding=1, groups=x.shape[1]))


def ref_patch_embed(sd, x, p, with_pos):
    y = bn_eval(conv(x, sd, "conv.", stride=p, padding=p // 2), sd, "norm.")
    if with_pos:
        y = ref_pa(sd, y, "pos.")
    return y.flatten(2).transpose(1, 2), tuple(y.shape[-2:])


def ref_block(sd, x, H, W, heads, sr, transform):
    ln = lambda t, n: layer_norm(t, sd[n + ".weight"], sd[n + ".bias"])
    x = x + ref_emsa(sd, ln(x, "norm1"), H, W, heads, sr, transform, prefix="attn.")
    h = F.gelu(ln(x, "norm2") @ sd["mlp.fc1.weight"].T + sd["mlp.fc1.bias"])
    return x + h @ sd["mlp.fc2.weight"].T + sd["mlp.fc2.bias"]


def ref_external(sd, x):
    B, C, H, W = x.shape
    t = conv(x, sd, "conv1.").reshape(B, C, H * W)
    mk, mv = sd["linear_0.weight"][:, :, 0], sd["linear_1.weight"][:, :, 0]   # S×C, C×S
    a = softmax(torch.matmul(mk, t), -1)                            # B×S×N, softmax over N
    a = a / (1e-9 + a.sum(1, keepdim=True))                         # l1 over the memory S
    y = torch.matmul(mv, a).reshape(B, C, H, W)
    y = bn_eval(conv(y, sd, "conv2.0."), sd, "conv2.1.")
    return torch.relu(y + x)


def ref_external_mh(sd, x, heads):
    B, N, C = x.shape
    h4 = 4 * heads
    t = x @ sd["trans_dims.weight"].T + sd["trans_dims.bias"]       # B×N×4C
    d = t.shape[-1] // h4
    out = torch.zeros_like(t)
    for h in range(h4):
        th = t[..., h * d:(h + 1) * d]
        a = softmax(th @ sd["linear_0.weight"].T + sd["linear_0.bias"], 1)   # over tokens N
        a = a / (1e-9 + a.sum(-1, keepdim=True))                    # l1 over memory
        out[..., h * d:(h + 1) * d] = a @ sd["linear_1.weight"].T + sd["linear_1.bias"]
    return out @ sd["proj.weight"].T + sd["proj.bias"]


# ------------------------------------------------------------------------------------ cases

def x_map(B, C, H, W, seed=1):
    return torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(seed), dtype=DT)


def x_tok(B, N, C, seed=1):
    return torch.randn(B, N, C, generator=torch.Generator().manual_seed(seed), dtype=DT)


# id: (kind, state_dict, official kwargs, forward args, reference)
def cases():
    sd = {}
    c = {}
    sd["bam"] = sd_bam(33)
    c["bam"] = ("bam", sd["bam"], dict(gate_channel=33), (x_map(1, 33, 7, 7),),
                lambda s, x: ref_bam(s, x))
    sd["pam"] = sd_pam(13)
    c["pam"] = ("pam", sd["pam"], dict(in_dim=13), (x_map(1, 13, 5, 7),),
                lambda s, x: ref_pam(s, x))
    c["cam"] = ("cam", sd_cam(), dict(in_dim=5), (x_map(1, 5, 5, 7) * 0.3,),
                lambda s, x: ref_cam(s, x))
    c["eca"] = ("eca", sd_eca(5), dict(channel=11, k_size=5), (x_map(1, 11, 5, 7),),
                lambda s, x: ref_eca(s, x))
    c["eca_ns"] = ("eca_ns", sd_eca_ns(9, 3), dict(channel=9, k_size=3), (x_map(1, 9, 5, 7),),
                   lambda s, x: ref_eca_ns(s, x))
    c["scconv"] = ("scconv", sd_scconv(6, 3),
                   dict(inplanes=6, planes=6, stride=2, padding=2, dilation=2, groups=3,
                        pooling_r=3),
                   (x_map(1, 6, 7, 10),),
                   lambda s, x: ref_scconv(s, x, stride=2, dilation=2, groups=3, r=3))
    c["scbottleneck"] = ("scbottleneck", sd_scbottleneck(12, 4, 2, 32, True),
                         dict(inplanes=12, planes=4, stride=2, downsample=downsample(12, 16, 2),
                              cardinality=2, avd=True),
                         (x_map(1, 12, 9, 11),),
                         lambda s, x: ref_scbottleneck(s, x, 2, 2, True, True))
    c["psa"] = ("psa", sd_psa(18, 64, (3, 5, 7, 1), (1, 2, 1, 2)),
                dict(inplans=18, planes=64, conv_kernels=[3, 5, 7, 1], stride=2,
                     conv_groups=[1, 2, 1, 2]),
                (x_map(1, 18, 7, 10),),
                lambda s, x: ref_psa(s, x, (3, 5, 7, 1), (1, 2, 1, 2), stride=2))
    c["epsa_block"] = ("epsa_block", sd_epsa_block(16, 64, True),
                       dict(inplanes=16, planes=64, downsample=downsample(16, 256, 1)),
                       (x_map(1, 16, 5, 7),), lambda s, x: ref_epsa_block(s, x))
    c["emsa"] = ("emsa", sd_emsa(12, 3, True, 3, True),
                 dict(dim=12, num_heads=3, qkv_bias=True, sr_ratio=3, apply_transform=True),
                 (x_tok(1, 56, 12), 7, 8),
                 lambda s, x, H, W: ref_emsa(s, x, H, W, 3, 3, True))
    c["emsa_plain"] = ("emsa", sd_emsa(12, 2, False, 1, False),
                       dict(dim=12, num_heads=2, qk_scale=0.7),
                       (x_tok(1, 35, 12), 5, 7),
                       lambda s, x, H, W: ref_emsa(s, x, H, W, 2, 1, False, qk_scale=0.7))
    c["rest_pa"] = ("rest_pa", sd_pa(5), dict(dim=5), (x_map(1, 5, 5, 7),),
                    lambda s, x: ref_pa(s, x))
    c["rest_patch_embed"] = ("rest_patch_embed", sd_patch_embed(2, 3, 6, True),
                             dict(patch_size=2, in_ch=3, out_ch=6, with_pos=True),
                             (x_map(1, 3, 7, 9),),
                             lambda s, x: ref_patch_embed(s, x, 2, True))
    c["rest_block"] = ("rest_block", sd_block(12, 2, 2.0, True, 2, True),
                       dict(dim=12, num_heads=2, mlp_ratio=2.0, qkv_bias=True, sr_ratio=2,
                            apply_transform=True),
                       (x_tok(1, 35, 12), 5, 7),
                       lambda s, x, H, W: ref_block(s, x, H, W, 2, 2, True))
    c["external_attention_tied"] = ("external_attention", sd_external(7, True), dict(c=7),
                                    (x_map(1, 7, 5, 7),), lambda s, x: ref_external(s, x))
    c["external_attention_untied"] = ("external_attention", sd_external(7, False), dict(c=7),
                                      (x_map(1, 7, 5, 7),), lambda s, x: ref_external(s, x))
    c["external_attention_mh"] = ("external_attention_mh", sd_external_mh(12, 3),
                                  dict(dim=12, num_heads=3), (x_tok(1, 35, 12),),
                                  lambda s, x: ref_external_mh(s, x, 3))
    return c


CASES = cases()


def test_every_kind_has_a_case():
    assert sorted({case[0] for case in CASES.values()}) == sorted(OFFICIAL_KINDS)


@pytest.mark.parametrize("name", list(CASES))
def test_loaded_module_computes_the_official_computation(name):
    kind, sd, kwargs, args, ref = CASES[name]
    module = from_official(kind, sd, **kwargs).eval()
    assert next(module.parameters()).dtype == DT  # takes the state_dict's dtype
    with torch.no_grad():
        got, want = module(*args), ref(sd, *args)
    if kind == "rest_patch_embed":  # (tokens, grid): the TRUE grid 4×5 for a 7×9 input
        assert tuple(got[1]) == want[1] == (4, 5)
        got, want = got[0], want[0]
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)


def _weight_key(sd):
    return next((k for k, v in sd.items() if k.endswith("weight") and v.dim() >= 1), "gamma")


@pytest.mark.parametrize("name", list(CASES))
def test_missing_key_is_named(name):
    kind, sd, kwargs, _, _ = CASES[name]
    key = list(sd)[len(sd) // 2]
    broken = {k: v for k, v in sd.items() if k != key}
    with pytest.raises(ValueError, match=f"missing key '{key}'"):
        from_official(kind, broken, **kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_extra_key_is_named(name):
    kind, sd, kwargs, _, _ = CASES[name]
    broken = dict(sd)
    broken["extra_layer.weight"] = torch.zeros(3, dtype=DT)
    with pytest.raises(ValueError, match="unexpected key 'extra_layer.weight'"):
        from_official(kind, broken, **kwargs)


@pytest.mark.parametrize("name", list(CASES))
def test_wrong_shape_is_named(name):
    kind, sd, kwargs, _, _ = CASES[name]
    key = _weight_key(sd)
    broken = dict(sd)
    broken[key] = torch.zeros((sd[key].shape[0] + 1,) + sd[key].shape[1:], dtype=DT)
    with pytest.raises(ValueError, match=rf"state_dict\['{key}'\] has shape"):
        from_official(kind, broken, **kwargs)


def test_keys_of_an_absent_optional_part_are_unexpected():
    sd = dict(sd_emsa(12, 2, False, 1, False))
    sd["q.bias"] = torch.zeros(12, dtype=DT)  # the module was built with qkv_bias=False
    with pytest.raises(ValueError, match="unexpected key 'q.bias'"):
        from_official("emsa", sd, dim=12, num_heads=2)
    sd = sd_scbottleneck(16, 4, 1, 32, downsample=True)  # downsample weights, downsample=None
    with pytest.raises(ValueError, match="unexpected key 'downsample.0.weight'"):
        from_official("scbottleneck", sd, inplanes=16, planes=4)


def test_argument_errors():
    with pytest.raises(ValueError, match="kind='nope'"):
        from_official("nope", {})
    with pytest.raises(ValueError, match="inplanes=8 must equal planes=16"):
        from_official("scconv", {}, inplanes=8, planes=16, stride=1, padding=1, dilation=1,
                      groups=1, pooling_r=4)
    with pytest.raises(ValueError, match="4 entries"):
        from_official("psa", {}, inplans=64, planes=64, conv_kernels=[3, 5, 7],
                      conv_groups=[1, 4, 8])
    with pytest.raises(TypeError):  # an argument the official class does not have
        from_official("pam", sd_pam(16), channels=16)


def test_downsample_module_of_the_caller_is_not_modified():
    ds = downsample(12, 16, 2)
    before = {k: v.clone() for k, v in ds.state_dict().items()}
    from_official("scbottleneck", sd_scbottleneck(12, 4, 2, 32, True), inplanes=12, planes=4,
                  stride=2, downsample=ds, cardinality=2, avd=True)
    assert all(torch.equal(before[k], v) for k, v in ds.state_dict().items())


def test_train_mode_uses_batch_statistics_like_the_official_bn():
    # one train-mode step of SCConv: output normalised with batch statistics, running stats
    # updated with momentum 0.1 from the official running stats
    sd = sd_scconv(6, 3)
    m = from_official("scconv", sd, inplanes=6, planes=6, stride=1, padding=1, dilation=1,
                      groups=3, pooling_r=4).train()
    x = x_map(3, 6, 9, 11)
    out = m(x)
    mean = out.mean(dim=(0, 2, 3))
    torch.testing.assert_close(mean, sd["k4.1.bias"], rtol=0, atol=1e-9)
    assert int(m.k4_bn.num_batches_tracked) == 12


# ------------------------------------------------------------------ tied vs untied memories

def test_tied_memories_are_detected_and_shared():
    sd = sd_external(7, tied=True)
    assert memories_are_tied(sd)
    m = from_official("external_attention", sd, c=7)
    assert m.tie_memories and m.memory_value is None
    torch.testing.assert_close(m.memory_value_weight, sd["linear_1.weight"][:, :, 0],
                               rtol=0, atol=0)
    # one parameter: the tie survives training (a gradient step moves both together)
    assert sum(p.numel() for p in m.parameters()) == 7 * 7 + 7 + 64 * 7 + 7 * 7 + 2 * 7


def test_untied_memories_stay_independent():
    sd = sd_external(7, tied=False)
    assert not memories_are_tied(sd)
    m = from_official("external_attention", sd, c=7)
    assert not m.tie_memories
    torch.testing.assert_close(m.memory_value.weight, sd["linear_1.weight"][:, :, 0],
                               rtol=0, atol=0)


def test_almost_tied_is_untied():
    sd = sd_external(7, tied=True)
    sd["linear_1.weight"] = sd["linear_1.weight"].clone()
    sd["linear_1.weight"][0, 0, 0] += 1e-12
    assert not memories_are_tied(sd)
    assert not from_official("external_attention", sd, c=7).tie_memories


def test_official_construction_is_tied_through_shared_storage():
    # the official constructor assigns a permuted view of linear_0's storage to linear_1;
    # a state_dict taken from such a module holds exact transposes
    linear_0 = nn.Conv1d(5, 64, 1, bias=False).double()
    linear_1 = nn.Conv1d(64, 5, 1, bias=False).double()
    linear_1.weight.data = linear_0.weight.data.permute(1, 0, 2)
    with torch.no_grad():
        linear_0.weight.normal_()
    assert memories_are_tied({"linear_0.weight": linear_0.weight,
                              "linear_1.weight": linear_1.weight})


def test_bam_pools_globally_on_non_square_maps():
    # the official H×H window would average only the left 5×5 block of a 5×8 map; ours is GAP
    sd = sd_bam(32)
    m = from_official("bam", sd, gate_channel=32).eval()
    x = x_map(2, 32, 5, 8)
    with torch.no_grad():
        torch.testing.assert_close(m(x), ref_bam(sd, x), rtol=0, atol=TOL)


def test_memory_without_its_kernel_axis_is_a_shape_error():
    sd = dict(sd_external(7, tied=False))
    sd["linear_0.weight"] = sd["linear_0.weight"][:, :, 0]  # a Linear-shaped 64×7
    with pytest.raises(ValueError, match=r"state_dict\['linear_0.weight'\] has shape \(64, 7\), "
                                         r"expected \(64, 7, 1\)"):
        from_official("external_attention", sd, c=7)


@pytest.mark.parametrize("bad", [None, "bam_checkpoint.pth", [("a", torch.zeros(1))],
                                 torch.zeros(3)], ids=["None", "path", "list", "tensor"])
def test_a_state_dict_that_is_not_a_mapping_says_load_it_first(bad):
    with pytest.raises(ValueError, match="expected a state_dict mapping; load the file with "
                                         "torch.load first"):
        from_official("bam", bad, gate_channel=32)
    if bad is not None:  # official_rules takes state_dict=None to mean "no weights"
        with pytest.raises(ValueError, match="expected a state_dict mapping"):
            official_rules("pam", bad, in_dim=16)


def test_torch_strict_loading_accepts_a_batchnorm_without_num_batches_tracked():
    """The rule from_official follows, shown on torch itself (PyTorch < 0.4.1 saved no counter)."""
    bn = nn.BatchNorm2d(3)
    old = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    nn.BatchNorm2d(3).load_state_dict(old, strict=True)


@pytest.mark.parametrize("name", [n for n in CASES if any(k.endswith("num_batches_tracked")
                                                          for k in CASES[n][1])])
def test_state_dict_without_num_batches_tracked_is_accepted(name):
    kind, sd, kwargs, args, ref = CASES[name]
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    module = from_official(kind, old, **kwargs).eval()
    counters = [b for k, b in module.named_buffers() if k.endswith("num_batches_tracked")]
    assert counters and all(int(c) == 0 for c in counters)
    with torch.no_grad():
        got, want = module(*args), ref(sd, *args)
    got, want = (got[0], want[0]) if kind == "rest_patch_embed" else (got, want)
    torch.testing.assert_close(got, want, rtol=0, atol=TOL)


# ------------------------------------------------------------------ keys and dtypes, strictly

@pytest.mark.parametrize("name", ["bam", "pam", "scbottleneck", "external_attention_tied"])
@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_an_integer_or_bool_tensor_for_a_float_weight_is_refused(name, dtype):
    kind, sd, kwargs, _, _ = CASES[name]
    key = _weight_key(sd)
    broken = dict(sd)
    broken[key] = torch.ones(sd[key].shape, dtype=dtype)  # same shape: only the dtype is wrong
    with pytest.raises(ValueError, match=rf"state_dict\['{key}'\] has dtype {dtype}, expected "
                                         "floating-point values"):
        from_official(kind, broken, **kwargs)


def test_a_float_tensor_for_the_batchnorm_counter_is_refused():
    kind, sd, kwargs, _, _ = CASES["scconv"]
    broken = dict(sd)
    broken["k2.2.num_batches_tracked"] = torch.tensor(11.0, dtype=DT)
    with pytest.raises(ValueError, match=r"state_dict\['k2.2.num_batches_tracked'\] has dtype "
                                         r"torch.float64, expected integer values"):
        from_official(kind, broken, **kwargs)


@pytest.mark.parametrize("key", [3, None, ("gamma",), b"gamma"], ids=["int", "None", "tuple",
                                                                      "bytes"])
def test_a_key_that_is_not_a_string_is_refused_by_name(key):
    sd = dict(sd_pam(16))
    sd[key] = torch.zeros(1, dtype=DT)
    with pytest.raises(ValueError, match=rf"the state_dict has the key {re.escape(repr(key))} "
                                         rf"\(a {type(key).__name__}\); state_dict keys are "
                                         "strings"):
        from_official("pam", sd, in_dim=16)


def test_kind_must_be_a_string():
    with pytest.raises(ValueError, match=r"kind=\['bam'\] must be a string"):
        from_official(["bam"], sd_bam(32), gate_channel=32)
