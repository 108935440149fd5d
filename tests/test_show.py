"""Plotting helpers: what they draw (colour bars, outlines, the query mark, discrete slot colours),
their errors, and the one parameter count."""

from __future__ import annotations

import matplotlib
import pytest
import torch
from torch import nn

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from attn_tutorial import show  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_count_params_against_the_layer_formulas():
    conv = nn.Conv2d(3, 8, 3)                  # 3·8·3·3 weights + 8 biases
    linear = nn.Linear(8, 5, bias=False)       # 8·5
    model = nn.Sequential(conv, nn.BatchNorm2d(8), linear)   # BN: 8 + 8 affine
    assert show.count_params(conv) == 224
    assert show.count_params(model) == 224 + 16 + 40
    linear.weight.requires_grad_(False)
    assert show.count_params(model, trainable_only=True) == 224 + 16


def test_heatmaps_side_by_side_with_colour_bars_and_a_shared_scale():
    a, b = torch.rand(4, 4), 3 * torch.rand(4, 6)
    axes = show.heatmaps([a, b], ["a", "b"], same_scale=True)
    assert len(axes) == 2 and [ax.get_title() for ax in axes] == ["a", "b"]
    assert len(axes[0].figure.axes) == 4                          # two maps + two colour bars
    low, high = axes[0].images[0].get_clim()
    assert (low, high) == pytest.approx((min(a.min(), b.min()).item(), max(a.max(), b.max()).item()))
    with pytest.raises(ValueError, match="2-D"):
        show.heatmaps([torch.rand(2, 2, 2)])
    with pytest.raises(ValueError, match="titles has 1 entries for 2 matrices"):
        show.heatmaps([a, b], ["a"])


def test_gate_bars_one_bar_per_channel_and_gate():
    ax = show.gate_bars(torch.rand(2, 5), ["seed 0", "seed 1"])
    assert len(ax.patches) == 10
    with pytest.raises(ValueError, match="labels has 1 entries for 2 gates"):
        show.gate_bars(torch.rand(2, 5), ["x"])


def test_overlay_draws_the_map_at_image_size_the_outline_and_a_colour_bar():
    image = torch.rand(3, 16, 16)
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:10, 4:10] = True
    ax = show.overlay(image, torch.rand(4, 4), mask, title="t")
    assert ax.images[1].get_array().shape == (16, 16)             # up-sampled 4×4 -> 16×16
    assert len(ax.collections) == 1                               # the object's outline
    assert len(show.overlay(image, torch.rand(4, 4)).collections) == 0   # none without a mask
    assert len(ax.figure.axes) == 2                               # the map's colour bar
    with pytest.raises(ValueError, match="3×H×W"):
        show.overlay(torch.rand(16, 16), torch.rand(4, 4))


def test_overlay_nearest_draws_each_cell_as_one_flat_block():
    image = torch.rand(3, 16, 16)
    cells = torch.arange(16.0).reshape(4, 4)
    drawn = show.overlay(image, cells, upsample="nearest").images[1].get_array()
    for i in range(16):                     # pixel (i, j) shows cell (i // 4, j // 4), 16 / 4 = 4
        for j in range(16):
            assert drawn[i, j] == cells[i // 4, j // 4]
    smooth = show.overlay(image, cells).images[1].get_array()            # bilinear: in between
    assert len(set(smooth.flatten().tolist())) > 16
    row = show.attention_row(torch.rand(16, 16), 5, (4, 4), image=image, upsample="nearest")
    assert len(set(row.images[1].get_array().flatten().tolist())) <= 16
    with pytest.raises(ValueError, match="upsample"):
        show.overlay(image, cells, upsample="bicubic")


def test_attention_row_folds_one_row_and_marks_the_query():
    attention = torch.rand(16, 4).softmax(-1)
    ax = show.attention_row(attention, query=6, grid=(4, 4), key_grid=(2, 2))
    drawn = ax.images[0].get_array()
    assert drawn.shape == (2, 2)
    assert torch.allclose(torch.tensor(drawn.data).flatten(), attention[6])
    (mark,) = ax.lines                                            # query 6 = row 1, column 2
    assert mark.get_xdata()[0] == pytest.approx((2 + 0.5) * 0.5 - 0.5)
    assert mark.get_ydata()[0] == pytest.approx((1 + 0.5) * 0.5 - 0.5)
    with pytest.raises(ValueError, match=r"grid=\(3, 3\) and key_grid=\(2, 2\) need 9×4"):
        show.attention_row(attention, 0, grid=(3, 3), key_grid=(2, 2))
    with pytest.raises(ValueError, match="query=16"):
        show.attention_row(attention, 16, grid=(4, 4), key_grid=(2, 2))


def test_slot_map_is_categorical_with_one_colour_per_slot():
    ids = torch.tensor([[0, 1], [5, 5]])
    ax = show.slot_map(ids, num_slots=16)
    image = ax.images[0]
    assert image.cmap.N == 16                                     # a discrete map, 16 colours
    colours = {tuple(image.cmap(image.norm(v))) for v in range(16)}
    assert len(colours) == 16                                     # each slot its own colour
    bar = ax.figure.axes[1]
    assert [t for t in bar.get_yticks()] == [0, 1, 5]             # ticks for the ids present
    with pytest.raises(ValueError, match=r"ids must lie in \[0, 4\)"):
        show.slot_map(ids, num_slots=4)
