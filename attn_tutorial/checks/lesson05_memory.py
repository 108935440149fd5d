"""Lesson 05's predict exercises (``solutions/05_danet.ipynb``, exercises 4 and 5), re-exported
by ``lesson05.py``: the memory of PAM's B×N×N attention map, as plain Python ints.

4. ``check_pam_map_bytes``: the bytes of the energy and its softmax for a batch of images.
5. ``check_pam_side_limit``: the smallest side H = W at which the map passes a budget.

Each has at most 10 shown cases plus 5 hidden ones (drawn from the exercise's domain): the engine
prints a captured print flood once per case, and its registry test caps a checker's whole report
at 5000 characters.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from attn_tutorial.checks._core import Case, Checker, Mistake, hidden_cases, register

# ------------------------------------------------------------------- 4. predict: the map's bytes
_BYTES = {torch.float64: 8, torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}
_DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32", torch.float16: "float16",
                torch.bfloat16: "bfloat16"}
DTYPES = tuple(_BYTES)
STRIDE = 8  # DANet's dilated ResNet: the head's map is the image at output stride 8


def ref_pam_map_bytes(b: int, image_h: int, image_w: int, dtype: torch.dtype, *,
                      batch: bool = True, power: int = 2, bits: bool = False,
                      fixed4: bool = False, maps: int = 2, side: str = "ceil") -> int:
    """Bytes of PAM's energy and its softmax output (two B×N×N tensors, alive together during
    the forward) for B images of image_h × image_w pixels in ``dtype``: the head's map is
    ceil(image_h / 8) × ceil(image_w / 8) (each of the backbone's three stride-2 steps rounds
    up), N its number of positions; 2·B·N²·(bytes per element).

    Knobs: ``batch`` (False: one image), ``power`` (1: B·N), ``bits`` (bits per element),
    ``fixed4`` (4 bytes whatever the dtype), ``maps`` (1: the map alone), ``side`` ("floor":
    image // 8; "image": the image's pixels as positions).
    """
    if side == "image":
        h, w = image_h, image_w
    elif side == "floor":
        h, w = image_h // STRIDE, image_w // STRIDE
    else:
        h, w = -(-image_h // STRIDE), -(-image_w // STRIDE)
    n = h * w
    size = 4 if fixed4 else _BYTES[dtype]
    return maps * (b if batch else 1) * n ** power * size * (8 if bits else 1)


def _int_case(names: tuple[str, ...], args: tuple) -> Case:
    shown = ", ".join(f"{n} = {_DTYPE_NAMES.get(a, repr(a))}" for n, a in zip(names, args))
    return Case(shown, lambda g, args=args: args)


_MAP_CONFIGS = [  # (b, image_h, image_w, dtype)
    (1, 1, 1, torch.float32),      # boundary: the smallest image, a 1×1 map
    (2, 8, 8, torch.float16),      # exactly one stride: still 1×1
    (1, 9, 17, torch.float64),     # remainders 1: 2×3
    (3, 16, 40, torch.float32),    # exact multiples: 2×5
    (2, 30, 21, torch.bfloat16),   # remainders 6 and 5: 4×3
    (1, 112, 112, torch.float32),  # a 14×14 map, N = 196
    (4, 97, 95, torch.float64),    # odd sides: 13×12
    (16, 510, 1020, torch.bfloat16),
]

check_pam_map_bytes = register(
    Checker(
        "pam_map_bytes",
        exercise="pam_map_bytes",
        tier="predict",
        reference=ref_pam_map_bytes,
        cases=[_int_case(("b", "image_h", "image_w", "dtype"), c) for c in _MAP_CONFIGS]
        + hidden_cases("hidden case", lambda rng: (rng.randint(1, 16), rng.randint(1, 1100),
                                                   rng.randint(1, 1100), rng.choice(DTYPES)),
                       count=5, seed=5),
        mistakes=[
            Mistake("the batch B is missing (one image's maps)",
                    partial(ref_pam_map_bytes, batch=False)),
            Mistake("N elements per image instead of N² (each map is N×N, N = h·w)",
                    partial(ref_pam_map_bytes, power=1)),
            Mistake("bits per element instead of bytes (8 times too many)",
                    partial(ref_pam_map_bytes, bits=True)),
            Mistake("4 bytes per element whatever the dtype (float64 has 8, float16 and "
                    "bfloat16 have 2)", partial(ref_pam_map_bytes, fixed4=True)),
            Mistake("one map counted: the energy and its softmax output are both alive",
                    partial(ref_pam_map_bytes, maps=1)),
            Mistake("the map's sides rounded down (image // 8) instead of up (ceil(image / 8))",
                    partial(ref_pam_map_bytes, side="floor")),
            Mistake("the image's pixels taken as the positions: PAM runs on the head's map, the "
                    "image at stride 8", partial(ref_pam_map_bytes, side="image")),
        ],
    )
)


# ------------------------------------------------------------------- 5. predict: the side limit
def ref_pam_side_limit(budget: int, b: int, dtype: torch.dtype, *, rule: str = ">",
                       batch: bool = True, power: int = 4, fixed4: bool = False,
                       method: str = "search") -> int:
    """The smallest side s ≥ 1 at which the B×N×N map of an s×s feature map (N = s²) takes
    more than ``budget`` bytes: B·s⁴·(bytes per element) > budget.

    Knobs: ``rule`` ("≥": the first side that reaches the budget; "fits": the largest side
    that does not pass it), ``batch`` (False), ``power`` (2: N = s), ``fixed4`` (4 bytes),
    ``method`` ("float": int of the float fourth root, plus 1).
    """
    per = (b if batch else 1) * (4 if fixed4 else _BYTES[dtype])
    if method == "float":
        return int((budget / per) ** (1 / power)) + 1
    if rule == "≥":  # per·s^p ≥ budget  ⟺  s^p ≥ ceil(budget / per)
        return max(1, _root(-(-budget // per) - 1, power) + 1)
    if rule == "fits":
        return max(1, _root(budget // per, power))
    return _root(budget // per, power) + 1  # per·s^p > budget  ⟺  s^p > floor(budget / per)


def _root(x: int, p: int) -> int:
    """The largest integer s ≥ 0 with s^p ≤ x (p = 2 or 4), in exact integer arithmetic."""
    s = math.isqrt(max(x, 0))
    return math.isqrt(s) if p == 4 else s


def _side_configs() -> list[tuple]:
    exact = 4 * 96 ** 4  # one float32 map of the 96×96 head map: 324 MiB exactly
    return [  # (budget, b, dtype); at most 10 cases (see _MAP_CONFIGS)
        (0, 1, torch.float32),                  # boundary: no memory at all, side 1 passes
        (4, 1, torch.float32),                  # exactly the 1×1 map: it does not pass, side 2
        (5, 1, torch.float32),
        (64, 2, torch.float16),                 # 2 images × 2 bytes × 2⁴ = 64 exactly: side 3
        (100, 3, torch.float64),
        (2 ** 20, 4, torch.float16),            # 1 MiB
        (exact - 1, 1, torch.float32),          # one byte below the 96×96 map: 96 passes
        (exact, 1, torch.float32),              # exactly 324 MiB: 96 does not pass, 97
        (80 * 2 ** 30, 8, torch.bfloat16),      # one 80 GiB accelerator, 8 images
        (4 * 8182 ** 4 - 1, 1, torch.float32),  # a float fourth root rounds up to 8182.0 here
    ]


def _hidden_budget(rng) -> tuple:
    """A budget from 0 to about 10¹⁵ bytes (log-uniform), or exactly a map's size."""
    b, dtype = rng.randint(1, 16), rng.choice(DTYPES)
    if rng.random() < 0.4:
        return b * _BYTES[dtype] * rng.randint(1, 3000) ** 4, b, dtype
    return int(10 ** rng.uniform(0, 15)), b, dtype


check_pam_side_limit = register(
    Checker(
        "pam_side_limit",
        exercise="pam_side_limit",
        tier="predict",
        reference=ref_pam_side_limit,
        cases=[_int_case(("budget", "b", "dtype"), c) for c in _side_configs()]
        + hidden_cases("hidden case", _hidden_budget, count=5, seed=6),
        mistakes=[
            Mistake("the first side whose map reaches the budget (≥) instead of passing it (>): "
                    "wrong where the budget is exactly a map's size",
                    partial(ref_pam_side_limit, rule="≥")),
            Mistake("the largest side that still fits instead of the smallest that passes "
                    "(one too small)", partial(ref_pam_side_limit, rule="fits")),
            Mistake("one image's map: the batch B is missing",
                    partial(ref_pam_side_limit, batch=False)),
            Mistake("N = s instead of N = s²: the map of an s×s feature map has s⁴ entries",
                    partial(ref_pam_side_limit, power=2)),
            Mistake("4 bytes per element whatever the dtype",
                    partial(ref_pam_side_limit, fixed4=True)),
            Mistake("the fourth root taken in floating point (int(root) + 1): it rounds up to "
                    "a whole side just below one; search with integers",
                    partial(ref_pam_side_limit, method="float")),
        ],
    )
)
