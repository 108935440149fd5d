"""Rendering cards: the tables, notes, crossover, roofline and scaling plots of lesson 08.

Every cell of lesson 08 that shows a card calls a function of this module, so the same code is
tested on synthetic GPU-shaped cards (warm and cold L2 rows, OOM and skipped rows, missing sizes,
bf16 and compiled rows) without a GPU.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from attn_tutorial.bench.cards import series_points

__all__ = ["pick", "format_card", "card_notes", "roof_violations", "crossover", "load_note",
           "roofline_points", "plot_roofline", "plot_scaling", "slope_table", "rows_where"]


def load_note() -> str:
    """The 1-minute load average next to the core count: print it beside every live timing."""
    try:
        load = f"{os.getloadavg()[0]:.2f}"
    except (AttributeError, OSError):
        load = "unknown"
    return f"load average (1 min) {load} on {os.cpu_count()} cores"


def pick(cards: Sequence[dict[str, Any]], group: str,
         device_type: str | None = None) -> dict[str, Any] | None:
    """The most informative card of ``group``: a GPU card when one exists, full before quick.

    ``device_type="cpu"`` (or ``"cuda"``) restricts the choice; None when there is no such card.
    """
    found = [c for c in cards if c["group"] == group
             and (device_type is None or c["provenance"]["device_type"] == device_type)]
    found.sort(key=lambda c: (c["provenance"]["device_type"] != "cuda", c["mode"] != "full"))
    return found[0] if found else None


def rows_where(card: dict[str, Any], pass_: str | None = "forward", dtype: str | None = "float32",
               l2: str | None = "warm", status: str | None = "ok") -> list[dict[str, Any]]:
    """The rows of ``card`` matching every filter that is not None."""
    return [r for r in card["rows"]
            if (pass_ is None or r["pass"] == pass_) and (dtype is None or r["dtype"] == dtype)
            and (l2 is None or r["l2"] == l2) and (status is None or r["status"] == status)]


def _sig(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{round(x):d}"


def roof_violations(card: dict[str, Any]) -> list[str]:
    """Rows whose achieved rate exceeds a measured roof (share > 100 %): a measurement problem.

    A kernel cannot beat the machine's own copy bandwidth or matmul rate; a share above 100 %
    means the row's time or the roof is wrong (a loaded machine during the roof measurement,
    a working set served from cache, TF32 against a strict-FP32 roof, a cost model counting
    more than the kernel does).
    """
    out = []
    for r in card["rows"]:
        if r["status"] != "ok":
            continue
        s = r["shape"]
        where = f"{r['name']} {s['B']}x{s['C']}x{s['H']}x{s['W']} {r['dtype']} {r['pass']}"
        if r["share_copy_bw"] is not None and r["share_copy_bw"] > 1:
            out.append(f"{where}: {100 * r['share_copy_bw']:.0f} % of the copy bandwidth")
        if r["share_matmul"] is not None and r["share_matmul"] > 1:
            out.append(f"{where}: {100 * r['share_matmul']:.0f} % of the matmul rate")
    return out


def format_card(card: dict[str, Any], pass_: str | None = "forward", dtype: str | None = None,
                digits: int = 2) -> str:
    """A plain-text table of a card, numbers rounded to ``digits`` significant digits.

    Columns: shape, row name, dtype, pass, SDPA backend, median and 20th–80th percentile (µs),
    ratio to the baseline, cost-model MFLOP, achieved GFLOP/s and GB/s, their shares of the
    machine's matmul rate and copy bandwidth (``!`` marks a share above 100 %), peak MB, max
    error against float64. Cold-L2 rows say ``cold`` in the L2 column; OOM and skipped rows say
    so.
    """
    prov = card["provenance"]
    load = prov.get("load_average")
    device = prov["device"] if prov["device_type"] == "cpu" else (
        f"{prov['device']}, TF32 matmul {prov['tf32_matmul']} / cuDNN {prov['tf32_cudnn']}")
    lines = [f"{card['title']} — {card['mode']} — {device}, torch {prov['torch']}"
             + ("" if load is None else f", load average {load:.2f} when recorded")]
    head = (f"{'shape':<15}{'row':<30}{'dtype':<9}{'pass':<5}{'L2':<5}{'sdpa':<6}{'us':>8}"
            f"{'p20-p80':>14}{'ratio':>7}{'MFLOP':>8}{'GFLOP/s':>9}{'GB/s':>8}{'%mm':>8}"
            f"{'%bw':>8}{'peakMB':>8}{'err':>7}")
    lines += [head, "-" * len(head)]
    for r in card["rows"]:
        if pass_ is not None and r["pass"] != pass_:
            continue
        if dtype is not None and r["dtype"] != dtype:
            continue
        s = r["shape"]
        shape = f"{s['B']}x{s['C']}x{s['H']}x{s['W']}"
        short_pass = "fwd" if r["pass"] == "forward" else "f+b"
        name = r["name"]
        l2 = "" if r["l2"] == "warm" else "cold"
        backend = {"math": "math", "flash_attention": "flash", "efficient_attention": "eff",
                   "cudnn_attention": "cudnn"}.get(r["sdpa_backend"], r["sdpa_backend"] or "")
        start = f"{shape:<15}{name[:29]:<30}{r['dtype']:<9}{short_pass:<5}{l2:<5}{backend:<6}"
        if r["status"] != "ok":
            lines.append(f"{start}{r['status'].upper():>8}  {r['error'][:60]}")
            continue
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        mm = None if r["share_matmul"] is None else 100 * r["share_matmul"]
        bw = 100 * r["share_copy_bw"]
        spread = f"{_sig(r['p20_s'] * 1e6, digits)}-{_sig(r['p80_s'] * 1e6, digits)}"
        err = f"{r['max_abs_err']:.0e}" if r["max_abs_err"] else "0"
        cells = [(_sig(r["median_s"] * 1e6, digits), 8), (spread, 14),
                 (_sig(r["ratio_to_baseline"], digits), 7), (_sig(r["flops"] / 1e6, digits), 8),
                 (_sig(r["achieved_tflops"] * 1e3, digits), 9),
                 (_sig(r["achieved_gbps"], digits), 8),
                 (_sig(mm, digits) + ("!" if mm is not None and mm > 100 else ""), 8),
                 (_sig(bw, digits) + ("!" if bw > 100 else ""), 8), (_sig(peak, digits), 8),
                 (err, 7)]
        lines.append(start + "".join(" " + text.rjust(width - 1) for text, width in cells))
    return "\n".join(lines)


def card_notes(card: dict[str, Any]) -> list[str]:
    """What a reader must know to trust the card's numbers (printed under each table)."""
    prov, notes = card["provenance"], []
    if prov["device_type"] == "cuda":
        notes.append(
            f"TF32: matmul allow_tf32={prov['tf32_matmul']}, cuDNN allow_tf32={prov['tf32_cudnn']}"
            " (PyTorch's defaults are False and True). The float32 matmul roof is measured "
            "under the matmul flag, so with strict FP32 there, cuDNN convolutions running in "
            "TF32 can reach shares of the FP32 roof above what FP32 arithmetic allows.")
        notes.append("cuBLAS/cuDNN start-up: the first call into a library creates handles and "
                     "workspaces (tens of ms); every row and the roofs are timed after warm-up "
                     "calls, so start-up is in none of them.")
        if any(r["l2"] == "cold" for r in card["rows"]):
            notes.append("L2 'cold' rows overwrite a buffer twice the L2 size before each "
                         "repetition; warm rows repeat on data the previous call left in L2.")
    above = roof_violations(card)
    if above:
        shown = "; ".join(above[:3]) + ("; ..." if len(above) > 3 else "")
        notes.append(f"MEASUREMENT PROBLEM: {len(above)} rows above a measured roof (marked !): "
                     f"{shown}")
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

    A size where either row is missing, out of memory or skipped gets ``None`` for the time
    ratio and its statuses in ``note``.
    """
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
        out.append({"H": size[0], "W": size[1],
                    "time_ratio": a["median_s"] / b["median_s"] if ok else None,
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


_MARKERS = "osD^vP*Xh<>p"


def plot_roofline(cards: Sequence[dict[str, Any]], device_type: str,
                  ax: Any) -> dict[str, dict[str, Any]]:
    """One roofline for ``device_type``: measured roofs, one marker per mechanism, a legend.

    The roofs span from left of the smallest intensity to right of the ridge, so the channel
    gates (≈ 0.001–0.01 FLOP/byte) sit under a drawn roof. Returns the plotted rows by name.
    """
    mine = [c for c in cards if c["provenance"]["device_type"] == device_type
            and c["group"] != "scaling"]
    if not mine:
        return {}
    machine = mine[0]["machine"]
    bw, peak = machine["copy_gbps"] * 1e9, machine["matmul_tflops"]["float32"] * 1e12
    points: dict[str, dict[str, Any]] = {}
    for c in mine:
        for name, r in roofline_points(c).items():
            points.setdefault(name, r)
    ridge = peak / bw
    xs_pts = [r["flops"] / r["min_bytes"] for r in points.values()]
    lo = min(xs_pts + [ridge]) / 4
    hi = max(xs_pts + [ridge]) * 4
    grid = [lo * (hi / lo) ** (k / 200) for k in range(201)]
    ax.loglog(grid, [min(bw * x, peak) for x in grid], "k-", lw=2,
              label=f"roofs: {bw / 1e9:.3g} GB/s copy, {peak / 1e9:.3g} GFLOP/s matmul")
    ax.axvline(ridge, color="grey", ls=":", label=f"ridge {ridge:.3g} FLOP/byte")
    for k, (name, r) in enumerate(sorted(points.items())):
        x, y = r["flops"] / r["min_bytes"], r["achieved_tflops"] * 1e12
        ax.loglog(x, y, _MARKERS[k % len(_MARKERS)], ms=7, label=f"{name} ({x:.2g} FLOP/B)")
    ax.set_xlabel("arithmetic intensity (cost-model FLOPs / minimum bytes)")
    ax.set_ylabel("achieved FLOP/s (cost-model FLOPs / median)")
    ax.set_title(f"roofline: {device_type} cards, forward float32")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return points


def plot_scaling(card: dict[str, Any], ax_time: Any, ax_mem: Any) -> list[str]:
    """Time (with the cost model's FLOPs dashed) and peak memory against N, per series."""
    series = sorted({r["series"] for r in card["rows"] if r["series"]})
    method = card["rows"][0]["peak_method"]
    for name in series:
        pts = series_points(card["rows"], name)
        if not pts:
            continue
        n = [r["shape"]["H"] * r["shape"]["W"] for r in pts]
        t = [r["median_s"] * 1e6 for r in pts]
        line, = ax_time.loglog(n, t, "o-", label=name)
        model = [r["flops"] for r in pts]
        ax_time.loglog(n, [m * t[-1] / model[-1] for m in model], "--", color=line.get_color(),
                       lw=1)
        if pts[0]["peak_bytes"] is not None:
            ax_mem.loglog(n, [r["peak_bytes"] / 2**20 for r in pts], "o-", label=name)
    ax_time.set(xlabel="N = H·W tokens", ylabel="median time (µs)",
                title="time (dashed: cost-model FLOPs)")
    what = "dispatch estimate" if method == "dispatch" else "cuda.max_memory_allocated"
    ax_mem.set(xlabel="N = H·W tokens", ylabel="peak memory (MiB)",
               title=f"peak memory ({what})")
    ax_time.legend(fontsize=7)
    ax_mem.legend(fontsize=7)
    return series


def slope_table(card: dict[str, Any]) -> str:
    """Log-log slopes of FLOPs, memory and time over the upper half of N, per series.

    A slope through only two points is marked ``*``: it is the line through them, not a fit.
    """
    fits = {(f["series"], f["y"]): f for f in card["fits"]}
    series = sorted({f["series"] for f in card["fits"]})
    lines = [f"{'series':<32}{'FLOPs':>8}{'memory':>8}{'time':>8}{'points':>8}"
             "   (log-log slopes, upper half of N)"]
    two = False
    for name in series:
        cells = []
        for y in ("flops", "peak_bytes", "median_s"):
            f = fits[(name, y)]
            s = f["slope_upper_half"]
            star = "*" if s is not None and f["points_upper_half"] == 2 else ""
            two = two or bool(star)
            cells.append(f"{s:>7.1f}{star or ' '}" if s is not None else f"{'-':>8}")
        lines.append(f"{name:<32}" + "".join(cells)
                     + f"{fits[(name, 'flops')]['points_upper_half']:>8}")
    if two:
        lines.append("* two points only: the line through them, not a fitted slope")
    return "\n".join(lines)

