"""The benchmark matrix and its JSON result cards (``python -m attn_tutorial bench``).

One run measures the machine first (a device copy bandwidth and a matmul rate), then times every
row of the chosen groups and writes one JSON *card* per group with full provenance:

* ``channel``  — ECA, SE, BAM at the ResNet-50 stage shapes (eager and compiled, fp32 and bf16);
* ``conv``     — SCConv and PSA against the plain 3×3 convolution each replaces;
* ``danet``    — PAM materialised vs PAM through SDPA vs compiled, and CAM (C = 512, 32²…128²);
  an out-of-memory is caught and recorded as ``status: "oom"``;
* ``external`` — external attention against PAM on the same maps;
* ``emsa``     — ResT's EMSA at the ResT stage shapes against full multi-head self-attention;
* ``scaling``  — time and peak memory against N = H·W for self-attention (materialised, SDPA),
  EMSA (sr 2, 4, 8) and external attention, with fitted log-log slopes.

``--quick`` shrinks every group to tiny sizes, eager float32 only (a CPU run takes seconds).

Timing protocol. CPU: two warm-up calls, then ``torch.utils.benchmark.Timer`` with
``num_threads=torch.get_num_threads()`` (``attn_tutorial.bench.time_cpu``); caches stay warm.
CUDA: warm-up calls, ``torch.cuda.synchronize()``, CUDA events around each repetition, median and
20th/80th percentiles, peak memory from ``torch.cuda.max_memory_allocated``; a second "cold" row
flushes the L2 cache (writes a buffer twice its size) before each repetition when the row's
minimum working set fits in L2. Modules run in eval mode (BatchNorm uses running statistics, so
each sample is independent); ``gamma`` of PAM/CAM is set to 1 (it is 0 at initialisation, which
would make the output equal the input and the error check empty).

Cost columns come from :mod:`attn_tutorial.cost` (forward FLOPs in the ``FlopCounterMode``
convention and minimum bytes). For ``forward+backward`` the card uses 3× the forward FLOPs (the
backward of a matmul or convolution is two products of the same size) and
``dtype · (3·in + 2·out + 3·params)`` bytes (forward: read x, params, write y; backward: read dy,
x, params, write dx and the parameter gradients). ``max_abs_err`` is ``max |y − y64|`` on the first
sample, where ``y64`` is the same module and the same input values converted to float64 (on the
same device; if that reference cannot run, ``reference_note`` says why).

CPU peak memory is an estimate (``peak_method: "dispatch"``): the peak of the bytes held by the
tensors that the call's operators allocate, tracked under a ``TorchDispatchMode``.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import math
import platform
import sys
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from attn_tutorial import bench, cost
from attn_tutorial.attention import MultiHeadSelfAttention, SelfAttention2d
from attn_tutorial.bam import BAM
from attn_tutorial.danet import CAM, PAM
from attn_tutorial.eca import ECA, SE
from attn_tutorial.external import ExternalAttention
from attn_tutorial.psa import PSA
from attn_tutorial.rest import EMSA
from attn_tutorial.scconv import SCConv

__all__ = ["GROUPS", "SCHEMA", "CARDS_DIR", "Row", "build_rows", "run", "run_group",
           "measure_machine", "provenance", "validate_card", "load_cards", "write_card",
           "format_card", "fit_slope", "CardError"]

SCHEMA = "attn_tutorial.bench-card/1"
GROUPS = ("channel", "conv", "danet", "external", "emsa", "scaling")
CARDS_DIR = Path(__file__).resolve().parent / "cards"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------------------------
# Rows: one thing to time
# --------------------------------------------------------------------------------------------

@dataclass
class Row:
    """One measurement of the matrix: a module at one shape, dtype, pass, compile mode, L2 state."""

    group: str
    name: str                       # e.g. "PAM (SDPA)"; the baseline is named by this
    mechanism: str                  # e.g. "PAM"
    impl: str                       # "eager", "materialised", "sdpa", ...
    build: Callable[[], nn.Module]
    shape: dict[str, int]           # B, C, H, W (tokens: N = H·W of width C)
    hyper: dict[str, Any]
    cost: Callable[[int], cost.Cost]  # dtype_bytes -> forward cost
    baseline: str | None            # name of the baseline row in the same setting
    tokens: bool = False            # input B×N×C (else B×C×H×W)
    grid_args: bool = False         # forward(x, H, W)
    sdpa: bool = False
    dtype: str = "float32"
    pass_: str = "forward"
    compile: str = "none"           # "none" or a torch.compile mode ("default")
    series: str | None = None       # scaling sweep: the curve this point belongs to
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def setting(self) -> tuple:
        s = self.shape
        return (s["B"], s["C"], s["H"], s["W"], self.dtype, self.pass_)


def _conv3x3(c: int) -> nn.Module:
    return nn.Conv2d(c, c, kernel_size=3, padding=1, bias=False)


def _conv3x3_cost(B: int, C: int, H: int, W: int, dtype_bytes: int) -> cost.Cost:
    params = C * C * 9
    return cost.Cost(params=params, flops=2 * B * C * C * 9 * H * W,
                     min_bytes=dtype_bytes * (2 * B * C * H * W + params))


def _shape(B: int, C: int, H: int, W: int) -> dict[str, int]:
    return {"B": B, "C": C, "H": H, "W": W}


def _channel_rows(quick: bool) -> list[Row]:
    B, shapes = (2, [(32, 14), (64, 7)]) if quick else (32, [(256, 56), (512, 28), (1024, 14),
                                                              (2048, 7)])
    rows = []
    for C, S in shapes:
        sh = _shape(B, C, S, S)
        rows += [
            Row("channel", "SE", "SE", "eager", lambda C=C: SE(C), sh, {"reduction": 16},
                lambda d, C=C, S=S: cost.se(B, C, S, S, dtype_bytes=d), "SE"),
            Row("channel", "ECA", "ECA", "eager", lambda C=C: ECA(C), sh, {"k_size": 3},
                lambda d, C=C, S=S: cost.eca(B, C, S, S, k=3, dtype_bytes=d), "SE"),
            Row("channel", "BAM", "BAM", "eager", lambda C=C: BAM(C), sh,
                {"reduction_ratio": 16, "dilation": 4, "num_dilated_convs": 2},
                lambda d, C=C, S=S: cost.bam(B, C, S, S, dtype_bytes=d), "SE"),
        ]
    return _expand(rows, quick, dtypes=("float32", "bfloat16"), compiled=True)


def _conv_rows(quick: bool) -> list[Row]:
    B, shapes = (2, [(64, 8)]) if quick else (32, [(64, 56), (128, 28), (256, 14), (512, 7)])
    rows = []
    for C, S in shapes:
        sh = _shape(B, C, S, S)
        rows += [
            Row("conv", "conv3x3", "Conv2d 3x3", "eager", lambda C=C: _conv3x3(C), sh,
                {"kernel_size": 3, "bias": False},
                lambda d, C=C, S=S: _conv3x3_cost(B, C, S, S, d), "conv3x3"),
            Row("conv", "SCConv", "SCConv", "eager", lambda C=C: SCConv(C), sh,
                {"pooling_r": 4, "upsample": "nearest"},
                lambda d, C=C, S=S: cost.scconv(B, C, S, S, dtype_bytes=d), "conv3x3"),
            Row("conv", "PSA", "PSA", "eager", lambda C=C: PSA(C, C), sh,
                {"conv_kernels": [3, 5, 7, 9], "conv_groups": [1, 4, 8, 16], "se_reduction": 16},
                lambda d, C=C, S=S: cost.psa(B, C, S, S, dtype_bytes=d), "conv3x3"),
        ]
    return _expand(rows, quick, dtypes=("float32", "bfloat16"), compiled=False)


def _pam_rows(group: str, B: int, C: int, S: int, compiled: bool) -> list[Row]:
    sh = _shape(B, C, S, S)
    c = lambda d, S=S: cost.pam(B, C, S, S, dtype_bytes=d)  # noqa: E731
    rows = [Row(group, "PAM (materialised)", "PAM", "materialised", lambda: PAM(C), sh, {}, c,
                "PAM (materialised)"),
            Row(group, "PAM (SDPA)", "PAM", "sdpa", lambda: PAM(C, use_sdpa=True), sh, {}, c,
                "PAM (materialised)", sdpa=True)]
    if compiled:
        rows.append(Row(group, "PAM (materialised, compiled)", "PAM", "materialised",
                        lambda: PAM(C), sh, {}, c, "PAM (materialised)", compile="default"))
    return rows


def _danet_rows(quick: bool) -> list[Row]:
    # Full: 32²…128² as in DANet's use, plus 192² where the materialised N×N maps
    # (B·N² floats each) no longer fit: the OOM is caught and recorded.
    B, C, sizes = (2, 64, [8, 16]) if quick else (8, 512, [32, 48, 64, 96, 128, 192])
    rows = []
    for S in sizes:
        rows += _pam_rows("danet", B, C, S, compiled=not quick)
        sh = _shape(B, C, S, S)
        c = lambda d, S=S: cost.cam(B, C, S, S, dtype_bytes=d)  # noqa: E731
        rows.append(Row("danet", "CAM", "CAM", "eager", lambda: CAM(C), sh,
                        {"variant": "official"}, c, "PAM (materialised)"))
        if not quick:
            rows.append(Row("danet", "CAM (compiled)", "CAM", "eager", lambda: CAM(C), sh,
                            {"variant": "official"}, c, "PAM (materialised)", compile="default"))
    return _expand(rows, quick, dtypes=("float32", "bfloat16"), compiled=False)


def _external_rows(quick: bool) -> list[Row]:
    B, C, sizes = (2, 64, [8, 16]) if quick else (8, 512, [32, 64, 96, 128])
    rows = []
    for S in sizes:
        rows += _pam_rows("external", B, C, S, compiled=False)
        rows.append(Row("external", "External attention", "ExternalAttention", "eager",
                        lambda: ExternalAttention(C), _shape(B, C, S, S), {"memory_size": 64},
                        lambda d, S=S: cost.external_attention(B, C, S, S, dtype_bytes=d),
                        "PAM (materialised)"))
    return _expand(rows, quick, dtypes=("float32",), compiled=False)


def _emsa_rows(quick: bool) -> list[Row]:
    # ResT-Base stages: (dim, heads, sr, grid) at a 224² input; quick: two tiny stages.
    B, stages = (2, [(32, 1, 4, 16), (64, 2, 2, 8)]) if quick else (
        32, [(64, 1, 8, 56), (128, 2, 4, 28), (256, 4, 2, 14), (512, 8, 1, 7)])
    rows = []
    for dim, heads, sr, S in stages:
        sh = _shape(B, dim, S, S)
        transform = heads > 1
        rows += [
            Row("emsa", "MHSA (materialised)", "MHSA", "materialised",
                lambda dim=dim, heads=heads: MultiHeadSelfAttention(dim, heads, use_sdpa=False),
                sh, {"num_heads": heads, "qkv_bias": True},
                lambda d, dim=dim, heads=heads, S=S: cost.mhsa(B, dim, S, S, heads,
                                                               dtype_bytes=d),
                "MHSA (materialised)", tokens=True),
            Row("emsa", "MHSA (SDPA)", "MHSA", "sdpa",
                lambda dim=dim, heads=heads: MultiHeadSelfAttention(dim, heads, use_sdpa=True),
                sh, {"num_heads": heads, "qkv_bias": True},
                lambda d, dim=dim, heads=heads, S=S: cost.mhsa(B, dim, S, S, heads,
                                                               dtype_bytes=d),
                "MHSA (materialised)", tokens=True, sdpa=True),
            Row("emsa", "EMSA", "EMSA", "materialised",
                lambda dim=dim, heads=heads, sr=sr, t=transform: EMSA(
                    dim, heads, qkv_bias=True, sr_ratio=sr, apply_transform=t),
                sh, {"num_heads": heads, "qkv_bias": True, "sr_ratio": sr,
                     "apply_transform": transform},
                lambda d, dim=dim, heads=heads, sr=sr, S=S, t=transform: cost.emsa(
                    B, dim, S, S, heads, qkv_bias=True, sr_ratio=sr, apply_transform=t,
                    dtype_bytes=d),
                "MHSA (materialised)", tokens=True, grid_args=True),
        ]
    return _expand(rows, quick, dtypes=("float32",), compiled=False)


def _scaling_rows(quick: bool) -> list[Row]:
    B, C, sizes = (1, 32, [8, 12, 16, 24, 32]) if quick else (
        1, 64, [16, 24, 32, 48, 64, 96, 128, 160, 192])
    rows = []
    base = "self-attention (materialised)"
    for S in sizes:
        sh = _shape(B, C, S, S)
        sa_cost = lambda d, S=S: cost.mhsa(B, C, S, S, 1, dtype_bytes=d)  # noqa: E731
        rows += [
            Row("scaling", base, "SelfAttention2d", "materialised",
                lambda: SelfAttention2d(C, use_sdpa=False), sh, {"num_heads": 1}, sa_cost, base,
                series=base),
            Row("scaling", "self-attention (SDPA)", "SelfAttention2d", "sdpa",
                lambda: SelfAttention2d(C, use_sdpa=True), sh, {"num_heads": 1}, sa_cost, base,
                sdpa=True, series="self-attention (SDPA)"),
        ]
        for sr in (2, 4, 8):
            if S < sr + 1:
                continue
            rows.append(Row(
                "scaling", f"EMSA sr={sr}", "EMSA", "materialised",
                lambda sr=sr: EMSA(C, 1, qkv_bias=True, sr_ratio=sr), sh,
                {"num_heads": 1, "qkv_bias": True, "sr_ratio": sr},
                lambda d, sr=sr, S=S: cost.emsa(B, C, S, S, 1, qkv_bias=True, sr_ratio=sr,
                                                dtype_bytes=d),
                base, tokens=True, grid_args=True, series=f"EMSA sr={sr}"))
        rows.append(Row("scaling", "external attention", "ExternalAttention", "eager",
                        lambda: ExternalAttention(C), sh, {"memory_size": 64},
                        lambda d, S=S: cost.external_attention(B, C, S, S, dtype_bytes=d), base,
                        series="external attention"))
    return rows  # forward, float32, eager only


def _expand(rows: list[Row], quick: bool, dtypes: Sequence[str], compiled: bool) -> list[Row]:
    """Every row in each pass; full mode adds bf16 and, where asked, compiled copies."""
    out = []
    for dtype in (("float32",) if quick else dtypes):
        for pass_ in bench.PASSES:
            for r in rows:
                out.append(_replace(r, dtype=dtype, pass_=pass_))
                if compiled and not quick and r.compile == "none":
                    out.append(_replace(r, dtype=dtype, pass_=pass_, compile="default",
                                        name=f"{r.name} (compiled)"))
    return out


def _replace(row: Row, **changes: Any) -> Row:
    new = copy.copy(row)
    for k, v in changes.items():
        setattr(new, k, v)
    return new


_BUILDERS = {"channel": _channel_rows, "conv": _conv_rows, "danet": _danet_rows,
             "external": _external_rows, "emsa": _emsa_rows, "scaling": _scaling_rows}

_TITLES = {
    "channel": "Channel attention (ECA, SE, BAM) at ResNet-50 stage shapes",
    "conv": "SCConv and PSA against the 3×3 convolution they replace",
    "danet": "DANet PAM (materialised, SDPA, compiled) and CAM",
    "external": "External attention against PAM on the same maps",
    "emsa": "ResT EMSA against full multi-head self-attention at ResT stage shapes",
    "scaling": "Time and memory against N = H·W (log-log slopes)",
}


def build_rows(group: str, quick: bool) -> list[Row]:
    """The rows of one group of the matrix (``quick``: tiny sizes, eager float32)."""
    if group not in _BUILDERS:
        raise ValueError(f"group={group!r} must be one of {GROUPS}")
    return _BUILDERS[group](quick)


# --------------------------------------------------------------------------------------------
# Machine and provenance
# --------------------------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_step(step: Callable[[], Any], device: torch.device, quick: bool,
               flush: torch.Tensor | None = None) -> dict[str, Any]:
    if device.type == "cuda":
        return bench.time_cuda(step, warmup=5 if quick else 10, reps=20 if quick else 50,
                               flush=flush)
    return bench.time_cpu_blocks(step, min_run_time=0.03 if quick else 0.3,
                                 blocks=7 if quick else 21)


def measure_machine(device: torch.device | str = "cpu", quick: bool = True) -> dict[str, Any]:
    """Copy bandwidth (GB/s, read + write) and matmul rate (TFLOP/s per dtype) on ``device``."""
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


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where and how a card was measured; fields that do not apply on this device are null."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    props = torch.cuda.get_device_properties(device) if cuda else None
    driver = None
    if cuda:
        try:
            import subprocess
            driver = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001 - the driver version is informative only
            driver = None
    return {
        "device": bench.device_name(device),
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
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32 if cuda else None,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32 if cuda else None,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "memory_format": "contiguous",
        "module_mode": "eval",
    }


# --------------------------------------------------------------------------------------------
# Measuring one row
# --------------------------------------------------------------------------------------------

class _LiveBytes(TorchDispatchMode):
    """Peak of the bytes held by tensors that operators allocate (views and in-place excluded)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
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


def _peak_bytes_dispatch(step: Callable[[], Any]) -> int:
    with _LiveBytes() as mode:
        result = step()
        del result
    return int(mode.peak)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def _sdpa_backend(step: Callable[[], Any]) -> str:
    """The SDPA kernel the dispatcher picks: the first in torch's priority order that runs."""
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


def _make_input(row: Row, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    s = row.shape
    g = torch.Generator().manual_seed(0)
    shape = (s["B"], s["H"] * s["W"], s["C"]) if row.tokens else (s["B"], s["C"], s["H"], s["W"])
    return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)


def _prepared(row: Row) -> nn.Module:
    torch.manual_seed(0)
    module = row.build().eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.split(".")[-1] == "gamma":
                p.fill_(1.0)
    return module


def _call(module: Callable[..., Any], row: Row) -> Callable[..., Any]:
    if row.grid_args:
        H, W = row.shape["H"], row.shape["W"]
        return lambda x: module(x, H, W)
    return module


def _counted_bytes(row: Row, module: nn.Module, dtype_bytes: int) -> int:
    s = row.shape
    n_in = s["B"] * s["C"] * s["H"] * s["W"]
    shape = (1, s["H"] * s["W"], s["C"]) if row.tokens else (1, s["C"], s["H"], s["W"])
    with torch.no_grad():  # on the meta device: shapes only, no arithmetic
        y = _call(copy.deepcopy(module).to("meta"), row)(torch.empty(shape, device="meta"))
    n_out = y.numel() * s["B"]
    params = sum(p.numel() for p in module.parameters())
    return dtype_bytes * (3 * n_in + 2 * n_out + 3 * params)


def measure_row(row: Row, device: torch.device, machine: dict[str, Any], quick: bool,
                l2: str = "warm", l2_bytes: int | None = None) -> dict[str, Any]:
    """Time one row; returns the card's row record (status ``ok``, ``oom`` or ``error``)."""
    dtype = DTYPES[row.dtype]
    dtype_bytes = torch.finfo(dtype).bits // 8
    fwd = row.cost(dtype_bytes)
    factor = 1 if row.pass_ == "forward" else 3
    rec: dict[str, Any] = {
        "name": row.name, "mechanism": row.mechanism, "impl": row.impl, "series": row.series,
        "baseline": row.baseline, "dtype": row.dtype, "memory_format": "contiguous",
        "compile": row.compile, "sdpa_backend": None, "shape": dict(row.shape),
        "hyper": dict(row.hyper), "pass": row.pass_, "l2": l2, "status": "ok", "error": None,
        "reps": None, "median_s": None, "p20_s": None, "p80_s": None, "iqr_s": None,
        "peak_bytes": None, "peak_method": "cuda.max_memory_allocated"
        if device.type == "cuda" else "dispatch",
        "params": fwd.params, "flops": fwd.flops * factor,
        "min_bytes": fwd.min_bytes, "achieved_tflops": None, "achieved_gbps": None,
        "share_copy_bw": None, "share_matmul": None, "ratio_to_baseline": None,
        "max_abs_err": None, "reference_note": None,
    }
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
        fn = _call(runner, row)
        x = _make_input(row, device, dtype)
        step = bench.make_step(fn, (x,), row.pass_)
        if row.sdpa:
            rec["sdpa_backend"] = _sdpa_backend(step)
        if l2 == "cold" and l2_bytes:
            flush = torch.empty(2 * l2_bytes // 4, device=device)
        stats = _time_step(step, device, quick, flush)
        _sync(device)
        if device.type != "cuda":
            stats["peak_bytes"] = _peak_bytes_dispatch(step)
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


def _max_abs_err(module: nn.Module, row: Row, x: torch.Tensor) -> float:
    ref = copy.deepcopy(module).to(torch.float64)
    x1 = x[:1]
    with torch.no_grad():
        y = _call(module, row)(x1).to(torch.float64)
        y64 = _call(ref, row)(x1.to(torch.float64))
    return float((y - y64).abs().max())


# --------------------------------------------------------------------------------------------
# Groups, cards, runs
# --------------------------------------------------------------------------------------------

def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than two usable points)."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(xs, ys) if a and b and a > 0 and b > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def _fits(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fits = []
    series = sorted({r["series"] for r in rows if r["series"]}, key=str)
    for name in series:
        pts = sorted((r["shape"]["H"] * r["shape"]["W"], r) for r in rows
                     if r["series"] == name and r["status"] == "ok")
        for quantity in ("median_s", "peak_bytes", "flops"):
            xs = [n for n, _ in pts]
            ys = [r[quantity] for _, r in pts]
            tail = len(xs) // 2
            fits.append({"series": name, "x": "N", "y": quantity, "points": len(xs),
                         "slope": fit_slope(xs, ys),
                         "slope_upper_half": fit_slope(xs[tail:], ys[tail:])})
    return fits


def _progress(done: int, total: int, label: str, stream: Any) -> None:
    width = 28
    fill = int(width * done / max(total, 1))
    stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done:>3}/{total} {label[:48]:<48}")
    if done == total:
        stream.write("\n")
    stream.flush()


def run_group(group: str, device: torch.device | str = "cpu", quick: bool = True,
              machine: dict[str, Any] | None = None, progress: bool = False,
              counter: list[int] | None = None, total: int | None = None) -> dict[str, Any]:
    """Measure one group and return its card (not written)."""
    device = torch.device(device)
    machine = machine or measure_machine(device, quick)
    prov = provenance(device)
    rows = build_rows(group, quick)
    records, skipped = [], []
    if quick:
        skipped.append({"what": "torch.compile and bfloat16 rows",
                        "reason": "quick mode runs eager float32 only"})
    counter = counter if counter is not None else [0]
    total = total or len(rows)
    l2_bytes = prov["l2_bytes"]
    for row in rows:
        records.append(measure_row(row, device, machine, quick, "warm", l2_bytes))
        # Cold L2 (CUDA only): worth a row when the minimum working set fits in L2.
        if device.type == "cuda" and l2_bytes and records[-1]["min_bytes"] <= l2_bytes:
            records.append(measure_row(row, device, machine, quick, "cold", l2_bytes))
        counter[0] += 1
        if progress:
            _progress(counter[0], total, f"{group}: {row.name} {row.dtype} {row.pass_}",
                      sys.stderr)
    _ratios(records)
    return {
        "schema": SCHEMA,
        "group": group,
        "title": _TITLES[group],
        "mode": "quick" if quick else "full",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "provenance": prov,
        "machine": machine,
        "protocol": {
            "timer": "cuda events, median over reps" if device.type == "cuda"
            else "torch.utils.benchmark.Timer.timeit, blocks of calls, median over blocks",
            "warmup": "10 calls (5 in quick mode)" if device.type == "cuda" else "2 calls",
            "flops": "attn_tutorial.cost forward FLOPs; x3 for forward+backward",
            "min_bytes": "attn_tutorial.cost forward; dtype*(3*in + 2*out + 3*params) for "
                         "forward+backward",
            "max_abs_err": "first sample, against the same module and input in float64",
            "gamma": "PAM/CAM gamma set to 1",
        },
        "rows": records,
        "fits": _fits(records),
        "skipped": skipped,
    }


def _ratios(records: list[dict[str, Any]]) -> None:
    def key(r: dict[str, Any]) -> tuple:
        s = r["shape"]
        return (s["B"], s["C"], s["H"], s["W"], r["dtype"], r["pass"], r["l2"])

    base = {(key(r), r["name"]): r for r in records}
    for r in records:
        b = base.get((key(r), r["baseline"]))
        if b and r["status"] == "ok" and b["status"] == "ok":
            r["ratio_to_baseline"] = r["median_s"] / b["median_s"]


def card_filename(card: dict[str, Any]) -> str:
    prov = card["provenance"]
    if prov["device_type"] == "cpu":
        slug = "cpu"
    else:
        slug = "".join(c if c.isalnum() else "-" for c in prov["device"].lower()).strip("-")
        while "--" in slug:
            slug = slug.replace("--", "-")
    return f"{slug}-{card['mode']}-{card['group']}.json"


def write_card(card: dict[str, Any], out: str | Path) -> Path:
    """Validate ``card`` and write it as ``out/<device>-<mode>-<group>.json``."""
    validate_card(card)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / card_filename(card)
    path.write_text(json.dumps(card, indent=1) + "\n")
    return path


def run(groups: Iterable[str] | None = None, device: str | torch.device | None = None,
        quick: bool = False, out: str | Path | None = None,
        progress: bool = False) -> list[dict[str, Any]]:
    """Run the matrix (all groups, or ``groups``) and write one card per group into ``out``."""
    groups = list(groups) if groups else list(GROUPS)
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"group {g!r} is not one of {GROUPS}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    total = sum(len(build_rows(g, quick)) for g in groups)
    machine = measure_machine(device, quick)
    counter = [0]
    cards = []
    for g in groups:
        card = run_group(g, device, quick, machine, progress, counter, total)
        if out is not None:
            write_card(card, out)
        cards.append(card)
    return cards


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

class CardError(ValueError):
    """A card does not follow the schema."""


_NUM = (int, float)
_CARD_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema": ((str,), False), "group": ((str,), False), "title": ((str,), False),
    "mode": ((str,), False), "created": ((str,), False), "provenance": ((dict,), False),
    "machine": ((dict,), False), "protocol": ((dict,), False), "rows": ((list,), False),
    "fits": ((list,), False), "skipped": ((list,), False),
}
_PROVENANCE_FIELDS = {
    "device": ((str,), False), "device_type": ((str,), False), "sm_count": ((int,), True),
    "l2_bytes": ((int,), True), "gpu_memory_bytes": ((int,), True), "driver": ((str,), True),
    "torch": ((str,), False), "cuda": ((str,), True), "cudnn": ((int,), True),
    "python": ((str,), False), "platform": ((str,), False), "cpu": ((str,), False),
    "cpu_capability": ((str,), False), "threads": ((int,), False),
    "tf32_matmul": ((bool,), True), "tf32_cudnn": ((bool,), True),
    "float32_matmul_precision": ((str,), False), "memory_format": ((str,), False),
    "module_mode": ((str,), False),
}
_MACHINE_FIELDS = {
    "copy_gbps": (_NUM, False), "copy_bytes": ((int,), False), "matmul_tflops": ((dict,), False),
    "matmul_n": ((int,), False),
}
_ROW_FIELDS = {
    "name": ((str,), False), "mechanism": ((str,), False), "impl": ((str,), False),
    "series": ((str,), True), "baseline": ((str,), True), "dtype": ((str,), False),
    "memory_format": ((str,), False), "compile": ((str,), False), "sdpa_backend": ((str,), True),
    "shape": ((dict,), False), "hyper": ((dict,), False), "pass": ((str,), False),
    "l2": ((str,), False), "status": ((str,), False), "error": ((str,), True),
    "reps": ((int,), True), "median_s": (_NUM, True), "p20_s": (_NUM, True),
    "p80_s": (_NUM, True), "iqr_s": (_NUM, True), "peak_bytes": ((int,), True),
    "peak_method": ((str,), False), "params": ((int,), False), "flops": ((int,), False),
    "min_bytes": ((int,), False), "achieved_tflops": (_NUM, True),
    "achieved_gbps": (_NUM, True), "share_copy_bw": (_NUM, True), "share_matmul": (_NUM, True),
    "ratio_to_baseline": (_NUM, True), "max_abs_err": (_NUM, True),
    "reference_note": ((str,), True),
}
_MEASURED = ("reps", "median_s", "p20_s", "p80_s", "iqr_s", "achieved_tflops", "achieved_gbps",
             "share_copy_bw")
_FIT_FIELDS = {
    "series": ((str,), False), "x": ((str,), False), "y": ((str,), False),
    "points": ((int,), False), "slope": (_NUM, True), "slope_upper_half": (_NUM, True),
}
_ENUMS = {"mode": ("quick", "full"), "device_type": ("cpu", "cuda"),
          "pass": bench.PASSES, "l2": ("warm", "cold"), "status": ("ok", "oom", "error"),
          "dtype": tuple(DTYPES), "group": GROUPS}


def _check_fields(obj: Any, spec: dict[str, tuple[tuple[type, ...], bool]], where: str) -> None:
    if not isinstance(obj, dict):
        raise CardError(f"{where} must be an object, got {type(obj).__name__}")
    for name, (types, nullable) in spec.items():
        if name not in obj:
            raise CardError(f"{where} is missing the field {name!r}")
        value = obj[name]
        if value is None:
            if not nullable:
                raise CardError(f"{where}.{name} must not be null")
            continue
        # bool is an int in Python: accept it only where bool is the declared type
        if isinstance(value, bool) and bool not in types:
            raise CardError(f"{where}.{name}={value!r} must be {types}, not bool")
        if not isinstance(value, types):
            raise CardError(f"{where}.{name}={value!r} has type {type(value).__name__}, "
                            f"expected {' or '.join(t.__name__ for t in types)}")
        if name in _ENUMS and value not in _ENUMS[name]:
            raise CardError(f"{where}.{name}={value!r} must be one of {_ENUMS[name]}")


def validate_card(card: dict[str, Any]) -> None:
    """Raise :class:`CardError` (a ``ValueError``) naming the first missing or ill-typed field."""
    _check_fields(card, _CARD_FIELDS, "card")
    if card["schema"] != SCHEMA:
        raise CardError(f"card.schema={card['schema']!r} must be {SCHEMA!r}")
    _check_fields(card["provenance"], _PROVENANCE_FIELDS, "card.provenance")
    _check_fields(card["machine"], _MACHINE_FIELDS, "card.machine")
    for k, v in card["machine"]["matmul_tflops"].items():
        if k not in DTYPES or isinstance(v, bool) or not isinstance(v, _NUM) or v <= 0:
            raise CardError(f"card.machine.matmul_tflops[{k!r}]={v!r} must be a positive number "
                            f"for a dtype in {tuple(DTYPES)}")
    cpu = card["provenance"]["device_type"] == "cpu"
    if cpu:
        for name in ("sm_count", "l2_bytes", "driver", "cuda", "cudnn", "tf32_matmul"):
            if card["provenance"][name] is not None:
                raise CardError(f"card.provenance.{name} must be null on a CPU card")
    if not card["rows"]:
        raise CardError("card.rows must not be empty")
    for i, row in enumerate(card["rows"]):
        where = f"card.rows[{i}]"
        _check_fields(row, _ROW_FIELDS, where)
        for dim in ("B", "C", "H", "W"):
            v = row["shape"].get(dim)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CardError(f"{where}.shape[{dim!r}]={v!r} must be a positive integer")
        if row["status"] == "ok":
            for name in _MEASURED:
                if row[name] is None:
                    raise CardError(f"{where}.{name} must be set when status is 'ok'")
            if not row["p20_s"] <= row["median_s"] <= row["p80_s"]:
                raise CardError(f"{where}: p20 <= median <= p80 does not hold")
            if row["max_abs_err"] is None and row["reference_note"] is None:
                raise CardError(f"{where}.max_abs_err is null: reference_note must say why")
        elif row["error"] is None:
            raise CardError(f"{where}.error must say why status is {row['status']!r}")
    for i, fit in enumerate(card["fits"]):
        _check_fields(fit, _FIT_FIELDS, f"card.fits[{i}]")


def load_cards(directory: str | Path | None = None) -> list[dict[str, Any]]:
    """Every valid card in ``directory`` (default: the package's ``cards/``), sorted by file."""
    directory = Path(directory) if directory is not None else CARDS_DIR
    cards = []
    for path in sorted(directory.glob("*.json")):
        card = json.loads(path.read_text())
        validate_card(card)
        card["_file"] = path.name
        cards.append(card)
    return cards


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _sig(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{round(x):d}"


def format_card(card: dict[str, Any], pass_: str | None = "forward", dtype: str | None = None,
                digits: int = 2) -> str:
    """A plain-text table of a card, numbers rounded to ``digits`` significant digits.

    Columns: shape, row name, median (µs), ratio to the baseline, cost-model MFLOP, achieved
    GFLOP/s and GB/s, their shares of the machine's matmul rate and copy bandwidth, peak MB,
    max error against float64.
    """
    prov = card["provenance"]
    lines = [f"{card['title']} — {card['mode']} — {prov['device_type']}, "
             f"{prov['threads']} threads, torch {prov['torch']}"]
    head = (f"{'shape':<16}{'row':<30}{'dtype':<9}{'pass':<5}{'us':>8}{'ratio':>7}"
            f"{'MFLOP':>8}{'GFLOP/s':>9}{'GB/s':>8}{'%mm':>8}{'%bw':>8}{'peakMB':>8}{'err':>8}")
    lines += [head, "-" * len(head)]
    for r in card["rows"]:
        if pass_ is not None and r["pass"] != pass_:
            continue
        if dtype is not None and r["dtype"] != dtype:
            continue
        s = r["shape"]
        shape = f"{s['B']}x{s['C']}x{s['H']}x{s['W']}"
        short_pass = "fwd" if r["pass"] == "forward" else "f+b"
        name = r["name"] + ("" if r["l2"] == "warm" else " [cold L2]")
        if r["status"] != "ok":
            lines.append(f"{shape:<16}{name:<30}{r['dtype']:<9}{short_pass:<5}"
                         f"{r['status'].upper():>8}")
            continue
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        share_mm = None if r["share_matmul"] is None else 100 * r["share_matmul"]
        err = f"{r['max_abs_err']:.0e}" if r["max_abs_err"] else "0"
        lines.append(
            f"{shape:<16}{name:<30}{r['dtype']:<9}{short_pass:<5}"
            f"{_sig(r['median_s'] * 1e6, digits):>8}{_sig(r['ratio_to_baseline'], digits):>7}"
            f"{_sig(r['flops'] / 1e6, digits):>8}{_sig(r['achieved_tflops'] * 1e3, digits):>9}"
            f"{_sig(r['achieved_gbps'], digits):>8}{_sig(share_mm, digits):>8}"
            f"{_sig(100 * r['share_copy_bw'], digits):>8}{_sig(peak, digits):>8}{err:>8}")
    return "\n".join(lines)


def main(groups: Sequence[str] | None = None, device: str | None = None, quick: bool = False,
         out: str | Path | None = None) -> int:
    """Entry point of ``python -m attn_tutorial bench`` (arguments already parsed)."""
    start = time.perf_counter()
    cards = run(groups, device, quick, out if out is not None else CARDS_DIR, progress=True)
    rows = sum(len(c["rows"]) for c in cards)
    bad = sum(r["status"] != "ok" for c in cards for r in c["rows"])
    where = out if out is not None else CARDS_DIR
    print(f"{len(cards)} cards, {rows} rows ({bad} not ok) written to {where} "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    for c in cards:
        print(card_filename(c))
    return 0
