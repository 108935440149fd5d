"""Every network of the course by name, the authors' published numbers, and counting by name.

``NETWORKS`` maps a name to how to build the network, the input it is counted at (224² for the
ImageNet networks; for the heads the 2048×96×96 map that a 768² Cityscapes crop gives at output
stride 8) and the authors' published row (:class:`Published`). :func:`build` gives a network by
name, on the meta device by default so that counting a ResNet-152 costs no memory;
:func:`count` counts its parameters and FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .._validate import require_int
from ..danet import DANetHead
from .counting import Count, count_model
from .heads import EANetHead, FirstOutput
from .resnets import bam_resnet, eca_resnet, epsanet, resnet, scnet
from .rest_network import rest

__all__ = ["Published", "NETWORKS", "build", "count", "input_for"]


@dataclass(frozen=True)
class Published:
    """One row of an authors' table as printed (strings, so that "1.70" keeps its precision):
    parameters (M) and compute (G), the counting
    convention (a key of ``CONVENTIONS``), the unit base (10: decimal M/G; 2: 2²⁰/2³⁰, as the
    ECA script's ``clever_format`` prints), where it is printed, an optional second compute
    number (SCNet's "MAdds"), and ``tolerance``: how many units of the last printed digit ours may
    differ by (0 unless the authors' own tool on their own code does not give their digit)."""

    params_m: str
    compute_g: str
    convention: str
    unit: int
    source: str
    madds_g: str | None = None
    tolerance: int = 0
    note: str = ""


@dataclass(frozen=True)
class _Entry:
    build: Callable[[], nn.Module]
    input: tuple[int, int, int]      # C, H, W of the counted input
    published: Published | None


_ECA_SRC = "BangguWu/ECANet README, ImageNet table"
_SC_SRC = "backseason/SCNet README, ImageNet table"
_EPSA_SRC = "murufeng/EPSANet README, Image Classification on ImageNet"
_REST_SRC = "wofmanaf/ResT README, ResTv1 ImageNet-1K 224x224"
_BAM_SRC = "BAM paper (arXiv 1807.06514), ImageNet-1K table [unverified]"
_ECA_OWN_TOOL = ("thop (Aug 2019) run on the authors' own eca_resnet{d} gives {own} too: "
                 "their last digit is not reproduced by their code + tool")

IMAGENET = (3, 224, 224)
CITYSCAPES_MAP = (2048, 96, 96)  # a 768×768 crop at output stride 8

NETWORKS: dict[str, _Entry] = {
    "resnet50": _Entry(lambda: resnet(50), IMAGENET, None),
    **{f"eca_resnet{d}": _Entry(
        lambda d=d: eca_resnet(d), IMAGENET,
        Published(p, g, "thop2019", 2, _ECA_SRC, tolerance=0 if own is None else 1,
                  note="" if own is None else _ECA_OWN_TOOL.format(d=d, own=own)))
       for d, p, g, own in ((18, "11.15", "1.70", None), (34, "20.79", "3.43", None),
                            (50, "24.37", "3.86", None), (101, "42.49", "7.35", "7.34G"),
                            (152, "57.41", "10.83", "57.40M/10.82G"))},
    "bam_resnet50": _Entry(lambda: bam_resnet(50), IMAGENET,
                           Published("25.92", "3.94", "mac_caffe", 10, _BAM_SRC)),
    "scnet50": _Entry(lambda: scnet(50), IMAGENET,
                      Published("25.56", "7.9", "scnet", 10, _SC_SRC, madds_g="4.0")),
    "scnet101": _Entry(lambda: scnet(101), IMAGENET,
                       Published("44.57", "14.4", "scnet", 10, _SC_SRC, madds_g="7.2")),
    "epsanet50": _Entry(lambda: epsanet(50), IMAGENET,
                        Published("22.56", "3.62", "thop2021", 10, _EPSA_SRC)),
    "epsanet101": _Entry(lambda: epsanet(101), IMAGENET,
                         Published("38.90", "6.82", "thop2021", 10, _EPSA_SRC)),
    **{f"rest_{v}": _Entry(lambda v=v: rest(v), IMAGENET, Published(p, g, "rest", 10, _REST_SRC))
       for v, p, g in (("lite", "11", "1.4"), ("small", "14", "1.9"), ("base", "30", "4.3"),
                       ("large", "52", "7.9"))},
    "danet_head": _Entry(lambda: FirstOutput(DANetHead(2048, 19)), CITYSCAPES_MAP, None),
    "eanet_head": _Entry(lambda: EANetHead(2048, 19), CITYSCAPES_MAP, None),
}


def _check_name(name: object) -> _Entry:
    if not isinstance(name, str) or name not in NETWORKS:
        raise ValueError(f"network {name!r} is not known; choose from {', '.join(NETWORKS)}")
    return NETWORKS[name]


def build(name: str, device: torch.device | str = "meta") -> nn.Module:
    """The network ``name`` (see ``NETWORKS``), in eval mode, on ``device`` (meta by default:
    shapes only, no memory, no values)."""
    entry = _check_name(name)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device (e.g. 'meta', 'cpu', "
                         f"'cuda'): {error}") from None
    with device:
        model = entry.build()
    return model.eval()


def input_for(name: str, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A meta tensor of batch 1 shaped like the input ``name`` is counted at, or at ``size``: an
    integer for a square H = W or a pair (H, W), each a positive integer."""
    c, h, w = _check_name(name).input
    if size is not None:
        pair = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
        if len(pair) != 2:
            raise ValueError(f"size={size!r} must be one positive integer (H = W) or a pair "
                             "(H, W) of positive integers")
        h, w = require_int("size (H)", pair[0]), require_int("size (W)", pair[1])
    return torch.empty(1, c, h, w, device="meta")


def count(name: str, size: int | tuple[int, int] | None = None) -> Count:
    """Parameters and FLOPs of network ``name`` for one input of ``size`` (H, W; default the
    authors' size: 224² for ImageNet networks, the 96² output-stride-8 map of a 768² Cityscapes
    crop for the heads), counted on the meta device. A size the network does not take is refused
    by the network itself (see each network's input-size rule)."""
    x = input_for(name, size)
    return count_model(name, build(name), x)
