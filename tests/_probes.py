"""The bad-input probe set (issue #36): for every public function and command of the library
(mechanisms, cost, data, train, show, metrics, registry, models, compare, zoo, the command line),
its bad values, each expected to be refused with a ValueError (a command: exit status 2 and one
line) that names the argument or file, the value and the rule.

Each probe is ``(id, call, pattern)``: ``call()`` must raise ``ValueError`` whose message matches
``pattern`` (a regex searched in it). Imports happen inside the calls so that the set runs against
any version of the library (it was first run against the tree before the fixes: see the note of
issue #36 for how many failed there).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import torch
from torch import nn

TMP = Path("/tmp")  # replaced by the test's tmp_path through set_tmp()


def set_tmp(path: Path) -> None:
    global TMP
    TMP = path


def _m(name):
    import importlib

    return importlib.import_module(f"attn_tutorial.{name}")


def cli(*argv: str) -> None:
    """Run the command line in-process; raise ValueError(line) when it exits 2 with one line on
    stderr (what a command must do on bad input), else return (the probe then fails)."""
    from attn_tutorial.__main__ import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            rc = main(list(argv))
        except SystemExit as stop:
            rc = stop.code
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if rc == 2 and len(lines) == 1:
        raise ValueError(lines[0])
    raise AssertionError(f"exit status {rc}, stderr {err.getvalue()!r}")


def _tiny_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def _tiny_task(n=8, size=8):
    images = torch.rand(n, 3, size, size)
    return images, torch.arange(n) % 2


def _corrupt_zoo(kind: str) -> Path:
    folder = TMP / f"zoo_{kind}"
    folder.mkdir(exist_ok=True)
    good = _m("zoo").FOLDER / "eca.object_on_texture.seed0.json"
    if kind == "json":
        (folder / "eca.object_on_texture.seed0.json").write_text("{ not json")
    else:
        (folder / "eca.object_on_texture.seed0.json").write_text(good.read_text())
        (folder / "eca.object_on_texture.seed0.pt").write_bytes(b"\x00not a torch file")
    return folder


def _file() -> Path:
    path = TMP / "a_file"
    path.write_text("x")
    return path


class NaNGate(nn.Module):
    """A learner's gate that outputs NaN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x):
        return x * float("nan")


class Fixed16(nn.Module):
    """A learner's module hard-coded to 16 channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 1)

    def forward(self, x):
        return self.conv(x)


def _ea_float16_nan():
    """ExternalAttention in float16 on a map where one pixel's logits are far below the others'
    in every slot: its softmax weights underflow to 0 and 0 / (1e-9 + 0) is NaN in float16."""
    m = _m("external").ExternalAttention(4, memory_size=2).eval()
    with torch.no_grad():
        m.conv_in.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1))
        m.conv_in.bias.zero_()
        m.memory_key.weight.fill_(1.0)
    x = torch.zeros(1, 4, 2, 2)
    x[0, :, 0, 0] = 5.0
    x[0, :, 1, 1] = -5.0
    out = m.half()(x.half())
    if not torch.isfinite(out).all():
        raise AssertionError("NaN in float16")
    raise ValueError("finite")


def _dn_float16():
    logits = torch.zeros(1, 3, 2, dtype=torch.float16)
    logits[0, 0] = 10.0
    logits[0, 2] = -10.0
    out = _m("external").double_normalise(logits)
    if not torch.isfinite(out).all():
        raise AssertionError("NaN in float16")
    raise ValueError("finite")


def _emsa_1x1_eval():
    m = _m("rest").EMSA(8, 2, apply_transform=True).eval()
    m(torch.randn(1, 1, 8), 1, 1)


def _nan_compare():
    from attn_tutorial.compare import plug_and_compare
    from attn_tutorial.registry import define_mechanism

    spec = define_mechanism("nangate", NaNGate, check=False)
    plug_and_compare([spec], steps=2, train_n=8, test_n=4, batch_size=4, flops=False)


def _fit(**kw):
    from attn_tutorial.train import fit

    model = kw.pop("model", None) or _tiny_model()
    return fit(model, kw.pop("train", None) or _tiny_task(), **kw)


def _metric_lift_zero():
    Metric = _m("metrics").Metric
    return Metric("m", 0.5, 0.0).lift


def _zoo_out_under_file(*more):
    cli("zoo", "--train", "--only", "eca", "--seed", "0", "--steps", "1", "--train-n", "4",
        "--out", str(_file() / "sub"), *more)


def _zoo_steps(value):
    cli("zoo", "--train", "--only", "eca", "--seed", "0", "--train-n", "4", "--steps", value,
        "--out", str(TMP / "zoo_out"))


T = torch.zeros
V = "must be"

PROBES = [
    # ---------------------------------------------------------------- cost (category 2)
    ("cost.se reduction too large", lambda: _m("cost").se(1, 8, 4, 4, reduction=16),
     r"channels=8 is too small for reduction 16"),
    ("cost.se negative batch", lambda: _m("cost").se(-1, 16, 4, 4),
     r"B=-1 must be an integer >= 0"),
    ("cost.se fractional channels", lambda: _m("cost").se(1, 16.5, 4, 4), r"C=16.5 must be"),
    ("cost.se bool H", lambda: _m("cost").se(1, 16, True, 4), r"H=True must be"),
    ("cost.se dtype_bytes 0", lambda: _m("cost").se(1, 16, 4, 4, dtype_bytes=0),
     r"dtype_bytes=0 must be a positive integer"),
    ("cost.eca even k", lambda: _m("cost").eca(1, 16, 4, 4, k=4), r"k=4 must be a positive odd"),
    ("cost.bam C < r", lambda: _m("cost").bam(1, 8, 4, 4),
     r"channels=8 is too small for reduction_ratio"),
    ("cost.bam negative convs", lambda: _m("cost").bam(1, 32, 4, 4, num_dilated_convs=-1),
     r"num_dilated_convs=-1 must be an integer >= 0"),
    ("cost.pam C < 8", lambda: _m("cost").pam(1, 4, 4, 4), r"channels=4 is too small"),
    ("cost.cam string W", lambda: _m("cost").cam(1, 4, 4, "4"), r"W='4' must be"),
    ("cost.scconv groups", lambda: _m("cost").scconv(1, 16, 8, 8, groups=3),
     r"C=16 must be divisible by groups=3"),
    ("cost.scconv H < pooling_r", lambda: _m("cost").scconv(1, 16, 2, 8),
     r"H×W = 2×8.*pooling_r = 4"),
    ("cost.psa lists of different lengths",
     lambda: _m("cost").psa(1, 64, 8, 8, conv_kernels=(3, 5), conv_groups=(1, 4, 8)),
     r"conv_kernels=\(3, 5\) and conv_groups=\(1, 4, 8\) must be .*same length"),
    ("cost.psa planes not divisible",
     lambda: _m("cost").psa(1, 64, 8, 8, planes=66, conv_groups=(1, 1, 1, 1)),
     r"planes=66 must be divisible"),
    ("cost.psa groups not dividing", lambda: _m("cost").psa(1, 12, 8, 8, planes=16),
     r"must be divisible by a conv_groups entry"),
    ("cost.emsa heads", lambda: _m("cost").emsa(1, 10, 4, 4, num_heads=3),
     r"dim=10 must be divisible by num_heads=3"),
    ("cost.emsa sr_ratio 0", lambda: _m("cost").emsa(1, 16, 4, 4, sr_ratio=0),
     r"sr_ratio=0 must be"),
    ("cost.emsa string flag", lambda: _m("cost").emsa(1, 16, 4, 4, apply_transform="False"),
     r"apply_transform='False' must be True or False"),
    ("cost.external memory 0", lambda: _m("cost").external_attention(1, 16, 4, 4, memory_size=0),
     r"memory_size=0 must be"),
    ("cost.external string tie",
     lambda: _m("cost").external_attention(1, 16, 4, 4, tie_memories="False"),
     r"tie_memories='False' must be True or False"),
    ("cost.external_mh heads", lambda: _m("cost").external_attention_mh(1, 10, 4, 4),
     r"dim=10 must be divisible by num_heads=8"),
    ("cost.mhsa heads", lambda: _m("cost").mhsa(1, 10, 4, 4, num_heads=3),
     r"dim=10 must be divisible by num_heads=3"),
    ("cost.conv_out_size kernel larger than input", lambda: _m("cost").conv_out_size(4, 7),
     r"kernel=7.*larger than.*size=4"),
    ("cost.conv_out_size stride 0", lambda: _m("cost").conv_out_size(4, 3, stride=0),
     r"stride=0 must be"),
    ("cost.intensity zero bytes", lambda: _m("cost").Cost(0, 0, 0).intensity, r"min_bytes=0"),
    # ---------------------------------------------------------------- data
    ("data n float", lambda: _m("data").object_on_texture(1.5), r"n=1.5 must be"),
    ("data size float", lambda: _m("data").object_on_texture(4, size=32.5), r"size=32.5 must be"),
    ("data seed float", lambda: _m("data").object_on_texture(4, seed=1.5), r"seed=1.5 must be"),
    ("data num_classes float", lambda: _m("data").object_on_texture(4, num_classes=3.0),
     r"num_classes=3.0 must be"),
    ("data clutter string", lambda: _m("data").object_on_texture(4, clutter="0.5"),
     r"clutter='0.5'"),
    ("data clutter bool", lambda: _m("data").object_on_texture(4, clutter=True), r"clutter=True"),
    ("data noise None", lambda: _m("data").multi_scale_objects(4, noise=None), r"noise=None"),
    ("data radius one number", lambda: _m("data").object_on_texture(4, radius=(3,)),
     r"radius=\(3,\) must be a pair"),
    ("data objects float", lambda: _m("data").multi_object_segmentation(4, objects=(1.5, 3)),
     r"objects\[0\]=1.5 must be"),
    ("data class_colours string",
     lambda: _m("data").multi_object_segmentation(4, class_colours="False"),
     r"class_colours='False' must be True or False"),
    ("data split float", lambda: _m("data").object_on_texture(8).split(2.5, 2),
     r"train_n=2.5 must be"),
    ("data task string index", lambda: _m("data").object_on_texture(4)["a"], r"index='a'"),
    # ---------------------------------------------------------------- train
    ("fit steps float", lambda: _fit(steps=1.5), r"steps=1.5 must be"),
    ("fit epochs float", lambda: _fit(epochs=2.5), r"epochs=2.5 must be"),
    ("fit lr negative", lambda: _fit(steps=1, lr=-1.0), r"lr=-1.0 must be"),
    ("fit lr string", lambda: _fit(steps=1, lr="0.1"), r"lr='0.1' must be"),
    ("fit weight_decay negative", lambda: _fit(steps=1, weight_decay=-1.0),
     r"weight_decay=-1.0 must be"),
    ("fit seed float", lambda: _fit(steps=1, seed=0.5), r"seed=0.5 must be"),
    ("fit progress string", lambda: _fit(steps=1, progress="no"),
     r"progress='no' must be True or False"),
    ("fit channels_last string", lambda: _fit(steps=1, channels_last="False"),
     r"channels_last='False' must be True or False"),
    ("fit model a string", lambda: _fit(steps=1, model="eca"), r"model='eca' must be an nn.Module"),
    ("fit NaN loss", lambda: _fit(steps=3, model=nn.Sequential(_tiny_model(), NaNGate(2))),
     r"loss at step 1 is nan"),
    ("predict images a list", lambda: _m("train").predict(_tiny_model(), [[1.0]]),
     r"images must be a torch.Tensor"),
    ("mean_iou no classes", lambda: _m("train").mean_iou(T(2, 4, 4), T(2, 4, 4), 0),
     r"num_classes=0 must be"),
    ("mean_iou shapes differ", lambda: _m("train").mean_iou(T(2, 4, 4), T(1, 4, 4), 2),
     r"predictions.*shape \(2, 4, 4\).*targets.*\(1, 4, 4\)"),
    # ---------------------------------------------------------------- show
    ("count_params a string", lambda: _m("show").count_params("eca"),
     r"module='eca' must be an nn.Module"),
    ("count_params flag string",
     lambda: _m("show").count_params(nn.Linear(2, 2), trainable_only="no"),
     r"trainable_only='no' must be True or False"),
    ("heatmaps empty", lambda: _m("show").heatmaps([]), r"matrices is empty"),
    ("heatmaps same_scale string", lambda: _m("show").heatmaps([T(2, 2)], same_scale="yes"),
     r"same_scale='yes' must be True or False"),
    ("overlay alpha 2", lambda: _m("show").overlay(T(3, 4, 4), T(2, 2), alpha=2.0),
     r"alpha=2.0 must be"),
    ("attention_row query float", lambda: _m("show").attention_row(T(4, 4), 1.5, (2, 2)),
     r"query=1.5 must be"),
    ("attention_row grid of one", lambda: _m("show").attention_row(T(4, 4), 1, (4,)),
     r"grid=\(4,\) must be a pair"),
    ("slot_map num_slots float", lambda: _m("show").slot_map(T(2, 2), 2.5),
     r"num_slots=2.5 must be"),
    ("slot_map fractional ids", lambda: _m("show").slot_map(torch.full((2, 2), 1.5), 3),
     r"ids must be whole numbers"),
    # ---------------------------------------------------------------- metrics
    ("spatial_mass all-zero map",
     lambda: _m("metrics").spatial_mass_on_object(T(2, 4, 4), T(2, 8, 8)),
     r"spatial.*zero total mass"),
    ("spatial_mass NaN map",
     lambda: _m("metrics").spatial_mass_on_object(torch.full((2, 4, 4), math.nan), T(2, 8, 8)),
     r"spatial holds NaN"),
    ("spatial_mass masks a list",
     lambda: _m("metrics").spatial_mass_on_object(torch.ones(1, 2, 2), [[[1]]]),
     r"masks must be a torch.Tensor"),
    ("class_selectivity one image",
     lambda: _m("metrics").class_selectivity(torch.rand(1, 4), torch.tensor([0])),
     r"needs at least 2 images"),
    ("gate_contrast NaN",
     lambda: _m("metrics").spatial_contrast_on_object(torch.full((2, 3, 4, 4), math.nan),
                                                      T(2, 8, 8)),
     r"gate holds NaN"),
    ("token_mass key_grid of one",
     lambda: _m("metrics").token_mass_on_object(torch.rand(2, 1, 4, 4), T(2, 8, 8), (4,)),
     r"key_grid=\(4,\) must be a pair"),
    ("area_share size zero", lambda: _m("metrics").area_share(T(2, 8, 8), (0, 4)),
     r"size\[0\]=0 must be"),
    ("same_instance_mass grid wrong",
     lambda: _m("metrics").same_instance_mass(torch.rand(1, 4, 4), torch.ones(1, 8, 8), (3, 3)),
     r"grid=\(3, 3\) has 9 cells but the attention has N=4"),
    ("slot_purity grid wrong",
     lambda: _m("metrics").slot_purity(torch.rand(1, 4, 2),
                                       torch.ones(1, 8, 8, dtype=torch.long), (3, 3)),
     r"grid=\(3, 3\) has 9 cells but the attention has N=4"),
    ("Metric.lift chance 0", _metric_lift_zero, r"chance=0"),
    # ---------------------------------------------------------------- registry, models
    ("resolve an instance", lambda: _m("registry").resolve(_m("eca").ECA(16)),
     r"an instance.*pass the class"),
    ("registry hard-coded 16 channels", lambda: _m("registry").define_mechanism("fixed16", Fixed16),
     r"fixed16.*32"),
    ("define_mechanism options a string",
     lambda: _m("registry").define_mechanism("x", _m("eca").ECA, options="k_size=3"),
     r"options='k_size=3' must be a dict"),
    ("define_mechanism check string",
     lambda: _m("registry").define_mechanism("x", _m("eca").ECA, check="no"),
     r"check='no' must be True or False"),
    ("SCSplitConv float", lambda: _m("registry").SCSplitConv(16.5), r"channels=16.5 must be"),
    ("SCSplitConv zero", lambda: _m("registry").SCSplitConv(0), r"channels=0 must be"),
    ("TokenMixer 0 channels", lambda: _m("registry").TokenMixer(0), r"channels=0 must be"),
    ("tiny_psa 6 channels", lambda: _m("registry").tiny_psa(6),
     r"channels=6 must be divisible by the number of kernels"),
    ("TinyResNet num_classes float", lambda: _m("models").TinyResNet(num_classes=2.5),
     r"num_classes=2.5 must be"),
    ("TinyResNet num_classes string", lambda: _m("models").TinyResNet(num_classes="4"),
     r"num_classes='4' must be"),
    ("TinyResNet widths an int", lambda: _m("models").TinyResNet(widths=5), r"widths=5 must be"),
    ("TinyResNet widths float", lambda: _m("models").TinyResNet(widths=(16, 32, 64.0)),
     r"widths\[2\]=64.0 must be"),
    ("TinyResNet head_channels 0", lambda: _m("models").TinyResNet("pam", head_channels=0),
     r"head_channels=0 must be"),
    ("build_model seed float", lambda: _m("models").build_model(seed=0.5), r"seed=0.5 must be"),
    ("BasicBlock stride 0", lambda: _m("models").BasicBlock(16, 16, stride=0), r"stride=0 must be"),
    # ---------------------------------------------------------------- compare, zoo functions
    ("plug_and_compare a string", lambda: _m("compare").plug_and_compare("eca"),
     r"mechanisms='eca' must be a list"),
    ("plug_and_compare steps float", lambda: _m("compare").plug_and_compare(["eca"], steps=1.5),
     r"steps=1.5 must be"),
    ("plug_and_compare train_n float", lambda: _m("compare").plug_and_compare(["eca"], train_n=2.5),
     r"train_n=2.5 must be"),
    ("plug_and_compare metric_n 0", lambda: _m("compare").plug_and_compare(["eca"], metric_n=0),
     r"metric_n=0 must be"),
    ("plug_and_compare flops string", lambda: _m("compare").plug_and_compare(["eca"], flops="no"),
     r"flops='no' must be True or False"),
    ("plug_and_compare NaN gate", _nan_compare, r"nangate.*loss.*nan"),
    ("from_zoo a string", lambda: _m("compare").from_zoo("eca"),
     r"mechanisms='eca' must be a list"),
    ("from_zoo no seeds", lambda: _m("compare").from_zoo(["eca"], seeds=()), r"seeds=\(\) must"),
    ("zoo.manifests missing folder", lambda: _m("zoo").manifests(TMP / "missing"),
     r"missing.*does not exist"),
    ("zoo.manifest corrupt json", lambda: _m("zoo").manifest("eca", folder=_corrupt_zoo("json")),
     r"eca.object_on_texture.seed0.json.*not valid JSON"),
    ("zoo.load corrupt weights", lambda: _m("zoo").load("eca", folder=_corrupt_zoo("pt")),
     r"eca.object_on_texture.seed0.pt.*cannot be read"),
    ("zoo.stem seed float", lambda: _m("zoo").stem("eca", seed=1.5), r"seed=1.5 must be"),
    ("zoo.train_entry unknown setting",
     lambda: _m("zoo").train_entry("eca", settings={"stepz": 1}, folder=False),
     r"settings.*'stepz'"),
    # ---------------------------------------------------------- command line (categories 5, 6)
    ("cli no command", lambda: cli(), r"required"),
    ("cli zoo --shard abc", lambda: cli("zoo", "--train", "--shard", "abc"), r"--shard 'abc'"),
    ("cli zoo --shard 3/2",
     lambda: cli("zoo", "--train", "--shard", "3/2", "--only", "eca", "--seed", "0"),
     r"--shard '3/2'"),
    ("cli zoo --only typo", lambda: cli("zoo", "--train", "--only", "ecaa"), r"--only 'ecaa'"),
    ("cli zoo --only typo listing", lambda: cli("zoo", "--only", "ecaa"), r"--only 'ecaa'"),
    ("cli zoo --out missing", lambda: cli("zoo", "--out", str(TMP / "missing")),
     r"--out .*missing"),
    ("cli zoo --out under a file", _zoo_out_under_file, r"--out .*a_file"),
    ("cli zoo --steps 0", lambda: _zoo_steps("0"), r"--steps 0"),
    ("cli zoo --steps -5", lambda: _zoo_steps("-5"), r"--steps -5"),
    ("cli zoo --steps abc", lambda: _zoo_steps("abc"), r"--steps"),
    ("cli zoo --train-n 0",
     lambda: cli("zoo", "--train", "--only", "eca", "--seed", "0", "--train-n", "0"),
     r"--train-n 0"),
    ("cli zoo --seed -1",
     lambda: cli("zoo", "--train", "--only", "eca", "--seed", "-1", "--steps", "1",
                                      "--train-n", "4", "--out", str(TMP / "zoo_out")),
     r"--seed -1"),
    ("cli zoo corrupt manifest", lambda: cli("zoo", "--out", str(_corrupt_zoo("json"))),
     r"eca.object_on_texture.seed0.json"),
    # ------------------------------------------------------- mechanisms (categories 3, 4, 7)
    ("DANetHead(16, 3)", lambda: _m("danet").DANetHead(16, 3), r"in_channels=16"),
    ("DANetHead inter_channels 4", lambda: _m("danet").DANetHead(64, 3, inter_channels=4),
     r"inter_channels=4"),
    ("DANetHead cam_variant", lambda: _m("danet").DANetHead(64, 3, cam_variant="bogus"),
     r"cam_variant='bogus' must be one of"),
    ("DropPath(p=2)", lambda: _m("rest").DropPath(p=2.0), r"p=2.0 must be a probability"),
    ("Block(drop=2)", lambda: _m("rest").Block(8, 2, drop=2.0),
     r"(?<!_)drop=2.0 must be a probability"),
    ("Block(drop_path=1)", lambda: _m("rest").Block(8, 2, drop_path=1.0), r"drop_path=1.0 must be"),
    ("Block(mlp_ratio=0.01)", lambda: _m("rest").Block(8, 2, mlp_ratio=0.01), r"mlp_ratio=0.01"),
    ("SCBottleneck(dilation='3')", lambda: _m("scconv").SCBottleneck(64, 16, dilation="3"),
     r"dilation='3' must be a positive integer"),
    ("EPSABlock even kernels",
     lambda: _m("psa").EPSABlock(64, 16, conv_kernels=(2, 4, 6, 8), conv_groups=(1, 1, 1, 1)),
     r"conv_kernels\[0\]=2 must be a positive odd integer"),
    ("SCConv(padding=1.0)", lambda: _m("scconv").SCConv(8, padding=1.0), r"padding=1.0 must be"),
    ("Mlp wrong width", lambda: _m("rest").Mlp(8, 16)(torch.randn(1, 4, 5)),
     r"x has 5 channels.*dim=8"),
    ("Mlp integer input", lambda: _m("rest").Mlp(8, 16)(torch.ones(1, 4, 8, dtype=torch.long)),
     r"floating-point"),
    ("EMSA apply_transform 1x1 eval", _emsa_1x1_eval, r"apply_transform=True.*1×1"),
    ("double_normalise float16", _dn_float16, r"finite"),
    ("ExternalAttention float16", _ea_float16_nan, r"finite"),
    ("double_normalise eps negative", lambda: _m("external").double_normalise(T(1, 2, 2), eps=-1.0),
     r"eps=-1.0 must be"),
    ("complex input", lambda: _m("eca").ECA(4)(torch.randn(1, 4, 2, 2, dtype=torch.complex64)),
     r"complex64.*floating-point"),
]

PROBES += [  # the second round: the remaining public functions
    ("attention_metric model a string",
     lambda: _m("metrics").attention_metric("eca", _m("data").object_on_texture(4)),
     r"model='eca' must be an nn.Module"),
    ("attention_scores task a string",
     lambda: _m("metrics").attention_scores(_m("models").TinyResNet("eca"), "object_on_texture"),
     r"task='object_on_texture' must be a Task"),
    ("shuffled_null shifts float",
     lambda: _m("metrics").shuffled_null(_m("metrics").spatial_mass_on_object, torch.rand(3, 4, 4),
                                         torch.ones(3, 8, 8), shifts=1.5), r"shifts=1.5 must be"),
    ("shuffled_null shifts 0",
     lambda: _m("metrics").shuffled_null(_m("metrics").spatial_mass_on_object, torch.rand(3, 4, 4),
                                         torch.ones(3, 8, 8), shifts=0), r"shifts=0 must be"),
    ("banded_matrix a list", lambda: _m("eca").banded_matrix([1.0, 2.0, 3.0], 4),
     r"kernel must be a torch.Tensor"),
    ("banded_matrix 0 channels", lambda: _m("eca").banded_matrix(torch.ones(3), 0),
     r"channels=0 must be"),
    ("ECA.channel_matrix 0 channels", lambda: _m("eca").ECA().channel_matrix(0), r"channels=0 must be"),
    ("overlapping_grid H 0", lambda: _m("rest").overlapping_grid(0, 4, 2), r"H=0 must be"),
    ("overlapping_grid stride 0", lambda: _m("rest").overlapping_grid(4, 4, 0), r"stride=0 must be"),
    ("external_attention integer tokens",
     lambda: _m("external").external_attention(torch.ones(1, 2, 3, dtype=torch.long),
                                               torch.ones(4, 3), torch.ones(3, 4)),
     r"x has dtype torch.int64 but must be a floating-point"),
    ("external_attention memory widths",
     lambda: _m("external").external_attention(torch.ones(1, 2, 3), torch.ones(4, 5), torch.ones(3, 4)),
     r"memory_key has shape \(4, 5\).*C=3"),
    ("zoo.unpack not packed", lambda: _m("zoo").unpack({}), r"packed.*zoo.pack"),
    ("pixel_classes a string", lambda: _m("metrics").pixel_classes("task"),
     r"task='task' must be a Task"),
    ("mean_metric a list", lambda: _m("metrics").mean_metric([1, 2]), r"scores=\[1, 2\] must be a dict"),
    ("zoo.pack a string", lambda: _m("zoo").pack("state"), r"state='state' must be a state_dict"),
    ("gate_bars a string", lambda: _m("show").gate_bars("abc"), r"gates='abc' must be a tensor"),
    ("zoo_table a list", lambda: _m("compare").zoo_table(["eca"]),
     r"entries=\['eca'\] must be the dict from_zoo returns"),
    ("double_normalise a list", lambda: _m("external").double_normalise([[1.0]]),
     r"logits must be a torch.Tensor"),
    ("double_normalise integer logits",
     lambda: _m("external").double_normalise(torch.ones(2, 2, dtype=torch.long)),
     r"logits has dtype torch.int64 but must be a floating-point"),
    ("zoo.measure model a string", lambda: _m("zoo").measure("m", _m("data").object_on_texture(4)),
     r"model='m' must be a TinyResNet"),
]

# every boolean flag of every class: a string (or a number) is refused, not read as truthy
FLAGS = [
    ("eca", "ECA", (8,), "adaptive"),
    ("bam", "BAMChannelGate", (32,), "output_bn"),
    ("bam", "BAMSpatialGate", (32,), "output_bn"),
    ("danet", "PAM", (16,), "use_sdpa"),
    ("danet", "DANetHead", (64, 3), "use_sdpa"),
    ("rest", "EMSA", (8, 2), "qkv_bias"),
    ("rest", "EMSA", (8, 2), "apply_transform"),
    ("rest", "PatchEmbed", (2, 3, 8), "with_pos"),
    ("rest", "BasicStem", (3, 8), "with_pos"),
    ("rest", "Block", (8, 2), "qkv_bias"),
    ("rest", "Block", (8, 2), "apply_transform"),
    ("scconv", "SCBottleneck", (64, 16), "avd"),
    ("scconv", "SCBottleneck", (64, 16), "is_first"),
    ("external", "ExternalAttention", (16,), "tie_memories"),
    ("attention", "MultiHeadSelfAttention", (8, 2), "qkv_bias"),
    ("attention", "MultiHeadSelfAttention", (8, 2), "use_sdpa"),
    ("attention", "SelfAttention2d", (8,), "qkv_bias"),
    ("attention", "SelfAttention2d", (8,), "residual"),
    ("attention", "SelfAttention2d", (8,), "use_sdpa"),
    ("registry", "register_mechanism", ("eca", _m("eca").ECA), "overwrite"),
]
for module, cls, args, flag in FLAGS:
    for value in ("False", 0):
        PROBES.append((f"{cls}({flag}={value!r})",
                       (lambda module=module, cls=cls, args=args, flag=flag, value=value:
                        getattr(_m(module), cls)(*args, **{flag: value})),
                       rf"{flag}={value!r} must be True or False"))
