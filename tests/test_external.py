"""External attention (EANet block and EAMLP multi-head form) against loop references written
from the equations of the official code, in float64."""

from __future__ import annotations

import copy
import math
from functools import partial

import pytest
import torch

from _reference import batchnorm_loop, randomize_
from attn_tutorial.external import (ExternalAttention, MultiHeadExternalAttention,
                                    double_normalise, external_attention)

TOL = 1e-9
DT = torch.float64
randomise = partial(randomize_, scale=0.5, mean_scale=1.0)


# ----------------------------------------------------------------------------- loop references

@torch.no_grad()
def softmax_over_tokens_loop(logits):
    """logits N×S -> weights where, for each memory slot s, the N weights sum to 1."""
    N, S = logits.shape
    out = torch.empty_like(logits)
    for s in range(S):
        col = logits[:, s]
        e = torch.exp(col - col.max())
        out[:, s] = e / e.sum()
    return out


@torch.no_grad()
def l1_over_memory_loop(a):
    out = torch.empty_like(a)
    for n in range(a.shape[0]):
        out[n] = a[n] / (1e-9 + a[n].sum())
    return out


@torch.no_grad()
def external_attention_loop(m: ExternalAttention, x, train):
    B, C, H, W = x.shape
    N = H * W
    Mk = m.memory_key.weight                       # S×C
    Mv = Mk.t() if m.tie_memories else m.memory_value.weight
    Win, b_in = m.conv_in.weight[:, :, 0, 0], m.conv_in.bias
    Wout = m.conv_out.weight[:, :, 0, 0]
    pre_bn = torch.zeros(B, C, H, W, dtype=x.dtype)
    for b in range(B):
        tokens = torch.zeros(N, C, dtype=x.dtype)       # pixel n = i*W + j
        for i in range(H):
            for j in range(W):
                for c in range(C):
                    tokens[i * W + j, c] = (Win[c] * x[b, :, i, j]).sum() + b_in[c]
        logits = torch.zeros(N, Mk.shape[0], dtype=x.dtype)
        for n in range(N):
            for s in range(Mk.shape[0]):
                logits[n, s] = (Mk[s] * tokens[n]).sum()
        attn = l1_over_memory_loop(softmax_over_tokens_loop(logits))
        for i in range(H):
            for j in range(W):
                n = i * W + j
                v = torch.stack([(Mv[c] * attn[n]).sum() for c in range(C)])
                pre_bn[b, :, i, j] = torch.stack([(Wout[c] * v).sum() for c in range(C)])
    return torch.clamp(batchnorm_loop(pre_bn, m.norm, train) + x, min=0)


@torch.no_grad()
def multi_head_loop(m: MultiHeadExternalAttention, x):
    B, N, dim = x.shape
    E = m.expand.weight.shape[0]
    heads = m.heads
    d = E // heads
    out = torch.zeros(B, N, dim, dtype=x.dtype)
    for b in range(B):
        t = torch.stack([torch.stack([(m.expand.weight[o] * x[b, n]).sum() + m.expand.bias[o]
                                      for o in range(E)]) for n in range(N)])     # N×E
        merged = torch.zeros(N, E, dtype=x.dtype)
        for g in range(heads):
            head = t[:, g * d:(g + 1) * d]                 # head g owns channels g*d .. g*d+d-1
            S = m.memory_key.weight.shape[0]
            logits = torch.zeros(N, S, dtype=x.dtype)
            for n in range(N):
                for s in range(S):
                    logits[n, s] = (m.memory_key.weight[s] * head[n]).sum() + m.memory_key.bias[s]
            attn = l1_over_memory_loop(softmax_over_tokens_loop(logits))
            for n in range(N):
                for e in range(d):
                    merged[n, g * d + e] = ((m.memory_value.weight[e] * attn[n]).sum()
                                            + m.memory_value.bias[e])
        for n in range(N):
            out[b, n] = torch.stack([(m.proj.weight[o] * merged[n]).sum() + m.proj.bias[o]
                                     for o in range(dim)])
    return out


# ----------------------------------------------------------------------------- ExternalAttention

EA_CASES = [  # B, C, H, W, memory_size
    (1, 5, 7, 9, 64),
    (2, 9, 5, 11, 7),
    (3, 6, 4, 4, 3),
]


@pytest.mark.parametrize("B,C,H,W,S", EA_CASES)
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("tie", [True, False])
def test_external_attention_matches_loop(B, C, H, W, S, train, tie):
    m = randomise(ExternalAttention(C, memory_size=S, tie_memories=tie).to(DT)).train(train)
    x = torch.randn(B, C, H, W, dtype=DT)
    ref = external_attention_loop(m, x, train)
    torch.testing.assert_close(m(x), ref, rtol=0, atol=TOL)


def test_double_normalisation_axes():
    logits = torch.randn(2, 13, 6, dtype=DT) * 3          # B×N×S
    a = double_normalise(logits)
    for b in range(2):
        first = softmax_over_tokens_loop(logits[b])
        # stage 1: softmax over the N tokens, each memory slot's column sums to 1 over N
        torch.testing.assert_close(first.sum(0), torch.ones(6, dtype=DT), rtol=0, atol=TOL)
        # stage 2: each token's row is divided by its sum over the S slots (+1e-9)
        torch.testing.assert_close(a[b], first / (1e-9 + first.sum(1, keepdim=True)),
                                   rtol=0, atol=TOL)
    # after the second stage each pixel's weights over the memory sum to 1 (up to eps) ...
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 13, dtype=DT), rtol=0, atol=1e-5)
    # ... and the columns over N no longer do
    assert (a.sum(-2) - 1).abs().max() > 1e-2


def test_module_attention_map_axes():
    m = randomise(ExternalAttention(5, memory_size=8).to(DT))
    a = m.attention_map(torch.randn(2, 5, 3, 7, dtype=DT))
    assert a.shape == (2, 21, 8)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 21, dtype=DT), rtol=0, atol=1e-7)
    mh = randomise(MultiHeadExternalAttention(6, num_heads=2).to(DT))
    a = mh.attention_map(torch.randn(3, 10, 6, dtype=DT))
    assert a.shape == (3, 8, 10, 64)
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 8, 10, dtype=DT), rtol=0, atol=1e-7)


def test_swapping_normalisation_axes_changes_output():
    """Softmax over memory then l1 over tokens (the 'natural' guess) is NOT what the code does."""
    m = randomise(ExternalAttention(6, memory_size=5).to(DT)).eval()
    x = torch.randn(2, 6, 4, 5, dtype=DT)
    tokens = m._pixel_tokens(x)
    logits = torch.einsum("bnc,sc->bns", tokens, m.memory_key.weight)
    swapped = logits.softmax(dim=-1)
    swapped = swapped / (1e-9 + swapped.sum(dim=-2, keepdim=True))
    assert (swapped - m.attention_map(x)).abs().max() > 1e-2
    out = torch.einsum("bns,cs->bnc", swapped, m.memory_value_weight)
    out = out.transpose(1, 2).reshape(2, 6, 4, 5)
    y_swapped = torch.relu(m.norm(m.conv_out(out)) + x)
    assert (y_swapped - m(x)).abs().max() > 1e-3


def test_tie_is_one_parameter():
    tied, free = ExternalAttention(8), ExternalAttention(8, tie_memories=False)
    assert len(list(tied.parameters())) == len(list(free.parameters())) - 1
    assert tied.memory_value is None
    assert tied.memory_value_weight.data_ptr() == tied.memory_key.weight.data_ptr()
    torch.testing.assert_close(tied.memory_value_weight, tied.memory_key.weight.t(),
                               rtol=0, atol=0)


@pytest.mark.parametrize("train", [False, True])
def test_tie_equals_untied_with_transposed_values_and_gradients_add(train):
    tied = randomise(ExternalAttention(5, memory_size=6).to(DT)).train(train)
    free = ExternalAttention(5, memory_size=6, tie_memories=False).to(DT).train(train)
    state = dict(tied.state_dict())
    state["memory_value.weight"] = tied.memory_key.weight.detach().t().clone()
    free.load_state_dict(state)
    x = torch.randn(2, 5, 3, 7, dtype=DT)
    y_t, y_f = tied(x), free(x)
    torch.testing.assert_close(y_t, y_f, rtol=0, atol=TOL)
    g = torch.randn_like(y_t)
    y_t.backward(g)
    y_f.backward(g)
    # the one shared parameter receives the gradients of both of its uses
    expected = free.memory_key.weight.grad + free.memory_value.weight.grad.t()
    torch.testing.assert_close(tied.memory_key.weight.grad, expected, rtol=0, atol=TOL)
    assert free.memory_value.weight.grad.abs().max() > 0


def test_tie_stays_exact_through_an_optimizer_step():
    tied = ExternalAttention(6, memory_size=4)
    opt = torch.optim.SGD(tied.parameters(), lr=0.1)
    tied(torch.randn(2, 6, 3, 3)).pow(2).sum().backward()
    before = tied.memory_key.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, tied.memory_key.weight)
    torch.testing.assert_close(tied.memory_value_weight, tied.memory_key.weight.t(),
                               rtol=0, atol=0)


def _shared_storage_tie(tied: ExternalAttention) -> ExternalAttention:
    """The official tie on the library's untied module: memory_value's weight made a transposed
    view of memory_key's storage (``linear_1.weight.data = linear_0.weight.data.permute(...)``),
    two Parameters on one storage, starting from ``tied``'s weights."""
    free = ExternalAttention(tied.channels, tied.memory_size, tie_memories=False).to(DT)
    state = dict(tied.state_dict())
    state["memory_value.weight"] = tied.memory_key.weight.detach().t().clone()
    free.load_state_dict(state)
    free.memory_value.weight.data = free.memory_key.weight.data.t()
    return free


def _two_steps(module, make_opt, x):
    opt = make_opt(module.parameters())
    for _ in range(2):
        opt.zero_grad()
        module(x).pow(2).mean().backward()
        opt.step()
    return module.memory_key.weight.detach()


@pytest.mark.parametrize("name, make_opt, equal", [
    ("sgd", partial(torch.optim.SGD, lr=0.5), True),
    ("sgd momentum", partial(torch.optim.SGD, lr=0.5, momentum=0.9), True),
    ("sgd weight decay", partial(torch.optim.SGD, lr=0.5, weight_decay=0.1), False),
    ("adam", partial(torch.optim.Adam, lr=0.01), False),
])
def test_shared_storage_tie_equals_one_parameter_only_under_plain_sgd(name, make_opt, equal):
    """Two Parameters on one storage get two updates per step. Under SGD (with or without
    momentum, both linear in the gradient) the two updates sum to the update of the summed
    gradient, which one parameter used twice gets; weight decay is added once per Parameter and
    Adam normalises each Parameter's gradient by its own running RMS, so there they differ."""
    torch.manual_seed(0)
    one = randomise(ExternalAttention(5, memory_size=6).to(DT)).eval()
    shared = _shared_storage_tie(one).eval()
    x = torch.randn(2, 5, 3, 4, dtype=DT)
    torch.testing.assert_close(shared(x), one(x), rtol=0, atol=TOL)
    after_shared, after_one = _two_steps(shared, make_opt, x), _two_steps(one, make_opt, x)
    # whatever the optimiser, the shared storage keeps M_v an exact transpose of M_k
    torch.testing.assert_close(shared.memory_value.weight, shared.memory_key.weight.t(),
                               rtol=0, atol=0)
    gap = (after_shared - after_one).abs().max().item()
    assert (gap < 1e-12) if equal else (gap > 1e-3), (name, gap)


def test_shared_storage_tie_under_weight_decay_decays_the_memory_once_per_parameter():
    """One plain-SGD step with weight decay wd on two Parameters that share a storage, from
    PyTorch's documented update (g <- g + wd·θ; θ <- θ - lr·g), applied to each Parameter in
    turn: the key first (w1 = w0 - lr·(g_k + wd·w0)), then the value on the updated storage
    (w2 = w1 - lr·(g_vᵀ + wd·w1)). The memory decays twice per step: to first order in lr it is
    one parameter under weight decay 2·wd, not wd."""
    torch.manual_seed(0)
    one = randomise(ExternalAttention(5, memory_size=6).to(DT)).eval()
    shared = _shared_storage_tie(one).eval()
    x = torch.randn(2, 5, 3, 4, dtype=DT)
    shared(x).pow(2).mean().backward()
    w0 = shared.memory_key.weight.detach().clone()
    g_k, g_v = shared.memory_key.weight.grad.clone(), shared.memory_value.weight.grad.t().clone()
    lr, wd = 0.5, 0.1
    torch.optim.SGD(shared.parameters(), lr=lr, weight_decay=wd).step()
    w1 = w0 - lr * (g_k + wd * w0)
    w2 = w1 - lr * (g_v + wd * w1)
    torch.testing.assert_close(shared.memory_key.weight.detach(), w2, rtol=0, atol=1e-12)
    double = w0 - lr * (g_k + g_v + 2 * wd * w0)
    single = w0 - lr * (g_k + g_v + wd * w0)
    assert (w2 - double).abs().max() < 0.1 * (w2 - single).abs().max()


def test_external_attention_official_init():
    torch.manual_seed(0)
    c = 256
    tied = ExternalAttention(c)
    free = ExternalAttention(c, tie_memories=False)
    assert abs(tied.memory_key.weight.std().item() - math.sqrt(2 / c)) < 0.006
    assert abs(free.memory_key.weight.std().item() - math.sqrt(2 / 64)) < 0.01
    assert abs(free.memory_value.weight.std().item() - math.sqrt(2 / c)) < 0.006
    for conv in (tied.conv_in, tied.conv_out):
        assert abs(conv.weight.std().item() - math.sqrt(2 / c)) < 0.004
    # conv_in's bias keeps PyTorch's default uniform(-1/sqrt(c), 1/sqrt(c))
    assert tied.conv_in.bias.abs().max() <= 1 / math.sqrt(c) and tied.conv_in.bias.abs().max() > 0
    assert (tied.norm.weight == 1).all() and (tied.norm.bias == 0).all()
    assert tied.norm.momentum == 0.1


def test_external_attention_errors():
    # wrong rank / channels / integer inputs, gradcheck and batch 1: tests/test_contracts.py
    with pytest.raises(ValueError, match="memory_size=0"):
        ExternalAttention(8, memory_size=0)


# ----------------------------------------------------------------------------- multi-head

MH_CASES = [  # B, N, dim, heads
    (1, 9, 9, 3),
    (2, 7, 5, 1),
    (3, 5, 8, 2),
]


@pytest.mark.parametrize("B,N,dim,heads", MH_CASES)
@pytest.mark.parametrize("train", [False, True])
def test_multi_head_matches_loop(B, N, dim, heads, train):
    m = randomise(MultiHeadExternalAttention(dim, heads, memory_size=6).to(DT)).train(train)
    assert m.heads == 4 * heads
    x = torch.randn(B, N, dim, dtype=DT)
    torch.testing.assert_close(m(x), multi_head_loop(m, x), rtol=0, atol=TOL)


def test_multi_head_default_memory_is_64_and_shared_across_heads():
    m = MultiHeadExternalAttention(32, num_heads=4)
    assert m.memory_key.weight.shape == (64, 8) and m.memory_value.weight.shape == (8, 64)
    assert m.expand.weight.shape == (128, 32) and m.proj.weight.shape == (32, 128)


def test_multi_head_attention_dropout_only_in_training():
    m = randomise(MultiHeadExternalAttention(6, 2, attn_drop=0.5).to(DT))
    x = torch.randn(2, 5, 6, dtype=DT)
    m.eval()
    torch.testing.assert_close(m(x), multi_head_loop(m, x), rtol=0, atol=TOL)
    m.train()
    assert (m(x) - multi_head_loop(m, x)).abs().max() > 1e-6


def test_multi_head_init():
    torch.manual_seed(0)
    m = MultiHeadExternalAttention(256, 4)
    for lin in (m.expand, m.memory_key, m.memory_value, m.proj):
        assert (lin.bias == 0).all()
        assert lin.weight.abs().max() < 0.2
    assert abs(m.expand.weight.std().item() - 0.02) < 1e-3


def test_external_attention_core_on_leading_axes():
    x = torch.randn(2, 3, 7, 4, dtype=DT)
    mk, mv = torch.randn(5, 4, dtype=DT), torch.randn(4, 5, dtype=DT)
    out, attn = external_attention(x, mk, mv)
    for b in range(2):
        for h in range(3):
            a = l1_over_memory_loop(softmax_over_tokens_loop(x[b, h] @ mk.t()))
            torch.testing.assert_close(attn[b, h], a, rtol=0, atol=TOL)
            torch.testing.assert_close(out[b, h], a @ mv.t(), rtol=0, atol=TOL)


def test_multi_head_errors():
    # wrong rank / channels / integer inputs, gradcheck and batch 1: tests/test_contracts.py
    with pytest.raises(ValueError, match="dim=10 must be divisible by num_heads=4"):
        MultiHeadExternalAttention(10, 4)


# ------------------------------------------------------------ ε in every dtype (issue #36)

def test_double_normalise_in_float16_gives_zero_not_nan_for_an_underflowed_token():
    """In float16 1e-9 rounds to 0 (the smallest float16 is 2^-24 ≈ 6e-8), so a token whose
    softmax weights all underflow would get 0 / 0 = NaN. Token 2's logits are 20 below token 0's
    in both slots: its weights e^-20 ≈ 2e-9 are 0 in float16. It gets 0; the other rows still sum
    to 1 within float16 rounding: token 1's weights e^-10 ≈ 4.5e-5 are subnormal, and eps =
    2^-24 ≈ 6e-8 changes their sum 9e-5 by less than 0.1 %."""
    assert torch.tensor(1e-9, dtype=torch.float16) == 0
    logits = torch.zeros(1, 3, 2, dtype=torch.float16)
    logits[0, 0] = 10.0
    logits[0, 2] = -10.0
    out = double_normalise(logits)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert (out[0, 2] == 0).all()
    assert torch.allclose(out[0, :2].float().sum(-1), torch.ones(2), atol=2e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_double_normalise_keeps_eps_1e9_where_the_dtype_holds_it(dtype):
    """The official formula softmax / (1e-9 + Σ_S softmax), computed here in float64 from the
    equation, is what the function gives in float32, float64 and bfloat16."""
    logits = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    soft = logits.softmax(dim=-2)
    expected = soft / (1e-9 + soft.sum(dim=-1, keepdim=True))
    tol = {torch.float32: 1e-6, torch.float64: 1e-12, torch.bfloat16: 2e-2}[dtype]
    assert torch.allclose(double_normalise(logits.to(dtype)).double(), expected, atol=tol)


def test_external_attention_in_float16_is_finite_where_a_pixel_underflows():
    """The block on a map where pixel (0, 0)'s logits are 20 above the others' in every slot: in
    float16 the other pixels' weights e^-20 underflow to 0, so those pixels lose their attention
    output (a float16 limit); the output stays finite, and at pixel (0, 0) equals the float32
    block's."""
    m = ExternalAttention(4, memory_size=2).eval()
    with torch.no_grad():
        m.conv_in.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1))
        m.conv_in.bias.zero_()
        m.memory_key.weight.fill_(1.0)
    x = torch.zeros(1, 4, 2, 2)
    x[0, :, 0, 0], x[0, :, 1, 1] = 5.0, -5.0
    reference = m(x)
    out = m.half()(x.half())
    assert torch.isfinite(out).all()
    assert torch.allclose(out[..., 0, 0].float(), reference[..., 0, 0], atol=2e-2)


def test_double_normalise_refuses_a_negative_eps():
    with pytest.raises(ValueError, match=r"eps=-1.0 must be a finite number >= 0"):
        double_normalise(torch.zeros(1, 2, 2), eps=-1.0)


@pytest.mark.parametrize("convert, keeps", [
    (lambda m: m.float(), True),                 # float32 -> float32: nothing to copy
    (lambda m: m.to("cpu"), True),
    (lambda m: m.double(), False),
    (copy.deepcopy, False),
])
def test_shared_storage_tie_survives_only_conversions_that_copy_nothing(convert, keeps):
    m = ExternalAttention(4, memory_size=3, tie_memories=False)               # float32
    m.memory_value.weight.data = m.memory_key.weight.data.t()
    assert m.memory_value.weight.untyped_storage().data_ptr() \
        == m.memory_key.weight.untyped_storage().data_ptr()
    c = convert(m)
    shared = (c.memory_value.weight.untyped_storage().data_ptr()
              == c.memory_key.weight.untyped_storage().data_ptr())
    assert shared == keeps
