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
                        bottleneck for PSA); kernels 3, 5, 7, 9, dense (groups 1: see
                        ``registry.tiny_psa``)
scconv      ``conv``    each block's second 3×3 conv becomes a self-calibrated split: half the
                        channels through a plain 3×3 conv, half through SCConv (SCNet's SC block)
pam, cam    ``head``    in the head, after its conv3×3-BN-ReLU (DANet's head); in classification
                        the same head conv is added before the pooling. ``cam`` is the released
                        CAM (softmax of −E), ``cam_paper`` the paper's (softmax of E)
emsa        ``last``    a pre-norm ResT-style token mixer on the last stage's map:
                        ``x + EMSA(LayerNorm(x))`` on the 64 tokens of the 8×8 grid
external    ``last``    EANet's external-attention block on the last stage's map
========== =========== ==========================================================================

Every mechanism comes from :mod:`attn_tutorial.registry`: a registered name, a
:class:`~attn_tutorial.registry.Mechanism`, or a module class itself (built as
``cls(channels)``; for ``conv`` it replaces a C -> C stride-1 conv). A learner's module needs no
registration::

    model = TinyResNet(MyGate, position="stage")

Attention maps: ``model.record_attention(images)`` runs one forward pass in eval mode and returns,
for each plugged module (by its path in the model), its ``attention_map`` of the input it received
in that pass (forward hooks); ``model.module_inputs(images)`` returns those inputs themselves (what
the scorers of :mod:`attn_tutorial.metrics` read). Recording is off while training: it costs
nothing then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from attn_tutorial._validate import require_all, require_feature_map, require_int
from attn_tutorial.registry import Mechanism, resolve

__all__ = ["BasicBlock", "TinyResNet", "build_model"]


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
        require_int("in_channels", in_channels)
        require_int("out_channels", out_channels)
        require_int("stride", stride)
        if mechanism is not None and not isinstance(mechanism, Mechanism):
            raise ValueError(f"mechanism={mechanism!r} must be a registry Mechanism or None "
                             "(resolve a name or class with attn_tutorial.registry.resolve)")
        position = mechanism.position if mechanism is not None else None
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = (mechanism.build(out_channels) if position == "conv"
                      else _conv3x3(out_channels, out_channels))
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attn = mechanism.build(out_channels) if position == "block" else nn.Identity()
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
        mechanism: a registered name (:data:`~attn_tutorial.registry.MECHANISMS`), "none" (the
            baseline), a :class:`~attn_tutorial.registry.Mechanism`, or a module class /
            ``factory(channels)`` (then ``position`` says where it goes, default "block").
        num_classes: K, the number of classes (per image, or per pixel with background).
        kind: "classification" (logits B×K) or "segmentation" (logits B×K×H×W).
        widths: the three stages' widths (default 16, 32, 64).
        head_channels: the head conv's width (segmentation, and a ``head`` mechanism).
        position: where a module class or factory goes (one of the registry's POSITIONS).

    Input B×3×H×W (H, W >= 8; the course uses 32×32). ``attention_modules`` lists the plugged
    modules by path; ``record_attention(images)`` returns their maps in one pass, ``spec`` is the
    mechanism's entry (None for the baseline) and ``mechanism`` its name.
    """

    def __init__(self, mechanism: str | Mechanism | Callable[..., nn.Module] = "none",
                 num_classes: int = 4, kind: str = "classification",
                 widths: tuple[int, int, int] = (16, 32, 64), head_channels: int = 32,
                 position: str | None = None) -> None:
        super().__init__()
        if kind not in ("classification", "segmentation"):
            raise ValueError(f'kind={kind!r} must be "classification" or "segmentation"')
        require_int("num_classes", num_classes, minimum=2)
        if len(require_all("widths", widths)) != 3:
            raise ValueError(f"widths={widths} must be three positive widths")
        require_int("head_channels", head_channels)
        spec = resolve(mechanism, position)
        position = spec.position if spec is not None else None
        self.mechanism = spec.name if spec is not None else "none"
        self.kind = kind
        self.num_classes = num_classes
        w1, w2, w3 = widths

        self.stem = nn.Sequential(_conv3x3(3, w1), nn.BatchNorm2d(w1), nn.ReLU())
        block_spec = spec if position in ("block", "conv") else None
        self.stage1 = BasicBlock(w1, w1, stride=2, mechanism=block_spec)
        self.stage2 = BasicBlock(w1, w2, stride=2, mechanism=block_spec)
        self.stage3 = BasicBlock(w2, w3, stride=1, mechanism=block_spec)
        self.after1 = spec.build(w1) if position == "stage" else nn.Identity()
        self.after2 = spec.build(w2) if position == "stage" else nn.Identity()
        self.last = spec.build(w3) if position == "last" else nn.Identity()

        if kind == "segmentation" or position == "head":
            self.head_conv: nn.Module = nn.Sequential(
                _conv3x3(w3, head_channels), nn.BatchNorm2d(head_channels), nn.ReLU())
            head_width = head_channels
        else:
            self.head_conv, head_width = nn.Identity(), w3
        self.head_attn = spec.build(head_width) if position == "head" else nn.Identity()
        if kind == "segmentation":
            self.classifier: nn.Module = nn.Conv2d(head_width, num_classes, kernel_size=1)
        else:
            self.classifier = nn.Linear(head_width, num_classes)

        self.spec = spec
        self._recording = False
        self._inputs: dict[str, torch.Tensor] = {}
        for path, module in self.attention_modules.items():
            module.register_forward_hook(self._make_hook(path))

    @property
    def attention_modules(self) -> dict[str, nn.Module]:
        """The plugged modules by their path in the model ({} for the baseline)."""
        if self.spec is None:
            return {}
        wanted = {"block": ["stage1.attn", "stage2.attn", "stage3.attn"],
                  "conv": ["stage1.conv2", "stage2.conv2", "stage3.conv2"],
                  "stage": ["after1", "after2"], "head": ["head_attn"], "last": ["last"]}
        return {path: self.get_submodule(path) for path in wanted[self.spec.position]}

    def _make_hook(self, path: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if self._recording:
                self._inputs[path] = inputs[0].detach()
        return hook

    @torch.no_grad()
    def module_inputs(self, images: torch.Tensor, with_logits: bool = False
                      ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One eval-mode forward pass on ``images``; the input each plugged module received.

        Returns ``{path: x}`` (``{}`` for the baseline), and the logits of that pass too with
        ``with_logits`` (one pass for both). The train/eval mode is restored.
        """
        require_feature_map(images, 3, "images")
        was_training = self.training
        self.eval()
        self._recording, self._inputs = True, {}
        try:
            logits = self(images)
        finally:
            self._recording = False
            self.train(was_training)
        inputs, self._inputs = self._inputs, {}
        return (inputs, logits) if with_logits else inputs

    @torch.no_grad()
    def record_attention(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{path: module.attention_map(x)}`` for every plugged module, from one eval pass.

        ``x`` is the input the module received in that pass. Modules without ``attention_map``
        are left out (``{}`` for the baseline). The train/eval mode is restored.
        """
        was_training = self.training
        inputs = self.module_inputs(images)
        self.eval()
        try:
            return {path: self.get_submodule(path).attention_map(x) for path, x in inputs.items()
                    if hasattr(self.get_submodule(path), "attention_map")}
        finally:
            self.train(was_training)

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


def build_model(mechanism: str | Mechanism | Callable[..., nn.Module] = "none", num_classes: int = 4, kind: str = "classification",
                seed: int = 0, **kwargs: Any) -> TinyResNet:
    """``TinyResNet(mechanism, ...)`` with its weights drawn after ``torch.manual_seed(seed)``."""
    torch.manual_seed(require_int("seed", seed, minimum=0))
    return TinyResNet(mechanism, num_classes=num_classes, kind=kind, **kwargs)
