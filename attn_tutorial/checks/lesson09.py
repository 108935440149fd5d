"""Checkers for lesson 09 (plug and compare): exercises in ``solutions/09_plug_and_compare.ipynb``.

1. ``check_eta_squared`` (build): η², the class selectivity of gates B×D, from its formula
   (between-class over total sum of squares per gate, the mean over gates that vary).
2. ``check_fixed_map_scores`` (predict): for a given spatial map per image (integer weights),
   the three numbers of lesson 09's spatial metric — its value, its chance level and its
   rolled-mask null (k = 1 … min(8, n − 1)) — from the masks and the weights, in plain Python.
   The maps differ between images, so the rolls matter; hidden cases too.
3. ``check_make_gate`` (extend): a two-part gate the lesson does not build — a channel part
   ``channel_map(x)`` (B×C) and a spatial part ``attention_map(x)`` (B×H×W), output x times
   both — judged on the contract that lets it take part in the comparison: the shape kept,
   trainable parameters, the gradient reaching the input and every parameter in train mode at
   batch ≥ 2, each image independent of the batch in eval mode, both maps non-negative, of
   their shapes and computed from the image, and the output their product with x. The lesson's
   one-conv spatial gate has no channel part and fails. The compared value is that contract as
   a tuple of short statements; each catalogued mistake breaks one.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned.
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any

import torch
from einops import rearrange, reduce
from torch import nn

from attn_tutorial.checks._compare import same
from attn_tutorial.checks._core import Case, Checker, Mistake, hidden_cases, register

NOTEBOOK = "09_plug_and_compare"  # exercises/09_plug_and_compare.ipynb, in this order
__all__ = ["check_eta_squared", "check_fixed_map_scores", "check_make_gate"]

SHIFTS = 8  # the lesson's null rolls the batch by 1 … min(8, n − 1) images


# ------------------------------------------------------------ 1. predict: a given map's numbers
def ref_fixed_map_scores(masks: list[list[int]], weights: list[list[int]], *,
                         normalise: str = "mass", chance_as: str = "area",
                         null_as: str = "rolled", rolls: str = "capped", direction: int = 1,
                         order: str = "value chance null") -> tuple[float, float, float]:
    """(value, chance, null) of a given map: weight ``weights[b][c]`` on cell c of image b.

    value = mean_b Σ_c w_bc·m_bc / Σ_c w_bc; chance = mean_b (object cells of b / cells); null =
    mean over k = 1 … min(8, n − 1) and b of image b's map against the mask of image (b − k) mod n
    (the batch rolled by k, as ``torch.roll``).

    Knobs: ``normalise`` ("none": the mass on the object not divided by the map's total;
    "object": divided by the object's area instead, 0 without an object), ``chance_as`` ("any":
    the share of images that have an object), ``null_as`` ("chance"; "zero"; "value": as if
    every image had the same map), ``rolls``
    ("all": k = 1 … n − 1, no cap; "from 0": k = 0 … min(8, n − 1) − 1, the own mask counted),
    ``direction`` (−1: the mask of image b + k), ``order`` ("value null chance": swapped).
    """
    n = len(masks)

    def score(w: list[int], m: list[int]) -> float:
        on = sum(wc * mc for wc, mc in zip(w, m))
        if normalise == "none":
            return float(on)
        if normalise == "object":
            return on / sum(m) if sum(m) else 0.0
        return on / sum(w)

    value = sum(score(w, m) for w, m in zip(weights, masks)) / n
    if chance_as == "any":
        chance = sum(1 for m in masks if any(m)) / n
    else:
        chance = sum(sum(m) / len(m) for m in masks) / n
    if null_as == "chance":
        null = chance
    elif null_as == "value":
        null = value
    elif null_as == "zero":
        null = 0.0
    else:
        top = min(SHIFTS, n - 1)
        shifts = {"capped": range(1, top + 1), "all": range(1, n), "from 0": range(top)}[rolls]
        null = sum(sum(score(weights[b], masks[(b - direction * k) % n]) for b in range(n)) / n
                   for k in shifts) / len(shifts)
    if order == "value null chance":
        return (value, null, chance)
    return (value, chance, null)


def _masks_case(name: str, masks: list[list[int]], weights: list[list[int]]) -> Case:
    return Case(name, lambda g, m=masks, w=weights: ([list(r) for r in m], [list(r) for r in w]))


def _draw(rng, n: int, cells: int, p: float) -> tuple[list[list[int]], list[list[int]]]:
    """n images of ``cells`` cells, each cell on the object with probability p; each image's
    integer weights 0–3 with at least one positive."""
    masks = [[int(rng.random() < p) for _ in range(cells)] for _ in range(n)]
    weights = [[rng.randrange(4) for _ in range(cells)] for _ in range(n)]
    for w in weights:
        w[rng.randrange(cells)] += 1
    return masks, weights


def _random_case(name: str, n: int, cells: int, seed: int, p: float = 0.3) -> Case:
    return Case(name, lambda g, a=_draw(random.Random(seed), n, cells, p): a, seed=seed)


FIXED_MAP_CASES = [
    # the smallest: two images (one roll), one cell
    _masks_case("2 images of 1 cell, one on the object", [[1], [0]], [[1], [1]]),
    _masks_case("2 images of 1 cell, both on the object", [[1], [1]], [[2], [1]]),
    _masks_case("2 images of 2 cells, each map on its own object's cell", [[1, 0], [0, 1]],
                [[1, 0], [0, 1]]),
    _masks_case("3 images, one without an object", [[0, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 1]],
                [[1, 2, 0, 1], [3, 1, 0, 0], [0, 0, 1, 1]]),
    _masks_case("no object anywhere", [[0, 0, 0], [0, 0, 0], [0, 0, 0]],
                [[1, 1, 1], [2, 0, 0], [0, 0, 4]]),
    _masks_case("objects everywhere", [[1, 1], [1, 1], [1, 1]], [[3, 1], [1, 1], [0, 2]]),
    _masks_case("uniform maps: value = chance", [[1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 1, 0]],
                [[2, 2, 2, 2], [1, 1, 1, 1], [5, 5, 5, 5]]),
    _masks_case("one map in every image (the null equals the value)",
                [[1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 5], [0, 1, 5], [0, 1, 5]]),
    _masks_case("weights with a large total", [[0, 1, 1], [1, 0, 0], [0, 0, 1], [1, 1, 1]],
                [[7, 0, 3], [9, 1, 0], [0, 0, 8], [4, 4, 1]]),
    # n − 1 below, at and above the 8 rolls (9 images: exactly 8; 10 and more: capped at 8)
    _random_case("4 images of 9 cells", 4, 9, seed=1),
    _random_case("8 images of 6 cells", 8, 6, seed=2),
    _random_case("9 images of 16 cells (8 rolls)", 9, 16, seed=3),
    _random_case("10 images of 16 cells (rolls capped at 8)", 10, 16, seed=4),
    _random_case("12 images of 25 cells (rolls capped at 8)", 12, 25, seed=5),
    _random_case("17 images of 64 cells", 17, 64, seed=6, p=0.1),
    _random_case("5 images of 7 cells, dense objects", 5, 7, seed=7, p=0.7),
    _random_case("30 images of 4 cells", 30, 4, seed=8),
    _random_case("2 images of 64 cells", 2, 64, seed=9),
    _random_case("3 images of 2 cells", 3, 2, seed=10, p=0.5),
    _random_case("6 images of 12 cells", 6, 12, seed=11, p=0.2),
    *hidden_cases("hidden", lambda rng: _draw(rng, rng.choice([2, 3, 9, 10, 11, 14]),
                                              rng.randint(1, 20), rng.choice([0.2, 0.5])),
                  8, seed=90),
]

check_fixed_map_scores = register(Checker(
    "fixed_map_scores", ref_fixed_map_scores, FIXED_MAP_CASES,
    [
        Mistake("the null is the chance level (the null scores each map against other "
                "images' masks)", partial(ref_fixed_map_scores, null_as="chance")),
        Mistake("the null is 0 (another image's masks still overlap this map)",
                partial(ref_fixed_map_scores, null_as="zero")),
        Mistake("the null is the value (true only when every image has the same map)",
                partial(ref_fixed_map_scores, null_as="value")),
        Mistake("the mass on the object is not divided by the map's total mass",
                partial(ref_fixed_map_scores, normalise="none")),
        Mistake("the mass on the object is divided by the object's area, not the map's mass",
                partial(ref_fixed_map_scores, normalise="object")),
        Mistake("the chance level is the share of images that have an object, not the object's "
                "area share", partial(ref_fixed_map_scores, chance_as="any")),
        Mistake("chance and null swapped (return value, chance, null)",
                partial(ref_fixed_map_scores, order="value null chance")),
        Mistake("no cap on the rolls (k = 1 … n − 1; the null rolls by at most 8 images)",
                partial(ref_fixed_map_scores, rolls="all")),
        Mistake("the rolls start at k = 0 (each image's own mask counted in the null)",
                partial(ref_fixed_map_scores, rolls="from 0")),
        Mistake("rolled the other way (image b read against the mask of image b + k)",
                partial(ref_fixed_map_scores, direction=-1)),
    ],
    exercise="fixed_map_scores", tier="predict",
))


# ------------------------------------------------------------ 0. build: η² from its formula
def ref_eta_squared(gates: torch.Tensor, labels: torch.Tensor, *, weighted: bool = True,
                    total_as: str = "sum", constant: str = "skip", pool: str = "per gate",
                    share: str = "between", root: bool | str = False) -> float:
    """Class selectivity of gates B×D: the mean over gates d with non-zero variance of

        η²_d = Σ_k n_k (ḡ_{k,d} − ḡ_d)² / Σ_b (g_{b,d} − ḡ_d)²,   0 when no gate varies.

    Knobs: ``weighted`` (False: class sizes n_k left out), ``total_as`` ("variance": the total
    divided by B; "unbiased": by B − 1), ``constant`` ("zero": a gate that never varies
    counted as η² = 0),
    ``pool`` ("all gates": one ratio of sums over every gate), ``share`` ("within": the
    within-class share 1 − η²), ``root`` (η, not η²; "per gate": the mean of each gate's η).
    """
    gates = gates.double()
    centred = gates - gates.mean(dim=0)
    total = (centred ** 2).sum(dim=0)
    if total_as == "variance":
        total = total / gates.shape[0]
    elif total_as == "unbiased":
        total = total / (gates.shape[0] - 1)
    between = torch.zeros_like(total)
    for k in labels.unique():
        rows = labels == k
        between = between + (rows.sum() if weighted else 1) * centred[rows].mean(dim=0) ** 2
    if share == "within":
        between = total - between
    keep = total > 1e-12 * gates.shape[0]
    if not keep.any():
        return 0.0
    if pool == "all gates":
        eta2 = between[keep].sum() / total[keep].sum()
    elif constant == "zero":
        eta2 = torch.where(keep, between / total.clamp_min(1e-300), 0.0).mean()
    elif root == "per gate":
        return (between[keep] / total[keep]).sqrt().mean().item()
    else:
        eta2 = (between[keep] / total[keep]).mean()
    return (eta2.sqrt() if root else eta2).item()


def _eta_case(name: str, b: int, d: int, classes: int, seed: int, constant: int = 0,
              labels: list[int] | None = None, dtype=torch.float64, scale: float = 1.0) -> Case:
    def make(g: torch.Generator):
        lab = (torch.tensor(labels) if labels is not None
               else torch.arange(b) % classes)                    # every class present
        lab = lab[torch.randperm(b, generator=g)]
        gates = torch.rand(b, d, generator=g, dtype=torch.float64)
        gates = gates + scale * (lab[:, None] == torch.arange(d) % classes).double()  # class-led
        gates[:, d - constant:] = 0.5 if constant else gates[:, d - constant:]
        return gates.to(dtype), lab
    return Case(name, make, seed=seed)


ETA_CASES = [
    _eta_case("2 images, 2 classes, 1 gate (η² = 1)", 2, 1, 2, seed=0),
    _eta_case("3 images, 2 classes of 2 and 1, 1 gate", 3, 1, 2, seed=1),
    _eta_case("4 images, 1 class (η² = 0)", 4, 3, 1, seed=2),
    _eta_case("6 images, 3 classes, 4 gates", 6, 4, 3, seed=3),
    _eta_case("unequal classes (5, 2, 1 images)", 8, 5, 3, seed=4,
              labels=[0, 0, 0, 0, 0, 1, 1, 2]),
    _eta_case("labels 2 and 7, not 0 … K − 1", 6, 3, 2, seed=5, labels=[2, 7, 2, 7, 7, 7]),
    _eta_case("a gate that never varies (left out)", 9, 4, 3, seed=6, constant=1),
    _eta_case("no gate varies (0)", 5, 3, 2, seed=7, constant=3),
    _eta_case("gates blind to the class", 12, 6, 4, seed=8, scale=0.0),
    _eta_case("40 images, 4 classes, 32 gates", 40, 32, 4, seed=9, scale=0.3),
    _eta_case("float32 gates", 10, 8, 2, seed=10, dtype=torch.float32),
    _eta_case("B×(S·C): 12 gates of 3 scales × 4 channels", 16, 12, 4, seed=11, scale=0.5),
]

check_eta_squared = register(Checker(
    "eta_squared", ref_eta_squared, ETA_CASES,
    [
        Mistake("the class sizes n_k are left out of the between-class sum",
                partial(ref_eta_squared, weighted=False)),
        Mistake("the total is a variance (divided by B) while the between-class sum is not",
                partial(ref_eta_squared, total_as="variance"),
                variants=(partial(ref_eta_squared, total_as="unbiased"),)),
        Mistake("a gate that never varies is counted as η² = 0 instead of left out",
                partial(ref_eta_squared, constant="zero")),
        Mistake("one ratio of sums over all gates, not the mean of each gate's η²",
                partial(ref_eta_squared, pool="all gates")),
        Mistake("the within-class share (1 − η²), not the between-class share",
                partial(ref_eta_squared, share="within")),
        Mistake("the correlation ratio η, not η² (a square root taken)",
                partial(ref_eta_squared, root=True),
                variants=(partial(ref_eta_squared, root="per gate"),)),
    ],
    exercise="eta_squared", tier="build",
))


# ------------------------------------------------------------ 2. extend: a gate of your design
class _TwoPartGate(nn.Module):
    """The reference design, a channel part then a spatial part (in the manner of CBAM, Woo et
    al. 2018, arXiv 1807.06521, §3.1): channel_map = sigmoid(MLP(mean_hw x)), B×C; attention_map =
    sigmoid(3×3 conv over the channel mean and max of x · channel_map), B×H×W; the output is
    x · channel_map · attention_map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(4, channels // 4)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(),
                                 nn.Linear(hidden, channels))
        self.conv = nn.Conv2d(2, 1, kernel_size=3, padding=1)

    def channel_map(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp(reduce(x, "b c h w -> b c", "mean")))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        y = x * rearrange(self.channel_map(x), "b c -> b c 1 1")
        pooled = torch.cat([reduce(y, "b c h w -> b 1 h w", "mean"),
                            reduce(y, "b c h w -> b 1 h w", "max")], dim=1)
        return torch.sigmoid(self.conv(pooled))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * rearrange(self.channel_map(x), "b c -> b c 1 1")
                * rearrange(self.attention_map(x), "b h w -> b 1 h w"))


class _Slipped(_TwoPartGate):
    """The reference design with one slip turned on (the catalogued mistakes)."""

    def __init__(self, channels: int, slip: str = "") -> None:
        super().__init__(channels)
        self.slip = slip
        if slip == "fixed":                       # no parameter: a fixed gate
            self.mlp, self.conv = None, None
        if slip == "unused":                      # a layer defined, never used
            self.extra = nn.Linear(channels, channels)
        if slip == "static":                      # a learned vector, the same for every image
            self.mlp, self.weight = None, nn.Parameter(torch.zeros(channels))

    def channel_map(self, x: torch.Tensor) -> torch.Tensor:
        if self.slip == "fixed":
            return torch.sigmoid(reduce(x, "b c h w -> b c", "mean"))
        if self.slip == "static":
            return torch.sigmoid(self.weight).expand(x.shape[0], -1)
        gate = super().channel_map(x)
        if self.slip == "channel4d":              # the spatial axes kept
            return rearrange(gate, "b c -> b c 1 1")
        return gate

    def _channel(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.channel_map(x)
        return gate if gate.dim() == 4 else rearrange(gate, "b c -> b c 1 1")

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        y = x * self._channel(x)
        pooled = torch.cat([reduce(y, "b c h w -> b 1 h w", "mean"),
                            reduce(y, "b c h w -> b 1 h w", "max")], dim=1)
        if self.slip == "fixed":
            return torch.sigmoid(pooled.mean(dim=1))
        scores = self.conv(pooled)
        if self.slip == "batch":                  # centred by a statistic over the batch
            scores = scores - scores.mean(dim=0, keepdim=True)
        gate = torch.sigmoid(scores)[:, 0]
        if self.slip == "logits":                 # the scores before the sigmoid
            return torch.logit(gate)
        if self.slip == "map4d":                  # the channel axis kept
            return rearrange(gate, "b h w -> b 1 h w")
        return gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.slip == "detached":               # the input detached before anything reads it
            x = x.detach()
        spatial = self.attention_map(x)
        if self.slip == "logits":
            spatial = torch.sigmoid(spatial)
        if spatial.dim() == 3:
            spatial = rearrange(spatial, "b h w -> b 1 h w")
        if self.slip == "gate only":              # the gate returned, not the gated features
            return spatial
        if self.slip == "no channel":             # the channel part computed but not applied
            return x * spatial
        return x * self._channel(x) * spatial


def ref_make_gate(channels: int, *, slip: str = "") -> nn.Module:
    """A new gate for ``channels`` channels (the reference design; ``slip`` turns on a mistake).
    Built from its own seeded generator state, so the reference leaves torch's RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(channels)
        return _Slipped(channels, slip) if slip else _TwoPartGate(channels)


# the statements of the contract; a broken rule replaces its statement with what was seen
SHAPE, PARAMS, INPUT_GRAD, PARAM_GRAD, BATCH, MAP, CHANNEL, PRODUCT = (
    "output B×C×H×W", "trainable parameters", "gradient reaches the input",
    "gradient reaches every trainable parameter", "eval: each image independent of the batch",
    "attention_map B×H×W, >= 0, computed from the image",
    "channel_map B×C, >= 0, computed from the image",
    "eval: output = x · channel_map · attention_map")
SPATIAL_ONLY = "eval: output = x · attention_map (no channel part)"


def _read_map(module: nn.Module, method: str, x: torch.Tensor, shape: tuple[int, ...],
              axes: str, good: str) -> tuple[str, torch.Tensor | None]:
    """One map's statement: present, of ``shape``, >= 0, and not the same for every image."""
    if not callable(getattr(module, method, None)):
        return f"{method}: no such method", None
    got = getattr(module, method)(x)
    if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
        return f"{method}: not {axes}", None
    if not bool((got >= 0).all()):
        return f"{method}: values < 0", None
    if same(got[:1].expand_as(got), got):
        return f"{method}: the same for every image", got
    return good, got


def contract(module: nn.Module, x: torch.Tensor, seed: int) -> tuple[str, ...]:
    """The contract of a two-part gate on the float64 input x (B ≥ 2), as eight statements."""
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
        b, c, h, w = x.shape
        spatial, smap = _read_map(module, "attention_map", x, (b, h, w), "B×H×W", MAP)
        channel, cmap = _read_map(module, "channel_map", x, (b, c), "B×C", CHANNEL)
        product, out = "eval: output ≠ x · channel_map · attention_map", module(x)
        if smap is not None and cmap is not None and same(
                out, x * rearrange(cmap, "b c -> b c 1 1") * rearrange(smap, "b h w -> b 1 h w")):
            product = PRODUCT
        elif smap is not None and same(out, x * rearrange(smap, "b h w -> b 1 h w")):
            product = SPATIAL_ONLY
    return (shape, PARAMS if params else "0 trainable parameters", input_grad, param_grad,
            batch, spatial, channel, product)


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
        Mistake("the channel part is computed but not applied in forward (x · spatial only)",
                partial(ref_make_gate, slip="no channel"),
                holds=lambda got, *args: isinstance(got, tuple) and len(got) == 8
                and got[6:] == (CHANNEL, SPATIAL_ONLY)),
        Mistake("channel_map keeps the spatial axes (B×C×1×1, not B×C)",
                partial(ref_make_gate, slip="channel4d")),
        Mistake("the channel part is one learned vector, the same for every image (not computed "
                "from the input)", partial(ref_make_gate, slip="static")),
    ],
    success="all checks passed: it can take part in the comparison",
    exercise="make_gate", tier="extend",
))
