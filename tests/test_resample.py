"""Per-image scores and the bootstrap: the parts average to the metrics' own value and null
(metrics.spatial_contrast_on_object / token_mass_on_object and shuffled_null, computed there
independently), and the interval is the percentile interval of a plain resampling loop."""

from __future__ import annotations

import pytest
import torch

from attn_tutorial.data import object_on_texture
from attn_tutorial.metrics import (attention_metric, shuffled_null, spatial_contrast_on_object)
from attn_tutorial.models import build_model
from attn_tutorial.resample import bootstrap_ratio, own_and_null, per_image

g = torch.Generator().manual_seed(0)


def test_own_and_null_read_the_diagonal_and_the_rolled_partners():
    scores = torch.rand(11, 11, generator=g, dtype=torch.float64)
    own, null = own_and_null(scores)
    for b in range(11):
        assert own[b].item() == scores[b, b].item()
        partners = [(b - k) % 11 for k in range(1, 9)]              # roll by k: image b - k
        assert null[b].item() == pytest.approx(sum(scores[b, c].item() for c in partners) / 8)
    own3, null3 = own_and_null(scores[:3, :3])                      # fewer images than rolls
    assert null3[0].item() == pytest.approx((scores[0, 2] + scores[0, 1]).item() / 2)
    with pytest.raises(ValueError, match="at least 2 images"):
        own_and_null(scores[:1, :1])


def test_gate_contrast_parts_average_to_the_metric_and_its_shuffled_null():
    task = object_on_texture(12, seed=1)
    gate = torch.rand(12, 3, 8, 8, generator=g, dtype=torch.float64)
    contrast_metric = spatial_contrast_on_object(gate, task.masks)
    want_null = shuffled_null(spatial_contrast_on_object, gate, task.masks)

    class Fixed(torch.nn.Module):
        def attention_map(self, x):
            return gate

    from attn_tutorial.metrics import score_gate_contrast
    from attn_tutorial.resample import _score_matrix
    own, null = own_and_null(_score_matrix(score_gate_contrast, Fixed(), None, task))
    assert own.mean().item() == pytest.approx(contrast_metric.value, rel=1e-9)
    assert null.mean().item() == pytest.approx(want_null, rel=1e-9)


@pytest.mark.parametrize("name", ["bam", "emsa", "pam"])
def test_per_image_parts_of_a_model_average_to_its_metric(name):
    model = build_model(name, kind="segmentation" if name == "pam" else "classification",
                        num_classes=3 if name == "pam" else 4, seed=0).eval()
    if name == "pam":
        from attn_tutorial.data import multi_object_segmentation
        task = multi_object_segmentation(10, seed=0)
    else:
        task = object_on_texture(10, seed=0)
    want = attention_metric(model, task)
    own, null = per_image(model, task)
    assert own.shape == null.shape == (10,)
    assert own.mean().item() == pytest.approx(want.value, rel=1e-5)
    assert null.mean().item() == pytest.approx(want.null, rel=1e-5)
    assert per_image(build_model("se"), task) is None                # eta^2 is not a mean


def test_bootstrap_is_the_percentile_interval_of_a_resampling_loop_and_repeats():
    own = torch.rand(30, generator=g, dtype=torch.float64) + 0.5
    null = torch.rand(30, generator=g, dtype=torch.float64) + 0.5
    low, high = bootstrap_ratio(own, null, resamples=200, seed=3)
    draw = torch.Generator().manual_seed(3)
    picks = torch.randint(0, 30, (200, 30), generator=draw)
    ratios = sorted(sum(own[i].item() for i in row) / sum(null[i].item() for i in row)
                    for row in picks.tolist())
    # torch.quantile's linear interpolation at q·(n − 1): 0.025·199 = 4.975, 0.975·199 = 194.025
    assert low == pytest.approx(ratios[4] + 0.975 * (ratios[5] - ratios[4]), rel=1e-12)
    assert high == pytest.approx(ratios[194] + 0.025 * (ratios[195] - ratios[194]), rel=1e-12)
    assert bootstrap_ratio(own, null, resamples=200, seed=3) == (low, high)
    assert low < own.sum().item() / null.sum().item() < high
    assert bootstrap_ratio(2 * null, null) == pytest.approx((2.0, 2.0))   # no spread, no width
    with pytest.raises(ValueError, match="two vectors of one length"):
        bootstrap_ratio(own, null[:5])
