"""SCConv / SCBottleneck against index-by-index references written from the equations of the authors' code."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
import torch.nn as nn

from _reference import batchnorm_loop, randomize_, ref_conv
from attn_tutorial.scconv import SCBottleneck, SCConv

TOL = dict(atol=1e-9, rtol=1e-9)
F64 = torch.float64
randomize_ = partial(randomize_, scale=0.4, mean_scale=0.3)

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_avgpool(x, r):
    """Non-overlapping r×r means, trailing rows/cols dropped (floor)."""
    B, C, H, W = x.shape
    out = torch.empty(B, C, H // r, W // r, dtype=x.dtype)
    for i in range(H // r):
        for j in range(W // r):
            out[:, :, i, j] = x[:, :, i * r:(i + 1) * r, j * r:(j + 1) * r].sum((-2, -1)) / (r * r)
    return out


def ref_nearest(t, H, W):
    """Legacy nearest: destination row y reads source row floor(y * h / H)."""
    h, w = t.shape[-2:]
    out = torch.empty(*t.shape[:2], H, W, dtype=t.dtype)
    for y in range(H):
        for x in range(W):
            out[:, :, y, x] = t[:, :, (y * h) // H, (x * w) // W]
    return out


def ref_bilinear(t, H, W):
    """align_corners=False: src = (dst + 0.5)·in/out − 0.5 clamped at 0, linear between neighbours."""
    def taps(n_out, n_in):
        result = []
        for d in range(n_out):
            s = max((d + 0.5) * n_in / n_out - 0.5, 0.0)
            i0 = int(math.floor(s))
            i1 = min(i0 + 1, n_in - 1)
            result.append((i0, i1, s - i0))
        return result
    h, w = t.shape[-2:]
    out = torch.empty(*t.shape[:2], H, W, dtype=t.dtype)
    for y, (y0, y1, ly) in enumerate(taps(H, h)):
        for x, (x0, x1, lx) in enumerate(taps(W, w)):
            out[:, :, y, x] = ((1 - ly) * ((1 - lx) * t[:, :, y0, x0] + lx * t[:, :, y0, x1])
                               + ly * ((1 - lx) * t[:, :, y1, x0] + lx * t[:, :, y1, x1]))
    return out


def ref_scconv(x, m: SCConv, train):
    H, W = x.shape[-2:]
    context = batchnorm_loop(ref_conv(ref_avgpool(x, m.pooling_r), m.k2_conv), m.k2_bn, train)
    up = ref_nearest(context, H, W) if m.upsample == "nearest" else ref_bilinear(context, H, W)
    gate = 1 / (1 + torch.exp(-(x + up)))
    y = batchnorm_loop(ref_conv(x, m.k3_conv), m.k3_bn, train) * gate
    return batchnorm_loop(ref_conv(y, m.k4_conv), m.k4_bn, train)


SC_CASES = [  # (shape, stride, dilation, groups, pooling_r)
    ((2, 16, 9, 13), 1, 1, 1, 4),
    ((3, 9, 11, 7), 2, 1, 3, 4),
    ((2, 8, 9, 9), 2, 2, 2, 3),
    ((1, 7, 5, 6), 1, 1, 1, 2),  # batch 1: eval only
]
SC_MODES = [(c, t) for c in SC_CASES for t in (True, False) if not (t and c[0][0] == 1)]


@pytest.mark.parametrize("upsample", ["nearest", "bilinear"])
@pytest.mark.parametrize("case,train", SC_MODES)
def test_scconv_matches_loop_reference(case, train, upsample):
    shape, stride, dil, groups, r = case
    m = SCConv(shape[1], stride=stride, padding=dil, dilation=dil, groups=groups, pooling_r=r,
               upsample=upsample)
    m = randomize_(m.double(), seed=shape[1] + r).train(train)
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(shape[2]))
    out = m(x)
    assert out.shape == (shape[0], shape[1], (shape[2] - 1) // stride + 1, (shape[3] - 1) // stride + 1)
    torch.testing.assert_close(out, ref_scconv(x, m, train), **TOL)


def _identity_context_scconv(upsample="nearest", pooling_r=4) -> SCConv:
    """K2 conv = identity kernel, K2 BN = identity (eval): the context is the pooled input."""
    m = SCConv(3, upsample=upsample, pooling_r=pooling_r).double().eval()
    with torch.no_grad():
        m.k2_conv.weight.zero_()
        for c in range(3):
            m.k2_conv.weight[c, c, 1, 1] = 1.0
        m.k2_bn.running_mean.zero_()
        m.k2_bn.running_var.fill_(1.0 - m.k2_bn.eps)
    return m


def test_nearest_index_rule_h9_r4_and_gate_uses_identity():
    m = _identity_context_scconv()
    x = torch.randn(2, 3, 9, 8, dtype=F64)
    gate = m.attention_map(x)
    up = torch.logit(gate) - x  # gate = sigmoid(x + up)
    pooled = ref_avgpool(x, 4)  # 2×2 map
    for row in range(9):
        src = 0 if row <= 4 else 1  # rows 0-4 from pooled row 0, rows 5-8 from row 1
        for col in range(8):
            torch.testing.assert_close(up[:, :, row, col], pooled[:, :, src, col // 4],
                                       atol=1e-9, rtol=1e-7)
    # the identity matters: sigmoid(up) alone is a different gate
    assert (gate - torch.sigmoid(ref_nearest(pooled, 9, 8))).abs().max() > 1e-2
    # bilinear (paper) differs from nearest (official)
    assert (_identity_context_scconv("bilinear").attention_map(x) - gate).abs().max() > 1e-2


def test_only_k4_is_strided():
    m = SCConv(8, stride=2)
    assert m.k2_conv.stride == (1, 1) and m.k3_conv.stride == (1, 1) and m.k4_conv.stride == (2, 2)
    assert all(c.bias is None for c in (m.k2_conv, m.k3_conv, m.k4_conv))
    x = torch.randn(2, 8, 9, 7)
    assert m.attention_map(x).shape == x.shape and m(x).shape == (2, 8, 5, 4)


# --- bottleneck --------------------------------------------------------------------------------

def ref_avgpool3_pad1(x, stride):
    """3×3 average with zero padding 1 that is counted in the denominator (always / 9)."""
    B, C, H, W = x.shape
    padded = torch.zeros(B, C, H + 2, W + 2, dtype=x.dtype)
    padded[:, :, 1:-1, 1:-1] = x
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    out = torch.empty(B, C, Ho, Wo, dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = padded[:, :, i * stride:i * stride + 3, j * stride:j * stride + 3].sum((-2, -1)) / 9
    return out


def ref_bottleneck(x, m: SCBottleneck, train, stride):
    a = torch.relu(batchnorm_loop(ref_conv(x, m.conv1_a), m.bn1_a, train))
    b = torch.relu(batchnorm_loop(ref_conv(x, m.conv1_b), m.bn1_b, train))
    a = torch.relu(batchnorm_loop(ref_conv(a, m.k1_conv), m.k1_bn, train))
    b = torch.relu(ref_scconv(b, m.scconv, train))
    if m.avd:
        a, b = ref_avgpool3_pad1(a, stride), ref_avgpool3_pad1(b, stride)
    out = batchnorm_loop(ref_conv(torch.cat([a, b], 1), m.conv3), m.bn3, train)
    if m.downsample is None:
        residual = x
    else:
        residual = batchnorm_loop(ref_conv(x, m.downsample[0]), m.downsample[1], train)
    return torch.relu(out + residual)


def downsample(inplanes, outplanes, stride):
    return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(outplanes))


BOTTLENECK_CASES = [  # (shape, planes, stride, cardinality, avd, is_first, needs downsample)
    ((2, 64, 9, 11), 16, 1, 1, False, False, False),
    ((2, 40, 11, 9), 16, 2, 2, True, False, True),
    ((3, 64, 8, 5), 16, 1, 1, True, True, False),
    ((1, 24, 7, 9), 12, 2, 1, False, False, True),  # batch 1: eval only
]
B_MODES = [(c, t) for c in BOTTLENECK_CASES for t in (True, False) if not (t and c[0][0] == 1)]


@pytest.mark.parametrize("case,train", B_MODES)
def test_bottleneck_matches_loop_reference(case, train):
    shape, planes, stride, card, avd, is_first, needs_ds = case
    ds = downsample(shape[1], 4 * planes, stride) if needs_ds else None
    m = SCBottleneck(shape[1], planes, stride, ds, cardinality=card, avd=avd, is_first=is_first)
    m = randomize_(m.double(), seed=shape[1] + planes).train(train)
    assert m.conv1_a.out_channels == planes // 2 * card
    assert (m.avd_pool is not None) == (avd and (stride > 1 or is_first))
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(shape[3]))
    out = m(copy.deepcopy(x))
    assert out.shape == (shape[0], 4 * planes, (shape[2] - 1) // stride + 1, (shape[3] - 1) // stride + 1)
    torch.testing.assert_close(out, ref_bottleneck(x, m, train, stride), **TOL)


def test_avd_moves_the_stride_after_the_branches():
    m = SCBottleneck(32, 16, stride=2, downsample=downsample(32, 64, 2), avd=True)
    assert m.k1_conv.stride == (1, 1) and m.scconv.k4_conv.stride == (1, 1)
    assert m.avd_pool.stride == 2 and m.avd_pool.padding == 1 and m.avd_pool.count_include_pad
    plain = SCBottleneck(32, 16, stride=2, downsample=downsample(32, 64, 2))
    assert plain.avd_pool is None and plain.k1_conv.stride == (2, 2)
    assert plain.scconv.k4_conv.stride == (2, 2) and plain.scconv.k3_conv.stride == (1, 1)
    assert SCBottleneck(64, 16, avd=True).avd_pool is None  # stride 1 and not is_first


def test_official_init():
    torch.manual_seed(0)
    m = SCBottleneck(256, 64)
    for bn in [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]:
        assert (bn.weight == 1).all() and (bn.bias == 0).all()
    w = m.scconv.k3_conv.weight  # kaiming normal fan_out: std sqrt(2 / (32 * 9))
    assert abs(w.std().item() - math.sqrt(2 / (32 * 9))) < 0.05 * math.sqrt(2 / (32 * 9))


def test_errors():
    # wrong rank / channels / integer inputs, gradcheck and batch 1: tests/test_contracts.py
    with pytest.raises(ValueError, match="pooling_r = 4"):
        SCConv(8)(torch.randn(2, 8, 3, 9))
    with pytest.raises(ValueError, match="pooling_r = 4"):
        SCConv(8)(torch.randn(2, 8, 9, 3))
    with pytest.raises(ValueError, match="channels=9 must be divisible by groups=2"):
        SCConv(9, groups=2)
    with pytest.raises(ValueError, match="padding=1 must equal dilation=2"):
        SCConv(8, dilation=2)
    with pytest.raises(ValueError, match="upsample"):
        SCConv(8, upsample="bicubic")
    with pytest.raises(ValueError, match="group_width"):
        SCBottleneck(4, 1)
    with pytest.raises(ValueError, match="downsample"):
        SCBottleneck(32, 16)
    with pytest.raises(ValueError, match="downsample"):
        SCBottleneck(64, 16, stride=2)
    with pytest.raises(ValueError, match="pooling_r = 4"):
        SCBottleneck(64, 16)(torch.randn(2, 64, 3, 8))


def test_two_1x1_convs_are_one_conv_split_in_half():
    """The paper's split of X (one 1×1 conv to 2g channels + BN + ReLU, then halves X1, X2)
    and the code's two 1×1 convs are the same function, weights mapped either way, in train and
    eval mode; only kaiming fan_out's scale differs (g vs 2g outputs)."""
    m = randomize_(SCBottleneck(64, 16).double(), seed=3)
    g = m.conv1_a.out_channels
    conv1 = nn.Conv2d(64, 2 * g, 1, bias=False).double()
    bn1 = nn.BatchNorm2d(2 * g).double()
    randomize_(conv1, seed=4)
    randomize_(bn1, seed=5)
    names = ("weight", "bias", "running_mean", "running_var")

    def paper_form(x):
        x1, x2 = torch.relu(bn1(conv1(x))).chunk(2, dim=1)
        a = torch.relu(m.k1_bn(m.k1_conv(x1)))
        b = torch.relu(m.scconv(x2))
        return torch.relu(m.bn3(m.conv3(torch.cat([a, b], 1))) + x)

    x = torch.randn(2, 64, 9, 13, dtype=F64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # the code's weights onto the paper's form ...
        conv1.weight.copy_(torch.cat([m.conv1_a.weight, m.conv1_b.weight]))
        for n in names:
            getattr(bn1, n).copy_(torch.cat([getattr(m.bn1_a, n), getattr(m.bn1_b, n)]))
    for train in (False, True):  # eval first: a train-mode pass moves bn1's running stats only
        m.train(train), bn1.train(train)
        torch.testing.assert_close(paper_form(x), ref_bottleneck(x, m, train, 1), **TOL)
    randomize_(conv1, seed=6)
    randomize_(bn1, seed=7)
    with torch.no_grad():  # ... and the paper's onto the code's
        m.conv1_a.weight.copy_(conv1.weight[:g])
        m.conv1_b.weight.copy_(conv1.weight[g:])
        for n in names:
            getattr(m.bn1_a, n).copy_(getattr(bn1, n)[:g])
            getattr(m.bn1_b, n).copy_(getattr(bn1, n)[g:])
    for train in (False, True):
        m.train(train), bn1.train(train)
        torch.testing.assert_close(m(x), paper_form(x), **TOL)
    torch.manual_seed(0)
    big = SCBottleneck(2048, 512)  # g = 256: std sqrt(2 / 256), one conv to 512: sqrt(2 / 512)
    assert abs(big.conv1_a.weight.std().item() / math.sqrt(2 / 256) - 1) < 0.01


def _float32_nearest_source(d: int, n_in: int, n_out: int) -> int:
    """PyTorch's legacy nearest for float32 tensors, written with numpy's float32 arithmetic:
    floor(d · s), s = in/out rounded to float32, the product rounded to float32, clamped."""
    import numpy as np
    scale = np.float32(n_in) / np.float32(n_out)
    return min(int(np.floor(np.float32(d) * scale)), n_in - 1)


def test_float32_nearest_boundary_24_to_74():
    # 74×74 with pooling_r = 3 pools to 24×24; 37·24/74 = 12 exactly, but in float32 the scale
    # 24/74 rounds down and 37·scale lands just below 12: PyTorch reads pooled row 11 there.
    assert (37 * 24) // 74 == 12 and _float32_nearest_source(37, 24, 74) == 11
    m = _identity_context_scconv(pooling_r=3).float()
    x = torch.randn(1, 3, 74, 74, generator=torch.Generator().manual_seed(0))
    up = torch.logit(m.attention_map(x).double()) - x.double()
    pooled = ref_avgpool(x.double(), 3)
    rows = [_float32_nearest_source(d, 24, 74) for d in range(74)]
    expected = pooled[:, :, rows][:, :, :, rows]
    torch.testing.assert_close(up, expected, atol=2e-4, rtol=1e-4)
    # the integer rule reads row 12 at d = 37, a different value: the check above can fail
    integer = ref_nearest(pooled, 74, 74)
    assert (integer[:, :, 37] - expected[:, :, 37]).abs().max() > 1e-2
