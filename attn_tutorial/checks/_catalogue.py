"""The catalogue of exercises: one row per registered checker, for instructors and graders.

``catalogue()`` lists every exercise in lesson order, then in the order of its exercise notebook
(``exercises/NN_topic.ipynb``): which name the learner defines, which checker judges it, its tier
and the mistakes the checker names. ``python -m attn_tutorial checks`` prints it as a table.
"""

from __future__ import annotations

from dataclasses import dataclass

from attn_tutorial.checks._core import CHECKERS


@dataclass(frozen=True)
class ExerciseRow:
    """One exercise. ``CHECKERS[row.checker].run(obj, verbose=False)`` judges a learner's
    ``obj`` (the function or class the notebook names ``row.exercise``)."""

    lesson: str          # "00" .. "07"
    notebook: str        # stem of exercises/<notebook>.ipynb, e.g. "00_einops"
    exercise: str        # the name the learner's notebook defines, e.g. "kernel_size", "MyECA"
    checker: str         # public name, e.g. "check_kernel_size"
    tier: str            # "build" | "predict" | "extend"
    kind: str            # "function" | "module"
    mistakes: tuple[str, ...]


def catalogue() -> list[ExerciseRow]:
    """Every registered exercise, in lesson order and then in its notebook's order."""
    from attn_tutorial.checks import _LESSONS

    rows = []
    for lesson in _LESSONS:
        for name in lesson.__all__:
            checker = CHECKERS[name]
            rows.append(ExerciseRow(
                lesson=lesson.NOTEBOOK[:2], notebook=lesson.NOTEBOOK, exercise=checker.exercise,
                checker=name, tier=checker.tier,
                kind=checker.kind,
                mistakes=tuple(checker.mistake_names)))
    return rows


def table(rows: list[ExerciseRow] | None = None, width: int = 60) -> str:
    """The catalogue as a plain-text table: one line per exercise, its mistakes below it."""
    rows = catalogue() if rows is None else rows
    head = ("lesson", "exercise", "checker", "tier", "kind", "mistakes")
    body = [(r.lesson, r.exercise, r.checker, r.tier, r.kind, str(len(r.mistakes))) for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:{'>' if i == 5 else '<'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    indent = " " * (widths[0] + 2)
    for row, cells in zip(rows, body):
        lines.append(fmt.format(*cells).rstrip())
        for mistake in row.mistakes:
            text = mistake if len(mistake) <= width + 40 else mistake[: width + 37] + "..."
            lines.append(f"{indent}- {text}")
    lessons = len({r.lesson for r in rows})
    named = sum(len(r.mistakes) for r in rows)
    lines.append(f"{len(rows)} exercises in {lessons} lessons, {named} named mistakes")
    return "\n".join(lines)
