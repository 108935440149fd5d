"""Exercise checkers: ``from attn_tutorial.checks import check_xxx``.

Each lesson's checkers live in their own file (``lesson00.py``, ``lesson01.py``, …) and are
re-exported here. ``_core.py`` is the framework they share; see its docstring.
"""

from attn_tutorial.checks._core import (
    NOT_IMPLEMENTED,
    Case,
    Checker,
    CheckResult,
    Mistake,
    module_preparer,
)
from attn_tutorial.checks._cases import feature_map_cases, token_cases

CHECKERS: dict[str, Checker] = {}


def register(checker: Checker, name: str) -> Checker:
    """Record a lesson's checker under its public name (the tests iterate over all of them)."""
    CHECKERS[name] = checker
    return checker


__all__ = [
    "NOT_IMPLEMENTED", "Case", "Checker", "CheckResult", "Mistake", "module_preparer",
    "feature_map_cases", "token_cases", "CHECKERS", "register",
]
from attn_tutorial.checks.lesson00 import *  # noqa
from attn_tutorial.checks.lesson01 import *  # noqa
