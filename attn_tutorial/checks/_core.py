"""The checker engine behind every exercise, and the registry of checkers.

A checker runs the learner's function (or ``nn.Module`` class) and a reference on the same inputs
(several *cases*, chosen so that every plausible wrong answer fails on at least one of them) and
prints one line per case and one verdict. It judges the whole answer, not only its values:

- **values** at the tolerance of their dtype (``_compare.TOLERANCE``: float64 cases at float64
  precision), types by name (a list where a tuple is asked, a numpy integer where an int is);
- **gradients** (function exercises): every floating-point input requires grad; the gradients of
  the same random-weighted sum of the output are compared, and an input the gradient never
  reaches is named ("no gradient reaches `mc`");
- **modules** (``_modules.py``): the parameter inventory, eval mode, train mode at batch ≥ 2 with
  the buffers after the forward, and eval again after one training step.

Whatever the learner's code does, the checker reports it in a line and returns a
:class:`CheckResult` (``_isolation.py`` runs it: time limit, captured output, global state put
back, the learner's line for an error; ``_report.py`` prints). When the answer is wrong the
checker names each catalogued mistake whose results the learner's equal on every case, or whose
property the learner's output has (``_mistakes.py``).

How to write a checker for a new lesson
---------------------------------------
1. Write the reference with *knobs*, one per plausible slip, defaulting to the right answer, and
   express each mistake as the reference with one knob turned (``variants=``: the same slip
   written another way; ``holds=``: a property of the output that shows it)::

       def ref_gate(x, weight, pool="mean", squash=torch.sigmoid): ...
       MISTAKES = [Mistake("max instead of mean pooling", partial(ref_gate, pool="max")), ...]

2. Choose cases (float64 inputs, odd / non-square / batch-1 sizes, whatever separates the slips,
   and a *boundary* section from the domain the exercise states: the smallest legal value of
   each argument, remainders ≥ 2, a single key, an underflowing row, one call with the default
   arguments). ``_cases.py`` has the standard cases and ``map_case``. Every mistake must differ
   from the reference on some case (``tests/test_checks.py`` proves it for every checker). A
   predict exercise (a number as a function of the configuration) adds ``hidden_cases``: drawn
   from its domain, never printed, so that copying the printed answers does not pass.

3. Register it in the lesson's file ``lessonNN.py`` with the name the learner's notebook defines
   and the tier (build, predict or extend), and import the file in ``checks/__init__.py``::

       check_gate = register(Checker("gate", ref_gate, cases, MISTAKES,
                                     exercise="gate", tier="build"))

4. **Module exercises**: :class:`~attn_tutorial.checks._modules.ModuleChecker` with a reference
   *class* whose constructor takes the case's ``build`` keyword arguments and knobs for the
   mistakes; see its docstring for what it compares and the steps a subclass may override.

5. Per-lesson tests (``tests/test_checks_lessonNN.py``) keep only that lesson's facts and slips
   in a learner's own words; the generic proofs run over every registered checker.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from attn_tutorial.checks._compare import (
    NoGradient, clone, describe, problem, same, value_error,
)
from attn_tutorial.checks._isolation import (
    IN_PLACE, TIME_LIMIT, Outcome, Reported, describe_failure, guarded, learner_code, library_uses,
)
from attn_tutorial.checks._mistakes import (
    Mistake, engine_findings, named_mistakes, verdict_suffix,
)
from attn_tutorial.checks._report import (
    FAIL, NOT_IMPLEMENTED, CheckResult, case_lines, finish,
)

TIERS = ("build", "predict", "extend")  # design §6
GRADIENT_SEED = 1  # the weights g of the loss (output * g).sum() come from case.seed + this

CHECKERS: dict[str, "Checker"] = {}

__all__ = ["CHECKERS", "TIERS", "Case", "Checker", "CheckResult", "Mistake", "register",
           "NOT_IMPLEMENTED", "TIME_LIMIT", "Outcome", "Reported"]


def register(checker: "Checker") -> "Checker":
    """Record a checker under its public name, ``check_`` + its title (the tests use them all)."""
    if not checker.exercise:
        raise ValueError(f"{checker.name}: say exercise= (the name the learner's notebook "
                         "defines) and tier= where it is registered")
    if checker.name in CHECKERS and CHECKERS[checker.name] is not checker:
        raise ValueError(f"two checkers are called {checker.name!r}")
    CHECKERS[checker.name] = checker
    return checker


@dataclass(frozen=True)
class Case:
    """One input for a checker. ``make(generator)`` returns the positional arguments.

    ``build`` holds the constructor's keyword arguments for module exercises. A ``hidden`` case
    (see ``hidden_cases``) never shows its inputs or its answer: a wrong value there reads only
    "wrong value", so a predict exercise cannot be passed by copying printed answers.
    """

    name: str
    make: Callable[[torch.Generator], tuple]
    seed: int = 0
    build: dict = field(default_factory=dict)
    hidden: bool = False

    def inputs(self) -> tuple:
        g = torch.Generator().manual_seed(self.seed)
        args = self.make(g)
        return args if isinstance(args, tuple) else (args,)


@dataclass
class _CaseRun:
    case: Case
    expected: Any
    outcome: Outcome
    ok: bool = False
    reason: str = ""


HIDDEN_WRONG = "wrong value (a hidden case: its inputs and answer are not shown)"


def hidden_cases(label: str, draw: Callable[[random.Random], tuple], count: int,
                 seed: int) -> list[Case]:
    """``count`` cases whose arguments ``draw(rng)`` picks from the exercise's domain with a
    seeded ``random.Random``; named "``label`` 1", "``label`` 2", ... and never shown."""
    rng = random.Random(seed)
    drawn = [draw(rng) for _ in range(count)]
    return [Case(f"{label} {i + 1}", lambda g, args=args: args, hidden=True)
            for i, args in enumerate(drawn)]


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _gradients(subject: Callable[..., Any], args: tuple, names: list[str], seed: int) -> dict:
    """The gradients of ``(subject(*args) * g).sum()`` (g seeded) with respect to every
    floating-point tensor argument, by name; a :class:`NoGradient` where none arrives (or it is
    zero everywhere). Empty when the output is not a floating-point tensor."""
    inputs = [a.detach().clone().requires_grad_(True)
              if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    with torch.enable_grad():
        out = subject(*inputs)
        if not isinstance(out, torch.Tensor) or not out.is_floating_point():
            return {}
        wrt = [(f"`{names[i]}`" if i < len(names) else f"input {i}", a)
               for i, a in enumerate(inputs) if isinstance(a, torch.Tensor) and a.requires_grad]
        if not out.requires_grad:
            return {f"gradient w.r.t. {n}": NoGradient(n) for n, _ in wrt}
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64, device="cpu").to(out.device, out.dtype)
        grads = torch.autograd.grad(out, [a for _, a in wrt], g, allow_unused=True)
    return {f"gradient w.r.t. {n}": NoGradient(n) if grad is None or not bool(grad.any())
            else grad.detach() for (n, _), grad in zip(wrt, grads)}


class Checker:
    """Compare a learner's function with ``reference`` on ``cases``: values, then gradients;
    name catalogued mistakes."""

    kind = "function"

    def __init__(
        self,
        title: str,
        reference: Callable[..., Any],
        cases: Sequence[Case],
        mistakes: Sequence[Mistake] = (),
        success: str = "all checks passed",
        solution: Any = None,
        time_limit: float = TIME_LIMIT,
        *,
        exercise: str = "",
        tier: str = "build",
        library_allowed: bool = False,
        forbidden: Sequence[str] = (),
        forbidden_reason: str = "build it by hand",
    ) -> None:
        if tier not in TIERS:
            raise ValueError(f"tier={tier!r}: must be one of {', '.join(TIERS)}")
        if exercise and not exercise.isidentifier():
            raise ValueError(f"exercise={exercise!r}: must be the Python name the learner's "
                             "notebook defines")
        self.title = title
        self.name = "check_" + title
        # The name the learner's notebook defines and passes to the checker, and the tier.
        self.exercise = exercise
        self.tier = tier
        self.reference = reference
        self.cases = list(cases)
        self.mistakes = list(mistakes)
        self.success = success
        # What a correct learner hands in (default: the reference itself).
        self.solution = reference if solution is None else solution
        self.time_limit = time_limit
        # False: an answer that uses the course's own implementation (attn_tutorial outside
        # checks) is refused before it runs; an exercise that plugs into the library says True.
        self.library_allowed = library_allowed
        # Names the exercise asks the learner to do without (e.g. "dilation": build it by hand).
        self.forbidden = tuple(forbidden)
        self.forbidden_reason = forbidden_reason
        self.arg_names = _positional_names(reference)

    @property
    def mistake_names(self) -> list[str]:
        return [m.name for m in self.mistakes]

    # -- how one case is evaluated; ModuleChecker overrides these
    def evaluate(self, subject: Any, case: Case, args: tuple) -> Any:
        """The value compared for ``subject`` (learner, reference or mistake) on ``case``."""
        with torch.no_grad():
            return subject(*args)

    def gradients(self, subject: Any, case: Case, args: tuple) -> dict | None:
        """The gradients compared once the values match (None: no gradient stage)."""
        return _gradients(subject, args, self.arg_names, case.seed + GRADIENT_SEED)

    @staticmethod
    def output_of(value: Any) -> Any:
        """The output inside an evaluated value (what a mistake's property is tested on)."""
        return value

    def validate(self, learner: Any) -> str | None:
        if not callable(learner) or isinstance(learner, type):
            return f"expected a function, got {describe(learner)}"
        return None

    def title_for(self, learner: Any) -> str:
        return self.title

    def _shortcut(self, learner: Any) -> str | None:
        unwrapped = learner
        while hasattr(unwrapped, "func"):
            unwrapped = unwrapped.func
        if unwrapped is self.solution or unwrapped is self.reference:
            return None
        used = library_uses(learner, exempt=(self.solution, self.reference),
                            forbidden=self.forbidden)
        banned = [u for u in used if u.startswith("`")]
        if banned:
            return (f"your answer uses {', '.join(banned)}: this exercise asks you to do without "
                    f"{'it' if len(banned) == 1 else 'them'} ({self.forbidden_reason})")
        if used and not self.library_allowed:
            return (f"your answer uses the course's own {', '.join(used)}: this exercise asks "
                    "you to write it yourself (use the library afterwards, to compare)")
        return None

    def _reference_value(self, run: Callable[[], Any], case: Case) -> Any:
        outcome = guarded(run, time_limit=None)
        if outcome.error is not None:  # a bug in the course, not in the learner's code
            raise RuntimeError(f"{self.name}: the reference failed on case {case.name}") \
                from outcome.error
        return outcome.value

    def expected(self, case: Case) -> Any:
        """The reference's value on a case (run with the global state restored after it)."""
        return self._once(self.reference, case, lambda: self._reference_value(
            lambda: self.evaluate(self.reference, case, case.inputs()), case))

    def form_outcome(self, form: Callable[..., Any], case: Case) -> Outcome:
        """A catalogued mistake's form run on a case (its value, or the error it raised)."""
        return self._once(form, case, lambda: guarded(
            lambda: self.evaluate(form, case, case.inputs()), time_limit=None))

    def _once(self, impl: Any, case: Case, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per (reference or mistake form, case): both are fixed functions of
        the case's seeded inputs, asked for again by every answer checked."""
        cache = self.__dict__.setdefault("_computed", {})
        hit = cache.get((id(impl), id(case)))
        if hit is not None and hit[0] is impl and hit[1] is case:
            return hit[2]
        value = compute()
        cache[(id(impl), id(case))] = (impl, case, value)
        return value

    def outputs_of(self, impl: Any) -> list[Any]:
        """``impl``'s value on every case (None where it raised): used to test the catalogue."""
        outcomes = [self.form_outcome(impl, case) for case in self.cases]
        return [None if o.error is not None else o.value for o in outcomes]

    def run(self, learner: Any, verbose: bool = True) -> CheckResult:
        # The cases are tiny: one thread is faster and immune to a busy machine's contention.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run(learner, verbose)
        finally:
            torch.set_num_threads(threads)

    __call__ = run

    def _run(self, learner: Any, verbose: bool) -> CheckResult:
        title = self.title_for(learner)
        result = CheckResult(title, checks_total=len(self.cases))
        invalid = self.validate(learner) or self._shortcut(learner)
        if invalid:
            result.lines.append(f"{FAIL} {title}: {invalid}")
            return finish(result, verbose)
        codes = learner_code(learner)
        runs: list[_CaseRun] = []
        changed: list[str] = []
        stopped = False
        for case in self.cases:
            expected = self.expected(case)
            args = case.inputs()
            before = clone(args)
            outcome = guarded(lambda: self.evaluate(learner, case, args), codes, self.time_limit)
            changed += [name for name in outcome.changed if name not in changed]
            if outcome.kind == "stub":
                result.implemented = False
                result.status = "not implemented"
                result.lines = [f"{title}: {NOT_IMPLEMENTED}"]
                return finish(result, verbose)
            run = _CaseRun(case, expected, outcome)
            runs.append(run)
            if outcome.error is not None:
                run.reason = describe_failure(outcome, self.time_limit)
            elif not same(args, before, (0.0, 0.0)):
                run.reason = IN_PLACE
            else:
                p = problem(outcome.value, expected)
                if p is None and same(outcome.value, expected):
                    self._check_gradients(learner, case, codes, run, changed)
                elif case.hidden:
                    run.reason = p or HIDDEN_WRONG
                else:
                    run.reason = p or value_error(outcome.value, expected)
            if run.outcome.kind == "timeout":
                stopped = True
                break
        self._report(result, runs, changed, stopped)
        return finish(result, verbose)

    def _check_gradients(self, learner: Any, case: Case, codes: set, run: _CaseRun,
                         changed: list[str]) -> None:
        """Values match: compare the gradients (sets ``run.ok`` or ``run.reason``)."""
        expected = self._reference_value(
            lambda: self.gradients(self.reference, case, case.inputs()), case)
        if not expected:
            run.ok = True
            return
        outcome = guarded(lambda: self.gradients(learner, case, case.inputs()), codes,
                          self.time_limit)
        changed += [name for name in outcome.changed if name not in changed]
        if outcome.error is not None:
            run.outcome = outcome
            run.reason = "computing the gradient: " + describe_failure(outcome, self.time_limit)
            return
        p = problem(outcome.value, expected)
        if p is None and same(outcome.value, expected):
            run.ok = True
        else:
            run.reason = p or value_error(outcome.value, expected)

    def recognise(self, runs: list[_CaseRun]) -> list[str]:
        """Names for what the learner's results show (a module checker adds its own)."""
        return named_mistakes(self, runs)

    def _report(self, result: CheckResult, runs: list[_CaseRun], changed: list[str],
                stopped: bool) -> None:
        case_lines(result, runs, len(self.cases), stopped, changed)
        passed = sum(r.ok for r in runs)
        result.passed = passed == len(self.cases)
        result.checks_passed = passed
        crashed = next((r for r in runs if r.outcome.kind == "timeout" or (
            r.outcome.error is not None and not isinstance(r.outcome.error, Reported))), None)
        if result.passed:
            result.status = "passed"
            result.lines.append(f"{result.title}: {self.success} ({passed}/{len(self.cases)})")
            return
        if crashed is not None:
            result.status = "timeout" if crashed.outcome.kind == "timeout" else "error"
            result.error = crashed.reason
        verdict = f"{result.title}: {passed}/{len(self.cases)} checks passed"
        if not stopped and len(runs) == len(self.cases):
            result.diagnoses = self.recognise(runs)
        if not result.diagnoses and crashed is None:
            result.diagnoses = engine_findings([r.reason for r in runs if not r.ok])
        result.lines.append(verdict + verdict_suffix(result.diagnoses))
