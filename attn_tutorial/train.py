"""A minimal, seeded training loop for the tiny models of the lessons.

``fit`` trains a model on a :class:`~attn_tutorial.data.Task` (or an ``(images, targets)`` pair)
with AdamW and returns a small :class:`History`; ``evaluate`` scores a model: accuracy for
classification, pixel accuracy or mean IoU for segmentation.

Same seed, same thread count, same model weights → the same losses, bit for bit: the data order
comes from a ``torch.Generator`` seeded with ``seed``, and ``torch.manual_seed(seed)`` is set
before the first step (for dropout). The model's initial weights are the caller's business — seed
before building it.

Nothing is printed unless ``progress=True``, and then only one line on stderr, so executed
notebooks (whose stdout *and* stderr nbval compares) stay clean.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from attn_tutorial._validate import (require_bool, require_int, require_module, require_number,
                                     require_tensor)
from attn_tutorial.data import Task

Data = Task | tuple[torch.Tensor, torch.Tensor]


@dataclass
class History:
    """What :func:`fit` did.

    Attributes:
        losses: training loss of every optimisation step.
        epoch_losses: mean training loss of each (complete or partial) pass over the data.
        train_accuracy: accuracy on the whole training set after training (pixel accuracy for
            segmentation).
        test_accuracy: the same on the test set, or None without one.
        test_miou: mean IoU on the test set (segmentation with a test set), else None.
        seconds: wall time of the training loop (without the final evaluations).
        steps: number of optimisation steps taken.
    """

    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    train_accuracy: float = float("nan")
    test_accuracy: float | None = None
    test_miou: float | None = None
    seconds: float = 0.0
    steps: int = 0


def _check_targets(name: str, images: torch.Tensor, targets: torch.Tensor) -> None:
    """Non-empty, as many targets as images, integer class indices (not one-hot floats)."""
    if not isinstance(images, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError(f"{name} must hold tensors, got {type(images).__name__} and "
                         f"{type(targets).__name__}")
    if len(images) == 0:
        raise ValueError(f"{name} has 0 images; it needs at least 1")
    if len(images) != len(targets):
        raise ValueError(
            f"{name} has {len(images)} images but {len(targets)} targets; they must match"
        )
    if targets.dtype.is_floating_point or targets.dtype.is_complex or targets.dtype == torch.bool:
        hint = (" (one-hot? pass targets.argmax(dim=1))" if targets.dim() == 2 else "")
        raise ValueError(f"{name}'s targets have dtype {targets.dtype} and shape "
                         f"{tuple(targets.shape)}; they must be integer class indices (int64): "
                         f"B for images, B×H×W for pixels{hint}")


def _unpack(data: Data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, targets)`` from a Task or a pair, with a clear error otherwise."""
    if isinstance(data, Task):
        images, targets = data.images, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, targets = data
    else:
        raise ValueError(f"{name} must be a Task or an (images, targets) pair, got {type(data)}")
    _check_targets(name, images, targets)
    return images, targets


def _check_batch_size(batch_size: int) -> None:
    require_int("batch_size", batch_size)


def _loss_kind(loss: str | None, targets: torch.Tensor) -> str:
    """"ce" (one class per image, targets B) or "seg" (one class per pixel, targets B×H×W)."""
    if loss is None:
        return "seg" if targets.dim() == 3 else "ce"
    if loss not in ("ce", "seg"):
        raise ValueError(f'loss={loss!r} must be "ce", "seg" or None (chosen from the targets)')
    expected = 3 if loss == "seg" else 1
    if targets.dim() != expected:
        raise ValueError(
            f'loss={loss!r} needs {expected}-D targets, got shape {tuple(targets.shape)}'
        )
    return loss


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` on ``images`` in eval mode, in batches; the mode is restored after."""
    require_module("model", model)
    require_tensor("images", images)
    _check_batch_size(batch_size)
    if len(images) == 0:
        raise ValueError("images is empty (0 images); predict needs at least 1")
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(images[i:i + batch_size])
                          for i in range(0, len(images), batch_size)])
    finally:
        model.train(was_training)


def mean_iou(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> float:
    """Mean over classes of |pred ∩ target| / |pred ∪ target|, skipping classes absent from
    both (background, class 0, counts as a class)."""
    require_int("num_classes", num_classes)
    if require_tensor("predictions", predictions).shape != require_tensor("targets", targets).shape:
        raise ValueError(f"predictions have shape {tuple(predictions.shape)} but targets have "
                         f"shape {tuple(targets.shape)}; they must match")
    ious = []
    for c in range(num_classes):
        pred, true = predictions == c, targets == c
        union = (pred | true).sum().item()
        if union > 0:
            ious.append((pred & true).sum().item() / union)
    if not ious:
        raise ValueError(f"no class in 0..{num_classes - 1} occurs in the predictions or targets")
    return sum(ious) / len(ious)


def evaluate(model: nn.Module, images: torch.Tensor | Task, targets: torch.Tensor | None = None,
             *, metric: str = "accuracy", batch_size: int = 256) -> float:
    """Score ``model`` on ``images`` (``B×3×H×W``) against ``targets``, or on a Task.

    ``metric="accuracy"``: fraction of correct images (targets ``B``, logits ``B×K``) or of
    correct pixels (targets ``B×H×W``, logits ``B×K×H×W``). ``metric="miou"``: mean IoU over
    the K classes (segmentation only).
    """
    if isinstance(images, Task):
        images, targets = images.images, images.labels
    if targets is None:
        raise ValueError("targets is None: pass targets, or a Task as images")
    _check_targets("the data", images, targets)
    _check_batch_size(batch_size)
    if metric not in ("accuracy", "miou"):
        raise ValueError(f'metric={metric!r} must be "accuracy" or "miou"')
    if metric == "miou" and targets.dim() != 3:
        raise ValueError(f'metric="miou" needs B×H×W targets, got shape {tuple(targets.shape)}')
    logits = predict(model, images, batch_size)
    predictions = logits.argmax(dim=1).to(targets.device)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"the model's predictions have shape {tuple(predictions.shape)} but targets have "
            f"shape {tuple(targets.shape)}"
        )
    if metric == "miou":
        return mean_iou(predictions, targets, num_classes=logits.shape[1])
    return (predictions == targets).float().mean().item()


def fit(model: nn.Module, train: Data, test: Data | None = None, *, epochs: int = 5,
        steps: int | None = None, batch_size: int = 64, lr: float = 3e-3,
        weight_decay: float = 1e-4, seed: int = 0, loss: str | None = None,
        progress: bool = False, channels_last: bool = True) -> History:
    """Train ``model`` with AdamW and cross-entropy; return its :class:`History`.

    Args:
        model: maps ``B×3×H×W`` images to ``B×K`` logits ("ce") or ``B×K×H×W`` ("seg").
        train, test: a :class:`~attn_tutorial.data.Task` or an ``(images, targets)`` pair.
        epochs: passes over the training data; ignored when ``steps`` is given.
        steps: exact number of optimisation steps (the data is cycled, reshuffled each pass).
        batch_size: images per step; the last incomplete batch of a pass is dropped, unless the
            data is smaller than one batch (then each step sees all of it).
        lr, weight_decay: AdamW's.
        seed: fixes the data order and the global RNG (dropout) — not the initial weights.
        loss: "ce" (a class per image), "seg" (a class per pixel) or None: chosen from the
            targets' rank.
        progress: show one updating line (epoch, step, loss) on stderr.
        channels_last: train in PyTorch's channels-last memory layout (the model's 4-D weights
            and each batch): the CPU convolutions (oneDNN) run about 25–40 % faster in it for
            these tiny networks (measured, see the zoo's notes). Same maths; the last bits of
            the losses differ from the default layout.

    The model is left in eval mode after training (in channels-last layout if asked; a
    state_dict saved from it loads into any model).
    """
    require_module("model", model)
    images, targets = _unpack(train, "train")
    kind = _loss_kind(loss, targets)
    _check_batch_size(batch_size)
    require_number("lr", lr, positive=True)
    require_number("weight_decay", weight_decay, minimum=0)
    require_int("seed", seed, minimum=0)
    require_bool("progress", progress)
    require_bool("channels_last", channels_last)
    if steps is None:
        require_int("epochs", epochs, why="fit needs at least 1 step")
    else:
        require_int("steps", steps, why="fit needs at least 1 step")
    total = steps if steps is not None else epochs * max(1, len(images) // batch_size)

    torch.manual_seed(seed)
    order_rng = torch.Generator().manual_seed(seed)
    batch = min(batch_size, len(images))
    layout = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.to(memory_format=layout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    history = History()
    model.train()
    start = time.perf_counter()
    epoch, epoch_losses = 0, []
    while history.steps < total:
        order = torch.randperm(len(images), generator=order_rng)
        for first in range(0, len(images) - batch + 1, batch):
            if history.steps == total:
                break
            index = order[first:first + batch]
            batch_images = images[index]
            if channels_last and batch_images.dim() == 4:
                batch_images = batch_images.contiguous(memory_format=layout)
            logits = model(batch_images)
            if logits.dim() != targets.dim() + 1:
                raise ValueError(
                    f"the model returns logits of shape {tuple(logits.shape)} but the targets "
                    f"have shape {tuple(targets.shape)}: loss={kind!r} needs "
                    + ("B×K logits" if kind == "ce" else "B×K×H×W logits")
                )
            step_loss = F.cross_entropy(logits, targets[index])
            if not torch.isfinite(step_loss):
                raise ValueError(
                    f"the loss at step {history.steps + 1} is {step_loss.item()}: the model's "
                    "logits hold NaN or inf (a module that outputs NaN, or lr too large); "
                    "training stopped"
                )
            optimizer.zero_grad()
            step_loss.backward()
            optimizer.step()
            history.losses.append(step_loss.item())
            epoch_losses.append(history.losses[-1])
            history.steps += 1
            if progress:
                print(f"\repoch {epoch + 1}  step {history.steps}/{total}  "
                      f"loss {history.losses[-1]:.3f}", end="", file=sys.stderr, flush=True)
        history.epoch_losses.append(sum(epoch_losses) / len(epoch_losses))
        epoch, epoch_losses = epoch + 1, []
    history.seconds = time.perf_counter() - start
    if progress:
        print(f"\rdone: {history.steps} steps in {history.seconds:.1f} s, "
              f"loss {history.losses[-1]:.3f}" + " " * 10, file=sys.stderr, flush=True)

    model.eval()
    history.train_accuracy = evaluate(model, images, targets)
    if test is not None:
        test_images, test_targets = _unpack(test, "test")
        history.test_accuracy = evaluate(model, test_images, test_targets)
        if kind == "seg":
            history.test_miou = evaluate(model, test_images, test_targets, metric="miou")
    return history
