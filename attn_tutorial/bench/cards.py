"""Result cards: the JSON schema, validation, reading and writing, and the derived fields.

A card is one group of the matrix measured on one machine (``schema``, ``group``, ``title``,
``mode``, ``created``, ``provenance``, ``machine``, ``protocol``, ``rows``, ``fits``,
``skipped``). :func:`validate_card` raises :class:`CardError` naming the first missing or
ill-typed field. Derived fields are computed here from the rows: the ratio of each row to its
baseline in the same setting (:func:`add_ratios`, where the interleaved measurement did not
already give the median of paired ratios) and the log-log slopes of the scaling series
(:func:`fit_series`, warm-L2 rows only, one point per N).

Schema 3 (this version) adds, per row, ``interleave_set``, ``blocks``, ``matmul_roof``,
``ratio_p20``/``ratio_p80``, and per card the provenance fields ``load_average_end``, ``run_id``,
``seconds`` and ``fp32_precision``; ``float32_matmul_precision`` may be null (torch raises when
it is read after the new TF32 API was used).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from attn_tutorial.bench.machine import ROOFS
from attn_tutorial.bench.matrix import GROUPS
from attn_tutorial.bench.timing import PASSES

__all__ = ["SCHEMA", "CARDS_DIR", "CardError", "validate_card", "load_cards", "write_card",
           "card_filename", "fit_slope", "fit_series", "add_ratios", "STATUSES", "MIN_FIT_POINTS",
           "replace_cards"]

SCHEMA = "attn_tutorial.bench-card/3"
CARDS_DIR = Path(__file__).resolve().parent.parent / "cards"
STATUSES = ("ok", "oom", "error", "skipped")
_DTYPE_NAMES = ("float32", "bfloat16")
MIN_FIT_POINTS = 4  # fewer points give a line through them, not a fit worth quoting


def fit_slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of log y against log x (None with fewer than two usable points)."""
    if len(xs) != len(ys):
        raise ValueError(f"xs and ys must have the same length, got {len(xs)} and {len(ys)}")
    pts = [(math.log(a), math.log(b)) for a, b in zip(xs, ys) if a and b and a > 0 and b > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    return sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx


def series_points(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The measured warm-L2 forward rows of one scaling series, sorted by N = H·W.

    Cold-L2 rows (CUDA) share an N with their warm row; they are a separate condition and are
    left out, so each N appears once.
    """
    pts = [r for r in rows if r["series"] == name and r["status"] == "ok" and r["l2"] == "warm"]
    pts.sort(key=lambda r: r["shape"]["H"] * r["shape"]["W"])
    return pts


def fit_series(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Log-log slopes of time, peak memory and FLOPs against N for every series in ``rows``.

    ``slope_upper_half`` uses the larger half of the N values; ``points_upper_half`` says how
    many points that is. A slope through fewer than :data:`MIN_FIT_POINTS` points is None: with
    two or three points one noisy timing sets the slope.
    """
    fits = []
    for name in sorted({r["series"] for r in rows if r["series"]}):
        pts = series_points(rows, name)
        xs = [r["shape"]["H"] * r["shape"]["W"] for r in pts]
        tail = len(xs) // 2
        for quantity in ("median_s", "peak_bytes", "flops"):
            ys = [r[quantity] for r in pts]
            fits.append({"series": name, "x": "N", "y": quantity, "points": len(xs),
                         "slope": fit_slope(xs, ys) if len(xs) >= MIN_FIT_POINTS else None,
                         "points_upper_half": len(xs) - tail,
                         "slope_upper_half": fit_slope(xs[tail:], ys[tail:])
                         if len(xs) - tail >= MIN_FIT_POINTS else None})
    return fits


def add_ratios(records: list[dict[str, Any]]) -> None:
    """Set ``ratio_to_baseline`` = median / the baseline's median in the same setting.

    Rows that already hold a paired ratio (their baseline was timed in the same interleaved
    set, see :mod:`attn_tutorial.bench.measure`) keep it.
    """
    def key(r: dict[str, Any]) -> tuple:
        s = r["shape"]
        return (s["B"], s["C"], s["H"], s["W"], r["dtype"], r["pass"], r["l2"])

    base = {(key(r), r["name"]): r for r in records}
    for r in records:
        b = base.get((key(r), r["baseline"]))
        if r.get("ratio_p20") is not None:
            continue
        if b and r["status"] == "ok" and b["status"] == "ok":
            r["ratio_to_baseline"] = r["median_s"] / b["median_s"]


def card_filename(card: dict[str, Any]) -> str:
    prov = card["provenance"]
    if prov["device_type"] == "cpu":
        slug = "cpu"
    else:
        slug = "".join(c if c.isalnum() else "-" for c in prov["device"].lower()).strip("-")
        while "--" in slug:
            slug = slug.replace("--", "-")
    return f"{slug}-{card['mode']}-{card['group']}.json"


def write_card(card: dict[str, Any], out: str | Path) -> Path:
    """Validate ``card`` and write it as ``out/<device>-<mode>-<group>.json``."""
    validate_card(card)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / card_filename(card)
    path.write_text(json.dumps(card, indent=1) + "\n")
    return path


def replace_cards(card: dict[str, Any], out: str | Path) -> list[Path]:
    """Remove the cards in ``out`` that ``card`` replaces: same group, mode and device type.

    Recording into the package keeps one card per group, mode and device type, so what the
    lesson renders is never a mix of an old and a new run. Returns the removed paths.
    """
    mine = card_filename(card)
    removed = []
    for path in sorted(Path(out).glob("*.json")):
        if path.name == mine:
            continue
        try:
            other = json.loads(path.read_text())
            same = (other["group"], other["mode"], other["provenance"]["device_type"]) == (
                card["group"], card["mode"], card["provenance"]["device_type"])
        except (ValueError, KeyError, TypeError):
            continue  # not a card of this schema: left alone
        if same:
            path.unlink()
            removed.append(path)
    return removed


def load_cards(directory: str | Path | None = None) -> list[dict[str, Any]]:
    """Every valid card in ``directory`` (default: the package's ``cards/``), sorted by file.

    A missing folder, an unreadable file or an invalid card raises ``CardError`` naming it.
    """
    directory = Path(directory) if directory is not None else CARDS_DIR
    if not directory.is_dir():
        raise CardError(f"directory={str(directory)!r} is not a folder of cards")
    cards = []
    for path in sorted(directory.glob("*.json")):
        try:
            card = json.loads(path.read_text())
            validate_card(card)
        except (OSError, ValueError) as err:  # JSONDecodeError and CardError are ValueErrors
            raise CardError(f"{path.name}: {err}") from None
        card["_file"] = path.name
        cards.append(card)
    return cards


class CardError(ValueError):
    """A card does not follow the schema."""


_NUM = (int, float)
_CARD_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema": ((str,), False), "group": ((str,), False), "title": ((str,), False),
    "mode": ((str,), False), "created": ((str,), False), "provenance": ((dict,), False),
    "machine": ((dict,), False), "protocol": ((dict,), False), "rows": ((list,), False),
    "fits": ((list,), False), "skipped": ((list,), False),
}
_PROVENANCE_FIELDS = {
    "device": ((str,), False), "device_type": ((str,), False), "sm_count": ((int,), True),
    "l2_bytes": ((int,), True), "gpu_memory_bytes": ((int,), True), "driver": ((str,), True),
    "torch": ((str,), False), "cuda": ((str,), True), "cudnn": ((int,), True),
    "python": ((str,), False), "platform": ((str,), False), "cpu": ((str,), False),
    "cpu_capability": ((str,), False), "threads": ((int,), False),
    "load_average": (_NUM, True), "load_average_end": (_NUM, True), "run_id": ((str,), True),
    "seconds": (_NUM, True),
    "tf32_matmul": ((bool,), True), "tf32_cudnn": ((bool,), True),
    "float32_matmul_precision": ((str,), True), "fp32_precision": ((dict,), True),
    "memory_format": ((str,), False),
    "module_mode": ((str,), False),
}
_MACHINE_FIELDS = {
    "copy_gbps": (_NUM, False), "copy_bytes": ((int,), False), "matmul_tflops": ((dict,), False),
    "matmul_n": ((int,), False),
}
_ROW_FIELDS = {
    "name": ((str,), False), "mechanism": ((str,), False), "impl": ((str,), False),
    "series": ((str,), True), "baseline": ((str,), True), "dtype": ((str,), False),
    "memory_format": ((str,), False), "compile": ((str,), False), "sdpa_backend": ((str,), True),
    "shape": ((dict,), False), "hyper": ((dict,), False), "pass": ((str,), False),
    "l2": ((str,), False), "status": ((str,), False), "error": ((str,), True),
    "interleave_set": ((str,), True), "blocks": ((int,), True), "reps": ((int,), True),
    "median_s": (_NUM, True), "p20_s": (_NUM, True),
    "p80_s": (_NUM, True), "iqr_s": (_NUM, True), "peak_bytes": ((int,), True),
    "peak_method": ((str,), False), "params": ((int,), False), "flops": ((int,), False),
    "min_bytes": ((int,), False), "achieved_tflops": (_NUM, True),
    "achieved_gbps": (_NUM, True), "share_copy_bw": (_NUM, True),
    "matmul_roof": ((str,), True), "share_matmul": (_NUM, True),
    "ratio_to_baseline": (_NUM, True), "ratio_p20": (_NUM, True), "ratio_p80": (_NUM, True),
    "max_abs_err": (_NUM, True),
    "reference_note": ((str,), True),
}
_MEASURED = ("reps", "median_s", "p20_s", "p80_s", "iqr_s", "achieved_tflops", "achieved_gbps",
             "share_copy_bw")
_FIT_FIELDS = {
    "series": ((str,), False), "x": ((str,), False), "y": ((str,), False),
    "points": ((int,), False), "slope": (_NUM, True), "points_upper_half": ((int,), False),
    "slope_upper_half": (_NUM, True),
}
_ENUMS = {"mode": ("quick", "full"), "device_type": ("cpu", "cuda"),
          "pass": PASSES, "l2": ("warm", "cold"), "status": STATUSES,
          "dtype": _DTYPE_NAMES, "group": GROUPS, "matmul_roof": ROOFS}


def _check_fields(obj: Any, spec: dict[str, tuple[tuple[type, ...], bool]], where: str) -> None:
    if not isinstance(obj, dict):
        raise CardError(f"{where} must be an object, got {type(obj).__name__}")
    for name, (types, nullable) in spec.items():
        if name not in obj:
            raise CardError(f"{where} is missing the field {name!r}")
        value = obj[name]
        if value is None:
            if not nullable:
                raise CardError(f"{where}.{name} must not be null")
            continue
        # bool is an int in Python: accept it only where bool is the declared type
        if isinstance(value, bool) and bool not in types:
            raise CardError(f"{where}.{name}={value!r} must be {types}, not bool")
        if not isinstance(value, types):
            raise CardError(f"{where}.{name}={value!r} has type {type(value).__name__}, "
                            f"expected {' or '.join(t.__name__ for t in types)}")
        if name in _ENUMS and value not in _ENUMS[name]:
            raise CardError(f"{where}.{name}={value!r} must be one of {_ENUMS[name]}")


def validate_card(card: dict[str, Any]) -> None:
    """Raise :class:`CardError` (a ``ValueError``) naming the first missing or ill-typed field."""
    if not isinstance(card, dict):
        raise CardError(f"card must be a dict (a card read from JSON), got {type(card).__name__}")
    _check_fields(card, _CARD_FIELDS, "card")
    if card["schema"] != SCHEMA:
        raise CardError(f"card.schema={card['schema']!r} must be {SCHEMA!r}")
    _check_fields(card["provenance"], _PROVENANCE_FIELDS, "card.provenance")
    _check_fields(card["machine"], _MACHINE_FIELDS, "card.machine")
    for k, v in card["machine"]["matmul_tflops"].items():
        if k not in ROOFS or isinstance(v, bool) or not isinstance(v, _NUM) or v <= 0:
            raise CardError(f"card.machine.matmul_tflops[{k!r}]={v!r} must be a positive number "
                            f"for a roof in {ROOFS}")
    cpu = card["provenance"]["device_type"] == "cpu"
    if cpu:
        for name in ("sm_count", "l2_bytes", "driver", "cuda", "cudnn", "tf32_matmul"):
            if card["provenance"][name] is not None:
                raise CardError(f"card.provenance.{name} must be null on a CPU card")
    if not card["rows"]:
        raise CardError("card.rows must not be empty")
    for i, row in enumerate(card["rows"]):
        where = f"card.rows[{i}]"
        _check_fields(row, _ROW_FIELDS, where)
        for dim in ("B", "C", "H", "W"):
            v = row["shape"].get(dim)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CardError(f"{where}.shape[{dim!r}]={v!r} must be a positive integer")
        if row["status"] == "ok":
            for name in _MEASURED:
                if row[name] is None:
                    raise CardError(f"{where}.{name} must be set when status is 'ok'")
            if not row["p20_s"] <= row["median_s"] <= row["p80_s"]:
                raise CardError(f"{where}: p20 <= median <= p80 does not hold")
            lo, mid, hi = row["ratio_p20"], row["ratio_to_baseline"], row["ratio_p80"]
            if lo is not None and not (hi is not None and mid is not None and lo <= mid <= hi):
                raise CardError(f"{where}: ratio_p20 <= ratio_to_baseline <= ratio_p80 does "
                                "not hold")
            if row["max_abs_err"] is None and row["reference_note"] is None:
                raise CardError(f"{where}.max_abs_err is null: reference_note must say why")
        elif row["error"] is None:
            raise CardError(f"{where}.error must say why status is {row['status']!r}")
    for i, fit in enumerate(card["fits"]):
        _check_fields(fit, _FIT_FIELDS, f"card.fits[{i}]")


