"""`python -m attn_tutorial grade`: a class built from the exercise notebooks, graded by the
course's checkers, with verdicts the notebooks' printed output cannot change.

The class (one or two small notebooks per student, to keep the time down):

- alice: correct answers (the solution regions) in 00_einops and 01_eca, and an unrelated file;
  a cell after her checker call proves that the call did not run;
- bob: a catalogued wrong answer (max instead of mean pooling) in 00_einops;
- carol: 00_einops untouched (every exercise a stub);
- dave: the first exercise raises; a later cell asks for more memory than the limit allows;
- erin: stubs, but every checker cell rewritten to print a pass, with forged outputs;
- gina: a cell that sleeps far past the per-cell time limit, between correct answers;
- hugo: a 00_einops.ipynb that is not JSON;
- ivan: only an unrelated file and a misnamed copy of a notebook;
- mallory: stubs, and a cell that patches the checker engine in memory to pass everything.

Every student gets every exercise of every notebook someone handed in (00_einops and 01_eca).
Expected statuses and mistake names come from the students' answers as written here and from the
catalogue (``row.mistakes``), never from the grader's output.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from attn_tutorial import grading
from attn_tutorial.__main__ import main
from attn_tutorial.checks import catalogue
from attn_tutorial.course import BEGIN, END

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ("00_einops", "01_eca")
ROWS = {nb: [r for r in catalogue() if r.notebook == nb] for nb in NOTEBOOKS}
MAX_POOL = next(m for m in {r.exercise: r for r in ROWS["00_einops"]}["global_avg_pool"].mistakes
                if m.startswith("max instead of mean"))
CELL_TIMEOUT = 5  # seconds per cell: far above what any correct cell here takes
MARKER = "oops-the-first-exercise-raised"


def exercise(name: str) -> nbformat.NotebookNode:
    return nbformat.read(ROOT / "exercises" / f"{name}.ipynb", as_version=4)


def correct(name: str) -> nbformat.NotebookNode:
    """The exercise notebook with each stub replaced by the solution's region."""
    nb = exercise(name)
    solution = nbformat.read(ROOT / "solutions" / f"{name}.ipynb", as_version=4)
    for mine, theirs in zip(nb.cells, solution.cells, strict=True):
        if mine.cell_type == "code":
            mine.source = "\n".join(line for line in theirs.source.splitlines()
                                    if line.strip() not in (BEGIN, END))
    return nb


def replace(nb, starts: str, source: str) -> None:
    [cell] = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(starts)]
    cell.source = source


def insert_after(nb, starts: str, source: str) -> None:
    [index] = [i for i, c in enumerate(nb.cells) if c.source.startswith(starts)]
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))


def forged(nb) -> nbformat.NotebookNode:
    """Every checker call replaced by a print of a pass, and outputs saying the same."""
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.startswith("check_"):
            text = "✓ every case\nall checks passed\n"
            cell.source = f"print({text!r})"
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
            cell.execution_count = 1
    return nb


FORGE_IN_MEMORY = """\
import torch
from attn_tutorial.checks import Checker, CheckResult, ModuleChecker

def passes(self, learner, verbose=True):
    return CheckResult(self.title, passed=True, status="passed", checks_passed=3, checks_total=3)

Checker.run = passes
ModuleChecker.run = passes
torch.allclose = lambda *args, **kwargs: True
"""


NOTED_CALLS = """\
CALLS = []

def to_tokens(x, cls):
    CALLS.append(1)
    return pack([repeat(cls, "c -> b c", b=x.shape[0]), rearrange(x, "b c h w -> b (h w) c")],
                "b * c")[0]
"""


def build_class(root: Path) -> None:
    def put(student: str, name: str, nb) -> None:
        (root / student).mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, root / student / f"{name}.ipynb")

    alice = correct("00_einops")  # her answer counts its calls: her own checker call must not
    replace(alice, "def to_tokens", NOTED_CALLS)  # run (the grader's comes after her cells)
    insert_after(alice, "check_to_tokens", "assert not CALLS, 'the notebook ran its checker'")
    put("alice", "00_einops", alice)
    put("alice", "01_eca", correct("01_eca"))
    (root / "alice" / "notes.txt").write_text("my notes\n")
    (root / "alice" / ".ipynb_checkpoints").mkdir()  # hidden: skipped without a word
    nbformat.write(exercise("01_eca"), root / "alice" / ".ipynb_checkpoints" / "01_eca.ipynb")
    bob = correct("00_einops")
    replace(bob, "def global_avg_pool",
            "def global_avg_pool(x):\n    return reduce(x, 'b c h w -> b c', 'max')")
    put("bob", "00_einops", bob)
    put("carol", "00_einops", exercise("00_einops"))
    dave = correct("00_einops")
    replace(dave, "def to_tokens", f"def to_tokens(x, cls):\n    raise ValueError({MARKER!r})")
    # Beyond the --memory 1024 allowance, never touched (so harmless if no limit applied).
    insert_after(dave, "check_to_tokens", "big = torch.empty(3 << 30, dtype=torch.uint8)")
    put("dave", "00_einops", dave)
    put("erin", "00_einops", forged(exercise("00_einops")))
    gina = correct("00_einops")
    insert_after(gina, "check_to_tokens", "import time\ntime.sleep(600)")
    put("gina", "00_einops", gina)
    mallory = exercise("00_einops")  # stubs, and code that makes every checker say "passed"
    insert_after(mallory, "check_to_tokens", FORGE_IN_MEMORY)
    put("mallory", "00_einops", mallory)
    (root / "hugo").mkdir()
    (root / "hugo" / "00_einops.ipynb").write_text('{"cells": [ not json')
    (root / "ivan").mkdir()
    (root / "ivan" / "essay.md").write_text("text\n")
    nbformat.write(correct("00_einops"), root / "ivan" / "00_einops-Copy1.ipynb")
    (root / "README.txt").write_text("class of 2026\n")
    (root / ".DS_Store").write_bytes(b"\0\1")


def expected(student: str, notebook: str, exercise: str) -> tuple[str, str]:
    """(status, what the mistake or detail column must contain) for one CSV row."""
    if notebook == "01_eca" and student != "alice":
        return "missing", "01_eca.ipynb"
    if student == "hugo":
        return "missing", "not a readable notebook"
    if student == "ivan":
        return "missing", "00_einops.ipynb"
    if student in ("carol", "erin", "mallory"):
        return "not implemented", ""
    if student == "bob" and exercise == "global_avg_pool":
        return "failed", MAX_POOL
    if student == "dave" and exercise == "to_tokens":
        return "error", MARKER
    return "passed", ""


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                             p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class graded with --jobs 2, and three of its students again with --jobs 1."""
    base = tmp_path_factory.mktemp("grade")
    root = base / "submissions"
    build_class(root)
    before = snapshot(root)
    runs = {}
    for jobs, folder in ((2, root), (1, base / "three")):
        if jobs == 1:  # alice, bob and carol: passed, failed, not implemented and missing rows
            for student in ("alice", "bob", "carol"):
                shutil.copytree(root / student, folder / student)
        out = base / f"out{jobs}"
        args = ["grade", str(folder), "--out", str(out), "--jobs", str(jobs),
                "--timeout", str(CELL_TIMEOUT), "--memory", "1024"]
        printed = _run_main(args)
        runs[jobs] = (out, printed)
    return root, before, runs


def _run_main(args: list[str]) -> str:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main(args) == 0
    return buffer.getvalue()


def test_every_row_of_the_csv(graded):
    root, _, runs = graded
    out, _ = runs[2]
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["student", "notebook", "exercise", "tier", "status",
                             "checks_passed", "checks_total", "mistake", "detail"]
    students = ["alice", "bob", "carol", "dave", "erin", "gina", "hugo", "ivan", "mallory"]
    wanted = [(s, nb, r.exercise, r.tier) for s in students for nb in NOTEBOOKS
              for r in ROWS[nb]]
    assert [(r["student"], r["notebook"], r["exercise"], r["tier"]) for r in rows] == wanted
    for row in rows:
        status, text = expected(row["student"], row["notebook"], row["exercise"])
        where = f"{row['student']}/{row['notebook']}/{row['exercise']}: {row}"
        assert row["status"] == status, where
        passed, total = int(row["checks_passed"]), int(row["checks_total"])
        if status == "passed":
            assert passed == total > 0 and not row["mistake"], where
        if status == "failed":
            assert text in row["mistake"].split(" | ") and passed < total, where
        elif text:
            assert text in row["detail"], where
        if status in ("missing",):
            assert total == 0, where


def test_problems_are_reported_and_ignored_files_listed(graded):
    _, _, runs = graded
    out, printed = runs[2]
    data = json.loads((out / "grades.json").read_text(encoding="utf-8"))
    problems = {(n["student"], n["notebook"]): n["problems"] for n in data["notebooks"]}
    [stopped] = problems["gina", "00_einops"]
    assert "stopped after" in stopped and str(CELL_TIMEOUT) in stopped
    [memory] = problems["dave", "00_einops"]  # the 3 GiB cell, refused under --memory 1024
    if Path("/proc/self/statm").exists():
        assert "allocate" in memory, memory
    assert problems["alice", "00_einops"] == [] and problems["erin", "00_einops"] == []
    [put_back] = problems["mallory", "00_einops"]
    for name in ("Checker.run", "ModuleChecker.run", "torch.allclose"):
        assert name in put_back, put_back
    assert data["ignored"] == ["README.txt", "alice/notes.txt", "ivan/00_einops-Copy1.ipynb",
                               "ivan/essay.md"]
    for name in data["ignored"]:
        assert name in printed and name in (out / "report.md").read_text()
    # The per-case lines are kept in the JSON: a failed case names what was wrong.
    bob = next(g for g in data["grades"] if (g["student"], g["exercise"]) ==
               ("bob", "global_avg_pool"))
    assert bob["lines"] and bob["checks_total"] == len([ln for ln in bob["lines"]
                                                        if ln[:1] in "✓✗"])


def test_report_counts_and_common_mistakes(graded):
    _, _, runs = graded
    out, printed = runs[2]
    report = (out / "report.md").read_text(encoding="utf-8")
    head = "| student | 00_einops | 01_eca | passed |"
    assert head in report
    n0, n1 = len(ROWS["00_einops"]), len(ROWS["01_eca"])
    for line, student in ((f"| alice | {n0}/{n0} | {n1}/{n1} |", "alice"),
                          (f"| bob | {n0 - 1}/{n0} | 0/", "bob"), (f"| carol | 0/{n0} | 0/", "carol"),
                          (f"| gina | {n0}/{n0} | 0/", "gina"), (f"| hugo | 0/{n0} | 0/", "hugo")):
        assert line in report, student
    # global_avg_pool: alice, dave, gina passed; bob failed; carol, erin, mallory not implemented;
    # hugo, ivan missing.
    [row] = [ln for ln in report.splitlines() if ln.startswith("| 00_einops | global_avg_pool |")]
    counts = "| 3 | 1 | 3 | 0 | 2 | 0 |"  # passed, failed, not implemented, error, missing, timeout
    assert row == f"| 00_einops | global_avg_pool | build {counts} {MAX_POOL} (1) |"
    assert printed.splitlines()[-1].startswith("graded 9 student(s) x 2 notebook(s)")


def test_submissions_never_written_and_jobs_agree(graded):
    """One worker or two: the same rows and the same per-case lines for the same students."""
    root, before, runs = graded
    assert snapshot(root) == before

    def rows(jobs):
        out = runs[jobs][0]
        with open(out / "grades.csv", newline="", encoding="utf-8") as f:
            csv_rows = [r for r in csv.DictReader(f) if r["student"] in ("alice", "bob", "carol")]
        grades = json.loads((out / "grades.json").read_text(encoding="utf-8"))["grades"]
        return csv_rows, [g for g in grades if g["student"] in ("alice", "bob", "carol")]

    one, two = rows(1), rows(2)
    assert len(one[0]) == len(two[0]) > 0
    assert one == two


def test_a_notebook_that_swallows_the_time_limit_is_ended(tmp_path: Path):
    """A cell that catches the per-cell alarm runs on; the parent ends the whole process."""
    nb = correct("00_einops")
    insert_after(nb, "import torch",
                 "import time\nwhile True:\n    try:\n        time.sleep(5)\n"
                 "    except BaseException:\n        pass")
    path = tmp_path / "00_einops.ipynb"
    nbformat.write(nb, path)
    limits = grading.Limits(cell=1, notebook=2, grace=1)
    run = grading.grade_notebook(grading._context(), "zoe", "00_einops", path, ROWS["00_einops"],
                                 limits)
    assert [g.status for g in run.grades] == ["timeout"] * len(ROWS["00_einops"])
    assert run.seconds < 120  # ended at 2 + 1 s (plus, if first, the server's import of torch)
    assert "ran past 2 s" in run.grades[0].detail


def test_a_notebook_that_ends_its_process_is_reported(tmp_path: Path):
    nb = correct("00_einops")
    insert_after(nb, "check_to_tokens", "import os\nos._exit(3)")
    path = tmp_path / "00_einops.ipynb"
    nbformat.write(nb, path)
    run = grading.grade_notebook(grading._context(), "zoe", "00_einops", path, ROWS["00_einops"],
                                 grading.Limits(cell=10, notebook=30))
    assert [g.status for g in run.grades] == ["error"] * len(ROWS["00_einops"])
    assert "exit code 3" in run.grades[0].detail and "exit code 3" in run.problems[-1]


def test_a_learners_own_folder_prints_the_table_and_writes_nothing(tmp_path: Path, monkeypatch):
    folder = tmp_path / "exercises"
    folder.mkdir()
    nb = correct("00_einops")
    replace(nb, "def global_avg_pool",
            "def global_avg_pool(x):\n    return reduce(x, 'b c h w -> b c', 'max')")
    nbformat.write(nb, folder / "00_einops.ipynb")
    monkeypatch.chdir(tmp_path)
    printed = _run_main(["grade", "exercises"])
    lines = printed.splitlines()
    [gap] = [ln for ln in lines if ln.startswith("00_einops  global_avg_pool")]
    assert "failed" in gap and MAX_POOL[:60] in gap
    assert sum(" passed " in ln for ln in lines if ln.startswith("00_einops  ")) == \
        len(ROWS["00_einops"]) - 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exercises"]  # no grades/ written


@pytest.mark.parametrize("args, names", [
    (["grade", "no-such-folder"], "no-such-folder"),
    (["grade", "{root}"], "no exercise notebook"),  # amy/ is empty
    (["grade", "{root}", "--jobs", "0"], "--jobs"),
    (["grade", "{root}", "--timeout", "-1"], "--timeout"),
    (["grade", "{root}", "--out", "{file}/grades"], "--out"),
    (["grade", "{root}", "--out", "{root}/grades"], "--out"),
])
def test_bad_arguments_one_line_exit_2(tmp_path: Path, capsys, args, names):
    root = tmp_path / "class"
    (root / "amy").mkdir(parents=True)
    (tmp_path / "a_file").write_text("x")
    args = [a.format(root=root, file=tmp_path / "a_file") for a in args]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert len(captured.err.strip().splitlines()) == 1 and names in captured.err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a_file", "amy", "class"]
