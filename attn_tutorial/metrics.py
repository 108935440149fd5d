"""Numbers that say whether an attention mechanism does what its paper claims.

The synthetic tasks of :mod:`attn_tutorial.data` plant the answer: where the object is (``masks``),
which pixels form one object (``instances``), which class each image or pixel has (``labels``).
Each metric below compares a recorded attention map (:meth:`TinyResNet.record_attention
<attn_tutorial.models.TinyResNet.record_attention>`) with that structure and comes with its
*chance level*: the value an attention that ignores the structure would get (a uniform map, or
gates unrelated to the class). A trained mechanism that does what its paper says should beat
both the chance level and the same network before training.

Masks are compared with a map of lower resolution h×w through the *area share* of each cell:
``m[b, i, j]`` = fraction of the cell's pixels inside the object (average pooling of the mask),
which is exact when h and w divide the image size.

=================================  ========================  ====================================
metric                             mechanisms                chance
=================================  ========================  ====================================
:func:`spatial_contrast_on_object` BAM, SCConv               the object's area share
:func:`spatial_mass_on_object`     a learner's spatial gate  the object's area share
:func:`token_mass_on_object`       EMSA, PAM                 the object's area share
:func:`same_instance_mass`         PAM (DANet's own claim)   the instance's area share
:func:`class_selectivity`          SE, ECA, PSA              (K − 1)/(n − 1)
:func:`same_class_channel_mass`    CAM                       share of other same-class channels
:func:`slot_purity`                external attention        largest class share
=================================  ========================  ====================================

PAM is scored with :func:`token_mass_on_object` (do the pixels look at the objects?); DANet's
sharper claim, that a pixel looks at its *own* object, is :func:`same_instance_mass`
(:func:`score_own_instance`).

The ``score_*`` functions are the *scorers* that registry entries carry
(:mod:`attn_tutorial.registry`): ``scorer(module, x, task) -> Metric`` reads the plugged
module's ``attention_map`` for its input ``x`` and scores it on ``task``, with a ``null``
(:class:`Metric`). :func:`attention_scores` runs a model's scorer on every plugged module;
:func:`attention_metric` averages them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, reduce

from attn_tutorial._validate import (require_finite, require_int, require_module, require_pair,
                                     require_tensor)
from attn_tutorial.data import Task

__all__ = [
    "Metric", "area_share", "spatial_mass_on_object", "gate_contrast",
    "spatial_contrast_on_object",
    "token_mass_on_object",
    "same_instance_mass", "class_selectivity", "same_class_channel_mass", "slot_purity",
    "pixel_classes", "shuffled_null", "score_channel_gate", "score_gate_contrast",
    "score_gate_height", "score_spatial_mass", "score_token_mass", "score_own_instance", "score_channel_grouping",
    "score_slot_purity", "attention_scores", "attention_metric",
]


@dataclass(frozen=True)
class Metric:
    """A metric's value, its chance level, and (from a scorer) its null.

    ``chance`` is what a structure-blind attention scores (a uniform map, gates unrelated to the
    class). ``null`` is the sharper baseline a scorer measures on the same model: for spatial
    metrics the value against the targets of *other* images (:func:`shuffled_null`: a map that
    only knows where objects usually lie scores this), for channel gates the η² of the features
    the gate reads (what the gate adds is ``value − null``), for CAM its own chance. None when
    not measured.
    """

    name: str
    value: float
    chance: float
    null: float | None = None

    @property
    def lift(self) -> float:
        """value / chance (1 = no better than chance)."""
        if self.chance == 0:
            raise ValueError(f"{self.name}: chance=0, so the lift value / chance is undefined")
        return self.value / self.chance

    @property
    def over_null(self) -> float:
        """value / null (1 = no better than the null); NaN without a null."""
        return self.value / self.null if self.null else float("nan")


def area_share(masks: torch.Tensor, size: tuple[int, int],
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``B×h×w`` fraction of each cell of an h×w grid covered by ``masks`` (B×H×W, bool/float)."""
    if require_tensor("masks", masks).dim() != 3:
        raise ValueError(f"masks must be B×H×W, got shape {tuple(masks.shape)}")
    size = require_pair("size", size)
    cells = F.adaptive_avg_pool2d(rearrange(masks.to(dtype), "b h w -> b 1 h w"), size)
    return rearrange(cells, "b 1 h w -> b h w")


def _require_task(task: object) -> None:
    if not isinstance(task, Task):
        raise ValueError(f"task={task!r} must be a Task (e.g. from attn_tutorial.data)")


def _check_batch(name: str, a: torch.Tensor, b: torch.Tensor, b_name: str) -> None:
    require_finite(name, a)
    require_tensor(b_name, b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{name} has batch {a.shape[0]} but the targets have batch {b.shape[0]}")


def spatial_mass_on_object(spatial: torch.Tensor, masks: torch.Tensor) -> Metric:
    """Share of a non-negative spatial attention map's mass that lies on the object.

    ``spatial``: B×h×w, values >= 0 (BAM: the channel mean of ``sigmoid(Mc·Ms)``; SCConv: the
    channel mean of its calibration gate). With ``m`` the area share of each cell (see module
    docstring), for each image

        mass_b = Σ_ij a[b,i,j] · m[b,i,j] / Σ_ij a[b,i,j]

    and the metric is the mean over images. Chance: a uniform map gives
    ``mean_b mean_ij m[b,i,j]``, the object's area share. Value in [0, 1].
    """
    if spatial.dim() != 3:
        raise ValueError(f"spatial must be B×h×w, got shape {tuple(spatial.shape)}")
    _check_batch("spatial", spatial, masks, "masks")
    if (spatial < 0).any():
        raise ValueError("spatial must be non-negative (a mass); got negative values")
    total = reduce(spatial, "b h w -> b", "sum")
    if (total == 0).any():
        raise ValueError(f"spatial has zero total mass (an all-zero map) in image(s) "
                         f"{(total == 0).nonzero()[:, 0].tolist()}: the share on the object "
                         "is undefined there")
    m = area_share(masks, tuple(spatial.shape[1:]), spatial.dtype)
    mass = reduce(spatial * m, "b h w -> b", "sum") / total
    return Metric("spatial mass on object", mass.mean().item(), m.mean().item())


def gate_contrast(gate: torch.Tensor) -> torch.Tensor:
    """``B×h×w`` departure of a gate from its typical value: ``mean_c |g − median_ij g|``.

    ``gate``: B×C×h×w (or B×h×w, one channel). The median is taken per image and channel over
    the h·w positions, as ``torch.median`` takes it (the lower middle value for an even count).
    This is the map that :func:`spatial_contrast_on_object` scores; lessons draw it.
    """
    if require_finite("gate", gate).dim() == 3:
        gate = rearrange(gate, "b h w -> b 1 h w")
    if gate.dim() != 4:
        raise ValueError(f"gate must be B×C×h×w or B×h×w, got shape {tuple(gate.shape)}")
    flat = rearrange(gate, "b c h w -> b c (h w)")
    typical = rearrange(flat.median(dim=-1).values, "b c -> b c 1 1")
    return reduce((gate - typical).abs(), "b c h w -> b h w", "mean")


def spatial_contrast_on_object(gate: torch.Tensor, masks: torch.Tensor) -> Metric:
    """Share of a gate's spatial *contrast* that lies on the object (BAM, SCConv).

    ``gate``: B×C×h×w (or B×h×w, one channel), any sign. A gate that multiplies features of
    either sign, or whose branches are multiplied together (BAM's official ``Mc·Ms``), has no
    fixed direction: a low value on the object singles it out as much as a high one. So each
    map is read as its departure from its typical value — for every image and channel,

        d[b, c, i, j] = | g[b, c, i, j] − median_ij g[b, c] |,   a = mean_c d

    (:func:`gate_contrast`) — and ``a`` is scored like :func:`spatial_mass_on_object`: the
    share of its mass on object cells. Chance: a contrast unrelated to the object spreads like
    the area, so the chance level is the object's area share. An image whose gate is flat
    (a = 0) counts at its area share. Value in [0, 1].
    """
    contrast = gate_contrast(gate)
    _check_batch("gate", contrast, masks, "masks")
    m = area_share(masks, tuple(contrast.shape[1:]), contrast.dtype)
    total = reduce(contrast, "b h w -> b", "sum")
    share = reduce(contrast * m, "b h w -> b", "sum") / total.clamp_min(1e-30)
    mass = torch.where(total > 0, share, reduce(m, "b h w -> b", "mean"))
    return Metric("gate contrast on object", mass.mean().item(), m.mean().item())


def token_mass_on_object(attention: torch.Tensor, masks: torch.Tensor,
                         key_grid: tuple[int, int]) -> Metric:
    """Attention mass that query tokens put on keys covering the object (EMSA; PAM as one head).

    ``attention``: B×heads×N×M, rows sum to 1 over the M keys, keys laid out row-major on
    ``key_grid`` (H''×W''). With ``m`` the object's area share of each key cell,

        mass = mean_{b, head, n} Σ_j A[b, head, n, j] · m[b, j]

    (every query counts, from the object or not: the claim is that the model looks at the
    object). Chance: uniform rows give ``mean_b mean_j m[b, j]``, the object's area share.
    """
    if attention.dim() != 4:
        raise ValueError(f"attention must be B×heads×N×M, got shape {tuple(attention.shape)}")
    _check_batch("attention", attention, masks, "masks")
    key_grid = require_pair("key_grid", key_grid)
    m = rearrange(area_share(masks, key_grid, attention.dtype), "b h w -> b (h w)")
    if m.shape[1] != attention.shape[3]:
        raise ValueError(f"key_grid={tuple(key_grid)} has {m.shape[1]} cells but the attention "
                         f"has M={attention.shape[3]} keys")
    mass = einsum(attention, m, "b heads n m, b m -> b heads n")
    return Metric("attention mass on object", mass.mean().item(), m.mean().item())


def same_instance_mass(attention: torch.Tensor, instances: torch.Tensor,
                       grid: tuple[int, int]) -> Metric:
    """Attention mass a query position puts on its own object instance (PAM).

    ``attention``: B×N×N (rows = queries, sum to 1), positions row-major on ``grid`` (h×w);
    ``instances``: B×H×W instance ids (0 = background). A query cell *belongs* to instance k
    when more than half of its pixels do. For such a query i, with ``m_k`` the area share of
    instance k in each cell,

        mass_i = Σ_j A[b, i, j] · m_k[b, j]      chance_i = mean_j m_k[b, j]

    and the metric (and its chance) is the mean over all object queries of all images: the
    share of a pixel's attention that stays on its own object, against that object's area
    share. Needs at least one object query.
    """
    if attention.dim() != 3:
        raise ValueError(f"attention must be B×N×N, got shape {tuple(attention.shape)}")
    _check_batch("attention", attention, instances, "instances")
    _check_grid(grid, attention.shape[1])
    values, chances = [], []
    for k in range(1, int(instances.max()) + 1):
        m = rearrange(area_share(instances == k, tuple(grid), attention.dtype),
                      "b h w -> b (h w)")
        queries = m > 0.5                                                    # b i
        if not queries.any():
            continue
        mass = einsum(attention, m, "b i j, b j -> b i")
        values.append(mass[queries])
        chances.append(repeat_rows(m.mean(dim=1), queries))
    if not values:
        raise ValueError("no query cell lies mostly inside an object: nothing to measure")
    return Metric("attention mass on own instance", torch.cat(values).mean().item(),
                  torch.cat(chances).mean().item())


def _check_grid(grid: tuple[int, int], n: int) -> tuple[int, int]:
    """A grid (h, w) of positive integers with h·w = N, the attention's number of tokens."""
    h, w = require_pair("grid", grid)
    if h * w != n:
        raise ValueError(f"grid={tuple(grid)} has {h * w} cells but the attention has N={n} "
                         "tokens (row-major on the grid)")
    return h, w


def repeat_rows(per_image: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """``per_image`` (B) repeated once for every True of ``selected`` (B×N) in its row."""
    return per_image[selected.nonzero()[:, 0]]


def class_selectivity(gates: torch.Tensor, labels: torch.Tensor) -> Metric:
    """How much channel gates depend on the image's class: the correlation ratio η².

    ``gates``: B×D (D channels, or scales×channels for PSA), ``labels``: B classes. For each
    gate d, the share of its variance over images explained by the class:

        η²_d = Σ_k n_k (ḡ_{k,d} − ḡ_d)² / Σ_b (g_{b,d} − ḡ_d)²

    (between-class over total sum of squares; 0 = the class does not move the gate, 1 = the
    gate is a function of the class). The metric is the mean of η²_d over gates with non-zero
    variance (0 when no gate varies). Chance: gates independent of the class have expected
    η² = (K − 1)/(n − 1) with K classes and n images.
    """
    if gates.dim() != 2 or labels.dim() != 1:
        raise ValueError(f"gates must be B×D and labels B, got {tuple(gates.shape)} and "
                         f"{tuple(labels.shape)}")
    _check_batch("gates", gates, labels, "labels")
    if gates.shape[0] < 2:
        raise ValueError(f"class_selectivity needs at least 2 images (got {gates.shape[0]}): "
                         "η² compares the gates' variance over images with its class means")
    gates = gates.double()
    classes = labels.unique()
    centred = gates - gates.mean(dim=0)
    total = (centred ** 2).sum(dim=0)
    between = sum((labels == k).sum() * centred[labels == k].mean(dim=0) ** 2 for k in classes)
    keep = total > 1e-12 * gates.shape[0]
    # gates that do not vary at all explain nothing: 0 when no gate varies
    eta2 = (between[keep] / total[keep]).mean().item() if keep.any() else 0.0
    n, num = gates.shape[0], len(classes)
    return Metric("gate class selectivity (eta^2)", eta2, (num - 1) / (n - 1))


def same_class_channel_mass(attention: torch.Tensor, features: torch.Tensor,
                            classes: torch.Tensor) -> Metric:
    """Share of a channel's attention to *other* channels that goes to its own class (CAM).

    ``attention``: B×C×C (rows sum to 1), ``features``: B×C×h×w (CAM's input),
    ``classes``: B×H×W pixel classes (0 = background). Each channel's *preferred class* is the
    object class k >= 1 on whose pixels its mean activation (over all images, cells weighted by
    the class's area share) is highest. With ``same[c, c']`` = 1 when c ≠ c' prefer the same
    class (0 on the diagonal), for every image b and channel c

        mass[b, c] = Σ_{c' ≠ c} A[b, c, c'] · same[c, c']  /  Σ_{c' ≠ c} A[b, c, c']

    and the metric is the mean over b and c. The diagonal is left out because an unscaled
    softmax of the Gram matrix (the paper's form) puts much of each row on the channel itself,
    which says nothing about grouping. A row with no mass off the diagonal (float underflow)
    counts at its chance. Chance: a uniform row gives ``mean_c (#other channels sharing c's
    class) / (C − 1)``. DANet's claim is that CAM groups channels of one class; the official
    CAM softmaxes −E (:class:`~attn_tutorial.danet.CAM`), which weights the *least* similar
    channels most, so it is expected to score *below* chance.
    """
    if attention.dim() != 3 or features.dim() != 4:
        raise ValueError(f"attention must be B×C×C and features B×C×h×w, got "
                         f"{tuple(attention.shape)} and {tuple(features.shape)}")
    _check_batch("attention", attention, classes, "classes")
    require_finite("features", features)
    size = tuple(features.shape[2:])
    num = int(classes.max())
    if num < 1:
        raise ValueError("classes holds no object pixel (all 0): nothing to prefer")
    response = torch.stack([
        einsum(features, area_share(classes == k, size, features.dtype), "b c h w, b h w -> c")
        / area_share(classes == k, size, features.dtype).sum().clamp_min(1e-12)
        for k in range(1, num + 1)
    ])                                                                      # k c
    preferred = response.argmax(dim=0)                                       # c
    channels = len(preferred)
    if channels < 2:
        raise ValueError("same_class_channel_mass needs at least 2 channels")
    others = 1 - torch.eye(channels, dtype=torch.float64)                     # c c'
    same = (preferred[:, None] == preferred[None, :]).double() * others       # c c'
    row_chance = reduce(same, "c d -> c", "sum") / (channels - 1)
    attention = attention.double()
    off = einsum(attention, others, "b c d, c d -> b c")
    share = einsum(attention, same, "b c d, c d -> b c") / off.clamp_min(1e-300)
    mass = torch.where(off > 0, share, row_chance)
    return Metric("channel mass on other same-class channels", mass.mean().item(),
                  row_chance.mean().item())


def pixel_classes(task: Task) -> torch.Tensor:
    """``B×H×W`` class per pixel, 0 = background: the labels of a segmentation task, or the
    image's class + 1 on its object's pixels for a classification task."""
    _require_task(task)
    if task.kind == "segmentation":
        return task.labels
    return torch.where(task.masks, rearrange(task.labels, "b -> b 1 1") + 1, 0)


def slot_purity(attention: torch.Tensor, classes: torch.Tensor, grid: tuple[int, int]) -> Metric:
    """How class-pure the external memory slots are over object pixels (external attention).

    ``attention``: B×N×S (a token's weights over the S slots), tokens row-major on ``grid``;
    ``classes``: B×H×W pixel classes (0 = background, ignored). With ``m_k`` the area share of
    object class k in each cell, the mass of slot s on class k is
    ``M[s, k] = Σ_{b, n} A[b, n, s] · m_k[b, n]``, and

        purity = Σ_s max_k M[s, k] / Σ_{s, k} M[s, k]

    (each slot's mass-weighted share of its dominant class; 1 = every slot reads one class).
    Chance: slots blind to the class split their mass like the pixels do, so purity = the
    largest class's share of object area, ``max_k Σ m_k / Σ_k Σ m_k``.
    """
    if attention.dim() != 3:
        raise ValueError(f"attention must be B×N×S, got shape {tuple(attention.shape)}")
    _check_batch("attention", attention, classes, "classes")
    grid = _check_grid(grid, attention.shape[1])
    num = int(classes.max())
    if num < 1:
        raise ValueError("classes holds no object pixel (all 0): nothing to measure")
    shares = torch.stack([rearrange(area_share(classes == k, tuple(grid)), "b h w -> b (h w)")
                          for k in range(1, num + 1)])                        # k b n
    mass = einsum(attention.double(), shares.double(), "b n s, k b n -> s k")
    area = reduce(shares.double(), "k b n -> k", "sum")
    return Metric("memory slot class purity", (mass.max(dim=1).values.sum() / mass.sum()).item(),
                  (area.max() / area.sum()).item())



# --------------------------------------------------------------------------- nulls and scorers

def shuffled_null(metric, attention: torch.Tensor, targets: torch.Tensor, *args,
                  shifts: int = 8) -> float | None:
    """Mean of ``metric(attention, targets rolled by k images, *args).value`` for k = 1..shifts.

    Each image's map is scored against the planted structure of *another* image (rolling the
    batch is a shuffle in which no image keeps its own targets). Objects are centre-biased, so a
    map that only learned where objects usually are beats the uniform-map chance level; it does
    not beat this null. None for a batch of one.
    """
    shifts = min(require_int("shifts", shifts), len(targets) - 1)
    if shifts < 1:
        return None
    values = [metric(attention, targets.roll(k, dims=0), *args).value
              for k in range(1, shifts + 1)]
    return sum(values) / len(values)


def _with_null(metric: Metric, null: float | None) -> Metric:
    return Metric(metric.name, metric.value, metric.chance, null)


def score_channel_gate(module: torch.nn.Module, x: torch.Tensor, task: Task) -> Metric:
    """SE, ECA, PSA: :func:`class_selectivity` of the gate; null = η² of what the gate reads.

    The gate (B×C, or PSA's B×S×C flattened) is read with ``module.attention_map(x)``. A channel
    gate is computed from globally pooled features; if those are already class-selective, so
    is any gate. The null is the η² of those pooled features: ``module.gate_input(x)`` when the
    module has it (PSA: its SE reads the branch convs' outputs, pooled, B×S×C), else
    ``mean_hw x`` (B×C; SE and ECA pool the module's input). The gate adds ``value − null``.
    """
    if task.labels.dim() != 1:
        raise ValueError("score_channel_gate needs one class per image (a classification task)")
    gate = module.attention_map(x)
    gate = rearrange(gate, "b ... -> b (...)")
    if hasattr(module, "gate_input"):
        pooled = rearrange(module.gate_input(x), "b ... -> b (...)")
    else:
        pooled = reduce(x, "b c h w -> b c", "mean")
    return _with_null(class_selectivity(gate, task.labels),
                      class_selectivity(pooled, task.labels).value)


def score_gate_contrast(module: torch.nn.Module, x: torch.Tensor, task: Task) -> Metric:
    """BAM, SCConv: :func:`spatial_contrast_on_object` of the B×C×h×w gate; shuffled-mask null."""
    gate = module.attention_map(x)
    return _with_null(spatial_contrast_on_object(gate, task.masks),
                      shuffled_null(spatial_contrast_on_object, gate, task.masks))


def score_gate_height(module: torch.nn.Module, x: torch.Tensor, task: Task) -> Metric:
    """BAM, SCConv read as a spotlight: :func:`spatial_mass_on_object` of the channel-mean gate.

    The gate (B×C×h×w, values >= 0) is averaged over channels and its *height* scored: the
    reading a "bright on the object" gate would pass. Shuffled-mask null.
    """
    spatial = reduce(module.attention_map(x), "b c h w -> b h w", "mean")
    return _with_null(spatial_mass_on_object(spatial, task.masks),
                      shuffled_null(spatial_mass_on_object, spatial, task.masks))


def score_spatial_mass(module: torch.nn.Module, x: torch.Tensor, task: Task) -> Metric:
    """A non-negative spatial map B×h×w (a learner's gate): :func:`spatial_mass_on_object`."""
    spatial = module.attention_map(x)
    return _with_null(spatial_mass_on_object(spatial, task.masks),
                      shuffled_null(spatial_mass_on_object, spatial, task.masks))


def _heads(module: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The attention as B×heads×N×M and the keys' grid (``module.key_grid``, else x's grid)."""
    attention = module.attention_map(x)
    if attention.dim() == 3:  # one head (PAM): B×N×M
        attention = rearrange(attention, "b n m -> b 1 n m")
    height, width = x.shape[2:]
    key_grid = module.key_grid(height, width) if hasattr(module, "key_grid") else (height, width)
    return attention, tuple(key_grid)


def score_token_mass(module: torch.nn.Module, x: torch.Tensor, task: Task) -> Metric:
    """PAM, EMSA: :func:`token_mass_on_object`; shuffled-mask null.

    Keys lie on ``module.key_grid(H, W)`` when the module has one (EMSA's reduced grid), else on
    the input's H×W grid (PAM).
    """
    attention, key_grid = _heads(module, x)
    return _with_null(token_mass_on_object(attention, task.masks, key_grid),
                      shuffled_null(token_mass_on_object, attention, task.masks, key_grid))


def score_own_instance(module: torch.nn.Module, x: torch.Tensor, task: Task) -> Metric:
    """PAM, DANet's own claim: :func:`same_instance_mass`; the null is the chance level.

    (Another image's instances do not define this image's queries, so there is no shuffle.)
    """
    instances = task.instances if task.instances is not None else task.masks.long()
    metric = same_instance_mass(module.attention_map(x), instances, tuple(x.shape[2:]))
    return _with_null(metric, metric.chance)


def score_channel_grouping(module: torch.nn.Module, x: torch.Tensor, task: Task) -> Metric:
    """CAM: :func:`same_class_channel_mass` with its input as the features; null = its chance.

    The chance depends on which class each channel of *this* model prefers, so it is measured
    on every model anew (an untrained and a trained model have different chance levels).
    """
    metric = same_class_channel_mass(module.attention_map(x), x, pixel_classes(task))
    return _with_null(metric, metric.chance)


def score_slot_purity(module: torch.nn.Module, x: torch.Tensor, task: Task) -> Metric:
    """External attention: :func:`slot_purity` of the B×N×S weights; shuffled-classes null."""
    attention, grid = module.attention_map(x), tuple(x.shape[2:])
    classes = pixel_classes(task)
    return _with_null(slot_purity(attention, classes, grid),
                      shuffled_null(slot_purity, attention, classes, grid))


def attention_scores(model: torch.nn.Module, task: Task, scorer=None,
                     inputs: dict[str, torch.Tensor] | None = None) -> dict[str, Metric]:
    """``{path: Metric}``: the scorer run on every plugged module of ``model`` (one eval pass).

    ``scorer`` defaults to the model's mechanism's (``model.spec.scorer``); {} for the baseline
    or an entry without scorer. ``inputs``: the modules' inputs for ``task.images`` from
    ``model.module_inputs`` when already at hand (saves the pass).
    """
    require_module("model", model)
    _require_task(task)
    spec = getattr(model, "spec", None)
    scorer = scorer if scorer is not None else (spec.scorer if spec is not None else None)
    if scorer is None:
        return {}
    if inputs is None:
        inputs = model.module_inputs(task.images)
    with torch.no_grad():
        return {path: scorer(model.get_submodule(path), x, task) for path, x in inputs.items()}


def attention_metric(model: torch.nn.Module, task: Task, scorer=None,
                     inputs: dict[str, torch.Tensor] | None = None) -> Metric | None:
    """:func:`attention_scores` averaged over the plugged modules (value, chance and null).

    Returns None for the baseline or a mechanism without scorer.
    """
    return mean_metric(attention_scores(model, task, scorer, inputs))


def mean_metric(scores: dict[str, Metric]) -> Metric | None:
    """The per-module metrics of :func:`attention_scores` averaged (value, chance and null);
    None when there are none."""
    if not isinstance(scores, dict):
        raise ValueError(f"scores={scores!r} must be a dict {{path: Metric}} (attention_scores)")
    scores = list(scores.values())
    if not scores:
        return None
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    nulls = [s.null for s in scores]
    return Metric(scores[0].name, mean([s.value for s in scores]),
                  mean([s.chance for s in scores]),
                  None if None in nulls else mean(nulls))
