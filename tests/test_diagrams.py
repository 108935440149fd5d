"""The mechanism diagrams: every one renders, shows the shapes its module really produces (for two
configurations, so a typed shape would fail one of them), shows every learnable parameter of the
module, and stays readable (no text under 9 pt, nothing outside the figure, no label on top of
another or on a tensor box, box text inside its box).

The expected shapes are written here from the papers' equations and PyTorch's documented
convolution output size, ⌊(H + 2·padding − dilation·(k − 1) − 1) / stride⌋ + 1; the parameter
counts are those of the modules built here, summed over ``module.parameters()``.
"""

from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Circle, FancyBboxPatch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from attn_tutorial import attention, bam, danet, diagrams, eca, external, psa, rest, scconv  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["self_attention", "eca_se", "bam", "psa", "scconv", "pam", "cam", "emsa", "external"]


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - (kernel - 1) - 1) // stride + 1


def expect_self_attention(B, C, H, W, heads):
    N, d = H * W, C // heads
    return [(B, C, H, W), (B, N, C), (B, heads, N, d), (B, heads, N, N)]


def expect_bam(B, C, H, W, reduction_ratio, dilation):
    r = C // reduction_ratio
    return [(B, C), (B, r), (B, C, 1, 1), (B, r, H, W), (B, 1, H, W), (B, C, H, W)]


def expect_eca_se(B, C, H, W, k_size, reduction):
    return [(B, C), (B, C // reduction), (B, C, H, W)]


def expect_psa(B, C, H, W, planes, stride):
    S, Ps = 4, planes // 4  # kernels 3, 5, 7, 9 with padding k // 2 keep the same H'
    Ho, Wo = conv_out(H, 3, stride, 1), conv_out(W, 3, stride, 1)
    return [(B, C, H, W), (B, Ps, Ho, Wo), (B, S, Ps, Ho, Wo), (B, S, Ps), (B, planes, Ho, Wo)]


def expect_scconv(B, C, H, W, pooling_r, stride):
    Ho, Wo = conv_out(H, 3, stride, 1), conv_out(W, 3, stride, 1)
    return [(B, C, H // pooling_r, W // pooling_r), (B, C, H, W), (B, C, Ho, Wo)]


def expect_pam(B, C, H, W):
    N = H * W
    return [(B, N, C // 8), (B, C // 8, N), (B, C, N), (B, N, N), (B, C, H, W)]


def expect_cam(B, C, H, W):
    return [(B, C, H * W), (B, C, C), (B, C, H, W)]


def expect_emsa(B, in_ch, H, W, patch, C, heads, sr):
    # ResT's overlapping convs: kernel s + 1, stride s, padding s // 2
    Ho, Wo = (conv_out(n, patch + 1, patch, patch // 2) for n in (H, W))
    Hk, Wk = (conv_out(n, sr + 1, sr, sr // 2) for n in (Ho, Wo))
    N, M, d = Ho * Wo, Hk * Wk, C // heads
    return [(B, in_ch, H, W), (B, C, Ho, Wo), (B, N, C), (B, heads, N, d), (B, C, Hk, Wk),
            (B, M, C), (B, heads, M, d), (B, heads, N, M)]


def expect_external(B, C, H, W, memory_size):
    N, S = H * W, memory_size
    return [(B, N, C), (S, C), (B, N, S), (B, C, H, W)]


# The example configuration (the defaults, written out) and a second, different one.
CASES = {
    "self_attention": (expect_self_attention, dict(B=2, C=64, H=14, W=14, heads=4),
                       dict(B=3, C=48, H=5, W=7, heads=3)),
    "bam": (expect_bam, dict(B=2, C=64, H=14, W=14, reduction_ratio=16, dilation=4),
            dict(B=3, C=96, H=9, W=6, reduction_ratio=8, dilation=2)),
    "eca_se": (expect_eca_se, dict(B=2, C=64, H=14, W=14, k_size=3, reduction=16),
               dict(B=1, C=40, H=3, W=5, k_size=5, reduction=4)),
    "psa": (expect_psa, dict(B=2, C=64, H=14, W=14, planes=64, stride=1),
            dict(B=3, C=32, H=9, W=10, planes=128, stride=2)),
    "scconv": (expect_scconv, dict(B=2, C=64, H=14, W=14, pooling_r=4, stride=1),
               dict(B=3, C=32, H=11, W=9, pooling_r=2, stride=2)),
    "pam": (expect_pam, dict(B=2, C=64, H=14, W=14), dict(B=1, C=16, H=5, W=3)),
    "cam": (expect_cam, dict(B=2, C=64, H=14, W=14), dict(B=3, C=24, H=4, W=6)),
    "emsa": (expect_emsa, dict(B=2, in_ch=3, H=56, W=56, patch=4, C=64, heads=4, sr=2),
             dict(B=1, in_ch=8, H=30, W=22, patch=2, C=48, heads=3, sr=4)),
    "external": (expect_external, dict(B=2, C=64, H=14, W=14, memory_size=64),
                 dict(B=3, C=32, H=6, W=5, memory_size=16)),
}

# The library modules each diagram draws, built from a configuration.
MODULES = {
    "self_attention": lambda c: [attention.SelfAttention2d(c["C"], num_heads=c["heads"])],
    "bam": lambda c: [bam.BAM(c["C"], c["reduction_ratio"], c["dilation"])],
    "eca_se": lambda c: [eca.ECA(c["C"], k_size=c["k_size"]), eca.SE(c["C"], c["reduction"])],
    "psa": lambda c: [psa.PSA(c["C"], c["planes"], stride=c["stride"])],
    "scconv": lambda c: [scconv.SCConv(c["C"], stride=c["stride"], pooling_r=c["pooling_r"])],
    "pam": lambda c: [danet.PAM(c["C"])],
    "cam": lambda c: [danet.CAM(c["C"])],
    "emsa": lambda c: [rest.PatchEmbed(c["patch"], c["in_ch"], c["C"], with_pos=True),
                       rest.EMSA(c["C"], c["heads"], sr_ratio=c["sr"], apply_transform=True)],
    "external": lambda c: [external.ExternalAttention(c["C"], c["memory_size"])],
}

CONFIGS = [(name, i) for name in NAMES for i in (1, 2)]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def texts(fig) -> list[Text]:
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def shown(fig, shape) -> bool:
    """A box's label ends with '= <shape>' (the whole shape: '2×4' does not match '2×4×14')."""
    pattern = re.compile(rf"= {'×'.join(map(str, shape))}$", re.M)
    return any(pattern.search(t.get_text()) for t in texts(fig))


def test_names_list_the_seven_mechanisms_and_the_baseline():
    assert diagrams.names() == NAMES


@pytest.mark.parametrize("name,case", CONFIGS)
def test_labels_hold_the_shapes_the_module_produces(name, case):
    expect, config = CASES[name][0], CASES[name][case]
    fig = diagrams.draw(name, **config)
    missing = [s for s in expect(**config) if not shown(fig, s)]
    assert not missing, f"{name} {config}: no box shows {missing}"
    # the output the module really returns, run here
    import torch
    modules = MODULES[name](config)
    if name == "emsa":
        image = torch.randn(config["B"], config["in_ch"], config["H"], config["W"])
        tokens, (h, w) = modules[0].eval()(image)
        outputs = [modules[1](tokens, h, w)]
    else:
        x = torch.randn(config["B"], config["C"], config["H"], config["W"])
        outputs = [m.eval()(x) for m in modules]
    for out in outputs:
        assert shown(fig, tuple(out.shape))
    assert fig.shapes["y" if "y" in fig.shapes else "ey"] == tuple(outputs[0].shape)


@pytest.mark.parametrize("name,case", CONFIGS)
def test_every_learnable_parameter_is_on_the_diagram(name, case):
    config = CASES[name][case]
    fig = diagrams.draw(name, **config)
    counts = [int(n.replace(",", "")) for t in texts(fig)
              for n in re.findall(r"([\d,]+) learnable parameters?\b", t.get_text())]
    expected = sum(sum(p.numel() for p in m.parameters()) for m in MODULES[name](config))
    assert sum(counts) == expected


def test_the_gates_parameter_counts_follow_the_papers():
    fig = diagrams.draw("eca_se", C=64, k_size=5, reduction=16)
    labels = " ".join(t.get_text() for t in texts(fig))
    assert "\n5 learnable parameters" in labels                   # ECA: k weights
    assert f"\n{64 * 4 + 4:,} learnable parameters" in labels       # SE: C·C/r + C/r
    assert f"\n{4 * 64 + 64:,} learnable parameters" in labels      # SE: C/r·C + C
    fig = diagrams.draw("pam")
    assert "× γ (starts at 0)\n1 learnable parameter" in [t.get_text() for t in texts(fig)]


@pytest.mark.parametrize("name,case", CONFIGS)
def test_readable_inside_the_figure_and_nothing_overlaps(name, case):
    fig = diagrams.draw(name, **CASES[name][case])
    assert fig.get_size_inches()[0] <= 9.5 and fig.dpi == 100
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    page = fig.bbox
    boxes = [p.get_window_extent(renderer) for p in fig.findobj(FancyBboxPatch)
             if p.get_gid() == "box"]
    circles = [p.get_window_extent(renderer) for p in fig.findobj(Circle)]
    labels = []
    for t in texts(fig):
        assert t.get_fontsize() >= 9, f"{t.get_text()!r} at {t.get_fontsize()} pt"
        extent = (t.get_bbox_patch() or t).get_window_extent(renderer)
        assert (extent.x0 >= page.x0 - 0.5 and extent.x1 <= page.x1 + 0.5
                and extent.y0 >= page.y0 - 0.5 and extent.y1 <= page.y1 + 0.5), \
            f"{t.get_text()!r} leaves the figure: {extent} vs {page}"
        if t.get_gid() == "op":
            labels.append((t.get_text(), extent))
            hit = [b for b in boxes + circles if b.overlaps(extent)]
            assert not hit, f"label {t.get_text()!r} lies on a tensor box or a merge circle"
    for i, (a, ea) in enumerate(labels):
        for b, eb in labels[i + 1:]:
            assert not ea.overlaps(eb), f"labels {a!r} and {b!r} overlap"
    assert len(circles) == sum(t.get_text() in "⊗⊙+" for t in texts(fig))
    # every box's text fits inside its box
    box_texts = [t for t in texts(fig) if "\n" in t.get_text() and t.get_gid() is None
                 and re.search(r"= [\d×]+$", t.get_text())]
    assert len(box_texts) == len(boxes)
    for t in box_texts:
        e = t.get_window_extent(renderer)
        assert any(b.x0 <= e.x0 and e.x1 <= b.x1 and b.y0 <= e.y0 and e.y1 <= b.y1
                   for b in boxes), f"{t.get_text()!r} overflows its box"


OKABE_ITO = {"#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7",
             "#000000"}


@pytest.mark.parametrize("name", NAMES)
def test_box_outlines_use_the_okabe_ito_palette_and_a_legend_explains_them(name):
    fig = diagrams.draw(name)
    edges = {matplotlib.colors.to_hex(p.get_edgecolor())
             for p in fig.findobj(FancyBboxPatch) if p.get_gid() == "box"}
    assert edges and edges <= OKABE_ITO
    legend = " | ".join(t.get_text() for t in fig.legends[0].get_texts())
    for meaning in ("tensor", "attention map", "learnable parameters", "residual", "merge"):
        assert meaning in legend


def test_unknown_name_lists_the_diagrams():
    with pytest.raises(ValueError, match="no diagram named 'se'") as err:
        diagrams.draw("se")
    assert all(name in str(err.value) for name in NAMES)


def test_bad_config_is_refused_clearly():
    with pytest.raises(ValueError, match=r"unknown config channels; it takes B \(default 2\)"):
        diagrams.draw("bam", channels=64)
    with pytest.raises(ValueError, match=r"C=2\.5 must be a positive integer"):
        diagrams.draw("cam", C=2.5)
    with pytest.raises(ValueError, match=r"H=0 must be a positive integer"):
        diagrams.draw("pam", H=0)
    with pytest.raises(ValueError, match="divisible by num_heads=5"):   # the module's own rule
        diagrams.draw("self_attention", heads=5)
    with pytest.raises(ValueError, match="pooling_r"):                  # H < r
        diagrams.draw("scconv", H=3)
    with pytest.raises(ValueError, match=r"sr=1, heads=4: .* need sr >= 2"):
        diagrams.draw("emsa", sr=1)


def test_defaults_are_what_draw_uses_and_shows_shape_matches_whole_shapes():
    assert diagrams.defaults("pam") == dict(B=2, C=64, H=14, W=14)
    fig = diagrams.draw("pam")
    assert fig.shapes["x"] == (2, 64, 14, 14) and fig.shapes["A"] == (2, 196, 196)
    assert diagrams.shows_shape(fig, (2, 196, 196))
    assert not diagrams.shows_shape(fig, (2, 196))        # a prefix of a shape is not a shape
    assert not diagrams.shows_shape(fig, (196, 196))      # nor a suffix
