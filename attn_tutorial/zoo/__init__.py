"""The zoo: every registered mechanism's TinyResNet, trained once at several seeds and shipped.

Lessons look at trained attention without training it: ::

    from attn_tutorial import zoo
    model, test = zoo.load("bam", seed=0)          # eval mode; test = its task's held-out split
    maps = model.record_attention(test.images[:8])
    zoo.manifest("bam", seed=0)["metrics"]         # what was measured right after training

Each entry is one mechanism on the task it is scored on (its registry entry's ``task``), plus the
plain network ("none") on every such task, at each seed of :data:`SEEDS`. Seed ``s`` draws the
task (``train_n + test_n`` images, first ``train_n`` for training), the initial weights and the
batch order, with the settings of :data:`SETTINGS` (:func:`attn_tutorial.train.fit`).
``python -m attn_tutorial zoo --train`` (re)trains them all; ``python -m attn_tutorial zoo``
lists them.

Files, next to this module: ``<mechanism>.<task>.seed<s>.pt`` (the weights) and ``.json`` (the
manifest: task and its seed, settings, torch version, thread count, date, file size, and the
held-out metrics measured right after training, on the weights as stored). To keep the zoo small
the 2-D-and-more weights (convs, linears, memories) are stored as int8 with one float scale per
output channel (symmetric, ``scale = max|w| / 127``); vectors (biases, norms, BN statistics) as
they are. The manifest also gives the test accuracy before that rounding (``accuracy_fp32``).
Files are read with ``torch.load(..., weights_only=True)``: plain tensors, nothing executed.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attn_tutorial import data
from attn_tutorial._validate import require_int
from attn_tutorial.data import make_task
from attn_tutorial.metrics import (attention_metric, attention_scores, class_selectivity,
                                   mean_metric, score_gate_height, score_own_instance)
from attn_tutorial.models import TinyResNet, build_model
from attn_tutorial.registry import MECHANISMS
from attn_tutorial.resample import RESAMPLES, bootstrap_ratio, per_image
from attn_tutorial.show import count_params
from attn_tutorial.train import evaluate, fit, mean_iou

__all__ = ["FOLDER", "SEEDS", "SETTINGS", "entries", "stem", "load", "manifest", "manifests",
           "measure", "train_entry", "pack", "unpack", "main"]

#: Where the weights and manifests live (inside the installed package).
FOLDER = Path(__file__).resolve().parent

#: The seeds every entry is trained at.
SEEDS: tuple[int, ...] = (0, 1, 2)

#: Training settings shared by every entry (fit's arguments and the task's size).
SETTINGS: dict[str, Any] = {"train_n": 1500, "test_n": 400, "steps": 200, "batch_size": 64,
                            "lr": 3e-3, "weight_decay": 1e-4}


def entries() -> list[tuple[str, str]]:
    """``(mechanism, task)`` of every zoo entry: the plain network per task, then the registry."""
    tasks = list(dict.fromkeys(spec.task for spec in MECHANISMS.values()))
    return [("none", task) for task in tasks] + [(name, spec.task)
                                                 for name, spec in MECHANISMS.items()]


def _task_of(mechanism: str, task: str | None) -> str:
    if task is not None:
        return task
    if mechanism == "none":
        return "object_on_texture"
    if mechanism not in MECHANISMS:
        raise ValueError(f"mechanism={mechanism!r} is not registered; known: "
                         f"{['none', *MECHANISMS]}")
    return MECHANISMS[mechanism].task


def stem(mechanism: str, task: str | None = None, seed: int = 0) -> str:
    """The entry's file name without suffix: ``<mechanism>.<task>.seed<seed>``."""
    require_int("seed", seed, minimum=0)
    return f"{mechanism}.{_task_of(mechanism, task)}.seed{seed}"


# --------------------------------------------------------------------------- storage

def pack(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A state_dict as three flat buffers and an index (small files: few records to store).

    Float tensors of rank >= 2 become int8 with one float32 scale per output channel
    (``scale = max|w| / 127``, ``q = round(w / scale)``); every other tensor is kept exactly
    (floats as float32, integers as int64). ``index`` lists ``(key, kind, shape, offset)``.
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"state={state!r} must be a state_dict (a dict of tensors)")
    codes, scales, floats, ints, index = [], [], [], [], []
    sizes = {"int8": 0, "float": 0, "int": 0}
    for key, value in state.items():
        value = value.detach().cpu().contiguous()
        shape = list(value.shape)
        if value.is_floating_point() and value.dim() >= 2:
            flat = value.reshape(value.shape[0], -1).float()
            scale = (flat.abs().amax(dim=1) / 127).clamp_min(1e-12)
            codes.append(torch.round(flat / scale[:, None]).to(torch.int8).flatten())
            scales.append(scale)
            index.append((key, "int8", shape, sizes["int8"]))
            sizes["int8"] += value.numel()
        elif value.is_floating_point():
            floats.append(value.float().flatten())
            index.append((key, "float", shape, sizes["float"]))
            sizes["float"] += value.numel()
        else:
            ints.append(value.long().flatten())
            index.append((key, "int", shape, sizes["int"]))
            sizes["int"] += value.numel()
    cat = lambda parts, dtype: torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)  # noqa: E731
    return {"format": "attn_tutorial.zoo/1", "index": index,
            "int8": cat(codes, torch.int8), "scale": cat(scales, torch.float32),
            "float": cat(floats, torch.float32), "int": cat(ints, torch.int64)}


def unpack(packed: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The float state_dict :func:`pack` stands for (int8 codes times their scales)."""
    if not isinstance(packed, dict) or packed.get("format") != "attn_tutorial.zoo/1":
        raise ValueError("packed must be the dict zoo.pack returns (format 'attn_tutorial.zoo/1')")
    state: dict[str, torch.Tensor] = {}
    scale_at = 0
    for key, kind, shape, offset in packed["index"]:
        count = math.prod(shape)
        if kind == "int8":
            codes = packed["int8"][offset:offset + count].float().reshape(shape[0], -1)
            scale = packed["scale"][scale_at:scale_at + shape[0]]
            scale_at += shape[0]
            state[key] = (codes * scale[:, None]).reshape(shape)
        else:
            state[key] = packed[kind][offset:offset + count].reshape(shape).clone()
    return state


# --------------------------------------------------------------------------- measuring

def _metric_dict(metric) -> dict[str, Any] | None:
    if metric is None:
        return None
    return {"name": metric.name, "value": metric.value, "chance": metric.chance,
            "null": metric.null}


#: Second readings recorded for some entries (lesson 09 asserts on them): name -> scorer.
EXTRA_SCORERS = {"bam": {"gate_height": score_gate_height},
                 "scconv": {"gate_height": score_gate_height},
                 "pam": {"own_instance": score_own_instance}}


@torch.no_grad()
def measure(model: TinyResNet, test: data.Task) -> dict[str, Any]:
    """What a manifest records about a model on its test split, from one eval pass.

    Accuracy (and mean IoU for segmentation), the attention metric averaged over modules and
    per module (path), the entry's second readings (:data:`EXTRA_SCORERS`) and, in
    classification, each stage's pooled-feature η² (the class selectivity of the globally
    average-pooled stage outputs: what a channel gate could read).
    """
    if not isinstance(model, TinyResNet):
        raise ValueError(f"model={model!r} must be a TinyResNet (what the zoo stores)")
    pooled: dict[str, torch.Tensor] = {}
    hooks = [model.get_submodule(name).register_forward_hook(
        lambda module, inputs, output, name=name: pooled.__setitem__(name, output.mean((2, 3))))
        for name in ("stage1", "stage2", "stage3")]
    try:
        inputs, logits = model.module_inputs(test.images, with_logits=True)
    finally:
        for hook in hooks:
            hook.remove()
    predictions = logits.argmax(dim=1)
    result: dict[str, Any] = {"accuracy": (predictions == test.labels).float().mean().item()}
    if test.kind == "segmentation":
        result["miou"] = mean_iou(predictions, test.labels, logits.shape[1])
    per_module = attention_scores(model, test, inputs=inputs)
    result["metric"] = _metric_dict(mean_metric(per_module))
    result["per_module"] = {path: _metric_dict(m) for path, m in per_module.items()}
    for name, scorer in EXTRA_SCORERS.get(model.mechanism, {}).items():
        result[name] = _metric_dict(attention_metric(model, test, scorer, inputs))
    parts = per_image(model, test, inputs)
    if parts is not None:
        result["bootstrap"] = {"value_over_null_95": list(bootstrap_ratio(*parts, seed=0)),
                               "resamples": RESAMPLES, "seed": 0,
                               "what": "test images resampled with replacement, each with its "
                                       "own score and null (attn_tutorial.resample)"}
    if test.kind == "classification":
        result["stage_feature_eta2"] = {name: class_selectivity(value, test.labels).value
                                        for name, value in pooled.items()}
    return result


@functools.lru_cache(maxsize=8)
def _cached_split(task: str, seed: int, train_n: int, test_n: int
                  ) -> tuple[data.Task, data.Task]:
    full = make_task(task, train_n + test_n, seed)
    return full.split(train_n, test_n)


def _split(task: str, seed: int, settings: dict[str, Any]) -> tuple[data.Task, data.Task]:
    """The task's train and test splits at ``seed`` (drawn once per process and cached: do not
    modify them in place)."""
    return _cached_split(task, seed, settings["train_n"], settings["test_n"])


def train_entry(mechanism: str, task: str | None = None, seed: int = 0,
                settings: dict[str, Any] | None = None, folder: Path | str | None = None,
                ) -> tuple[TinyResNet, dict[str, Any]]:
    """Train one entry as ``zoo --train`` does; write its ``.pt`` and ``.json`` to ``folder``
    (default :data:`FOLDER`; ``folder=False`` writes nothing).

    Returns the model as stored (int8-rounded weights) and its manifest.
    """
    task = _task_of(mechanism, task)
    settings = {**SETTINGS, **_check_settings(settings or {})}
    if folder is not False:
        folder = _writable(folder)
    train, test = _split(task, seed, settings)
    model = build_model(mechanism, num_classes=train.num_classes, kind=train.kind, seed=seed)
    untrained = attention_metric(model, test)
    history = fit(model, train, steps=settings["steps"], batch_size=settings["batch_size"],
                  lr=settings["lr"], weight_decay=settings["weight_decay"], seed=seed)
    accuracy_fp32 = evaluate(model, test)
    packed = pack(model.state_dict())
    stored = build_model(mechanism, num_classes=train.num_classes, kind=train.kind, seed=seed)
    stored.load_state_dict(unpack(packed))
    stored.eval()
    record = {
        "mechanism": mechanism, "task": task, "seed": seed,
        "data": {"task": task, "seed": seed, "train_n": settings["train_n"],
                 "test_n": settings["test_n"], "test_split": "images train_n .. train_n+test_n"},
        "settings": {k: settings[k] for k in ("steps", "batch_size", "lr", "weight_decay")},
        "optimizer": "AdamW, cross-entropy, channels-last (attn_tutorial.train.fit)",
        "params": count_params(stored),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "train_seconds": round(history.seconds, 2),
        "ms_per_step": round(1000 * history.seconds / history.steps, 1),
        "losses_every_10": [round(v, 4) for v in history.losses[::10]],
        "final_loss": round(history.losses[-1], 4),
        "storage": "int8 per-output-channel (rank >= 2), other tensors exact (zoo.pack)",
        "accuracy_fp32": accuracy_fp32,
        "untrained_metric": _metric_dict(untrained),
        "metrics": measure(stored, test),
    }
    if folder is not False:
        folder.mkdir(parents=True, exist_ok=True)
        name = stem(mechanism, task, seed)
        torch.save(packed, folder / f"{name}.pt")
        record["size_bytes"] = (folder / f"{name}.pt").stat().st_size
        (folder / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")
    return stored, record


# --------------------------------------------------------------------------- files

def _read_json(path: Path) -> dict[str, Any]:
    """A manifest, or a ValueError naming the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); retrain the entry or restore "
                         "the file") from error


def _folder(folder: Path | str | None, what: str = "folder") -> Path:
    """An existing folder (default :data:`FOLDER`), or a ValueError naming it (as ``what``)."""
    path = Path(folder) if folder is not None else FOLDER
    if not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} does not exist or is not a folder")
    return path


def _check_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Overrides of :data:`SETTINGS`: known keys, positive integer sizes."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"settings has unknown keys {unknown}; known: {sorted(SETTINGS)}")
    for key in ("train_n", "test_n", "steps", "batch_size"):
        if key in settings:
            require_int(f"settings[{key!r}]", settings[key])
    return settings


def _writable(folder: Path | str | None, what: str = "folder") -> Path:
    """The folder the weights go to: it may be created, but nothing on its path may be a file."""
    path = Path(folder) if folder is not None else FOLDER
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise ValueError(f"{what} {str(path)!r} cannot be written: {str(part)!r} is a "
                                 "file")
            break
    return path


# --------------------------------------------------------------------------- loading

def manifest(mechanism: str, seed: int = 0, task: str | None = None,
             folder: Path | str | None = None) -> dict[str, Any]:
    """The manifest of one entry (a dict, as written by :func:`train_entry`)."""
    path = _folder(folder) / f"{stem(mechanism, task, seed)}.json"
    if not path.exists():
        raise ValueError(f"no zoo entry {path.stem!r} (seeds {SEEDS}; train it with "
                         "python -m attn_tutorial zoo --train)")
    return _read_json(path)


def manifests(folder: Path | str | None = None) -> list[dict[str, Any]]:
    """Every manifest in the zoo, sorted by mechanism, task and seed."""
    paths = sorted(_folder(folder).glob("*.seed*.json"))
    return [_read_json(p) for p in paths]


def load(mechanism: str, seed: int = 0, task: str | None = None,
         folder: Path | str | None = None) -> tuple[TinyResNet, data.Task]:
    """A shipped model in eval mode and the held-out split of its task.

    Args:
        mechanism: a registered name or "none".
        seed: one of :data:`SEEDS`.
        task: the task (default: the mechanism's; for "none" ``object_on_texture``).

    Returns ``(model, test)``: test is the :class:`~attn_tutorial.data.Task` the manifest's
    metrics were measured on (regenerated from the seed, no download).
    """
    info = manifest(mechanism, seed, task, folder)
    path = _folder(folder) / f"{stem(mechanism, info['task'], seed)}.pt"
    try:
        packed = torch.load(path, weights_only=True)
    except Exception as error:  # noqa: BLE001 - EOFError, UnpicklingError, RuntimeError, OSError
        raise ValueError(f"{path} cannot be read as zoo weights ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); retrain the entry "
                         "or restore the file") from error
    settings = {**SETTINGS, **info["data"]}
    _, test = _split(info["task"], seed, settings)
    model = build_model(mechanism, num_classes=test.num_classes, kind=test.kind, seed=seed)
    model.load_state_dict(unpack(packed))
    return model.eval(), test


# --------------------------------------------------------------------------- command line

def main(train: bool = False, only: list[str] | None = None, seeds: list[int] | None = None,
         out: str | None = None, shard: tuple[int, int] = (0, 1),
         settings: dict[str, Any] | None = None) -> int:
    """``zoo --train``: train every entry (or ``only`` these mechanisms) at ``seeds``; without
    ``train``: list the entries with their test accuracy and metric (of ``only`` and ``seeds``
    when given). Bad arguments raise ValueError before anything is trained or written."""
    known = ["none", *MECHANISMS]
    for name in only or ():
        if name not in known:
            raise ValueError(f"--only {name!r}: not a zoo mechanism; choose from "
                             f"{', '.join(known)}")
    for seed in seeds or ():
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"--seed {seed}: must be an integer >= 0")
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise ValueError(f"--shard '{index}/{count}': must be i/n with integers 0 <= i < n")
    _check_settings(settings or {})
    if not train:
        _folder(out, "--out")
        listed = [info for info in manifests(out) if (not only or info["mechanism"] in only)
                  and (seeds is None or info["seed"] in seeds)]
        if not listed:
            raise ValueError(f"no zoo entries in {str(_folder(out))!r}"
                             + (" for --only/--seed" if only or seeds else ""))
        for info in listed:
            metric = info["metrics"]["metric"]
            text = "-" if metric is None else (f"{metric['value']:.3f} (chance "
                                               f"{metric['chance']:.3f}, null {metric['null']:.3f})")
            print(f"{info['mechanism']:<10} {info['task']:<26} seed {info['seed']}  "
                  f"acc {info['metrics']['accuracy']:.3f}  metric {text}  "
                  f"{info['size_bytes'] / 1e3:.0f} kB")
        return 0
    _writable(out, "--out")
    jobs = [(m, t, s) for s in (seeds if seeds is not None else SEEDS)
            for m, t in entries() if not only or m in only]
    if not jobs[index::count]:
        raise ValueError(f"--shard '{index}/{count}' leaves none of the {len(jobs)} jobs")
    for m, t, s in jobs[index::count]:
        start = time.perf_counter()
        _, info = train_entry(m, t, s, settings, folder=out)
        print(f"{stem(m, t, s)}: acc {info['metrics']['accuracy']:.3f}, "
              f"{info['ms_per_step']} ms/step, {time.perf_counter() - start:.1f} s", flush=True)
    return 0
