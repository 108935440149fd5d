"""The mechanisms that plug into the tiny networks: what each one is, where it goes, how it is scored.

A :class:`Mechanism` entry holds

- a ``factory(channels, **options) -> nn.Module`` mapping B×C×H×W to B×C×H×W (timm's
  ``create_attn`` convention; an ``nn.Module`` class is a factory as it stands),
- the ``options`` passed to it (the tiny networks' settings, e.g. SE's ``reduction=4``),
- its ``position`` in :class:`~attn_tutorial.models.TinyResNet` (one of :data:`POSITIONS`),
- its ``scorer(module, x, task) -> Metric`` (a function of :mod:`attn_tutorial.metrics` that reads
  the module's ``attention_map`` for its input ``x`` against the task's planted structure), and
- the ``task`` it is scored (and trained, in the zoo) on.

Every built-in module exposes ``attention_map(x)``; a scorer reads it, so no record keys are
implied anywhere. :func:`register_mechanism` adds an entry to :data:`MECHANISMS` so that
``TinyResNet("name")`` finds it; a learner's module needs no registration at all::

    model = TinyResNet(MyGate, position="stage")         # a class: built as MyGate(channels)
    mine = define_mechanism("mine", MyGate, "stage", scorer=score_spatial_mass)
    plug_and_compare(["none", mine])                      # an unregistered entry

Defining an entry checks, once, that the factory returns an ``nn.Module`` that keeps B×C×H×W
(16 channels on an 8×8 map), so a factory that forgets ``return`` or changes C fails at once with
a message that says so, not later inside a network.

The two adapters the built-in entries need live here too: :class:`TokenMixer` (EMSA as a pre-norm
token mixer on a feature map) and :class:`SCSplitConv` (SCNet's split of a conv into a plain and a
self-calibrated half).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from einops import rearrange
from torch import nn

from attn_tutorial import metrics
from attn_tutorial._validate import (require_bool, require_divisible, require_feature_map,
                                     require_int)
from attn_tutorial.bam import BAM
from attn_tutorial.danet import CAM, PAM
from attn_tutorial.eca import ECA, SE
from attn_tutorial.external import ExternalAttention
from attn_tutorial.psa import PSA
from attn_tutorial.rest import EMSA
from attn_tutorial.scconv import SCConv

__all__ = [
    "POSITIONS", "TASKS", "Mechanism", "MECHANISMS", "define_mechanism", "register_mechanism",
    "unregister_mechanism", "resolve", "TokenMixer", "SCSplitConv", "tiny_psa",
]

#: Where a mechanism can be plugged (see :mod:`attn_tutorial.models`).
POSITIONS: tuple[str, ...] = ("block", "stage", "conv", "head", "last")

#: The tasks a mechanism can be scored on (see :mod:`attn_tutorial.data`).
TASKS: tuple[str, ...] = ("object_on_texture", "multi_scale_objects", "multi_object_segmentation")

Scorer = Callable[[nn.Module, torch.Tensor, Any], metrics.Metric]


@dataclass(frozen=True)
class Mechanism:
    """A pluggable mechanism (build with :func:`define_mechanism`, which checks it).

    Attributes:
        name: the registry key.
        factory: ``factory(channels, **options) -> nn.Module`` mapping B×C×H×W to B×C×H×W (for
            position ``conv`` it replaces a C -> C stride-1 3×3 conv).
        position: one of :data:`POSITIONS`.
        scorer: ``scorer(module, x, task) -> Metric`` for one plugged module and its input ``x``
            (called with gradients off), or None (the mechanism is not scored).
        task: the task it is scored and trained on (one of :data:`TASKS`).
        options: keyword arguments for the factory.
    """

    name: str
    factory: Callable[..., nn.Module]
    position: str = "block"
    scorer: Scorer | None = None
    task: str = "object_on_texture"
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, channels: int) -> nn.Module:
        """``factory(channels, **options)``."""
        return self.factory(channels, **self.options)


MECHANISMS: dict[str, Mechanism] = {}


def _check_factory(name: str, factory: Callable[..., nn.Module], options: dict[str, Any],
                   size: int = 8) -> None:
    """Build at 16 and at 32 channels (TinyResNet's widths are 16, 32 and 64: a module that
    hard-codes one width fails at the other) and run one B×C×H×W map through each; the global
    RNG is untouched."""
    for channels in (16, 32):
        _check_at(name, factory, options, channels, size)


def _check_at(name: str, factory: Callable[..., nn.Module], options: dict[str, Any],
              channels: int, size: int) -> None:
    with torch.random.fork_rng(devices=[]):
        try:
            module = factory(channels, **options)
        except Exception as error:  # noqa: BLE001 - re-raised with the entry's name
            raise ValueError(f"mechanism {name!r}: factory({channels}, **{options}) raised "
                             f"{type(error).__name__}: {error}") from error
        if not isinstance(module, nn.Module):
            raise ValueError(f"mechanism {name!r}: factory({channels}) returned "
                             f"{type(module).__name__}, not an nn.Module (a missing return?)")
        x = torch.randn(2, channels, size, size)
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(x)
        except Exception as error:  # noqa: BLE001
            raise ValueError(f"mechanism {name!r}: its module fails on a 2×{channels}×{size}×"
                             f"{size} map: {type(error).__name__}: {error}") from error
        finally:
            module.train(was_training)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"mechanism {name!r}: its module maps 2×{channels}×{size}×{size} "
                             f"to {shape}; a plugged module must keep B×C×H×W")


def define_mechanism(name: str, factory: Callable[..., nn.Module], position: str = "block",
                     scorer: Scorer | None = None, *, task: str = "object_on_texture",
                     options: dict[str, Any] | None = None, check: bool = True) -> Mechanism:
    """A checked :class:`Mechanism` (not registered: pass it to TinyResNet or plug_and_compare).

    Raises ValueError for a bad name, position, task or scorer, or (with ``check``) a factory
    that does not build an ``nn.Module`` keeping B×C×H×W at 16 channels on an 8×8 map.
    """
    if not isinstance(name, str) or not name or name == "none":
        raise ValueError(f"name={name!r} must be a non-empty string other than 'none'")
    if not callable(factory):
        raise ValueError(f"factory={factory!r} must be callable: factory(channels) -> nn.Module")
    if position not in POSITIONS:
        raise ValueError(f"position={position!r} must be one of {POSITIONS}")
    if task not in TASKS:
        raise ValueError(f"task={task!r} must be one of {TASKS}")
    if scorer is not None and not callable(scorer):
        raise ValueError(f"scorer={scorer!r} must be None or a function "
                         "scorer(module, x, task) -> Metric")
    if isinstance(factory, nn.Module):
        raise ValueError(f"factory={type(factory).__name__}(...) is an instance; pass the class "
                         f"{type(factory).__name__} (or a function channels -> module)")
    if options is not None and not isinstance(options, dict):
        raise ValueError(f"options={options!r} must be a dict of keyword arguments or None")
    require_bool("check", check)
    options = dict(options or {})
    if check:
        _check_factory(name, factory, options)
    return Mechanism(name, factory, position, scorer, task, options)


def register_mechanism(name: str, factory: Callable[..., nn.Module], position: str = "block",
                       scorer: Scorer | None = None, *, task: str = "object_on_texture",
                       options: dict[str, Any] | None = None,
                       overwrite: bool = False) -> Mechanism:
    """Add a checked entry to :data:`MECHANISMS` so that ``TinyResNet(name)`` plugs it in.

    Arguments as :func:`define_mechanism`; ``overwrite`` allows replacing an entry (a learner
    re-running a cell).
    """
    if isinstance(name, str) and name in MECHANISMS and not require_bool("overwrite", overwrite):
        raise ValueError(f"a mechanism named {name!r} is already registered; pass "
                         "overwrite=True to replace it")
    mechanism = define_mechanism(name, factory, position, scorer, task=task, options=options)
    MECHANISMS[name] = mechanism
    return mechanism


def unregister_mechanism(name: str) -> None:
    """Remove a mechanism added with :func:`register_mechanism`."""
    if name not in MECHANISMS:
        raise ValueError(f"no mechanism named {name!r} is registered")
    del MECHANISMS[name]


def resolve(mechanism: str | Mechanism | Callable[..., nn.Module],
            position: str | None = None) -> Mechanism | None:
    """The entry for a registered name, a Mechanism, or a module class / factory (None for "none").

    A class or factory becomes an unregistered entry named after it, at ``position`` (default
    "block"), without a scorer. ``position`` may only be given with a class or factory.
    """
    if isinstance(mechanism, Mechanism) or isinstance(mechanism, str):
        if position is not None:
            raise ValueError(f"position={position!r} is only for a module class or factory; "
                             f"{mechanism!r} has its own")
    if isinstance(mechanism, Mechanism):
        return mechanism
    if isinstance(mechanism, str):
        if mechanism == "none":
            return None
        if mechanism not in MECHANISMS:
            raise ValueError(f"mechanism={mechanism!r} is not registered; known: "
                             f"{['none', *MECHANISMS]} (add yours with register_mechanism, or "
                             "pass the module class itself)")
        return MECHANISMS[mechanism]
    if isinstance(mechanism, nn.Module):
        raise ValueError(f"mechanism={type(mechanism).__name__}(...) is an instance; pass the "
                         f"class {type(mechanism).__name__} (TinyResNet builds one per place, "
                         "at that place's width)")
    if callable(mechanism):
        name = getattr(mechanism, "__name__", type(mechanism).__name__)
        return define_mechanism(name, mechanism, position or "block")
    raise ValueError(f"mechanism={mechanism!r} must be a registered name, a Mechanism, or a "
                     "module class / factory(channels)")


# --------------------------------------------------------------------------- adapters

class TokenMixer(nn.Module):
    """``x + EMSA(LayerNorm(x))`` on the tokens of a B×C×H×W map (ResT's attention half-block).

    Paper: ResT (NeurIPS 2021, arXiv 2105.13677), official code wofmanaf/ResT. The map's H·W
    positions become tokens (row-major ``(h w)``), a pre-norm EMSA mixes them, the result is added
    back and folded to B×C×H×W. ``sr_ratio=2`` gives the keys on a reduced grid (4×4 keys for an
    8×8 map). ``apply_transform`` is off here, so the attention rows stay convex (sum to 1) and
    can be read as where each token looks.
    """

    def __init__(self, channels: int, num_heads: int = 4, sr_ratio: int = 2) -> None:
        super().__init__()
        self.channels = require_int("channels", channels)
        self.norm = nn.LayerNorm(channels)
        self.attn = EMSA(channels, num_heads=num_heads, sr_ratio=sr_ratio, qkv_bias=True)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        require_feature_map(x, self.channels)
        return self.norm(rearrange(x, "b c h w -> b (h w) c"))

    def key_grid(self, height: int, width: int) -> tuple[int, int]:
        """The keys' grid H''×W'' for an H×W map (EMSA's reduction)."""
        return self.attn.key_grid(height, width)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """EMSA weights B×heads×N×M (N = H·W queries, M keys on :meth:`key_grid`)."""
        return self.attn.attention_map(self._tokens(x), x.shape[2], x.shape[3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.attn(self._tokens(x), x.shape[2], x.shape[3])
        return x + rearrange(mixed, "b (h w) c -> b c h w", h=x.shape[2], w=x.shape[3])


class SCSplitConv(nn.Module):
    """The two branches of an SCNet block in place of one C -> C 3×3 conv.

    Paper: SCNet (CVPR 2020), official code backseason/SCNet (``SCBottleneck``). The channels
    are split in half: one half through a plain 3×3 conv + BN (``k1``), the other through
    :class:`~attn_tutorial.scconv.SCConv` (the self-calibrated branch, ``pooling_r`` 2 here for the
    small maps), and the halves are concatenated. C must be even.
    """

    def __init__(self, channels: int, pooling_r: int = 2) -> None:
        super().__init__()
        require_int("channels", channels)
        if channels % 2:
            raise ValueError(f"channels={channels} must be even: SCSplitConv splits them in half")
        half = channels // 2
        self.channels = channels
        self.k1 = nn.Conv2d(half, half, kernel_size=3, padding=1, bias=False)
        self.k1_bn = nn.BatchNorm2d(half)
        self.sc = SCConv(half, pooling_r=pooling_r)

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """The calibration gate of the self-calibrated half, B×C/2×H×W."""
        require_feature_map(x, self.channels)
        return self.sc.attention_map(x.chunk(2, dim=1)[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_feature_map(x, self.channels)
        plain, calibrated = x.chunk(2, dim=1)
        return torch.cat([self.k1_bn(self.k1(plain)), self.sc(calibrated)], dim=1)


def tiny_psa(channels: int, se_reduction: int = 4) -> PSA:
    """PSA as the tiny network uses it: kernels 3, 5, 7, 9, **dense** convs, SE reduction 4.

    Differs from EPSANet's setting: the official groups (1, 4, 8, 16) need ``channels // 4``
    (the output channels per scale) to be a multiple of 16, i.e. ``channels`` a multiple of 64, so
    of the tiny network's stages (16, 32, 64 channels) only the last could take them; the entries
    stay alike across stages. On a CPU a grouped conv at these widths is also about 4× slower than
    the dense one with more FLOPs (measured at one thread, forward + backward of one PSA, batch 64
    of 16×16×16: 107 ms with the groups capped at the split width vs 28 ms dense). The price: the
    PSA network has about 3× the plain network's parameters, so its accuracy is not at matched
    capacity.
    """
    require_int("channels", channels)
    require_divisible("channels", channels, "the number of kernels (3, 5, 7, 9)", 4)
    split = channels // 4
    return PSA(channels, channels, conv_groups=(1, 1, 1, 1), se_reduction=min(se_reduction, split))


# --------------------------------------------------------------------------- built-in entries

def _register_builtins() -> None:
    cls, seg = "object_on_texture", "multi_object_segmentation"
    builtins = [  # name, factory, options, position, scorer, task
        ("se", SE, {"reduction": 4}, "block", metrics.score_channel_gate, cls),
        ("eca", ECA, {"k_size": 3}, "block", metrics.score_channel_gate, cls),
        ("bam", BAM, {"reduction_ratio": 4, "dilation": 2}, "stage",
         metrics.score_gate_contrast, cls),
        ("psa", tiny_psa, {}, "conv", metrics.score_channel_gate, cls),
        ("scconv", SCSplitConv, {}, "conv", metrics.score_gate_contrast, cls),
        ("pam", PAM, {}, "head", metrics.score_token_mass, seg),
        ("cam", CAM, {}, "head", metrics.score_channel_grouping, seg),
        ("cam_paper", CAM, {"variant": "paper"}, "head", metrics.score_channel_grouping, seg),
        ("emsa", TokenMixer, {}, "last", metrics.score_token_mass, cls),
        ("external", ExternalAttention, {"memory_size": 16}, "last", metrics.score_slot_purity,
         cls),
    ]
    for name, factory, options, position, scorer, task in builtins:
        # the library's own modules, tested in tests/test_registry.py: not run at every import
        MECHANISMS[name] = define_mechanism(name, factory, position, scorer, task=task,
                                            options=options, check=False)


_register_builtins()
