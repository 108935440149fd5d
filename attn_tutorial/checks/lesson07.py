"""Checkers for lesson 07 (external attention): exercises in ``solutions/07_external.ipynb``.

1. ``check_double_normalise`` (build): slot logits as a map B×S×H×W (what a 1×1 convolution by
   M_k gives, channels first) -> the double-normalised weights B×S×H×W: a softmax over all H·W
   pixels of each slot's map, then an l1 normalisation over the S slots with ε = 1e-9. The lesson
   normalises tokens-first B×N×S weights; here the pixels are two axes and the slots come first.
   Three cases put one pixel far below the others in every slot: 24 below in float64 (its weights
   are tiny but positive), 800 below in float64 and 120 below in float32 (its weights underflow
   to exactly 0: exp underflows from a gap of 746 in float64 and of 104 in float32).
2. ``check_crossover`` (predict): the smallest number of pixels N at which external attention
   needs fewer FLOPs than DANet's PAM, by the cost model's counts, for a configuration (C, S);
   27 printed cases and 5 hidden ones drawn from the domain.
3. ``check_multi_head_external_attention`` (extend): external attention over tokens B×N×C split
   into heads of width d = C/heads, each head with memories of its own: ``memory_key``
   heads×S×d and ``memory_value`` heads×d×S (the lesson's EAMLP shares one memory across heads).
4. ``check_ea_block`` (a module exercise): the EANet block with ``tie_memories`` (True: M_v =
   M_kᵀ, one parameter; False: M_v its own parameter, the paper's two layers; the lesson builds
   the tied form only). With the tie, a second memory parameter is refused by name, shared
   storage or not. Besides the output and the input gradient, the checker takes one SGD step
   and compares M_k after it: a tied memory moves by the gradients of both uses.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. The per-case comments say which case catches which slip.
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import einsum, rearrange

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, hidden_cases, register
from attn_tutorial.checks._isolation import Reported
from attn_tutorial.checks._modules import ModuleChecker, _load_by_name

NOTEBOOK = "07_external"  # exercises/07_external.ipynb holds these exercises, in this order
__all__ = ["check_double_normalise", "check_crossover", "check_multi_head_external_attention",
           "check_ea_block"]

EPS = 1e-9
SLOTS = 1  # the axis of the S slots in B×S×H×W weights
F_NORMALIZE_FLOOR = 1e-12  # F.normalize's default eps: it divides by max(norm, 1e-12)


# ------------------------------------------------------------ 1. the double normalisation
def ref_double_normalise(logits: torch.Tensor, *, softmax_over: str = "pixels",
                         l1_over: str | None = "memory", eps_how: str = "add") -> torch.Tensor:
    """B×S×H×W slot logits: a softmax over the H·W pixels of each slot's map, then each weight
    divided by (ε + the sum of its pixel's weights over the S slots).

    Knobs: ``softmax_over`` ("memory": over the slots; "width"/"height": over one spatial axis
    only; "all": one softmax over the S·H·W entries), ``l1_over`` ("pixels": over H·W; None:
    no l1 step), ``eps_how`` ("add": ε + sum; "none": the sum alone; "floor": max(sum, 1e-12)
    as F.normalize(p=1); "clamp": max(sum, ε); "each": ε added to each of the S weights before
    the sum, S·ε in all).
    """
    h = logits.shape[2]
    if softmax_over == "pixels":
        flat = rearrange(logits, "b s h w -> b s (h w)").softmax(dim=-1)
        attn = rearrange(flat, "b s (h w) -> b s h w", h=h)
    elif softmax_over == "all":
        flat = rearrange(logits, "b s h w -> b (s h w)").softmax(dim=-1)
        attn = rearrange(flat, "b (s h w) -> b s h w", s=logits.shape[1], h=h)
    else:
        attn = logits.softmax(dim={"memory": SLOTS, "width": -1, "height": -2}[softmax_over])
    if l1_over is None:
        return attn
    total = attn.sum(dim=SLOTS if l1_over == "memory" else (2, 3), keepdim=True)
    if eps_how == "add":
        return attn / (EPS + total)
    if eps_how == "none":
        return attn / total
    if eps_how == "each":
        return attn / (attn + EPS).sum(dim=SLOTS, keepdim=True)
    return attn / total.clamp(min=F_NORMALIZE_FLOOR if eps_how == "floor" else EPS)


def _map_logits_case(b: int, s: int, h: int, w: int, seed: int,
                     sunk: tuple[int, int, float] | None = None,
                     dtype: torch.dtype = torch.float64) -> Case:
    """Random logits B×S×H×W; ``sunk = (i, j, gap)``: pixel (i, j) sits ``gap`` below the top
    pixel of every slot's map, in every image."""
    def make(g: torch.Generator):
        logits = 2 * torch.randn(b, s, h, w, generator=g, dtype=torch.float64)
        if sunk is not None:
            i, j, gap = sunk
            top = logits.amax(dim=(2, 3))
            logits[:, :, i, j] = top - gap
        return (logits.to(dtype),)

    name = f"logits {b}×{s}×{h}×{w}"
    if dtype != torch.float64:
        name += f" in {str(dtype).replace('torch.', '')}"
    if sunk is not None:
        name += f", pixel ({sunk[0]}, {sunk[1]}) {sunk[2]:g} below the top pixel in every slot"
    return Case(name, make, seed=seed)


def _no_eps(output: torch.Tensor, logits: torch.Tensor) -> bool:
    """The output is the division by the sum alone (NaN where the sum is 0, as it is)."""
    plain = ref_double_normalise(logits, eps_how="none")
    return output.shape == plain.shape and bool(torch.allclose(
        output.detach().to(plain.dtype), plain, rtol=1e-6, atol=1e-9, equal_nan=True))


SOFTMAX_OVER_MEMORY = "softmax over the memory slots instead of over the pixels"
AXES_SWAPPED = ("softmax over the memory slots and l1 over the pixels: both normalisations on "
                "the other axis")
ONE_SPATIAL_AXIS = ("softmax over one spatial axis only (each row or each column of a slot's "
                    "map) instead of over all H·W pixels")
NO_EPS = ("the l1 step divides by the sum alone (no ε): a pixel whose weights underflow to 0 "
          "in every slot gets 0/0 = NaN")
SUM_FLOORED_AT_F_NORMALIZE = (
    "the l1 step divides by max(sum, 1e-12), as F.normalize(p=1) does, instead of by ε + sum: "
    "a pixel that receives far less than ε = 1e-9 from all slots together is scaled up until "
    "its weights sum to 1 (with ε + sum they stay near 0)")
SUM_CLAMPED_AT_EPS = ("the l1 step divides by max(sum, ε) instead of by ε + sum: every pixel "
                      "that receives more than ε sums to exactly 1, where ε + sum gives "
                      "sum/(ε + sum)")
EPS_PER_WEIGHT = ("the l1 step divides by the sum of (weight + ε) over the S slots, sum + S·ε, "
                  "instead of by sum + ε")
SOFTMAX_ALONE = ("softmax alone: the l1 normalisation over the memory slots is missing (an l1 "
                 "over the pixels after the softmax over them changes nothing)")

check_double_normalise = register(
    Checker(
        "double_normalise",
        exercise="double_normalise",
        tier="build",
        reference=ref_double_normalise,
        cases=[
            _map_logits_case(2, 8, 7, 9, 0),        # a 7×9 map, 8 slots
            # tiny but positive weights (sum over the slots between 1e-12 and 1e-9): ε decides
            _map_logits_case(2, 6, 5, 7, 3, sunk=(2, 3, 24)),
            # weights that underflow to exactly 0 (exp(-Δ) is 0 in float64 from Δ = 746)
            _map_logits_case(2, 4, 3, 5, 4, sunk=(1, 4, 800)),
            # the same in float32 (0 from Δ = 104): the output must be float32 and finite
            _map_logits_case(2, 5, 3, 4, 5, sunk=(0, 2, 120), dtype=torch.float32),
            _map_logits_case(2, 1, 3, 3, 6),        # boundary: a single memory slot
            _map_logits_case(1, 4, 1, 6, 7),        # boundary: H = 1
            _map_logits_case(1, 3, 5, 1, 8),        # boundary: W = 1
            _map_logits_case(1, 5, 1, 1, 9),        # boundary: a single pixel (batch 1, S > N)
        ],
        mistakes=[
            Mistake(SOFTMAX_OVER_MEMORY, partial(ref_double_normalise, softmax_over="memory"),
                    variants=(partial(ref_double_normalise, softmax_over="memory",
                                      l1_over=None),)),
            Mistake(AXES_SWAPPED, partial(ref_double_normalise, softmax_over="memory",
                                          l1_over="pixels")),
            Mistake(ONE_SPATIAL_AXIS, partial(ref_double_normalise, softmax_over="width"),
                    variants=(partial(ref_double_normalise, softmax_over="height"),)),
            Mistake(NO_EPS, partial(ref_double_normalise, eps_how="none"), holds=_no_eps),
            Mistake(SUM_FLOORED_AT_F_NORMALIZE, partial(ref_double_normalise, eps_how="floor")),
            Mistake(SUM_CLAMPED_AT_EPS, partial(ref_double_normalise, eps_how="clamp")),
            Mistake(EPS_PER_WEIGHT, partial(ref_double_normalise, eps_how="each")),
            Mistake(SOFTMAX_ALONE, partial(ref_double_normalise, l1_over=None),
                    variants=(partial(ref_double_normalise, l1_over="pixels"),)),
            Mistake("one softmax over all slots and pixels together instead of over the pixels "
                    "(with or without the l1 step after it)",
                    partial(ref_double_normalise, softmax_over="all"),
                    variants=(partial(ref_double_normalise, softmax_over="all", l1_over=None),)),
        ],
    )
)


# ------------------------------------------------------------ 2. predict: the FLOP crossover
def ref_crossover(channels: int, memory_size: int = 64, *, strict: bool = True,
                  query_width: str = "floor", energy: bool = True, memory_uses: int = 2,
                  offset: int = 0) -> int:
    """The smallest N ≥ 1 with FLOPs(external attention) < FLOPs(PAM), by the cost model:

    external attention 2·N·C²·2 + 2·N·C·S·2; PAM 2·N·(2·C·C′ + C²) + 2·N²·C′ + 2·N²·C with
    C′ = C // 8. The difference PAM − EA = 2N·(N·(C + C′) − (C² + 2·C·S − 2·C·C′)) is negative
    up to N = num/den and positive after it (num = C² + 2CS − 2CC′ > 0, den = C + C′), so
    N* = ⌊num/den⌋ + 1 (exact rational arithmetic).

    Knobs: ``strict`` (False: the first N with EA ≤ PAM), ``query_width`` ("exact": C′ = C/8,
    the closed form 2C/3 + 16S/9 for every C), ``energy`` (False: PAM's 2·N²·C′ left out),
    ``memory_uses`` (1: the memory products counted once), ``offset`` (−1: the last N at which
    external attention is not cheaper).
    """
    c, s = channels, memory_size
    cq = Fraction(c // 8) if query_width == "floor" else Fraction(c, 8)
    num = 2 * c * c + memory_uses * 2 * c * s - 4 * c * cq   # EA − PAM's linear terms, over 2N
    den = 2 * ((cq if energy else 0) + c)                     # PAM's N² terms, over 2N
    bound = num / den                                         # EA < PAM exactly when N > bound
    n = math.floor(bound) + 1 if strict else max(1, math.ceil(bound))
    return max(1, n) + offset


def _config_case(channels: int, memory_size: int | None, seed: int, note: str = "") -> Case:
    args = (channels,) if memory_size is None else (channels, memory_size)
    name = f"C = {channels}, " + ("S not given (64)" if memory_size is None
                                  else f"S = {memory_size}") + (f" ({note})" if note else "")
    return Case(name, lambda g: args, seed=seed)


_CONFIGS = [  # (C, S, note); C >= 8 (PAM's C' = C // 8 >= 1), S >= 1
    (8, 1, "smallest C and S"), (8, 2, ""), (9, 1, "C % 8 = 1"),
    (10, 7, "the counts tie at N = 20"),
    (12, 3, "C % 8 = 4"), (15, 4, "C % 8 = 7"), (16, 1, ""), (17, 3, "C % 8 = 1"),
    (23, 5, "C % 8 = 7"), (24, 9, "the counts tie at N = 32"), (31, 2, ""), (33, 33, ""),
    (40, 64, ""), (63, 7, ""), (64, 16, ""), (64, 64, "the lesson's C = 64"),
    (72, 9, "the counts tie at N = 64"), (100, 10, "C % 8 = 4"),
    (120, 36, "the counts tie at N = 144"),
    (12, 100, "S much larger than C"), (8, 256, ""), (512, 64, "the EANet head"),
    (1000, 1, ""), (2048, 64, ""), (255, 17, "C % 8 = 7"),
]

def _draw_config(rng) -> tuple[int, int]:
    """A configuration from the exercise's domain: C from 8 to 2048 (half of them below 100,
    where C // 8 and C / 8 differ most), S from 1 to 256."""
    c = rng.randint(8, 99) if rng.random() < 0.5 else rng.randint(100, 2048)
    return c, rng.randint(1, 256)


check_crossover = register(
    Checker(
        "crossover",
        exercise="crossover",
        tier="predict",
        reference=ref_crossover,
        cases=[_config_case(c, s, i, note) for i, (c, s, note) in enumerate(_CONFIGS)] + [
            _config_case(512, None, 90),
            _config_case(9, None, 91, "C % 8 = 1"),
        ] + hidden_cases("hidden case", _draw_config, count=5, seed=707),
        mistakes=[
            Mistake("the closed form ⌊2C/3 + 16S/9⌋ + 1 used for every C: it takes PAM's query "
                    "width as C/8, which is wrong where C is not a multiple of 8 (C′ = C // 8)",
                    partial(ref_crossover, query_width="exact")),
            Mistake("the first N at which external attention costs no more than PAM (≤ instead "
                    "of <): one too small where the two counts are equal at an integer N",
                    partial(ref_crossover, strict=False)),
            Mistake("the last N at which external attention is not yet cheaper: one less than "
                    "the answer", partial(ref_crossover, offset=-1)),
            Mistake("PAM's energy term 2·N²·C′ left out of its count (only the product with V, "
                    "2·N²·C)", partial(ref_crossover, energy=False)),
            Mistake("external attention's two memory products counted as one (2·N·C·S instead "
                    "of 2·N·C·S·2)", partial(ref_crossover, memory_uses=1)),
        ],
    )
)


# ------------------------------------------------------ 3. extend: multi-head external attention
def ref_multi_head_external_attention(
        tokens: torch.Tensor, memory_key: torch.Tensor, memory_value: torch.Tensor,
        *, split: str = "(heads d)", merge: str | None = None, joint: str | None = None,
        softmax_over: str = "pixels", l1_over: str = "memory", eps: float = EPS,
        scale: bool = False, value: str = "given", shared: bool = False) -> torch.Tensor:
    """Tokens B×N×C, C = heads·d split as ``(heads d)``; head h has its own memories,
    ``memory_key[h]`` (S×d) and ``memory_value[h]`` (d×S): the double normalisation of
    ``tokens_h M_k[h]ᵀ`` (softmax over the N tokens, l1 over the S slots, + ε), times
    ``M_v[h]ᵀ``; the heads merged back as ``(heads d)``.

    Knobs: ``split``/``merge`` ("(d heads)"), ``joint`` ("pixels": one softmax over the
    heads·N rows; "memory": the l1 over the heads·S slots), ``softmax_over`` ("memory"),
    ``l1_over`` ("pixels": the l1 over the tokens; None: the softmax alone), ``eps`` (0: the
    sum alone), ``scale`` (× d^-1/2), ``value`` ("tied": M_k[h]ᵀ used as M_v[h]; "reshaped":
    memory_value read as heads×S×d by a reshape, not a transpose), ``shared`` (head 0's
    memories for every head).
    """
    heads = memory_key.shape[0]
    merge = split if merge is None else merge
    if shared:
        memory_key = memory_key[:1].expand_as(memory_key)
        memory_value = memory_value[:1].expand_as(memory_value)
    t = rearrange(tokens, f"b n {split} -> b heads n d", heads=heads)
    logits = einsum(t, memory_key, "b heads n d, heads s d -> b heads n s")
    if scale:
        logits = logits * t.shape[-1] ** -0.5
    if joint == "pixels":
        flat = rearrange(logits, "b heads n s -> b (heads n) s").softmax(dim=1)
        attn = rearrange(flat, "b (heads n) s -> b heads n s", heads=heads)
    else:
        attn = logits.softmax(dim=-2 if softmax_over == "pixels" else -1)
    if l1_over is not None:
        axes = {"memory": 3, "pixels": 2}[l1_over] if joint != "memory" else (1, 3)
        attn = attn / (eps + attn.sum(dim=axes, keepdim=True))
    if value == "tied":
        memory_value = rearrange(memory_key, "heads s d -> heads d s")
    elif value == "reshaped":
        memory_value = memory_value.reshape(memory_key.shape).transpose(1, 2)
    out = einsum(attn, memory_value, "b heads n s, heads d s -> b heads n d")
    return rearrange(out, f"b heads n d -> b n {merge}")


def _heads_case(b: int, n: int, heads: int, d: int, s: int, seed: int, note: str = "") -> Case:
    def make(g: torch.Generator):
        tokens = torch.randn(b, n, heads * d, generator=g, dtype=torch.float64)
        memory_key = torch.randn(heads, s, d, generator=g, dtype=torch.float64) / math.sqrt(d) * 2
        memory_value = torch.randn(heads, d, s, generator=g, dtype=torch.float64)
        return tokens, memory_key, memory_value

    name = f"tokens {b}×{n}×{heads * d}, memory_key {heads}×{s}×{d} (heads = {heads}, " \
           f"S = {s}, d = {d})"
    return Case(name + (f" ({note})" if note else ""), make, seed=seed)


mh = ref_multi_head_external_attention
check_multi_head_external_attention = register(
    Checker(
        "multi_head_external_attention",
        exercise="multi_head_external_attention",
        tier="extend",
        reference=mh,
        cases=[
            _heads_case(2, 12, 4, 3, 5, 0),
            _heads_case(1, 7, 2, 5, 3, 1),                     # batch 1, S ≠ d
            _heads_case(2, 9, 3, 2, 8, 2),                     # more slots than the head width
            _heads_case(2, 6, 1, 4, 5, 3, "one head: the lesson's form"),
            _heads_case(1, 5, 6, 1, 4, 4, "head width 1"),
            _heads_case(2, 4, 2, 3, 1, 5, "a single memory slot"),
            _heads_case(1, 1, 3, 2, 4, 6, "a single token"),
            _heads_case(2, 3, 2, 4, 4, 7, "S = d: a transposed memory has the right shape"),
        ],
        mistakes=[
            Mistake("channels split into heads as (d heads), the head the fast axis: head h "
                    "gets channels h, h + heads, … instead of the block h·d … h·d + d − 1",
                    partial(mh, split="(d heads)")),
            Mistake("heads split one way and merged back the other, (heads d) and (d heads): "
                    "the output's channels are permuted", partial(mh, merge="(d heads)"),
                    variants=(partial(mh, split="(d heads)", merge="(heads d)"),)),
            Mistake("the heads treated as extra tokens: one softmax over the heads·N rows of "
                    "each slot instead of one per head", partial(mh, joint="pixels")),
            Mistake("the l1 step sums over the slots of all heads together (heads·S) instead "
                    "of over each head's S slots", partial(mh, joint="memory")),
            Mistake(SOFTMAX_OVER_MEMORY.replace("pixels", "tokens"),
                    partial(mh, softmax_over="memory")),
            Mistake(AXES_SWAPPED.replace("pixels", "tokens"),
                    partial(mh, softmax_over="memory", l1_over="pixels")),
            Mistake(SOFTMAX_ALONE, partial(mh, l1_over=None)),
            Mistake("logits scaled by 1/√d (d the head width) as in multi-head self-attention: "
                    "external attention has no scaling", partial(mh, scale=True)),
            Mistake("memory_key's transpose used as the value memory: here M_v is its own "
                    "argument, memory_value", partial(mh, value="tied")),
            Mistake("memory_value (heads×d×S) reshaped to heads×S×d instead of transposed: "
                    "its numbers land in the wrong places", partial(mh, value="reshaped")),
            Mistake("head 0's memories used by every head: each head has its own "
                    "memory_key[h] and memory_value[h]", partial(mh, shared=True)),
        ],
    )
)


# ------------------------------------------------------------------ 4. the EA block (module)
SCALED = "logits scaled by 1/√d (d = C) as in self-attention: external attention has no scaling"


class EABlockReference(nn.Module):
    """``relu(x + norm(conv_out(M_v · double_normalise(M_k · conv_in(x)))))``; M_v = M_kᵀ
    when ``tie_memories`` (the authors' code), else its own parameter (the paper's two layers).

    Parameters by name: ``conv_in`` (1×1 conv with bias), ``memory_key`` (Linear C→S, no bias;
    used transposed as M_v when tied), ``memory_value`` (untied only: Linear S→C, no bias, weight
    C×S), ``conv_out`` (1×1 conv, no bias), ``norm`` (BatchNorm2d). The BN's running statistics
    and affine weights are random, so the BN is not a near identity in eval.

    Knobs: ``detach_value`` (tied: M_kᵀ detached where it is used as M_v), ``relu_first``
    (x + relu(...)), ``softmax_over`` ("memory"), ``l1_over`` ("pixels"; None: the softmax
    alone), ``eps`` (0: the sum alone), ``scale`` (logits × C^-1/2).
    """

    def __init__(self, channels: int, memory_size: int = 64, tie_memories: bool = True, *,
                 detach_value: bool = False, relu_first: bool = False,
                 softmax_over: str = "pixels", l1_over: str | None = "memory",
                 eps: float = EPS, scale: bool = False) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.memory_key = nn.Linear(channels, memory_size, bias=False)
        self.memory_value = None if tie_memories else nn.Linear(memory_size, channels, bias=False)
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.detach_value, self.relu_first = detach_value, relu_first
        self.knobs = dict(softmax_over=softmax_over, l1_over=l1_over, eps=eps, scale=scale)
        with torch.no_grad():
            self.norm.running_mean.normal_(0.0, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        tokens = rearrange(self.conv_in(x), "b c h w -> b (h w) c")
        if self.memory_value is None:
            value = self.memory_key.weight.t()
            value = value.detach() if self.detach_value else value
        else:
            value = self.memory_value.weight
        out = mh(tokens, self.memory_key.weight[None], value[None],   # one head: the width C
                 **self.knobs)
        branch = self.norm(self.conv_out(rearrange(out, "b (h w) c -> b c h w", h=h, w=w)))
        return x + F.relu(branch) if self.relu_first else F.relu(x + branch)


SECOND_MEMORY = (
    "with tie_memories=True your module has a second parameter, {names} ({numel} numbers): "
    "the tie asks for one memory parameter, memory_key, read transposed as M_v, and no second "
    "nn.Parameter, not even one that shares memory_key's storage (the authors' way: an "
    "optimiser then sees two memories, and weight decay or Adam update them as two)")


class TiedModuleChecker(ModuleChecker):
    """A module checker for tied memories: the learner's module is built in float64 (a dtype
    conversion would undo a tie made by shared storage, hiding a second parameter), and with
    ``tie_memories=True`` a matrix the reference has not, of M_v's size, is refused by name
    as a second memory, whether it has storage of its own or shares M_k's. The engine
    compares the gradient of ``memory_key.weight`` through one SGD step: tied, it moves by the
    gradients of both of its uses (as M_k and as M_vᵀ)."""

    parameter_gradients = False

    def _build(self, subject, case):
        dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return super()._build(subject, case)
        finally:
            torch.set_default_dtype(dtype)

    def _load(self, module, ref, case):
        if case.build.get("tie_memories", True):
            # a matrix the reference has not, with M_v's number of entries (S·C): a second
            # memory (a bias of C entries is not one, even where S = 1); any other extra
            # parameter is reported by the engine's name check
            theirs, size = dict(ref.named_parameters()), ref.memory_key.weight.numel()
            extra = [(n, p) for n, p in module.named_parameters()
                     if n not in theirs and p.dim() >= 2 and p.numel() == size]
            if extra:
                said = "" if "tie_memories" in case.build else \
                    " (built without tie_memories: its default must be True)"
                raise Reported(SECOND_MEMORY.format(
                    names=", ".join(f"`{n}`" for n, _ in extra),
                    numel=sum(p.numel() for _, p in extra)) + said)
        _load_by_name(module, ref)


def _block_case(shape: tuple[int, int, int, int], s: int, seed: int) -> Case:
    return map_case(shape, seed, f", S = {s}, tie_memories not given (tied by default)",
                    build={"channels": shape[1], "memory_size": s})


def _untied_case(shape: tuple[int, int, int, int], s: int, seed: int) -> Case:
    return map_case(shape, seed, f", S = {s}, tie_memories=False",
                    build={"channels": shape[1], "memory_size": s, "tie_memories": False})


check_ea_block = register(
    TiedModuleChecker(
        "ea_block",
        exercise="EABlock",
        tier="build",
        reference=EABlockReference,
        cases=[
            _block_case((2, 16, 7, 9), 8, 0),
            _block_case((1, 12, 5, 6), 5, 1),   # batch 1 (eval mode: BN uses running stats)
            _block_case((3, 8, 4, 5), 16, 2),   # more slots than channels
            _block_case((2, 6, 3, 4), 1, 3),    # boundary: a single memory slot
            # the default memory_size = 64: built with the channels only
            map_case((2, 8, 3, 5), 4, ", S not given (64)", build={"channels": 8}),
            # untied: M_v its own parameter, with weights of its own (not M_kᵀ)
            _untied_case((2, 6, 4, 3), 3, 5),
            _untied_case((1, 5, 3, 2), 7, 6),   # batch 1, more slots than channels
        ],
        mistakes=[
            Mistake("M_v = M_kᵀ detached (or taken from .data): the value use sends no "
                    "gradient to the memory, so one optimiser step moves M_k by its use as the "
                    "key only", partial(EABlockReference, detach_value=True)),
            Mistake("ReLU before the residual sum: the block is relu(x + BN(...)), the ReLU "
                    "comes last", partial(EABlockReference, relu_first=True)),
            # a softmax over the slots alone differs from it followed by the l1 step by ε only:
            # 1e-9 relative, which the BN can lift above float64's tolerance
            Mistake(SOFTMAX_OVER_MEMORY, partial(EABlockReference, softmax_over="memory"),
                    variants=(partial(EABlockReference, softmax_over="memory", l1_over=None),)),
            Mistake(AXES_SWAPPED, partial(EABlockReference, softmax_over="memory",
                                          l1_over="pixels")),
            Mistake(SOFTMAX_ALONE, partial(EABlockReference, l1_over=None)),
            Mistake("the l1 step divides by the sum alone (no ε): the block's output moves by "
                    "about 1e-9 relative, which float64 sees", partial(EABlockReference, eps=0.0)),
            Mistake(SCALED, partial(EABlockReference, scale=True)),
        ],
    )
)
