"""Plotting helpers for the lessons, in one place, and the one parameter count of the library.

Every helper draws into axes it is given (or makes a figure), returns what it drew, and leaves
``plt.show()`` to the notebook cell. Maps are tensors (any device, any float dtype); images are
``3×H×W`` in ``[0, 1]``.

- :func:`heatmaps` — matrices side by side, each with its colour bar;
- :func:`gate_bars` — a channel gate as bars (one row of bars per gate);
- :func:`overlay` — a low-resolution map up-sampled over an image, with the object's outline;
- :func:`attention_row` — one query's attention row folded to its key grid, the query marked;
- :func:`slot_map` — a categorical map (memory slot ids) with a discrete colour map and legend;
- :func:`count_params` — the number of parameters of a module.

matplotlib is imported when a helper is called, so ``count_params`` costs no plotting import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ._validate import (require_bool, require_choice, require_int, require_module, require_number,
                        require_pair)

__all__ = ["count_params", "heatmaps", "gate_bars", "overlay", "attention_row", "slot_map"]


def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameters of ``module`` (only those with ``requires_grad`` if asked)."""
    require_module("module", module)
    require_bool("trainable_only", trainable_only)
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _axes(count: int, axes: Any, width: float = 3.2, height: float = 3.0) -> list[Any]:
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, count, figsize=(width * count, height), squeeze=False)
        return list(axes[0])
    axes = list(axes) if isinstance(axes, (list, tuple)) or hasattr(axes, "__len__") else [axes]
    if len(axes) != count:
        raise ValueError(f"axes has {len(axes)} axes; {count} are needed")
    return axes


def _as_float(name: str, value: object) -> torch.Tensor:
    """``value`` (a tensor, an array or nested numbers) as a float32 CPU tensor."""
    try:
        return torch.as_tensor(value).detach().float().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name}={value!r} must be a tensor (or an array of numbers)") from error


def _as_2d(name: str, matrix: torch.Tensor) -> torch.Tensor:
    matrix = _as_float(name, matrix)
    if matrix.dim() != 2:
        raise ValueError(f"{name} must be 2-D (a matrix or a map), got shape {tuple(matrix.shape)}")
    return matrix


def heatmaps(matrices: Sequence[torch.Tensor], titles: Sequence[str] | None = None, *,
             cmap: str = "viridis", same_scale: bool = False, axes: Any = None) -> list[Any]:
    """Matrices side by side, each with a colour bar (``same_scale`` shares one range)."""
    mats = [_as_2d("matrices[{}]".format(i), m) for i, m in enumerate(matrices)]
    if not mats:
        raise ValueError("matrices is empty: give at least one matrix to draw")
    require_bool("same_scale", same_scale)
    titles = list(titles) if titles is not None else [""] * len(mats)
    if len(titles) != len(mats):
        raise ValueError(f"titles has {len(titles)} entries for {len(mats)} matrices")
    axes = _axes(len(mats), axes)
    low = min(m.min().item() for m in mats) if same_scale else None
    high = max(m.max().item() for m in mats) if same_scale else None
    for ax, matrix, title in zip(axes, mats, titles):
        image = ax.imshow(matrix.numpy(), cmap=cmap, vmin=low, vmax=high)
        ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title, fontsize=9)
    return axes


def gate_bars(gates: torch.Tensor, labels: Sequence[str] | None = None, *, ax: Any = None,
              title: str = "", ylim: tuple[float, float] | None = (0, 1)) -> Any:
    """Channel gates as grouped bars: ``gates`` is C (one gate) or R×C (one bar group each)."""
    import matplotlib.pyplot as plt

    gates = _as_float("gates", gates)
    if gates.dim() == 1:
        gates = gates[None]
    if gates.dim() != 2:
        raise ValueError(f"gates must be C or R×C, got shape {tuple(gates.shape)}")
    rows, channels = gates.shape
    labels = list(labels) if labels is not None else [f"gate {r}" for r in range(rows)]
    if len(labels) != rows:
        raise ValueError(f"labels has {len(labels)} entries for {rows} gates")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, channels * 0.18), 2.6))
    width = 0.8 / rows
    for r in range(rows):
        ax.bar([c + (r - (rows - 1) / 2) * width for c in range(channels)], gates[r].tolist(),
               width=width, label=labels[r])
    ax.set_xlabel("channel")
    ax.set_ylabel("gate")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if rows > 1:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    return ax


def _outline(ax: Any, mask: torch.Tensor | None, colour: str = "white") -> None:
    if mask is not None:
        mask = _as_2d("mask", mask)
        ax.contour(mask.numpy(), levels=[0.5], colors=colour, linewidths=1.2)


def overlay(image: torch.Tensor, attention: torch.Tensor, mask: torch.Tensor | None = None, *,
            ax: Any = None, title: str = "", alpha: float = 0.55, cmap: str = "magma",
            upsample: str = "bilinear") -> Any:
    """``attention`` (h×w) up-sampled to the image (3×H×W) and drawn over it.

    ``upsample="nearest"`` draws each of the h×w cells as one flat block (a coarse 4×4 or 8×8
    map then looks as coarse as it is); ``"bilinear"`` (the default) smooths between cell
    centres. ``mask`` (H×W, bool) draws the object's outline. Adds a colour bar for the map.
    """
    import matplotlib.pyplot as plt

    image = _as_float("image", image)
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be 3×H×W, got shape {tuple(image.shape)}")
    attention = _as_2d("attention", attention)
    require_number("alpha", alpha, minimum=0, maximum=1)
    require_choice("upsample", upsample, {"nearest": "one flat block per cell",
                                          "bilinear": "smoothed between cell centres"})
    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 3.0))
    size = tuple(image.shape[1:])
    if upsample == "nearest":
        big = F.interpolate(attention[None, None], size=size, mode="nearest")
    else:
        big = F.interpolate(attention[None, None], size=size, mode="bilinear", align_corners=False)
    ax.imshow(rearrange(image, "c h w -> h w c").clamp(0, 1).numpy())
    drawn = ax.imshow(big[0, 0].numpy(), cmap=cmap, alpha=alpha)
    ax.figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04)
    _outline(ax, mask)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return ax


def attention_row(attention: torch.Tensor, query: int, grid: tuple[int, int],
                  key_grid: tuple[int, int] | None = None, *, image: torch.Tensor | None = None,
                  mask: torch.Tensor | None = None, ax: Any = None, title: str = "",
                  upsample: str = "bilinear") -> Any:
    """One query's attention row of an N×M matrix folded to its key grid (row-major keys).

    ``grid`` is the queries' h×w (to mark the query), ``key_grid`` the keys' (default ``grid``).
    With ``image`` the row is drawn over it (:func:`overlay`, with its ``upsample``), else as a
    heatmap with a colour bar; the query's cell is marked with a cross.
    """
    import matplotlib.pyplot as plt

    attention = _as_2d("attention", attention)
    grid = require_pair("grid", grid)
    key_grid = grid if key_grid is None else require_pair("key_grid", key_grid)
    require_int("query", query, minimum=0)
    n, m = attention.shape
    if n != grid[0] * grid[1] or m != key_grid[0] * key_grid[1]:
        raise ValueError(f"attention is {n}×{m}; grid={tuple(grid)} and key_grid={key_grid} "
                         f"need {grid[0] * grid[1]}×{key_grid[0] * key_grid[1]}")
    if not 0 <= query < n:
        raise ValueError(f"query={query} must be in [0, {n})")
    row = rearrange(attention[query], "(h w) -> h w", h=key_grid[0])
    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 3.0))
    qy, qx = divmod(query, grid[1])
    if image is not None:
        overlay(image, row, mask, ax=ax, title=title, upsample=upsample)
        size = image.shape[1:]
        scale_y, scale_x = size[0] / grid[0], size[1] / grid[1]
    else:
        drawn = ax.imshow(row.numpy(), cmap="viridis")
        ax.figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title, fontsize=9)
        scale_y, scale_x = key_grid[0] / grid[0], key_grid[1] / grid[1]
    ax.plot([(qx + 0.5) * scale_x - 0.5], [(qy + 0.5) * scale_y - 0.5], marker="x",
            color="cyan", markersize=9, mew=2)
    return ax


def slot_map(ids: torch.Tensor, num_slots: int, *, image: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, ax: Any = None, title: str = "") -> Any:
    """A categorical h×w map of ids in ``[0, num_slots)`` with a discrete colour map.

    Each id has its own colour (tab20); a colour bar with one tick per id present. ``mask``
    (at the map's or the image's size) draws the object's outline; ``image`` is shown faintly
    underneath (up-sampled ids by nearest neighbour).
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import BoundaryNorm, ListedColormap

    require_int("num_slots", num_slots)
    ids = _as_2d("ids", ids)
    if not torch.equal(ids, ids.round()):
        raise ValueError("ids must be whole numbers (slot indices), got fractional values")
    ids = ids.long()
    if ids.min() < 0 or ids.max() >= num_slots:
        raise ValueError(f"ids must lie in [0, {num_slots}), got {ids.min()}..{ids.max()}")
    colours = plt.get_cmap("tab20").colors
    cmap = ListedColormap([colours[i % len(colours)] for i in range(num_slots)])
    norm = BoundaryNorm([i - 0.5 for i in range(num_slots + 1)], num_slots)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.4, 3.0))
    if image is not None:
        image = _as_float("image", image)
        size = tuple(image.shape[1:])
        big = F.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0]
        ax.imshow(rearrange(image, "c h w -> h w c").clamp(0, 1).numpy())
        drawn = ax.imshow(big.numpy(), cmap=cmap, norm=norm, alpha=0.6, interpolation="nearest")
    else:
        drawn = ax.imshow(ids.numpy(), cmap=cmap, norm=norm, interpolation="nearest")
    bar = ax.figure.colorbar(drawn, ax=ax, fraction=0.046, pad=0.04)
    present = sorted(set(ids.flatten().tolist()))
    bar.set_ticks(present)
    bar.ax.tick_params(labelsize=6, length=2)                # one small tick per slot present
    bar.set_label("slot id", fontsize=8)
    _outline(ax, mask)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return ax
