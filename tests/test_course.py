"""`python -m attn_tutorial execute` runs a notebook top to bottom and saves it without churn."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellExecutionError

from attn_tutorial import course
from attn_tutorial.__main__ import main


# The command's own entry point, called in this process: a subprocess would spend ~2.5 s
# importing nbformat and nbclient each time, for the same code path.
def test_execute_in_place_counts_and_no_churn(tmp_path: Path, capsys):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("x = 6 * 7"),
        nbformat.v4.new_markdown_cell("text"),
        nbformat.v4.new_code_cell("print(x)"),
    ]
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    args = ["execute", "--time", str(path)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^  \d+\.\d s$", printed, re.M), printed  # --time: seconds taken
    first = path.read_text()
    out = nbformat.reads(first, as_version=4)
    code = [c for c in out.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == [1, 2]
    assert code[1].outputs[0]["text"] == "42\n"
    assert all("execution" not in c.metadata for c in out.cells)
    assert out.metadata.kernelspec == course.KERNELSPEC  # what JupyterLab writes
    assert out.metadata.language_info["version"] == course.language_info()["version"]
    assert main(args) == 0
    assert path.read_text() == first  # a re-run with the same outputs changes nothing


def test_execute_reports_a_failing_notebook(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1 / 0")]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        main(["execute", str(path)])  # uncaught, so `python -m attn_tutorial` exits non-zero


# Command-line errors: one line naming the file or argument, exit status 2, nothing changed.
def test_execute_refuses_a_missing_or_corrupt_notebook_before_running_any(tmp_path: Path, capsys):
    good = tmp_path / "good.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print(1)")]
    nbformat.write(nb, good)
    corrupt = tmp_path / "corrupt.ipynb"
    corrupt.write_text('{"cells": [ not json')
    (tmp_path / "folder.ipynb").mkdir()
    before = {p.name: p.read_bytes() for p in (good, corrupt)}
    for bad, words in ((tmp_path / "missing.ipynb", "no such file"),
                       (corrupt, "not a readable notebook"),
                       (tmp_path / "folder.ipynb", "not a file")):
        assert main(["execute", str(good), str(bad)]) == 2  # good comes first: still not run
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert str(bad) in err and words in err, err
        assert {p.name: p.read_bytes() for p in (good, corrupt)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.ipynb", "folder.ipynb",
                                                          "good.ipynb"]


@pytest.mark.parametrize("under", ["a_file", "a_file/exercises"])
def test_exercises_refuses_an_exercises_folder_under_a_file(tmp_path: Path, capsys, under):
    (tmp_path / "a_file").write_text("not a folder")
    target = tmp_path / under
    args = ["exercises", "--solutions", str(course.ROOT / "solutions"), "--exercises", str(target)]
    assert main(args) == 2
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1 and "--exercises" in out and "a_file" in out, out
    assert (tmp_path / "a_file").read_text() == "not a folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
