"""Synthetic image tasks with planted structure, for training tiny attention models on a CPU.

Every task is drawn from a seed (a ``torch.Generator``), needs no download and renders a few
thousand 32×32 images in well under a second: everything is vectorised over the batch, shapes are
drawn from signed-distance formulas on a coordinate grid with anti-aliased one-pixel edges.

Because we planted the structure, we know where the answer lies in each image, and a lesson can
check an attention map against it with a number rather than a picture:

- :func:`object_on_texture` — one shape on a cluttered texture; the mask says where it is.
  Checks BAM's claim that the spatial gate singles out the object against the texture.
- :func:`multi_object_segmentation` — several shapes per image, a class and an instance id per
  pixel. Checks DANet's claims: a pixel attends to pixels of its own object (position attention),
  channels that respond to one class group together (channel attention).
- :func:`multi_scale_objects` — one shape at a scale that varies by 6×; the scale is returned.
  Checks the multi-scale claims of PSA (EPSANet) and SCConv: accuracy should hold across scales,
  and the branch/kernel weighting can be read against the object's size.

Images are float32 ``B×3×H×W`` in ``[0, 1]``. Labels are ``int64``. Masks are ``bool``.

How learnable they are (tests/test_train.py, two conv layers of 16 and 32 channels, AdamW lr
1e-2, batch 64, 2000 training images): with global *max* pooling, 150 steps reach about 95 %
test accuracy on ``object_on_texture`` and 90 % on ``multi_scale_objects`` (chance 25 %); with
global *average* pooling, 300 steps reach only about 41 %, because averaging dilutes the object by
its area share — the gap a spatial attention gate is meant to close. A tiny fully convolutional
net reaches about 88 % pixel accuracy on ``multi_object_segmentation`` (background share 78 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange, reduce

from ._validate import require_bool, require_int, require_number, require_pair

SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "cross")

#: Colours shared by objects and textures, so that colour alone never tells the class.
PALETTE = torch.tensor(
    [
        [0.90, 0.20, 0.20],  # red
        [0.20, 0.75, 0.30],  # green
        [0.20, 0.40, 0.95],  # blue
        [0.95, 0.85, 0.20],  # yellow
        [0.80, 0.30, 0.85],  # magenta
        [0.20, 0.80, 0.85],  # cyan
        [1.00, 0.55, 0.10],  # orange
        [0.92, 0.92, 0.92],  # white
    ]
)

@dataclass
class Task:
    """A batch of synthetic images with their targets and the structure planted in them.

    Attributes:
        images: ``B×3×H×W`` float32 in ``[0, 1]``.
        labels: ``B`` int64 class per image (classification) or ``B×H×W`` int64 class per pixel,
            0 = background (segmentation).
        masks: ``B×H×W`` bool, True on object pixels (the object in classification tasks, every
            object in segmentation).
        class_names: name of each class index.
        kind: ``"classification"`` or ``"segmentation"``.
        scales: ``B`` float32 object radius (half extent) in pixels, where the task has one.
        instances: ``B×H×W`` int64 instance id per pixel (0 = background), segmentation only.
        params: the other per-image parameters used to draw it (centres, colour indices, ...),
            each a tensor whose first axis is the batch.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    class_names: tuple[str, ...]
    kind: str
    scales: torch.Tensor | None = None
    instances: torch.Tensor | None = None
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: slice | torch.Tensor) -> Task:
        """The images selected by ``index`` (a slice, an index tensor or a bool tensor).

        An int is refused (``task[3]`` would index the image's channels): use ``task[3:4]``.
        """
        if not isinstance(index, (slice, int, torch.Tensor)):
            raise ValueError(f"index={index!r} must be a slice or an index (or bool) tensor")
        if isinstance(index, int) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            raise ValueError(f"index={int(index)} is a single int: a Task holds a batch, so "
                             f"select one image with a slice, task[{int(index)}:{int(index) + 1}]")
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Task(
            images=self.images[index], labels=self.labels[index], masks=self.masks[index],
            class_names=self.class_names, kind=self.kind, scales=pick(self.scales),
            instances=pick(self.instances),
            params={key: value[index] for key, value in self.params.items()},
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def chance(self) -> float:
        """Accuracy of always answering the most common class (per image, or per pixel)."""
        counts = torch.bincount(self.labels.flatten(), minlength=self.num_classes)
        return counts.max().item() / self.labels.numel()

    @property
    def object_share(self) -> torch.Tensor:
        """``B`` fraction of each image's pixels that belong to an object."""
        return reduce(self.masks.float(), "b h w -> b", "mean")

    def split(self, train_n: int, test_n: int) -> tuple[Task, Task]:
        """The first ``train_n`` images and the next ``test_n``: two independent samples."""
        require_int("train_n", train_n)
        require_int("test_n", test_n)
        if train_n < 1 or test_n < 1 or train_n + test_n > len(self):
            raise ValueError(
                f"split(train_n={train_n}, test_n={test_n}) needs 1 <= each and "
                f"train_n + test_n <= {len(self)} images in this task"
            )
        return self[:train_n], self[train_n:train_n + test_n]

    def to(self, device: torch.device | str) -> Task:
        """The same task with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Task(
            images=move(self.images), labels=move(self.labels), masks=move(self.masks),
            class_names=self.class_names, kind=self.kind, scales=move(self.scales),
            instances=move(self.instances),
            params={key: value.to(device) for key, value in self.params.items()},
        )


# --------------------------------------------------------------------------- drawing helpers

def _check_args(n: int, size: int, min_radius: float, max_radius: float,
                clutter: float = 0.5, noise: float = 0.04, seed: int = 0) -> None:
    require_int("n", n, why="the number of images")
    require_int("size", size, minimum=8, why="the image's side in pixels")
    require_int("seed", seed, minimum=0)
    require_number("clutter", clutter, minimum=0, maximum=1)  # 0 = flat grey, 1 = full colours
    require_number("noise", noise, minimum=0)  # the pixel noise's std
    require_number("min radius", min_radius)
    require_number("max radius", max_radius)
    if not 1 <= min_radius <= max_radius:
        raise ValueError(
            f"radius range ({min_radius}, {max_radius}) must satisfy 1 <= min <= max"
        )
    if 2 * max_radius > size:
        raise ValueError(
            f"max radius {max_radius} does not fit in size={size}: need 2 * radius <= size"
        )


def _disc(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(u**2 + v**2) - r


def _square(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.maximum(u, v.abs()) - r


def _triangle(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # apex up at (0, -r), base from (-r, r) to (r, r): the base line and the two slanted sides
    return torch.maximum(v - r, (2 * u - v - r) / math.sqrt(5))


def _cross(u: torch.Tensor, v: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    arm = r / 3  # half width of each bar
    v = v.abs()
    return torch.minimum(torch.maximum(u - arm, v - r), torch.maximum(v - arm, u - r))


#: Signed distance (pixels; < 0 inside) of each shape, in class order. u = |x - cx|,
#: v = y - cy (downwards), r = half extent: every shape fits in the square centre ± r.
_DISTANCE = (_disc, _square, _triangle, _cross)


def _coverage(shape_ids: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
              size: int) -> torch.Tensor:
    """``B×H×W`` fraction of each pixel covered by its image's shape (disc/square/triangle/cross).

    The fraction is approximated from the signed distance d of the pixel centre to the shape's
    edge: ``clamp(0.5 - d, 0, 1)`` (a one-pixel anti-aliased edge), so it is >= 0.5 exactly
    where the pixel centre lies inside. Each shape's formula runs only on the images that have
    that shape; an id outside 0..3 draws nothing.
    """
    y = rearrange(torch.arange(size, dtype=torch.float32), "h -> 1 h 1")
    x = rearrange(torch.arange(size, dtype=torch.float32), "w -> 1 1 w")
    coverage = torch.zeros(len(shape_ids), size, size)
    for shape_id, distance in enumerate(_DISTANCE):
        which = (shape_ids == shape_id).nonzero().squeeze(1)
        if len(which) == 0:
            continue
        cy, cx = rearrange(centres[which], "b yx -> yx b 1 1")
        r = rearrange(radii[which], "b -> b 1 1")
        coverage[which] = (0.5 - distance((x - cx).abs(), y - cy, r)).clamp(0, 1)
    return coverage


def _texture(n: int, size: int, stripe_colours: torch.Tensor, blob_colours: torch.Tensor,
             g: torch.Generator) -> torch.Tensor:
    """``B×3×H×W`` clutter: soft stripes (random angle, period 4–10 px, phase) between two
    colours (``B×2×3``), overlaid with smooth random blobs of a third colour (``B×3``)."""
    y = rearrange(torch.arange(size, dtype=torch.float32), "h -> 1 h 1")
    x = rearrange(torch.arange(size, dtype=torch.float32), "w -> 1 1 w")
    angle = rearrange(torch.rand(n, generator=g) * math.pi, "b -> b 1 1")
    period = rearrange(4 + 6 * torch.rand(n, generator=g), "b -> b 1 1")
    phase = rearrange(torch.rand(n, generator=g) * 2 * math.pi, "b -> b 1 1")
    wave = torch.sin((x * angle.cos() + y * angle.sin()) * (2 * math.pi / period) + phase)
    stripes = rearrange(torch.sigmoid(2 * wave), "b h w -> b 1 h w")
    noise = torch.rand(n, 1, 5, 5, generator=g)  # 5×5 random values, smoothly upsampled
    smooth = F.interpolate(noise, size=(size, size), mode="bicubic", align_corners=False)
    blobs = torch.sigmoid(10 * (smooth - 0.65))  # ~ a third of the image
    first, second = rearrange(stripe_colours, "b two c -> two b c 1 1")
    texture = torch.lerp(second, first, stripes)
    return torch.lerp(texture, rearrange(blob_colours, "b c -> b c 1 1"), blobs)


def _contrast(colours: torch.Tensor, clutter: float) -> torch.Tensor:
    """Colours pulled towards grey: ``clutter`` = 1 keeps them, 0 makes them all grey."""
    return 0.5 + clutter * (colours - 0.5)


def _paint(images: torch.Tensor, coverage: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Alpha-blend a solid colour (``B×3``) over ``images`` where ``coverage`` (``B×H×W``) > 0."""
    alpha = rearrange(coverage, "b h w -> b 1 h w")
    return torch.lerp(images, rearrange(colours, "b c -> b c 1 1"), alpha)


def _finish(images: torch.Tensor, noise: float, g: torch.Generator) -> torch.Tensor:
    """Add Gaussian pixel noise of std ``noise`` and clip to [0, 1] (in place)."""
    return images.add_(torch.randn(images.shape, generator=g), alpha=noise).clamp_(0, 1)


def _balanced_labels(n: int, num_classes: int, g: torch.Generator) -> torch.Tensor:
    """Each class ``n // num_classes`` or one more times, in random order."""
    return (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]


def _colour_order(n: int, g: torch.Generator) -> torch.Tensor:
    """``B×P``: a random permutation of the palette per image (draw distinct colours from it)."""
    return torch.rand(n, len(PALETTE), generator=g).argsort(dim=1)


def _single_object(n: int, size: int, radii: torch.Tensor, num_classes: int, clutter: float,
                   noise: float, g: torch.Generator) -> Task:
    """One shape per image on a texture; the object's colour never appears in the stripes."""
    labels = _balanced_labels(n, num_classes, g)
    centres = (radii[:, None] - 0.5) + torch.rand(n, 2, generator=g) * (size - 2 * radii[:, None])
    order = _colour_order(n, g)
    colour_ids = order[:, 0]
    # stripes use two other colours; blobs any colour, so the object's colour is also clutter
    blob_ids = torch.randint(len(PALETTE), (n,), generator=g)
    background = _texture(n, size, _contrast(PALETTE[order[:, 1:3]], clutter),
                          _contrast(PALETTE[blob_ids], clutter), g)
    coverage = _coverage(labels, centres, radii, size)
    images = _finish(_paint(background, coverage, PALETTE[colour_ids]), noise, g)
    return Task(
        images=images, labels=labels, masks=coverage >= 0.5,
        class_names=SHAPES[:num_classes], kind="classification", scales=radii,
        params={"centres": centres, "colours": colour_ids, "blob_colours": blob_ids},
    )


# --------------------------------------------------------------------------- the three tasks

def object_on_texture(n: int, size: int = 32, seed: int = 0, *, num_classes: int = 4,
                      radius: tuple[float, float] | None = None, clutter: float = 0.5,
                      noise: float = 0.04) -> Task:
    """Classify the shape of one object lying on a cluttered texture (BAM, lesson 02).

    Planted structure: each image has one solid shape — disc, square, triangle (apex up) or
    cross, the class (``num_classes`` <= 4 takes the first ones) — at a random position with a
    radius (half extent) drawn uniformly from ``radius`` (default ``size/8 .. size/4``, i.e. 4–8
    px at 32). Its colour is random from :data:`PALETTE`; the background is soft stripes in two
    *other* palette colours at a random angle and period, overlaid with smooth blobs of any
    palette colour (often the object's own). Colour therefore says nothing about the class and
    does not single the object out either: the class lives in the shape of one region, and the
    rest of the image is distracting edges. ``clutter`` scales the texture's contrast around
    grey (0 = flat grey background, 1 = full palette colours); ``noise`` is the std of the pixel
    noise. Labels are balanced (each class ``n // num_classes`` or one more times).

    The claim it lets a learner verify: BAM's spatial gate, trained only on the class label,
    departs from its typical value more inside the object than the object's area share would
    give (:func:`~attn_tutorial.metrics.spatial_contrast_on_object`; ``masks`` gives the object,
    ``object_share`` its share, about 2–25 % of the image with the default radii).

    Returns a classification :class:`Task` with ``labels`` (``B``), ``masks`` (``B×H×W``),
    ``scales`` (radii) and ``params`` ``centres`` (``B×2``, row then column, in pixels),
    ``colours`` and ``blob_colours`` (palette indices).
    """
    if not 2 <= require_int("num_classes", num_classes) <= len(SHAPES):
        raise ValueError(f"num_classes={num_classes} must be between 2 and {len(SHAPES)}")
    low, high = require_pair("radius", radius, require_number) if radius is not None else (
        size / 8, size / 4)
    _check_args(n, size, low, high, clutter, noise, seed)
    g = torch.Generator().manual_seed(seed)
    radii = low + torch.rand(n, generator=g) * (high - low)
    return _single_object(n, size, radii, num_classes, clutter, noise, g)


def multi_scale_objects(n: int, size: int = 32, seed: int = 0, *, num_classes: int = 4,
                        min_radius: float = 2.0, max_radius: float | None = None,
                        clutter: float = 0.3, noise: float = 0.04) -> Task:
    """Classify a shape whose size varies by a factor of about 6 (PSA lesson 03, SCConv 04).

    Planted structure: as :func:`object_on_texture` (one shape, class = shape, random colour,
    striped and blobby background, here at lower contrast by default), but the radius (half
    extent) is drawn log-uniformly from ``min_radius`` to ``max_radius`` (default ``12·size/32``,
    so 2–12 px at 32): small, medium and large objects are equally common. A fixed 3×3 receptive
    field sees a whole small object but only the edge of a large one.

    The claim it lets a learner verify: multi-scale kernels (PSA's pyramid split) and
    self-calibration (SCConv's down-sampled branch) keep accuracy up across scales — bin the
    test accuracy by ``scales`` — and PSA's per-branch weights can be read against the radius.

    Returns a classification :class:`Task` with ``labels``, ``masks``, ``scales`` (the radius,
    ``B`` float32) and ``params`` ``centres``, ``colours``, ``blob_colours``.
    """
    if not 2 <= require_int("num_classes", num_classes) <= len(SHAPES):
        raise ValueError(f"num_classes={num_classes} must be between 2 and {len(SHAPES)}")
    high = max_radius if max_radius is not None else 12 * size / 32
    _check_args(n, size, min_radius, high, clutter, noise, seed)
    g = torch.Generator().manual_seed(seed)
    log_low, log_high = math.log(min_radius), math.log(high)
    radii = torch.exp(log_low + torch.rand(n, generator=g) * (log_high - log_low))
    return _single_object(n, size, radii, num_classes, clutter, noise, g)


def multi_object_segmentation(n: int, size: int = 32, num_classes: int = 3, seed: int = 0, *,
                              objects: tuple[int, int] = (2, 4),
                              radius: tuple[float, float] | None = None,
                              class_colours: bool = False, clutter: float = 0.4,
                              noise: float = 0.04) -> Task:
    """Label every pixel with the class of the object it belongs to (DANet PAM/CAM, lesson 05).

    Planted structure: each image holds between ``objects[0]`` and ``objects[1]`` shapes; an
    object's class is its shape (1 = disc, 2 = square, 3 = triangle, 4 = cross; ``num_classes``
    of them, 0 = background). Radii are uniform in ``radius`` (default ``size/8 .. size/5``),
    positions uniform, so objects may touch or overlap (a later object covers an earlier one;
    labels and instance ids describe what is visible). Within an image the objects have distinct
    random colours, none used by the background stripes; with ``class_colours=True`` each class
    has its own fixed colour instead (an easier task in which colour carries the class).
    By default colour does not carry the class, so a pixel in the middle of a shape can only be
    classified from context — from the other pixels of its object.

    The claims it lets a learner check: position attention (PAM) from a pixel concentrates on
    pixels with the same instance id (compare with that instance's area share) — in the tiny
    network of lesson 09 it does not: every pixel looks at the objects instead — and channel
    attention (CAM) groups channels whose responses follow one class (the paper's softmax(E)
    does; the released softmax(−E) does the opposite). ``chance`` is the
    background's pixel share (always answering background).

    Returns a segmentation :class:`Task` with ``labels`` (``B×H×W``, 0..num_classes),
    ``instances`` (``B×H×W``, 0 = background, 1.. in drawing order), ``masks`` (labels > 0), and
    ``params`` ``shapes`` (``B×K`` class of each object slot, 0 = no object), ``centres``
    (``B×K×2``), ``radii`` (``B×K``), ``colours`` (``B×K``), with K = ``objects[1]``.
    """
    if not 1 <= require_int("num_classes", num_classes) <= len(SHAPES):
        raise ValueError(f"num_classes={num_classes} must be between 1 and {len(SHAPES)}")
    min_objects, max_objects = require_pair("objects", objects)
    require_bool("class_colours", class_colours)
    if not 1 <= min_objects <= max_objects <= len(PALETTE) - 2:
        raise ValueError(
            f"objects={objects} must satisfy 1 <= min <= max <= {len(PALETTE) - 2}"
        )
    if class_colours and num_classes > len(PALETTE) - 2:
        raise ValueError(f"class_colours=True needs num_classes <= {len(PALETTE) - 2}")
    low, high = require_pair("radius", radius, require_number) if radius is not None else (
        size / 8, size / 5)
    _check_args(n, size, low, high, clutter, noise, seed)
    g = torch.Generator().manual_seed(seed)

    count = torch.randint(min_objects, max_objects + 1, (n,), generator=g)
    present = torch.arange(max_objects)[None, :] < count[:, None]  # B×K: slot k holds an object
    shapes = torch.randint(1, num_classes + 1, (n, max_objects), generator=g) * present
    radii = low + torch.rand(n, max_objects, generator=g) * (high - low)
    centres = (radii[..., None] - 0.5) + (
        torch.rand(n, max_objects, 2, generator=g) * (size - 2 * radii[..., None])
    )
    order = _colour_order(n, g)
    if class_colours:  # class k has palette colour k - 1; stripes use colours after the classes
        colours = (shapes - 1).clamp(min=0)
        stripe_ids = num_classes + torch.rand(n, len(PALETTE) - num_classes,
                                              generator=g).argsort(dim=1)[:, :2]
    else:  # distinct colours per image, the stripes take the two after the objects'
        colours = order[:, :max_objects]
        stripe_ids = order[:, max_objects:max_objects + 2]
    blob_ids = torch.randint(len(PALETTE), (n,), generator=g)
    images = _texture(n, size, _contrast(PALETTE[stripe_ids], clutter),
                      _contrast(PALETTE[blob_ids], clutter), g)

    labels = torch.zeros(n, size, size, dtype=torch.int64)
    instances = torch.zeros(n, size, size, dtype=torch.int64)
    for k in range(max_objects):  # a few slots, each drawn for the whole batch at once
        coverage = _coverage(shapes[:, k] - 1, centres[:, k], radii[:, k], size)  # -1: none
        images = _paint(images, coverage, PALETTE[colours[:, k]])
        drawn = coverage >= 0.5
        labels = torch.where(drawn, rearrange(shapes[:, k], "b -> b 1 1"), labels)
        instances = torch.where(drawn, k + 1, instances)
    return Task(
        images=_finish(images, noise, g), labels=labels, masks=labels > 0,
        class_names=("background",) + SHAPES[:num_classes], kind="segmentation",
        instances=instances,
        params={"shapes": shapes, "centres": centres, "radii": radii,
                "colours": colours},
    )


#: The synthetic tasks by name (what :mod:`attn_tutorial.compare` and :mod:`attn_tutorial.zoo`
#: train on).
TASKS = {
    "object_on_texture": object_on_texture,
    "multi_scale_objects": multi_scale_objects,
    "multi_object_segmentation": multi_object_segmentation,
}


def make_task(task: str | Task, n: int, seed: int = 0, **kwargs: Any) -> Task:
    """A task by name (:data:`TASKS`) with ``n`` images, or the given Task unchanged."""
    if isinstance(task, Task):
        return task
    if not isinstance(task, str) or task not in TASKS:
        raise ValueError(f"task={task!r} must be a Task or one of {sorted(TASKS)}")
    return TASKS[task](n, seed=seed, **kwargs)
