"""Lesson 05's predict exercises (``solutions/05_danet.ipynb``, exercises 5 and 6), re-exported
by ``lesson05.py``: the memory of PAM's B×N×N attention map, as plain Python ints.

5. ``check_pam_map_bytes``: the bytes of the map for B, H, W and the dtype.
6. ``check_pam_side_limit``: the smallest side H = W at which the map passes a budget.

Each has at most 10 cases: the engine prints a captured print flood once per case, and its
registry test caps a checker's whole report at 5000 characters (10 cases × about 460).
"""

from __future__ import annotations

import math
from functools import partial

import torch

from attn_tutorial.checks._core import Case, Checker, Mistake, register

# ------------------------------------------------------------------- 5. predict: the map's bytes
_BYTES = {torch.float64: 8, torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}
_DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32", torch.float16: "float16",
                torch.bfloat16: "bfloat16"}


def ref_pam_map_bytes(b: int, h: int, w: int, dtype: torch.dtype, *, batch: bool = True,
                      power: int = 2, bits: bool = False, fixed4: bool = False,
                      maps: int = 1) -> int:
    """Bytes of PAM's B×N×N attention map, N = H·W, in ``dtype``: B·N²·(bytes per element).

    Knobs: ``batch`` (False: one image), ``power`` (1: B·N), ``bits`` (bits per element),
    ``fixed4`` (4 bytes whatever the dtype), ``maps`` (2: energy and softmax counted).
    """
    n = h * w
    size = 4 if fixed4 else _BYTES[dtype]
    return maps * (b if batch else 1) * n ** power * size * (8 if bits else 1)


def _int_case(names: tuple[str, ...], args: tuple) -> Case:
    shown = ", ".join(f"{n} = {_DTYPE_NAMES.get(a, repr(a))}" for n, a in zip(names, args))
    return Case(shown, lambda g, args=args: args)


_MAP_CONFIGS = [  # (b, h, w, dtype)
    (1, 1, 1, torch.float32),      # boundary: the smallest map, one position
    (2, 1, 1, torch.float16),
    (1, 1, 7, torch.float64),      # a single row
    (3, 2, 3, torch.float32),
    (2, 3, 5, torch.bfloat16),     # non-square
    (1, 14, 14, torch.float32),    # N = 196: 0.15 MB (section 8)
    (1, 28, 28, torch.float16),    # N = 784, the zoo's map
    (1, 96, 96, torch.float32),    # the authors' 768 crop at stride 8: 324 MiB
    (4, 97, 95, torch.float64),    # odd sides
    (16, 64, 128, torch.bfloat16),
]

check_pam_map_bytes = register(
    Checker(
        "pam_map_bytes",
        exercise="pam_map_bytes",
        tier="predict",
        reference=ref_pam_map_bytes,
        cases=[_int_case(("b", "h", "w", "dtype"), c) for c in _MAP_CONFIGS],
        mistakes=[
            Mistake("one image's map: the batch B is missing (B·N² · bytes)",
                    partial(ref_pam_map_bytes, batch=False)),
            Mistake("N elements per image instead of N² (the map is N×N, N = H·W)",
                    partial(ref_pam_map_bytes, power=1)),
            Mistake("bits per element instead of bytes (8 times too many)",
                    partial(ref_pam_map_bytes, bits=True)),
            Mistake("4 bytes per element whatever the dtype (float64 has 8, float16 and "
                    "bfloat16 have 2)", partial(ref_pam_map_bytes, fixed4=True)),
            Mistake("two maps counted (the energy and the softmax output): one B×N×N map is "
                    "asked", partial(ref_pam_map_bytes, maps=2)),
        ],
    )
)


# ------------------------------------------------------------------- 6. predict: the side limit
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


check_pam_side_limit = register(
    Checker(
        "pam_side_limit",
        exercise="pam_side_limit",
        tier="predict",
        reference=ref_pam_side_limit,
        cases=[_int_case(("budget", "b", "dtype"), c) for c in _side_configs()],
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
