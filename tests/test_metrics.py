"""Attention metrics: each against a plain loop from its docstring formula and its chance level;
the nulls (shuffled targets, the gate's input) against loops. Trained models beating chance and
their nulls are tested on the shipped zoo (tests/test_zoo.py)."""

from __future__ import annotations

import math

import pytest
import torch

from attn_tutorial.data import multi_object_segmentation, object_on_texture
from attn_tutorial.metrics import (Metric, area_share, attention_metric, attention_scores,
                                   class_selectivity, gate_contrast, pixel_classes,
                                   same_class_channel_mass, same_instance_mass,
                                   score_channel_gate, score_channel_grouping, score_token_mass,
                                   shuffled_null, slot_purity, spatial_contrast_on_object,
                                   spatial_mass_on_object, token_mass_on_object)
from attn_tutorial.models import build_model

g = torch.Generator().manual_seed(0)


def cell_share(mask, b, i, j, h, w):
    H, W = mask.shape[1:]
    sh, sw = H // h, W // w
    return float(mask[b, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw].double().mean())


def test_area_share_loop():
    mask = torch.rand(2, 8, 12, generator=g) > 0.5
    share = area_share(mask, (4, 3))
    for b in range(2):
        for i in range(4):
            for j in range(3):
                assert abs(share[b, i, j].item() - cell_share(mask, b, i, j, 4, 3)) < 1e-6


def test_spatial_mass_loop_and_chance():
    mask = torch.rand(3, 8, 8, generator=g) > 0.7
    a = torch.rand(3, 4, 4, generator=g, dtype=torch.float64)
    vals, chance = [], []
    for b in range(3):
        num = sum(a[b, i, j].item() * cell_share(mask, b, i, j, 4, 4)
                  for i in range(4) for j in range(4))
        vals.append(num / a[b].sum().item())
        chance.append(sum(cell_share(mask, b, i, j, 4, 4) for i in range(4) for j in range(4)) / 16)
    got = spatial_mass_on_object(a, mask)
    assert abs(got.value - sum(vals) / 3) < 1e-6 and abs(got.chance - sum(chance) / 3) < 1e-6
    # a uniform map scores exactly chance, a map equal to the mask scores 1
    assert abs(spatial_mass_on_object(torch.ones(3, 8, 8), mask).value
               - spatial_mass_on_object(torch.ones(3, 8, 8), mask).chance) < 1e-6
    assert abs(spatial_mass_on_object(mask.double() + 0.0, mask).value - 1) < 1e-9
    with pytest.raises(ValueError, match="non-negative"):
        spatial_mass_on_object(-a, mask)


def lower_median(values):
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def test_spatial_contrast_loop_and_chance():
    mask = torch.rand(3, 8, 8, generator=g) > 0.7
    gate = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    vals, chance = [], []
    for b in range(3):
        medians = [lower_median(gate[b, c].flatten().tolist()) for c in range(2)]
        contrast = [[sum(abs(gate[b, c, i, j].item() - medians[c]) for c in range(2)) / 2
                     for j in range(4)] for i in range(4)]
        assert torch.allclose(gate_contrast(gate)[b], torch.tensor(contrast, dtype=torch.float64))
        num = sum(contrast[i][j] * cell_share(mask, b, i, j, 4, 4)
                  for i in range(4) for j in range(4))
        vals.append(num / sum(map(sum, contrast)))
        chance.append(sum(cell_share(mask, b, i, j, 4, 4) for i in range(4) for j in range(4)) / 16)
    got = spatial_contrast_on_object(gate, mask)
    assert abs(got.value - sum(vals) / 3) < 1e-9 and abs(got.chance - sum(chance) / 3) < 1e-9
    # the sign of the departure does not matter: a gate low on the object scores like a high one
    low = torch.where(area_share(mask, (4, 4), torch.float64) > 0.5, -1.0, 0.0)
    assert spatial_contrast_on_object(low, mask).value == \
        pytest.approx(spatial_contrast_on_object(-low, mask).value)
    assert spatial_contrast_on_object(low, mask).value > 1.5 * got.chance
    # a flat gate counts at chance; B×h×w is one channel
    flat = spatial_contrast_on_object(torch.full((3, 4, 4), 0.7), mask)
    assert flat.value == pytest.approx(flat.chance)
    assert spatial_contrast_on_object(gate[:, :1], mask).value == \
        pytest.approx(spatial_contrast_on_object(gate[:, 0], mask).value)
    with pytest.raises(ValueError, match="gate must be"):
        spatial_contrast_on_object(gate[0, 0, 0], mask)


def test_token_mass_loop_and_chance():
    mask = torch.rand(2, 8, 8, generator=g) > 0.6
    attn = torch.rand(2, 3, 16, 4, generator=g, dtype=torch.float64).softmax(-1)
    total = 0.0
    for b in range(2):
        for h in range(3):
            for n in range(16):
                total += sum(attn[b, h, n, j].item() * cell_share(mask, b, j // 2, j % 2, 2, 2)
                             for j in range(4))
    got = token_mass_on_object(attn, mask, (2, 2))
    assert abs(got.value - total / (2 * 3 * 16)) < 1e-9
    uniform = token_mass_on_object(torch.full((2, 3, 16, 4), 0.25), mask, (2, 2))
    assert abs(uniform.value - uniform.chance) < 1e-6
    with pytest.raises(ValueError, match="key_grid"):
        token_mass_on_object(attn, mask, (3, 3))


def test_same_instance_mass_loop_and_chance():
    inst = torch.zeros(2, 4, 4, dtype=torch.long)
    inst[0, :2, :2] = 1
    inst[0, 2:, 1:] = 2
    inst[1, 1:3, 1:3] = 1
    attn = torch.rand(2, 16, 16, generator=g, dtype=torch.float64).softmax(-1)
    vals, chances = [], []
    for b in range(2):
        for i in range(16):
            k = inst[b].flatten()[i].item()
            if k == 0:
                continue
            same = (inst[b].flatten() == k).double()
            vals.append((attn[b, i] * same).sum().item())
            chances.append(same.mean().item())
    got = same_instance_mass(attn, inst, (4, 4))
    assert abs(got.value - sum(vals) / len(vals)) < 1e-9
    assert abs(got.chance - sum(chances) / len(chances)) < 1e-9
    uniform = same_instance_mass(torch.full((2, 16, 16), 1 / 16), inst, (4, 4))
    assert abs(uniform.value - uniform.chance) < 1e-6
    with pytest.raises(ValueError, match="no query"):
        same_instance_mass(attn, torch.zeros(2, 4, 4, dtype=torch.long), (4, 4))


def test_class_selectivity_loop_and_chance():
    gates = torch.rand(30, 5, generator=g, dtype=torch.float64)
    labels = torch.arange(30) % 3
    etas = []
    for d in range(5):
        col = gates[:, d].tolist()
        mean = sum(col) / 30
        total = sum((v - mean) ** 2 for v in col)
        between = 0.0
        for k in range(3):
            vals = [v for v, l in zip(col, labels.tolist()) if l == k]
            between += len(vals) * (sum(vals) / len(vals) - mean) ** 2
        etas.append(between / total)
    got = class_selectivity(gates, labels)
    assert abs(got.value - sum(etas) / 5) < 1e-9 and got.chance == pytest.approx(2 / 29)
    # a gate that is a function of the class scores 1
    assert class_selectivity(labels[:, None].double() * 1.0 + 0 * gates[:, :1], labels).value \
        == pytest.approx(1.0)
    # gates that never vary explain nothing
    assert class_selectivity(torch.ones(30, 4), labels).value == 0.0
    # class-blind gates average about chance
    many = [class_selectivity(torch.rand(60, 20, generator=g), torch.arange(60) % 4).value
            for _ in range(20)]
    assert abs(sum(many) / 20 - 3 / 59) < 0.015


def test_same_class_channel_mass_loop():
    classes = torch.zeros(2, 4, 4, dtype=torch.long)
    classes[:, :2] = 1
    classes[:, 3:] = 2
    feats = torch.rand(2, 6, 4, 4, generator=g, dtype=torch.float64)
    attn = torch.rand(2, 6, 6, generator=g, dtype=torch.float64).softmax(-1)
    pref = []
    for c in range(6):
        resp = [feats[:, c][classes == k].mean().item() for k in (1, 2)]
        pref.append(resp.index(max(resp)))
    total, chance = 0.0, 0.0
    for b in range(2):
        for c in range(6):
            others = [d for d in range(6) if d != c]
            same = sum(attn[b, c, d].item() for d in others if pref[d] == pref[c])
            total += same / sum(attn[b, c, d].item() for d in others)
    for c in range(6):
        chance += sum(1 for d in range(6) if d != c and pref[d] == pref[c]) / 5 / 6
    got = same_class_channel_mass(attn, feats, classes)
    assert abs(got.value - total / 12) < 1e-9 and abs(got.chance - chance) < 1e-9
    # the diagonal does not count: adding self-attention leaves the value unchanged
    selfish = 0.5 * attn + 0.5 * torch.eye(6, dtype=torch.float64)
    assert same_class_channel_mass(selfish, feats, classes).value == pytest.approx(got.value)
    # a row that is all on the diagonal counts at its chance; uniform rows score chance
    assert same_class_channel_mass(torch.eye(6).expand(2, 6, 6), feats, classes).value == \
        pytest.approx(got.chance)
    uniform = same_class_channel_mass(torch.full((2, 6, 6), 1 / 6), feats, classes)
    assert uniform.value == pytest.approx(uniform.chance)


def test_slot_purity_loop_and_chance():
    classes = torch.randint(0, 3, (2, 4, 4), generator=g)
    attn = torch.rand(2, 16, 5, generator=g, dtype=torch.float64)
    mass = [[0.0, 0.0] for _ in range(5)]
    for b in range(2):
        for n in range(16):
            k = classes[b].flatten()[n].item()
            if k:
                for s in range(5):
                    mass[s][k - 1] += attn[b, n, s].item()
    value = sum(max(m) for m in mass) / sum(sum(m) for m in mass)
    area = [(classes == k).sum().item() for k in (1, 2)]
    got = slot_purity(attn, classes, (4, 4))
    assert abs(got.value - value) < 1e-9 and abs(got.chance - max(area) / sum(area)) < 1e-9
    uniform = slot_purity(torch.ones(2, 16, 5), classes, (4, 4))
    assert abs(uniform.value - uniform.chance) < 1e-6


def test_pixel_classes_of_a_classification_task():
    task = object_on_texture(4, seed=1)
    classes = pixel_classes(task)
    assert torch.equal(classes > 0, task.masks)
    assert all(classes[b][task.masks[b]].unique().tolist() == [task.labels[b].item() + 1]
               for b in range(4))


# ------------------------------------------------------------- nulls and scorers

def test_shuffled_null_is_the_metric_against_other_images_masks():
    mask = torch.rand(5, 8, 8, generator=g) > 0.6
    a = torch.rand(5, 4, 4, generator=g, dtype=torch.float64)
    # loop reference: image b's map against image (b - k)'s mask, k = 1..4 (all others of 5)
    per_shift = []
    for k in range(1, 5):
        vals = []
        for b in range(5):
            other = (b - k) % 5
            num = sum(a[b, i, j].item() * cell_share(mask, other, i, j, 4, 4)
                      for i in range(4) for j in range(4))
            vals.append(num / a[b].sum().item())
        per_shift.append(sum(vals) / 5)
    got = shuffled_null(spatial_mass_on_object, a, mask, shifts=8)   # capped at B - 1 = 4
    assert got == pytest.approx(sum(per_shift) / 4, abs=1e-9)
    assert shuffled_null(spatial_mass_on_object, a[:1], mask[:1]) is None
    # a map that is the same for every image (position only) scores its null, not above it
    centre = torch.zeros(5, 8, 8, dtype=torch.bool)
    centre[:, 2:6, 2:6] = True
    biased = area_share(centre, (4, 4), torch.float64)
    blind = spatial_mass_on_object(biased, centre)
    assert blind.value > 2 * blind.chance                       # beats the uniform-map chance
    assert shuffled_null(spatial_mass_on_object, biased, centre) == pytest.approx(blind.value)


class FixedGate(torch.nn.Module):
    """attention_map returns a stored gate; stands in for a plugged module."""

    def __init__(self, gate):
        super().__init__()
        self.gate = gate

    def attention_map(self, x):
        return self.gate


def test_channel_gate_null_is_the_eta2_of_the_pooled_input():
    labels = torch.arange(12) % 3
    task = object_on_texture(12, seed=2)
    task = type(task)(task.images, labels, task.masks, task.class_names, task.kind)
    x = torch.randn(12, 5, 4, 4, generator=g, dtype=torch.float64)
    gate = torch.rand(12, 2, 5, generator=g, dtype=torch.float64)        # PSA-like B×S×C
    pooled = torch.tensor([[sum(x[b, c].flatten().tolist()) / 16 for c in range(5)]
                           for b in range(12)], dtype=torch.float64)
    got = score_channel_gate(FixedGate(gate), x, task)
    assert got.value == pytest.approx(class_selectivity(gate.flatten(1), labels).value)
    assert got.null == pytest.approx(class_selectivity(pooled, labels).value)
    # a gate that is a copy of its pooled input adds nothing: value == null
    same = score_channel_gate(FixedGate(pooled), x, task)
    assert same.value == pytest.approx(same.null)


def test_token_scorer_reads_the_key_grid_and_cam_null_is_its_chance():
    task = multi_object_segmentation(6, seed=0)
    x = torch.randn(6, 8, 4, 4, generator=g)
    attention = torch.rand(6, 2, 16, 4, generator=g).softmax(-1)

    class Reduced(FixedGate):
        def key_grid(self, height, width):
            return height // 2, width // 2

    got = score_token_mass(Reduced(attention), x, task)
    assert got.value == pytest.approx(token_mass_on_object(attention, task.masks, (2, 2)).value)
    pam_like = torch.rand(6, 16, 16, generator=g).softmax(-1)
    one_head = score_token_mass(FixedGate(pam_like), x, task)
    assert one_head.value == pytest.approx(
        token_mass_on_object(pam_like[:, None], task.masks, (4, 4)).value)
    cam = score_channel_grouping(FixedGate(torch.rand(6, 8, 8, generator=g).softmax(-1)), x, task)
    assert cam.null == cam.chance


def test_metric_lift_over_null_and_baseline():
    assert Metric("m", 0.3, 0.1).lift == pytest.approx(3.0)
    assert Metric("m", 0.3, 0.1, 0.2).over_null == pytest.approx(1.5)
    assert math.isnan(Metric("m", 0.3, 0.1).over_null)
    assert attention_metric(build_model("none"), object_on_texture(4)) is None
    scores = attention_scores(build_model("bam"), object_on_texture(8))
    assert list(scores) == ["after1", "after2"] and all(s.null is not None for s in scores.values())


def test_channel_gate_null_pools_what_a_psa_gate_reads_not_the_module_input():
    # PSA's SE reads the branch convs' outputs: the null is their pooled eta^2 (B×S×C), which
    # differs from the eta^2 of the module's pooled input
    from attn_tutorial.registry import MECHANISMS
    task = object_on_texture(12, seed=2)
    labels = torch.arange(12) % 3
    task = type(task)(task.images, labels, task.masks, task.class_names, task.kind)
    torch.manual_seed(0)
    module = MECHANISMS["psa"].build(8).double().eval()
    x = torch.randn(12, 8, 4, 4, generator=g, dtype=torch.float64) + labels.double()[:, None, None, None] * torch.linspace(-1, 1, 8, dtype=torch.float64)[None, :, None, None]
    branches = torch.stack([branch(x) for branch in module.branches], dim=1)      # b s c h w
    reads = torch.tensor([[[branches[b, s, c].sum().item() / 16 for c in range(2)]
                           for s in range(4)] for b in range(12)], dtype=torch.float64)
    got = score_channel_gate(module, x, task)
    assert got.null == pytest.approx(class_selectivity(reads.reshape(12, 8), labels).value)
    pooled_input = class_selectivity(x.mean((2, 3)), labels).value
    assert abs(got.null - pooled_input) > 1e-3
