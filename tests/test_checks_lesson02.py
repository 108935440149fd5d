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

# The mistakes the lesson catalogues (issues 15 and 28), by (part of) their name.
REQUIRED = {
    "check_bam_fuse": ["fusion argument ignored", "sum and product swapped", "residual forgotten",
                       "sigmoid applied to each branch before fusing",
                       "flattened column by column", "tanh instead of the sigmoid"],
    "check_dilated_conv": ["dilations of the two axes swapped", "dilation 1", "taps d + 1 apart",
                           "padding (dh, dw)", "padding (k − 1)/2 whatever the dilation",
                           "kernel flipped", "bias forgotten"],
    "check_spatial_footprint": ["receptive field of one conv", "spans added", "area",
                                "every pixel of the box counted", "9ⁿ pixels", "one axis only"],
    "check_bam_block": ["max pooling in the channel branch", "sum and product swapped",
                        "residual forgotten", "sigmoid applied to each branch before fusing",
                        "dilation 1 in the spatial branch", "tanh instead of the sigmoid",
                        "only the first two dilated convs applied",
                        "the first dilation used for every conv",
                        "H×H average pooling", "ε = 1e-3", "batch statistics in eval mode too"],
    "check_bam_paper_fuse": ["each image's own map", "per pixel over the batch",
                             "each image's channels", "unbiased variance",
                             "ε added to the standard deviation", "output BNs left out",
                             "γ and β not applied", "product instead of the paper's sum",
                             "running statistics", "ε = 1e-3"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


def test_tiers():
    tiers = {name: CHECKERS[name].tier for name in lesson02.__all__}
    assert tiers == {"check_bam_fuse": "build", "check_dilated_conv": "build",
                     "check_spatial_footprint": "predict", "check_bam_block": "build",
                     "check_bam_paper_fuse": "extend"}


def test_the_cases_cover_the_boundaries_the_exercises_allow():
    fuse = [c.inputs() for c in lesson02.check_bam_fuse.cases]
    assert any(len(a) == 3 for a in fuse)                       # the default fusion
    assert {a[3] for a in fuse if len(a) == 4} == {"product", "sum"}
    assert any(a[0].shape[0] == 1 for a in fuse) and any(a[0].shape[2] == 1 for a in fuse)
    assert any(a[2].shape[1:] == (1, 1) for a in fuse)          # one token
    assert any(a[2].shape[1] != a[2].shape[2] > 1 and a[2].shape[1] > 1 for a in fuse)
    conv = [c.inputs() for c in lesson02.check_dilated_conv.cases]
    assert {a[1].shape[-1] for a in conv} == {1, 3, 5} and any(a[3] == (1, 1) for a in conv)
    assert any(a[3][0] != a[3][1] for a in conv) and any(a[0].shape[2] == 1 for a in conv)
    assert any(a[0].shape[3] == 1 for a in conv) and any(a[1].shape[0] == 1 for a in conv)
    footprint = [c.inputs() for c in lesson02.check_spatial_footprint.cases]
    assert 15 <= len(footprint) <= 40 and (2, 4) in footprint and (1, 1) in footprint
    assert any(n == 0 for n, _ in footprint) and any(d == 1 and n > 1 for n, d in footprint)
    blocks = [c.build for c in lesson02.check_bam_block.cases]
    assert {len(b.get("dilations", (4, 4))) for b in blocks} == {0, 1, 2, 3}
    assert any(len(set(b.get("dilations", ()))) == 3 for b in blocks)   # all different
    assert {"channels"} in [set(b) for b in blocks]             # the defaults
    assert any(b.get("reduction_ratio") == 1 for b in blocks)   # m = C
    assert any(b["channels"] // b.get("reduction_ratio", 16) == 1 for b in blocks)   # m = 1
    paper = [c.inputs() for c in lesson02.check_bam_paper_fuse.cases]
    assert min(a[0].shape[0] for a in paper) == 2 and any(a[0].shape[1] == 1 for a in paper)
    assert any(a[0].shape[2:] == (1, 1) for a in paper)


# ------------------------------------------------------------------ a learner's own answers
def learner_fuse_correct(x, mc, ms, fusion="product"):
    s = ms.reshape(ms.shape[0], -1)[:, :, None]                 # row by row, like the tokens
    c = mc[:, None, :]
    return x * (1 + torch.sigmoid(c * s if fusion == "product" else c + s))


def learner_fuse_paper_only(x, mc, ms, fusion="product"):
    return x * (1 + torch.sigmoid(mc[:, None, :] + ms.flatten(1)[:, :, None]))


def learner_fuse_transposed(x, mc, ms, fusion="product"):
    s = ms.permute(0, 2, 1).flatten(1).unsqueeze(-1)
    c = mc.unsqueeze(1)
    return x + x * torch.sigmoid(c * s if fusion == "product" else c + s)


def learner_fuse_tanh(x, mc, ms, fusion="product"):
    z = mc[:, None, :] * ms.flatten(1)[:, :, None] if fusion == "product" else \
        mc[:, None, :] + ms.flatten(1)[:, :, None]
    return x * (1 + torch.tanh(z))


def learner_fuse_tanh_half(x, mc, ms, fusion="product"):   # tanh(z / 2): still a tanh gate
    z = mc[:, None, :] * ms.flatten(1)[:, :, None] if fusion == "product" else \
        mc[:, None, :] + ms.flatten(1)[:, :, None]
    return x + x * torch.tanh(z / 2)


def learner_conv_correct(h, weight, bias, dilation):
    dh, dw = dilation
    k = weight.shape[-1]
    out = bias[:, None, None]
    padded = F.pad(h, (dw * (k // 2),) * 2 + (dh * (k // 2),) * 2)
    H, W = h.shape[-2:]
    for u in range(k):
        for v in range(k):
            window = padded[:, :, u * dh:u * dh + H, v * dw:v * dw + W]
            out = out + torch.einsum("bchw,oc->bohw", window, weight[:, :, u, v])
    return out


def learner_conv_swapped(h, weight, bias, dilation):
    dw, dh = dilation
    k = weight.shape[-1]
    spread = torch.zeros(*weight.shape[:2], dh * (k - 1) + 1, dw * (k - 1) + 1,
                         dtype=weight.dtype)
    spread[:, :, ::dh, ::dw] = weight
    return F.conv2d(h, spread, bias, padding=(dh * (k // 2), dw * (k // 2)))


def learner_conv_padding_d(h, weight, bias, dilation):
    dh, dw = dilation
    k = weight.shape[-1]
    spread = torch.zeros(*weight.shape[:2], dh * (k - 1) + 1, dw * (k - 1) + 1,
                         dtype=weight.dtype)
    spread[:, :, ::dh, ::dw] = weight
    return F.conv2d(h, spread, bias, padding=dilation)


def learner_conv_plain(h, weight, bias, dilation):
    return F.conv2d(h, weight, bias, padding="same")


def learner_conv_flipped(h, weight, bias, dilation):     # a textbook convolution: kernel turned
    dh, dw = dilation
    k = weight.shape[-1]
    padded = F.pad(h, (dw * (k // 2),) * 2 + (dh * (k // 2),) * 2)
    H, W = h.shape[-2:]
    out = bias.view(1, -1, 1, 1)
    for u in range(k):
        for v in range(k):
            window = padded[:, :, u * dh:u * dh + H, v * dw:v * dw + W]
            out = out + torch.einsum("bchw,oc->bohw", window, weight[:, :, k - 1 - u, k - 1 - v])
    return out


def learner_conv_no_bias(h, weight, bias, dilation):
    dh, dw = dilation
    k = weight.shape[-1]
    spread = torch.zeros(*weight.shape[:2], dh * (k - 1) + 1, dw * (k - 1) + 1,
                         dtype=weight.dtype)
    spread[:, :, ::dh, ::dw] = weight
    return F.conv2d(h, spread, padding=(dh * (k // 2), dw * (k // 2)))


def learner_conv_with_the_keyword(h, weight, bias, dilation):   # the blind tester's w13
    k = weight.shape[-1]
    return F.conv2d(h, weight, bias, padding=(dilation[0] * (k - 1) // 2,
                                              dilation[1] * (k - 1) // 2), dilation=dilation)


def learner_footprint_correct(n, d):
    reach = {0}
    for _ in range(n):
        reach = {r + step for r in reach for step in (-d, 0, d)}
    return max(reach) - min(reach) + 1, len(reach) ** 2


def learner_footprint_box_and_spans(n, d):     # two slips: the holes counted, spans added
    side = n * (2 * d + 1) if n else 1
    return side, (1 + 2 * n * d) ** 2


class LearnerBAM(nn.Module):
    """A learner's own BAM, written with torch calls (not einops) and the exercise's names."""

    def __init__(self, channels, reduction_ratio=16, dilations=(4, 4)):
        super().__init__()
        m = channels // reduction_ratio
        self.fc1, self.bn1, self.fc2 = nn.Linear(channels, m), nn.BatchNorm1d(m), nn.Linear(m, channels)
        self.conv_reduce, self.bn_reduce = nn.Conv2d(channels, m, 1), nn.BatchNorm2d(m)
        self.convs = nn.ModuleList([self._dilated(m, dilations, i) for i in range(len(dilations))])
        self.bns = nn.ModuleList([nn.BatchNorm2d(m) for _ in dilations])
        self.conv_out = nn.Conv2d(m, 1, 1)

    def _dilated(self, m, dilations, i):
        return nn.Conv2d(m, m, 3, padding=dilations[i], dilation=dilations[i])

    def pooled(self, x):
        return x.mean(dim=(2, 3))

    def channel(self, x):
        return self.fc2(torch.relu(self.bn1(self.fc1(self.pooled(x)))))[:, :, None, None]

    def spatial(self, x):
        s = torch.relu(self.bn_reduce(self.conv_reduce(x)))
        for i in range(len(self.convs)):
            s = torch.relu(self.bns[i](self.convs[i](s)))
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
    def _dilated(self, m, dilations, i):
        return nn.Conv2d(m, m, kernel_size=3, padding=1)


class LearnerBAMAuthorsPool(LearnerBAM):
    def pooled(self, x):                           # the authors' ChannelGate
        return F.avg_pool2d(x, x.size(2), stride=x.size(2)).view(x.size(0), -1)


class LearnerBAMBatchStatsAlways(LearnerBAM):
    def spatial(self, x):
        s = torch.relu(self.bn_reduce(self.conv_reduce(x)))
        for conv, bn in zip(self.convs, self.bns):
            s = torch.relu(F.batch_norm(conv(s), None, None, bn.weight, bn.bias, training=True))
        return self.conv_out(s)


class LearnerBAMLessonsTwo(LearnerBAM):
    def spatial(self, x):                          # the lesson's forward, two convs written out
        s = torch.relu(self.bn_reduce(self.conv_reduce(x)))
        if len(self.convs) >= 1:
            s = torch.relu(self.bns[0](self.convs[0](s)))
        if len(self.convs) >= 2:
            s = torch.relu(self.bns[1](self.convs[1](s)))
        return self.conv_out(s)


class LearnerBAMTanh(LearnerBAM):
    def forward(self, x):
        return x * (1 + torch.tanh(self.channel(x) * self.spatial(x)))


def learner_paper_correct(x, mc, ms, gamma_c, beta_c, gamma_s, beta_s):
    c = F.batch_norm(mc, None, None, gamma_c, beta_c, training=True)
    s = F.batch_norm(ms.unsqueeze(1), None, None, gamma_s, beta_s, training=True)
    return x * (1 + torch.sigmoid(c[:, :, None, None] + s))


def learner_paper_per_image(x, mc, ms, gamma_c, beta_c, gamma_s, beta_s):
    c = F.batch_norm(mc, None, None, gamma_c, beta_c, training=True)
    mean = ms.mean(dim=(1, 2), keepdim=True)
    var = ms.var(dim=(1, 2), keepdim=True, unbiased=False)
    s = (ms - mean) / torch.sqrt(var + 1e-5) * gamma_s + beta_s
    return x * (1 + torch.sigmoid(c[:, :, None, None] + s[:, None]))


def learner_paper_unbiased(x, mc, ms, gamma_c, beta_c, gamma_s, beta_s):
    c = (mc - mc.mean(0)) / torch.sqrt(mc.var(0) + 1e-5) * gamma_c + beta_c
    s = (ms - ms.mean()) / torch.sqrt(ms.var() + 1e-5) * gamma_s + beta_s
    return x * (1 + torch.sigmoid(c[:, :, None, None] + s[:, None]))


def learner_paper_keras_eps(x, mc, ms, gamma_c, beta_c, gamma_s, beta_s):
    c = F.batch_norm(mc, None, None, gamma_c, beta_c, training=True, eps=1e-3)
    s = F.batch_norm(ms.unsqueeze(1), None, None, gamma_s, beta_s, training=True, eps=1e-3)
    return x * (1 + torch.sigmoid(c[:, :, None, None] + s))


def learner_paper_bn_modules_in_eval(x, mc, ms, gamma_c, beta_c, gamma_s, beta_s):
    """Fresh BatchNorm layers in eval mode: running statistics 0 and 1, so no normalisation."""
    bn_c, bn_s = nn.BatchNorm1d(mc.shape[1]).double().eval(), nn.BatchNorm2d(1).double().eval()
    c = (bn_c(mc) - bn_c.bias) / bn_c.weight * gamma_c + beta_c
    s = (bn_s(ms[:, None]) - bn_s.bias) / bn_s.weight * gamma_s + beta_s
    return x * (1 + torch.sigmoid(c[:, :, None, None] + s))


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_bam_fuse", learner_fuse_paper_only, "always the paper's sum"),
    ("check_bam_fuse", learner_fuse_transposed, "flattened column by column"),
    ("check_bam_fuse", learner_fuse_tanh, "tanh instead of the sigmoid"),
    ("check_bam_fuse", learner_fuse_tanh_half, "tanh instead of the sigmoid"),
    ("check_dilated_conv", learner_conv_swapped, "dilations of the two axes swapped"),
    ("check_dilated_conv", learner_conv_padding_d, "padding (dh, dw)"),
    ("check_dilated_conv", learner_conv_plain, "dilation 1"),
    ("check_dilated_conv", learner_conv_flipped, "kernel flipped"),
    ("check_dilated_conv", learner_conv_no_bias, "bias forgotten"),
    ("check_bam_block", LearnerBAMMaxPool, "max pooling in the channel branch"),
    ("check_bam_block", LearnerBAMSum, "sum and product swapped"),
    ("check_bam_block", LearnerBAMSigmoidEach, "sigmoid applied to each branch"),
    ("check_bam_block", LearnerBAMNoResidual, "residual forgotten"),
    ("check_bam_block", LearnerBAMUndilated, "dilation 1 in the spatial branch"),
    ("check_bam_block", LearnerBAMTanh, "tanh instead of the sigmoid"),
    ("check_bam_block", LearnerBAMLessonsTwo, "only the first two dilated convs applied"),
    ("check_bam_block", LearnerBAMAuthorsPool, "H×H average pooling"),
    ("check_bam_block", LearnerBAMBatchStatsAlways, "batch statistics in eval mode too"),
    ("check_bam_paper_fuse", learner_paper_keras_eps, "ε = 1e-3"),
    ("check_bam_paper_fuse", learner_paper_per_image, "each image's own map"),
    ("check_bam_paper_fuse", learner_paper_unbiased, "unbiased variance"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


def test_two_slips_in_the_footprint_are_both_named():
    result = CHECKERS["check_spatial_footprint"].run(learner_footprint_box_and_spans,
                                                     verbose=False)
    assert not result.passed
    assert any("spans added" in n for n in result.diagnoses), result.diagnoses
    assert any("every pixel of the box" in n for n in result.diagnoses), result.diagnoses


def test_fresh_batch_norms_in_eval_mode_are_named():
    assert_mistake_named("check_bam_paper_fuse", learner_paper_bn_modules_in_eval,
                         "running statistics (mean 0, variance 1), as in eval mode")


@pytest.mark.parametrize("name,learner", [
    ("check_bam_fuse", learner_fuse_correct),
    ("check_dilated_conv", learner_conv_correct),
    ("check_spatial_footprint", learner_footprint_correct),
    ("check_bam_block", LearnerBAM),
    ("check_bam_paper_fuse", learner_paper_correct),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


class LearnerStub(nn.Module):          # what the exercise notebook hands in before any work
    def __init__(self, channels, reduction_ratio=16, dilations=(4, 4)):
        super().__init__()
        raise NotImplementedError()


def test_a_stub_module_says_not_implemented(capsys):
    result = CHECKERS["check_bam_block"](LearnerStub)
    assert not result.implemented and capsys.readouterr().out.strip() == \
        f"LearnerStub: {NOT_IMPLEMENTED}"  # titled with the learner's class name


def test_a_bam_without_the_module_lists_is_told_which_names(capsys):
    class TwoConvs(nn.Module):                  # the lesson's layout: conv_d1, conv_d2
        def __init__(self, channels, reduction_ratio=16, dilations=(4, 4)):
            super().__init__()
            self.conv_d1 = nn.Conv2d(channels // reduction_ratio, channels // reduction_ratio, 3)

        def forward(self, x):
            return x

    assert not CHECKERS["check_bam_block"](TwoConvs).passed
    out = capsys.readouterr().out
    assert "missing fc1.weight" in out and "unexpected conv_d1.weight" in out, out


def test_reference_meanings():
    """The references mean what their docstrings say, checked against loops, formulas and the
    library."""
    g = torch.Generator().manual_seed(0)
    # the fusion on tokens: token n = i·W + j of image b is pixel (i, j)
    x = torch.randn(2, 4 * 5, 3, dtype=torch.float64, generator=g)
    mc = torch.randn(2, 3, dtype=torch.float64, generator=g)
    ms = torch.randn(2, 4, 5, dtype=torch.float64, generator=g)
    for fusion, op in (("product", torch.mul), ("sum", torch.add)):
        out = lesson02.ref_bam_fuse(x, mc, ms, fusion)
        for b in range(2):
            for i in range(4):
                for j in range(5):
                    for c in range(3):
                        gate = 1 / (1 + torch.exp(-op(mc[b, c], ms[b, i, j])))
                        assert torch.isclose(out[b, i * 5 + j, c], x[b, i * 5 + j, c] * (1 + gate))
    # the dilated conv: one output pixel as the sum over k×k taps (dh, dw) apart
    h = torch.randn(1, 2, 11, 13, dtype=torch.float64, generator=g)
    w = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=g)
    bias = torch.zeros(1, dtype=torch.float64)
    y = lesson02.ref_dilated_conv(h, w, bias, (2, 3))
    assert y.shape == (1, 1, 11, 13)                     # H×W kept
    by_hand = sum(w[0, c, u, v] * h[0, c, 5 + 2 * (u - 2), 6 + 3 * (v - 2)]
                  for c in range(2) for u in range(5) for v in range(5))
    assert torch.isclose(y[0, 0, 5, 6], by_hand)
    # the footprint: measured with autograd on a stack of n dilated convs (all weights 1)
    for n, d in [(0, 2), (1, 1), (2, 4), (3, 2)]:
        size = 2 * n * d + 7
        inp = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        t = inp
        for _ in range(n):
            t = F.conv2d(t, torch.ones(1, 1, 3, 3, dtype=torch.float64), padding=d, dilation=d)
        t[0, 0, size // 2, size // 2].backward()
        rows, cols = (inp.grad[0, 0] != 0).nonzero(as_tuple=True)
        side = (rows.max() - rows.min() + 1).item()
        assert lesson02.ref_spatial_footprint(n, d) == (side, int((inp.grad != 0).sum()))
    assert lesson02.ref_spatial_footprint(2, 4) == (17, 25)         # the lesson's measurement
    # the block equals the library's BAM (official product form) on the same weights
    from attn_tutorial.bam import BAM
    torch.manual_seed(0)
    ref = lesson02.BAMBlockReference(16, reduction_ratio=4, dilations=(2, 2, 2)).double().eval()
    lib = BAM(16, reduction_ratio=4, dilation=2, num_dilated_convs=3).double().eval()
    names = {"fc1": "channel_gate.fc_reduce", "bn1": "channel_gate.bn",
             "fc2": "channel_gate.fc_expand", "conv_reduce": "spatial_gate.reduce",
             "bn_reduce": "spatial_gate.reduce_bn", "convs": "spatial_gate.dilated",
             "bns": "spatial_gate.dilated_bn", "conv_out": "spatial_gate.project"}
    state = {}
    for key, value in ref.state_dict().items():
        first, rest = key.split(".", 1)
        state[f"{names[first]}.{rest}"] = value
    lib.load_state_dict(state)
    xb = torch.randn(2, 16, 7, 9, dtype=torch.float64, generator=g)
    torch.testing.assert_close(ref(xb), lib(xb))
    # mixed dilations: conv i has dilation and padding dilations[i]; none means empty lists
    mixed = lesson02.BAMBlockReference(16, reduction_ratio=4, dilations=(2, 1, 3))
    assert [(c.dilation, c.padding) for c in mixed.convs] == [((2, 2), (2, 2)), ((1, 1), (1, 1)),
                                                              ((3, 3), (3, 3))]
    none = lesson02.BAMBlockReference(16, reduction_ratio=4, dilations=())
    assert len(none.convs) == len(none.bns) == 0
    # the paper's form equals the library's BAM(fusion="paper") in train mode on the same branches
    paper = BAM(8, reduction_ratio=4, dilation=1, fusion="paper").double().train()
    with torch.no_grad():
        for bn in (paper.channel_gate.out_bn, paper.spatial_gate.out_bn):
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.normal_(0.0, 0.3, generator=g)
    xp = torch.randn(3, 8, 5, 6, dtype=torch.float64, generator=g)
    cg, sg = paper.channel_gate, paper.spatial_gate
    mc_raw = cg.fc_expand(cg.relu(cg.bn(cg.fc_reduce(cg.pool(xp)))))
    h_s = sg.relu(sg.reduce_bn(sg.reduce(xp)))
    for conv, bn in zip(sg.dilated, sg.dilated_bn):
        h_s = sg.relu(bn(conv(h_s)))
    ms_raw = sg.project(h_s)[:, 0]
    mine = lesson02.ref_bam_paper_fuse(xp, mc_raw, ms_raw, cg.out_bn.weight, cg.out_bn.bias,
                                       sg.out_bn.weight, sg.out_bn.bias)
    torch.testing.assert_close(mine, paper(xp))


# ------------------------------------------------- boundaries and slips of the new engine
def test_a_dilated_conv_that_special_cases_d_1_without_padding_fails_there():
    from _learner import assert_fails_only_on

    def dilated_conv(h, weight, bias, dilation):
        if dilation == (1, 1):
            return F.conv2d(h, weight, bias)
        return learner_conv_correct(h, weight, bias, dilation)

    assert_fails_only_on("check_dilated_conv", dilated_conv, ["dilation (1, 1)"])


def test_a_dilated_conv_that_drops_the_padding_for_a_1x1_kernel_only_passes():
    def dilated_conv(h, weight, bias, dilation):     # k = 1 needs no padding: a correct shortcut
        if weight.shape[-1] == 1:
            return F.conv2d(h, weight, bias)
        return lesson02.ref_dilated_conv(h, weight, bias, dilation)

    assert CHECKERS["check_dilated_conv"].run(dilated_conv, verbose=False).passed


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


def test_the_printed_footprints_copied_into_a_table_fail_on_the_hidden_cases():
    table = {(n, d): (1 + 2 * n * d, (2 * n + 1) ** 2) for n, d in lesson02.FOOTPRINTS}
    result = CHECKERS["check_spatial_footprint"].run(lambda n, d: table.get((n, d), (0, 0)),
                                                     verbose=False)
    assert not result.passed and result.checks_passed == len(lesson02.FOOTPRINTS)
    assert all("hidden case" in line for line in result.lines if line.startswith("✗"))


def test_the_dilation_keyword_is_refused_in_one_line(capsys):
    """The blind tester's w13: `F.conv2d(..., dilation=...)` computes the right values, but the
    exercise asks for the dilation built by hand."""
    result = CHECKERS["check_dilated_conv"](learner_conv_with_the_keyword)
    out = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert not result.passed and result.checks_passed == 0
    assert len(out) == 1 and "uses `dilation`" in out[0], out
