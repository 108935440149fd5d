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
from numpy import bool_ as np_bool

__all__ = [
    "require_int", "require_optional_int", "require_all", "require_pair", "require_number",
    "require_probability", "require_bool", "require_choice", "require_odd", "require_divisible",
    "require_positive_width", "require_tensor", "require_finite", "require_module",
    "require_floating",
    "require_feature_map", "require_tokens", "require_min_size", "require_batch_statistics",
]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def require_int(name: str, value: object, minimum: int = 1, why: str = "") -> int:
    """An integer (not a bool, not a float such as 2.5, not a string) that is >= ``minimum``;
    ``why`` says what a smaller one would break."""
    if not _is_int(value) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        got = "" if _is_int(value) else f" (got a {type(value).__name__})"
        raise ValueError(f"{name}={value!r} must be {rule}{got}" + (f": {why}" if why else ""))
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


def _is_number(value: object) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def require_number(name: str, value: object, *, positive: bool = False,
                   minimum: float | None = None, maximum: float | None = None) -> float:
    """A finite real number (not a bool, not a string); > 0 when ``positive``, within
    [``minimum``, ``maximum``] when they are given."""
    ok = _is_number(value) and not (positive and value <= 0)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        rule = "a finite number" + (" > 0" if positive else "")
        if minimum is not None and maximum is not None:
            rule += f" in [{minimum:g}, {maximum:g}]"
        elif minimum is not None or maximum is not None:
            rule += f" >= {minimum:g}" if minimum is not None else f" <= {maximum:g}"
        raise ValueError(f"{name}={value!r} must be {rule}")
    return value


def require_probability(name: str, value: object, below_one: bool = False) -> float:
    """A dropout probability in [0, 1] (in [0, 1) when ``below_one``: a DropPath divides by
    1 − p)."""
    ok = _is_number(value) and 0.0 <= value and (value < 1.0 if below_one else value <= 1.0)
    if not ok:
        interval = "[0, 1)" if below_one else "[0, 1]"
        raise ValueError(f"{name}={value!r} must be a probability in {interval}")
    return value


def require_bool(name: str, value: object) -> bool:
    """True or False, nothing else: the string 'False' is truthy and would flip the meaning."""
    if not isinstance(value, (bool, np_bool)):
        raise ValueError(f"{name}={value!r} must be True or False (got a {type(value).__name__})")
    return bool(value)


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


def require_tensor(name: str, x: object) -> torch.Tensor:
    """A torch.Tensor (not a list, an array or a number)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def require_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """A tensor without NaN or ±inf (a score of a NaN map would be NaN)."""
    require_tensor(name, x)
    if x.is_floating_point() and not torch.isfinite(x).all():
        what = "NaN" if torch.isnan(x).any() else "±inf"
        raise ValueError(f"{name} holds {what}; it must be finite")
    return x


def require_module(name: str, value: object) -> object:
    """An ``nn.Module`` instance."""
    if not isinstance(value, torch.nn.Module):
        raise ValueError(f"{name}={value!r} must be an nn.Module (got a {type(value).__name__})")
    return value


def _require_float_tensor(x: object, name: str) -> None:
    require_tensor(name, x)
    if not x.is_floating_point():
        raise ValueError(
            f"{name} has dtype {x.dtype} but must be a floating-point tensor (the convolutions, "
            f"softmaxes and normalisations compute in floating point); convert with {name}.float()"
        )


def require_floating(name: str, x: object, dim: int | None = None) -> torch.Tensor:
    """A floating-point tensor of any shape; when ``dim`` is given, its last axis has ``dim``
    channels (a layer that maps ...×C to ...×C, whatever the leading axes)."""
    _require_float_tensor(x, name)
    if dim is not None and (x.dim() == 0 or x.shape[-1] != dim):
        raise ValueError(f"{name} has {x.shape[-1] if x.dim() else 0} channels in its last axis "
                         f"(shape {tuple(x.shape)}) but the module was built for dim={dim}")
    return x


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


def require_all(name: str, values: Iterable[object], minimum: int = 1,
                odd_because: str = "") -> tuple[int, ...]:
    """Every entry of the sequence ``name`` passes :func:`require_int` (:func:`require_odd` with
    ``odd_because`` as its reason when that is given); returned as a tuple."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name}={values!r} must be a sequence of integers")
    values = tuple(values)
    for i, v in enumerate(values):
        if odd_because:
            require_odd(f"{name}[{i}]", v, odd_because)
        else:
            require_int(f"{name}[{i}]", v, minimum)
    return values


def require_pair(name: str, value: object, check=require_int) -> tuple:
    """Two entries (a grid's h, w or a range's low, high), each passing ``check(name, entry)``."""
    items = None if isinstance(value, (str, bytes)) or not isinstance(value, Iterable) else \
        tuple(value)
    if items is None or len(items) != 2:
        raise ValueError(f"{name}={value!r} must be a pair of two values")
    return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(items))
