"""The sandbox around a learner's code (issue #36 §1): a bare ``except:`` cannot swallow the time
limit; a NotImplementedError that torch raises is the learner's bug, not a stub; and the global
and process state a learner's call changes is put back and named."""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn

from attn_tutorial.checks import CHECKERS

CHECKER = CHECKERS["check_global_avg_pool"]


def right(x):
    return x.mean(dim=(2, 3))


def test_a_bare_except_around_an_endless_loop_is_stopped(monkeypatch):
    monkeypatch.setattr(CHECKER, "time_limit", 0.3)

    def global_avg_pool(x):
        while True:
            try:
                time.sleep(0.01)
            except:  # noqa: E722 - the learner's bare except
                pass

    start = time.monotonic()
    result = CHECKER.run(global_avg_pool, verbose=False)
    assert time.monotonic() - start < 5
    assert result.status == "timeout" and "still running after 0.3 s" in result.error
    assert sys.gettrace() is None or "coverage" in type(sys.gettrace()).__module__
    assert CHECKER.run(right, verbose=False).passed  # nothing left armed


def test_not_implemented_by_torch_is_the_learners_error_not_a_stub():
    def global_avg_pool(x):
        return torch.nonzero(x.to("meta"))

    result = CHECKER.run(global_avg_pool, verbose=False)
    assert result.implemented and result.status == "error"
    assert "NotImplementedError" in result.error and "(at line 2 of global_avg_pool)" in result.error


def _changes(x):
    torch.set_default_device("meta")
    torch.set_float32_matmul_precision("medium")
    torch.set_anomaly_enabled(True)
    torch.backends.mkldnn.enabled = False
    nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    os.chdir("/")
    sys.setrecursionlimit(777)
    os.environ["ATTN_TUTORIAL_LEARNER"] = "1"
    warnings.simplefilter("ignore")
    np.seterr(all="ignore")
    nn.Conv2d.forward = lambda self, x: x
    nn.Module.__call__ = lambda self, *a: None
    torch.linalg.norm = None
    np.mean = None
    return x.mean(dim=(2, 3))


def test_global_and_process_state_is_put_back_and_named():
    before = (torch.get_default_device(), torch.get_float32_matmul_precision(),
              torch.is_anomaly_enabled(), torch.backends.mkldnn.enabled, os.getcwd(),
              sys.getrecursionlimit(), dict(os.environ), list(warnings.filters), np.geterr(),
              nn.Conv2d.forward, nn.Module.__call__, torch.linalg.norm, np.mean,
              len(nn.modules.module._global_forward_hooks))
    result = CHECKER.run(_changes, verbose=False)
    after = (torch.get_default_device(), torch.get_float32_matmul_precision(),
             torch.is_anomaly_enabled(), torch.backends.mkldnn.enabled, os.getcwd(),
             sys.getrecursionlimit(), dict(os.environ), list(warnings.filters), np.geterr(),
             nn.Conv2d.forward, nn.Module.__call__, torch.linalg.norm, np.mean,
             len(nn.modules.module._global_forward_hooks))
    assert before == after
    assert result.passed, result.lines
    note = next(line for line in result.lines if line.startswith("note: your code changed"))
    for what in ("default device", "float32 matmul precision", "anomaly detection", "mkldnn",
                 "global module hooks", "working directory", "recursion limit",
                 "environment variable ATTN_TUTORIAL_LEARNER", "warning filters",
                 "numpy error handling", "torch.nn.Conv2d.forward replaced",
                 "torch.nn.Module.__call__ replaced", "torch.linalg.norm replaced",
                 "numpy.mean replaced"):
        assert what in note, (what, note)


@pytest.mark.parametrize("name", ["check_eca_module", "check_global_avg_pool"])
def test_a_learner_setting_the_default_device_does_not_break_the_engine(name):
    checker = CHECKERS[name]
    solution = checker.solution
    if isinstance(solution, type):
        class Learner(solution):
            def forward(self, x):
                torch.set_default_device("meta")
                return super().forward(x)
    else:
        def Learner(*args):  # noqa: N802
            torch.set_default_device("meta")
            return solution(*args)
    result = checker.run(Learner, verbose=False)
    assert result.passed, result.lines
    assert torch.get_default_device() == torch.device("cpu")


def test_what_cannot_be_undone_is_said_in_its_own_note():
    import threading

    stop = threading.Event()

    def global_avg_pool(x):
        if not any(t.name == "learner-thread" for t in threading.enumerate()):
            threading.Thread(target=stop.wait, name="learner-thread", daemon=True).start()
        return x.mean(dim=(2, 3))

    try:
        result = CHECKER.run(global_avg_pool, verbose=False)
    finally:
        stop.set()
    assert result.passed
    note = next(line for line in result.lines if "cannot undo" in line)
    assert "started thread learner-thread, still running" in note
