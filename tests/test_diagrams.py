"""The mechanism diagrams: every one renders, shows the shapes its module really produces (for two
configurations, so a typed shape would fail one of them), shows every learnable parameter of the
module, and stays readable (no text under 9 pt, nothing outside the figure, no label on top of
another or on a tensor box, box text inside its box).

The expected shapes are written here from the papers' equations and PyTorch's documented
convolution output size, ⌊(H + 2·padding − dilation·(k − 1) − 1) / stride⌋ + 1; the parameter
counts are those of the modules built here, summed over ``module.parameters()``.
"""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from attn_tutorial import (attention, bam, danet, diagrams, eca, external, models, psa,  # noqa: E402
                           rest, scconv)

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["self_attention", "eca_se", "bam", "psa", "scconv", "pam", "cam", "emsa", "external",
         "plug_and_compare"]


def conv_out(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    return (size + 2 * padding - (kernel - 1) - 1) // stride + 1


def expect_self_attention(B, C, H, W, heads):
    N, d = H * W, C // heads
    return [(B, C, H, W), (B, N, C), (B, heads, N, d), (B, heads, N, N)]


def expect_bam(B, C, H, W, reduction_ratio, dilation):
    r = C // reduction_ratio
    return [(B, C), (B, r), (B, C, 1, 1), (B, r, H, W), (B, 1, H, W), (B, C, H, W)]


def psi(C, gamma=2, b=1):
    """ECA's adaptive kernel size, the paper's formula (arXiv 1910.03151, eq. 12 and its code
    listing): t = int(|(log2 C + b) / γ|), then the odd number t or t + 1."""
    t = int(abs((math.log2(C) + b) / gamma))
    return t if t % 2 else t + 1


def expect_eca_se(B, C, H, W, reduction):
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


def expect_plug_and_compare(B, size, classes):
    # TinyResNet (models.py docstring): stem keeps H×W, stages 1 and 2 are stride-2 3×3 convs
    # (padding 1), stage 3 keeps the grid; widths 16, 32, 64; BAM keeps its input's shape
    half = conv_out(size, 3, 2, 1)
    quarter = conv_out(half, 3, 2, 1)
    return [(B, 3, size, size), (B, size, size), (B, 16, size, size), (B, 16, half, half),
            (B, 32, quarter, quarter), (B, 64, quarter, quarter), (B, classes),
            (B, quarter, quarter), (B,)]


# The example configuration (the defaults, written out) and a second, different one.
CASES = {
    "self_attention": (expect_self_attention, dict(B=2, C=64, H=14, W=14, heads=4),
                       dict(B=3, C=48, H=5, W=7, heads=3)),
    "bam": (expect_bam, dict(B=2, C=64, H=14, W=14, reduction_ratio=16, dilation=4),
            dict(B=3, C=96, H=9, W=6, reduction_ratio=8, dilation=2)),
    "eca_se": (expect_eca_se, dict(B=2, C=64, H=14, W=14, reduction=16),
               dict(B=1, C=512, H=3, W=5, reduction=4)),          # ψ(64) = 3, ψ(512) = 5
    "psa": (expect_psa, dict(B=2, C=64, H=14, W=14, planes=64, stride=1),
            dict(B=3, C=32, H=9, W=10, planes=128, stride=2)),
    "scconv": (expect_scconv, dict(B=2, C=64, H=14, W=14, pooling_r=4, stride=1),
               dict(B=3, C=32, H=11, W=9, pooling_r=2, stride=2)),
    "pam": (expect_pam, dict(B=2, C=64, H=14, W=14), dict(B=1, C=16, H=5, W=3)),
    "cam": (expect_cam, dict(B=2, C=64, H=14, W=14), dict(B=3, C=24, H=4, W=6)),
    # ResT stage 3 (official-specs §6: embed 64/128/256/512, heads 1/2/4/8, sr 8/4/2/1, p = 2
    # between stages) on stage 2's 28×28 map of a 224×224 image
    "emsa": (expect_emsa, dict(B=2, in_ch=128, H=28, W=28, patch=2, C=256, heads=4, sr=2),
             dict(B=1, in_ch=8, H=30, W=22, patch=2, C=48, heads=3, sr=4)),
    "external": (expect_external, dict(B=2, C=128, H=14, W=14, memory_size=64),
                 dict(B=3, C=32, H=6, W=5, memory_size=16)),
    "plug_and_compare": (expect_plug_and_compare, dict(B=2, size=32, classes=4),
                         dict(B=3, size=20, classes=3)),
}

# The library modules each diagram draws, built from a configuration.
MODULES = {
    "self_attention": lambda c: [attention.SelfAttention2d(c["C"], num_heads=c["heads"])],
    "bam": lambda c: [bam.BAM(c["C"], c["reduction_ratio"], c["dilation"])],
    "eca_se": lambda c: [eca.ECA(c["C"], k_size=psi(c["C"])), eca.SE(c["C"], c["reduction"])],
    "psa": lambda c: [psa.PSA(c["C"], c["planes"], stride=c["stride"])],
    "scconv": lambda c: [scconv.SCConv(c["C"], stride=c["stride"], pooling_r=c["pooling_r"])],
    "pam": lambda c: [danet.PAM(c["C"])],
    "cam": lambda c: [danet.CAM(c["C"])],
    "emsa": lambda c: [rest.PatchEmbed(c["patch"], c["in_ch"], c["C"], with_pos=True),
                       rest.EMSA(c["C"], c["heads"], qkv_bias=True, sr_ratio=c["sr"],
                                 apply_transform=True)],
    "external": lambda c: [external.ExternalAttention(c["C"], c["memory_size"])],
    "plug_and_compare": lambda c: [models.build_model("bam", num_classes=c["classes"])],
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
    elif name == "plug_and_compare":
        image = torch.rand(config["B"], 3, config["size"], config["size"])
        outputs = [modules[0].eval()(image)]
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
    fig = diagrams.draw("eca_se", C=512, reduction=16)
    labels = " ".join(t.get_text() for t in texts(fig))
    assert "k = ψ(C) = 5 for C = 512" in labels                     # ψ(512) = 5, not typed
    assert "zero padding 2 at both ends of C" in labels              # (k − 1) / 2
    assert "\n5 learnable parameters" in labels                     # ECA: k weights
    assert f"\n{512 * 32 + 32:,} learnable parameters" in labels    # SE: C·C/r + C/r
    assert f"\n{32 * 512 + 512:,} learnable parameters" in labels   # SE: C/r·C + C
    assert "k = ψ(C) = 3 for C = 64" in words(diagrams.draw("eca_se"))
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


# The mechanisms with a residual (identity) path, from the papers' outputs: BAM x ⊙ (1 + M),
# PAM and CAM γ·out + x, EANet ReLU(x + BN(conv(...))). Self-attention here, ECA, SE, PSA, EMSA
# and SCConv (its x inside σ(x + up) is an input to the gate, not a skip) return no x + ...
RESIDUAL = {"bam", "pam", "cam", "external"}
MEANINGS = {"tensor": "#0072b2", "attention map": "#cc79a7", "learnable parameters": "#e69f00",
            "op without parameters": "#8c8c8c"}


def hex_edge(patch) -> str:
    return matplotlib.colors.to_hex(patch.get_edgecolor())


@pytest.mark.parametrize("name", NAMES)
def test_the_legend_explains_exactly_what_the_diagram_draws(name):
    fig = diagrams.draw(name)
    box_edges = {hex_edge(p) for p in fig.findobj(FancyBboxPatch) if p.get_gid() == "box"}
    assert box_edges and box_edges <= OKABE_ITO
    label_edges = {hex_edge(t.get_bbox_patch()) for t in texts(fig) if t.get_gid() == "op"}
    drawn = {meaning for meaning, edge in MEANINGS.items() if edge in box_edges | label_edges}
    if any(p.get_linestyle() not in ("-", "solid") for p in fig.findobj(FancyArrowPatch)):
        drawn.add("residual")
    if fig.findobj(Circle):
        drawn.add("merge")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    explained = {m for m in [*MEANINGS, "residual", "merge"] if any(m in e for e in legend)}
    assert explained == drawn and len(legend) == len(drawn), (legend, drawn)
    assert ("residual" in drawn) == (name in RESIDUAL)


def line_of(fig, gid):
    """The polyline of the arrow ``gid`` ("src->dst"), without its head, in inches."""
    [patch] = [p for p in fig.findobj(FancyArrowPatch) if p.get_gid() == gid]
    path = patch.get_path()
    points = [tuple(path.vertices[0])]
    for code, vertex in zip(path.codes[1:], path.vertices[1:]):
        if code not in (path.LINETO, path.CURVE3):     # a MOVETO starts the head
            break
        points.append(tuple(vertex))
    return points


def segments_cross(p, q, r, s) -> bool:
    def side(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return side(p, q, r) * side(p, q, s) < 0 and side(r, s, p) * side(r, s, q) < 0


@pytest.mark.parametrize("case", (1, 2))
def test_scconv_draws_x_into_the_gate_as_a_tensor_path_that_crosses_no_other(case):
    fig = diagrams.draw("scconv", **CASES["scconv"][case])
    fig.canvas.draw()
    x_in = line_of(fig, "x->add")
    for gid in ("x->p", "p->k2", "k2->up", "x->k3"):
        other = line_of(fig, gid)
        assert not any(segments_cross(a, b, c, d) for a, b in zip(x_in, x_in[1:])
                       for c, d in zip(other, other[1:])), f"x->add crosses {gid}"
    text = words(fig)
    r = CASES["scconv"][case]["pooling_r"]
    assert f"avg pool {r}×{r}, stride {r}" in text
    assert "SCBottleneck" in text and "K1" in text


def test_psa_the_line_into_the_shared_se_has_a_head_on_its_frame():
    fig = diagrams.draw("psa")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    [se] = [t for t in texts(fig) if t.get_gid() == "op" and "one SE shared" in t.get_text()]
    frame = se.get_bbox_patch().get_window_extent(renderer)
    [head] = [p for p in fig.findobj(FancyArrowPatch) if p.get_gid() == "st->sc label"]
    tip = fig.axes[0].transData.transform(line_of(fig, "st->sc label")[-1])
    # the tip stops 2 pt (FancyArrowPatch's shrinkB) short of the frame's top edge
    assert frame.x0 <= tip[0] <= frame.x1 and 0 <= tip[1] - frame.y1 <= 6
    assert "Ps = planes/S = 16 channels per scale" in words(fig)


def words(fig) -> str:
    """Every text of a diagram on one line, line breaks as spaces."""
    return " ".join(" ".join(diagrams.labels(fig)).split())


def run_einsum(pattern, shape_a, shape_b):
    import torch
    from einops import einsum
    try:
        return tuple(einsum(torch.zeros(shape_a), torch.zeros(shape_b), pattern).shape)
    except Exception:       # einops: the pattern does not fit these shapes
        return None


# (first operand, second operand, result): the contraction whose einsum the diagram labels
CONTRACTIONS = {"self_attention": ("q", "k", "A"), "pam": ("q", "k", "A"),
                "emsa": ("q", "kv", "A"), "external": ("t", "mk", "l")}


@pytest.mark.parametrize("name,case", [(n, i) for n in CONTRACTIONS for i in (1, 2)])
def test_the_einsum_on_the_scores_contraction_turns_the_drawn_shapes_into_the_scores(name, case):
    fig = diagrams.draw(name, **CASES[name][case])
    a, b, out = (fig.shapes[key] for key in CONTRACTIONS[name])
    axes = r"(?:[a-z] )*[a-z]\b"     # single-letter axis names, one space apart
    patterns = [p for t in diagrams.labels(fig)
                for p in re.findall(rf"einsum ({axes}, {axes} -> {axes})", t)]
    assert out in [run_einsum(p, a, b) for p in patterns], patterns


def test_emsa_is_drawn_as_a_rest_stage_and_its_weights_rows_sum_to_zero():
    import torch
    fig = diagrams.draw("emsa")
    text = words(fig)
    assert "previous stage's feature map" in text and "ResTv1-Lite/S stage 3" in text
    assert "stride 2, padding 1, 128→256" in text          # p = 2: kernel 3, padding p // 2
    assert "stride 2, padding 1, depthwise, 256→256" in text   # sr = 2: kernel 3, padding 1
    assert "each row sums to 0, some are < 0" in text
    # why: softmax rows sum to 1, so each head's N×M map has mean 1/M; the InstanceNorm
    # subtracts it and divides by σ, leaving each row (1 − M·1/M)/σ = 0
    m = rest.EMSA(256, 4, qkv_bias=True, sr_ratio=2, apply_transform=True)
    a = m.attention_map(torch.randn(2, 196, 256), 14, 14)
    assert a.sum(-1).abs().max() < 1e-3 and (a < 0).any()
    other = words(diagrams.draw("emsa", **CASES["emsa"][2]))
    assert "a configuration no ResT stage uses" in other
    assert "stride 4, padding 2" in other                     # sr = 4: padding sr // 2


@pytest.mark.parametrize("case", (1, 2))
def test_external_memory_axis_differs_from_the_channel_axis_and_epsilon_is_shown(case):
    fig = diagrams.draw("external", **CASES["external"][case])
    S, C = fig.shapes["mk"]
    assert S != C and S == CASES["external"][case]["memory_size"]
    text = words(fig)
    assert "sum over the S slots + ε), ε = 1e-9" in text     # the official 1e-9 (specs §7)
    assert "sharing" in text and "two memories" in text


def test_cam_says_what_its_softmax_does_and_the_module_does_it():
    import torch
    text = words(diagrams.draw("cam"))
    assert "(rowmax_k E − E) = softmax(−E)" in text and "least similar" in text
    assert "paper writes softmax(E)" in text
    x = torch.randn(2, 8, 3, 4)
    f = x.flatten(2)
    energy = f @ f.transpose(1, 2)
    a = danet.CAM(8).attention_map(x)
    assert torch.allclose(a, torch.softmax(-energy, dim=-1), atol=1e-6)


def test_bam_names_the_dilation_padding_and_the_authors_pooling_window():
    import torch
    config = CASES["bam"][2]
    text = words(diagrams.draw("bam", **config))
    d = config["dilation"]
    assert f"dilation {d}, padding {d}" in text             # padding = dilation keeps H×W
    assert "H×H avg-pool" in text and "only when H = W" in text
    # the claim: an H×H window is the global mean on a square map, not on a 9×6 one
    square, wide = torch.randn(1, 2, 5, 5), torch.randn(1, 2, 3, 7)
    pool = torch.nn.functional.avg_pool2d
    assert torch.allclose(pool(square, 5).flatten(1), square.mean((2, 3)))
    assert pool(wide, (3, 3)).shape[-1] == 2                # several windows, not one mean


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


def test_plug_and_compare_names_the_positions_and_what_the_score_is_read_against():
    fig = diagrams.draw("plug_and_compare")
    assert fig.shapes["g"] == (2, 32, 8, 8) and fig.shapes["p"] == (2,)    # BAM 2's gate, per image
    text = words(fig)
    assert "'stage': BAM between stages" in text and "'last'" in text and "'head'" in text
    assert "'block', 'conv' plug in" in text
    assert "null (the same maps scored against other images' masks)" in text


def test_plug_and_compare_labels_say_plainly_what_each_box_and_arrow_is():
    text = words(diagrams.draw("plug_and_compare"))
    assert "stage 3's output" in text and "after BAM 2" not in text
    assert "'head': PAM, CAM go in a segmentation" in text and "before it" not in text
