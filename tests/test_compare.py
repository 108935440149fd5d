"""plug_and_compare: same data and seed for every row, a learner's module gets its row, errors."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch
from torch import nn

from attn_tutorial.bench import count_flops
from attn_tutorial.compare import plug_and_compare
from attn_tutorial.data import object_on_texture
from attn_tutorial.metrics import score_spatial_mass
from attn_tutorial.models import build_model
from attn_tutorial.registry import define_mechanism, register_mechanism, unregister_mechanism

matplotlib.use("Agg")
SMALL = dict(steps=3, train_n=64, test_n=32, batch_size=16, seed=0)


class MyGate(nn.Module):
    """A learner's spatial gate: x * sigmoid(conv1x1(x)), with its map exposed."""

    def __init__(self, channels):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, kernel_size=1)

    def attention_map(self, x):
        return torch.sigmoid(self.score(x))[:, 0]

    def forward(self, x):
        return x * torch.sigmoid(self.score(x))


@pytest.fixture
def my_gate():
    register_mechanism("my_gate", MyGate, position="stage", scorer=score_spatial_mass,
                       overwrite=True)
    yield "my_gate"
    unregister_mechanism("my_gate")


def test_rows_for_builtin_and_learner_module(my_gate):
    result = plug_and_compare(["none", "eca", my_gate], **SMALL)
    assert [r.mechanism for r in result.rows] == ["none", "eca", "my_gate"]
    mine = result["my_gate"]
    assert mine.position == "stage"
    assert mine.params == sum(p.numel() for p in build_model("my_gate").parameters())
    assert mine.params == result["none"].params + (16 + 1) + (32 + 1)  # two 1×1 convs C -> 1
    assert mine.flops > result["none"].flops > 0
    assert 0 <= mine.accuracy <= 1 and mine.step_ms > 0 and mine.train_seconds > 0
    assert mine.metric == "spatial mass on object"
    assert 0 < mine.chance < 1 and 0 <= mine.metric_trained <= 1 and 0 < mine.null < 1
    assert math.isnan(result["none"].metric_trained)
    assert result["eca"].chance == pytest.approx(3 / 31)
    text = result.table(timings=False)
    assert "my_gate" in text and "ms/step" not in text
    line = next(ln for ln in text.splitlines() if ln.startswith("my_gate"))
    # the learner's row shows accuracy, the metric trained, its chance and its null
    assert f"{mine.accuracy:.2f}" in line and f"-> {mine.metric_trained:.2f}" in line
    assert f"chance {mine.chance:.2f}" in line and f"null {mine.null:.2f}" in line
    assert "null" in text.splitlines()[0]
    axes = result.plot()
    assert len(axes) == 2
    matplotlib.pyplot.close("all")


def test_an_unregistered_entry_and_a_bare_class_get_their_rows():
    mine = define_mechanism("mine", MyGate, "stage", scorer=score_spatial_mass)
    result = plug_and_compare([mine, MyGate], **SMALL)
    assert [r.mechanism for r in result.rows] == ["mine", "MyGate"]
    assert result["mine"].position == "stage" and result["MyGate"].position == "block"
    assert result["mine"].metric == "spatial mass on object"
    assert math.isnan(result["MyGate"].metric_trained)  # a bare class has no scorer


def test_flops_are_count_flops_of_one_image():
    result = plug_and_compare(["se"], **SMALL)
    model = build_model("se").eval()
    image = object_on_texture(96, seed=0).images[:1]
    assert result["se"].flops == count_flops(model, image)


def test_same_seed_same_rows_and_fair_start():
    a = plug_and_compare(["eca"], **SMALL)
    b = plug_and_compare(["eca"], keep_models=True, **SMALL)
    assert a.models == {} and a.test is None
    assert list(b.models) == ["eca"] and len(b.test) == 32
    assert a["eca"].accuracy == b["eca"].accuracy
    assert a["eca"].metric_trained == b["eca"].metric_trained


def test_segmentation_task_and_module_without_metric():
    register_mechanism("plain_test", lambda c: nn.Identity(), position="head", overwrite=True)
    try:
        result = plug_and_compare(["pam", "plain_test"], task="multi_object_segmentation",
                                  **SMALL)
    finally:
        unregister_mechanism("plain_test")
    assert result["pam"].metric == "attention mass on object"
    assert math.isnan(result["plain_test"].metric_trained)


def test_errors():
    with pytest.raises(ValueError, match="not registered"):
        plug_and_compare(["nope"], **SMALL)
    with pytest.raises(ValueError, match="empty"):
        plug_and_compare([], **SMALL)
    with pytest.raises(ValueError, match="task"):
        plug_and_compare(["none"], task="imagenet", **SMALL)
    with pytest.raises(ValueError, match="steps"):
        plug_and_compare(["none"], **{**SMALL, "steps": 0})


def test_plot_zoo_cuts_the_accuracy_axis_to_the_data_and_gives_each_metric_its_axis():
    from attn_tutorial.compare import from_zoo, plot_zoo
    entries = from_zoo(["none", "se", "bam", "emsa"])
    axes = plot_zoo(entries)
    lowest = min(min(e.accuracy.values) for e in entries.values())
    bottom, top = axes[0].get_ylim()
    assert lowest - 0.05 < bottom <= lowest and top == 1.0        # zoomed to the seeds' accuracies
    assert "cut" in axes[0].get_ylabel()
    # gate contrast (bam) and attention mass (emsa) are different metrics: separate axes
    assert [ax.get_title() for ax in axes[1:]] == [
        "η² of channel gates", "gate contrast: share on object", "attention mass on object"]
    assert axes[0].figure.get_size_inches()[0] <= 10.5
    matplotlib.pyplot.close("all")


def test_plot_zoo_draws_a_null_that_is_the_chance_level_once_and_says_so():
    from attn_tutorial.compare import from_zoo, plot_zoo
    entries = from_zoo(["bam", ("none", "multi_object_segmentation"), "cam"])
    assert list(entries["cam"].null.values) == list(entries["cam"].chance.values)  # CAM's null
    axes = plot_zoo(entries)
    bam_axis, cam_axis = axes[1], axes[2]
    assert len(bam_axis.patches) == 3 and len(cam_axis.patches) == 2   # trained, (null,) chance
    assert "null = chance" in cam_axis.get_title() and "null" not in bam_axis.get_title()
    legend = [t.get_text() for t in axes[-1].get_legend().get_texts()]
    assert legend == ["trained", "null", "chance"]                     # from every metric axis
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels[1] == "none\n@segmentation"             # two lines, no overlap
    matplotlib.pyplot.close("all")
