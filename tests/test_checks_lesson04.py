"""Lesson 04 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, the references mean what they say (checked against F.interpolate, autograd, loops and the
library's SCConv). The generic proofs run over every checker in tests/test_checks.py."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _learner import assert_catalogued, assert_fails_only_on, assert_mistake_named

from attn_tutorial.checks import CHECKERS, NOT_IMPLEMENTED, lesson04
from attn_tutorial.registry import SCSplitConv
from attn_tutorial.scconv import SCConv

NAMES = lesson04.__all__

# The mistakes issues 16 and 30 ask the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_nearest_rows": ["exact integer arithmetic", "half-pixel centres", "rounded",
                           "repeated out // in times", "the ceiling", "the other way round"],
    "check_gate_rows": ["integer rule", "identity left out", "3×3 window left out",
                        "listed twice", "h // r"],
    "check_calibration_gate": ["σ(up) without the identity", "repeated r times",
                               "partial last window kept", "adaptive pooling",
                               "in integers instead of PyTorch's float32 rule"],
    "check_sc_split_conv": ["σ(up) without the identity", "bilinear instead of nearest",
                            "the stride on K3 instead of K4", "gating the wrong path",
                            "the halves swapped", "in integers instead of PyTorch's float32 rule",
                            "K2's BatchNorm left out"],
    "check_calibration_gate_bilinear": ["nearest instead of bilinear", "align_corners=True",
                                        "not clamped at 0"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_the_tiers():
    tiers = {name: CHECKERS[name].tier for name in NAMES}
    assert set(tiers.values()) == {"build", "predict", "extend"}, tiers


# ------------------------------------------------------------------ the references
def _read(out_size, in_size, dtype, dims):
    column = torch.arange(in_size, dtype=dtype)
    if dims == 1:
        return F.interpolate(column.view(1, 1, in_size), size=out_size).flatten().long().tolist()
    return F.interpolate(column.view(1, 1, in_size, 1), size=(out_size, 1),
                         mode="nearest").flatten().long().tolist()


def test_nearest_rows_reference_is_what_pytorch_reads_on_float32():
    # every size pair up to 40 -> 120, 1-D and 2-D: the float32 rule is F.interpolate's
    for in_size in range(1, 41):
        for out_size in range(in_size, 121):
            rows = lesson04.ref_nearest_rows(out_size, in_size)
            assert rows == _read(out_size, in_size, torch.float32, 2), (out_size, in_size)
            if in_size <= 12:
                assert rows == _read(out_size, in_size, torch.float32, 1), (out_size, in_size)
    assert all(type(v) is int for v in lesson04.ref_nearest_rows(74, 24))
    # the lesson's worked example, by hand from ⌊d·2/9⌋
    assert lesson04.ref_nearest_rows(9, 2) == [0, 0, 0, 0, 0, 1, 1, 1, 1]


def test_the_boundary_cases_are_where_the_rules_differ():
    ref = lesson04.ref_nearest_rows
    # 24 -> 74: d = 37 reads 11 in float32, 12 = 37·24/74 in integers (issue 30's example)
    assert ref(74, 24)[37] == 11 and 37 * 24 // 74 == 12
    assert ref(82, 2)[41] == 0 and 41 * 2 // 82 == 1
    # float64 reads below the integers at 49·2/98 = 1 and 22·30/44 = 15; float32 does not
    assert math.floor(49 * (2 / 98)) == 0 and ref(98, 2)[49] == 1
    assert math.floor(22 * (30 / 44)) == 14 and ref(44, 30)[22] == 15
    # round() is half to even: d = 2 of 8 rows from 2 sits at 0.5
    assert round(2 * 2 / 8) == 0 and math.floor(2 * 2 / 8 + 0.5) == 1
    names = {c.name for c in lesson04.check_nearest_rows.cases}
    assert {"24 rows up-sampled to 74", "2 rows up-sampled to 8", "1 rows up-sampled to 1"} <= names


def _rows_from_autograd(H, r, h):
    torch.manual_seed(0)
    sc = SCConv(2, pooling_r=r).eval()                      # float32: F.interpolate's float32 rule
    x = torch.randn(1, 2, H, r, requires_grad=True)
    sc.attention_map(x)[0, :, h].sum().backward()
    return (x.grad[0].abs().sum((0, 2)) > 0).nonzero().flatten().tolist()


def test_gate_rows_reference_is_what_autograd_finds_on_every_case():
    for case in lesson04.check_gate_rows.cases:
        H, r, h = case.inputs()
        if H > 10_000:  # the tall hidden maps: their pooled row is checked below
            continue
        assert lesson04.ref_gate_rows(H, r, h) == _rows_from_autograd(H, r, h), case.name
    # the lesson's receptive field: K4 reads rows 13-15 (one cell) -> 8..19, so the gate there
    assert lesson04.ref_gate_rows(28, 4, 14) == list(range(8, 20))


def test_the_tall_hidden_maps_read_the_row_f_interpolate_reads():
    tall = [c.inputs() for c in lesson04.check_gate_rows.cases if c.inputs()[0] > 10_000]
    assert len(tall) == 2 and all(10**6 <= H < 2**24 for H, _, _ in tall)
    for H, r, h in tall:
        i = H // r
        column = torch.arange(i, dtype=torch.float32).view(1, 1, i, 1)   # exact below 2**24
        read = int(F.interpolate(column, size=(H, 1))[0, 0, h, 0])
        assert lesson04.source_row(h, H, i) == read
        assert lesson04.ref_gate_rows(H, r, h) == sorted(
            {h} | {row for p in (read - 1, read, read + 1) if 0 <= p < i
                   for row in range(p * r, p * r + r)})


def test_gate_rows_has_hidden_cases_over_the_domain():
    hidden = [c.inputs() for c in lesson04.check_gate_rows.cases if c.hidden]
    assert 4 <= len(hidden) <= 6
    assert all(r >= 1 and H >= r and 0 <= h < H for H, r, h in hidden)
    assert any(H % r >= 2 for H, r, _ in hidden) and any(r >= 2 and H <= 120 for H, r, _ in hidden)


def test_gate_rows_runs_with_gradients_off():
    # an autograd probe (the gate's gradient, as section 7 measures a field) gets no gradients
    seen = []

    def recorder(H, r, h):
        seen.append(torch.is_grad_enabled())
        return [h]

    _run("check_gate_rows", recorder)
    assert len(seen) == len(lesson04.check_gate_rows.cases) and not any(seen)

    def one_probe(H, r, h):                                  # on the first case: 1 row, r = 1
        x = torch.zeros(1, 1, H, r, requires_grad=True)
        t = F.conv2d(F.avg_pool2d(x, r), torch.ones(1, 1, 3, 3), padding=1)
        torch.sigmoid(x + F.interpolate(t, size=(H, r)))[0, 0, h].sum().backward()
        return (x.grad[0, 0].abs().sum(1) > 0).nonzero().flatten().tolist()

    with pytest.raises(RuntimeError, match="does not require grad"):
        lesson04.check_gate_rows.evaluate(one_probe, lesson04.check_gate_rows.cases[0], (1, 1, 0))


def test_gate_rows_cases_cover_the_domain():
    configs = [c.inputs() for c in lesson04.check_gate_rows.cases]
    assert 15 <= len(configs) <= 40
    assert (1, 1, 0) in configs                              # the smallest
    assert any(H // r == 1 for H, r, _ in configs)           # one pooled row
    assert {H % r for H, r, _ in configs} >= {0, 1, 2, 3}    # remainders
    assert any(h >= (H // r) * r for H, r, h in configs)     # a row the pooling drops
    assert (74, 3, 37) in configs                            # the float32 boundary


def test_gate_cases_cover_non_divisible_batch1_two_rates_and_float32():
    shapes, rates, dtypes = [], set(), set()
    for case in lesson04.check_calibration_gate.cases:
        x, w, r = case.inputs()
        assert x.dtype == w.dtype and w.shape == (x.shape[1], x.shape[1], 3, 3)
        shapes.append((tuple(x.shape), r))
        rates.add(r)
        dtypes.add(x.dtype)
    assert any(s[2] % r and s[3] % r for s, r in shapes)
    assert any(s[0] == 1 for s, _ in shapes) and len(rates) >= 2
    assert dtypes == {torch.float64, torch.float32}


def _float64_sizes():
    for checker in ("check_calibration_gate", "check_sc_split_conv"):
        for case in CHECKERS[checker].cases:
            x = case.inputs()[0]
            if x.dtype != torch.float64:
                continue
            r = case.inputs()[2] if len(case.inputs()) > 2 else case.build.get("pooling_r", 4)
            yield from ((n, n // r) for n in x.shape[-2:])


def test_the_float64_cases_keep_off_the_boundary_sizes():
    # there F.interpolate on float64 may compute the index in double: every rule must agree
    sizes = set(_float64_sizes())
    assert len(sizes) >= 8
    for out_size, in_size in sizes:
        rows = lesson04.ref_nearest_rows(out_size, in_size)
        assert rows == [d * in_size // out_size for d in range(out_size)], (out_size, in_size)
        assert rows == [math.floor(d * (in_size / out_size)) for d in range(out_size)]
        assert rows == _read(out_size, in_size, torch.float64, 2) == \
            _read(out_size, in_size, torch.float64, 1)


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


def test_the_float32_gate_case_separates_the_integer_rule():
    x, w, r = lesson04._FLOAT32_GATE.inputs()
    right = lesson04.ref_calibration_gate(x, w, r)
    integer = lesson04.ref_calibration_gate(x, w, r, upsample="integer")
    diff = (right - integer).abs()
    assert diff.max() > 0.05
    off_column = diff[..., torch.arange(74) != 37]          # away from column 37: row 37 only
    assert torch.equal(off_column.amax((0, 1, 3)) > 0, torch.arange(74) == 37)


def _split_from_library(ref, stride, r, groups=1, dilation=1):
    """The paper's split conv written from the library's SCConv and a K1 conv + BN."""
    half = ref.k1_conv.in_channels
    sc = SCConv(half, stride=stride, padding=dilation, dilation=dilation, groups=groups,
                pooling_r=r).double().eval()
    sc.load_state_dict({k: v for k, v in ref.state_dict().items() if not k.startswith("k1")})
    k1 = nn.Sequential(nn.Conv2d(half, half, 3, stride, dilation, dilation, groups, bias=False),
                       nn.BatchNorm2d(half))
    k1.double().eval().load_state_dict({"0.weight": ref.k1_conv.weight,
                                        **{f"1.{k[6:]}": v for k, v in ref.state_dict().items()
                                           if k.startswith("k1_bn.")}})
    return lambda x: torch.cat([sc(x[:, :half]), k1(x[:, half:])], dim=1)


@pytest.mark.parametrize("case", range(3))
def test_split_reference_equals_the_library_scconv_and_a_k1(case):
    c = lesson04.check_sc_split_conv.cases[case]
    torch.manual_seed(c.seed)
    ref = lesson04.SCSplitReference(**c.build).double().eval()
    (x,) = c.inputs()
    library = _split_from_library(ref, c.build["stride"], c.build["pooling_r"],
                                  c.build["groups"], c.build["dilation"])
    assert torch.allclose(ref(x), library(x), atol=1e-12)
    assert not torch.allclose(ref.k3_bn.running_var, torch.ones_like(ref.k3_bn.running_var))


def test_the_codes_order_is_the_librarys_split_conv():
    torch.manual_seed(0)
    code = lesson04.SCSplitReference(4, pooling_r=2, order="code").double().eval()
    library = SCSplitConv(4, pooling_r=2).double().eval()
    names = {"k1_conv": "k1", "k1_bn": "k1_bn", "k2_conv": "sc.k2_conv", "k2_bn": "sc.k2_bn",
             "k3_conv": "sc.k3_conv", "k3_bn": "sc.k3_bn", "k4_conv": "sc.k4_conv", "k4_bn": "sc.k4_bn"}
    library.load_state_dict({names[k.rsplit(".", 1)[0]] + "." + k.rsplit(".", 1)[1]: v
                             for k, v in code.state_dict().items()})
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    assert torch.allclose(code(x), library(x), atol=1e-12)


def test_the_float32_module_case_separates_the_integer_rule():
    case = lesson04.check_sc_split_conv.cases[-1]
    (x,) = case.inputs()
    assert x.dtype == torch.float32 and x.shape[-2:] == (74, 74) and case.build["pooling_r"] == 3
    torch.manual_seed(case.seed)
    ref = lesson04.SCSplitReference(**case.build).eval()
    integer = lesson04.SCSplitReference(**case.build, upsample="integer").eval()
    integer.load_state_dict(ref.state_dict())
    with torch.no_grad():
        gap = (ref(x) - integer(x)).abs().max().item()
        same64 = torch.allclose(ref.double()(x.double()), integer.double()(x.double()))
    assert gap > 1e-3  # a hundred times float32's tolerance (1e-5 relative, 1e-6 absolute)
    assert same64      # in float64 at this size PyTorch's index equals the integer one


def test_bilinear_weights_are_f_interpolates():
    for out_size, in_size in [(9, 2), (13, 3), (7, 3), (5, 5), (4, 1), (11, 2)]:
        eye = torch.eye(in_size, dtype=torch.float64).view(1, 1, in_size, in_size)
        for mode, corners in (("half-pixel", False), ("corners", True)):
            torch_rows = F.interpolate(eye, size=(out_size, in_size), mode="bilinear",
                                       align_corners=corners)[0, 0]
            assert torch.allclose(lesson04.bilinear_weights(out_size, in_size, mode=mode),
                                  torch_rows, atol=1e-12)
    # by hand: 9 rows from 2, row 4 sits at (4.5)·2/9 − ½ = 0.5: half of each
    half = torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert torch.allclose(lesson04.bilinear_weights(9, 2)[4], half)
    assert lesson04.bilinear_weights(9, 2, clamp=False)[0, 1] < 0          # extrapolates


# ------------------------------------------------------- a learner's own wrong versions
def learner_rows_integer(out_size, in_size):
    return [d * in_size // out_size for d in range(out_size)]


def learner_rows_python_floats(out_size, in_size):
    return [math.floor(d * (in_size / out_size)) for d in range(out_size)]


def learner_rows_nearest_exact(out_size, in_size):
    return [int((d + 0.5) * in_size / out_size) for d in range(out_size)]


def learner_rows_round(out_size, in_size):
    s = np.float32(in_size) / np.float32(out_size)
    return [min(int(np.float32(d) * s + np.float32(0.5)), in_size - 1) for d in range(out_size)]


def learner_rows_repeat(out_size, in_size):
    r = out_size // in_size                                 # "the up-sampling factor"
    return [d // r for d in range(out_size)]


def learner_rows_ceil(out_size, in_size):
    s = np.float32(in_size) / np.float32(out_size)
    return [min(math.ceil(np.float32(d) * s), in_size - 1) for d in range(out_size)]


def learner_rows_swapped(in_size, out_size):            # the two names read the other way
    s = np.float32(in_size) / np.float32(out_size)
    return [min(int(np.float32(d) * s), in_size - 1) for d in range(out_size)]


def _pooled_row(H, i, h):
    s = np.float32(i) / np.float32(H)
    return min(int(np.float32(h) * s), i - 1)


def learner_field_integer(H, r, h):
    i = H // r
    k = h * i // H
    rows = [row for p in (k - 1, k, k + 1) if 0 <= p < i for row in range(p * r, (p + 1) * r)]
    return sorted(set(rows + [h]))


def learner_field_python_floats(H, r, h):
    i = H // r
    k = min(int(h * (i / H)), i - 1)
    rows = [row for p in (k - 1, k, k + 1) if 0 <= p < i for row in range(p * r, (p + 1) * r)]
    return sorted(set(rows + [h]))


def learner_field_float64_product(H, r, h):
    i = H // r
    scale = float(np.float32(i) / np.float32(H))  # the scale in float32, then a Python product
    k = min(int(h * scale), i - 1)
    rows = [row for p in (k - 1, k, k + 1) if 0 <= p < i for row in range(p * r, (p + 1) * r)]
    return sorted(set(rows + [h]))


def learner_field_no_window(H, r, h):
    k = _pooled_row(H, H // r, h)
    return sorted(set(range(k * r, k * r + r)) | {h})


def learner_field_no_identity(H, r, h):
    i = H // r
    k = _pooled_row(H, i, h)
    return list(range(max(k - 1, 0) * r, (min(k + 1, i - 1) + 1) * r))


def learner_field_padding(H, r, h):
    k = _pooled_row(H, H // r, h)
    return sorted(set(range((k - 1) * r, (k + 2) * r)) | {h})


def learner_field_ceil(H, r, h):
    i = math.ceil(H / r)
    k = _pooled_row(H, i, h)
    return sorted({row for p in range(max(k - 1, 0), min(k + 1, i - 1) + 1)
                   for row in range(p * r, min(p * r + r, H))} | {h})


def learner_field_with_k3(H, r, h):
    i = H // r
    k = _pooled_row(H, i, h)
    rows = set(range(max(k - 1, 0) * r, (min(k + 1, i - 1) + 1) * r))
    return sorted(rows | {row for row in (h - 1, h, h + 1) if 0 <= row < H})


def learner_field_twice(H, r, h):
    i = H // r
    k = _pooled_row(H, i, h)
    rows = [row for p in (k - 1, k, k + 1) if 0 <= p < i for row in range(p * r, p * r + r)]
    return sorted(rows + [h])                               # h may be there already


def learner_field_block(H, r, h):                           # "row h lies in pooling cell h // r"
    i = H // r
    k = min(h // r, i - 1)
    return sorted({h} | {row for p in (k - 1, k, k + 1) if 0 <= p < i
                         for row in range(p * r, p * r + r)})


def learner_field_span(H, r, h):
    i = H // r
    k = _pooled_row(H, i, h)
    first, last = max(k - 1, 0) * r, (min(k + 1, i - 1) + 1) * r - 1
    return list(range(min(first, h), max(last, h) + 1))


def _matrix_gate(x, k2_weight, pooling_r, rows=None, windows=None, identity=True,
                 conv_first=False):
    """A learner's gate in the matrix form: averaging matrices from ``windows(n, r)`` (a list of
    (first, last + 1, divisor) per pooled row) and one-hot matrices from ``rows(n, n_pooled)``."""
    r = pooling_r

    def floor_windows(n, r):
        return [(p * r, p * r + r, r) for p in range(n // r)]

    def f32_rows(n, m):
        s = np.float32(m) / np.float32(n)
        return [min(int(np.float32(d) * s), m - 1) for d in range(n)]

    windows, rows = windows or floor_windows, rows or f32_rows

    def pool(t):
        mats = []
        for n in t.shape[2:]:
            A = torch.zeros(len(windows(n, r)), n, dtype=t.dtype)
            for p, (lo, hi, div) in enumerate(windows(n, r)):
                A[p, lo:hi] = 1 / div
            mats.append(A)
        return torch.einsum("ih,bchw,jw->bcij", mats[0], t, mats[1])

    def one_hot(n, m):
        return torch.eye(m, dtype=x.dtype)[rows(n, m)]

    if conv_first:
        context = pool(F.conv2d(x, k2_weight, padding=1))
    else:
        context = F.conv2d(pool(x), k2_weight, padding=1)
    (H, W), (i, j) = x.shape[2:], context.shape[2:]
    up = torch.einsum("hi,bcij,wj->bchw", one_hot(H, i), context, one_hot(W, j))
    return torch.sigmoid(x + up if identity else up)


def learner_gate_no_identity(x, k2_weight, pooling_r):
    return _matrix_gate(x, k2_weight, pooling_r, identity=False)


def learner_gate_integer_gather(x, k2_weight, pooling_r):
    return _matrix_gate(x, k2_weight, pooling_r, rows=lambda n, m: [d * m // n for d in range(n)])


def learner_gate_repeat(x, k2_weight, pooling_r):      # "each pooled cell covers r rows"
    return _matrix_gate(x, k2_weight, pooling_r,
                        rows=lambda n, m: [min(d // pooling_r, m - 1) for d in range(n)])


def learner_gate_ceil(x, k2_weight, pooling_r):        # the last window keeps what it has
    return _matrix_gate(x, k2_weight, pooling_r, windows=lambda n, r: [
        (lo, min(lo + r, n), min(lo + r, n) - lo) for lo in range(0, n, r)])


def learner_gate_ceil_over_r(x, k2_weight, pooling_r):  # ... and divides by r all the same
    return _matrix_gate(x, k2_weight, pooling_r, windows=lambda n, r: [
        (lo, min(lo + r, n), r) for lo in range(0, n, r)])


def learner_gate_adaptive(x, k2_weight, pooling_r):    # n // r windows spread over all n rows
    def windows(n, r):
        m = n // r
        return [(p * n // m, -(-(p + 1) * n // m), -(-(p + 1) * n // m) - p * n // m)
                for p in range(m)]
    return _matrix_gate(x, k2_weight, pooling_r, windows=windows)


def learner_gate_conv_then_pool(x, k2_weight, pooling_r):
    return _matrix_gate(x, k2_weight, pooling_r, conv_first=True)


def learner_gate_lesson_form(x, k2_weight, pooling_r):  # section 4 copied: reduce and a gather
    from einops import reduce
    H, W = x.shape[2:]
    i, j = H // pooling_r, W // pooling_r
    t = reduce(x[:, :, :i * pooling_r, :j * pooling_r], "b c (i a) (j e) -> b c i j", "mean",
               a=pooling_r, e=pooling_r)
    t = F.conv2d(t, k2_weight, padding=1)
    rows = (torch.arange(H, dtype=torch.float32) * (torch.tensor(float(i)) / H)).long()
    cols = (torch.arange(W, dtype=torch.float32) * (torch.tensor(float(j)) / W)).long()
    return torch.sigmoid(x + t[:, :, rows.clamp(max=i - 1)][:, :, :, cols.clamp(max=j - 1)])


def learner_gate_functions(x, k2_weight, pooling_r):   # the official code's calls
    t = F.conv2d(F.avg_pool2d(x, pooling_r), k2_weight, padding=1)
    return torch.sigmoid(x + F.interpolate(t, size=x.shape[2:]))


def _bilinear_by_hand(x, k2_weight, pooling_r, position, clamp=True, identity=True):
    t = F.conv2d(F.avg_pool2d(x, pooling_r), k2_weight, padding=1)

    def weights(out_size, in_size):
        A = torch.zeros(out_size, in_size, dtype=x.dtype)
        for d in range(out_size):
            p = position(d, out_size, in_size)
            p = max(p, 0.0) if clamp else p
            lo = int(p)
            A[d, lo] += 1 - (p - lo)
            A[d, min(lo + 1, in_size - 1)] += p - lo
        return A

    up = torch.einsum("hi,bcij,wj->bchw", weights(x.shape[2], t.shape[2]), t,
                      weights(x.shape[3], t.shape[3]))
    return torch.sigmoid(x + up if identity else up)


def _half_pixel(d, out_size, in_size):
    return (d + 0.5) * in_size / out_size - 0.5


def learner_bilinear_corners(x, k2_weight, pooling_r):
    return _bilinear_by_hand(x, k2_weight, pooling_r,
                             lambda d, o, i: d * (i - 1) / (o - 1) if o > 1 else 0.0)


def learner_bilinear_no_shift(x, k2_weight, pooling_r):
    return _bilinear_by_hand(x, k2_weight, pooling_r, lambda d, o, i: d * i / o)


def learner_bilinear_no_clamp(x, k2_weight, pooling_r):
    return _bilinear_by_hand(x, k2_weight, pooling_r, _half_pixel, clamp=False)


def learner_bilinear_wraps(x, k2_weight, pooling_r):    # ⌊p⌋ = −1 used as an index
    t = F.conv2d(F.avg_pool2d(x, pooling_r), k2_weight, padding=1)

    def lerp(t, dim, n_out):
        n_in = t.shape[dim]
        p = (torch.arange(n_out, dtype=x.dtype) + 0.5) * n_in / n_out - 0.5
        lo = p.floor().long()
        hi = (lo + 1).clamp(max=n_in - 1)
        lam = (p - lo).view([-1 if d == dim else 1 for d in range(4)])
        return t.index_select(dim, lo % n_in) * (1 - lam) + t.index_select(dim, hi) * lam

    return torch.sigmoid(x + lerp(lerp(t, 2, x.shape[2]), 3, x.shape[3]))


def learner_bilinear_weight_unclamped(x, k2_weight, pooling_r):  # index at 0, weight from p
    t = F.conv2d(F.avg_pool2d(x, pooling_r), k2_weight, padding=1)

    def weights(n_out, n_in):
        A = torch.zeros(n_out, n_in, dtype=x.dtype)
        for d in range(n_out):
            p = (d + 0.5) * n_in / n_out - 0.5
            lam = p - math.floor(p)
            lo = max(math.floor(p), 0)
            A[d, lo] += 1 - lam
            A[d, min(lo + 1, n_in - 1)] += lam
        return A

    up = torch.einsum("hi,bcij,wj->bchw", weights(x.shape[2], t.shape[2]), t,
                      weights(x.shape[3], t.shape[3]))
    return torch.sigmoid(x + up)


def learner_bilinear_no_identity(x, k2_weight, pooling_r):
    return _bilinear_by_hand(x, k2_weight, pooling_r, _half_pixel, identity=False)


def learner_bilinear_nearest(x, k2_weight, pooling_r):
    t = F.conv2d(F.avg_pool2d(x, pooling_r), k2_weight, padding=1)
    return torch.sigmoid(x + F.interpolate(t, x.shape[2:]))


class LearnerSplit(nn.Module):
    """A learner's split conv with switches for their slips (written independently of the
    reference: its own pooling layer, the halves by slicing, the gate by hand)."""

    no_identity = bilinear = integer = stride_k3 = gate_k4 = relu = False
    swap_in = swap_out = parity = no_k2_bn = k2_plain = False

    def __init__(self, channels, stride=1, pooling_r=4, groups=1, dilation=1):
        super().__init__()
        g, d = channels // 2, dilation
        s3, s4 = (stride, 1) if self.stride_k3 else (1, stride)
        d2 = 1 if self.k2_plain else d
        self.down = nn.AvgPool2d(pooling_r)
        self.k1_conv = nn.Conv2d(g, g, 3, stride, d, d, groups, bias=False)
        self.k1_bn = nn.BatchNorm2d(g)
        self.k2_conv = nn.Conv2d(g, g, 3, 1, d2, d2, groups, bias=False)
        self.k2_bn = nn.BatchNorm2d(g)
        self.k3_conv = nn.Conv2d(g, g, 3, s3, d, d, groups, bias=False)
        self.k3_bn = nn.BatchNorm2d(g)
        self.k4_conv = nn.Conv2d(g, g, 3, s4, d, d, groups, bias=False)
        self.k4_bn = nn.BatchNorm2d(g)
        self.s = stride

    def up(self, t, size):
        if self.integer:
            rows = [d * t.shape[2] // size[0] for d in range(size[0])]
            cols = [d * t.shape[3] // size[1] for d in range(size[1])]
            return t[:, :, rows][:, :, :, cols]
        mode = dict(mode="bilinear", align_corners=False) if self.bilinear else {}
        return F.interpolate(t, size=size, **mode)

    def calibrate(self, x):
        context = self.k2_conv(self.down(x))
        up = self.up(context if self.no_k2_bn else self.k2_bn(context), x.shape[2:])
        gate = torch.sigmoid(up if self.no_identity else up + x)
        k3 = self.k3_bn(self.k3_conv(x))
        if self.relu:
            k3 = k3.clamp_min(0)
        if self.gate_k4:
            return self.k4_bn(self.k4_conv(k3)) * gate[:, :, ::self.s, ::self.s]
        if self.stride_k3:  # the shapes did not fit: take the gate at the strided positions
            gate = gate[:, :, ::self.s, ::self.s]
        return self.k4_bn(self.k4_conv(k3 * gate))

    def forward(self, x):
        g = x.shape[1] // 2
        x1, x2 = (x[:, 0::2], x[:, 1::2]) if self.parity else (x[:, :g], x[:, g:])
        if self.swap_in:
            x1, x2 = x2, x1
        y1, y2 = self.calibrate(x1), self.k1_bn(self.k1_conv(x2))
        return torch.cat((y2, y1) if self.swap_out else (y1, y2), 1)


def _split(**flags):
    return type("MySCSplitConv", (LearnerSplit,), flags)


# Every catalogued mistake has a learner's own version below (test_every_mistake_has_a_learner).
@pytest.mark.parametrize("checker, learner, phrase", [
    ("check_nearest_rows", learner_rows_integer, "exact integer arithmetic"),
    ("check_nearest_rows", learner_rows_python_floats, "in float64 (Python floats)"),
    ("check_nearest_rows", learner_rows_nearest_exact, "half-pixel centres"),
    ("check_nearest_rows", learner_rows_round, "rounded d·in/out"),
    ("check_nearest_rows", learner_rows_repeat, "repeated out // in times"),
    ("check_nearest_rows", learner_rows_ceil, "the ceiling"),
    ("check_nearest_rows", learner_rows_swapped, "the other way round"),
    ("check_gate_rows", learner_field_integer, "the integer rule"),
    ("check_gate_rows", learner_field_python_floats, "computed in float64"),
    ("check_gate_rows", learner_field_float64_product, "the product h·s in float64"),
    ("check_gate_rows", learner_field_no_window, "window left out"),
    ("check_gate_rows", learner_field_no_identity, "identity left out"),
    ("check_gate_rows", learner_field_padding, "padding rows counted"),
    ("check_gate_rows", learner_field_ceil, "ceil mode"),
    ("check_gate_rows", learner_field_with_k3, "K3's rows"),
    ("check_gate_rows", learner_field_span, "from the first to the last"),
    ("check_gate_rows", learner_field_twice, "listed twice"),
    ("check_gate_rows", learner_field_block, "h // r"),
    ("check_calibration_gate", learner_gate_no_identity, "σ(up) without the identity"),
    ("check_calibration_gate", learner_gate_integer_gather, "in integers instead"),
    ("check_calibration_gate", learner_gate_repeat, "repeated r times"),
    ("check_calibration_gate", learner_gate_ceil, "partial last window kept"),
    ("check_calibration_gate", learner_gate_ceil_over_r, "partial last window kept"),
    ("check_calibration_gate", learner_gate_adaptive, "adaptive pooling"),
    ("check_calibration_gate", learner_gate_conv_then_pool, "the 3×3 conv runs before the pooling"),
    ("check_sc_split_conv", _split(no_identity=True), "σ(up) without the identity"),
    ("check_sc_split_conv", _split(bilinear=True), "bilinear instead of nearest"),
    ("check_sc_split_conv", _split(integer=True), "in integers instead"),
    ("check_sc_split_conv", _split(stride_k3=True), "the stride on K3 instead of K4"),
    ("check_sc_split_conv", _split(gate_k4=True), "gating the wrong path"),
    ("check_sc_split_conv", _split(relu=True), "a ReLU after K3's BatchNorm"),
    ("check_sc_split_conv", _split(swap_in=True), "the halves swapped"),
    ("check_sc_split_conv", _split(swap_out=True), "concatenated in the wrong order"),
    ("check_sc_split_conv", _split(parity=True), "split by parity"),
    ("check_sc_split_conv", _split(no_k2_bn=True), "K2's BatchNorm left out"),
    ("check_sc_split_conv", _split(k2_plain=True), "K2 not dilated"),
    ("check_calibration_gate_bilinear", learner_bilinear_nearest, "nearest instead of bilinear"),
    ("check_calibration_gate_bilinear", learner_bilinear_corners, "align_corners=True"),
    ("check_calibration_gate_bilinear", learner_bilinear_no_shift, "without the half-pixel shift"),
    ("check_calibration_gate_bilinear", learner_bilinear_no_clamp, "not clamped at 0"),
    ("check_calibration_gate_bilinear", learner_bilinear_wraps, "not clamped at 0"),
    ("check_calibration_gate_bilinear", learner_bilinear_weight_unclamped, "not clamped at 0"),
    ("check_calibration_gate_bilinear", learner_bilinear_no_identity, "σ(up) without the identity"),
])
def test_a_learners_own_mistake_is_named(checker, learner, phrase):
    assert_mistake_named(checker, learner, phrase)


def _run(checker, learner):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = CHECKERS[checker](learner)
    return result, printed.getvalue()


def test_a_learners_right_answers_pass():
    def rows(out_size, in_size):                             # numpy arrays, then a list
        d = np.arange(out_size, dtype=np.float32)
        s = np.float32(in_size) / np.float32(out_size)
        return np.minimum(np.floor(d * s), in_size - 1).astype(int).tolist()

    def field(H, r, h):                                      # ranges, no set
        i = H // r
        k = min(int(np.float32(h) * (np.float32(i) / np.float32(H))), i - 1)
        first, stop = max(k - 1, 0) * r, (min(k + 1, i - 1) + 1) * r
        inside = list(range(first, stop))
        return inside if first <= h < stop else sorted(inside + [h])

    def gate(x, k2_weight, pooling_r):                       # kron and eye matrices
        H, W = x.shape[2:]

        def pool(n):
            m = n // pooling_r
            A = torch.kron(torch.eye(m, dtype=x.dtype), torch.ones(1, pooling_r, dtype=x.dtype))
            return F.pad(A, (0, n - m * pooling_r)) / pooling_r

        def up(n, m):
            s = np.float32(m) / np.float32(n)
            return torch.eye(m, dtype=x.dtype)[[min(int(np.float32(d) * s), m - 1)
                                               for d in range(n)]]

        t = F.conv2d(torch.einsum("ih,bchw,jw->bcij", pool(H), x, pool(W)), k2_weight, padding=1)
        i, j = t.shape[2:]
        return torch.sigmoid(x + torch.einsum("hi,bcij,wj->bchw", up(H, i), t, up(W, j)))

    def gate_bilinear(x, k2_weight, pooling_r):
        t = F.conv2d(F.avg_pool2d(x, pooling_r), k2_weight, padding=1)
        return torch.sigmoid(x + F.interpolate(t, size=x.shape[2:], mode="bilinear"))

    for checker, learner in [("check_nearest_rows", rows), ("check_gate_rows", field),
                             ("check_calibration_gate", gate), ("check_sc_split_conv", _split()),
                             ("check_calibration_gate_bilinear", gate_bilinear)]:
        result, _ = _run(checker, learner)
        assert result.passed, result.lines


@pytest.mark.parametrize("learner, calls", [
    (learner_gate_functions, "`interpolate`, `avg_pool2d`"),
    (learner_gate_lesson_form, "`reduce`"),
])
def test_the_gate_in_the_lessons_form_is_refused(learner, calls):
    result, printed = _run("check_calibration_gate", learner)
    assert not result.passed and result.checks_passed == 0
    assert f"your answer uses {calls}" in printed and "matrices" in printed


def test_the_module_checker_names_a_misnamed_parameter():
    class Renamed(LearnerSplit):
        def __init__(self, channels, stride=1, pooling_r=4, groups=1, dilation=1):
            super().__init__(channels, stride, pooling_r, groups, dilation)
            self.conv_k4 = self.k4_conv
            del self.k4_conv

        def forward(self, x):
            self.k4_conv = self.conv_k4
            return super().forward(x)

    result, printed = _run("check_sc_split_conv", Renamed)
    assert not result.passed and "k4_conv.weight" in printed


def test_stubs_say_not_implemented():
    def stub(*args):
        raise NotImplementedError()

    class Stub(nn.Module):
        def __init__(self, channels, stride=1, pooling_r=4, groups=1, dilation=1):
            super().__init__()
            raise NotImplementedError()

    for checker in NAMES:
        result, printed = _run(checker, Stub if checker == "check_sc_split_conv" else stub)
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
def test_an_integer_gather_fails_only_on_the_float32_case():
    assert_fails_only_on("check_calibration_gate", learner_gate_integer_gather, ["(float32)"])


def test_pythons_round_is_the_rounding_mistake():
    def nearest_rows(out_size, in_size):                     # banker's rounding: 0 at (8, 2), d = 2
        s = np.float32(in_size) / np.float32(out_size)
        return [round(float(np.float32(d) * s)) for d in range(out_size)]

    def unclamped(out_size, in_size):                        # ⌊x + ½⌋: row in_size at the end
        s = np.float32(in_size) / np.float32(out_size)
        return [int(math.floor(float(np.float32(d) * s) + 0.5)) for d in range(out_size)]

    assert_mistake_named("check_nearest_rows", nearest_rows, "rounded d·in/out")
    assert_mistake_named("check_nearest_rows", unclamped, "rounded d·in/out")


def test_a_split_conv_without_defaults_fails_on_the_default_call():
    class MySCSplitConv(lesson04.SCSplitReference):
        def __init__(self, channels, stride, pooling_r, groups, dilation):
            super().__init__(channels, stride, pooling_r, groups, dilation)

    result = CHECKERS["check_sc_split_conv"].run(MySCSplitConv, verbose=False)
    assert result.status == "error"
    assert "stride, r, groups, dilation not given" in next(l for l in result.lines if l.startswith("✗"))
