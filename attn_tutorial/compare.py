"""Plug and compare: every mechanism trained in the same tiny network on the same data.

``plug_and_compare(["none", "se", "bam", ...])`` builds :class:`~attn_tutorial.models.TinyResNet`
once per mechanism (same seed, so the shared layers start from the same draw), trains each with
:func:`~attn_tutorial.train.fit` on the same seeded synthetic task and the same batch order, and
returns one row per mechanism: parameters, forward FLOPs per image
(:func:`~attn_tutorial.bench.count_flops`), CPU seconds per training step, test accuracy, and the
mechanism's attention metric (:mod:`attn_tutorial.metrics`) before and after training, with its
chance level and null (each model's own). A learner's own module takes part as a registered name,
a :class:`~attn_tutorial.registry.Mechanism` from :func:`~attn_tutorial.registry.define_mechanism`,
or a module class.

The course's comparison tables come from the shipped models (:mod:`attn_tutorial.zoo`, several
seeds); this function is for training live.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from attn_tutorial import data
from attn_tutorial.data import TASKS, make_task  # defined there: zoo uses them too
from attn_tutorial.bench import count_flops
from attn_tutorial.metrics import attention_metric
from attn_tutorial.models import build_model
from attn_tutorial.registry import Mechanism, resolve
from attn_tutorial.show import count_params
from attn_tutorial.train import fit
from attn_tutorial._validate import (require_bool, require_int, require_number,  # noqa: I001
                                     require_optional_int)

__all__ = ["TASKS", "Row", "Comparison", "make_task", "plug_and_compare"]

@dataclass
class Row:
    """One mechanism's line of the comparison (metric fields are NaN without a metric)."""

    mechanism: str
    position: str
    params: int
    flops: int
    step_ms: float
    train_seconds: float
    accuracy: float
    metric: str
    metric_untrained: float
    metric_trained: float
    chance: float
    chance_untrained: float = float("nan")
    null: float = float("nan")


@dataclass
class Comparison:
    """What :func:`plug_and_compare` returns: the rows and the task they were measured on."""

    rows: list[Row]
    task: str
    steps: int
    seed: int
    models: dict[str, Any] = field(default_factory=dict)
    test: data.Task | None = None

    def __getitem__(self, mechanism: str) -> Row:
        for row in self.rows:
            if row.mechanism == mechanism:
                return row
        raise KeyError(mechanism)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(row) for row in self.rows]

    def table(self, timings: bool = True) -> str:
        """A plain-text table; ``timings=False`` leaves out the machine-dependent columns.

        Each scored row gives its metric untrained and trained, its chance level and its null
        (what the trained metric must beat; "-" when the scorer has none)."""
        head = f"{'mechanism':<10} {'params':>7} {'MFLOPs':>7}"
        if timings:
            head += f" {'ms/step':>8} {'train s':>8}"
        head += f" {'acc':>5}  {'metric (untrained -> trained, chance, null)'}"
        lines = [head, "-" * len(head)]
        for r in self.rows:
            line = f"{r.mechanism:<10} {r.params:>7} {r.flops / 1e6:>7.2f}"
            if timings:
                line += f" {r.step_ms:>8.1f} {r.train_seconds:>8.1f}"
            line += f" {r.accuracy:>5.2f}  "
            if math.isnan(r.metric_trained):
                line += "-"
            else:
                null = "-" if math.isnan(r.null) else f"{r.null:.2f}"
                line += (f"{r.metric}: {r.metric_untrained:.2f} -> {r.metric_trained:.2f} "
                         f"(chance {r.chance:.2f}, null {null})")
            lines.append(line)
        return "\n".join(lines)

    def plot(self, axes: Any = None) -> Any:
        """Accuracy and metric lift (trained / chance, untrained / chance) per mechanism."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        names = [r.mechanism for r in self.rows]
        x = range(len(names))
        axes[0].bar(x, [r.accuracy for r in self.rows], color="tab:blue")
        axes[0].set_xticks(list(x), names, rotation=45)
        axes[0].set_ylim(0, 1)
        axes[0].set_title(f"test accuracy ({self.task}, {self.steps} steps)")
        scored = [r for r in self.rows if not math.isnan(r.metric_trained)]
        xs = range(len(scored))
        axes[1].bar([i - 0.2 for i in xs], [r.metric_untrained / r.chance for r in scored],
                    width=0.4, label="untrained", color="tab:gray")
        axes[1].bar([i + 0.2 for i in xs], [r.metric_trained / r.chance for r in scored],
                    width=0.4, label="trained", color="tab:orange")
        axes[1].axhline(1, color="black", lw=1, ls="--")
        axes[1].set_xticks(list(xs), [r.mechanism for r in scored], rotation=45)
        axes[1].set_yscale("log")
        axes[1].set_title("attention metric / chance (log)")
        axes[1].legend()
        axes[0].figure.tight_layout()
        return axes


def _require_list(name: str, value: object) -> None:
    """A list or tuple of mechanisms (a single name would be iterated letter by letter)."""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}={value!r} must be a list (for one mechanism: [{value!r}])")



def plug_and_compare(mechanisms: list[str | Mechanism | type], task: str | data.Task = "object_on_texture",
                     seed: int = 0, steps: int = 200, *, train_n: int = 2000, test_n: int = 400,
                     batch_size: int = 64, lr: float = 3e-3, metric_n: int | None = None,
                     flops: bool = True, keep_models: bool = False) -> Comparison:
    """Train every mechanism in :class:`TinyResNet` on the same data and compare them.

    Args:
        mechanisms: registered names (:data:`~attn_tutorial.registry.MECHANISMS`), "none",
            :class:`~attn_tutorial.registry.Mechanism` entries, or module classes.
        task: a name from :data:`TASKS` (drawn with ``train_n + test_n`` images and ``seed``),
            or a Task (then split into its first ``train_n`` and next ``test_n`` images).
        seed: seeds the data, the initial weights (each model is built after
            ``torch.manual_seed(seed)``) and the batch order.
        steps, batch_size, lr: :func:`~attn_tutorial.train.fit`'s.
        metric_n: score the attention on the first ``metric_n`` test images (default all).
        flops: count forward FLOPs per image (one traced pass; off saves a little time).
        keep_models: keep the trained models (``.models[name]``) and the test task (``.test``)
            to look at their maps afterwards.

    Returns a :class:`Comparison` (``.rows``, ``.table()``, ``.plot()``).
    """
    _require_list("mechanisms", mechanisms)
    if not mechanisms:
        raise ValueError("mechanisms is empty: name at least one (\"none\" is the baseline)")
    for name, value in (("seed", seed), ("steps", steps), ("train_n", train_n),
                        ("test_n", test_n), ("batch_size", batch_size)):
        require_int(name, value, minimum=0 if name == "seed" else 1)
    require_optional_int("metric_n", metric_n)
    require_number("lr", lr, positive=True)
    require_bool("flops", flops)
    require_bool("keep_models", keep_models)
    specs = [resolve(m) for m in mechanisms]
    full = make_task(task, train_n + test_n, seed)
    train, test = full.split(train_n, test_n)
    scored = test if metric_n is None else test[:metric_n]
    kind = train.kind
    task_name = task if isinstance(task, str) else "custom task"

    rows, models = [], {}
    for mechanism, spec in zip(mechanisms, specs):
        model = build_model(spec if spec is not None else "none", num_classes=train.num_classes,
                            kind=kind, seed=seed)
        name = model.mechanism
        params = count_params(model)
        model_flops = 0
        if flops:
            model.eval()
            with torch.no_grad():
                model_flops = count_flops(model, train.images[:1])
        before = attention_metric(model, scored)
        try:
            history = fit(model, train, test, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
        except ValueError as error:  # e.g. a NaN loss: say which mechanism
            raise ValueError(f"mechanism {name!r}: {error}") from error
        after = attention_metric(model, scored)
        if keep_models:
            models[name] = model
        nan = float("nan")
        rows.append(Row(
            mechanism=name, position=spec.position if spec is not None else "-",
            params=params, flops=model_flops, step_ms=1000 * history.seconds / history.steps,
            train_seconds=history.seconds, accuracy=float(history.test_accuracy),
            metric=after.name if after else "-",
            metric_untrained=before.value if before else nan,
            metric_trained=after.value if after else nan,
            chance=after.chance if after else nan,
            chance_untrained=before.chance if before else nan,
            null=after.null if after and after.null is not None else nan,
        ))
    return Comparison(rows, task_name, steps, seed, models, test if keep_models else None)


# --------------------------------------------------------------------------- the zoo, over seeds

@dataclass(frozen=True)
class Spread:
    """One quantity measured at each of the zoo's seeds: ``values`` per seed, mean, sd, min, max."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def sd(self) -> float:
        """Sample standard deviation over seeds (n − 1); 0 for one seed."""
        if len(self.values) < 2:
            return 0.0
        mean = self.mean
        return math.sqrt(sum((v - mean) ** 2 for v in self.values) / (len(self.values) - 1))

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def __format__(self, spec: str) -> str:
        """``"0.950 ± 0.012"``; a width and alignment apply to the whole (``f"{s:>13.3f}"``)."""
        match = re.fullmatch(r"([<>^]?)(\d*)(\.\d+f)?", spec)
        if match is None:
            raise ValueError(f"format spec {spec!r} for a Spread must look like '>13.3f'")
        align, width, precision = match.groups()
        text = f"{self.mean:{precision or '.3f'}} ± {self.sd:{precision or '.3f'}}"
        return f"{text:{align or '>'}{width}}"


#: The axis label of each metric name (one plot axis per metric: values on one axis are of one
#: metric, so they are comparable).
METRIC_KINDS = {
    "gate class selectivity (eta^2)": "η² of channel gates",
    "gate contrast on object": "gate contrast: share on object",
    "attention mass on object": "attention mass on object",
    "channel mass on other same-class channels": "same-class channel share",
    "memory slot class purity": "slot class purity",
}


@dataclass
class ZooEntry:
    """One zoo entry summarised over its seeds (see :func:`from_zoo`)."""

    mechanism: str
    task: str
    params: int
    accuracy: Spread
    chance_accuracy: float
    metric: str
    value: Spread | None
    chance: Spread | None
    null: Spread | None
    untrained: Spread | None
    untrained_chance: Spread | None
    manifests: list[dict[str, Any]]

    def per_seed(self, *keys: str) -> Spread:
        """A quantity from each seed's manifest by its keys under ``metrics``, e.g.
        ``per_seed("per_module", "stage1.attn", "null")``."""
        values = []
        for info in self.manifests:
            item: Any = info["metrics"]
            for key in keys:
                item = item[key]
            values.append(float(item))
        return Spread(tuple(values))


def _spread(manifests: list[dict[str, Any]], *keys: str) -> Spread | None:
    values = []
    for info in manifests:
        item: Any = info
        for key in keys:
            if item is None:
                return None
            item = item[key]
        if item is None:
            return None
        values.append(float(item))
    return Spread(tuple(values))


def from_zoo(mechanisms: list[tuple[str, str | None]] | list[str],
             seeds: tuple[int, ...] | None = None) -> dict[str, ZooEntry]:
    """The shipped models' manifests summarised over seeds, by mechanism name.

    ``mechanisms``: names (each on its registered task; "none" on object_on_texture) or
    ``(name, task)`` pairs. Keys of the result are the names, with ``@segmentation`` added for
    "none" on the segmentation task. Nothing is trained or evaluated: the numbers are the
    manifests' (tests/test_zoo.py checks them against the weights).
    """
    from attn_tutorial import zoo

    _require_list("mechanisms", mechanisms)
    seeds = seeds if seeds is not None else zoo.SEEDS
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (list, tuple)) or not seeds:
        raise ValueError(f"seeds={seeds!r} must be a non-empty list or tuple of seeds")
    out = {}
    for item in mechanisms:
        name, task = (item, None) if isinstance(item, str) else item
        infos = [zoo.manifest(name, s, task) for s in seeds]
        first = infos[0]
        key = name if not (name == "none" and first["task"] != "object_on_texture") else \
            "none@segmentation"
        metric = first["metrics"]["metric"]
        chance_accuracy = make_task(first["task"], 400, 0).chance
        out[key] = ZooEntry(
            mechanism=name, task=first["task"], params=first["params"],
            accuracy=_spread(infos, "metrics", "accuracy"), chance_accuracy=chance_accuracy,
            metric=metric["name"] if metric else "-",
            value=_spread(infos, "metrics", "metric", "value"),
            chance=_spread(infos, "metrics", "metric", "chance"),
            null=_spread(infos, "metrics", "metric", "null"),
            untrained=_spread(infos, "untrained_metric", "value"),
            untrained_chance=_spread(infos, "untrained_metric", "chance"),
            manifests=infos,
        )
    return out


def _require_entries(entries: object) -> None:
    if not isinstance(entries, dict):
        raise ValueError(f"entries={entries!r} must be the dict from_zoo returns")


def zoo_table(entries: dict[str, ZooEntry]) -> str:
    """Mean ± sd over seeds: params, accuracy, metric (trained, null, chance, untrained)."""
    _require_entries(entries)
    head = (f"{'mechanism':<18} {'params':>7} {'accuracy':>13}  {'metric':>13} {'null':>13} "
            f"{'chance':>6} {'untrained':>9}")
    lines = [head, "-" * len(head)]
    for key, e in entries.items():
        line = f"{key:<18} {e.params:>7} {e.accuracy:>13.3f}"
        if e.value is not None:
            line += (f"  {e.value:>13.3f} {e.null:>13.3f} {e.chance.mean:>6.3f} "
                     f"{e.untrained.mean:>9.3f}")
        lines.append(line)
    return "\n".join(lines)


def plot_zoo(entries: dict[str, ZooEntry], axes: Any = None) -> Any:
    """Accuracy per entry on a cut axis (dots = seeds, bar = mean; the chance levels are printed
    in the title, far below the axis), then one axis per metric: trained value, null and chance
    side by side (dots = seeds), the legend beside the axes. Returns the axes (accuracy first).

    Without ``axes``: a 10-inch-wide figure, accuracy on top, the metric axes below it.
    """
    _require_entries(entries)
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(METRIC_KINDS.get(e.metric, e.metric)
                               for e in entries.values() if e.value is not None))
    if axes is None:
        fig = plt.figure(figsize=(10, 6.4))
        grid = fig.add_gridspec(2, max(1, len(kinds)), height_ratios=[1, 1.15], hspace=0.75,
                                wspace=0.45)
        axes = [fig.add_subplot(grid[0, :])] + [fig.add_subplot(grid[1, i])
                                                for i in range(len(kinds))]
    names = list(entries)
    ax = axes[0]
    lowest = min(min(e.accuracy.values) for e in entries.values())
    for i, key in enumerate(names):
        e = entries[key]
        ax.hlines(e.accuracy.mean, i - 0.3, i + 0.3, colors="tab:blue", lw=2.5,
                  label="mean over seeds" if i == 0 else None)
        ax.plot([i] * len(e.accuracy.values), e.accuracy.values, "k.", ms=6,
                label="one seed" if i == 0 else None)
    ax.set_xticks(range(len(names)), [n.replace("@", "\n@") for n in names], fontsize=7)
    ax.set_ylim(max(0.0, lowest - 0.03), 1.0)
    chances = sorted({round(e.chance_accuracy, 3) for e in entries.values()})
    ax.set_ylabel("test accuracy\n(axis cut)", fontsize=8)
    ax.set_title(f"accuracy over {len(entries[names[0]].accuracy.values)} seeds (pixel accuracy "
                 f"for segmentation); chance {', '.join(map(str, chances))}, below the axis",
                 fontsize=9)
    ax.grid(axis="y", lw=0.4, alpha=0.5)
    ax.legend(fontsize=8, loc="lower left")
    for ax, kind in zip(axes[1:], kinds):
        scored = [k for k in names if entries[k].value is not None
                  and METRIC_KINDS.get(entries[k].metric, entries[k].metric) == kind]
        same = []                                       # entries whose null is their chance (CAM)
        for i, key in enumerate(scored):
            e = entries[key]
            bars = [(-0.27, e.value, "tab:orange", "trained"), (0.0, e.null, "tab:gray", "null"),
                    (0.27, e.chance, "white", "chance")]
            if list(e.null.values) == list(e.chance.values):
                same.append(key)
                bars = [bars[0], (0.0, e.chance, "white", "chance")]
            for offset, spread, colour, label in bars:
                ax.bar(i + offset, spread.mean, width=0.27, color=colour, edgecolor="black",
                       lw=0.6, label=label if i == 0 else None)
                ax.plot([i + offset] * len(spread.values), spread.values, "k.", ms=3)
        ax.set_xticks(range(len(scored)), scored, rotation=45, fontsize=8)
        ax.set_title(kind + ("\n(null = chance: one bar)" if same else ""), fontsize=8)
    if len(axes) > 1:                                   # one legend: every label of every axis
        labelled = {}
        for ax in axes[1:]:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                labelled.setdefault(label, handle)
        axes[-1].legend(labelled.values(), labelled.keys(), fontsize=8, loc="upper left",
                        bbox_to_anchor=(1.02, 1.0))
    return axes
