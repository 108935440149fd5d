"""How much a zoo number moves with the test images: per-image scores and a bootstrap interval.

A spatial metric of :mod:`attn_tutorial.metrics` — the share of a gate's contrast on the object
(BAM, SCConv) or the attention mass on the object (EMSA, PAM) — is a mean over images of one
number per image, and its null is the mean of the same number scored against other images'
masks. So both split into per-image parts: image ``b``'s own score and its null (its map against
the masks of images ``b − 1 … b − 8``, as :func:`~attn_tutorial.metrics.shuffled_null` rolls the
batch). :func:`per_image` returns them; their means are the metric's value and null.

:func:`bootstrap_ratio` then resamples the test images with replacement (each image keeps its own
score and its null) and returns the 2.5 % and 97.5 % quantiles of ``Σ own / Σ null``: a 95 %
interval for value / null *at one seed* — the noise of drawing 400 test images, not the noise of
training at another seed. The generator is seeded, so the interval is the same at every run.
"""

from __future__ import annotations

import torch
from einops import einsum, rearrange, reduce
from torch import nn

from attn_tutorial._validate import require_int
from attn_tutorial.data import Task
from attn_tutorial.metrics import (area_share, gate_contrast, score_gate_contrast,
                                   score_token_mass)

__all__ = ["SHIFTS", "RESAMPLES", "own_and_null", "per_image", "bootstrap_ratio"]

#: The rolls of the null (as :func:`attn_tutorial.metrics.shuffled_null`'s default).
SHIFTS = 8
#: Bootstrap resamples of the test images.
RESAMPLES = 1000


def own_and_null(scores: torch.Tensor, shifts: int = SHIFTS) -> tuple[torch.Tensor, torch.Tensor]:
    """``scores[b, c]``: image b's map scored against image c's masks (B×B). Returns image b's
    own score ``scores[b, b]`` and its null ``mean_{k=1..shifts} scores[b, (b − k) mod B]``."""
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"scores must be B×B, got shape {tuple(scores.shape)}")
    count = scores.shape[0]
    shifts = min(require_int("shifts", shifts), count - 1)
    if shifts < 1:
        raise ValueError("own_and_null needs at least 2 images (the null scores other images)")
    b = torch.arange(count)
    own = scores[b, b]
    null = torch.stack([scores[b, (b - k) % count] for k in range(1, shifts + 1)]).mean(dim=0)
    return own, null


def _score_matrix(scorer, module: nn.Module, x: torch.Tensor, task: Task) -> torch.Tensor:
    """B×B: each image's map scored against each image's masks, by the scorer's formula."""
    attention = module.attention_map(x)
    if scorer is score_gate_contrast:          # share of |g − median g| on the object
        contrast = gate_contrast(attention).double()
        share = area_share(task.masks, tuple(contrast.shape[1:]), contrast.dtype)
        total = reduce(contrast, "b h w -> b 1", "sum")
        if (total == 0).any():
            raise ValueError("a gate is flat in some image: its share is not defined per image")
        return einsum(contrast, share, "b h w, c h w -> b c") / total
    if attention.dim() == 3:                   # one head (PAM): B×N×M
        attention = rearrange(attention, "b n m -> b 1 n m")
    height, width = x.shape[2:]
    grid = module.key_grid(height, width) if hasattr(module, "key_grid") else (height, width)
    keys = reduce(attention.double(), "b heads n m -> b m", "mean")   # mass per key, per image
    share = rearrange(area_share(task.masks, tuple(grid), torch.float64), "b h w -> b (h w)")
    return einsum(keys, share, "b m, c m -> b c")


def per_image(model: nn.Module, task: Task, inputs: dict[str, torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each test image's own score and its null (B and B, float64), averaged over the plugged
    modules as the manifest's metric is; None when the model's scorer is not one of the two
    per-image means (gate contrast, token mass). ``inputs``: ``model.module_inputs(task.images)``
    when already at hand."""
    scorer = getattr(getattr(model, "spec", None), "scorer", None)
    if scorer not in (score_gate_contrast, score_token_mass):
        return None
    if inputs is None:
        inputs = model.module_inputs(task.images)
    with torch.no_grad():
        parts = [own_and_null(_score_matrix(scorer, model.get_submodule(path), x, task))
                 for path, x in inputs.items()]
    own = torch.stack([o for o, _ in parts]).mean(dim=0)
    null = torch.stack([n for _, n in parts]).mean(dim=0)
    return own, null


def bootstrap_ratio(own: torch.Tensor, null: torch.Tensor, resamples: int = RESAMPLES,
                    seed: int = 0) -> tuple[float, float]:
    """The 95 % bootstrap interval of ``Σ own / Σ null`` over images resampled with replacement
    (``resamples`` draws from a generator seeded with ``seed``; percentile interval)."""
    if own.dim() != 1 or own.shape != null.shape:
        raise ValueError(f"own and null must be two vectors of one length, got "
                         f"{tuple(own.shape)} and {tuple(null.shape)}")
    require_int("resamples", resamples)
    generator = torch.Generator().manual_seed(require_int("seed", seed, minimum=0))
    picks = torch.randint(0, own.shape[0], (resamples, own.shape[0]), generator=generator)
    ratios = own.double()[picks].sum(dim=1) / null.double()[picks].sum(dim=1)
    low, high = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return low.item(), high.item()
