"""Lesson 09's exercises: learners' slips in their own words (the generic proofs over every
checker are in tests/test_checks.py and tests/test_checks_whole_answer.py)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from attn_tutorial.checks import check_fixed_map_scores, check_make_gate


# ------------------------------------------------------------------ fixed_map_scores (predict)
def _value(masks, weights):
    return sum(sum(w * m for w, m in zip(weights, row)) / sum(weights) for row in masks) / len(masks)


def _chance(masks):
    return sum(sum(row) / len(row) for row in masks) / len(masks)


def test_the_null_of_a_fixed_map_is_its_value_and_a_loop_over_rolls_agrees():
    def by_rolls(masks, weights):
        n = len(masks)
        shifts = range(1, min(8, n - 1) + 1)
        null = sum(_value([masks[(b - k) % n] for b in range(n)], weights) for k in shifts)
        return (_value(masks, weights), _chance(masks), null / len(shifts))

    assert check_fixed_map_scores(by_rolls, verbose=False).passed
    assert check_fixed_map_scores(lambda m, w: (_value(m, w), _chance(m), _value(m, w)),
                                  verbose=False).passed
    # the example the lesson's prose makes: a uniform map scores its chance, and so its null
    assert check_fixed_map_scores.reference([[1, 0], [1, 1]], [1, 1]) == (0.75, 0.75, 0.75)


def test_null_taken_for_the_chance_level_is_named():
    result = check_fixed_map_scores(lambda m, w: (_value(m, w), _chance(m), _chance(m)),
                                    verbose=False)
    assert result.diagnoses == ["the null is the chance level (the null scores the same map "
                                "against other images' masks)"]


def test_chance_as_the_share_of_images_with_an_object_is_named():
    def learner(masks, weights):
        value = _value(masks, weights)
        return (value, sum(1 for row in masks if 1 in row) / len(masks), value)

    assert check_fixed_map_scores(learner, verbose=False).diagnoses == [
        "the chance level is the share of images that have an object, not the object's area share"]


def test_integer_division_and_a_list_fail():
    floor = lambda m, w: (sum(sum(a * b for a, b in zip(w, r)) // sum(w) for r in m) / len(m),  # noqa: E731
                          _chance(m), _value(m, w))
    assert not check_fixed_map_scores(floor, verbose=False).passed
    as_list = check_fixed_map_scores(lambda m, w: [_value(m, w), _chance(m), _value(m, w)],
                                     verbose=False)
    assert not as_list.passed and "tuple" in " ".join(as_list.lines)


# ------------------------------------------------------------------ make_gate (extend)
class OneByOne(nn.Module):
    """The lesson's gate, written again: x * sigmoid(conv1x1(x))."""

    def __init__(self, channels):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)

    def attention_map(self, x):
        return torch.sigmoid(self.score(x))[:, 0]

    def forward(self, x):
        return x * torch.sigmoid(self.score(x))


class WithBatchNorm(OneByOne):
    """Batch statistics in train mode are fine; eval mode uses the running ones."""

    def __init__(self, channels):
        super().__init__(channels)
        self.norm = nn.BatchNorm2d(1)

    def attention_map(self, x):
        return torch.sigmoid(self.norm(self.score(x)))[:, 0]

    def forward(self, x):
        return x * rearrange(self.attention_map(x), "b h w -> b 1 h w")


def test_a_class_or_a_factory_with_batch_norm_passes():
    assert check_make_gate(OneByOne, verbose=False).passed                 # the class itself
    assert check_make_gate(lambda c: WithBatchNorm(c), verbose=False).passed


def test_a_detached_input_and_a_batch_mean_are_named():
    class Detached(OneByOne):
        def forward(self, x):
            x = x.detach()
            return x * torch.sigmoid(self.score(x))

    class InstanceCentred(OneByOne):
        def attention_map(self, x):
            s = self.score(x)
            return torch.sigmoid(s - s.mean())[:, 0]            # mean over the whole batch

        def forward(self, x):
            return x * rearrange(self.attention_map(x), "b h w -> b 1 h w")

    assert check_make_gate(Detached, verbose=False).diagnoses == ["no gradient reaches the input"]
    assert check_make_gate(InstanceCentred, verbose=False).diagnoses == [
        "in eval mode an image's output depends on the other images of the batch"]


def test_a_gate_for_a_fixed_channel_count_or_without_a_map_fails_with_what_happened():
    class Sixteen(OneByOne):
        def __init__(self, channels):
            super().__init__(16)

    fixed = check_make_gate(Sixteen, verbose=False)
    assert not fixed.passed and "RuntimeError" in " ".join(fixed.lines)

    class NoMap(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.score = nn.Conv2d(channels, 1, 1)

        def forward(self, x):
            return x * torch.sigmoid(self.score(x))

    missing = check_make_gate(NoMap, verbose=False)
    assert not missing.passed and "attention_map: no such method" in " ".join(missing.lines)
