"""Measuring rows of the matrix: build each module, time the rows that are compared together in
turn, fill the card's row records.

Timing protocol. Rows compared with each other (a row and its baseline at one shape, dtype,
pass and compile mode; the whole sweep of the ``scaling`` group) form one *interleaved set*:
their blocks of calls run in turn, round after round, so a change of load during the
measurement hits them alike (:func:`attn_tutorial.bench.timing.time_cpu_interleaved`; CUDA:
:func:`~attn_tutorial.bench.timing.time_cuda_interleaved`). A row whose baseline is in its set
gets ``ratio_to_baseline`` as the median of the per-round ratios, with their 20th and 80th
percentiles (``ratio_p20``, ``ratio_p80``). CPU: two warm-up calls per row, blocks of calls with
``torch.utils.benchmark.Timer`` and ``num_threads=torch.get_num_threads()``; caches stay warm.
CUDA: warm-up calls, CUDA events around each call, peak memory from
``torch.cuda.max_memory_allocated``; a "cold" row flushes the L2 cache (writes a buffer twice
its size) before each call.

Modules run in eval mode (BatchNorm uses running statistics, so each sample is independent);
``gamma`` of PAM/CAM is set to 1 (it is 0 at initialisation, which would make the output equal
the input and the error check empty).

Cost columns come from the row's cost model (forward FLOPs in the ``FlopCounterMode`` convention
and minimum bytes). For ``forward+backward`` a row uses 3× the forward FLOPs (the backward of a
matmul or convolution is two products of the same size) and ``dtype · (3·in + 2·out + 3·params)``
bytes (forward: read x, params, write y; backward: read dy, x, params, write dx and the parameter
gradients). Each forward+backward call starts from empty gradients (``make_step``).

``share_matmul`` divides the achieved rate by the matmul roof named in ``matmul_roof``:
``bfloat16`` for bf16 rows; on CUDA, ``tf32`` for a float32 row whose operators may run in TF32
(a convolution while cuDNN TF32 is on, or any row while matmul TF32 is on), else ``float32``.
``max_abs_err`` is ``max |y − y64|`` on the first sample, where ``y`` comes from the runner that
was timed (the compiled one for compiled rows) and ``y64`` from the eager module and the same
input values in float64.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
from torch import nn

from attn_tutorial.bench import timing
from attn_tutorial.bench.inside import (count_ops, leaf_times, map_passes, peak_bytes_dispatch,
                                        sdpa_backend)
from attn_tutorial.bench.machine import DTYPES, measure_machine, provenance
from attn_tutorial.bench.matrix import MatrixRow
from attn_tutorial.show import count_params

__all__ = ["DTYPES", "measure_machine", "provenance", "measure_row", "measure_set",
           "interleave_key", "empty_record", "row_input", "row_runner", "matmul_roof",
           "sdpa_backend", "peak_bytes_dispatch", "count_ops", "map_passes", "leaf_times"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def row_input(row: MatrixRow, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The row's input, the same values on every device and dtype (seed 0, drawn in float64)."""
    s = row.shape
    g = torch.Generator().manual_seed(0)
    shape = (s["B"], s["H"] * s["W"], s["C"]) if row.tokens else (s["B"], s["C"], s["H"], s["W"])
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def _prepared(row: MatrixRow) -> nn.Module:
    torch.manual_seed(0)
    module = row.build().eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.split(".")[-1] == "gamma":
                p.fill_(1.0)
    return module


def row_runner(module: Callable[..., Any], row: MatrixRow) -> Callable[..., Any]:
    """``x -> module(x)``, or ``x -> module(x, H, W)`` for token modules that need the grid."""
    if row.grid_args:
        H, W = row.shape["H"], row.shape["W"]
        return lambda x: module(x, H, W)
    return module


def _counted_bytes(row: MatrixRow, module: nn.Module, dtype_bytes: int) -> int:
    s = row.shape
    n_in = s["B"] * s["C"] * s["H"] * s["W"]
    shape = (1, s["H"] * s["W"], s["C"]) if row.tokens else (1, s["C"], s["H"], s["W"])
    with torch.no_grad():  # on the meta device: shapes only, no arithmetic
        y = row_runner(copy.deepcopy(module).to("meta"), row)(torch.empty(shape, device="meta"))
    n_out = y.numel() * s["B"]
    params = count_params(module)
    return dtype_bytes * (3 * n_in + 2 * n_out + 3 * params)


def matmul_roof(row: MatrixRow, module: nn.Module, device_type: str,
                tf32_matmul: bool | None, tf32_cudnn: bool | None) -> str:
    """Which measured matmul rate the row's ``share_matmul`` is a share of (see the module doc)."""
    if row.dtype != "float32":
        return row.dtype
    if device_type != "cuda":
        return "float32"
    has_conv = any(isinstance(m, nn.modules.conv._ConvNd) for m in module.modules())
    return "tf32" if tf32_matmul or (has_conv and tf32_cudnn) else "float32"


def empty_record(row: MatrixRow, device_type: str, l2: str = "warm") -> dict[str, Any]:
    """The card record of ``row`` with the cost model filled in and nothing measured yet."""
    dtype_bytes = torch.finfo(DTYPES[row.dtype]).bits // 8
    fwd = row.cost(dtype_bytes)
    factor = 1 if row.pass_ == "forward" else 3
    return {
        "name": row.name, "mechanism": row.mechanism, "impl": row.impl, "series": row.series,
        "baseline": row.baseline, "dtype": row.dtype, "memory_format": "contiguous",
        "compile": row.compile, "sdpa_backend": None, "shape": dict(row.shape),
        "hyper": dict(row.hyper), "pass": row.pass_, "l2": l2, "status": "ok", "error": None,
        "interleave_set": None, "blocks": None,
        "reps": None, "median_s": None, "p20_s": None, "p80_s": None, "iqr_s": None,
        "peak_bytes": None,
        "peak_method": "cuda.max_memory_allocated" if device_type == "cuda" else "dispatch",
        "params": fwd.params, "flops": fwd.flops * factor,
        "min_bytes": fwd.min_bytes, "achieved_tflops": None, "achieved_gbps": None,
        "share_copy_bw": None, "matmul_roof": None, "share_matmul": None,
        "ratio_to_baseline": None, "ratio_p20": None, "ratio_p80": None,
        "max_abs_err": None, "reference_note": None,
    }


def interleave_key(row: MatrixRow) -> tuple:
    """Rows with one key are timed in turn: one shape (the whole sweep for ``scaling``), one
    dtype, pass, compile mode and priority."""
    where = None if row.group == "scaling" else tuple(sorted(row.shape.items()))
    return (row.group, row.priority, where, row.dtype, row.pass_, row.compile)


def _failed(rec: dict[str, Any], err: BaseException) -> dict[str, Any]:
    rec["status"] = "oom" if _is_oom(err) else "error"
    rec["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    return rec


class _Prepared:
    """One row ready to time: its record, module, runner, input and step."""

    def __init__(self, row: MatrixRow, device: torch.device, l2: str,
                 prov: dict[str, Any]) -> None:
        dtype = DTYPES[row.dtype]
        self.row, self.rec = row, empty_record(row, device.type, l2)
        module = _prepared(row)
        if row.pass_ != "forward":
            self.rec["min_bytes"] = _counted_bytes(row, module, torch.finfo(dtype).bits // 8)
        self.module = module.to(device=device, dtype=dtype)
        self.rec["matmul_roof"] = matmul_roof(row, module, device.type, prov.get("tf32_matmul"),
                                              prov.get("tf32_cudnn"))
        runner: Callable[..., Any] = self.module
        if row.compile != "none":
            torch._dynamo.reset()  # a fresh compile per row: no recompile limit, no stale guards
            runner = torch.compile(self.module, mode=None if row.compile == "default"
                                   else row.compile)
        self.fn = row_runner(runner, row)
        self.x = row_input(row, device, dtype)
        self.step = timing.make_step(self.fn, (self.x,), row.pass_,
                                     params=list(self.module.parameters()))
        if row.sdpa:
            self.rec["sdpa_backend"] = sdpa_backend(self.step)
        self.step()  # a first call: compiles, and an error shows here rather than mid-set


def _fill(p: _Prepared, stats: dict[str, Any], machine: dict[str, Any]) -> None:
    rec = p.rec
    rec.update(reps=int(stats["runs"]), blocks=int(stats["blocks"]), median_s=stats["median"],
               p20_s=stats["p20"], p80_s=stats["p80"], iqr_s=stats["iqr"],
               peak_bytes=stats.get("peak_bytes"))
    med = stats["median"]
    rec["achieved_tflops"] = rec["flops"] / med / 1e12
    rec["achieved_gbps"] = rec["min_bytes"] / med / 1e9
    rec["share_copy_bw"] = rec["achieved_gbps"] / machine["copy_gbps"]
    rate = machine["matmul_tflops"].get(rec["matmul_roof"])
    if rate is None and rec["matmul_roof"] == "tf32":  # a machine measured without a TF32 roof
        rec["matmul_roof"], rate = "float32", machine["matmul_tflops"].get("float32")
    rec["share_matmul"] = rec["achieved_tflops"] / rate if rate else None
    try:
        rec["max_abs_err"] = _max_abs_err(p)
    except Exception as err:  # noqa: BLE001 - e.g. the float64 reference does not fit
        rec["reference_note"] = f"{type(err).__name__}: {str(err)[:200]}"


def measure_set(rows: Sequence[MatrixRow], device: torch.device, machine: dict[str, Any],
                quick: bool, l2: str = "warm", l2_bytes: int | None = None,
                prov: dict[str, Any] | None = None,
                set_name: str | None = None) -> list[dict[str, Any]]:
    """Time ``rows`` interleaved; one record per row (status ``ok``, ``oom`` or ``error``).

    A row that fails while being built or on its first call is recorded as failed and the
    others are timed without it. ``prov``: the run's provenance (its TF32 flags choose each
    row's matmul roof).
    """
    prov = prov or {}
    ready: list[_Prepared] = []
    out: list[dict[str, Any]] = []
    for row in rows:
        try:
            ready.append(_Prepared(row, device, l2, prov))
            out.append(ready[-1].rec)
        except Exception as err:  # noqa: BLE001 - a failing row is recorded, not fatal
            out.append(_failed(empty_record(row, device.type, l2), err))
    flush = None
    try:
        if ready:
            steps = {str(i): p.step for i, p in enumerate(ready)}
            if device.type == "cuda":
                if l2 == "cold" and l2_bytes:
                    flush = torch.empty(2 * l2_bytes // 4, device=device)
                stats = timing.time_cuda_interleaved(steps, warmup=5 if quick else 10,
                                                     reps=20 if quick else 50, flush=flush)
            else:
                stats = timing.time_cpu_interleaved(steps, min_run_time=0.05 if quick else 0.3,
                                                    blocks=15 if quick else 21)
            _sync(device)
            for i, p in enumerate(ready):
                if device.type != "cuda":
                    stats[str(i)]["peak_bytes"] = peak_bytes_dispatch(p.step)
                p.rec["interleave_set"] = set_name
                _fill(p, stats[str(i)], machine)
            _paired_ratios(ready, stats)
    except Exception as err:  # noqa: BLE001 - e.g. an OOM in the middle of the set
        for p in ready:
            if p.rec["median_s"] is None:
                _failed(p.rec, err)
    finally:
        del ready, flush
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def _paired_ratios(ready: list[_Prepared], stats: dict[str, dict[str, Any]]) -> None:
    """Per round, the row's block time over its baseline's: median and 20th/80th percentiles."""
    def key(name: str | None, p: _Prepared) -> tuple:
        return (name, tuple(sorted(p.row.shape.items())))

    index = {key(p.row.name, p): str(i) for i, p in enumerate(ready)}
    for i, p in enumerate(ready):
        base = index.get(key(p.row.baseline, p))
        if base is None:
            continue
        mine, theirs = stats[str(i)]["times"], stats[base]["times"]
        ratios = [a / b for a, b in zip(mine, theirs)]
        p.rec["ratio_to_baseline"] = timing.percentile(ratios, 0.5)
        p.rec["ratio_p20"] = timing.percentile(ratios, 0.2)
        p.rec["ratio_p80"] = timing.percentile(ratios, 0.8)


def measure_row(row: MatrixRow, device: torch.device, machine: dict[str, Any], quick: bool,
                l2: str = "warm", l2_bytes: int | None = None,
                prov: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time one row on its own; returns the card's row record."""
    return measure_set([row], device, machine, quick, l2, l2_bytes, prov)[0]


def _max_abs_err(p: _Prepared) -> float:
    ref = copy.deepcopy(p.module).to(torch.float64)
    with torch.no_grad():
        y = p.fn(p.x)[:1].to(torch.float64)  # the runner that was timed, on the timed input
        y64 = row_runner(ref, p.row)(p.x[:1].to(torch.float64))
    return float((y - y64).abs().max())
