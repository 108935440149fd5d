"""Measuring helpers that lesson 08's explanations rest on: passes over the map, the SDPA kernel
that really runs, per-submodule times, operator counts and the priority order of a budgeted run."""

from __future__ import annotations

import json
import time

import pytest
import torch
from torch import nn

from attn_tutorial.bench import cards as K
from attn_tutorial.bench import machine, matrix, measure, run, timing
from attn_tutorial.eca import ECA, SE


def test_map_passes_counts_reads_and_writes_of_map_sized_tensors():
    x = torch.randn(2, 8, 5, 5)
    assert measure.map_passes(lambda t: t * 2, x) == (1, 1)
    assert measure.map_passes(lambda t: t.sum(), x) == (1, 0)
    assert measure.map_passes(lambda t: t.view(-1), x) == (0, 0)  # a view moves no memory
    assert measure.map_passes(lambda t: (t + 1) * t, x) == (2, 2)
    # the eager gates: the pool reads the map, the product reads it again and writes the output
    assert measure.map_passes(SE(8, 4).eval(), x) == (2, 1)
    assert measure.map_passes(ECA(8, 3).eval(), x) == (2, 1)


def _step(row):
    module = row.build().eval()
    return timing.make_step(measure.row_runner(module, row), (measure.row_input(row),))


def test_pam_through_sdpa_runs_the_math_kernel_on_the_cpu():
    # PAM's q and k are C/8 wide and v is C wide; the CPU flash kernel needs one width.
    danet = {r.name: r for r in matrix.build_rows("danet", quick=True) if r.pass_ == "forward"}
    scaling = {r.name: r for r in matrix.build_rows("scaling", quick=True)}
    assert measure.sdpa_backend(_step(danet["PAM (SDPA)"])) == "math"
    assert measure.sdpa_backend(_step(scaling["self-attention (SDPA)"])) == "flash_attention"


class _Slow(nn.Module):
    def forward(self, x):
        time.sleep(0.002)
        return x


def test_leaf_times_sees_the_time_inside_each_submodule():
    module = nn.Sequential(nn.Linear(4, 4), _Slow())
    times = measure.leaf_times(module, module, torch.randn(2, 4), calls=5)
    assert times["1 (_Slow)"]["median"] >= 0.002
    med = {k: v["median"] for k, v in times.items()}
    assert med["total"] >= med["1 (_Slow)"] + med["0 (Linear)"]
    for v in times.values():
        assert v["p20"] <= v["median"] <= v["p80"]
    # per call, the total is the leaves plus what is outside them, exactly
    assert times["outside the submodules"]["p20"] >= 0


def test_leaf_times_adds_up_a_leaf_that_runs_twice_per_call():
    clock = iter(range(10**6)).__next__  # each reading advances one "second"
    lin = nn.Linear(3, 3)
    module = nn.ModuleDict({"lin": lin})
    times = measure.leaf_times(module, lambda x: lin(lin(x)), torch.randn(1, 3), calls=4,
                               clock=clock)
    # two runs per call, each between two consecutive readings: 1 + 1 seconds per call
    assert times["lin (Linear)"]["median"] == 2


def test_count_ops_counts_dispatched_operators():
    x = torch.randn(3)
    assert measure.count_ops(lambda: (x + 1) * 2) == 2


def test_priorities_put_forward_float32_eager_first():
    for group in matrix.GROUPS:
        rows = matrix.build_rows(group, quick=False)
        first = [r for r in rows if r.pass_ == "forward" and r.dtype == "float32"
                 and r.compile == "none"]
        later = [r for r in rows if r not in first]
        assert {r.priority for r in first} == {0}
        assert all(r.priority > 0 for r in later)


# ------------------------------------------------------------------------------------------
# TF32, the roofs, and which roof a row is a share of (the GPU path, proved on the CPU)
# ------------------------------------------------------------------------------------------

@pytest.fixture
def new_tf32_api():
    """Switch on TF32 with torch 2.9+'s fp32_precision API, and put everything back."""
    if not hasattr(torch.backends, "fp32_precision"):
        pytest.skip("this torch has no fp32_precision API")
    before = (torch.backends.fp32_precision, torch.backends.cuda.matmul.fp32_precision,
              torch.backends.cudnn.conv.fp32_precision)
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    yield
    (torch.backends.fp32_precision, torch.backends.cuda.matmul.fp32_precision,
     torch.backends.cudnn.conv.fp32_precision) = before


def test_new_tf32_api_makes_the_legacy_flags_raise(new_tf32_api):
    # The trap the bench must survive: torch itself refuses to read the legacy flag now.
    with pytest.raises(RuntimeError, match="legacy and new APIs"):
        torch.get_float32_matmul_precision()


def test_provenance_and_the_quick_bench_survive_the_new_tf32_api(new_tf32_api, tmp_path):
    settings = machine.precision_settings()
    assert settings["tf32_matmul"] is True and settings["new"]["cuda_matmul"] == "tf32"
    assert settings["legacy"]["float32_matmul_precision"] is None  # raised, recorded as None
    prov = machine.provenance("cpu")
    assert prov["fp32_precision"]["cuda_matmul"] == "tf32"
    assert prov["float32_matmul_precision"] is None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the quick bench end to end, on the two smallest groups
        cards = run.run(["conv", "emsa"], device="cpu", quick=True, out=tmp_path)
    finally:
        torch.set_num_threads(threads)
    assert all(r["status"] == "ok" for c in cards for r in c["rows"])
    for path in tmp_path.glob("*.json"):
        K.validate_card(json.loads(path.read_text()))


def test_the_cuda_provenance_reads_tf32_from_the_new_api(new_tf32_api, monkeypatch):
    class Props:  # an H100's properties, as torch.cuda.get_device_properties returns them
        multi_processor_count, L2_cache_size, total_memory = 132, 50 * 2**20, 80 * 2**30

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: Props())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 90100)
    prov = machine.provenance("cuda")
    assert (prov["tf32_matmul"], prov["tf32_cudnn"]) == (True, True)
    assert prov["l2_bytes"] == 50 * 2**20 and prov["device"] == "NVIDIA H100 80GB HBM3"
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"
    prov = machine.provenance("cuda")
    assert (prov["tf32_matmul"], prov["tf32_cudnn"]) == (False, False)


def test_legacy_flags_are_read_where_the_new_api_says_nothing():
    settings = machine.precision_settings()  # torch's defaults: matmul strict, cuDNN TF32
    assert settings["tf32_matmul"] == torch.backends.cuda.matmul.allow_tf32
    assert settings["legacy"]["float32_matmul_precision"] == torch.get_float32_matmul_precision()


def test_float32_precision_sets_and_restores(new_tf32_api):
    with machine.float32_precision("ieee"):
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    with pytest.raises(ValueError, match="kind='fp16'"):
        with machine.float32_precision("fp16"):
            pass


def test_roofs_on_cuda_include_tf32_and_bf16_only_where_supported(monkeypatch):
    assert [name for name, *_ in machine.roof_plan("cpu")] == ["float32"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a V100
    assert [name for name, *_ in machine.roof_plan("cuda")] == ["float32", "tf32"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)   # an H100
    assert [name for name, *_ in machine.roof_plan("cuda")] == ["float32", "tf32", "bfloat16"]


def _row(group, row_name, **changes):
    row = next(r for r in matrix.build_rows(group, quick=True) if r.name == row_name)
    return row.replace(**changes)


def test_each_row_is_a_share_of_the_roof_its_operators_can_reach():
    conv = _row("conv", "conv3x3")
    se = _row("channel", "SE")  # two Linear layers, no convolution
    mod = conv.build()
    assert measure.matmul_roof(conv, mod, "cuda", False, True) == "tf32"     # cuDNN TF32
    assert measure.matmul_roof(conv, mod, "cuda", False, False) == "float32"
    assert measure.matmul_roof(se, se.build(), "cuda", False, True) == "float32"
    assert measure.matmul_roof(se, se.build(), "cuda", True, False) == "tf32"  # matmul TF32
    assert measure.matmul_roof(conv, mod, "cpu", True, True) == "float32"
    assert measure.matmul_roof(conv.replace(dtype="bfloat16"), mod, "cuda", True, True) == \
        "bfloat16"


def test_compiled_rows_are_compared_with_compiled_rows():
    for group in matrix.GROUPS:
        rows = matrix.build_rows(group, quick=False)
        index = {(r.name, r.dtype, r.pass_, tuple(r.shape.values())): r for r in rows}
        for r in rows:
            base = index[(r.baseline, r.dtype, r.pass_, tuple(r.shape.values()))]
            assert base.compile == r.compile, (group, r.name, r.baseline)
    danet = matrix.build_rows("danet", quick=False)
    assert {r.baseline for r in danet if r.name == "CAM (compiled)"} == {
        "PAM (materialised, compiled)"}


def test_the_error_column_is_computed_on_the_runner_that_was_timed(monkeypatch):
    # A stand-in for torch.compile whose runner is off by exactly 0.5: the error must see it.
    monkeypatch.setattr(torch, "compile", lambda module, mode=None: lambda *a: module(*a) + 0.5)
    monkeypatch.setattr(torch._dynamo, "reset", lambda: None)
    row = _row("channel", "SE", compile="default")
    rec = measure.measure_row(row, torch.device("cpu"), _machine(), True)
    assert rec["status"] == "ok" and rec["max_abs_err"] == pytest.approx(0.5)


def test_an_interleaved_set_gives_paired_ratios_with_their_spread():
    rows = [_row("channel", n) for n in ("SE", "ECA")]
    assert len({measure.interleave_key(r) for r in rows}) == 1
    se, eca = measure.measure_set(rows, torch.device("cpu"), _machine(), True, set_name="s")
    assert se["ratio_to_baseline"] == 1.0 and se["ratio_p20"] == se["ratio_p80"] == 1.0
    assert eca["ratio_p20"] <= eca["ratio_to_baseline"] <= eca["ratio_p80"]
    assert se["blocks"] == eca["blocks"] >= 7 and se["interleave_set"] == "s"
    # the scaling sweep is one set: every size of every series in turn
    assert len({measure.interleave_key(r) for r in matrix.build_rows("scaling", True)}) == 1


def test_a_row_that_fails_leaves_the_others_of_its_set_measured(monkeypatch):
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("broken on purpose")

    monkeypatch.setitem(matrix.SUBJECTS, "Broken",
                        matrix.Subject(lambda C, h: Broken(), matrix.SUBJECTS["SE"].cost))
    rows = [_row("channel", "SE"), _row("channel", "SE", mechanism="Broken", name="Broken")]
    se, bad = measure.measure_set(rows, torch.device("cpu"), _machine(), True)
    assert se["status"] == "ok" and bad["status"] == "error" and "on purpose" in bad["error"]


def _machine():
    return {"copy_gbps": 10.0, "copy_bytes": 1, "matmul_tflops": {"float32": 0.1},
            "matmul_n": 1}
