"""Comparing a learner's results with the reference's: types by name, then dtype, device and
shape, then values at the tolerance of their dtype (stated once, in ``TOLERANCE``).

Values are plain results or dicts of named results (a module's output, its gradients, its buffers
after a training step); a dict is compared key by key and the first key that differs is named.
A gradient that never arrived is a :class:`NoGradient`, so that it is reported as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# (rtol, atol) by dtype: float64 cases are compared at float64 precision, so an answer that
# computes inside in float32 (relative error ~1e-7) fails them. Python floats are float64.
TOLERANCE = {
    torch.float64: (1e-9, 1e-11),
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1e-2, 1e-3),
    torch.float16: (1e-3, 1e-4),
}
FLOAT_TOLERANCE = TOLERANCE[torch.float64]
# Relative error above float64 rounding but within float32's: "computed in float32".
FLOAT32_LEVEL = (1e-9, 1e-4)


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return TOLERANCE.get(dtype, TOLERANCE[torch.float32])


@dataclass(frozen=True)
class NoGradient:
    """A gradient the learner's code never produced (the graph was cut before ``what``)."""

    what: str

    def __repr__(self) -> str:
        return f"no gradient reaches {self.what}"


def _negligible(t: Any) -> bool:
    """A gradient that is zero at the tolerance of its dtype: no different from none at all."""
    return isinstance(t, torch.Tensor) and t.is_floating_point() and \
        bool((t.detach().abs() <= tolerance(t.dtype)[1]).all())


def _an(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def describe(value: Any) -> str:
    """A value in words, by its exact type: "a list of 2", "numpy.int64 5", "3 (an int)"."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"{_an(type(value).__name__)} of {len(value)}"
    if value is None:
        return "None"
    if isinstance(value, np.generic):
        return f"numpy.{type(value).__name__} {value}"
    if isinstance(value, np.ndarray):
        return f"a numpy array of shape {value.shape}"
    if isinstance(value, (int, float)):
        return f"{value!r} ({_an(type(value).__name__)})"
    return _an(type(value).__name__)


def clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(clone(v) for v in value)
    if isinstance(value, list):
        return [clone(v) for v in value]
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    return value


def same(a: Any, b: Any, tol: tuple[float, float] | None = None) -> bool:
    """Equal values of the same kind: tensors by dtype, device, shape and allclose at the
    tolerance of their dtype (``tol`` overrides it; (0, 0): exactly); ints exactly; floats at
    float64 tolerance; sequences of the same type and dicts elementwise. Never raises."""
    if isinstance(a, NoGradient) or isinstance(b, NoGradient):
        return a == b or _negligible(a) or _negligible(b)
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return False
        if a.device.type == "meta":
            return False
        rtol, atol = tolerance(b.dtype) if tol is None else tol
        if rtol == atol == 0.0 or not b.is_floating_point():
            return bool(torch.equal(a, b))
        a64 = a.detach().to("cpu", torch.float64)
        b64 = b.detach().to("cpu", torch.float64)
        return bool(torch.allclose(a64, b64, rtol=rtol, atol=atol, equal_nan=False))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y, tol) for x, y in zip(a, b)))
    if isinstance(a, (bool, np.bool_)) or isinstance(b, (bool, np.bool_)):
        return type(a) is type(b) and a == b
    if isinstance(a, np.generic) or isinstance(b, np.generic):
        return type(a) is type(b) and bool(a == b)
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        rtol, atol = FLOAT_TOLERANCE if tol is None else tol
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _dtype(d: torch.dtype) -> str:
    return str(d).replace("torch.", "")


def problem(out: Any, expected: Any, what: str = "") -> str | None:
    """Why ``out`` cannot be compared with ``expected`` (type, device, dtype, shape, NaN, a
    gradient that never arrived), or None."""
    pre = f"{what}: " if what else ""
    if isinstance(out, NoGradient) or isinstance(expected, NoGradient):
        return None  # compared as a value, in order (value_error names it)
    if isinstance(expected, torch.Tensor):
        if not isinstance(out, torch.Tensor):
            return f"{pre}returned {describe(out)}, expected a torch.Tensor"
        if out.device != expected.device:
            return (f"{pre}returned a tensor on {out.device.type}, expected "
                    f"{expected.device.type} (the device of the inputs)")
        if out.dtype != expected.dtype:
            return (f"{pre}returned {_dtype(out.dtype)}, expected {_dtype(expected.dtype)} "
                    "(the dtype of the inputs)")
        if out.shape != expected.shape:
            return f"{pre}returned shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            return f"{pre}output contains NaN or inf"
        return None
    if isinstance(expected, dict):
        if not isinstance(out, dict):
            return f"{pre}returned {describe(out)}"
        for key in expected:
            p = problem(out.get(key), expected[key], key)
            if p:
                return p
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(out, (tuple, list)) or len(out) != len(expected):
            return f"{pre}returned {describe(out)}, expected {describe(expected)}"
        if type(out) is not type(expected):
            return (f"{pre}returned {describe(out)}, expected {describe(expected)} "
                    f"(use {type(expected).__name__}(...))")
        for i, (o, e) in enumerate(zip(out, expected)):
            p = problem(o, e, f"{pre}item {i}".rstrip(": "))
            if p:
                return p
        return None
    if isinstance(expected, bool):
        return None if isinstance(out, bool) else \
            f"{pre}returned {describe(out)}, expected a bool"
    if isinstance(expected, int):
        if isinstance(out, (np.integer, torch.Tensor)):
            return f"{pre}returned {describe(out)}, expected an int (a Python int: use int(...))"
        if isinstance(out, bool) or not isinstance(out, int):
            return f"{pre}returned {describe(out)}, expected an int"
        return None
    if isinstance(expected, float):
        if isinstance(out, bool) or not isinstance(out, (int, float)):
            return f"{pre}returned {describe(out)}, expected a number"
        if not math.isfinite(out):
            return f"{pre}returned {out}"
    return None


def relative_error(out: torch.Tensor, expected: torch.Tensor) -> float:
    a, b = out.detach().cpu().double(), expected.detach().cpu().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def value_error(out: Any, expected: Any, what: str = "") -> str:
    """The first difference between two comparable values, in a line."""
    pre = f"{what}: " if what else ""
    if isinstance(out, NoGradient) and not isinstance(expected, NoGradient):
        return f"{out!r}: nothing behind it can learn (a .detach(), .data, torch.no_grad() or a " \
               "trip through numpy/Python numbers cuts the graph)"
    if isinstance(expected, NoGradient):
        return f"{pre}a gradient arrives where none should (the reference's output does not " \
               "depend on it)"
    if isinstance(expected, dict):
        differ = [key for key in expected if not same(out[key], expected[key])]
        if differ and "output" not in differ[0]:
            # the values are right: a gradient that never arrives says most about why
            cut = [key for key in differ if isinstance(out[key], NoGradient)]
            differ = cut + differ
        if differ:
            return value_error(out[differ[0]], expected[differ[0]], differ[0])
    if isinstance(expected, (tuple, list)) and isinstance(out, (tuple, list)):
        for i, (o, e) in enumerate(zip(out, expected)):
            if not same(o, e):
                return f"{pre}returned {out!r}, expected {expected!r}" \
                    if not isinstance(e, torch.Tensor) else value_error(o, e, f"{pre}item {i}")
    if isinstance(out, torch.Tensor) and isinstance(expected, torch.Tensor):
        err = (out.detach().cpu().double() - expected.detach().cpu().double()).abs().max().item()
        text = f"{pre}wrong values (max abs error {err:.3g})"
        low, high = FLOAT32_LEVEL
        rel = relative_error(out, expected) if expected.dtype == torch.float64 else 0.0
        if low < rel < high:
            values = out.detach().double()
            # float32 numbers that need more than float16's 11 bits: a float32 computation's
            # fingerprint (exact values such as 0 or 1 are every format's numbers)
            if bool((values.float().double() == values).all()) and \
                    not bool((values.half().double() == values).all()):
                text += (": right only to float32 precision, its values are float32 numbers "
                         "(computed in float32 and converted back)")
            else:
                text += f": right only to about {rel:.0e} relative (a tiny term such as ε " \
                        "differs, or a step runs in float32)"
        return text
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return f"{pre}returned {out!r}, expected {expected!r}"
    return f"{pre}wrong values"
