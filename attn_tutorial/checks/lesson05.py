"""Checkers for lesson 05 (DANet position and channel attention): ``solutions/05_danet.ipynb``.

The lesson works on channels-first maps (``B×C×H×W``); the build exercises ask for the
**channels-last** layout (``B×H×W×C``, what ``nn.Linear`` works on), so a lesson cell copied as it
stands does not solve them.

1. ``check_pam_inside`` (build): PAM's ``A·V`` from channels-last q, k, v (map and output in one).
2. ``check_cam_output`` (build): CAM's whole output ``γ·(A f) + x`` of a channels-last map, official
   or paper form, γ given (the lesson builds CAM channels-first, as A·f).
3. ``check_pam_module`` (build): the position attention module with ``nn.Linear`` projections.
4. ``check_pam_map_bytes`` (predict): the bytes of the energy and its softmax alive together, for
   a batch of images (the head's map at output stride 8) and a dtype.
5. ``check_pam_side_limit`` (predict): the smallest side H = W at which the map passes a budget.
   (4 and 5 live in ``lesson05_memory.py``.)
6. ``check_pam_pooled`` (extend): PAM whose keys and values are averaged over r×r blocks.

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
__all__ = ["check_pam_inside", "check_cam_output", "check_pam_module", "check_pam_map_bytes",
           "check_pam_side_limit", "check_pam_pooled"]

ROW_MAJOR, COLUMN_MAJOR = "b h w d -> b (h w) d", "b h w d -> b (w h) d"


def _tokens(t: torch.Tensor, order: str = "hw", layout: str = "last") -> torch.Tensor:
    """A map -> B×N×D tokens, positions row-major ``(h w)`` or column-major (``order="wh"``).
    ``layout="first"`` reads the map as B×D×H×W, the lesson's layout."""
    if layout == "first":
        return rearrange(t, "b d h w -> b (h w) d")
    return rearrange(t, ROW_MAJOR if order == "hw" else COLUMN_MAJOR)


# ------------------------------------------------------------------- 1. PAM inside: A·V
def ref_pam_inside(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, over: str = "keys",
                   scale: str = "", energy_t: bool = False, transpose: bool = False,
                   order: str = "hw", back: str = "", negate: bool = False,
                   mixed: bool = False, residual: bool = False) -> torch.Tensor:
    """PAM's inside on channels-last maps (q, k B×H×W×d, v B×H×W×C; positions row-major):
    out[b, i, c] = Σ_j A[b, i, j] v[b, j, c] (A·V in token layout) with A[b, i, j] = softmax
    over j of Σ_d q[b, i, d] k[b, j, d] (no scaling); the output B×H×W×C, no γ, no residual.

    Knobs: ``over`` ("queries": softmax over i; "batch": over the images), ``scale`` ("sqrt":
    divide by sqrt(d); "d": by d), ``negate`` (softmax of −energy), ``energy_t`` (the energy
    transposed before the softmax: rows of keys), ``transpose`` (Aᵀ·V, the same as the map
    transposed after the softmax), ``order``/``back`` (the order the positions are taken in and
    put back in; ``back`` is ``order`` when not given), ``mixed`` (the B×N×C result transposed to
    B×C×N before it is reshaped to B×H×W×C), ``residual`` (+ v, the module's).
    """
    b, h, w, c = v.shape
    energy = einsum(_tokens(q, order), _tokens(k, order), "b i d, b j d -> b i j")
    if scale:
        energy = energy / (math.sqrt(q.shape[-1]) if scale == "sqrt" else q.shape[-1])
    if negate:  # exp(max − e): the stable-softmax shift the wrong way round
        energy = -energy
    if energy_t:
        energy = energy.transpose(1, 2)
    attention = energy.softmax(dim={"keys": -1, "queries": 1, "batch": 0}[over])
    out = einsum(attention, _tokens(v, order), "b j i, b j c -> b i c" if transpose
                 else "b i j, b j c -> b i c")
    if mixed:
        return out.transpose(1, 2).reshape(b, h, w, c)
    pattern = "b (h w) c -> b h w c" if (back or order) == "hw" else "b (w h) c -> b h w c"
    out = rearrange(out, pattern, h=h, w=w)
    return out + v if residual else out


def _qkv_case(b: int, h: int, w: int, d: int, c: int, seed: int, label: str = "") -> Case:
    def make(g: torch.Generator):
        return (torch.randn(b, h, w, d, generator=g, dtype=torch.float64),
                torch.randn(b, h, w, d, generator=g, dtype=torch.float64),
                torch.randn(b, h, w, c, generator=g, dtype=torch.float64))

    return Case(f"q, k {b}×{h}×{w}×{d}, v {b}×{h}×{w}×{c}{label}", make, seed=seed)


# Single slips that may come together; each pair is a catalogued mistake of its own (the energy
# transposed before the softmax and then applied as Aᵀ·V is the softmax over the queries, named
# on its own).
_PAM_SLIPS = {
    "energy": ("the energy transposed before the softmax (an einsum whose output reads b j i, "
               "or k·qᵀ: rows are keys, each normalised over the queries)", {"energy_t": True}),
    "map": ("Aᵀ·V instead of A·V (the map transposed: rows must be the queries)",
            {"transpose": True}),
    "scale": ("the energy scaled by 1/sqrt(d) (DANet's PAM does not scale)", {"scale": "sqrt"}),
    "negate": ("softmax(−E) instead of softmax(E) (a stable shift written max − E)",
               {"negate": True}),
}


def _two_slips(reference, slips: dict) -> list[Mistake]:
    return [Mistake(f"two slips together: {slips[a][0]}, and {slips[b][0]}",
                    partial(reference, **slips[a][1], **slips[b][1]))
            for a, b in combinations(slips, 2) if {a, b} != {"energy", "map"}]


check_pam_inside = register(
    Checker(
        "pam_inside",
        exercise="pam_inside",
        tier="build",
        reference=ref_pam_inside,
        cases=[
            _qkv_case(2, 3, 5, 4, 6, 0),  # non-square: a column-major order shows
            _qkv_case(1, 4, 4, 2, 3, 1),  # batch 1; d = 2: 1/sqrt(d) and 1/d differ
            _qkv_case(3, 5, 2, 3, 5, 2),
            _qkv_case(2, 1, 1, 3, 2, 3, " (a 1×1 map: a single key)"),
            _qkv_case(2, 1, 5, 1, 4, 4, " (d = 1, a single row)"),
            _qkv_case(2, 3, 2, 2, 1, 5, " (a single value channel)"),
        ],
        mistakes=[
            Mistake("softmax over the query axis instead of the key axis (each row of A must "
                    "sum to 1 over the keys)", partial(ref_pam_inside, over="queries")),
            Mistake("softmax over the batch axis (dim 0): each weight normalised over the "
                    "images, not over the keys", partial(ref_pam_inside, over="batch")),
            Mistake("energy scaled by 1/sqrt(d): DANet's PAM does not scale",
                    partial(ref_pam_inside, scale="sqrt")),
            Mistake("energy divided by d: DANet's PAM does not scale",
                    partial(ref_pam_inside, scale="d")),
            Mistake("the energy transposed before the softmax: an einsum whose output reads "
                    "b j i (or k·qᵀ) makes rows of keys, each normalised over the queries; the "
                    "map wants rows of queries i normalised over the keys j",
                    partial(ref_pam_inside, energy_t=True)),
            Mistake("Aᵀ·V instead of A·V: out[:, i] must sum A[i, j]·v[:, j] over the keys j, "
                    "not A[j, i] (the map transposed after the softmax, an einsum reading "
                    "b j i, b j c -> b i c, or the lesson's V·A without its transpose)",
                    partial(ref_pam_inside, transpose=True)),
            Mistake("your answer computes softmax(−E), not softmax(E): a stable-softmax shift "
                    "written max − E flips the sign (E − max, the usual one, changes nothing)",
                    partial(ref_pam_inside, negate=True)),
            Mistake("positions taken column by column (w h) but put back row by row (h w): "
                    "the output pixels are moved", partial(ref_pam_inside, order="wh", back="hw")),
            Mistake("positions taken row by row (h w) but put back column by column (w h): "
                    "the output pixels are moved", partial(ref_pam_inside, back="wh")),
            Mistake("the B×N×C result transposed to B×C×N before the reshape to B×H×W×C: "
                    "channels and positions scrambled (reshape does not move axes)",
                    partial(ref_pam_inside, mixed=True)),
            Mistake("a residual added (A·V + v): this exercise asks for A·V alone; γ and the "
                    "residual belong to the module", partial(ref_pam_inside, residual=True)),
            *_two_slips(ref_pam_inside, _PAM_SLIPS),
        ],
    )
)


# ------------------------------------------------------------------- 2. CAM's output
def ref_cam_attention(x: torch.Tensor, form: str | None = None, *, default: str = "official",
                      swap: bool = False, ignore_form: str = "", over: str = "last",
                      max_over: str = "last", mean: bool = False, gram: str = "channels",
                      layout: str = "last", shift: bool = True) -> torch.Tensor:
    """E = fᵀ f (B×C×C, f = channels-last x as B×N×C). ``form="official"``: softmax over c' of
    (max over c' of E) − E, i.e. softmax(−E); ``form="paper"``: softmax over c' of E.

    Knobs: ``swap`` (each form gives the other's answer), ``ignore_form`` ("official" or
    "paper": that form whatever was asked), ``over`` ("first": softmax over c, columns sum to
    1), ``max_over`` ("first": the official max taken over c), ``shift`` (False: the official
    form written −E, no max), ``mean`` (E averaged over the N positions instead of summed),
    ``default`` (the form used when none is given), ``gram`` ("positions": f fᵀ, N×N),
    ``layout`` ("first": x read as B×C×H×W, the lesson's layout).
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
        if shift:
            energy = energy.amax(dim=-1 if max_over == "last" else 1, keepdim=True) - energy
        else:
            energy = -energy
    return energy.softmax(dim=-1 if over == "last" else 1)


def ref_cam_output(x: torch.Tensor, gamma: float, form: str | None = None, *,
                   applied: str = "A", residual: bool = True, gamma_on: str = "out",
                   **attention_knobs) -> torch.Tensor:
    """CAM's output on a channels-last map x (B×H×W×C): y[b, h, w, c] = γ · Σ_c' A[b, c, c']
    x[b, h, w, c'] + x[b, h, w, c], A = ``ref_cam_attention(x, form)``; in tokens (f = B×N×C)
    the sum is f·Aᵀ, the channels-first A·f of the lesson.

    Knobs: ``applied`` ("At": f·A, the map applied transposed), ``residual`` (False: no + x),
    ``gamma_on`` ("all": γ·(A f + x)), and every knob of ``ref_cam_attention``.
    """
    b, h, w, c = x.shape
    attention = ref_cam_attention(x, form, **attention_knobs)
    if attention_knobs.get("layout") == "first":  # the lesson's cell on a channels-last x
        f = _tokens(x, layout="first")                                   # B×(W·C)×H
        out = rearrange(einsum(attention, f, "b c k, b n k -> b n c"), "b (h w) c -> b c h w",
                        h=x.shape[2], w=x.shape[3])
    elif attention_knobs.get("gram") == "positions":                   # an N×N map
        out = rearrange(einsum(attention, _tokens(x), "b n m, b m c -> b n c"),
                        "b (h w) c -> b h w c", h=h, w=w)
    else:
        pattern = "b c k, b h w k -> b h w c" if applied == "A" else "b k c, b h w k -> b h w c"
        out = einsum(attention, x, pattern)
    if gamma_on == "all":
        return gamma * (out + x)
    return gamma * out + x if residual else gamma * out


def _cam_case(shape: tuple[int, int, int, int], gamma: float, form: str | None, seed: int,
              label: str = "") -> Case:
    def make(g: torch.Generator):
        x = 0.3 * torch.randn(*shape, generator=g, dtype=torch.float64)
        return (x, gamma) if form is None else (x, gamma, form)

    shown = "x " + "×".join(map(str, shape)) + f", gamma = {gamma}"
    shown += ", form not given (default 'official')" if form is None else f", form = {form!r}"
    return Case(shown + label, make, seed=seed)


check_cam_output = register(
    Checker(
        "cam_output",
        exercise="cam_output",
        tier="build",
        reference=ref_cam_output,
        cases=[
            _cam_case((2, 3, 5, 6), 0.7, "official", 0),
            _cam_case((1, 4, 4, 5), -1.3, "paper", 1),
            _cam_case((3, 5, 3, 4), -0.4, "official", 2),
            _cam_case((2, 2, 3, 7), 0.9, "paper", 3),
            _cam_case((2, 3, 4, 1), 0.5, "official", 4, " (a single channel)"),
            _cam_case((2, 1, 1, 3), 1.1, "paper", 6, " (a single position)"),
            _cam_case((2, 3, 3, 5), 0.6, None, 5),
            _cam_case((1, 2, 3, 4), 0.0, "official", 7, " (gamma = 0: y = x)"),
        ],
        mistakes=[
            Mistake("softmax(E) and softmax(−E) swapped: for form='official' your answer "
                    "computes softmax(E), for form='paper' softmax(−E) (the official code's "
                    "max − E gives softmax(−E), the paper's form is softmax(E))",
                    partial(ref_cam_output, swap=True)),
            Mistake("for form='paper' your answer computes softmax(−E), the official form: a "
                    "shift max − E flips the sign; the paper's softmax(E) has none (or E − max)",
                    partial(ref_cam_output, ignore_form="official")),
            Mistake("for form='official' your answer computes softmax(E), the paper's form: the "
                    "usual stable shift E − max leaves softmax(E) unchanged; the official code's "
                    "max − E gives softmax(−E)", partial(ref_cam_output, ignore_form="paper")),
            Mistake("the map's transpose used: a softmax over the first channel axis c (dim 1, "
                    "e.g. (−E).softmax(1)) instead of c', or the map applied as f·A instead of "
                    "f·Aᵀ (E is symmetric, so both give Aᵀ)", partial(ref_cam_output, applied="At"),
                    variants=(partial(ref_cam_output, over="first", shift=False),)),
            Mistake("softmax over the first channel axis c (dim 1) of max − E, the max taken "
                    "per row: the softmax must run over c' (dim −1), the axis of the max",
                    partial(ref_cam_output, over="first")),
            Mistake("E.softmax(1) whatever the form: the softmax over the first channel axis c "
                    "instead of c', and softmax(E) where form='official' asks for softmax(−E)",
                    partial(ref_cam_output, over="first", ignore_form="paper")),
            Mistake("official form with the max over the wrong axis (per column instead of "
                    "per row: no longer a shift the softmax ignores)",
                    partial(ref_cam_output, max_over="first")),
            Mistake("energy averaged over the positions instead of summed",
                    partial(ref_cam_output, mean=True)),
            Mistake("called without a form, your answer computes the paper's softmax(E): the "
                    "default is form='official'", partial(ref_cam_output, default="paper")),
            Mistake("the Gram matrix over the positions (f fᵀ, N×N) instead of over the channels "
                    "(fᵀ f, C×C): with f as B×N×C the channel energy is fᵀ f",
                    partial(ref_cam_output, gram="positions")),
            Mistake("forgot the residual: the answer returns γ·(A f) without + x",
                    partial(ref_cam_output, residual=False)),
            Mistake("γ multiplies the residual too: γ·(A f + x) instead of γ·(A f) + x",
                    partial(ref_cam_output, gamma_on="all")),
            Mistake("x read as B×C×H×W, the lesson's channels-first layout: this x is "
                    "channels-last, B×H×W×C", partial(ref_cam_output, layout="first")),
        ],
    )
)


# ------------------------------------------------------------------- 4. the PAM module
class PAMReference(nn.Module):
    """DANet's PAM on channels-last maps: q, k = Linear(C -> C//8), v = Linear(C -> C),
    gamma = 0; y = gamma · (A V) + x with A = softmax over keys of q kᵀ (no scaling). The same
    module as the lesson's channels-first one: a 1×1 conv is a Linear over the channel axis.

    Knobs: ``reduction`` (1: q/k with C channels), ``ceil`` (q/k width rounded up), ``gamma_init`` (1.0), ``over``
    ("queries"), ``scale`` (1/sqrt(d)), ``transpose`` (Aᵀ·V), ``residual`` (False: no + x).
    """

    def __init__(self, channels: int, *, reduction: int = 8, gamma_init: float = 0.0,
                 over: str = "keys", scale: bool = False, transpose: bool = False,
                 residual: bool = True, ceil: bool = False) -> None:
        super().__init__()
        width = -(-channels // reduction) if ceil else channels // reduction
        self.query = nn.Linear(channels, width)
        self.key = nn.Linear(channels, width)
        self.value = nn.Linear(channels, channels)
        self.gamma = nn.Parameter(torch.full((1,), gamma_init))
        self.over, self.scale, self.transpose, self.residual = over, scale, transpose, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.gamma * ref_pam_inside(self.query(x), self.key(x), self.value(x),
                                          over=self.over, scale="sqrt" if self.scale else "",
                                          transpose=self.transpose)
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

    def _build(self, subject, case: Case):
        # the number of channels passed by position: whatever the learner names the parameter
        with torch.random.fork_rng(devices=[]):
            return subject(case.build["channels"])

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
    _module_case((2, 3, 5, 20), 0),  # C = 20, not a multiple of 8: C // 8 = 2 (ceil gives 3)
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
            Mistake("query/key layers with ceil(C / 8) output channels instead of C // 8 "
                    "(rounded up: 3 instead of 2 at C = 20)", partial(PAMReference, ceil=True)),
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
    r-th pixel grouped), ``scale`` (1/sqrt(d)), ``over`` ("queries"), ``subsample`` ("k",
    "v" or "kv": those maps taken at every r-th pixel instead of averaged).
    """
    b, h, w, c = v.shape
    pattern = ("b (h r1) (w r2) c -> b (h w) c" if blocks == "neighbours"
               else "b (r1 h) (r2 w) c -> b (h w) c")

    def pooled(t: torch.Tensor, name: str) -> torch.Tensor:
        if name in subsample:
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
            Mistake("both the keys and the values taken at every r-th pixel "
                    "(k[:, ::r, ::r], v[:, ::r, ::r]) instead of averaged over the blocks",
                    partial(ref_pam_pooled, subsample="kv")),
        ],
    )
)
