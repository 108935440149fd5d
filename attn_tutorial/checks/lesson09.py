"""Checkers for lesson 09 (plug and compare): exercises in ``solutions/09_plug_and_compare.ipynb``.

1. ``check_fixed_map_scores`` (predict): for a spotlight map that is the same in every image,
   the three numbers of lesson 09's spatial metric — its value, its chance level and its
   shuffled-mask null — from the masks and the map's weights, in plain Python. (An
   image-independent map scores its null exactly: each roll of the batch only reorders the
   images, which is why a map that knows only where objects usually are gets no credit.)
2. ``check_make_gate`` (extend): a gate of the learner's design, ``make_gate(channels)``, judged
   on the contract that lets it take part in the comparison (``TinyResNet(..., position="stage")``
   and ``score_spatial_mass``): the shape kept, trainable parameters, the gradient reaching the
   input and every parameter in train mode at batch ≥ 2, each image's output independent of the
   batch in eval mode, and a non-negative B×H×W ``attention_map``. The compared value is that
   contract as a tuple of short statements; a broken rule changes its statement, and each
   catalogued mistake breaks one rule.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from einops import rearrange, reduce
from torch import nn

from attn_tutorial.checks._compare import same
from attn_tutorial.checks._core import Case, Checker, Mistake, register

NOTEBOOK = "09_plug_and_compare"  # exercises/09_plug_and_compare.ipynb, in this order
__all__ = ["check_fixed_map_scores", "check_make_gate"]

SHIFTS = 8  # the lesson's null rolls the batch by 1 … min(8, n − 1) images


# ------------------------------------------------------------ 1. predict: a fixed map's numbers
def ref_fixed_map_scores(masks: list[list[int]], weights: list[int], *, normalise: str = "mass",
                         chance_as: str = "area", null_as: str = "rolled",
                         order: str = "value chance null") -> tuple[float, float, float]:
    """(value, chance, null) of a map with weight ``weights[c]`` on cell c in every image.

    value = mean_b Σ_c w_c·m_bc / Σ_c w_c; chance = mean_b (object cells of b / cells); null =
    mean over k = 1 … min(8, n − 1) and b of image b's map against the masks of image b − k.

    Knobs: ``normalise`` ("none": the mass on the object not divided by the map's total;
    "object": divided by the object's area instead, 0 without an object), ``chance_as`` ("any":
    the share of images that have an object), ``null_as`` ("chance"; "zero"), ``order``
    ("value null chance": the last two swapped).
    """
    n, total = len(masks), sum(weights)

    def score(w: list[int], m: list[int]) -> float:
        on = sum(wc * mc for wc, mc in zip(w, m))
        if normalise == "none":
            return float(on)
        if normalise == "object":
            return on / sum(m) if sum(m) else 0.0
        return on / total

    value = sum(score(weights, m) for m in masks) / n
    if chance_as == "any":
        chance = sum(1 for m in masks if any(m)) / n
    else:
        chance = sum(sum(m) / len(m) for m in masks) / n
    if null_as == "chance":
        null = chance
    elif null_as == "zero":
        null = 0.0
    else:
        shifts = range(1, min(SHIFTS, n - 1) + 1)
        null = sum(sum(score(weights, masks[(b - k) % n]) for b in range(n)) / n
                   for k in shifts) / len(shifts)
    if order == "value null chance":
        return (value, null, chance)
    return (value, chance, null)


def _masks_case(name: str, masks: list[list[int]], weights: list[int]) -> Case:
    return Case(name, lambda g, m=masks, w=weights: ([list(r) for r in m], list(w)))


def _random_case(name: str, n: int, cells: int, seed: int, p: float = 0.3) -> Case:
    """n images of ``cells`` cells, each cell on the object with probability p; random integer
    weights 0–3 (at least one positive)."""
    def make(g: torch.Generator, n=n, cells=cells, p=p):
        masks = (torch.rand(n, cells, generator=g) < p).long().tolist()
        weights = torch.randint(0, 4, (cells,), generator=g).tolist()
        weights[int(torch.randint(0, cells, (1,), generator=g))] += 1
        return masks, weights
    return Case(name, make, seed=seed)


FIXED_MAP_CASES = [
    # the smallest: two images (one roll), one cell
    _masks_case("2 images of 1 cell, one on the object", [[1], [0]], [1]),
    _masks_case("2 images of 1 cell, both on the object", [[1], [1]], [2]),
    _masks_case("2 images of 2 cells, the map on the object's cell", [[1, 0], [0, 1]], [1, 0]),
    _masks_case("3 images, one without an object", [[0, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 1]],
                [1, 2, 0, 1]),
    _masks_case("no object anywhere", [[0, 0, 0], [0, 0, 0], [0, 0, 0]], [1, 1, 1]),
    _masks_case("objects everywhere", [[1, 1], [1, 1], [1, 1]], [3, 1]),
    _masks_case("a uniform map: value = chance", [[1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 1, 0]],
                [2, 2, 2, 2]),
    _masks_case("the map on a cell no object covers", [[1, 0, 0], [0, 1, 0], [1, 1, 0]],
                [0, 0, 5]),
    _masks_case("weights with a large total", [[0, 1, 1], [1, 0, 0], [0, 0, 1], [1, 1, 1]],
                [7, 0, 3]),
    # n − 1 below, at and above the 8 rolls (9 images: exactly 8; 12: rolls capped at 8)
    _random_case("4 images of 9 cells", 4, 9, seed=1),
    _random_case("8 images of 6 cells", 8, 6, seed=2),
    _random_case("9 images of 16 cells (8 rolls)", 9, 16, seed=3),
    _random_case("10 images of 16 cells", 10, 16, seed=4),
    _random_case("12 images of 25 cells (rolls capped at 8)", 12, 25, seed=5),
    _random_case("17 images of 64 cells", 17, 64, seed=6, p=0.1),
    _random_case("5 images of 7 cells, dense objects", 5, 7, seed=7, p=0.7),
    _random_case("30 images of 4 cells", 30, 4, seed=8),
    _random_case("2 images of 64 cells", 2, 64, seed=9),
    _random_case("3 images of 2 cells", 3, 2, seed=10, p=0.5),
    _random_case("6 images of 12 cells", 6, 12, seed=11, p=0.2),
]

check_fixed_map_scores = register(Checker(
    "fixed_map_scores", ref_fixed_map_scores, FIXED_MAP_CASES,
    [
        Mistake("the null is the chance level (the null scores the same map against other "
                "images' masks)", partial(ref_fixed_map_scores, null_as="chance")),
        Mistake("the null is 0 (another image's masks still overlap this map)",
                partial(ref_fixed_map_scores, null_as="zero")),
        Mistake("the mass on the object is not divided by the map's total mass",
                partial(ref_fixed_map_scores, normalise="none")),
        Mistake("the mass on the object is divided by the object's area, not the map's mass",
                partial(ref_fixed_map_scores, normalise="object")),
        Mistake("the chance level is the share of images that have an object, not the object's "
                "area share", partial(ref_fixed_map_scores, chance_as="any")),
        Mistake("chance and null swapped (return value, chance, null)",
                partial(ref_fixed_map_scores, order="value null chance")),
    ],
    exercise="fixed_map_scores", tier="predict",
))


# ------------------------------------------------------------ 2. extend: a gate of your design
class _SpatialGate(nn.Module):
    """The reference design: CBAM's spatial gate (Woo et al. 2018, arXiv 1807.06521, §3.1): a
    3×3 conv over the channel mean and max, a sigmoid, the features times the map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=3, padding=1)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([reduce(x, "b c h w -> b 1 h w", "mean"),
                            reduce(x, "b c h w -> b 1 h w", "max")], dim=1)
        return torch.sigmoid(self.conv(pooled))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * rearrange(self.attention_map(x), "b h w -> b 1 h w")


class _Slipped(_SpatialGate):
    """The reference design with one slip turned on (the catalogued mistakes)."""

    def __init__(self, channels: int, slip: str = "") -> None:
        super().__init__(channels)
        self.slip = slip
        if slip == "fixed":                       # no parameter: a fixed gate
            self.conv = None
        if slip == "unused":                      # a layer defined, never used
            self.extra = nn.Linear(channels, channels)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        if self.slip == "fixed":
            return torch.sigmoid(reduce(x, "b c h w -> b h w", "mean"))
        if self.slip == "batch":                  # centred by a statistic over the batch
            pooled = torch.cat([reduce(x, "b c h w -> b 1 h w", "mean"),
                                reduce(x, "b c h w -> b 1 h w", "max")], dim=1)
            scores = self.conv(pooled)
            return torch.sigmoid(scores - scores.mean(dim=0, keepdim=True))[:, 0]
        gate = super().attention_map(x)
        if self.slip == "logits":                 # the scores before the sigmoid
            return torch.logit(gate)
        if self.slip == "map4d":                  # the channel axis kept
            return rearrange(gate, "b h w -> b 1 h w")
        return gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.slip == "detached":               # the input detached before anything reads it
            x = x.detach()
        if self.slip == "logits":
            return x * rearrange(torch.sigmoid(self.attention_map(x)), "b h w -> b 1 h w")
        if self.slip == "map4d":
            return x * self.attention_map(x)
        gate = rearrange(self.attention_map(x), "b h w -> b 1 h w")
        if self.slip == "gate only":              # the gate returned, not the gated features
            return gate
        return x * gate


def ref_make_gate(channels: int, *, slip: str = "") -> nn.Module:
    """A new gate for ``channels`` channels (the reference design; ``slip`` turns on a mistake).
    Built from its own seeded generator state, so the reference leaves torch's RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(channels)
        return _Slipped(channels, slip) if slip else _SpatialGate(channels)


# the statements of the contract; a broken rule replaces its statement with what was seen
SHAPE, PARAMS, INPUT_GRAD, PARAM_GRAD, BATCH, MAP = (
    "output B×C×H×W", "trainable parameters", "gradient reaches the input",
    "gradient reaches every trainable parameter", "eval: each image independent of the batch",
    "attention_map B×H×W, >= 0")


def contract(module: nn.Module, x: torch.Tensor, seed: int) -> tuple[str, ...]:
    """The contract of a gate on the float64 input x (B ≥ 2), as six statements."""
    module = module.double()
    params = [p for p in module.parameters() if p.requires_grad]
    module.train()
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        y = module(xg)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"forward returned {type(y).__name__}, not a tensor")
        shape = SHAPE if y.shape == x.shape else "output shape ≠ input shape"
        weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed),
                              dtype=y.dtype)
        wrt = [xg, *params]
        grads = (torch.autograd.grad((y * weights).sum(), wrt, allow_unused=True)
                 if y.requires_grad else [None] * len(wrt))
    input_grad = (INPUT_GRAD if grads[0] is not None and bool(grads[0].any())
                  else "input gradient: none")
    param_grad = PARAM_GRAD if all(g is not None for g in grads[1:]) else "a parameter's gradient: none"
    module.eval()
    with torch.no_grad():
        together, alone = module(x)[:1], module(x[:1])
        batch = BATCH if same(together, alone) else "eval: image 0 changes with the batch"
        if not hasattr(module, "attention_map"):
            shown = "attention_map: no such method"
        else:
            amap = module.attention_map(x)
            if not isinstance(amap, torch.Tensor) or tuple(amap.shape) != (x.shape[0],
                                                                            *x.shape[2:]):
                shown = "attention_map: not B×H×W"
            elif not bool((amap >= 0).all()):
                shown = "attention_map: values < 0"
            else:
                shown = MAP
    return (shape, PARAMS if params else "0 trainable parameters", input_grad, param_grad,
            batch, shown)


class GateContractChecker(Checker):
    """A function checker whose learner hands in ``make_gate(channels) -> nn.Module`` (or the
    class itself); the value compared on each case is :func:`contract` of the module built."""

    def evaluate(self, subject: Any, case: Case, args: tuple) -> Any:
        module = subject(*args)
        if not isinstance(module, nn.Module):
            return module                       # the engine names what came back
        b, h, w = case.build["batch"], case.build["height"], case.build["width"]
        x = torch.randn(b, args[0], h, w, generator=torch.Generator().manual_seed(case.seed),
                        dtype=torch.float64)
        return contract(module, x, case.seed + 1)

    def gradients(self, subject: Any, case: Case, args: tuple) -> None:
        return None                             # the contract already follows the gradients

    def validate(self, learner: Any) -> str | None:
        if not callable(learner):
            return "expected make_gate, a function channels -> nn.Module (or the module class)"
        return None


def _gate_case(channels: int, batch: int, height: int, width: int, seed: int) -> Case:
    return Case(f"C={channels}, {batch}×{channels}×{height}×{width}",
                lambda g, c=channels: (c,), seed=seed,
                build={"batch": batch, "height": height, "width": width})


GATE_CASES = [
    _gate_case(4, 2, 2, 2, seed=0),       # the smallest the text allows: C = 4, B = 2, 2×2
    _gate_case(5, 3, 5, 7, seed=1),       # odd C, odd non-square map
    _gate_case(16, 2, 16, 16, seed=2),    # after stage 1 (the first "stage" position)
    _gate_case(32, 2, 8, 8, seed=3),      # after stage 2
    _gate_case(64, 3, 8, 8, seed=4),      # the last stage's map
    _gate_case(7, 2, 3, 2, seed=5),       # H > W, a remainder everywhere
]

check_make_gate = register(GateContractChecker(
    "make_gate", ref_make_gate, GATE_CASES,
    [
        Mistake("the output's shape differs from the input's (the gate itself is returned?)",
                partial(ref_make_gate, slip="gate only")),
        Mistake("no trainable parameter", partial(ref_make_gate, slip="fixed")),
        Mistake("no gradient reaches the input", partial(ref_make_gate, slip="detached")),
        Mistake("a trainable parameter gets no gradient (defined but not used in forward)",
                partial(ref_make_gate, slip="unused")),
        Mistake("in eval mode an image's output depends on the other images of the batch",
                partial(ref_make_gate, slip="batch")),
        Mistake("attention_map keeps a channel axis (B×1×H×W, not B×H×W)",
                partial(ref_make_gate, slip="map4d")),
        Mistake("attention_map returns negative values (the scores before the sigmoid?)",
                partial(ref_make_gate, slip="logits")),
    ],
    success="all checks passed: it can take part in the comparison",
    exercise="make_gate", tier="extend",
))
