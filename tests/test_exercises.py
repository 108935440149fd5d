"""Exercise generation: exercises/ is generated from solutions/ and kept in sync; a learner's edits
survive regeneration and never fail the suite; opening and saving an exercise in JupyterLab
changes nothing; every generated exercise runs top to bottom with each checker reporting
"not implemented yet" once."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from attn_tutorial import course
from attn_tutorial.checks import NOT_IMPLEMENTED
from attn_tutorial.course import ROOT

SOLUTIONS = sorted((ROOT / "solutions").glob("*.ipynb"))
# The exercise folder under test (the JupyterLab test below points it at a copy the server saved).
EXERCISES = ROOT / "exercises"


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


def test_exercises_are_in_sync(capsys):
    from attn_tutorial.__main__ import main

    code = main(["exercises", "--check", "--exercises", str(EXERCISES)])
    out = capsys.readouterr().out
    assert code == 0, out
    edited = [line for line in out.splitlines() if "edited by you" in line]
    if edited:  # a learner's copy: say so rather than pass silently
        pytest.skip("; ".join(edited))


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
    assert "99_toy.ipynb: edited by you, left alone" in capsys.readouterr().out
    assert "x + x" in nbformat.read(ex, as_version=4).cells[1].source  # the learner's work survives
    assert course.sync_exercises(sol_dir, ex_dir, check=True) == 0  # edited is not stale
    assert "edited by you, left alone" in capsys.readouterr().out
    assert course.sync_exercises(sol_dir, ex_dir, force=True) == 0
    assert nbformat.read(ex, as_version=4).cells[0].source.startswith("# toy, revised\n\n*This is")
    assert course.sync_exercises(sol_dir, ex_dir, check=True) == 0


def test_an_unedited_exercise_behind_its_solution_is_stale(tmp_path: Path, capsys):
    sol = _toy_solution(tmp_path)
    ex_dir = tmp_path / "exercises"
    assert course.sync_exercises(sol.parent, ex_dir) == 0
    nb = nbformat.read(sol, as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("2 * x", "x * 2")
    nb.cells.append(nbformat.v4.new_code_cell("print(f(3))"))
    nbformat.write(nb, sol)
    capsys.readouterr()
    assert course.sync_exercises(sol.parent, ex_dir, check=True) == 1
    assert "stale: " in capsys.readouterr().out
    assert course.sync_exercises(sol.parent, ex_dir) == 0
    assert "print(f(3))" in nbformat.read(ex_dir / sol.name, as_version=4).cells[-1].source


def test_metadata_outputs_and_counts_do_not_make_an_exercise_stale(tmp_path: Path, capsys):
    sol = _toy_solution(tmp_path)
    ex_dir = tmp_path / "exercises"
    course.sync_exercises(sol.parent, ex_dir)
    ex = ex_dir / sol.name
    nb = nbformat.read(ex, as_version=4)
    nb.metadata.kernelspec.display_name = "Something else"
    nb.metadata.language_info["version"] = "3.99.0"
    nb.metadata["widgets"] = {}
    nb.cells[1].execution_count = 3
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hi\n")]
    nb.cells[1].metadata["collapsed"] = True
    nbformat.write(nb, ex)
    text = ex.read_text()
    assert course.sync_exercises(sol.parent, ex_dir, check=True) == 0
    assert course.sync_exercises(sol.parent, ex_dir) == 0
    assert ex.read_text() == text  # the learner's run is not thrown away
    assert "exercises are up to date" in capsys.readouterr().out


def test_a_corrupt_notebook_is_named_and_the_others_processed(tmp_path: Path, capsys):
    sol = _toy_solution(tmp_path)
    shutil.copy(sol, sol.parent / "98_other.ipynb")
    ex_dir = tmp_path / "exercises"
    ex_dir.mkdir()
    (ex_dir / "98_other.ipynb").write_text('{"cells": [')  # a save cut short
    assert course.sync_exercises(sol.parent, ex_dir) == 1
    out = capsys.readouterr().out
    assert "error: " in out and "98_other.ipynb cannot be read (" in out and "left alone" in out
    assert (ex_dir / "99_toy.ipynb").exists()  # the other one was written
    assert (ex_dir / "98_other.ipynb").read_text() == '{"cells": ['
    assert course.sync_exercises(sol.parent, ex_dir, check=True) == 1
    assert "98_other.ipynb cannot be read" in capsys.readouterr().out
    assert course.sync_exercises(sol.parent, ex_dir, force=True) == 0
    assert nbformat.read(ex_dir / "98_other.ipynb", as_version=4).cells
    (sol.parent / "97_bad.ipynb").write_text("not json")
    assert course.sync_exercises(sol.parent, ex_dir) == 1
    assert "97_bad.ipynb cannot be read" in capsys.readouterr().out


def test_missing_solutions_is_an_error(tmp_path: Path, capsys):
    assert course.sync_exercises(tmp_path / "nowhere", tmp_path / "exercises") == 2
    assert "error: no folder" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert course.sync_exercises(tmp_path / "empty", tmp_path / "exercises", check=True) == 2


def test_generated_exercise_says_it_is_the_exercise_and_has_lab_metadata():
    for solution in SOLUTIONS:
        nb = course.make_exercise(nbformat.read(solution, as_version=4), solution.name)
        head = nb.cells[0].source.splitlines()
        assert head[0].startswith("# Exercises ")
        assert f"exercise notebook `exercises/{solution.name}`" in head[2]
        assert nb.metadata.kernelspec == course.KERNELSPEC
        assert nb.metadata.language_info["version"] == course.language_info()["version"]


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

    exercise = EXERCISES / solution.name
    nb = nbformat.read(exercise, as_version=4)
    if course.learner_edited(nb):
        pytest.skip(f"{exercise.name}: edited by you, left alone (this test checks a fresh copy)")
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(exercise.parent)}}).execute()
    check_cells = [c for c in nb.cells if c.cell_type == "code" and "check_" in c.source
                   and "import" not in c.source]
    assert check_cells, f"{solution.name}: no checker calls found"
    for cell in check_cells:
        text = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        assert NOT_IMPLEMENTED in text, f"{solution.name}: checker cell said {text!r}"
        assert "✓" not in text
        # the verdict once: printed, not printed again as the cell's value
        assert text.count(NOT_IMPLEMENTED) == 1, text
        assert not [o for o in cell.outputs if o.output_type == "execute_result"]


# --------------------------------------------------------- a real Jupyter server saving
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kernel_language_info() -> dict:
    """language_info from a real kernel's kernel_info reply, as the lab receives it."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3")
    try:
        return kc.kernel_info(reply=True, timeout=30)["content"]["language_info"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_jupyterlab_save_leaves_exercises_in_sync(tmp_path: Path, capsys, monkeypatch):
    """Start a Jupyter server on a copy of exercises/, and save through its contents API what
    JupyterLab saves on autosave: the notebook as loaded, with the kernelspec the server lists and
    the language_info a real kernel reports. One exercise is also solved by the learner. The
    unsolved ones are byte-for-byte unchanged, and `exercises --check` and this file's exercise
    tests, run on the copy, skip the solved one and say so instead of failing. (The lab's own
    front end cannot run here; what it changes on open, the kernelspec's display name and
    language_info with the Python version, is what this test writes.)"""
    pytest.importorskip("jupyter_server")
    root = tmp_path / "lab"
    shutil.copytree(ROOT / "exercises", root / "exercises")
    port, token = _free_port(), secrets.token_hex(16)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", f"--ServerApp.root_dir={root}",
         "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
         f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
         "--allow-root"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/api"

    def call(method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, method=method, headers={
            "Authorization": f"token {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as reply:
            return json.loads(reply.read() or b"null")

    try:
        language_info = _kernel_language_info()  # while the server starts
        deadline = time.monotonic() + 30
        while True:
            try:
                call("GET", "/status")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("the Jupyter server did not start on 127.0.0.1")
                time.sleep(0.1)
        spec = call("GET", "/kernelspecs")["kernelspecs"]["python3"]["spec"]
        names = sorted(p.name for p in (root / "exercises").glob("*.ipynb"))
        before = {n: (root / "exercises" / n).read_text() for n in names}
        for i, name in enumerate(names):
            model = call("GET", f"/contents/exercises/{name}?content=1")["content"]
            model["metadata"]["kernelspec"] = {"display_name": spec["display_name"],
                                               "language": spec["language"], "name": "python3"}
            model["metadata"]["language_info"] = language_info
            if i == len(names) - 1:  # the learner solved the last one
                for cell in model["cells"]:
                    cell["source"] = cell["source"].replace(
                        "raise NotImplementedError()", "return None  # my answer")
            call("PUT", f"/contents/exercises/{name}",
                 {"type": "notebook", "format": "json", "content": model})
    finally:
        server.terminate()
        server.wait(10)
    for name in names[:-1]:  # saved as the lab saves it: not a byte changed
        assert (root / "exercises" / name).read_text() == before[name], name
    assert (root / "exercises" / names[-1]).read_text() != before[names[-1]]
    # `exercises --check` and this file's exercise tests, on the saved copy
    monkeypatch.setattr(sys.modules[__name__], "EXERCISES", root / "exercises")
    with pytest.raises(pytest.skip.Exception, match=f"{names[-1]}: edited by you, left alone"):
        test_exercises_are_in_sync(capsys)
    solved = [p for p in SOLUTIONS if p.name == names[-1]]
    with pytest.raises(pytest.skip.Exception, match=f"{names[-1]}: edited by you, left alone"):
        test_exercise_runs_and_every_checker_says_not_implemented(solved[0], tmp_path)
