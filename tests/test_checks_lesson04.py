"""Lesson 04 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, the references mean what they say (checked against loops and the library's SCConv). The
generic proofs run over every checker in tests/test_checks.py."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _learner import assert_catalogued, assert_mistake_named

from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, lesson04
from attn_tutorial.scconv import SCConv

NAMES = lesson04.__all__

# The mistakes issue 16 asks the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_nearest_rows": ["half-pixel centres", "rounded", "repeated out // in times"],
    "check_calibration_gate": ["σ(up) without the identity", "bilinear instead of nearest",
                               "not brought back to H×W", "ceil-mode pooling"],
    "check_scconv": ["σ(up) without the identity", "bilinear instead of nearest",
                     "the stride on K3 instead of K4", "gating the wrong path"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_nearest_rows_reference_is_the_lessons_worked_example():
    # Worked by hand from ⌊d·in/out⌋: 9 rows from 2 pooled rows (H = 9, r = 4).
    assert lesson04.ref_nearest_rows(9, 2) == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    for out_size, in_size in [(9, 2), (13, 3), (7, 3), (8, 2)]:
        column = torch.arange(in_size, dtype=torch.float64).view(1, 1, in_size, 1)
        read = F.interpolate(column, size=(out_size, 1), mode="nearest").flatten().long()
        assert lesson04.ref_nearest_rows(out_size, in_size) == read.tolist()
        exact = F.interpolate(column, size=(out_size, 1), mode="nearest-exact").flatten().long()
        assert lesson04.ref_nearest_rows(out_size, in_size, rule="half") == exact.tolist()


def test_gate_cases_cover_non_divisible_batch1_and_two_rates():
    shapes, rates = [], set()
    for case in lesson04.check_calibration_gate.cases:
        x, w, r = case.inputs()
        assert x.dtype == w.dtype == torch.float64 and w.shape == (x.shape[1], x.shape[1], 3, 3)
        shapes.append((tuple(x.shape), r))
        rates.add(r)
    assert any(s[2] % r and s[3] % r for s, r in shapes)
    assert any(s[0] == 1 for s, _ in shapes) and len(rates) >= 2


def test_gate_reference_equals_a_loop_written_from_the_equations():
    x, w, r = lesson04.check_calibration_gate.cases[0].inputs()
    B, C, H, W = x.shape
    h, wd = H // r, W // r
    pooled = torch.zeros(B, C, h, wd, dtype=x.dtype)
    for i in range(h):
        for j in range(wd):
            pooled[:, :, i, j] = x[:, :, i * r:(i + 1) * r, j * r:(j + 1) * r].mean((-2, -1))
    padded = F.pad(pooled, (1, 1, 1, 1))
    context = torch.zeros_like(pooled)
    for i in range(h):
        for j in range(wd):
            patch = padded[:, :, i:i + 3, j:j + 3]
            context[:, :, i, j] = torch.einsum("bchw,ochw->bo", patch, w)
    gate = torch.empty_like(x)
    for y in range(H):
        for xx in range(W):
            gate[:, :, y, xx] = torch.sigmoid(x[:, :, y, xx] + context[:, :, y * h // H, xx * wd // W])
    assert torch.allclose(lesson04.ref_calibration_gate(x, w, r), gate, atol=1e-12)


@pytest.mark.parametrize("case", range(3))
def test_module_reference_equals_the_library_scconv(case):
    c = lesson04.check_scconv.cases[case]
    torch.manual_seed(c.seed)
    ref = lesson04.SCConvReference(**c.build).double().eval()
    lib = SCConv(c.build["channels"], stride=c.build["stride"],
                 pooling_r=c.build["pooling_r"]).double().eval()
    lib.load_state_dict(ref.state_dict())
    (x,) = c.inputs()
    assert torch.allclose(ref(x), lib(x), atol=1e-12)
    assert not torch.allclose(ref.k3_bn.running_var, torch.ones_like(ref.k3_bn.running_var))


# ------------------------------------------------------- a learner's own wrong versions
def learner_rows_nearest_exact(out_size, in_size):
    return [int((d + 0.5) * in_size / out_size) for d in range(out_size)]


def learner_rows_round(out_size, in_size):
    return [min(int(d * in_size / out_size + 0.5), in_size - 1) for d in range(out_size)]


def learner_rows_repeat(out_size, in_size):
    r = out_size // in_size                                 # "the up-sampling factor"
    return [d // r for d in range(out_size)]


def learner_gate_no_identity(x, k2_weight, pooling_r):
    t = nn.AvgPool2d(pooling_r)(x)
    up = F.interpolate(F.conv2d(t, k2_weight, padding=1), size=x.shape[2:])
    return torch.sigmoid(up)


def learner_gate_bilinear(x, k2_weight, pooling_r):
    t = F.avg_pool2d(x, kernel_size=pooling_r)
    up = F.interpolate(F.conv2d(t, k2_weight, padding=1), size=x.shape[2:], mode="bilinear")
    return (x + up).sigmoid()


def learner_gate_scale_factor(x, k2_weight, pooling_r):
    t = F.conv2d(F.avg_pool2d(x, pooling_r), k2_weight, padding=1)
    up = F.interpolate(t, scale_factor=pooling_r)          # 8 rows for H = 9, r = 4
    return torch.sigmoid(x[:, :, :up.shape[2], :up.shape[3]] + up)


def learner_gate_ceil(x, k2_weight, pooling_r):
    t = nn.AvgPool2d(pooling_r, pooling_r, ceil_mode=True)(x)
    up = F.interpolate(F.conv2d(t, k2_weight, padding=1), size=x.shape[2:])
    return torch.sigmoid(x + up)


def learner_gate_max(x, k2_weight, pooling_r):
    t = nn.MaxPool2d(pooling_r)(x)
    return torch.sigmoid(x + F.interpolate(F.conv2d(t, k2_weight, padding=1), size=x.shape[2:]))


def learner_gate_conv_then_pool(x, k2_weight, pooling_r):
    t = F.avg_pool2d(F.conv2d(x, k2_weight, padding=1), pooling_r)
    return torch.sigmoid(x + F.interpolate(t, size=x.shape[2:]))


class LearnerSC(nn.Module):
    """A learner's SCConv with switches for their slips (written independently of the
    reference: nn.Sequential-free, its own pooling layer, the gate by hand)."""

    no_identity = bilinear = stride_k3 = gate_k4 = relu = False

    def __init__(self, channels, stride=1, pooling_r=4):
        super().__init__()
        s3, s4 = (stride, 1) if self.stride_k3 else (1, stride)
        self.down = nn.AvgPool2d(pooling_r)
        self.k2_conv = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.k2_bn = nn.BatchNorm2d(channels)
        self.k3_conv = nn.Conv2d(channels, channels, 3, s3, 1, bias=False)
        self.k3_bn = nn.BatchNorm2d(channels)
        self.k4_conv = nn.Conv2d(channels, channels, 3, s4, 1, bias=False)
        self.k4_bn = nn.BatchNorm2d(channels)
        self.s = stride

    def forward(self, x):
        mode = dict(mode="bilinear", align_corners=False) if self.bilinear else {}
        up = F.interpolate(self.k2_bn(self.k2_conv(self.down(x))), size=x.shape[2:], **mode)
        gate = torch.sigmoid(up if self.no_identity else up + x)
        k3 = self.k3_bn(self.k3_conv(x))
        if self.relu:
            k3 = k3.clamp_min(0)
        if self.gate_k4:
            return self.k4_bn(self.k4_conv(k3)) * gate[:, :, ::self.s, ::self.s]
        if self.stride_k3:  # the shapes did not fit: take the gate at the strided positions
            gate = gate[:, :, ::self.s, ::self.s]
        return self.k4_bn(self.k4_conv(k3 * gate))


class LearnerSCRight(LearnerSC):
    pass


class LearnerSCNoIdentity(LearnerSC):
    no_identity = True


class LearnerSCBilinear(LearnerSC):
    bilinear = True


class LearnerSCStrideK3(LearnerSC):
    stride_k3 = True


class LearnerSCGateK4(LearnerSC):
    gate_k4 = True


class LearnerSCReLU(LearnerSC):
    relu = True


# Every catalogued mistake has a learner's own version below (test_every_mistake_has_a_learner).
@pytest.mark.parametrize("checker, learner, phrase", [
    ("check_nearest_rows", learner_rows_nearest_exact, "half-pixel centres"),
    ("check_nearest_rows", learner_rows_round, "rounded d·in/out"),
    ("check_nearest_rows", learner_rows_repeat, "repeated out // in times"),
    ("check_calibration_gate", learner_gate_no_identity, "σ(up) without the identity"),
    ("check_calibration_gate", learner_gate_bilinear, "bilinear instead of nearest"),
    ("check_calibration_gate", learner_gate_scale_factor, "not brought back to H×W"),
    ("check_calibration_gate", learner_gate_ceil, "ceil-mode pooling"),
    ("check_calibration_gate", learner_gate_max, "max instead of average pooling"),
    ("check_calibration_gate", learner_gate_conv_then_pool, "the 3×3 conv runs before the pooling"),
    ("check_scconv", LearnerSCNoIdentity, "σ(up) without the identity"),
    ("check_scconv", LearnerSCBilinear, "bilinear instead of nearest"),
    ("check_scconv", LearnerSCStrideK3, "the stride on K3 instead of K4"),
    ("check_scconv", LearnerSCGateK4, "gating the wrong path"),
    ("check_scconv", LearnerSCReLU, "a ReLU after K3's BatchNorm"),
])
def test_a_learners_own_mistake_is_named(checker, learner, phrase):
    assert_mistake_named(checker, learner, phrase)


def _run(checker, learner):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = CHECKERS[checker](learner)
    return result, printed.getvalue()


def test_a_learners_right_answers_pass():
    rows = lambda o, i: torch.div(torch.arange(o) * i, o, rounding_mode="floor").tolist()  # noqa: E731

    def gate(x, k2_weight, pooling_r):
        t = F.conv2d(F.avg_pool2d(x, pooling_r), k2_weight, padding=1)
        return torch.sigmoid(x + F.interpolate(t, size=x.shape[2:], mode="nearest"))

    for checker, learner in [("check_nearest_rows", rows), ("check_calibration_gate", gate),
                             ("check_scconv", LearnerSCRight)]:
        result, _ = _run(checker, learner)
        assert result.passed, result.lines


def test_the_module_checker_names_a_misnamed_parameter():
    class Renamed(LearnerSCRight):
        def __init__(self, channels, stride=1, pooling_r=4):
            super().__init__(channels, stride, pooling_r)
            self.conv_k4 = self.k4_conv
            del self.k4_conv

        def forward(self, x):
            self.k4_conv = self.conv_k4
            return super().forward(x)

    result, printed = _run("check_scconv", Renamed)
    assert not result.passed and "k4_conv.weight" in printed


def test_stubs_say_not_implemented():
    def stub(*args):
        raise NotImplementedError()

    class Stub(nn.Module):
        def __init__(self, channels, stride=1, pooling_r=4):
            super().__init__()
            raise NotImplementedError()

    for checker, learner in [("check_nearest_rows", stub), ("check_calibration_gate", stub),
                             ("check_scconv", Stub)]:
        result, printed = _run(checker, learner)
        assert not result.implemented and NOT_IMPLEMENTED in printed


def test_every_mistake_has_a_learner():
    named = {}
    for mark in test_a_learners_own_mistake_is_named.pytestmark:
        if mark.name == "parametrize":
            for checker, _, phrase in mark.args[1]:
                named.setdefault(checker, []).append(phrase)
    for name in NAMES:
        for mistake in CHECKERS[name].mistake_names:
            assert any(p in mistake for p in named[name]), mistake


# ------------------------------------------------- boundaries and slips of the new engine
def test_nearest_rows_with_a_float_scale_fails_where_it_is_inexact():
    from _learner import assert_fails_only_on

    def nearest_rows(out_size, in_size):
        scale = in_size / out_size
        return [int(d * scale) for d in range(out_size)]

    assert_fails_only_on("check_nearest_rows", nearest_rows, ["30 rows up-sampled to 44"])


def test_pythons_round_is_the_rounding_mistake():
    def nearest_rows(out_size, in_size):
        return [round(d * in_size / out_size) for d in range(out_size)]

    assert_mistake_named("check_nearest_rows", nearest_rows, "rounded d·in/out")


def test_an_scconv_without_defaults_fails_on_the_default_call():
    class MySCConv(lesson04.SCConvReference):
        def __init__(self, channels, stride, pooling_r):
            super().__init__(channels, stride, pooling_r)

    result = CHECKERS["check_scconv"].run(MySCConv, verbose=False)
    assert result.status == "error"
    assert "stride and r not given" in next(l for l in result.lines if l.startswith("✗"))
