"""Recognising catalogued mistakes in a wrong answer, by what it was seen to do.

A :class:`Mistake` is the reference with a knob turned, plus the natural variants of the same
slip written another way (Python's ``round`` and rounding half up; ``F.normalize(p=1)`` and a
sum plus ε), and optionally a *property* that recognises it more robustly than equality with one
knob ("every column sums to 1": a softmax over the query axis, whatever else was done).

A mistake is named only when the learner's results equal one of its forms on every case (so on
every case where it and the reference differ, and there is at least one), or, when no form
matches, when its property holds of the learner's output on every case and fails for the
reference's on one. When several fit, all are named, and the verdict says they all fit.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from attn_tutorial.checks._compare import same

if TYPE_CHECKING:
    from attn_tutorial.checks._core import Checker, _CaseRun


@dataclass(frozen=True)
class Mistake:
    """A catalogued wrong answer: the reference with a knob turned (``functools.partial``).

    ``variants``: other implementations of the same slip (each named by ``name`` too);
    ``holds(output, *args)``: a property of a learner's output that shows the slip.
    """

    name: str
    impl: Callable[..., Any]
    variants: tuple[Callable[..., Any], ...] = ()
    holds: Callable[..., bool] | None = None

    @property
    def forms(self) -> tuple[Callable[..., Any], ...]:
        return (self.impl, *self.variants)

    def as_learner(self, form: int = 0) -> Any:
        """What a learner making this mistake hands in (the tests prove it is named): the
        function, or for a module exercise a class with the knobs built in."""
        impl = self.forms[form]
        if isinstance(impl, functools.partial) and isinstance(impl.func, type):
            base, knobs = impl.func, dict(impl.keywords)

            def __init__(self, *args, **kwargs):
                base.__init__(self, *args, **{**knobs, **kwargs})

            return type(base.__name__, (base,), {"__init__": __init__})
        return impl


def _equals_form(checker: "Checker", form: Callable, runs: list["_CaseRun"]) -> bool:
    differs = 0
    for run in runs:
        wrong = checker.form_outcome(form, run.case)
        if wrong.error is not None:
            return False
        differs += not same(wrong.value, run.expected)
        if not same(run.outcome.value, wrong.value):
            return False
    return differs > 0


def _has_property(checker: "Checker", holds: Callable[..., bool],
                  runs: list["_CaseRun"]) -> bool:
    reference_lacks = False
    for run in runs:
        args = run.case.inputs()
        try:
            if not holds(checker.output_of(run.outcome.value), *args):
                return False
            reference_lacks |= not holds(checker.output_of(run.expected), *args)
        except Exception:  # noqa: BLE001 - a property that cannot be evaluated does not hold
            return False
    return reference_lacks


def named_mistakes(checker: "Checker", runs: list["_CaseRun"]) -> list[str]:
    """The catalogued mistakes the learner's results show (see the module docstring)."""
    if not runs or any(run.outcome.error is not None for run in runs):
        return []
    names = [m.name for m in checker.mistakes
             if any(_equals_form(checker, form, runs) for form in m.forms)]
    if names:
        return names
    # no form matches exactly: the properties (an answer with a second slip still shows them)
    return [m.name for m in checker.mistakes
            if m.holds is not None and _has_property(checker, m.holds, runs)]


# What the engine itself sees in any answer, found in the reason of a failed case: named when
# every failing case shows one of them (and no catalogued mistake fits).
_FINDINGS = (
    re.compile(r"no gradient reaches [^:]+"),
    re.compile(r"right only to float32 precision, its values are float32 numbers"),
    re.compile(r"`[^`]+` is a buffer, not an nn\.Parameter"),
    re.compile(r"`[^`]+` is an nn\.Parameter, but it is not learned"),
    re.compile(r"`[^`]+` has requires_grad=False"),
    re.compile(r"changed its input in place"),
)
# findings whose reason carries a number, and type mismatches by name: (pattern, finding made
# from its groups), the same finding for every case
_TYPES = (
    (re.compile(r"right only to about \S+ relative (\([^)]*\))"),
     lambda why: f"right only to about float32's precision {why}"),
    (re.compile(r"returned an? (\w+) of \d+, expected an? (\w+) of \d+"),
     lambda got, want: f"returned a {got} where a {want} is asked" if got != want else None),
    (re.compile(r"returned numpy\.(\w+) \S+, expected an int"),
     lambda got: f"returned numpy.{got} where a Python int is asked"),
)


def _finding(reason: str) -> str | None:
    for pattern in _FINDINGS:
        match = pattern.search(reason)
        if match:
            return match.group(0)
    for pattern, say in _TYPES:
        match = pattern.search(reason)
        if match and say(*match.groups()):
            return say(*match.groups())
    return None


def engine_findings(reasons: list[str]) -> list[str]:
    """The engine's own findings (no gradient, float32 inside, a parameter that cannot learn,
    an input changed in place, a type by name), when every failing case shows one."""
    found: list[str] = []
    for reason in reasons:
        hit = _finding(reason)
        if hit is None:
            return []
        if hit not in found:
            found.append(hit)
    return found


def verdict_suffix(names: list[str]) -> str:
    """How the verdict line names what was seen."""
    if not names:
        return ""
    if len(names) == 1:
        return f" — looks like {names[0]!r}"
    return " — several known mistakes fit what your answer does: " + \
        " / ".join(repr(n) for n in names)
