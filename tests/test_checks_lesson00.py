"""Lesson 00 checkers: lesson-specific facts (cases, reference meanings). The generic proofs
(solution passes, each mistake named, broken code reported) run over every checker in
tests/test_checks.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

from _learner import assert_mistake_named

from attn_tutorial.checks import CHECKERS, lesson00

NAMES = lesson00.__all__


@pytest.mark.parametrize("name", [n for n in NAMES if n != "check_patches_shape"])
def test_checker_has_odd_nonsquare_batch1_float64_cases(name):
    checker = CHECKERS[name]
    assert len(checker.cases) >= 3
    tensors = [[a for a in case.inputs() if isinstance(a, torch.Tensor)] for case in checker.cases]
    assert all(t.dtype == torch.float64 for ts in tensors for t in ts)
    assert any(ts[0].shape[0] == 1 for ts in tensors), "no batch-1 case"
    assert any(ts[0].shape[0] > 1 for ts in tensors)
    assert any(any(s % 2 for s in ts[0].shape[1:]) for ts in tensors), "no odd size"
    if name in ("check_to_tokens", "check_global_avg_pool", "check_dilated_conv_by_phases"):
        assert any(ts[0].shape[-1] != ts[0].shape[-2] for ts in tensors), "no non-square map"


def test_reference_phase_route_equals_dilated_conv():
    for case in lesson00.check_dilated_conv_by_phases.cases:
        x, w, d = case.inputs()
        assert torch.allclose(lesson00.ref_dilated_conv_by_phases(x, w, d),
                              F.conv2d(x, w, padding=d, dilation=d))


def test_reference_meanings():
    """The references mean what their docstrings say, checked against plain torch ops."""
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    cls = torch.randn(3, dtype=torch.float64)
    t = lesson00.ref_to_tokens(x, cls)
    assert t.shape == (2, 1 + 35, 3)
    assert torch.equal(t[:, 0], cls.expand(2, 3))                 # the class token first
    assert torch.equal(t[1, 1 + 2 * 7 + 4], x[1, :, 2, 4])        # row-major: 1 + h·W + w
    assert torch.equal(lesson00.ref_from_tokens(t, 5, 7), x)
    assert torch.allclose(lesson00.ref_global_avg_pool(x), x.mean(dim=(2, 3)))
    m = torch.randn(2, 12, 3, 4, dtype=torch.float64)
    heads = lesson00.ref_split_heads(m, 3)
    assert heads.shape == (2, 3, 12, 4)
    assert torch.equal(heads[:, 1, 2 * 4 + 1], m[:, 4:8, 2, 1])   # head 1: channels 4..7
    q, k = torch.randn(2, 4, 15, dtype=torch.float64), torch.randn(2, 6, 15, dtype=torch.float64)
    a = lesson00.ref_attention_scores(q, k, 3, 0.5)
    qh, kh = q.view(2, 4, 3, 5).transpose(1, 2), k.view(2, 6, 3, 5).transpose(1, 2)
    assert a.shape == (2, 3, 4, 6)
    assert torch.allclose(a, torch.softmax(qh @ kh.transpose(-1, -2) * 0.5, dim=-1))


@pytest.mark.parametrize("name", NAMES)
def test_each_checker_catalogues_three_or_more_mistakes(name):
    assert len(CHECKERS[name].mistakes) >= 3


def learner_scores_sqrt_d(q, k, heads, scale):
    """Ignores ``scale`` and divides by sqrt(d), as most tutorials do."""
    b, n, c = q.shape
    qh = q.view(b, n, heads, -1).transpose(1, 2)
    kh = k.view(b, k.shape[1], heads, -1).transpose(1, 2)
    return torch.softmax(qh @ kh.transpose(-1, -2) / math.sqrt(c // heads), dim=-1)


def learner_scores_over_queries(q, k, heads, scale):
    b, n, c = q.shape
    qh = q.view(b, n, heads, -1).transpose(1, 2)
    kh = k.view(b, k.shape[1], heads, -1).transpose(1, 2)
    return torch.softmax(qh @ kh.transpose(-1, -2) * scale, dim=2)


def learner_scores_heads_interleaved(q, k, heads, scale):
    """Splits the channels with heads as the fast factor: head i gets channels i, i + heads, …"""
    qh = torch.stack([q[..., i::heads] for i in range(heads)], dim=1)
    kh = torch.stack([k[..., i::heads] for i in range(heads)], dim=1)
    return torch.softmax(qh @ kh.transpose(-1, -2) * scale, dim=-1)


def learner_pool_keepdim(x):
    return x.mean(dim=(2, 3), keepdim=True)


def learner_tokens_cls_last(x, cls):
    pixels = x.flatten(2).transpose(1, 2)
    return torch.cat([pixels, cls.expand(x.shape[0], 1, -1)], dim=1)


def learner_from_tokens_drops_last(t, h, w):
    return t[:, :h * w].transpose(1, 2).reshape(t.shape[0], -1, h, w)


def learner_phases_padded_at_the_top(x, weight, d):
    b, c, h, w = x.shape
    x = F.pad(x, ((-w) % d, 0, (-h) % d, 0))
    H, W = x.shape[-2:]
    phases = (x.view(b, c, H // d, d, W // d, d).permute(0, 3, 5, 1, 2, 4)
              .reshape(b * d * d, c, H // d, W // d))
    y = F.conv2d(phases, weight, padding=1)
    y = y.view(b, d, d, -1, H // d, W // d).permute(0, 3, 4, 1, 5, 2).reshape(b, -1, H, W)
    return y[:, :, :h, :w]


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_attention_scores", learner_scores_sqrt_d, "used d ** -0.5 instead of the scale"),
    ("check_attention_scores", learner_scores_over_queries, "softmax over the query axis"),
    ("check_attention_scores", learner_scores_heads_interleaved, "heads as the fast factor"),
    ("check_global_avg_pool", learner_pool_keepdim, "kept the spatial axes"),
    ("check_to_tokens", learner_tokens_cls_last, "class token appended after the pixels"),
    ("check_from_tokens", learner_from_tokens_drops_last, "dropped the last token"),
    ("check_dilated_conv_by_phases", learner_phases_padded_at_the_top, "top and left"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


def learner_tokens_correct(x, cls):
    return torch.cat([cls.expand(x.shape[0], 1, -1), x.flatten(2).transpose(1, 2)], dim=1)


def learner_from_tokens_correct(t, h, w):
    return t[:, 1:].transpose(1, 2).reshape(t.shape[0], -1, h, w)


def learner_split_heads_correct(x, heads):
    b, c, h, w = x.shape
    return x.reshape(b, heads, c // heads, h * w).transpose(2, 3)


def learner_phases_correct_with_a_loop(x, weight, d):
    b, c, h, w = x.shape
    x = F.pad(x, (0, (-w) % d, 0, (-h) % d))
    out = torch.zeros(b, weight.shape[0], x.shape[2], x.shape[3], dtype=x.dtype)
    for i in range(d):
        for j in range(d):
            out[:, :, i::d, j::d] = F.conv2d(x[:, :, i::d, j::d], weight, padding=1)
    return out[:, :, :h, :w]


def learner_phases_padded_at_the_top_cropped_right(x, weight, d):
    """Zeros at the top and left are fine when the crop keeps the last H×W."""
    b, c, h, w = x.shape
    x = F.pad(x, ((-w) % d, 0, (-h) % d, 0))
    out = torch.zeros(b, weight.shape[0], x.shape[2], x.shape[3], dtype=x.dtype)
    for i in range(d):
        for j in range(d):
            out[:, :, i::d, j::d] = F.conv2d(x[:, :, i::d, j::d], weight, padding=1)
    return out[:, :, -h:, -w:]


@pytest.mark.parametrize("name,learner", [
    ("check_dilated_conv_by_phases", learner_phases_padded_at_the_top_cropped_right),
    ("check_to_tokens", learner_tokens_correct),
    ("check_from_tokens", learner_from_tokens_correct),
    ("check_split_heads", learner_split_heads_correct),
    ("check_dilated_conv_by_phases", learner_phases_correct_with_a_loop),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_no_case_uses_the_usual_scale():
    for case in CHECKERS["check_attention_scores"].cases:
        q, k, heads, scale = case.inputs()
        assert not math.isclose(scale, (q.shape[-1] // heads) ** -0.5) and scale != 1


def test_dilated_cases_include_sizes_that_are_not_multiples_of_d():
    rests = set()
    for case in CHECKERS["check_dilated_conv_by_phases"].cases:
        x, _, d = case.inputs()
        rests |= {x.shape[2] % d, x.shape[3] % d}
    assert {0, 1, 2} <= rests


# ------------------------------------------------- boundaries and slips of the new engine
def test_a_softmax_without_the_max_overflows_on_large_scores():
    """exp(s) / Σ exp(s) is right until the scores pass e^709: only the scale-300 case fails,
    with NaN."""
    from _learner import assert_fails_only_on

    def attention_scores(q, k, heads, scale):
        qh = rearrange(q, "b n (h d) -> b h n d", h=heads)
        kh = rearrange(k, "b m (h d) -> b h m d", h=heads)
        e = torch.exp(torch.einsum("bhid,bhjd->bhij", qh, kh) * scale)
        return e / e.sum(dim=-1, keepdim=True)

    lines = assert_fails_only_on("check_attention_scores", attention_scores, ["scale=300"])
    assert "NaN or inf" in lines[-2], lines


def test_a_stable_softmax_with_the_sign_flipped_is_named():
    def attention_scores(q, k, heads, scale):
        qh = rearrange(q, "b n (h d) -> b h n d", h=heads)
        kh = rearrange(k, "b m (h d) -> b h m d", h=heads)
        s = torch.einsum("bhid,bhjd->bhij", qh, kh) * scale
        return torch.softmax(s.amax(dim=-1, keepdim=True) - s, dim=-1)

    assert_mistake_named("check_attention_scores", attention_scores, "softmax(−scores)")


def test_a_pool_that_takes_the_first_pixel_of_a_single_row_fails_on_that_boundary():
    from _learner import assert_fails_only_on

    def global_avg_pool(x):  # "one row: nothing to average" (wrong: the row has W pixels)
        return x.mean(dim=(2, 3)) if x.shape[2] > 1 else x[:, :, 0, 0]

    assert_fails_only_on("check_global_avg_pool", global_avg_pool, ["one row"])


def test_a_split_heads_that_assumes_several_heads_fails_at_one_head():
    from _learner import assert_fails_only_on

    def split_heads(x, heads):
        out = rearrange(x, "b (heads d) h w -> b heads (h w) d", heads=heads)
        return out.squeeze(1) if heads == 1 else out

    assert_fails_only_on("check_split_heads", split_heads, ["heads=1"])


# ------------------------------------------------- 7, 8: patch shapes (predict), overlapping
def test_patches_shape_cases_cover_the_boundaries():
    sizes = [case.inputs() for case in CHECKERS["check_patches_shape"].cases]
    assert 15 <= len(sizes) <= 40
    assert all(isinstance(v, int) for size in sizes for v in size)
    remainders = {(h - p) % s for _, _, h, _, p, s in sizes}
    assert {0, 1, 2} <= remainders
    assert any(p == s == 1 for *_, p, s in sizes)
    assert any(p == h == w for _, _, h, w, p, _ in sizes)            # a single patch
    assert any(s > p for *_, p, s in sizes) and any(s < p for *_, p, s in sizes)
    assert any(b == 1 for b, *_ in sizes) and any(c == 1 for _, c, *_ in sizes)
    assert all(1 <= p <= min(h, w) and s >= 1 for _, _, h, w, p, s in sizes)


def test_patches_shape_reference_is_the_shape_f_unfold_gives():
    """F.unfold (torch's im2col, B×(C·p·p)×L) counts the same patches (on one image of one
    channel for L, a p×p one of C channels for the features)."""
    for case in CHECKERS["check_patches_shape"].cases:
        b, c, h, w, p, s = case.inputs()
        tokens = F.unfold(torch.zeros(1, 1, h, w), p, stride=s).shape[2]
        features = F.unfold(torch.zeros(1, c, p, p), p).shape[1]
        assert lesson00.ref_patches_shape(b, c, h, w, p, s) == (b, tokens, features)


def test_overlapping_patches_reference_meaning():
    """Feature (i·p + j)·C + c of token r·nw + q is x[b, c, r·s + i, q·s + j], by a loop."""
    x = torch.randn(2, 3, 7, 8, dtype=torch.float64)
    p, s = 3, 2
    out = lesson00.ref_overlapping_patches(x, p, s)
    nh, nw = (7 - p) // s + 1, (8 - p) // s + 1
    assert out.shape == (2, nh * nw, p * p * 3)
    for r in range(nh):
        for q in range(nw):
            for i in range(p):
                for j in range(p):
                    assert torch.equal(out[:, r * nw + q, (i * p + j) * 3:(i * p + j + 1) * 3],
                                       x[:, :, r * s + i, q * s + j])


def learner_patches_by_f_unfold(x, p, s):
    return F.unfold(x, kernel_size=p, stride=s).transpose(1, 2)


def learner_patches_by_loop(x, p, s):
    b, c, h, w = x.shape
    tokens = [x[:, :, i:i + p, j:j + p].permute(0, 2, 3, 1).reshape(b, -1)
              for i in range(0, h - p + 1, s) for j in range(0, w - p + 1, s)]
    return torch.stack(tokens, dim=1)


def learner_patches_from_f_unfold_reordered(x, p, s):
    cols = F.unfold(x, kernel_size=p, stride=s)                 # b (c p1 p2) l
    return cols.view(x.shape[0], x.shape[1], p * p, -1).permute(0, 3, 2, 1).flatten(2)


def learner_shape_ceil(b, c, h, w, p, s):
    return (b, math.ceil((h - p) / s + 1) * math.ceil((w - p) / s + 1), p * p * c)


def learner_shape_by_range(b, c, h, w, p, s):
    return (b, len(range(0, h - p + 1, s)) * len(range(0, w - p + 1, s)), c * p ** 2)


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_overlapping_patches", learner_patches_by_f_unfold, "F.unfold's order (c p1 p2)"),
    ("check_patches_shape", learner_shape_ceil, "counted a last, partial patch"),
])
def test_a_learners_own_patch_slip_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


@pytest.mark.parametrize("name,learner", [
    ("check_overlapping_patches", learner_patches_by_loop),
    ("check_overlapping_patches", learner_patches_from_f_unfold_reordered),
    ("check_patches_shape", learner_shape_by_range),
])
def test_a_learners_own_correct_patch_answer_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_a_patches_shape_with_floats_is_reported_by_type(capsys):
    def patches_shape(b, c, h, w, p, s):
        return (b, ((h - p) / s + 1) * ((w - p) / s + 1), p * p * c)

    assert not CHECKERS["check_patches_shape"](patches_shape).passed
    assert "(a float)" in capsys.readouterr().out


# ------------------------------------------------- "without dilation=": read from the code
def test_an_answer_that_uses_dilation_is_refused_before_it_runs(capsys):
    """The outputs cannot tell F.conv2d(..., dilation=d) from the phases, so the code is read:
    a keyword, an nn.Conv2d built with it, an attribute set afterwards, a helper that uses it."""
    def by_keyword(x, weight, d):
        return F.conv2d(x, weight, padding=d, dilation=d)

    def by_layer(x, weight, d):
        conv = torch.nn.Conv2d(x.shape[1], weight.shape[0], 3, padding=d, dilation=d,
                               bias=False, dtype=x.dtype)
        with torch.no_grad():
            conv.weight.copy_(weight)
        return conv(x)

    def by_attribute(x, weight, d):
        conv = torch.nn.Conv2d(x.shape[1], weight.shape[0], 3, padding=d, bias=False)
        conv.dilation = (d, d)
        return F.conv2d(x, weight, None, 1, d, conv.dilation)

    def by_helper(x, weight, d):
        return _dilated_helper(x, weight, d)

    for learner in (by_keyword, by_layer, by_attribute, by_helper):
        result = CHECKERS["check_dilated_conv_by_phases"](learner)
        out = capsys.readouterr().out
        assert not result.passed and "uses `dilation`" in out, (learner.__name__, out)
        assert out.count("\n") == 1  # one line, no case run


def _dilated_helper(x, weight, d):
    return F.conv2d(x, weight, padding=d, dilation=d)


def test_a_phase_answer_with_a_variable_named_dilated_passes():
    """Only the name ``dilation`` is refused: ``dilated``, ``d`` or a comment are fine."""
    def dilated_conv_by_phases(x, weight, d):
        dilated = d  # the dilation, by phases
        b, _, h, w = x.shape
        x = F.pad(x, (0, (-w) % dilated, 0, (-h) % dilated))
        out = torch.zeros(b, weight.shape[0], x.shape[2], x.shape[3], dtype=x.dtype)
        for i in range(dilated):
            for j in range(dilated):
                out[:, :, i::dilated, j::dilated] = F.conv2d(x[:, :, i::dilated, j::dilated],
                                                             weight, padding=1)
        return out[:, :, :h, :w]

    assert CHECKERS["check_dilated_conv_by_phases"](dilated_conv_by_phases, verbose=False).passed


def test_zeros_split_between_both_sides_with_the_matching_crop_pass():
    """The statement says the zeros may go anywhere with the matching crop: half on each side."""
    def dilated_conv_by_phases(x, weight, d):
        b, _, h, w = x.shape
        ph, pw = (-h) % d, (-w) % d
        top, left = ph // 2, pw // 2
        x = F.pad(x, (left, pw - left, top, ph - top))
        phases = rearrange(x, "b c (h dh) (w dw) -> (b dh dw) c h w", dh=d, dw=d)
        y = F.conv2d(phases, weight, padding=1)
        y = rearrange(y, "(b dh dw) c h w -> b c (h dh) (w dw)", b=b, dh=d, dw=d)
        return y[:, :, top:top + h, left:left + w]

    assert CHECKERS["check_dilated_conv_by_phases"](dilated_conv_by_phases, verbose=False).passed


def test_patches_shape_has_hidden_legal_cases():
    hidden = [case.inputs() for case in CHECKERS["check_patches_shape"].cases if case.hidden]
    assert 4 <= len(hidden) <= 6
    for b, c, h, w, p, s in hidden:
        assert b >= 1 and c >= 1 and 1 <= p <= min(h, w) and s >= 1
    assert any((h - p) % s >= 2 for _, _, h, _, p, s in hidden)


def test_a_lookup_table_of_the_shown_cases_fails_on_the_hidden_ones():
    checker = CHECKERS["check_patches_shape"]
    table = {case.inputs(): lesson00.ref_patches_shape(*case.inputs())
             for case in checker.cases if not case.hidden}

    def patches_shape(b, c, h, w, p, s):
        return table.get((b, c, h, w, p, s), (b, 1, p * p * c))

    result = checker.run(patches_shape, verbose=False)
    assert not result.passed and result.checks_passed == len(table)
