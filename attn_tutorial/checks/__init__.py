"""Exercise checkers: ``from attn_tutorial.checks import check_xxx``.

Each lesson's checkers live in their own file (``lesson00.py``, ``lesson01.py``, …) and are
re-exported here. ``catalogue()`` lists every exercise (lesson, notebook, the learner's name for
it, checker, tier, kind, named mistakes). The engine, one job per file:

- ``_core.py``: the registry ``CHECKERS``, cases, the function checker (its docstring says how to
  write a checker for a new lesson);
- ``_modules.py``: the module checker (parameter inventory, eval, train, a training step);
- ``_isolation.py``: running learner code (time limit, captured output, global state restored);
- ``_compare.py``: comparing values, gradients and buffers, tolerance by dtype;
- ``_mistakes.py``: recognising catalogued mistakes; ``_report.py``: the lines and the result.
"""

from attn_tutorial.checks._core import CHECKERS, TIERS, Case, Checker, hidden_cases, register
from attn_tutorial.checks._compare import TOLERANCE
from attn_tutorial.checks._isolation import TIME_LIMIT
from attn_tutorial.checks._mistakes import Mistake
from attn_tutorial.checks._modules import ModuleChecker
from attn_tutorial.checks._report import NOT_IMPLEMENTED, STATUSES, CheckResult
from attn_tutorial.checks._catalogue import ExerciseRow, catalogue
from attn_tutorial.checks._cases import feature_map_cases, map_case, token_cases
from attn_tutorial.checks.lesson00 import *  # noqa: F401,F403
from attn_tutorial.checks.lesson01 import *  # noqa: F401,F403
from attn_tutorial.checks.lesson02 import *  # noqa: F401,F403
from attn_tutorial.checks.lesson03 import *  # noqa: F401,F403
from attn_tutorial.checks.lesson04 import *  # noqa: F401,F403
from attn_tutorial.checks.lesson05 import *  # noqa: F401,F403
from attn_tutorial.checks.lesson06 import *  # noqa: F401,F403
from attn_tutorial.checks.lesson07 import *  # noqa: F401,F403
from attn_tutorial.checks.lesson09 import *  # noqa: F401,F403
from attn_tutorial.checks import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06, lesson07
from attn_tutorial.checks import lesson09

_LESSONS = (lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06, lesson07,
            lesson09)

__all__ = [
    "CHECKERS", "NOT_IMPLEMENTED", "STATUSES", "TIERS", "TIME_LIMIT", "TOLERANCE", "Case",
    "Checker", "CheckResult", "ExerciseRow", "Mistake", "ModuleChecker", "catalogue", "register",
    "feature_map_cases", "hidden_cases", "map_case", "token_cases",
    *(name for lesson in _LESSONS for name in lesson.__all__),
]
