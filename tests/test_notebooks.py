"""Notebook hygiene: what strict nbval cannot see by itself.

nbval silently skips a code cell that was never executed, so a notebook committed half-run would
pass unnoticed; these tests make sure every checked notebook was saved after a full Restart & Run
All, carries no unexpected error, and (for the mechanism lessons) follows the lesson skeleton.

They also check the rules a reader cannot see fail until it is too late (detectors in
``_hygiene.py``, each proven on small examples first): no assertion on a timing or a ratio of
timings (a busy or a faster machine must not fail a lesson), every timing printed with the load
beside it, no lesson that exists called "to
come", no sentence about how the course was made, no claim of GPU results without a GPU card.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from _hygiene import (future_lesson_references, making_of_phrases, recorded_gpu_claims,
                      timing_asserts, timing_cells, timing_cells_without_load)

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
def test_valid_against_the_notebook_schema(path: Path):
    """A stray top-level key (left by a script that edited the JSON) makes JupyterLab and nbconvert
    refuse the file, although nbval still runs it."""
    nbformat.validate(nbformat.read(path, as_version=4))


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


# ------------------------------------------------------------------ timings, stale text, sources
# The detectors and their exact rules are in tests/_hygiene.py; the tests below first prove each
# detector on small examples, then apply it to every checked notebook.

# Lesson 08 (the benchmarks) is being rewritten without its timing assertions and its sentences
# about how it was made, in a separate change; until that lands these failures are expected.
TIMING_CASES = {
    # assertions on timings or their ratios: found
    "assert on a median": (["t = bench.compare(fns, x)", "assert t[0].median < t[1].median"], 1),
    "assert on a ratio": (["ts = bench.compare(fns, x)\nratio = ts[1].median / ts[0].median",
                           "assert 0.5 < ratio < 2"], 1),
    "Timer, then its median": (
        ["m = benchmark.Timer('f()', globals=g).blocked_autorange()", "assert m.median < 1e-3"], 1),
    "perf_counter difference": (["start = time.perf_counter()\nf()\nelapsed = time.perf_counter() - start",
                                 "assert elapsed < 0.1"], 1),
    "time.time": (["t0 = time.time()\nrun()\nassert time.time() - t0 < 2"], 1),
    "through a loop and a list": (["rows = []\nfor t in bench.compare(fns, x):\n    rows.append(t.iqr)",
                                   "assert max(rows) < 1"], 1),
    "through a dict comprehension": (
        ["timings = bench.compare(fns, x)\nby = {t.name: t for t in timings}",
         "assert by['SE'].median > by['ECA'].median"], 1),
    "a timing helper of the notebook": (
        ["def clock(f):\n    s = time.perf_counter()\n    f()\n    return time.perf_counter() - s",
         "assert clock(a) > clock(b)"], 1),
    "recorded time ratio by key": (["row = card['rows'][0]", "assert row['time_ratio'] < 1"], 1),
    "a key passed by name": (["first = first_below(table, 'time_ratio')", "assert first == 13"], 1),
    "walrus": (["if (dt := time.perf_counter() - s) > 0:\n    pass", "assert dt < 1"], 1),
    "assert_close on a median": (["t = bench.time_cpu(step)",
                                  "torch.testing.assert_close(t['median'], 1.0)"], 1),
    "a magic line is skipped": (["%matplotlib inline\nt = bench.compare(f, x)", "assert t[0].median > 0"], 1),
    # counts, FLOPs, bytes, tensors: not timings
    "FLOPs": (["f = bench.count_flops(m, x)", "assert f == 2 * 64 * 49"], 0),
    "FLOPs and runs of a timing": (["ts = bench.compare(fns, x, flops=True)",
                                    "assert ts[0].flops == 98 and len(ts) == 3 and ts[0].runs > 0"], 0),
    "a tensor's median()": (["norms = x.norm(dim=1)", "assert norms.median() < norms.max()"], 0),
    "statistics of constants": (["import statistics\nmedian = statistics.median([1.0] * 19 + [50.0])",
                                 "assert median == 1.0"], 0),
    "thread count of a Timer": (["timer = benchmark.Timer('f()', num_threads=2)",
                                 "assert timer.task_spec.num_threads == 2"], 0),
    "a lambda parameter named like a timing": (
        ["t = bench.compare(fns, x)[0]", "f = lambda t: t + 1", "assert f(1) == 2"], 0),
    "a comprehension variable named like a timing": (
        ["t = bench.compare(fns, x)[0]", "assert all(t > 0 for t in range(1, 3))"], 0),
    "tuple assignment pairs names": (
        ["flop_from, time_from = first_below(tab, 'flop_ratio'), first_below(tab, 'time_ratio')",
         "assert flop_from == 13"], 0),
    "a list of medians": (["ts = bench.compare(fns, x)\nmeds = [t.median for t in ts]",
                           "assert meds[0] < 1"], 1),
    "names of timings": (["ts = bench.compare(fns, x)\nnames = [t.name for t in ts]",
                          "assert names == ['a', 'b']"], 0),
    "a name bound again to a count": (["t = bench.compare(fns, x)", "t = 3", "assert t == 3"], 0),
    "a loop variable reused": (["for t in bench.compare(fns, x):\n    print(t.median)",
                                "for t in range(3):\n    assert t < 3"], 0),
    "a plain field subscripted by a unit-like key": (
        ["fig = diagrams.draw('bam')", "assert fig.shapes['ms'] == (2, 1, 14, 14)"], 0),
    "a unit key of a timing table still counts": (["stats = card['rows'][0]", "assert stats['ms'] < 3"], 1),
    "printing a timing is fine": (["t = bench.compare(fns, x)", "print(t[0].median, t[0].iqr)"], 0),
}


@pytest.mark.parametrize("name", TIMING_CASES)
def test_timing_assert_detector(name):
    cells, expected = TIMING_CASES[name]
    found = timing_asserts(cells)
    assert len(found) == expected, found
    if expected:
        assert found[0][0] == len(cells), found  # the last cell holds the assertion


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_no_assertion_on_a_timing(path: Path):
    """A shared or a faster machine never fails a notebook: timings are printed with their
    spread and the load, counts/FLOPs/bytes are asserted (design §7)."""
    found = timing_asserts(c.source for c in code_cells(nbformat.read(path, as_version=4)))
    assert not found, "\n".join(f"{path.name} code cell {n}: {line}" for n, line in found)


def test_load_detector():
    assert timing_cells_without_load(["t = bench.compare(f, x)\nprint(bench.format_table(t))"]) == [1]
    assert timing_cells_without_load(["x = 1", "m = Timer('f()').blocked_autorange()"]) == [2]
    assert not timing_cells_without_load(["t = bench.compare(f, x)\nprint(render.load_note())"])
    assert not timing_cells_without_load(["t = bench.compare(f, x)\nprint(os.getloadavg())"])
    assert not timing_cells_without_load(["def clock(f):\n    return time.perf_counter()"])  # a def
    assert not timing_cells_without_load(["f = bench.count_flops(m, x)"])
    assert timing_cells(["x = 1", "m = Timer('f()').timeit(10)", "def g():\n    time.perf_counter()"]) == [2]


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_every_timing_cell_prints_the_load(path: Path):
    """A timing is read with the machine's load beside it (a busy machine's medians measure the
    wait for a core as much as the work)."""
    found = timing_cells_without_load(c.source for c in code_cells(nbformat.read(path, as_version=4)))
    assert not found, f"{path.name}: code cells {found} time something and print no load average"


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_timing_cells_are_not_compared(path: Path):
    """nbval compares what a cell prints: a timing cell's output differs on every run."""
    cells = code_cells(nbformat.read(path, as_version=4))
    compared = [n for n in timing_cells(c.source for c in cells)
                if "NBVAL_IGNORE_OUTPUT" not in cells[n - 1].source
                and "nbval-ignore-output" not in cells[n - 1].metadata.get("tags", [])]
    assert not compared, f"{path.name}: code cells {compared} time something and their output is compared"


EXISTING_LESSONS = {p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}


def test_future_reference_detector():
    existing = {"02", "05", "06"}
    assert future_lesson_references("BAM's branch (lesson 02, to come) runs two convs.", existing)
    assert future_lesson_references("PSA in lesson 03 and SCConv in lesson 05, both still to be "
                                    "written, cut their channels.", existing)
    assert future_lesson_references("Lessons 04–07 are not yet written.", existing)
    assert future_lesson_references("ResT, in\nlesson 06 (to come), uses a bigger kernel.", existing)
    assert not future_lesson_references("BAM's branch (lesson 02) runs two convs.", existing)
    assert not future_lesson_references("Lesson 09 is still to be written.", existing)  # no 09
    assert not future_lesson_references("Lesson 02 is done. Results to come in a later version.",
                                        existing)  # another sentence
    assert not future_lesson_references("Years to come will tell.", existing)


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_no_lesson_that_exists_is_to_come(path: Path):
    text = "\n\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    found = future_lesson_references(text, EXISTING_LESSONS)
    assert not found, f"{path.name} calls an existing lesson future: {found}"


def test_making_of_detector():
    for stale in ("the figure itself was not read here", "from this course's issue", "(spec §1)",
                  "the search for this lesson did not find the table",
                  "No GPU card has been recorded for this course yet", "we could not check here",
                  "what we could read", "as far as this\ncourse could check",
                  "in the runs made while writing\nthis lesson", "This repository was built without a GPU",
                  "could not be\nread for this lesson", "numbers this course has **not** re-read",
                  "no GPU measurement has been recorded for this course yet", "in our runs it was",
                  "2× to 5.3× over our runs", "the eight one-thread runs we made",
                  "which kernel it picks we have not traced", "on this project's CPU",
                  "on the course's shared\n2-core box", "GPU timings will appear there",
                  "In the committed run (its load average is printed under it) EA was faster",
                  "5.3× at `sr = 8` in the\ncommitted one"):
        assert making_of_phrases(stale), stale
    for fine in ("the paper's section 3 is unverified", "the authors' issue #39 says",
                 "the specification of the format", "Read the table with the load next to it",
                 "lesson 08 renders the recorded result cards", "what the search returns",
                 "Your numbers will differ from the committed ones", "a run on a 2-core AMD EPYC",
                 "lesson 08 renders GPU result cards once they are recorded"):
        assert not making_of_phrases(fine), fine


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_no_sentence_about_how_the_course_was_made(path: Path):
    """Sources are cited as sources (design §4c), never as what the course's authors read."""
    nb = nbformat.read(path, as_version=4)
    found = making_of_phrases("\n\n".join(c.source for c in nb.cells))
    assert not found, f"{path.name}: {found}"


def _gpu_cards() -> list[str]:
    cards = sorted((ROOT / "attn_tutorial" / "cards").glob("*.json"))
    return [p.name for p in cards
            if json.loads(p.read_text())["provenance"]["device_type"] == "cuda"]


def test_gpu_claim_detector():
    assert recorded_gpu_claims("The recorded GPU\nmeasurements of all seven mechanisms are in lesson 08.")
    assert recorded_gpu_claims("the GPU measurements of all seven mechanisms")
    assert not recorded_gpu_claims("where a GPU result card has been recorded, on that GPU")
    assert not recorded_gpu_claims("python -m attn_tutorial bench --device cuda --record")


@pytest.mark.parametrize("path", CHECKED, ids=IDS)
def test_no_claim_of_gpu_results_without_a_gpu_card(path: Path):
    if _gpu_cards():
        pytest.skip(f"GPU result cards exist: {_gpu_cards()}")
    text = "\n\n".join(c.source for c in nbformat.read(path, as_version=4).cells)
    assert not recorded_gpu_claims(text), f"{path.name}: {recorded_gpu_claims(text)}"
