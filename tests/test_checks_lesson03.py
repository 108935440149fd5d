"""Lesson 03 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, a learner's own correct versions pass, the references mean what they say (checked against
the library's PSA, built modules' parameter counts, and the weight range against every corner of
the score box and random scores). The generic proofs run over every checker in
tests/test_checks.py."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn as nn
from einops import rearrange

from _learner import assert_catalogued, assert_fails_only_on, assert_mistake_named

from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, lesson03
from attn_tutorial.psa import PSA
from attn_tutorial.show import count_params

# The mistakes issues 12 and 29 ask the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_psa_param_count": ["a separate SE per branch", "groups ignored",
                              'for branch_input="split" your count has every branch reading all'],
    "check_psa_weight_range": ["the sigmoid left out", "only the single largest kernel"],
    "check_scale_weights": ["softmax over the channels instead of over the scales",
                            "the sigmoid missing before the softmax", "read (and written) as (c s)"],
    "check_paper_psa": ["natural concat order", "softmax over the channels",
                        "the sigmoid missing before the softmax", "split as (c s), interleaved",
                        "the first scale's SE", "the pooled scales fed to the SE largest kernel"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_tiers_and_order():
    assert lesson03.__all__ == ["check_psa_param_count", "check_psa_weight_range",
                                "check_scale_weights", "check_paper_psa"]
    assert [CHECKERS[n].tier for n in lesson03.__all__] == ["predict", "predict", "build", "extend"]


# ---------------------------------------------------------------- a learner's own answers
def learner_count(in_channels, planes, conv_kernels, conv_groups, se_reduction=16,
                  branch_input="full"):
    s = len(conv_kernels)
    out = planes // s
    cin = in_channels // s if branch_input == "split" else in_channels
    total = sum(k ** 2 * cin // g * out for k, g in zip(conv_kernels, conv_groups))
    hidden = out // se_reduction
    return total + (out * hidden + hidden) + (hidden * out + out)


def learner_count_always_full(in_channels, planes, conv_kernels, conv_groups, se_reduction=16,
                              branch_input="full"):
    out = planes // len(conv_kernels)
    hidden = out // se_reduction
    total = 0
    for k, g in zip(conv_kernels, conv_groups):
        total += k * k * (in_channels // g) * out
    return total + 2 * out * hidden + hidden + out


def learner_count_se_per_branch(in_channels, planes, conv_kernels, conv_groups, se_reduction=16,
                                branch_input="full"):
    out = planes // len(conv_kernels)
    cin = in_channels // len(conv_kernels) if branch_input == "split" else in_channels
    total = 0
    for k, g in zip(conv_kernels, conv_groups):
        hidden = out // se_reduction
        total += k * k * (cin // g) * out + 2 * out * hidden + hidden + out
    return total


def learner_count_dense(in_channels, planes, conv_kernels, conv_groups, se_reduction=16,
                        branch_input="full"):
    out = planes // len(conv_kernels)
    cin = in_channels // len(conv_kernels) if branch_input == "split" else in_channels
    hidden = out // se_reduction
    return sum(k * k * cin * out for k in conv_kernels) + 2 * out * hidden + hidden + out


def learner_range(conv_kernels):
    e, s = math.e, len(conv_kernels)
    best_hi, best_lo = -math.inf, math.inf
    for on in itertools.product([False, True], repeat=s):  # every corner of the score box
        u = [e if o else 1.0 for o in on]
        kbar = sum(a * k for a, k in zip(u, conv_kernels)) / sum(u)
        best_hi, best_lo = max(best_hi, kbar), min(best_lo, kbar)
    return (1 / (1 + (s - 1) * e), e / (e + s - 1), best_lo, best_hi)


def learner_range_largest_only(conv_kernels):
    e, s = math.e, len(conv_kernels)
    top, bottom = max(conv_kernels), min(conv_kernels)
    rest = sum(conv_kernels)
    return (1 / (1 + (s - 1) * e), e / (e + s - 1),
            (e * bottom + rest - bottom) / (e + s - 1), (e * top + rest - top) / (e + s - 1))


def learner_range_no_sigmoid(conv_kernels):
    return (0.0, 1.0, float(min(conv_kernels)), float(max(conv_kernels)))


def learner_weights(x, num_scales, w1, b1, w2, b2):
    b, sc = x.shape[:2]
    pooled = x.mean(dim=(2, 3)).reshape(b * num_scales, sc // num_scales, 1, 1)
    z = torch.sigmoid(nn.functional.conv2d(torch.relu(nn.functional.conv2d(pooled, w1, b1)), w2, b2))
    return z.reshape(b, num_scales, -1).softmax(dim=1).reshape(b, sc, 1, 1)


def learner_weights_interleaved(x, num_scales, w1, b1, w2, b2):
    b, sc = x.shape[:2]
    pooled = x.mean(dim=(2, 3)).reshape(b, sc // num_scales, num_scales).transpose(1, 2)
    z = torch.sigmoid(torch.relu(pooled @ w1[:, :, 0, 0].T + b1) @ w2[:, :, 0, 0].T + b2)
    return z.softmax(dim=1).transpose(1, 2).reshape(b, sc, 1, 1)


def learner_weights_softmax_channels(x, num_scales, w1, b1, w2, b2):
    b, sc = x.shape[:2]
    pooled = x.mean(dim=(2, 3)).reshape(b, num_scales, sc // num_scales)
    z = torch.sigmoid(torch.relu(pooled @ w1[:, :, 0, 0].T + b1) @ w2[:, :, 0, 0].T + b2)
    return z.softmax(dim=-1).reshape(b, sc, 1, 1)


def learner_weights_no_sigmoid(x, num_scales, w1, b1, w2, b2):
    chunks = torch.chunk(x, num_scales, dim=1)
    scores = []
    for t in chunks:  # one scale at a time
        y = t.mean(dim=(2, 3), keepdim=True)
        scores.append(nn.functional.conv2d(torch.relu(nn.functional.conv2d(y, w1, b1)), w2, b2))
    return torch.cat(list(torch.softmax(torch.stack(scores), dim=0)), dim=1)


class LearnerPaperPSA(nn.Module):
    """Written the way the official code writes its forward: convs, cat, view, a loop that
    prepends; the input cut with torch.chunk; the S SEs as grouped 1×1 convs."""

    def __init__(self, in_channels, planes, conv_kernels=(3, 5, 7, 9), conv_groups=(1, 4, 8, 16),
                 se_reduction=16):
        super().__init__()
        s = len(conv_kernels)
        self.split = planes // s
        self.branches = nn.ModuleList([
            nn.Conv2d(in_channels // s, self.split, k, padding=k // 2, groups=g, bias=False)
            for k, g in zip(conv_kernels, conv_groups)])
        hidden = self.split // se_reduction
        self.se_reduce = nn.Conv2d(s * self.split, s * hidden, 1, groups=s)
        self.se_expand = nn.Conv2d(s * hidden, s * self.split, 1, groups=s)

    def se(self, pooled):
        return torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(pooled))))

    def parts(self, x):
        return torch.chunk(x, len(self.branches), dim=1)

    def combine(self, weighted):
        out = weighted[0]
        for w in weighted[1:]:
            out = torch.cat((w, out), dim=1)
        return out

    def forward(self, x):
        feats = [branch(p) for branch, p in zip(self.branches, self.parts(x))]
        b, s = x.shape[0], len(feats)
        att = self.se(torch.cat([f.mean((2, 3), keepdim=True) for f in feats], dim=1))
        att = att.view(b, s, self.split, 1, 1).softmax(dim=1)
        return self.combine([f * att[:, i] for i, f in enumerate(feats)])


class LearnerPaperPSAStrided(LearnerPaperPSA):
    """Takes every S-th channel for branch s (x[:, s::S])."""

    def parts(self, x):
        s = len(self.branches)
        return [x[:, i::s] for i in range(s)]


class LearnerPaperPSANatural(LearnerPaperPSA):
    def combine(self, weighted):
        return torch.cat(weighted, dim=1)


class LearnerPaperPSANoSigmoid(LearnerPaperPSA):
    def se(self, pooled):
        return self.se_expand(torch.relu(self.se_reduce(pooled)))


class LearnerPaperPSAOneSE(LearnerPaperPSA):
    """Uses the weights of the first group as one SE for every scale (the code's shared SE)."""

    def se(self, pooled):
        s = len(self.branches)
        d = self.se_reduce.out_channels // s
        w1, b1 = self.se_reduce.weight[:d], self.se_reduce.bias[:d]
        w2, b2 = self.se_expand.weight[:self.split], self.se_expand.bias[:self.split]
        scores = [torch.sigmoid(nn.functional.conv2d(torch.relu(nn.functional.conv2d(p, w1, b1)),
                                                     w2, b2))
                  for p in torch.chunk(pooled, s, dim=1)]
        return torch.cat(scores, dim=1)


class LearnerPaperPSALargestFirst(LearnerPaperPSA):
    """Reverses the branch outputs first (largest kernel first) and keeps that order."""

    def forward(self, x):
        feats = [branch(p) for branch, p in zip(self.branches, self.parts(x))][::-1]
        b, s = x.shape[0], len(feats)
        att = self.se(torch.cat([f.mean((2, 3), keepdim=True) for f in feats], dim=1))
        att = att.view(b, s, self.split, 1, 1).softmax(dim=1)
        return torch.cat([f * att[:, i] for i, f in enumerate(feats)], dim=1)


def learner_range_s_competitors(conv_kernels):
    """S competitors in the weight bound, with S = 1 special-cased to the weight 1."""
    e, s = math.e, len(conv_kernels)
    low, high = (1 / (1 + s * e), e / (e + s)) if s > 1 else (1.0, 1.0)
    return (low, high, *learner_range(conv_kernels)[2:])


def learner_range_float32(conv_kernels):
    """The lesson's own way (softmax over every corner of the score box), in float32."""
    ks = torch.tensor(conv_kernels, dtype=torch.float32)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=len(conv_kernels))))
    a = corners.softmax(dim=1)
    kbar = a @ ks
    return (float(a.min()), float(a.max()), float(kbar.min()), float(kbar.max()))


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_psa_param_count", learner_count_always_full, 'for branch_input="split"'),
    ("check_psa_param_count", learner_count_se_per_branch, "a separate SE per branch"),
    ("check_psa_param_count", learner_count_dense, "groups ignored"),
    ("check_psa_weight_range", learner_range_largest_only, "only the single largest kernel"),
    ("check_psa_weight_range", learner_range_no_sigmoid, "the sigmoid left out"),
    ("check_scale_weights", learner_weights_interleaved, "read (and written) as (c s)"),
    ("check_scale_weights", learner_weights_softmax_channels, "softmax over the channels"),
    ("check_scale_weights", learner_weights_no_sigmoid, "the sigmoid missing before the softmax"),
    ("check_psa_weight_range", learner_range_s_competitors, "S competing scales"),
    ("check_psa_weight_range", learner_range_float32, "computed in float32"),
    ("check_paper_psa", LearnerPaperPSAStrided, "split as (c s), interleaved"),
    ("check_paper_psa", LearnerPaperPSANatural, "natural concat order"),
    ("check_paper_psa", LearnerPaperPSANoSigmoid, "the sigmoid missing before the softmax"),
    ("check_paper_psa", LearnerPaperPSAOneSE, "the first scale's SE"),
    ("check_paper_psa", LearnerPaperPSALargestFirst, "the pooled scales fed to the SE largest"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


@pytest.mark.parametrize("name,learner", [
    ("check_psa_param_count", learner_count),
    ("check_psa_weight_range", learner_range),
    ("check_scale_weights", learner_weights),
    ("check_paper_psa", LearnerPaperPSA),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_stubs_say_not_implemented(capsys):
    def range_stub(conv_kernels):
        raise NotImplementedError()

    class ModuleStub(nn.Module):
        def __init__(self, in_channels, planes, conv_kernels=(3, 5, 7, 9),
                     conv_groups=(1, 4, 8, 16), se_reduction=16):
            super().__init__()
            raise NotImplementedError()

    assert not CHECKERS["check_psa_weight_range"](range_stub).implemented
    assert not CHECKERS["check_paper_psa"](ModuleStub).implemented
    assert capsys.readouterr().out.count(NOT_IMPLEMENTED) == 2


def test_the_full_input_form_and_a_shared_se_are_refused_by_their_parameter_shapes(capsys):
    class FullInput(LearnerPaperPSA):
        def __init__(self, in_channels, planes, conv_kernels=(3, 5, 7, 9),
                     conv_groups=(1, 4, 8, 16), se_reduction=16):
            super().__init__(in_channels, planes, conv_kernels, conv_groups, se_reduction)
            self.branches = nn.ModuleList([
                nn.Conv2d(in_channels, self.split, k, padding=k // 2, groups=g, bias=False)
                for k, g in zip(conv_kernels, conv_groups)])

        def parts(self, x):
            return [x] * len(self.branches)

    class SharedSE(LearnerPaperPSA):  # the lesson's module: one SE on c′ channels
        def __init__(self, in_channels, planes, conv_kernels=(3, 5, 7, 9),
                     conv_groups=(1, 4, 8, 16), se_reduction=16):
            super().__init__(in_channels, planes, conv_kernels, conv_groups, se_reduction)
            self.se_reduce = nn.Conv2d(self.split, self.split // se_reduction, 1)
            self.se_expand = nn.Conv2d(self.split // se_reduction, self.split, 1)

    assert not CHECKERS["check_paper_psa"](FullInput).passed
    assert "shape of branches.0.weight" in capsys.readouterr().out
    assert not CHECKERS["check_paper_psa"](SharedSE).passed
    assert "shape of se_reduce.weight" in capsys.readouterr().out


def test_a_subclass_of_the_librarys_psa_is_refused():
    class SplitFromLibrary(PSA):
        def __init__(self, in_channels, planes, conv_kernels=(3, 5, 7, 9),
                     conv_groups=(1, 4, 8, 16), se_reduction=16):
            super().__init__(in_channels, planes, conv_kernels=conv_kernels,
                             conv_groups=conv_groups, se_reduction=se_reduction,
                             branch_input="split")

    result = CHECKERS["check_paper_psa"].run(SplitFromLibrary, verbose=False)
    assert not result.passed and result.checks_passed == 0
    assert "uses the course's own attn_tutorial.psa.PSA" in "\n".join(result.lines)


def test_a_lookup_table_of_the_printed_cases_fails_on_the_hidden_ones():
    for name in ("check_psa_param_count", "check_psa_weight_range"):
        checker = CHECKERS[name]
        shown = [c for c in checker.cases if not c.hidden]
        hidden = [c for c in checker.cases if c.hidden]
        assert 4 <= len(hidden) <= 6, name
        table = {c.inputs(): checker.reference(*c.inputs()) for c in shown}

        def lookup(*args, table=table):
            return table.get(args, 0 if name == "check_psa_param_count" else (0.0,) * 4)

        result = checker.run(lookup, verbose=False)
        failed = [line for line in result.lines if line.startswith("✗")]
        assert len(failed) == len(hidden), (name, result.lines)
        assert all("hidden" in line and "wrong value" in line for line in failed), failed
        # the hidden cases are legal configurations: the library builds each one
        if name == "check_psa_param_count":
            for case in hidden:
                args = case.inputs()
                assert lesson03.ref_psa_param_count(*args) == count_params(_psa_for(args))


# ------------------------------------------------------------ what the references mean
def _psa_for(args) -> PSA:
    kw = {"conv_kernels": args[2], "conv_groups": args[3]}
    if len(args) > 4:
        kw["se_reduction"] = args[4]
    if len(args) > 5:
        kw["branch_input"] = args[5]
    return PSA(args[0], args[1], **kw)


def test_the_count_is_the_library_modules_count_on_every_case():
    for case in lesson03.PARAM_COUNT_CASES:
        args = case.inputs()
        assert lesson03.ref_psa_param_count(*args) == count_params(_psa_for(args)), case.name
    assert lesson03.ref_psa_param_count(64, 64, (3, 5, 7, 9), (1, 4, 8, 16)) == 27121
    dense = PSA(64, 64, conv_groups=(1, 1, 1, 1))
    one_se = count_params(dense.se_reduce) + count_params(dense.se_expand)
    assert lesson03.ref_psa_param_count(64, 64, (3, 5, 7, 9), (1, 1, 1, 1),
                                        se="per_branch") == count_params(dense) + 3 * one_se


def test_the_weight_range_is_attained_at_the_corners_and_never_exceeded():
    """Every corner of the score box z ∈ {0, 1}^S (computed with torch.softmax) and 2000 random
    scores in (0, 1)^S: the extremes over the corners are the reference's bounds, the random
    scores stay inside them."""
    g = torch.Generator().manual_seed(0)
    for case in lesson03.WEIGHT_RANGE_CASES:
        (kernels,) = case.inputs()
        ks = torch.tensor(kernels, dtype=torch.float64)
        s = len(kernels)
        corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=s)), dtype=torch.float64)
        a = corners.softmax(dim=1)
        kbar = a @ ks
        expected = (a.min().item(), a.max().item(), kbar.min().item(), kbar.max().item())
        got = lesson03.ref_psa_weight_range(kernels)
        assert got == pytest.approx(expected, rel=1e-12), case.name
        z = torch.rand(2000, s, generator=g, dtype=torch.float64)
        a = z.softmax(dim=1)
        assert a.min() >= got[0] and a.max() <= got[1], case.name
        assert (a @ ks).min() >= got[2] - 1e-12 and (a @ ks).max() <= got[3] + 1e-12, case.name
    lesson = lesson03.ref_psa_weight_range((3, 5, 7, 9))
    assert [round(v, 3) for v in lesson] == [0.109, 0.475, 5.076, 6.924]  # the lesson's numbers
    assert round(lesson03.ref_psa_weight_range((3, 5, 7, 9), on="largest")[3], 2) == 6.90


def test_scale_weights_and_the_paper_module_are_the_librarys():
    """The references against the library's PSA (itself proven equal to the official code in
    tests/test_official.py; its split form reads the s-th channel slice)."""
    for branch_input in ("full", "split"):
        lib = PSA(64, 128, branch_input=branch_input).double()
        x = torch.randn(2, 64, 6, 7, dtype=torch.float64)
        parts = torch.chunk(x, 4, dim=1) if branch_input == "split" else [x] * 4
        cat = torch.cat([b(p) for b, p in zip(lib.branches, parts)], dim=1)
        got = lesson03.ref_scale_weights(cat, 4, lib.se_reduce.weight, lib.se_reduce.bias,
                                         lib.se_expand.weight, lib.se_expand.bias)
        torch.testing.assert_close(got, rearrange(lib.attention_map(x), "b s c -> b (s c) 1 1"))


    # the paper's module with its S SEs made equal is the library's split form with the shared SE
    for order, knob in (("official", "reversed"), ("natural", "natural")):
        lib = PSA(64, 128, branch_input="split", concat_order=order).double()
        ref = lesson03.PaperPSAReference(64, 128, concat=knob).double()
        state = dict(lib.state_dict())
        for name in ("se_reduce", "se_expand"):
            state[f"{name}.weight"] = state[f"{name}.weight"].repeat(4, 1, 1, 1)
            state[f"{name}.bias"] = state[f"{name}.bias"].repeat(4)
        ref.load_state_dict(state)
        torch.testing.assert_close(ref(x), lib(x))


def test_the_paper_module_scores_scale_s_with_se_s():
    """The reference against a loop written from the equations: S separate SE weight sets,
    sliced out of the grouped convs, scale s scored by set s."""
    ref = lesson03.PaperPSAReference(12, 24, (3, 5, 7), (1, 2, 4), 4).double()
    sol = lesson03.PaperPSASolution(12, 24, (3, 5, 7), (1, 2, 4), 4).double()
    sol.load_state_dict(ref.state_dict())
    x = torch.randn(2, 12, 5, 6, dtype=torch.float64)
    c, d = 8, 2
    feats = [b(p) for b, p in zip(ref.branches, torch.chunk(x, 3, dim=1))]
    scores = []
    for s, f in enumerate(feats):
        w1 = ref.se_reduce.weight[s * d:(s + 1) * d, :, 0, 0]
        b1 = ref.se_reduce.bias[s * d:(s + 1) * d]
        w2 = ref.se_expand.weight[s * c:(s + 1) * c, :, 0, 0]
        b2 = ref.se_expand.bias[s * c:(s + 1) * c]
        scores.append(torch.sigmoid(torch.relu(f.mean((2, 3)) @ w1.T + b1) @ w2.T + b2))
    a = torch.softmax(torch.stack(scores), dim=0)
    want = torch.cat([feats[s] * a[s][:, :, None, None] for s in (2, 1, 0)], dim=1)
    torch.testing.assert_close(ref(x), want)
    torch.testing.assert_close(sol(x), want)
    assert count_params(ref) == sum(k * k * (4 // g) * 8 for k, g in ((3, 1), (5, 2), (7, 4))) \
        + 3 * (2 * c * d + d + c)


# ------------------------------------------------- boundaries and slips of the engine
def test_a_count_with_r_16_hard_coded_fails_only_where_r_is_not_16():
    def psa_param_count(in_channels, planes, conv_kernels, conv_groups, se_reduction=16,
                        branch_input="full"):
        ps = planes // len(conv_kernels)
        cin = in_channels // len(conv_kernels) if branch_input == "split" else in_channels
        convs = sum(k * k * (cin // g) * ps for k, g in zip(conv_kernels, conv_groups))
        hidden = ps // 16
        return convs + 2 * ps * hidden + hidden + ps

    assert_fails_only_on("check_psa_param_count", psa_param_count,
                         [", r 8", ", r 4", ", r 5", ", r 3", ", r 2", ", r 1", ", r 12",
                          "hidden configuration"])  # the hidden cases have r from 1 to 8


def test_a_hidden_width_as_a_float_is_named_by_its_type():
    def psa_param_count(in_channels, planes, conv_kernels, conv_groups, se_reduction=16,
                        branch_input="full"):
        ps = planes // len(conv_kernels)
        convs = sum(k * k * (in_channels // g) * ps for k, g in zip(conv_kernels, conv_groups))
        hidden = ps / se_reduction
        return convs + 2 * ps * hidden + hidden + ps

    result = CHECKERS["check_psa_param_count"].run(psa_param_count, verbose=False)
    assert not result.passed and "expected an int" in "\n".join(result.lines)


def test_a_range_that_forgets_the_single_scale_fails_only_there():
    def psa_weight_range(conv_kernels):  # the corners with at least one score at each end
        s, e = len(conv_kernels), math.e
        ks = sorted(conv_kernels)
        hi = max((e * sum(ks[s - m:]) + sum(ks[:s - m])) / (e * m + s - m) for m in range(1, s))
        lo = min((e * sum(ks[:m]) + sum(ks[m:])) / (e * m + s - m) for m in range(1, s))
        return (1 / (1 + (s - 1) * e), e / (e + s - 1), lo, hi)

    lines = CHECKERS["check_psa_weight_range"].run(psa_weight_range, verbose=False).lines
    failed = [line for line in lines if line.startswith("✗")]
    # and on the hidden list of one kernel (4,), the third
    assert failed and all("(3,)" in line or "(1,)" in line or "hidden kernel list 3" in line
                          for line in failed), lines


def test_scale_weights_with_the_stable_softmax_sign_flipped_is_named():
    def scale_weights(x, num_scales, w1, b1, w2, b2):
        b, sc = x.shape[:2]
        y = x.mean(dim=(2, 3)).reshape(b, num_scales, -1)
        z = torch.sigmoid(torch.relu(y @ w1[:, :, 0, 0].T + b1) @ w2[:, :, 0, 0].T + b2)
        e = torch.exp(z.amax(dim=1, keepdim=True) - z)
        return (e / e.sum(dim=1, keepdim=True)).reshape(b, sc, 1, 1)

    assert_mistake_named("check_scale_weights", scale_weights, "softmax of −scores")
