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
4. The process sends its verdicts back through a pipe and is ended (with anything it started).

What this does not stop: the student's code runs with the grader's permissions, in the same
process as the checkers. Code written to attack the grader (patching the checker engine in
memory, writing to the pipe, reading files) is not prevented; read the notebook of a surprising
grade, and run the grader in a container for real isolation (the README says how). The process
gets a memory limit (``RLIMIT_AS``, where the OS has it), a file-size limit, a scratch working
directory, no standard input, and one torch thread.

Speed: the processes are forked from a server that imported torch, IPython and the checkers
once, so a notebook does not pay the import of torch (several seconds) again.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from attn_tutorial import grade_report

CELL_TIMEOUT = 120.0  # seconds per cell (--timeout)
NOTEBOOK_TIMEOUT = 600.0  # seconds for all the cells of one notebook (--notebook-timeout)
CHECK_TIMEOUT = 120.0  # seconds for one checker run by the grader (each learner call inside it
#                        is also stopped by the engine's own limit)
MEMORY_MB = 4096  # address space a notebook's process may add to what the grader uses (--memory)
FILE_MB = 256  # largest file the student's code may write
GRACE = 20.0  # seconds the parent waits beyond the child's own limits before ending it
STATUSES = ("passed", "failed", "not implemented", "error", "missing", "timeout")
PRELOAD = ["attn_tutorial.grading", "torch", "attn_tutorial.checks", "nbformat",
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
    """
    names = {f"{nb}.ipynb": nb for nb in notebooks}
    entries = sorted(root.iterdir())
    learner = any(p.is_file() and p.name in names for p in entries)
    students: dict[str, dict[str, Path]] = {}
    ignored: list[str] = []
    if learner:
        students[root.resolve().name] = {}
        folders = [(root.resolve().name, entries)]
    else:
        ignored += [p.name for p in entries if not p.is_dir()]
        folders = [(p.name, sorted(p.iterdir())) for p in entries if p.is_dir()]
    for student, files in folders:
        handed_in = students.setdefault(student, {})
        for path in files:
            if path.is_file() and path.name in names:
                handed_in[names[path.name]] = path
            else:
                rel = path.relative_to(root).as_posix() + ("/" if path.is_dir() else "")
                ignored.append(rel)
    return learner, students, ignored


# ------------------------------------------------------------ inside a notebook's process
class _TimeUp(BaseException):
    """Raised in the student's code when a cell's time is up (not an Exception, so that
    ``except Exception`` in the student's code does not swallow it)."""


def _alarm(seconds: float) -> None:
    """Raise ``_TimeUp`` in this (main) thread after ``seconds``; where the OS has no interval
    timer (Windows) only the parent's limit for the whole notebook applies."""
    if not hasattr(signal, "setitimer"):
        return

    def on_alarm(signum, frame):
        raise _TimeUp()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _disarm() -> None:
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)


def _limit_resources(memory_mb: int) -> None:
    """Cap the address space and file sizes, no core files (where the OS has ``resource``)."""
    try:
        import resource
    except ImportError:  # Windows
        return
    limits = [(getattr(resource, "RLIMIT_FSIZE", None), FILE_MB << 20),
              (getattr(resource, "RLIMIT_CORE", None), 0)]
    try:  # Linux: what the process maps now, plus the allowance
        used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limits.append((getattr(resource, "RLIMIT_AS", None), used + (memory_mb << 20)))
    except (OSError, ValueError):
        pass
    for which, value in limits:
        if which is None:
            continue
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, hard))
        except (ValueError, OSError):
            pass


def _describe(error: BaseException) -> str:
    """``Type: first line of the message (cell line N)``."""
    message = str(error).strip().splitlines()
    text = type(error).__name__ + (f": {message[0][:200]}" if message else "")
    line = None
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith("<ipython-input"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return text + (f" (line {line} of the cell)" if line else "")


def _neutralise_checker_calls() -> None:
    """Replace the public ``check_*`` names with a stub: the grader runs each checker itself."""
    from attn_tutorial import checks
    from attn_tutorial.checks import CHECKERS

    def graded_by_the_grader(*args, **kwargs):
        print("(this checker call is not run when grading: the grader runs the checker itself)")

    for module in (checks, *checks._LESSONS):
        for name in CHECKERS:
            if hasattr(module, name):
                setattr(module, name, graded_by_the_grader)


# What the student's code could change to sway the checkers: the grader's own modules and classes
# (and the trusted checkers), and the torch/einops functions the checkers and references call.
_LIBRARIES = ("torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.special",
              "torch.fft", "einops", "math")


def _pristine(checkers) -> list[tuple[object, dict, bool]]:
    """(object, a copy of its attributes, whether it is the grader's own) for every module, class
    and checker that ``_put_back`` restores; taken before any student code runs."""
    import torch

    ours = [m for name, m in sorted(sys.modules.items())
            if m is not None and (name == "attn_tutorial" or name.startswith("attn_tutorial."))]
    libraries = [sys.modules[name] for name in _LIBRARIES if name in sys.modules]
    classes = {torch.Tensor} | {
        value for module in (*ours, torch.nn) for value in vars(module).values()
        if isinstance(value, type) and (value.__module__ or "").startswith(("attn_tutorial",
                                                                            "torch.nn"))}
    saved = [(m, dict(vars(m)), True) for m in ours]
    saved += [(m, dict(vars(m)), False) for m in libraries]
    saved += [(c, dict(vars(c)), c.__module__.startswith("attn_tutorial"))
              for c in sorted(classes, key=lambda c: (c.__module__, c.__qualname__))]
    saved += [(c, dict(vars(c)), True) for c in checkers]
    return saved


def _put_back(saved) -> list[str]:
    """Restore what ``_pristine`` saved; name what the student's code had replaced (torch's own
    lazy rebinding of a few names is restored silently). Names added to a module stay (an import
    adds them); names added to a class or a checker are removed (they could shadow a method)."""
    import types

    changed = []
    for obj, before, ours in saved:
        is_module = isinstance(obj, types.ModuleType)
        label = getattr(obj, "__name__", None) or getattr(obj, "title", type(obj).__name__)
        now = dict(vars(obj))
        for name, value in now.items():
            old = before.get(name, _MISSING)
            if old is value or (old is _MISSING and (is_module or name.startswith("__"))):
                continue
            try:
                if old is _MISSING:
                    delattr(obj, name)
                else:
                    setattr(obj, name, old)
            except (AttributeError, TypeError):
                continue
            from_torch = isinstance(value, types.ModuleType) or str(
                getattr(value, "__module__", "") or "").startswith("torch")
            if ours or not from_torch:
                changed.append(f"{label}.{name}")
        for name in before.keys() - now.keys():
            setattr(obj, name, before[name])
            changed.append(f"{label}.{name}")
    return changed


_MISSING = object()


def _fresh_state(scratch: str) -> None:
    """The global state a fresh kernel has, for the checkers (the engine restores it after each
    of the student's calls, from what it finds when it starts)."""
    import torch

    os.chdir(scratch)
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)
    if hasattr(torch, "set_default_device"):
        torch.set_default_device(None)
    torch.set_num_threads(1)


def _run_cells(shell, nb, limits: Limits) -> list[str]:
    """Run every code cell, errors allowed; what went wrong, one line each."""
    problems = []
    deadline = time.monotonic() + limits.notebook
    for number, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            problems.append(f"cell {number} and later not run: the notebook's "
                            f"{limits.notebook:g} s were used up")
            break
        error: BaseException | None
        try:
            _alarm(min(limits.cell, left))
            result = shell.run_cell(cell.source, store_history=False)
            error = result.error_before_exec or result.error_in_exec
        except _TimeUp as exc:  # outside the student's code, where IPython did not catch it
            error = exc
        finally:
            _disarm()
        if isinstance(error, _TimeUp):
            problems.append(f"cell {number} stopped after {min(limits.cell, left):g} s")
        elif error is not None:
            problems.append(f"cell {number} raised {_describe(error)}")
    return problems


def _check(namespace: dict, exercise: str, checker, limits: Limits) -> dict:
    """The grader's own checker run on the student's object: a Grade's fields."""
    if exercise not in namespace:
        return {"status": "missing", "detail": f"no {exercise} defined"}
    try:
        _alarm(limits.check)
        result = checker.run(namespace[exercise], verbose=False)
    except _TimeUp:
        return {"status": "timeout", "detail": f"the checker ran past {limits.check:g} s"}
    except BaseException as exc:  # noqa: BLE001 - whatever the student's object did
        return {"status": "error", "detail": f"the checker stopped: {_describe(exc)}"}
    finally:
        _disarm()
    failed = [line.lstrip("✗ ") for line in result.lines if line.startswith("✗")]
    detail = result.error if result.status in ("error", "timeout") else ""
    if result.status == "failed" and not result.diagnoses and failed:
        detail = failed[0]
    return {"status": result.status, "checks_passed": result.checks_passed,
            "checks_total": result.checks_total, "mistake": "; ".join(result.diagnoses),
            "detail": " ".join(detail.split()), "lines": list(result.lines)}


def _child(copy: str, exercises: list[tuple[str, str]], limits: Limits, conn) -> None:
    """A notebook's process: run the copy's cells, then the grader's checkers; report twice."""
    if hasattr(os, "setsid"):
        os.setsid()  # its own process group: the parent ends it with everything it started
    os.chdir(os.path.dirname(copy))
    # No input; what the notebook prints is never read, so it goes nowhere.
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    if hasattr(signal, "SIGXFSZ"):  # a file past the size limit: an error in the cell, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    os.environ["MPLBACKEND"] = "Agg"
    try:
        _grade_here(copy, exercises, limits, conn)
    except BaseException as exc:  # noqa: BLE001 - a fault of the grader's, not the student's
        conn.send(("crashed", f"{type(exc).__name__}: {exc}"[:300]))
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)  # skip the student's atexit handlers and lingering threads


def _grade_here(copy: str, exercises: list[tuple[str, str]], limits: Limits, conn) -> None:
    import nbformat
    import torch
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from attn_tutorial.checks import CHECKERS

    torch.set_num_threads(1)
    trusted = {checker: CHECKERS[checker] for _, checker in exercises}
    _neutralise_checker_calls()
    saved = _pristine(trusted.values())
    _limit_resources(limits.memory_mb)
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    problems = _run_cells(shell, nbformat.read(copy, as_version=4), limits)
    changed = _put_back(saved)
    if changed:
        problems.append("the notebook replaced functions the checkers use (put back before "
                        f"grading): {', '.join(changed[:8])}" + (" ..." if changed[8:] else ""))
    _fresh_state(os.path.dirname(copy))
    conn.send(("ran", problems))
    conn.send(("graded", [_check(shell.user_ns, exercise, trusted[checker], limits)
                          for exercise, checker in exercises]))


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
        proc = ctx.Process(target=_child, args=(str(copy), [(r.exercise, r.checker) for r in rows],
                                                limits, sender))
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
            say(f"[{done:>{width}}/{len(tasks)}] {grade_report.progress(run)}", flush=True)
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
    if not learner and target is None:
        target = Path("grades")
        if target.resolve().is_relative_to(root.resolve()):
            return refuse("the default --out grades/ is inside SUBMISSIONS: give --out")
    start = time.monotonic()
    runs = grade(students, Limits(timeout, notebook_timeout, CHECK_TIMEOUT, memory_mb), jobs)
    print(grade_report.terminal(runs, learner, ignored))
    written = []
    if target is not None:
        target.mkdir(parents=True, exist_ok=True)
        files = {"grades.csv": grade_report.csv_text(runs),
                 "grades.json": grade_report.json_text(runs, ignored),
                 "report.md": grade_report.markdown(runs, ignored)}
        for name, text in files.items():
            (target / name).write_text(text, encoding="utf-8")
            written.append((target / name).as_posix())
    print(grade_report.summary(runs, time.monotonic() - start, written))
    return 0
