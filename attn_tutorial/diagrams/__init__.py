"""One drawn diagram per mechanism, in one style, with shapes computed by running the library.

``names()`` lists the diagrams; ``draw(name, **config)`` returns a matplotlib figure (the cell
calls ``plt.show()``). Every diagram is drawn for an example configuration (small defaults,
overridable by keyword: ``draw("bam", C=128, H=7, W=7)``). The shapes on it are not typed: the
library module is built for that configuration and run on a random input, and every box shows a
tensor that run produced (a forward hook on a layer, ``attention_map``, the output, or an einops
pattern from an arrow executed on a hooked tensor). ``fig.shapes`` holds them by box name.

The style, the same in every diagram (Okabe-Ito colours, safe for colour-blind readers):

- a tensor is a box: what it is, then its shape in named axes, ``B×C×H×W = 2×64×14×14``;
- an attention map or gate (what the lesson plots) is a reddish-purple box; a learnable tensor
  used as data (EANet's memory) an orange box;
- an operation is written on its arrow: an einops pattern, or a layer with its kernel, stride,
  dilation, padding (where stride or dilation change the grid) and groups; a layer with learnable
  parameters has an orange label with its count;
- a circle is where branches merge: ``⊗`` contraction (matrix product), ``⊙`` element-wise
  product (with broadcasting), ``+`` sum;
- the residual (identity) path is dashed, and the label where it merges gives its scale; a
  mechanism without one (self-attention here, ECA, SE, PSA, SCConv, EMSA) has no dashed line;
- the legend explains only what the diagram draws.

The diagrams: ``self_attention`` (the baseline), ``eca_se`` (lesson 01, ECA beside SE), ``bam``
(02), ``psa`` (03), ``scconv`` (04), ``pam`` and ``cam`` (05, DANet), ``emsa`` (06, ResT's
between-stage patch embedding with PA, then EMSA; by default ResTv1-Lite/S stage 3) and
``external`` (07, EANet), and ``plug_and_compare`` (09: the task, the tiny network with BAM
plugged in, and how its gate is scored; ``pipeline``). ``layout`` is the drawing engine they
share; ``mechanisms`` holds one short spec per diagram.
"""

from __future__ import annotations

import re
from typing import Callable

from .._validate import require_int
from .layout import render
from .mechanisms import SPECS

__all__ = ["names", "defaults", "draw", "labels", "shows_shape"]


def names() -> list[str]:
    """The diagrams that exist, in course order."""
    return list(SPECS)


def defaults(name: str) -> dict[str, int]:
    """The example configuration a diagram is drawn for unless told otherwise."""
    return dict(_spec(name)[1])


def _spec(name: str) -> tuple[Callable, dict]:
    if name not in SPECS:
        raise ValueError(f"no diagram named {name!r}; the diagrams are: {', '.join(SPECS)}")
    return SPECS[name]


def draw(name: str, **config: int):
    """Draw the diagram ``name`` for the example configuration, updated by ``config``.

    Returns the matplotlib figure; ``fig.shapes`` maps each box's name to the shape drawn on it.
    Unknown names and configuration keys, and sizes that are not positive integers, raise a
    ``ValueError`` that lists what is accepted; a size the module refuses raises the module's own
    ``ValueError``.
    """
    spec, default = _spec(name)
    unknown = sorted(set(config) - set(default))
    if unknown:
        raise ValueError(f"draw({name!r}) got unknown config {', '.join(unknown)}; it takes "
                         + ", ".join(f"{k} (default {v})" for k, v in default.items()))
    full = {**default, **config}
    for key, value in full.items():
        require_int(key, value)
    return render(*spec(**full))


def labels(fig) -> list[str]:
    """Every text drawn on a diagram (boxes, arrows, title, legend)."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


def shows_shape(fig, shape: tuple[int, ...]) -> bool:
    """Whether a box of ``fig`` is labelled with ``shape`` (``... = 2×64×14×14``, the whole
    shape: ``(2, 64)`` does not match ``2×64×14×14``)."""
    written = "×".join(map(str, shape))
    return any(re.search(rf"= {re.escape(written)}$", text, re.M) for text in labels(fig))
