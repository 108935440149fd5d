"""Standard inputs for checkers: odd, non-square and batch-1 cases, float64, seeded."""

from __future__ import annotations

import torch

from attn_tutorial.checks._core import Case


def map_case(shape: tuple[int, ...], seed: int = 0, label: str = "", *, scale: float = 1.0,
             build: dict | None = None) -> Case:
    """One seeded float64 map ``x`` of ``shape`` (standard normal times ``scale``), named
    "x B×C×H×W" followed by ``label``; ``build``: a module exercise's constructor arguments."""
    return Case("x " + "×".join(map(str, shape)) + label,
                lambda g: (torch.randn(*shape, generator=g, dtype=torch.float64) * scale,),
                seed=seed, build=build or {})


def feature_map_cases(shapes=((2, 16, 7, 9), (1, 32, 8, 8), (3, 24, 5, 11))) -> list[Case]:
    """B×C×H×W maps: non-square odd, batch 1 square, another odd non-square by default."""
    return [map_case(shape, seed=i) for i, shape in enumerate(shapes)]


def token_cases(shapes=((2, 7, 9, 16), (1, 4, 4, 32), (3, 5, 3, 8))) -> list[Case]:
    """(B×N×C tokens, H, W) with N = H·W, from (B, H, W, C) shapes."""
    return [
        Case(
            f"tokens {b}×{h * w}×{c} on a {h}×{w} grid",
            lambda g, b=b, h=h, w=w, c=c: (
                torch.randn(b, h * w, c, generator=g, dtype=torch.float64), h, w),
            seed=i,
        )
        for i, (b, h, w, c) in enumerate(shapes)
    ]
