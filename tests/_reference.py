"""Helpers shared by the library tests: a parameter randomiser and loop references.

The references are written from the equations, index by index, and never call the code under
test (``attn_tutorial``); they lean on nothing but plain torch tensor arithmetic (and, in
``ref_conv``, torch's own convolution). Test modules import them as ``from _reference import ...``:
``tests/`` has no ``__init__.py``, so pytest puts it on ``sys.path`` for them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def randomize_(module: torch.nn.Module, seed: int = 0, *, scale: float,
               mean_scale: float) -> torch.nn.Module:
    """Random weights and random BN running statistics, so no term hides and eval is not a no-op.

    In place, from one generator seeded with ``seed``: every parameter ~ N(0, 1) * ``scale``,
    then every ``running_mean`` ~ N(0, 1) * ``mean_scale`` and every ``running_var`` ~
    U(0.5, 1.5). Returns ``module``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
        for name, buf in module.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g, dtype=buf.dtype) * mean_scale)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g, dtype=buf.dtype) + 0.5)
    return module


@torch.no_grad()
def batchnorm_loop(x: torch.Tensor, bn: torch.nn.Module, train: bool) -> torch.Tensor:
    """BatchNorm one channel (axis 1) at a time: (x - mean) / sqrt(var + eps) * weight + bias.

    Train mode: mean and biased variance of the batch over every axis but 1; eval mode: the
    running statistics.
    """
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        vals = x[:, c]
        if train:
            mean = vals.sum() / vals.numel()
            var = ((vals - mean) ** 2).sum() / vals.numel()
        else:
            mean, var = bn.running_mean[c], bn.running_var[c]
        out[:, c] = (vals - mean) / torch.sqrt(var + bn.eps) * bn.weight[c] + bn.bias[c]
    return out


@torch.no_grad()
def linear_loop(v: torch.Tensor, lin: torch.nn.Linear) -> torch.Tensor:
    """One vector v: out[o] = sum_k W[o, k] v[k] (+ bias[o]), one output at a time."""
    out = torch.stack([(lin.weight[o] * v).sum() for o in range(lin.weight.shape[0])])
    return out if lin.bias is None else out + lin.bias


def ref_conv(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """torch's own F.conv2d with every hyperparameter of ``conv`` (stride, padding, dilation,
    groups): a trusted building block for references of larger modules."""
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation,
                    conv.groups)
