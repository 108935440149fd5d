"""Lesson 09's picture: the task, the tiny network, where a mechanism plugs in, what is measured.

Drawn for BAM (it plugs in *between* stages, so it is a box of its own) in
:class:`~attn_tutorial.models.TinyResNet` on ``object_on_texture`` images; every box is a tensor
of one run: the images and their masks from :mod:`attn_tutorial.data`, the network's stage
outputs (forward hooks), BAM's gate after stage 2 (``attention_map``), and the metric's pieces
computed by :mod:`attn_tutorial.metrics` (:func:`gate_contrast`, :func:`area_share`).
"""

from __future__ import annotations

from einops import reduce

from .. import data, metrics, models
from .layout import Arrow, Box, Merge, describe, op, run


def _plug_and_compare(B, size, classes):
    task = data.object_on_texture(B, size=size, seed=0, num_classes=classes)
    net = models.build_model("bam", num_classes=classes, seed=0)
    logits, got = run(net, task.images, "stem", "stage1", "after1", "stage2", "stage3")
    inputs = net.module_inputs(task.images)
    gate = net.after2.attention_map(inputs["after2"])
    contrast = metrics.gate_contrast(gate)
    share = metrics.area_share(task.masks, tuple(contrast.shape[1:]))
    per_image = (reduce(contrast * share, "b h w -> b", "sum")
                 / reduce(contrast, "b h w -> b", "sum"))
    items = [
        Box("x", "task: images (one shape on texture)", "B×3×H×W", task.images, (0, 0)),
        Box("m", "planted structure: object masks", "B×H×W", task.masks, (2, 0)),
        Box("s0", "stem", "B×16×H×W", got["stem"], (0, 1.1)),
        Box("s1", "stage 1", "B×16×H/2×W/2", got["stage1"], (0, 2.6)),
        Box("a1", "BAM after stage 1", "B×16×H/2×W/2", got["after1"], (0, 3.8)),
        Box("s2", "stage 2", "B×32×H/4×W/4", inputs["after2"], (0, 5.0)),
        Box("g", "BAM's gate after stage 2\n(attention_map of stage 2)", "B×32×H/4×W/4", gate,
            (1, 5.0), "map"),
        Box("s3", "stage 3's output", "B×64×H/4×W/4", got["stage3"], (0, 6.5)),
        Box("y", "logits: the class", "B×K", logits, (0, 7.9)),
        Box("c", "gate contrast", "B×H/4×W/4", contrast, (1, 6.5), "map"),
        Box("a", "object's share of each cell", "B×H/4×W/4", share, (2, 2.6)),
        Merge("mul", "⊙", (2, 6.5)),
        Box("p", "share of contrast on object", "B", per_image, (2, 7.9)),
    ]
    arrows = [
        Arrow("x", "s0", **op(f"{describe(net.stem[0])}, BN, ReLU", net.stem)),
        Arrow("s0", "s1", **op("stage 1: basic block, stride 2\n('block', 'conv' plug in "
                               "inside it)", net.stage1)),
        Arrow("s1", "a1", **op("'stage': BAM between stages", net.after1)),
        Arrow("a1", "s2", **op("stage 2: basic block, stride 2", net.stage2)),
        Arrow("s2", "g"),
        Arrow("s2", "s3", **op("'stage': BAM; stage 3: basic block\n('last' plugs in after it)",
                               net.after2, net.stage3)),
        Arrow("s3", "y", **op(f"mean over h w, linear {net.classifier.in_features} → K\n"
                              "('head': PAM, CAM go in a segmentation\n"
                              "network's conv head, which replaces this)", net.classifier)),
        Arrow("g", "c", "|g − median over h w|,\nmean over c"),
        Arrow("m", "a", "area_share on the gate's\nh×w grid"),
        Arrow("c", "mul"), Arrow("a", "mul"),
        Arrow("mul", "p", "sum over h w / sum of contrast"),
    ]
    return ("Plug and compare: one task, one tiny network, a mechanism plugged in, its map scored",
            "attn_tutorial.models.TinyResNet('bam') on data.object_on_texture; metric = mean of "
            "the per-image share over images,\nagainst its chance (the object's area share) and "
            "its null (the same maps scored against other images' masks)", items, arrows)
