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
from torch import nn
from torch.utils import benchmark
from torch.utils.flop_counter import FlopCounterMode

from attn_tutorial._validate import require_choice, require_int, require_number

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
    blocks: int = 1  # measured blocks the median and spread come from (one block: no spread)

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


def _require_callable(name: str, fn: object) -> None:
    if not callable(fn):
        raise ValueError(f"{name}={fn!r} must be callable (a function or a module), got a "
                         f"{type(fn).__name__}")


def make_step(fn: Callable[..., Any], args: tuple, pass_: str = "forward",
              params: Sequence[torch.Tensor] = ()) -> Callable[[], Any]:
    """A no-argument callable running one forward (no autograd) or one forward+backward.

    For ``forward+backward`` the floating-point inputs become leaf tensors, and every call
    first sets their ``.grad`` to None, and that of ``params`` (by default the parameters of
    ``fn`` when it is a module), as ``optimizer.zero_grad()`` does in a training step: without
    it each call would *add* into the previous call's gradients, an extra read and write of
    every gradient that no training step does.
    """
    _require_callable("fn", fn)
    require_choice("pass_", pass_, {"forward": "no autograd",
                                    "forward+backward": "the sum of the outputs, backward"})
    args = _as_tuple(args)
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
    owned = list(params) or (list(fn.parameters()) if isinstance(fn, nn.Module) else [])
    grads = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad] + owned

    def step() -> Any:
        for t in grads:
            t.grad = None
        _sum_outputs(fn(*leaves)).backward()

    return step


def count_flops(fn: Callable[..., Any], *args: Any, pass_: str = "forward") -> int:
    """FLOPs of one call as counted by ``FlopCounterMode`` (matmuls and convolutions)."""
    _require_callable("fn", fn)
    step = make_step(fn, args, pass_)
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0 <= q <= 1) of ``values``, interpolated linearly between ranks."""
    if not values:
        raise ValueError("values is empty: a percentile needs at least one value")
    if not 0 <= q <= 1:
        raise ValueError(f"q={q!r} must be a quantile in [0, 1]")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


_percentile = percentile


def _stats(times: Sequence[float], number: int) -> dict[str, Any]:
    return {"median": statistics.median(times),
            "iqr": percentile(times, 0.75) - percentile(times, 0.25),
            "p20": percentile(times, 0.2), "p80": percentile(times, 0.8),
            "runs": number * len(times), "blocks": len(times), "times": list(times)}


def time_cpu(step: Callable[[], Any], min_run_time: float = 0.2) -> dict[str, float]:
    """Median/IQR of ``step()`` on the CPU with ``torch.utils.benchmark.Timer``."""
    _require_callable("step", step)
    require_number("min_run_time", min_run_time, positive=True)
    timer = benchmark.Timer(
        stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads()
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    times = m.times
    return {
        "median": m.median,
        "iqr": m.iqr,
        "p20": percentile(times, 0.2),
        "p80": percentile(times, 0.8),
        "runs": m.number_per_run * len(times),
    }


def _require_steps(steps: Mapping[str, Callable[[], Any]]) -> None:
    if not isinstance(steps, Mapping) or not steps:
        raise ValueError(f"steps={steps!r} must be a non-empty dict of name -> step()")
    for name, step in steps.items():
        _require_callable(f"steps[{name!r}]", step)


def time_cpu_interleaved(steps: Mapping[str, Callable[[], Any]], min_run_time: float,
                         blocks: int, min_blocks: int | None = None) -> dict[str, dict[str, Any]]:
    """Time several steps in turn, block by block, on the CPU (``torch.utils.benchmark.Timer``).

    Each step gets two warm-up calls and a ``number`` of calls per block chosen so its blocks
    together take about ``min_run_time``. The blocks are then interleaved — one block of every
    step, then the next round — so a change of load during the measurement hits every step
    alike, and block ``i`` of one step can be paired with block ``i`` of another (a ratio per
    round). On a loaded machine the calls can be far slower than the estimate: after
    ``min_blocks`` rounds (default: half of ``blocks``, at least 5) the loop stops once it has
    used three times its planned time. Per step: median, IQR, 20th/80th percentiles over the
    blocks, ``runs``, ``blocks`` and the per-call ``times`` of each block.
    """
    _require_steps(steps)
    require_number("min_run_time", min_run_time, positive=True)
    require_int("blocks", blocks, minimum=3)
    min_blocks = require_int("min_blocks", min(blocks, max(5, blocks // 2))
                             if min_blocks is None else min_blocks, minimum=3)
    if min_blocks > blocks:
        raise ValueError(f"min_blocks={min_blocks} must be <= blocks={blocks}")
    timers, numbers = {}, {}
    for name, step in steps.items():
        once = 0.0
        for _ in range(2):  # warm-up: allocator, caches, lazy initialisation; and an estimate
            start = time.perf_counter()
            step()
            once = max(once, time.perf_counter() - start)
        numbers[name] = max(1, int(min_run_time / blocks / max(once, 1e-7)))
        timers[name] = benchmark.Timer(stmt="step()", globals={"step": step},
                                       num_threads=torch.get_num_threads())
    times: dict[str, list[float]] = {name: [] for name in steps}
    start = time.perf_counter()
    for round_ in range(blocks):
        for name in steps:
            times[name].append(timers[name].timeit(numbers[name]).median)
        planned = 3 * min_run_time * len(steps)
        if round_ + 1 >= min_blocks and time.perf_counter() - start > planned:
            break
    return {name: _stats(times[name], numbers[name]) for name in steps}


def time_cpu_blocks(step: Callable[[], Any], min_run_time: float, blocks: int,
                    min_blocks: int | None = None) -> dict[str, Any]:
    """:func:`time_cpu_interleaved` for a single step."""
    return time_cpu_interleaved({"step": step}, min_run_time, blocks, min_blocks)["step"]


def time_cuda_interleaved(steps: Mapping[str, Callable[[], Any]], warmup: int = 10,
                          reps: int = 50,
                          flush: torch.Tensor | None = None) -> dict[str, dict[str, Any]]:
    """Median/IQR of each step on the GPU, the steps in turn: CUDA events per repetition.

    Each step: ``warmup`` calls, then one synchronised call whose allocator peak is its
    ``peak_bytes``. Then ``reps`` rounds, each timing every step once between two CUDA events.
    ``flush``: a tensor larger than the L2 cache, overwritten before each timed call (outside
    the timed region) so every call starts with a cold L2.
    """
    _require_steps(steps)
    require_int("warmup", warmup, minimum=1)
    require_int("reps", reps, minimum=3)
    peaks = {}
    for name, step in steps.items():
        for _ in range(warmup):
            step()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peaks[name] = int(torch.cuda.max_memory_allocated() - base)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            if flush is not None:
                flush.fill_(1.0)  # evicts the L2 cache, outside the timed region
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times[name].append(start.elapsed_time(end) / 1e3)
    return {name: {**_stats(times[name], 1), "peak_bytes": peaks[name]} for name in steps}


def time_cuda(step: Callable[[], Any], warmup: int = 10, reps: int = 50,
              flush: torch.Tensor | None = None) -> dict[str, Any]:
    """:func:`time_cuda_interleaved` for a single step."""
    return time_cuda_interleaved({"step": step}, warmup, reps, flush)["step"]


def compare(
    fns: Mapping[str, Callable[..., Any]],
    *args: Any,
    pass_: str = "forward",
    min_run_time: float = 0.2,
    flops: bool = True,
) -> list[Timing]:
    """Time each callable on the same ``args`` (on their device), forward or forward+backward.

    On the CPU the callables are timed in turn, block by block (:func:`time_cpu_interleaved`,
    7 blocks, at least 5 even on a loaded machine), so a change of load hits them alike and every
    row has a spread; ``min_run_time`` is each callable's share of the time."""
    if not isinstance(fns, Mapping) or not fns:
        raise ValueError(f"fns={fns!r} must be a non-empty dict of name -> callable, e.g. "
                         "{'ECA': eca, 'SE': se}")
    for name, fn in fns.items():
        _require_callable(f"fns[{name!r}]", fn)
    require_number("min_run_time", min_run_time, positive=True)
    args = _as_tuple(args)
    first = _first_tensor(args)
    device = first.device if first is not None else torch.device("cpu")
    steps = {name: make_step(fn, args, pass_) for name, fn in fns.items()}
    if device.type == "cuda":
        measured = {name: time_cuda(step) for name, step in steps.items()}
    else:
        measured = time_cpu_interleaved(steps, min_run_time=min_run_time, blocks=7, min_blocks=5)
    results = []
    for name, fn in fns.items():
        stats = measured[name]
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
                blocks=int(stats.get("blocks", 1)),
            )
        )
    return results


def _device(device: object) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} must be a torch device such as 'cpu' or "
                         "'cuda'") from None


def device_name(device: torch.device | str = "cpu") -> str:
    """A readable name of the device: the GPU's model, or the CPU's with the thread count."""
    device = _device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def _fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def _require_timings(results: object) -> None:
    if not isinstance(results, Sequence) or not all(isinstance(r, Timing) for r in results):
        raise ValueError(f"results={results!r} must be a list of Timing, as compare() returns")


def format_table(results: Sequence[Timing]) -> str:
    """A plain-text table: median, IQR (over the measured blocks), the number of blocks, ratio to
    the first row, and FLOPs and peak memory where any row has them. A row measured in a single
    block has no spread: its IQR prints as "–", never as 0."""
    _require_timings(results)
    if not results:
        return "(no results)"
    base = results[0].median
    width = max(22, 2 + max(len(r.name) for r in results))
    show_flops = any(r.flops is not None for r in results)
    show_peak = any(r.peak_bytes is not None for r in results)
    header = f"{'name':<{width}}{'median':>11}{'IQR':>11}{'blocks':>7}{'ratio':>8}"
    header += f"{'FLOPs':>12}" * show_flops + f"{'peak MB':>9}" * show_peak
    rows = [f"{results[0].device} — {results[0].pass_}", header, "-" * len(header)]
    for r in results:
        iqr = _fmt_time(r.iqr) if r.blocks > 1 else "–"
        row = f"{r.name:<{width}}{_fmt_time(r.median):>11}{iqr:>11}{r.blocks:>7}{r.median / base:>7.2f}x"
        if show_flops:
            row += f"{r.flops:.3g}" .rjust(12) if r.flops is not None else "-".rjust(12)
        if show_peak:
            row += f"{r.peak_bytes / 2**20:.1f}".rjust(9) if r.peak_bytes is not None else "-".rjust(9)
        rows.append(row)
    return "\n".join(rows)


def plot_bars(results: Sequence[Timing], ax: Any = None, title: str | None = None) -> Any:
    """Horizontal bars of the medians, whiskers from the 20th to the 80th percentile (ms)."""
    import matplotlib.pyplot as plt

    _require_timings(results)
    if not results:
        raise ValueError("results is empty: nothing to plot (pass what compare() returned)")
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(results)))
    names = [r.name for r in results]
    med = [r.median * 1e3 for r in results]
    err = [[(r.median - r.p20) * 1e3 for r in results], [(r.p80 - r.median) * 1e3 for r in results]]
    ax.barh(names, med, xerr=err, color="tab:blue", alpha=0.8, capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel("median time per call (ms), whiskers: 20th to 80th percentile")
    ax.set_title(title or f"{results[0].pass_} on {results[0].device}")
    return ax
