"""Measuring helpers that lesson 08's explanations rest on: passes over the map, the SDPA kernel
that really runs, per-submodule times, operator counts and the priority order of a budgeted run."""

from __future__ import annotations

import time

import torch
from torch import nn

from attn_tutorial.bench import matrix, measure, timing
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
    assert times["1 (_Slow)"] >= 0.002
    assert times["total"] >= times["1 (_Slow)"] + times["0 (Linear)"]
    assert times["outside the submodules"] >= 0


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
