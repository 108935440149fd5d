"""Looking inside one call: the memory it holds, the operators it dispatches, its passes over a
map, the SDPA kernel it runs, and the time spent inside each submodule.

CPU peak memory is an estimate (``peak_method: "dispatch"``): the peak of the bytes held by the
tensors that the call's operators allocate, tracked under a ``TorchDispatchMode``. It sees every
tensor an operator returns, not the allocator's caching or a kernel's private scratch space.
"""

from __future__ import annotations

import statistics
import time
import warnings
import weakref
from typing import Any, Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attn_tutorial._validate import require_int
from attn_tutorial.bench.timing import percentile

__all__ = ["peak_bytes_dispatch", "count_ops", "map_passes", "sdpa_backend", "leaf_times"]


def _require_step(step: object) -> None:
    if not callable(step):
        raise ValueError(f"step={step!r} must be a callable taking no argument, e.g. "
                         "bench.make_step(fn, (x,))")


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
    _require_step(step)
    with _LiveBytes() as mode:
        result = step()
        del result
    return int(mode.peak)


def count_ops(step: Callable[[], Any]) -> int:
    """How many ATen operators one call of ``step()`` dispatches."""
    _require_step(step)
    with _LiveBytes() as mode:
        step()
    return mode.ops


def sdpa_backend(step: Callable[[], Any]) -> str:
    """The SDPA kernel the dispatcher picks: the first in torch's priority order that runs.

    Fused kernels refuse some inputs: on the CPU the flash kernel needs q, k and v of the same
    head width, so DANet's PAM (q, k of width C/8, v of width C) falls back to ``math``, which
    materialises the N×N map like the eager code.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _require_step(step)
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
    if not callable(fn):
        raise ValueError(f"fn={fn!r} must be callable as fn(x)")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor (its size is what a pass is counted by), "
                         f"got {type(x).__name__}")
    with torch.no_grad(), _MapPasses(x.numel()) as mode:
        fn(x)
    return mode.reads, mode.writes


def leaf_times(module: nn.Module, fn: Callable[[torch.Tensor], Any], x: torch.Tensor,
               calls: int = 20,
               clock: Callable[[], float] = time.perf_counter) -> dict[str, dict[str, float]]:
    """Seconds per call spent inside each leaf submodule of ``module`` while ``fn(x)`` runs.

    Forward hooks read ``clock`` around every leaf (CPU only: on a GPU the clock would see
    kernel launches, not kernels; ``time.thread_time`` is right at one thread and ignores other
    processes). ``"total"`` is the whole call and ``"outside the submodules"`` the rest: the
    functional code between them (attention products, softmax, reshapes). Each entry holds the
    ``median``, ``p20`` and ``p80`` over ``calls`` calls, after two warm-up calls.
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module={type(module).__name__} must be a torch.nn.Module (its leaf "
                         "submodules are what is timed)")
    if not callable(fn):
        raise ValueError(f"fn={fn!r} must be callable as fn(x)")
    require_int("calls", calls, minimum=3)
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
    per_call: dict[str, list[float]] = {}
    for name, v in samples.items():
        k = len(v) // (calls + 2)  # how often the leaf runs in one call
        if k:  # seconds per call: the leaf's k runs of each call added up, warm-up dropped
            per_call[f"{name} ({type(leaves[name]).__name__})"] = [
                sum(v[k * i:k * (i + 1)]) for i in range(2, calls + 2)]
    leaf_sum = [sum(v[i] for v in per_call.values()) for i in range(calls)]
    per_call["total"] = totals
    per_call["outside the submodules"] = [t - s for t, s in zip(totals, leaf_sum)]
    return {name: {"median": statistics.median(v), "p20": percentile(v, 0.2),
                   "p80": percentile(v, 0.8)}
            for name, v in per_call.items() if v}
