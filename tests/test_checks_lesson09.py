"""Lesson 09's exercises: learners' slips in their own words (the generic proofs over every
checker are in tests/test_checks.py and tests/test_checks_whole_answer.py)."""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from torch import nn

from attn_tutorial.checks import check_eta_squared, check_fixed_map_scores, check_make_gate
from attn_tutorial.metrics import class_selectivity


# ------------------------------------------------------------------ eta_squared (build)
def eta_loop(gates, labels):
    """η² written as loops over gates, classes and images (the formula, term by term)."""
    b, d = gates.shape
    values = []
    for j in range(d):
        column = [float(gates[i, j]) for i in range(b)]
        mean = sum(column) / b
        total = sum((v - mean) ** 2 for v in column)
        if total <= 1e-12 * b:
            continue
        between = 0.0
        for k in set(int(v) for v in labels):
            members = [column[i] for i in range(b) if int(labels[i]) == k]
            between += len(members) * (sum(members) / len(members) - mean) ** 2
        values.append(between / total)
    return sum(values) / len(values) if values else 0.0


def test_a_loop_from_the_formula_and_the_library_agree_with_the_reference_and_pass():
    assert check_eta_squared(eta_loop, verbose=False).passed
    gates = torch.rand(30, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(30) % 3
    assert abs(check_eta_squared.reference(gates, labels)
               - class_selectivity(gates, labels).value) < 1e-12   # the lesson's metric


def test_unweighted_class_means_and_a_variance_total_are_named():
    def unweighted(gates, labels):
        g = gates.double()
        centred = g - g.mean(0)
        between = sum(centred[labels == k].mean(0) ** 2 for k in labels.unique())
        total = (centred ** 2).sum(0)
        keep = total > 0
        return (between[keep] / total[keep]).mean().item() if keep.any() else 0.0

    def variance_total(gates, labels):
        g = gates.double()
        between = sum((labels == k).sum() * (g[labels == k].mean(0) - g.mean(0)) ** 2
                      for k in labels.unique())
        total = g.var(0, unbiased=False)
        keep = total > 0
        return (between[keep] / total[keep]).mean().item() if keep.any() else 0.0

    assert check_eta_squared(unweighted, verbose=False).diagnoses == [
        "the class sizes n_k are left out of the between-class sum"]
    assert check_eta_squared(variance_total, verbose=False).diagnoses == [
        "the total is a variance (divided by B) while the between-class sum is not"]


def test_constant_gates_counted_as_zero_and_eta_not_squared_are_named():
    def zero_for_constant(gates, labels):
        g = gates.double()
        centred = g - g.mean(0)
        between = sum((labels == k).sum() * centred[labels == k].mean(0) ** 2
                      for k in labels.unique())
        total = (centred ** 2).sum(0)
        return torch.nan_to_num(between / total).mean().item()

    assert check_eta_squared(zero_for_constant, verbose=False).diagnoses == [
        "a gate that never varies is counted as η² = 0 instead of left out"]
    assert check_eta_squared(lambda g, l: eta_loop(g, l) ** 0.5, verbose=False).diagnoses == [
        "the correlation ratio η, not η² (a square root taken)"]


# ------------------------------------------------------------------ fixed_map_scores (predict)
def _score(w, m):
    return sum(a * b for a, b in zip(w, m)) / sum(w)


def _chance(masks):
    return sum(sum(row) / len(row) for row in masks) / len(masks)


def by_rolls(masks, weights, rolls=None):
    n = len(masks)
    shifts = rolls(n) if rolls else range(1, min(8, n - 1) + 1)
    value = sum(_score(w, m) for w, m in zip(weights, masks)) / n
    null = sum(_score(weights[b], masks[(b - k) % n]) for k in shifts for b in range(n))
    return (value, _chance(masks), null / (n * len(shifts)))


def test_a_loop_over_rolls_passes_and_a_map_the_same_in_every_image_scores_its_null():
    assert check_fixed_map_scores(by_rolls, verbose=False).passed
    # one map for every image: each roll only reorders the images, so the null is the value
    value, _, null = check_fixed_map_scores.reference([[1, 0, 0], [0, 1, 1]], [[2, 1, 0]] * 2)
    assert value == null == (2 / 3 + 1 / 3) / 2


def test_no_cap_on_the_rolls_and_rolls_from_zero_are_named():
    uncapped = check_fixed_map_scores(lambda m, w: by_rolls(m, w, lambda n: range(1, n)),
                                      verbose=False)
    from_zero = check_fixed_map_scores(lambda m, w: by_rolls(m, w, lambda n: range(min(8, n - 1))),
                                       verbose=False)
    assert uncapped.diagnoses == [
        "no cap on the rolls (k = 1 … n − 1; the null rolls by at most 8 images)"]
    assert from_zero.diagnoses == [
        "the rolls start at k = 0 (each image's own mask counted in the null)"]


def test_a_null_that_ignores_the_maps_is_caught_on_hidden_cases_too():
    def fixed_map_thinking(masks, weights):               # "the null of a map is its value"
        value, chance, _ = by_rolls(masks, weights)
        return (value, chance, value)

    result = check_fixed_map_scores(fixed_map_thinking, verbose=False)
    assert not result.passed
    assert any("hidden" in line for line in result.lines)


def test_null_taken_for_the_chance_level_and_chance_per_image_with_object_are_named():
    result = check_fixed_map_scores(lambda m, w: by_rolls(m, w)[:2] + (_chance(m),),
                                    verbose=False)
    assert result.diagnoses == ["the null is the chance level (the null scores each map "
                                "against other images' masks)"]

    def learner(masks, weights):
        value, _, null = by_rolls(masks, weights)
        return (value, sum(1 for row in masks if 1 in row) / len(masks), null)

    assert check_fixed_map_scores(learner, verbose=False).diagnoses == [
        "the chance level is the share of images that have an object, not the object's area share"]


def test_a_list_fails():
    as_list = check_fixed_map_scores(lambda m, w: list(by_rolls(m, w)), verbose=False)
    assert not as_list.passed and "tuple" in " ".join(as_list.lines)


# ------------------------------------------------------------------ make_gate (extend)
class OneByOne(nn.Module):
    """The lesson's gate (section 9) pasted unchanged: x * sigmoid(conv1x1(x))."""

    def __init__(self, channels):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)

    def attention_map(self, x):
        return torch.sigmoid(self.score(x))[:, 0]

    def forward(self, x):
        return x * torch.sigmoid(self.score(x))


class SEThenConv(nn.Module):
    """Another two-part design: an SE channel part (max pooled) and a 1×1-conv spatial part on x."""

    def __init__(self, channels):
        super().__init__()
        self.fc = nn.Linear(channels, channels)
        self.norm = nn.BatchNorm2d(channels)
        self.score = nn.Conv2d(channels, 1, 1)

    def channel_map(self, x):
        return torch.sigmoid(self.fc(reduce(x, "b c h w -> b c", "max")))

    def attention_map(self, x):
        return torch.sigmoid(self.score(self.norm(x)))[:, 0]

    def forward(self, x):
        return (x * rearrange(self.channel_map(x), "b c -> b c 1 1")
                * rearrange(self.attention_map(x), "b h w -> b 1 h w"))


def test_a_two_part_design_of_its_own_with_batch_norm_passes():
    assert check_make_gate(SEThenConv, verbose=False).passed                 # the class itself
    assert check_make_gate(lambda c: SEThenConv(c), verbose=False).passed


def test_the_lessons_one_conv_gate_pasted_unchanged_fails_for_its_missing_channel_part():
    result = check_make_gate(OneByOne, verbose=False)
    assert not result.passed and "channel_map: no such method" in " ".join(result.lines)


def test_a_channel_part_not_applied_and_a_detached_input_are_named():
    class Forgot(SEThenConv):
        def forward(self, x):
            return x * rearrange(self.attention_map(x), "b h w -> b 1 h w")

    class Detached(SEThenConv):
        def forward(self, x):
            return super().forward(x.detach())

    assert check_make_gate(Forgot, verbose=False).diagnoses == [
        "the channel part is computed but not applied in forward (x · spatial only)"]
    assert check_make_gate(Detached, verbose=False).diagnoses == ["no gradient reaches the input"]


def test_a_learned_channel_vector_and_a_batch_mean_are_named():
    class Vector(SEThenConv):
        def __init__(self, channels):
            super().__init__(channels)
            self.w = nn.Parameter(torch.zeros(channels))
            del self.fc

        def channel_map(self, x):
            return torch.sigmoid(self.w).repeat(x.shape[0], 1)

    class BatchCentred(SEThenConv):
        def attention_map(self, x):
            s = self.score(self.norm(x))
            return torch.sigmoid(s - s.mean())[:, 0]            # mean over the whole batch

    assert check_make_gate(Vector, verbose=False).diagnoses == [
        "the channel part is one learned vector, the same for every image (not computed from "
        "the input)"]
    assert check_make_gate(BatchCentred, verbose=False).diagnoses == [
        "in eval mode an image's output depends on the other images of the batch"]
