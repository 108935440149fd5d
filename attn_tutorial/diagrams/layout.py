"""The layout engine shared by every diagram: tensor boxes, merge circles, labelled arrows.

A diagram is a list of items placed on a grid (``at = (column, row)``, fractions allowed) and a
list of arrows between them; :func:`render` turns them into one matplotlib figure in the course's
style (see the package docstring). :func:`describe`, :func:`op` and :func:`run` are what the
mechanism specs use to read layers, count parameters and capture the tensors they draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Box", "Merge", "Arrow", "describe", "op", "run", "render", "example_input"]

# Okabe & Ito (2008), "Color Universal Design": blue, reddish purple, orange, grey.
_STYLE = {  # kind -> (fill, edge)
    "tensor": ("#d7ecf9", "#0072b2"),
    "map": ("#f4dcea", "#cc79a7"),
    "param": ("#fbe3b0", "#e69f00"),
    "op": ("#ffffff", "#8c8c8c"),
}
_MAX_WIDTH, _COL_W, _ROW_H = 9.5, 3.15, 1.05     # inches
_BOX_H, _NODE_R, _TOP, _BOTTOM = 0.5, 0.17, 0.8, 0.75
_FONT, _TITLE_FONT = 9.5, 11


# ---------------------------------------------------------------- what a diagram is made of
@dataclass
class Box:
    """A tensor: ``axes`` names its dimensions (``"B×C×H×W"``), the sizes come from ``tensor``."""
    key: str
    title: str
    axes: str
    tensor: torch.Tensor
    at: tuple[float, float]          # (column, row) on the diagram's grid
    kind: str = "tensor"

    def __post_init__(self) -> None:
        if len(self.axes.split("×")) != self.tensor.dim():
            raise ValueError(f"box {self.key!r}: axes {self.axes} for a tensor of shape "
                                 f"{tuple(self.tensor.shape)}")

    @property
    def label(self) -> str:
        return f"{self.title}\n{self.axes} = {'×'.join(map(str, self.tensor.shape))}"


@dataclass
class Merge:
    """A point where branches meet: ``symbol`` is ⊗, ⊙ or +."""
    key: str
    symbol: str
    at: tuple[float, float]


@dataclass
class Arrow:
    """An operation from ``src`` to ``dst``: its text, its learnable parameters (None: none)."""
    src: str
    dst: str
    op: str = ""
    params: int | None = None
    via: tuple[tuple[float, float], ...] = ()   # grid points the path bends at
    t: float = 0.5                                # label's place along the longest segment
    label_at: tuple[float, float] | None = None  # or a grid point for the label
    residual: bool = False
    into_label: bool = False    # an arrowhead also where the line enters the label


def describe(layer: nn.Module) -> str:
    """A layer in a few words, read from the layer itself: ``conv 3×3, dilation 4, padding 4,
    16→16``. Stride, dilation and padding are named where they change the grid (stride or
    dilation above 1); a 3×3 conv with padding 1 and stride 1 keeps H×W."""
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        kernel = "×".join(map(str, layer.kernel_size))
        parts = [f"conv {kernel}" if isinstance(layer, nn.Conv2d) else f"conv1d k={kernel}"]
        if max(layer.stride) > 1:
            parts.append(f"stride {layer.stride[0]}")
        if max(layer.dilation) > 1:
            parts.append(f"dilation {layer.dilation[0]}")
        if max(layer.stride) > 1 or max(layer.dilation) > 1:
            parts.append(f"padding {layer.padding[0]}")
        if layer.groups > 1:
            parts.append("depthwise" if layer.groups == layer.in_channels
                         else f"groups {layer.groups}")
        if isinstance(layer, nn.Conv1d) and layer.in_channels == layer.out_channels == 1:
            return ", ".join(parts)
        return ", ".join(parts) + f", {layer.in_channels}→{layer.out_channels}"
    if isinstance(layer, nn.Linear):
        return f"Linear {layer.in_features}→{layer.out_features}"
    if isinstance(layer, nn.AvgPool2d):
        k, stride = (v if isinstance(v, int) else v[0] for v in (layer.kernel_size, layer.stride))
        return f"avg pool {k}×{k}, stride {stride}"
    names = {nn.BatchNorm1d: "BN", nn.BatchNorm2d: "BN", nn.LayerNorm: "LayerNorm",
             nn.InstanceNorm2d: "InstanceNorm", nn.ReLU: "ReLU"}
    return names.get(type(layer), type(layer).__name__)


def op(text: str, *layers: nn.Module) -> dict:
    """Arrow keywords for an op made of ``layers``: its text and its parameter count (each shared
    parameter once)."""
    params = {id(p): p.numel() for layer in layers for p in layer.parameters()}
    return {"op": text, "params": sum(params.values()) if params else None}


def run(module: nn.Module, x: torch.Tensor, *layers: str, **kwargs) -> tuple:
    """``module(x)`` in eval mode, with the output of each named sub-layer (its last call)."""
    got: dict[str, torch.Tensor] = {}
    hooks = [module.get_submodule(name).register_forward_hook(
        lambda _m, _i, out, name=name: got.__setitem__(name, out)) for name in layers]
    try:
        with torch.no_grad():
            out = module.eval()(x, **kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return out, got


# ---------------------------------------------------------------- the layout engine
class _Canvas:
    """Grid coordinates -> inches on one full-figure axes (y grows downwards)."""

    def __init__(self, cols: float, last_row: float, subtitle_lines: int = 1) -> None:
        import matplotlib.pyplot as plt

        self.top = _TOP + 0.17 * (subtitle_lines - 1)      # room for a longer subtitle
        self.col_w = min(_COL_W, _MAX_WIDTH / cols)
        self.box_w = min(2.45, self.col_w - 0.3)
        self.ncol = 3 if cols * self.col_w > 8 else 2          # legend columns
        bottom = _BOTTOM + (0.2 if self.ncol == 2 else 0)
        self.width, self.height = cols * self.col_w, self.top + last_row * _ROW_H + _BOX_H + bottom
        self.fig = plt.figure(figsize=(self.width, self.height), dpi=100)
        self.ax = self.fig.add_axes((0, 0, 1, 1))
        self.ax.set_xlim(0, self.width)
        self.ax.set_ylim(self.height, 0)
        self.ax.axis("off")
        self.items: dict[str, Box | Merge] = {}
        self.sizes: dict[str, tuple[float, float]] = {}   # each box's width, height (inches)
        self.used: set[str] = set()     # what the legend must explain: box kinds, "residual", ...

    def xy(self, at: tuple[float, float]) -> tuple[float, float]:
        return (at[0] + 0.5) * self.col_w, self.top + at[1] * _ROW_H + _BOX_H / 2

    def add(self, item: Box | Merge) -> None:
        from matplotlib.patches import Circle, FancyBboxPatch

        self.items[item.key] = item
        x, y = self.xy(item.at)
        self.used.add("merge" if isinstance(item, Merge) else item.kind)
        if isinstance(item, Merge):
            self.ax.add_patch(Circle((x, y), _NODE_R, fc="white", ec="black", lw=1.2, zorder=3))
            self.ax.text(x, y, item.symbol, ha="center", va="center", fontsize=12, zorder=4)
            return
        fill, edge = _STYLE[item.kind]
        text = self.ax.text(x, y, item.label, ha="center", va="center", fontsize=_FONT, zorder=4,
                            linespacing=1.3)
        extent = text.get_window_extent()                 # pixels; a long label widens its box
        w = max(self.box_w, extent.width / self.fig.dpi + 0.2)
        h = max(_BOX_H, extent.height / self.fig.dpi + 0.14)
        self.sizes[item.key] = w, h
        self.ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, fc=fill, ec=edge, lw=1.4,
                                         boxstyle="round,pad=0,rounding_size=0.06", zorder=3,
                                         gid="box"))

    def anchor(self, key: str, toward: tuple[float, float]) -> tuple[float, float]:
        """Where a line from the item ``key`` toward the point ``toward`` (inches) leaves it."""
        x, y = self.xy(self.items[key].at)
        dx, dy = toward[0] - x, toward[1] - y
        if isinstance(self.items[key], Merge):
            norm = max((dx * dx + dy * dy) ** 0.5, 1e-9)
            return x + _NODE_R * dx / norm, y + _NODE_R * dy / norm
        w, h = self.sizes[key]
        if abs(dy) < h / 2:                      # level: leave by a side
            return x + (w / 2 if dx > 0 else -w / 2), y
        return x, y + (h / 2 if dy > 0 else -h / 2)

    def connect(self, arrow: Arrow) -> None:
        from matplotlib.patches import FancyArrowPatch
        from matplotlib.path import Path

        bends = [self.xy(p) for p in arrow.via]
        start = self.anchor(arrow.src, bends[0] if bends else self.xy(self.items[arrow.dst].at))
        end = self.anchor(arrow.dst, bends[-1] if bends else start)
        points = [start, *bends, end]
        style = dict(arrowstyle="-|>", mutation_scale=13, lw=1.3, zorder=2,
                     color="#0072b2" if arrow.residual else "black",
                     linestyle=(0, (4, 3)) if arrow.residual else "-")
        path = Path(points, [Path.MOVETO] + [Path.LINETO] * (len(points) - 1))
        self.ax.add_patch(FancyArrowPatch(path=path, gid=f"{arrow.src}->{arrow.dst}", **style))
        if arrow.residual:
            self.used.add("residual")
        if not arrow.op:
            return
        a, b = max(zip(points, points[1:]),     # the longest segment
                   key=lambda s: (s[0][0] - s[1][0]) ** 2 + (s[0][1] - s[1][1]) ** 2)
        if arrow.label_at is not None:
            lx, ly = self.xy(arrow.label_at)
        else:   # at t along the longest segment
            lx, ly = a[0] + arrow.t * (b[0] - a[0]), a[1] + arrow.t * (b[1] - a[1])
        text = arrow.op
        kind = "op"
        if arrow.params is not None:
            text += f"\n{arrow.params:,} learnable parameter{'s' if arrow.params != 1 else ''}"
            kind = "param"
        self.used.add(kind)
        fill, edge = _STYLE[kind]
        label = self.ax.text(lx, ly, text, ha="center", va="center", fontsize=9, zorder=5,
                             linespacing=1.25, gid="op",
                             bbox=dict(boxstyle="round,pad=0.25", fc=fill, ec=edge, lw=1.0))
        if arrow.into_label:   # a head where the segment from a enters the label's frame
            extent = label.get_window_extent()
            half_w = extent.width / self.fig.dpi / 2 + 0.05    # + the frame's pad
            half_h = extent.height / self.fig.dpi / 2 + 0.05
            dx, dy = a[0] - lx, a[1] - ly
            s = min(half_w / abs(dx) if dx else float("inf"),
                    half_h / abs(dy) if dy else float("inf"))
            self.ax.add_patch(FancyArrowPatch(a, (lx + s * dx, ly + s * dy),
                                              gid=f"{arrow.src}->{arrow.dst} label", **style))

    def finish(self, title: str, subtitle: str) -> None:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        self.ax.text(self.width / 2, 0.12, title, ha="center", va="top", fontsize=_TITLE_FONT,
                     fontweight="bold")
        self.ax.text(self.width / 2, 0.42, subtitle, ha="center", va="top", fontsize=9.5)
        entries = {   # only what this diagram draws
            "tensor": Patch(fc=_STYLE["tensor"][0], ec=_STYLE["tensor"][1],
                            label="tensor: shape in named axes"),
            "map": Patch(fc=_STYLE["map"][0], ec=_STYLE["map"][1], label="attention map / gate"),
            "param": Patch(fc=_STYLE["param"][0], ec=_STYLE["param"][1],
                           label="learnable parameters"),
            "op": Patch(fc=_STYLE["op"][0], ec=_STYLE["op"][1], label="op without parameters"),
            "residual": Line2D([], [], color="#0072b2", ls=(0, (4, 3)),
                               label="residual (identity) path"),
            "merge": Line2D([], [], marker="o", ls="", mfc="white", mec="black", ms=10,
                            label="merge: ⊗ contract, ⊙ product, + sum"),
        }
        handles = [handle for kind, handle in entries.items() if kind in self.used]
        self.fig.legend(handles=handles, loc="lower center", ncol=self.ncol, fontsize=9,
                        frameon=False, bbox_to_anchor=(0.5, 0.0), handlelength=1.8,
                        columnspacing=1.2)


def render(title: str, subtitle: str, items: list, arrows: list[Arrow]):
    """The figure: items on a grid as wide as the rightmost column (or bend) needs."""
    cols = max([i.at[0] + 1 for i in items] + [p[0] + 0.65 for a in arrows for p in a.via])
    canvas = _Canvas(cols, max(item.at[1] for item in items), subtitle.count("\n") + 1)
    for item in items:
        canvas.add(item)
    for arrow in arrows:
        canvas.connect(arrow)
    canvas.finish(title, subtitle)
    canvas.fig.shapes = {i.key: tuple(i.tensor.shape) for i in items if isinstance(i, Box)}
    return canvas.fig


def example_input(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))

