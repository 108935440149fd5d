"""The analytic cost models against the library modules: parameters counted with
sum(p.numel()), FLOPs counted with FlopCounterMode (attn_tutorial.bench.count_flops), and the
minimum traffic against the real input/output sizes — at odd, non-square sizes and several
hyper-parameters."""

from __future__ import annotations

import pytest
import torch

from attn_tutorial import cost
from attn_tutorial.attention import MultiHeadSelfAttention
from attn_tutorial.bam import BAM
from attn_tutorial.bench import count_flops
from attn_tutorial.danet import CAM, PAM
from attn_tutorial.eca import ECA, SE
from attn_tutorial.external import ExternalAttention, MultiHeadExternalAttention
from attn_tutorial.psa import PSA
from attn_tutorial.rest import EMSA
from attn_tutorial.scconv import SCConv


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def fmap(B, C, H, W):
    return (torch.randn(B, C, H, W),)


def tokens(B, C, H, W, with_grid=False):
    x = torch.randn(B, H * W, C)
    return (x, H, W) if with_grid else (x,)


# (id, analytic cost, module, forward args)
CASES = [
    ("se", lambda: cost.se(2, 48, 5, 7), lambda: SE(48), fmap(2, 48, 5, 7)),
    ("se_r8", lambda: cost.se(1, 40, 3, 9, reduction=8), lambda: SE(40, 8), fmap(1, 40, 3, 9)),
    ("eca", lambda: cost.eca(2, 33, 5, 7), lambda: ECA(33), fmap(2, 33, 5, 7)),
    ("eca_k7", lambda: cost.eca(1, 64, 9, 4, k=7), lambda: ECA(64, 7), fmap(1, 64, 9, 4)),
    ("bam", lambda: cost.bam(2, 33, 7, 9), lambda: BAM(33), fmap(2, 33, 7, 9)),
    ("bam_r8_3conv", lambda: cost.bam(3, 40, 6, 11, reduction_ratio=8, num_dilated_convs=3),
     lambda: BAM(40, 8, num_dilated_convs=3), fmap(3, 40, 6, 11)),
    ("pam", lambda: cost.pam(2, 20, 5, 7), lambda: PAM(20), fmap(2, 20, 5, 7)),
    ("pam_sdpa", lambda: cost.pam(1, 13, 6, 3), lambda: PAM(13, use_sdpa=True), fmap(1, 13, 6, 3)),
    ("cam", lambda: cost.cam(2, 9, 5, 7), lambda: CAM(9), fmap(2, 9, 5, 7)),
    ("scconv", lambda: cost.scconv(2, 16, 9, 13), lambda: SCConv(16), fmap(2, 16, 9, 13)),
    ("scconv_s2_d2_g3", lambda: cost.scconv(1, 12, 10, 7, stride=2, dilation=2, groups=3,
                                            pooling_r=3),
     lambda: SCConv(12, stride=2, padding=2, dilation=2, groups=3, pooling_r=3),
     fmap(1, 12, 10, 7)),
    ("psa", lambda: cost.psa(2, 64, 7, 9), lambda: PSA(64, 64), fmap(2, 64, 7, 9)),
    ("psa_s2_odd", lambda: cost.psa(1, 18, 7, 10, planes=72, conv_kernels=(3, 5, 7, 1),
                                    conv_groups=(1, 2, 3, 6), stride=2),
     lambda: PSA(18, 72, conv_kernels=(3, 5, 7, 1), conv_groups=(1, 2, 3, 6), stride=2),
     fmap(1, 18, 7, 10)),
    ("psa_even_kernel", lambda: cost.psa(1, 32, 6, 9, conv_kernels=(2, 4), conv_groups=(1, 2),
                                         stride=3, se_reduction=4),
     lambda: PSA(32, 32, conv_kernels=(2, 4), conv_groups=(1, 2), stride=3, se_reduction=4),
     fmap(1, 32, 6, 9)),
    ("emsa", lambda: cost.emsa(2, 64, 7, 9, num_heads=2, qkv_bias=True, sr_ratio=4,
                               apply_transform=True),
     lambda: EMSA(64, 2, qkv_bias=True, sr_ratio=4, apply_transform=True),
     tokens(2, 64, 7, 9, True)),
    ("emsa_sr3", lambda: cost.emsa(1, 36, 7, 10, num_heads=4, sr_ratio=3, apply_transform=True),
     lambda: EMSA(36, 4, sr_ratio=3, apply_transform=True), tokens(1, 36, 7, 10, True)),
    ("emsa_plain", lambda: cost.emsa(1, 24, 5, 11, num_heads=3),
     lambda: EMSA(24, 3), tokens(1, 24, 5, 11, True)),
    ("emsa_one_head", lambda: cost.emsa(2, 16, 6, 5, num_heads=1, sr_ratio=2,
                                        apply_transform=True),
     lambda: EMSA(16, 1, sr_ratio=2, apply_transform=True), tokens(2, 16, 6, 5, True)),
    ("ea_tied", lambda: cost.external_attention(2, 24, 7, 9),
     lambda: ExternalAttention(24), fmap(2, 24, 7, 9)),
    ("ea_untied_s32", lambda: cost.external_attention(1, 17, 5, 11, memory_size=32,
                                                      tie_memories=False),
     lambda: ExternalAttention(17, 32, tie_memories=False), fmap(1, 17, 5, 11)),
    ("ea_mh", lambda: cost.external_attention_mh(2, 32, 7, 9, num_heads=4),
     lambda: MultiHeadExternalAttention(32, 4), tokens(2, 32, 7, 9)),
    ("ea_mh_odd", lambda: cost.external_attention_mh(1, 36, 5, 11, num_heads=3, memory_size=16,
                                                     expansion=2),
     lambda: MultiHeadExternalAttention(36, 3, memory_size=16, expansion=2),
     tokens(1, 36, 5, 11)),
    ("mhsa", lambda: cost.mhsa(2, 48, 7, 9, num_heads=4),
     lambda: MultiHeadSelfAttention(48, 4, use_sdpa=False), tokens(2, 48, 7, 9)),
    ("mhsa_nobias", lambda: cost.mhsa(1, 30, 5, 11, num_heads=3, qkv_bias=False),
     lambda: MultiHeadSelfAttention(30, 3, qkv_bias=False, use_sdpa=False),
     tokens(1, 30, 5, 11)),
]


@pytest.mark.parametrize("name,predict,build,args", CASES, ids=[c[0] for c in CASES])
def test_formula_matches_counted_params_flops_and_sizes(name, predict, build, args):
    torch.manual_seed(0)
    module = build().eval()
    predicted = predict()
    assert predicted.params == n_params(module)
    assert predicted.flops == count_flops(module, *args)
    with torch.no_grad():
        out = module(*args)
    x = args[0]
    assert predicted.min_bytes == 4 * (x.numel() + out.numel() + n_params(module))


def test_min_bytes_scales_with_the_dtype_size_and_intensity_is_flops_per_byte():
    c4, c2 = cost.pam(2, 64, 14, 14), cost.pam(2, 64, 14, 14, dtype_bytes=2)
    assert c4.min_bytes == 2 * c2.min_bytes
    assert c4.flops == c2.flops and c4.params == c2.params
    assert c4.intensity == pytest.approx(c4.flops / c4.min_bytes)


def test_conv_out_size():
    assert cost.conv_out_size(7, 3, 2, 1) == 4
    assert cost.conv_out_size(7, 3, 2, 2, dilation=2) == 4
    assert cost.conv_out_size(7, 5, 4, 2) == 2   # EMSA sr = 4: kernel 5, padding 2
    assert cost.conv_out_size(9, 4, 3, 1) == 3   # EMSA sr = 3: kernel 4, padding 1


def test_quadratic_and_linear_growth():
    # PAM and MHSA grow with N², external attention and CAM linearly in N
    small, big = dict(B=1, C=64, H=8, W=8), dict(B=1, C=64, H=16, W=16)
    for fn in (cost.cam, cost.external_attention):
        assert fn(**big).flops == 4 * fn(**small).flops
    for fn in (cost.pam, cost.mhsa):
        assert fn(**big).flops > 4 * fn(**small).flops


def test_fused_sdpa_on_cpu_may_escape_the_counter():
    # FlopCounterMode counts SDPA when it runs as matmuls (or a registered fused kernel); the
    # fused CPU flash kernel of torch 2.x is not registered, so the counter then sees only the
    # projections. The formula always gives the full count.
    B, C, H, W = 1, 30, 5, 11
    full = cost.mhsa(B, C, H, W, num_heads=3)
    projections = 2 * B * H * W * C * C * 4
    counted = count_flops(MultiHeadSelfAttention(C, 3, use_sdpa=True), *tokens(B, C, H, W))
    assert counted in (full.flops, projections)


def test_boundary_sizes_follow_the_formulas():
    """B = 0 costs only the parameters' bytes; the smallest legal SE (C = r, hidden 1) and a 1×1
    map follow the docstring formulas: params 2·C·1 + 1 + C, FLOPs 2·B·C·1·2."""
    empty = cost.se(0, 16, 4, 4, reduction=16)
    assert (empty.params, empty.flops) == (2 * 16 + 1 + 16, 0)
    assert empty.min_bytes == 4 * empty.params
    one = cost.se(1, 16, 1, 1, reduction=16)
    assert (one.params, one.flops) == (49, 2 * 16 * 2)
    assert one.min_bytes == 4 * (16 + 16 + 49)
    assert cost.conv_out_size(1, 1) == 1 and cost.conv_out_size(1, 3, padding=1) == 1
    assert cost.conv_out_size(5, 3, stride=2, padding=1, dilation=2) == 2  # ⌊(5+2−4−1)/2⌋+1


@pytest.mark.parametrize("call,match", [
    (lambda: cost.se(1, 8, 4, 4, reduction=16), r"channels=8 is too small for reduction 16"),
    (lambda: cost.psa(1, 64, 8, 8, conv_kernels=(3, 5), conv_groups=(1, 4, 8)), "same length"),
    (lambda: cost.emsa(1, 16, 4, 4, qkv_bias="False"), r"qkv_bias='False' must be True or False"),
    (lambda: cost.Cost(0, 0, 0).intensity, r"min_bytes=0"),
])
def test_a_configuration_the_module_refuses_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()
