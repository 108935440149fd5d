"""TinyResNet: every mechanism plugs in at its position, records its maps, and errors are clear."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attn_tutorial.bam import BAM
from attn_tutorial.danet import CAM, PAM
from attn_tutorial.eca import ECA, SE
from attn_tutorial.external import ExternalAttention
from attn_tutorial.models import TinyResNet, build_model
from attn_tutorial.psa import PSA
from attn_tutorial.registry import (MECHANISMS, POSITIONS, SCSplitConv, TokenMixer,
                                    register_mechanism, unregister_mechanism)

BUILTIN = ["se", "eca", "bam", "psa", "scconv", "pam", "cam", "cam_paper", "emsa", "external"]
WHERE = {  # mechanism -> (paths where it must sit, its class)
    "se": (["stage1.attn", "stage2.attn", "stage3.attn"], SE),
    "eca": (["stage1.attn", "stage2.attn", "stage3.attn"], ECA),
    "bam": (["after1", "after2"], BAM),
    "psa": (["stage1.conv2", "stage2.conv2", "stage3.conv2"], PSA),
    "scconv": (["stage1.conv2", "stage2.conv2", "stage3.conv2"], SCSplitConv),
    "pam": (["head_attn"], PAM),
    "cam": (["head_attn"], CAM),
    "cam_paper": (["head_attn"], CAM),
    "emsa": (["last"], TokenMixer),
    "external": (["last"], ExternalAttention),
}


def test_registry_holds_every_builtin():
    assert set(BUILTIN) <= set(MECHANISMS)
    assert all(MECHANISMS[n].position in POSITIONS for n in BUILTIN)


@pytest.mark.parametrize("name", BUILTIN)
def test_mechanism_sits_where_its_paper_puts_it(name):
    paths, cls = WHERE[name]
    model = TinyResNet(name)
    assert list(model.attention_modules) == paths
    for path in paths:
        assert isinstance(model.get_submodule(path), cls)
    # nothing of that class anywhere else
    found = [p for p, m in model.named_modules() if isinstance(m, cls)]
    inner = [p for p in found if not any(p == q for q in paths)]
    assert all(any(p.startswith(q + ".") for q in paths) for p in inner)


def test_baseline_has_no_attention():
    model = TinyResNet("none")
    assert model.attention_modules == {}
    assert model.record_attention(torch.rand(2, 3, 32, 32)) == {}


@pytest.mark.parametrize("name", ["none", *BUILTIN])
@pytest.mark.parametrize("kind", ["classification", "segmentation"])
def test_shapes_and_backward(name, kind):
    model = build_model(name, num_classes=5, kind=kind)
    x = torch.rand(3, 3, 32, 24)
    out = model(x)
    assert out.shape == ((3, 5) if kind == "classification" else (3, 5, 32, 24))
    out.sum().backward()
    assert model.stem[0].weight.grad is not None
    for module in model.attention_modules.values():
        grads = [p.grad for p in module.parameters()]
        assert grads and all(g is not None for g in grads)


EXPECTED_RECORD = {  # the first plugged module's attention_map for a 2×3×32×32 batch
    "se": (2, 16), "eca": (2, 16), "psa": (2, 4, 4),           # PSA: B×scales×C/4
    "bam": (2, 16, 16, 16), "scconv": (2, 8, 16, 16),          # SCConv: its half, C/2
    "pam": (2, 64, 64), "cam": (2, 32, 32), "cam_paper": (2, 32, 32),
    "emsa": (2, 4, 64, 16), "external": (2, 64, 16),
}


@pytest.mark.parametrize("name", BUILTIN)
def test_record_attention(name):
    model = build_model(name)
    model.train()
    records = model.record_attention(torch.rand(2, 3, 32, 32))
    assert model.training  # mode restored
    assert list(records) == list(model.attention_modules)
    first = records[next(iter(records))]
    assert tuple(first.shape) == EXPECTED_RECORD[name]
    # recording is off afterwards: a plain forward stores nothing
    model(torch.rand(2, 3, 32, 32))
    assert model._inputs == {}


def test_recorded_maps_are_the_modules_own():
    model = build_model("pam", kind="segmentation")
    x = torch.rand(2, 3, 32, 32)
    seen = {}
    model.head_attn.register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    record = model.record_attention(x)["head_attn"]
    assert torch.allclose(record, model.head_attn.attention_map(seen["x"]))
    assert torch.allclose(record.sum(-1), torch.ones(2, 64))
    assert torch.equal(model.module_inputs(x)["head_attn"], seen["x"])


def test_cam_entries_are_the_two_variants():
    assert build_model("cam", kind="segmentation").head_attn.variant == "official"
    assert build_model("cam_paper", kind="segmentation").head_attn.variant == "paper"


def test_psa_in_the_tiny_network_is_dense():
    # groups 1 at every scale (the grouped official form is 4x slower on a CPU at these widths)
    for module in build_model("psa").attention_modules.values():
        assert all(conv.groups == 1 for conv in module.modules() if isinstance(conv, nn.Conv2d))
        assert [conv.kernel_size[0] for conv in module.branches] == [3, 5, 7, 9]


def test_same_seed_same_weights():
    a, b = build_model("eca", seed=3), build_model("eca", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


class Doubler(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def attention_map(self, x):
        return self.scale.expand(x.shape[0], -1)

    def forward(self, x):
        return x * self.scale[:, None, None]


@pytest.mark.parametrize("position", POSITIONS)
def test_learner_module_plugs_in_anywhere(position):
    register_mechanism("doubler_test", Doubler, position=position, overwrite=True)
    try:
        model = TinyResNet("doubler_test", kind="segmentation", num_classes=3)
        assert len(model.attention_modules) >= 1
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)
        records = model.record_attention(torch.rand(2, 3, 32, 32))
        assert list(records) == list(model.attention_modules)
        assert all(r.shape[0] == 2 for r in records.values())
    finally:
        unregister_mechanism("doubler_test")


@pytest.mark.parametrize("position", POSITIONS)
def test_a_module_class_plugs_in_without_registration(position):
    model = TinyResNet(Doubler, position=position, kind="segmentation", num_classes=3)
    assert model.mechanism == "Doubler" and "Doubler" not in MECHANISMS
    assert all(isinstance(m, Doubler) for m in model.attention_modules.values())
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)


def test_register_errors():
    with pytest.raises(ValueError, match="position"):
        register_mechanism("x_test", Doubler, position="nowhere")
    with pytest.raises(ValueError, match="none"):
        register_mechanism("none", Doubler)
    with pytest.raises(ValueError, match="callable"):
        register_mechanism("x_test", 3)
    with pytest.raises(ValueError, match="already registered"):
        register_mechanism("se", Doubler)
    with pytest.raises(ValueError, match="no mechanism named"):
        unregister_mechanism("never_there")


def test_model_errors():
    with pytest.raises(ValueError, match="not registered"):
        TinyResNet("nope")
    with pytest.raises(ValueError, match="position='stage' is only for a module class"):
        TinyResNet("se", position="stage")
    with pytest.raises(ValueError, match="kind"):
        TinyResNet(kind="detection")
    with pytest.raises(ValueError, match="num_classes"):
        TinyResNet(num_classes=1)
    with pytest.raises(ValueError, match="channels"):
        TinyResNet()(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="4-D"):
        TinyResNet()(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=">= 8"):
        TinyResNet()(torch.rand(2, 3, 6, 6))
    with pytest.raises(ValueError, match="even"):
        SCSplitConv(15)
