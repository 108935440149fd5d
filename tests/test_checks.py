"""The checker framework, and every registered checker of every lesson: the solution passes, each
catalogued mistake is named, a stub says "not implemented yet", broken code never raises."""

from __future__ import annotations

import pytest
import torch
from einops import reduce

from attn_tutorial.checks._core import _same
from attn_tutorial.checks import (
    CHECKERS, NOT_IMPLEMENTED, Case, Checker, Mistake, feature_map_cases, token_cases,
)


def mean_pool(x):
    return reduce(x, "b c h w -> b c", "mean")


def max_pool(x):
    return reduce(x, "b c h w -> b c", "max")


def toy_checker():
    return Checker("pool", mean_pool, feature_map_cases(),
                   [Mistake("max instead of mean pooling", max_pool)])


def stub(*args):
    raise NotImplementedError()


def test_correct_code_passes(capsys):
    result = toy_checker()(lambda x: x.mean(dim=(2, 3)))
    assert result.passed and result.implemented and not result.diagnoses
    assert capsys.readouterr().out.count("✓") == 3


def test_named_mistake(capsys):
    result = toy_checker()(max_pool)
    assert not result.passed and result.diagnoses == ["max instead of mean pooling"]
    assert "max instead of mean pooling" in capsys.readouterr().out


def test_stub(capsys):
    result = toy_checker()(stub)
    assert not result.implemented and not result.passed
    assert capsys.readouterr().out.strip() == f"pool: {NOT_IMPLEMENTED}"


@pytest.mark.parametrize(
    "learner, phrase",
    [
        (lambda x: 1 / 0, "raised ZeroDivisionError"),
        (lambda x: "nope", "returned str, expected a torch.Tensor"),
        (lambda x: x.mean(dim=1), "returned shape"),
        (lambda x: x.mean(dim=(2, 3)) * float("nan"), "NaN"),
        (lambda x: x.mul_(2).mean(dim=(2, 3)), "changed its input in place"),
        (lambda x: x.mean(dim=(2, 3)) + 1, "wrong values"),
        (42, "expected a function or class"),
    ],
)
def test_broken_code_is_reported_not_raised(learner, phrase, capsys):
    result = toy_checker()(learner)
    assert not result.passed
    assert phrase in capsys.readouterr().out


def test_cases_are_deterministic_and_cover_odd_batch1():
    a = [c.inputs()[0] for c in feature_map_cases()]
    b = [c.inputs()[0] for c in feature_map_cases()]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    shapes = [tuple(x.shape) for x in a]
    assert any(s[0] == 1 for s in shapes) and any(s[2] != s[3] for s in shapes)
    assert any(s[2] % 2 == 1 for s in shapes)
    for t, h, w in (c.inputs() for c in token_cases()):
        assert t.shape[1] == h * w


def test_a_reference_that_fails_is_a_course_bug():
    chk = Checker("bad", lambda x: 1 / 0, feature_map_cases())
    with pytest.raises(RuntimeError, match="reference failed"):
        chk(mean_pool, verbose=False)


def test_lessons_registered_checkers():
    assert CHECKERS, "no lesson registered a checker"


NAMES = sorted(CHECKERS)
MISTAKES = [(name, m) for name in NAMES for m in CHECKERS[name].mistakes]


def _returns_tensor(checker) -> bool:
    return isinstance(checker.reference(*checker.cases[0].inputs()), torch.Tensor)


TENSOR_NAMES = [n for n in NAMES if _returns_tensor(CHECKERS[n]) and CHECKERS[n].prepare is None]


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes(name, capsys):
    checker = CHECKERS[name]
    result = checker(checker.solution)
    out = capsys.readouterr().out
    assert result.passed and result.implemented and result.diagnoses == []
    assert out.count("✓") == len(checker.cases) and "all checks passed" in out


@pytest.mark.parametrize("name", NAMES)
def test_mistakes_differ_from_reference_and_each_other_on_every_case(name):
    checker = CHECKERS[name]
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
    assert not result.passed and result.implemented
    assert result.diagnoses == [mistake.name]
    assert out.count(mistake.name) == len(CHECKERS[name].cases)
    assert "0/" in out.splitlines()[-1]


@pytest.mark.parametrize("name", NAMES)
def test_stub_reports_not_implemented(name, capsys):
    result = CHECKERS[name](stub)
    assert not result.implemented and not result.passed
    assert capsys.readouterr().out.strip() == f"{CHECKERS[name].title}: {NOT_IMPLEMENTED}"


@pytest.mark.parametrize("name", NAMES)
def test_raising_function_is_reported(name, capsys):
    def broken(*args):
        raise ValueError("boom")

    result = CHECKERS[name](broken)
    assert not result.passed and result.implemented
    assert capsys.readouterr().out.count("raised ValueError: boom") == len(CHECKERS[name].cases)


@pytest.mark.parametrize("name", TENSOR_NAMES)
def test_wrong_shape_and_non_tensor_are_reported(name, capsys):
    checker = CHECKERS[name]
    assert not checker(lambda *args: torch.zeros(1, dtype=torch.float64)).passed
    assert "returned shape (1,)" in capsys.readouterr().out
    assert not checker(lambda *args: None).passed
    assert "expected a torch.Tensor" in capsys.readouterr().out


@pytest.mark.parametrize("name", TENSOR_NAMES)
def test_nan_is_reported(name, capsys):
    checker = CHECKERS[name]
    assert not checker(lambda *args: checker.reference(*args) * float("nan")).passed
    assert capsys.readouterr().out.count("NaN") == len(checker.cases)


@pytest.mark.parametrize("name", TENSOR_NAMES)
def test_in_place_change_is_reported(name, capsys):
    checker = CHECKERS[name]

    def sneaky(*args):
        out = checker.reference(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        args[0].mul_(2)
        return out

    assert not checker(sneaky).passed
    assert capsys.readouterr().out.count("changed its input in place") == len(checker.cases)
