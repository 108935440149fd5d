"""BAM against an index-by-index reference written from the equations: the authors' code (product,
BN on hidden layers only), the sum alone, and the paper's form (sum, a BN on each branch's
output: Mc = BN(MLP(GAP F)), Ms = BN(f1×1(f3×3(f3×3(f1×1 F)))))."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from _reference import batchnorm_loop, randomize_, ref_conv
from attn_tutorial.bam import BAM, BAMChannelGate, BAMSpatialGate

TOL = dict(atol=1e-9, rtol=1e-9)
randomize_ = partial(randomize_, scale=0.5, mean_scale=0.3)

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_linear(v: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
    """out[b, j] = bias[j] + sum_k W[j, k] v[b, k], one output at a time."""
    B, (J, K) = v.shape[0], lin.weight.shape
    out = torch.empty(B, J, dtype=v.dtype)
    for b in range(B):
        for j in range(J):
            out[b, j] = lin.bias[j] + sum(lin.weight[j, k] * v[b, k] for k in range(K))
    return out


def ref_channel(x: torch.Tensor, gate: BAMChannelGate, train: bool,
                output_bn: bool = False) -> torch.Tensor:
    B, C, H, W = x.shape
    pooled = torch.empty(B, C, dtype=x.dtype)
    for b in range(B):
        for c in range(C):
            pooled[b, c] = sum(x[b, c, i, j] for i in range(H) for j in range(W)) / (H * W)
    hidden = torch.relu(batchnorm_loop(ref_linear(pooled, gate.fc_reduce), gate.bn, train))
    mc = ref_linear(hidden, gate.fc_expand)  # B×C
    return batchnorm_loop(mc, gate.out_bn, train) if output_bn else mc


def ref_spatial(x: torch.Tensor, gate: BAMSpatialGate, train: bool,
                output_bn: bool = False) -> torch.Tensor:
    h = torch.relu(batchnorm_loop(ref_conv(x, gate.reduce), gate.reduce_bn, train))
    for conv, bn in zip(gate.dilated, gate.dilated_bn):
        assert conv.dilation == conv.padding
        h = torch.relu(batchnorm_loop(ref_conv(h, conv), bn, train))
    ms = ref_conv(h, gate.project)  # B×1×H×W
    return (batchnorm_loop(ms, gate.out_bn, train) if output_bn else ms)[:, 0]  # B×H×W


def ref_bam(x: torch.Tensor, m: BAM, train: bool, fusion: str) -> torch.Tensor:
    paper = fusion == "paper"
    mc = ref_channel(x, m.channel_gate, train, output_bn=paper)
    ms = ref_spatial(x, m.spatial_gate, train, output_bn=paper)
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    for b in range(B):
        for c in range(C):
            z = mc[b, c] * ms[b] if fusion == "official" else mc[b, c] + ms[b]
            out[b, c] = x[b, c] * (1 + 1 / (1 + torch.exp(-z)))
    return out


CASES = [  # (B, C, H, W, reduction_ratio)
    (2, 33, 7, 9, 16),
    (3, 17, 5, 11, 16),
    (2, 9, 6, 6, 4),
    (1, 20, 9, 7, 4),  # batch 1: eval only
]


# train mode with batch 1 is an error (tested in test_errors), so batch 1 runs in eval only
MODES = [(case, train) for case in CASES for train in (True, False) if not (train and case[0] == 1)]


@pytest.mark.parametrize("fusion", ["official", "sum", "paper"])
@pytest.mark.parametrize("case,train", MODES)
def test_matches_loop_reference(case, train, fusion):
    B, C, H, W, r = case
    m = randomize_(BAM(C, reduction_ratio=r, fusion=fusion).double(), seed=C + H)
    m.train(train)
    x = torch.randn(B, C, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(W))
    expected = ref_bam(x, m, train, fusion)
    torch.testing.assert_close(m(x), expected, **TOL)


def test_only_the_paper_form_has_output_batchnorms():
    keys = {f: set(BAM(32, fusion=f).state_dict()) for f in ("official", "sum", "paper")}
    assert keys["official"] == keys["sum"]
    extra = keys["paper"] - keys["official"]
    assert {k.rsplit(".", 1)[0] for k in extra} == {"channel_gate.out_bn", "spatial_gate.out_bn"}
    paper = BAM(32, fusion="paper")
    assert paper.channel_gate.out_bn.num_features == 32   # BN1d over the C outputs of the MLP
    assert paper.spatial_gate.out_bn.num_features == 1    # BN2d over the one spatial map


def test_paper_branch_outputs_are_batch_normalised_in_train_mode():
    """With the init's BN weight 1 and bias 0, a BN on the output leaves each output channel with
    batch mean 0 and (biased) variance 1: over B for Mc, over B, H, W for Ms."""
    torch.manual_seed(0)
    m = BAM(32, fusion="paper").double().train()
    x = torch.randn(6, 32, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mc, ms = m.channel_gate(x)[:, :, 0, 0], m.spatial_gate(x)
    torch.testing.assert_close(mc.mean(0), torch.zeros(32, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(mc.var(0, unbiased=False), torch.ones(32, dtype=torch.float64),
                               atol=1e-2, rtol=0)  # var / (var + eps), eps = 1e-5
    assert abs(ms.mean().item()) < 1e-12 and abs(ms.var(unbiased=False).item() - 1) < 1e-3
    code = BAM(32).double().train()                        # the code's form: not normalised
    assert code.channel_gate(x)[:, :, 0, 0].var(0, unbiased=False).mean() < 0.5


def test_channel_gate_is_global_average_on_non_square():
    """The left H×H block (official pooling) and the full map have different means here."""
    gate = randomize_(BAMChannelGate(32), seed=1).double().eval()
    x = torch.randn(2, 32, 4, 7, dtype=torch.float64)
    x[..., 4:] += 3.0  # columns outside the left 4×4 block
    full = gate(x)[:, :, 0, 0]
    torch.testing.assert_close(full, ref_channel(x, gate, train=False), **TOL)
    left_block = ref_channel(x[..., :4].contiguous(), gate, train=False)
    assert (full - left_block).abs().max() > 1e-3


def test_shapes_and_attention_range():
    m = randomize_(BAM(32).double(), seed=3).eval()
    x = torch.randn(2, 32, 5, 11, dtype=torch.float64)
    assert m.channel_gate(x).shape == (2, 32, 1, 1)
    assert m.spatial_gate(x).shape == (2, 1, 5, 11)
    att = m.attention_map(x)
    assert att.shape == x.shape and (att > 0).all() and (att < 1).all()
    torch.testing.assert_close(m(x), x + x * att)  # F' = F + F ⊙ M(F)


def test_fusion_variants_differ():
    x = torch.randn(2, 32, 6, 6, dtype=torch.float64)
    prod = randomize_(BAM(32, fusion="official").double(), seed=5)
    summ = BAM(32, fusion="sum").double()
    summ.load_state_dict(prod.state_dict())
    assert (prod(x) - summ(x)).abs().max() > 1e-3
    paper = randomize_(BAM(32, fusion="paper").double(), seed=5).eval()
    paper.load_state_dict(prod.state_dict(), strict=False)  # the output BNs keep their values
    assert (paper.eval()(x) - summ.eval()(x)).abs().max() > 1e-3


def test_dilated_conv_hyperparameters():
    m = BAM(64, dilation=3, num_dilated_convs=3)
    assert len(m.spatial_gate.dilated) == 3
    for conv in m.spatial_gate.dilated:
        assert conv.dilation == (3, 3) and conv.padding == (3, 3) and conv.out_channels == 4
    d = BAM(64)
    assert [c.dilation for c in d.spatial_gate.dilated] == [(4, 4), (4, 4)]
    assert d.channel_gate.fc_reduce.out_features == 4


def test_official_init():
    torch.manual_seed(0)
    m = BAM(256)
    for name, p in m.named_parameters():
        if name.endswith("bias"):
            assert (p == 0).all(), name
    for bn in [m.channel_gate.bn, m.spatial_gate.reduce_bn, *m.spatial_gate.dilated_bn]:
        assert (bn.weight == 1).all()
    w = m.spatial_gate.reduce.weight  # kaiming normal, fan_out = out_channels * 1 * 1 = 16
    assert abs(w.std().item() - math.sqrt(2 / 16)) < 0.05 * math.sqrt(2 / 16)
    # Linear weights keep PyTorch's default kaiming-uniform: |w| <= 1/sqrt(fan_in)
    lin = m.channel_gate.fc_reduce.weight
    assert lin.abs().max() <= 1 / math.sqrt(256) and lin.std() > 0


def test_errors():
    # wrong rank / channels / integer inputs, gradcheck and batch 1: tests/test_contracts.py
    with pytest.raises(ValueError, match="channels=15"):
        BAM(15)
    with pytest.raises(ValueError, match="fusion"):
        BAM(32, fusion="mean")
    with pytest.raises(ValueError, match="dilation"):
        BAM(32, dilation=0)
    m = BAM(32)
    with pytest.raises(ValueError, match="batch size 1"):
        m.train()(torch.randn(1, 32, 8, 8))
    m.eval()(torch.randn(1, 32, 8, 8))  # eval mode accepts batch 1


def test_docstrings_cite_sources_not_the_making_of():
    """The BN-placement and fusion notes name their sources (the paper's Section 3 as quoted in the
    authors' issue #49; the checkpoint's code) and say nothing about how the library was written."""
    import inspect

    import attn_tutorial.bam as bam_module
    from _hygiene import making_of_phrases

    docs = [inspect.getdoc(obj) or "" for obj in (bam_module, BAM, BAMChannelGate, BAMSpatialGate)]
    assert [phrase for doc in docs for phrase in making_of_phrases(doc)] == []
    assert "#49" in docs[0] and "Section 3" in docs[0]
    assert "spatial_att" in docs[1] and "#1" in docs[1]
