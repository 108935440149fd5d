"""What runs inside a notebook's own process while it is graded (``attn_tutorial.grading``).

``run_notebook`` is the process's target: it cuts the process off (own process group, no input,
printed output discarded, memory and file-size limits, one torch thread), takes the trusted
checkers and saves what the student's code could replace, runs the copy's cells with a time limit
each, puts back what was replaced, runs the grader's checkers on the objects the cells defined,
and sends two messages to the grader: ``("ran", problems)`` and ``("graded", verdicts)``
(``("crashed", why)`` if the grader itself failed).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

FILE_MB = 256  # largest file the student's code may write
MISTAKES_JOINED_BY = " | "  # in the mistake column, when a checker names more than one
# (mistake names may contain "; " and ","; none contains "|")


class _TimeUp(BaseException):
    """Raised in the student's code when a cell's time is up (not an Exception, so that
    ``except Exception`` in the student's code does not swallow it)."""


def _alarm(seconds: float) -> None:
    """Raise ``_TimeUp`` in this (main) thread after ``seconds``; where the OS has no interval
    timer (Windows) only the parent's limit for the whole notebook applies."""
    if not hasattr(signal, "setitimer"):
        return

    def on_alarm(signum, frame):
        raise _TimeUp()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _disarm() -> None:
    if hasattr(signal, "setitimer"):
        signal.setitimer(signal.ITIMER_REAL, 0)


def _limit_resources(memory_mb: int) -> None:
    """Cap the address space and file sizes, no core files (where the OS has ``resource``)."""
    try:
        import resource
    except ImportError:  # Windows
        return
    limits = [(getattr(resource, "RLIMIT_FSIZE", None), FILE_MB << 20),
              (getattr(resource, "RLIMIT_CORE", None), 0)]
    try:  # Linux: what the process maps now, plus the allowance
        used = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limits.append((getattr(resource, "RLIMIT_AS", None), used + (memory_mb << 20)))
    except (OSError, ValueError):
        pass
    for which, value in limits:
        if which is None:
            continue
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(which, (value, hard))
        except (ValueError, OSError):
            pass


def _describe(error: BaseException) -> str:
    """``Type: first line of the message (cell line N)``."""
    message = str(error).strip().splitlines()
    text = type(error).__name__ + (f": {message[0][:200]}" if message else "")
    line = None
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.startswith("<ipython-input"):
            line = tb.tb_lineno
        tb = tb.tb_next
    return text + (f" (line {line} of the cell)" if line else "")


def _neutralise_checker_calls() -> None:
    """Replace the public ``check_*`` names with a stub: the grader runs each checker itself."""
    from attn_tutorial.checks import CHECKERS

    def graded_by_the_grader(*args, **kwargs):
        print("(this checker call is not run when grading: the grader runs the checker itself)")

    for module_name, module in list(sys.modules.items()):
        if module is not None and module_name.startswith("attn_tutorial.checks"):
            for name in CHECKERS:
                if hasattr(module, name):
                    setattr(module, name, graded_by_the_grader)


# What the student's code could change to sway the checkers: the grader's own modules and classes
# (and the trusted checkers), and the torch/einops functions the checkers and references call.
_LIBRARIES = ("torch", "torch.nn", "torch.nn.functional", "torch.linalg", "torch.special",
              "torch.fft", "einops", "math")


def _pristine(checkers) -> list[tuple[object, dict, bool]]:
    """(object, a copy of its attributes, whether it is the grader's own) for every module, class
    and checker that ``_put_back`` restores; taken before any student code runs."""
    import torch

    ours = [m for name, m in sorted(sys.modules.items())
            if m is not None and (name == "attn_tutorial" or name.startswith("attn_tutorial."))]
    libraries = [sys.modules[name] for name in _LIBRARIES if name in sys.modules]
    classes = {torch.Tensor} | {
        value for module in (*ours, torch.nn) for value in vars(module).values()
        if isinstance(value, type) and (value.__module__ or "").startswith(("attn_tutorial",
                                                                            "torch.nn"))}
    saved = [(m, dict(vars(m)), True) for m in ours]
    saved += [(m, dict(vars(m)), False) for m in libraries]
    saved += [(c, dict(vars(c)), c.__module__.startswith("attn_tutorial"))
              for c in sorted(classes, key=lambda c: (c.__module__, c.__qualname__))]
    saved += [(c, dict(vars(c)), True) for c in checkers]
    return saved


def _put_back(saved) -> list[str]:
    """Restore what ``_pristine`` saved; name what the student's code had replaced (torch's own
    lazy rebinding of a few names is restored silently). Names added to a module stay (an import
    adds them); names added to a class or a checker are removed (they could shadow a method)."""
    import types

    from attn_tutorial.checks._isolation import _by_torch  # torch rebinding its own names

    changed = []
    for obj, before, ours in saved:
        is_module = isinstance(obj, types.ModuleType)
        label = getattr(obj, "__name__", None) or getattr(obj, "title", type(obj).__name__)
        now = dict(vars(obj))
        for name, value in now.items():
            old = before.get(name, _MISSING)
            if old is value or (old is _MISSING and (is_module or name.startswith("__"))):
                continue
            try:
                if old is _MISSING:
                    delattr(obj, name)
                else:
                    setattr(obj, name, old)
            except (AttributeError, TypeError):
                continue
            if ours or not _by_torch(value):
                changed.append(f"{label}.{name}")
        for name in before.keys() - now.keys():
            setattr(obj, name, before[name])
            changed.append(f"{label}.{name}")
    return changed


_MISSING = object()


def _fresh_state(scratch: str) -> None:
    """The global state a fresh kernel has, for the checkers (the engine restores it after each
    of the student's calls, from what it finds when it starts)."""
    import torch

    os.chdir(scratch)
    torch.set_grad_enabled(True)
    torch.set_default_dtype(torch.float32)
    if hasattr(torch, "set_default_device"):
        torch.set_default_device(None)
    torch.set_num_threads(1)


def _run_cells(shell, nb, limits) -> list[str]:
    """Run every code cell, errors allowed; what went wrong, one line each."""
    problems = []
    deadline = time.monotonic() + limits.notebook
    for number, cell in enumerate(nb.cells, 1):
        if cell.cell_type != "code":
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            problems.append(f"cell {number} and later not run: the notebook's "
                            f"{limits.notebook:g} s were used up")
            break
        error: BaseException | None
        try:
            _alarm(min(limits.cell, left))
            result = shell.run_cell(cell.source, store_history=False)
            error = result.error_before_exec or result.error_in_exec
        except _TimeUp as exc:  # outside the student's code, where IPython did not catch it
            error = exc
        finally:
            _disarm()
        if isinstance(error, _TimeUp):
            problems.append(f"cell {number} stopped after {min(limits.cell, left):g} s")
        elif error is not None:
            problems.append(f"cell {number} raised {_describe(error)}")
    return problems


def _check(namespace: dict, exercise: str, checker, limits) -> dict:
    """The grader's own checker run on the student's object: a Grade's fields."""
    if exercise not in namespace:
        return {"status": "missing", "detail": f"no {exercise} defined"}
    try:
        _alarm(limits.check)
        result = checker.run(namespace[exercise], verbose=False)
    except _TimeUp:
        return {"status": "timeout", "detail": f"the checker ran past {limits.check:g} s"}
    except BaseException as exc:  # noqa: BLE001 - whatever the student's object did
        return {"status": "error", "detail": f"the checker stopped: {_describe(exc)}"}
    finally:
        _disarm()
    failed = [line.lstrip("✗ ") for line in result.lines if line.startswith("✗")]
    detail = result.error if result.status in ("error", "timeout") else ""
    if result.status == "failed" and not result.diagnoses and failed:
        detail = failed[0]
    return {"status": result.status, "checks_passed": result.checks_passed,
            "checks_total": result.checks_total,
            "mistake": MISTAKES_JOINED_BY.join(result.diagnoses),
            "detail": " ".join(detail.split()), "lines": list(result.lines)}


def run_notebook(copy: str, exercises: list[tuple[str, str]], limits, conn) -> None:
    """A notebook's process: run the copy's cells, then the grader's checkers; report twice."""
    if hasattr(os, "setsid"):
        os.setsid()  # its own process group: the parent ends it with everything it started
    os.chdir(os.path.dirname(copy))
    # No input; what the notebook prints is never read, so it goes nowhere.
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    if hasattr(signal, "SIGXFSZ"):  # a file past the size limit: an error in the cell, not a kill
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    os.environ["MPLBACKEND"] = "Agg"
    try:
        _grade_here(copy, exercises, limits, conn)
    except BaseException as exc:  # noqa: BLE001 - a fault of the grader's, not the student's
        conn.send(("crashed", f"{type(exc).__name__}: {exc}"[:300]))
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)  # skip the student's atexit handlers and lingering threads


def _grade_here(copy: str, exercises: list[tuple[str, str]], limits, conn) -> None:
    import nbformat
    import torch
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from attn_tutorial.checks import CHECKERS

    torch.set_num_threads(1)
    trusted = {checker: CHECKERS[checker] for _, checker in exercises}
    _neutralise_checker_calls()
    saved = _pristine(trusted.values())
    _limit_resources(limits.memory_mb)
    config = Config()
    config.HistoryManager.enabled = False
    shell = InteractiveShell.instance(config=config)
    problems = _run_cells(shell, nbformat.read(copy, as_version=4), limits)
    changed = _put_back(saved)
    if changed:
        problems.append("the notebook replaced functions the checkers use (put back before "
                        f"grading): {', '.join(changed[:8])}" + (" ..." if changed[8:] else ""))
    _fresh_state(os.path.dirname(copy))
    conn.send(("ran", problems))
    conn.send(("graded", [_check(shell.user_ns, exercise, trusted[checker], limits)
                          for exercise, checker in exercises]))
