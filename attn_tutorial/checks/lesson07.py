"""Checkers for lesson 07 (external attention): exercises in ``solutions/07_external.ipynb``.

1. ``check_double_normalise``: logits B×N×S -> the double-normalised weights B×N×S (a softmax
   over the N pixels, then an l1 normalisation over the S memory slots with ε = 1e-9).
2. ``check_external_attention``: tokens B×N×C, memories M_k (S×C) and M_v (C×S) -> B×N×C.
3. ``check_ea_block`` (a module exercise): the EANet block with the memories tied as the
   authors' code ties them. Besides the output and the input gradient, the checker takes one
   SGD step and compares M_k after it: tied memories move by the gradients of both uses.

Each reference has one keyword knob per plausible slip; a catalogued mistake is the reference
with a knob turned. The per-case comments say which case catches which slip.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import einsum, rearrange

from attn_tutorial.checks._cases import map_case
from attn_tutorial.checks._core import Case, Checker, Mistake, register
from attn_tutorial.checks._modules import ModuleChecker, _load_by_name

NOTEBOOK = "07_external"  # exercises/07_external.ipynb holds these exercises, in this order
__all__ = ["check_double_normalise", "check_external_attention", "check_ea_block"]

EPS = 1e-9
PIXELS, MEMORY = -2, -1  # the axes of B×N×S weights


# ------------------------------------------------------------ 1. the double normalisation
def ref_double_normalise(logits: torch.Tensor, *, softmax_over: str = "pixels",
                         l1_over: str | None = "memory", eps: float = EPS,
                         eps_how: str = "add") -> torch.Tensor:
    """softmax over the N pixels (axis −2), then divide by (eps + the sum over the S slots).

    Knobs: ``softmax_over`` ("memory": axis −1; "all": one softmax over N·S entries),
    ``l1_over`` ("pixels", or None: no l1 step), ``eps`` (0: forgotten).
    """
    if softmax_over == "all":
        flat = rearrange(logits, "... n s -> ... (n s)").softmax(dim=-1)
        attn = flat.reshape(logits.shape)
    else:
        attn = logits.softmax(dim=PIXELS if softmax_over == "pixels" else MEMORY)
    if l1_over is None:
        return attn
    axis = MEMORY if l1_over == "memory" else PIXELS
    if eps_how == "floor":  # F.normalize(p=1): the sum floored at 1e-12, no ε added
        return F.normalize(attn, p=1, dim=axis)
    return attn / (eps + attn.sum(dim=axis, keepdim=True))


def _logits_case(b: int, n: int, s: int, seed: int, sunk: int | None = None) -> Case:
    """Random logits B×N×S; ``sunk``: that pixel's logits sit 30 below the others in every slot,
    so after the softmax over the pixels its weights are ~1e-14 in every slot."""
    def make(g: torch.Generator, b=b, n=n, s=s, sunk=sunk):
        logits = 2 * torch.randn(b, n, s, generator=g, dtype=torch.float64)
        if sunk is not None:
            logits[:, sunk, :] -= 30.0
        return (logits,)

    name = f"logits {b}×{n}×{s}" + (f", pixel {sunk} 30 below the others in every slot"
                                    if sunk is not None else "")
    return Case(name, make, seed=seed)


SOFTMAX_OVER_MEMORY = "softmax over the memory slots instead of over the pixels"
AXES_SWAPPED = ("l1 over the pixels and softmax over the memory: both axes swapped "
                "(the official code's dim=-1 and dim=1 used on tokens-first weights)")
EPS_FORGOTTEN = ("ε = 1e-9 forgotten in the l1 step (or F.normalize(p=1), whose floor of 1e-12 "
                 "is not + ε): a pixel with tiny weights in every slot is blown up toward sum 1 "
                 "(weights that underflow to 0 give 0/0 = NaN without ε)")
SOFTMAX_ALONE = ("softmax alone: the l1 normalisation over the memory slots is missing (an l1 "
                 "over the pixels after the softmax over them changes nothing)")

check_double_normalise = register(
    Checker(
        "double_normalise",
        exercise="double_normalise",
        tier="build",
        reference=ref_double_normalise,
        cases=[
            _logits_case(2, 63, 8, 0),          # a 7×9 map, 8 slots
            _logits_case(1, 20, 5, 1),          # batch 1, S < N
            _logits_case(3, 6, 16, 2),          # more slots than pixels
            _logits_case(2, 35, 6, 3, sunk=4),  # only ε keeps pixel 4's weights tiny
            _logits_case(2, 9, 1, 4),           # boundary: a single memory slot
            _logits_case(1, 1, 5, 5),           # boundary: a single pixel
        ],
        mistakes=[
            Mistake(SOFTMAX_OVER_MEMORY, partial(ref_double_normalise, softmax_over="memory")),
            Mistake(AXES_SWAPPED, partial(ref_double_normalise, softmax_over="memory",
                                          l1_over="pixels")),
            Mistake(EPS_FORGOTTEN, partial(ref_double_normalise, eps=0.0),
                    variants=(partial(ref_double_normalise, eps_how="floor"),)),
            Mistake(SOFTMAX_ALONE, partial(ref_double_normalise, l1_over=None)),
            Mistake("one softmax over all pixels and slots together instead of over the pixels "
                    "(with or without the l1 step after it)",
                    partial(ref_double_normalise, softmax_over="all"),
                    variants=(partial(ref_double_normalise, softmax_over="all", l1_over=None),)),
        ],
    )
)


# ------------------------------------------------------------ 2. the external-attention core
def ref_external_attention(tokens: torch.Tensor, memory_key: torch.Tensor,
                           memory_value: torch.Tensor, *, scale: bool = False,
                           tie: bool = False, **normalise) -> torch.Tensor:
    """``double_normalise(tokens M_kᵀ) M_vᵀ``: B×N×C, S×C, C×S -> B×N×C.

    Knobs: ``scale`` (logits × C^-1/2 as in self-attention), ``tie`` (M_kᵀ used as the value
    memory, ``memory_value`` ignored), and the knobs of :func:`ref_double_normalise`.
    """
    logits = einsum(tokens, memory_key, "b n c, s c -> b n s")
    if scale:
        logits = logits * tokens.shape[-1] ** -0.5
    attn = ref_double_normalise(logits, **normalise)
    value = rearrange(memory_key, "s c -> c s") if tie else memory_value
    return einsum(attn, value, "b n s, c s -> b n c")


def _core_case(b: int, n: int, c: int, s: int, seed: int) -> Case:
    def make(g: torch.Generator, b=b, n=n, c=c, s=s):
        tokens = torch.randn(b, n, c, generator=g, dtype=torch.float64)
        memory_key = torch.randn(s, c, generator=g, dtype=torch.float64) / math.sqrt(c) * 2
        memory_value = torch.randn(c, s, generator=g, dtype=torch.float64)
        return tokens, memory_key, memory_value

    return Case(f"tokens {b}×{n}×{c}, S = {s}", make, seed=seed)


SCALED = "logits scaled by 1/√d (d = C) as in self-attention: external attention has no scaling"

check_external_attention = register(
    Checker(
        "external_attention",
        exercise="external_attention",
        tier="build",
        reference=ref_external_attention,
        cases=[
            _core_case(2, 63, 16, 8, 0),
            _core_case(1, 20, 12, 5, 1),   # batch 1; S ≠ C catches an untransposed memory
            _core_case(3, 9, 6, 24, 2),    # more slots than channels and than pixels
            _core_case(2, 5, 4, 1, 3),     # boundary: a single memory slot
            _core_case(1, 1, 6, 4, 4),     # boundary: a single pixel
        ],
        mistakes=[
            Mistake(SCALED, partial(ref_external_attention, scale=True)),
            Mistake(SOFTMAX_OVER_MEMORY, partial(ref_external_attention, softmax_over="memory")),
            Mistake(SOFTMAX_ALONE, partial(ref_external_attention, l1_over=None)),
            Mistake("memory_key's transpose used as the value memory: here M_v is its own "
                    "argument, memory_value", partial(ref_external_attention, tie=True)),
        ],
    )
)


# ------------------------------------------------------------------ 3. the EA block (module)
class EABlockReference(nn.Module):
    """``relu(x + norm(conv_out(M_v · double_normalise(M_k · conv_in(x)))))``, M_v = M_kᵀ.

    Parameters by name: ``conv_in`` (1×1 conv with bias), ``memory_key`` (Linear C→S, no bias;
    used transposed as M_v), ``conv_out`` (1×1 conv, no bias), ``norm`` (BatchNorm2d). The BN's
    running statistics and affine weights are random, so the BN is not a near identity in eval.

    Knobs: ``tie`` (False: M_v a parameter of its own, ``memory_value``), ``relu_first``
    (x + relu(...)), ``softmax_over`` ("memory"), ``scale`` (logits × C^-1/2).
    """

    def __init__(self, channels: int, memory_size: int = 64, *, tie: bool = True,
                 relu_first: bool = False, softmax_over: str = "pixels",
                 scale: bool = False) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(channels, channels, 1)
        self.memory_key = nn.Linear(channels, memory_size, bias=False)
        self.memory_value = None if tie else nn.Linear(memory_size, channels, bias=False)
        self.conv_out = nn.Conv2d(channels, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels)
        self.relu_first, self.softmax_over, self.scale = relu_first, softmax_over, scale
        with torch.no_grad():
            self.norm.running_mean.normal_(0.0, 0.5)
            self.norm.running_var.uniform_(0.5, 2.0)
            self.norm.weight.uniform_(0.5, 1.5)
            self.norm.bias.normal_(0.0, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        tokens = rearrange(self.conv_in(x), "b c h w -> b (h w) c")
        value = self.memory_key.weight.t() if self.memory_value is None \
            else self.memory_value.weight
        out = ref_external_attention(tokens, self.memory_key.weight, value,
                                     scale=self.scale, softmax_over=self.softmax_over)
        branch = self.norm(self.conv_out(rearrange(out, "b (h w) c -> b c h w", h=h, w=w)))
        return x + F.relu(branch) if self.relu_first else F.relu(x + branch)




class _TiedState:
    """The reference's state_dict, plus M_kᵀ for each parameter of M_v's shape that the learner
    has and the reference has not (an untied M_v, or the authors' shared-storage second view):
    at load both memories start equal, as in the authors' code."""

    def __init__(self, module: nn.Module, ref: nn.Module) -> None:
        state = ref.state_dict()
        key = state["memory_key.weight"]
        for name, tensor in module.state_dict().items():
            if name not in state and tensor.numel() == key.numel() \
                    and tuple(tensor.shape[:2]) == tuple(key.t().shape):
                state[name] = key.t().reshape(tensor.shape).clone()
        self._state = state

    def state_dict(self) -> dict:
        return self._state


class TiedModuleChecker(ModuleChecker):
    """A module checker for tied memories: the learner's module is built in float64 (a dtype
    conversion would undo a tie made by shared storage) and a second memory of M_v's shape starts
    as M_kᵀ. The engine compares the gradient of ``memory_key.weight`` and one SGD step: tied, it
    moves by the gradient of both of its uses (as M_k and as M_vᵀ), untied by its use as M_k
    only."""

    parameter_gradients = False

    def _build(self, subject, case):
        # built in float64 so that .double() has nothing to convert: a conversion gives every
        # parameter its own copy and would undo a tie made by shared storage
        dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            return super()._build(subject, case)
        finally:
            torch.set_default_dtype(dtype)

    def _load(self, module, ref, case):
        _load_by_name(module, _TiedState(module, ref))


def _block_case(shape: tuple[int, int, int, int], s: int, seed: int) -> Case:
    return map_case(shape, seed, f", S = {s}", build={"channels": shape[1], "memory_size": s})


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
        ],
        mistakes=[
            Mistake("untied memories: M_v is a parameter of its own, so one optimiser step "
                    "moves M_k by its use as the key only (the authors' code ties M_v = M_kᵀ)",
                    partial(EABlockReference, tie=False)),
            Mistake("ReLU before the residual sum: the block is relu(x + BN(...)), the ReLU "
                    "comes last", partial(EABlockReference, relu_first=True)),
            Mistake(SOFTMAX_OVER_MEMORY, partial(EABlockReference, softmax_over="memory")),
            Mistake(SCALED, partial(EABlockReference, scale=True)),
        ],
    )
)
