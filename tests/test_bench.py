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


def test_percentile_is_linear_interpolation():
    assert timing._percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0.25) == 2.0
    assert timing._percentile([0.0, 10.0], 0.2) == pytest.approx(2.0)


def test_block_timer_gives_a_spread_even_for_slow_calls():
    # blocked_autorange may return a single block when one call is long; the block timer keeps
    # several blocks so p20/p80 mean something.
    stats = bench.time_cpu_blocks(lambda: sum(range(20000)), min_run_time=0.02, blocks=5)
    assert stats["runs"] >= 3
    assert stats["p20"] <= stats["median"] <= stats["p80"] and stats["iqr"] >= 0
