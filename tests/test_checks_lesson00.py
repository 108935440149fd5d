"""Lesson 00 checkers: the reference passes, every catalogued mistake is named, bad answers are
reported without raising."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attn_tutorial.checks as checks
from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, lesson00
from attn_tutorial.checks._core import _same

NAMES = lesson00.__all__
MISTAKES = [(name, m) for name in NAMES for m in CHECKERS[name].mistakes]


def test_checkers_are_registered_and_exported():
    for name in NAMES:
        assert name in CHECKERS
        assert getattr(checks, name) is CHECKERS[name]


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes(name, capsys):
    checker = CHECKERS[name]
    result = checker(checker.solution)
    out = capsys.readouterr().out
    assert result.passed and result.implemented
    assert result.diagnoses == []
    assert out.count("✓") == len(checker.cases)
    assert "all checks passed" in out


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


@pytest.mark.parametrize("name", NAMES)
def test_mistakes_differ_from_reference_and_each_other_on_every_case(name):
    checker = CHECKERS[name]
    assert len(checker.mistakes) >= 3
    assert len(set(checker.mistake_names)) == len(checker.mistakes)
    for case in checker.cases:
        expected = checker.reference(*case.inputs())
        outs = [m.impl(*case.inputs()) for m in checker.mistakes]
        for m, out in zip(checker.mistakes, outs):
            assert not _same(out, expected, checker.rtol, checker.atol), (case.name, m.name)
        for i in range(len(outs)):
            for j in range(i):
                assert not _same(outs[i], outs[j], checker.rtol, checker.atol), (
                    case.name, checker.mistakes[i].name, checker.mistakes[j].name)


@pytest.mark.parametrize("name,mistake", MISTAKES, ids=[f"{n}:{m.name[:40]}" for n, m in MISTAKES])
def test_each_mistake_is_diagnosed_by_name(name, mistake, capsys):
    result = CHECKERS[name](mistake.as_learner())
    out = capsys.readouterr().out
    assert not result.passed
    assert result.implemented
    assert result.diagnoses == [mistake.name]
    assert out.count(mistake.name) == len(CHECKERS[name].cases)
    assert "0/" in out.splitlines()[-1]


@pytest.mark.parametrize("name", NAMES)
def test_stub_reports_not_implemented(name, capsys):
    def stub(*args):
        raise NotImplementedError()

    result = CHECKERS[name](stub)
    out = capsys.readouterr().out
    assert not result.implemented and not result.passed
    assert out.strip() == f"{CHECKERS[name].title}: {NOT_IMPLEMENTED}"


@pytest.mark.parametrize("name", NAMES)
def test_raising_function_is_reported(name, capsys):
    def broken(*args):
        raise ValueError("boom")

    result = CHECKERS[name](broken)
    out = capsys.readouterr().out
    assert not result.passed and result.implemented
    assert out.count("raised ValueError: boom") == len(CHECKERS[name].cases)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shape_is_reported(name, capsys):
    result = CHECKERS[name](lambda *args: torch.zeros(1, dtype=torch.float64))
    out = capsys.readouterr().out
    assert not result.passed
    assert "returned shape (1,)" in out


@pytest.mark.parametrize("name", NAMES)
def test_non_tensor_is_reported(name, capsys):
    result = CHECKERS[name](lambda *args: None)
    out = capsys.readouterr().out
    assert not result.passed
    assert "expected a torch.Tensor" in out


@pytest.mark.parametrize("name", NAMES)
def test_nan_is_reported(name, capsys):
    checker = CHECKERS[name]
    result = checker(lambda *args: checker.reference(*args) * float("nan"))
    out = capsys.readouterr().out
    assert not result.passed
    assert out.count("NaN") == len(checker.cases)


@pytest.mark.parametrize("name", NAMES)
def test_in_place_change_is_reported(name, capsys):
    checker = CHECKERS[name]

    def sneaky(*args):
        out = checker.reference(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        args[0].mul_(2)
        return out

    result = checker(sneaky)
    out = capsys.readouterr().out
    assert not result.passed
    assert out.count("changed its input in place") == len(checker.cases)


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
