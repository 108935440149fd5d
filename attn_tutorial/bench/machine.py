"""The machine a card was measured on: its own roofs, its float32 precision settings, provenance.

**TF32 and float32.** On Ampere and later GPUs a float32 matmul or convolution may run in TF32
(a 10-bit mantissa). PyTorch has two ways to say so. The legacy flags,
``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32`` and
``torch.get_float32_matmul_precision()``, and, from torch 2.9, ``fp32_precision`` attributes per
backend (``torch.backends.fp32_precision``, ``torch.backends.cuda.matmul.fp32_precision``,
``torch.backends.cudnn.conv.fp32_precision``, ...; ``"none"`` inherits the parent's value).
Once a program has set the new ones, *reading* a legacy flag raises ("mix of the legacy and new
APIs"), so :func:`precision_settings` reads the new API where it exists, each legacy flag in its
own ``try``, records both, and never aborts a run.

**Roofs.** :func:`measure_machine` times a large copy (bandwidth) and a square matmul (rate) on
the device, after warm-up calls, so the first cuBLAS call (library start-up) is in neither. On
CUDA the float32 matmul is timed twice, in strict FP32 (``"float32"``) and in TF32 (``"tf32"``),
the settings put back afterwards; bfloat16 only where ``torch.cuda.is_bf16_supported()``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from typing import Any, Callable, Iterator

import torch

from attn_tutorial.bench import timing

__all__ = ["DTYPES", "ROOFS", "precision_settings", "float32_precision", "roof_plan",
           "measure_machine", "provenance", "load_average"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
ROOFS = ("float32", "tf32", "bfloat16")  # the matmul rates a card may hold

# (name in the card, object holding fp32_precision, parent name whose value "none" inherits)
_NEW_API = (("generic", lambda: torch.backends, None),
            ("cuda_matmul", lambda: torch.backends.cuda.matmul, "generic"),
            ("cudnn", lambda: torch.backends.cudnn, "generic"),
            ("cudnn_conv", lambda: torch.backends.cudnn.conv, "cudnn"),
            ("mkldnn", lambda: torch.backends.mkldnn, "generic"),
            ("mkldnn_matmul", lambda: torch.backends.mkldnn.matmul, "mkldnn"))
_LEGACY = (("allow_tf32_matmul", lambda: torch.backends.cuda.matmul.allow_tf32),
           ("allow_tf32_cudnn", lambda: torch.backends.cudnn.allow_tf32),
           ("float32_matmul_precision", torch.get_float32_matmul_precision))


def _read(getter: Callable[[], Any]) -> Any:
    try:
        return getter()
    except Exception:  # noqa: BLE001 - e.g. the legacy flag after the new API was used
        return None


def precision_settings() -> dict[str, Any]:
    """Both APIs' float32 settings, and what they mean for cuBLAS matmuls and cuDNN convolutions.

    Returns ``new`` (the ``fp32_precision`` values, None where this torch has no such
    attribute), ``legacy`` (the three legacy values, None where reading raised) and the
    effective booleans ``tf32_matmul`` and ``tf32_cudnn``: the new API's resolved value where it
    exists, else the legacy flags.
    """
    new: dict[str, str | None] = {}
    for name, owner, _ in _NEW_API:
        value = _read(lambda owner=owner: owner().fp32_precision)
        new[name] = value if isinstance(value, str) else None
    legacy = {name: _read(getter) for name, getter in _LEGACY}

    def resolved(name: str) -> str | None:
        parent = {n: p for n, _, p in _NEW_API}[name]
        value = new[name]
        while value == "none" and parent is not None:
            value, parent = new[parent], {n: p for n, _, p in _NEW_API}[parent]
        return value

    matmul, conv = resolved("cuda_matmul"), resolved("cudnn_conv")
    tf32_matmul = (matmul == "tf32") if matmul not in (None, "none") else legacy[
        "allow_tf32_matmul"]
    tf32_cudnn = (conv == "tf32") if conv not in (None, "none") else legacy["allow_tf32_cudnn"]
    return {"new": new, "legacy": legacy, "tf32_matmul": tf32_matmul, "tf32_cudnn": tf32_cudnn}


@contextlib.contextmanager
def float32_precision(kind: str) -> Iterator[None]:
    """Run CUDA float32 matmuls in ``"ieee"`` (strict FP32) or ``"tf32"`` inside the block.

    Uses the new API where this torch has it (the legacy flag otherwise) and puts the previous
    value back, so measuring a roof leaves the program's own settings as they were.
    """
    if kind not in ("ieee", "tf32"):
        raise ValueError(f"kind={kind!r} must be 'ieee' (strict FP32) or 'tf32'")
    matmul = torch.backends.cuda.matmul
    if isinstance(_read(lambda: matmul.fp32_precision), str):
        before = matmul.fp32_precision
        matmul.fp32_precision = kind
        try:
            yield
        finally:
            matmul.fp32_precision = before
    else:  # torch without the new API
        before = matmul.allow_tf32
        matmul.allow_tf32 = kind == "tf32"
        try:
            yield
        finally:
            matmul.allow_tf32 = before


def _time(step: Callable[[], Any], device: torch.device, quick: bool) -> float:
    if device.type == "cuda":
        return timing.time_cuda(step, warmup=5 if quick else 10, reps=20 if quick else 50)[
            "median"]
    return timing.time_cpu_blocks(step, min_run_time=0.05 if quick else 0.3,
                                  blocks=9 if quick else 21)["median"]


def roof_plan(device: torch.device | str) -> list[tuple[str, torch.dtype, str | None]]:
    """The matmul roofs measured on ``device``: (name, dtype, float32 precision to set).

    CPU: strict float32 only. CUDA: strict FP32 and TF32, and bfloat16 only where the device
    supports it (``torch.cuda.is_bf16_supported()``; a V100 or a T4 does not).
    """
    device = timing._device(device)
    if device.type != "cuda":
        return [("float32", torch.float32, None)]
    plan = [("float32", torch.float32, "ieee"), ("tf32", torch.float32, "tf32")]
    if torch.cuda.is_bf16_supported():
        plan.append(("bfloat16", torch.bfloat16, None))
    return plan


def measure_machine(device: torch.device | str = "cpu", quick: bool = True) -> dict[str, Any]:
    """Copy bandwidth (GB/s, read + write) and matmul rates (TFLOP/s per roof) on ``device``.

    CPU: ``float32``. CUDA: ``float32`` (strict FP32), ``tf32`` and, where the device supports
    it, ``bfloat16``.
    """
    device = timing._device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r} must be 'cpu' or 'cuda'")
    # Larger than any last-level cache, so the copy streams from memory (H100 L2: 50 MB).
    nbytes = (64 if device.type == "cpu" else 256 if quick else 1024) * 2**20
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    copy_gbps = 2 * nbytes / _time(lambda: dst.copy_(src), device, quick) / 1e9
    del src, dst
    n = 512 if device.type == "cpu" else 4096 if quick else 8192
    rates = {}
    for name, dtype, kind in roof_plan(device):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        with float32_precision(kind) if kind else contextlib.nullcontext():
            rates[name] = 2 * n**3 / _time(lambda: torch.mm(a, b), device, quick) / 1e12
    return {"copy_gbps": copy_gbps, "copy_bytes": nbytes, "matmul_tflops": rates, "matmul_n": n}


def load_average() -> float | None:
    """The 1-minute load average, None where the platform has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def provenance(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Where and how a card was measured; fields that do not apply on this device are null.

    Never raises on the float32 settings (see :func:`precision_settings`): ``fp32_precision``
    holds the new API's values, ``float32_matmul_precision`` the legacy one (null where reading
    it raised), ``tf32_matmul`` / ``tf32_cudnn`` what they mean (CUDA only).
    """
    device = timing._device(device)
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
    precision = precision_settings()
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
        "load_average": load_average(),
        "load_average_end": None,
        "run_id": None,
        "seconds": None,
        "tf32_matmul": precision["tf32_matmul"] if cuda else None,
        "tf32_cudnn": precision["tf32_cudnn"] if cuda else None,
        "float32_matmul_precision": precision["legacy"]["float32_matmul_precision"],
        "fp32_precision": {k: v for k, v in precision["new"].items() if v is not None} or None,
        "memory_format": "contiguous",
        "module_mode": "eval",
    }
