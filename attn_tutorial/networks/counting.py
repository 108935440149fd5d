"""How the papers counted: FlopCounterMode FLOPs, thop's rules of 2019 and 2021, Caffe-style MACs.

The reason published numbers look different (``CONVENTIONS`` has one line each, and every row of
the table names its own):

* **FLOPs** here are ``torch.utils.flop_counter.FlopCounterMode`` FLOPs: 2 per multiply-add of
  every convolution and matrix product (BN, activations and pooling are not counted). **MACs** are
  half of that. Most papers' "FLOPs" are MACs.
* **ECA-Net** counted with ``thop`` (``paras_flops.py``) and printed with its own
  ``clever_format``, which divides by **1024² and 1024³**: "24.37M" is 25,557,112 / 2²⁰; no module
  is skipped. The ``thop`` of the time (Aug 2019) also counts 4 ops per BN input element,
  (2·in − 1) per Linear output, (window + 1) per pooled output and nothing for ReLU, max-pool and
  sigmoid: :func:`count_thop` repeats those rules (``version="2019"``).
* **SCNet** (tool not named): "MAdds" are those thop-2019 ops, "FLOPs" count each multiply-add
  as 2 plus the same BN and pooling ops.
* **EPSANet** (tool not named): thop's May-2021 rules (MACs + 2 ops per BN element + pools).
* **BAM** (paper): MACs of the network with the stride on the first 1×1 conv of a strided block,
  as in the original Caffe ResNet whose ResNet-50 is the papers' 3.86 G baseline
  (:func:`caffe_macs`).
* **ResT**: parameters match; the README's FLOPs are below our MACs and are not reproduced. Of
  ResT-Lite's 1.533 G MACs at 224² (FlopCounterMode), 1.096 G are the Linear layers (``addmm``:
  q, kv, proj, the MLPs, the classifier), 0.363 G the convolutions (0.186 G of them the stem)
  and 0.074 G the attention products (``bmm``: QKᵀ and AV). The README's 1.4 G is 0.13 G (9 %)
  below, and no sum of these three terms rounds to it (1.10, 1.17, 1.46, 1.53): what the
  authors counted is not known. The repository's ``get_flops.py`` does not say: it came with
  the ResTv2 code (May 2022, a year after v1), reads ``attn.dim``, which only the v2 attention
  has, and counts with mmcv, which also counts norms and activations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from ..show import count_params

__all__ = ["CONVENTIONS", "Count", "flops", "ThopRules", "count_thop", "count_thop_2019",
           "count_model", "count_model_and_thop", "caffe_macs"]

#: what each convention counts, as printed in the table
CONVENTIONS = {
    "thop2019": "thop (Aug 2019): conv MACs + 4/BN elem + fc 2in-1 + pools; M=2^20, G=2^30",
    "scnet": "MAdds = thop 2019 ops; 'FLOPs' = 2 x MACs + thop's BN/pool ops",
    "thop2021": "thop (May 2021): conv/fc MACs + 2/BN elem + pools",
    "mac_caffe": "MACs with the stride on the first 1x1 conv (Caffe ResNet), not on the 3x3",
    "rest": "params only: our MACs are 6-10% above their G: not reproduced (their tool unknown)",
}


@dataclass(frozen=True)
class Count:
    """Parameters and FlopCounterMode FLOPs of one forward (batch 1) at ``input``."""

    name: str
    params: int
    flops: int
    input: tuple[int, int, int]

    @property
    def macs(self) -> int:
        return self.flops // 2


def flops(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


class ThopRules(TorchDispatchMode):
    """Counts ops the way ``thop.profile`` did (Lyken17/pytorch-OpCounter, its counting hooks as of
    ``version`` "2019" = Aug–Sep 2019 or "2021" = May 2021), at the level of the aten ops so that
    the count does not depend on how a module is split into submodules."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version = version
        self.ops = {"mac": 0, "norm": 0, "pool": 0, "linear_adds": 0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        ops = self.ops
        if name == "convolution":   # output elements × (Cin/groups · kernel + bias)
            weight, bias = args[1], args[2]
            ops["mac"] += out.numel() * (weight[0].numel() + (bias is not None))
        elif "batch_norm" in name:  # 2019: subtract, divide, gamma, beta; 2021: 2 (eval)
            ops["norm"] += (4 if self.version == "2019" else 2) * args[0].numel()
        elif name in ("addmm", "mm"):  # Linear: in multiplies (+ in - 1 adds in 2019)
            inner, outputs = args[-1].shape[0], out.shape[0] * out.shape[1]
            ops["mac"] += inner * outputs
            if self.version == "2019":
                ops["linear_adds"] += (inner - 1) * outputs
        elif name == "mean":        # adaptive average pool: (window adds + 1 divide) per output
            ops["pool"] += (args[0].numel() // max(out.numel(), 1) + 1) * out.numel()
        elif name == "avg_pool2d":  # 2019: (k·k adds + 1 divide) per output; 2021: 1
            kernel = args[1] if isinstance(args[1], (list, tuple)) else (args[1], args[1])
            window = kernel[0] * kernel[-1]
            ops["pool"] += (window + 1 if self.version == "2019" else 1) * out.numel()
        return out                  # ReLU, max-pool, sigmoid, add, mul: 0 ops (as thop)


def count_thop(model: nn.Module, x: torch.Tensor, version: str = "2019") -> dict[str, int]:
    """The op count ``thop.profile`` gave for ``model(x)``, split into ``mac`` (convolutions as
    multiply-adds, bias included, and Linear multiplies), ``norm`` (BN: 4 ops per input element in
    2019, 2 in 2021), ``pool`` (average pools) and ``linear_adds`` (2019 only: the in − 1 adds
    of every Linear output). ReLU, max-pool, sigmoid and element-wise products count 0, as in
    thop. ``sum(...)`` of it is thop's total."""
    if version not in ("2019", "2021"):
        raise ValueError(f"version={version!r} must be '2019' or '2021'")
    counter = ThopRules(version)
    with torch.no_grad(), counter:
        model(x)
    return dict(counter.ops)


def count_thop_2019(model: nn.Module, x: torch.Tensor) -> int:
    """thop's total as of Aug–Sep 2019 (how the ECA-Net README counted, printed /1024³)."""
    return sum(count_thop(model, x, "2019").values())


def count_model(name: str, model: nn.Module, x: torch.Tensor) -> Count:
    params = count_params(model)
    return Count(name, params, flops(model, x), tuple(x.shape[1:]))


def count_model_and_thop(name: str, model: nn.Module, x: torch.Tensor, version: str
                     ) -> tuple[Count, dict[str, int]]:
    """:func:`count_model` and :func:`count_thop` from ONE forward (meta ops run in Python and cost
    about a millisecond each, so one pass instead of two halves the table's time)."""
    thop = ThopRules(version)
    with torch.no_grad(), FlopCounterMode(display=False) as counter, thop:
        model(x)
    params = count_params(model)
    return (Count(name, params, int(counter.get_total_flops()), tuple(x.shape[1:])),
            dict(thop.ops))


def caffe_macs(model: nn.Module, macs: int, size: int = 224) -> int:
    """MACs of the same network with the stride moved from the 3×3 conv to the first 1×1 conv of
    each strided block (the original Caffe ResNet; its ResNet-50 is the 3.858 GFLOPs baseline of
    the BAM and CBAM papers): that 1×1 conv then runs at the lower resolution."""
    side = size // 4                      # the stage-1 map after the stem
    for stage in (2, 3, 4):
        conv = getattr(model, f"layer{stage}")[0].conv1
        macs -= conv.in_channels * conv.out_channels * (side * side - (side // 2) ** 2)
        side //= 2
    return macs
