"""Lesson 00 checkers: lesson-specific facts (cases, reference meanings). The generic proofs
(solution passes, each mistake named, broken code reported) run over every checker in
tests/test_checks.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from _learner import assert_mistake_named

from attn_tutorial.checks import CHECKERS, lesson00

NAMES = lesson00.__all__


@pytest.mark.parametrize("name", NAMES)
def test_checker_has_odd_nonsquare_batch1_float64_cases(name):
    checker = CHECKERS[name]
    assert len(checker.cases) >= 3
    tensors = [[a for a in case.inputs() if isinstance(a, torch.Tensor)] for case in checker.cases]
    assert all(t.dtype == torch.float64 for ts in tensors for t in ts)
    assert any(ts[0].shape[0] == 1 for ts in tensors), "no batch-1 case"
    assert any(ts[0].shape[0] > 1 for ts in tensors)
    assert any(any(s % 2 for s in ts[0].shape[1:]) for ts in tensors), "no odd size"
    if name in ("check_to_tokens", "check_global_avg_pool", "check_dilated_conv_by_phases"):
        assert any(ts[0].shape[-1] != ts[0].shape[-2] for ts in tensors), "no non-square map"


def test_reference_phase_route_equals_dilated_conv():
    for case in lesson00.check_dilated_conv_by_phases.cases:
        x, w, d = case.inputs()
        assert torch.allclose(lesson00.ref_dilated_conv_by_phases(x, w, d),
                              F.conv2d(x, w, padding=d, dilation=d))


def test_reference_meanings():
    """The references mean what their docstrings say, checked against plain torch ops."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    t = lesson00.ref_to_tokens(x)
    assert torch.equal(t[1, 2 * 7 + 4], x[1, :, 2, 4])  # row-major: token index h·W + w
    assert torch.equal(lesson00.ref_from_tokens(t, 5, 7), x)
    assert torch.allclose(lesson00.ref_global_avg_pool(x), x.mean(dim=(2, 3)))
    tok = torch.randn(2, 4, 12, dtype=torch.float64)
    heads = lesson00.ref_split_heads(tok, 3)
    assert torch.equal(heads[:, 1], tok[..., 4:8])  # head 1 owns channels 4..7
    q, k = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 3, 6, 5, dtype=torch.float64)
    a = lesson00.ref_attention_scores(q, k, 0.5)
    assert a.shape == (2, 3, 4, 6)
    assert torch.allclose(a.sum(-1), torch.ones(2, 3, 4, dtype=torch.float64))
    assert torch.allclose(a, torch.softmax(q @ k.transpose(-1, -2) * 0.5, dim=-1))


@pytest.mark.parametrize("name", NAMES)
def test_each_checker_catalogues_three_or_more_mistakes(name):
    assert len(CHECKERS[name].mistakes) >= 3


def learner_scores_sqrt_d(q, k, scale):
    """Ignores ``scale`` and divides by sqrt(d), as most tutorials do."""
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)


def learner_scores_over_queries(q, k, scale):
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=2)


def learner_pool_keepdim(x):
    return x.mean(dim=(2, 3), keepdim=True)


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_attention_scores", learner_scores_sqrt_d, "used d ** -0.5 instead of the scale"),
    ("check_attention_scores", learner_scores_over_queries, "softmax over the query axis"),
    ("check_global_avg_pool", learner_pool_keepdim, "kept the spatial axes"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


def test_no_case_uses_the_usual_scale():
    for case in CHECKERS["check_attention_scores"].cases:
        q, k, scale = case.inputs()
        assert not math.isclose(scale, q.shape[-1] ** -0.5) and scale != 1


# ------------------------------------------------- boundaries and slips of the new engine
def test_a_softmax_without_the_max_overflows_on_large_scores():
    """exp(s) / Σ exp(s) is right until the scores pass e^709: only the scale-300 case fails,
    with NaN."""
    from _learner import assert_fails_only_on

    def attention_scores(q, k, scale):
        e = torch.exp(torch.einsum("bhid,bhjd->bhij", q, k) * scale)
        return e / e.sum(dim=-1, keepdim=True)

    lines = assert_fails_only_on("check_attention_scores", attention_scores, ["scale=300"])
    assert "NaN or inf" in lines[-2], lines


def test_a_stable_softmax_with_the_sign_flipped_is_named():
    def attention_scores(q, k, scale):
        s = torch.einsum("bhid,bhjd->bhij", q, k) * scale
        return torch.softmax(s.amax(dim=-1, keepdim=True) - s, dim=-1)

    assert_mistake_named("check_attention_scores", attention_scores, "softmax(−scores)")


def test_a_pool_that_takes_the_first_pixel_of_a_single_row_fails_on_that_boundary():
    from _learner import assert_fails_only_on

    def global_avg_pool(x):  # "one row: nothing to average" (wrong: the row has W pixels)
        return x.mean(dim=(2, 3)) if x.shape[2] > 1 else x[:, :, 0, 0]

    assert_fails_only_on("check_global_avg_pool", global_avg_pool, ["one row"])


def test_a_split_heads_that_assumes_several_heads_fails_at_one_head():
    from _learner import assert_fails_only_on

    def split_heads(t, heads):
        b, n, c = t.shape
        out = t.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3)
        return out.squeeze(1) if heads == 1 else out

    assert_fails_only_on("check_split_heads", split_heads, ["heads=1"])
