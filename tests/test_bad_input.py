"""Bad input, tried as a new user would: each is a ValueError that names the argument, the value
and the rule, at construction where knowable (issue 10's list, then the same rules on the other
modules); the probe set of issue #36 (``_probes.py``: every public function and command, 180
scenarios); and legal boundary inputs that must keep working."""

from __future__ import annotations

import pytest
import torch

from _probes import PROBES, set_tmp

from attn_tutorial.attention import MultiHeadSelfAttention, SelfAttention2d
from attn_tutorial.bam import BAM, BAMSpatialGate
from attn_tutorial.danet import CAM, PAM, DANetHead
from attn_tutorial.eca import ECA, ECANS, SE, SEGC, eca_kernel_size
from attn_tutorial.external import ExternalAttention, MultiHeadExternalAttention
from attn_tutorial.psa import PSA, EPSABlock
from attn_tutorial.rest import EMSA, PA, BasicStem, Block, DropPath, PatchEmbed
from attn_tutorial.scconv import SCBottleneck, SCConv

POSITIVE = "must be a positive integer"

BAD = [  # (what a user typed, the call, a pattern with the argument, the value and the rule)
    # the list of issue 10
    ("SE(16, reduction=0)", lambda: SE(16, reduction=0), rf"reduction=0 {POSITIVE}"),
    ("SE(16, -1)", lambda: SE(16, -1), rf"reduction=-1 {POSITIVE}"),
    ('EMSA("16", 2)', lambda: EMSA("16", 2), rf"dim='16' {POSITIVE} \(got a str\)"),
    ("ExternalAttention(0)", lambda: ExternalAttention(0), rf"channels=0 {POSITIVE}"),
    ("EMSA(0, 1)", lambda: EMSA(0, 1), rf"dim=0 {POSITIVE}"),
    ("PSA(16, 64, conv_kernels=(3, 4, 7, 9))", lambda: PSA(16, 64, conv_kernels=(3, 4, 7, 9)),
     r"conv_kernels=\(3, 4, 7, 9\) mixes odd and even kernels.*one parity"),
    ("PatchEmbed(0)", lambda: PatchEmbed(0), rf"patch_size=0 {POSITIVE}"),
    ("PatchEmbed(-2)", lambda: PatchEmbed(-2, 3, 8), rf"patch_size=-2 {POSITIVE}"),
    ("SCConv(8, padding=0, dilation=0)", lambda: SCConv(8, padding=0, dilation=0),
     rf"dilation=0 {POSITIVE}"),
    ("SCConv(8, dilation=0)", lambda: SCConv(8, dilation=0), rf"dilation=0 {POSITIVE}"),
    ("BAM(32, dilation=2.5)", lambda: BAM(32, dilation=2.5),
     rf"dilation=2.5 {POSITIVE} \(got a float\)"),
    ("CAM(-3)", lambda: CAM(-3), rf"channels=-3 {POSITIVE} or None"),
    # the same rules elsewhere
    ("SE(16.0)", lambda: SE(16.0), rf"channels=16.0 {POSITIVE} \(got a float\)"),
    ("SE(True)", lambda: SE(True), rf"channels=True {POSITIVE} \(got a bool\)"),
    ("ECA(k_size=4)", lambda: ECA(k_size=4), r"k_size=4 must be a positive odd integer"),
    ("ECANS(8, 2)", lambda: ECANS(8, 2), r"k_size=2 must be a positive odd integer"),
    ("eca_kernel_size(64, gamma=0)", lambda: eca_kernel_size(64, gamma=0),
     r"gamma=0 must be a finite number > 0"),
    ("SEGC(8, 0)", lambda: SEGC(8, 0), r"channels=8 must be divisible by groups=0; groups must "
                                       "be a positive integer"),
    ("BAM(32, fusion='mean')", lambda: BAM(32, fusion="mean"),
     r"fusion='mean' must be one of 'official' \(product Mc \* Ms\), "
     r"'sum' \(sum Mc \+ Ms, the code's BNs\), 'paper'"),
    ("BAMSpatialGate(32, num_dilated_convs=-1)", lambda: BAMSpatialGate(32, num_dilated_convs=-1),
     r"num_dilated_convs=-1 must be an integer >= 0"),
    ("PSA(16, 64, conv_kernels=(3, 0, 7, 9))", lambda: PSA(16, 64, conv_kernels=(3, 0, 7, 9)),
     rf"conv_kernels\[1\]=0 {POSITIVE}"),
    ("PSA(16, 64, stride=0)", lambda: PSA(16, 64, stride=0), rf"stride=0 {POSITIVE}"),
    ("PSA(16, 64, conv_kernels=3)", lambda: PSA(16, 64, conv_kernels=3),
     r"conv_kernels=3 must be a sequence of integers"),
    ("EPSABlock('64', 16)", lambda: EPSABlock("64", 16), rf"inplanes='64' {POSITIVE}"),
    ("SCConv(8, pooling_r=0)", lambda: SCConv(8, pooling_r=0), rf"pooling_r=0 {POSITIVE}"),
    ("SCConv(8, stride=0)", lambda: SCConv(8, stride=0), rf"stride=0 {POSITIVE}"),
    ("SCConv(8, upsample='bicubic')", lambda: SCConv(8, upsample="bicubic"),
     r"upsample='bicubic' must be one of 'nearest'"),
    ("SCBottleneck(64, 16, cardinality=0)", lambda: SCBottleneck(64, 16, cardinality=0),
     rf"cardinality=0 {POSITIVE}"),
    ("PAM(8.0)", lambda: PAM(8.0), rf"channels=8.0 {POSITIVE}"),
    ("CAM(8, variant='neg')", lambda: CAM(8, variant="neg"),
     r"variant='neg' must be one of 'official'"),
    ("DANetHead(64, 3, dropout=1.5)", lambda: DANetHead(64, 3, dropout=1.5),
     r"dropout=1.5 must be a probability in \[0, 1\]"),
    ("DANetHead(64, 0)", lambda: DANetHead(64, 0), rf"num_classes=0 {POSITIVE}"),
    ("EMSA(8, 0)", lambda: EMSA(8, 0), rf"num_heads=0 {POSITIVE}"),
    ("EMSA(8, 2, sr_ratio=0)", lambda: EMSA(8, 2, sr_ratio=0), rf"sr_ratio=0 {POSITIVE}"),
    ("EMSA(8, 2, attn_drop=-0.1)", lambda: EMSA(8, 2, attn_drop=-0.1),
     r"attn_drop=-0.1 must be a probability"),
    ("PA(0)", lambda: PA(0), rf"dim=0 {POSITIVE}"),
    ("BasicStem(3, 1)", lambda: BasicStem(3, 1), r"out_ch=1 is too small"),
    ("Block(8, 2, mlp_ratio=0)", lambda: Block(8, 2, mlp_ratio=0),
     r"mlp_ratio=0 must be a finite number > 0"),
    ("DropPath(1.0)", lambda: DropPath(1.0), r"p=1.0 must be a probability in \[0, 1\)"),
    ("ExternalAttention(8, memory_size=0)", lambda: ExternalAttention(8, memory_size=0),
     rf"memory_size=0 {POSITIVE}"),
    ("MultiHeadExternalAttention(8, 2, expansion=0)",
     lambda: MultiHeadExternalAttention(8, 2, expansion=0), rf"expansion=0 {POSITIVE}"),
    ("MultiHeadSelfAttention(8, 0)", lambda: MultiHeadSelfAttention(8, 0),
     rf"num_heads=0 {POSITIVE}"),
    ("SelfAttention2d(-4)", lambda: SelfAttention2d(-4), rf"channels=-4 {POSITIVE}"),
]


@pytest.mark.parametrize("call,pattern", [(c, p) for _, c, p in BAD],
                         ids=[typed for typed, _, _ in BAD])
def test_bad_constructor_argument_is_a_value_error_naming_it(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# ------------------------------------------------------------ one value per BatchNorm channel

ONE_VALUE = [  # (module, input shape in train mode, pattern naming the argument)
    (lambda: SCConv(4), (1, 4, 4, 4), r"H×W = 4×4, which pooling_r=4 pools to a 1×1 map"),
    (lambda: SCConv(4), (1, 4, 7, 5), r"H×W = 7×5, which pooling_r=4 pools to a 1×1 map"),
    (lambda: SCConv(4, stride=8), (1, 4, 8, 8), r"H×W = 8×8, which stride=8 takes to 1×1"),
    (lambda: SCBottleneck(16, 4), (1, 16, 4, 4), r"pooling_r=4 pools to a 1×1 map"),
    (lambda: PatchEmbed(4, 3, 8), (1, 3, 4, 4), r"patch_size=4 embeds as a 1×1 grid"),
    (lambda: PatchEmbed(3, 3, 8), (1, 3, 4, 3), r"patch_size=3 embeds as a 1×1 grid"),
    (lambda: BasicStem(3, 8), (1, 3, 2, 2), r"H×W = 2×2, which the stride-2 first conv"),
    (lambda: BAM(32), (1, 32, 8, 8), r"x has batch size 1"),
    (lambda: ExternalAttention(4), (1, 4, 1, 1), r"H×W = 1×1"),
    (lambda: DANetHead(32, 3), (1, 32, 1, 1), r"H×W = 1×1"),
]


@pytest.mark.parametrize("build,shape,pattern", ONE_VALUE)
def test_batchnorm_with_one_value_per_channel_is_named(build, shape, pattern):
    """Where torch would raise "Expected more than 1 value per channel" from deep inside, the
    library says which sizes and argument leave a BatchNorm one value; eval mode and a batch of
    2 run."""
    m = build().train()
    x = torch.randn(*shape)
    with pytest.raises(ValueError, match=pattern + r".*one value per channel in train mode"):
        m(x)
    m(torch.randn(2, *shape[1:]))
    m.eval()(x)


def test_the_rule_is_torchs():
    """torch's BatchNorm refuses exactly one value per channel in train mode, nothing more."""
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm2d(3).train()(torch.randn(1, 3, 1, 1))
    torch.nn.BatchNorm2d(3).train()(torch.randn(1, 3, 2, 1))
    torch.nn.BatchNorm2d(3).train()(torch.randn(2, 3, 1, 1))


def test_sizes_that_leave_two_values_run_in_train_mode():
    SCConv(4).train()(torch.randn(1, 4, 8, 4))           # pooled 2×1
    PatchEmbed(4, 3, 8).train()(torch.randn(1, 3, 5, 4))  # grid 2×1
    BasicStem(3, 8).train()(torch.randn(1, 3, 3, 2))      # first map 2×1


def test_tiny_resnet_scconv_at_8x8_names_the_pooling_rate():
    from attn_tutorial.models import TinyResNet

    with pytest.raises(ValueError, match=r"pooling_r=2 pools to a 1×1 map"):
        TinyResNet("scconv").train()(torch.randn(1, 3, 8, 8))


# ------------------------------------------------------------ the probe set of issue #36


@pytest.mark.parametrize("call,pattern", [(c, p) for _, c, p in PROBES],
                         ids=[name for name, _, _ in PROBES])
def test_probe_is_refused_by_name(call, pattern, tmp_path, monkeypatch):
    """Each bad value of the probe set: a ValueError naming the argument (or file), the value and
    the rule; a command exits 2 with one line."""
    set_tmp(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=pattern):
        call()


# ------------------------------------------------------------ legal boundary inputs still work

def _maps():
    from attn_tutorial.attention import SelfAttention2d
    from attn_tutorial.bam import BAM
    from attn_tutorial.danet import CAM, PAM
    from attn_tutorial.eca import ECA, ECANS, SE
    from attn_tutorial.external import ExternalAttention
    from attn_tutorial.psa import PSA
    from attn_tutorial.rest import PA
    from attn_tutorial.scconv import SCConv

    return {  # name: (builder, channels, smallest legal H = W)
        "ECA": (lambda: ECA(8), 8, 1), "ECANS": (lambda: ECANS(8), 8, 1),
        "SE": (lambda: SE(16, 4), 16, 1), "BAM": (lambda: BAM(32, 4, dilation=2), 32, 1),
        "PSA": (lambda: PSA(16, 16, conv_groups=(1, 1, 1, 1), se_reduction=4), 16, 1),
        "SCConv": (lambda: SCConv(8, pooling_r=2), 8, 2), "PAM": (lambda: PAM(16), 16, 1),
        "CAM": (lambda: CAM(8), 8, 1), "ExternalAttention": (lambda: ExternalAttention(8), 8, 1),
        "PA": (lambda: PA(8), 8, 1), "SelfAttention2d": (lambda: SelfAttention2d(8, 2), 8, 1),
    }


def _variants(channels, smallest):
    """(name, x, tolerance) of legal boundary inputs; x in float32 unless the name says."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(2, channels, 7, 5, generator=g)
    return [
        ("batch 1", base[:1], 0.0),
        ("batch 0", base[:0], 0.0),
        ("smallest map", base[:, :, :smallest, :smallest].contiguous(), 0.0),
        ("odd non-square", base, 0.0),
        ("non-contiguous", torch.randn(2, channels, 5, 7, generator=g).transpose(2, 3), 0.0),
        ("channels_last", base.contiguous(memory_format=torch.channels_last), 1e-5),
        ("requires grad", base.clone().requires_grad_(), 0.0),
        ("float16", base.half(), 3e-2),
        ("bfloat16", base.bfloat16(), 1e-1),
    ]


@pytest.mark.parametrize("name", list(_maps()))
def test_legal_boundary_inputs_give_the_float32_result(name):
    """Batch 1 and 0, the smallest map, odd non-square, non-contiguous, channels_last,
    requires-grad, float16 and bfloat16 inputs run in eval mode and give the output of the same
    module on a contiguous float32 copy of the input (within the dtype's rounding)."""
    build, channels, smallest = _maps()[name]
    torch.manual_seed(0)
    module = build().eval()
    for variant, x, tol in _variants(channels, smallest):
        reference = module(x.detach().float().contiguous())
        low = module.to(x.dtype) if x.dtype != torch.float32 else module
        out = low(x)
        module.float()
        assert out.shape == reference.shape, (variant, out.shape)
        assert out.dtype == x.dtype, variant
        assert torch.isfinite(out).all(), variant
        scale = reference.abs().max().item() if reference.numel() else 0.0
        assert torch.allclose(out.float(), reference, atol=tol * max(scale, 1.0) + 1e-6,
                              rtol=0), (variant, (out.float() - reference).abs().max())


def _token_modules():
    from attn_tutorial.attention import MultiHeadSelfAttention
    from attn_tutorial.external import MultiHeadExternalAttention
    from attn_tutorial.rest import EMSA, Block, Mlp

    return {  # name: (builder, whether forward takes the grid H, W)
        "EMSA sr 2": (lambda: EMSA(8, 2, sr_ratio=2), True),
        "EMSA transform": (lambda: EMSA(8, 2, apply_transform=True), True),
        "Block": (lambda: Block(8, 2, sr_ratio=2), True),
        "MultiHeadExternalAttention": (lambda: MultiHeadExternalAttention(8, 2), False),
        "MultiHeadSelfAttention": (lambda: MultiHeadSelfAttention(8, 2), False),
        "Mlp": (lambda: Mlp(8, 16), False),
    }


@pytest.mark.filterwarnings("ignore:the token grid")  # a 1×2 grid at sr_ratio 2: one key
@pytest.mark.parametrize("name", list(_token_modules()))
def test_legal_token_inputs_give_the_float32_result(name):
    """Token modules in eval mode on an odd 5×7 grid: batch 1, a 1×2 grid, a non-contiguous
    view, float16 and bfloat16 give the float32 output on a contiguous copy (within rounding)."""
    build, takes_grid = _token_modules()[name]
    torch.manual_seed(0)
    module = build().eval()
    run = (lambda x, h, w: module(x, h, w)) if takes_grid else (lambda x, h, w: module(x))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 35, 8, generator=g)
    cases = [("batch 1", x[:1], 5, 7, 0.0), ("1×2 grid", x[:, :2].contiguous(), 1, 2, 0.0),
             ("non-contiguous", torch.randn(2, 8, 35, generator=g).transpose(1, 2), 5, 7, 0.0),
             ("float16", x.half(), 5, 7, 3e-2), ("bfloat16", x.bfloat16(), 5, 7, 1e-1)]
    for variant, tokens, h, w, tol in cases:
        with torch.no_grad():
            reference = run(tokens.float().contiguous(), h, w)
            module.to(tokens.dtype)
            out = run(tokens, h, w)
            module.float()
        assert out.shape == reference.shape and out.dtype == tokens.dtype, variant
        assert torch.isfinite(out).all(), variant
        scale = max(reference.abs().max().item(), 1.0)
        assert torch.allclose(out.float(), reference, atol=tol * scale + 1e-6, rtol=0), variant
