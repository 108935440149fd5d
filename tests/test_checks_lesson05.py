"""Lesson 05 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, a learner's own correct versions pass, the references mean what they say (checked against
loops written from the equations and against the library's modules). The generic proofs run over
every checker in tests/test_checks.py."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from _learner import assert_catalogued, assert_mistake_named

from attn_tutorial.checks import CHECKERS, lesson05
from attn_tutorial.danet import CAM, PAM

# The mistakes the issue asks the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_pam_attention": ["softmax over the query axis instead of the key axis",
                            "scaled by 1/sqrt(d)"],
    "check_pam_aggregate": ["A instead of Aᵀ"],
    "check_cam_attention": ["softmax(+E) and softmax(-E) swapped for the form asked"],
    "check_pam_module": ["gamma initialised to 1", "query/key convs with C output channels",
                         "A instead of Aᵀ", "scaled by 1/sqrt(d)"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_module_cases_set_gamma_and_one_keeps_the_learners():
    """Ordinary cases compare with gamma != 0 (gamma = 0 is the identity and checks nothing);
    the fresh case keeps the gamma of the learner's __init__."""
    checker = CHECKERS["check_pam_module"]
    fresh = [c for c in checker.cases if c.name in checker.fresh]
    ordinary = [c for c in checker.cases if c.name not in checker.fresh]
    assert len(fresh) == 1 and len(ordinary) == len(checker.cases) - 1 >= 2
    for case in ordinary:
        assert checker._reference_module(case).gamma.item() != 0
        (x,) = case.inputs()
        assert not torch.allclose(checker.expected(case)["output"], x)
    (x,) = fresh[0].inputs()
    assert torch.equal(checker.expected(fresh[0])["output"], x)


# ------------------------------------------------ a learner's own versions of the mistakes
def learner_attention_over_queries(q, k):
    b, d, h, w = q.shape
    energy = q.reshape(b, d, h * w).transpose(1, 2) @ k.reshape(b, d, h * w)
    return torch.softmax(energy, dim=1)


def learner_attention_scaled(q, k):
    b, d, h, w = q.shape
    qf, kf = q.flatten(2), k.flatten(2)
    return torch.softmax(torch.einsum("bdi,bdj->bij", qf, kf) / d ** 0.5, dim=2)


def learner_attention_keys_first(q, k):
    b, d, h, w = q.shape
    energy = k.flatten(2).transpose(1, 2) @ q.flatten(2)  # rows are keys
    return torch.softmax(energy, dim=1)


def learner_attention_correct(q, k):
    b, d, h, w = q.shape
    energy = torch.bmm(q.view(b, d, -1).permute(0, 2, 1), k.view(b, d, -1))
    return torch.softmax(energy, dim=-1)


def learner_aggregate_no_transpose(attention, v):
    b, c, h, w = v.shape
    return torch.bmm(v.view(b, c, h * w), attention).view(b, c, h, w)


def learner_aggregate_correct(attention, v):
    b, c, h, w = v.shape
    return torch.bmm(v.view(b, c, h * w), attention.permute(0, 2, 1)).view(b, c, h, w)


def learner_cam_swapped(x, form="official"):
    b, c, h, w = x.shape
    f = x.view(b, c, -1)
    energy = torch.bmm(f, f.permute(0, 2, 1))
    if form == "paper":  # swapped: the max-minus step belongs to the official form
        energy = energy.max(-1, keepdim=True)[0].expand_as(energy) - energy
    return torch.softmax(energy, dim=-1)


def learner_cam_correct(x, form="official"):
    b, c, h, w = x.shape
    f = x.view(b, c, -1)
    energy = torch.bmm(f, f.permute(0, 2, 1))
    return torch.softmax(-energy if form == "official" else energy, dim=-1)


class LearnerPAM(nn.Module):
    """A learner's PAM written with view/bmm, the parameter names of the exercise."""

    def __init__(self, channels, qk_channels=None, gamma=0.0):
        super().__init__()
        qk = channels // 8 if qk_channels is None else qk_channels
        self.query = nn.Conv2d(channels, qk, 1)
        self.key = nn.Conv2d(channels, qk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1) + gamma)

    def weights(self, x):
        b, c, h, w = x.shape
        q = self.query(x).view(b, -1, h * w).permute(0, 2, 1)
        return torch.softmax(torch.bmm(q, self.key(x).view(b, -1, h * w)), dim=-1)

    def forward(self, x):
        b, c, h, w = x.shape
        out = torch.bmm(self.value(x).view(b, c, h * w), self.weights(x).permute(0, 2, 1))
        return self.gamma * out.view(b, c, h, w) + x


class LearnerPAMGammaOne(LearnerPAM):
    def __init__(self, channels):
        super().__init__(channels, gamma=1.0)


class LearnerPAMFullWidth(LearnerPAM):
    def __init__(self, channels):
        super().__init__(channels, qk_channels=channels)


class LearnerPAMNoTranspose(LearnerPAM):
    def forward(self, x):
        b, c, h, w = x.shape
        out = torch.bmm(self.value(x).view(b, c, h * w), self.weights(x))
        return self.gamma * out.view(b, c, h, w) + x


class LearnerPAMScaled(LearnerPAM):
    def weights(self, x):
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)
        energy = q @ self.key(x).flatten(2) / math.sqrt(q.shape[-1])
        return energy.softmax(-1)


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_pam_attention", learner_attention_over_queries, "softmax over the query axis"),
    ("check_pam_attention", learner_attention_scaled, "scaled by 1/sqrt(d)"),
    ("check_pam_attention", learner_attention_keys_first, "map transposed"),
    ("check_pam_aggregate", learner_aggregate_no_transpose, "A instead of Aᵀ"),
    ("check_cam_attention", learner_cam_swapped, "swapped for the form asked"),
    ("check_pam_module", LearnerPAMGammaOne, "gamma initialised to 1"),
    ("check_pam_module", LearnerPAMFullWidth, "query/key convs with C output channels"),
    ("check_pam_module", LearnerPAMNoTranspose, "A instead of Aᵀ"),
    ("check_pam_module", LearnerPAMScaled, "scaled by 1/sqrt(d)"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


@pytest.mark.parametrize("name,learner", [
    ("check_pam_attention", learner_attention_correct),
    ("check_pam_aggregate", learner_aggregate_correct),
    ("check_cam_attention", learner_cam_correct),
    ("check_pam_module", LearnerPAM),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_full_width_qk_says_how_many_channels(capsys):
    assert not CHECKERS["check_pam_module"](LearnerPAMFullWidth).passed
    out = capsys.readouterr().out
    assert "query/key channels: returned 16, expected 2" in out


def test_renamed_parameters_are_reported_by_name(capsys):
    class Renamed(LearnerPAM):
        def __init__(self, channels):
            super().__init__(channels)
            self.q = self.query
            del self.query

    assert not CHECKERS["check_pam_module"](Renamed).passed
    assert "missing query.weight, query.bias; unexpected q.weight, q.bias" in \
        capsys.readouterr().out


def test_stub_module_says_not_implemented(capsys):
    class Stub(nn.Module):
        def __init__(self, channels):
            super().__init__()
            raise NotImplementedError()

    result = CHECKERS["check_pam_module"](Stub)
    assert not result.implemented
    assert capsys.readouterr().out.strip() == "Stub: not implemented yet"  # the learner's class name


# ------------------------------------------------------------- the references' meanings
def test_reference_meanings_against_loops_and_the_library():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64), \
        torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)
    a = lesson05.ref_pam_attention(q, k)
    for b in range(2):
        for i in range(6):
            row = torch.tensor([sum(q[b, d, i // 3, i % 3] * k[b, d, j // 3, j % 3]
                                    for d in range(3)) for j in range(6)], dtype=torch.float64)
            assert torch.allclose(a[b, i], torch.exp(row) / torch.exp(row).sum())
    v = torch.randn(2, 4, 2, 3, generator=g, dtype=torch.float64)
    out = lesson05.ref_pam_aggregate(a, v)
    for i in range(6):
        expected = sum(a[:, i, j, None] * v[:, :, j // 3, j % 3] for j in range(6))
        assert torch.allclose(out[:, :, i // 3, i % 3], expected)

    x = torch.randn(2, 16, 3, 5, generator=g, dtype=torch.float64)
    ref, lib = lesson05.PAMReference(16).double(), PAM(16).double()
    assert lib.load_state_dict(ref.state_dict(), strict=True) is not None
    with torch.no_grad():
        for m in (ref, lib):
            m.gamma.fill_(0.8)
    assert torch.allclose(ref(x), lib(x))
    for form, variant in (("official", "official"), ("paper", "paper")):
        assert torch.allclose(lesson05.ref_cam_attention(0.3 * x, form),
                              CAM(16, variant=variant).double().attention_map(0.3 * x))
    f = (0.3 * x).flatten(2)
    energy = f @ f.transpose(1, 2)
    assert torch.allclose(lesson05.ref_cam_attention(0.3 * x, "official"),
                          torch.softmax(-energy, dim=-1))


# ------------------------------------------------- boundaries and slips of the new engine
def test_cam_with_the_paper_as_default_form_is_named():
    def cam_attention(x, form="paper"):
        f = x.flatten(2)
        e = f @ f.transpose(1, 2)
        if form == "official":
            e = e.amax(dim=-1, keepdim=True) - e
        return e.softmax(dim=-1)

    assert_mistake_named("check_cam_attention", cam_attention, "the default is form='official'")


def test_cam_official_as_e_minus_max_is_named_by_what_it_computes():
    def cam_attention(x, form="official"):
        f = x.flatten(2)
        e = f @ f.transpose(1, 2)
        if form == "official":
            e = e - e.amax(dim=-1, keepdim=True)  # the shift, but the wrong way round
        return e.softmax(dim=-1)

    assert_mistake_named("check_cam_attention", cam_attention,
                         "for form='official' your answer computes softmax(E)")


def test_a_pam_with_gamma_as_a_buffer_cannot_learn():
    class MyPAM(PAMLike):
        def __init__(self, channels):
            super().__init__(channels)
            g = self.gamma.data
            del self.gamma
            self.register_buffer("gamma", g)

    result = CHECKERS["check_pam_module"].run(MyPAM, verbose=False)
    assert result.diagnoses == ["`gamma` is a buffer, not an nn.Parameter"], result.lines


class PAMLike(lesson05.PAMReference):
    def __init__(self, channels):
        super().__init__(channels)
