"""Course tooling: re-execute notebooks in place, and generate exercises from solutions.

``python -m attn_tutorial execute PATH...`` runs each notebook top to bottom in a fresh kernel
(Restart & Run All) and saves it with counts 1..N and no timestamps, so a re-run changes a
notebook's file only where its outputs changed.

``python -m attn_tutorial exercises [--check] [--force]`` writes ``exercises/NN_*.ipynb`` from
``solutions/NN_*.ipynb``: every ``### BEGIN SOLUTION`` … ``### END SOLUTION`` region becomes
``raise NotImplementedError()`` at the region's indentation, outputs are cleared, and the
notebook's metadata records a fingerprint of what was generated. A later run leaves alone any
exercise whose code a learner has changed since (unless ``--force``), and ``--check`` only
reports whether ``exercises/`` is up to date.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = "raise NotImplementedError()"
META_KEY = "attn_tutorial"


# ----------------------------------------------------------------------------- execute
def execute_notebook(path: str | Path, timeout: int = 600) -> None:
    """Restart & Run All ``path`` in place; no timing metadata is written."""
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,
        allow_errors=False,
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    except Exception:
        # Keep what ran so the error output shows where it failed, then re-raise.
        nbformat.write(nb, path)
        raise
    nb.metadata.get("language_info", {}).pop("version", None)  # avoid churn across patch releases
    nbformat.write(nb, path)


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


def _fingerprint(nb: nbformat.NotebookNode) -> str:
    """Hash of the notebook's cell types and sources: what a learner edits."""
    h = hashlib.sha256()
    for cell in nb.cells:
        h.update(cell.cell_type.encode())
        h.update(b"\0")
        h.update(cell.source.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


def make_exercise(solution: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The exercise notebook for a solution notebook (a new object; the input is unchanged)."""
    nb = copy.deepcopy(solution)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.source = strip_solutions(cell.source)
            cell.outputs = []
            cell.execution_count = None
    nb.metadata.pop(META_KEY, None)
    nb.metadata[META_KEY] = {"generated_from": "solutions", "fingerprint": _fingerprint(nb)}
    return nb


def learner_edited(existing: nbformat.NotebookNode) -> bool:
    """True when the code or text of a generated exercise has changed since generation."""
    recorded = existing.metadata.get(META_KEY, {}).get("fingerprint")
    return recorded is None or recorded != _fingerprint(existing)


def sync_exercises(
    solutions_dir: Path | None = None,
    exercises_dir: Path | None = None,
    check: bool = False,
    force: bool = False,
) -> int:
    """Generate (or with ``check`` only compare) exercises. Returns a process exit code."""
    solutions_dir = Path(solutions_dir or ROOT / "solutions")
    exercises_dir = Path(exercises_dir or ROOT / "exercises")
    stale, kept, written = [], [], []
    for src in sorted(solutions_dir.glob("*.ipynb")):
        target = exercises_dir / src.name
        wanted = make_exercise(nbformat.read(src, as_version=4))
        wanted_text = nbformat.writes(wanted) + "\n"
        current_text = target.read_text() if target.exists() else None
        if current_text == wanted_text:
            continue
        if check:
            stale.append(target)
            continue
        if current_text is not None and not force:
            current = nbformat.reads(current_text, as_version=4)
            if learner_edited(current):
                kept.append(target)
                continue
        exercises_dir.mkdir(parents=True, exist_ok=True)
        target.write_text(wanted_text)
        written.append(target)
    orphans = sorted(
        p for p in exercises_dir.glob("*.ipynb") if not (solutions_dir / p.name).exists()
    )
    rel = lambda p: os.path.relpath(p)  # noqa: E731
    for p in written:
        print(f"wrote {rel(p)}")
    for p in kept:
        print(f"left alone {rel(p)}: edited since it was generated (use --force to overwrite)")
    for p in orphans:
        print(f"warning: {rel(p)} has no solution notebook")
    if check:
        for p in stale:
            print(f"stale: {rel(p)} (run: python -m attn_tutorial exercises)")
        if not stale:
            print("exercises are up to date")
        return 1 if stale else 0
    if not written and not kept:
        print("exercises are up to date")
    return 0


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
