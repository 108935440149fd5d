"""The checker engine behind every exercise, and the registry of checkers.

A checker runs the learner's function (or ``nn.Module`` class) and a reference on the same inputs
(several *cases*, chosen so that every plausible wrong answer fails on at least one of them) and
prints one line per case and one verdict. Whatever the learner's code does, the checker reports it
in a line and returns a :class:`CheckResult`:

- an exception, with its message and the line of the learner's code it came from; a
  ``NotImplementedError`` raised by the learner's own function (the exercise's stub) is reported
  as "not implemented yet", one raised inside torch or einops is reported as the learner's bug;
- a wrong type, dtype, device (meta, CUDA), shape, NaN/inf, or an input changed in place;
- a call that runs longer than ``time_limit`` seconds (10 by default; ``while True: pass`` is
  stopped too); the remaining cases are skipped. The reference is never timed;
- ``sys.exit()``; only ``KeyboardInterrupt`` (the notebook's stop button) goes through;
- anything the learner's code prints is captured and shown truncated under its case;
- global state the learner's code changed (default dtype, torch / Python / numpy RNG states, grad
  mode, deterministic algorithms, thread count, print options, functions of torch, torch.Tensor,
  torch.nn.functional, einops or math replaced) is put back after every call, and one line says
  what was changed.

When the answer is wrong the checker runs each *catalogued mistake* on the same cases and names
one only when the learner's results equal the mistake's on every case (so in particular on every
case where that mistake and the reference differ).

How to write a checker for a new lesson
---------------------------------------
1. Write the reference with *knobs*, one per plausible slip, defaulting to the right answer, and
   express each mistake as the reference with one knob turned::

       def ref_gate(x, weight, pool="mean", squash=torch.sigmoid): ...
       MISTAKES = [Mistake("max instead of mean pooling", partial(ref_gate, pool="max")), ...]

2. Choose cases (float64 inputs, odd / non-square / batch-1 sizes, plus whatever separates the
   slips: a kernel longer than C, a scale that is not d**-0.5, ...). ``_cases.py`` has the
   standard feature-map and token cases, and ``map_case`` for one seeded map (with a module
   exercise's ``build`` arguments). Every mistake must differ from the reference on some case
   and from every other mistake (``tests/test_checks.py`` proves it for every registered checker).

3. Register it in the lesson's file ``lessonNN.py`` (the public name is ``check_`` + title) and
   import the file in ``checks/__init__.py``::

       check_gate = register(Checker("gate", ref_gate, cases, MISTAKES))

4. **Module exercises** (the learner writes ``__init__`` and ``forward``): use
   :class:`ModuleChecker` with a reference *class* whose constructor takes the case's ``build``
   keyword arguments and knobs for the mistakes::

       check_se = register(ModuleChecker(
           "se_block", reference=SEReference, solution=SESolution,
           cases=[Case("C = 16", make_x, build={"channels": 16}), ...],
           mistakes=[Mistake("max instead of mean pooling", partial(SEReference, pool="max"))]))

   For each case the checker builds the reference (seeded weights), builds the learner's class
   with the same keyword arguments, loads the reference's ``state_dict`` into it by parameter name
   (a missing, unexpected or mis-shaped parameter is reported by name), runs both in float64 eval
   mode, and compares the outputs and the gradients of the loss ``(output * g).sum()`` (a seeded
   random ``g``) with respect to every floating-point input. A module that needs more (a gamma
   that must count, memories tied by shared storage) gets a subclass that overrides one step of
   ``ModuleChecker.evaluate``: ``_runs_reference``, ``_build``, ``_load`` or ``_measure``
   (lessons 05 and 07).

5. Per-lesson tests (``tests/test_checks_lessonNN.py``) keep only that lesson's facts and slips
   in a learner's own words; the generic proofs run over every registered checker.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import random
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

OK, FAIL = "✓", "✗"
NOT_IMPLEMENTED = "not implemented yet"
TIERS = ("build", "predict", "extend")  # design §6
STATUSES = ("passed", "failed", "not implemented", "error", "timeout")
TIME_LIMIT = 10.0  # seconds per learner call
SHOWN_LINES = 3  # lines of a learner's captured output shown per case
LINE_CHARS = 120

CHECKERS: dict[str, "Checker"] = {}


def register(checker: "Checker") -> "Checker":
    """Record a checker under its public name, ``check_`` + its title (the tests use them all)."""
    if not checker.exercise:
        raise ValueError(f"{checker.name}: say exercise= (the name the learner's notebook "
                         "defines) and tier= where it is registered")
    if checker.name in CHECKERS and CHECKERS[checker.name] is not checker:
        raise ValueError(f"two checkers are called {checker.name!r}")
    CHECKERS[checker.name] = checker
    return checker


# ------------------------------------------------------------------------------ inputs
@dataclass(frozen=True)
class Case:
    """One input for a checker. ``make(generator)`` returns the positional arguments.

    ``build`` holds the constructor's keyword arguments for module exercises.
    """

    name: str
    make: Callable[[torch.Generator], tuple]
    seed: int = 0
    build: dict = field(default_factory=dict)

    def inputs(self) -> tuple:
        g = torch.Generator().manual_seed(self.seed)
        args = self.make(g)
        return args if isinstance(args, tuple) else (args,)


@dataclass(frozen=True)
class Mistake:
    """A catalogued wrong answer: the reference with a knob turned (``functools.partial``)."""

    name: str
    impl: Callable[..., Any]

    def as_learner(self) -> Any:
        """What a learner making this mistake hands in (the tests prove it is named): the
        function, or for a module exercise a class with the knobs built in."""
        impl = self.impl
        if isinstance(impl, functools.partial) and isinstance(impl.func, type):
            base, knobs = impl.func, dict(impl.keywords)

            def __init__(self, *args, **kwargs):
                base.__init__(self, *args, **{**knobs, **kwargs})

            return type(base.__name__, (base,), {"__init__": __init__})
        return impl


@dataclass
class CheckResult:
    """What a checker found. ``passed`` is True only when every case matched the reference.

    ``checks_passed`` of ``checks_total`` cases matched; ``status`` is one of ``STATUSES``
    ("error" or "timeout" when the learner's code raised or ran out of time on some case, then
    ``error`` is that case's reason, with the learner's line where known).
    """

    title: str
    passed: bool = False
    implemented: bool = True
    lines: list[str] = field(default_factory=list)
    diagnoses: list[str] = field(default_factory=list)
    printed: bool = False
    checks_passed: int = 0
    checks_total: int = 0
    status: str = "failed"
    error: str = ""

    def __repr__(self) -> str:
        if not self.implemented:
            return f"<{self.title}: {NOT_IMPLEMENTED}>"
        verdict = "all checks passed" if self.passed else "not yet right"
        return f"<{self.title}: {verdict}>"

    def _ipython_display_(self) -> None:
        # A checker call at the end of a cell: the lines were printed already; print nothing twice.
        if not self.printed:
            print("\n".join(self.lines))

    def __bool__(self) -> bool:
        return self.passed


# ------------------------------------------------------------------ running learner code
class _TimeUp(BaseException):
    """Raised inside the learner's code when its time is up (not an Exception: `except
    Exception` in the learner's code does not swallow it)."""


@contextlib.contextmanager
def _time_limit(seconds: float | None):
    """Interrupt the block after ``seconds``: SIGALRM in the main thread (it also ends a
    ``time.sleep``); elsewhere a trace function that checks the clock on every line."""
    if seconds is None:
        yield
        return
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        def on_alarm(signum, frame):
            raise _TimeUp()

        # Someone else's alarm (pytest-timeout, say) is put back with the time it had left.
        pending, _ = signal.getitimer(signal.ITIMER_REAL)
        start = time.monotonic()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds if not pending else min(seconds, pending))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            if pending:
                signal.setitimer(signal.ITIMER_REAL,
                                 max(pending - (time.monotonic() - start), 1e-3))
        return
    deadline = time.monotonic() + seconds
    previous_trace = sys.gettrace()

    def tracer(frame, event, arg):
        if time.monotonic() > deadline:
            raise _TimeUp()
        return tracer

    sys.settrace(tracer)
    try:
        yield
    finally:
        sys.settrace(previous_trace)


class _Capture(io.TextIOBase):
    """A stdout/stderr stand-in that keeps the first few lines and counts the rest."""

    def __init__(self) -> None:
        self.kept: list[str] = []
        self.partial = ""
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        text = str(text)
        pieces = (self.partial + text).split("\n")
        self.partial = pieces.pop()[: LINE_CHARS * 4]
        for line in pieces:
            self.count += 1
            if len(self.kept) < SHOWN_LINES:
                self.kept.append(line)
        return len(text)

    def lines(self) -> tuple[list[str], int]:
        kept, count = list(self.kept), self.count
        if self.partial:
            count += 1
            if len(kept) < SHOWN_LINES:
                kept.append(self.partial)
        return kept, count


_PATCHABLE = ("torch", "torch.nn.functional", "torch.nn", "torch.Tensor", "einops", "math")


def _namespaces() -> dict[str, Any]:
    import einops
    import torch.nn.functional as F

    return {"torch": torch, "torch.nn.functional": F, "torch.nn": torch.nn,
            "torch.Tensor": torch.Tensor, "einops": einops, "math": math}


def _snapshot() -> dict[str, Any]:
    opts = torch._tensor_str.PRINT_OPTS
    return {
        "default dtype": torch.get_default_dtype(),
        "torch RNG": torch.get_rng_state(),
        "Python RNG": random.getstate(),
        "numpy RNG": np.random.get_state(),
        "grad mode": torch.is_grad_enabled(),
        "deterministic algorithms": (torch.are_deterministic_algorithms_enabled(),
                                     torch.is_deterministic_algorithms_warn_only_enabled()),
        "thread count": torch.get_num_threads(),
        "torch print options": (opts.precision, opts.threshold, opts.edgeitems, opts.linewidth,
                                opts.sci_mode),
        "numpy print options": np.get_printoptions(),
        "functions": {n: dict(vars(ns)) for n, ns in _namespaces().items()},
    }


def _equal_state(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, tuple) and len(a) == 5 and isinstance(a[1], np.ndarray):  # numpy RNG
        return a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:]
    return a == b


def _restore(saved: dict[str, Any]) -> list[str]:
    """Put back every piece of global state that differs from ``saved``; return their names."""
    now = _snapshot()
    changed = []
    for key, old in saved.items():
        new = now[key]
        if key == "functions":
            changed += _restore_functions(old, new)
            continue
        if _equal_state(old, new):
            continue
        changed.append(key)
        if key == "default dtype":
            torch.set_default_dtype(old)
        elif key == "torch RNG":
            torch.set_rng_state(old)
        elif key == "Python RNG":
            random.setstate(old)
        elif key == "numpy RNG":
            np.random.set_state(old)
        elif key == "grad mode":
            torch.set_grad_enabled(old)
        elif key == "deterministic algorithms":
            torch.use_deterministic_algorithms(old[0], warn_only=old[1])
        elif key == "thread count":
            torch.set_num_threads(old)
        elif key == "torch print options":
            p, t, e, lw, sci = old
            torch.set_printoptions(precision=p, threshold=t, edgeitems=e, linewidth=lw,
                                   sci_mode=sci)
        elif key == "numpy print options":
            np.set_printoptions(**old)
    return changed


_MISSING = object()


def _by_torch(value: Any) -> bool:
    """torch rebinds a few of its own names (torch.Storage with the default dtype, lazy
    wrappers); those are not the learner's doing."""
    return isinstance(value, types.ModuleType) or str(
        getattr(value, "__module__", "") or "").startswith("torch")


def _restore_functions(old: dict, new: dict) -> list[str]:
    changed = []
    for ns_name, ns in _namespaces().items():
        before, after = old[ns_name], new[ns_name]
        for attr, value in after.items():
            if before.get(attr, _MISSING) is value or _by_torch(value):
                continue
            if attr in before:
                setattr(ns, attr, before[attr])
            elif attr.startswith("__"):
                continue
            else:
                delattr(ns, attr)
            changed.append(f"{ns_name}.{attr} replaced")
        for attr, value in before.items():
            if attr not in after:
                setattr(ns, attr, value)
                changed.append(f"{ns_name}.{attr} deleted")
    return changed


@dataclass
class Outcome:
    """What one guarded call did."""

    value: Any = None
    error: BaseException | None = None
    kind: str = "ok"  # ok | raised | stub | timeout | exit
    where: str = ""  # "line N of your code", when the error came through it
    printed: tuple[list[str], int] = ([], 0)
    changed: list[str] = field(default_factory=list)


def learner_code(obj: Any) -> set[types.CodeType]:
    """The code objects the learner wrote: a function's, or a class's own methods."""
    while isinstance(obj, (types.MethodType,)) or hasattr(obj, "func"):
        obj = getattr(obj, "__func__", None) or getattr(obj, "func")
    codes: set[types.CodeType] = set()
    if isinstance(obj, types.FunctionType):
        codes.add(obj.__code__)
    elif isinstance(obj, type):
        for klass in obj.__mro__:
            if klass.__module__.startswith(("torch", "builtins")):
                continue
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)
                if isinstance(value, types.FunctionType):
                    codes.add(value.__code__)
    elif callable(obj) and hasattr(obj, "__call__"):
        call = getattr(type(obj), "__call__", None)
        if isinstance(call, types.FunctionType):
            codes.add(call.__code__)
    return codes


def _blame(exc: BaseException, codes: set[types.CodeType]) -> tuple[bool, str]:
    """(raised directly by the learner's code, "line N of your code" for the deepest frame of it)."""
    tb, innermost, where = exc.__traceback__, None, ""
    while tb is not None:
        code = tb.tb_frame.f_code
        if code in codes:
            where = f"line {tb.tb_lineno - code.co_firstlineno + 1} of {code.co_name}"
        innermost = code
        tb = tb.tb_next
    return innermost in codes, where


def guarded(fn: Callable[[], Any], codes: set[types.CodeType] = frozenset(),
            time_limit: float | None = TIME_LIMIT) -> Outcome:
    """Run ``fn()`` (the learner's code) under a time limit, output captured, global state
    saved and restored. Never raises, except ``KeyboardInterrupt``."""
    saved = _snapshot()
    capture = _Capture()
    outcome = Outcome()
    try:
        with contextlib.redirect_stdout(capture), contextlib.redirect_stderr(capture):
            with _time_limit(time_limit):
                outcome.value = fn()
    except _TimeUp as exc:
        outcome.kind, outcome.error = "timeout", exc
    except SystemExit as exc:
        outcome.kind, outcome.error = "exit", exc
    except KeyboardInterrupt:
        _restore(saved)
        raise
    except BaseException as exc:  # noqa: BLE001 - the learner's code may raise anything
        outcome.error = exc
        direct, outcome.where = _blame(exc, codes)
        outcome.kind = "stub" if isinstance(exc, NotImplementedError) and direct else "raised"
    outcome.printed = capture.lines()
    outcome.changed = _restore(saved)
    return outcome


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 160 else text[:157] + "..."


def describe_failure(outcome: Outcome, time_limit: float | None) -> str:
    exc = outcome.error
    if outcome.kind == "timeout":
        return f"still running after {time_limit:g} s: stopped (an endless loop?)"
    if outcome.kind == "exit":
        return f"called sys.exit({'' if exc.code is None else repr(exc.code)}); a function should return"
    if isinstance(exc, _WeightsMismatch):
        return str(exc)
    where = f" (at {outcome.where})" if outcome.where else ""
    message = _one_line(exc) if str(exc) else ""
    return f"raised {type(exc).__name__}{': ' + message if message else ''}{where}"


# ------------------------------------------------------------------ comparing results
def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    if value is None:
        return "None"
    return f"{value!r} (a {type(value).__name__})" if isinstance(value, (int, float)) \
        else f"a {type(value).__name__}"


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_clone(v) for v in value)
    if isinstance(value, list):
        return [_clone(v) for v in value]
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


def _same(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """Equal values of the same kind: tensors by dtype, device, shape and allclose; ints exactly;
    floats by isclose; sequences and dicts elementwise. Never raises."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return False
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return False
        if a.device.type == "meta":
            return False
        if rtol == atol == 0.0:
            return bool(torch.equal(a, b))
        a64 = a.detach().to("cpu", torch.float64)
        b64 = b.detach().to("cpu", torch.float64)
        return bool(torch.allclose(a64, b64, rtol=rtol, atol=atol, equal_nan=False))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y, rtol, atol) for x, y in zip(a, b)))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _problem(out: Any, expected: Any, what: str = "") -> str | None:
    """Why ``out`` cannot be compared with ``expected`` (type, device, dtype, shape, NaN), or None."""
    pre = f"{what}: " if what else ""
    if isinstance(expected, torch.Tensor):
        if not isinstance(out, torch.Tensor):
            return f"{pre}returned {_describe(out)}, expected a torch.Tensor"
        if out.device != expected.device:
            return (f"{pre}returned a tensor on {out.device.type}, expected {expected.device.type} "
                    "(the device of the inputs)")
        if out.dtype != expected.dtype:
            dt = lambda d: str(d).replace("torch.", "")  # noqa: E731
            return (f"{pre}returned {dt(out.dtype)}, expected {dt(expected.dtype)} "
                    "(the dtype of the inputs)")
        if out.shape != expected.shape:
            return f"{pre}returned shape {tuple(out.shape)}, expected {tuple(expected.shape)}"
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            return f"{pre}output contains NaN or inf"
        return None
    if isinstance(expected, dict):
        if not isinstance(out, dict):
            return f"{pre}returned {_describe(out)}"
        for key in expected:
            p = _problem(out.get(key), expected[key], key)
            if p:
                return p
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(out, (tuple, list)) or len(out) != len(expected):
            return f"{pre}returned {_describe(out)}, expected {_describe(expected)}"
        for i, (o, e) in enumerate(zip(out, expected)):
            p = _problem(o, e, f"{pre}item {i}".rstrip(": "))
            if p:
                return p
        return None
    if isinstance(expected, bool):
        return None if isinstance(out, bool) else f"{pre}returned {_describe(out)}, expected a bool"
    if isinstance(expected, int):
        if isinstance(out, bool) or not isinstance(out, int):
            return f"{pre}returned {_describe(out)}, expected an int"
        return None
    if isinstance(expected, float):
        if isinstance(out, bool) or not isinstance(out, (int, float)):
            return f"{pre}returned {_describe(out)}, expected a number"
        if not math.isfinite(out):
            return f"{pre}returned {out}"
    return None


def _value_error(out: Any, expected: Any, what: str = "") -> str:
    pre = f"{what}: " if what else ""
    if isinstance(expected, dict):
        for key in expected:
            if not _same(out[key], expected[key], 1e-5, 1e-6):
                return _value_error(out[key], expected[key], key)
    if isinstance(out, torch.Tensor) and isinstance(expected, torch.Tensor):
        err = (out.detach().cpu().double() - expected.detach().cpu().double()).abs().max().item()
        return f"{pre}wrong values (max abs error {err:.3g})"
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        return f"{pre}returned {out!r}, expected {expected!r}"
    return f"{pre}wrong values"


# ---------------------------------------------------------------------------- checkers
@dataclass
class _CaseRun:
    case: Case
    expected: Any
    outcome: Outcome
    ok: bool = False
    reason: str = ""


class Checker:
    """Compare a learner's function with ``reference`` on ``cases``; name catalogued mistakes."""

    def __init__(
        self,
        title: str,
        reference: Callable[..., Any],
        cases: Sequence[Case],
        mistakes: Sequence[Mistake] = (),
        *,
        exercise: str = "",
        tier: str = "build",
        rtol: float = 1e-5,
        atol: float = 1e-6,
        success: str = "all checks passed",
        solution: Any = None,
        time_limit: float = TIME_LIMIT,
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
        self.rtol, self.atol = rtol, atol
        self.success = success
        # What a correct learner hands in (default: the reference itself).
        self.solution = reference if solution is None else solution
        self.time_limit = time_limit

    @property
    def mistake_names(self) -> list[str]:
        return [m.name for m in self.mistakes]

    # -- how one case is evaluated; ModuleChecker overrides these two
    def evaluate(self, subject: Any, case: Case, args: tuple) -> Any:
        """The value compared for ``subject`` (learner, reference or mistake) on ``case``."""
        with torch.no_grad():
            return subject(*args)

    def validate(self, learner: Any) -> str | None:
        if not callable(learner) or isinstance(learner, type):
            return f"expected a function, got {_describe(learner)}"
        return None

    def expected(self, case: Case) -> Any:
        """The reference's value on a case (run with the global state restored after it)."""
        outcome = guarded(lambda: self.evaluate(self.reference, case, case.inputs()),
                          time_limit=None)
        if outcome.error is not None:  # a bug in the course, not in the learner's code
            raise RuntimeError(f"{self.name}: the reference failed on case {case.name}") \
                from outcome.error
        return outcome.value

    def outputs_of(self, impl: Any) -> list[Any]:
        """``impl``'s value on every case (None where it raised): used to test the catalogue."""
        values = []
        for case in self.cases:
            o = guarded(lambda: self.evaluate(impl, case, case.inputs()), time_limit=None)
            values.append(None if o.error is not None else o.value)
        return values

    def _named_mistakes(self, runs: list[_CaseRun]) -> list[str]:
        """The mistakes whose results the learner's equal on every case (so on every case where
        the mistake and the reference differ, and there is at least one)."""
        names = []
        for mistake in self.mistakes:
            differs = 0
            for run in runs:
                wrong = guarded(lambda: self.evaluate(mistake.impl, run.case, run.case.inputs()),
                                time_limit=None)
                if wrong.error is not None or run.outcome.error is not None:
                    break
                differs += not _same(wrong.value, run.expected, self.rtol, self.atol)
                if not _same(run.outcome.value, wrong.value, self.rtol, self.atol):
                    break
            else:
                if differs:
                    names.append(mistake.name)
        return names

    def run(self, learner: Any, verbose: bool = True) -> CheckResult:
        # The cases are tiny: one thread is faster and immune to a busy machine's contention.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run(learner, verbose)
        finally:
            torch.set_num_threads(threads)

    def _run(self, learner: Any, verbose: bool) -> CheckResult:
        result = CheckResult(self.title, checks_total=len(self.cases))
        invalid = self.validate(learner)
        if invalid:
            result.lines.append(f"{FAIL} {self.title}: {invalid}")
            return self._finish(result, verbose)
        codes = learner_code(learner)
        runs: list[_CaseRun] = []
        changed: list[str] = []
        stopped = False
        for case in self.cases:
            expected = self.expected(case)
            args = case.inputs()
            before = _clone(args)
            outcome = guarded(lambda: self.evaluate(learner, case, args), codes, self.time_limit)
            for name in outcome.changed:
                if name not in changed:
                    changed.append(name)
            if outcome.kind == "stub":
                result.implemented = False
                result.status = "not implemented"
                result.lines = [f"{self.title}: {NOT_IMPLEMENTED}"]
                return self._finish(result, verbose)
            run = _CaseRun(case, expected, outcome)
            runs.append(run)
            if outcome.error is not None:
                run.reason = describe_failure(outcome, self.time_limit)
            elif not _same(args, before, 0.0, 0.0):
                run.reason = "changed its input in place; work on a copy or out of place"
            else:
                problem = _problem(outcome.value, expected)
                if problem is None and _same(outcome.value, expected, self.rtol, self.atol):
                    run.ok = True
                else:
                    run.reason = problem or _value_error(outcome.value, expected)
            if outcome.kind == "timeout":
                stopped = True
                break
        self._report(result, runs, changed, stopped)
        return self._finish(result, verbose)

    def _report(self, result: CheckResult, runs: list[_CaseRun], changed: list[str],
                stopped: bool) -> None:
        say = result.lines.append
        failed = [r for r in runs if not r.ok]
        if len(runs) == len(self.cases) > 1 and len(failed) == len(runs) \
                and len({r.reason for r in runs}) == 1:
            say(f"{FAIL} every case: {runs[0].reason}")
            self._printed(result, runs[0].outcome)
        else:
            for run in runs:
                say(f"{OK} {run.case.name}" if run.ok else f"{FAIL} {run.case.name}: {run.reason}")
                self._printed(result, run.outcome)
        if stopped and len(runs) < len(self.cases):
            say(f"  (the other {len(self.cases) - len(runs)} cases were skipped)")
        if changed:
            say("note: your code changed " + ", ".join(changed)
                + "; the checker put it back")
        passed = len(runs) - len(failed)
        result.passed = passed == len(self.cases)
        result.checks_passed = passed
        crashed = next((r for r in runs if r.outcome.kind == "timeout" or (
            r.outcome.error is not None and not isinstance(r.outcome.error, _WeightsMismatch))),
            None)
        if result.passed:
            result.status = "passed"
        elif crashed is not None:
            result.status = "timeout" if crashed.outcome.kind == "timeout" else "error"
            result.error = crashed.reason
        if result.passed:
            say(f"{self.title}: {self.success} ({passed}/{len(self.cases)})")
            return
        verdict = f"{self.title}: {passed}/{len(self.cases)} checks passed"
        if not stopped and any(r.outcome.error is None for r in failed):
            result.diagnoses = self._named_mistakes(runs)
        if result.diagnoses:
            verdict += " — looks like " + " / ".join(repr(n) for n in result.diagnoses)
        say(verdict)

    @staticmethod
    def _printed(result: CheckResult, outcome: Outcome) -> None:
        kept, count = outcome.printed
        if not count:
            return
        more = f", first {len(kept)} shown" if count > len(kept) else ""
        result.lines.append(f"  your code printed {count} line{'s' * (count != 1)}{more}:")
        for line in kept:
            line = line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 3] + "..."
            result.lines.append(f"  | {line}")

    @staticmethod
    def _finish(result: CheckResult, verbose: bool) -> CheckResult:
        if verbose:
            print("\n".join(result.lines))
            result.printed = True
        return result

    __call__ = run


class ModuleChecker(Checker):
    """A checker for an exercise whose answer is an ``nn.Module`` class (see the module
    docstring, step 4). ``reference`` and every mistake's ``impl`` are classes (or partials of
    one) called with the case's ``build`` keyword arguments; ``train`` runs the modules in
    training mode instead of eval mode."""

    def __init__(self, *args: Any, train: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train = train

    def validate(self, learner: Any) -> str | None:
        if not (isinstance(learner, type) and issubclass(learner, torch.nn.Module)):
            return f"expected an nn.Module subclass (the class, not an instance), got " \
                   f"{_describe(learner)}"
        return None

    def _reference_module(self, case: Case) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case.seed)
            return self.reference(**case.build)

    def evaluate(self, subject: Any, case: Case, args: tuple) -> Any:
        ref = self._reference_module(case)
        if self._runs_reference(subject, case):
            module = ref
        else:
            module = self._build(subject, case)
            if not isinstance(module, torch.nn.Module):
                raise TypeError(f"building it gave {_describe(module)}, not an nn.Module")
            self._load(module, ref, case)
        return self._measure(module.double().train(self.train), case, args)

    # The steps of ``evaluate``; a lesson's subclass changes one of them (lessons 05 and 07).
    def _runs_reference(self, subject: Any, case: Case) -> bool:
        """Whether the reference module itself is measured, rather than ``subject`` built and
        loaded with the reference's weights."""
        return subject is self.reference

    def _build(self, subject: Any, case: Case) -> Any:
        """The learner's module, built with the case's keyword arguments."""
        with torch.random.fork_rng(devices=[]):  # building may draw random init weights
            return subject(**case.build)

    def _load(self, module: torch.nn.Module, ref: torch.nn.Module, case: Case) -> None:
        """Give the learner's module the reference's weights (by parameter name)."""
        _load_by_name(module, ref)

    def _measure(self, module: torch.nn.Module, case: Case, args: tuple) -> dict:
        """The output and the gradients of ``(output * g).sum()`` (g seeded) w.r.t. the inputs."""
        inputs = [a.detach().requires_grad_(a.is_floating_point())
                  if isinstance(a, torch.Tensor) else a for a in args]
        with torch.enable_grad():
            out = module(*inputs)
            first = next((a for a in inputs if isinstance(a, torch.Tensor)), None)
            if not isinstance(out, torch.Tensor) or not out.requires_grad \
                    or out.dtype != torch.float64 or first is None or out.device != first.device:
                return {"output": out}  # no gradients to compare; the output's problem is shown
            g = torch.randn(out.shape, generator=torch.Generator().manual_seed(case.seed + 1),
                            dtype=out.dtype)
            wrt = [a for a in inputs if isinstance(a, torch.Tensor) and a.requires_grad]
            grads = torch.autograd.grad(out, wrt, g, allow_unused=True)
        value = {"output": out.detach()}
        for i, grad in enumerate(grads):
            key = "gradient w.r.t. the input" if len(grads) == 1 else f"gradient w.r.t. input {i}"
            value[key] = torch.zeros_like(wrt[i]) if grad is None else grad
        return value

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
            raise _WeightsMismatch("its parameters do not match the reference's: "
                                   + "; ".join(parts))


def _load_by_name(module: torch.nn.Module, ref: torch.nn.Module) -> None:
    """Copy ``ref``'s parameters and buffers into ``module`` by name, or say which names differ."""
    theirs = ref.state_dict()
    ModuleChecker._check_names(module.state_dict(), theirs)
    module.load_state_dict(copy.deepcopy(theirs))


class _WeightsMismatch(Exception):
    pass
