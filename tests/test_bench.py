"""The timing core (``attn_tutorial.bench``, re-exported from ``bench.timing``): same inputs for
every callable, FLOPs that match a stated formula, sane statistics, a table and a chart."""

from __future__ import annotations

import time

import matplotlib
import pytest
import torch

from attn_tutorial import bench
from attn_tutorial.bench import timing

matplotlib.use("Agg")


def test_count_flops_matches_the_matmul_formula():
    a, b = torch.randn(3, 5, 7), torch.randn(3, 7, 11)
    assert bench.count_flops(torch.bmm, a, b) == 2 * 3 * 5 * 7 * 11


def test_count_flops_conv_forward_and_backward():
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    x = torch.randn(2, 4, 5, 7)
    fwd = 2 * (2 * 6 * 5 * 7) * (4 * 9)  # 2 · outputs · (C_in · k²)
    assert bench.count_flops(conv, x) == fwd
    # backward computes the input gradient and the weight gradient, each as costly as the forward
    assert bench.count_flops(conv, x, pass_="forward+backward") == 3 * fwd


def test_compare_times_every_callable_on_the_same_input():
    seen = []

    def record(name):
        def fn(x):
            seen.append((name, x.data_ptr()))
            return x * 2
        return fn

    x = torch.randn(4, 8)
    start = time.perf_counter()
    results = bench.compare({"a": record("a"), "b": record("b")}, x, min_run_time=0.02)
    assert time.perf_counter() - start < 2.0
    assert [r.name for r in results] == ["a", "b"]
    assert {ptr for _, ptr in seen} == {x.data_ptr()}
    for r in results:
        assert r.median > 0 and r.iqr >= 0 and r.p20 <= r.median <= r.p80 and r.runs > 0
        assert r.device.startswith("CPU") and r.pass_ == "forward" and r.flops == 0


def test_slower_work_measures_slower():
    # ~500x more work; one thread so a busy machine's thread contention cannot invert the order
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(256, 256)
        fast, slow = bench.compare(
            {"add": lambda x: x + 1, "matmul chain": lambda x: x @ x @ x @ x @ x @ x},
            x, min_run_time=0.05,
        )
    finally:
        torch.set_num_threads(previous)
    assert slow.median > 3 * fast.median


def test_forward_backward_reaches_the_inputs():
    lin = torch.nn.Linear(8, 8)
    (r,) = bench.compare({"lin": lin}, torch.randn(4, 8), pass_="forward+backward",
                         min_run_time=0.02)
    assert r.pass_ == "forward+backward" and r.flops == 3 * 2 * 4 * 8 * 8
    with pytest.raises(ValueError, match="pass_"):
        bench.make_step(lin, (torch.randn(1, 8),), "backward")


def test_table_and_plot():
    results = bench.compare({"x2": lambda x: x * 2, "x3": lambda x: x * 3}, torch.randn(8),
                            min_run_time=0.02)
    table = bench.format_table(results)
    lines = table.splitlines()
    assert "median" in lines[1] and lines[3].startswith("x2") and "1.00x" in lines[3]
    ax = bench.plot_bars(results)
    assert len(ax.patches) == 2
    # the whiskers run from each row's p20 to its p80 (not a symmetric +-IQR/2 around the median)
    (segments,) = [c for c in ax.collections if len(c.get_segments()) == 2]
    for seg, r in zip(segments.get_segments(), results):
        assert seg[:, 0].min() == pytest.approx(r.p20 * 1e3) and seg[:, 0].max() == pytest.approx(r.p80 * 1e3)


def test_percentile_is_linear_interpolation():
    assert timing._percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    assert timing._percentile([0.0, 10.0], 0.2) == pytest.approx(2.0)


def test_block_timer_gives_a_spread_even_for_slow_calls():
    # blocked_autorange may return a single block when one call is long; the block timer keeps
    # several blocks so p20/p80 mean something.
    stats = bench.time_cpu_blocks(lambda: sum(range(20000)), min_run_time=0.02, blocks=5)
    assert stats["runs"] >= 3
    assert stats["p20"] <= stats["median"] <= stats["p80"] and stats["iqr"] >= 0


def test_forward_backward_steps_start_from_empty_gradients():
    # Reference: one backward of sum(lin(x)) computed by torch.autograd.grad. Without resetting
    # .grad, three calls would leave three times that in .grad (and read+write every gradient).
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    x = torch.randn(5, 6)
    xr = x.clone().requires_grad_()
    ref_w, ref_x = torch.autograd.grad(lin(xr).sum(), [lin.weight, xr])
    step = bench.make_step(lin, (x,), "forward+backward")
    for _ in range(3):
        step()
    assert torch.allclose(lin.weight.grad, ref_w)
    seen = []
    step = bench.make_step(lambda t: lin(seen.append(t) or t), (x,), "forward+backward",
                           params=list(lin.parameters()))
    for _ in range(3):
        step()
    assert torch.allclose(seen[-1].grad, ref_x) and torch.allclose(lin.weight.grad, ref_w)
    # the parameters of a plain function are passed explicitly
    w = torch.nn.Parameter(torch.randn(6, 4))
    step = bench.make_step(lambda t: t @ w, (x,), "forward+backward", params=[w])
    for _ in range(3):
        step()
    assert torch.allclose(w.grad, x.sum(0)[:, None].expand(6, 4))  # d/dw sum(x w) = colsum(x)


def test_interleaved_timer_alternates_blocks_and_pairs_them():
    calls = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    stats = timing.time_cpu_interleaved(steps, min_run_time=0.01, blocks=5)
    assert stats["a"]["blocks"] == stats["b"]["blocks"] == len(stats["a"]["times"]) >= 3
    timed = calls[4:]  # after two warm-up calls of each
    # blocks alternate: a run of a's, then a run of b's, then a's again ...
    runs = [timed[0]]
    for c in timed[1:]:
        if c != runs[-1]:
            runs.append(c)
    assert runs[:4] == ["a", "b", "a", "b"]
    for s in stats.values():
        assert s["p20"] <= s["median"] <= s["p80"]


def test_block_timer_keeps_its_minimum_of_blocks_on_a_slow_step():
    # A step far slower than planned: the loop may stop early, but never before min_blocks.
    stats = bench.time_cpu_blocks(lambda: time.sleep(0.004), min_run_time=0.001, blocks=9,
                                  min_blocks=5)
    assert 5 <= stats["blocks"] <= 9 and stats["runs"] == stats["blocks"]


@pytest.mark.parametrize("call, message", [
    (lambda: bench.compare([lambda x: x], torch.ones(1)), "fns="),
    (lambda: bench.compare({}, torch.ones(1)), "fns="),
    (lambda: bench.compare({"a": 3}, torch.ones(1)), r"fns\['a'\]=3 must be callable"),
    (lambda: bench.compare({"a": abs}, torch.ones(1), min_run_time=0), "min_run_time=0"),
    (lambda: bench.compare({"a": abs}, torch.ones(1), pass_="backward"), "pass_='backward'"),
    (lambda: bench.make_step("relu", (torch.ones(1),)), "fn='relu' must be callable"),
    (lambda: bench.count_flops(None, torch.ones(1)), "fn=None"),
    (lambda: bench.time_cpu(lambda: None, min_run_time=-1), "min_run_time=-1"),
    (lambda: bench.time_cpu_blocks(lambda: None, 0.01, blocks=0), "blocks=0"),
    (lambda: bench.time_cpu_blocks(lambda: None, 0.01, blocks=2.5), "blocks=2.5"),
    (lambda: bench.time_cpu_blocks(lambda: None, 0.01, blocks=5, min_blocks=9), "min_blocks=9"),
    (lambda: timing.time_cpu_interleaved({}, 0.01, 5), "steps="),
    (lambda: bench.format_table([1, 2]), "Timing"),
    (lambda: bench.plot_bars([]), "results is empty"),
    (lambda: bench.device_name("gpu0"), "device='gpu0'"),
    (lambda: timing.percentile([], 0.5), "empty"),
    (lambda: timing.percentile([1.0], 2), "q=2"),
])
def test_bad_input_to_the_timing_helpers_is_refused_by_name(call, message):
    with pytest.raises(ValueError, match=message):
        call()


class _FakeEvent:
    """A stand-in for torch.cuda.Event on the CPU: records the host clock."""

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        self.t = time.perf_counter()

    def elapsed_time(self, end):  # milliseconds, as CUDA events report
        return (end.t - self.t) * 1e3


def test_the_cuda_timer_path_runs_on_a_stand_in(monkeypatch):
    # torch.cuda's timing calls replaced by host-clock stand-ins: the CUDA branch's logic
    # (warm-up, peak memory, interleaved rounds, the L2 flush before every timed call) runs.
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    for name in ("synchronize", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *a, **k: 1000)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 5096)
    calls = []
    flush = torch.zeros(4)
    steps = {"slow": lambda: (calls.append("slow"), time.sleep(0.002)),
             "fast": lambda: calls.append("fast")}
    stats = timing.time_cuda_interleaved(steps, warmup=2, reps=5, flush=flush)
    assert calls[:6] == ["slow"] * 3 + ["fast"] * 3          # warm-up and the peak call, each
    assert calls[6:] == ["slow", "fast"] * 5                  # then rounds, in turn
    assert stats["slow"]["median"] >= 0.002 > stats["fast"]["median"]
    assert stats["slow"]["peak_bytes"] == 4096 and stats["fast"]["blocks"] == 5
    assert torch.equal(flush, torch.ones(4))                  # the flush buffer was overwritten


def test_compare_times_every_row_in_several_interleaved_blocks():
    # blocked_autorange on a busy machine may return one block: a spread of "0 ns" that means
    # nothing. compare() interleaves 5 to 7 blocks per row, so every row has a real spread.
    x = torch.randn(4, 16, 8, 8)
    results = bench.compare({"x2": lambda t: t * 2, "relu": torch.relu}, x, min_run_time=0.02,
                            flops=False)
    for r in results:
        assert 5 <= r.blocks <= 7 and r.p20 <= r.median <= r.p80 and r.runs >= r.blocks


def test_table_prints_no_spread_for_one_block_and_no_empty_columns():
    one = timing.Timing("one block", "cpu", "forward", 1e-3, 0.0, 1e-3, 1e-3, runs=3, blocks=1)
    many = timing.Timing("seven blocks", "cpu", "forward", 2e-3, 1e-4, 1.9e-3, 2.1e-3, runs=70,
                         blocks=7)
    lines = bench.format_table([one, many]).splitlines()
    assert "FLOPs" not in lines[1] and "peak MB" not in lines[1]  # no row has them
    width = lines[1].index("median") - 5  # the name column
    one_row, many_row = lines[3][width:].split(), lines[4][width:].split()
    assert one_row == ["1", "ms", "–", "1", "1.00x"], one_row
    assert many_row[2:] == ["100", "us", "7", "2.00x"], many_row
