"""A tiny ResNet for 32×32 images into which every attention mechanism of the course plugs by name.

Lesson 09 trains each mechanism in the same small network on the same synthetic data
(:mod:`attn_tutorial.data`) and reads its attention maps against the planted structure
(:mod:`attn_tutorial.metrics`). The network is deliberately small so that a variant trains in
seconds on a laptop CPU:

```
image 3×32×32 ─ stem conv3×3 (16) ─ stage 1: block 16, stride 2  (16×16)
                                   ─ stage 2: block 32, stride 2  (8×8)
                                   ─ stage 3: block 64, stride 1  (8×8)   ─ head
```

Each stage is one residual *basic block* (conv3×3-BN-ReLU-conv3×3-BN, plus the shortcut, ReLU).
The head is global average pooling and a linear layer (classification), or conv3×3-BN-ReLU to 32
channels, a 1×1 classifier and bilinear up-sampling to the input size (segmentation).

Where each mechanism goes (its *position*), as its paper places it:

========== =========== ==========================================================================
name        position    where
========== =========== ==========================================================================
none        —           the baseline: nothing added
se, eca     ``block``   end of each block's residual branch, after the second BN, before the
                        addition (SENet, ECA-Net)
bam         ``stage``   between stages: after stage 1 and after stage 2 (BAM sits at the
                        network's bottlenecks)
psa         ``conv``    replaces each block's second 3×3 conv (EPSANet swaps the 3×3 conv of a
                        bottleneck for PSA); kernels 3, 5, 7, 9, dense (groups 1: see ``_psa``)
scconv      ``conv``    each block's second 3×3 conv becomes a self-calibrated split: half the
                        channels through a plain 3×3 conv, half through SCConv (SCNet's SC block)
pam, cam    ``head``    in the head, after its conv3×3-BN-ReLU (DANet's head); in classification
                        the same head conv is added before the pooling. ``cam`` is the released
                        CAM (softmax of −E), ``cam_paper`` the paper's (softmax of E)
emsa        ``last``    a pre-norm ResT-style token mixer on the last stage's map:
                        ``x + EMSA(LayerNorm(x))`` on the 64 tokens of the 8×8 grid
external    ``last``    EANet's external-attention block on the last stage's map
========== =========== ==========================================================================

Every mechanism is built by a *factory* ``factory(channels) -> nn.Module`` that maps
``B×C×H×W -> B×C×H×W`` (for ``conv`` it replaces a C -> C stride-1 conv). A learner's own module
plugs in the same way::

    register_mechanism("mine", lambda c: MyGate(c), position="block")
    model = TinyResNet("mine")

Attention maps: ``model.record_attention(images)`` runs one forward pass in eval mode and returns,
for each plugged module (by its path in the model), what its *probe* read from it — e.g. BAM's
gate, PAM's N×N map. Probes call the library modules' own map methods on the module's
input during the forward pass (forward hooks), so what is recorded is what that pass used.
Recording is off while training: it costs nothing then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import nn

from attn_tutorial._validate import require_feature_map
from attn_tutorial.bam import BAM
from attn_tutorial.danet import CAM, PAM
from attn_tutorial.eca import ECA, SE
from attn_tutorial.external import ExternalAttention
from attn_tutorial.psa import PSA
from attn_tutorial.rest import EMSA
from attn_tutorial.scconv import SCConv

__all__ = [
    "POSITIONS", "Mechanism", "MECHANISMS", "register_mechanism", "unregister_mechanism",
    "TokenMixer", "SCSplitConv", "BasicBlock", "TinyResNet", "build_model",
]

#: Where a mechanism can be plugged (see the module docstring).
POSITIONS: tuple[str, ...] = ("block", "stage", "conv", "head", "last")

Probe = Callable[[nn.Module, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Mechanism:
    """A pluggable mechanism: how to build it, where it goes, how to read its attention.

    Attributes:
        name: the registry key.
        factory: ``factory(channels) -> nn.Module`` mapping B×C×H×W to B×C×H×W.
        position: one of :data:`POSITIONS`.
        probe: ``probe(module, x) -> dict`` of tensors read from the module for its input ``x``
            (called with gradients off, only while recording), or None: then a module with an
            ``attention_map(x)`` method is probed with it, any other records nothing.
        metric: the name of the function in :mod:`attn_tutorial.metrics` that scores this
            mechanism's maps, or None.
    """

    name: str
    factory: Callable[[int], nn.Module]
    position: str
    probe: Probe | None = None
    metric: str | None = None


MECHANISMS: dict[str, Mechanism] = {}


def register_mechanism(name: str, factory: Callable[[int], nn.Module], position: str = "block",
                       probe: Probe | None = None, metric: str | None = None, *,
                       overwrite: bool = False) -> Mechanism:
    """Add a mechanism to :data:`MECHANISMS` so that ``TinyResNet(name)`` plugs it in.

    Args:
        name: the key (a non-empty string; "none" is the baseline and cannot be replaced).
        factory: ``factory(channels) -> nn.Module``, a module mapping B×C×H×W to B×C×H×W.
        position: where it goes, one of :data:`POSITIONS`.
        probe, metric: see :class:`Mechanism`.
        overwrite: allow replacing an existing entry (a learner re-running a cell).
    """
    if not isinstance(name, str) or not name or name == "none":
        raise ValueError(f"name={name!r} must be a non-empty string other than 'none'")
    if not callable(factory):
        raise ValueError(f"factory={factory!r} must be callable: factory(channels) -> nn.Module")
    if position not in POSITIONS:
        raise ValueError(f"position={position!r} must be one of {POSITIONS}")
    if name in MECHANISMS and not overwrite:
        raise ValueError(f"a mechanism named {name!r} is already registered; pass "
                         "overwrite=True to replace it")
    mechanism = Mechanism(name, factory, position, probe, metric)
    MECHANISMS[name] = mechanism
    return mechanism


def unregister_mechanism(name: str) -> None:
    """Remove a mechanism added with :func:`register_mechanism`."""
    if name not in MECHANISMS:
        raise ValueError(f"no mechanism named {name!r} is registered")
    del MECHANISMS[name]


# --------------------------------------------------------------------------- wrapper modules

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
        self.channels = channels
        self.norm = nn.LayerNorm(channels)
        self.attn = EMSA(channels, num_heads=num_heads, sr_ratio=sr_ratio, qkv_bias=True)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        require_feature_map(x, self.channels)
        return self.norm(rearrange(x, "b c h w -> b (h w) c"))

    def attention_map(self, x: torch.Tensor) -> torch.Tensor:
        """EMSA weights B×heads×N×M (N = H·W queries, M reduced-grid keys)."""
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
        if channels % 2:
            raise ValueError(f"channels={channels} must be even: SCSplitConv splits them in half")
        half = channels // 2
        self.channels = channels
        self.k1 = nn.Conv2d(half, half, kernel_size=3, padding=1, bias=False)
        self.k1_bn = nn.BatchNorm2d(half)
        self.sc = SCConv(half, pooling_r=pooling_r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_feature_map(x, self.channels)
        plain, calibrated = x.chunk(2, dim=1)
        return torch.cat([self.k1_bn(self.k1(plain)), self.sc(calibrated)], dim=1)


# --------------------------------------------------------------------------- built-in entries

def _psa(channels: int) -> PSA:
    # The official kernels (3, 5, 7, 9) with dense convs (groups 1) and SE reduction 4. The
    # official groups (1, 4, 8, 16) need >= 64 channels per scale, and on a CPU a grouped conv
    # at these widths is about 4× slower than the dense one with more FLOPs (measured at one
    # thread, forward + backward of one PSA, batch 64 of 16×16×16: 107 ms with the groups capped
    # at the split width vs 28 ms dense), which put PSA over the lab's 20 s training budget.
    split = channels // 4
    return PSA(channels, channels, conv_groups=(1, 1, 1, 1), se_reduction=min(4, split))


def _probe_gate(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"gate": module.attention_map(x)}                                        # B×C


def _probe_bam(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"gate": module.attention_map(x)}                              # B×C×H×W


def _probe_psa(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"gate": rearrange(module.attention_map(x), "b s c -> b (s c)")}


def _probe_scconv(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    _, calibrated = x.chunk(2, dim=1)
    return {"gate": module.sc.attention_map(calibrated)}              # B×C/2×H×W


def _probe_pam(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    grid = torch.tensor(x.shape[2:])
    return {"attention": module.attention_map(x), "grid": grid, "key_grid": grid}


def _probe_cam(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"attention": module.attention_map(x), "features": x}


def _probe_emsa(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    height, width = x.shape[2], x.shape[3]
    keys = module.attn.key_grid(height, width)
    return {"attention": module.attention_map(x), "grid": torch.tensor([height, width]),
            "key_grid": torch.tensor(keys)}


def _probe_external(module: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"attention": module.attention_map(x), "grid": torch.tensor(x.shape[2:])}


def _register_builtins() -> None:
    builtins = [
        ("se", lambda c: SE(c, reduction=4), "block", _probe_gate, "class_selectivity"),
        ("eca", lambda c: ECA(c, k_size=3), "block", _probe_gate, "class_selectivity"),
        ("bam", lambda c: BAM(c, reduction_ratio=4, dilation=2), "stage", _probe_bam,
         "spatial_contrast_on_object"),
        ("psa", _psa, "conv", _probe_psa, "class_selectivity"),
        ("scconv", SCSplitConv, "conv", _probe_scconv, "spatial_contrast_on_object"),
        ("pam", PAM, "head", _probe_pam, "token_mass_on_object"),
        ("cam", CAM, "head", _probe_cam, "same_class_channel_mass"),
        ("cam_paper", lambda c: CAM(c, variant="paper"), "head", _probe_cam,
         "same_class_channel_mass"),
        ("emsa", TokenMixer, "last", _probe_emsa, "token_mass_on_object"),
        ("external", lambda c: ExternalAttention(c, memory_size=16), "last", _probe_external,
         "slot_purity"),
    ]
    for name, factory, position, probe, metric in builtins:
        register_mechanism(name, factory, position, probe, metric, overwrite=True)


_register_builtins()


def _lookup(name: str) -> Mechanism | None:
    if name == "none":
        return None
    if name not in MECHANISMS:
        raise ValueError(f"mechanism={name!r} is not registered; known: "
                         f"{['none', *MECHANISMS]} (add yours with register_mechanism)")
    return MECHANISMS[name]


# --------------------------------------------------------------------------- the network

def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                     bias=False)


class BasicBlock(nn.Module):
    """ResNet basic block with optional plug-in points.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) -> attn  +  shortcut(x))``; ``conv2`` is replaced by
    a ``conv`` mechanism, ``attn`` is a ``block`` mechanism (identity otherwise). The shortcut is
    a 1×1 conv + BN when the width or stride changes.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 mechanism: Mechanism | None = None) -> None:
        super().__init__()
        position = mechanism.position if mechanism is not None else None
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = (mechanism.factory(out_channels) if position == "conv"
                      else _conv3x3(out_channels, out_channels))
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attn = mechanism.factory(out_channels) if position == "block" else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class TinyResNet(nn.Module):
    """A three-stage ResNet for 32×32 images with one attention mechanism plugged in by name.

    Args:
        mechanism: a key of :data:`MECHANISMS`, or "none" (the baseline).
        num_classes: K, the number of classes (per image, or per pixel with background).
        kind: "classification" (logits B×K) or "segmentation" (logits B×K×H×W).
        widths: the three stages' widths (default 16, 32, 64).
        head_channels: the head conv's width (segmentation, and a ``head`` mechanism).

    Input B×3×H×W (H, W >= 8; the course uses 32×32). ``attention_modules`` lists the plugged
    modules by path; ``record_attention(images)`` returns what their probes read in one pass.
    """

    def __init__(self, mechanism: str = "none", num_classes: int = 4,
                 kind: str = "classification", widths: tuple[int, int, int] = (16, 32, 64),
                 head_channels: int = 32) -> None:
        super().__init__()
        if kind not in ("classification", "segmentation"):
            raise ValueError(f'kind={kind!r} must be "classification" or "segmentation"')
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes} must be >= 2")
        if len(widths) != 3 or min(widths) < 1:
            raise ValueError(f"widths={widths} must be three positive widths")
        spec = _lookup(mechanism)
        position = spec.position if spec is not None else None
        self.mechanism = mechanism
        self.kind = kind
        self.num_classes = num_classes
        w1, w2, w3 = widths

        self.stem = nn.Sequential(_conv3x3(3, w1), nn.BatchNorm2d(w1), nn.ReLU())
        block_spec = spec if position in ("block", "conv") else None
        self.stage1 = BasicBlock(w1, w1, stride=2, mechanism=block_spec)
        self.stage2 = BasicBlock(w1, w2, stride=2, mechanism=block_spec)
        self.stage3 = BasicBlock(w2, w3, stride=1, mechanism=block_spec)
        self.after1 = spec.factory(w1) if position == "stage" else nn.Identity()
        self.after2 = spec.factory(w2) if position == "stage" else nn.Identity()
        self.last = spec.factory(w3) if position == "last" else nn.Identity()

        if kind == "segmentation" or position == "head":
            self.head_conv: nn.Module = nn.Sequential(
                _conv3x3(w3, head_channels), nn.BatchNorm2d(head_channels), nn.ReLU())
            head_width = head_channels
        else:
            self.head_conv, head_width = nn.Identity(), w3
        self.head_attn = spec.factory(head_width) if position == "head" else nn.Identity()
        if kind == "segmentation":
            self.classifier: nn.Module = nn.Conv2d(head_width, num_classes, kernel_size=1)
        else:
            self.classifier = nn.Linear(head_width, num_classes)

        self._spec = spec
        self._recording = False
        self._records: dict[str, dict[str, torch.Tensor]] = {}
        for path, module in self.attention_modules.items():
            module.register_forward_hook(self._make_hook(path))

    @property
    def attention_modules(self) -> dict[str, nn.Module]:
        """The plugged modules by their path in the model ({} for the baseline)."""
        if self._spec is None:
            return {}
        wanted = {"block": ["stage1.attn", "stage2.attn", "stage3.attn"],
                  "conv": ["stage1.conv2", "stage2.conv2", "stage3.conv2"],
                  "stage": ["after1", "after2"], "head": ["head_attn"], "last": ["last"]}
        return {path: self.get_submodule(path) for path in wanted[self._spec.position]}

    def _make_hook(self, path: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if not self._recording:
                return
            probe = self._spec.probe
            with torch.no_grad():
                if probe is not None:
                    self._records[path] = probe(module, inputs[0])
                elif hasattr(module, "attention_map"):
                    self._records[path] = {"attention": module.attention_map(inputs[0])}
        return hook

    @torch.no_grad()
    def record_attention(self, images: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """One eval-mode forward pass on ``images``; what each plugged module's probe read.

        Returns ``{path: {name: tensor}}`` (``{}`` for the baseline or a module without probe).
        The model's train/eval mode is restored afterwards.
        """
        require_feature_map(images, 3, "images")
        was_training = self.training
        self.eval()
        self._recording, self._records = True, {}
        try:
            self(images)
        finally:
            self._recording = False
            self.train(was_training)
        records, self._records = self._records, {}
        return records

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's map (after a ``last`` mechanism): B×C3×H/4×W/4."""
        x = self.after1(self.stage1(self.stem(x)))
        x = self.after2(self.stage2(x))
        return self.last(self.stage3(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        require_feature_map(x, 3, "x")
        if min(x.shape[2:]) < 8:
            raise ValueError(f"x has spatial size {tuple(x.shape[2:])}; H and W must be >= 8")
        h = self.head_attn(self.head_conv(self.features(x)))
        if self.kind == "classification":
            return self.classifier(reduce(h, "b c h w -> b c", "mean"))
        return F.interpolate(self.classifier(h), size=x.shape[2:], mode="bilinear",
                             align_corners=False)


def build_model(mechanism: str = "none", num_classes: int = 4, kind: str = "classification",
                seed: int = 0, **kwargs: Any) -> TinyResNet:
    """``TinyResNet(mechanism, ...)`` with its weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    return TinyResNet(mechanism, num_classes=num_classes, kind=kind, **kwargs)
