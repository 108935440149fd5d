"""Our counts next to the authors' published numbers: :func:`row`, :func:`table`,
:func:`format_table`, and ``python -m attn_tutorial networks`` (:func:`main`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from .catalogue import NETWORKS, Published, _check_name, build, input_for
from .counting import CONVENTIONS, caffe_macs, count_model, count_model_and_thop

__all__ = ["Row", "row", "table", "format_table", "main"]


@dataclass(frozen=True)
class Row:
    """One line of the table: our count, ours under the authors' convention and unit, theirs,
    and whether the two agree to the precision they print."""

    name: str
    params: int
    macs: int
    flops: int
    published: Published | None = None
    ours_params: float | None = None    # in the authors' unit
    ours_compute: float | None = None   # under the authors' convention and unit
    ours_madds: float | None = None     # SCNet's second number
    params_match: bool | None = None
    compute_match: bool | None = None

    @property
    def matches(self) -> bool | None:
        if self.published is None:
            return None
        return bool(self.params_match and self.compute_match)


def _digits(printed: str) -> int:
    """Decimals the authors print: "24.37" -> 2, "7.9" -> 1, "11" -> 0."""
    return len(printed.split(".")[1]) if "." in printed else 0


def _agrees(ours: float, printed: str, tolerance: int) -> bool:
    """``ours`` rounded to the authors' printed precision is their number (± ``tolerance`` units
    of the last digit)."""
    digits = _digits(printed)
    step = 10.0 ** -digits
    return abs(round(ours, digits) - float(printed)) <= tolerance * step + step * 1e-6


def row(name: str) -> Row:
    """Our count of ``name`` next to the authors' published numbers."""
    pub = _check_name(name).published
    model, x = build(name), input_for(name)
    if pub is None:
        counted = count_model(name, model, x)
        return Row(name, counted.params, counted.macs, counted.flops)
    version = "2021" if pub.convention == "thop2021" else "2019"
    counted, thop = count_model_and_thop(name, model, x, version)
    unit_m, unit_g = (1e6, 1e9) if pub.unit == 10 else (2.0 ** 20, 2.0 ** 30)
    madds = None
    if pub.convention in ("thop2019", "thop2021"):
        compute = sum(thop.values())
    elif pub.convention == "scnet":
        madds = sum(thop.values()) / unit_g
        compute = counted.flops + thop["norm"] + thop["pool"]
    elif pub.convention == "mac_caffe":
        compute = caffe_macs(model, counted.macs)
    else:
        compute = counted.macs
    ours_p, ours_c = counted.params / unit_m, compute / unit_g
    compute_ok = pub.convention != "rest" and _agrees(ours_c, pub.compute_g, pub.tolerance)
    if madds is not None:
        compute_ok = compute_ok and _agrees(madds, pub.madds_g, pub.tolerance)
    return Row(name, counted.params, counted.macs, counted.flops, pub, ours_p, ours_c, madds,
               _agrees(ours_p, pub.params_m, pub.tolerance), compute_ok)


def table(names: Sequence[str] | None = None) -> list[Row]:
    """Rows for ``names`` (default: every network in ``NETWORKS``), e.g.
    ``print(format_table(table(["eca_resnet18", "eca_resnet50"])))``."""
    if isinstance(names, str):
        raise ValueError(f"names={names!r} must be a list of network names, e.g. [{names!r}]")
    return [row(n) for n in (NETWORKS if names is None else names)]


def format_table(rows: Sequence[Row]) -> str:
    """The table as text. Left: our parameters (M), MACs and FLOPs (G, FlopCounterMode) at the
    counted size. Right: ours in the authors' convention and unit, theirs, the ratio, whether
    they agree at their printed precision, and the convention."""
    head = (f"{'network':<14} {'params M':>8} {'MACs G':>7} {'FLOPs G':>7} | "
            f"{'ours (their way)':>17} {'authors':>13} {'ratio':>11} ok  convention")
    lines = [head, "-" * len(head)]
    for r in rows:
        left = f"{r.name:<14} {r.params / 1e6:>8.2f} {r.macs / 1e9:>7.2f} {r.flops / 1e9:>7.2f} |"
        p = r.published
        if p is None:
            what = ("no published number: the head alone on the 2048x96x96 map of a 768x768 "
                    "crop (output stride 8), 19 classes" if r.name.endswith("_head")
                    else "baseline: no attention")
            lines.append(f"{left} {'':>17} {'-':>13} {'':>11} --  {what}")
            continue
        dp, dc = max(_digits(p.params_m), 2), max(_digits(p.compute_g), 2)
        ours = f"{r.ours_params:.{dp}f}/{r.ours_compute:.{dc}f}"
        theirs = f"{p.params_m}/{p.compute_g}"
        ratio = (f"{r.ours_params / float(p.params_m):.3f}/"
                 f"{r.ours_compute / float(p.compute_g):.3f}")
        ok = "ok" if r.matches else ("p " if r.params_match else "NO")
        extra = [] if r.ours_madds is None else [f"MAdds ours {r.ours_madds:.2f} vs {p.madds_g}"]
        extra += [p.note] if p.note else []
        lines.append(f"{left} {ours:>17} {theirs:>13} {ratio:>11} {ok}  "
                     + "; ".join([CONVENTIONS[p.convention]] + extra))
    lines.append("ok: both numbers agree at the authors' printed precision; p: parameters only")
    return "\n".join(lines)


def main() -> int:
    """``python -m attn_tutorial networks``: print the table and how long it took."""
    start = time.perf_counter()
    print(format_table(table()), flush=True)
    print(f"\n(counted on the meta device in {time.perf_counter() - start:.1f} s; 'ours' and "
          "'authors' are params M / compute G in the authors' convention)")
    return 0
