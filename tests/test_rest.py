"""ResT v1 (EMSA, PA, PatchEmbed, BasicStem, Block) against loop references written from the
equations of the official code, in float64."""

from __future__ import annotations

import math
import warnings
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from _reference import batchnorm_loop, linear_loop, randomize_
from attn_tutorial.rest import PA, BasicStem, Block, DropPath, EMSA, PatchEmbed

TOL = 1e-9
DT = torch.float64
randomise = partial(randomize_, scale=0.5, mean_scale=1.0)


# ----------------------------------------------------------------------------- loop references

@torch.no_grad()
def conv2d_loop(x, weight, bias, stride, padding, groups=1):
    """Direct convolution, one output pixel at a time. x: B×Cin×H×W."""
    B, Cin, H, W = x.shape
    Cout, cin_g, k, _ = weight.shape
    Ho = (H + 2 * padding - k) // stride + 1
    Wo = (W + 2 * padding - k) // stride + 1
    xp = torch.zeros(B, Cin, H + 2 * padding, W + 2 * padding, dtype=x.dtype)
    xp[:, :, padding:padding + H, padding:padding + W] = x
    out = torch.zeros(B, Cout, Ho, Wo, dtype=x.dtype)
    cout_g = Cout // groups
    for b in range(B):
        for o in range(Cout):
            g = o // cout_g
            for i in range(Ho):
                for j in range(Wo):
                    patch = xp[b, g * cin_g:(g + 1) * cin_g,
                               i * stride:i * stride + k, j * stride:j * stride + k]
                    out[b, o, i, j] = (patch * weight[o]).sum() + (0 if bias is None else bias[o])
    return out


@torch.no_grad()
def layernorm_loop(v, ln):
    mean = v.sum() / v.numel()
    var = ((v - mean) ** 2).sum() / v.numel()
    return (v - mean) / math.sqrt(var + ln.eps) * ln.weight + ln.bias


@torch.no_grad()
def emsa_loop(m: EMSA, x, H, W):
    B, N, C = x.shape
    h = m.num_heads
    d = C // h
    out = torch.zeros_like(x)
    for b in range(B):
        q = torch.stack([linear_loop(x[b, n], m.q) for n in range(N)])             # N×C
        if m.sr_ratio > 1:
            grid = torch.zeros(1, C, H, W, dtype=x.dtype)
            for i in range(H):
                for j in range(W):
                    grid[0, :, i, j] = x[b, i * W + j]
            red = conv2d_loop(grid, m.reduce.weight, m.reduce.bias, m.sr_ratio,
                              m.sr_ratio // 2, groups=C)[0]
            Hr, Wr = red.shape[1:]
            src = torch.stack([layernorm_loop(red[:, i, j], m.reduce_norm)
                               for i in range(Hr) for j in range(Wr)])
        else:
            src = x[b]
        M = src.shape[0]
        kv = torch.stack([linear_loop(src[t], m.kv) for t in range(M)])             # M×2C
        logits = torch.zeros(h, N, M, dtype=x.dtype)
        for hd in range(h):
            for n in range(N):
                for t in range(M):
                    # head hd owns channels hd*d .. hd*d+d-1 of q and of k (k = first C of kv)
                    logits[hd, n, t] = m.scale * (q[n, hd * d:hd * d + d]
                                                  * kv[t, hd * d:hd * d + d]).sum()
        if m.apply_transform:
            mixed = torch.zeros_like(logits)
            for g in range(h):
                mixed[g] = sum(m.head_mix.weight[g, hh, 0, 0] * logits[hh] for hh in range(h))
                mixed[g] += m.head_mix.bias[g]
            e = torch.exp(mixed - mixed.max(dim=2, keepdim=True).values)
            sm = e / e.sum(dim=2, keepdim=True)
            attn = torch.zeros_like(sm)
            for g in range(h):
                mean = sm[g].sum() / sm[g].numel()
                var = ((sm[g] - mean) ** 2).sum() / sm[g].numel()
                attn[g] = (sm[g] - mean) / math.sqrt(var + m.head_norm.eps)
        else:
            e = torch.exp(logits - logits.max(dim=2, keepdim=True).values)
            attn = e / e.sum(dim=2, keepdim=True)
        merged = torch.zeros(N, C, dtype=x.dtype)
        for hd in range(h):
            for n in range(N):
                for e_ in range(d):
                    # v is the second C channels of kv
                    merged[n, hd * d + e_] = (attn[hd, n, :] * kv[:, C + hd * d + e_]).sum()
        out[b] = torch.stack([linear_loop(merged[n], m.proj) for n in range(N)])
    return out


def gelu(v):
    return v * 0.5 * (1 + torch.erf(v / math.sqrt(2.0)))


@torch.no_grad()
def block_loop(blk: Block, x, H, W):
    B, N, C = x.shape
    n1 = torch.stack([torch.stack([layernorm_loop(x[b, n], blk.norm1) for n in range(N)])
                      for b in range(B)])
    x = x + emsa_loop(blk.attn, n1, H, W)
    out = torch.empty_like(x)
    for b in range(B):
        for n in range(N):
            hid = gelu(linear_loop(layernorm_loop(x[b, n], blk.norm2), blk.mlp.fc1))
            out[b, n] = x[b, n] + linear_loop(hid, blk.mlp.fc2)
    return out


@torch.no_grad()
def pa_loop(pa: PA, x):
    return x * torch.sigmoid(conv2d_loop(x, pa.gate.weight, pa.gate.bias, 1, 1,
                                         groups=x.shape[1]))


@torch.no_grad()
def tokens_loop(fmap):
    B, C, H, W = fmap.shape
    t = torch.zeros(B, H * W, C, dtype=fmap.dtype)
    for i in range(H):
        for j in range(W):
            t[:, i * W + j] = fmap[:, :, i, j]
    return t


# ----------------------------------------------------------------------------- EMSA

EMSA_CASES = [  # B, H, W, C, heads, sr, transform, qkv_bias
    (1, 7, 9, 9, 3, 2, True, True),
    (2, 5, 11, 6, 2, 3, True, False),
    (3, 4, 6, 5, 1, 1, True, True),      # one head: transform silently off
    (2, 3, 5, 4, 2, 1, False, True),
]


@pytest.mark.parametrize("B,H,W,C,heads,sr,transform,bias", EMSA_CASES)
@pytest.mark.parametrize("train", [False, True])
def test_emsa_matches_loop(B, H, W, C, heads, sr, transform, bias, train):
    torch.manual_seed(0)
    m = randomise(EMSA(C, heads, qkv_bias=bias, sr_ratio=sr, apply_transform=transform)
                  .to(DT)).train(train)
    x = torch.randn(B, H * W, C, dtype=DT)
    assert m.apply_transform == (transform and heads > 1)
    torch.testing.assert_close(m(x, H, W), emsa_loop(m, x, H, W), rtol=0, atol=TOL)


def test_emsa_qk_scale_is_used():
    m = randomise(EMSA(6, 2, qk_scale=0.37, sr_ratio=2, apply_transform=True).to(DT))
    assert m.scale == 0.37
    x = torch.randn(2, 20, 6, dtype=DT)
    torch.testing.assert_close(m(x, 4, 5), emsa_loop(m, x, 4, 5), rtol=0, atol=TOL)


def test_emsa_softmax_over_keys_without_transform():
    m = randomise(EMSA(8, 2, sr_ratio=2, apply_transform=False).to(DT))
    a = m.attention_map(torch.randn(2, 35, 8, dtype=DT), 5, 7)
    assert a.shape == (2, 2, 35, 3 * 4)                      # M = ceil(5/2)*ceil(7/2)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 35, dtype=DT), rtol=0, atol=TOL)
    assert not torch.allclose(a.sum(-2), torch.ones_like(a.sum(-2)))
    assert (a >= 0).all()


def test_emsa_transform_instance_norm_per_head_map():
    m = randomise(EMSA(8, 4, sr_ratio=2, apply_transform=True).to(DT))
    a = m.attention_map(torch.randn(2, 35, 8, dtype=DT), 5, 7)
    mean = a.mean(dim=(-2, -1))
    torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=TOL)
    # rows are no longer convex: they do not sum to 1 and contain negative weights
    assert not torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)))
    assert (a < 0).any()


def test_emsa_transform_variance_is_var_over_var_plus_eps():
    """A = (P - 1/M) / sqrt(var(P) + eps) per (b, head) map, from the softmax P captured at the
    InstanceNorm's input: rows sum to 0, the variance is var/(var + eps), not 1."""
    torch.manual_seed(0)
    m = randomise(EMSA(8, 2, sr_ratio=2, apply_transform=True).to(DT))
    seen = {}
    m.head_norm.register_forward_hook(lambda mod, inp, out: seen.update(P=inp[0]))
    a = m.attention_map(torch.randn(2, 35, 8, dtype=DT), 5, 7)
    P, M = seen["P"], 3 * 4
    torch.testing.assert_close(P.sum(-1), torch.ones(2, 2, 35, dtype=DT), rtol=0, atol=TOL)
    var_p = ((P - 1 / M) ** 2).mean(dim=(-2, -1), keepdim=True)   # the map's mean is exactly 1/M
    torch.testing.assert_close(a, (P - 1 / M) / torch.sqrt(var_p + 1e-5), rtol=0, atol=TOL)
    torch.testing.assert_close(a.sum(-1), torch.zeros(2, 2, 35, dtype=DT), rtol=0, atol=TOL)
    var_a = (a ** 2).mean(dim=(-2, -1))
    torch.testing.assert_close(var_a, (var_p / (var_p + 1e-5)).flatten(-3), rtol=0, atol=TOL)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_emsa_transform_starts_turned_down_at_the_authors_init(seed):
    """Head-mixing weights of std 0.02 and small logits of LayerNormed tokens keep the softmax P
    within 1e-3 of uniform (1/M), so var(P) < 1e-8 << 1e-5 and the normalised weights have a
    variance below 1e-3 (the docstring's "a few 1e-4 of uniform, var ~ 1e-9, var(A) ~ 1e-4")."""
    torch.manual_seed(seed)
    m = EMSA(64, 2, qkv_bias=True, sr_ratio=4, apply_transform=True).to(DT)   # official init
    seen = {}
    m.head_norm.register_forward_hook(lambda mod, inp, out: seen.update(P=inp[0]))
    x = F.layer_norm(torch.randn(2, 11 * 9, 64, dtype=DT), (64,))
    a = m.attention_map(x, 11, 9)
    M = 3 * 3
    assert (seen["P"] - 1 / M).abs().max() < 1e-3
    assert ((seen["P"] - 1 / M) ** 2).mean(dim=(-2, -1)).max() < 1e-8
    assert (a ** 2).mean(dim=(-2, -1)).max() < 1e-3


@pytest.mark.parametrize("transform", [True, False])
def test_emsa_dead_kv_biases(transform):
    """+10 on every key's bias adds q·b, constant along a query's row (the head mixing keeps it
    constant): never an effect. +10 on every value's bias adds 10·(row sum): no effect when
    rows sum to 0 (transform), an effect when they sum to 1."""
    torch.manual_seed(0)
    m = randomise(EMSA(8, 2, qkv_bias=True, sr_ratio=2, apply_transform=transform).to(DT))
    x = torch.randn(2, 35, 8, dtype=DT)
    for half, dead in ((slice(0, 8), True), (slice(8, 16), transform)):
        shifted = EMSA(8, 2, qkv_bias=True, sr_ratio=2, apply_transform=transform).to(DT)
        shifted.load_state_dict(m.state_dict())
        with torch.no_grad():
            shifted.kv.bias[half] += 10.0
        same = torch.allclose(shifted(x, 5, 7), m(x, 5, 7), rtol=0, atol=1e-8)
        assert same == dead, (half, transform)


def test_emsa_transform_changes_output():
    torch.manual_seed(0)
    on = randomise(EMSA(8, 2, sr_ratio=2, apply_transform=True).to(DT))
    off = EMSA(8, 2, sr_ratio=2, apply_transform=False).to(DT)
    off.load_state_dict({k: v for k, v in on.state_dict().items() if "head_mix" not in k})
    x = torch.randn(1, 20, 8, dtype=DT)
    assert (on(x, 4, 5) - off(x, 4, 5)).abs().max() > 1e-3


def test_emsa_heads_are_slow_factor_of_channels():
    """Zeroing query channels 0..d-1 must change only head 0 of the map."""
    m = randomise(EMSA(6, 3, qkv_bias=True, sr_ratio=1).to(DT))
    x = torch.randn(1, 12, 6, dtype=DT)
    a = m.attention_map(x, 3, 4)
    with torch.no_grad():
        m.q.weight[0:2] = 0
        m.q.bias[0:2] = 0
    b = m.attention_map(x, 3, 4)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-6
    torch.testing.assert_close(a[:, 1:], b[:, 1:], rtol=0, atol=0)


def test_emsa_single_key_collapses_to_proj_bias():
    """The authors' quirk: a 1×1 reduced grid gives softmax = 1, IN -> 0, output = proj bias."""
    m = randomise(EMSA(8, 2, sr_ratio=4, apply_transform=True).to(DT))
    x = torch.randn(2, 16, 8, dtype=DT)
    with pytest.warns(UserWarning, match="single key"):
        assert m.attention_map(x, 4, 4).shape[-1] == 1
    with pytest.warns(UserWarning, match="projection bias"):
        y = m(x, 4, 4)
    torch.testing.assert_close(y, m.proj.bias.expand(2, 16, 8), rtol=0, atol=TOL)


def test_emsa_errors():
    # wrong rank / channels / integer inputs, gradcheck and batch 1: tests/test_contracts.py
    with pytest.raises(ValueError, match="dim=10 must be divisible by num_heads=4"):
        EMSA(10, 4)
    with pytest.raises(ValueError, match="sr_ratio"):
        EMSA(8, 2, sr_ratio=0)
    m = EMSA(8, 2, sr_ratio=4)
    with pytest.raises(ValueError, match="N=16 tokens but H=3, W=5"):
        m(torch.randn(2, 16, 8), 3, 5)
    # odd sr with a side of 1: the reduction conv (kernel 4, stride 3, padding 1) refuses it
    odd = EMSA(8, 2, sr_ratio=3)
    with pytest.raises(ValueError, match=r"H×W = 1×6 is too small for sr_ratio=3.*0×2 key grid"):
        odd(torch.randn(2, 6, 8), 1, 6)
    with pytest.raises(ValueError, match=r"H×W = 7×1 is too small for sr_ratio=3"):
        odd.attention_map(torch.randn(2, 7, 8), 7, 1)
    with pytest.raises(RuntimeError):  # ... as torch's conv does
        torch.nn.Conv2d(1, 1, 4, stride=3, padding=1)(torch.zeros(1, 1, 1, 6))


@pytest.mark.parametrize("H, W, sr, keys", [(9, 6, 8, (2, 1)), (1, 16, 4, (1, 4)),
                                            (3, 6, 4, (1, 2)), (2, 5, 3, (1, 2))])
@pytest.mark.parametrize("transform", [False, True])
def test_emsa_accepts_every_grid_the_reduction_conv_accepts(H, W, sr, keys, transform):
    """Grids smaller than sr are what the authors' code computes: the key grid from the formula
    H'' = ⌊(H + 2⌊sr/2⌋ − sr − 1)/sr⌋ + 1, and the output equal to the loop reference."""
    formula = tuple((n + 2 * (sr // 2) - sr - 1) // sr + 1 for n in (H, W))
    assert formula == keys
    m = randomise(EMSA(6, 2, qkv_bias=True, sr_ratio=sr, apply_transform=transform).to(DT))
    assert m.key_grid(H, W) == keys
    x = torch.randn(2, H * W, 6, dtype=DT)
    assert m.attention_map(x, H, W).shape == (2, 2, H * W, keys[0] * keys[1])
    torch.testing.assert_close(m(x, H, W), emsa_loop(m, x, H, W), rtol=0, atol=TOL)


def test_emsa_warns_on_a_single_key():
    m = randomise(EMSA(6, 2, sr_ratio=4).to(DT))
    x = torch.randn(2, 12, 6, dtype=DT)
    with pytest.warns(UserWarning, match="H×W = 3×4 reduces to a single key at sr_ratio=4"):
        y = m(x, 3, 4)
    # without the transform every token gets the same output: the value of the one key
    torch.testing.assert_close(y, y[:, :1].expand_as(y), rtol=0, atol=TOL)
    torch.testing.assert_close(y, emsa_loop(m, x, 3, 4), rtol=0, atol=TOL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(torch.randn(2, 20, 6, dtype=DT), 4, 5)  # 2×2 keys: no warning


# ----------------------------------------------------------------------------- PA, PatchEmbed, stem

@pytest.mark.parametrize("B,C,H,W", [(1, 3, 7, 9), (2, 5, 5, 11), (3, 4, 6, 6)])
def test_pa_matches_loop(B, C, H, W):
    pa = randomise(PA(C).to(DT))
    x = torch.randn(B, C, H, W, dtype=DT)
    torch.testing.assert_close(pa(x), pa_loop(pa, x), rtol=0, atol=TOL)


PE_CASES = [  # B, in, out, H, W, p, with_pos
    (1, 3, 4, 7, 9, 2, True),
    (2, 5, 3, 5, 11, 2, False),
    (3, 2, 5, 9, 10, 4, True),
]


@pytest.mark.parametrize("B,cin,cout,H,W,p,pos", PE_CASES)
@pytest.mark.parametrize("train", [False, True])
def test_patch_embed_matches_loop(B, cin, cout, H, W, p, pos, train):
    pe = randomise(PatchEmbed(p, cin, cout, with_pos=pos).to(DT)).train(train)
    x = torch.randn(B, cin, H, W, dtype=DT)
    tokens, (Ho, Wo) = pe(x)
    ref = batchnorm_loop(conv2d_loop(x, pe.proj.weight, pe.proj.bias, p, p // 2), pe.norm, train)
    if pos:
        ref = pa_loop(pe.pos, ref)
    # the true conv grid, from the formula (not the official H//p, W//p)
    assert (Ho, Wo) == ((H + 2 * (p // 2) - p - 1) // p + 1, (W + 2 * (p // 2) - p - 1) // p + 1)
    assert (Ho, Wo) == tuple(ref.shape[-2:])
    torch.testing.assert_close(tokens, tokens_loop(ref), rtol=0, atol=TOL)


def test_patch_embed_true_grid_on_odd_input():
    tokens, hw = PatchEmbed(2, 3, 4)(torch.randn(1, 3, 7, 9))
    assert hw == (4, 5) and tokens.shape == (1, 20, 4)      # official would report (3, 4)


@pytest.mark.parametrize("train", [False, True])
def test_patch_embed_batch1_gradient_finite_differences(train):
    """The CPU batch-1 BatchNorm gradient bug would fail this at 7×9."""
    pe = randomise(PatchEmbed(2, 3, 4, with_pos=True).to(DT)).train(train)
    x = torch.randn(1, 3, 7, 9, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pe(t)[0], (x,))


def test_patch_embed_errors():
    pe = PatchEmbed(4, 3, 8)
    with pytest.raises(ValueError, match="smaller than patch_size = 4"):
        pe(torch.randn(1, 3, 3, 8))


@pytest.mark.parametrize("B,cin,cout,H,W,pos", [(1, 3, 6, 9, 7, True), (2, 2, 5, 8, 11, False),
                                                (3, 3, 4, 6, 6, True)])
@pytest.mark.parametrize("train", [False, True])
def test_basic_stem_matches_loop(B, cin, cout, H, W, pos, train):
    st = randomise(BasicStem(cin, cout, with_pos=pos).to(DT)).train(train)
    x = torch.randn(B, cin, H, W, dtype=DT)
    y = torch.relu(batchnorm_loop(conv2d_loop(x, st.conv1.weight, None, 2, 1), st.norm1, train))
    y = torch.relu(batchnorm_loop(conv2d_loop(y, st.conv2.weight, None, 1, 1), st.norm2, train))
    y = conv2d_loop(y, st.conv3.weight, None, 2, 1)
    if pos:
        y = pa_loop(st.pos, y)
    torch.testing.assert_close(st(x), y, rtol=0, atol=TOL)


def test_basic_stem_errors():
    with pytest.raises(ValueError, match="out_ch=1"):
        BasicStem(3, 1)


# ----------------------------------------------------------------------------- Block, DropPath

@pytest.mark.parametrize("B,H,W,C,heads,sr", [(1, 5, 7, 6, 2, 2), (2, 3, 4, 5, 1, 1),
                                              (2, 4, 5, 9, 3, 3)])
@pytest.mark.parametrize("train", [False, True])
def test_block_matches_loop(B, H, W, C, heads, sr, train):
    blk = randomise(Block(C, heads, mlp_ratio=2.0, qkv_bias=True, sr_ratio=sr,
                          apply_transform=True).to(DT)).train(train)
    x = torch.randn(B, H * W, C, dtype=DT)
    torch.testing.assert_close(blk(x, H, W), block_loop(blk, x, H, W), rtol=0, atol=TOL)


def test_block_errors():
    blk = Block(8, 2, sr_ratio=2)
    with pytest.raises(ValueError, match="N=12 tokens but H=4, W=4"):
        blk(torch.randn(1, 12, 8), 4, 4)


def test_drop_path():
    dp = DropPath(0.5)
    x = torch.ones(400, 3, 2)
    dp.eval()
    assert dp(x) is x
    dp.train()
    y = dp(x)
    per_sample = y.flatten(1)
    # each sample's branch is either dropped whole or kept and scaled by 1/(1-p)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
    assert 100 < (per_sample == 0).all(1).sum() < 300
    assert DropPath(0.0).train()(x) is x
    with pytest.raises(ValueError, match=r"p=1.0 must be a probability in \[0, 1\)"):
        DropPath(1.0)


def test_block_drop_path_active_only_in_training():
    torch.manual_seed(0)
    blk = Block(8, 2, drop_path=0.9).to(DT)
    x = torch.randn(16, 12, 8, dtype=DT)
    blk.eval()
    ref = blk(x, 3, 4)
    blk.drop_path.p = 0.0
    torch.testing.assert_close(blk(x, 3, 4), ref, rtol=0, atol=0)
    blk.drop_path.p = 0.9
    blk.train()
    assert not torch.allclose(blk(x, 3, 4), ref)


# ----------------------------------------------------------------------------- init

def test_official_init():
    torch.manual_seed(0)
    m = EMSA(256, 4, qkv_bias=True, sr_ratio=2, apply_transform=True)
    for lin in (m.q, m.kv, m.proj):
        assert abs(lin.weight.std().item() - 0.02) < 1e-3
        assert lin.weight.abs().max() < 0.02 * 6
        assert (lin.bias == 0).all()
    assert abs(m.reduce.weight.std().item() - 0.02) < 2e-3
    assert (m.reduce.bias != 0).all()                  # conv bias keeps PyTorch's default init
    assert (m.reduce_norm.weight == 1).all() and (m.reduce_norm.bias == 0).all()
    pe = PatchEmbed(2, 64, 128, with_pos=True)
    assert (pe.norm.weight == 1).all() and (pe.norm.bias == 0).all()
    assert abs(pe.proj.weight.std().item() - 0.02) < 1e-3 and (pe.proj.bias != 0).any()
    assert abs(pe.pos.gate.weight.std().item() - 0.02) < 3e-3
    blk = Block(64, 2)
    assert (blk.mlp.fc1.bias == 0).all() and (blk.norm1.weight == 1).all()


@pytest.mark.parametrize("sr", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("H, W", [(8, 8), (9, 6), (16, 1), (1, 16), (13, 7)])
def test_emsa_key_grid_is_what_the_reduction_conv_produces(sr, H, W):
    m = EMSA(8, num_heads=2, sr_ratio=sr)
    conv = torch.nn.Conv2d(1, 1, kernel_size=sr + 1, stride=sr, padding=sr // 2)
    if sr == 1:
        assert m.key_grid(H, W) == (H, W)
    elif min(H, W) + 2 * (sr // 2) >= sr + 1:  # the conv accepts the grid
        assert m.key_grid(H, W) == tuple(conv(torch.zeros(1, 1, H, W)).shape[-2:])
