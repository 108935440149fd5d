"""Root pytest configuration: the whole course is one test suite.

Plain ``pytest`` — from the repository root or any folder inside it — runs the library tests in
``tests/`` and strict nbval over the executed lessons in ``notebooks/`` and the worked solutions in
``solutions/``: every checked output must match what is committed. Kernels run in this very
environment (``--nbval-current-env``), and ``nbval_sanitize.cfg`` blanks the few pieces of text
that truly depend on the machine (timings, memory addresses, device names).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
TEST_PATHS = ["tests", "notebooks", "solutions"]


def pytest_configure(config: pytest.Config) -> None:
    opt = config.option
    if not opt.nbval_lax:
        opt.nbval = True  # strict: compare outputs, not only "runs without error"
    opt.nbval_current_env = True
    if not opt.nbval_sanitize_with:
        opt.nbval_sanitize_with = str(ROOT / "nbval_sanitize.cfg")
    # `pytest` with no paths, started anywhere inside the course, runs the whole suite.
    if config.args_source == pytest.Config.ArgsSource.INVOCATION_DIR:
        config.args = [str(ROOT / p) for p in TEST_PATHS]


collect_ignore_glob = ["exercises/*", ".venv/*", "build/*"]
