"""Checkers for lesson 03 (PSA, EPSANet): exercises in ``solutions/03_psa.ipynb``, in this order.

1. ``check_psa_param_count`` (predict): the parameters of any PSA configuration, in the code's
   full-input form and the paper's split-input form (an ``int``), over many configurations.
2. ``check_psa_weight_range`` (predict): how far sigmoid-then-softmax lets each scale's weight and
   a channel's mean kernel k̄ = Σ a_s k_s move, for any list of kernels (four floats).
3. ``check_scale_weights`` (build): the shared SE and the softmax over scales on the
   *concatenated* layout, B×(S·C)×H×W -> B×(S·C)×1×1 (the lesson works on a stacked B×S×C).
4. ``check_paper_psa`` (extend, a module exercise): PSA as the paper draws it, the input split
   into S channel slices (branch s convolves only the s-th) and one SE per scale, the S SEs
   written as grouped 1×1 convs (the lesson builds the code's form: full input, one shared SE).

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference with
a knob turned. Slips that change *which* parameters exist (a separate SE per branch, groups
ignored) cannot be run on the reference's weights, so they are caught where they show: in the
parameter count of exercise 1.
"""

from __future__ import annotations

import itertools
import math
from functools import partial
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import einsum, rearrange, reduce

from attn_tutorial._init import resnet_conv_bn_init
from attn_tutorial.checks._core import Case, Mistake, Checker, hidden_cases, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "03_psa"  # exercises/03_psa.ipynb holds these exercises, in this order
__all__ = ["check_psa_param_count", "check_psa_weight_range", "check_scale_weights",
           "check_paper_psa"]


# --------------------------------------------------------------- 1. the parameter count
def ref_psa_param_count(in_channels: int, planes: int, conv_kernels: Sequence[int],
                        conv_groups: Sequence[int], se_reduction: int = 16,
                        branch_input: str = "full", *, se: str = "shared",
                        use_groups: bool = True, inputs: str = "as_asked",
                        se_width: str = "split", se_bias: bool = True,
                        conv_bias: bool = False, fixed_reduction: int | None = None) -> int:
    """Parameters of ``PSA(in_channels, planes, conv_kernels, conv_groups=conv_groups,
    se_reduction=se_reduction, branch_input=branch_input)``.

    S = len(conv_kernels) branches of Ps = planes / S output channels; conv s reads C_b channels
    (in_channels for "full", in_channels / S for "split") and has k_s² · (C_b / g_s) · Ps weights,
    no bias; one SE (Ps -> Ps // r -> Ps, with biases) is shared by all branches.

    Knobs: ``se`` ("per_branch": S separate SEs), ``use_groups`` (False: every conv dense),
    ``inputs`` ("full": every branch reads all in_channels whatever branch_input says;
    "swapped": full and split exchanged), ``se_width`` ("planes": the SE on all planes
    channels), ``se_bias`` (False: the SE's biases forgotten), ``conv_bias`` (True: a bias
    counted in every branch conv), ``fixed_reduction`` (an r used whatever se_reduction is).
    """
    S = len(conv_kernels)
    ps = planes // S
    split = branch_input == "split"
    if inputs == "full":
        split = False
    elif inputs == "swapped":
        split = not split
    cin = in_channels // S if split else in_channels
    convs = 0
    for k, g in zip(conv_kernels, conv_groups):
        g = g if use_groups else 1
        convs += k * k * (cin // g) * ps + (ps if conv_bias else 0)
    width = planes if se_width == "planes" else ps
    hidden = width // (fixed_reduction or se_reduction)
    one_se = 2 * width * hidden + ((hidden + width) if se_bias else 0)
    return convs + one_se * (S if se == "per_branch" else 1)


def _count_case(in_channels, planes, kernels, groups, reduction=None, branch_input=None) -> Case:
    args = (in_channels, planes, tuple(kernels), tuple(groups))
    name = f"in {in_channels}, planes {planes}, k {tuple(kernels)}, g {tuple(groups)}"
    if reduction is not None:
        args += (reduction,)
        name += f", r {reduction}"
    if branch_input is not None:
        args += (branch_input,)
        name += f", {branch_input}"
    return Case(name, lambda g, a=args: a)


_F, _S = "full", "split"
PARAM_COUNT_CASES = [
    _count_case(64, 64, (3, 5, 7, 9), (1, 4, 8, 16), 16, _F),     # the official PSAModule(64, 64)
    _count_case(64, 64, (3, 5, 7, 9), (1, 4, 8, 16), 16, _S),     # the paper's form of it
    _count_case(128, 256, (3, 5, 7, 9), (1, 4, 8, 16), 16, _F),   # in != planes
    _count_case(128, 256, (3, 5, 7, 9), (1, 4, 8, 16), 16, _S),
    _count_case(256, 128, (3, 5, 7, 9), (2, 4, 8, 16), 8, _S),    # the rule G = 2^((K-1)/2)
    _count_case(36, 108, (3, 5, 7), (1, 3, 6), 4, _F),            # three scales
    _count_case(36, 108, (3, 5, 7), (1, 3, 6), 4, _S),
    _count_case(64, 64, (3, 5, 7, 9), (1, 1, 1, 1), 4, _F),       # dense, as the zoo's PSA
    _count_case(64, 64, (3, 5, 7, 9), (1, 1, 1, 1), 4, _S),
    _count_case(60, 40, (1, 3), (2, 5), 2, _S),                   # a 1×1 kernel, S = 2
    _count_case(30, 90, (3, 5, 7, 9, 11), (1, 1, 3, 3, 6), 3, _F),  # five scales
    _count_case(30, 90, (3, 5, 7, 9, 11), (1, 1, 3, 3, 1), 3, _S),
    _count_case(12, 24, (2, 4), (1, 2), 2, _F),                   # even kernels, one parity
    # boundaries: a single scale (split = full); one input channel; the SE hidden width 1
    # (Ps = r); r = 1 (hidden = Ps); Ps // r with remainder 1 and 4; groups = Ps (one input
    # channel per output channel of a split branch)
    _count_case(16, 32, (3,), (1,), 4, _F),
    _count_case(16, 32, (3,), (1,), 4, _S),
    _count_case(1, 8, (3, 5), (1, 1), 4, _F),
    _count_case(8, 48, (3, 5, 7, 9), (1, 1, 1, 1), 12, _S),       # Ps = r = 12: hidden 1
    _count_case(8, 8, (3, 5), (1, 2), 1, _S),                     # r = 1
    _count_case(21, 21, (5, 7, 9), (1, 1, 7), 3, _F),             # Ps = 7, r = 3: remainder 1
    _count_case(24, 72, (3, 5, 7), (1, 2, 4), 5, _F),             # Ps = 24, r = 5: remainder 4
    _count_case(48, 48, (3, 5, 7), (1, 4, 16), 2, _S),            # g = Ps = 16 = C_in / S
    # default arguments: branch_input not given ("full"); se_reduction not given either (16)
    _count_case(64, 128, (3, 5, 7, 9), (1, 4, 8, 16), 8),
    _count_case(64, 128, (3, 5, 7, 9), (1, 4, 8, 16)),
]


def _draw_count(rng) -> tuple:
    """A legal configuration: 1–5 scales, kernels 1–12 of one parity (so that the library's PSA
    builds it too), r 1–8, Ps // r ≥ 1 with any remainder, each group count a common divisor of
    its branch's input and output channels."""
    s, r, parity = rng.randint(1, 5), rng.randint(1, 8), rng.randint(1, 2)
    g0 = rng.choice((1, 2, 4))  # a group count both channel numbers allow
    ps = -(-(r * rng.randint(1, 3) + rng.randint(0, r - 1)) // g0) * g0
    reads = g0 * rng.randint(1, 8)
    common = [g for g in range(1, min(reads, ps) + 1) if reads % g == 0 and ps % g == 0]
    form = rng.choice((_F, _S))
    return (reads * s if form == _S else reads, ps * s,
            tuple(2 * rng.randint(0, 5) + parity for _ in range(s)),
            tuple(rng.choice(common) for _ in range(s)), r, form)


PARAM_COUNT_HIDDEN = hidden_cases("hidden configuration", _draw_count, count=5, seed=3)

check_psa_param_count = register(
    Checker(
        "psa_param_count",
        exercise="psa_param_count",
        tier="predict",
        reference=ref_psa_param_count,
        cases=PARAM_COUNT_CASES + PARAM_COUNT_HIDDEN,
        mistakes=[
            Mistake("a separate SE per branch: the official code shares one SE by all the scales",
                    partial(ref_psa_param_count, se="per_branch")),
            Mistake("groups ignored: every branch conv counted as a dense conv",
                    partial(ref_psa_param_count, use_groups=False)),
            Mistake('for branch_input="split" your count has every branch reading all '
                    "in_channels: there branch s reads only its in_channels / S slice",
                    partial(ref_psa_param_count, inputs="full")),
            Mistake('"full" and "split" exchanged: your count has the branches reading '
                    'in_channels / S channels for "full" and all of them for "split"',
                    partial(ref_psa_param_count, inputs="swapped")),
            Mistake("the SE on all planes channels: it scores one branch of planes / S channels",
                    partial(ref_psa_param_count, se_width="planes")),
            Mistake("the SE's biases forgotten (its two 1×1 convs have biases)",
                    partial(ref_psa_param_count, se_bias=False)),
            Mistake("a bias counted in the branch convs (they have none)",
                    partial(ref_psa_param_count, conv_bias=True)),
            Mistake("se_reduction = 16 used whatever se_reduction is given",
                    partial(ref_psa_param_count, fixed_reduction=16)),
        ],
    )
)


# ------------------------------------------------- 2. the range sigmoid-then-softmax allows
def ref_psa_weight_range(conv_kernels: Sequence[int], *, score_range: str = "sigmoid",
                         on: str = "best", others: int = -1, independent: bool = False,
                         dtype: torch.dtype | None = None) -> tuple[float, float, float, float]:
    """(inf a_s, sup a_s, inf k̄, sup k̄) over all SE scores z ∈ (0, 1)^S, a = softmax(z) over the
    S scales, k̄ = Σ_s a_s k_s.

    a_s = e^{z_s} / Σ_j e^{z_j} with each e^{z_j} in (1, e): a_s is smallest with z_s -> 0 and
    the others -> 1, largest the other way round. k̄ is a ratio of two linear functions of
    u = e^z on the box (1, e)^S, so its extremes are at corners: u_s = e on some set of scales,
    1 on the rest. At the supremum the set holds every kernel above the supremum (raising such a
    u_s raises k̄) and none below, so it is the m largest kernels for some m = 0 … S: the bound
    is the best of those S + 1 corners (the infimum likewise with the m smallest).

    Knobs: ``score_range`` ("raw": no sigmoid, z any real: a in (0, 1), k̄ in (min k, max k);
    "raw_always": the same also for S = 1, where the one weight is 1),
    ``on`` ("largest": only the single largest (smallest) kernel at z = 1; "two": always the two
    largest; "given": the corners taken over the kernels in the order given, as if sorted),
    ``others`` (1: S competing scales in the weight bound instead of S − 1; 2: the same, with
    S = 1 kept at the weight 1), ``independent`` (every weight at its own extreme at once, so
    they no longer sum to 1), ``dtype`` (float32: each bound rounded to a float32 number).
    """
    if dtype is not None:
        return tuple(float(torch.tensor(v, dtype=dtype))
                     for v in ref_psa_weight_range(conv_kernels, score_range=score_range, on=on,
                                                   others=others, independent=independent))
    S = len(conv_kernels)
    if score_range in ("raw", "raw_always"):
        if S == 1 and score_range == "raw":
            return (1.0, 1.0, float(conv_kernels[0]), float(conv_kernels[0]))
        return (0.0, 1.0, float(min(conv_kernels)), float(max(conv_kernels)))
    e = math.e
    n_others = S - 1 if others < 0 or (others == 2 and S == 1) else S
    w_low, w_high = 1 / (1 + n_others * e), e / (e + n_others)
    ks = list(conv_kernels) if on == "given" else sorted(conv_kernels)
    if independent:
        return (w_low, w_high, w_high * ks[0] + w_low * sum(ks[1:]),
                w_high * ks[-1] + w_low * sum(ks[:-1]))
    counts = {"best": range(S + 1), "largest": [min(1, S)], "two": [min(2, S)]}.get(on, range(S + 1))

    def corner(big: Sequence[int], rest: Sequence[int]) -> float:
        return (e * sum(big) + sum(rest)) / (e * len(big) + len(rest))

    high = max(corner(ks[S - m:], ks[:S - m]) for m in counts)
    low = min(corner(ks[:m], ks[m:]) for m in counts)
    return (w_low, w_high, low, high)


def _range_case(kernels: Sequence[int]) -> Case:
    return Case(f"conv_kernels {tuple(kernels)}", lambda g, k=tuple(kernels): (k,))


WEIGHT_RANGE_CASES = [_range_case(k) for k in [
    (3, 5, 7, 9),                     # the lesson's kernels: k̄ in (5.08, 6.92)
    (3, 5, 7),                        # S = 3: the best corner is the largest kernel alone
    (3, 5),
    (3, 5, 7, 9, 11),
    (3, 5, 7, 9, 11, 13, 15, 17),     # S = 8
    (1, 3, 5, 7, 9, 11, 13, 15, 17, 19),  # S = 10
    (9, 7, 5, 3),                     # unsorted: the kernels may come in any order
    (5, 9, 3, 7),
    (7, 3),
    (3, 3, 9),                        # repeated kernels
    (3, 9, 9),
    (5, 5, 5, 5, 13),                 # one far kernel
    (3, 5, 7, 99),
    (1, 2, 3, 4, 5, 6),               # consecutive, even kernels allowed
    (2, 4),
    (1, 100),                         # a wide gap
    # boundaries: a single scale (its weight is exactly 1, k̄ = k); all kernels equal
    (3,),
    (1,),
    (4, 4, 4),
]]
WEIGHT_RANGE_HIDDEN = hidden_cases(
    "hidden kernel list",
    lambda rng: (tuple(rng.randint(1, 15) for _ in range(rng.randint(1, 8))),), count=5, seed=4)


def _float32_values(out, conv_kernels) -> bool:
    """Four floats that are float32 numbers (each survives a round trip through float32) and
    agree with the answer to float32 precision: computed in float32 somewhere inside."""
    want = ref_psa_weight_range(conv_kernels)
    return (isinstance(out, tuple) and len(out) == 4
            and all(isinstance(v, float) and float(torch.tensor(v, dtype=torch.float32)) == v
                    and math.isclose(v, w, rel_tol=1e-5) for v, w in zip(out, want)))

check_psa_weight_range = register(
    Checker(
        "psa_weight_range",
        exercise="psa_weight_range",
        tier="predict",
        reference=ref_psa_weight_range,
        cases=WEIGHT_RANGE_CASES + WEIGHT_RANGE_HIDDEN,
        mistakes=[
            Mistake("the sigmoid left out: your bounds are those of a softmax of unbounded "
                    "scores, weights in (0, 1) and k̄ between the smallest and largest kernel",
                    partial(ref_psa_weight_range, score_range="raw"),
                    variants=(partial(ref_psa_weight_range, score_range="raw_always"),)),
            Mistake("only the single largest kernel's score at 1 for the supremum of k̄ (and the "
                    "smallest for the infimum): for 3, 5, 7, 9 that gives 6.90, but 7 and 9 both "
                    "at 1 give 6.92", partial(ref_psa_weight_range, on="largest")),
            Mistake("always the two largest kernels at 1 (the corner that wins for 3, 5, 7, 9, "
                    "not for every list)", partial(ref_psa_weight_range, on="two")),
            Mistake("the kernels taken in the order given, as if sorted: conv_kernels may come "
                    "in any order", partial(ref_psa_weight_range, on="given")),
            Mistake("S competing scales in the weight bound instead of the S − 1 others: "
                    "1/(1 + S·e) and e/(e + S)", partial(ref_psa_weight_range, others=1),
                    variants=(partial(ref_psa_weight_range, others=2),)),
            Mistake("computed in float32 (e or the weights as float32 tensors): the bounds "
                    "are right only to about 1e-7, float64 precision is asked",
                    partial(ref_psa_weight_range, dtype=torch.float32), holds=_float32_values),
            Mistake("every weight at its own extreme at once: one at e/(e + S − 1), the others at "
                    "1/(1 + (S − 1)e), which do not sum to 1",
                    partial(ref_psa_weight_range, independent=True)),
        ],
    )
)


# ---------------------------------- 3. shared SE, softmax over scales, on the concatenated map
def ref_scale_weights(x: torch.Tensor, num_scales: int, w1: torch.Tensor, b1: torch.Tensor,
                      w2: torch.Tensor, b2: torch.Tensor, *, split: str = "(s c)",
                      merge: str = "(s c)", pool: str = "mean", relu: bool = True,
                      sigmoid: bool = True, softmax: str = "scale") -> torch.Tensor:
    """x B×(S·C)×H×W, the S branch outputs concatenated along channels in branch order (channels
    s·C … (s+1)·C − 1 are scale s); one SE (w1 D×C×1×1, b1 D, w2 C×D×1×1, b2 C: 1×1 conv
    weights) applied to every scale; returns the softmax over the scales of
    sigmoid(w2 · relu(w1 · GAP + b1) + b2) in x's channel layout, B×(S·C)×1×1.

    Knobs: ``split`` / ``merge`` ("(c s)": the channel axis read / written scale-minor, the
    interleaved layout), ``pool`` ("max"), ``relu`` (False), ``sigmoid`` (False), ``softmax``
    ("channel": over the channels; "all": over all S·C channels of an image; "none": the sigmoid
    scores as they are; "negated": the softmax of −scores).
    """
    pooled = reduce(x, f"b {split} h w -> b s c", pool, s=num_scales)
    hidden = einsum(pooled, w1[:, :, 0, 0], "b s c, d c -> b s d") + b1
    if relu:
        hidden = F.relu(hidden)
    z = einsum(hidden, w2[:, :, 0, 0], "b s d, c d -> b s c") + b2
    scores = torch.sigmoid(z) if sigmoid else z
    if softmax == "scale":
        att = scores.softmax(dim=1)
    elif softmax == "negated":  # exp(max − s): the stable-softmax shift the wrong way round
        att = (-scores).softmax(dim=1)
    elif softmax == "channel":
        att = scores.softmax(dim=2)
    elif softmax == "all":
        att = rearrange(rearrange(scores, "b s c -> b (s c)").softmax(dim=1), "b (s c) -> b s c",
                        s=num_scales)
    else:
        att = scores
    return rearrange(att, f"b s c -> b {merge} 1 1")


def _weights_case(b: int, s: int, c: int, h: int, w: int, d: int, seed: int) -> Case:
    def make(g: torch.Generator):
        x = torch.randn(b, s * c, h, w, generator=g, dtype=torch.float64)
        x = x + torch.randn(b, s * c, 1, 1, generator=g, dtype=torch.float64)
        w1 = torch.randn(d, c, 1, 1, generator=g, dtype=torch.float64)
        b1 = torch.randn(d, generator=g, dtype=torch.float64) * 0.5
        w2 = torch.randn(c, d, 1, 1, generator=g, dtype=torch.float64)
        b2 = torch.randn(c, generator=g, dtype=torch.float64) * 0.5
        return x, s, w1, b1, w2, b2

    scales = f"{s} scale" + ("s" if s > 1 else "")
    return Case(f"x {b}×{s * c}×{h}×{w} ({scales} of {c}), hidden {d}", make, seed=seed)


check_scale_weights = register(
    Checker(
        "scale_weights",
        exercise="scale_weights",
        tier="build",
        reference=ref_scale_weights,
        cases=[
            _weights_case(2, 4, 6, 5, 7, 3, 0),
            _weights_case(1, 3, 5, 6, 5, 2, 1),   # batch 1, three scales of an odd width
            _weights_case(3, 2, 4, 4, 3, 2, 2),
            # boundaries: a single scale (its weight is 1); one channel per scale; a 1×1 map
            # with one hidden unit
            _weights_case(2, 1, 6, 3, 4, 2, 3),
            _weights_case(2, 3, 1, 3, 5, 1, 4),
            _weights_case(1, 4, 3, 1, 1, 1, 5),
        ],
        mistakes=[
            Mistake("the channels read (and written) as (c s), scale-minor: scale s is the "
                    "contiguous block of channels s·C … (s+1)·C − 1, as torch.cat gives",
                    partial(ref_scale_weights, split="(c s)", merge="(c s)"),
                    variants=(partial(ref_scale_weights, split="(c s)"),
                              partial(ref_scale_weights, merge="(c s)"))),
            Mistake("softmax over the channels instead of over the scales",
                    partial(ref_scale_weights, softmax="channel")),
            Mistake("softmax over all S·C channels of an image instead of over the scales of "
                    "each channel", partial(ref_scale_weights, softmax="all")),
            Mistake("the sigmoid missing before the softmax",
                    partial(ref_scale_weights, sigmoid=False)),
            Mistake("no softmax: the sigmoid scores are used as they are, so the scales do not "
                    "compete", partial(ref_scale_weights, softmax="none")),
            Mistake("max instead of mean pooling", partial(ref_scale_weights, pool="max")),
            Mistake("your answer computes the softmax of −scores over the scales: the "
                    "stable-softmax shift written max − s instead of s − max",
                    partial(ref_scale_weights, softmax="negated")),
            Mistake("the ReLU between the two SE layers missing",
                    partial(ref_scale_weights, relu=False)),
        ],
    )
)


# ------------------------------- 4. PSA as the paper draws it: split input, one SE per scale
class PaperPSAReference(nn.Module):
    """PSA with the paper's channel split and **one SE per scale**: branch s (``branches[s]``,
    kernel conv_kernels[s]) convolves only input channels s·C_in/S … (s+1)·C_in/S − 1; the S SEs
    are one grouped 1×1 conv each way (``se_reduce``: S·c′ -> S·d, ``se_expand``: S·d -> S·c′,
    ``groups=S``, biases), group s scoring scale s's pooled channels (laid out (s c), branch
    order); sigmoid, softmax over the scales, concatenation in reverse (largest kernel first).

    Knobs: ``slices`` ("(c s)": interleaved input channels; "reversed": branch s reads slice
    S−1−s; "first": every branch reads slice 0), ``se_layout`` ("(c s)": the pooled channels
    fed to the grouped SE scale-minor), ``se_order`` ("reversed": the pooled scales fed largest
    kernel first, so scale s is scored by SE S−1−s; "first": scale 0's SE applied to every
    scale), ``concat`` ("natural"), ``softmax`` ("channel"), ``sigmoid`` (False), ``relu``
    (False), ``weights_follow`` (False: the features are concatenated in reverse but their
    weights are not), ``pool`` ("max").
    """

    def __init__(self, in_channels: int, planes: int, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 conv_groups: Sequence[int] = (1, 4, 8, 16), se_reduction: int = 16, *,
                 slices: str = "(s c)", se_layout: str = "(s c)", se_order: str = "branch",
                 concat: str = "reversed", softmax: str = "scale", sigmoid: bool = True,
                 relu: bool = True, weights_follow: bool = True, pool: str = "mean") -> None:
        super().__init__()
        self.num_scales = s = len(conv_kernels)
        split = planes // s
        hidden = split // se_reduction
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels // s, split, k, padding=k // 2, groups=g, bias=False)
            for k, g in zip(conv_kernels, conv_groups))
        self.se_reduce = nn.Conv2d(s * split, s * hidden, 1, groups=s)
        self.se_expand = nn.Conv2d(s * hidden, s * split, 1, groups=s)
        self.slices, self.se_layout, self.se_order = slices, se_layout, se_order
        self.concat, self.softmax, self.sigmoid, self.relu = concat, softmax, sigmoid, relu
        self.weights_follow, self.pool = weights_follow, pool
        resnet_conv_bn_init(self)

    def _scores(self, pooled: torch.Tensor) -> torch.Tensor:
        """The per-scale SEs on pooled B×S×C, as B×S×C scores."""
        s = self.num_scales
        if self.se_order == "reversed":
            pooled = pooled.flip(1)
        if self.se_order == "first":  # group 0's weights for every scale
            d, c = self.se_reduce.out_channels // s, pooled.shape[2]
            w1, b1 = self.se_reduce.weight[:d, :, 0, 0], self.se_reduce.bias[:d]
            w2, b2 = self.se_expand.weight[:c, :, 0, 0], self.se_expand.bias[:c]
            hidden = einsum(pooled, w1, "b s c, d c -> b s d") + b1
            hidden = F.relu(hidden) if self.relu else hidden
            return einsum(hidden, w2, "b s d, c d -> b s c") + b2
        layout = self.se_layout
        hidden = self.se_reduce(rearrange(pooled, f"b s c -> b {layout} 1 1"))
        hidden = F.relu(hidden) if self.relu else hidden
        z = rearrange(self.se_expand(hidden), f"b {layout} 1 1 -> b s c", s=s)
        return z.flip(1) if self.se_order == "reversed" else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pattern = "b (c s) h w -> s b c h w" if self.slices == "(c s)" else "b (s c) h w -> s b c h w"
        parts = list(rearrange(x, pattern, s=self.num_scales))
        if self.slices == "reversed":
            parts.reverse()
        elif self.slices == "first":
            parts = [parts[0]] * self.num_scales
        feats = torch.stack([branch(p) for branch, p in zip(self.branches, parts)], dim=1)
        z = self._scores(reduce(feats, "b s c h w -> b s c", self.pool))
        scores = torch.sigmoid(z) if self.sigmoid else z
        att = rearrange(scores.softmax(dim=1 if self.softmax == "scale" else 2),
                        "b s c -> b s c 1 1")
        if self.concat == "reversed":
            feats = feats.flip(1)
            if self.weights_follow:
                att = att.flip(1)
        return rearrange(feats * att, "b s c h w -> b (s c) h w")


class PaperPSASolution(nn.Module):
    """What a correct learner hands in: the paper's PSA written plainly with a loop and cat."""

    def __init__(self, in_channels: int, planes: int, conv_kernels: Sequence[int] = (3, 5, 7, 9),
                 conv_groups: Sequence[int] = (1, 4, 8, 16), se_reduction: int = 16) -> None:
        super().__init__()
        s, split = len(conv_kernels), planes // len(conv_kernels)
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels // s, split, k, padding=k // 2, groups=g, bias=False)
            for k, g in zip(conv_kernels, conv_groups))
        self.se_reduce = nn.Conv2d(planes, s * (split // se_reduction), 1, groups=s)
        self.se_expand = nn.Conv2d(s * (split // se_reduction), planes, 1, groups=s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = len(self.branches)
        feats = [branch(p) for branch, p in zip(self.branches, torch.chunk(x, s, dim=1))]
        pooled = torch.cat([f.mean((2, 3), keepdim=True) for f in feats], dim=1)
        z = torch.sigmoid(self.se_expand(F.relu(self.se_reduce(pooled))))
        att = torch.softmax(torch.stack(torch.chunk(z, s, dim=1)), dim=0)
        return torch.cat([f * a for f, a in zip(feats, att)][::-1], dim=1)


def _x(shape: tuple[int, ...]):
    return lambda g: (torch.randn(*shape, generator=g, dtype=torch.float64),)


check_paper_psa = register(
    ModuleChecker(
        "paper_psa",
        exercise="PaperPSA",
        tier="extend",
        reference=PaperPSAReference,
        solution=PaperPSASolution,
        cases=[
            Case("PaperPSA(64, 64), x 2×64×5×7", _x((2, 64, 5, 7)), seed=0,
                 build={"in_channels": 64, "planes": 64}),
            Case("PaperPSA(12, 24, kernels (3, 5, 7), groups (1, 2, 4), r 4), x 1×12×6×5",
                 _x((1, 12, 6, 5)), seed=1,
                 build={"in_channels": 12, "planes": 24, "conv_kernels": (3, 5, 7),
                        "conv_groups": (1, 2, 4), "se_reduction": 4}),
            Case("PaperPSA(16, 8, kernels (3, 5), groups (2, 1), r 2), x 3×16×4×6",
                 _x((3, 16, 4, 6)), seed=2,
                 build={"in_channels": 16, "planes": 8, "conv_kernels": (3, 5),
                        "conv_groups": (2, 1), "se_reduction": 2}),
            # boundaries: a single scale (the split is the whole input, one SE); one input
            # channel per branch and SE hidden width 1; a 1×1 map
            Case("PaperPSA(8, 8, kernels (3,), groups (1,), r 4), x 2×8×4×3", _x((2, 8, 4, 3)),
                 seed=3, build={"in_channels": 8, "planes": 8, "conv_kernels": (3,),
                                "conv_groups": (1,), "se_reduction": 4}),
            Case("PaperPSA(3, 6, kernels (1, 3, 5), groups (1, 1, 1), r 2), x 2×3×5×4",
                 _x((2, 3, 5, 4)), seed=4,
                 build={"in_channels": 3, "planes": 6, "conv_kernels": (1, 3, 5),
                        "conv_groups": (1, 1, 1), "se_reduction": 2}),
            Case("PaperPSA(64, 64), x 2×64×1×1", _x((2, 64, 1, 1)), seed=5,
                 build={"in_channels": 64, "planes": 64}),
        ],
        mistakes=[
            Mistake("the input's channels split as (c s), interleaved: branch s reads the "
                    "contiguous slice s·C_in/S … (s+1)·C_in/S − 1",
                    partial(PaperPSAReference, slices="(c s)")),
            Mistake("the slices in reverse: branch s reads slice S − 1 − s",
                    partial(PaperPSAReference, slices="reversed")),
            Mistake("every branch reads the first slice of the input",
                    partial(PaperPSAReference, slices="first")),
            Mistake("the pooled channels fed to the grouped SE as (c s), interleaved: group s of "
                    "se_reduce must read scale s's c′ channels, laid out (s c)",
                    partial(PaperPSAReference, se_layout="(c s)")),
            Mistake("the pooled scales fed to the SE largest kernel first: scale s is scored by "
                    "SE S − 1 − s (reverse only at the final concatenation)",
                    partial(PaperPSAReference, se_order="reversed")),
            Mistake("the first scale's SE (group 0 of se_reduce / se_expand) applied to every "
                    "scale: the shared SE of the code, not one SE per scale",
                    partial(PaperPSAReference, se_order="first")),
            Mistake("natural concat order [k3, k5, k7, k9]: the official code puts the largest "
                    "kernel first", partial(PaperPSAReference, concat="natural")),
            Mistake("softmax over the channels instead of over the scales",
                    partial(PaperPSAReference, softmax="channel")),
            Mistake("the sigmoid missing before the softmax",
                    partial(PaperPSAReference, sigmoid=False)),
            Mistake("the ReLU between the two SE layers missing",
                    partial(PaperPSAReference, relu=False)),
            Mistake("features concatenated in reverse but their weights not: the k3 weights "
                    "scale the k9 features", partial(PaperPSAReference, weights_follow=False)),
            Mistake("max instead of mean pooling in the SE",
                    partial(PaperPSAReference, pool="max")),
        ],
    )
)
