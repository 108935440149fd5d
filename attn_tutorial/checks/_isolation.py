"""Running a learner's code in isolation: a time limit per call, its output captured and
truncated, the global state it changes put back, its errors blamed on the line of its own code.

``guarded(fn, codes, time_limit)`` runs ``fn()`` and returns an :class:`Outcome`; it never raises
(except ``KeyboardInterrupt``, the notebook's stop button). ``describe_failure`` turns a failed
outcome into the one line a checker prints.

What is put back after every call, and named in the verdict's note: default dtype and device, the
torch / Python / numpy RNG states, grad mode, anomaly detection, deterministic algorithms, float32
matmul precision, mkldnn, the thread count, torch and numpy print options, numpy's error handling,
global module hooks, the working directory, the recursion limit, environment variables, warning
filters, and the functions of torch, torch.nn.functional, torch.nn (and the layers the exercises
use, nn.Module itself), torch.Tensor, torch.linalg, torch.special, einops, math and numpy.
What cannot be undone is named in its own note: a thread the learner's code started that is still
running. Not watched: files the learner's code writes (another process may write beside it, so a
listing could blame the learner wrongly), other modules' functions, state outside this process.
"""

from __future__ import annotations

import contextlib
import io
import linecache
import math
import os
import random
import re
import signal
import sys
import threading
import time
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

TIME_LIMIT = 10.0  # seconds per learner call
SHOWN_LINES = 3  # lines of a learner's captured output shown per case
LINE_CHARS = 120
IN_PLACE = "changed its input in place; work on a copy or out of place"

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
        armed = [True]

        def relentless(frame, event, arg):
            # after the time is up, every line of the learner's code raises again, so a bare
            # `except:` around an endless loop cannot swallow the stop (library frames that
            # unwind the block are spared)
            if armed[0] and event == "line" and not _spared(frame):
                raise _TimeUp()
            return relentless if armed[0] else None

        def on_alarm(signum, frame):
            f = frame
            while f is not None and f.f_code is not guarded.__code__:
                f.f_trace, f.f_trace_lines = relentless, True
                f = f.f_back
            sys.settrace(relentless)
            raise _TimeUp()

        # Someone else's alarm (pytest-timeout, say) is put back with the time it had left.
        pending, _ = signal.getitimer(signal.ITIMER_REAL)
        start = time.monotonic()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds if not pending else min(seconds, pending))
        previous_trace = sys.gettrace()
        try:
            yield
        finally:
            armed[0] = False
            sys.settrace(previous_trace)
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


# Libraries whose frames unwind the stopped call (context managers that restore grad mode, say):
# they are not interrupted a second time, only the learner's own lines are.
_SPARED = ("attn_tutorial.checks", "contextlib", "torch", "einops", "numpy", "functools")


def _spared(frame: types.FrameType) -> bool:
    name = frame.f_globals.get("__name__", "") or ""
    return name.startswith(_SPARED)


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

    nn = torch.nn
    spaces = {"torch": torch, "torch.nn.functional": F, "torch.nn": nn,
              "torch.Tensor": torch.Tensor, "einops": einops, "math": math, "numpy": np,
              "torch.linalg": torch.linalg, "torch.special": torch.special,
              "torch.nn.Module": nn.Module}
    for layer in _LAYERS:
        spaces[f"torch.nn.{layer}"] = getattr(nn, layer)
    return spaces


# the layers the exercises use, whose methods (forward, _conv_forward, ...) a learner might replace
_LAYERS = ("Conv1d", "Conv2d", "Linear", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
           "InstanceNorm2d", "ModuleList", "Sequential")


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
        "default device": torch.get_default_device(),
        "anomaly detection": (torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "global module hooks": _global_hooks(),
        "working directory": os.getcwd(),
        "recursion limit": sys.getrecursionlimit(),
        "environment variables": dict(os.environ),
        "warning filters": list(warnings.filters),
        "numpy error handling": np.geterr(),
        "functions": {n: dict(vars(ns)) for n, ns in _namespaces().items()},
    }


def _global_hooks() -> tuple:
    from torch.nn.modules import module

    return tuple(tuple(getattr(module, name).items()) for name in _HOOK_DICTS)


_HOOK_DICTS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
               "_global_backward_pre_hooks", "_global_module_registration_hooks",
               "_global_parameter_registration_hooks", "_global_buffer_registration_hooks")


def _put_back_hooks(old: tuple) -> None:
    from torch.nn.modules import module

    for name, items in zip(_HOOK_DICTS, old):
        hooks = getattr(module, name)
        hooks.clear()
        hooks.update(items)


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
        if key == "environment variables":
            names = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            if names:
                changed.append("environment variable" + "s" * (len(names) > 1) + " "
                               + ", ".join(names))
                os.environ.clear()
                os.environ.update(old)
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
        elif key == "default device":
            torch.set_default_device(old)
        elif key == "anomaly detection":
            torch.set_anomaly_enabled(old[0], old[1])
        elif key == "float32 matmul precision":
            torch.set_float32_matmul_precision(old)
        elif key == "mkldnn":
            torch.backends.mkldnn.enabled = old
        elif key == "global module hooks":
            _put_back_hooks(old)
        elif key == "working directory":
            os.chdir(old)
        elif key == "recursion limit":
            sys.setrecursionlimit(old)
        elif key == "environment variables":
            os.environ.clear()
            os.environ.update(old)
        elif key == "warning filters":
            warnings.filters[:] = old
            warnings._filters_mutated()
        elif key == "numpy error handling":
            np.seterr(**old)
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


def _of_the_course(value: Any) -> bool:
    """An object of the course's own library (a module, function or class of ``attn_tutorial``
    outside ``attn_tutorial.checks``)."""
    name = value.__name__ if isinstance(value, types.ModuleType) else \
        getattr(value, "__module__", None)
    return isinstance(name, str) and name.split(".")[0] == "attn_tutorial" and \
        not name.startswith("attn_tutorial.checks")


def library_uses(obj: Any, exempt: tuple = (), forbidden: tuple[str, ...] = ()) -> list[str]:
    """What of the course's own library the learner's answer refers to: a base class, a global
    name its code (or a helper function of its own that it calls) reads, an import inside it;
    and which of the ``forbidden`` names (an attribute, a function or a keyword argument such as
    ``dilation``) it uses. Read from the code, not run: an exercise asks the learner to write the
    mechanism, and the library's version (or the one keyword it asks to do without) would pass
    every case."""
    found: list[str] = []
    seen: set[types.CodeType] = set()

    def note(text: str) -> None:
        if text not in found:
            found.append(text)

    def look_at(value: Any, name: str, fn: types.FunctionType, depth: int) -> None:
        if value is None or any(value is e for e in exempt):
            return
        if _of_the_course(value):
            note(value.__name__ if isinstance(value, types.ModuleType) else
                 f"{value.__module__}.{getattr(value, '__qualname__', name)}")
        elif isinstance(value, types.FunctionType) and depth < 3 and \
                value.__module__ == fn.__module__:
            scan(value, depth + 1)  # a helper of the learner's own, e.g. exercise 1

    def scan(fn: types.FunctionType, depth: int) -> None:
        for cell in fn.__closure__ or ():  # names of an enclosing function
            try:
                look_at(cell.cell_contents, "", fn, depth)
            except ValueError:  # an empty cell
                pass
        stack = [fn.__code__]
        while stack:
            code = stack.pop()
            if code in seen:
                continue
            seen.add(code)
            stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]
            keywords = {k for c in code.co_consts if isinstance(c, tuple) for k in c
                        if isinstance(k, str)}  # a call's keyword names
            for name in forbidden:
                if name in code.co_names or name in keywords:
                    note(f"`{name}`")
            for name in code.co_names:
                if name.split(".")[0] == "attn_tutorial":
                    note(name)
                else:
                    look_at(fn.__globals__.get(name), name, fn, depth)

    while isinstance(obj, types.MethodType) or hasattr(obj, "func"):
        obj = getattr(obj, "__func__", None) or getattr(obj, "func")
    if isinstance(obj, types.FunctionType):
        scan(obj, 0)
    elif isinstance(obj, type):
        for klass in obj.__mro__:
            if any(klass is e for e in exempt) or klass.__module__.startswith(("torch", "builtins")):
                continue
            if _of_the_course(klass):
                note(f"{klass.__module__}.{klass.__qualname__}")
                break  # its own bases are the library's business
            for value in vars(klass).values():
                value = getattr(value, "__func__", value)
                if isinstance(value, types.FunctionType):
                    scan(value, 0)
    return found


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


_ACTIVE: list[tuple[dict, list[str]]] = []  # the snapshots of the guarded runs in progress


def _raised_by_a_raise(exc: BaseException) -> bool:
    """The innermost line is a ``raise`` statement (the exercise's stub), not an operation that
    torch refused with NotImplementedError (an op on a meta tensor, say)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno)
    return not line or line.lstrip().startswith("raise")


def guarded(fn: Callable[[], Any], codes: set[types.CodeType] = frozenset(),
            time_limit: float | None = TIME_LIMIT) -> Outcome:
    """Run ``fn()`` (the learner's code) under a time limit, output captured, global state
    saved and restored. Never raises, except ``KeyboardInterrupt``."""
    saved = _snapshot()
    threads = set(threading.enumerate())
    capture = _Capture()
    outcome = Outcome()
    _ACTIVE.append((saved, outcome.changed))
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
        outcome.kind = "stub" if isinstance(exc, NotImplementedError) and direct \
            and _raised_by_a_raise(exc) else "raised"
    finally:
        _ACTIVE.pop()
    outcome.printed = capture.lines()
    outcome.changed += [name for name in _restore(saved) if name not in outcome.changed]
    running = [t.name for t in set(threading.enumerate()) - threads if t.is_alive()]
    if running:
        outcome.changed.append(f"started thread {', '.join(running)}, still running" + UNDONE)
    return outcome


UNDONE = " (cannot be undone)"


def restore_between_calls() -> None:
    """Inside ``guarded``: put the global state back before the next call of the learner's
    code in the same guarded run (a module's forward in eval, then train mode), and remember
    what was changed."""
    if _ACTIVE:
        saved, changed = _ACTIVE[-1]
        changed += [name for name in _restore(saved) if name not in changed]


class Reported(Exception):
    """Raised by a checker's own step (not the learner's code) with the line to print as its
    message: parameters that do not match the reference's, for instance."""


# PyTorch's wording when an input (which the checker gives requires_grad=True) is changed in
# place: reported in the checkers' one wording for in-place changes.
_IN_PLACE_ERRORS = re.compile(r"leaf Variable that requires grad is being used in an in-place|"
                              r"modified by an inplace operation|view of a leaf Variable")


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 160 else text[:157] + "..."


def describe_failure(outcome: Outcome, time_limit: float | None) -> str:
    exc = outcome.error
    if outcome.kind == "timeout":
        return f"still running after {time_limit:g} s: stopped (an endless loop?)"
    if outcome.kind == "exit":
        code = "" if exc.code is None else repr(exc.code)
        return f"called sys.exit({code}); a function should return"
    if isinstance(exc, Reported):
        return str(exc)
    where = f" (at {outcome.where})" if outcome.where else ""
    if isinstance(exc, RuntimeError) and _IN_PLACE_ERRORS.search(str(exc)):
        return IN_PLACE + where
    if isinstance(exc, RuntimeError) and "numpy() on Tensor that requires grad" in str(exc):
        return ("converted a tensor that needs a gradient to numpy: the gradient cannot flow "
                "through numpy, use torch operations" + where)
    message = _one_line(exc) if str(exc) else ""
    return f"raised {type(exc).__name__}{': ' + message if message else ''}{where}"
