"""Reporting: the lines a checker prints and the :class:`CheckResult` it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from attn_tutorial.checks._isolation import LINE_CHARS, UNDONE, Outcome

if TYPE_CHECKING:
    from attn_tutorial.checks._core import _CaseRun

OK, FAIL = "✓", "✗"
NOT_IMPLEMENTED = "not implemented yet"
STATUSES = ("passed", "failed", "not implemented", "error", "timeout")


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


def case_lines(result: CheckResult, runs: list["_CaseRun"], total: int, stopped: bool,
               changed: list[str]) -> None:
    """One line per case (or one for all when every case failed the same way), what the
    learner's code printed, the skipped cases and the global state put back."""
    say = result.lines.append
    failed = [r for r in runs if not r.ok]
    if len(runs) == total > 1 and len(failed) == len(runs) and len({r.reason for r in runs}) == 1:
        say(f"{FAIL} every case: {runs[0].reason}")
        printed(result, runs[0].outcome)
    else:
        for run in runs:
            say(f"{OK} {run.case.name}" if run.ok else f"{FAIL} {run.case.name}: {run.reason}")
            printed(result, run.outcome)
    if stopped and len(runs) < total:
        say(f"  (the other {total - len(runs)} cases were skipped)")
    undone = [c[: -len(UNDONE)] for c in changed if c.endswith(UNDONE)]
    restored = [c for c in changed if not c.endswith(UNDONE)]
    if restored:
        say("note: your code changed " + ", ".join(restored) + "; the checker put it back")
    if undone:
        say("note: your code " + "; ".join(undone) + ": the checker cannot undo this")


def printed(result: CheckResult, outcome: Outcome) -> None:
    kept, count = outcome.printed
    if not count:
        return
    more = f", first {len(kept)} shown" if count > len(kept) else ""
    result.lines.append(f"  your code printed {count} line{'s' * (count != 1)}{more}:")
    for line in kept:
        line = line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 3] + "..."
        result.lines.append(f"  | {line}")


def finish(result: CheckResult, verbose: bool) -> CheckResult:
    if verbose:
        print("\n".join(result.lines))
        result.printed = True
    return result
