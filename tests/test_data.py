"""The synthetic tasks: seeded, well-formed, fast, and their masks are the objects in the images.

Shape masks are checked against point-in-shape tests written here, pixel by pixel, from the
geometric definitions (not from the signed distances in the library).
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from attn_tutorial.data import (
    PALETTE,
    SHAPES,
    Task,
    multi_object_segmentation,
    multi_scale_objects,
    object_on_texture,
)

GENERATORS = [object_on_texture, multi_scale_objects, multi_object_segmentation]


def inside(shape: str, x: float, y: float, cx: float, cy: float, r: float) -> bool:
    """Is the pixel centre (x, y) inside the shape centred at (cx, cy) with half extent r?"""
    dx, dy = abs(x - cx), y - cy
    if shape == "disc":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return dx <= r and abs(dy) <= r
    if shape == "triangle":  # apex (cx, cy - r), base corners (cx ± r, cy + r)
        return dy <= r and dx <= (dy + r) / 2
    if shape == "cross":  # two bars of half width r / 3
        arm = r / 3
        return (dx <= arm and abs(dy) <= r) or (abs(dy) <= arm and dx <= r)
    raise AssertionError(shape)


def loop_mask(shape: str, cy: float, cx: float, r: float, size: int) -> torch.Tensor:
    return torch.tensor([[inside(shape, x, y, cx, cy, r) for x in range(size)]
                         for y in range(size)])


def assert_same_task(a: Task, b: Task) -> None:
    assert torch.equal(a.images, b.images)
    assert torch.equal(a.labels, b.labels)
    assert torch.equal(a.masks, b.masks)
    for name in ("scales", "instances"):
        assert (getattr(a, name) is None) == (getattr(b, name) is None)
        if getattr(a, name) is not None:
            assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.params.keys() == b.params.keys()
    for key in a.params:
        assert torch.equal(a.params[key], b.params[key])


@pytest.mark.parametrize("make", GENERATORS)
def test_same_seed_same_task_other_seed_other_task(make):
    assert_same_task(make(64, seed=3), make(64, seed=3))
    other = make(64, seed=4)
    assert not torch.equal(make(64, seed=3).images, other.images)
    assert not torch.equal(make(64, seed=3).masks, other.masks)


@pytest.mark.parametrize("make", GENERATORS)
@pytest.mark.parametrize("size", [32, 48])
def test_shapes_dtypes_ranges(make, size):
    task = make(40, size=size, seed=1)
    assert task.images.shape == (40, 3, size, size) and task.images.dtype == torch.float32
    assert task.images.min() >= 0 and task.images.max() <= 1
    assert task.masks.shape == (40, size, size) and task.masks.dtype == torch.bool
    assert task.labels.dtype == torch.int64
    if task.kind == "classification":
        assert task.labels.shape == (40,)
        assert task.labels.min() >= 0 and task.labels.max() < task.num_classes
        assert task.scales.shape == (40,) and task.scales.dtype == torch.float32
    else:
        assert task.kind == "segmentation"
        assert task.labels.shape == task.instances.shape == (40, size, size)
        assert task.labels.max() <= task.num_classes - 1  # class 0 is the background
        assert torch.equal(task.masks, task.labels > 0)
    assert len(task) == 40 and all(v.shape[0] == 40 for v in task.params.values())


@pytest.mark.parametrize("make", [object_on_texture, multi_scale_objects])
def test_classification_masks_match_the_geometry(make):
    task = make(48, seed=5)
    for i in range(len(task)):
        cy, cx = task.params["centres"][i].tolist()
        shape = SHAPES[task.labels[i]]
        expected = loop_mask(shape, cy, cx, task.scales[i].item(), 32)
        assert torch.equal(task.masks[i], expected), (i, shape)


def test_segmentation_masks_match_the_geometry_in_drawing_order():
    task = multi_object_segmentation(16, seed=2, num_classes=4)
    for i in range(len(task)):
        labels = torch.zeros(32, 32, dtype=torch.int64)
        instances = torch.zeros(32, 32, dtype=torch.int64)
        for k, cls in enumerate(task.params["shapes"][i].tolist()):
            if cls == 0:
                continue
            cy, cx = task.params["centres"][i, k].tolist()
            m = loop_mask(SHAPES[cls - 1], cy, cx, task.params["radii"][i, k].item(), 32)
            labels[m], instances[m] = cls, k + 1
        assert torch.equal(task.labels[i], labels)
        assert torch.equal(task.instances[i], instances)


def test_object_pixels_have_the_object_colour_and_the_background_mostly_not():
    task = object_on_texture(200, seed=0)
    colour = PALETTE[task.params["colours"]][:, :, None, None]  # B×3×1×1
    distance = (task.images - colour).abs().amax(dim=1)  # B×H×W, worst channel
    # inside: at least half the pixel is object colour, plus noise of std 0.04
    assert distance[task.masks].mean() < 0.08
    close = distance < 0.1
    assert close[task.masks].float().mean() > 0.8
    assert close[~task.masks].float().mean() < 0.1  # only blobs may share the colour


def test_no_clutter_means_flat_grey_background_with_the_stated_noise():
    task = object_on_texture(100, seed=0, clutter=0.0, noise=0.05)
    background = task.images.permute(1, 0, 2, 3)[:, ~task.masks]  # 3 × background pixels
    assert (background.mean() - 0.5).abs() < 0.01
    assert (background.std() - 0.05).abs() < 0.005


def test_object_area_share_follows_the_shape_area_formulas():
    task = object_on_texture(2000, seed=0)
    share = task.object_share
    assert share.min() > 0.01 and share.max() < 0.30  # the docstring says about 2–25 %
    r = task.scales
    area = torch.stack([math.pi * r**2, 4 * r**2, 2 * r**2, 20 * r**2 / 9])  # 4×B
    expected = area[task.labels, torch.arange(len(task))] / 32**2
    assert ((share - expected).abs() / expected).max() < 0.3  # pixel quantisation
    assert ((share - expected).abs() / expected).mean() < 0.05


@pytest.mark.parametrize("make", [object_on_texture, multi_scale_objects])
def test_labels_are_balanced(make):
    task = make(1001, seed=7)
    counts = torch.bincount(task.labels, minlength=4)
    assert counts.max() - counts.min() <= 1
    assert task.chance == counts.max().item() / 1001


def test_multi_scale_radii_are_log_uniform_between_the_limits():
    task = multi_scale_objects(3000, seed=0)
    r = task.scales
    assert r.min() >= 2 and r.max() <= 12
    thirds = [2 * 6 ** (1 / 3), 2 * 6 ** (2 / 3)]  # equal thirds in log space
    small, large = (r < thirds[0]).float().mean(), (r > thirds[1]).float().mean()
    assert abs(small - 1 / 3) < 0.03 and abs(large - 1 / 3) < 0.03
    assert task.object_share.max() > 8 * task.object_share.min()


def test_segmentation_instances_classes_and_balance():
    task = multi_object_segmentation(500, seed=0, num_classes=3)
    assert torch.equal(task.instances > 0, task.labels > 0)
    shapes = task.params["shapes"]
    count = (shapes > 0).sum(dim=1)
    assert count.min() == 2 and count.max() == 4
    per_class = torch.bincount(shapes[shapes > 0], minlength=4)[1:].float()
    assert per_class.min() > 0.9 * per_class.mean()
    assert 0.6 < task.chance < 0.9 and task.chance == (task.labels == 0).float().mean()
    for i in range(20):  # one class per visible instance
        for inst in task.instances[i].unique()[1:]:
            assert task.labels[i][task.instances[i] == inst].unique().numel() == 1


def test_segmentation_colours_distinct_per_image_or_per_class():
    task = multi_object_segmentation(200, seed=0)
    colours = task.params["colours"]
    assert all(row.unique().numel() == row.numel() for row in colours)
    fixed = multi_object_segmentation(200, seed=0, class_colours=True, clutter=0.0)
    for cls in (1, 2, 3):  # object pixels carry their class's palette colour
        pixels = fixed.images.permute(1, 0, 2, 3)[:, fixed.labels == cls]
        assert ((pixels - PALETTE[cls - 1][:, None]).abs().mean()) < 0.06


@pytest.mark.parametrize("make", GENERATORS)
def test_generating_2000_images_is_fast(make):
    make(10)
    best = math.inf
    for _ in range(2):  # best of two: the machine may be busy
        start = time.perf_counter()
        make(2000, seed=1)
        best = min(best, time.perf_counter() - start)
    assert best < 2.0


def test_split_slicing_and_device():
    task = object_on_texture(30, seed=0)
    train, test = task.split(20, 10)
    assert len(train) == 20 and len(test) == 10
    assert torch.equal(torch.cat([train.images, test.images]), task.images)
    assert torch.equal(test.params["centres"], task.params["centres"][20:])
    assert torch.equal(task[task.labels == 0].labels, task.labels[task.labels == 0])
    assert_same_task(task.to("cpu"), task)
    with pytest.raises(ValueError, match="train_n"):
        task.split(25, 10)
    one = task[3:4]
    assert len(one) == 1 and one.images.shape == (1, 3, 32, 32)


def test_boundary_clutter_and_noise_are_accepted():
    # the ends of the ranges are meaningful settings (flat grey background, no noise)
    for clutter, noise in [(0.0, 0.0), (1.0, 0.0)]:
        task = object_on_texture(4, clutter=clutter, noise=noise)
        assert torch.isfinite(task.images).all()


@pytest.mark.parametrize("call, match", [
    (lambda: object_on_texture(0), "n=0"),
    (lambda: object_on_texture(4, size=4), "size=4"),
    (lambda: object_on_texture(4, radius=(3, 20)), "does not fit"),
    (lambda: object_on_texture(4, num_classes=5), "num_classes=5"),
    (lambda: multi_scale_objects(4, min_radius=0.5), "radius range"),
    (lambda: multi_object_segmentation(4, num_classes=0), "num_classes=0"),
    (lambda: multi_object_segmentation(4, objects=(3, 2)), "objects"),
    # clutter and noise: NaN would give NaN images; out-of-range values extrapolate colours
    (lambda: object_on_texture(4, clutter=float("nan")), r"clutter=nan must be a finite number in \[0, 1\]"),
    (lambda: object_on_texture(4, clutter=1.5), r"clutter=1.5 must be a finite number in \[0, 1\]"),
    (lambda: multi_scale_objects(4, clutter=-0.1), r"clutter=-0.1 must be"),
    (lambda: multi_object_segmentation(4, clutter=float("inf")), r"clutter=inf must be"),
    (lambda: object_on_texture(4, noise=float("nan")), r"noise=nan must be a finite number >= 0"),
    (lambda: multi_scale_objects(4, noise=-0.01), r"noise=-0.01 must be a finite number >= 0"),
    (lambda: multi_object_segmentation(4, noise=float("inf")), r"noise=inf must be"),
    (lambda: object_on_texture(4, radius=(2, float("nan"))), r"radius\[1\]=nan must be a finite number"),
    # one int would index the image's channels: refused, a slice is the way to one image
    (lambda: object_on_texture(4)[3], r"index=3 is a single int.*task\[3:4\]"),
    (lambda: object_on_texture(4)[torch.tensor(1)], r"index=1 is a single int"),
])
def test_bad_arguments_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
