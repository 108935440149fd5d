"""Lesson 06 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, a learner's own correct versions pass, and the references compute what the library and
PyTorch's own conv compute. The generic proofs run over every checker in tests/test_checks.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _learner import assert_catalogued, assert_mistake_named

from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, lesson06
from attn_tutorial.official import from_official
from attn_tutorial.rest import EMSA

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = lesson06.__all__

# The mistakes issue 14 asks the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_overlapping_grid": ["kernel sr instead of sr+1", "padding 0",
                               "grid reported as H // sr"],
    "check_emsa_weights": ["heads as the fast factor", "InstanceNorm before the softmax",
                           "softmax before the head mixing", "scale d^-½ forgotten"],
    "check_emsa_module": ["LayerNorm forgotten on the reduced tokens", "padding 0"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_at_least_six_mistakes_across_the_lesson():
    assert sum(len(CHECKERS[n].mistakes) for n in NAMES) >= 6


# ------------------------------------------------------------ a learner's own versions
def learner_grid(H, W, stride):
    def out(n):  # PyTorch's conv output size, written out
        return math.floor((n + 2 * (stride // 2) - (stride + 1)) / stride) + 1
    return out(H), out(W)


def learner_grid_kernel_s(H, W, stride):
    return tuple((n + 2 * (stride // 2) - stride) // stride + 1 for n in (H, W))


def learner_grid_no_padding(H, W, stride):
    return tuple(math.floor((n - stride - 1) / stride) + 1 for n in (H, W))


def learner_grid_floor(H, W, stride):
    return H // stride, W // stride


def learner_grid_ceil(H, W, stride):
    return math.ceil(H / stride), math.ceil(W / stride)


def learner_grid_swapped(H, W, stride):
    h, w = learner_grid(H, W, stride)
    return w, h


def _split(t, heads, fast=False):
    B, N, C = t.shape
    if fast:  # channel c = d·heads + head
        return t.view(B, N, C // heads, heads).permute(0, 3, 1, 2)
    return t.view(B, N, heads, C // heads).permute(0, 2, 1, 3)


def learner_weights(q, k, num_heads, mix_weight, mix_bias, *, fast=False, scale=None,
                    steps=("mix", "softmax", "norm"), dim=-1, one_head=False):
    qh, kh = _split(q, num_heads, fast), _split(k, num_heads, fast)
    d = q.shape[-1] // num_heads
    a = qh @ kh.transpose(-2, -1) * (d ** -0.5 if scale is None else scale)
    if num_heads == 1 and not one_head:
        return torch.softmax(a, dim=dim)
    for step in steps:
        if step == "mix":
            a = F.conv2d(a, mix_weight[:, :, None, None], mix_bias)
        elif step == "softmax":
            a = torch.softmax(a, dim=dim)
        else:
            a = F.instance_norm(a)
    return a


def learner_weights_fast(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, fast=True)


def learner_weights_unscaled(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, scale=1.0)


def learner_weights_sqrt_c(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, scale=1 / math.sqrt(q.shape[-1]))


def learner_weights_norm_first(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, steps=("mix", "norm", "softmax"))


def learner_weights_softmax_first(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, steps=("softmax", "mix", "norm"))


def learner_weights_no_norm(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, steps=("mix", "softmax"))


def learner_weights_over_queries(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, dim=2)


def learner_weights_one_head_too(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, one_head=True)


class LearnerEMSA(nn.Module):
    """A learner's EMSA on a map, written with view/permute and torch.nn.functional."""

    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        self.heads, self.sr_ratio = num_heads, sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio + 1, sr_ratio, self.padding(sr_ratio),
                                groups=dim)
            self.sr_norm = nn.LayerNorm(dim)
        if num_heads > 1:
            self.transform_conv = nn.Conv2d(num_heads, num_heads, 1)

    def padding(self, sr):
        return sr // 2

    def keys_from(self, x, tokens):
        if self.sr_ratio == 1:
            return tokens
        return self.sr_norm(self.sr(x).flatten(2).transpose(1, 2))

    def split_kv(self, kv):
        return kv[0], kv[1]

    def mix(self, a):
        if self.heads == 1:
            return a.softmax(-1)
        return F.instance_norm(self.transform_conv(a).softmax(-1))

    def forward(self, x):
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q = self.q(tokens).reshape(B, H * W, self.heads, -1).permute(0, 2, 1, 3)
        src = self.keys_from(x, tokens)
        kv = self.kv(src).reshape(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        k, v = self.split_kv(kv)
        a = self.mix(q @ k.transpose(-2, -1) / math.sqrt(C // self.heads))
        out = (a @ v).transpose(1, 2).reshape(B, H * W, C)
        return self.proj(out).transpose(1, 2).reshape(B, C, H, W)


class LearnerEMSANoPadding(LearnerEMSA):
    def padding(self, sr):
        return 0


class LearnerEMSANoNorm(LearnerEMSA):
    def keys_from(self, x, tokens):
        if self.sr_ratio == 1:
            return tokens
        return self.sr(x).flatten(2).transpose(1, 2)  # sr_norm built but never used


class LearnerEMSASwappedKV(LearnerEMSA):
    def split_kv(self, kv):
        return kv[1], kv[0]


class LearnerEMSANoReduction(LearnerEMSA):
    def keys_from(self, x, tokens):
        return tokens


class LearnerEMSANoTransform(LearnerEMSA):
    def mix(self, a):
        return a.softmax(-1)


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_overlapping_grid", learner_grid_kernel_s, "kernel sr instead of sr+1"),
    ("check_overlapping_grid", learner_grid_no_padding, "padding 0 instead of sr//2"),
    ("check_overlapping_grid", learner_grid_floor, "grid reported as H // sr"),
    ("check_overlapping_grid", learner_grid_ceil, "⌈H/sr⌉"),
    ("check_overlapping_grid", learner_grid_swapped, "H and W swapped"),
    ("check_emsa_weights", learner_weights_fast, "heads as the fast factor"),
    ("check_emsa_weights", learner_weights_unscaled, "scale d^-½ forgotten"),
    ("check_emsa_weights", learner_weights_sqrt_c, "1/√C"),
    ("check_emsa_weights", learner_weights_norm_first, "InstanceNorm before the softmax"),
    ("check_emsa_weights", learner_weights_softmax_first, "softmax before the head mixing"),
    ("check_emsa_weights", learner_weights_no_norm, "InstanceNorm forgotten"),
    ("check_emsa_weights", learner_weights_over_queries, "softmax over the queries"),
    ("check_emsa_weights", learner_weights_one_head_too, "applied with one head"),
    ("check_emsa_module", LearnerEMSANoPadding, "padding 0 in the reduction conv"),
    ("check_emsa_module", LearnerEMSANoNorm, "LayerNorm forgotten on the reduced tokens"),
    ("check_emsa_module", LearnerEMSASwappedKV, "keys and values swapped"),
    ("check_emsa_module", LearnerEMSANoReduction, "spatial reduction is skipped"),
    ("check_emsa_module", LearnerEMSANoTransform, "head mixing and InstanceNorm left out"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


@pytest.mark.parametrize("name,learner", [
    ("check_overlapping_grid", learner_grid),
    ("check_emsa_weights", learner_weights),
    ("check_emsa_module", LearnerEMSA),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_a_stub_is_not_implemented(capsys):
    def overlapping_grid(H, W, stride):
        raise NotImplementedError()

    result = CHECKERS["check_overlapping_grid"](overlapping_grid)
    assert not result.implemented
    assert capsys.readouterr().out.strip() == f"overlapping_grid: {NOT_IMPLEMENTED}"


def test_a_grid_of_tensors_is_reported(capsys):
    result = CHECKERS["check_overlapping_grid"](
        lambda H, W, stride: tuple(torch.tensor(n) for n in learner_grid(H, W, stride)))
    assert not result.passed and "expected an int" in capsys.readouterr().out


# ------------------------------------------------- the references mean what they say
@pytest.mark.parametrize("H,W,s", [(56, 56, 8), (7, 9, 2), (9, 6, 8), (7, 10, 3), (1, 16, 4)])
def test_grid_reference_is_the_convs_output(H, W, s):
    conv = nn.Conv2d(1, 1, s + 1, stride=s, padding=s // 2)
    assert tuple(conv(torch.zeros(1, 1, H, W)).shape[-2:]) == lesson06.ref_overlapping_grid(H, W, s)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_weights_reference_is_the_librarys_emsa(heads):
    torch.manual_seed(0)
    emsa = EMSA(16, num_heads=heads, qkv_bias=True, sr_ratio=2, apply_transform=True).double()
    x = torch.randn(2, 7 * 9, 16, dtype=torch.float64)
    grid = x.transpose(1, 2).reshape(2, 16, 7, 9)
    source = emsa.reduce_norm(emsa.reduce(grid).flatten(2).transpose(1, 2))
    k = emsa.kv(source)[..., :16]
    if heads > 1:
        w, b = emsa.head_mix.weight[:, :, 0, 0], emsa.head_mix.bias
    else:
        w, b = torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    ours = lesson06.ref_emsa_weights(emsa.q(x), k, heads, w, b)
    assert torch.allclose(ours, emsa.attention_map(x, 7, 9), atol=1e-10)


@pytest.mark.parametrize("heads,sr", [(2, 2), (3, 4), (1, 2), (2, 1)])
def test_module_reference_is_the_librarys_emsa_on_the_official_names(heads, sr):
    torch.manual_seed(1)
    dim = 12 if heads == 3 else 8
    ref = lesson06.EMSAMap(dim, heads, sr).double()
    lib = from_official("emsa", ref.state_dict(), dim=dim, num_heads=heads, qkv_bias=True,
                        sr_ratio=sr, apply_transform=True).eval()
    x = torch.randn(2, dim, 7, 9, dtype=torch.float64)
    tokens = x.flatten(2).transpose(1, 2)
    expected = lib(tokens, 7, 9).transpose(1, 2).reshape(2, dim, 7, 9)
    assert torch.allclose(ref(x), expected, atol=1e-10)


# ------------------------------------------------- boundaries and slips of the new engine
def test_int_truncation_fails_on_a_negative_numerator():
    from _learner import assert_fails_only_on

    def overlapping_grid(H, W, stride):
        p, k = stride // 2, stride + 1
        return int((H + 2 * p - k) / stride) + 1, int((W + 2 * p - k) / stride) + 1

    assert_fails_only_on("check_overlapping_grid", overlapping_grid, ["1×4, stride 3"])


@pytest.mark.parametrize("how,phrase", [("unbiased", "unbiased variance"),
                                        ("eps outside", "ε outside the square root")])
def test_instance_norm_slips_are_named(how, phrase):
    from einops import rearrange

    def emsa_weights(q, k, num_heads, mix_weight, mix_bias):
        qh = rearrange(q, "b n (h d) -> b h n d", h=num_heads)
        kh = rearrange(k, "b m (h d) -> b h m d", h=num_heads)
        a = qh @ kh.transpose(-1, -2) * qh.shape[-1] ** -0.5
        if num_heads == 1:
            return a.softmax(-1)
        a = (torch.einsum("gh,bhnm->bgnm", mix_weight, a) + mix_bias[:, None, None]).softmax(-1)
        mean = a.mean(dim=(-2, -1), keepdim=True)
        var = a.var(dim=(-2, -1), unbiased=how == "unbiased", keepdim=True)
        if how == "eps outside":
            return (a - mean) / (var.sqrt() + 1e-5)
        return (a - mean) / (var + 1e-5).sqrt()

    assert_mistake_named("check_emsa_weights", emsa_weights, phrase)
