"""Lesson 06 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, a learner's own correct versions pass, and the references compute what the library and
PyTorch's own conv compute. The generic proofs run over every checker in tests/test_checks.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from _learner import assert_catalogued, assert_mistake_named

from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, lesson06
from attn_tutorial.official import from_official
from attn_tutorial.rest import EMSA

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = lesson06.__all__

# The mistakes issues 14 and 32 ask the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_rest_grids": ["PVT's reduction conv", "kernel sr (and padding", "without padding",
                         "authors' `PatchEmbed`",
                         "H // 4, H // 8", "⌈n/sr⌉", "sr = 1 run through the conv formula"],
    "check_emsa_weights": ["heads as the fast factor", "InstanceNorm before the softmax",
                           "softmax before the head mixing", "scale d^-½ forgotten",
                           "head-mixing matrix transposed", "flattened column-major",
                           "each query's row", "all heads' maps together", "ε forgotten"],
    "check_emsa_module": ["LayerNorm forgotten on the reduced tokens", "padding 0",
                          "heads as the fast factor", "keys and values from x"],
    "check_talking_heads_weights": ["logits_mix transposed", "weights_mix transposed",
                                    "not mixed after the softmax", "scale d^-½ forgotten",
                                    "renormalised to sum to 1", "both mixings before"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_at_least_six_mistakes_across_the_lesson():
    assert sum(len(CHECKERS[n].mistakes) for n in NAMES) >= 6


# ------------------------------------------------------------ a learner's own versions
def _out(n, kernel, stride, padding):  # PyTorch's conv output size, written out
    return math.floor((n + 2 * padding - kernel) / stride) + 1


def learner_grids(H, W, sr_ratios=(8, 4, 2, 1), *, stage_side=None, key_side=None):
    """A learner's ResT grids: the stem and the patch embeddings one side at a time."""
    def stage(n, i):  # the token side of stage i (0-based)
        if stage_side is not None:
            return stage_side(n, i)
        n = _out(_out(_out(n, 3, 2, 1), 3, 1, 1), 3, 2, 1)
        for _ in range(i):
            n = _out(n, 3, 2, 1)
        return n

    def keys(n, sr):
        if key_side is not None:
            return key_side(n, sr)
        return n if sr == 1 else _out(n, sr + 1, sr, sr // 2)

    result = []
    for i, sr in enumerate(sr_ratios):
        h, w = stage(H, i), stage(W, i)
        result.append(((h, w), (keys(h, sr), keys(w, sr))))
    return result


def learner_grids_floor(H, W, sr_ratios=(8, 4, 2, 1)):  # the sides as H // 4, H // 8, ...
    return learner_grids(H, W, sr_ratios, stage_side=lambda n, i: n // 2 ** (i + 2))


def learner_grids_ceil_keys(H, W, sr_ratios=(8, 4, 2, 1)):
    return learner_grids(H, W, sr_ratios, key_side=lambda n, sr: math.ceil(n / sr))


def learner_grids_kernel_sr(H, W, sr_ratios=(8, 4, 2, 1)):
    return learner_grids(H, W, sr_ratios,
                         key_side=lambda n, sr: n if sr == 1 else _out(n, sr, sr, sr // 2))


def learner_grids_pvt(H, W, sr_ratios=(8, 4, 2, 1)):  # PVT's conv: kernel = stride, padding 0
    return learner_grids(H, W, sr_ratios,
                         key_side=lambda n, sr: n if sr == 1 else _out(n, sr, sr, 0))


def learner_grids_patch_embed_reported(H, W, sr_ratios=(8, 4, 2, 1)):
    # the stem run as convs, then each stage's grid as the authors' PatchEmbed reports it
    def stage(n, i):
        n = _out(_out(_out(n, 3, 2, 1), 3, 1, 1), 3, 2, 1)
        for _ in range(i):
            n = n // 2
        return n
    return learner_grids(H, W, sr_ratios, stage_side=stage)


def learner_grids_sr1_conv(H, W, sr_ratios=(8, 4, 2, 1)):
    return learner_grids(H, W, sr_ratios, key_side=lambda n, sr: _out(n, sr + 1, sr, sr // 2))


def _split(t, heads, fast=False):
    B, N, C = t.shape
    if fast:  # channel c = d·heads + head
        return t.view(B, N, C // heads, heads).permute(0, 3, 1, 2)
    return t.view(B, N, heads, C // heads).permute(0, 2, 1, 3)


def _tokens(m, column_major=False):
    """A learner's B×C×H×W map -> B×(H·W)×C tokens, with flatten/transpose."""
    if column_major:
        m = m.transpose(-2, -1)
    return m.flatten(2).transpose(1, 2)


def learner_weights(q, k, num_heads, mix_weight, mix_bias, *, fast=False, scale=None,
                    steps=("mix", "softmax", "norm"), dim=-1, one_head=False,
                    column_major=False, norm=F.instance_norm):
    q, k = _tokens(q, column_major), _tokens(k, column_major)
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
            a = norm(a)
    return a


def learner_weights_fast(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, fast=True)


def learner_weights_column_major(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, column_major=True)


def _norm_rows(a):  # each query's row of M weights to mean 0, variance 1
    return (a - a.mean(-1, keepdim=True)) / (a.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()


def _norm_all_heads(a):  # F.layer_norm over the heads and the map together, no affine
    return F.layer_norm(a, a.shape[1:])


def _norm_no_eps(a):
    mean = a.mean(dim=(2, 3), keepdim=True)
    return (a - mean) / a.std(dim=(2, 3), unbiased=False, keepdim=True)


def learner_weights_norm_rows(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, norm=_norm_rows)


def learner_weights_norm_all_heads(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, norm=_norm_all_heads)


def learner_weights_no_eps(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, norm=_norm_no_eps)


def learner_weights_unscaled(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, scale=1.0)


def learner_weights_sqrt_c(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight, mix_bias, scale=1 / math.sqrt(q.shape[1]))


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


def learner_weights_transposed_mix(q, k, num_heads, mix_weight, mix_bias):
    return learner_weights(q, k, num_heads, mix_weight.T, mix_bias)


def learner_weights_no_mix_bias(q, k, num_heads, mix_weight, mix_bias):
    # the bias left out: one constant per row of logits, which the softmax ignores
    return learner_weights(q, k, num_heads, mix_weight, torch.zeros_like(mix_bias))


def learner_talking(q, k, num_heads, logits_mix, weights_mix, *, pre_t=False, post_t=False,
                    post=True, norm=False):
    """A learner's talking-heads weights, with view/permute and torch.einsum."""
    qh, kh = _split(q, num_heads), _split(k, num_heads)
    a = qh @ kh.transpose(-2, -1) / math.sqrt(q.shape[-1] // num_heads)
    a = torch.einsum("gh,bhnm->bgnm", logits_mix.T if pre_t else logits_mix, a).softmax(-1)
    if post:
        a = torch.einsum("gh,bhnm->bgnm", weights_mix.T if post_t else weights_mix, a)
    return F.instance_norm(a) if norm else a


def learner_talking_tf_layout(q, k, num_heads, logits_mix, weights_mix):
    return learner_talking(q, k, num_heads, logits_mix, weights_mix, pre_t=True, post_t=True)


def learner_talking_pre_t(q, k, num_heads, logits_mix, weights_mix):
    return learner_talking(q, k, num_heads, logits_mix, weights_mix, pre_t=True)


def learner_talking_post_t(q, k, num_heads, logits_mix, weights_mix):
    return learner_talking(q, k, num_heads, logits_mix, weights_mix, post_t=True)


def learner_talking_no_post(q, k, num_heads, logits_mix, weights_mix):
    return learner_talking(q, k, num_heads, logits_mix, weights_mix, post=False)


def learner_talking_emsa_norm(q, k, num_heads, logits_mix, weights_mix):
    return learner_talking(q, k, num_heads, logits_mix, weights_mix, norm=True)


def learner_talking_unscaled(q, k, num_heads, logits_mix, weights_mix):
    qh, kh = _split(q, num_heads), _split(k, num_heads)
    a = torch.einsum("gh,bhnm->bgnm", logits_mix, qh @ kh.transpose(-2, -1)).softmax(-1)
    return torch.einsum("gh,bhnm->bgnm", weights_mix, a)


def learner_talking_renormalised(q, k, num_heads, logits_mix, weights_mix):
    u = learner_talking(q, k, num_heads, logits_mix, weights_mix)
    return u / u.sum(-1, keepdim=True)  # "attention rows sum to one"


def learner_talking_both_before(q, k, num_heads, logits_mix, weights_mix):
    qh, kh = _split(q, num_heads), _split(k, num_heads)
    a = qh @ kh.transpose(-2, -1) / math.sqrt(q.shape[-1] // num_heads)
    a = torch.einsum("gh,bhnm->bgnm", weights_mix @ logits_mix, a)
    return a.softmax(-1)


class LearnerEMSA(nn.Module):
    """A learner's cross-attention EMSA between two maps, with view/permute and
    torch.nn.functional."""

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

    def keys_from(self, y, tokens):
        if self.sr_ratio == 1:
            return tokens
        return self.sr_norm(self.sr(y).flatten(2).transpose(1, 2))

    def split_kv(self, kv):
        return kv[0], kv[1]

    def mix(self, a):
        if self.heads == 1:
            return a.softmax(-1)
        return F.instance_norm(self.transform_conv(a).softmax(-1))

    def forward(self, x, y):
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        q = self.q(tokens).reshape(B, H * W, self.heads, -1).permute(0, 2, 1, 3)
        src = self.keys_from(y, y.flatten(2).transpose(1, 2))
        kv = self.kv(src).reshape(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        k, v = self.split_kv(kv)
        a = self.mix(q @ k.transpose(-2, -1) / math.sqrt(C // self.heads))
        out = (a @ v).transpose(1, 2).reshape(B, H * W, C)
        return self.proj(out).transpose(1, 2).reshape(B, C, H, W)


class LearnerEMSANoPadding(LearnerEMSA):
    def padding(self, sr):
        return 0


class LearnerEMSANoNorm(LearnerEMSA):
    def keys_from(self, y, tokens):
        if self.sr_ratio == 1:
            return tokens
        return self.sr(y).flatten(2).transpose(1, 2)  # sr_norm built but never used


class LearnerEMSASwappedKV(LearnerEMSA):
    def split_kv(self, kv):
        return kv[1], kv[0]


class LearnerEMSANoReduction(LearnerEMSA):
    def keys_from(self, y, tokens):
        return tokens


class LearnerEMSASelf(LearnerEMSA):
    """Keys and values from x, as in the lesson's self-attention."""

    def forward(self, x, y):
        return super().forward(x, x)


class LearnerEMSANoTransform(LearnerEMSA):
    def mix(self, a):
        return a.softmax(-1)


class LearnerEMSAInstanceNormModule(LearnerEMSA):
    """The authors' way: the InstanceNorm as a submodule (no parameters, no buffers)."""

    def __init__(self, dim, num_heads, sr_ratio, **norm_options):
        super().__init__(dim, num_heads, sr_ratio)
        if num_heads > 1:
            self.transform_norm = nn.InstanceNorm2d(num_heads, **norm_options)

    def mix(self, a):
        if self.heads == 1:
            return a.softmax(-1)
        return self.transform_norm(self.transform_conv(a).softmax(-1))


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_rest_grids", learner_grids_floor, "H // 4, H // 8"),
    ("check_rest_grids", learner_grids_ceil_keys, "⌈n/sr⌉"),
    ("check_rest_grids", learner_grids_pvt, "PVT's reduction conv"),
    ("check_rest_grids", learner_grids_kernel_sr, "kernel sr (and padding"),
    ("check_rest_grids", learner_grids_patch_embed_reported, "authors' `PatchEmbed`"),
    ("check_rest_grids", learner_grids_sr1_conv, "sr = 1 run through the conv formula"),
    ("check_emsa_weights", learner_weights_fast, "heads as the fast factor"),
    ("check_emsa_weights", learner_weights_unscaled, "scale d^-½ forgotten"),
    ("check_emsa_weights", learner_weights_sqrt_c, "1/√C"),
    ("check_emsa_weights", learner_weights_norm_first, "InstanceNorm before the softmax"),
    ("check_emsa_weights", learner_weights_softmax_first, "softmax before the head mixing"),
    ("check_emsa_weights", learner_weights_no_norm, "InstanceNorm forgotten"),
    ("check_emsa_weights", learner_weights_over_queries, "softmax over the queries"),
    ("check_emsa_weights", learner_weights_one_head_too, "applied with one head"),
    ("check_emsa_weights", learner_weights_transposed_mix, "head-mixing matrix transposed"),
    ("check_emsa_weights", learner_weights_column_major, "flattened column-major"),
    ("check_emsa_weights", learner_weights_norm_rows, "each query's row"),
    ("check_emsa_weights", learner_weights_norm_all_heads, "all heads' maps together"),
    ("check_emsa_weights", learner_weights_no_eps, "ε forgotten"),
    ("check_emsa_module", LearnerEMSANoPadding, "padding 0 in the reduction conv"),
    ("check_emsa_module", LearnerEMSANoNorm, "LayerNorm forgotten on the reduced tokens"),
    ("check_emsa_module", LearnerEMSASwappedKV, "keys and values swapped"),
    ("check_emsa_module", LearnerEMSANoReduction, "spatial reduction is skipped"),
    ("check_emsa_module", LearnerEMSANoTransform, "head mixing and InstanceNorm left out"),
    ("check_emsa_module", LearnerEMSASelf, "keys and values from x"),
    ("check_talking_heads_weights", learner_talking_tf_layout, "both mixing matrices"),
    ("check_talking_heads_weights", learner_talking_pre_t, "logits_mix transposed"),
    ("check_talking_heads_weights", learner_talking_post_t, "weights_mix transposed"),
    ("check_talking_heads_weights", learner_talking_no_post, "not mixed after the softmax"),
    ("check_talking_heads_weights", learner_talking_emsa_norm, "an InstanceNorm at the end"),
    ("check_talking_heads_weights", learner_talking_unscaled, "scale d^-½ forgotten"),
    ("check_talking_heads_weights", learner_talking_renormalised, "renormalised to sum to 1"),
    ("check_talking_heads_weights", learner_talking_both_before, "both mixings before"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


@pytest.mark.parametrize("name,learner", [
    ("check_rest_grids", learner_grids),
    ("check_emsa_weights", learner_weights),
    ("check_emsa_weights", learner_weights_no_mix_bias),
    ("check_emsa_module", LearnerEMSA),
    ("check_emsa_module", LearnerEMSAInstanceNormModule),
    ("check_talking_heads_weights", learner_talking),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_a_stub_is_not_implemented(capsys):
    def rest_grids(H, W, sr_ratios=(8, 4, 2, 1)):
        raise NotImplementedError()

    result = CHECKERS["check_rest_grids"](rest_grids)
    assert not result.implemented
    assert capsys.readouterr().out.strip() == f"rest_grids: {NOT_IMPLEMENTED}"


def test_a_wrong_grid_shows_what_was_returned_and_what_was_expected(capsys):
    result = CHECKERS["check_rest_grids"](learner_grids_ceil_keys)
    out = capsys.readouterr().out
    assert not result.passed
    # 50×70 at sr 3: stage 1 is 13×18; the conv gives 4×6 keys, ⌈13/3⌉×⌈18/3⌉ = 5×6
    line = next(li for li in out.splitlines() if "50×70" in li)
    assert "returned [((13, 18), (5, 6))" in line and "expected [((13, 18), (4, 6))" in line


def test_grids_of_tensors_or_lists_are_reported(capsys):
    as_tensors = CHECKERS["check_rest_grids"](
        lambda H, W, sr_ratios=(8, 4, 2, 1): [tuple(tuple(torch.tensor(n) for n in g) for g in p)
                                              for p in learner_grids(H, W, sr_ratios)])
    assert not as_tensors.passed and "expected an int" in capsys.readouterr().out
    as_lists = CHECKERS["check_rest_grids"](
        lambda H, W, sr_ratios=(8, 4, 2, 1): [[list(g) for g in p]
                                              for p in learner_grids(H, W, sr_ratios)])
    assert not as_lists.passed and "expected a tuple of 2" in capsys.readouterr().out


def test_the_grid_cases_cover_the_stated_domain():
    checker = CHECKERS["check_rest_grids"]
    args = [case.inputs() for case in checker.cases]
    assert 15 <= len(args) <= 40
    assert any(len(a) == 2 for a in args)                              # the default sr_ratios
    assert (1, 1) in [a[:2] for a in args]                             # the smallest image
    srs = {sr for a in args if len(a) == 3 for sr in a[2]}
    assert {1, 2, 3, 5, 7, 9} <= srs                                   # odd reductions too
    assert any(a[0] != a[1] for a in args)                             # non-square
    for a in args:  # every case inside the domain: a conv of odd sr never sees a side of 1
        for (grid, _), sr in zip(lesson06.ref_rest_grids(*a), (a + ((8, 4, 2, 1),))[2]):
            assert sr % 2 == 0 or sr == 1 or min(grid) >= 2, a


# ------------------------------------------------- the references mean what they say
def _conv_grid(grid, kernel, stride, padding):
    out = F.conv2d(torch.zeros(1, 1, *grid, device="meta"),
                   torch.zeros(1, 1, kernel, kernel, device="meta"), stride=stride,
                   padding=padding)
    return tuple(out.shape[-2:])


@pytest.mark.parametrize("H,W,srs", [(224, 224, (8, 4, 2, 1)), (225, 97, (8, 4, 2, 1)),
                                     (50, 70, (3, 3, 3, 1)), (300, 222, (7, 5, 3, 2)),
                                     (1, 9, (4, 4, 4, 4)), (73, 81, (9, 1, 1, 1))])
def test_grids_reference_is_what_pytorchs_convs_give(H, W, srs):
    # the layers of the authors' BasicStem, PatchEmbed and reduction conv, run on meta tensors
    grid = (H, W)
    for kernel, stride in ((3, 2), (3, 1), (3, 2)):
        grid = _conv_grid(grid, kernel, stride, 1)
    expected = []
    for i, sr in enumerate(srs):
        if i:
            grid = _conv_grid(grid, 3, 2, 1)
        expected.append((grid, grid if sr == 1 else _conv_grid(grid, sr + 1, sr, sr // 2)))
    assert lesson06.ref_rest_grids(H, W, srs) == expected


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
    q_map = rearrange(emsa.q(x), "b (y x) c -> b c y x", y=7)
    k_map = rearrange(k, "b (y x) c -> b c y x", y=4)          # the 4×5 reduced grid
    ours = lesson06.ref_emsa_weights(q_map, k_map, heads, w, b)
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
    assert torch.allclose(ref(x, x), expected, atol=1e-10)   # y = x: the library's self-attention


def test_cross_attention_queries_read_only_x_and_keys_only_y():
    # one head (no InstanceNorm over the whole map, which couples the queries): a query's
    # output depends on its own position of x and on y
    torch.manual_seed(2)
    ref = lesson06.EMSAMap(8, 1, 2).double().eval()
    x = torch.randn(1, 8, 3, 4, dtype=torch.float64)
    y = torch.randn(1, 8, 5, 5, dtype=torch.float64)
    x2 = x.clone()
    x2[..., 0, 0] += 1.0
    changed = (ref(x2, y) - ref(x, y)).abs().sum(1)[0]
    assert changed[0, 0] > 0 and torch.count_nonzero(changed) == 1
    y2 = y.clone()
    y2[..., 2, 2] += 1.0
    assert torch.count_nonzero((ref(x, y2) - ref(x, y)).abs().sum(1)) == 12


# ------------------------------------------------- boundaries and slips of the new engine
@pytest.mark.parametrize("how,phrase", [("unbiased", "unbiased variance"),
                                        ("eps outside", "ε outside the square root")])
def test_instance_norm_slips_are_named(how, phrase):
    from einops import rearrange

    def emsa_weights(q, k, num_heads, mix_weight, mix_bias):
        qh = rearrange(q, "b (h d) y x -> b h (y x) d", h=num_heads)
        kh = rearrange(k, "b (h d) y x -> b h (y x) d", h=num_heads)
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


# ------------------------------------------------------------------ issue 32's additions
def test_transform_norm_with_parameters_or_statistics_is_reported():
    class AffineNorm(LearnerEMSAInstanceNormModule):
        def __init__(self, dim, num_heads, sr_ratio):
            super().__init__(dim, num_heads, sr_ratio, affine=True)

    class TrackedNorm(LearnerEMSAInstanceNormModule):
        def __init__(self, dim, num_heads, sr_ratio):
            super().__init__(dim, num_heads, sr_ratio, track_running_stats=True)

    for learner, entry in ((AffineNorm, "transform_norm.weight"),
                           (TrackedNorm, "transform_norm.running_mean")):
        result = CHECKERS["check_emsa_module"](learner, verbose=False)
        assert not result.passed
        assert any("unexpected" in line and entry in line for line in result.lines), result.lines


def test_a_copy_of_the_lessons_token_module_is_told_its_missing_grid():
    class MyEMSA(LearnerEMSA):  # section 6's signature: tokens and the grid
        def forward(self, x, H, W):
            grid = x.transpose(1, 2).reshape(x.shape[0], -1, H, W)
            return super().forward(grid, grid).flatten(2).transpose(1, 2)

    result = CHECKERS["check_emsa_module"](MyEMSA, verbose=False)
    assert not result.passed and result.status == "error"
    assert "TypeError" in result.error and "'W'" in result.error, result.error


def _talking_loop(q, k, h, pre, post):
    """Talking-heads weights from the equations, one number at a time."""
    B, N, C = q.shape
    M, d = k.shape[1], C // h
    L = torch.zeros(B, h, N, M, dtype=q.dtype)
    for b in range(B):
        for g in range(h):
            for n in range(N):
                for m in range(M):
                    L[b, g, n, m] = sum(q[b, n, g * d + j] * k[b, m, g * d + j]
                                        for j in range(d)) / math.sqrt(d)
    mixed = torch.zeros_like(L)
    for g in range(h):
        for i in range(h):
            mixed[:, g] += pre[g, i] * L[:, i]
    P = torch.exp(mixed) / torch.exp(mixed).sum(-1, keepdim=True)
    U = torch.zeros_like(P)
    for g in range(h):
        for i in range(h):
            U[:, g] += post[g, i] * P[:, i]
    return U


@pytest.mark.parametrize("h", [1, 2, 3])
def test_talking_heads_reference_is_the_equations(h):
    g = torch.Generator().manual_seed(h)
    q, k = (torch.randn(2, n, 3 * h, generator=g, dtype=torch.float64) for n in (4, 3))
    pre, post = (torch.randn(h, h, generator=g, dtype=torch.float64) for _ in range(2))
    ours = lesson06.ref_talking_heads_weights(q, k, h, pre, post)
    assert torch.allclose(ours, _talking_loop(q, k, h, pre, post), rtol=1e-12, atol=1e-14)
    # a row of U sums to the row sum of weights_mix (the softmax rows sum to 1)
    assert torch.allclose(ours.sum(-1), post.sum(-1)[None, :, None].expand(2, h, 4))


def test_the_head_mixing_bias_cannot_change_emsa_weights():
    # the reason the exercise text gives for an answer without mix_bias passing
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 8, 1, n, generator=g, dtype=torch.float64) for n in (5, 3))
    w = torch.randn(2, 2, generator=g, dtype=torch.float64)
    with_bias = lesson06.ref_emsa_weights(q, k, 2, w, torch.tensor([7.0, -3.0], dtype=torch.float64))
    without = lesson06.ref_emsa_weights(q, k, 2, w, torch.zeros(2, dtype=torch.float64))
    assert torch.allclose(with_bias, without, rtol=1e-12, atol=1e-13)
