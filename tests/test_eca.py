"""ECA, ECA-NS, SE and the ECA paper's SE variants against plain loops written from the equations.

Every reference below works on Python floats, index by index (no einops, no conv), in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from attn_tutorial.eca import (
    ECA, ECANS, SE, SEGC, SEVar1, SEVar2, SEVar3, banded_matrix, eca_kernel_size,
)

SHAPES = [(2, 16, 7, 9), (1, 31, 5, 11), (3, 24, 9, 7)]
TOL = dict(rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ loop references
def gap_loop(x: torch.Tensor) -> list[list[float]]:
    """y[b][c] = mean over h, w of x[b, c, h, w]."""
    xl = x.tolist()
    out = []
    for xb in xl:
        row = []
        for xc in xb:
            total, count = 0.0, 0
            for xh in xc:
                for v in xh:
                    total += v
                    count += 1
            row.append(total / count)
        out.append(row)
    return out


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def apply_gate_loop(x: torch.Tensor, gate: list[list[float]]) -> torch.Tensor:
    xl = x.tolist()
    out = [[[[v * gate[b][c] for v in xh] for xh in xc] for c, xc in enumerate(xb)]
           for b, xb in enumerate(xl)]
    return torch.tensor(out, dtype=torch.float64)


def conv_channels_loop(y: list[float], taps: list[list[float]]) -> list[float]:
    """z[c] = sum_i taps[c][i] * y[c + i - (k-1)//2], zero outside 0..C-1."""
    C = len(y)
    z = []
    for c in range(C):
        k = len(taps[c])
        pad = (k - 1) // 2
        s = 0.0
        for i in range(k):
            j = c + i - pad
            if 0 <= j < C:
                s += taps[c][i] * y[j]
        z.append(s)
    return z


def eca_loop(x: torch.Tensor, kernel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ECA: shared taps. Returns (output, gate B×C)."""
    y = gap_loop(x)
    w = kernel.reshape(-1).tolist()
    gate = [[sigmoid(z) for z in conv_channels_loop(yb, [w] * len(yb))] for yb in y]
    return apply_gate_loop(x, gate), torch.tensor(gate, dtype=torch.float64)


def eca_ns_loop(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """ECA-NS: taps[c] is channel c's own kernel (C×1×k)."""
    y = gap_loop(x)
    taps = [row[0] for row in kernel.tolist()]
    gate = [[sigmoid(z) for z in conv_channels_loop(yb, taps)] for yb in y]
    return apply_gate_loop(x, gate)


def matvec_loop(m: list[list[float]], v: list[float], bias: list[float] | None = None):
    out = []
    for i, row in enumerate(m):
        s = 0.0 if bias is None else bias[i]
        for a, b in zip(row, v):
            s += a * b
        out.append(s)
    return out


def se_loop(x: torch.Tensor, se: SE) -> torch.Tensor:
    y = gap_loop(x)
    w1, b1 = se.fc_reduce.weight.tolist(), se.fc_reduce.bias.tolist()
    w2, b2 = se.fc_expand.weight.tolist(), se.fc_expand.bias.tolist()
    gate = []
    for yb in y:
        hidden = [max(0.0, h) for h in matvec_loop(w1, yb, b1)]
        gate.append([sigmoid(z) for z in matvec_loop(w2, hidden, b2)])
    return apply_gate_loop(x, gate)


def var1_loop(x):
    return apply_gate_loop(x, [[sigmoid(v) for v in yb] for yb in gap_loop(x)])


def var2_loop(x, weight):
    w = weight.tolist()
    return apply_gate_loop(x, [[sigmoid(wc * v) for wc, v in zip(w, yb)] for yb in gap_loop(x)])


def var3_loop(x, weight):
    w = weight.tolist()
    return apply_gate_loop(x, [[sigmoid(z) for z in matvec_loop(w, yb)] for yb in gap_loop(x)])


def gc_loop(x, weight, groups):
    """Group conv on the averages: output channel o of group g sees only group g's inputs."""
    w = weight.tolist()  # C × C/G × 1 × 1
    C = len(w)
    per = C // groups
    gate = []
    for yb in gap_loop(x):
        row = []
        for o in range(C):
            g = o // per
            s = 0.0
            for i in range(per):
                s += w[o][i][0][0] * yb[g * per + i]
            row.append(sigmoid(s))
        gate.append(row)
    return apply_gate_loop(x, gate)


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float64)


# ---------------------------------------------------------------------------- ψ(C)
def test_kernel_size_table_from_the_spec():
    table = {16: 3, 32: 3, 64: 3, 128: 5, 256: 5, 512: 5, 1024: 5, 2048: 7}
    assert {c: eca_kernel_size(c) for c in table} == table


def test_kernel_size_other_constants_and_always_odd():
    # gamma=1, b=0: C=64 -> log2 = 6 -> even -> 7; gamma=3, b=2, C=64: 8/3 = 2.67 -> 2 -> 3.
    assert eca_kernel_size(64, gamma=1, b=0) == 7
    assert eca_kernel_size(64, gamma=3, b=2) == 3
    assert eca_kernel_size(1) == 1  # (0 + 1) / 2 = 0.5 -> 0 -> 1
    assert all(eca_kernel_size(c) % 2 == 1 for c in range(1, 5000))


@pytest.mark.parametrize("bad", [0, -4, 2.0, True])
def test_kernel_size_refuses_bad_channels(bad):
    with pytest.raises(ValueError, match="channels"):
        eca_kernel_size(bad)


# ----------------------------------------------------------------------------- ECA
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_eca_matches_loop(shape, k, mode):
    torch.manual_seed(k)
    m = ECA(shape[1], k).double()
    getattr(m, mode)()
    x = randn(*shape)
    out_ref, gate_ref = eca_loop(x, m.conv.weight.detach())
    torch.testing.assert_close(m(x), out_ref, **TOL)
    torch.testing.assert_close(m.attention_map(x), gate_ref, **TOL)
    assert m.attention_map(x).shape == shape[:2]


def test_eca_kernel_longer_than_channel_axis():
    m = ECA(k_size=7).double()
    x = randn(2, 3, 4, 5)
    torch.testing.assert_close(m(x), eca_loop(x, m.conv.weight.detach())[0], **TOL)


def test_eca_without_channels_takes_any_width():
    m = ECA().double()
    for c in (5, 12):
        x = randn(1, c, 3, 4)
        torch.testing.assert_close(m(x), eca_loop(x, m.conv.weight.detach())[0], **TOL)


@pytest.mark.parametrize("channels,expected_k", [(16, 3), (128, 5), (2048, 7)])
def test_eca_paper_variant_uses_psi(channels, expected_k):
    m = ECA(channels, adaptive=True)
    assert m.k_size == expected_k
    assert m.conv.weight.shape == (1, 1, expected_k)


def test_eca_paper_and_official_differ_where_psi_is_not_3():
    torch.manual_seed(0)
    official, paper = ECA(128).double(), ECA(128, adaptive=True).double()
    assert official.k_size == 3 and paper.k_size == 5
    x = randn(2, 128, 3, 5)
    torch.testing.assert_close(paper(x), eca_loop(x, paper.conv.weight.detach())[0], **TOL)
    torch.testing.assert_close(official(x), eca_loop(x, official.conv.weight.detach())[0], **TOL)
    assert not torch.allclose(official(x), paper(x))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_eca_equals_einsum_with_its_banded_matrix(k):
    torch.manual_seed(1)
    C = 11
    m = ECA(C, k).double()
    w = m.conv.weight.detach().reshape(-1).tolist()
    M = m.channel_matrix()
    pad = (k - 1) // 2
    for c in range(C):
        for j in range(C):
            i = j - c + pad
            assert M[c, j].item() == (w[i] if 0 <= i < k else 0.0)
    x = randn(3, C, 5, 7)
    y = x.mean(dim=(2, 3))
    gate = torch.sigmoid(torch.einsum("cj,bj->bc", M, y))
    torch.testing.assert_close(m.attention_map(x), gate, **TOL)


def test_banded_matrix_refuses_even_kernel():
    with pytest.raises(ValueError, match="k_size=4"):
        banded_matrix(torch.ones(4), 8)


def test_gate_is_in_unit_interval_and_forward_is_x_times_gate():
    m = ECA(16).double()
    x = randn(2, 16, 7, 9)
    g = m.attention_map(x)
    assert ((g > 0) & (g < 1)).all()
    torch.testing.assert_close(m(x), x * g[:, :, None, None], **TOL)


def test_eca_conv_runs_over_channels_not_space():
    """Shuffling spatial positions leaves the gate unchanged; the loop reference already pins
    the channel neighbourhood, this pins that space only enters through the average."""
    m = ECA(16, 5).double()
    x = randn(2, 16, 7, 9)
    perm = torch.randperm(63)
    shuffled = x.flatten(2)[:, :, perm].reshape(2, 16, 7, 9)
    torch.testing.assert_close(m.attention_map(shuffled), m.attention_map(x), **TOL)


def test_eca_default_init_and_parameters():
    torch.manual_seed(0)
    for k in (3, 5, 7):
        m = ECA(64, k)
        assert sum(p.numel() for p in m.parameters()) == k
        assert m.conv.weight.abs().max() <= 1 / math.sqrt(k)
        assert m.conv.bias is None
    assert list(ECA(64).state_dict()) == ["conv.weight"]


# --------------------------------------------------------------------------- ECA-NS
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_eca_ns_matches_loop(shape, k, mode):
    torch.manual_seed(k)
    m = ECANS(shape[1], k).double()
    getattr(m, mode)()
    x = randn(*shape)
    torch.testing.assert_close(m(x), eca_ns_loop(x, m.conv.weight.detach()), **TOL)


def test_eca_ns_parameters_matrix_and_difference_from_eca():
    torch.manual_seed(0)
    C, k = 9, 3
    m = ECANS(C, k).double()
    assert m.conv.weight.shape == (C, 1, k)
    assert sum(p.numel() for p in m.parameters()) == C * k
    assert m.conv.weight.abs().max() <= 1 / math.sqrt(k)
    M = m.channel_matrix()
    w = m.conv.weight.detach()
    for c in range(C):
        for j in range(C):
            i = j - c + 1
            assert M[c, j].item() == (w[c, 0, i].item() if 0 <= i < k else 0.0)
    x = randn(2, C, 4, 6)
    torch.testing.assert_close(m.attention_map(x), torch.sigmoid(x.mean((2, 3)) @ M.T), **TOL)
    # with every row set to the same taps it is ECA
    shared = ECA(C, k).double()
    with torch.no_grad():
        m.conv.weight.copy_(shared.conv.weight.expand(C, 1, k))
    torch.testing.assert_close(m(x), shared(x), **TOL)


# ------------------------------------------------------------------ SE and variants
@pytest.mark.parametrize("shape", [(2, 16, 7, 9), (1, 33, 5, 11), (3, 24, 9, 7)])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_se_matches_loop(shape, mode):
    torch.manual_seed(0)
    m = SE(shape[1], reduction=4).double()
    getattr(m, mode)()
    x = randn(*shape)
    torch.testing.assert_close(m(x), se_loop(x, m), **TOL)
    C, h = shape[1], shape[1] // 4
    assert sum(p.numel() for p in m.parameters()) == 2 * C * h + h + C


def test_se_channel_matrix_is_low_rank_linear_part():
    m = SE(32, reduction=8).double()
    M = m.channel_matrix()
    assert M.shape == (32, 32)
    assert torch.linalg.matrix_rank(M).item() <= 4


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_se_variants_match_loops(shape, mode):
    torch.manual_seed(2)
    C = shape[1]
    x = randn(*shape)
    v1, v2, v3 = SEVar1(C).double(), SEVar2(C).double(), SEVar3(C).double()
    groups = 4 if C % 4 == 0 else 1
    gc = SEGC(C, groups).double()
    for m in (v1, v2, v3, gc):
        getattr(m, mode)()
    torch.testing.assert_close(v1(x), var1_loop(x), **TOL)
    torch.testing.assert_close(v2(x), var2_loop(x, v2.weight.detach()), **TOL)
    torch.testing.assert_close(v3(x), var3_loop(x, v3.fc.weight.detach()), **TOL)
    torch.testing.assert_close(gc(x), gc_loop(x, gc.conv.weight.detach(), groups), **TOL)


def test_variant_channel_matrices_have_the_papers_structure_and_give_the_gate():
    torch.manual_seed(3)
    C, G = 12, 3
    x = randn(2, C, 5, 7)
    y = x.mean((2, 3))
    mods = {
        "var1": SEVar1(C).double(), "var2": SEVar2(C).double(), "var3": SEVar3(C).double(),
        "gc": SEGC(C, G).double(), "eca": ECA(C, 3).double(), "ns": ECANS(C, 3).double(),
    }
    for name, m in mods.items():
        M = m.channel_matrix().to(torch.float64)
        assert M.shape == (C, C), name
        torch.testing.assert_close(m.attention_map(x), torch.sigmoid(y @ M.T), **TOL)
    idx = torch.arange(C)
    off_diag = idx[:, None] != idx[None, :]
    assert torch.equal(mods["var1"].channel_matrix(), torch.eye(C))
    assert (mods["var2"].channel_matrix()[off_diag] == 0).all()
    assert (mods["var3"].channel_matrix() != 0).all()
    same_group = (idx[:, None] // (C // G)) == (idx[None, :] // (C // G))
    gcm = mods["gc"].channel_matrix()
    assert (gcm[~same_group] == 0).all() and (gcm[same_group] != 0).all()
    band = (idx[:, None] - idx[None, :]).abs() <= 1
    for name in ("eca", "ns"):
        M = mods[name].channel_matrix()
        assert (M[~band] == 0).all() and (M[band] != 0).all()
    # ECA shares its taps along every diagonal; ECA-NS does not
    eca_m = mods["eca"].channel_matrix()
    for d in (-1, 0, 1):
        diag = torch.diagonal(eca_m, d)
        assert (diag == diag[0]).all()
    assert not (torch.diagonal(mods["ns"].channel_matrix()) == mods["ns"].channel_matrix()[0, 0]).all()


def test_parameter_counts_of_the_variants():
    C, G = 64, 4
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(SEVar1(C)) == 0
    assert count(SEVar2(C)) == C
    assert count(SEVar3(C)) == C * C
    assert count(SEGC(C, G)) == C * C // G


# --------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("factory", [
    lambda: ECA(7, 3), lambda: ECA(7, 5), lambda: ECANS(7, 3), lambda: SE(8, 4),
    lambda: SEVar1(7), lambda: SEVar2(7), lambda: SEVar3(7), lambda: SEGC(6, 2),
], ids=["eca3", "eca5", "ecans", "se", "var1", "var2", "var3", "gc"])
def test_gradcheck(factory):
    torch.manual_seed(0)
    m = factory().double()
    C = m.channels
    x = randn(1, C, 3, 4).requires_grad_(True)
    params = [p for p in m.parameters()]
    names = [n for n, _ in m.named_parameters()]

    def f(x, *ps):
        return torch.func.functional_call(m, dict(zip(names, ps)), (x,))

    # input gradients in full (slow) mode at batch 1; batch 2 and the parameters in fast mode
    assert torch.autograd.gradcheck(m, (x,))
    x2 = randn(2, C, 4, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x2, *params), fast_mode=True)


# ------------------------------------------------------------------------------- errors
def test_errors():
    with pytest.raises(ValueError, match="k_size=4.*odd"):
        ECA(16, 4)
    with pytest.raises(ValueError, match="k_size=0"):
        ECA(16, 0)
    with pytest.raises(ValueError, match="k_size=2.*odd"):
        ECANS(16, 2)
    with pytest.raises(ValueError, match="adaptive=True needs channels"):
        ECA(adaptive=True)
    with pytest.raises(ValueError, match="k_size=5 together with adaptive=True"):
        ECA(64, 5, adaptive=True)
    with pytest.raises(ValueError, match="channels=0"):
        ECA(0)
    for cls in (SEVar1, SEVar2, SEVar3, ECANS):
        with pytest.raises(ValueError, match="channels=0"):
            cls(0)
    with pytest.raises(ValueError, match="4-D feature map"):
        ECA(16)(randn(2, 16, 7))
    with pytest.raises(ValueError, match="4-D feature map"):
        SE(16)(randn(16, 7, 9, 2, 1))
    with pytest.raises(ValueError, match="12 channels.*channels=16"):
        ECA(16)(randn(2, 12, 7, 9))
    with pytest.raises(ValueError, match="12 channels.*channels=16"):
        ECANS(16)(randn(2, 12, 7, 9))
    with pytest.raises(ValueError, match="12 channels.*channels=16"):
        SEVar3(16)(randn(2, 12, 7, 9))
    with pytest.raises(ValueError, match="channels=8 is too small for reduction 16"):
        SE(8, 16)
    with pytest.raises(ValueError, match="channels=10 must be divisible by groups=4"):
        SEGC(10, 4)
    with pytest.raises(ValueError, match="channels=10 must be divisible by groups=0"):
        SEGC(10, 0)
    with pytest.raises(ValueError, match="channel_matrix needs channels"):
        ECA().channel_matrix()
    assert ECA().channel_matrix(5).shape == (5, 5)
