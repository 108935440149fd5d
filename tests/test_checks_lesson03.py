"""Lesson 03 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, a learner's own correct versions pass, the references mean what they say (checked against
the library's PSA and plain loops). The generic proofs run over every checker in
tests/test_checks.py."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from _learner import assert_catalogued, assert_mistake_named

from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, lesson03
from attn_tutorial.psa import PSA
from attn_tutorial.show import count_params

# The mistakes issue 12 asks the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_psa_param_count": ["a separate SE per branch", "groups ignored",
                              "each branch reading only its channel split"],
    "check_scale_weights": ["softmax over the channels instead of over the scales",
                            "the sigmoid missing before the softmax"],
    "check_psa_module": ["natural concat order", "softmax over the channels",
                         "the sigmoid missing before the softmax"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


# ---------------------------------------------------------------- a learner's own answers
def learner_count(in_channels, planes, conv_kernels, conv_groups, se_reduction=16):
    s = len(conv_kernels)
    out = planes // s
    total = sum(k ** 2 * in_channels // g * out for k, g in zip(conv_kernels, conv_groups))
    hidden = out // se_reduction
    return total + (out * hidden + hidden) + (hidden * out + out)


def learner_count_se_per_branch(in_channels, planes, conv_kernels, conv_groups, se_reduction=16):
    out = planes // len(conv_kernels)
    total = 0
    for k, g in zip(conv_kernels, conv_groups):
        hidden = out // se_reduction
        total += k * k * (in_channels // g) * out + 2 * out * hidden + hidden + out
    return total


def learner_count_dense(in_channels, planes, conv_kernels, conv_groups, se_reduction=16):
    out = planes // len(conv_kernels)
    hidden = out // se_reduction
    return sum(k * k * in_channels * out for k in conv_kernels) + 2 * out * hidden + hidden + out


def learner_count_split(in_channels, planes, conv_kernels, conv_groups, se_reduction=16):
    s = len(conv_kernels)
    part, out = in_channels // s, planes // s
    hidden = out // se_reduction
    convs = sum(k * k * (part // g) * out for k, g in zip(conv_kernels, conv_groups))
    return convs + 2 * out * hidden + hidden + out


def learner_weights(feats, w1, b1, w2, b2):
    pooled = feats.mean(dim=(3, 4))
    hidden = torch.relu(pooled @ w1.T + b1)
    return torch.softmax(torch.sigmoid(hidden @ w2.T + b2), dim=1)


def learner_weights_softmax_channels(feats, w1, b1, w2, b2):
    pooled = feats.mean(dim=(-1, -2))
    scores = torch.sigmoid(torch.relu(pooled @ w1.T + b1) @ w2.T + b2)
    return torch.softmax(scores, dim=-1)


def learner_weights_no_sigmoid(feats, w1, b1, w2, b2):
    b, s, c = feats.shape[:3]
    out = torch.empty(b, s, c, dtype=feats.dtype)
    for i in range(s):  # one scale at a time
        y = feats[:, i].flatten(2).mean(-1)
        out[:, i] = torch.relu(y @ w1.T + b1) @ w2.T + b2
    return out.softmax(1)


def learner_weights_no_softmax(feats, w1, b1, w2, b2):
    pooled = feats.mean(dim=(3, 4))
    return torch.sigmoid(torch.relu(pooled @ w1.T + b1) @ w2.T + b2)


def learner_weights_max_pool(feats, w1, b1, w2, b2):
    pooled = feats.flatten(3).max(dim=-1).values
    return torch.softmax(torch.sigmoid(torch.relu(pooled @ w1.T + b1) @ w2.T + b2), dim=1)


class LearnerPSA(nn.Module):
    """Written the way the official code writes it: four convs, cat, view, a loop that prepends."""

    def __init__(self, in_channels, planes, conv_kernels=(3, 5, 7, 9), conv_groups=(1, 4, 8, 16),
                 se_reduction=16):
        super().__init__()
        self.split = planes // len(conv_kernels)
        self.branches = nn.ModuleList([
            nn.Conv2d(in_channels, self.split, k, padding=k // 2, groups=g, bias=False)
            for k, g in zip(conv_kernels, conv_groups)])
        self.se_reduce = nn.Conv2d(self.split, self.split // se_reduction, 1)
        self.se_expand = nn.Conv2d(self.split // se_reduction, self.split, 1)

    def se(self, t):
        return torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(t.mean((2, 3), keepdim=True)))))

    def scores(self, feats):
        return torch.cat([self.se(f) for f in feats], dim=1)

    def combine(self, weighted):
        out = weighted[0]
        for w in weighted[1:]:
            out = torch.cat((w, out), dim=1)
        return out

    def forward(self, x):
        feats = [branch(x) for branch in self.branches]
        b, s = x.shape[0], len(feats)
        att = self.scores(feats).view(b, s, self.split, 1, 1).softmax(dim=1)
        stacked = torch.cat(feats, dim=1).view(b, s, self.split, *feats[0].shape[2:])
        weighted = stacked * att
        return self.combine([weighted[:, i] for i in range(s)])


class LearnerPSANatural(LearnerPSA):
    def combine(self, weighted):
        return torch.cat(weighted, dim=1)


class LearnerPSASoftmaxChannels(LearnerPSA):
    def forward(self, x):
        feats = [branch(x) for branch in self.branches]
        b, s = x.shape[0], len(feats)
        att = self.scores(feats).view(b, s, self.split, 1, 1).softmax(dim=2)
        return self.combine([f * att[:, i] for i, f in enumerate(feats)])


class LearnerPSANoSigmoid(LearnerPSA):
    def se(self, t):
        return self.se_expand(torch.relu(self.se_reduce(t.mean((2, 3), keepdim=True))))


class LearnerPSAMismatched(LearnerPSA):
    """Reverses the features first, then weights them with the attention in natural order."""

    def forward(self, x):
        feats = [branch(x) for branch in self.branches]
        b, s = x.shape[0], len(feats)
        att = self.scores(feats).view(b, s, self.split, 1, 1).softmax(dim=1)
        reversed_feats = torch.stack(feats[::-1], dim=1)
        return (reversed_feats * att).flatten(1, 2)


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_psa_param_count", learner_count_se_per_branch, "a separate SE per branch"),
    ("check_psa_param_count", learner_count_dense, "groups ignored"),
    ("check_psa_param_count", learner_count_split, "each branch reading only its channel split"),
    ("check_scale_weights", learner_weights_softmax_channels, "softmax over the channels"),
    ("check_scale_weights", learner_weights_no_sigmoid, "the sigmoid missing before the softmax"),
    ("check_scale_weights", learner_weights_no_softmax, "no softmax"),
    ("check_scale_weights", learner_weights_max_pool, "max instead of mean pooling"),
    ("check_psa_module", LearnerPSANatural, "natural concat order"),
    ("check_psa_module", LearnerPSASoftmaxChannels, "softmax over the channels"),
    ("check_psa_module", LearnerPSANoSigmoid, "the sigmoid missing before the softmax"),
    ("check_psa_module", LearnerPSAMismatched, "their weights not"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


@pytest.mark.parametrize("name,learner", [
    ("check_psa_param_count", learner_count),
    ("check_scale_weights", learner_weights),
    ("check_psa_module", LearnerPSA),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_stubs_say_not_implemented(capsys):
    def count_stub(in_channels, planes, conv_kernels, conv_groups, se_reduction=16):
        raise NotImplementedError()

    class ModuleStub(nn.Module):
        def __init__(self, in_channels, planes, conv_kernels=(3, 5, 7, 9),
                     conv_groups=(1, 4, 8, 16), se_reduction=16):
            super().__init__()
            raise NotImplementedError()

    assert not CHECKERS["check_psa_param_count"](count_stub).implemented
    assert not CHECKERS["check_psa_module"](ModuleStub).implemented
    assert capsys.readouterr().out.count(NOT_IMPLEMENTED) == 2


def test_a_separate_se_module_per_branch_is_reported_by_parameter_name(capsys):
    class PerBranchSE(LearnerPSA):
        def __init__(self, in_channels, planes, conv_kernels=(3, 5, 7, 9),
                     conv_groups=(1, 4, 8, 16), se_reduction=16):
            super().__init__(in_channels, planes, conv_kernels, conv_groups, se_reduction)
            del self.se_reduce, self.se_expand
            self.ses = nn.ModuleList(nn.Conv2d(self.split, self.split, 1) for _ in conv_kernels)

    assert not CHECKERS["check_psa_module"](PerBranchSE).passed
    assert "missing se_reduce.weight" in capsys.readouterr().out


def test_reference_meanings():
    """The references against the library's PSA (itself proven equal to the official code in
    tests/test_official.py) and against parameter counts of built modules."""
    for args in [(64, 64, (3, 5, 7, 9), (1, 4, 8, 16), 16), (36, 108, (3, 5, 7), (1, 3, 6), 4)]:
        assert lesson03.ref_psa_param_count(*args) == count_params(
            PSA(args[0], args[1], conv_kernels=args[2], conv_groups=args[3], se_reduction=args[4]))
    assert lesson03.ref_psa_param_count(64, 64, (3, 5, 7, 9), (1, 4, 8, 16)) == 27121
    split = PSA(64, 64, branch_input="split")
    assert lesson03.ref_psa_param_count(64, 64, (3, 5, 7, 9), (1, 4, 8, 16),
                                        branch_in="split") == count_params(split)
    dense = PSA(64, 64, conv_groups=(1, 1, 1, 1))
    assert lesson03.ref_psa_param_count(64, 64, (3, 5, 7, 9), (1, 4, 8, 16),
                                        use_groups=False) == count_params(dense)
    one_se = count_params(dense.se_reduce) + count_params(dense.se_expand)
    assert lesson03.ref_psa_param_count(64, 64, (3, 5, 7, 9), (1, 1, 1, 1),
                                        se="per_branch") == count_params(dense) + 3 * one_se

    lib = PSA(32, 128).double()
    ref = lesson03.PSAReference(32, 128).double()
    ref.load_state_dict(lib.state_dict())
    x = torch.randn(2, 32, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(ref(x), lib(x))
    natural = PSA(32, 128, concat_order="natural").double()
    natural.load_state_dict(lib.state_dict())
    ref_natural = lesson03.PSAReference(32, 128, concat="natural").double()
    ref_natural.load_state_dict(lib.state_dict())
    torch.testing.assert_close(ref_natural(x), natural(x))
    sol = lesson03.PSASolution(32, 128).double()
    sol.load_state_dict(lib.state_dict())
    torch.testing.assert_close(sol(x), lib(x))

    feats = torch.stack([b(x) for b in lib.branches], dim=1)
    w1, b1 = lib.se_reduce.weight[:, :, 0, 0], lib.se_reduce.bias
    w2, b2 = lib.se_expand.weight[:, :, 0, 0], lib.se_expand.bias
    torch.testing.assert_close(lesson03.ref_scale_weights(feats, w1, b1, w2, b2),
                               lib.attention_map(x))


# ------------------------------------------------- boundaries and slips of the new engine
def test_a_count_with_r_16_hard_coded_fails_only_where_r_is_given():
    from _learner import assert_fails_only_on

    def psa_param_count(in_channels, planes, conv_kernels, conv_groups, se_reduction=16):
        ps = planes // len(conv_kernels)
        convs = sum(k * k * (in_channels // g) * ps for k, g in zip(conv_kernels, conv_groups))
        hidden = ps // 16
        return convs + 2 * ps * hidden + hidden + ps

    assert_fails_only_on("check_psa_param_count", psa_param_count, [", r 4", ", r 5"])


def test_a_hidden_width_as_a_float_is_named_by_its_type():
    def psa_param_count(in_channels, planes, conv_kernels, conv_groups, se_reduction=16):
        ps = planes // len(conv_kernels)
        convs = sum(k * k * (in_channels // g) * ps for k, g in zip(conv_kernels, conv_groups))
        hidden = ps / se_reduction
        return convs + 2 * ps * hidden + hidden + ps

    result = CHECKERS["check_psa_param_count"].run(psa_param_count, verbose=False)
    assert not result.passed and "expected an int" in "\n".join(result.lines)


def test_scale_weights_with_the_stable_softmax_sign_flipped_is_named():
    def scale_weights(feats, w1, b1, w2, b2):
        y = feats.mean(dim=(3, 4))
        z = torch.sigmoid(torch.relu(y @ w1.T + b1) @ w2.T + b2)
        e = torch.exp(z.amax(dim=1, keepdim=True) - z)
        return e / e.sum(dim=1, keepdim=True)

    assert_mistake_named("check_scale_weights", scale_weights, "softmax of −scores")
