"""The registry: entries are checked when defined, options reach the factory, scorers are functions,
and a learner's module plugs in without global registration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attn_tutorial import metrics, registry
from attn_tutorial.eca import SE
from attn_tutorial.registry import (MECHANISMS, POSITIONS, TASKS, Mechanism, define_mechanism,
                                    register_mechanism, resolve, unregister_mechanism)

BUILTIN = ["se", "eca", "bam", "psa", "scconv", "pam", "cam", "cam_paper", "emsa", "external"]


def test_every_builtin_has_a_position_a_task_and_a_scorer_function():
    assert set(BUILTIN) <= set(MECHANISMS)
    for name in BUILTIN:
        spec = MECHANISMS[name]
        assert spec.position in POSITIONS and spec.task in TASKS
        assert spec.scorer.__module__ == "attn_tutorial.metrics"   # a function, not a key
        assert spec.scorer.__name__.startswith("score_")


def test_options_reach_the_factory():
    se = MECHANISMS["se"].build(16)
    assert isinstance(se, SE)
    hidden = [m for m in se.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][0]
    assert hidden.weight.shape[0] == 16 // 4                         # reduction=4
    assert MECHANISMS["cam_paper"].build(8).variant == "paper"
    assert MECHANISMS["external"].build(8).memory_size == 16


def forgets_return(channels):
    nn.Identity()


@pytest.mark.parametrize("factory, match", [
    (forgets_return, r"returned NoneType, not an nn.Module \(a missing return\?\)"),
    (lambda c: nn.Conv2d(c, 2 * c, 1), r"maps 2×16×8×8 to \(2, 32, 8, 8\); a plugged module must "
                                       r"keep B×C×H×W"),
    (lambda c: nn.Conv2d(c, c, 3, stride=2, padding=1), r"to \(2, 16, 4, 4\)"),
    (lambda c: nn.Linear(3, 3), r"its module fails on a 2×16×8×8 map"),
    (lambda c, **kw: SE(c, reduction=64), r"factory\(16, \*\*\{\}\) raised"),
])
def test_a_bad_factory_is_refused_when_defined(factory, match):
    with pytest.raises(ValueError, match=match):
        define_mechanism("bad", factory, "block")
    with pytest.raises(ValueError, match=match):
        register_mechanism("bad_test", factory, "block")
    assert "bad_test" not in MECHANISMS


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="", factory=nn.Identity), "name=''"),
    (dict(name="none", factory=nn.Identity), "other than 'none'"),
    (dict(name="x", factory=3), "factory=3 must be callable"),
    (dict(name="x", factory=lambda c: nn.Identity(), position="middle"), "position='middle'"),
    (dict(name="x", factory=lambda c: nn.Identity(), task="imagenet"), "task='imagenet'"),
    (dict(name="x", factory=lambda c: nn.Identity(), scorer="slot_purity"),
     "scorer='slot_purity' must be None or a function"),
])
def test_bad_entries_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        define_mechanism(**kwargs)


def test_checking_a_factory_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    define_mechanism("rng_test", lambda c: nn.Conv2d(c, c, 1))
    assert torch.equal(torch.rand(3), expected)


def test_register_overwrite_and_unregister():
    register_mechanism("reg_test", nn.Identity, "stage", overwrite=True)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_mechanism("reg_test", nn.Identity, "stage")
        assert resolve("reg_test").position == "stage"
    finally:
        unregister_mechanism("reg_test")
    with pytest.raises(ValueError, match="no mechanism named"):
        unregister_mechanism("reg_test")


def test_resolve_names_entries_and_classes():
    assert resolve("none") is None
    assert resolve("se") is MECHANISMS["se"]
    entry = define_mechanism("mine", nn.Identity, "head", scorer=metrics.score_token_mass)
    assert resolve(entry) is entry
    bare = resolve(nn.Identity, position="last")
    assert isinstance(bare, Mechanism) and bare.name == "Identity" and bare.position == "last"
    assert bare.scorer is None and "Identity" not in MECHANISMS
    with pytest.raises(ValueError, match="not registered"):
        resolve("nope")
    with pytest.raises(ValueError, match="must be a registered name"):
        resolve(3)


@pytest.mark.parametrize("name", sorted(registry.MECHANISMS))
def test_every_builtin_keeps_the_map_at_16_and_32_channels(name):
    """The built-in entries are registered without running the factory check at import; here
    each passes it (built at 16 and 32 channels, a 2×C×8×8 map in, the same shape out)."""
    entry = registry.MECHANISMS[name]
    registry._check_factory(name, entry.factory, entry.options)


def test_a_module_fixed_to_one_width_is_refused_at_definition():
    """A learner's module that hard-codes 16 channels passes at 16 but not at 32, where
    TinyResNet's second stage would plug it."""
    class Fixed16(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv = torch.nn.Conv2d(16, 16, 1)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match=r"'Fixed16': its module fails on a 2×32×8×8 map"):
        registry.resolve(Fixed16)


def test_tiny_psa_docstring_claims():
    """registry.tiny_psa's docstring: the official groups (1, 4, 8, 16) need channels // 4 to be a
    multiple of 16 (so of the tiny stages 16/32/64 only 64 could take them); tiny_psa is dense at
    every width; its network has about 3× the plain network's parameters."""
    from attn_tutorial.psa import PSA
    from attn_tutorial import zoo

    PSA(64, 64)                                       # c' = 16: the official groups fit
    for width in (16, 32, 48):                        # c' = 4, 8, 12: not multiples of 16
        with pytest.raises(ValueError, match="conv_groups"):
            PSA(width, width)
    for width in (16, 32, 64):
        assert [b.groups for b in registry.tiny_psa(width).branches] == [1, 1, 1, 1]
    count = lambda m: sum(p.numel() for p in m.parameters())
    ratio = count(zoo.load("psa", 0)[0]) / count(zoo.load("none", 0)[0])
    assert 2.5 < ratio < 3.5
