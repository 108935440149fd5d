"""Argument and input checks shared by every mechanism.

Each failure is a ``ValueError`` that names the argument, the value it had and the rule it broke,
raised at construction where the value is known there, instead of a shape error from deep inside
a conv. The functions are named ``require_*`` (they raise); the exercise checkers of
``attn_tutorial.checks`` are named ``check_*`` (they report).
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import torch

__all__ = [
    "require_int", "require_optional_int", "require_all", "require_number", "require_probability",
    "require_choice", "require_odd", "require_divisible", "require_positive_width",
    "require_feature_map", "require_tokens", "require_min_size", "require_batch_statistics",
]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def require_int(name: str, value: object, minimum: int = 1) -> int:
    """An integer (not a bool, not a float such as 2.5, not a string) that is >= ``minimum``."""
    if not _is_int(value) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        got = "" if _is_int(value) else f" (got a {type(value).__name__})"
        raise ValueError(f"{name}={value!r} must be {rule}{got}")
    return int(value)


def require_optional_int(name: str, value: object, minimum: int = 1) -> int | None:
    """``None`` or what :func:`require_int` accepts."""
    if value is None:
        return None
    if not _is_int(value) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        got = "" if _is_int(value) else f" (got a {type(value).__name__})"
        raise ValueError(f"{name}={value!r} must be {rule} or None{got}")
    return int(value)


def require_number(name: str, value: object, *, positive: bool = False) -> float:
    """A real number (not a bool, not a string), > 0 when ``positive``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (positive and value <= 0):
        rule = "a finite number > 0" if positive else "a finite number"
        raise ValueError(f"{name}={value!r} must be {rule}")
    return value


def require_probability(name: str, value: object) -> float:
    """A dropout probability in [0, 1]."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value!r} must be a probability in [0, 1]")
    return value


def require_choice(name: str, value: object, choices: dict[str, str]) -> str:
    """``value`` must be one of the keys of ``choices``; the values say what each one means."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(f"{key!r} ({meaning})" for key, meaning in choices.items())
        raise ValueError(f"{name}={value!r} must be one of {options}")
    return value


def require_odd(name: str, value: object, why: str) -> int:
    """A positive odd integer; ``why`` says what an even one would break."""
    if not _is_int(value) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name}={value!r} must be a positive odd integer: {why}")
    return int(value)


def require_divisible(name: str, value: int, by_name: str, by: object) -> None:
    """Refuse ``value`` unless ``by`` (a positive integer) divides it."""
    if not _is_int(by) or by <= 0:
        raise ValueError(f"{name}={value} must be divisible by {by_name}={by!r}; "
                         f"{by_name} must be a positive integer")
    if value % by != 0:
        raise ValueError(f"{name}={value} must be divisible by {by_name}={by}")


def require_positive_width(name: str, value: int, divisor: object, what: str) -> int:
    """Return value // divisor (``divisor`` the argument called ``what``), refusing a hidden width
    of zero."""
    require_int(what, divisor)
    width = value // divisor
    if width < 1:
        raise ValueError(
            f"{name}={value} is too small for {what} {divisor}: the hidden width {name} // {divisor} "
            f"would be {width}; use {name} >= {divisor}"
        )
    return width


def _require_float_tensor(x: object, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise ValueError(
            f"{name} has dtype {x.dtype} but must be a floating-point tensor (the convolutions, "
            f"softmaxes and normalisations compute in floating point); convert with {name}.float()"
        )


def _require_layout(x: object, name: str, layout: str, channel_axis: int, where: str,
                    argument: str, expected: int | None) -> None:
    """A floating-point tensor of ``layout`` (its rank first), with ``expected`` channels."""
    _require_float_tensor(x, name)
    rank = int(layout[0])
    if x.dim() != rank:
        raise ValueError(f"{name} must be {layout}, got {x.dim()}-D shape {tuple(x.shape)}")
    if expected is not None and x.shape[channel_axis] != expected:
        raise ValueError(
            f"{name} has {x.shape[channel_axis]} channels{where} (shape {tuple(x.shape)}) but the "
            f"module was built for {argument}={expected}"
        )


def require_feature_map(x: torch.Tensor, channels: int | None = None, name: str = "x") -> None:
    """A floating-point feature map B×C×H×W; when ``channels`` is given, C must equal it."""
    _require_layout(x, name, "4-D feature map B×C×H×W", 1, "", "channels", channels)


def require_tokens(x: torch.Tensor, dim: int | None = None, hw: tuple[int, int] | None = None,
                   name: str = "x") -> None:
    """Floating-point tokens B×N×C; when ``dim`` is given C must equal it, when ``hw`` is given
    N = H·W (H and W positive integers)."""
    _require_layout(x, name, "3-D tokens B×N×C", 2, " in its last axis", "dim", dim)
    if hw is not None:
        h, w = hw
        require_int("H", h)
        require_int("W", w)
        if h * w != x.shape[1]:
            raise ValueError(
                f"{name} has N={x.shape[1]} tokens but H={h}, W={w} gives H·W={h * w}; "
                "tokens must be the row-major flattening of the H×W grid"
            )


def require_min_size(x: torch.Tensor, minimum: int, what: str, name: str = "x") -> None:
    """Refuse a map whose H or W is smaller than ``minimum`` (a pooling rate, a patch)."""
    h, w = x.shape[-2:]
    if h < minimum or w < minimum:
        raise ValueError(
            f"{name} has spatial size H×W = {h}×{w}, smaller than {what} = {minimum}; "
            f"H and W must both be >= {minimum}"
        )


def require_batch_statistics(training: bool, values_per_channel: int, where: str,
                             cause: str, spatial: bool = True) -> None:
    """A BatchNorm in train mode needs more than one value per channel (batch × H × W > 1).

    ``where`` names the BatchNorm, ``cause`` says which sizes and arguments leave it one value;
    ``spatial=False`` when a larger H×W would not help (a BatchNorm after a global average).
    """
    if training and values_per_channel == 1:
        larger = ", a larger H×W" if spatial else ""
        raise ValueError(
            f"{cause}, so {where} sees one value per channel in train mode and cannot compute "
            f"batch statistics (torch itself raises here). Use a batch of 2 or more{larger}, or "
            "call .eval()"
        )


def require_all(name: str, values: Iterable[object], minimum: int = 1) -> tuple[int, ...]:
    """Every entry of the sequence ``name`` passes :func:`require_int`; returned as a tuple."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name}={values!r} must be a sequence of integers")
    values = tuple(values)
    for i, v in enumerate(values):
        require_int(f"{name}[{i}]", v, minimum)
    return values
