"""Timing: compare several callables on the same inputs, honestly.

* CPU: ``torch.utils.benchmark.Timer`` with ``num_threads=torch.get_num_threads()`` and
  ``blocked_autorange`` — median and interquartile range (IQR) over many blocks.
* CUDA (when the inputs live on a GPU): warm-up, ``torch.cuda.synchronize()``, CUDA events around
  each repetition, median, 20th/80th percentiles, IQR, and the peak memory of one call
  (``torch.cuda.max_memory_allocated``).
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on one call.

``compare({"ECA": eca, "SE": se}, x)`` returns a list of :class:`Timing`; ``format_table`` prints
them with the ratio to the first row and ``plot_bars`` draws them. Every callable gets the very
same input tensors, dtype and device.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

PASSES = ("forward", "forward+backward")


@dataclass
class Timing:
    """One callable's measurement. Times are seconds; ``peak_bytes`` only on CUDA."""

    name: str
    device: str
    pass_: str
    median: float
    iqr: float
    p20: float
    p80: float
    runs: int
    flops: int | None = None
    peak_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_tuple(args: Any) -> tuple:
    return args if isinstance(args, tuple) else (args,)


def _first_tensor(args: tuple) -> torch.Tensor | None:
    return next((a for a in args if isinstance(a, torch.Tensor)), None)


def _sum_outputs(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.sum()
    return sum(_sum_outputs(o) for o in out if isinstance(o, (torch.Tensor, tuple, list)))


def make_step(fn: Callable[..., Any], args: tuple, pass_: str = "forward") -> Callable[[], Any]:
    """A no-argument callable running one forward (no autograd) or one forward+backward."""
    if pass_ not in PASSES:
        raise ValueError(f"pass_={pass_!r} must be one of {PASSES}")
    if pass_ == "forward":
        def step() -> Any:
            with torch.no_grad():
                return fn(*args)
        return step
    leaves = tuple(
        a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a
        for a in args
    )

    def step() -> Any:
        _sum_outputs(fn(*leaves)).backward()

    return step


def count_flops(fn: Callable[..., Any], *args: Any, pass_: str = "forward") -> int:
    """FLOPs of one call as counted by ``FlopCounterMode`` (matmuls and convolutions)."""
    step = make_step(fn, args, pass_)
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def time_cpu(step: Callable[[], Any], min_run_time: float = 0.2) -> dict[str, float]:
    """Median/IQR of ``step()`` on the CPU with ``torch.utils.benchmark.Timer``."""
    timer = benchmark.Timer(
        stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads()
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    times = m.times
    return {
        "median": m.median,
        "iqr": m.iqr,
        "p20": _percentile(times, 0.2),
        "p80": _percentile(times, 0.8),
        "runs": m.number_per_run * len(times),
    }


def time_cpu_blocks(step: Callable[[], Any], min_run_time: float, blocks: int) -> dict[str, float]:
    """Warm-up, then ``blocks`` blocks of ``number`` calls with ``torch.utils.benchmark.Timer``.

    ``number`` is chosen so the blocks together take about ``min_run_time``; the statistics are
    over the per-call time of each block (median, 20th/80th percentiles, IQR). On a loaded
    machine the calls can be far slower than the estimate: after three blocks the loop stops
    once it has used three times ``min_run_time``.
    """
    once = 0.0
    for _ in range(2):  # warm-up: allocator, caches, lazy initialisation; and an estimate
        start = time.perf_counter()
        step()
        once = max(once, time.perf_counter() - start)
    number = max(1, int(min_run_time / blocks / max(once, 1e-7)))
    timer = benchmark.Timer(stmt="step()", globals={"step": step},
                            num_threads=torch.get_num_threads())
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < blocks:
        times.append(timer.timeit(number).median)
        if len(times) >= 3 and time.perf_counter() - start > 3 * min_run_time:
            break
    return {
        "median": statistics.median(times),
        "iqr": _percentile(times, 0.75) - _percentile(times, 0.25),
        "p20": _percentile(times, 0.2),
        "p80": _percentile(times, 0.8),
        "runs": number * len(times),
    }


def time_cuda(step: Callable[[], Any], warmup: int = 10, reps: int = 50,
              flush: torch.Tensor | None = None) -> dict[str, float]:
    """Median/IQR of ``step()`` on the GPU: warm-up, synchronise, CUDA events per repetition.

    ``flush``: a tensor larger than the L2 cache, overwritten before each repetition (outside
    the timed region) so every repetition starts with a cold L2.
    """
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    times = []
    for _ in range(reps):
        if flush is not None:
            flush.fill_(1.0)  # evicts the L2 cache, outside the timed region
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return {
        "median": statistics.median(times),
        "iqr": _percentile(times, 0.75) - _percentile(times, 0.25),
        "p20": _percentile(times, 0.2),
        "p80": _percentile(times, 0.8),
        "runs": reps,
        "peak_bytes": int(peak),
    }


def compare(
    fns: Mapping[str, Callable[..., Any]],
    *args: Any,
    pass_: str = "forward",
    min_run_time: float = 0.2,
    flops: bool = True,
) -> list[Timing]:
    """Time each callable on the same ``args`` (on their device), forward or forward+backward."""
    args = _as_tuple(args)
    first = _first_tensor(args)
    device = first.device if first is not None else torch.device("cpu")
    results = []
    for name, fn in fns.items():
        step = make_step(fn, args, pass_)
        if device.type == "cuda":
            stats = time_cuda(step)
        else:
            step()  # warm-up
            stats = time_cpu(step, min_run_time=min_run_time)
        results.append(
            Timing(
                name=name,
                device=device_name(device),
                pass_=pass_,
                median=stats["median"],
                iqr=stats["iqr"],
                p20=stats["p20"],
                p80=stats["p80"],
                runs=int(stats["runs"]),
                flops=count_flops(fn, *args, pass_=pass_) if flops else None,
                peak_bytes=stats.get("peak_bytes"),
            )
        )
    return results


def device_name(device: torch.device | str = "cpu") -> str:
    """A readable name of the device: the GPU's model, or the CPU's with the thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_table(results: Sequence[Timing]) -> str:
    """A plain-text table: median, IQR, ratio to the first row, FLOPs, peak memory."""
    if not results:
        return "(no results)"
    base = results[0].median
    header = f"{'name':<22}{'median':>11}{'IQR':>11}{'ratio':>8}{'FLOPs':>12}{'peak MB':>9}"
    rows = [f"{results[0].device} — {results[0].pass_}", header, "-" * len(header)]
    for r in results:
        flops = f"{r.flops:.3g}" if r.flops is not None else "-"
        peak = f"{r.peak_bytes / 2**20:.1f}" if r.peak_bytes is not None else "-"
        rows.append(
            f"{r.name:<22}{_fmt_time(r.median):>11}{_fmt_time(r.iqr):>11}"
            f"{r.median / base:>7.2f}x{flops:>12}{peak:>9}"
        )
    return "\n".join(rows)


def plot_bars(results: Sequence[Timing], ax: Any = None, title: str | None = None) -> Any:
    """Horizontal bars of the medians with IQR whiskers (milliseconds)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(results)))
    names = [r.name for r in results]
    med = [r.median * 1e3 for r in results]
    err = [r.iqr * 1e3 / 2 for r in results]
    ax.barh(names, med, xerr=err, color="tab:blue", alpha=0.8, capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel("median time per call (ms), whiskers = IQR")
    ax.set_title(title or f"{results[0].pass_} on {results[0].device}")
    return ax
