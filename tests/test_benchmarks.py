"""The benchmark matrix, measuring a row, the JSON cards and their schema (no speed assertions)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from attn_tutorial import cost
from attn_tutorial.bench import cards as K
from attn_tutorial.bench import matrix, measure, render, run, timing
from attn_tutorial.__main__ import main as cli


def _short_timing(steps, min_run_time, blocks, min_blocks=None, *, _timed=timing.time_cpu_interleaved):
    """The quick mode's interleaved timing with a tenth of its time and 5 blocks: these tests
    read the cards' structure and cost model, never a speed, so the loop only has to run."""
    return _timed(steps, min_run_time / 10, min(blocks, 5), min(min_blocks or 5, 5))


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One quick CPU run of the whole matrix (single thread: the shared box stays predictable)."""
    out = tmp_path_factory.mktemp("cards")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(timing, "time_cpu_interleaved", _short_timing)
            cards = run.run(device="cpu", quick=True, out=out)
    finally:
        torch.set_num_threads(threads)
    return out, cards


def test_quick_run_writes_one_valid_card_per_group(quick_run):
    out, cards = quick_run
    assert [c["group"] for c in cards] == list(matrix.GROUPS)
    files = sorted(p.name for p in out.glob("*.json"))
    assert files == sorted(f"cpu-quick-{g}.json" for g in matrix.GROUPS)
    for path in out.glob("*.json"):
        K.validate_card(json.loads(path.read_text()))  # what is on disk, not only in memory
    for card in cards:
        assert card["mode"] == "quick"
        assert all(r["status"] == "ok" for r in card["rows"]), card["group"]
        assert {r["pass"] for r in card["rows"]} <= set(timing.PASSES)


def test_cpu_provenance_nulls_what_does_not_apply(quick_run):
    prov = quick_run[1][0]["provenance"]
    for name in ("sm_count", "l2_bytes", "driver", "cuda", "cudnn", "tf32_matmul", "tf32_cudnn"):
        assert prov[name] is None
    assert prov["device_type"] == "cpu"
    assert prov["threads"] == 1
    assert prov["torch"] == torch.__version__


def test_rows_carry_the_cost_model_and_baseline_ratios(quick_run):
    channel = quick_run[1][0]
    se = next(r for r in channel["rows"] if r["name"] == "SE" and r["pass"] == "forward")
    s = se["shape"]
    expected = cost.se(s["B"], s["C"], s["H"], s["W"])
    assert (se["flops"], se["min_bytes"], se["params"]) == (
        expected.flops, expected.min_bytes, expected.params)
    fb = next(r for r in channel["rows"] if r["name"] == "SE" and r["pass"] != "forward"
              and r["shape"] == s)
    assert fb["flops"] == 3 * expected.flops
    for card in quick_run[1]:
        for r in card["rows"]:
            if r["name"] == r["baseline"]:
                assert r["ratio_to_baseline"] == 1.0
            assert r["ratio_to_baseline"] is not None
            # achieved rates are the cost model over the median, shares use the machine rates
            assert math.isclose(r["achieved_gbps"], r["min_bytes"] / r["median_s"] / 1e9)
            assert math.isclose(r["share_copy_bw"],
                                r["achieved_gbps"] / card["machine"]["copy_gbps"])
            assert r["max_abs_err"] < 1e-4  # float32 against the float64 reference


def test_scaling_fits_separate_quadratic_from_linear_memory(quick_run):
    scaling = next(c for c in quick_run[1] if c["group"] == "scaling")
    fits = {(f["series"], f["y"]): f for f in scaling["fits"]}
    # FLOPs (cost model): N² attention term for self-attention, linear for external attention.
    assert fits[("external attention", "flops")]["slope"] == pytest.approx(1.0)
    assert fits[("self-attention (materialised)", "flops")]["slope_upper_half"] > 1.7
    # Peak memory (dispatch estimate): the materialised N×N map against SDPA's linear memory.
    assert fits[("self-attention (materialised)", "peak_bytes")]["slope_upper_half"] > 1.5
    assert fits[("self-attention (SDPA)", "peak_bytes")]["slope"] < 1.2
    sdpa = [r for r in scaling["rows"] if r["impl"] == "sdpa"]
    assert all(r["sdpa_backend"] for r in sdpa)


def test_cli_bench_only_one_group(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(["bench", "--device", "cpu", "--quick", "--only", "conv",
                    "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    assert captured.out.strip() == "cpu-quick-conv.json"
    assert "1 cards" in captured.err  # the summary (and the progress bar) go to stderr
    card = json.loads((tmp_path / "cpu-quick-conv.json").read_text())
    K.validate_card(card)
    assert {r["name"] for r in card["rows"]} == {"conv3x3", "SCConv", "PSA"}


def test_cli_rejects_an_unknown_group(capsys):
    with pytest.raises(SystemExit):
        cli(["bench", "--quick", "--only", "nope"])
    assert "nope" in capsys.readouterr().err
    with pytest.raises(ValueError, match="nope"):
        run.run(["nope"], device="cpu", quick=True)


def _machine():
    return {"copy_gbps": 10.0, "copy_bytes": 1, "matmul_tflops": {"float32": 0.1,
                                                                 "bfloat16": 0.1}, "matmul_n": 1}


def test_bfloat16_row_has_a_larger_error_than_float32():
    row = next(r for r in matrix.build_rows("channel", quick=True) if r.name == "SE")
    recs = {d: measure.measure_row(row.replace(dtype=d), torch.device("cpu"), _machine(), True)
            for d in ("float32", "bfloat16")}
    assert all(r["status"] == "ok" for r in recs.values())
    assert recs["bfloat16"]["min_bytes"] * 2 == recs["float32"]["min_bytes"]  # 2 bytes, not 4
    assert recs["bfloat16"]["max_abs_err"] > 10 * recs["float32"]["max_abs_err"]


class _Exhausted(nn.Module):
    def forward(self, x):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64 GiB")


class _Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("something else")


def test_out_of_memory_and_errors_are_recorded_not_raised(monkeypatch):
    row = next(r for r in matrix.build_rows("danet", quick=True) if r.name == "PAM (materialised)")
    pam = matrix.SUBJECTS["PAM"]
    for name, module in (("Exhausted", _Exhausted), ("Broken", _Broken)):
        monkeypatch.setitem(matrix.SUBJECTS, name,
                            matrix.Subject(lambda C, h, m=module: m(), pam.cost))
    cpu = torch.device("cpu")
    oom = measure.measure_row(row.replace(mechanism="Exhausted"), cpu, _machine(), True)
    assert oom["status"] == "oom" and "out of memory" in oom["error"]
    assert oom["median_s"] is None and oom["flops"] == row.cost(4).flops
    bad = measure.measure_row(row.replace(mechanism="Broken"), cpu, _machine(), True)
    assert bad["status"] == "error" and "something else" in bad["error"]
    K.add_ratios([oom, bad])
    assert oom["ratio_to_baseline"] is None


def test_dispatch_peak_counts_what_a_call_allocates():
    x = torch.zeros(1000)

    def step():
        a = x + 1          # 4000 bytes, alive
        b = a * 2          # 4000 more: peak 8000
        del a
        return b.add_(1)   # in place: no new bytes

    assert measure.peak_bytes_dispatch(step) == 8000


def test_fit_slope_recovers_a_power_law():
    xs = [16, 64, 256, 1024]
    assert K.fit_slope(xs, [3 * x**2 for x in xs]) == pytest.approx(2.0)
    assert K.fit_slope(xs, [5 * x for x in xs]) == pytest.approx(1.0)
    assert K.fit_slope([4], [1]) is None


@pytest.fixture(scope="module")
def good_card(quick_run):
    return quick_run[1][1]


@pytest.mark.parametrize("path, value, message", [
    (("schema",), "other/1", "schema"),
    (("provenance", "threads"), "2", "threads"),
    (("provenance", "sm_count"), 132, "null on a CPU card"),
    (("provenance", "torch"), None, "must not be null"),
    (("machine", "matmul_tflops"), {"float32": -1.0}, "positive"),
    (("rows", 0, "median_s"), "fast", "median_s"),
    (("rows", 0, "reps"), True, "bool"),
    (("rows", 0, "pass"), "backward", "pass"),
    (("rows", 0, "dtype"), "float8", "dtype"),
    (("rows", 0, "status"), "fine", "status"),
    (("rows", 0, "shape"), {"B": 1, "C": 2, "H": 0, "W": 3}, "shape"),
    (("rows", 0, "p20_s"), 1e9, "p20"),
    (("rows", 0, "max_abs_err"), None, "reference_note"),
    (("rows", 1, "ratio_p20"), 1e9, "ratio_p20"),
    (("rows", 0, "matmul_roof"), "fp64", "matmul_roof"),
    (("machine", "matmul_tflops"), {"tf16": 1.0}, "tf16"),
    (("provenance", "fp32_precision"), "tf32", "fp32_precision"),
    (("rows", 0, "median_s"), None, "median_s"),
    (("rows",), [], "empty"),
    (("fits",), [{"series": "x"}], "fits"),
])
def test_validate_card_rejects_ill_typed_fields(good_card, path, value, message):
    card = copy.deepcopy(good_card)
    target = card
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(K.CardError, match=message):
        K.validate_card(card)


@pytest.mark.parametrize("path", [("group",), ("provenance", "l2_bytes"),
                                  ("rows", 0, "flops"), ("rows", 0, "sdpa_backend"),
                                  ("machine", "copy_gbps")])
def test_validate_card_names_a_missing_field(good_card, path):
    card = copy.deepcopy(good_card)
    target = card
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    with pytest.raises(K.CardError, match=repr(path[-1])):
        K.validate_card(card)


def test_an_oom_row_needs_its_reason(good_card):
    card = copy.deepcopy(good_card)
    row = card["rows"][0]
    row.update(status="oom", median_s=None, error=None)
    with pytest.raises(K.CardError, match="error"):
        K.validate_card(card)
    row["error"] = "OutOfMemoryError: ..."
    K.validate_card(card)


def test_committed_cards_are_valid():
    cards = K.load_cards()
    assert cards, "attn_tutorial/cards/ holds the recorded cards"
    cpu = {c["group"] for c in cards if c["provenance"]["device_type"] == "cpu"}
    assert cpu == set(matrix.GROUPS)
    for card in cards:
        assert card["_file"] == K.card_filename(card)
        assert render.format_card(card).count("\n") >= 3


def test_every_full_mode_row_builds_and_runs_at_its_shape_on_meta():
    # The GPU matrix cannot run here; its shapes and hyper-parameters are checked on the meta
    # device (shapes only, no arithmetic), with the cost model and the byte count of each row.
    seen = 0
    for group in matrix.GROUPS:
        rows = matrix.build_rows(group, quick=False)
        assert {r.pass_ for r in rows} == (
            {"forward"} if group == "scaling" else set(timing.PASSES))
        for row in rows:
            if row.dtype != "float32" or row.pass_ != "forward" or row.compile != "none":
                continue
            module = row.build().eval().to("meta")
            s = row.shape
            shape = ((s["B"], s["H"] * s["W"], s["C"]) if row.tokens
                     else (s["B"], s["C"], s["H"], s["W"]))
            with torch.no_grad():
                y = measure.row_runner(module, row)(torch.empty(shape, device="meta"))
            assert y.shape[0] == s["B"]
            assert row.cost(4).flops > 0 and measure._counted_bytes(row, module, 2) > 0
            # one hyper dict feeds both: the cost model's parameter count is the module's
            assert row.cost(4).params == sum(p.numel() for p in module.parameters()), row
            seen += 1
    assert seen > 40
    channel = matrix.build_rows("channel", quick=False)
    assert {r.compile for r in channel} == {"none", "default"}
    assert {r.dtype for r in channel} == {"float32", "bfloat16"}
    assert {(r.shape["C"], r.shape["H"]) for r in channel} == {
        (256, 56), (512, 28), (1024, 14), (2048, 7)}
    assert max(r.shape["H"] for r in matrix.build_rows("scaling", quick=False)) == 192


def test_one_hyper_dict_builds_the_module_and_prices_it():
    # Changing a hyper-parameter in the row changes the module and the cost model together.
    row = next(r for r in matrix.build_rows("channel", quick=True) if r.name == "ECA")
    for k in (3, 5, 7):
        changed = row.replace(hyper={"k_size": k})
        module = changed.build()
        assert module.conv.kernel_size == (k,)
        assert changed.cost(4).params == k == sum(p.numel() for p in module.parameters())
    se = next(r for r in matrix.build_rows("channel", quick=True) if r.name == "SE")
    for reduction in (4, 8):
        changed = se.replace(hyper={"reduction": reduction})
        n = sum(p.numel() for p in changed.build().parameters())
        assert changed.cost(4).params == n
        C = se.shape["C"]
        assert n == 2 * C * (C // reduction) + C // reduction + C  # the formula, written out


def test_quick_rows_flops_match_flopcounter():
    # The cost model of every quick eager row against FlopCounterMode on the built module
    # (fused SDPA kernels are invisible to the counter on the CPU, so those rows are skipped).
    for group in matrix.GROUPS:
        for row in matrix.build_rows(group, quick=True):
            if row.pass_ != "forward" or row.sdpa:
                continue
            module = row.build().eval()
            x = measure.row_input(row)
            assert timing.count_flops(measure.row_runner(module, row), x) == row.cost(4).flops, row
