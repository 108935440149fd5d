"""The checker framework behind every exercise.

A checker runs the learner's function (or module class) and the reference on the same inputs —
several of them, chosen to catch the usual slips: odd sizes, non-square maps, batch 1 — and prints
one line per input. It never raises because of the learner's code: an exception, a wrong type, a
wrong shape, NaN, or a change made in place to an input is reported in one clear line. When the
answer is wrong, the checker runs each *catalogued mistake* (a deliberately wrong implementation
with a name, such as "softmax over the key axis instead of the query axis") on the same inputs;
if one of them reproduces the learner's output, the checker names it.

Writing a checker::

    check_gate = Checker(
        "channel gate",
        reference=reference_gate,
        cases=[Case("2×16×7×9", lambda g: (torch.randn(2, 16, 7, 9, generator=g),)), ...],
        mistakes=[Mistake("max instead of mean pooling", gate_with_max_pool), ...],
    )
    check_gate(learner_gate)   # prints a line per case and a verdict; returns a CheckResult
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

OK, FAIL = "✓", "✗"
NOT_IMPLEMENTED = "not implemented yet"


@dataclass(frozen=True)
class Case:
    """One input for a checker. ``make(generator)`` returns the positional arguments."""

    name: str
    make: Callable[[torch.Generator], tuple]
    seed: int = 0

    def inputs(self) -> tuple:
        g = torch.Generator().manual_seed(self.seed)
        args = self.make(g)
        return args if isinstance(args, tuple) else (args,)


@dataclass(frozen=True)
class Mistake:
    """A catalogued wrong implementation, recognised by reproducing its output."""

    name: str
    impl: Callable[..., Any]
    # What a learner making this mistake would hand in, when that is not ``impl`` itself
    # (for module exercises: a class). The tests hand it to the checker to prove the diagnosis.
    learner: Any = None

    def as_learner(self) -> Any:
        return self.impl if self.learner is None else self.learner


@dataclass
class CheckResult:
    """What a checker found. ``passed`` is True only when every case matched the reference."""

    title: str
    passed: bool = False
    implemented: bool = True
    lines: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        if not self.implemented:
            return f"<{self.title}: {NOT_IMPLEMENTED}>"
        verdict = "all checks passed" if self.passed else "not yet right"
        return f"<{self.title}: {verdict}>"

    def __bool__(self) -> bool:
        return self.passed


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    return value


def _same(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """Equal values: tensors by shape and allclose, numbers by isclose, sequences elementwise."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape:
            return False
        a64, b64 = a.detach().to(torch.float64), b.detach().to(torch.float64)
        return bool(torch.allclose(a64, b64, rtol=rtol, atol=atol, equal_nan=False))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    return a == b


def _problem(out: Any, expected: Any) -> str | None:
    """Why ``out`` cannot be compared with ``expected`` (type, shape, non-finite), or None."""
    if isinstance(expected, torch.Tensor):
        if not isinstance(out, torch.Tensor):
            return f"returned {_describe(out)}, expected a torch.Tensor"
        if out.shape != expected.shape:
            return f"returned shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
        if out.is_floating_point() and not torch.isfinite(out).all():
            return "output contains NaN or inf"
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(out, (tuple, list)) or len(out) != len(expected):
            return f"returned {_describe(out)}, expected {_describe(expected)}"
        for i, (o, e) in enumerate(zip(out, expected)):
            p = _problem(o, e)
            if p:
                return f"item {i}: {p}"
        return None
    if isinstance(expected, bool) != isinstance(out, bool):
        return f"returned {_describe(out)}, expected {type(expected).__name__}"
    if isinstance(expected, (int, float)) and not isinstance(out, (int, float)):
        return f"returned {_describe(out)}, expected a number"
    return None


def _max_error(out: Any, expected: Any) -> str:
    if isinstance(out, torch.Tensor) and isinstance(expected, torch.Tensor):
        err = (out.detach().double() - expected.detach().double()).abs().max().item()
        return f"wrong values (max abs error {err:.3g})"
    return f"returned {out!r}, expected {expected!r}"


def _call(fn: Callable, args: tuple) -> tuple[Any, BaseException | None]:
    try:
        with torch.no_grad():
            return fn(*args), None
    except BaseException as exc:  # noqa: BLE001 - the learner's code may raise anything
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        return None, exc


class Checker:
    """Compare a learner's callable with ``reference`` on ``cases``; name catalogued mistakes.

    ``prepare(learner)`` turns what the learner hands in into the callable to test (for module
    exercises it builds the learner's class with the reference's weights); it may raise
    NotImplementedError for a stub.
    """

    def __init__(
        self,
        title: str,
        reference: Callable[..., Any],
        cases: Sequence[Case],
        mistakes: Sequence[Mistake] = (),
        rtol: float = 1e-5,
        atol: float = 1e-6,
        prepare: Callable[[Any], Callable[..., Any]] | None = None,
        success: str = "all checks passed",
        solution: Any = None,
    ) -> None:
        self.title = title
        self.reference = reference
        self.cases = list(cases)
        self.mistakes = list(mistakes)
        self.rtol, self.atol = rtol, atol
        self.prepare = prepare
        self.success = success
        # What a correct learner hands in (default: the reference itself). For module exercises
        # with ``prepare`` this is the solution class; the tests prove it passes.
        self.solution = reference if solution is None else solution

    # The mistakes this checker can name: used by the tests to prove every name is diagnosed.
    @property
    def mistake_names(self) -> list[str]:
        return [m.name for m in self.mistakes]

    def _diagnose(self, out: Any, args: tuple) -> list[str]:
        names = []
        for mistake in self.mistakes:
            wrong, exc = _call(mistake.impl, _clone(args))
            if exc is None and _same(out, wrong, self.rtol, self.atol):
                names.append(mistake.name)
        return names

    def run(self, learner: Any, verbose: bool = True) -> CheckResult:
        result = CheckResult(self.title)

        def say(line: str) -> None:
            result.lines.append(line)
            if verbose:
                print(line)

        fn = learner
        if self.prepare is not None:
            try:
                fn = self.prepare(learner)
            except NotImplementedError:
                result.implemented = False
                say(f"{self.title}: {NOT_IMPLEMENTED}")
                return result
            except Exception as exc:  # noqa: BLE001
                say(f"{FAIL} {self.title}: building it raised {type(exc).__name__}: {exc}")
                return result
        if not callable(fn):
            say(f"{FAIL} {self.title}: expected a function or class, got {_describe(fn)}")
            return result

        passed = 0
        for case in self.cases:
            args = case.inputs()
            expected, ref_exc = _call(self.reference, _clone(args))
            if ref_exc is not None:  # a bug in the course, not in the learner's code
                raise RuntimeError(f"reference failed on case {case.name}") from ref_exc
            before = _clone(args)
            out, exc = _call(fn, args)
            if isinstance(exc, NotImplementedError):
                result.implemented = False
                result.lines.clear()
                say(f"{self.title}: {NOT_IMPLEMENTED}")
                return result
            if exc is not None:
                say(f"{FAIL} {case.name}: raised {type(exc).__name__}: {exc}")
                continue
            if not _same(args, before, 0.0, 0.0):
                say(f"{FAIL} {case.name}: changed its input in place; work on a copy or out of place")
                continue
            problem = _problem(out, expected)
            if problem is None and _same(out, expected, self.rtol, self.atol):
                passed += 1
                say(f"{OK} {case.name}")
                continue
            found = self._diagnose(out, args)
            for name in found:
                if name not in result.diagnoses:
                    result.diagnoses.append(name)
            if found:
                say(f"{FAIL} {case.name}: looks like {' / '.join(repr(n) for n in found)}")
            else:
                say(f"{FAIL} {case.name}: {problem or _max_error(out, expected)}")
        result.passed = passed == len(self.cases)
        if result.passed:
            say(f"{self.title}: {self.success} ({passed}/{len(self.cases)})")
        else:
            say(f"{self.title}: {passed}/{len(self.cases)} checks passed")
        return result

    __call__ = run


def module_preparer(
    reference_factory: Callable[[], torch.nn.Module],
    build: Callable[[type], torch.nn.Module] | None = None,
) -> Callable[[Any], Callable[..., Any]]:
    """For module exercises: build the learner's class, copy the reference's weights into it.

    ``reference_factory()`` makes the reference module (seeded weights). The learner's class is
    built with ``build(cls)`` (default: ``cls()``) and must have the same parameter names and
    shapes, which the exercise's skeleton fixes. Both are used in eval mode in float64.
    """

    def prepare(learner_cls: Any) -> Callable[..., Any]:
        ref = reference_factory()
        module = build(learner_cls) if build is not None else learner_cls()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"expected an nn.Module subclass, got {_describe(module)}")
        module.load_state_dict(ref.state_dict())
        return module.double().eval()

    return prepare
