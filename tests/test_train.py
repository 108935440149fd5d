"""The training loop: tiny plain networks learn the synthetic tasks in seconds, deterministically;
evaluate's accuracy and mean IoU agree with counts written out here; progress stays off stdout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attn_tutorial.data import multi_object_segmentation, multi_scale_objects, object_on_texture
from attn_tutorial.train import evaluate, fit, mean_iou


def tiny_cnn(pool: str = "avg", width: int = 16, classes: int = 4) -> nn.Module:
    """Two conv layers, a global pooling (mean or max) and a linear classifier."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1),
        nn.Flatten(), nn.Linear(2 * width, classes),
    )


def tiny_fcn(classes: int) -> nn.Module:
    """Two conv layers (the second dilated) and a 1×1 classifier per pixel."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, classes, 1),
    )


class FixedLogits(nn.Module):
    """Returns stored logits for the images it is given (the images are indices)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.logits[index.long().flatten()]


# ------------------------------------------------------------------ the tiny networks learn

def test_max_pooling_cnn_learns_object_on_texture():
    train, test = object_on_texture(2500, seed=0).split(2000, 500)
    torch.manual_seed(0)
    history = fit(tiny_cnn("max"), train, test, steps=150, batch_size=64, lr=1e-2)
    assert history.test_accuracy > 0.75  # chance 0.25
    assert history.epoch_losses[-1] < history.epoch_losses[0]


def test_max_pooling_cnn_learns_multi_scale_objects():
    train, test = multi_scale_objects(2500, seed=0).split(2000, 500)
    torch.manual_seed(0)
    history = fit(tiny_cnn("max"), train, test, steps=150, batch_size=64, lr=1e-2)
    assert history.test_accuracy > 0.75  # chance 0.25


def test_average_pooling_cnn_beats_chance_on_object_on_texture():
    # Averaging dilutes the object by its area share: learning is much slower than with max
    # pooling — exactly what a spatial attention gate is meant to fix.
    train, test = object_on_texture(2500, seed=0).split(2000, 500)
    torch.manual_seed(0)
    history = fit(tiny_cnn("avg"), train, test, steps=300, batch_size=64, lr=1e-2)
    assert history.test_accuracy > test.chance + 0.1


def test_fully_convolutional_net_beats_the_background_share():
    train, test = multi_object_segmentation(1500, seed=0).split(1000, 500)
    torch.manual_seed(0)
    history = fit(tiny_fcn(train.num_classes), train, test, steps=200, batch_size=32, lr=1e-2)
    assert history.test_accuracy > test.chance + 0.05
    assert history.test_miou > 0.35  # always answering background: 0.78 / 4 classes ~ 0.2


# ------------------------------------------------------------------ the loop itself

def small_problem(seed: int = 0):
    return object_on_texture(100, size=16, seed=seed, radius=(3, 6)).split(80, 20)


def test_same_seed_same_run_other_seed_other_order():
    train, test = small_problem()
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(0)
        model = tiny_cnn(width=4)
        runs.append((fit(model, train, test, steps=6, batch_size=16, seed=seed), model))
    (h0, m0), (h1, m1), (h2, _) = runs
    assert h0.losses == h1.losses
    assert all(torch.equal(a, b) for a, b in zip(m0.state_dict().values(),
                                                 m1.state_dict().values()))
    assert h0.losses != h2.losses


def test_channels_last_is_the_same_training_up_to_rounding():
    # the faster memory layout changes only the order of float operations
    train, _ = small_problem()
    histories = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        histories.append(fit(tiny_cnn(width=4), train, steps=6, batch_size=16,
                             channels_last=channels_last).losses)
    assert histories[0] == pytest.approx(histories[1], rel=1e-3, abs=1e-4)


def test_steps_epochs_and_history_fields():
    train, test = small_problem()
    torch.manual_seed(0)
    history = fit(tiny_cnn(width=4), train, epochs=2, batch_size=32)
    assert history.steps == len(history.losses) == 2 * (80 // 32)
    assert len(history.epoch_losses) == 2 and history.test_accuracy is None
    assert history.test_miou is None and history.seconds > 0
    assert 0 <= history.train_accuracy <= 1
    history = fit(tiny_cnn(width=4), (train.images, train.labels), test, steps=7,
                  batch_size=32)
    assert history.steps == 7 and len(history.epoch_losses) == 4  # 2 + 2 + 2 + 1 steps
    torch.manual_seed(0)
    history = fit(tiny_cnn(width=4), train[:10], steps=3, batch_size=64)  # smaller than a batch
    assert history.steps == 3


def test_progress_goes_to_stderr_only_and_only_when_asked(capsys):
    train, _ = small_problem()
    fit(tiny_cnn(width=4), train, steps=3, batch_size=16)
    out, err = capsys.readouterr()
    assert out == "" and err == ""
    fit(tiny_cnn(width=4), train, steps=3, batch_size=16, progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "step 3/3" in err and err.count("\n") == 1


def test_evaluate_accuracy_counts_and_restores_the_mode():
    logits = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    targets = torch.randint(4, (50,), generator=torch.Generator().manual_seed(1))
    model = FixedLogits(logits).train()
    correct = sum(int(max(range(4), key=lambda k: logits[i, k]) == targets[i]) for i in range(50))
    assert evaluate(model, torch.arange(50), targets, batch_size=7) == pytest.approx(correct / 50)
    assert model.training


def test_evaluate_pixel_accuracy_and_mean_iou_against_counts():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, 5, 7, generator=g)
    targets = torch.randint(3, (6, 5, 7), generator=g)
    targets[targets == 2] = 1  # class 2 may then be predicted but never true
    model = FixedLogits(logits)
    pred = logits.argmax(dim=1)
    pixels = [(p, t) for p, t in zip(pred.flatten().tolist(), targets.flatten().tolist())]
    assert evaluate(model, torch.arange(6), targets) == pytest.approx(
        sum(p == t for p, t in pixels) / len(pixels))
    ious = []
    for c in range(3):
        inter = sum(p == c and t == c for p, t in pixels)
        union = sum(p == c or t == c for p, t in pixels)
        if union:
            ious.append(inter / union)
    expected = sum(ious) / len(ious)
    assert evaluate(model, torch.arange(6), targets, metric="miou") == pytest.approx(expected)
    assert mean_iou(pred, targets, 3) == pytest.approx(expected)


def test_evaluate_takes_a_task():
    train, _ = small_problem()
    model = tiny_cnn(width=4)
    assert evaluate(model, train) == evaluate(model, train.images, train.labels)


@pytest.mark.parametrize("call, match", [
    (lambda t, m: fit(m, t, loss="mse", steps=1), "loss='mse'"),
    (lambda t, m: fit(m, t, loss="seg", steps=1), "3-D targets"),
    (lambda t, m: fit(m, (t.images, t.labels[:5]), steps=1), "targets"),
    (lambda t, m: fit(m, t.images, steps=1), "Task or an"),
    (lambda t, m: fit(m, t, steps=0), "at least 1"),
    (lambda t, m: fit(m, t, batch_size=0), "batch_size=0"),
    (lambda t, m: fit(tiny_fcn(4), t, steps=1), "B×K logits"),
    (lambda t, m: evaluate(m, t.images), "targets is None"),
    (lambda t, m: evaluate(m, t, metric="miou"), "B×H×W"),
    (lambda t, m: evaluate(m, t, metric="f1"), "metric='f1'"),
    (lambda t, m: evaluate(m, t.images, t.labels[:, None].expand(-1, 16)), "shape"),
    # one-hot float targets: one message that says what the targets are and what to pass
    (lambda t, m: fit(m, (t.images, nn.functional.one_hot(t.labels, 4).float()), steps=1),
     r"dtype torch.float32 and shape \(80, 4\); they must be integer class indices.*argmax"),
    (lambda t, m: evaluate(m, t.images, nn.functional.one_hot(t.labels, 4).float()),
     r"dtype torch.float32 .* must be integer class indices"),
    # empty data and a zero batch: named, not "range() arg 3 must not be zero"
    (lambda t, m: fit(m, (t.images[:0], t.labels[:0]), steps=1), "train has 0 images"),
    (lambda t, m: fit(m, t, t[:0], steps=1), "test has 0 images"),
    (lambda t, m: evaluate(m, t.images[:0], t.labels[:0]), "0 images"),
    (lambda t, m: evaluate(m, t, batch_size=0), "batch_size=0 must be a positive integer"),
    (lambda t, m: evaluate(m, t, batch_size=2.5), "batch_size=2.5 must be a positive integer"),
    (lambda t, m: fit(m, t, batch_size=-3, steps=1), "batch_size=-3 must be a positive integer"),
])
def test_bad_arguments_are_refused(call, match):
    train, _ = small_problem()
    with pytest.raises(ValueError, match=match):
        call(train, tiny_cnn(width=4))
