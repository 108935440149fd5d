"""Checkers for lesson 05 (DANet position and channel attention): ``solutions/05_danet.ipynb``.

The lesson works on channels-first maps (``B×C×H×W``); the build exercises ask for the
**channels-last** layout (``B×H×W×C``, what ``nn.Linear`` works on), so a lesson cell copied as it
stands does not solve them.

1. ``check_pam_attention`` (build): PAM's N×N attention map from channels-last query and key maps.
2. ``check_pam_aggregate`` (build): PAM's output ``A·V``, channels-last.
3. ``check_cam_attention`` (build): CAM's C×C map of a channels-last map, official or paper form.
4. ``check_pam_module`` (build): the position attention module with ``nn.Linear`` projections.
5. ``check_pam_map_bytes`` (predict): the bytes of the B×N×N map, for B, H, W and the dtype.
6. ``check_pam_side_limit`` (predict): the smallest side H = W at which the map passes a budget.
   (5 and 6 live in ``lesson05_memory.py``.)
7. ``check_pam_pooled`` (extend): PAM whose keys and values are averaged over r×r blocks.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned (two knobs: two slips together, named as such). The cases are chosen so that
every mistake fails on at least one of them (``tests/test_checks.py`` proves it); the comments
say which case catches which slip.
"""

from __future__ import annotations

import math
from functools import partial
from itertools import combinations

import torch
from einops import einsum, rearrange, reduce
from torch import nn

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, register
from attn_tutorial.checks._modules import ModuleChecker
# exercises 5 and 6 (predict): in their own file, registered there
from attn_tutorial.checks.lesson05_memory import (  # noqa: F401
    check_pam_map_bytes, check_pam_side_limit, ref_pam_map_bytes, ref_pam_side_limit,
)

NOTEBOOK = "05_danet"  # exercises/05_danet.ipynb holds these exercises, in this order
__all__ = ["check_pam_attention", "check_pam_aggregate", "check_cam_attention",
           "check_pam_module", "check_pam_map_bytes", "check_pam_side_limit",
           "check_pam_pooled"]

ROW_MAJOR, COLUMN_MAJOR = "b h w d -> b (h w) d", "b h w d -> b (w h) d"


def _tokens(t: torch.Tensor, order: str = "hw", layout: str = "last") -> torch.Tensor:
    """A map -> B×N×D tokens, positions row-major ``(h w)`` or column-major (``order="wh"``).
    ``layout="first"`` reads the map as B×D×H×W, the lesson's layout."""
    if layout == "first":
        return rearrange(t, "b d h w -> b (h w) d")
    return rearrange(t, ROW_MAJOR if order == "hw" else COLUMN_MAJOR)


# ------------------------------------------------------------------- 1. PAM's attention
def ref_pam_attention(q: torch.Tensor, k: torch.Tensor, *, over: str = "keys",
                      scale: bool = False, transpose: bool = False, order: str = "hw",
                      negate: bool = False, layout: str = "last") -> torch.Tensor:
    """A[b, i, j] = softmax over j of Σ_d q[b, i, d] k[b, j, d] for channels-last q, k
    (B×H×W×d); positions row-major (h w).

    Knobs: ``over`` ("queries": softmax over i), ``scale`` (divide by sqrt(d)), ``transpose``
    (the map transposed after the softmax), ``order`` ("wh": positions flattened
    column by column), ``negate`` (softmax of −energy), ``layout`` ("first": the maps read as
    B×d×H×W, the lesson's layout).
    """
    energy = einsum(_tokens(q, order, layout), _tokens(k, order, layout), "b i d, b j d -> b i j")
    if scale:
        energy = energy / math.sqrt(q.shape[1 if layout == "first" else -1])
    if negate:  # exp(max − e): the stable-softmax shift the wrong way round
        energy = -energy
    attention = energy.softmax(dim=-1 if over == "keys" else 1)
    return attention.transpose(1, 2) if transpose else attention


def _qk_case(b: int, h: int, w: int, d: int, seed: int) -> Case:
    def make(g: torch.Generator):
        return (torch.randn(b, h, w, d, generator=g, dtype=torch.float64),
                torch.randn(b, h, w, d, generator=g, dtype=torch.float64))

    return Case(f"q, k {b}×{h}×{w}×{d}", make, seed=seed)


def _columns_sum_to_one(out, q, k) -> bool:
    """An N×N map whose columns (one key, all queries) sum to 1: a softmax over the queries,
    whatever else was done."""
    n = q.shape[1] * q.shape[2]
    return tuple(out.shape) == (q.shape[0], n, n) and \
        bool(torch.allclose(out.sum(dim=1), torch.ones((), dtype=out.dtype)))


# Single slips that may come together; each pair is a catalogued mistake of its own (pairs that
# turn the same knob are left out: both transposes together are the softmax over the queries).
_PAM_SLIPS = {
    "energy": ("the energy transposed before the softmax (an einsum whose output reads b j i, "
               "or k·qᵀ: rows are keys, each normalised over the queries)",
               {"over": "queries", "transpose": True}),
    "map": ("the map transposed after the softmax (rows must be the queries)",
            {"transpose": True}),
    "scale": ("the energy scaled by 1/sqrt(d) (DANet's PAM does not scale)", {"scale": True}),
    "order": ("positions flattened column by column (w h) instead of row by row (h w)",
              {"order": "wh"}),
    "negate": ("softmax(−E) instead of softmax(E) (a stable shift written max − E)",
               {"negate": True}),
}


def _two_slips(reference, slips: dict) -> list[Mistake]:
    return [Mistake(f"two slips together: {slips[a][0]}, and {slips[b][0]}",
                    partial(reference, **slips[a][1], **slips[b][1]))
            for a, b in combinations(slips, 2) if not set(slips[a][1]) & set(slips[b][1])]


check_pam_attention = register(
    Checker(
        "pam_attention",
        exercise="pam_attention",
        tier="build",
        reference=ref_pam_attention,
        cases=[
            _qk_case(2, 3, 5, 4, 0),  # non-square: the column-major flattening shows
            _qk_case(1, 4, 4, 2, 1),  # batch 1; d = 2: the 1/sqrt(d) scaling shows
            _qk_case(3, 5, 2, 3, 2),
            _qk_case(2, 1, 1, 3, 3),  # boundary: a 1×1 map, a single key (every weight is 1)
            _qk_case(2, 1, 5, 1, 4),  # boundary: d = 1, a single row
        ],
        mistakes=[
            Mistake("softmax over the query axis instead of the key axis (each row must sum "
                    "to 1 over the keys)", partial(ref_pam_attention, over="queries"),
                    holds=_columns_sum_to_one),
            Mistake("energy scaled by 1/sqrt(d): DANet's PAM does not scale",
                    partial(ref_pam_attention, scale=True)),
            Mistake("the energy transposed before the softmax: an einsum whose output reads "
                    "b j i (or k·qᵀ) makes rows of keys, each normalised over the queries; the "
                    "map wants rows of queries i normalised over the keys j",
                    partial(ref_pam_attention, over="queries", transpose=True)),
            Mistake("map transposed after the softmax: rows must be the queries i, columns the "
                    "keys j", partial(ref_pam_attention, transpose=True)),
            Mistake("positions flattened column by column (w h) instead of row by row (h w)",
                    partial(ref_pam_attention, order="wh")),
            Mistake("your answer computes softmax(−E), not softmax(E): a stable-softmax shift "
                    "written max − E flips the sign (E − max, the usual one, changes nothing)",
                    partial(ref_pam_attention, negate=True)),
            Mistake("q and k read as B×d×H×W, the lesson's channels-first layout: these maps "
                    "are channels-last, B×H×W×d", partial(ref_pam_attention, layout="first")),
            *_two_slips(ref_pam_attention, _PAM_SLIPS),
        ],
    )
)


# ------------------------------------------------------------------- 2. PAM's output
def ref_pam_aggregate(attention: torch.Tensor, v: torch.Tensor, *, transpose: bool = False,
                      order: str = "hw", mixed: bool = False,
                      back: str = "") -> torch.Tensor:
    """out[b, i, c] = Σ_j A[b, i, j] v[b, j, c] (A·V in token layout), back to B×H×W×C.

    Knobs: ``transpose`` (Aᵀ·V: summed over the query axis), ``order`` ("wh": positions taken
    and put back column by column), ``mixed`` (the B×N×C result transposed to B×C×N before it
    is reshaped to B×H×W×C), ``back`` ("wh": taken row by row, put back column by column).
    """
    b, h, w, c = v.shape
    out = einsum(attention, _tokens(v, order), "b j i, b j c -> b i c" if transpose
                 else "b i j, b j c -> b i c")
    if mixed:
        return out.transpose(1, 2).reshape(b, h, w, c)
    pattern = "b (h w) c -> b h w c" if (back or order) == "hw" else "b (w h) c -> b h w c"
    return rearrange(out, pattern, h=h, w=w)


def _aggregate_case(b: int, h: int, w: int, c: int, seed: int) -> Case:
    def make(g: torch.Generator):
        n = h * w
        attention = torch.randn(b, n, n, generator=g, dtype=torch.float64).softmax(dim=-1)
        return attention, torch.randn(b, h, w, c, generator=g, dtype=torch.float64)

    return Case(f"A {b}×{h * w}×{h * w}, v {b}×{h}×{w}×{c}", make, seed=seed)


check_pam_aggregate = register(
    Checker(
        "pam_aggregate",
        exercise="pam_aggregate",
        tier="build",
        reference=ref_pam_aggregate,
        cases=[
            _aggregate_case(2, 3, 5, 6, 0),
            _aggregate_case(1, 4, 4, 8, 1),
            _aggregate_case(3, 2, 7, 5, 2),
            _aggregate_case(2, 1, 1, 3, 3),   # boundary: a single position
            _aggregate_case(1, 1, 5, 4, 4),   # boundary: a single row
            _aggregate_case(2, 3, 2, 1, 5),   # boundary: a single channel
        ],
        mistakes=[
            Mistake("Aᵀ·V instead of A·V: out[:, i] must sum A[i, j]·v[:, j] over the keys j, "
                    "not A[j, i] (A is not symmetric; an einsum reading b j i, b j c -> b i c "
                    "or the V·A of the lesson does this)", partial(ref_pam_aggregate, transpose=True)),
            Mistake("positions flattened column by column (w h) instead of row by row (h w)",
                    partial(ref_pam_aggregate, order="wh")),
            Mistake("the B×N×C result transposed to B×C×N before the reshape to B×H×W×C: "
                    "channels and positions scrambled (reshape does not move axes)",
                    partial(ref_pam_aggregate, mixed=True)),
            Mistake("positions taken row by row (h w) but put back column by column (w h): the "
                    "output pixels are moved", partial(ref_pam_aggregate, back="wh")),
        ],
    )
)


# ------------------------------------------------------------------- 3. CAM's attention
def ref_cam_attention(x: torch.Tensor, form: str | None = None, *, default: str = "official",
                      swap: bool = False, ignore_form: str = "", over: str = "last",
                      max_over: str = "last", mean: bool = False, gram: str = "channels",
                      layout: str = "last") -> torch.Tensor:
    """E = fᵀ f (B×C×C, f = channels-last x as B×N×C). ``form="official"``: softmax over c' of
    (max over c' of E) − E, i.e. softmax(−E); ``form="paper"``: softmax over c' of E.

    Knobs: ``swap`` (each form gives the other's answer), ``ignore_form`` ("official" or
    "paper": that form whatever was asked), ``over`` ("first": softmax over c, columns sum to
    1), ``max_over`` ("first": the official max taken over c), ``mean`` (E averaged over the
    N positions instead of summed), ``default`` (the form used when none is given), ``gram``
    ("positions": f fᵀ, N×N), ``layout`` ("first": x read as B×C×H×W, the lesson's layout).
    """
    form = default if form is None else form
    f = _tokens(x, layout=layout)
    if gram == "positions":
        energy = einsum(f, f, "b n c, b m c -> b n m")
    else:
        energy = einsum(f, f, "b n c, b n k -> b c k")
    if mean:
        energy = energy / f.shape[1]
    if ignore_form:
        form = ignore_form
    if swap:
        form = "paper" if form == "official" else "official"
    if form == "official":
        biggest = energy.amax(dim=-1 if max_over == "last" else 1, keepdim=True)
        energy = biggest - energy
    return energy.softmax(dim=-1 if over == "last" else 1)


def _cam_case(shape: tuple[int, int, int, int], form: str, seed: int) -> Case:
    def make(g: torch.Generator, shape=shape, form=form):
        return 0.3 * torch.randn(*shape, generator=g, dtype=torch.float64), form

    return Case("x " + "×".join(map(str, shape)) + f", form = {form!r}", make, seed=seed)


check_cam_attention = register(
    Checker(
        "cam_attention",
        exercise="cam_attention",
        tier="build",
        reference=ref_cam_attention,
        cases=[
            _cam_case((2, 3, 5, 6), "official", 0),
            _cam_case((1, 4, 4, 5), "paper", 1),
            _cam_case((3, 5, 3, 4), "official", 2),
            _cam_case((2, 2, 3, 7), "paper", 3),
            _cam_case((2, 3, 4, 1), "official", 4),   # boundary: a single channel
            _cam_case((2, 1, 1, 3), "paper", 6),      # boundary: a single position
            # the default form = "official": called with x alone
            Case("x 2×3×3×5, form not given (default 'official')",
                 lambda g: (0.3 * torch.randn(2, 3, 3, 5, generator=g, dtype=torch.float64),),
                 seed=5),
        ],
        mistakes=[
            Mistake("softmax(E) and softmax(−E) swapped: for form='official' your answer "
                    "computes softmax(E), for form='paper' softmax(−E) (the official code's "
                    "max − E gives softmax(−E), the paper's form is softmax(E))",
                    partial(ref_cam_attention, swap=True)),
            Mistake("for form='paper' your answer computes softmax(−E), the official form: a "
                    "shift max − E flips the sign; the paper's softmax(E) has none (or E − max)",
                    partial(ref_cam_attention, ignore_form="official")),
            Mistake("for form='official' your answer computes softmax(E), the paper's form: the "
                    "usual stable shift E − max leaves softmax(E) unchanged; the official code's "
                    "max − E gives softmax(−E)", partial(ref_cam_attention, ignore_form="paper")),
            Mistake("softmax over the first channel axis c (columns sum to 1) instead of c'",
                    partial(ref_cam_attention, over="first")),
            Mistake("official form with the max over the wrong axis (per column instead of "
                    "per row: no longer a shift the softmax ignores)",
                    partial(ref_cam_attention, max_over="first")),
            Mistake("energy averaged over the positions instead of summed",
                    partial(ref_cam_attention, mean=True)),
            Mistake("called without a form, your answer computes the paper's softmax(E): the "
                    "default is form='official'", partial(ref_cam_attention, default="paper")),
            Mistake("the Gram matrix over the positions (f fᵀ, N×N) instead of over the channels "
                    "(fᵀ f, C×C): with f as B×N×C the channel energy is fᵀ f",
                    partial(ref_cam_attention, gram="positions")),
            Mistake("x read as B×C×H×W, the lesson's channels-first layout: this x is "
                    "channels-last, B×H×W×C (your map is H×H)",
                    partial(ref_cam_attention, layout="first")),
        ],
    )
)


# ------------------------------------------------------------------- 4. the PAM module
class PAMReference(nn.Module):
    """DANet's PAM on channels-last maps: q, k = Linear(C -> C//8), v = Linear(C -> C),
    gamma = 0; y = gamma · (A V) + x with A = softmax over keys of q kᵀ (no scaling). The same
    module as the lesson's channels-first one: a 1×1 conv is a Linear over the channel axis.

    Knobs: ``reduction`` (1: q/k with C channels), ``gamma_init`` (1.0), ``over``
    ("queries"), ``scale`` (1/sqrt(d)), ``transpose`` (Aᵀ·V), ``residual`` (False: no + x).
    """

    def __init__(self, channels: int, *, reduction: int = 8, gamma_init: float = 0.0,
                 over: str = "keys", scale: bool = False, transpose: bool = False,
                 residual: bool = True) -> None:
        super().__init__()
        self.query = nn.Linear(channels, channels // reduction)
        self.key = nn.Linear(channels, channels // reduction)
        self.value = nn.Linear(channels, channels)
        self.gamma = nn.Parameter(torch.full((1,), gamma_init))
        self.over, self.scale, self.transpose, self.residual = over, scale, transpose, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = ref_pam_attention(self.query(x), self.key(x), over=self.over,
                                      scale=self.scale)
        out = self.gamma * ref_pam_aggregate(attention, self.value(x), transpose=self.transpose)
        return out + x if self.residual else out


QK = "query/key channels"  # the first thing the module checker compares


class PAMChecker(ModuleChecker):
    """A module checker that makes gamma count.

    A fresh PAM has gamma = 0 and is the identity, so comparing outputs after loading the
    reference's weights would check nothing: in the ordinary cases the reference's gamma is set
    to ``case.build``-independent non-zero values (``gammas``). The ``fresh`` cases keep the
    gamma the learner's ``__init__`` gave (every other weight loaded), so a gamma initialised to
    anything but 0 shows. Query/key weights whose shape differs from the reference's (q/k with
    C channels) get seeded values instead of an error, so that slip can be named; the number of
    query/key channels is compared first and says what is wrong.
    """

    def __init__(self, *args, gammas: dict[str, float], fresh: set[str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gammas, self.fresh = gammas, fresh

    def _reference_module(self, case: Case) -> nn.Module:
        ref = super()._reference_module(case)
        if case.name not in self.fresh:
            with torch.no_grad():
                ref.gamma.fill_(self.gammas[case.name])
        return ref

    def _load(self, module: nn.Module, ref: nn.Module, case: Case) -> None:
        mine, theirs = module.state_dict(), ref.state_dict()
        self._check_names(mine, theirs, shape_free=("query.", "key."))
        g = torch.Generator().manual_seed(case.seed + 100)
        state = {}
        for name in sorted(theirs):
            if mine[name].shape == theirs[name].shape:
                state[name] = theirs[name].clone()
            else:  # q/k of another width: seeded values, the same for everyone of that width
                state[name] = 0.3 * torch.randn(mine[name].shape, generator=g,
                                                dtype=torch.float64).to(mine[name].dtype)
        if case.name in self.fresh:
            state["gamma"] = mine["gamma"].clone()
        module.load_state_dict(state)

    def _runs_reference(self, subject, case: Case) -> bool:
        return subject is self.reference and case.name not in self.fresh

    def _measure(self, module: nn.Module, case: Case, args: tuple, what: str = "") -> dict:
        # the number of query/key channels first: it says what is wrong when they differ
        return {QK: int(module.state_dict()["query.weight"].shape[0]),
                **super()._measure(module, case, args, what)}


def _module_case(shape: tuple[int, int, int, int], seed: int, fresh: bool = False) -> Case:
    label = ", a freshly built module (gamma as __init__ sets it)" if fresh else ""
    return map_case(shape, seed, label, build={"channels": shape[-1]})


_MODULE_CASES = [  # channels-last x: B×H×W×C
    _module_case((2, 3, 5, 16), 0),
    _module_case((1, 4, 4, 24), 1),
    _module_case((2, 5, 3, 16), 2, fresh=True),
    _module_case((2, 3, 4, 8), 3),   # boundary: C = 8, a single query/key channel
    _module_case((3, 1, 1, 16), 4),  # boundary: a 1×1 map, a single key
]

check_pam_module = register(
    PAMChecker(
        "pam_module",
        exercise="MyPAM",
        tier="build",
        reference=PAMReference,
        cases=_MODULE_CASES,
        gammas={_MODULE_CASES[0].name: 0.7, _MODULE_CASES[1].name: -1.3,
                _MODULE_CASES[3].name: 0.9, _MODULE_CASES[4].name: -0.6},
        fresh={_MODULE_CASES[2].name},
        mistakes=[
            Mistake("gamma initialised to 1 instead of 0: a fresh PAM must be the identity",
                    partial(PAMReference, gamma_init=1.0)),
            Mistake("query/key layers with C output channels instead of C // 8",
                    partial(PAMReference, reduction=1)),
            Mistake("Aᵀ·V instead of A·V: out[:, i] must sum A[i, j]·v[:, j] over the keys j",
                    partial(PAMReference, transpose=True)),
            Mistake("energy scaled by 1/sqrt(d): DANet's PAM does not scale",
                    partial(PAMReference, scale=True)),
            Mistake("softmax over the query axis instead of the key axis",
                    partial(PAMReference, over="queries")),
            Mistake("forgot the residual: the module returns gamma·out without + x",
                    partial(PAMReference, residual=False)),
        ],
    )
)


# ------------------------------------------------------------------- 7. extend: pooled keys
def ref_pam_pooled(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, r: int, *,
                   pool: str = "mean", blocks: str = "neighbours", scale: bool = False,
                   over: str = "keys", subsample: str = "") -> torch.Tensor:
    """PAM whose keys and values are averaged over non-overlapping r×r blocks (channels-last):
    out[b, i, c] = Σ_m softmax over m of (q_i · k̄_m) · v̄[b, m, c], m over the (H/r)·(W/r)
    pooled positions; back to B×H×W×C.

    Knobs: ``pool`` ("max", "sum"), ``blocks`` ("strided": the window pattern (r h), every
    r-th pixel grouped), ``scale`` (1/sqrt(d)), ``over`` ("queries"), ``subsample`` ("k" or
    "v": that map taken at every r-th pixel instead of averaged).
    """
    b, h, w, c = v.shape
    pattern = ("b (h r1) (w r2) c -> b (h w) c" if blocks == "neighbours"
               else "b (r1 h) (r2 w) c -> b (h w) c")

    def pooled(t: torch.Tensor, name: str) -> torch.Tensor:
        if subsample == name:
            return rearrange(t[:, ::r, ::r], "b h w c -> b (h w) c")
        return reduce(t, pattern, pool, r1=r, r2=r)

    energy = einsum(_tokens(q), pooled(k, "k"), "b i d, b m d -> b i m")
    if scale:
        energy = energy / math.sqrt(q.shape[-1])
    attention = energy.softmax(dim=-1 if over == "keys" else 1)
    out = einsum(attention, pooled(v, "v"), "b i m, b m c -> b i c")
    return rearrange(out, "b (h w) c -> b h w c", h=h, w=w)


def _pooled_case(b: int, h: int, w: int, d: int, c: int, r: int, seed: int,
                 label: str = "") -> Case:
    def make(g: torch.Generator):
        return (torch.randn(b, h, w, d, generator=g, dtype=torch.float64),
                torch.randn(b, h, w, d, generator=g, dtype=torch.float64),
                torch.randn(b, h, w, c, generator=g, dtype=torch.float64), r)

    return Case(f"q, k {b}×{h}×{w}×{d}, v {b}×{h}×{w}×{c}, r = {r}{label}", make, seed=seed)


check_pam_pooled = register(
    Checker(
        "pam_pooled",
        exercise="pam_pooled",
        tier="extend",
        reference=ref_pam_pooled,
        cases=[
            _pooled_case(2, 4, 6, 3, 5, 2, 0),   # 2×3 pooled positions
            _pooled_case(1, 6, 6, 2, 4, 3, 1),   # batch 1, 3×3 blocks
            _pooled_case(2, 6, 4, 4, 3, 2, 2),   # 3×2 pooled: the strided grouping shows
            _pooled_case(2, 3, 5, 2, 1, 1, 3, " (PAM itself; one value channel)"),
            _pooled_case(3, 2, 6, 1, 3, 2, 4, " (one pooled row; d = 1)"),
            _pooled_case(2, 4, 4, 3, 2, 4, 5, " (one pooled key: every weight is 1)"),
        ],
        mistakes=[
            Mistake("blocks built as (r h): every r-th pixel grouped (a strided grid) instead "
                    "of neighbouring r×r blocks (write (h r1) (w r2))",
                    partial(ref_pam_pooled, blocks="strided")),
            Mistake("max pooling instead of the average", partial(ref_pam_pooled, pool="max")),
            Mistake("the blocks summed instead of averaged", partial(ref_pam_pooled, pool="sum")),
            Mistake("energy scaled by 1/sqrt(d): DANet's PAM does not scale",
                    partial(ref_pam_pooled, scale=True)),
            Mistake("softmax over the query axis instead of the pooled keys",
                    partial(ref_pam_pooled, over="queries")),
            Mistake("the keys taken at every r-th pixel (k[:, ::r, ::r]) instead of averaged",
                    partial(ref_pam_pooled, subsample="k")),
            Mistake("the values taken at every r-th pixel (v[:, ::r, ::r]) instead of averaged",
                    partial(ref_pam_pooled, subsample="v")),
        ],
    )
)
