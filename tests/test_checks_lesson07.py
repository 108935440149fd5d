"""Lesson 07 checkers: the required mistakes are catalogued, a learner's own versions of them are
named, correct versions written differently pass, a second memory parameter under the tie (the
authors' shared-storage way among them) is refused by name, and the references mean what they say. The generic proofs run over every checker in
tests/test_checks.py."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from _learner import assert_catalogued, assert_fails_only_on, assert_mistake_named

from attn_tutorial import cost
from attn_tutorial.checks import CHECKERS, lesson07
from attn_tutorial.external import ExternalAttention, MultiHeadExternalAttention  # references

# The mistakes the issue asks the lesson to recognise, by (part of) their name.
REQUIRED = {
    "check_double_normalise": ["softmax over the memory slots instead of over the pixels",
                               "l1 over the pixels", "one spatial axis only",
                               "divides by the sum alone (no ε)", "F.normalize(p=1)",
                               "max(sum, ε)", "sum + S·ε", "softmax alone"],
    "check_crossover": ["closed form", "≤ instead of <", "one less than the answer",
                        "energy term", "memory products counted as one"],
    "check_multi_head_external_attention": ["(d heads), the head the fast axis",
                                            "merged back the other", "extra tokens",
                                            "all heads together", "scaled by 1/√d",
                                            "softmax over the memory slots", "softmax alone",
                                            "memory_key's transpose used",
                                            "reshaped to heads×S×d instead of transposed",
                                            "head 0's memories used by every head"],
    "check_ea_block": ["detached", "ReLU before the residual sum",
                       "softmax over the memory slots", "both normalisations on the other axis",
                       "softmax alone", "no ε", "scaled by 1/√d"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_required_mistakes_are_catalogued(name):
    assert_catalogued(name, REQUIRED[name])


# ------------------------------------------------------ a learner's own wrong versions
def _pixels_softmax(logits):  # b s h w: over the h·w pixels of each slot
    b, s, h, w = logits.shape
    return logits.reshape(b, s, h * w).softmax(dim=-1).reshape(b, s, h, w)


def learner_softmax_over_memory(logits):
    a = torch.softmax(logits, dim=1)
    return a / (a.sum(dim=1, keepdim=True) + 1e-9)


def learner_official_dims(logits):  # the authors' dim=-1 and dim=1 kept on a 4-d map
    a = F.softmax(logits, dim=-1)
    return a / (1e-9 + a.sum(dim=1, keepdim=True))


def learner_both_axes_swapped(logits):
    a = logits.softmax(dim=1)
    return a / (1e-9 + a.sum(dim=(2, 3), keepdim=True))


def learner_no_eps(logits):
    a = _pixels_softmax(logits)
    return a / a.sum(dim=1, keepdim=True)


def learner_f_normalize(logits):
    return F.normalize(_pixels_softmax(logits), p=1, dim=1)


def learner_clamped(logits):
    a = _pixels_softmax(logits)
    return a / a.sum(dim=1, keepdim=True).clamp_min(1e-9)


def learner_eps_in_every_weight(logits):
    a = _pixels_softmax(logits)
    return a / (a + 1e-9).sum(dim=1, keepdim=True)


def learner_softmax_only(logits):
    return _pixels_softmax(logits)


def learner_closed_form(channels, memory_size=64):
    return math.floor(2 * channels / 3 + 16 * memory_size / 9) + 1


def _walk(channels, memory_size, cheaper):
    c, s, cq = channels, memory_size, channels // 8
    n = 1
    while not cheaper(4 * n * c * c + 4 * n * c * s,
                      2 * n * (2 * c * cq + c * c) + 2 * n * n * (cq + c)):
        n += 1
    return n


def learner_not_strict(channels, memory_size=64):
    return _walk(channels, memory_size, lambda ea, pam: ea <= pam)


def learner_last_not_cheaper(channels, memory_size=64):
    return _walk(channels, memory_size, lambda ea, pam: ea < pam) - 1


def _one_head(t, mk, mv):  # ... n d against one head's memories
    a = torch.softmax(t @ mk.T, dim=-2)
    return (a / (1e-9 + a.sum(dim=-1, keepdim=True))) @ mv.T


def _per_head(tokens, memory_key, memory_value):
    d = memory_key.shape[2]
    return torch.cat([_one_head(t, mk, mv) for t, mk, mv
                      in zip(tokens.split(d, dim=-1), memory_key, memory_value)], dim=-1)


def learner_heads_fast(tokens, memory_key, memory_value):
    b, n, c = tokens.shape
    heads = memory_key.shape[0]
    t = tokens.reshape(b, n, c // heads, heads).permute(0, 3, 1, 2)        # b h n d
    a = torch.softmax(t @ memory_key.transpose(1, 2), dim=-2)
    a = a / (1e-9 + a.sum(dim=-1, keepdim=True))
    out = a @ memory_value.transpose(1, 2)                                  # b h n d
    return out.permute(0, 2, 3, 1).reshape(b, n, c)


def learner_heads_as_tokens(tokens, memory_key, memory_value):
    b, n, c = tokens.shape
    heads, s, d = memory_key.shape
    t = tokens.reshape(b, n, heads, d).permute(0, 2, 1, 3)                 # b h n d
    logits = t @ memory_key.transpose(1, 2)                                 # b h n s
    a = logits.reshape(b, heads * n, s).softmax(dim=1).reshape(b, heads, n, s)
    a = a / (1e-9 + a.sum(dim=-1, keepdim=True))
    return (a @ memory_value.transpose(1, 2)).permute(0, 2, 1, 3).reshape(b, n, c)


def learner_l1_over_all_heads(tokens, memory_key, memory_value):
    b, n, c = tokens.shape
    heads = memory_key.shape[0]
    t = tokens.reshape(b, n, heads, c // heads)                  # b n h d
    a = torch.einsum("bnhd,hsd->bnhs", t, memory_key).softmax(dim=1)
    a = a / (1e-9 + a.sum(dim=(2, 3), keepdim=True))
    return torch.einsum("bnhs,hds->bnhd", a, memory_value).reshape(b, n, c)


def learner_scaled_heads(tokens, memory_key, memory_value):
    return _per_head(tokens / math.sqrt(memory_key.shape[2]), memory_key, memory_value)


def learner_one_shared_memory(tokens, memory_key, memory_value):
    """Section 6's EAMLP: every head against one memory (the first one given)."""
    heads = memory_key.shape[0]
    return _per_head(tokens, memory_key[0].expand(heads, -1, -1),
                     memory_value[0].expand(heads, -1, -1))


def learner_value_reshaped(tokens, memory_key, memory_value):
    return _per_head(tokens, memory_key, memory_value.reshape(memory_key.shape).transpose(1, 2))


def _double_norm(logits):  # b n s, tokens first
    a = torch.softmax(logits, dim=1)
    return a / (1e-9 + a.sum(dim=2, keepdim=True))


class _Block(nn.Module):
    """A learner's block: plain tensor calls, the tie as one parameter used twice."""

    def __init__(self, channels, memory_size=64, tie_memories=True):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.memory_key = nn.Linear(channels, memory_size, bias=False)
        if not tie_memories:
            self.memory_value = nn.Linear(memory_size, channels, bias=False)
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)

    def value(self):
        if hasattr(self, "memory_value"):
            return self.memory_value.weight
        return self.memory_key.weight.T

    def branch(self, x):
        b, c, h, w = x.shape
        t = self.conv_in(x).flatten(2).transpose(1, 2)            # b n c
        attn = _double_norm(t @ self.memory_key.weight.T)         # b n s
        out = (attn @ self.value().T).transpose(1, 2).reshape(b, c, h, w)
        return self.norm(self.conv_out(out))

    def forward(self, x):
        return F.relu(x + self.branch(x))


class LearnerUntied(_Block):
    """Always two memories, whatever tie_memories says."""

    def __init__(self, channels, memory_size=64, tie_memories=True):
        super().__init__(channels, memory_size, tie_memories=False)


class LearnerDetached(_Block):
    """The tie with M_kᵀ detached where it is the value memory."""

    def value(self):
        if hasattr(self, "memory_value"):
            return self.memory_value.weight
        return self.memory_key.weight.detach().T


class LearnerAxesSwapped(_Block):
    def branch(self, x):
        b, c, h, w = x.shape
        t = self.conv_in(x).flatten(2).transpose(1, 2)            # b n c
        a = torch.softmax(t @ self.memory_key.weight.T, dim=2)    # over the slots
        a = a / (1e-9 + a.sum(dim=1, keepdim=True))               # l1 over the pixels
        out = (a @ self.value().T).transpose(1, 2).reshape(b, c, h, w)
        return self.norm(self.conv_out(out))


class LearnerAlwaysTied(_Block):
    """One memory, whatever tie_memories says."""

    def __init__(self, channels, memory_size=64, tie_memories=True):
        super().__init__(channels, memory_size, tie_memories=True)


class LearnerReluFirst(_Block):
    def forward(self, x):
        return x + F.relu(self.branch(x))


class LearnerTiedByStorage(_Block):
    """The authors' way: a second Conv1d-shaped memory whose weight is a view of M_k's storage."""

    def __init__(self, channels, memory_size=64, tie_memories=True):
        super().__init__(channels, memory_size, tie_memories)
        if tie_memories:
            self.memory_value = nn.Linear(memory_size, channels, bias=False)
            self.memory_value.weight = nn.Parameter(self.memory_key.weight.data.t())

    def value(self):
        return self.memory_value.weight


@pytest.mark.parametrize("name,learner,phrase", [
    ("check_double_normalise", learner_softmax_over_memory, "softmax over the memory slots"),
    ("check_double_normalise", learner_official_dims, "one spatial axis only"),
    ("check_double_normalise", learner_both_axes_swapped, "l1 over the pixels"),
    ("check_double_normalise", learner_no_eps, "divides by the sum alone (no ε)"),
    ("check_double_normalise", learner_f_normalize, "F.normalize(p=1)"),
    ("check_double_normalise", learner_clamped, "max(sum, ε)"),
    ("check_double_normalise", learner_eps_in_every_weight, "sum + S·ε"),
    ("check_double_normalise", learner_softmax_only, "softmax alone"),
    ("check_crossover", learner_closed_form, "closed form"),
    ("check_crossover", learner_not_strict, "≤ instead of <"),
    ("check_crossover", learner_last_not_cheaper, "one less than the answer"),
    ("check_multi_head_external_attention", learner_heads_fast, "the head the fast axis"),
    ("check_multi_head_external_attention", learner_heads_as_tokens, "extra tokens"),
    ("check_multi_head_external_attention", learner_l1_over_all_heads, "all heads together"),
    ("check_multi_head_external_attention", learner_scaled_heads, "scaled by 1/√d"),
    ("check_multi_head_external_attention", learner_one_shared_memory, "head 0's memories"),
    ("check_multi_head_external_attention", learner_value_reshaped, "reshaped to heads×S×d"),
    ("check_ea_block", LearnerDetached, "detached"),
    ("check_ea_block", LearnerAxesSwapped, "both normalisations on the other axis"),
    ("check_ea_block", LearnerReluFirst, "ReLU before the residual sum"),
])
def test_a_learners_own_version_of_a_mistake_is_named(name, learner, phrase):
    assert_mistake_named(name, learner, phrase)


def learner_double_norm_correct(logits):
    m = logits.amax(dim=(2, 3), keepdim=True)
    e = (logits - m).exp()
    a = e / e.sum(dim=(2, 3), keepdim=True)
    return a / (1e-9 + a.sum(dim=1, keepdim=True))


def learner_crossover_correct(channels, memory_size=64):
    return _walk(channels, memory_size, lambda ea, pam: ea < pam)


def learner_multi_head_correct(tokens, memory_key, memory_value):
    return _per_head(tokens, memory_key, memory_value)


@pytest.mark.parametrize("name,learner", [
    ("check_double_normalise", learner_double_norm_correct),
    ("check_crossover", learner_crossover_correct),
    ("check_multi_head_external_attention", learner_multi_head_correct),
    ("check_ea_block", _Block),
])
def test_a_learners_own_correct_version_passes(name, learner):
    assert CHECKERS[name](learner, verbose=False).passed


@pytest.mark.parametrize("learner", [LearnerUntied, LearnerTiedByStorage])
def test_a_second_memory_parameter_under_the_tie_is_refused_by_name(learner, capsys):
    """With tie_memories=True a second memory parameter fails every tied case with one line
    that names it, whether it has storage of its own or is a view of M_k's (the authors' way,
    equal to the tie under plain SGD); the untied cases pass."""
    result = CHECKERS["check_ea_block"](learner)
    out = capsys.readouterr().out
    tied = [c for c in CHECKERS["check_ea_block"].cases if c.build.get("tie_memories", True)]
    assert not result.passed
    assert out.count("second parameter, `memory_value.weight`") == len(tied) == 5
    assert out.count("✓") == len(CHECKERS["check_ea_block"].cases) - len(tied) == 2


def test_the_detached_value_memory_differs_only_after_the_step(capsys):
    """M_v = M_kᵀ.detach() gives the right output and input gradient; only M_k after one SGD
    step tells (on the S = 1 case by 2e-7 only, the others by far more)."""
    CHECKERS["check_ea_block"](LearnerDetached)
    out = capsys.readouterr().out
    tied = [c for c in CHECKERS["check_ea_block"].cases if c.build.get("tie_memories", True)]
    lines = [line for line in out.splitlines() if line.startswith("✗")]
    assert len(lines) == len(tied)
    assert all("`memory_key.weight` after one SGD step (lr 0.1): wrong values" in line
               for line in lines)


def test_a_missing_parameter_is_reported_by_name(capsys):
    class NoNorm(_Block):
        def __init__(self, channels, memory_size=64, tie_memories=True):
            super().__init__(channels, memory_size, tie_memories)
            del self.norm

        def branch(self, x):
            return torch.zeros_like(x)

    assert not CHECKERS["check_ea_block"](NoNorm).passed
    assert "missing norm.weight" in capsys.readouterr().out


def test_the_underflow_cases_underflow_and_the_tiny_case_does_not():
    """Exp underflows to 0 from a gap of 746 in float64 and of 104 in float32; the cases' sunk
    pixels get exactly 0 in every slot there, and a positive total below ε = 1e-9 (but above
    F.normalize's 1e-12) in the gap-24 case."""
    for dtype, first_zero in ((torch.float64, 746), (torch.float32, 104)):
        weight = lambda gap: torch.tensor([0.0, -gap], dtype=dtype).softmax(0)[1]  # noqa: E731
        assert weight(first_zero - 1) > 0 and weight(first_zero) == 0
    cases = {c.name: c for c in CHECKERS["check_double_normalise"].cases}
    for name, (i, j) in (("24 below", (2, 3)), ("800 below", (1, 4)), ("120 below", (0, 2))):
        (logits,) = next(c for n, c in cases.items() if name in n).inputs()
        flat = logits.flatten(2).softmax(dim=-1).view_as(logits)
        total = flat[:, :, i, j].sum(dim=1)                    # what the pixel receives
        if name == "24 below":
            assert logits.dtype == torch.float64
            assert (total > 1e-12).all() and (total < 1e-9).all()
        else:
            assert (total == 0).all()
            assert logits.dtype == (torch.float32 if name == "120 below" else torch.float64)
            assert torch.isnan(lesson07.ref_double_normalise(logits, eps_how="none")).any()
            assert torch.isfinite(lesson07.ref_double_normalise(logits)).all()


def test_f_normalize_keeps_an_underflowing_pixel_at_0_but_scales_up_a_tiny_one():
    """What the F.normalize mistake's name says: max(sum, 1e-12) gives 0 where everything
    underflowed, and weights summing to 1 where the pixel receives between 1e-12 and 1e-9."""
    cases = {c.name: c for c in CHECKERS["check_double_normalise"].cases}
    (tiny,) = next(c for n, c in cases.items() if "24 below" in n).inputs()
    (zero,) = next(c for n, c in cases.items() if "800 below" in n).inputs()
    floored = F.normalize(_pixels_softmax(tiny), p=1, dim=1)[:, :, 2, 3].sum(dim=1)
    right = lesson07.ref_double_normalise(tiny)[:, :, 2, 3].sum(dim=1)
    assert torch.allclose(floored, torch.ones_like(floored)) and (right < 0.2).all()
    assert (F.normalize(_pixels_softmax(zero), p=1, dim=1)[:, :, 1, 4] == 0).all()


def test_reference_meanings():
    """The references against loops written from the equations."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)   # b s h w
    want = torch.zeros_like(logits)
    for b in range(2):
        for s in range(3):
            z = sum(math.exp(logits[b, s, i, j]) for i in range(2) for j in range(3))
            for i in range(2):
                for j in range(3):
                    want[b, s, i, j] = math.exp(logits[b, s, i, j]) / z
        for i in range(2):
            for j in range(3):
                want[b, :, i, j] = want[b, :, i, j] / (1e-9 + want[b, :, i, j].sum())
    assert torch.allclose(lesson07.ref_double_normalise(logits), want)

    heads, d, S = 2, 3, 4
    tokens = torch.randn(2, 5, heads * d, generator=g, dtype=torch.float64)
    mk = torch.randn(heads, S, d, generator=g, dtype=torch.float64)
    mv = torch.randn(heads, d, S, generator=g, dtype=torch.float64)
    out = torch.zeros_like(tokens)
    for h in range(heads):
        part = tokens[..., h * d:(h + 1) * d]                  # head h: a contiguous block
        e = torch.exp(part @ mk[h].T)                           # b n s, head h's memory
        a = e / e.sum(dim=1, keepdim=True)
        a = a / (1e-9 + a.sum(dim=2, keepdim=True))
        for b in range(2):
            for n in range(5):
                for c in range(d):
                    out[b, n, h * d + c] = sum(a[b, n, s] * mv[h, c, s] for s in range(S))
    assert torch.allclose(lesson07.ref_multi_head_external_attention(tokens, mk, mv), out)

    ref = lesson07.EABlockReference(6, 5).double().eval()
    lib = ExternalAttention(6, 5).double().eval()
    lib.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, 3, 4, generator=g, dtype=torch.float64)
    assert torch.allclose(ref(x), lib(x))


def test_multi_head_reference_is_the_librarys_core_on_the_heads():
    """The library's MultiHeadExternalAttention splits (heads d), shares M_k and M_v over the
    heads and applies external_attention per head: with its biases zero, its core is ours with
    the one memory repeated for every head."""
    torch.manual_seed(0)
    lib = MultiHeadExternalAttention(8, num_heads=2, expansion=1, memory_size=3).double()
    with torch.no_grad():
        lib.memory_key.bias.zero_()
        lib.memory_value.bias.zero_()
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    inner = lib.expand(x)
    core = lesson07.ref_multi_head_external_attention(
        inner, lib.memory_key.weight.expand(lib.heads, -1, -1),
        lib.memory_value.weight.expand(lib.heads, -1, -1))
    assert torch.allclose(lib.proj(core), lib(x))


def test_crossover_reference_walks_the_cost_model():
    """The reference's rational bound against a walk over attn_tutorial.cost's FLOP counts,
    and against the lesson's closed form 2C/3 + 16S/9 where C is a multiple of 8."""
    checker = CHECKERS["check_crossover"]
    for case in checker.cases:
        args = case.inputs()
        c, s = args[0], (args[1] if len(args) > 1 else 64)
        n = 1
        while cost.external_attention(1, c, n, 1, s).flops >= cost.pam(1, c, n, 1).flops:
            n += 1
        assert lesson07.ref_crossover(*args) == n, case.name
        if c % 8 == 0:
            bound = Fraction(2 * c, 3) + Fraction(16 * s, 9)
            assert n == math.floor(bound) + 1, case.name


def test_ties_are_cases_of_the_crossover():
    """The cases named "the counts tie" are configurations where EA = PAM at an integer N."""
    for case in CHECKERS["check_crossover"].cases:
        if "tie" in case.name:
            c, s = case.inputs()
            n = lesson07.ref_crossover(c, s) - 1
            assert cost.external_attention(1, c, n, 1, s).flops == cost.pam(1, c, n, 1).flops


# ------------------------------------------------- boundaries and slips of the new engine
@pytest.mark.parametrize("with_l1", [True, False])
def test_one_softmax_over_all_entries_is_named_with_or_without_the_l1_step(with_l1):
    def double_normalise(logits):
        a = logits.flatten(1).softmax(dim=-1).view_as(logits)
        return a / (1e-9 + a.sum(dim=1, keepdim=True)) if with_l1 else a

    assert_mistake_named("check_double_normalise", double_normalise,
                         "one softmax over all slots and pixels")


def test_an_ea_block_without_a_default_memory_size_fails_on_the_default_call():
    class EABlock(lesson07.EABlockReference):
        def __init__(self, channels, memory_size):
            super().__init__(channels, memory_size)

    result = CHECKERS["check_ea_block"].run(EABlock, verbose=False)
    assert result.status == "error"
    assert "S not given" in next(l for l in result.lines if l.startswith("✗"))


def test_a_crossover_without_the_default_memory_size_fails_only_on_the_default_calls():
    def crossover(channels, memory_size):
        return learner_crossover_correct(channels, memory_size)

    assert_fails_only_on("check_crossover", crossover, ["S not given"])


def test_a_float32_answer_to_a_float64_case_and_back_fails_on_the_float64_cases_only():
    """The float32 case is judged at float32's tolerance; the float64 cases at float64's."""
    def double_normalise(logits):
        return learner_double_norm_correct(logits.float()).to(logits.dtype)

    assert_fails_only_on("check_double_normalise", double_normalise,
                         [c.name for c in CHECKERS["check_double_normalise"].cases
                          if "float32" not in c.name])


def test_a_block_that_ignores_tie_memories_false_fails_on_the_untied_cases_only():
    lines = assert_fails_only_on("check_ea_block", LearnerAlwaysTied, ["tie_memories=False"])
    assert all("memory_value.weight" in line for line in lines if line.startswith("✗"))


def test_the_librarys_own_module_is_refused(capsys):
    """The library's ExternalAttention has the exercise's names and computes it: handed in as
    the answer it is refused before it runs, by the name of what it uses."""
    result = CHECKERS["check_ea_block"](ExternalAttention)
    out = capsys.readouterr().out
    assert not result.passed and "attn_tutorial.external.ExternalAttention" in out


def test_a_table_of_the_printed_crossovers_fails_on_the_hidden_cases_only():
    """A lookup table of the printed answers (the closed form elsewhere) fails the hidden
    cases, which cover C below and above 100 and C not a multiple of 8."""
    checker = CHECKERS["check_crossover"]
    shown = {tuple(c.inputs()): lesson07.ref_crossover(*c.inputs())
             for c in checker.cases if not c.hidden}

    def crossover(channels, memory_size=64):
        known = shown.get((channels, memory_size)) or shown.get((channels,))
        return known if known is not None else 1

    hidden = [c for c in checker.cases if c.hidden]
    assert len(hidden) == 5
    drawn = [c.inputs() for c in hidden]
    assert any(c < 100 for c, _ in drawn) and any(c >= 100 for c, _ in drawn)
    assert any(c % 8 for c, _ in drawn)
    assert all(8 <= c <= 2048 and 1 <= s <= 256 for c, s in drawn)
    assert_fails_only_on("check_crossover", crossover, [c.name for c in hidden])


def test_an_extra_parameter_that_is_not_a_memory_is_not_called_a_second_memory(capsys):
    class BiasedOut(_Block):
        def __init__(self, channels, memory_size=64, tie_memories=True):
            super().__init__(channels, memory_size, tie_memories)
            self.conv_out = nn.Conv2d(channels, channels, 1, bias=True)

    assert not CHECKERS["check_ea_block"](BiasedOut).passed
    out = capsys.readouterr().out
    assert "unexpected conv_out.bias" in out and "second parameter" not in out
