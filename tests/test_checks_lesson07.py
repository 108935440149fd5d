"""Lesson 07 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, correct versions written differently (the authors' shared-storage tie among them) pass, and
the references mean what they say. The generic proofs run over every checker in
tests/test_checks.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _learner import assert_catalogued, assert_mistake_named

from attn_tutorial.checks import CHECKERS, lesson07
from attn_tutorial.external import ExternalAttention

# The mistakes the issue asks the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_double_normalise": ["softmax over the memory slots instead of over the pixels",
                               "l1 over the pixels", "ε = 1e-9 forgotten", "softmax alone"],
    "check_external_attention": ["scaled by 1/√d", "softmax over the memory slots",
                                 "softmax alone"],
    "check_ea_block": ["untied memories", "ReLU before the residual sum",
                       "softmax over the memory slots", "scaled by 1/√d"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


# ------------------------------------------------------ a learner's own wrong versions
def learner_softmax_over_memory(logits):
    a = torch.softmax(logits, dim=2)
    return a / (a.sum(dim=2, keepdim=True) + 1e-9)


def learner_official_dims_on_tokens_first(logits):  # dims copied from the B×S×N official code
    attn = F.softmax(logits, dim=-1)
    return attn / (1e-9 + attn.sum(dim=1, keepdim=True))


def learner_no_eps(logits):
    a = logits.softmax(dim=1)
    return a / a.sum(dim=-1, keepdim=True)


def learner_softmax_only(logits):
    return torch.softmax(logits, dim=-2)


def learner_l1_over_pixels(logits):  # a no-op after the softmax over the same axis
    a = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    return a / (1e-9 + a.sum(dim=1, keepdim=True))


def _double_norm(logits):
    a = torch.softmax(logits, dim=1)
    return a / (1e-9 + a.sum(dim=2, keepdim=True))


def learner_scaled(tokens, memory_key, memory_value):
    logits = tokens @ memory_key.T / math.sqrt(tokens.shape[-1])
    return _double_norm(logits) @ memory_value.T


def learner_core_softmax_memory(tokens, memory_key, memory_value):
    return torch.softmax(tokens @ memory_key.T, dim=-1) @ memory_value.T


def learner_core_tied(tokens, memory_key, memory_value):
    return _double_norm(tokens @ memory_key.T) @ memory_key


class _Block(nn.Module):
    """A learner's block: plain tensor calls, the tie as one parameter used twice."""

    def __init__(self, channels, memory_size=64):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.memory_key = nn.Linear(channels, memory_size, bias=False)
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def value(self):
        return self.memory_key.weight.T

    def branch(self, x):
        b, c, h, w = x.shape
        t = self.conv_in(x).flatten(2).transpose(1, 2)            # b n c
        attn = _double_norm(t @ self.memory_key.weight.T)         # b n s
        out = (attn @ self.value().T).transpose(1, 2).reshape(b, c, h, w)
        return self.norm(self.conv_out(out))

    def forward(self, x):
        return F.relu(x + self.branch(x))


class LearnerUntied(_Block):
    def __init__(self, channels, memory_size=64):
        super().__init__(channels, memory_size)
        self.mv = nn.Parameter(torch.randn(channels, memory_size))

    def value(self):
        return self.mv


class LearnerReluFirst(_Block):
    def forward(self, x):
        return x + F.relu(self.branch(x))


class LearnerTiedByStorage(_Block):
    """The authors' way: a second Conv1d-shaped memory whose weight is a view of M_k's storage."""

    def __init__(self, channels, memory_size=64):
        super().__init__(channels, memory_size)
        self.memory_value = nn.Linear(memory_size, channels, bias=False)
        self.memory_value.weight = nn.Parameter(self.memory_key.weight.data.t())

    def value(self):
        return self.memory_value.weight


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_double_normalise", learner_softmax_over_memory, "softmax over the memory slots"),
    ("check_double_normalise", learner_official_dims_on_tokens_first, "l1 over the pixels"),
    ("check_double_normalise", learner_no_eps, "ε = 1e-9 forgotten"),
    ("check_double_normalise", learner_softmax_only, "softmax alone"),
    ("check_double_normalise", learner_l1_over_pixels, "softmax alone"),
    ("check_external_attention", learner_scaled, "scaled by 1/√d"),
    ("check_external_attention", learner_core_softmax_memory, "softmax over the memory slots"),
    ("check_external_attention", learner_core_tied, "memory_key's transpose used"),
    ("check_ea_block", LearnerUntied, "untied memories"),
    ("check_ea_block", LearnerReluFirst, "ReLU before the residual sum"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


def learner_double_norm_correct(logits):
    return _double_norm(logits)


def learner_core_correct(tokens, memory_key, memory_value):
    return _double_norm(tokens @ memory_key.T) @ memory_value.T


@pytest.mark.parametrize("name,learner", [
    ("check_double_normalise", learner_double_norm_correct),
    ("check_external_attention", learner_core_correct),
    ("check_ea_block", _Block),
    ("check_ea_block", LearnerTiedByStorage),  # two parameters, one storage: tied, passes
    ("check_ea_block", ExternalAttention),     # the library's module has the same names
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_untied_memories_agree_before_the_step_and_differ_after_it(capsys):
    """At load an untied M_v starts as M_kᵀ (the authors' init), so output and input gradient
    match; only M_k after one SGD step tells the two forms apart."""
    CHECKERS["check_ea_block"](LearnerUntied)
    out = capsys.readouterr().out
    # one line per case
    assert out.count("`memory_key.weight` after one SGD step (lr 0.1): wrong values") \
        == len(CHECKERS["check_ea_block"].cases)
    assert "output:" not in out and "gradient" not in out


def test_a_missing_parameter_is_reported_by_name(capsys):
    class NoNorm(_Block):
        def __init__(self, channels, memory_size=64):
            super().__init__(channels, memory_size)
            del self.norm

        def branch(self, x):
            return torch.zeros_like(x)

    assert not CHECKERS["check_ea_block"](NoNorm).passed
    assert "missing norm.weight" in capsys.readouterr().out


def test_nan_without_eps_on_an_underflowing_pixel():
    """The lesson's ε case: in float32 a pixel 200 below the others underflows to 0 in every
    slot after the softmax over the pixels; 0/0 is NaN without ε, 0 with it."""
    logits = torch.randn(1, 10, 4)
    logits[0, 3] -= 200.0
    assert (logits.softmax(dim=1)[0, 3] == 0).all()
    assert torch.isnan(lesson07.ref_double_normalise(logits, eps=0.0)[0, 3]).all()
    good = lesson07.ref_double_normalise(logits)
    assert torch.isfinite(good).all() and (good[0, 3] == 0).all()


def test_reference_meanings():
    """The references against loops written from the equations."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    want = torch.zeros_like(logits)
    for b in range(2):
        for s in range(3):
            z = sum(math.exp(logits[b, n, s]) for n in range(5))
            for n in range(5):
                want[b, n, s] = math.exp(logits[b, n, s]) / z
        for n in range(5):
            want[b, n] = want[b, n] / (1e-9 + want[b, n].sum())
    assert torch.allclose(lesson07.ref_double_normalise(logits), want)

    tokens = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    mk = torch.randn(3, 4, generator=g, dtype=torch.float64)
    mv = torch.randn(4, 3, generator=g, dtype=torch.float64)
    attn = lesson07.ref_double_normalise(tokens @ mk.T)
    out = torch.zeros_like(tokens)
    for b in range(2):
        for n in range(5):
            for c in range(4):
                out[b, n, c] = sum(attn[b, n, s] * mv[c, s] for s in range(3))
    assert torch.allclose(lesson07.ref_external_attention(tokens, mk, mv), out)

    ref = lesson07.EABlockReference(6, 5).double().eval()
    lib = ExternalAttention(6, 5).double().eval()
    lib.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(ref(x), lib(x))


# ------------------------------------------------- boundaries and slips of the new engine
def test_f_normalize_for_the_l1_step_is_the_eps_mistake():
    def double_normalise(logits):
        return F.normalize(logits.softmax(dim=1), p=1, dim=-1)

    assert_mistake_named("check_double_normalise", double_normalise, "ε = 1e-9 forgotten")


@pytest.mark.parametrize("with_l1", [True, False])
def test_one_softmax_over_all_entries_is_named_with_or_without_the_l1_step(with_l1):
    def double_normalise(logits):
        b, n, s = logits.shape
        a = logits.reshape(b, n * s).softmax(dim=-1).reshape(b, n, s)
        return a / (1e-9 + a.sum(dim=-1, keepdim=True)) if with_l1 else a

    assert_mistake_named("check_double_normalise", double_normalise,
                         "one softmax over all pixels and slots")


def test_an_ea_block_without_a_default_memory_size_fails_on_the_default_call():
    class EABlock(lesson07.EABlockReference):
        def __init__(self, channels, memory_size):
            super().__init__(channels, memory_size)

    result = CHECKERS["check_ea_block"].run(EABlock, verbose=False)
    assert result.status == "error"
    assert "S not given" in next(l for l in result.lines if l.startswith("✗"))
