"""PSA / EPSABlock against index-by-index references written from the equations of the authors' code."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _reference import batchnorm_loop, randomize_
from attn_tutorial.psa import PSA, EPSABlock

TOL = dict(atol=1e-9, rtol=1e-9)
F64 = torch.float64
randomize_ = partial(randomize_, scale=0.3, mean_scale=0.3)

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_psa(x, m: PSA) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (output, attention B×S×Ps in natural order)."""
    S = len(m.branches)
    if m.branch_input == "split":  # branch s reads the s-th slice of in_channels / S channels
        width = x.shape[1] // S
        inputs = [x[:, s * width:(s + 1) * width] for s in range(S)]
    else:
        inputs = [x] * S
    feats = [F.conv2d(inp, conv.weight, None, conv.stride, conv.padding, 1, conv.groups)
             for inp, conv in zip(inputs, m.branches)]
    B, Ps = feats[0].shape[:2]
    # the SE and the softmax in plain Python floats (float64), one number at a time
    w1, b1 = m.se_reduce.weight[:, :, 0, 0].tolist(), m.se_reduce.bias.tolist()
    w2, b2 = m.se_expand.weight[:, :, 0, 0].tolist(), m.se_expand.bias.tolist()
    hidden_width = len(w1)
    scores = [[[0.0] * Ps for _ in range(S)] for _ in range(B)]
    for s in range(S):  # the same SE weights for every scale
        for b in range(B):
            pooled = [(feats[s][b, c].sum() / feats[s][b, c].numel()).item() for c in range(Ps)]
            hidden = [max(0.0, b1[j] + sum(w1[j][c] * pooled[c] for c in range(Ps)))
                      for j in range(hidden_width)]
            for c in range(Ps):
                z = b2[c] + sum(w2[c][j] * hidden[j] for j in range(hidden_width))
                scores[b][s][c] = 1 / (1 + math.exp(-z))
    att = torch.empty(B, S, Ps, dtype=x.dtype)
    for b in range(B):
        for c in range(Ps):
            exps = [math.exp(scores[b][s][c]) for s in range(S)]
            for s in range(S):
                att[b, s, c] = exps[s] / sum(exps)
    order = list(range(S))[::-1] if m.concat_order == "official" else list(range(S))
    out = torch.empty(B, S * Ps, *feats[0].shape[2:], dtype=x.dtype)
    for block, s in enumerate(order):
        for b in range(B):
            for c in range(Ps):
                out[b, block * Ps + c] = feats[s][b, c] * att[b, s, c]
    return out, att


PSA_CASES = [  # (shape, planes, stride, kernels, groups)
    ((2, 64, 9, 13), 64, 1, (3, 5, 7, 9), (1, 4, 8, 16)),
    ((3, 32, 11, 7), 128, 2, (3, 5, 7, 9), (1, 4, 8, 16)),
    ((1, 21, 5, 11), 84, 1, (3, 5, 7, 9), (1, 3, 7, 21)),
    ((2, 18, 6, 7), 99, 2, (3, 5, 7), (1, 3, 3)),
]


SPLIT_CASES = [  # the paper's form: each branch reads in_channels / S channels
    ((2, 64, 9, 13), 64, 1, (3, 5, 7, 9), (1, 4, 8, 16)),
    ((1, 36, 7, 5), 108, 2, (3, 5, 7), (1, 3, 6)),
]


@pytest.mark.parametrize("order", ["official", "natural"])
@pytest.mark.parametrize("case", [(c, "full") for c in PSA_CASES] + [(c, "split") for c in SPLIT_CASES])
def test_psa_matches_loop_reference(case, order):
    (shape, planes, stride, kernels, groups), branch_input = case
    m = PSA(shape[1], planes, conv_kernels=kernels, stride=stride, conv_groups=groups,
            concat_order=order, branch_input=branch_input)
    m = randomize_(m.double(), seed=planes)
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(shape[2]))
    expected, expected_att = ref_psa(x, m)
    out = m(x)
    assert out.shape == (shape[0], planes, (shape[2] - 1) // stride + 1, (shape[3] - 1) // stride + 1)
    torch.testing.assert_close(out, expected, **TOL)
    torch.testing.assert_close(m.attention_map(x), expected_att, **TOL)
    torch.testing.assert_close(m.eval()(x), expected, **TOL)  # no BN/dropout: eval is the same


def test_softmax_over_scales_and_concat_orders():
    official = randomize_(PSA(64, 64).double(), seed=3)
    natural = PSA(64, 64, concat_order="natural").double()
    natural.load_state_dict(official.state_dict())
    x = torch.randn(2, 64, 7, 9, dtype=F64)
    att = official.attention_map(x)
    assert att.shape == (2, 4, 16)
    torch.testing.assert_close(att.sum(1), torch.ones(2, 16, dtype=F64), **TOL)
    assert (att.sum(2) - 1).abs().max() > 1e-3
    a, b = official(x), natural(x)
    assert (a - b).abs().max() > 1e-3
    for s in range(4):  # official block s is natural block 3 - s
        torch.testing.assert_close(a[:, 16 * s:16 * (s + 1)], b[:, 16 * (3 - s):16 * (4 - s)], **TOL)


def test_structure_matches_official_parameter_count():
    m = PSA(64, 64)  # the official PSAModule(64, 64) has 27121 parameters
    assert sum(p.numel() for p in m.parameters()) == 27121
    assert [c.in_channels for c in m.branches] == [64] * 4  # every branch reads the full input
    assert [c.groups for c in m.branches] == [1, 4, 8, 16]
    assert [c.padding for c in m.branches] == [(1, 1), (2, 2), (3, 3), (4, 4)]


# --- block -------------------------------------------------------------------------------------

def ref_block(x, m: EPSABlock, train):
    out = torch.relu(batchnorm_loop(F.conv2d(x, m.conv1.weight), m.bn1, train))
    out = torch.relu(batchnorm_loop(ref_psa(out, m.psa)[0], m.bn2, train))
    out = batchnorm_loop(F.conv2d(out, m.conv3.weight), m.bn3, train)
    if m.downsample is None:
        identity = x
    else:
        conv, bn = m.downsample
        identity = batchnorm_loop(F.conv2d(x, conv.weight, stride=conv.stride), bn, train)
    return torch.relu(out + identity)


BLOCK_CASES = [  # (shape, planes, stride, downsample)
    ((2, 256, 5, 7), 64, 1, False),
    ((2, 96, 7, 5), 64, 2, True),
    ((1, 128, 5, 6), 64, 2, True),  # batch 1: eval only
]
BLOCK_MODES = [(c, t) for c in BLOCK_CASES for t in (True, False) if not (t and c[0][0] == 1)]


@pytest.mark.parametrize("case,train", BLOCK_MODES)
def test_block_matches_loop_reference(case, train):
    shape, planes, stride, needs_ds = case
    ds = None
    if needs_ds:
        ds = nn.Sequential(nn.Conv2d(shape[1], 4 * planes, 1, stride=stride, bias=False),
                           nn.BatchNorm2d(4 * planes))
    m = randomize_(EPSABlock(shape[1], planes, stride, ds).double(), seed=shape[1]).train(train)
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    out = m(copy.deepcopy(x))
    assert out.shape == (shape[0], 4 * planes, (shape[2] - 1) // stride + 1, (shape[3] - 1) // stride + 1)
    torch.testing.assert_close(out, ref_block(x, m, train), **TOL)


def test_official_init():
    torch.manual_seed(0)
    m = EPSABlock(256, 64)
    for k, conv in zip((3, 5, 7, 9), m.psa.branches):
        expected = math.sqrt(2 / (k * k * 16))
        assert abs(conv.weight.std().item() - expected) < 0.1 * expected
    w = m.conv3.weight  # 1×1, out 256
    assert abs(w.std().item() - math.sqrt(2 / 256)) < 0.05 * math.sqrt(2 / 256)
    assert (m.psa.se_expand.bias != 0).all()  # SE conv biases keep PyTorch's default init
    for bn in (m.bn1, m.bn2, m.bn3):
        assert (bn.weight == 1).all() and (bn.bias == 0).all()


def test_split_branches_read_only_their_slice():
    m = randomize_(PSA(64, 64, branch_input="split").double(), seed=5)
    assert [c.in_channels for c in m.branches] == [16] * 4
    # 16·16·9 + 16·4·25 + 16·2·49 + 16·1·81 weights in the convs, 17 + 32 in the shared SE
    assert sum(p.numel() for p in m.parameters()) == 2304 + 1600 + 1568 + 1296 + 49
    x = torch.randn(2, 64, 7, 9, dtype=F64)
    y = x.clone()
    y[:, 16:] += torch.randn(2, 48, 7, 9, dtype=F64)  # change every slice but the first
    diff = (m.branches[0](x[:, :16]) - m.branches[0](y[:, :16])).abs().max()
    assert diff == 0 and (m(x) - m(y)).abs().max() > 1e-3
    block = EPSABlock(256, 64, branch_input="split")
    assert block.psa.branch_input == "split" and block(torch.randn(1, 256, 5, 6)).shape == (1, 256, 5, 6)


def test_errors():
    # wrong rank / channels / integer inputs, gradcheck and batch 1: tests/test_contracts.py
    with pytest.raises(ValueError, match="planes=66 must be divisible by"):
        PSA(64, 66)
    with pytest.raises(ValueError, match="in_channels=36 must be divisible by a conv_groups entry=8"):
        PSA(36, 64)
    with pytest.raises(ValueError, match=r"planes // len\(conv_kernels\)=8 must be divisible"):
        PSA(64, 32)
    with pytest.raises(ValueError, match="se_reduction"):
        PSA(16, 32, conv_groups=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="same length"):
        PSA(64, 64, conv_kernels=(3, 5, 7))
    with pytest.raises(ValueError, match="concat_order"):
        PSA(64, 64, concat_order="reversed")
    with pytest.raises(ValueError, match="downsample"):
        EPSABlock(64, 64)
    with pytest.raises(ValueError, match="branch_input"):
        PSA(64, 64, branch_input="quarter")
    with pytest.raises(ValueError, match=r'in_channels=66 must be divisible by the number of kernels'):
        PSA(66, 64, conv_groups=(1, 1, 1, 1), branch_input="split")
    with pytest.raises(ValueError, match=r"in_channels // len\(conv_kernels\)=8 must be divisible by a conv_groups entry=16"):
        PSA(32, 64, branch_input="split")


def test_gate_input_is_each_branch_output_pooled():
    # what the shared SE reads: branch s's conv output averaged over its H'×W' positions
    torch.manual_seed(3)
    module = PSA(8, 8, conv_groups=(1, 1, 1, 1), se_reduction=1).double()
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    got = module.gate_input(x)
    assert got.shape == (2, 4, 2)
    for s, branch in enumerate(module.branches):
        out = F.conv2d(x, branch.weight, padding=branch.kernel_size[0] // 2)
        for b in range(2):
            for c in range(2):
                assert got[b, s, c].item() == pytest.approx(out[b, c].sum().item() / 15, abs=1e-12)
    # the SE turns exactly this into the gate: sigmoid(expand(relu(reduce(.)))), softmax over s
    pooled = got.reshape(8, 2, 1, 1)
    scores = torch.sigmoid(module.se_expand(torch.relu(module.se_reduce(pooled)))).reshape(2, 4, 2)
    assert torch.allclose(module.attention_map(x), scores.softmax(dim=1), atol=1e-12)
