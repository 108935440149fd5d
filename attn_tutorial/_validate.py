"""Input checks shared by every mechanism: each failure is a ValueError that names the argument,
the value it had and the rule it broke, instead of a shape error from deep inside a conv."""

from __future__ import annotations

import torch


def check_feature_map(x: torch.Tensor, channels: int | None = None, name: str = "x") -> None:
    """A feature map is B×C×H×W; when ``channels`` is given, C must equal it."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{name} must be a 4-D feature map B×C×H×W, got {x.dim()}-D shape {tuple(x.shape)}"
        )
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{name} has {x.shape[1]} channels (shape {tuple(x.shape)}) but the module was built "
            f"for channels={channels}"
        )


def check_tokens(x: torch.Tensor, dim: int | None = None, hw: tuple[int, int] | None = None,
                 name: str = "x") -> None:
    """Tokens are B×N×C; when ``dim`` is given C must equal it, when ``hw`` is given N = H·W."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(
            f"{name} must be 3-D tokens B×N×C, got {x.dim()}-D shape {tuple(x.shape)}"
        )
    if dim is not None and x.shape[2] != dim:
        raise ValueError(
            f"{name} has {x.shape[2]} channels in its last axis (shape {tuple(x.shape)}) but the "
            f"module was built for dim={dim}"
        )
    if hw is not None:
        h, w = hw
        if h * w != x.shape[1]:
            raise ValueError(
                f"{name} has N={x.shape[1]} tokens but H={h}, W={w} gives H·W={h * w}; "
                "tokens must be the row-major flattening of the H×W grid"
            )


def check_positive_width(name: str, value: int, divisor: int, what: str) -> int:
    """Return value // divisor, refusing a hidden width of zero."""
    width = value // divisor
    if width < 1:
        raise ValueError(
            f"{name}={value} is too small for {what} {divisor}: the hidden width {name} // {divisor} "
            f"would be {width}; use {name} >= {divisor}"
        )
    return width


def check_divisible(name: str, value: int, by_name: str, by: int) -> None:
    """Refuse ``value`` unless ``by`` divides it."""
    if by <= 0 or value % by != 0:
        raise ValueError(f"{name}={value} must be divisible by {by_name}={by}")


def check_min_size(x: torch.Tensor, minimum: int, what: str, name: str = "x") -> None:
    """Refuse a map whose H or W is smaller than ``minimum`` (a pooling rate, a patch)."""
    h, w = x.shape[-2:]
    if h < minimum or w < minimum:
        raise ValueError(
            f"{name} has spatial size H×W = {h}×{w}, smaller than {what} = {minimum}; "
            f"H and W must both be >= {minimum}"
        )
