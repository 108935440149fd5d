"""Module exercises: the learner writes an ``nn.Module`` class (``__init__`` and ``forward``).

For each case :class:`ModuleChecker` builds the reference (seeded weights) and the learner's
class with the case's ``build`` keyword arguments, and compares, in this order:

1. the **parameter inventory**: the same names and shapes as the reference's ``state_dict``;
   every reference parameter an ``nn.Parameter`` (not a buffer) with ``requires_grad=True``,
   every reference buffer not a parameter;
2. **eval mode** (float64): the output, and the gradients of ``(output * g).sum()`` (g seeded)
   with respect to the input and to every parameter: one that none reaches is named;
3. **train mode** on a batch of at least 2 (the case's input, or it and its mirror image): the
   output, the input and parameter gradients, every floating-point buffer after the forward
   (running statistics);
4. **eval again after one SGD step** (lr 0.1) with those gradients.

The learner's module gets the reference's weights by name (``_load``). A lesson's subclass
overrides one step: ``_runs_reference``, ``_build``, ``_load`` or ``_measure`` (lessons 05, 07).
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from torch import nn

from attn_tutorial.checks._compare import NoGradient, describe, same
from attn_tutorial.checks._core import GRADIENT_SEED, Case, Checker, _CaseRun
from attn_tutorial.checks._isolation import Reported, guarded, restore_between_calls

STEP_LR = 0.1
TRAIN = "train (batch ≥ 2)"
AFTER_STEP = "eval after one training step"
EVAL_NORM = ("in training mode your module normalises with the running statistics, as in eval "
             "mode, not with the batch's: a norm layer called in eval form inside forward")
STILL_STATS = ("in training mode the running statistics stay as they were: they are never "
               "updated")
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


class ModuleChecker(Checker):
    """A checker for an exercise whose answer is an ``nn.Module`` class (see the module
    docstring). ``reference`` and every mistake's ``impl`` are classes (or partials of one)
    called with the case's ``build`` keyword arguments."""

    kind = "module"

    def __init__(self, *args: Any, input_names: Sequence[str] = (), **kwargs: Any) -> None:
        """``input_names``: what to call the forward's inputs in the report when it takes
        several (e.g. ``("x", "y")``); one input is "the input"."""
        super().__init__(*args, **kwargs)
        self.input_names = tuple(input_names)

    def validate(self, learner: Any) -> str | None:
        if not (isinstance(learner, type) and issubclass(learner, nn.Module)):
            return "expected an nn.Module subclass (the class, not an instance), got " \
                   f"{describe(learner)}"
        return None

    def title_for(self, learner: Any) -> str:
        return learner.__name__ if isinstance(learner, type) else self.title

    def gradients(self, subject: Any, case: Case, args: tuple) -> None:
        return None  # the module's gradients are part of its evaluated value

    @staticmethod
    def output_of(value: Any) -> Any:
        return value.get("output") if isinstance(value, dict) else value

    def _reference_module(self, case: Case) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case.seed)
            return self.reference(**case.build)

    def _module(self, subject: Any, case: Case) -> nn.Module:
        """``subject`` built for ``case`` with the reference's weights, in float64."""
        ref = self._reference_module(case)
        if self._runs_reference(subject, case):
            return ref.double()
        module = self._build(subject, case)
        if not isinstance(module, nn.Module):
            raise TypeError(f"building it gave {describe(module)}, not an nn.Module")
        self._load(module, ref, case)
        _inventory(module, ref)
        return module.double()

    # False where a parameter may be tied to another by shared storage (lesson 07): then each
    # parameter is compared after the training step, which sums the updates of all its uses.
    parameter_gradients = True

    def evaluate(self, subject: Any, case: Case, args: tuple) -> dict:
        module = self._module(subject, case)
        value = self._measure(module.eval(), case, args)
        value.pop("_grads", None)
        inputs_reached = any(k.startswith("gradient w.r.t. ") and "`" not in k for k in value)
        if isinstance(value.get("output"), torch.Tensor) and inputs_reached:
            restore_between_calls()  # what the eval call changed does not leak into training
            # built again (a deep copy would untie parameters that share storage)
            value.update(self._train(self._module(subject, case), case, args))
        # parameters the reference has, by its names (a learner's extra tied copy is not one)
        ref = self._reference_module(case)
        names = {f"`{n}`" for n, _ in [*ref.named_parameters(), *ref.named_buffers()]}
        return {k: v for k, v in value.items()
                if "`" not in k or k[k.index("`"):k.rindex("`") + 1] in names}

    # The steps of ``evaluate``; a lesson's subclass changes one of them (lessons 05 and 07).
    def _runs_reference(self, subject: Any, case: Case) -> bool:
        """Whether the reference module itself is measured, rather than ``subject`` built and
        loaded with the reference's weights."""
        return subject is self.reference

    def _build(self, subject: Any, case: Case) -> Any:
        """The learner's module, built with the case's keyword arguments."""
        with torch.random.fork_rng(devices=[]):  # building may draw random init weights
            return subject(**case.build)

    def _load(self, module: nn.Module, ref: nn.Module, case: Case) -> None:
        """Give the learner's module the reference's weights (by parameter name)."""
        _load_by_name(module, ref)

    def _measure(self, module: nn.Module, case: Case, args: tuple, what: str = "") -> dict:
        """The output and the gradients of ``(output * g).sum()`` (g seeded) w.r.t. the input
        and every parameter (by the reference's names)."""
        pre = f"{what}: " if what else ""
        inputs = [a.detach().clone().requires_grad_(a.is_floating_point())
                  if isinstance(a, torch.Tensor) else a for a in args]
        params = {n: p for n, p in module.named_parameters() if p.requires_grad}
        with torch.enable_grad():
            out = module(*inputs)
            first = next((a for a in inputs if isinstance(a, torch.Tensor)), None)
            if not isinstance(out, torch.Tensor) or out.dtype != torch.float64 \
                    or first is None or out.device != first.device:
                return {pre + "output": out}  # nothing to differentiate; the output's problem
            wrt = [a for a in inputs if isinstance(a, torch.Tensor) and a.requires_grad]
            names = list(self.input_names) if len(self.input_names) == len(wrt) else \
                ["the input" if len(wrt) == 1 else f"input {i}" for i in range(len(wrt))]
            names += [f"`{n}`" for n in params]
            if not out.requires_grad:
                grads = [None] * len(names)
            else:
                g = torch.randn(out.shape, dtype=out.dtype, device="cpu",
                                generator=torch.Generator().manual_seed(case.seed + GRADIENT_SEED))
                grads = torch.autograd.grad(out, [*wrt, *params.values()], g, allow_unused=True)
        value = {pre + "output": out.detach()}
        shown = names if self.parameter_gradients else names[:len(wrt)]
        for name, grad in zip(shown, grads):
            value[f"{pre}gradient w.r.t. {name}"] = NoGradient(name) \
                if grad is None or not bool(grad.any()) else grad.detach()
        value["_grads"] = dict(zip(params.values(), grads[len(wrt):]))
        return value

    def _train(self, module: nn.Module, case: Case, args: tuple) -> dict:
        """Train mode on a batch ≥ 2, the buffers after it, one SGD step, eval again."""
        batch = args
        if args[0].shape[0] < 2:  # every input of that batch doubled alike
            batch = tuple(torch.cat([a, -a.flip(-1)]) if isinstance(a, torch.Tensor) and
                          a.dim() and a.shape[0] == args[0].shape[0] else a for a in args)
        value = self._measure(module.train(), case, batch, TRAIN)
        grads = value.pop("_grads", {})
        for name, buffer in module.named_buffers():
            if buffer.is_floating_point():
                value[f"{TRAIN}: buffer `{name}` after the forward"] = buffer.detach().clone()
        with torch.no_grad():
            for p, grad in grads.items():
                if grad is not None:
                    p.add_(grad, alpha=-STEP_LR)
        if not self.parameter_gradients:
            moved = {p for p, grad in grads.items() if grad is not None and bool(grad.any())}
            for name, p in module.named_parameters():
                value[f"`{name}` after one SGD step (lr {STEP_LR})"] = p.detach().clone() \
                    if p in moved else NoGradient(f"`{name}`")
        restore_between_calls()
        with torch.no_grad():
            value[f"{AFTER_STEP}: output"] = module.eval()(*batch).detach()
        return value

    def recognise(self, runs: list[_CaseRun]) -> list[str]:
        """The catalogued mistakes, and what a module in train mode was seen to do."""
        names = super().recognise(runs)
        if names or any(r.outcome.error is not None for r in runs):
            return names
        out_key, stats = f"{TRAIN}: output", []
        eval_form, seen, still = True, 0, True
        for run in runs:
            mine, ref = run.outcome.value, run.expected
            if not isinstance(mine, dict) or out_key not in mine or out_key not in ref:
                return names
            eval_out = guarded(lambda: self._eval_on_train_batch(run.case), time_limit=None)
            if eval_out.error is None and not same(eval_out.value, ref[out_key]):
                # a case where the batch's statistics matter: the learner's output tells
                seen += 1
                eval_form &= same(mine[out_key], eval_out.value)
            stats += [k for k in ref if k.startswith(f"{TRAIN}: buffer")]
            initial = self._initial_buffers(run.case)
            for k in ref:
                if k.startswith(f"{TRAIN}: buffer") and not same(mine.get(k), ref[k]):
                    name = k.split("`")[1]
                    if not same(mine.get(k), initial.get(name)):
                        still = False
        if eval_form and seen:
            names.append(EVAL_NORM)
        elif stats and still and any(not same(r.outcome.value.get(k), r.expected[k])
                                     for r in runs for k in stats if k in r.expected):
            # (a case's buffers are its own: modules built with other arguments have others)
            names.append(STILL_STATS)
        return names

    def _eval_on_train_batch(self, case: Case) -> torch.Tensor:
        module = self._module(self.reference, case).eval()
        x = case.inputs()[0]
        if x.shape[0] < 2:
            x = torch.cat([x, -x.flip(-1)])
        with torch.no_grad():
            return module(x, *case.inputs()[1:])

    def _initial_buffers(self, case: Case) -> dict:
        ref = self._reference_module(case).double()
        return {n: b for n, b in ref.named_buffers()}

    @staticmethod
    def _check_names(mine: dict, theirs: dict, shape_free: tuple[str, ...] = ()) -> None:
        """Raise the one-line report of the names (and shapes) in which the learner's state dict
        ``mine`` differs from the reference's ``theirs``; names starting with one of
        ``shape_free`` may differ in shape."""
        missing = [k for k in theirs if k not in mine]
        unexpected = [k for k in mine if k not in theirs]
        shapes = [f"{k} {tuple(mine[k].shape)} instead of {tuple(v.shape)}"
                  for k, v in theirs.items() if k in mine and mine[k].shape != v.shape
                  and not (shape_free and k.startswith(shape_free))]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(missing))
            if unexpected:
                parts.append("unexpected " + ", ".join(unexpected))
            if shapes:
                parts.append("shape of " + ", ".join(shapes))
            raise Reported("its parameters do not match the reference's: " + "; ".join(parts))


def _inventory(module: nn.Module, ref: nn.Module) -> None:
    """Every reference parameter a trainable ``nn.Parameter`` of the learner's module, every
    reference buffer not a parameter; raise the one line that says which is not."""
    mine_params = dict(module.named_parameters())
    mine_buffers = dict(module.named_buffers())
    for name, _ in ref.named_parameters():
        if name in mine_buffers:
            raise Reported(f"`{name}` is a buffer, not an nn.Parameter: no optimiser ever "
                           "updates it (wrap it in nn.Parameter)")
        if name in mine_params and not mine_params[name].requires_grad:
            raise Reported(f"`{name}` has requires_grad=False: it can never learn")
    for name, _ in ref.named_buffers():
        if name in mine_params:
            raise Reported(f"`{name}` is an nn.Parameter, but it is not learned: register it "
                           "as a buffer (register_buffer)")


def _load_by_name(module: nn.Module, ref: nn.Module) -> None:
    """Copy ``ref``'s parameters and buffers into ``module`` by name, or say which names differ."""
    theirs = ref.state_dict()
    ModuleChecker._check_names(module.state_dict(), theirs)
    module.load_state_dict(copy.deepcopy(theirs))
