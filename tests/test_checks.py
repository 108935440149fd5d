"""The checker engine, proven over every registered checker of every lesson (and a module
exercise written here, since no lesson has one yet): the solution passes, every catalogued mistake
is named and only it, a stub says "not implemented yet", and whatever a learner's code does (raise,
return None or a tuple, NaN, edit its input, wrong dtype, device or meta tensor, loop forever,
sleep, print a flood, call sys.exit, change global state) is reported in a line or two and the
checker returns. Per-lesson files keep only the slips specific to their lesson."""

from __future__ import annotations

import copy
import math
import random
import sys
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange, reduce

from attn_tutorial.checks import (
    CHECKERS, NOT_IMPLEMENTED, TIME_LIMIT, Case, Checker, Mistake, ModuleChecker,
    feature_map_cases, token_cases,
)
from attn_tutorial.checks._compare import same
from attn_tutorial.checks._isolation import guarded


# --------------------------------------------------------------- a module exercise, for real
class ToyGate(nn.Module):
    """Reference for a toy SE-style module exercise: x * sigmoid(fc2(relu(fc1(pool(x)))))."""

    def __init__(self, channels: int, reduction: int = 4, *, pool: str = "mean",
                 act: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)
        self.pool, self.act = pool, act

    def forward(self, x):
        y = self.fc1(reduce(x, "b c h w -> b c", self.pool))
        gate = torch.sigmoid(self.fc2(F.relu(y) if self.act else y))
        return x * rearrange(gate, "b c -> b c 1 1")


from functools import partial  # noqa: E402


def _x(shape):
    return lambda g: (torch.randn(*shape, generator=g, dtype=torch.float64),)


TOY_MODULE = ModuleChecker(
    "toy_gate",
    reference=ToyGate,
    cases=[
        Case("x 2×8×5×7", _x((2, 8, 5, 7)), seed=0, build={"channels": 8}),
        Case("x 1×12×4×4", _x((1, 12, 4, 4)), seed=1, build={"channels": 12}),
        Case("x 3×16×3×5, reduction 2", _x((3, 16, 3, 5)), seed=2,
             build={"channels": 16, "reduction": 2}),
    ],
    mistakes=[
        Mistake("max instead of mean pooling", partial(ToyGate, pool="max")),
        Mistake("forgot the ReLU between the two layers", partial(ToyGate, act=False)),
    ],
)

# A learner's own modules, written differently from the reference but with its parameter names.
class LearnerGate(nn.Module):
    def __init__(self, channels, reduction=4):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x):
        s = x.mean(dim=(2, 3))
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))[:, :, None, None]


class LearnerGateMax(LearnerGate):
    def forward(self, x):
        s = x.amax(dim=(2, 3))
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))[:, :, None, None]


class LearnerGateDetached(LearnerGate):
    """Right output, but the gate is cut from the graph: the input gradient is wrong."""

    def forward(self, x):
        s = x.detach().mean(dim=(2, 3))
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))[:, :, None, None]


class LearnerGateRenamed(nn.Module):
    def __init__(self, channels, reduction=4):
        super().__init__()
        self.down = nn.Linear(channels, channels // reduction)
        self.fc2 = nn.Linear(channels // reduction, channels)

    def forward(self, x):
        return x


class LearnerStubInit(nn.Module):
    def __init__(self, channels, reduction=4):
        super().__init__()
        raise NotImplementedError()


class LearnerStubForward(LearnerGate):
    def forward(self, x):
        raise NotImplementedError()


def test_module_exercise_right_answer_passes(capsys):
    result = TOY_MODULE(LearnerGate)
    out = capsys.readouterr().out
    assert result.passed, out
    assert out.count("✓") == 3 and out.count("all checks passed") == 1


def test_module_exercise_names_the_mistake(capsys):
    result = TOY_MODULE(LearnerGateMax)
    out = capsys.readouterr().out
    assert not result.passed and result.diagnoses == ["max instead of mean pooling"], out


def test_module_exercise_compares_input_gradients(capsys):
    result = TOY_MODULE(LearnerGateDetached)
    out = capsys.readouterr().out
    assert not result.passed and result.diagnoses == []
    assert "gradient w.r.t. the input: wrong values" in out, out


def test_module_exercise_names_mismatched_parameters(capsys):
    result = TOY_MODULE(LearnerGateRenamed)
    out = capsys.readouterr().out
    assert not result.passed
    assert "missing fc1.weight, fc1.bias; unexpected down.weight, down.bias" in out, out
    assert len(out.strip().splitlines()) == 2


@pytest.mark.parametrize("stub", [LearnerStubInit, LearnerStubForward])
def test_module_exercise_stub(stub, capsys):
    result = TOY_MODULE(stub)
    assert not result.implemented
    assert capsys.readouterr().out.strip() == f"{stub.__name__}: {NOT_IMPLEMENTED}"


def test_module_exercise_wants_the_class(capsys):
    assert not TOY_MODULE(LearnerGate(8)).passed
    assert "the class, not an instance" in capsys.readouterr().out


def test_module_exercise_does_not_consume_the_notebooks_rng():
    state = torch.get_rng_state()
    TOY_MODULE(LearnerGate, verbose=False)
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------- every checker, adversarially
ALL = {**CHECKERS, "toy_gate (module)": TOY_MODULE}
NAMES = sorted(ALL)
MISTAKES = [(name, m) for name in NAMES for m in ALL[name].mistakes]


def _tensor_result(checker) -> bool:
    value = checker.expected(checker.cases[0])
    return isinstance(value, (torch.Tensor, dict))


TENSOR_NAMES = [n for n in NAMES if _tensor_result(ALL[n])]


def _engine_sample() -> list[str]:
    """One checker of each kind (module, function returning tensors, function returning other
    values) per lesson, and the toy module: the properties tested with it (captured output, global
    state put back, the time limit) belong to the engine that every checker runs through, and
    each costs seconds per checker."""
    from attn_tutorial.checks import catalogue

    lesson = {row.checker: row.lesson for row in catalogue()}
    picked: dict[tuple, str] = {}
    for name in NAMES:
        key = (lesson.get(name, "toy"), isinstance(ALL[name], ModuleChecker), name in TENSOR_NAMES)
        picked.setdefault(key, name)
    return sorted(picked.values())


ENGINE_SAMPLE = _engine_sample()


def learner(checker, body):
    """A learner's answer that does ``body(solution, args)``: a function, or for module checkers
    a subclass of the solution module whose forward does it."""
    if isinstance(checker, ModuleChecker):
        solution = checker.solution

        class Learner(solution):
            def forward(self, *args):
                return body(super().forward, args)

        return Learner
    return lambda *args: body(checker.solution, args)


def lines(capsys) -> list[str]:
    return capsys.readouterr().out.strip().splitlines()


def test_lessons_registered_checkers():
    assert CHECKERS, "no lesson registered a checker"
    assert all(name == c.name == "check_" + c.title for name, c in CHECKERS.items())


def test_every_lesson_exports_its_checkers_and_each_mechanism_lesson_has_a_module_exercise():
    import attn_tutorial.checks as checks
    from attn_tutorial.course import MECHANISM_LESSONS

    by_lesson = {lesson.__name__[-2:]: lesson for lesson in checks._LESSONS}
    assert set(MECHANISM_LESSONS) <= set(by_lesson), "a mechanism lesson has no checkers"
    for number, lesson in by_lesson.items():
        assert lesson.__all__, f"lesson {number} exports no checker"
        for name in lesson.__all__:
            assert getattr(checks, name) is CHECKERS[name], f"lesson {number}: {name}"
        if number in MECHANISM_LESSONS:
            assert any(isinstance(CHECKERS[n], ModuleChecker) for n in lesson.__all__), (
                f"lesson {number} has no module exercise")


@pytest.mark.parametrize("name", NAMES)
def test_solution_passes(name, capsys):
    checker = ALL[name]
    result = checker(checker.solution)
    out = capsys.readouterr().out
    assert result.passed and result.implemented and result.diagnoses == []
    assert out.count("✓") == len(checker.cases) and out.count("all checks passed") == 1


@pytest.mark.parametrize("name", NAMES)
def test_each_mistake_fails_somewhere_and_mistakes_are_told_apart(name):
    """Every catalogued mistake differs from the reference on some case, and any two mistakes
    differ from each other on some case (so a name is never ambiguous)."""
    checker = ALL[name]
    assert len(set(checker.mistake_names)) == len(checker.mistakes)
    expected = [checker.expected(c) for c in checker.cases]
    outs = {m.name: checker.outputs_of(m.impl) for m in checker.mistakes}
    for mname, out in outs.items():
        assert not same(out, expected), mname
    names = list(outs)
    for i in range(len(names)):
        for j in range(i):
            assert not same(outs[names[i]], outs[names[j]]), (
                names[i], names[j])


FORMS = [(n, m, i) for n, m in MISTAKES for i in range(len(m.forms))]


@pytest.mark.parametrize("name,mistake,form", FORMS,
                         ids=[f"{n}:{m.name[:40]}:{i}" for n, m, i in FORMS])
def test_each_mistake_is_named_once(name, mistake, form, capsys):
    """Every form of a catalogued mistake (the knob, and each natural variant) is named."""
    result = ALL[name](mistake.as_learner(form))
    out = capsys.readouterr().out
    assert not result.passed and result.implemented
    assert result.diagnoses == [mistake.name]
    assert out.count(mistake.name) == 1, out  # in the verdict line, once


def test_a_mistake_is_not_named_on_a_partial_match(capsys):
    """Max pooling on the first case only: not the catalogued mistake, whose every case differs."""
    checker = CHECKERS["check_global_avg_pool"]
    calls = []

    def half_wrong(x):
        calls.append(1)
        return x.amax(dim=(2, 3)) if len(calls) == 1 else x.mean(dim=(2, 3))

    result = checker(half_wrong)
    assert not result.passed and result.diagnoses == []
    assert "looks like" not in capsys.readouterr().out


def stub(*args):
    raise NotImplementedError()


@pytest.mark.parametrize("name", NAMES)
def test_stub_reports_not_implemented(name, capsys):
    checker = ALL[name]
    if isinstance(checker, ModuleChecker):
        class Stub(checker.solution):
            def forward(self, *args):
                raise NotImplementedError()
    result = checker(Stub if isinstance(checker, ModuleChecker) else stub)
    assert not result.implemented and not result.passed
    learner_ = Stub if isinstance(checker, ModuleChecker) else stub
    assert lines(capsys) == [f"{checker.title_for(learner_)}: {NOT_IMPLEMENTED}"]


def _one_failure_line(checker, result, out: list[str], phrase: str) -> None:
    """One line for the failure ("✗ every case: …", or one per case when the details differ
    from case to case, such as shapes) and the verdict, titled with the learner's class name
    for a module exercise."""
    assert not result.passed
    title = "Learner" if isinstance(checker, ModuleChecker) else checker.title
    assert out[-1].startswith(f"{title}: 0/{len(checker.cases)} checks passed"), out
    failures = out[:-1]
    assert len(failures) in (1, len(checker.cases)), out
    assert all(line.startswith("✗ ") and phrase in line for line in failures), out


ADVERSARIAL = {
    "raise": (lambda f, a: (_ for _ in ()).throw(ValueError("boom")), "raised ValueError: boom"),
    "None": (lambda f, a: None, "returned None"),
    "tuple": (lambda f, a: (f(*a), f(*a)), "returned a tuple of 2"),
    "NotImplementedError inside a library": (
        lambda f, a: nn.Module()(a[0]), "raised NotImplementedError: Module [Module] is missing"),
    "sys.exit": (lambda f, a: sys.exit(3), "called sys.exit(3)"),
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", list(ADVERSARIAL))
def test_broken_answers_are_reported_in_one_line(name, kind, capsys):
    checker = ALL[name]
    body, phrase = ADVERSARIAL[kind]
    result = checker(learner(checker, body))
    _one_failure_line(checker, result, lines(capsys), phrase)


TENSOR_ADVERSARIAL = {
    "NaN": (lambda f, a: f(*a) * float("nan"), "output contains NaN or inf"),
    "float32": (lambda f, a: f(*a).float(), "returned float32, expected float64 (the dtype"),
    "meta": (lambda f, a: f(*a).to("meta"), "returned a tensor on meta, expected cpu"),
    "wrong shape": (lambda f, a: torch.cat([f(*a)] * 2, dim=-1), "returned shape"),
    "integer einops reduce": (lambda f, a: reduce(a[0].long().flatten(), "n -> ", "mean"),
                              "raised NotImplementedError: reduce_mean is not available"),
}


@pytest.mark.parametrize("name", TENSOR_NAMES)
@pytest.mark.parametrize("kind", list(TENSOR_ADVERSARIAL))
def test_wrong_tensors_are_reported_in_one_line(name, kind, capsys):
    checker = ALL[name]
    body, phrase = TENSOR_ADVERSARIAL[kind]
    if kind == "float32" and any(_float32_case(c) for c in checker.cases):
        # a case about float32 numerics (lesson 04's index rule, lesson 07's underflowing row)
        # takes float32 and expects float32: .float() is right there
        checker = copy.copy(checker)
        checker.cases = [c for c in checker.cases if not _float32_case(c)]
    if isinstance(checker, ModuleChecker) and kind in ("meta", "float32", "wrong shape"):
        phrase = "output: " + phrase
    if kind == "integer einops reduce" and "reduce" in checker.forbidden:
        # refused in one line before it runs (lesson 04's gate is asked for as matrices)
        result = checker(learner(checker, body))
        [line] = lines(capsys)
        assert not result.passed and "your answer uses `reduce`" in line
        return
    result = checker(learner(checker, body))
    _one_failure_line(checker, result, lines(capsys), phrase)


def _float32_case(case) -> bool:
    return any(isinstance(a, torch.Tensor) and a.dtype == torch.float32 for a in case.inputs())


@pytest.mark.parametrize("name", [n for n in TENSOR_NAMES if not isinstance(ALL[n], ModuleChecker)])
def test_in_place_change_is_reported(name, capsys):
    checker = ALL[name]

    def body(f, args):
        out = f(*[a.clone() if isinstance(a, torch.Tensor) else a for a in args])
        args[0].mul_(2)
        return out

    result = checker(learner(checker, body))
    _one_failure_line(checker, result, lines(capsys), "changed its input in place")


@pytest.mark.parametrize("name", ENGINE_SAMPLE)
@pytest.mark.parametrize("how", ["loop", "sleep"])
def test_time_limit_stops_the_learner_and_skips_the_rest(name, how, capsys, monkeypatch):
    checker = ALL[name]
    monkeypatch.setattr(checker, "time_limit", 0.05)

    def body(f, args):
        if how == "sleep":
            time.sleep(30)
        while True:
            pass

    start = time.monotonic()
    result = checker(learner(checker, body))
    took = time.monotonic() - start
    out = lines(capsys)
    assert not result.passed and took < 5, took
    assert "still running after 0.05 s: stopped" in out[0], out
    assert f"(the other {len(checker.cases) - 1} cases were skipped)" in out[1], out
    assert len(out) == 3


def test_time_limit_off_the_main_thread_uses_a_trace_function(capsys):
    checker = CHECKERS["check_global_avg_pool"]
    checker_limit = checker.time_limit
    checker.time_limit = 0.3
    results = []

    def body(x):
        while True:
            pass

    try:
        t = threading.Thread(target=lambda: results.append(checker(body, verbose=False)))
        t.start()
        t.join(10)
    finally:
        checker.time_limit = checker_limit
    assert not t.is_alive() and not results[0].passed
    assert "still running after 0.3 s" in results[0].lines[0]


def test_default_time_limit_is_ten_seconds():
    assert TIME_LIMIT == 10 and all(c.time_limit == TIME_LIMIT for c in CHECKERS.values())


def test_keyboard_interrupt_still_interrupts():
    checker = CHECKERS["check_global_avg_pool"]

    def body(x):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checker(body, verbose=False)


@pytest.mark.parametrize("name", ENGINE_SAMPLE)
def test_print_flood_is_captured_and_truncated(name, capsys):
    checker = ALL[name]

    def body(f, args):
        for i in range(600):
            print("x" * 500, i)
        print("warning!", file=sys.stderr)
        return f(*args)

    result = checker(learner(checker, body))
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert result.passed and captured.err == ""
    # 3 kept lines of at most 120 characters per case, not 300 kB (predict checkers run 15-40 cases)
    assert len(captured.out) < 500 * (len(checker.cases) + 10), len(captured.out)
    # a module's forward runs three times per case: eval, train, eval after a training step
    # (once on a float32 case, which lesson 04's module checker runs in eval mode only)
    calls = [3 if isinstance(checker, ModuleChecker) and not _float32_case(c) else 1
             for c in checker.cases]
    assert [line for line in out if line.startswith("  your code printed")] == \
        [f"  your code printed {601 * n} lines, first 3 shown:" for n in calls], out
    assert all(len(line) <= 124 for line in out)


def _leaky(f, args):
    out = f(*args)
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(5)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    torch.set_printoptions(precision=9)
    np.set_printoptions(precision=2)
    torch.sigmoid = lambda t: t * 0  # the next case's reference must not run under this
    torch.Tensor.softmax = lambda self, dim: self * 0
    F.conv1d = None
    return out


@pytest.mark.parametrize("name", ENGINE_SAMPLE)
def test_global_state_is_restored_and_reported(name, capsys):
    checker = ALL[name]
    before = (torch.get_default_dtype(), torch.get_rng_state(), random.getstate(),
              np.random.get_state()[1].copy(), torch.are_deterministic_algorithms_enabled(),
              torch.get_num_threads(), torch._tensor_str.PRINT_OPTS.precision,
              np.get_printoptions()["precision"], torch.sigmoid, torch.Tensor.softmax, F.conv1d)
    result = checker(learner(checker, _leaky))
    out = lines(capsys)
    after = (torch.get_default_dtype(), torch.get_rng_state(), random.getstate(),
             np.random.get_state()[1].copy(), torch.are_deterministic_algorithms_enabled(),
             torch.get_num_threads(), torch._tensor_str.PRINT_OPTS.precision,
             np.get_printoptions()["precision"], torch.sigmoid, torch.Tensor.softmax, F.conv1d)
    for b, a in zip(before, after):
        assert (torch.equal(a, b) if isinstance(a, torch.Tensor) else
                np.array_equal(a, b) if isinstance(a, np.ndarray) else a is b or a == b)
    assert result.passed, out  # the references of the later cases ran unharmed
    note = [line for line in out if line.startswith("note: your code changed")]
    assert len(note) == 1
    for what in ("default dtype", "torch RNG", "Python RNG", "numpy RNG",
                 "deterministic algorithms", "torch print options", "numpy print options",
                 "torch.sigmoid replaced", "torch.Tensor.softmax replaced",
                 "torch.nn.functional.conv1d replaced"):
        assert what in note[0], (what, note)
    assert "thread count" in note[0]  # the checker runs at 1 thread; the learner set 1, then 2



def test_result_is_displayed_once():
    result = CHECKERS["check_global_avg_pool"](lambda x: x.mean(dim=(2, 3)), verbose=False)
    assert not result.printed
    from io import StringIO
    from contextlib import redirect_stdout

    buf = StringIO()
    with redirect_stdout(buf):
        result._ipython_display_()  # not printed yet: shown by the display hook
        printed = CHECKERS["check_global_avg_pool"](lambda x: x.mean(dim=(2, 3)))
        mark = buf.tell()
        printed._ipython_display_()  # printed by the call: the display hook adds nothing
    assert buf.getvalue().count("all checks passed") == 2 and buf.tell() == mark


def test_integer_answers_show_returned_and_expected(capsys):
    checker = CHECKERS["check_kernel_size"]
    checker(lambda c, gamma=2, b=1: 3)
    out = capsys.readouterr().out
    assert "✗ C = 150: returned 3, expected 5" in out


def test_guarded_never_raises_on_base_exceptions():
    class Weird(BaseException):
        pass

    def f():
        raise Weird("odd")

    outcome = guarded(f)
    assert outcome.kind == "raised" and isinstance(outcome.error, Weird)


# ------------------------------------------------------------------------ toy checkers
def mean_pool(x):
    return reduce(x, "b c h w -> b c", "mean")


def test_wrong_kind_of_answer(capsys):
    checker = CHECKERS["check_global_avg_pool"]
    assert not checker(42).passed
    assert "expected a function, got 42 (an int)" in capsys.readouterr().out


def test_cases_are_deterministic_and_cover_odd_batch1():
    a = [c.inputs()[0] for c in feature_map_cases()]
    b = [c.inputs()[0] for c in feature_map_cases()]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    shapes = [tuple(x.shape) for x in a]
    assert any(s[0] == 1 for s in shapes) and any(s[2] != s[3] for s in shapes)
    assert any(s[2] % 2 == 1 for s in shapes)
    for t, h, w in (c.inputs() for c in token_cases()):
        assert t.shape[1] == h * w


def test_a_reference_that_fails_is_a_course_bug():
    chk = Checker("bad", lambda x: 1 / 0, feature_map_cases())
    with pytest.raises(RuntimeError, match="reference failed"):
        chk(mean_pool, verbose=False)


def test_the_registry_has_no_import_cycle():
    """_core holds the registry; a lesson file imports only _core and _cases."""
    import subprocess

    code = "import attn_tutorial.checks.lesson01 as m; print(m.__all__[0])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "check_kernel_size", done.stderr


def test_the_readme_quotes_diagnoses_the_checkers_give():
    import re

    from attn_tutorial.course import ROOT

    text = (ROOT / "README.md").read_text()
    section = " ".join(
        text[text.index("## Exercises and checkers"):text.index("## Running the tests")].split())
    quotes = re.findall(r'\("([^"]+)", "([^"]+)"\)', section)
    assert quotes, "the README quotes no diagnosis"
    names = [m.name for c in CHECKERS.values() for m in c.mistakes]
    for quote in quotes[0]:
        assert any(quote in n for n in names), quote


def test_in_a_jupyter_kernel_the_time_limit_and_the_single_verdict_hold():
    """In a real kernel (where the learner's code runs): an endless loop and a long sleep are
    stopped, sys.exit does not kill the kernel, and the verdict is shown once (no repr after it)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import sys, time\nfrom attn_tutorial.checks import check_global_avg_pool as chk\n"
            "chk.time_limit = 0.5"),
        nbformat.v4.new_code_cell("def f(x):\n    while True:\n        pass\nchk(f)"),
        nbformat.v4.new_code_cell("def f(x):\n    time.sleep(30)\nchk(f)"),
        nbformat.v4.new_code_cell("def f(x):\n    sys.exit()\nchk(f)"),
        nbformat.v4.new_code_cell("chk(lambda x: x.mean(dim=(2, 3)))"),
    ]
    start = time.monotonic()
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    took = time.monotonic() - start
    texts = []
    for cell in nb.cells[1:]:
        assert all(o.output_type == "stream" for o in cell.outputs), cell.outputs
        texts.append("".join(o.text for o in cell.outputs))
    assert "still running after 0.5 s: stopped" in texts[0]
    assert "still running after 0.5 s: stopped" in texts[1]
    assert "called sys.exit()" in texts[2]
    assert texts[3].count("all checks passed") == 1
    assert took < 30, took


def test_a_hidden_case_shows_neither_its_inputs_nor_its_answer(capsys):
    """A predict exercise passed by copying the printed answers fails on its hidden cases, and a
    catalogued mistake is still named over them."""
    from attn_tutorial.checks import hidden_cases

    def squares(n):
        return n * n

    cases = [Case("n = 3", lambda g: (3,)), Case("n = 4", lambda g: (4,))]
    cases += hidden_cases("hidden case", lambda rng: (rng.randint(1000, 9999),), 3, seed=7)
    drawn = [c.inputs()[0] for c in cases[2:]]
    checker = Checker("squares_demo", squares, cases, [Mistake("the cube", lambda n: n ** 3)],
                      exercise="squares", tier="predict")
    copied = {3: 9, 4: 16}
    result = checker(lambda n: copied.get(n, 0))
    out = capsys.readouterr().out
    assert not result.passed and result.checks_passed == 2
    assert out.count("✗ hidden case") == 3 and "inputs and answer are not shown" in out
    assert not any(str(v) in out or str(v * v) in out for v in drawn), out
    cube = checker(lambda n: n ** 3)
    out = capsys.readouterr().out
    assert not cube.passed and "the cube" in out
    assert not any(str(v) in out or str(v ** 3) in out for v in drawn), out
    assert checker(squares).passed


def test_an_answer_that_uses_the_courses_own_implementation_is_refused(capsys):
    """Subclassing the library's module, importing it inside the answer, or reaching it through a
    helper of one's own: refused in one line, before anything runs. Torch and einops are fine."""
    from attn_tutorial import eca as library
    from attn_tutorial.eca import ECA

    class MyECA(ECA):
        pass

    def inside(channels, gamma=2, b=1):
        from attn_tutorial.eca import eca_kernel_size
        return eca_kernel_size(channels, gamma, b)

    def helper(channels):
        return library.eca_kernel_size(channels)

    def through_a_helper(channels, gamma=2, b=1):
        return helper(channels)

    for answer, checker, named in ((MyECA, CHECKERS["check_eca_module"], "attn_tutorial.eca.ECA"),
                                   (inside, CHECKERS["check_kernel_size"], "attn_tutorial.eca"),
                                   (through_a_helper, CHECKERS["check_kernel_size"],
                                    "attn_tutorial.eca")):
        result = checker(answer)
        out = lines(capsys)
        assert not result.passed and result.checks_passed == 0 and len(out) == 1, out
        assert f"uses the course's own {named}" in out[0] and "write it yourself" in out[0]
    allowed = copy.copy(CHECKERS["check_kernel_size"])
    allowed.library_allowed = True
    assert allowed(inside, verbose=False).passed


def test_a_name_the_exercise_forbids_is_refused_as_a_keyword_or_an_attribute(capsys):
    """An exercise that asks for a dilated conv by hand: `dilation=` in a call, or the name read
    in a helper of the learner's own, is refused in one line; other keywords are fine."""
    import torch.nn.functional as F

    def reference(x, w):
        return F.conv2d(x, w)

    checker = Checker("by_hand_demo", reference,
                      [Case("x", lambda g: (torch.randn(1, 1, 5, 5, generator=g, dtype=torch.float64),
                                            torch.randn(1, 1, 3, 3, generator=g, dtype=torch.float64)))],
                      exercise="by_hand", forbidden=("dilation",))

    def keyword(x, w):
        return F.conv2d(x, w, padding=0, dilation=1)

    def conv(x, w, d):
        return F.conv2d(x, w, dilation=d)

    def through_a_helper(x, w):
        return conv(x, w, 1)

    def fine(x, w):
        return F.conv2d(x, w, padding=0, stride=1)

    for answer in (keyword, through_a_helper):
        result = checker(answer)
        out = lines(capsys)
        assert not result.passed and len(out) == 1 and "uses `dilation`" in out[0], out
    assert checker(fine, verbose=False).passed

