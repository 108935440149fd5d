"""The plain self-attention baseline against a loop written from softmax(q kᵀ / √d) v."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from _reference import linear_loop, randomize_
from attn_tutorial.attention import MultiHeadSelfAttention, SelfAttention2d

TOL = 1e-9
DT = torch.float64
randomise = partial(randomize_, scale=0.5, mean_scale=1.0)


@torch.no_grad()
def mhsa_loop(m: MultiHeadSelfAttention, x):
    B, N, C = x.shape
    h = m.num_heads
    d = C // h
    out = torch.zeros_like(x)
    for b in range(B):
        q = torch.stack([linear_loop(x[b, n], m.q) for n in range(N)])
        k = torch.stack([linear_loop(x[b, n], m.k) for n in range(N)])
        v = torch.stack([linear_loop(x[b, n], m.v) for n in range(N)])
        merged = torch.zeros(N, C, dtype=x.dtype)
        for hd in range(h):
            sl = slice(hd * d, hd * d + d)            # head hd owns channels hd*d .. hd*d+d-1
            for n in range(N):
                logits = torch.stack([(q[n, sl] * k[t, sl]).sum() / math.sqrt(d)
                                      for t in range(N)])
                e = torch.exp(logits - logits.max())
                w = e / e.sum()
                merged[n, sl] = sum(w[t] * v[t, sl] for t in range(N))
        out[b] = torch.stack([linear_loop(merged[n], m.proj) for n in range(N)])
    return out


CASES = [(1, 7, 9, 3), (2, 11, 6, 2), (3, 5, 5, 1)]   # B, N, dim, heads


@pytest.mark.parametrize("B,N,dim,heads", CASES)
@pytest.mark.parametrize("use_sdpa", [False, True])
@pytest.mark.parametrize("train", [False, True])
def test_tokens_match_loop(B, N, dim, heads, use_sdpa, train):
    m = randomise(MultiHeadSelfAttention(dim, heads, use_sdpa=use_sdpa).to(DT)).train(train)
    x = torch.randn(B, N, dim, dtype=DT)
    torch.testing.assert_close(m(x), mhsa_loop(m, x), rtol=0, atol=TOL)


@pytest.mark.parametrize("B,C,H,W,heads", [(1, 3, 7, 9, 1), (2, 6, 5, 11, 3), (3, 4, 4, 4, 2)])
@pytest.mark.parametrize("residual", [False, True])
def test_feature_map_matches_loop(B, C, H, W, heads, residual):
    m = randomise(SelfAttention2d(C, heads, residual=residual).to(DT))
    x = torch.randn(B, C, H, W, dtype=DT)
    tokens = torch.zeros(B, H * W, C, dtype=DT)
    for i in range(H):
        for j in range(W):
            tokens[:, i * W + j] = x[:, :, i, j]
    ref_tokens = mhsa_loop(m.attn, tokens)
    ref = torch.zeros_like(x)
    for i in range(H):
        for j in range(W):
            ref[:, :, i, j] = ref_tokens[:, i * W + j] + (x[:, :, i, j] if residual else 0)
    torch.testing.assert_close(m(x), ref, rtol=0, atol=TOL)


def test_sdpa_and_materialised_paths_agree():
    fused = randomise(MultiHeadSelfAttention(16, 4, use_sdpa=True).to(DT))
    plain = MultiHeadSelfAttention(16, 4, use_sdpa=False).to(DT)
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(3, 50, 16, dtype=DT, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y1, y2 = fused(x), plain(x2)
    torch.testing.assert_close(y1, y2, rtol=0, atol=TOL)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=0, atol=TOL)


def test_softmax_over_keys():
    m = randomise(SelfAttention2d(6, 2).to(DT))
    a = m.attention_map(torch.randn(2, 6, 3, 5, dtype=DT))
    assert a.shape == (2, 2, 15, 15)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 15, dtype=DT), rtol=0, atol=TOL)
    assert (a.sum(-2) - 1).abs().max() > 1e-3          # columns (over queries) do not


def test_attention_dropout_active_only_in_training():
    for use_sdpa in (False, True):
        m = randomise(MultiHeadSelfAttention(6, 2, attn_drop=0.5, use_sdpa=use_sdpa).to(DT))
        x = torch.randn(2, 9, 6, dtype=DT)
        m.eval()
        torch.testing.assert_close(m(x), mhsa_loop(m, x), rtol=0, atol=TOL)
        m.train()
        assert (m(x) - mhsa_loop(m, x)).abs().max() > 1e-6


def test_errors():
    # wrong rank / channels / integer inputs, gradcheck and batch 1: tests/test_contracts.py
    with pytest.raises(ValueError, match="dim=10 must be divisible by num_heads=4"):
        MultiHeadSelfAttention(10, 4)
    with pytest.raises(ValueError, match="dim=6 must be divisible by num_heads=4"):
        SelfAttention2d(6, 4)
