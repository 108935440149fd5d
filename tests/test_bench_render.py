"""The GPU path proved on the CPU: CUDA-shaped cards (warm and cold L2 rows, OOM, missing and
skipped rows, bf16 and compiled rows) go through the fitting, the validation and every rendering
function, and lesson 08's card cells run on them unchanged."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import matplotlib
import nbformat
import pytest
import torch

from attn_tutorial.bench import cards as K
from attn_tutorial.bench import matrix, measure, render, run
from attn_tutorial.__main__ import main as cli

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
L2 = 50 * 2**20                      # an H100's L2
BW, PEAK = 3.0e12, {"float32": 50e12, "bfloat16": 400e12}


def _cuda_provenance() -> dict:
    return {
        "device": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "sm_count": 132,
        "l2_bytes": L2, "gpu_memory_bytes": 80 * 2**30, "driver": "550.54.15",
        "torch": torch.__version__, "cuda": "12.6", "cudnn": 90100,
        "python": platform.python_version(), "platform": "Linux", "cpu": "x86_64",
        "cpu_capability": "AVX512", "threads": 8, "load_average": 0.3,
        "tf32_matmul": False, "tf32_cudnn": True, "float32_matmul_precision": "highest",
        "memory_format": "contiguous", "module_mode": "eval",
    }


def _fill(rec: dict, seconds: float) -> dict:
    """Timings from a stated model (no GPU here): the derived fields as measure_row sets them."""
    rec.update(reps=50, median_s=seconds, p20_s=0.97 * seconds, p80_s=1.05 * seconds,
               iqr_s=0.06 * seconds, peak_bytes=2 * rec["min_bytes"],
               max_abs_err=1e-2 if rec["dtype"] == "bfloat16" else 1e-6)
    rec["achieved_tflops"] = rec["flops"] / seconds / 1e12
    rec["achieved_gbps"] = rec["min_bytes"] / seconds / 1e9
    rec["share_copy_bw"] = rec["achieved_gbps"] * 1e9 / BW
    rec["share_matmul"] = rec["achieved_tflops"] * 1e12 / PEAK[rec["dtype"]]
    return rec


def cuda_card(group: str) -> dict:
    """A full-mode card of ``group`` as a GPU run would write it, with every awkward case."""
    records = []
    for row in matrix.build_rows(group, quick=False):
        s = row.shape
        rec = measure.empty_record(row, "cuda")
        if row.sdpa:
            rec["sdpa_backend"] = "efficient_attention" if row.mechanism == "PAM" \
                else "flash_attention"
        # roofline model plus a launch overhead; compiled rows a little faster
        t = max(rec["flops"] / PEAK[row.dtype], rec["min_bytes"] / BW) + 8e-6
        t *= 0.8 if row.compile != "none" else 1.0
        if row.mechanism == "PAM" and row.impl == "materialised" and s["H"] >= 128:
            rec.update(status="oom", error="OutOfMemoryError: CUDA out of memory. Tried to "
                                           "allocate 20.00 GiB")
            records.append(rec)
            continue
        if group == "external" and row.mechanism == "ExternalAttention" and s["H"] == 96:
            continue                                              # a missing size
        if group == "scaling" and s["H"] == 192 and row.mechanism == "EMSA":
            rec.update(status="skipped", error="time budget of 600 s spent before this row")
            records.append(rec)
            continue
        records.append(_fill(rec, t))
        if rec["min_bytes"] <= L2:                                # the cold-L2 twin
            cold = measure.empty_record(row, "cuda", l2="cold")
            cold["sdpa_backend"] = rec["sdpa_backend"]
            records.append(_fill(cold, 1.3 * t))
    machine = {"copy_gbps": BW / 1e9, "copy_bytes": 2**30,
               "matmul_tflops": {k: v / 1e12 for k, v in PEAK.items()}, "matmul_n": 8192}
    return run._card(group, False, torch.device("cuda"), _cuda_provenance(), machine, records,
                     [])


@pytest.fixture(scope="module")
def gpu_cards():
    return [cuda_card(g) for g in matrix.GROUPS]


def test_cuda_shaped_cards_validate_and_round_trip(gpu_cards, tmp_path):
    for card in gpu_cards:
        K.write_card(card, tmp_path)
    loaded = K.load_cards(tmp_path)
    assert [c["_file"] for c in loaded] == sorted(
        f"nvidia-h100-80gb-hbm3-full-{g}.json" for g in matrix.GROUPS)
    rows = [r for c in loaded for r in c["rows"]]
    assert {r["l2"] for r in rows} == {"warm", "cold"}
    assert {r["status"] for r in rows} == {"ok", "oom", "skipped"}
    assert {r["dtype"] for r in rows} == {"float32", "bfloat16"}
    assert {r["compile"] for r in rows} == {"none", "default"}


def test_fits_accept_cold_rows_with_the_same_n(gpu_cards):
    # The old fit sorted (N, row) tuples: two rows with one N compared dicts and raised.
    scaling = next(c for c in gpu_cards if c["group"] == "scaling")
    rows = scaling["rows"]
    n_of = [(r["series"], r["shape"]["H"]) for r in rows if r["series"]]
    assert len(n_of) > len(set(n_of)), "the synthetic card must hold warm and cold rows"
    fits = K.fit_series(rows)
    by = {(f["series"], f["y"]): f for f in fits}
    sizes = {r["shape"]["H"] for r in rows if r["series"] == "external attention"}
    assert by[("external attention", "flops")]["points"] == len(sizes)  # one point per N
    assert by[("external attention", "flops")]["slope"] == pytest.approx(1.0)
    # EMSA sr=8 lost its 192² point (skipped): one point fewer than the others
    assert by[("EMSA sr=8", "flops")]["points"] == len(sizes) - 1


def test_crossover_survives_oom_and_missing_rows(gpu_cards):
    ext = next(c for c in gpu_cards if c["group"] == "external")
    table = {(t["H"]): t for t in render.crossover(ext)}
    assert table[128]["time_ratio"] is None and "oom" in table[128]["note"]
    assert table[96]["time_ratio"] is None and "missing" in table[96]["note"]
    assert table[32]["time_ratio"] is not None
    # the FLOP ratio crosses 1 between 21² and 22² at C = 512 (N* = 455.1)
    assert table[21]["flop_ratio"] > 1 > table[22]["flop_ratio"]


def test_every_rendering_function_runs_on_gpu_cards(gpu_cards):
    for card in gpu_cards:
        for pass_ in ("forward", "forward+backward", None):
            for dtype in ("float32", "bfloat16", None):
                text = render.format_card(card, pass_=pass_, dtype=dtype)
                assert text.count("\n") >= 2
        notes = render.card_notes(card)
        assert any("TF32" in n for n in notes) and any("cuBLAS" in n for n in notes)
    danet = next(c for c in gpu_cards if c["group"] == "danet")
    table = render.format_card(danet)
    assert "OOM" in table and "eff" in table
    # a cold-L2 twin stays recognisable even under the longest row name
    assert any("PAM (materialised, compiled)" in line and " cold " in line
               for line in table.splitlines())
    fig, ax = plt.subplots()
    points = render.plot_roofline(gpu_cards, "cuda", ax)
    assert {"SE", "ECA", "conv3x3", "PAM (materialised)"} <= set(points)
    lo, hi = ax.get_xlim()
    assert lo < min(r["flops"] / r["min_bytes"] for r in points.values())  # roofs reach SE/ECA
    plt.close(fig)
    fig, (a, b) = plt.subplots(1, 2)
    scaling = next(c for c in gpu_cards if c["group"] == "scaling")
    assert len(render.plot_scaling(scaling, a, b)) == 6
    plt.close(fig)
    assert "EMSA sr=8" in render.slope_table(scaling)


def test_a_share_above_a_roof_is_flagged(gpu_cards):
    card = json.loads(json.dumps(next(c for c in gpu_cards if c["group"] == "conv")))
    row = next(r for r in card["rows"] if r["status"] == "ok")
    row["share_matmul"] = 2.83
    assert any("283 %" in v for v in render.roof_violations(card))
    assert any("MEASUREMENT PROBLEM" in n for n in render.card_notes(card))
    assert "283!" in render.format_card(card, pass_=None, dtype=None)


def _lesson_card_cells():
    nb = nbformat.read(ROOT / "notebooks" / "08_benchmarks.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    setup = "\n".join(line for line in code[0].source.splitlines() if not line.startswith("%"))
    tagged = [c.source for c in code if "cards" in c.get("metadata", {}).get("tags", [])]
    return setup, tagged


def test_lesson_08_card_cells_run_on_gpu_cards(gpu_cards, monkeypatch, tmp_path):
    # The notebook's own cells, with the committed CPU cards plus the synthetic GPU cards,
    # both read from disk as the lesson reads them.
    setup, cells = _lesson_card_cells()
    assert len(cells) >= 8, "lesson 08 tags every cell that renders cards with 'cards'"
    for card in gpu_cards:
        K.write_card(card, tmp_path)
    both = K.load_cards() + K.load_cards(tmp_path)
    monkeypatch.setattr(K, "load_cards", lambda directory=None: both)
    monkeypatch.setattr(plt, "show", lambda *a, **k: plt.close("all"))
    namespace: dict = {}
    exec(compile(setup, "lesson08-setup", "exec"), namespace)  # noqa: S102
    for i, source in enumerate(cells):
        exec(compile(source, f"lesson08-card-cell-{i}", "exec"), namespace)  # noqa: S102
    assert namespace["cards"][-1]["provenance"]["device_type"] == "cuda"


# ------------------------------------------------------------------------------------------
# Running: the budget, the output folder, the command line
# ------------------------------------------------------------------------------------------

def _machine():
    return {"copy_gbps": 10.0, "copy_bytes": 1, "matmul_tflops": {"float32": 0.1},
            "matmul_n": 1}


def test_a_spent_budget_records_rows_as_skipped(tmp_path):
    cards = run.run(["conv"], device="cpu", quick=True, out=tmp_path, budget_s=1e-9,
                    machine=_machine())
    (card,) = cards
    assert {r["status"] for r in card["rows"]} == {"skipped"}
    assert all("budget" in r["error"] for r in card["rows"])
    assert any(s["reason"] == "time budget spent" for s in card["skipped"])
    K.validate_card(json.loads((tmp_path / "cpu-quick-conv.json").read_text()))


def test_a_budget_runs_rows_in_priority_order(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (card,) = run.run(["conv"], device="cpu", quick=True, out=None, budget_s=0.4,
                          machine=_machine())
    finally:
        torch.set_num_threads(threads)
    done = [r for r in card["rows"] if r["status"] == "ok"]
    skipped = [r for r in card["rows"] if r["status"] == "skipped"]
    assert done, "0.4 s is enough for the first rows"
    if skipped:  # every measured row comes before every skipped one in priority
        prio = {"forward": 0, "forward+backward": 1}
        assert max(prio[r["pass"]] for r in done) <= min(prio[r["pass"]] for r in skipped)
    with pytest.raises(ValueError, match="budget_s"):
        run.run(["conv"], device="cpu", quick=True, budget_s=0)


def test_cli_default_out_is_the_scratch_folder_not_the_package(tmp_path, monkeypatch, capsys):
    before = {p.name: p.read_bytes() for p in K.CARDS_DIR.glob("*.json")}
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(["bench", "--device", "cpu", "--quick", "--only", "conv"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "bench_out" / "cpu-quick-conv.json").exists()
    assert {p.name: p.read_bytes() for p in K.CARDS_DIR.glob("*.json")} == before
    assert "bench_out" in capsys.readouterr().err
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/bench_out/" in ignored or "bench_out/" in ignored


def test_cli_checks_out_is_writable_before_measuring(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    start = time.perf_counter()
    with pytest.raises(SystemExit):
        cli(["bench", "--device", "cpu", "--quick", "--out", str(blocker / "cards")])
    assert time.perf_counter() - start < 2.0  # refused at once, not after the measurements
    assert "not a writable folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["bench", "--quick", "--record", "--out", str(tmp_path)])
    assert "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["bench", "--quick", "--budget-s", "-1"])


def test_cli_record_writes_into_the_package_cards_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run, "CARDS_DIR", tmp_path / "package-cards")
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(["bench", "--device", "cpu", "--quick", "--only", "conv", "--record"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in (tmp_path / "package-cards").iterdir()] == ["cpu-quick-conv.json"]
    assert not (tmp_path / "bench_out").exists()


def test_cli_threads_sets_the_thread_count_the_card_records(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert cli(["bench", "--device", "cpu", "--quick", "--only", "conv", "--threads", "1",
                    "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    card = json.loads((tmp_path / "cpu-quick-conv.json").read_text())
    assert card["provenance"]["threads"] == 1
    with pytest.raises(SystemExit):
        cli(["bench", "--quick", "--threads", "0"])
    assert "--threads 0" in capsys.readouterr().err
