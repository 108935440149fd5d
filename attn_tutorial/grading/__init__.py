"""Grade exercise notebooks with the course's checkers: ``python -m attn_tutorial grade DIR``.

Two uses, told apart by what ``DIR`` holds:

- a **class**: ``DIR/<student>/<NN_topic>.ipynb`` (any subset of the exercise notebooks per
  student). Writes ``grades.csv``, ``grades.json`` and ``report.md`` into ``--out`` (default
  ``grades/``) and prints one progress line per notebook and a table per student;
- a **learner's own folder** (``exercises/``): exercise notebooks directly inside ``DIR``. Prints
  the same verdicts as one table, one line per exercise; writes files only with ``--out``.

How a verdict is reached, and why a student cannot forge it by editing the notebook:

1. The submission is read once and copied into a scratch folder; the submission is never opened
   for writing. A file that is not a notebook is reported, and its exercises are ``missing``.
2. A fresh process runs the copy's code cells in order in an IPython shell (what a Jupyter kernel
   runs), errors allowed: a cell that raises is recorded and the next cell runs. A cell is stopped
   after ``--timeout`` seconds, and all cells together after ``--notebook-timeout``.
3. Before any of the student's code runs, the process takes its own references to the checkers
   of that notebook (from ``attn_tutorial.checks.catalogue()``), and replaces the ``check_*``
   names that notebooks import with a stub that does nothing. So the checker calls in the
   student's notebook neither count nor cost time: each checker runs once, by the grader, on the
   object the student's code defined under the exercise's name. Whatever the notebook printed,
   and whether its checker cells were kept, rewritten or deleted, changes nothing.
4. Also before the student's code, the process saves the attributes of the grader's modules,
   classes and checkers and of the torch / einops functions they call; after the cells it puts
   back whatever was replaced (so ``Checker.run = lambda ...: passed`` or ``torch.allclose =
   lambda *a: True`` in a cell changes no verdict, and the notebook's problems name it), resets
   grad mode, default dtype and device to a fresh kernel's, then runs the checkers.
5. The process sends its verdicts back through a pipe and is ended (with anything it started).

What this does not stop: the student's code runs with the grader's permissions, in the same
process as the checkers. Code written to attack the grader more deeply (changing a function's
code object or a checker's case list in place, writing to the pipe, reading files) is not
prevented; read the notebook of a surprising grade, and run the grader in a container for real
isolation (the README says how). The process gets a memory limit (``RLIMIT_AS``, where the OS has
it), a file-size limit, a scratch working directory, no standard input, and one torch thread.

Speed: the processes are forked from a server that imported torch, IPython and the checkers
once, so a notebook does not pay the import of torch (several seconds) again.

Files: this one finds the submissions, starts and watches the processes and runs the command;
``worker.py`` is what runs inside a notebook's process; ``report.py`` writes and prints the
results.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from attn_tutorial.grading import report
from attn_tutorial.grading import worker

CELL_TIMEOUT = 120.0  # seconds per cell (--timeout)
NOTEBOOK_TIMEOUT = 600.0  # seconds for all the cells of one notebook (--notebook-timeout)
CHECK_TIMEOUT = 120.0  # seconds for one checker run by the grader (each learner call inside it
#                        is also stopped by the engine's own limit)
MEMORY_MB = 4096  # address space a notebook's process may add to what the grader uses (--memory)
GRACE = 20.0  # seconds the parent waits beyond the child's own limits before ending it
STATUSES = report.STATUSES
PRELOAD = ["attn_tutorial.grading.worker", "torch", "attn_tutorial.checks", "nbformat",
           "IPython.core.interactiveshell"]


@dataclass
class Grade:
    """One exercise of one student: a row of ``grades.csv`` (``lines``: the checker's case lines,
    in ``grades.json`` only)."""

    student: str
    notebook: str
    exercise: str
    tier: str
    status: str
    checks_passed: int = 0
    checks_total: int = 0
    mistake: str = ""
    detail: str = ""
    lines: list[str] = field(default_factory=list)


@dataclass
class NotebookRun:
    """One student's notebook: its grades, and what went wrong while running it."""

    student: str
    notebook: str
    grades: list[Grade]
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Limits:
    cell: float = CELL_TIMEOUT
    notebook: float = NOTEBOOK_TIMEOUT
    check: float = CHECK_TIMEOUT
    memory_mb: int = MEMORY_MB
    grace: float = GRACE


# ------------------------------------------------------------------ finding submissions
def exercise_rows() -> dict[str, list]:
    """The catalogue's exercises grouped by notebook, in course order."""
    from attn_tutorial.checks import catalogue

    by_notebook: dict[str, list] = {}
    for row in catalogue():
        by_notebook.setdefault(row.notebook, []).append(row)
    return by_notebook


def find(root: Path, notebooks) -> tuple[bool, dict[str, dict[str, Path]], list[str]]:
    """Whether ``root`` is one learner's folder, ``{student: {notebook: path}}``, and the files
    that are not exercise notebooks (relative to ``root``).

    A folder with exercise notebooks (``NN_topic.ipynb`` of the catalogue) directly inside it is
    one learner's: the student is named after the folder. Otherwise every sub-folder is a student.
    Hidden files and folders (``.ipynb_checkpoints``, ``.DS_Store``) are skipped silently.
    """
    names = {f"{nb}.ipynb": nb for nb in notebooks}

    def listing(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))

    entries = listing(root)
    learner = any(p.is_file() and p.name in names for p in entries)
    students: dict[str, dict[str, Path]] = {}
    ignored: list[str] = []
    if learner:
        students[root.resolve().name] = {}
        folders = [(root.resolve().name, entries)]
    else:
        ignored += [p.name for p in entries if not p.is_dir()]
        folders = [(p.name, listing(p)) for p in entries if p.is_dir()]
    for student, files in folders:
        handed_in = students.setdefault(student, {})
        for path in files:
            if path.is_file() and path.name in names:
                handed_in[names[path.name]] = path
            else:
                rel = path.relative_to(root).as_posix() + ("/" if path.is_dir() else "")
                ignored.append(rel)
    return learner, students, ignored


# ------------------------------------------------------------------ in the grader
def _context():
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _receive(conn, seconds: float):
    """The child's next message; "timeout" if none came in time, "died" if it ended first."""
    if not conn.poll(seconds):
        return "timeout"
    try:
        return conn.recv()
    except (EOFError, OSError):
        return "died"


def _end(proc) -> None:
    if proc.pid is not None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):
            pass
    if proc.is_alive():
        proc.kill()
    proc.join()


def grade_notebook(ctx, student: str, notebook: str, path: Path | None, rows: list,
                   limits: Limits) -> NotebookRun:
    """Grade one student's notebook (``path`` None: not handed in) in its own process."""
    start = time.monotonic()

    def every(status: str, detail: str, problems: list[str] = ()) -> NotebookRun:
        grades = [Grade(student, notebook, r.exercise, r.tier, status, detail=detail)
                  for r in rows]
        return NotebookRun(student, notebook, grades, list(problems), time.monotonic() - start)

    if path is None:
        return every("missing", f"no {notebook}.ipynb handed in")
    import nbformat

    data = path.read_bytes()  # the only access to the submission
    try:
        nbformat.reads(data.decode("utf-8"), as_version=4)
    except Exception as exc:  # noqa: BLE001 - not JSON, not a notebook, not UTF-8
        why = f"{path.name} is not a readable notebook ({type(exc).__name__})"
        return every("missing", why, [why])
    scratch = Path(tempfile.mkdtemp(prefix="attn-grade-"))
    try:
        copy = scratch / path.name
        copy.write_bytes(data)
        receiver, sender = ctx.Pipe(duplex=False)
        exercises = [(r.exercise, r.checker) for r in rows]
        proc = ctx.Process(target=worker.run_notebook,
                           args=(str(copy), exercises, limits, sender))
        proc.start()
        sender.close()
        try:
            ran = _receive(receiver, limits.notebook + limits.grace)
            graded = "timeout"
            if isinstance(ran, tuple):
                graded = _receive(receiver, limits.check * len(rows) + limits.grace)
        finally:
            _end(proc)
            receiver.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    crashed = next((m[1] for m in (ran, graded) if isinstance(m, tuple) and m[0] == "crashed"),
                   None)
    if crashed:
        why = f"the grader failed on this notebook ({crashed})"
        return every("error", why, [why])
    if ran == "timeout":
        why = f"the notebook ran past {limits.notebook:g} s and was stopped"
        return every("timeout", why, [why])
    if ran == "died" or graded == "died":
        why = f"the notebook's process ended by itself (exit code {proc.exitcode})"
        return every("error", why, (ran[1] if isinstance(ran, tuple) else []) + [why])
    problems = ran[1]
    if graded == "timeout":
        why = "the grader's checkers ran past their time and were stopped"
        return every("timeout", why, problems + [why])
    grades = []
    for row, found in zip(rows, graded[1]):
        if found["status"] == "missing" and problems:
            found["detail"] += f" (the notebook's first problem: {problems[0]})"
        grades.append(Grade(student, notebook, row.exercise, row.tier, **found))
    return NotebookRun(student, notebook, grades, problems, time.monotonic() - start)


def grade(students: dict[str, dict[str, Path]], limits: Limits, jobs: int = 1,
          say=print) -> list[NotebookRun]:
    """Grade every student's notebooks (``find``'s folders), ``jobs`` at a time. Every student
    gets every exercise of every notebook someone handed in; the runs come back in order
    (students by name, notebooks in course order), however the jobs finished."""
    by_notebook = exercise_rows()
    handed = {nb for notebooks in students.values() for nb in notebooks}
    notebooks = [nb for nb in by_notebook if nb in handed]
    tasks = [(student, nb) for student in students for nb in notebooks]
    ctx = _context()
    runs: dict[tuple[str, str], NotebookRun] = {}
    width = len(str(len(tasks)))
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(grade_notebook, ctx, s, nb, students[s].get(nb), by_notebook[nb],
                               limits): (s, nb) for s, nb in tasks}
        for done, future in enumerate(as_completed(futures), 1):
            run = runs[futures[future]] = future.result()
            say(f"[{done:>{width}}/{len(tasks)}] {report.progress(run)}", flush=True)
    return [runs[task] for task in tasks]


def main(submissions: str, out: str | None, jobs: int, timeout: float, notebook_timeout: float,
         memory_mb: int) -> int:
    """``python -m attn_tutorial grade``: exit 0 when graded, 2 on bad arguments (one line)."""
    root = Path(submissions)

    def refuse(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if not root.is_dir():
        return refuse(f"SUBMISSIONS {submissions!r} is not a folder")
    for name, value in (("--jobs", jobs), ("--timeout", timeout),
                        ("--notebook-timeout", notebook_timeout), ("--memory", memory_mb)):
        if not value > 0:
            return refuse(f"{name} {value}: must be a positive number")
    target = Path(out) if out else None
    for parent in (target, *(target.parents if target else ())):
        if parent is not None and parent.exists() and not parent.is_dir():
            return refuse(f"--out {out!r}: {parent} is a file, not a folder")
    if target is not None and target.resolve().is_relative_to(root.resolve()):
        return refuse(f"--out {out!r} is inside SUBMISSIONS {submissions!r}: the grades would "
                      "be graded as a student next time; write them elsewhere")
    learner, students, ignored = find(root, exercise_rows())
    if not any(students.values()):
        return refuse(f"SUBMISSIONS {submissions!r}: no exercise notebook (NN_topic.ipynb, as in "
                      "exercises/) in it or in its sub-folders")
    if not learner and target is None:
        target = Path("grades")
        if target.resolve().is_relative_to(root.resolve()):
            return refuse("the default --out grades/ is inside SUBMISSIONS: give --out")
    start = time.monotonic()
    runs = grade(students, Limits(timeout, notebook_timeout, CHECK_TIMEOUT, memory_mb), jobs)
    print(report.terminal(runs, learner, ignored))
    written = []
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        files = {"grades.csv": report.csv_text(runs),
                 "grades.json": report.json_text(runs, ignored),
                 "report.md": report.markdown(runs, ignored)}
        for name, text in files.items():
            (target / name).write_text(text, encoding="utf-8")
            written.append((target / name).as_posix())
    print(report.summary(runs, time.monotonic() - start, written))
    return 0
