"""Running the matrix: measure the machine, time the rows in priority order, write the cards.

``python -m attn_tutorial bench`` calls :func:`main`. Cards go to ``--out`` (default
``bench_out/``, a scratch folder that ``.gitignore`` lists); recording into the package's
``attn_tutorial/cards/`` is explicit (``--record``). The output folder is checked for writing
before anything is measured.

With a time budget (``budget_s``) the rows of all groups run in priority order (forward float32
eager first, then forward+backward, bf16, compiled; see ``MatrixRow.priority``); once the budget
is spent, the remaining rows are written with ``status: "skipped"``. Cards are rewritten after
each priority level, so a run stopped from outside still leaves the finished levels on disk.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from attn_tutorial._validate import require_number
from attn_tutorial.bench.cards import (CARDS_DIR, SCHEMA, add_ratios, card_filename, fit_series,
                                       replace_cards, write_card)
from attn_tutorial.bench.machine import load_average, measure_machine, provenance
from attn_tutorial.bench.matrix import GROUPS, TITLES, MatrixRow, build_rows
from attn_tutorial.bench.measure import empty_record, interleave_key, measure_set

__all__ = ["run", "run_group", "main", "check_writable", "DEFAULT_OUT"]

DEFAULT_OUT = Path("bench_out")


def check_writable(out: str | Path) -> Path:
    """Create ``out`` if needed and prove a file can be written there; ValueError otherwise."""
    out = Path(out)
    probe = out / ".write-test"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"out={str(out)!r} is not a writable folder ({type(err).__name__}: "
                         f"{err.strerror or err}); choose another --out") from None
    return out


def _progress(done: int, total: int, label: str, stream: Any) -> None:
    width = 28
    fill = int(width * done / max(total, 1))
    stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done:>3}/{total} {label[:48]:<48}")
    if done == total:
        stream.write("\n")
    stream.flush()


def _protocol(device: torch.device) -> dict[str, str]:
    cuda = device.type == "cuda"
    return {
        "timer": "cuda events, median over reps" if cuda
        else "torch.utils.benchmark.Timer.timeit, blocks of calls, median over blocks",
        "interleaving": "rows of one interleave_set are timed in turn, block by block "
                        "(one shape, dtype, pass and compile mode; the whole scaling sweep); "
                        "ratio_to_baseline is the median of per-round ratios where the "
                        "baseline is in the set",
        "blocks": ("20 reps (quick), 50 (full)" if cuda else
                   "15 blocks of about 3.3 ms (quick), 21 of about 14 ms (full); at least 7 "
                   "(quick) or 10 (full) on a loaded machine"),
        "warmup": "10 calls (5 in quick mode)" if cuda else "2 calls",
        "gradients": "forward+backward: inputs' and parameters' .grad set to None before each "
                     "call",
        "flops": "attn_tutorial.cost forward FLOPs; x3 for forward+backward",
        "min_bytes": "attn_tutorial.cost forward; dtype*(3*in + 2*out + 3*params) for "
                     "forward+backward",
        "max_abs_err": "first sample, against the same module and input in float64",
        "gamma": "PAM/CAM gamma set to 1",
    }


def _card(group: str, quick: bool, device: torch.device, prov: dict[str, Any],
          machine: dict[str, Any], records: list[dict[str, Any]],
          skipped: list[dict[str, str]]) -> dict[str, Any]:
    add_ratios(records)
    return {
        "schema": SCHEMA,
        "group": group,
        "title": TITLES[group],
        "mode": "quick" if quick else "full",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "provenance": prov,
        "machine": machine,
        "protocol": _protocol(device),
        "rows": records,
        "fits": fit_series(records),
        "skipped": list(skipped),
    }


class _Runner:
    """Measures interleaved sets of rows and assembles every group's card from what is done.

    Each card carries its own provenance: the run's, with the load average when the group's
    first set started (``load_average``) and after its last (``load_average_end``), the seconds
    its sets took and the ``run_id`` shared by the cards of one run.
    """

    def __init__(self, groups: Sequence[str], device: torch.device, quick: bool,
                 machine: dict[str, Any], budget_s: float | None, progress: bool) -> None:
        self.groups, self.device, self.quick = list(groups), device, quick
        self.machine, self.progress = machine, progress
        self.prov = provenance(device)
        self.prov["run_id"] = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.group_prov: dict[str, dict[str, Any]] = {}
        self.rows = {g: build_rows(g, quick) for g in self.groups}
        self.done: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.deadline = None if budget_s is None else time.monotonic() + budget_s
        self.budget_s = budget_s
        self.count = 0
        self.total = sum(len(r) for r in self.rows.values())

    def order(self) -> list[tuple[int, str, list[tuple[int, MatrixRow]]]]:
        """The interleaved sets (priority, group, [(index, row), ...]) in the order they run."""
        sets: dict[tuple, list[tuple[int, MatrixRow]]] = {}
        where: dict[tuple, tuple[int, int, int, str]] = {}
        for gi, g in enumerate(self.groups):
            for i, row in enumerate(self.rows[g]):
                key = interleave_key(row)
                sets.setdefault(key, []).append((i, row))
                where.setdefault(key, (row.priority, gi, i, g))
        keys = list(sets)
        if self.deadline is None:  # no budget: group by group, in the matrix's order
            keys.sort(key=lambda k: where[k][1:3])
        else:
            keys.sort(key=lambda k: where[k][:3])
        return [(where[k][0], where[k][3], sets[k]) for k in keys]

    def measure(self, group: str, members: list[tuple[int, MatrixRow]], name: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            for i, row in members:
                rec = empty_record(row, self.device.type)
                rec.update(status="skipped", error=f"time budget of {self.budget_s:g} s spent "
                                                   "before this row")
                self.done[(group, i)] = [rec]
        else:
            prov = self.group_prov.setdefault(group, {**self.prov, "load_average": load_average(),
                                                      "seconds": 0.0})
            start = time.monotonic()
            rows = [row for _, row in members]
            recs = measure_set(rows, self.device, self.machine, self.quick, "warm",
                               self.prov["l2_bytes"], self.prov, name)
            for (i, _), rec in zip(members, recs):
                self.done[(group, i)] = [rec]
            # Cold L2 (CUDA only): worth a row when the minimum working set fits in L2.
            l2 = self.prov["l2_bytes"]
            if self.device.type == "cuda" and l2:
                fits = [(i, row) for (i, row), rec in zip(members, recs)
                        if rec["status"] == "ok" and rec["min_bytes"] <= l2]
                if fits:
                    cold = measure_set([row for _, row in fits], self.device, self.machine,
                                       self.quick, "cold", l2, self.prov, f"{name} cold")
                    for (i, _), rec in zip(fits, cold):
                        self.done[(group, i)].append(rec)
            prov["seconds"] += time.monotonic() - start
            prov["load_average_end"] = load_average()
        self.count += len(members)
        if self.progress:
            row = members[0][1]
            _progress(self.count, self.total, f"{group}: {row.dtype} {row.pass_} "
                      f"({len(members)} rows)", sys.stderr)

    def card(self, group: str) -> dict[str, Any]:
        records: list[dict[str, Any]] = []
        for i, row in enumerate(self.rows[group]):
            if (group, i) in self.done:
                records += self.done[(group, i)]
            else:
                rec = empty_record(row, self.device.type)
                rec.update(status="skipped", error="not reached yet (the run was stopped)")
                records.append(rec)
        skipped = []
        if self.quick:
            skipped.append({"what": "torch.compile and bfloat16 rows",
                            "reason": "quick mode runs eager float32 only"})
        for prefix, reason in (("time budget", "time budget spent"),
                               ("not reached", "not reached yet: the run was stopped")):
            n = sum(r["status"] == "skipped" and r["error"].startswith(prefix) for r in records)
            if n:
                skipped.append({"what": f"{n} rows", "reason": reason})
        prov = dict(self.group_prov.get(group, self.prov))
        if prov["seconds"] is not None:
            prov["seconds"] = round(prov["seconds"], 2)
        return _card(group, self.quick, self.device, prov, self.machine, records, skipped)


def run_group(group: str, device: torch.device | str = "cpu", quick: bool = True,
              machine: dict[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Measure one group and return its card (not written)."""
    return run([group], device, quick, out=None, progress=progress, machine=machine)[0]


def run(groups: Iterable[str] | None = None, device: str | torch.device | None = None,
        quick: bool = False, out: str | Path | None = None, progress: bool = False,
        budget_s: float | None = None,
        machine: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run the matrix (all groups, or ``groups``); write one card per group into ``out``.

    ``out=None`` writes nothing. ``budget_s``: stop starting rows after this many seconds
    (the machine measurement included) and record the rest as skipped.
    """
    if isinstance(groups, str):
        raise ValueError(f"groups={groups!r} must be a list of group names, e.g. [{groups!r}]")
    groups = list(groups) if groups else list(GROUPS)
    for g in groups:
        if g not in GROUPS:
            raise ValueError(f"group {g!r} is not one of {GROUPS}")
    if not isinstance(quick, bool):
        raise ValueError(f"quick={quick!r} must be True or False")
    if budget_s is not None:
        require_number("budget_s", budget_s, positive=True)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} must be 'cpu' or 'cuda'") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={str(device)!r} must be 'cpu' or 'cuda'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch.cuda.is_available() is False")
    if out is not None:
        out = check_writable(out)  # before any measuring
    start = time.monotonic()
    machine = machine or measure_machine(device, quick)
    runner = _Runner(groups, device, quick, machine, budget_s, progress)
    if budget_s is not None:  # the budget counts from the start, the roofs included
        runner.deadline = start + budget_s
    level = None
    for k, (priority, group, members) in enumerate(runner.order()):
        if out is not None and budget_s is not None and level is not None and priority != level:
            for g in groups:  # a priority level is finished: put it on disk
                write_card(runner.card(g), out)
        level = priority
        runner.measure(group, members, f"{group}:{k}")
    cards = [runner.card(g) for g in groups]
    if out is not None:
        for card in cards:
            write_card(card, out)
    return cards


def main(groups: Sequence[str] | None = None, device: str | None = None, quick: bool = False,
         out: str | Path | None = None, record: bool = False,
         budget_s: float | None = None) -> int:
    """Entry point of ``python -m attn_tutorial bench`` (arguments already parsed)."""
    if record and out is not None:
        raise ValueError("give either --record (write into attn_tutorial/cards/) or --out, "
                         "not both")
    where = CARDS_DIR if record else Path(out) if out is not None else DEFAULT_OUT
    start = time.perf_counter()
    cards = run(groups, device, quick, where, progress=True, budget_s=budget_s)
    if record:  # one card per group, mode and device type in the package
        for card in cards:
            for path in replace_cards(card, where):
                print(f"replaced {path.name}", file=sys.stderr)
    rows = sum(len(c["rows"]) for c in cards)
    bad = sum(r["status"] != "ok" for c in cards for r in c["rows"])
    print(f"{len(cards)} cards, {rows} rows ({bad} not ok) written to {where} "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    for c in cards:
        print(card_filename(c))
    return 0
