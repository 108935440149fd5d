"""The checker framework, and every registered checker of every lesson: the solution passes, each
catalogued mistake is named, a stub says "not implemented yet", broken code never raises."""

from __future__ import annotations

import pytest
import torch
from einops import reduce

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


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_solution_passes(name):
    checker = CHECKERS[name]
    assert checker.run(checker.solution, verbose=False).passed


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_every_catalogued_mistake_is_named(name):
    checker = CHECKERS[name]
    for mistake in checker.mistakes:
        result = checker.run(mistake.as_learner(), verbose=False)
        assert not result.passed, f"{name}: {mistake.name!r} passes the checker"
        assert mistake.name in result.diagnoses, (
            f"{name}: {mistake.name!r} not named; diagnosed {result.diagnoses}"
        )


@pytest.mark.parametrize("name", sorted(CHECKERS))
def test_stub_is_not_implemented(name):
    result = CHECKERS[name].run(stub, verbose=False)
    assert not result.implemented
