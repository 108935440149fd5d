"""DANet PAM / CAM / head against index-by-index references written from the equations of the authors' code."""

from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.nn.functional as F

from _reference import batchnorm_loop, randomize_
from attn_tutorial.danet import CAM, PAM, DANetHead

TOL = dict(atol=1e-9, rtol=1e-9)
F64 = torch.float64
randomize_ = partial(randomize_, scale=0.4, mean_scale=0.3)

pytestmark = pytest.mark.usefixtures("one_thread")


def ref_softmax(values: list[torch.Tensor]) -> list[torch.Tensor]:
    top = max(values)
    exps = [torch.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def ref_pam(x: torch.Tensor, m: PAM) -> tuple[torch.Tensor, torch.Tensor]:
    """energy[i, j] = q_i · k_j; A[i, :] = softmax over j; out[:, i] = Σ_j A[i, j] v_j."""
    B, C, H, W = x.shape
    N = H * W
    q = F.conv2d(x, m.query.weight, m.query.bias)
    k = F.conv2d(x, m.key.weight, m.key.bias)
    v = F.conv2d(x, m.value.weight, m.value.bias)
    pos = [(r, c) for r in range(H) for c in range(W)]  # row-major token order
    out = torch.empty_like(x)
    att = torch.empty(B, N, N, dtype=x.dtype)
    for b in range(B):
        for i, (ri, ci) in enumerate(pos):
            energies = [(q[b, :, ri, ci] * k[b, :, rj, cj]).sum() for (rj, cj) in pos]
            weights = ref_softmax(energies)
            att[b, i] = torch.stack(weights)
            acc = torch.zeros(C, dtype=x.dtype)
            for j, (rj, cj) in enumerate(pos):
                acc = acc + weights[j] * v[b, :, rj, cj]
            out[b, :, ri, ci] = m.gamma * acc + x[b, :, ri, ci]
    return out, att


def ref_cam(x: torch.Tensor, gamma: torch.Tensor, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """E[c, c'] = Σ_n f_c f_c'; official: softmax_c'(max_c'' E[c, c''] − E[c, c']); paper: softmax(E)."""
    B, C, H, W = x.shape
    out = torch.empty_like(x)
    att = torch.empty(B, C, C, dtype=x.dtype)
    for b in range(B):
        for c in range(C):
            energies = [(x[b, c] * x[b, d]).sum() for d in range(C)]
            if variant == "official":
                top = max(energies)
                energies = [top - e for e in energies]
            weights = ref_softmax(energies)
            att[b, c] = torch.stack(weights)
            acc = sum(weights[d] * x[b, d] for d in range(C))
            out[b, c] = gamma * acc + x[b, c]
    return out, att


PAM_CASES = [(2, 16, 7, 9), (3, 17, 5, 11), (1, 25, 4, 4), (2, 8, 1, 6)]


@pytest.mark.parametrize("use_sdpa", [False, True])
@pytest.mark.parametrize("shape", PAM_CASES)
def test_pam_matches_loop_reference(shape, use_sdpa):
    B, C, H, W = shape
    m = randomize_(PAM(C, use_sdpa=use_sdpa).double(), seed=C * H)
    with torch.no_grad():
        m.gamma.fill_(0.7)
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(W))
    expected, expected_att = ref_pam(x, m)
    torch.testing.assert_close(m(x), expected, **TOL)
    torch.testing.assert_close(m.attention_map(x), expected_att, **TOL)
    torch.testing.assert_close(m.eval()(x), expected, **TOL)  # no BN/dropout: eval is the same


def test_pam_attention_rows_sum_over_keys_and_orientation():
    m = randomize_(PAM(16).double(), seed=2)
    x = torch.randn(2, 16, 5, 7, dtype=F64)
    att = m.attention_map(x)
    assert att.shape == (2, 35, 35)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, 35, dtype=F64), **TOL)
    assert (att.sum(-2) - 1).abs().max() > 1e-3  # columns are not normalised
    assert (att - att.transpose(1, 2)).abs().max() > 1e-3  # A is not symmetric


def test_pam_gamma_sign_alone_is_not_the_module():
    """gamma · (A v) = (−gamma) · (A (−v)): negating gamma, W_v and b_v leaves the module unchanged,
    while negating gamma alone does not (the docstring's reason to read gamma · out, not gamma)."""
    m = randomize_(PAM(16).double(), seed=5)
    with torch.no_grad():
        m.gamma.fill_(0.3)
    x = torch.randn(2, 16, 5, 6, dtype=F64, generator=torch.Generator().manual_seed(1))
    expected, _ = ref_pam(x, m)
    flipped = randomize_(PAM(16).double(), seed=5)
    flipped.load_state_dict(m.state_dict())
    with torch.no_grad():
        flipped.gamma.neg_()
        flipped.value.weight.neg_()
        flipped.value.bias.neg_()
    torch.testing.assert_close(flipped(x), expected, **TOL)
    with torch.no_grad():
        flipped.value.weight.neg_()
        flipped.value.bias.neg_()  # gamma alone negated: a different module
    assert (flipped(x) - expected).abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(2, 16, 7, 9), (1, 9, 5, 11), (3, 4, 3, 3)])
def test_pam_sdpa_equals_materialised_path(shape):
    m = randomize_(PAM(max(shape[1], 8)), seed=4)
    with torch.no_grad():
        m.gamma.fill_(1.3)
    x = torch.randn(shape[0], max(shape[1], 8), *shape[2:])
    dense = m(x)
    m.use_sdpa = True
    torch.testing.assert_close(m(x), dense, atol=1e-5, rtol=1e-5)
    xd = x.double().requires_grad_(True)
    md = m.double()
    (g_sdpa,) = torch.autograd.grad((md(xd) ** 2).sum(), xd)
    md.use_sdpa = False
    (g_dense,) = torch.autograd.grad((md(xd) ** 2).sum(), xd)
    torch.testing.assert_close(g_sdpa, g_dense, **TOL)


CAM_CASES = [(2, 16, 7, 9), (3, 5, 5, 11), (1, 9, 4, 6)]


@pytest.mark.parametrize("variant", ["official", "paper"])
@pytest.mark.parametrize("shape", CAM_CASES)
def test_cam_matches_loop_reference(shape, variant):
    m = CAM(shape[1], variant=variant).double()
    with torch.no_grad():
        m.gamma.fill_(-0.6)
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(shape[1])) * 0.3
    expected, expected_att = ref_cam(x, m.gamma, variant)
    torch.testing.assert_close(m(x), expected, **TOL)
    torch.testing.assert_close(m.attention_map(x), expected_att, **TOL)
    torch.testing.assert_close(m.eval()(x), expected, **TOL)


def test_cam_official_is_softmax_of_negative_energy_and_variants_differ():
    x = torch.randn(2, 16, 5, 7, dtype=F64) * 0.3
    official, paper = CAM(16), CAM(16, variant="paper")
    a_off, a_pap = official.attention_map(x), paper.attention_map(x)
    for a in (a_off, a_pap):
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 16, dtype=F64), **TOL)
    # softmax(-E) through an independent route: exp(-E) / row sum
    f = x.reshape(2, 16, 35)
    energy = torch.stack([f[b] @ f[b].T for b in range(2)])
    neg = torch.exp(-(energy - energy.min(-1, keepdim=True).values))
    torch.testing.assert_close(a_off, neg / neg.sum(-1, keepdim=True), **TOL)
    assert (a_off - a_pap).abs().max() > 1e-2
    with torch.no_grad():
        official.gamma.fill_(1.0)
        paper.gamma.fill_(1.0)
    assert (official(x) - paper(x)).abs().max() > 1e-2


def test_identity_at_init():
    x = torch.randn(2, 16, 5, 7)
    assert torch.equal(PAM(16)(x), x) and torch.equal(PAM(16, use_sdpa=True)(x), x)
    assert torch.equal(CAM(16)(x), x) and torch.equal(CAM(16, variant="paper")(x), x)
    assert PAM(16).gamma.item() == 0 and CAM().gamma.item() == 0


# --- head --------------------------------------------------------------------------------------

def ref_cbr(x, seq, train):
    conv, bn = seq[0], seq[1]
    assert conv.bias is None and conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    return torch.relu(batchnorm_loop(F.conv2d(x, conv.weight, padding=1), bn, train))


def ref_head(x, head, train):
    pam_feat = ref_cbr(ref_pam(ref_cbr(x, head.pam_in, train), head.pam)[0], head.pam_out, train)
    cam_in = ref_cbr(x, head.cam_in, train)
    cam_feat = ref_cbr(ref_cam(cam_in, head.cam.gamma, head.cam.variant)[0], head.cam_out, train)
    cls = lambda t, seq: F.conv2d(t, seq[1].weight, seq[1].bias)  # noqa: E731
    return (cls(pam_feat + cam_feat, head.classifier_sum), cls(pam_feat, head.classifier_pam),
            cls(cam_feat, head.classifier_cam))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape,classes", [((2, 36, 5, 7), 3), ((1, 32, 4, 3), 5)])
def test_head_matches_loop_reference(shape, classes, train):
    if train and shape[0] == 1:
        shape = (2, *shape[1:])
    head = randomize_(DANetHead(shape[1], classes, dropout=0.0 if train else 0.1).double(),
                      seed=shape[1]).train(train)
    x = torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(1)) * 0.3
    got = head(x)
    assert head.pam.channels == shape[1] // 4 and len(got) == 3
    for g, e in zip(got, ref_head(x, head, train)):
        assert g.shape == (shape[0], classes, *shape[2:])
        torch.testing.assert_close(g, e, **TOL)


def test_head_dropout_is_channelwise_in_train_mode():
    head = DANetHead(32, 4, inter_channels=16).train()
    assert head.pam.channels == 16
    assert all(isinstance(h[0], torch.nn.Dropout2d) and h[0].p == 0.1
               for h in (head.classifier_sum, head.classifier_pam, head.classifier_cam))
    head.eval()
    x = torch.randn(2, 32, 4, 5)
    assert all(torch.equal(a, b) for a, b in zip(head(x), head(x)))


def test_errors():
    # wrong rank / channels / integer inputs, gradcheck and batch 1: tests/test_contracts.py
    with pytest.raises(ValueError, match="channels=7"):
        PAM(7)
    with pytest.raises(ValueError, match="variant"):
        CAM(8, variant="neg")
    with pytest.raises(ValueError, match="4-D"):  # built without channels: rank still checked
        CAM()(torch.randn(16, 4, 4))
    # the head's own arguments are named, not the PAM's channels
    with pytest.raises(ValueError, match=r"in_channels=28 must be an integer >= 32"):
        DANetHead(28, 3)  # inter 28 // 4 = 7 < 8 for the PAM
    with pytest.raises(ValueError, match="in_channels=3"):
        DANetHead(3, 3)
    with pytest.raises(ValueError, match=r"inter_channels=7 must be an integer >= 8"):
        DANetHead(64, 3, inter_channels=7)
    with pytest.raises(ValueError, match=r"cam_variant='neg' must be one of"):
        DANetHead(64, 3, cam_variant="neg")
    assert DANetHead(32, 3).pam.channels == 8  # the smallest default head: PAM query width 1
    assert DANetHead(8, 3, inter_channels=8).pam.channels == 8

