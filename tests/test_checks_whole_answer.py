"""The engine judges the whole answer, proven over every registered checker: gradients of
function exercises; for module exercises the parameter inventory, train mode and buffers; the
tolerance of float64 cases; messages (types by name, one wording for in-place changes, the
learner's line in a module, verdicts titled with the learner's class)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attn_tutorial.checks import CHECKERS, ModuleChecker
from attn_tutorial.checks._compare import NoGradient, same
from attn_tutorial.checks._modules import EVAL_NORM, STILL_STATS

FUNCTIONS = sorted(n for n, c in CHECKERS.items() if not isinstance(c, ModuleChecker))
MODULES = sorted(n for n, c in CHECKERS.items() if isinstance(c, ModuleChecker))


def _float_output(checker) -> bool:
    out = checker.expected(checker.cases[0])
    return isinstance(out, torch.Tensor) and out.dtype == torch.float64


FLOAT_FUNCTIONS = [n for n in FUNCTIONS if _float_output(CHECKERS[n])]
_NORM = (nn.modules.batchnorm._BatchNorm,)


def _has_batch_norm(checker) -> bool:
    module = checker.reference(**checker.cases[0].build)
    return any(isinstance(m, _NORM) for m in module.modules())


NORM_MODULES = [n for n in MODULES if _has_batch_norm(CHECKERS[n])]


def _doubles(args):
    return [a.float() if isinstance(a, torch.Tensor) and a.dtype == torch.float64 else a
            for a in args]


def test_the_lists_are_not_empty():
    assert len(FLOAT_FUNCTIONS) >= 15 and len(MODULES) == 7 and len(NORM_MODULES) >= 3


# ------------------------------------------------------------------ function exercises
@pytest.mark.parametrize("name", FLOAT_FUNCTIONS)
def test_a_detached_solution_fails_on_gradients(name):
    checker = CHECKERS[name]
    result = checker.run(lambda *a: checker.solution(*a).detach(), verbose=False)
    assert not result.passed and result.status == "failed"
    failed = [line for line in result.lines if line.startswith("✗")]
    assert failed and all("no gradient reaches `" in line for line in failed), result.lines
    # only a case where no gradient reaches the reference's inputs either (at the float64
    # tolerance: one key, a saturated softmax) passes
    for case in checker.cases:
        if any(f"✓ {case.name}" == line for line in result.lines):
            grads = checker.gradients(checker.reference, case, case.inputs())
            assert all(isinstance(g, NoGradient) or same(g, NoGradient("x"))
                       for g in grads.values()), case.name


@pytest.mark.parametrize("name", FLOAT_FUNCTIONS)
def test_a_float32_inside_version_fails_and_says_so(name):
    checker = CHECKERS[name]
    result = checker.run(lambda *a: checker.solution(*_doubles(a)).double(), verbose=False)
    assert not result.passed
    assert "right only to float32 precision" in "\n".join(result.lines), result.lines


def test_float32_is_said_only_of_float32_numbers_and_a_near_miss_gets_its_own_size():
    """An answer that returns exact values (1.0 where 1 - 1e-8 is expected) did not compute in
    float32, and an ε of 1e-6 is off by its own relative error, not 'about 1e-7'."""
    from attn_tutorial.checks._compare import value_error

    expected = torch.tensor([1 - 1e-8, 0.25, 0.5], dtype=torch.float64)
    exact = torch.tensor([1.0, 0.25, 0.5], dtype=torch.float64)
    assert "float32 numbers" not in value_error(exact, expected)
    x = torch.rand(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    assert "its values are float32 numbers" in value_error(x.float().double(), x)
    relative = (x * (1 + 5e-5) - x).abs().max() / x.abs().max()  # the error, from its definition
    assert f"right only to about {relative.item():.0e} relative" in value_error(x * (1 + 5e-5), x)


@pytest.mark.parametrize("name", FLOAT_FUNCTIONS)
def test_an_in_place_change_of_an_input_has_one_wording(name):
    checker = CHECKERS[name]

    def in_place(*args):
        out = checker.solution(*args)
        args[0].add_(0)  # a no-op, but in place on the learner's input
        return out

    result = checker.run(in_place, verbose=False)
    assert not result.passed
    assert "changed its input in place; work on a copy or out of place" in result.lines[0]


def test_the_gradient_names_the_input_it_does_not_reach():
    from attn_tutorial.checks.lesson02 import ref_bam_fuse

    def bam_fuse(x, mc, ms):  # the channel map cut from the graph
        return ref_bam_fuse(x, mc.detach(), ms)

    result = CHECKERS["check_bam_fuse"].run(bam_fuse, verbose=False)
    assert not result.passed
    assert "no gradient reaches `mc`" in result.lines[0], result.lines
    assert "`ms`" not in result.lines[0]


def test_a_gradient_that_is_wrong_with_right_values_is_reported():
    class HalfGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.mean(dim=(2, 3))

        @staticmethod
        def backward(ctx, g):
            return 0.5 * g[:, :, None, None].expand(ctx.shape) / ctx.n

    def global_avg_pool(x):
        HalfGrad_ = HalfGrad
        out = x.mean(dim=(2, 3))
        return out + 0 * x.sum() * 0 if False else out.detach() + (x * 0.5).mean(dim=(2, 3)) \
            - (x * 0.5).mean(dim=(2, 3)).detach() + 0 * HalfGrad_.__name__.__len__()

    result = CHECKERS["check_global_avg_pool"].run(global_avg_pool, verbose=False)
    assert not result.passed
    assert "gradient w.r.t. `x`: wrong values" in result.lines[0], result.lines


# --------------------------------------------------------------------- types by name
def test_numpy_integer_and_list_vs_tuple_are_named():
    import math

    def kernel_size(channels, gamma=2, b=1):
        t = int(abs((math.log2(channels) + b) / gamma))
        return np.int64(t if t % 2 else t + 1)

    result = CHECKERS["check_kernel_size"].run(kernel_size, verbose=False)
    assert "returned numpy.int64" in result.lines[0] and "expected an int" in result.lines[0]
    assert "a int" not in "\n".join(result.lines)

    from attn_tutorial.checks.lesson06 import ref_rest_grids

    result = CHECKERS["check_rest_grids"].run(
        lambda H, W, sr_ratios=(8, 4, 2, 1): [[list(grid) for grid in stage]
                                              for stage in ref_rest_grids(H, W, sr_ratios)],
        verbose=False)
    assert "returned a list of 2, expected a tuple of 2 (use tuple(...))" in result.lines[0]

    from attn_tutorial.checks.lesson04 import ref_nearest_rows

    result = CHECKERS["check_nearest_rows"].run(
        lambda o, i: tuple(ref_nearest_rows(o, i)), verbose=False)
    assert "expected a list of" in result.lines[0] and "(use list(...))" in result.lines[0]


# --------------------------------------------------------------------- module exercises
def _first_parameter(module: nn.Module) -> tuple[nn.Module, str]:
    name = next(n for n, _ in module.named_parameters())
    *path, leaf = name.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    return owner, leaf


def _variant(checker, after_init=None, forward=None):
    solution, body = checker.solution, forward

    class MyModule(solution):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if after_init:
                after_init(self)

        def forward(self, *args):
            if body is None:
                return super().forward(*args)
            return body(self, super().forward, *args)

    return MyModule


@pytest.mark.parametrize("name", MODULES)
def test_a_parameter_turned_into_a_buffer_fails_with_its_own_message(name):
    checker = CHECKERS[name]

    def to_buffer(module):
        owner, leaf = _first_parameter(module)
        value = getattr(owner, leaf).data
        del owner._parameters[leaf]
        owner.register_buffer(leaf, value)

    result = checker.run(_variant(checker, to_buffer), verbose=False)
    assert not result.passed and result.status == "failed"
    assert "is a buffer, not an nn.Parameter" in result.lines[0], result.lines
    assert result.lines[-1].startswith("MyModule: 0/")


@pytest.mark.parametrize("name", MODULES)
def test_a_parameter_without_requires_grad_fails_with_its_own_message(name):
    checker = CHECKERS[name]

    def freeze(module):
        owner, leaf = _first_parameter(module)
        getattr(owner, leaf).requires_grad_(False)

    result = checker.run(_variant(checker, freeze), verbose=False)
    assert not result.passed
    assert "has requires_grad=False: it can never learn" in result.lines[0], result.lines


@pytest.mark.parametrize("name", MODULES)
def test_a_detached_module_output_fails_on_gradients(name):
    checker = CHECKERS[name]
    result = checker.run(_variant(checker, forward=lambda self, f, *args: f(*args).detach()),
                         verbose=False)
    assert not result.passed
    assert "no gradient reaches" in result.lines[0], result.lines


@pytest.mark.parametrize("name", MODULES)
def test_a_parameter_read_through_data_gets_no_gradient(name):
    """The learner's forward reads a parameter's .data: the values are right, no gradient
    reaches that parameter, and the message names it."""
    checker = CHECKERS[name]

    def forward(self, f, *args):
        owner, leaf = _first_parameter(self)
        p = owner._parameters.pop(leaf)
        setattr(owner, leaf, p.data)  # the forward sees a plain tensor
        try:
            return f(*args)
        finally:
            delattr(owner, leaf)
            owner._parameters[leaf] = p

    result = checker.run(_variant(checker, forward=forward), verbose=False)
    owner_name = next(n for n, _ in checker.solution(**checker.cases[0].build).named_parameters())
    assert not result.passed
    assert any(f"no gradient reaches `{owner_name}`" in line for line in result.lines), \
        result.lines


def _eval_form_norms(module: nn.Module) -> None:
    """Every BatchNorm computes its eval form, whatever the mode (a lesson's eval-only helper
    reused in forward)."""
    for bn in module.modules():
        if isinstance(bn, _NORM):
            bn.forward = lambda x, bn=bn: F.batch_norm(
                x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


@pytest.mark.parametrize("name", NORM_MODULES)
def test_an_eval_only_norm_in_forward_fails_with_its_own_message(name):
    checker = CHECKERS[name]
    result = checker.run(_variant(checker, _eval_form_norms), verbose=False)
    assert not result.passed
    assert result.diagnoses == [EVAL_NORM], result.lines
    assert "train (batch ≥ 2): output: wrong values" in "\n".join(result.lines)


@pytest.mark.parametrize("name", NORM_MODULES)
def test_running_statistics_never_updated_are_named(name):
    checker = CHECKERS[name]

    def frozen_stats(module):
        for bn in module.modules():
            if isinstance(bn, _NORM):
                bn.momentum = 0.0

    result = checker.run(_variant(checker, frozen_stats), verbose=False)
    assert not result.passed
    assert result.diagnoses == [STILL_STATS], result.lines
    assert "buffer `" in result.lines[0], result.lines


@pytest.mark.parametrize("name", NORM_MODULES)
def test_another_momentum_fails_on_the_buffers(name):
    checker = CHECKERS[name]

    def momentum(module):
        for bn in module.modules():
            if isinstance(bn, _NORM):
                bn.momentum = 0.01

    result = checker.run(_variant(checker, momentum), verbose=False)
    assert not result.passed and result.diagnoses == []
    assert ".running_mean` after the forward: wrong values" in result.lines[0], result.lines


@pytest.mark.parametrize("name", MODULES)
def test_a_module_error_names_the_learners_line(name):
    checker = CHECKERS[name]

    class MyModule(checker.solution):
        def forward(self, *args):
            y = super().forward(*args)
            return y @ torch.zeros(3, 5, 7)

    result = checker.run(MyModule, verbose=False)
    assert result.status == "error"
    assert result.error.endswith("(at line 3 of forward)"), result.error


@pytest.mark.parametrize("name", MODULES)
def test_an_in_place_change_of_a_module_input_has_the_same_wording(name):
    checker = CHECKERS[name]

    class MyModule(checker.solution):
        def forward(self, x, *rest):
            x.mul_(1.0)
            return super().forward(x, *rest)

    result = checker.run(MyModule, verbose=False)
    assert not result.passed
    assert "changed its input in place; work on a copy or out of place" in result.lines[0], \
        result.lines
    assert "leaf Variable" not in "\n".join(result.lines)


def test_several_fitting_mistakes_are_said_as_such():
    from attn_tutorial.checks._mistakes import verdict_suffix

    assert verdict_suffix(["a"]) == " — looks like 'a'"
    assert verdict_suffix(["a", "b"]).startswith(" — several known mistakes fit")
