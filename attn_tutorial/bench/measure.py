"""Measuring: the machine's own limits, the provenance of a run, and one row of the matrix.

Timing protocol. CPU: two warm-up calls, then blocks of calls with
``torch.utils.benchmark.Timer`` and ``num_threads=torch.get_num_threads()``
(:func:`attn_tutorial.bench.timing.time_cpu_blocks`); caches stay warm. CUDA: warm-up calls,
``torch.cuda.synchronize()``, CUDA events around each repetition, median and 20th/80th
percentiles, peak memory from ``torch.cuda.max_memory_allocated``; a "cold" row flushes the L2
cache (writes a buffer twice its size) before each repetition.

Modules run in eval mode (BatchNorm uses running statistics, so each sample is independent);
``gamma`` of PAM/CAM is set to 1 (it is 0 at initialisation, which would make the output equal
the input and the error check empty).

Cost columns come from the row's cost model (forward FLOPs in the ``FlopCounterMode`` convention
and minimum bytes). For ``forward+backward`` a row uses 3× the forward FLOPs (the backward of a
matmul or convolution is two products of the same size) and ``dtype · (3·in + 2·out + 3·params)``
bytes (forward: read x, params, write y; backward: read dy, x, params, write dx and the parameter
gradients). ``max_abs_err`` is ``max |y − y64|`` on the first sample, where ``y64`` is the same
module and the same input values converted to float64.

CPU peak memory is an estimate (``peak_method: "dispatch"``): the peak of the bytes held by the
tensors that the call's operators allocate, tracked under a ``TorchDispatchMode``. It sees every
tensor an operator returns, not the allocator's caching or a kernel's private scratch space.
"""

from __future__ import annotations

import copy
import os
import platform
import statistics
import subprocess
import time
import warnings
import weakref
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attn_tutorial.bench import timing
from attn_tutorial.bench.matrix import MatrixRow
from attn_tutorial.show import count_params

__all__ = ["DTYPES", "measure_machine", "provenance", "measure_row", "empty_record", "row_input",
           "row_runner", "sdpa_backend", "peak_bytes_dispatch", "count_ops", "map_passes",
           "leaf_times"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_step(step: Callable[[], Any], device: torch.device, quick: bool,
               flush: torch.Tensor | None = None) -> dict[str, Any]:
    if device.type == "cuda":
        return timing.time_cuda(step, warmup=5 if quick else 10, reps=20 if quick else 50,
                                flush=flush)
    return timing.time_cpu_blocks(step, min_run_time=0.03 if quick else 0.3,
                                  blocks=7 if quick else 21)


def measure_machine(device: torch.device | str = "cpu", quick: bool = True) -> dict[str, Any]:
    """Copy bandwidth (GB/s, read + write) and matmul rate (TFLOP/s per dtype) on ``device``.

    On CUDA the matmul is timed after warm-up calls, so the first cuBLAS call (library start-up,
    handle and workspace creation) is never inside the measured rate; the float32 rate is
    measured under the process's TF32 settings, which the provenance records.
    """
    device = torch.device(device)
    # Larger than any last-level cache, so the copy streams from memory (H100 L2: 50 MB).
    nbytes = (64 if device.type == "cpu" else 256 if quick else 1024) * 2**20
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    t = _time_step(lambda: dst.copy_(src), device, quick)["median"]
    copy_gbps = 2 * nbytes / t / 1e9
    del src, dst
    n = 512 if device.type == "cpu" else 4096 if quick else 8192
    rates = {}
    for name in (("float32",) if device.type == "cpu" else ("float32", "bfloat16")):
        a = torch.randn(n, n, device=device, dtype=DTYPES[name])
        b = torch.randn(n, n, device=device, dtype=DTYPES[name])
        t = _time_step(lambda: torch.mm(a, b), device, quick)["median"]
        rates[name] = 2 * n**3 / t / 1e12
    return {"copy_gbps": copy_gbps, "copy_bytes": nbytes, "matmul_tflops": rates, "matmul_n": n}


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not on every platform
        return None


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where and how a card was measured; fields that do not apply on this device are null."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if cuda else None
    driver = None
    if cuda:
        try:
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - the driver version is informative only
            driver = None
    return {
        "device": timing.device_name(device),
        "device_type": device.type,
        "sm_count": props.multi_processor_count if cuda else None,
        "l2_bytes": (int(getattr(props, "L2_cache_size", 0)) or None) if cuda else None,
        "gpu_memory_bytes": int(props.total_memory) if cuda else None,
        "driver": driver,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "load_average": _load_average(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32 if cuda else None,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "memory_format": "contiguous",
        "module_mode": "eval",
    }


class _LiveBytes(TorchDispatchMode):
    """Peak of the bytes held by tensors that operators allocate (views and in-place excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.ops = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        returns = func._schema.returns
        outs = out if isinstance(out, (tuple, list)) else (out,)
        for i, t in enumerate(outs):
            if not isinstance(t, torch.Tensor):
                continue
            if i < len(returns) and returns[i].alias_info is not None:
                continue
            n = t.untyped_storage().nbytes()
            self.live += n
            self.peak = max(self.peak, self.live)
            weakref.finalize(t, self._free, n)
        return out


def peak_bytes_dispatch(step: Callable[[], Any]) -> int:
    """Peak bytes held by the tensors the operators of ``step()`` allocate (CPU estimate)."""
    with _LiveBytes() as mode:
        result = step()
        del result
    return int(mode.peak)


def count_ops(step: Callable[[], Any]) -> int:
    """How many ATen operators one call of ``step()`` dispatches."""
    with _LiveBytes() as mode:
        step()
    return mode.ops


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def sdpa_backend(step: Callable[[], Any]) -> str:
    """The SDPA kernel the dispatcher picks: the first in torch's priority order that runs.

    Fused kernels refuse some inputs: on the CPU the flash kernel needs q, k and v of the same
    head width, so DANet's PAM (q, k of width C/8, v of width C) falls back to ``math``, which
    materialises the N×N map like the eager code.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    by_value = {int(b.value): b for b in SDPBackend.__members__.values()}
    try:
        order = [by_value[i] for i in torch._C._get_sdp_priority_order() if i in by_value]
    except Exception:  # noqa: BLE001 - older torch: the documented default order
        order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    for backend in order:
        if backend.name in ("ERROR", "OVERRIDEABLE"):
            continue
        try:
            with sdpa_kernel([backend]), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "kernel not used because ..." while probing
                step()
            return backend.name.lower()
        except RuntimeError:
            continue
    return "unknown"


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
        "reps": None, "median_s": None, "p20_s": None, "p80_s": None, "iqr_s": None,
        "peak_bytes": None,
        "peak_method": "cuda.max_memory_allocated" if device_type == "cuda" else "dispatch",
        "params": fwd.params, "flops": fwd.flops * factor,
        "min_bytes": fwd.min_bytes, "achieved_tflops": None, "achieved_gbps": None,
        "share_copy_bw": None, "share_matmul": None, "ratio_to_baseline": None,
        "max_abs_err": None, "reference_note": None,
    }


def measure_row(row: MatrixRow, device: torch.device, machine: dict[str, Any], quick: bool,
                l2: str = "warm", l2_bytes: int | None = None) -> dict[str, Any]:
    """Time one row; returns the card's row record (status ``ok``, ``oom`` or ``error``)."""
    dtype = DTYPES[row.dtype]
    dtype_bytes = torch.finfo(dtype).bits // 8
    rec = empty_record(row, device.type, l2)
    module = flush = None
    try:
        module = _prepared(row)
        if row.pass_ != "forward":
            rec["min_bytes"] = _counted_bytes(row, module, dtype_bytes)
        module = module.to(device=device, dtype=dtype)
        runner: Callable[..., Any] = module
        if row.compile != "none":
            torch._dynamo.reset()  # a fresh compile per row: no recompile limit, no stale guards
            runner = torch.compile(module, mode=None if row.compile == "default" else row.compile)
        fn = row_runner(runner, row)
        x = row_input(row, device, dtype)
        step = timing.make_step(fn, (x,), row.pass_)
        if row.sdpa:
            rec["sdpa_backend"] = sdpa_backend(step)
        if l2 == "cold" and l2_bytes:
            flush = torch.empty(2 * l2_bytes // 4, device=device)
        stats = _time_step(step, device, quick, flush)
        _sync(device)
        if device.type != "cuda":
            stats["peak_bytes"] = peak_bytes_dispatch(step)
        rec.update(reps=int(stats["runs"]), median_s=stats["median"], p20_s=stats["p20"],
                   p80_s=stats["p80"], iqr_s=stats["iqr"], peak_bytes=stats.get("peak_bytes"))
        med = stats["median"]
        rec["achieved_tflops"] = rec["flops"] / med / 1e12
        rec["achieved_gbps"] = rec["min_bytes"] / med / 1e9
        rec["share_copy_bw"] = rec["achieved_gbps"] / machine["copy_gbps"]
        peak_rate = machine["matmul_tflops"].get(row.dtype)
        rec["share_matmul"] = rec["achieved_tflops"] / peak_rate if peak_rate else None
        try:
            rec["max_abs_err"] = _max_abs_err(module, row, x)
        except Exception as err:  # noqa: BLE001 - e.g. the float64 reference does not fit
            rec["reference_note"] = f"{type(err).__name__}: {str(err)[:200]}"
    except Exception as err:  # noqa: BLE001 - a failing row is recorded, not fatal
        rec["status"] = "oom" if _is_oom(err) else "error"
        rec["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    finally:
        del module, flush
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rec


def _max_abs_err(module: nn.Module, row: MatrixRow, x: torch.Tensor) -> float:
    ref = copy.deepcopy(module).to(torch.float64)
    x1 = x[:1]
    with torch.no_grad():
        y = row_runner(module, row)(x1).to(torch.float64)
        y64 = row_runner(ref, row)(x1.to(torch.float64))
    return float((y - y64).abs().max())


class _MapPasses(TorchDispatchMode):
    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.reads, self.writes = numel, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        flat = list(args) + list((kwargs or {}).values())
        returns = func._schema.returns
        if func._schema.is_mutable or any(r.alias_info is not None for r in returns):
            return out  # views and in-place operators: not a fresh pass over memory
        if any(isinstance(a, torch.Tensor) and a.numel() == self.numel for a in flat):
            self.reads += 1
        outs = out if isinstance(out, (tuple, list)) else (out,)
        self.writes += sum(isinstance(t, torch.Tensor) and t.numel() == self.numel for t in outs)
        return out


def map_passes(fn: Callable[..., Any], x: torch.Tensor) -> tuple[int, int]:
    """How many operators of ``fn(x)`` read a tensor of ``x``'s size, and how many write one.

    Views are not passes over memory and are not counted. For an eager SE or ECA gate on a
    feature map this is (2, 1): the average pool reads the map, the product with the gate reads
    it again and writes the output.
    """
    with torch.no_grad(), _MapPasses(x.numel()) as mode:
        fn(x)
    return mode.reads, mode.writes


def leaf_times(module: nn.Module, fn: Callable[[torch.Tensor], Any], x: torch.Tensor,
               calls: int = 20,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Seconds per call spent inside each leaf submodule of ``module`` while ``fn(x)`` runs.

    Forward hooks read ``clock`` around every leaf (CPU only: on a GPU the clock would see
    kernel launches, not kernels; ``time.thread_time`` is right at one thread and ignores other
    processes). ``"total"`` is the whole call and ``"outside the submodules"`` the rest: the
    functional code between them (attention products, softmax, reshapes). The median over
    ``calls`` calls, after two warm-up calls.
    """
    leaves = {name: m for name, m in module.named_modules() if not list(m.children()) and name}
    samples: dict[str, list[float]] = {name: [] for name in leaves}
    starts: dict[str, float] = {}
    handles = []
    for name, leaf in leaves.items():
        handles.append(leaf.register_forward_pre_hook(
            lambda m, a, name=name: starts.__setitem__(name, clock())))
        handles.append(leaf.register_forward_hook(
            lambda m, a, out, name=name: samples[name].append(clock() - starts[name])))
    totals = []
    try:
        with torch.no_grad():
            for i in range(calls + 2):
                start = clock()
                fn(x)
                if i >= 2:
                    totals.append(clock() - start)
    finally:
        for h in handles:
            h.remove()
    out = {f"{name} ({type(leaves[name]).__name__})": statistics.median(v[2:])
           for name, v in samples.items() if len(v) > 2}
    out["total"] = statistics.median(totals)
    out["outside the submodules"] = out["total"] - sum(
        v for k, v in out.items() if k != "total")
    return out
