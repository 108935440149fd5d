"""Shared assertions for the per-lesson checker tests (tests/test_checks_lessonNN.py)."""

from __future__ import annotations

import contextlib
import io

from attn_tutorial.checks import CHECKERS


def assert_mistake_named(checker: str, learner, phrase: str) -> None:
    """``checker`` fails ``learner`` — a learner's own way of writing a catalogued mistake — and
    names exactly one mistake, the one whose name contains ``phrase``, in what it prints too."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = CHECKERS[checker](learner)
    assert not result.passed
    assert len(result.diagnoses) == 1 and phrase in result.diagnoses[0], result.diagnoses
    assert phrase in printed.getvalue(), printed.getvalue()


def assert_catalogued(checker: str, phrases: list[str]) -> None:
    """Every phrase (a mistake the lesson's issue asks for) is part of one of the names that
    ``checker`` catalogues."""
    names = CHECKERS[checker].mistake_names
    for phrase in phrases:
        assert any(phrase in name for name in names), f"{checker}: no mistake named {phrase!r}"


def assert_fails_only_on(checker: str, learner, phrases: list[str]) -> list[str]:
    """``checker`` fails ``learner`` exactly on the cases whose names contain one of ``phrases``
    (a learner's answer wrong only at a boundary of the exercise's domain); returns the lines."""
    result = CHECKERS[checker].run(learner, verbose=False)
    assert not result.passed, result.lines
    failed = [line for line in result.lines if line.startswith("✗")]
    assert failed, result.lines
    for line in failed:
        assert any(p in line for p in phrases), (line, result.lines)
    for phrase in phrases:
        assert any(phrase in line for line in failed), (phrase, result.lines)
    return result.lines
