"""Lesson 05 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, a learner's own correct versions pass, the references mean what they say (checked against
loops written from the equations, the library's modules, real tensors' sizes and a brute-force
search). The exercises are channels-last (B×H×W×C); the lesson works channels-first. The generic
proofs run over every checker in tests/test_checks.py."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _learner import assert_catalogued, assert_fails_only_on, assert_mistake_named

from attn_tutorial.checks import CHECKERS, lesson05
from attn_tutorial.danet import CAM, PAM

# The mistakes the issue asks the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_pam_inside": ["softmax over the query axis instead of the key axis",
                         "softmax over the batch axis", "scaled by 1/sqrt(d)", "divided by d",
                         "output reads b j i", "two slips together", "softmax(−E)",
                         "Aᵀ·V instead of A·V", "taken column by column (w h) but put back row"],
    "check_cam_output": ["softmax(E) and softmax(−E) swapped",
                         "the usual stable shift E − max leaves softmax(E) unchanged",
                         "(−E).softmax(1)", "E.softmax(1) whatever the form", "f·A instead of",
                         "forgot the residual", "the lesson's channels-first layout"],
    "check_pam_module": ["gamma initialised to 1", "query/key layers with C output channels",
                         "ceil(C / 8)", "Aᵀ·V instead of A·V", "scaled by 1/sqrt(d)"],
    "check_pam_map_bytes": ["the batch B is missing", "bits per element", "one map counted",
                            "rounded down"],
    "check_pam_side_limit": ["(≥) instead of passing it (>)", "floating point"],
    "check_pam_pooled": ["every r-th pixel grouped", "max pooling",
                         "both the keys and the values taken at every r-th pixel"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_the_tiers():
    tiers = {name: CHECKERS[name].tier for name in lesson05.__all__}
    assert [t for t in tiers.values()] == ["build"] * 3 + ["predict"] * 2 + ["extend"]


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
def _tok(t):
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _out(attention, v):  # A·V put back row by row (a learner's own, used by the PAM learners)
    b, h, w, c = v.shape
    return torch.matmul(attention, v.reshape(b, h * w, c)).reshape(b, h, w, c)


def learner_inside_over_queries(q, k, v):
    return _out(torch.softmax(_tok(q) @ _tok(k).transpose(1, 2), dim=1), v)


def learner_inside_over_batch(q, k, v):
    return _out(torch.softmax(_tok(q) @ _tok(k).transpose(1, 2), dim=0), v)


def learner_inside_scaled(q, k, v):
    e = torch.einsum("bid,bjd->bij", _tok(q), _tok(k))
    return _out(torch.softmax(e / q.shape[-1] ** 0.5, 2), v)


def learner_inside_over_d(q, k, v):
    return _out(torch.softmax(torch.einsum("bid,bjd->bij", _tok(q), _tok(k)) / q.shape[-1], 2), v)


def learner_inside_bji(q, k, v):
    return _out(torch.einsum("bid,bjd->bji", _tok(q), _tok(k)).softmax(-1), v)


def learner_inside_bji_scaled(q, k, v):  # two slips at once
    e = torch.einsum("bid,bjd->bji", _tok(q), _tok(k)) / math.sqrt(q.shape[-1])
    return _out(e.softmax(-1), v)


def learner_inside_max_minus_e(q, k, v):  # a hand-written "stable" softmax, shift reversed
    e = _tok(q) @ _tok(k).transpose(1, 2)
    e = e.amax(-1, keepdim=True) - e
    return _out(e.exp() / e.exp().sum(-1, keepdim=True), v)


def learner_inside_at_v(q, k, v):
    a = torch.softmax(_tok(q) @ _tok(k).transpose(1, 2), -1)
    return _out(a.transpose(1, 2), v)


def learner_inside_v_a(q, k, v):  # the channels-first V·A habit, without the transpose
    b, h, w, c = v.shape
    a = torch.softmax(_tok(q) @ _tok(k).transpose(1, 2), -1)
    return (_tok(v).transpose(1, 2) @ a).transpose(1, 2).reshape(b, h, w, c)


def learner_inside_columns_in(q, k, v):  # taken (w h), put back (h w)
    cols = lambda t: t.transpose(1, 2).reshape(t.shape[0], -1, t.shape[-1])
    a = torch.softmax(cols(q) @ cols(k).transpose(1, 2), -1)
    b, h, w, c = v.shape
    return (a @ cols(v)).reshape(b, h, w, c)


def learner_inside_columns_out(q, k, v):  # taken (h w), put back (w h)
    b, h, w, c = v.shape
    a = torch.softmax(_tok(q) @ _tok(k).transpose(1, 2), -1)
    return (a @ _tok(v)).reshape(b, w, h, c).transpose(1, 2)


def learner_inside_columns_both(q, k, v):  # column-major throughout: PAM does not mind
    cols = lambda t: t.transpose(1, 2).reshape(t.shape[0], -1, t.shape[-1])
    a = torch.softmax(cols(q) @ cols(k).transpose(1, 2), -1)
    b, h, w, c = v.shape
    return (a @ cols(v)).reshape(b, w, h, c).transpose(1, 2)


def learner_inside_plus_v(q, k, v):  # the module's residual, in the wrong exercise
    return _out(torch.softmax(_tok(q) @ _tok(k).transpose(1, 2), -1), v) + v


def learner_inside_correct(q, k, v):
    b, h, w, d = q.shape
    a = torch.softmax(torch.bmm(q.view(b, h * w, d), k.view(b, h * w, d).permute(0, 2, 1)), -1)
    return torch.bmm(a, v.view(b, h * w, -1)).view(v.shape)


def learner_inside_e_minus_max(q, k, v):  # the usual stable shift: still softmax(E)
    e = _tok(q) @ _tok(k).transpose(1, 2)
    e = e - e.amax(-1, keepdim=True)
    return _out(e.exp() / e.exp().sum(-1, keepdim=True), v)


def learner_inside_sdpa(q, k, v):
    return F.scaled_dot_product_attention(_tok(q), _tok(k), _tok(v), scale=1.0).reshape(v.shape)


def _gram(x):
    f = _tok(x)
    return torch.bmm(f.transpose(1, 2), f)


def _cam_out(a, x, gamma):  # y = γ·(f Aᵀ) + x in tokens, a learner's own
    return gamma * (_tok(x) @ a.transpose(1, 2)).reshape(x.shape) + x


def learner_cam_swapped(x, gamma, form="official"):
    e = _gram(x)
    if form == "paper":  # swapped: the max-minus step belongs to the official form
        e = e.max(-1, keepdim=True)[0].expand_as(e) - e
    return _cam_out(torch.softmax(e, dim=-1), x, gamma)


def learner_cam_e_minus_max(x, gamma, form="official"):
    e = _gram(x)
    if form == "official":
        e = e - e.amax(dim=-1, keepdim=True)  # the usual stable shift, not the official one
    return _cam_out(e.softmax(dim=-1), x, gamma)


def learner_cam_positions_gram(x, gamma, form="official"):
    f = _tok(x)
    e = f @ f.transpose(1, 2)
    if form == "official":
        e = e.amax(-1, keepdim=True) - e
    return gamma * (e.softmax(-1) @ f).reshape(x.shape) + x


def learner_cam_f_times_a(x, gamma, form="official"):  # the map applied as f·A
    e = _gram(x)
    a = torch.softmax(-e if form == "official" else e, dim=-1)
    return gamma * (_tok(x) @ a).reshape(x.shape) + x


def learner_cam_neg_softmax_dim1(x, gamma, form="official"):  # (−E).softmax(1)
    e = _gram(x)
    return _cam_out((-e if form == "official" else e).softmax(1), x, gamma)


def learner_cam_e_softmax_dim1(x, gamma, form="official"):  # E.softmax(1), any form
    return _cam_out(_gram(x).softmax(1), x, gamma)


def learner_cam_no_residual(x, gamma, form="official"):
    e = _gram(x)
    return _cam_out(torch.softmax(-e if form == "official" else e, dim=-1), x, gamma) - x


def learner_cam_gamma_on_all(x, gamma, form="official"):
    e = _gram(x)
    a = torch.softmax(-e if form == "official" else e, dim=-1)
    return gamma * ((_tok(x) @ a.transpose(1, 2)).reshape(x.shape) + x)


def learner_cam_correct(x, gamma, form="official"):
    e = _gram(x)
    return _cam_out(torch.softmax(-e if form == "official" else e, dim=-1), x, gamma)


def learner_cam_einsum(x, gamma, form="official"):  # one shift per image: still softmax(−E)
    e = torch.einsum("bhwc,bhwk->bck", x, x)
    if form == "official":
        e = e.amax(dim=(1, 2), keepdim=True) - e
    return gamma * torch.einsum("bck,bhwk->bhwc", e.softmax(-1), x) + x


class LearnerPAM(nn.Module):
    """A learner's channels-last PAM written with view/bmm, the parameter names of the exercise."""

    def __init__(self, channels, qk_channels=None, gamma=0.0):
        super().__init__()
        qk = channels // 8 if qk_channels is None else qk_channels
        self.query = nn.Linear(channels, qk)
        self.key = nn.Linear(channels, qk)
        self.value = nn.Linear(channels, channels)
        self.gamma = nn.Parameter(torch.zeros(1) + gamma)

    def weights(self, x):
        return torch.softmax(torch.bmm(_tok(self.query(x)), _tok(self.key(x)).permute(0, 2, 1)), -1)

    def forward(self, x):
        out = torch.bmm(self.weights(x), _tok(self.value(x)))
        return self.gamma * out.view(x.shape) + x


class LearnerPAMGammaOne(LearnerPAM):
    def __init__(self, channels):
        super().__init__(channels, gamma=1.0)


class LearnerPAMFullWidth(LearnerPAM):
    def __init__(self, channels):
        super().__init__(channels, qk_channels=channels)


class LearnerPAMTransposed(LearnerPAM):
    def forward(self, x):
        out = torch.bmm(self.weights(x).transpose(1, 2), _tok(self.value(x)))
        return self.gamma * out.view(x.shape) + x


class LearnerPAMScaled(LearnerPAM):
    def weights(self, x):
        q = _tok(self.query(x))
        return (q @ _tok(self.key(x)).transpose(1, 2) / math.sqrt(q.shape[-1])).softmax(-1)


class LearnerPAMCeil(LearnerPAM):  # q/k width rounded up (3 at C = 20), the parameter named in_dim
    def __init__(self, in_dim):
        super().__init__(in_dim, qk_channels=math.ceil(in_dim / 8))


class LearnerPAMInDim(LearnerPAM):  # correct, with its own name for the channel count
    def __init__(self, in_dim):
        super().__init__(in_dim)


def learner_bytes_bits(b, image_h, image_w, dtype):
    n = math.ceil(image_h / 8) * math.ceil(image_w / 8)
    return 2 * b * n ** 2 * torch.finfo(dtype).bits


def learner_bytes_one_map(b, image_h, image_w, dtype):
    n = math.ceil(image_h / 8) * math.ceil(image_w / 8)
    return b * n * n * dtype.itemsize


def learner_bytes_floor(b, image_h, image_w, dtype):
    return 2 * b * ((image_h // 8) * (image_w // 8)) ** 2 * dtype.itemsize


def learner_bytes_correct(b, image_h, image_w, dtype):
    h, w = -(-image_h // 8), -(-image_w // 8)
    return 2 * torch.empty(0, dtype=dtype).element_size() * b * h * h * w * w


def learner_side_float_root(budget, b, dtype):
    return int((budget / (b * dtype.itemsize)) ** 0.25) + 1


def learner_side_reaches(budget, b, dtype):
    s = 1
    while b * s ** 4 * dtype.itemsize < budget:
        s += 1
    return s


def learner_side_loop(budget, b, dtype):
    s = 1
    while b * s ** 4 * dtype.itemsize <= budget:
        s += 1
    return s


def learner_pooled_strided(q, k, v, r):
    b, h, w, c = v.shape
    pool = lambda t: t.reshape(b, r, h // r, r, w // r, t.shape[-1]).mean((1, 3)).flatten(1, 2)
    a = torch.softmax(_tok(q) @ pool(k).transpose(1, 2), -1)
    return (a @ pool(v)).reshape(b, h, w, c)


def learner_pooled_subsampled(q, k, v, r):  # k and v at every r-th pixel
    b, h, w, c = v.shape
    a = torch.softmax(_tok(q) @ _tok(k[:, ::r, ::r]).transpose(1, 2), -1)
    return (a @ _tok(v[:, ::r, ::r])).reshape(b, h, w, c)


def learner_pooled_avg_pool2d(q, k, v, r):
    b, h, w, c = v.shape
    pool = lambda t: F.avg_pool2d(t.permute(0, 3, 1, 2), r).flatten(2).transpose(1, 2)
    a = torch.softmax(_tok(q) @ pool(k).transpose(1, 2), -1)
    return (a @ pool(v)).reshape(b, h, w, c)


def learner_pooled_sdpa(q, k, v, r):
    b, h, w, c = v.shape
    pool = lambda t: F.avg_pool2d(t.permute(0, 3, 1, 2), r).flatten(2).transpose(1, 2)
    return F.scaled_dot_product_attention(_tok(q), pool(k), pool(v), scale=1.0).reshape(b, h, w, c)


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_pam_inside", learner_inside_over_queries, "softmax over the query axis"),
    ("check_pam_inside", learner_inside_over_batch, "softmax over the batch axis"),
    ("check_pam_inside", learner_inside_scaled, "scaled by 1/sqrt(d)"),
    ("check_pam_inside", learner_inside_over_d, "divided by d"),
    ("check_pam_inside", learner_inside_bji, "the energy transposed before the softmax: an einsum"),
    ("check_pam_inside", learner_inside_bji_scaled, "two slips together: the energy "
                                                    "transposed before"),
    ("check_pam_inside", learner_inside_max_minus_e, "computes softmax(−E)"),
    ("check_pam_inside", learner_inside_at_v, "Aᵀ·V instead of A·V"),
    ("check_pam_inside", learner_inside_v_a, "Aᵀ·V instead of A·V"),
    ("check_pam_inside", learner_inside_columns_in, "taken column by column (w h) but put back"),
    ("check_pam_inside", learner_inside_columns_out, "taken row by row (h w) but put back"),
    ("check_pam_inside", learner_inside_plus_v, "a residual added (A·V + v)"),
    ("check_cam_output", learner_cam_swapped, "swapped"),
    ("check_cam_output", learner_cam_e_minus_max, "for form='official' your answer computes "
                                                  "softmax(E)"),
    ("check_cam_output", learner_cam_positions_gram, "Gram matrix over the positions"),
    ("check_cam_output", learner_cam_f_times_a, "f·A instead of f·Aᵀ"),
    ("check_cam_output", learner_cam_neg_softmax_dim1, "(−E).softmax(1)"),
    ("check_cam_output", learner_cam_e_softmax_dim1, "E.softmax(1) whatever the form"),
    ("check_cam_output", learner_cam_no_residual, "forgot the residual"),
    ("check_cam_output", learner_cam_gamma_on_all, "γ multiplies the residual too"),
    ("check_pam_module", LearnerPAMGammaOne, "gamma initialised to 1"),
    ("check_pam_module", LearnerPAMFullWidth, "query/key layers with C output channels"),
    ("check_pam_module", LearnerPAMCeil, "ceil(C / 8)"),
    ("check_pam_module", LearnerPAMTransposed, "Aᵀ·V instead of A·V"),
    ("check_pam_module", LearnerPAMScaled, "scaled by 1/sqrt(d)"),
    ("check_pam_map_bytes", learner_bytes_bits, "bits per element"),
    ("check_pam_map_bytes", learner_bytes_one_map, "one map counted"),
    ("check_pam_map_bytes", learner_bytes_floor, "rounded down"),
    ("check_pam_side_limit", learner_side_reaches, "(≥) instead of passing it (>)"),
    ("check_pam_pooled", learner_pooled_strided, "every r-th pixel grouped"),
    ("check_pam_pooled", learner_pooled_subsampled, "both the keys and the values"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


@pytest.mark.parametrize("name,learner", [
    ("check_pam_inside", learner_inside_correct),
    ("check_pam_inside", learner_inside_e_minus_max),
    ("check_pam_inside", learner_inside_sdpa),
    ("check_pam_inside", learner_inside_columns_both),
    ("check_cam_output", learner_cam_correct),
    ("check_cam_output", learner_cam_einsum),
    ("check_pam_module", LearnerPAM),
    ("check_pam_module", LearnerPAMInDim),
    ("check_pam_map_bytes", learner_bytes_correct),
    ("check_pam_side_limit", learner_side_loop),
    ("check_pam_pooled", learner_pooled_avg_pool2d),
    ("check_pam_pooled", learner_pooled_sdpa),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


def test_a_float_fourth_root_fails_only_far_out():
    """int(root) + 1 is right except where the float root of budget / (B·bytes) rounds up to
    a whole number: the 8182 case (and named, since it equals the catalogued form there)."""
    assert_fails_only_on("check_pam_side_limit", learner_side_float_root, ["8182"])
    assert_mistake_named("check_pam_side_limit", learner_side_float_root, "floating point")


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
def test_pam_references_against_loops_and_the_library():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64), \
        torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64)   # B×H×W×d
    v = torch.randn(2, 2, 3, 4, generator=g, dtype=torch.float64)
    out = lesson05.ref_pam_inside(q, k, v)
    for b in range(2):
        for i in range(6):
            row = torch.tensor([sum(q[b, i // 3, i % 3, d] * k[b, j // 3, j % 3, d]
                                    for d in range(3)) for j in range(6)], dtype=torch.float64)
            a = torch.exp(row) / torch.exp(row).sum()
            expected = sum(a[j] * v[b, j // 3, j % 3] for j in range(6))
            assert torch.allclose(out[b, i // 3, i % 3], expected)

    # the channels-last module is the library's channels-first PAM with the 1×1 convs as Linear
    x = torch.randn(2, 16, 3, 5, generator=g, dtype=torch.float64)
    lib = PAM(16).double()
    ref = lesson05.PAMReference(16).double()
    ref.load_state_dict({name: t.flatten(1) if t.dim() == 4 else t
                         for name, t in lib.state_dict().items()})
    with torch.no_grad():
        for m in (ref, lib):
            m.gamma.fill_(0.8)
    assert torch.allclose(ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), lib(x))


def test_cam_reference_against_the_library():
    x = 0.3 * torch.randn(2, 16, 3, 5, generator=torch.Generator().manual_seed(1),
                          dtype=torch.float64)
    xl = x.permute(0, 2, 3, 1)  # channels-last
    for form in ("official", "paper"):
        assert torch.allclose(lesson05.ref_cam_attention(xl, form),
                              CAM(16, variant=form).double().attention_map(x))
    f = x.flatten(2)
    assert torch.allclose(lesson05.ref_cam_attention(xl, "official"),
                          torch.softmax(-(f @ f.transpose(1, 2)), dim=-1))
    # the whole output: the library's CAM (channels-first) with the same gamma, channels-last
    for form, gamma in (("official", -0.7), ("paper", 1.3)):
        cam = CAM(16, variant=form).double()
        with torch.no_grad():
            cam.gamma.fill_(gamma)
        assert torch.allclose(lesson05.ref_cam_output(xl, gamma, form).permute(0, 3, 1, 2), cam(x))


@pytest.mark.parametrize("b,image_h,image_w,dtype", [(1, 1, 1, torch.float32),
                                                     (2, 17, 40, torch.float16),
                                                     (3, 23, 9, torch.bfloat16),
                                                     (1, 33, 31, torch.float64)])
def test_map_bytes_are_those_of_real_maps(b, image_h, image_w, dtype):
    """The head's map of a real stride-8 stem (three stride-2 steps with the ResNet paddings:
    a 7×7 conv, a 3×3 max pool, a 3×3 conv) and the bytes of two real B×N×N tensors."""
    stem = nn.Sequential(nn.Conv2d(1, 1, 7, stride=2, padding=3), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(1, 1, 3, stride=2, padding=1))
    _, _, h, w = stem(torch.zeros(1, 1, image_h, image_w)).shape
    n = h * w
    expected = 2 * torch.empty(b, n, n, dtype=dtype).nbytes
    assert lesson05.ref_pam_map_bytes(b, image_h, image_w, dtype) == expected


def test_side_limit_against_a_search_and_the_lessons_figure():
    for budget in range(0, 1500, 7):
        for b, dtype, size in ((1, torch.float32, 4), (2, torch.float16, 2), (3, torch.float64, 8)):
            s = 1
            while b * s ** 4 * size <= budget:
                s += 1
            assert lesson05.ref_pam_side_limit(budget, b, dtype) == s
    # section 8: the 96×96 map is 324 MiB in float32; one MiB more and 96 still fits
    assert lesson05.ref_pam_side_limit(325 * 2 ** 20, 1, torch.float32) == 97
    assert lesson05.ref_pam_side_limit(323 * 2 ** 20, 1, torch.float32) == 96


def test_pooled_reference_against_block_means_and_pam():
    g = torch.Generator().manual_seed(2)
    q, k = (torch.randn(1, 4, 6, 2, generator=g, dtype=torch.float64) for _ in range(2))
    v = torch.randn(1, 4, 6, 3, generator=g, dtype=torch.float64)
    out = lesson05.ref_pam_pooled(q, k, v, 2)
    blocks = [(y, x) for y in range(2) for x in range(3)]              # row-major pooled grid
    kbar = torch.stack([k[0, 2 * y:2 * y + 2, 2 * x:2 * x + 2].mean((0, 1)) for y, x in blocks])
    vbar = torch.stack([v[0, 2 * y:2 * y + 2, 2 * x:2 * x + 2].mean((0, 1)) for y, x in blocks])
    for i in range(4):
        for j in range(6):
            weights = torch.softmax(kbar @ q[0, i, j], dim=0)
            assert torch.allclose(out[0, i, j], weights @ vbar)
    # r = 1: PAM itself
    assert torch.allclose(lesson05.ref_pam_pooled(q, k, v, 1), lesson05.ref_pam_inside(q, k, v))


# ------------------------------------------------- boundaries and slips of the new engine
def test_cam_with_the_paper_as_default_form_is_named():
    def cam_output(x, gamma, form="paper"):
        e = _gram(x)
        if form == "official":
            e = e.amax(dim=-1, keepdim=True) - e
        return _cam_out(e.softmax(dim=-1), x, gamma)

    assert_mistake_named("check_cam_output", cam_output, "the default is form='official'")


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


def test_predict_checkers_have_hidden_cases_in_their_domain():
    for name, low in (("check_pam_map_bytes", 5), ("check_pam_side_limit", 5)):
        hidden = [c for c in CHECKERS[name].cases if c.hidden]
        assert len(hidden) >= low
    for case in (c for c in CHECKERS["check_pam_map_bytes"].cases if c.hidden):
        b, image_h, image_w, dtype = case.inputs()
        assert 1 <= b <= 16 and 1 <= image_h <= 1100 and 1 <= image_w <= 1100
    # a table of the printed answers fails on the hidden ones
    shown = {c.inputs(): lesson05.ref_pam_map_bytes(*c.inputs())
             for c in CHECKERS["check_pam_map_bytes"].cases if not c.hidden}
    assert not CHECKERS["check_pam_map_bytes"](lambda *a: shown.get(a, 0), verbose=False).passed
