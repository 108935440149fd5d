"""Lesson 02 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, a learner's own correct answers pass, a stub says "not implemented yet", and the references
mean what they say. The generic proofs run over every checker in tests/test_checks.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _learner import assert_catalogued, assert_mistake_named

from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, lesson02

# The mistakes issue 15 asks the lesson to catalogue, by (part of) their name.
REQUIRED = {
    "check_bam_fuse": ["sum and product swapped", "residual forgotten",
                       "sigmoid applied to each branch before fusing",
                       "spatial map broadcast over the wrong axis"],
    "check_dilated_conv": ["dilation 1 instead of the given dilation",
                           "padding not equal to the dilation"],
    "check_bam_block": ["max pooling in the channel branch", "sum and product swapped",
                        "residual forgotten", "sigmoid applied to each branch before fusing",
                        "dilation 1 in the spatial branch"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_fuse_cases_let_the_wrong_axis_run():
    """B = C or B = 1 in every case, so a spatial map without its channel axis broadcasts (and
    gives wrong values that can be named) instead of raising; non-square and batch 1 included."""
    shapes = [c.inputs()[0].shape for c in lesson02.check_bam_fuse.cases]
    assert all(b in (1, c) for b, c, _, _ in shapes)
    assert any(b == 1 for b, *_ in shapes) and any(b > 1 for b, *_ in shapes)
    assert all(h != w for *_, h, w in shapes)


# ------------------------------------------------------------------ a learner's own answers
def learner_fuse_correct(x, mc, ms):
    return x * (1 + torch.sigmoid(mc[:, :, None, None] * ms.unsqueeze(1)))


def learner_fuse_sum(x, mc, ms):
    return x * (1 + torch.sigmoid(mc[:, :, None, None] + ms.unsqueeze(1)))


def learner_fuse_no_residual(x, mc, ms):
    return x * torch.sigmoid(mc.view(*mc.shape, 1, 1) * ms.view(ms.shape[0], 1, *ms.shape[1:]))


def learner_fuse_sigmoid_each(x, mc, ms):
    att = torch.sigmoid(mc)[:, :, None, None] * torch.sigmoid(ms)[:, None]
    return x + x * att


def learner_fuse_no_channel_axis(x, mc, ms):
    return x + x * torch.sigmoid(mc[:, :, None, None] * ms)   # ms is B×H×W: no unsqueeze


def learner_conv_correct(h, weight, bias, dilation):
    o, c = weight.shape[:2]
    size = 2 * dilation + 1
    spread = torch.zeros(o, c, size, size, dtype=weight.dtype)
    spread[:, :, ::dilation, ::dilation] = weight
    return F.conv2d(h, spread, bias, padding=dilation)


def learner_conv_plain(h, weight, bias, dilation):
    return F.conv2d(h, weight, bias, padding=1)


def learner_conv_padding_one(h, weight, bias, dilation):
    return F.conv2d(h, weight, bias, padding=1, dilation=dilation)


def learner_conv_four(h, weight, bias, dilation):
    spread = torch.zeros(*weight.shape[:2], 9, 9, dtype=weight.dtype)
    spread[:, :, ::4, ::4] = weight
    return F.conv2d(h, spread, bias, padding=4)


def learner_conv_too_many_zeros(h, weight, bias, dilation):
    step = dilation + 1                                  # "d zeros between the taps"
    spread = torch.zeros(*weight.shape[:2], 2 * step + 1, 2 * step + 1, dtype=weight.dtype)
    spread[:, :, ::step, ::step] = weight
    return F.conv2d(h, spread, bias, padding=step)


class LearnerBAM(nn.Module):
    """A learner's own BAM, written with torch calls (not einops) and the exercise's names."""

    def __init__(self, channels, reduction_ratio=16, dilation=4):
        super().__init__()
        r = channels // reduction_ratio
        self.dilation = dilation
        self.fc1, self.bn1, self.fc2 = nn.Linear(channels, r), nn.BatchNorm1d(r), nn.Linear(r, channels)
        self.conv_reduce, self.bn_reduce = nn.Conv2d(channels, r, 1), nn.BatchNorm2d(r)
        self.conv_d1, self.bn_d1 = self._dilated(r), nn.BatchNorm2d(r)
        self.conv_d2, self.bn_d2 = self._dilated(r), nn.BatchNorm2d(r)
        self.conv_out = nn.Conv2d(r, 1, 1)

    def _dilated(self, r):
        return nn.Conv2d(r, r, 3, padding=self.dilation, dilation=self.dilation)

    def pooled(self, x):
        return x.mean(dim=(2, 3))

    def channel(self, x):
        return self.fc2(torch.relu(self.bn1(self.fc1(self.pooled(x)))))[:, :, None, None]

    def spatial(self, x):
        s = torch.relu(self.bn_reduce(self.conv_reduce(x)))
        s = torch.relu(self.bn_d2(self.conv_d2(torch.relu(self.bn_d1(self.conv_d1(s))))))
        return self.conv_out(s)

    def forward(self, x):
        return x + x * torch.sigmoid(self.channel(x) * self.spatial(x))


class LearnerBAMMaxPool(LearnerBAM):
    def pooled(self, x):
        return x.flatten(2).max(dim=-1).values


class LearnerBAMSum(LearnerBAM):
    def forward(self, x):
        return x * (1 + torch.sigmoid(self.channel(x) + self.spatial(x)))


class LearnerBAMSigmoidEach(LearnerBAM):
    def forward(self, x):
        return x + x * (torch.sigmoid(self.channel(x)) * torch.sigmoid(self.spatial(x)))


class LearnerBAMNoResidual(LearnerBAM):
    def forward(self, x):
        return torch.sigmoid(self.channel(x) * self.spatial(x)) * x


class LearnerBAMUndilated(LearnerBAM):
    def _dilated(self, r):
        return nn.Conv2d(r, r, kernel_size=3, padding=1)


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_bam_fuse", learner_fuse_sum, "sum and product swapped"),
    ("check_bam_fuse", learner_fuse_no_residual, "residual forgotten"),
    ("check_bam_fuse", learner_fuse_sigmoid_each, "sigmoid applied to each branch"),
    ("check_bam_fuse", learner_fuse_no_channel_axis, "broadcast over the wrong axis"),
    ("check_dilated_conv", learner_conv_plain, "dilation 1 instead of the given dilation"),
    ("check_dilated_conv", learner_conv_padding_one, "padding not equal to the dilation"),
    ("check_dilated_conv", learner_conv_four, "dilation 4 hard-coded"),
    ("check_dilated_conv", learner_conv_too_many_zeros, "taps d + 1 apart"),
    ("check_bam_block", LearnerBAMMaxPool, "max pooling in the channel branch"),
    ("check_bam_block", LearnerBAMSum, "sum and product swapped"),
    ("check_bam_block", LearnerBAMSigmoidEach, "sigmoid applied to each branch"),
    ("check_bam_block", LearnerBAMNoResidual, "residual forgotten"),
    ("check_bam_block", LearnerBAMUndilated, "dilation 1 in the spatial branch"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


@pytest.mark.parametrize("name,learner", [
    ("check_bam_fuse", learner_fuse_correct),
    ("check_dilated_conv", learner_conv_correct),
    ("check_bam_block", LearnerBAM),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


class LearnerStub(nn.Module):          # what the exercise notebook hands in before any work
    def __init__(self, channels, reduction_ratio=16, dilation=4):
        super().__init__()
        raise NotImplementedError()


def test_a_stub_module_says_not_implemented(capsys):
    result = CHECKERS["check_bam_block"](LearnerStub)
    assert not result.implemented and capsys.readouterr().out.strip() == \
        f"LearnerStub: {NOT_IMPLEMENTED}"  # titled with the learner's class name


def test_a_bam_without_the_flat_names_is_told_which_names(capsys):
    class Nested(nn.Module):
        def __init__(self, channels, reduction_ratio=16, dilation=4):
            super().__init__()
            self.channel = nn.Sequential(nn.Linear(channels, channels // reduction_ratio))

        def forward(self, x):
            return x

    assert not CHECKERS["check_bam_block"](Nested).passed
    out = capsys.readouterr().out
    assert "missing fc1.weight" in out and "unexpected channel.0.weight" in out, out


def test_reference_meanings():
    """The references mean what their docstrings say, checked against loops and the library."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=g)
    mc = torch.randn(2, 3, dtype=torch.float64, generator=g)
    ms = torch.randn(2, 4, 5, dtype=torch.float64, generator=g)
    out = lesson02.ref_bam_fuse(x, mc, ms)
    for b in range(2):
        for c in range(3):
            for i in range(4):
                for j in range(5):
                    gate = 1 / (1 + torch.exp(-mc[b, c] * ms[b, i, j]))
                    assert torch.isclose(out[b, c, i, j], x[b, c, i, j] * (1 + gate))
    # the dilated conv: one output pixel as the sum over 9 taps d apart (inside the map)
    h = torch.randn(1, 2, 11, 11, dtype=torch.float64, generator=g)
    w = torch.randn(1, 2, 3, 3, dtype=torch.float64, generator=g)
    bias = torch.zeros(1, dtype=torch.float64)
    y = lesson02.ref_dilated_conv(h, w, bias, 3)
    assert y.shape == (1, 1, 11, 11)                     # H×W kept
    by_hand = sum(w[0, c, u, v] * h[0, c, 5 + 3 * (u - 1), 5 + 3 * (v - 1)]
                  for c in range(2) for u in range(3) for v in range(3))
    assert torch.isclose(y[0, 0, 5, 5], by_hand)
    # the block equals the library's BAM (official product form) on the same weights
    from attn_tutorial.bam import BAM
    torch.manual_seed(0)
    ref = lesson02.BAMBlockReference(16, reduction_ratio=4, dilation=2).double().eval()
    lib = BAM(16, reduction_ratio=4, dilation=2).double().eval()
    names = {"fc1": "channel_gate.fc_reduce", "bn1": "channel_gate.bn",
             "fc2": "channel_gate.fc_expand", "conv_reduce": "spatial_gate.reduce",
             "bn_reduce": "spatial_gate.reduce_bn", "conv_d1": "spatial_gate.dilated.0",
             "bn_d1": "spatial_gate.dilated_bn.0", "conv_d2": "spatial_gate.dilated.1",
             "bn_d2": "spatial_gate.dilated_bn.1", "conv_out": "spatial_gate.project"}
    state = {}
    for key, value in ref.state_dict().items():
        first, rest = key.split(".", 1)
        state[f"{names[first]}.{rest}"] = value
    lib.load_state_dict(state)
    xb = torch.randn(2, 16, 7, 9, dtype=torch.float64, generator=g)
    torch.testing.assert_close(ref(xb), lib(xb))


# ------------------------------------------------- boundaries and slips of the new engine
def test_a_dilated_conv_that_special_cases_d_1_without_padding_fails_there():
    from _learner import assert_fails_only_on

    def dilated_conv(h, weight, bias, dilation):
        if dilation == 1:
            return F.conv2d(h, weight, bias)
        return F.conv2d(h, weight, bias, padding=dilation, dilation=dilation)

    assert_fails_only_on("check_dilated_conv", dilated_conv, ["dilation 1"])


def test_a_bam_whose_batch_norms_use_running_stats_in_training_is_named():
    class BAMBlock(lesson02.BAMBlockReference):
        def forward(self, x):
            was = self.training
            self.eval()  # the lesson's eval-only helper reused
            try:
                return super().forward(x)
            finally:
                self.train(was)

    result = CHECKERS["check_bam_block"].run(BAMBlock, verbose=False)
    assert not result.passed
    assert result.diagnoses and "running statistics, as in eval mode" in result.diagnoses[0]
