"""Lesson 01's timing cells are correct on any device, proved on a CPU-only machine.

The cells of section 8 ("Cost") time ECA, SE and a bare multiply, then the logits four ways and
``conv1d`` at three widths, on ``cpu`` and, when there is one, on ``cuda``. On a GPU a cell that
moves a module to ``cuda`` in place and later feeds it a CPU tensor fails with a device
mismatch. A CPU-only test cannot run ``cuda``, so it runs the very same cells with
``devices = ["cpu", "meta"]``: ``meta`` tensors have shapes and no data, every op on them runs,
and the second device is a real other device.

``meta`` alone does not prove much: PyTorch lets some ops mix devices on it (``F.conv1d`` with
a CPU weight and a meta input returns a meta tensor). So the cells run under
:class:`OneDevicePerOp`, a dispatch mode that fails every op whose tensor arguments live on
more than one device, with CUDA's one exception: a 0-dim CPU tensor (a scalar) may go with any
device. The tests below first show that the mode catches such a mix, and that it catches the
lesson's first version of these cells (modules moved in place, then a CPU tensor into them).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from attn_tutorial.course import ROOT  # noqa: E402

LESSON = ROOT / "notebooks" / "01_eca.ipynb"
DEVICES_LINE = 'devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])'
STAND_IN = 'devices = ["cpu", "meta"]'

pytestmark = pytest.mark.usefixtures("one_thread")


class DeviceMismatch(RuntimeError):
    pass


class OneDevicePerOp(TorchDispatchMode):
    """Fail every op whose tensor arguments are on two devices (0-dim CPU tensors excepted)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        flat, _ = tree_flatten((args, kwargs or {}))
        devices = {t.device for t in flat
                   if isinstance(t, torch.Tensor) and not (t.dim() == 0 and t.device.type == "cpu")}
        if len(devices) > 1:
            raise DeviceMismatch(f"{func} got tensors on {sorted(map(str, devices))}")
        return func(*args, **(kwargs or {}))


def _code(cell) -> str:
    return "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))


def _section8_cells() -> tuple[str, list[str]]:
    """The imports cell, and the code cells of section 8 from the one that builds ``xb`` on."""
    cells = nbformat.read(LESSON, as_version=4).cells
    code = [c for c in cells if c.cell_type == "code"]
    start = next(i for i, c in enumerate(cells) if "xb = torch.randn(4, 256" in c.source)
    end = next(i for i, c in enumerate(cells) if c.cell_type == "markdown"
               and c.source.startswith("## 9."))
    return _code(code[0]), [_code(c) for c in cells[start:end] if c.cell_type == "code"]


def test_the_mode_catches_what_meta_lets_through():
    x, w = torch.randn(2, 1, 16, device="meta"), torch.randn(1, 1, 5)
    assert F.conv1d(x, w, padding=2).device.type == "meta"        # meta alone: no error
    with pytest.raises(DeviceMismatch), OneDevicePerOp():
        F.conv1d(x, w, padding=2)
    with pytest.raises(DeviceMismatch), OneDevicePerOp():
        torch.nn.Linear(16, 4).to("meta")(torch.randn(2, 16))
    with OneDevicePerOp():                                       # a CPU scalar is allowed
        assert (x * torch.tensor(2.0)).device.type == "meta"


def test_the_first_version_of_the_cells_fails_under_the_mode():
    """The cells as the lesson had them: modules moved in place in a loop over the devices,
    then the logits timed on a CPU tensor with those modules."""
    imports, section8 = _section8_cells()
    ns: dict = {}
    exec(imports, ns)
    exec(section8[0], ns)                                        # xb, eca_b, se_b, gate_b
    first_version = """
devices = ["cpu", "meta"]
for device in devices:
    inputs = xb.to(device)
    gate_b = gate_b.to(device)
    for m in (eca_b, se_b):
        m.to(device)
    bench.compare({"ECA (k=5)": eca_b, "SE (r=16)": se_b}, inputs, min_run_time=0.01, flops=False)
yb = reduce(xb, "b c h w -> b c", "mean")
eca_b.conv(rearrange(yb, "b c -> b 1 c"))
"""
    with pytest.raises(DeviceMismatch, match="convolution"), OneDevicePerOp():
        exec(first_version, ns)


def test_section8_timing_cells_run_on_two_devices_without_a_mix():
    imports, section8 = _section8_cells()
    joined = "\n".join(section8)
    assert joined.count(DEVICES_LINE) == 1, "the timing cells choose their devices in one line"
    ns: dict = {}
    exec(imports, ns)
    torch.set_num_threads(2)                  # the cells time at one thread, then restore this
    try:
        with OneDevicePerOp():
            for source in section8:
                exec(source.replace(DEVICES_LINE, STAND_IN), ns)
        threads_after = torch.get_num_threads()
    finally:
        torch.set_num_threads(1)
    assert threads_after == 2
    assert ns["devices"] == ["cpu", "meta"]
    # every device was timed: two passes of the three gates on each
    assert [t[0].pass_ for t in ns["results"]] == ["forward", "forward+backward"] * 2
    # the lesson's own modules and tensors stayed on the CPU (copies went to the other device)
    for name in ("eca_b", "se_b"):
        assert {p.device.type for p in ns[name].parameters()} == {"cpu"}, name
    assert ns["xb"].device.type == ns["gate_b"].device.type == ns["yb"].device.type == "cpu"
