"""Exercise checkers: ``from attn_tutorial.checks import check_xxx``.

Each lesson's checkers live in their own file (``lesson00.py``, ``lesson01.py``, …) and are
re-exported here. ``catalogue()`` lists every exercise (lesson, notebook, the learner's name for
it, checker, tier, kind, named mistakes). ``_core.py`` is the engine they share and holds the registry ``CHECKERS``; its
docstring says how to write a checker for a new lesson.
"""

from attn_tutorial.checks._core import (
    CHECKERS,
    NOT_IMPLEMENTED,
    TIME_LIMIT,
    STATUSES,
    TIERS,
    Case,
    Checker,
    CheckResult,
    Mistake,
    ModuleChecker,
    register,
)
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
from attn_tutorial.checks import lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06, lesson07

_LESSONS = (lesson00, lesson01, lesson02, lesson03, lesson04, lesson05, lesson06, lesson07)

__all__ = [
    "CHECKERS", "NOT_IMPLEMENTED", "STATUSES", "TIERS", "ExerciseRow", "catalogue", "TIME_LIMIT", "Case", "Checker", "CheckResult", "Mistake",
    "ModuleChecker", "register", "feature_map_cases", "map_case", "token_cases",
    *(name for lesson in _LESSONS for name in lesson.__all__),
]
