"""Lesson 01 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, the references mean what they say. The generic proofs run over every checker in
tests/test_checks.py."""

from __future__ import annotations

import math

import pytest
import torch

from _learner import assert_catalogued, assert_mistake_named

from attn_tutorial.checks import CHECKERS, lesson01

# The mistakes the course promises to recognise, by (part of) their name.
REQUIRED = {
    "check_kernel_size": ["even kernel size", "rounded to the nearest integer",
                          "math.ceil() instead of int()", "natural log", "forgot b",
                          "forgot to divide by gamma", "gamma and b swapped"],
    "check_eca_gate": [
        "1-D conv over spatial positions instead of channels",
        "max instead of mean pooling",
        "missing sigmoid",
        "padding that shifts the channel window",
        "wrap-around (circular) padding",
        "all k-1 zeros on the right",
        "softmax over the channels instead of a sigmoid",
    ],
    "check_eca_matrix": ["padding that shifts the channel window", "circular"],
    "check_eca_module": ["max pooling", "sigmoid missing", "softmax over the channels",
                         "gate added as a residual",
                         "pooled over the channels instead of the tokens"],
    "check_eca_ns_gate": ["one kernel shared by every channel", "band transposed",
                          "only the centre tap", "kernel rows flipped", "missing sigmoid",
                          "all k-1 zeros on the left", "circular"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_gate_cases_are_float64_odd_nonsquare_batch1():
    shapes = []
    for case in lesson01.check_eca_gate.cases:
        x, w = case.inputs()
        assert x.dtype == w.dtype == torch.float64
        assert w.shape[0] % 2 == 1
        shapes.append(tuple(x.shape))
    assert any(s[0] == 1 for s in shapes) and any(s[0] > 1 for s in shapes)
    assert any(s[1] % 2 == 1 for s in shapes)
    assert any(s[2] != s[3] for s in shapes) and any(s[2] % 2 == 1 for s in shapes)


def test_matrix_cases_include_odd_sizes_and_a_kernel_longer_than_c():
    cases = [c.inputs() for c in lesson01.check_eca_matrix.cases]
    assert all(w.dtype == torch.float64 for w, _ in cases)
    assert any(c % 2 == 1 for _, c in cases)
    assert any(w.shape[0] > c for w, c in cases)
    assert any((w.shape[0] - 1) // 2 > c for w, c in cases)  # a band wider than the matrix


# A learner's own way of making the catalogued mistakes (not the checker's implementation).
def learner_psi_without_odd(channels, gamma=2, b=1):
    return math.floor((math.log(channels, 2) + b) / gamma)


def learner_gate_over_space(x, weight):
    b, c, h, w = x.shape
    k = weight.numel()
    rows = x.reshape(b * c, 1, h * w)
    z = torch.nn.functional.conv1d(rows, weight.view(1, 1, k), padding=k // 2)
    return torch.sigmoid(z.mean(dim=-1).view(b, c))


def learner_gate_causal_pad(x, weight):
    k = weight.numel()
    y = x.mean(dim=(2, 3))
    y = torch.cat([torch.zeros(y.shape[0], k - 1, dtype=y.dtype), y], dim=1)
    z = torch.stack([(y[:, c:c + k] * weight).sum(-1) for c in range(x.shape[1])], dim=1)
    return torch.sigmoid(z)


def learner_gate_amax(x, weight):
    k = weight.numel()
    y = x.amax(dim=(2, 3)).unsqueeze(1)
    return torch.sigmoid(torch.nn.functional.conv1d(y, weight.view(1, 1, k), padding=k // 2)[:, 0])


def learner_gate_logits(x, weight):
    k = weight.numel()
    y = x.mean(dim=(2, 3)).unsqueeze(1)
    return torch.nn.functional.conv1d(y, weight.view(1, 1, k), padding=k // 2)[:, 0]


def learner_psi_round(channels, gamma=2, b=1):
    t = round((math.log2(channels) + b) / gamma)
    return t if t % 2 else t + 1


def learner_psi_ceil(channels, gamma=2, b=1):
    t = math.ceil((math.log2(channels) + b) / gamma)
    return t + (1 - t % 2)


def learner_psi_ln(channels, gamma=2, b=1):
    t = int((math.log(channels) + b) / gamma)
    return t if t % 2 else t + 1


def learner_psi_no_b(channels, gamma=2, b=1):
    t = int(math.log2(channels) / gamma)
    return t if t % 2 else t + 1


def learner_psi_no_gamma(channels, gamma=2, b=1):
    t = int(math.log2(channels) + b)
    return t if t % 2 else t + 1


def learner_psi_hard_coded(channels, gamma=2, b=1):
    t = int((math.log2(channels) + 1) / 2)
    return t if t % 2 else t + 1


def learner_gate_circular(x, weight):
    k = weight.numel()
    y = x.mean(dim=(2, 3))
    half = k // 2
    y = torch.cat([y[:, y.shape[1] - half:], y, y[:, :half]], dim=1)
    return torch.sigmoid(y.unfold(1, k, 1) @ weight)


def learner_gate_right_pad(x, weight):
    k = weight.numel()
    y = torch.nn.functional.pad(x.mean(dim=(2, 3)), (0, k - 1))
    return torch.sigmoid(y.unfold(1, k, 1) @ weight)


def learner_gate_softmax(x, weight):
    k = weight.numel()
    y = torch.nn.functional.pad(x.mean(dim=(2, 3)), (k // 2, k // 2))
    return torch.softmax(y.unfold(1, k, 1) @ weight, dim=1)


class LearnerECA(torch.nn.Module):
    """A learner's own ECA module on B×N×C tokens: the kernel from ψ written inline, the conv on a
    b 1 c view made with unsqueeze, the gate broadcast with [:, None, :]."""

    def __init__(self, channels, gamma=2, b=1):
        super().__init__()
        t = int(abs((math.log2(channels) + b) / gamma))
        k = t if t % 2 else t + 1
        self.conv = torch.nn.Conv1d(1, 1, k, padding=k // 2, bias=False)

    def gate(self, y):
        return torch.sigmoid(self.conv(y.unsqueeze(1)).squeeze(1))

    def pool(self, t):
        return t.mean(dim=1)

    def forward(self, t):
        return t * self.gate(self.pool(t))[:, None, :]


class LearnerECAMaxPool(LearnerECA):
    def pool(self, t):
        return t.amax(dim=1)


class LearnerECANoSigmoid(LearnerECA):
    def gate(self, y):
        return self.conv(y.unsqueeze(1)).squeeze(1)


class LearnerECASoftmax(LearnerECA):
    def gate(self, y):
        return self.conv(y.unsqueeze(1)).squeeze(1).softmax(dim=-1)


class LearnerECAResidual(LearnerECA):
    def forward(self, t):
        return t + t * self.gate(self.pool(t))[:, None, :]


class LearnerECAPerToken(LearnerECA):
    """Reads the tokens as a map's B×C×N: the mean over the last axis, a gate per token."""

    def forward(self, t):
        return t * self.gate(t.mean(dim=2))[:, :, None]


class LearnerECAFixedK(LearnerECA):
    def __init__(self, channels, gamma=2, b=1):
        torch.nn.Module.__init__(self)
        self.conv = torch.nn.Conv1d(1, 1, 3, padding=1, bias=False)  # the official default k


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_eca_module", LearnerECAMaxPool, "max pooling"),
    ("check_eca_module", LearnerECANoSigmoid, "sigmoid missing"),
    ("check_eca_module", LearnerECASoftmax, "softmax over the channels"),
    ("check_eca_module", LearnerECAResidual, "gate added as a residual"),
    ("check_eca_module", LearnerECAPerToken, "pooled over the channels instead of the tokens"),
    ("check_kernel_size", learner_psi_without_odd, "even kernel size"),
    ("check_kernel_size", learner_psi_round, "rounded to the nearest integer"),
    ("check_kernel_size", learner_psi_ceil, "math.ceil() instead of int()"),
    ("check_kernel_size", learner_psi_ln, "natural log instead of log2"),
    ("check_kernel_size", learner_psi_no_b, "forgot b"),
    ("check_kernel_size", learner_psi_no_gamma, "forgot to divide by gamma"),
    ("check_kernel_size", learner_psi_hard_coded, "hard-coded"),
    ("check_eca_gate", learner_gate_circular, "circular"),
    ("check_eca_gate", learner_gate_right_pad, "all k-1 zeros on the right"),
    ("check_eca_gate", learner_gate_softmax, "softmax over the channels"),
    ("check_eca_gate", learner_gate_over_space, "1-D conv over spatial positions"),
    ("check_eca_gate", learner_gate_causal_pad, "padding that shifts the channel window"),
    ("check_eca_gate", learner_gate_amax, "max instead of mean pooling"),
    ("check_eca_gate", learner_gate_logits, "missing sigmoid"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


def learner_psi_correct(channels, gamma=2, b=1):
    k = int((math.log2(channels) + b) / gamma)
    return k + 1 - k % 2


def learner_gate_correct(x, weight):
    k = weight.numel()
    y = torch.nn.functional.pad(x.mean(dim=(2, 3)), (k // 2, k // 2))
    return torch.sigmoid(y.unfold(1, k, 1) @ weight)


def learner_matrix_correct(weight, channels):
    k = weight.numel()
    m = torch.zeros(channels, channels, dtype=weight.dtype)
    for c in range(channels):
        for i in range(k):
            j = c + i - k // 2
            if 0 <= j < channels:
                m[c, j] = weight[i]
    return m


@pytest.mark.parametrize("name,learner", [
    ("check_kernel_size", learner_psi_correct),
    ("check_eca_gate", learner_gate_correct),
    ("check_eca_matrix", learner_matrix_correct),
    ("check_eca_module", LearnerECA),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_a_fixed_kernel_of_3_is_told_by_the_weights_shape(capsys):
    # k = 3 where ψ(256) = 5: the engine cannot load the reference's 5 taps and says so.
    assert not CHECKERS["check_eca_module"](LearnerECAFixedK).passed
    out = capsys.readouterr().out
    assert "conv.weight (1, 1, 3) instead of (1, 1, 5)" in out, out


def test_module_reference_is_the_librarys_adaptive_eca_on_flattened_maps():
    from einops import rearrange

    from attn_tutorial.eca import ECA

    for channels, gamma, b in [(16, 2, 1), (256, 2, 1), (512, 3, 2)]:
        ref = lesson01.ECAReference(channels, gamma, b).double()
        lib = ECA(channels, adaptive=True, gamma=gamma, b=b).double()
        lib.load_state_dict(ref.state_dict())
        x = torch.randn(2, channels, 3, 5, dtype=torch.float64)
        tokens = rearrange(x, "b c h w -> b (h w) c")
        assert ref.conv.weight.shape == lib.conv.weight.shape
        assert torch.allclose(ref(tokens), rearrange(lib(x), "b c h w -> b (h w) c"))


def test_kernel_size_returning_a_tensor_or_a_float_is_reported(capsys):
    result = CHECKERS["check_kernel_size"](lambda c, gamma=2, b=1: torch.tensor(5))
    assert not result.passed
    assert "✗ every case: returned a tensor of shape (), expected an int" in capsys.readouterr().out

    def psi_float(channels, gamma=2, b=1):  # 5.0: nn.Conv1d refuses a float kernel size
        t = (math.log2(channels) + b) // gamma
        return t if t % 2 else t + 1

    result = CHECKERS["check_kernel_size"](psi_float)
    out = capsys.readouterr().out
    assert not result.passed and "✗ C = 24: returned 3.0 (a float), expected an int" in out


def test_float32_matrix_is_reported(capsys):
    def matrix32(weight, channels):
        return lesson01.ref_eca_matrix(weight, channels).float()

    assert not CHECKERS["check_eca_matrix"](matrix32).passed
    assert "✗ every case: returned float32, expected float64 (the dtype of the inputs)" in \
        capsys.readouterr().out


def test_a_diag_sum_matrix_fails_when_the_band_is_wider_than_the_matrix(capsys):
    def matrix_by_diagonals(weight, channels):
        k = weight.numel()
        m = torch.zeros(channels, channels, dtype=weight.dtype)
        for i in range(k):
            offset = i - k // 2
            m = m + weight[i] * torch.diag(torch.ones(channels - abs(offset),
                                                      dtype=weight.dtype), offset)
        return m

    result = CHECKERS["check_eca_matrix"](matrix_by_diagonals)
    out = capsys.readouterr().out
    assert not result.passed and "✓ k = 5, C = 4" in out
    assert "✗ k = 7, C = 2: raised RuntimeError" in out and "(at line 6 of matrix_by_diagonals)" in out


def test_reference_meanings():
    """The references mean what their docstrings say, checked by hand-written loops."""
    assert [lesson01.ref_kernel_size(c) for c in (16, 128, 256, 2048)] == [3, 5, 5, 7]
    x = torch.randn(2, 6, 3, 5, dtype=torch.float64)
    w = torch.randn(3, dtype=torch.float64)
    y = x.mean(dim=(2, 3))
    z = torch.zeros(2, 6, dtype=torch.float64)
    for b in range(2):
        for c in range(6):
            for i in range(3):
                if 0 <= c + i - 1 < 6:
                    z[b, c] += w[i] * y[b, c + i - 1]
    assert torch.allclose(lesson01.ref_eca_gate(x, w), torch.sigmoid(z))
    m = lesson01.ref_eca_matrix(w, 6)
    assert torch.allclose(torch.sigmoid(y @ m.T), torch.sigmoid(z))


# ------------------------------------------------- boundaries and slips of the new engine
def test_b_not_divided_by_gamma_is_named_not_taken_for_round():
    def kernel_size(channels, gamma=2, b=1):
        t = int(abs(math.log2(channels) / gamma + b))
        return t if t % 2 else t + 1

    assert_mistake_named("check_kernel_size", kernel_size, "b not divided by gamma")


def test_a_numpy_integer_is_named_by_its_type():
    import numpy as np

    def kernel_size(channels, gamma=2, b=1):
        t = np.int64(abs((np.log2(channels) + b) / gamma))
        return t if t % 2 else t + 1

    result = CHECKERS["check_kernel_size"].run(kernel_size, verbose=False)
    assert result.diagnoses == ["returned numpy.int64 where a Python int is asked"], result.lines


def test_a_gate_with_padding_1_hard_coded_fails_where_k_is_not_3():
    from _learner import assert_fails_only_on

    def eca_gate(x, weight):
        y = x.mean(dim=(2, 3))[:, None, :]
        return torch.sigmoid(torch.nn.functional.conv1d(y, weight.view(1, 1, -1), padding=1))[:, 0]

    assert_fails_only_on("check_eca_gate", eca_gate, ["k = 5", "k = 1"])


def test_an_eca_module_with_a_frozen_conv_cannot_learn():
    import torch.nn as nn

    class MyECA(lesson01.ECAReference):
        def __init__(self, channels, gamma=2, b=1):
            super().__init__(channels, gamma, b)
            self.conv.weight.requires_grad_(False)

    result = CHECKERS["check_eca_module"].run(MyECA, verbose=False)
    assert result.diagnoses == ["`conv.weight` has requires_grad=False"], result.lines
    assert result.lines[-1].startswith("MyECA: 0/")
    assert isinstance(MyECA(8), nn.Module)


# ------------------------------------------------- ψ(C) as a predict exercise; ECA-NS (extend)
def test_kernel_size_is_a_predict_exercise_over_many_configurations():
    checker = CHECKERS["check_kernel_size"]
    assert checker.tier == "predict" and 15 <= len(checker.cases) <= 40
    args = [case.inputs() for case in checker.cases]
    ts = [(math.log2(a[0]) + (a[2] if len(a) == 3 else 1)) / (a[1] if len(a) == 3 else 2)
          for a in args]
    assert any(t == int(t) and int(t) % 2 == 0 for t in ts)   # t even and exact: goes up
    assert any(t == int(t) and int(t) % 2 == 1 for t in ts)   # t odd and exact: stays
    assert any(t - int(t) == 0.5 for t in ts)                 # a half: round() differs
    assert min(a[0] for a in args) == 1 and sum(len(a) == 1 for a in args) >= 10


def test_eca_ns_reference_is_the_librarys_ecans_and_a_loop():
    from einops import rearrange

    from attn_tutorial.eca import ECANS

    for case in CHECKERS["check_eca_ns_gate"].cases:
        x, weight = case.inputs()
        channels, k = weight.shape
        lib = ECANS(channels, k).double()
        with torch.no_grad():
            lib.conv.weight.copy_(rearrange(weight, "c k -> c 1 k"))
        gate = lesson01.ref_eca_ns_gate(x, weight)
        assert torch.allclose(x * gate[:, :, None, None], lib(x))
        y = x.mean(dim=(2, 3))
        z = torch.zeros_like(y)
        for c in range(channels):
            for i in range(k):
                j = c + i - (k - 1) // 2
                if 0 <= j < channels:
                    z[:, c] += weight[c, i] * y[:, j]
        assert torch.allclose(gate, torch.sigmoid(z))


def learner_ns_shared(x, weight):
    """ECA's conv with the first channel's taps: the weight sharing ECA-NS removes."""
    k = weight.shape[1]
    y = x.mean(dim=(2, 3)).unsqueeze(1)
    return torch.sigmoid(torch.nn.functional.conv1d(y, weight[:1, None], padding=k // 2)[:, 0])


def learner_ns_grouped_on_length_one(x, weight):
    """Depthwise conv1d straight on the B×C×1 means: only the centre tap ever sees data."""
    c, k = weight.shape
    y = x.mean(dim=(2, 3), keepdim=True)[..., 0]
    return torch.sigmoid(torch.nn.functional.conv1d(y, weight[:, None], padding=k // 2,
                                                    groups=c)[..., 0])


def learner_ns_by_matrix_transposed(x, weight):
    c, k = weight.shape
    m = torch.zeros(c, c, dtype=weight.dtype)
    for row in range(c):
        for i in range(k):
            if 0 <= row + i - k // 2 < c:
                m[row, row + i - k // 2] = weight[row, i]
    return torch.sigmoid(x.mean(dim=(2, 3)) @ m)          # y @ M: M's transpose applied


def learner_ns_correct_by_matrix(x, weight):
    c, k = weight.shape
    m = torch.zeros(c, c, dtype=weight.dtype)
    for row in range(c):
        for i in range(k):
            if 0 <= row + i - k // 2 < c:
                m[row, row + i - k // 2] = weight[row, i]
    return torch.sigmoid(x.mean(dim=(2, 3)) @ m.T)


def learner_ns_correct_official_style(x, weight):
    """The official eca_ns.py route: unfold the padded means, then a depthwise conv1d."""
    c, k = weight.shape
    y = torch.nn.functional.pad(x.mean(dim=(2, 3)), (k // 2, k // 2)).unfold(1, k, 1)
    return torch.sigmoid(torch.nn.functional.conv1d(y, weight[:, None], groups=c)[..., 0])


@pytest.mark.parametrize("learner,phrase", [
    (learner_ns_shared, "one kernel shared by every channel"),
    (learner_ns_grouped_on_length_one, "only the centre tap"),
    (learner_ns_by_matrix_transposed, "band transposed"),
])
def test_a_learners_own_eca_ns_slip_is_named(learner, phrase):
    assert_mistake_named("check_eca_ns_gate", learner, phrase)


@pytest.mark.parametrize("learner", [learner_ns_correct_by_matrix,
                                     learner_ns_correct_official_style])
def test_a_learners_own_correct_eca_ns_passes(learner):
    assert CHECKERS["check_eca_ns_gate"](learner, verbose=False).passed


# ------------------------------------------------- ψ(C): the paper's nearest odd number, hidden cases
def test_the_integer_form_is_the_nearest_odd_number_ties_up():
    """int(t), then + 1 when even, is the odd number nearest to t, the larger one when t is an
    even integer: 2·⌊t/2⌋ + 1, checked against a search over the odd numbers."""
    for channels in range(1, 5000, 7):
        for gamma, b in ((2, 1), (1.5, 0.5), (3, 2), (1, 0.25), (2.5, 1.5)):
            t = (math.log2(channels) + b) / gamma
            odd = [n for n in range(1, 2 * int(t) + 5, 2)]
            best = min(abs(n - t) for n in odd)
            nearest = max(n for n in odd if abs(n - t) == best)   # ties: the larger
            assert lesson01.ref_kernel_size(channels, gamma, b) == nearest, (channels, gamma, b)


def test_kernel_size_has_hidden_cases_over_the_domain():
    checker = CHECKERS["check_kernel_size"]
    hidden = [case.inputs() for case in checker.cases if case.hidden]
    assert 4 <= len(hidden) <= 6
    assert any(len(a) == 1 for a in hidden) and sum(len(a) == 3 for a in hidden) >= 3
    assert max(a[0] for a in hidden) > 1 << 10


def test_the_integer_log2_fails_on_several_shown_cases(capsys):
    def kernel_size(channels, gamma=2, b=1):
        t = int(((channels.bit_length() - 1) + b) / gamma)
        return t if t % 2 else t + 1

    assert_mistake_named("check_kernel_size", kernel_size, "integer log2")
    result = CHECKERS["check_kernel_size"].run(kernel_size, verbose=False)
    shown_failures = [line for line in result.lines if line.startswith("✗ C =")]
    assert len(shown_failures) >= 3, result.lines


def test_the_parity_of_the_float_is_named():
    def kernel_size(channels, gamma=2, b=1):
        t = abs((math.log2(channels) + b) / gamma)
        return int(t if t % 2 else t + 1)

    assert_mistake_named("check_kernel_size", kernel_size, "parity of the float")


def test_a_nearest_odd_number_answer_passes():
    def kernel_size(channels, gamma=2, b=1):
        t = abs(math.log2(channels) / gamma + b / gamma)
        return 2 * math.floor(t / 2) + 1

    assert CHECKERS["check_kernel_size"](kernel_size, verbose=False).passed
