"""Rendering cards: the tables, notes, crossover, roofline and scaling plots of lesson 08.

Every cell of lesson 08 that shows a card calls a function of this module, so the same code is
tested on synthetic GPU-shaped cards (warm and cold L2 rows, TF32 rows, OOM and skipped rows,
missing sizes, bf16 and compiled rows, two devices) without a GPU.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

from attn_tutorial._validate import require_choice, require_int
from attn_tutorial.bench.cards import MIN_FIT_POINTS, series_points
from attn_tutorial.bench.matrix import GROUPS

__all__ = ["pick", "format_card", "card_notes", "roof_excess", "roof_violations", "crossover",
           "load_note", "roofline_points", "machines", "plot_roofline", "plot_scaling",
           "slope_table", "rows_where", "COLOURS"]

_DEVICE_TYPES = {"cpu": "CPU cards", "cuda": "GPU cards"}
_MODES = {"quick": "tiny sizes, eager float32", "full": "the full matrix"}
_PASS = {"forward": "no autograd", "forward+backward": "with the backward pass"}
_DTYPE = {"float32": "float32 rows", "bfloat16": "bfloat16 rows"}
_L2 = {"warm": "repeated on warm caches", "cold": "L2 flushed before each call"}
_STATUS = {"ok": "measured", "oom": "out of memory", "error": "failed", "skipped": "not run"}


def _optional_choice(name: str, value: object, choices: dict[str, str]) -> None:
    if value is not None:
        require_choice(name, value, choices)


def _require_card(card: object) -> None:
    if not isinstance(card, dict) or "rows" not in card or "provenance" not in card:
        raise ValueError(f"card must be a card dict as load_cards() returns, got "
                         f"{type(card).__name__}")


def load_note() -> str:
    """The 1-minute load average next to the core count: print it beside every live timing.

    When more work is waiting than there are cores, the note says so: the timings printed beside
    it then measure the machine's other work as much as the code, and should not be read."""
    cores = os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return f"load average (1 min) unknown on {cores} cores"
    note = f"load average (1 min) {load:.2f} on {cores} cores"
    if cores and load > cores:
        note += " (busier than its cores: these timings measure the other work too; re-run when quiet)"
    return note


def pick(cards: Sequence[dict[str, Any]], group: str, device_type: str | None = None,
         mode: str | None = None) -> dict[str, Any] | None:
    """The card of ``group`` to show: a GPU card before a CPU one, full before quick, and among
    equals the most recently created (never the file name's order).

    ``device_type`` (``"cpu"``/``"cuda"``) and ``mode`` (``"quick"``/``"full"``) restrict the
    choice: a lesson cell written about the CPU quick cards asks for exactly those, so a later
    full CPU card or a GPU card cannot change what it reads. None when there is no such card.
    """
    require_choice("group", group, {g: "a group of the matrix" for g in GROUPS})
    _optional_choice("device_type", device_type, _DEVICE_TYPES)
    _optional_choice("mode", mode, _MODES)
    found = [c for c in cards if c["group"] == group
             and (device_type is None or c["provenance"]["device_type"] == device_type)
             and (mode is None or c["mode"] == mode)]
    found.sort(key=lambda c: c["created"], reverse=True)
    found.sort(key=lambda c: (c["provenance"]["device_type"] != "cuda", c["mode"] != "full"))
    return found[0] if found else None


def rows_where(card: dict[str, Any], pass_: str | None = "forward", dtype: str | None = "float32",
               l2: str | None = "warm", status: str | None = "ok") -> list[dict[str, Any]]:
    """The rows of ``card`` matching every filter that is not None."""
    _require_card(card)
    for name, value, choices in (("pass_", pass_, _PASS), ("dtype", dtype, _DTYPE),
                                 ("l2", l2, _L2), ("status", status, _STATUS)):
        _optional_choice(name, value, choices)
    return [r for r in card["rows"]
            if (pass_ is None or r["pass"] == pass_) and (dtype is None or r["dtype"] == dtype)
            and (l2 is None or r["l2"] == l2) and (status is None or r["status"] == status)]


def _sig(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "–"
    if x == 0:
        return "0"
    text = f"{x:.{digits}g}"
    return f"{round(x):d}" if "e+" in text else text


def _label(r: dict[str, Any]) -> str:
    s = r["shape"]
    return f"{r['name']} {s['B']}x{s['C']}x{s['H']}x{s['W']} {r['dtype']} {r['pass']} {r['l2']}"


def roof_excess(card: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows whose achieved rate exceeds a measured roof (share > 100 %), each with its cause.

    ``cause`` is ``"L2"`` for a warm CUDA row whose minimum working set fits in the L2 cache
    (repeated calls read it from L2, not DRAM: the effect the cold twin exists to show),
    ``"cache"`` for a CPU row whose working set is smaller than the copy roof's buffer (which is
    chosen larger than the caches), and ``"measurement"`` otherwise: no kernel beats the
    machine's own roof, so the time, the roof or the cost model is wrong there.
    """
    _require_card(card)
    prov, out = card["provenance"], []
    l2_bytes = prov.get("l2_bytes")
    for r in card["rows"]:
        if r["status"] != "ok":
            continue
        if r["share_copy_bw"] is not None and r["share_copy_bw"] > 1:
            if prov["device_type"] == "cuda" and r["l2"] == "warm" and l2_bytes \
                    and r["min_bytes"] <= l2_bytes:
                cause = "L2"
            elif prov["device_type"] == "cpu" and r["min_bytes"] < card["machine"]["copy_bytes"]:
                cause = "cache"
            else:
                cause = "measurement"
            out.append({"row": _label(r), "roof": "copy", "share": r["share_copy_bw"],
                        "cause": cause, "min_bytes": r["min_bytes"]})
        if r["share_matmul"] is not None and r["share_matmul"] > 1:
            out.append({"row": _label(r), "roof": r.get("matmul_roof") or "float32",
                        "share": r["share_matmul"], "cause": "measurement",
                        "min_bytes": r["min_bytes"]})
    return out


def roof_violations(card: dict[str, Any]) -> list[str]:
    """The rows above a roof with no cause but a wrong measurement, as readable lines."""
    return [f"{e['row']}: {100 * e['share']:.0f} % of the {e['roof']} roof"
            for e in roof_excess(card) if e["cause"] == "measurement"]


def _setting(r: dict[str, Any]) -> str:
    dtype = {"float32": "", "bfloat16": "bf16"}[r["dtype"]]
    parts = [dtype, "" if r["pass"] == "forward" else "f+b", "" if r["l2"] == "warm" else "cold"]
    return " ".join(p for p in parts if p)


def format_card(card: dict[str, Any], pass_: str | None = "forward", dtype: str | None = None,
                digits: int = 2) -> str:
    """A plain-text table of a card (112 characters wide, 118 with the SDPA column, a few more
    when it mixes settings), numbers rounded to ``digits`` significant digits.

    Columns: shape (B×C×H×W), row name, the setting when the table mixes them (``bf16``,
    ``f+b`` = forward+backward, ``cold`` = L2 flushed), the SDPA kernel when a row used SDPA,
    median µs and its 20th–80th percentiles over the blocks, the ratio to the row's baseline and
    its 20th–80th percentiles ``r20-r80`` (per-round ratios of interleaved blocks), MFLOP, the
    shares of the matmul roof (``t``: of the TF32 roof) and of the copy bandwidth in percent
    (``!`` above 100 %, explained under the table by :func:`card_notes`), peak MB and the
    maximum error against float64 (``–`` where none was computed).
    """
    _require_card(card)
    _optional_choice("pass_", pass_, _PASS)
    _optional_choice("dtype", dtype, _DTYPE)
    require_int("digits", digits)
    prov = card["provenance"]
    rows = [r for r in card["rows"] if (pass_ is None or r["pass"] == pass_)
            and (dtype is None or r["dtype"] == dtype)]
    mixed = len({_setting(r) for r in rows}) > 1
    set_w = max(len(_setting(r)) for r in rows) + 2 if mixed else 0
    sdpa = any(r["sdpa_backend"] for r in rows)
    load = prov.get("load_average")
    end = prov.get("load_average_end")
    loads = "" if load is None else f", load {load:.2f}" + ("" if end is None else f"→{end:.2f}")
    what = ", ".join(x for x in (pass_, dtype) if x)
    lines = [f"{card['title']} — {card['mode']}" + (f" — {what}" if what else ""),
             f"{prov['device']}, torch {prov['torch']}{loads} while recorded"]
    widths = {"us": 7, "p20-p80": 12, "ratio": 6, "r20-r80": 10, "MFLOP": 8, "%mm": 6,
              "%bw": 6, "peakMB": 7, "err": 6}
    head = (f"{'shape':<14}{'row':<30}" + (f"{'set':<{set_w}}" if mixed else "")
            + (f"{'sdpa':<6}" if sdpa else "")
            + "".join(" " + name.rjust(w - 1) for name, w in widths.items()))
    lines += [head, "-" * len(head)]
    for r in rows:
        s = r["shape"]
        backend = {"math": "math", "flash_attention": "flash", "efficient_attention": "eff",
                   "cudnn_attention": "cudnn"}.get(r["sdpa_backend"], r["sdpa_backend"] or "")
        shape = f"{s['B']}x{s['C']}x{s['H']}x{s['W']}"
        start = f"{shape:<14}"
        start += f"{r['name'][:29]:<30}" + (f"{_setting(r):<{set_w}}" if mixed else "")
        start += f"{backend:<6}" if sdpa else ""
        if r["status"] != "ok":
            lines.append(f"{start}{r['status'].upper():>6}  {(r['error'] or '')[:58]}")
            continue
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        mm = None if r["share_matmul"] is None else 100 * r["share_matmul"]
        bw = 100 * r["share_copy_bw"]
        spread = f"{_sig(r['p20_s'] * 1e6, digits)}-{_sig(r['p80_s'] * 1e6, digits)}"
        ratio_spread = ("" if r.get("ratio_p20") is None else
                        f"{_sig(r['ratio_p20'], digits)}-{_sig(r['ratio_p80'], digits)}")
        roof = "t" if r.get("matmul_roof") == "tf32" else ""
        err = "–" if r["max_abs_err"] is None else (
            f"{r['max_abs_err']:.0e}" if r["max_abs_err"] else "0")
        cells = [_sig(r["median_s"] * 1e6, digits), spread,
                 _sig(r["ratio_to_baseline"], digits), ratio_spread,
                 _sig(r["flops"] / 1e6, digits),
                 _sig(mm, digits) + roof + ("!" if mm is not None and mm > 100 else ""),
                 _sig(bw, digits) + ("!" if bw > 100 else ""), _sig(peak, digits), err]
        cells = list(zip(cells, widths.values()))
        lines.append(start + "".join(" " + text.rjust(width - 1) for text, width in cells))
    return "\n".join(lines)


def card_notes(card: dict[str, Any]) -> list[str]:
    """What a reader must know to trust the card's numbers (printed under each table)."""
    _require_card(card)
    prov, machine, notes = card["provenance"], card["machine"], []
    ok = [r for r in card["rows"] if r["status"] == "ok"]
    if ok and all(r.get("blocks") for r in ok):
        fewest = min(ok, key=lambda r: r["blocks"])
        notes.append(f"p20-p80 over {max(r['blocks'] for r in ok)} blocks per row at most, "
                     f"{fewest['blocks']} at least ({fewest['name']} {fewest['pass']}, "
                     f"{fewest['reps'] // fewest['blocks']} calls per block); rows of one "
                     "shape and setting were timed in turn, block by block.")
    roofs = ", ".join(f"{k} {v:.3g} TFLOP/s" for k, v in machine["matmul_tflops"].items())
    notes.append(f"roofs measured in the same run: copy {machine['copy_gbps']:.3g} GB/s; "
                 f"matmul {roofs}.")
    if prov["device_type"] == "cuda":
        notes.append(
            f"TF32: matmul {prov['tf32_matmul']}, cuDNN {prov['tf32_cudnn']}. A float32 row "
            "whose operators may run in TF32 (a convolution under cuDNN TF32, any row under "
            "matmul TF32) is a share of the TF32 roof, marked t in %mm; the others of the "
            "strict FP32 roof.")
        notes.append("cuBLAS/cuDNN start-up: the first call into a library creates handles and "
                     "workspaces (tens of ms); every row and the roofs are timed after warm-up "
                     "calls, so start-up is in none of them.")
        if any(r["l2"] == "cold" for r in card["rows"]):
            notes.append("L2 'cold' rows overwrite a buffer twice the L2 size before each "
                          "call; warm rows repeat on data the previous call left in L2.")
    excess = roof_excess(card)
    for cause, text in (("L2", "served from L2 (the working set fits in the L2 cache; expected "
                               "for warm repetitions, the cold twin reads DRAM)"),
                        ("cache", "working set smaller than the copy roof's buffer, so it may "
                                  "be served from the CPU caches"),
                        ("measurement", "MEASUREMENT PROBLEM: no kernel beats the machine's own "
                                        "roof; the time, the roof or the cost model is wrong")):
        mine = [e for e in excess if e["cause"] == cause]
        if mine:
            shown = "; ".join(f"{e['row']}: {100 * e['share']:.0f} % of {e['roof']}"
                              for e in mine[:3]) + ("; ..." if len(mine) > 3 else "")
            notes.append(f"{len(mine)} shares above a roof (marked !), {text}: {shown}")
    bad = [r for r in card["rows"] if r["status"] in ("oom", "error")]
    if bad:
        notes.append(f"{len(bad)} rows did not run (OOM or error); their cells show the status.")
    skipped = sum(r["status"] == "skipped" for r in card["rows"])
    if skipped:
        notes.append(f"{skipped} rows skipped: the run's time budget was spent before them.")
    return notes


def crossover(card: dict[str, Any], challenger: str = "External attention",
              baseline: str = "PAM (materialised)") -> list[dict[str, Any]]:
    """Per map size: the challenger's time and FLOPs over the baseline's (None where missing).

    ``time_p20``/``time_p80``: the 20th/80th percentiles of the per-round ratios where the two
    were timed interleaved with the challenger's baseline being ``baseline``. A size where
    either row is missing, out of memory or skipped gets ``None`` and its statuses in ``note``.
    """
    _require_card(card)
    names = {r["name"] for r in card["rows"]}
    for arg, name in (("challenger", challenger), ("baseline", baseline)):
        if name not in names:
            raise ValueError(f"{arg}={name!r} is not a row of the {card['group']!r} card; its "
                             f"rows are {sorted(names)}")
    out = []
    sizes = sorted({(r["shape"]["H"], r["shape"]["W"]) for r in card["rows"]})
    for size in sizes:
        at = {r["name"]: r for r in rows_where(card, status=None)
              if (r["shape"]["H"], r["shape"]["W"]) == size}
        a, b = at.get(challenger), at.get(baseline)
        if a is None and b is None:
            continue
        ok = a is not None and b is not None and a["status"] == b["status"] == "ok"
        note = "" if ok else ", ".join(
            f"{n}: {'missing' if r is None else r['status']}"
            for n, r in ((challenger, a), (baseline, b)) if r is None or r["status"] != "ok")
        paired = ok and a["baseline"] == baseline and a.get("ratio_p20") is not None
        out.append({"H": size[0], "W": size[1],
                    "time_ratio": (a["ratio_to_baseline"] if paired
                                   else a["median_s"] / b["median_s"]) if ok else None,
                    "time_p20": a["ratio_p20"] if paired else None,
                    "time_p80": a["ratio_p80"] if paired else None,
                    "flop_ratio": a["flops"] / b["flops"] if a and b else None,
                    "note": note})
    return out


def roofline_points(card: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The largest forward float32 warm-L2 measured shape of each row name."""
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    for r in rows_where(card):
        s = r["shape"]
        size = s["B"] * s["C"] * s["H"] * s["W"]
        if r["name"] not in best or size >= best[r["name"]][0]:
            best[r["name"]] = (size, r)
    return {name: r for name, (_, r) in best.items()}


def machines(cards: Sequence[dict[str, Any]],
             device_type: str | None = None) -> list[list[dict[str, Any]]]:
    """The non-scaling cards grouped by the machine they were measured on (device name and the
    roofs measured in their run), GPU machines first: one roofline each."""
    _optional_choice("device_type", device_type, _DEVICE_TYPES)
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for c in cards:
        prov = c["provenance"]
        if c["group"] == "scaling" or (device_type and prov["device_type"] != device_type):
            continue
        key = (prov["device_type"] != "cuda", prov["device"],
               json.dumps(c["machine"], sort_keys=True))
        groups.setdefault(key, []).append(c)
    return [groups[k] for k in sorted(groups)]


# Colour-blind-safe qualitative colours (Okabe–Ito, then Tol's bright and muted), each used
# once; the marker changes too, so no two mechanisms share a look. Okabe–Ito's yellow, hard to
# see on white, comes last.
COLOURS = ("#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#000000",
           "#4477AA", "#EE6677", "#228833", "#CCBB44", "#AA3377", "#332288", "#882255",
           "#44AA99", "#F0E442")
_MARKERS = "osD^vP*Xh<>pd8H1"


def _eager_name(name: str) -> str:
    """The eager row a compiled row copies: "SE (compiled)" -> "SE"."""
    return name.replace(" (compiled)", "").replace(", compiled)", ")")


def plot_roofline(cards: Sequence[dict[str, Any]], ax: Any,
                  title: str | None = None) -> dict[str, dict[str, Any]]:
    """One roofline for cards of *one machine* (see :func:`machines`): its measured roofs, one
    colour and marker per mechanism (hollow: its compiled row), a legend.

    The copy roof is sloped, each matmul roof the card holds is flat (strict FP32, TF32,
    bfloat16). The roofs span from left of the smallest intensity to right of the ridge, so
    the channel gates (≈ 0.001–0.01 FLOP/byte) sit under a drawn roof. Returns the plotted
    rows by name.
    """
    if not cards:
        raise ValueError("cards is empty: pass the cards of one machine (render.machines)")
    keys = {(c["provenance"]["device"], json.dumps(c["machine"], sort_keys=True)) for c in cards}
    if len(keys) > 1:
        raise ValueError(f"cards come from {len(keys)} machines or runs "
                         f"({sorted(k[0] for k in keys)}): draw one roofline per machine "
                         "(render.machines(cards))")
    machine, prov = cards[0]["machine"], cards[0]["provenance"]
    bw = machine["copy_gbps"] * 1e9
    peaks = {k: v * 1e12 for k, v in machine["matmul_tflops"].items()}
    points: dict[str, dict[str, Any]] = {}
    for c in cards:
        for name, r in roofline_points(c).items():
            points.setdefault(name, r)
    ridge = peaks["float32"] / bw
    xs_pts = [r["flops"] / r["min_bytes"] for r in points.values()]
    lo = min(xs_pts + [ridge]) / 4
    hi = max(xs_pts + [max(peaks.values()) / bw]) * 4
    grid = [lo * (hi / lo) ** (k / 200) for k in range(201)]
    for k, (name, peak) in enumerate(sorted(peaks.items(), key=lambda kv: kv[1])):
        ax.loglog(grid, [min(bw * x, peak) for x in grid], "k", lw=2 if k == 0 else 1,
                  ls=("-", "--", ":")[k % 3],
                  label=f"roof: {bw / 1e9:.3g} GB/s copy, {peak / 1e9:.3g} GFLOP/s {name}")
    ax.axvline(ridge, color="grey", ls=":", label=f"float32 ridge {ridge:.3g} FLOP/byte")
    bases = sorted({_eager_name(name) for name in points})
    for name, r in sorted(points.items()):
        k = bases.index(_eager_name(name))
        x, y = r["flops"] / r["min_bytes"], r["achieved_tflops"] * 1e12
        colour = COLOURS[k % len(COLOURS)]
        ax.loglog(x, y, _MARKERS[k % len(_MARKERS)], color=colour, ms=7, ls="none",
                  markerfacecolor="none" if r["compile"] != "none" else colour,
                  label=f"{name} ({x:.2g} FLOP/B)")
    ax.set_xlabel("arithmetic intensity (cost-model FLOPs / minimum bytes)")
    ax.set_ylabel("achieved FLOP/s (cost-model FLOPs / median)")
    ax.set_title(title or f"roofline: {prov['device']}, forward float32")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return points


def plot_scaling(card: dict[str, Any], ax_time: Any, ax_mem: Any) -> list[str]:
    """Time (p20–p80 as error bars; the cost model's FLOPs dashed) and peak memory against N."""
    _require_card(card)
    if card["group"] != "scaling":
        raise ValueError(f"card is the {card['group']!r} card; plot_scaling draws the 'scaling' "
                         "card")
    series = sorted({r["series"] for r in card["rows"] if r["series"]})
    method = card["rows"][0]["peak_method"]
    for k, name in enumerate(series):
        pts = series_points(card["rows"], name)
        if not pts:
            continue
        colour, marker = COLOURS[k % len(COLOURS)], _MARKERS[k % len(_MARKERS)]
        n = [r["shape"]["H"] * r["shape"]["W"] for r in pts]
        t = [r["median_s"] * 1e6 for r in pts]
        spread = [[m - r["p20_s"] * 1e6 for m, r in zip(t, pts)],
                  [r["p80_s"] * 1e6 - m for m, r in zip(t, pts)]]
        ax_time.errorbar(n, t, yerr=spread, fmt=marker + "-", color=colour, capsize=2, ms=4,
                         label=name)
        model = [r["flops"] for r in pts]
        ax_time.plot(n, [m * t[-1] / model[-1] for m in model], "--", color=colour, lw=1)
        if pts[0]["peak_bytes"] is not None:
            ax_mem.plot(n, [r["peak_bytes"] / 2**20 for r in pts], marker + "-", color=colour,
                        ms=4, label=name)
    for ax in (ax_time, ax_mem):
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax_time.set(xlabel="N = H·W tokens", ylabel="median time (µs), bars p20–p80",
                title="time (dashed: cost-model FLOPs)")
    what = "dispatch estimate" if method == "dispatch" else "cuda.max_memory_allocated"
    ax_mem.set(xlabel="N = H·W tokens", ylabel="peak memory (MiB)",
               title=f"peak memory ({what})")
    ax_time.legend(fontsize=7)
    ax_mem.legend(fontsize=7)
    return series


def slope_table(card: dict[str, Any]) -> str:
    """Log-log slopes of FLOPs, memory and time over the upper half of N, per series.

    A slope needs at least ``MIN_FIT_POINTS`` points; with fewer the cell says ``–``.
    """
    _require_card(card)
    fits = {(f["series"], f["y"]): f for f in card["fits"]}
    series = sorted({f["series"] for f in card["fits"]})
    lines = [f"{'series':<32}{'FLOPs':>7}{'memory':>8}{'time':>7}{'points':>8}"
             "   (log-log slopes, upper half of N)"]
    few = False
    for name in series:
        cells = []
        for y in ("flops", "peak_bytes", "median_s"):
            s = fits[(name, y)]["slope_upper_half"]
            cells.append(f"{s:>7.2f}" if s is not None else f"{'–':>7}")
        points = fits[(name, "flops")]["points_upper_half"]
        few = few or points < MIN_FIT_POINTS
        lines.append(f"{name:<32}{cells[0]}{cells[1]:>8}{cells[2]}{points:>8}")
    if few:
        lines.append(f"–: fewer than {MIN_FIT_POINTS} points, no slope quoted")
    return "\n".join(lines)
