"""What ``python -m attn_tutorial grade`` writes and prints, from its graded notebooks.

``grades.csv`` (one row per student × exercise), ``grades.json`` (the same rows with the checker's
case lines, each notebook's problems, the ignored files), ``report.md`` (a table per student, a
summary per exercise with its most common named mistakes), the terminal's progress lines, tables
and one-line summary. Every file is a function of the submissions only (no times, no dates), so
two gradings of the same class give the same bytes whatever ``--jobs`` was.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict

from attn_tutorial.grading import worker

COLUMNS = ("student", "notebook", "exercise", "tier", "status", "checks_passed", "checks_total",
           "mistake", "detail")
STATUSES = ("passed", "failed", "not implemented", "error", "missing", "timeout")
COMMON = 3  # mistakes named per exercise in the report


def _grades(runs):
    return [g for run in runs for g in run.grades]


def _score(grades) -> str:
    return f"{sum(g.status == 'passed' for g in grades)}/{len(grades)}"


def _table(head: list[str], body: list[list[str]]) -> str:
    """Plain text, columns padded."""
    widths = [max(len(str(line[i])) for line in [head, *body]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, line)).rstrip() for line in body]
    return "\n".join(lines)


def _md_table(head: list[str], body: list[list[str]]) -> str:
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in line) + " |" for line in body]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- terminal
def progress(run) -> str:
    """One line per graded notebook."""
    counts = Counter(g.status for g in run.grades)
    rest = ", ".join(f"{n} {status}" for status, n in counts.items() if status != "passed")
    problems = f"; {len(run.problems)} problem(s) running it" if run.problems else ""
    return (f"{run.student}/{run.notebook}.ipynb: {_score(run.grades)} passed"
            f"{' (' + rest + ')' if rest else ''}{problems}  [{run.seconds:.1f} s]")


def verdict(grade) -> str:
    """What the learner's table says about one exercise beyond its status."""
    return grade.mistake and f"looks like: {grade.mistake}" or grade.detail


def terminal(runs, learner: bool, ignored: list[str]) -> str:
    """A learner: one line per exercise. A class: one line per student, a column per notebook."""
    if learner:
        body = [[g.notebook, g.exercise, g.tier, g.status,
                 f"{g.checks_passed}/{g.checks_total}" if g.checks_total else "",
                 verdict(g)[:100]] for g in _grades(runs)]
        text = _table(["notebook", "exercise", "tier", "status", "checks", "mistake / detail"],
                      body)
        problems = [f"{run.notebook}.ipynb: {p}" for run in runs for p in run.problems]
    else:
        text = _student_table(runs, _table)
        problems = [f"{run.student}/{run.notebook}.ipynb: {p}" for run in runs
                    for p in run.problems]
    if problems:
        text += "\nproblems while running the notebooks:\n" + "\n".join(f"  {p}" for p in problems)
    if ignored:
        text += "\nnot graded (not an exercise notebook's name):\n" + "\n".join(
            f"  {name}" for name in ignored)
    return text


def _student_table(runs, render) -> str:
    notebooks = list(dict.fromkeys(run.notebook for run in runs))
    students = list(dict.fromkeys(run.student for run in runs))
    by = {(run.student, run.notebook): run for run in runs}
    body = []
    for student in students:
        mine = [by[student, nb] for nb in notebooks]
        body.append([student, *(_score(run.grades) for run in mine),
                     _score(_grades(mine))])
    return render(["student", *notebooks, "passed"], body)


def summary(runs, seconds: float, written: list[str]) -> str:
    """The last line: what was graded, the counts per status, the time, the files."""
    grades = _grades(runs)
    counts = Counter(g.status for g in grades)
    students = len({run.student for run in runs})
    notebooks = len({run.notebook for run in runs})
    status = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    files = f"; wrote {', '.join(written)}" if written else ""
    return (f"graded {students} student(s) x {notebooks} notebook(s) ({len(grades)} exercises) "
            f"in {seconds:.1f} s: {status or 'nothing to grade'}{files}")


# ------------------------------------------------------------------------------ files
def csv_text(runs) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for g in _grades(runs):
        writer.writerow([getattr(g, column) for column in COLUMNS])
    return out.getvalue()


def json_text(runs, ignored: list[str]) -> str:
    data = {
        "columns": list(COLUMNS),
        "grades": [asdict(g) for g in _grades(runs)],
        "notebooks": [{"student": run.student, "notebook": run.notebook,
                       "problems": run.problems} for run in runs],
        "ignored": ignored,
    }
    return json.dumps(data, indent=1, ensure_ascii=False) + "\n"


def markdown(runs, ignored: list[str]) -> str:
    """The report: a table per student, a summary per exercise, the notebooks' problems."""
    grades = _grades(runs)
    students = len({run.student for run in runs})
    parts = [f"# Grades: {students} student(s), {len(grades)} exercises graded", "",
             "## Per student (exercises passed)", "", _student_table(runs, _md_table), "",
             "## Per exercise", ""]
    exercises = list(dict.fromkeys((g.notebook, g.exercise, g.tier) for g in grades))
    body = []
    for notebook, exercise, tier in exercises:
        mine = [g for g in grades if (g.notebook, g.exercise) == (notebook, exercise)]
        counts = Counter(g.status for g in mine)
        named = Counter(m for g in mine if g.mistake
                        for m in g.mistake.split(worker.MISTAKES_JOINED_BY))
        common = "; ".join(f"{m} ({n})" for m, n in
                           sorted(named.items(), key=lambda kv: (-kv[1], kv[0]))[:COMMON])
        body.append([notebook, exercise, tier, *(counts[s] for s in STATUSES), common])
    parts += [_md_table(["notebook", "exercise", "tier", *STATUSES, "most common mistakes"],
                        body), ""]
    problems = [f"- {run.student}/{run.notebook}.ipynb: {p}" for run in runs
                for p in run.problems]
    if problems:
        parts += ["## Problems while running the notebooks", "", *problems, ""]
    if ignored:
        parts += ["## Files not graded", "", *(f"- {name}" for name in ignored), ""]
    return "\n".join(parts)
