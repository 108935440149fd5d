"""Contracts every module of the mechanism files keeps, over one list of all of them (in the
style of timm's whole-registry model tests): wrong rank, wrong channels and integer inputs raise
a ValueError naming the rule; float64 gradcheck in train and in eval; batch 1 in eval; odd and
non-square sizes give the shapes the layers' formulas give; the meta device; reset_parameters()
redraws every parameter. What each module computes is proved by its own file's loop references.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import pytest
import torch

from _reference import randomize_
from attn_tutorial.attention import MultiHeadSelfAttention, SelfAttention2d
from attn_tutorial.bam import BAM, BAMChannelGate, BAMSpatialGate
from attn_tutorial.danet import CAM, PAM, DANetHead
from attn_tutorial.eca import ECA, ECANS, SE, SEGC, SEVar1, SEVar2, SEVar3
from attn_tutorial.external import ExternalAttention, MultiHeadExternalAttention
from attn_tutorial.psa import PSA, EPSABlock
from attn_tutorial.rest import EMSA, PA, BasicStem, Block, PatchEmbed
from attn_tutorial.scconv import SCBottleneck, SCConv

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
randomise = partial(randomize_, scale=0.5, mean_scale=0.3)


def same(C):
    return lambda B, H, W: (B, C, H, W)


def strided(C, s):
    return lambda B, H, W: (B, C, (H - 1) // s + 1, (W - 1) // s + 1)


def tokens_of(C):
    return lambda B, H, W: (B, H * W, C)


@dataclass
class Entry:
    """One module: how to build it, its input layout, its output shape, its gradcheck size.

    ``layout``: ``"map"`` (x B×C×H×W), ``"tokens"`` (x B×N×C) or ``"grid"`` (x B×N×C, H, W).
    ``out(B, H, W)``: the shape of the (first) output. ``grad_hw``: H, W for gradcheck (batch 2
    in train, batch 1 in eval); ``fast``: gradcheck's fast mode (large Jacobians).
    """

    build: Callable[[], torch.nn.Module]
    layout: str
    channels: int
    out: Callable[[int, int, int], tuple]
    grad_hw: tuple[int, int] = (2, 3)
    fast: bool = False


ENTRIES = {
    # eca.py
    "ECA": Entry(lambda: ECA(6), "map", 6, same(6)),
    "ECA_adaptive": Entry(lambda: ECA(32, adaptive=True), "map", 32, same(32), fast=True),
    "ECANS": Entry(lambda: ECANS(6, 3), "map", 6, same(6)),
    "SE": Entry(lambda: SE(8, 4), "map", 8, same(8)),
    "SEVar1": Entry(lambda: SEVar1(6), "map", 6, same(6)),
    "SEVar2": Entry(lambda: SEVar2(6), "map", 6, same(6)),
    "SEVar3": Entry(lambda: SEVar3(6), "map", 6, same(6)),
    "SEGC": Entry(lambda: SEGC(6, 2), "map", 6, same(6)),
    # bam.py
    "BAM": Entry(lambda: BAM(8, reduction_ratio=4), "map", 8, same(8), grad_hw=(3, 5)),
    "BAM_paper": Entry(lambda: BAM(8, reduction_ratio=4, fusion="paper"), "map", 8, same(8),
                       grad_hw=(3, 5)),
    "BAMChannelGate": Entry(lambda: BAMChannelGate(8, 4), "map", 8,
                            lambda B, H, W: (B, 8, 1, 1)),
    "BAMSpatialGate": Entry(lambda: BAMSpatialGate(8, 4), "map", 8,
                            lambda B, H, W: (B, 1, H, W)),
    # psa.py
    "PSA": Entry(lambda: PSA(4, 16, conv_groups=(1, 2, 2, 4), se_reduction=2), "map", 4,
                 same(16), grad_hw=(3, 4)),
    "PSA_stride2_natural": Entry(lambda: PSA(4, 8, conv_kernels=(3, 5), conv_groups=(1, 2),
                                             stride=2, se_reduction=2, concat_order="natural"),
                                 "map", 4, strided(8, 2), grad_hw=(3, 4)),
    "EPSABlock": Entry(lambda: EPSABlock(16, 4, conv_groups=(1, 1, 1, 1), se_reduction=1),
                       "map", 16, same(16), grad_hw=(3, 4), fast=True),
    # scconv.py
    "SCConv": Entry(lambda: SCConv(2, stride=2, pooling_r=2), "map", 2, strided(2, 2),
                    grad_hw=(4, 5)),
    "SCConv_bilinear": Entry(lambda: SCConv(2, stride=2, pooling_r=2, upsample="bilinear"),
                             "map", 2, strided(2, 2), grad_hw=(4, 5), fast=True),
    "SCBottleneck": Entry(lambda: SCBottleneck(8, 2, avd=True, is_first=True), "map", 8,
                          same(8), grad_hw=(4, 4), fast=True),
    # danet.py
    "PAM": Entry(lambda: PAM(8), "map", 8, same(8)),
    "PAM_sdpa": Entry(lambda: PAM(8, use_sdpa=True), "map", 8, same(8)),
    "CAM": Entry(lambda: CAM(8), "map", 8, same(8)),
    "CAM_paper": Entry(lambda: CAM(8, variant="paper"), "map", 8, same(8)),
    "DANetHead": Entry(lambda: DANetHead(32, 3, dropout=0.0), "map", 32,
                       lambda B, H, W: (B, 3, H, W), fast=True),
    # rest.py
    "EMSA": Entry(lambda: EMSA(4, 2, qkv_bias=True, sr_ratio=2, apply_transform=True), "grid",
                  4, tokens_of(4), grad_hw=(3, 5)),
    "PA": Entry(lambda: PA(4), "map", 4, same(4)),
    "PatchEmbed": Entry(lambda: PatchEmbed(2, 3, 4, with_pos=True), "map", 3,
                        lambda B, H, W: (B, ((H + 1) // 2) * ((W + 1) // 2), 4), grad_hw=(4, 5)),
    "BasicStem": Entry(lambda: BasicStem(3, 4, with_pos=True), "map", 3,
                       lambda B, H, W: (B, 4, (H - 1) // 4 + 1, (W - 1) // 4 + 1),
                       grad_hw=(5, 6), fast=True),
    "Block": Entry(lambda: Block(4, 2, mlp_ratio=1.0, sr_ratio=2, apply_transform=True), "grid",
                   4, tokens_of(4), grad_hw=(3, 4)),
    # external.py
    "ExternalAttention": Entry(lambda: ExternalAttention(3, memory_size=3), "map", 3, same(3)),
    "ExternalAttention_untied": Entry(lambda: ExternalAttention(3, memory_size=3,
                                                                tie_memories=False),
                                      "map", 3, same(3)),
    "MultiHeadExternalAttention": Entry(lambda: MultiHeadExternalAttention(4, 2, memory_size=3),
                                        "tokens", 4, tokens_of(4)),
    # attention.py
    "MultiHeadSelfAttention": Entry(lambda: MultiHeadSelfAttention(4, 2, use_sdpa=False),
                                    "tokens", 4, tokens_of(4)),
    "MultiHeadSelfAttention_sdpa": Entry(lambda: MultiHeadSelfAttention(4, 2), "tokens", 4,
                                         tokens_of(4)),
    "SelfAttention2d": Entry(lambda: SelfAttention2d(4, 2, residual=True, use_sdpa=False),
                             "map", 4, same(4)),
    "SelfAttention2d_sdpa": Entry(lambda: SelfAttention2d(4, 2, residual=True), "map", 4,
                                  same(4)),
}
NAMES = list(ENTRIES)


def inputs(entry: Entry, B: int, H: int, W: int, *, channels: int | None = None,
           dtype=F64, device="cpu", seed: int = 0) -> tuple:
    C = entry.channels if channels is None else channels
    g = torch.Generator().manual_seed(seed)
    if entry.layout == "map":
        x = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    else:
        x = torch.randn(B, H * W, C, generator=g, dtype=dtype)
    x = (0.5 * x).to(device)
    return (x, H, W) if entry.layout == "grid" else (x,)


def first(out):
    """The output tensor: DANetHead returns three logits, PatchEmbed (tokens, grid)."""
    return out[0] if isinstance(out, tuple) else out


def tensors(out):
    """What gradcheck differentiates: every tensor output (the grid is not one)."""
    if isinstance(out, tuple):
        return tuple(o for o in out if isinstance(o, torch.Tensor))
    return out


def built(name: str, train: bool = False) -> torch.nn.Module:
    return randomise(ENTRIES[name].build().to(F64), seed=len(name)).train(train)


def methods(module):
    """forward, and attention_map where the module has one (it takes the same arguments)."""
    yield module
    if hasattr(module, "attention_map"):
        yield module.attention_map


def test_every_public_module_of_the_mechanism_files_is_listed():
    import attn_tutorial.attention as attention
    import attn_tutorial.bam as bam
    import attn_tutorial.danet as danet
    import attn_tutorial.eca as eca
    import attn_tutorial.external as external
    import attn_tutorial.psa as psa
    import attn_tutorial.rest as rest
    import attn_tutorial.scconv as scconv

    listed = {type(entry.build()).__name__ for entry in ENTRIES.values()}
    # Mlp and DropPath are layers of ResT's block, shape-agnostic by design (any leading axes)
    not_mechanisms = {"Mlp", "DropPath"}
    for mod in (attention, bam, danet, eca, external, psa, rest, scconv):
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
                assert name in listed | not_mechanisms, f"{mod.__name__}.{name} has no entry"


@pytest.mark.parametrize("name", NAMES)
def test_wrong_rank_raises(name):
    entry = ENTRIES[name]
    m = built(name)
    x, *grid = inputs(entry, 2, 5, 3)
    wrong = x[0] if entry.layout == "map" else x.unsqueeze(0)
    rule = "4-D feature map" if entry.layout == "map" else "3-D tokens"
    for call in methods(m):
        with pytest.raises(ValueError, match=rule):
            call(wrong, *grid)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_channels_raise(name):
    entry = ENTRIES[name]
    m = built(name)
    args = inputs(entry, 2, 5, 3, channels=entry.channels + 1)
    what = "channels" if entry.layout == "map" else "dim"
    for call in methods(m):
        with pytest.raises(ValueError, match=rf"built for {what}={entry.channels}\b"):
            call(*args)


@pytest.mark.parametrize("name", NAMES)
def test_integer_input_gets_one_clear_error(name):
    entry = ENTRIES[name]
    m = built(name)
    x, *grid = inputs(entry, 2, 5, 4)
    for call in methods(m):
        with pytest.raises(ValueError, match=r"x has dtype torch.int64 but must be a "
                                             r"floating-point tensor.*x.float\(\)"):
            call((x * 10).long(), *grid)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_float64(name, train):
    """Finite differences against autograd: batch 2 in train mode, batch 1 in eval mode."""
    entry = ENTRIES[name]
    m = built(name, train)
    x, *grid = inputs(entry, 2 if train else 1, *entry.grad_hw)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: tensors(m(t, *grid)), (x,), fast_mode=entry.fast)


@pytest.mark.parametrize("name", NAMES)
def test_batch_one_in_eval(name):
    entry = ENTRIES[name]
    m = built(name)
    out = first(m(*inputs(entry, 1, 7, 5)))
    assert out.shape == entry.out(1, 7, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("hw", [(7, 5), (5, 9), (9, 4)])
@pytest.mark.parametrize("name", NAMES)
def test_odd_and_non_square_sizes(name, hw):
    entry = ENTRIES[name]
    m = built(name, train=True)
    out = first(m(*inputs(entry, 2, *hw)))
    assert out.shape == entry.out(2, *hw) and torch.isfinite(out).all()
    if hasattr(m, "attention_map"):
        assert torch.isfinite(m.attention_map(*inputs(entry, 2, *hw))).all()


@pytest.mark.parametrize("name", NAMES)
def test_meta_device(name):
    """Built on the meta device (no memory), the module gives the output shape."""
    entry = ENTRIES[name]
    with torch.device("meta"):
        m = entry.build().eval()
    assert all(p.is_meta for p in m.parameters())
    out = first(m(*inputs(entry, 2, 7, 5, dtype=torch.float32, device="meta")))
    assert out.is_meta and out.shape == entry.out(2, 7, 5)


@pytest.mark.parametrize("name", NAMES)
def test_reset_parameters_redraws_every_parameter(name):
    """reset_parameters() is the authors' initialisation: it reaches every parameter, and under
    one seed it draws the same values twice."""
    m = ENTRIES[name].build()
    draws = []
    for _ in range(2):
        with torch.no_grad():
            for p in m.parameters():
                p.fill_(float("nan"))
        torch.manual_seed(3)
        m.reset_parameters()
        draws.append([p.detach().clone() for p in m.parameters()])
        assert all(not torch.isnan(p).any() for p in m.parameters())
    for a, b in zip(*draws):
        assert torch.equal(a, b)
