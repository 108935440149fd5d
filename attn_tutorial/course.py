"""Course tooling: re-execute notebooks in place, and generate exercises from solutions.
(Grading learners' submissions, ``python -m attn_tutorial grade``, is in ``grading/``.)

``python -m attn_tutorial execute PATH...`` runs each notebook top to bottom in a fresh kernel
(Restart & Run All) and saves it with counts 1..N and no timestamps, so a re-run changes a
notebook's file only where its outputs changed.

``python -m attn_tutorial exercises [--check] [--force]`` writes ``exercises/NN_*.ipynb`` from
``solutions/NN_*.ipynb``: every ``### BEGIN SOLUTION`` … ``### END SOLUTION`` region becomes
``raise NotImplementedError()`` at the region's indentation, outputs are cleared, and the
notebook's metadata records a fingerprint of what was generated. A later run leaves alone any
exercise whose code a learner has changed since (unless ``--force``), and ``--check`` only
reports whether ``exercises/`` is up to date: it compares cell sources, so opening, running or
saving an exercise in JupyterLab never makes it stale.
"""

from __future__ import annotations

import copy
import hashlib
import os
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError()"
META_KEY = "attn_tutorial"


# ------------------------------------------------------------------ notebook metadata
# What JupyterLab writes into a notebook it opens with the course's kernel (kernelspec from the
# server's kernelspec list, language_info from the kernel's info reply). Notebooks written by the
# course carry exactly this, so opening and saving one in the lab changes nothing in it
# (tests/test_exercises.py proves it with a real Jupyter server).
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def language_info() -> dict:
    from ipykernel.ipkernel import IPythonKernel

    return dict(IPythonKernel.language_info)


def _lab_metadata(nb: nbformat.NotebookNode) -> None:
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = language_info()


# ----------------------------------------------------------------------------- execute
def execute_notebook(path: str | Path, timeout: int = 600) -> float:
    """Restart & Run All ``path`` in place; no timing metadata is written. Returns the seconds
    the run took."""
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    _lab_metadata(nb)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except Exception:
        # Keep what ran so the error output shows where it failed, then re-raise.
        nbformat.write(nb, path)
        raise
    took = time.perf_counter() - start
    _lab_metadata(nb)  # the kernel's reply may differ in detail; write what the lab writes
    nbformat.write(nb, path)
    return took


def unreadable(path: str | Path) -> str:
    """Why ``path`` cannot be executed as a notebook (one line naming it), or ""."""
    path = Path(path)
    if not path.exists():
        return f"{path}: no such file"
    if not path.is_file():
        return f"{path}: not a file"
    notebook, why = _read(path)
    return "" if notebook is not None else f"{path}: not a readable notebook ({why})"


def execute_command(paths: list[str], timeout: int = 600, show_time: bool = False) -> int:
    """``python -m attn_tutorial execute``: every path checked first, so that a missing or
    corrupt one (exit 2, one line naming it) leaves every notebook unchanged."""
    if timeout <= 0:
        print(f"error: --timeout {timeout}: must be a positive number of seconds",
              file=sys.stderr)
        return 2
    for path in paths:
        why = unreadable(path)
        if why:
            print(f"error: {why}; nothing was executed", file=sys.stderr)
            return 2
    times = []
    for path in paths:
        print(f"executing {path}", flush=True)
        took = execute_notebook(path, timeout=timeout)
        times.append((path, took))
        if show_time:
            print(f"  {took:.1f} s", flush=True)
    if show_time and len(times) > 1:
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        print(f"wall time per notebook (load average {load}):")
        for path, took in sorted(times, key=lambda t: -t[1]):
            print(f"  {took:7.1f} s  {path}")
    return 0


# --------------------------------------------------------------------------- exercises
def strip_solutions(source: str) -> str:
    """Replace every solution region of a cell's source with a stub at the same indentation."""
    out: list[str] = []
    inside = False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN!r}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.append(indent + STUB)
        elif stripped == END:
            if not inside:
                raise ValueError(f"{END!r} without {BEGIN!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN!r} without {END!r}")
    return "\n".join(out)


def sources(nb: nbformat.NotebookNode) -> list[tuple[str, str]]:
    """What a learner edits and what ``--check`` compares: each cell's type and source."""
    return [(cell.cell_type, cell.source) for cell in nb.cells]


def _fingerprint(nb: nbformat.NotebookNode) -> str:
    """Hash of the notebook's cell types and sources."""
    h = hashlib.sha256()
    for cell_type, source in sources(nb):
        h.update(cell_type.encode())
        h.update(b"\0")
        h.update(source.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


def _banner(name: str) -> str:
    return (f"*This is the exercise notebook `exercises/{name}`: your work goes here (the course "
            f"never overwrites it once you edit it). The lesson is `notebooks/{name}`, the worked "
            f"answers `solutions/{name}`.*")


def make_exercise(solution: nbformat.NotebookNode, name: str = "") -> nbformat.NotebookNode:
    """The exercise notebook for a solution notebook (a new object; the input is unchanged).

    Solution regions become stubs, outputs are cleared, the first markdown cell says (under its
    heading) that this is the exercise notebook, so that the lab tab, which shows only the file
    name, shared with the lesson, is told apart at a glance; the metadata is what JupyterLab
    writes.
    """
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    if name and nb.cells and nb.cells[0].cell_type == "markdown":
        head, sep, rest = nb.cells[0].source.partition("\n")
        nb.cells[0].source = head + "\n\n" + _banner(name) + (sep + rest if rest else "")
    nb.metadata.pop(META_KEY, None)
    _lab_metadata(nb)
    nb.metadata[META_KEY] = {"generated_from": f"solutions/{name}" if name else "solutions",
                             "fingerprint": _fingerprint(nb)}
    return nb


def learner_edited(existing: nbformat.NotebookNode) -> bool:
    """True when the code or text of a generated exercise has changed since generation."""
    recorded = existing.metadata.get(META_KEY, {}).get("fingerprint")
    return recorded is None or recorded != _fingerprint(existing)


def _has_run(nb: nbformat.NotebookNode) -> bool:
    return any(c.cell_type == "code" and (c.outputs or c.execution_count) for c in nb.cells)


def _read(path: Path) -> tuple[nbformat.NotebookNode | None, str]:
    """A notebook, or None and why it cannot be read (one line)."""
    try:
        return nbformat.read(path, as_version=4), ""
    except Exception as exc:  # noqa: BLE001 - JSON errors, validation errors, bad encodings
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


def sync_exercises(
    solutions_dir: Path | None = None,
    exercises_dir: Path | None = None,
    check: bool = False,
    force: bool = False,
) -> int:
    """Generate (or with ``check`` only compare) exercises. Returns a process exit code.

    An exercise is *up to date* when its cell sources are the generated ones (metadata and
    outputs, which the lab and the learner change, do not count). One whose sources differ is
    *edited by you* when they also differ from what was generated into it (its fingerprint):
    it is left alone and does not count as stale. Otherwise it is *stale*: ``--check`` fails,
    generation rewrites it. A notebook that cannot be read is named and skipped (exit 1; with
    ``--force`` an unreadable exercise is regenerated); a missing solutions folder, or an
    exercises folder that is (or lies under) a file, is an error (exit 2, nothing written).
    """
    solutions_dir = Path(solutions_dir or ROOT / "solutions")
    exercises_dir = Path(exercises_dir or ROOT / "exercises")
    rel = lambda p: os.path.relpath(p)  # noqa: E731
    found = sorted(solutions_dir.glob("*.ipynb")) if solutions_dir.is_dir() else []
    if not found:
        what = "no folder" if not solutions_dir.is_dir() else "no *.ipynb in"
        print(f"error: {what} {rel(solutions_dir)}: the exercises are generated from the "
              "solution notebooks there")
        return 2
    blocked = next((p for p in (exercises_dir, *exercises_dir.parents)
                    if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        print(f"error: --exercises {rel(exercises_dir)}: {rel(blocked)} is a file, not a folder; "
              "nothing was written")
        return 2
    stale, edited, written, broken = [], [], [], []
    for src in found:
        target = exercises_dir / src.name
        solution, why = _read(src)
        if solution is None:
            broken.append(f"{rel(src)} cannot be read ({why}): skipped")
            continue
        try:
            wanted = make_exercise(solution, src.name)
        except ValueError as exc:
            broken.append(f"{rel(src)}: {exc}: skipped")
            continue
        current = None
        if target.exists():
            current, why = _read(target)
            if current is None and not force:
                broken.append(f"{rel(target)} cannot be read ({why}): left alone "
                              "(fix it, delete it, or use --force to regenerate it)")
                continue
        wanted_text = nbformat.writes(wanted) + "\n"
        if current is not None and not force:
            if sources(current) == sources(wanted):
                # Up to date. Refresh only a clean copy whose metadata is behind (never a run one).
                if not check and not _has_run(current) and target.read_text() != wanted_text:
                    target.write_text(wanted_text)
                    written.append(target)
                continue
            if learner_edited(current):
                edited.append(target)
                continue
        if check:
            stale.append(target)
            continue
        exercises_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(wanted_text)
        written.append(target)
    orphans = sorted(
        p for p in exercises_dir.glob("*.ipynb") if not (solutions_dir / p.name).exists()
    )
    for p in written:
        print(f"wrote {rel(p)}")
    for p in edited:
        print(f"{rel(p)}: edited by you, left alone (--force overwrites it with a fresh copy)")
    for p in orphans:
        print(f"warning: {rel(p)} has no solution notebook")
    for line in broken:
        print(f"error: {line}")
    for p in stale:
        print(f"stale: {rel(p)} (run: python -m attn_tutorial exercises)")
    if not (written or edited or broken or stale):
        print("exercises are up to date")
    return 1 if stale or broken else 0


# ------------------------------------------------------------------- lesson skeleton
# The ten sections every mechanism lesson (01–07) carries, as level-2 markdown headings in this
# order (design §4). tests/test_notebooks.py checks each lesson against this list.
LESSON_SECTIONS = (
    "## 1. The idea",
    "## 2. The equation",
    "## 3. Predict the shapes",
    "## 4. Step by step with einops",
    "## 5. The authors' way",
    "## 6. The module",
    "## 7. Look at it",
    "## 8. Cost",
    "## 9. Paper vs code",
    "## 10. Exercises, summary, references",
)
MECHANISM_LESSONS = ("01", "02", "03", "04", "05", "06", "07")
