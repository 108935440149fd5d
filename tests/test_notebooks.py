"""Notebook hygiene: what strict nbval cannot see by itself.

nbval silently skips a code cell that was never executed, so a notebook committed half-run would
pass unnoticed; these tests make sure every checked notebook was saved after a full Restart & Run
All, carries no unexpected error, and (for the mechanism lessons) follows the lesson skeleton.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from attn_tutorial.course import LESSON_SECTIONS, MECHANISM_LESSONS, ROOT

CHECKED = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))
IDS = [str(p.relative_to(ROOT)) for p in CHECKED]


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]


def test_there_are_notebooks_to_check():
    assert (ROOT / "notebooks" / "00_einops.ipynb") in CHECKED
    assert (ROOT / "solutions" / "00_einops.ipynb") in CHECKED


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_executed_in_order(path: Path):
    nb = nbformat.read(path, as_version=4)
    counts = [c.execution_count for c in code_cells(nb)]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..N; "
        "re-run with `python -m attn_tutorial execute`"
    )


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_errors_only_where_tagged(path: Path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(code_cells(nb), 1):
        tagged = "raises-exception" in cell.metadata.get("tags", [])
        has_error = any(o.output_type == "error" for o in cell.outputs)
        assert has_error == tagged, (
            f"{path.name} cell [{i}]: "
            + ("error output without the raises-exception tag" if has_error
               else "tagged raises-exception but raised nothing")
        )


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_kernelspec_and_no_timestamps(path: Path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in nb.cells:
        assert "execution" not in cell.metadata, f"{path.name}: timing metadata in a cell"


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_first_cell_sets_up(path: Path):
    first = code_cells(nbformat.read(path, as_version=4))[0].source
    assert "manual_seed" in first and "set_printoptions" in first, (
        f"{path.name}: the first code cell imports, seeds and sets print options"
    )


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_no_svg_and_ignore_only_where_needed(path: Path):
    nb = nbformat.read(path, as_version=4)
    for cell in code_cells(nb):
        for out in cell.outputs:
            assert "image/svg+xml" not in out.get("data", {}), f"{path.name}: SVG output"


LESSONS = [p for p in CHECKED if p.parent.name == "notebooks" and p.name[:2] in MECHANISM_LESSONS]


@pytest.mark.parametrize("path", LESSONS, ids=[p.name for p in LESSONS])
def test_mechanism_lesson_has_the_ten_sections(path: Path):
    nb = nbformat.read(path, as_version=4)
    headings = [
        c.source.splitlines()[0].strip()
        for c in nb.cells
        if c.cell_type == "markdown" and c.source.strip().startswith("## ")
    ]
    found = [h for h in headings if h in LESSON_SECTIONS]
    assert found == list(LESSON_SECTIONS), (
        f"{path.name}: sections {found}, expected {list(LESSON_SECTIONS)} in order"
    )


def test_every_notebook_has_its_pair():
    lessons = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    solutions = {p.name for p in (ROOT / "solutions").glob("*.ipynb")}
    assert solutions <= lessons, f"solutions without a lesson: {sorted(solutions - lessons)}"


MACHINE_PATH = re.compile(r"(/work/|/home/|/Users/|/tmp/|site-packages|\.venv/|[A-Z]:\\\\)")


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_no_machine_paths_in_outputs(path: Path):
    """Committed outputs never show where the notebook was executed (tracebacks through the
    checkout or the virtual environment): expected errors are shown as their message."""
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(code_cells(nb), 1):
        for output in cell.outputs:
            text = json.dumps(output)
            found = MACHINE_PATH.search(text)
            assert not found, (f"{path.name} cell [{i}]: machine path in an output: "
                               f"...{text[max(0, found.start() - 60):found.end() + 40]}...")
