"""Exercise generation: exercises/ is generated from solutions/ and kept in sync; a learner's edits
survive regeneration; every generated exercise runs top to bottom with each checker reporting
"not implemented yet"."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attn_tutorial import course
from attn_tutorial.checks import NOT_IMPLEMENTED
from attn_tutorial.course import ROOT

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))


def test_strip_solutions_keeps_indentation_and_code_around():
    src = "def f(x):\n    y = 1\n    ### BEGIN SOLUTION\n    return x + y\n    ### END SOLUTION\nprint(2)"
    assert course.strip_solutions(src) == (
        "def f(x):\n    y = 1\n    raise NotImplementedError()\nprint(2)"
    )


@pytest.mark.parametrize(
    "bad",
    ["### BEGIN SOLUTION\nx", "x\n### END SOLUTION", "### BEGIN SOLUTION\n### BEGIN SOLUTION\n"],
)
def test_unbalanced_markers_are_refused(bad):
    with pytest.raises(ValueError):
        course.strip_solutions(bad)


def test_exercises_are_in_sync():
    result = subprocess.run(
        [sys.executable, "-m", "attn_tutorial", "exercises", "--check"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _toy_solution(tmp: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# toy"),
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION"),
    ]
    (tmp / "solutions").mkdir()
    path = tmp / "solutions" / "99_toy.ipynb"
    nbformat.write(nb, path)
    return path


def test_generation_check_and_learner_edits(tmp_path: Path, capsys):
    sol = _toy_solution(tmp_path)
    sol_dir, ex_dir = sol.parent, tmp_path / "exercises"
    ex = ex_dir / sol.name
    assert course.sync_exercises(sol_dir, ex_dir, check=True) == 1  # missing → stale
    assert course.sync_exercises(sol_dir, ex_dir) == 0
    generated = nbformat.read(ex, as_version=4)
    assert "raise NotImplementedError()" in generated.cells[1].source
    assert "2 * x" not in generated.cells[1].source
    assert course.sync_exercises(sol_dir, ex_dir, check=True) == 0

    # A learner solves the exercise; then the solution notebook changes upstream.
    generated.cells[1].source = "def f(x):\n    return x + x"
    nbformat.write(generated, ex)
    nb = nbformat.read(sol, as_version=4)
    nb.cells[0].source = "# toy, revised"
    nbformat.write(nb, sol)
    capsys.readouterr()
    assert course.sync_exercises(sol_dir, ex_dir) == 0
    assert "left alone" in capsys.readouterr().out
    assert "x + x" in nbformat.read(ex, as_version=4).cells[1].source  # the learner's work survives
    assert course.sync_exercises(sol_dir, ex_dir, check=True) == 1
    assert course.sync_exercises(sol_dir, ex_dir, force=True) == 0
    assert "# toy, revised" == nbformat.read(ex, as_version=4).cells[0].source
    assert course.sync_exercises(sol_dir, ex_dir, check=True) == 0


def test_executed_but_unedited_exercise_is_regenerated(tmp_path: Path):
    sol = _toy_solution(tmp_path)
    ex_dir = tmp_path / "exercises"
    course.sync_exercises(sol.parent, ex_dir)
    ex = ex_dir / sol.name
    nb = nbformat.read(ex, as_version=4)
    nb.cells[1].execution_count = 1  # the learner only ran it
    nbformat.write(nb, ex)
    assert not course.learner_edited(nbformat.read(ex, as_version=4))


@pytest.mark.parametrize("solution", SOLUTIONS, ids=[p.name for p in SOLUTIONS])
def test_exercise_runs_and_every_checker_says_not_implemented(solution: Path, tmp_path: Path):
    from nbclient import NotebookClient

    exercise = ROOT / "exercises" / solution.name
    nb = nbformat.read(exercise, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(exercise.parent)}}).execute()
    check_cells = [c for c in nb.cells if c.cell_type == "code" and "check_" in c.source
                   and "import" not in c.source]
    assert check_cells, f"{solution.name}: no checker calls found"
    for cell in check_cells:
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert NOT_IMPLEMENTED in text, f"{solution.name}: checker cell said {text!r}"
        assert "✓" not in text
