"""The catalogue of exercises and the result fields a grader reads (``checks_passed``,
``checks_total``, ``status``, ``error``), proven against the exercise notebooks themselves: each
row's checker is called in its notebook on the name the row gives, which the notebook defines."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from attn_tutorial.__main__ import main
from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, STATUSES, TIERS, catalogue

ROOT = Path(__file__).resolve().parents[1]


def _calls_in(notebook: Path) -> list[tuple[str, str]]:
    """(checker, argument) of every checker call, in cell order, and the names defined."""
    calls, defined = [], set()
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        defined |= set(re.findall(r"^(?:def|class) (\w+)", source, flags=re.M))
        calls += re.findall(r"\b(check_\w+)\((\w+)\)", source)
    return calls, defined


def test_catalogue_rows_are_the_exercise_notebooks_calls_in_order():
    rows = catalogue()
    expected = []
    for notebook in sorted((ROOT / "exercises").glob("[0-9][0-9]_*.ipynb")):
        calls, defined = _calls_in(notebook)
        for checker, argument in calls:
            assert argument in defined, f"{notebook.name}: {argument} is passed but not defined"
            expected.append((notebook.stem[:2], notebook.stem, argument, checker))
    assert [(r.lesson, r.notebook, r.exercise, r.checker) for r in rows] == expected
    assert len(rows) == len(CHECKERS)  # every registered checker is called in its notebook


def test_catalogue_rows_are_frozen_and_complete():
    for row in catalogue():
        assert dataclasses.is_dataclass(row)
        with pytest.raises(dataclasses.FrozenInstanceError):
            row.tier = "predict"
        checker = CHECKERS[row.checker]
        assert row.tier in TIERS and row.tier == checker.tier
        assert row.kind == ("module" if row.exercise[0].isupper() else "function")
        assert row.mistakes == tuple(checker.mistake_names) and len(row.mistakes) >= 2
        assert isinstance(row.mistakes, tuple)


def test_every_lesson_has_the_three_tiers_and_six_named_mistakes():
    """The second edition's rule: a build exercise (a form the lesson does not build), at least
    one predict and one extend, and six named mistakes across the lesson."""
    lessons: dict[str, list] = {}
    for row in catalogue():
        lessons.setdefault(row.lesson, []).append(row)
    assert {f"{n:02d}" for n in range(8)} <= set(lessons)
    for lesson, rows in lessons.items():
        tiers = {r.tier for r in rows}
        wanted = {"build", "predict", "extend"}
        assert wanted <= tiers, (lesson, sorted(tiers))
        assert sum(len(r.mistakes) for r in rows) >= 6, lesson


def test_the_readme_lists_every_exercise_under_its_tier():
    """The README's table of exercises (one row per lesson) says what the catalogue says."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = text.index("| lesson | build | predict | extend | named mistakes |")
    table = {}
    for line in text[start + 2:]:
        if not line.startswith("|"):
            break
        lesson, build, predict, extend, named = [c.strip() for c in line.strip("|").split("|")]
        table[lesson] = ([c.strip(" `") for c in t.split(",") if c.strip(" `—")]
                         for t in (build, predict, extend)), int(named)
    rows = catalogue()
    assert sorted(table) == sorted({r.lesson for r in rows})
    for lesson, (tiers, named) in table.items():
        mine = [r for r in rows if r.lesson == lesson]
        for tier, listed in zip(("build", "predict", "extend"), tiers):
            assert listed == [r.exercise for r in mine if r.tier == tier], (lesson, tier)
        assert named == sum(len(r.mistakes) for r in mine), lesson


def test_register_wants_the_exercise_name():
    from attn_tutorial.checks import Checker, register

    with pytest.raises(ValueError, match="exercise="):
        register(Checker("nameless", lambda x: x, []))
    with pytest.raises(ValueError, match="tier='hard'"):
        Checker("x", lambda x: x, [], exercise="x", tier="hard")


def test_the_checks_command_prints_the_table(capsys):
    assert main(["checks"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["lesson", "exercise", "checker", "tier", "kind", "mistakes"]
    for row in catalogue():
        line = next(l for l in lines if l.split()[:3] == [row.lesson, row.exercise, row.checker])
        assert line.split()[3:] == [row.tier, row.kind, str(len(row.mistakes))]
    rows = catalogue()
    n, lessons = sum(len(r.mistakes) for r in rows), len({r.lesson for r in rows})
    assert lines[-1] == f"{len(rows)} exercises in {lessons} lessons, {n} named mistakes"


# ---------------------------------------------------------------- the result's new fields
def test_status_passed_and_failed():
    checker = CHECKERS["check_global_avg_pool"]
    good = checker.run(lambda x: x.mean(dim=(2, 3)), verbose=False)
    assert (good.status, good.passed, good.error) == ("passed", True, "")
    assert good.checks_passed == good.checks_total == len(checker.cases) >= 3
    bad = checker.run(lambda x: x.mean(dim=(2, 3)) + 1, verbose=False)
    assert (bad.status, bad.passed, bad.error) == ("failed", False, "")
    assert (bad.checks_passed, bad.checks_total) == (0, len(checker.cases))
    # Right on one case only: the count says so.
    first = checker.cases[0].inputs()[0]
    half = checker.run(lambda x: x.mean(dim=(2, 3)) if x.shape == first.shape else x.sum(),
                       verbose=False)
    assert (half.status, half.checks_passed) == ("failed", 1)


def test_status_not_implemented():
    def global_avg_pool(x):
        raise NotImplementedError()

    result = CHECKERS["check_global_avg_pool"].run(global_avg_pool, verbose=False)
    assert (result.status, result.implemented, result.checks_passed) == \
        ("not implemented", False, 0)
    assert result.lines == [f"global_avg_pool: {NOT_IMPLEMENTED}"]


def test_status_error_names_the_learners_line():
    def global_avg_pool(x):
        s = x.sum(dim=(2, 3))
        return s / undefined_name  # noqa: F821

    result = CHECKERS["check_global_avg_pool"].run(global_avg_pool, verbose=False)
    assert result.status == "error" and not result.passed
    assert result.error.startswith("raised NameError") and \
        result.error.endswith("(at line 3 of global_avg_pool)"), result.error


def test_status_timeout(monkeypatch):
    checker = CHECKERS["check_global_avg_pool"]
    monkeypatch.setattr(checker, "time_limit", 0.2)

    def global_avg_pool(x):
        while True:
            pass

    result = checker.run(global_avg_pool, verbose=False)
    assert result.status == "timeout" and result.checks_passed == 0
    assert "still running after 0.2 s" in result.error


def test_status_of_a_module_exercise():
    from attn_tutorial.checks.lesson01 import ECAReference

    result = CHECKERS["check_eca_module"].run(ECAReference, verbose=False)
    assert result.status == "passed"
    assert result.checks_passed == result.checks_total == len(CHECKERS["check_eca_module"].cases)
    assert set(STATUSES) == {"passed", "failed", "not implemented", "error", "timeout"}
