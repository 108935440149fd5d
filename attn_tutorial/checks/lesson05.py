"""Checkers for lesson 05 (DANet position and channel attention): ``solutions/05_danet.ipynb``.

1. ``check_pam_attention``: PAM's N×N attention map from the query and key maps.
2. ``check_pam_aggregate``: PAM's output, every position a weighted sum of the value map.
3. ``check_cam_attention``: CAM's C×C attention map, in the official or the paper's form.
4. ``check_pam_module``: the whole position attention module (a module exercise).

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. The cases are chosen so that every mistake fails on at least one of them
(``tests/test_checks.py`` proves it); the comments say which case catches which slip.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from einops import einsum, rearrange
from torch import nn

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, register
from attn_tutorial.checks._modules import ModuleChecker

NOTEBOOK = "05_danet"  # exercises/05_danet.ipynb holds these exercises, in this order
__all__ = ["check_pam_attention", "check_pam_aggregate", "check_cam_attention",
           "check_pam_module"]


def _flat(t: torch.Tensor, order: str) -> torch.Tensor:
    """B×D×H×W -> B×N×D with the positions in row-major ``(h w)`` or column-major order."""
    return rearrange(t, "b d h w -> b (h w) d" if order == "hw" else "b d h w -> b (w h) d")


# ------------------------------------------------------------------- 1. PAM's attention
def ref_pam_attention(q: torch.Tensor, k: torch.Tensor, *, over: str = "keys",
                      scale: bool = False, transpose: bool = False,
                      order: str = "hw", negate: bool = False) -> torch.Tensor:
    """A[b, i, j] = softmax over j of Σ_d q[b, d, i] k[b, d, j]; positions row-major (h w).

    Knobs: ``over`` ("queries": softmax over i), ``scale`` (divide by sqrt(d)), ``transpose``
    (rows are keys), ``order`` ("wh": positions flattened column by column), ``negate``
    (softmax of −energy).
    """
    energy = einsum(_flat(q, order), _flat(k, order), "b i d, b j d -> b i j")
    if scale:
        energy = energy / math.sqrt(q.shape[1])
    if negate:  # exp(max − e): the stable-softmax shift the wrong way round
        energy = -energy
    attention = energy.softmax(dim=-1 if over == "keys" else 1)
    return attention.transpose(1, 2) if transpose else attention


def _qk_case(b: int, d: int, h: int, w: int, seed: int) -> Case:
    def make(g: torch.Generator):
        return (torch.randn(b, d, h, w, generator=g, dtype=torch.float64),
                torch.randn(b, d, h, w, generator=g, dtype=torch.float64))

    return Case(f"q, k {b}×{d}×{h}×{w}", make, seed=seed)


def _columns_sum_to_one(out, q, k) -> bool:
    """An N×N map whose columns (one key, all queries) sum to 1: a softmax over the queries,
    whatever else was done."""
    n = q.shape[2] * q.shape[3]
    return tuple(out.shape) == (q.shape[0], n, n) and \
        bool(torch.allclose(out.sum(dim=1), torch.ones((), dtype=out.dtype)))


check_pam_attention = register(
    Checker(
        "pam_attention",
        exercise="pam_attention",
        tier="build",
        reference=ref_pam_attention,
        cases=[
            _qk_case(2, 4, 3, 5, 0),  # non-square: the column-major flattening shows
            _qk_case(1, 2, 4, 4, 1),  # batch 1; d = 2: the 1/sqrt(d) scaling shows
            _qk_case(3, 3, 5, 2, 2),
            _qk_case(2, 3, 1, 1, 3),  # boundary: a 1×1 map, a single key (every weight is 1)
            _qk_case(2, 1, 1, 5, 4),  # boundary: d = 1, a single row
        ],
        mistakes=[
            Mistake("softmax over the query axis instead of the key axis (each row must sum "
                    "to 1 over the keys)", partial(ref_pam_attention, over="queries"),
                    holds=_columns_sum_to_one),
            Mistake("energy scaled by 1/sqrt(d): DANet's PAM does not scale",
                    partial(ref_pam_attention, scale=True)),
            Mistake("map transposed: rows must be the queries i, columns the keys j",
                    partial(ref_pam_attention, transpose=True)),
            Mistake("positions flattened column by column (w h) instead of row by row (h w)",
                    partial(ref_pam_attention, order="wh")),
            Mistake("your answer computes softmax(−energy): the stable-softmax shift written "
                    "max − e instead of e − max", partial(ref_pam_attention, negate=True)),
        ],
    )
)


# ------------------------------------------------------------------- 2. PAM's output
def ref_pam_aggregate(attention: torch.Tensor, v: torch.Tensor, *, transpose: bool = False,
                      order: str = "hw") -> torch.Tensor:
    """out[b, c, i] = Σ_j A[b, i, j] v[b, c, j] (V·Aᵀ), folded back to B×C×H×W.

    Knobs: ``transpose`` (V·A: summed over the query axis), ``order`` ("wh": positions taken
    and put back column by column).
    """
    h, w = v.shape[2:]
    values = rearrange(v, "b c h w -> b c (h w)" if order == "hw" else "b c h w -> b c (w h)")
    pattern = "b c j, b j i -> b c i" if transpose else "b c j, b i j -> b c i"
    out = einsum(values, attention, pattern)
    if order == "hw":
        return rearrange(out, "b c (h w) -> b c h w", h=h, w=w)
    return rearrange(out, "b c (w h) -> b c h w", h=h, w=w)


def _aggregate_case(b: int, c: int, h: int, w: int, seed: int) -> Case:
    def make(g: torch.Generator):
        n = h * w
        attention = torch.randn(b, n, n, generator=g, dtype=torch.float64).softmax(dim=-1)
        return attention, torch.randn(b, c, h, w, generator=g, dtype=torch.float64)

    return Case(f"A {b}×{h * w}×{h * w}, v {b}×{c}×{h}×{w}", make, seed=seed)


check_pam_aggregate = register(
    Checker(
        "pam_aggregate",
        exercise="pam_aggregate",
        tier="build",
        reference=ref_pam_aggregate,
        cases=[
            _aggregate_case(2, 6, 3, 5, 0),
            _aggregate_case(1, 8, 4, 4, 1),
            _aggregate_case(3, 5, 2, 7, 2),
            _aggregate_case(2, 3, 1, 1, 3),   # boundary: a single position
            _aggregate_case(1, 4, 1, 5, 4),   # boundary: a single row
        ],
        mistakes=[
            Mistake("A instead of Aᵀ: out[:, :, i] must sum A[i, j]·v[:, :, j] over the keys j, "
                    "not A[j, i] (A is not symmetric)", partial(ref_pam_aggregate, transpose=True)),
            Mistake("positions flattened column by column (w h) instead of row by row (h w)",
                    partial(ref_pam_aggregate, order="wh")),
        ],
    )
)


# ------------------------------------------------------------------- 3. CAM's attention
def ref_cam_attention(x: torch.Tensor, form: str | None = None, *, default: str = "official",
                      swap: bool = False,
                      ignore_form: str = "", over: str = "last", max_over: str = "last",
                      mean: bool = False) -> torch.Tensor:
    """E = f fᵀ (B×C×C, f = x as B×C×N). ``form="official"``: softmax over c' of
    (max over c' of E) − E, i.e. softmax(−E); ``form="paper"``: softmax over c' of E.

    Knobs: ``swap`` (each form gives the other's answer), ``ignore_form`` ("official" or
    "paper": that form whatever was asked), ``over`` ("first": softmax over c, columns sum to
    1), ``max_over`` ("first": the official max taken over c), ``mean`` (E averaged over the
    N positions instead of summed), ``default`` (the form used when none is given).
    """
    form = default if form is None else form
    f = rearrange(x, "b c h w -> b c (h w)")
    energy = einsum(f, f, "b c n, b k n -> b c k")
    if mean:
        energy = energy / f.shape[-1]
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
            _cam_case((2, 6, 3, 5), "official", 0),
            _cam_case((1, 5, 4, 4), "paper", 1),
            _cam_case((3, 4, 5, 3), "official", 2),
            _cam_case((2, 7, 2, 3), "paper", 3),
            _cam_case((2, 1, 3, 4), "official", 4),   # boundary: a single channel
            # the default form = "official": called with x alone
            Case("x 2×5×3×3, form not given (default 'official')",
                 lambda g: (0.3 * torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64),),
                 seed=5),
        ],
        mistakes=[
            Mistake("for form='official' your answer computes softmax(E) and for form='paper' "
                    "softmax(-E): softmax(+E) and softmax(-E) swapped for the form asked (the "
                    "official code computes softmax(max - E) = softmax(-E), the paper softmax(E))",
                    partial(ref_cam_attention, swap=True)),
            Mistake("for form='paper' your answer computes softmax(-E) too, the official form: "
                    "the form ignored", partial(ref_cam_attention, ignore_form="official")),
            Mistake("for form='official' your answer computes softmax(E), the paper's form (a "
                    "shift E - max instead of max - E gives it too): the official code computes "
                    "softmax(max - E) = softmax(-E)",
                    partial(ref_cam_attention, ignore_form="paper")),
            Mistake("softmax over the first channel axis c (columns sum to 1) instead of c'",
                    partial(ref_cam_attention, over="first")),
            Mistake("official form with the max over the wrong axis (per column instead of "
                    "per row: no longer a shift the softmax ignores)",
                    partial(ref_cam_attention, max_over="first")),
            Mistake("energy averaged over the positions instead of summed",
                    partial(ref_cam_attention, mean=True)),
            Mistake("called without a form, your answer computes the paper's softmax(E): the "
                    "default is form='official'", partial(ref_cam_attention, default="paper")),
        ],
    )
)


# ------------------------------------------------------------------- 4. the PAM module
class PAMReference(nn.Module):
    """DANet's PAM: q, k = Conv1×1(C -> C//8), v = Conv1×1(C -> C), gamma = 0;
    y = gamma · (V Aᵀ) + x with A = softmax over keys of qᵀk (no scaling).

    Knobs: ``reduction`` (1: q/k with C channels), ``gamma_init`` (1.0), ``over``
    ("queries"), ``scale`` (1/sqrt(d)), ``transpose`` (V·A), ``residual`` (False: no + x).
    """

    def __init__(self, channels: int, *, reduction: int = 8, gamma_init: float = 0.0,
                 over: str = "keys", scale: bool = False, transpose: bool = False,
                 residual: bool = True) -> None:
        super().__init__()
        self.query = nn.Conv2d(channels, channels // reduction, kernel_size=1)
        self.key = nn.Conv2d(channels, channels // reduction, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
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
    return map_case(shape, seed, label, build={"channels": shape[1]})


_MODULE_CASES = [
    _module_case((2, 16, 3, 5), 0),
    _module_case((1, 24, 4, 4), 1),
    _module_case((2, 16, 5, 3), 2, fresh=True),
    _module_case((2, 8, 3, 4), 3),   # boundary: C = 8, a single query/key channel
    _module_case((3, 16, 1, 1), 4),  # boundary: a 1×1 map, a single key
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
            Mistake("query/key convs with C output channels instead of C // 8",
                    partial(PAMReference, reduction=1)),
            Mistake("A instead of Aᵀ: out[:, :, i] must sum A[i, j]·v[:, :, j] over the keys j",
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
