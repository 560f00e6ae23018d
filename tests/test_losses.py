"""Losses and ramps on hand-built tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from semisam_fast.train.losses import (
    dice_loss,
    sam_loss,
    sigmoid_rampup,
    softmax_mse,
    supervised_loss,
    uamt_threshold,
    uncertainty_mask,
)


def _onehot(label, c):
    return F.one_hot(label, c).movedim(-1, 1).float()


def test_dice_loss_perfect_and_disjoint():
    label = torch.zeros(2, 8, 8, dtype=torch.long)
    label[:, 2:5, 2:5] = 1
    target = _onehot(label, 2)
    assert dice_loss(target.clone(), target).item() == pytest.approx(0.0, abs=1e-7)
    # foreground predicted exactly where it is not
    wrong = _onehot(1 - label, 2)
    assert dice_loss(wrong, target).item() == pytest.approx(1.0, abs=1e-5)
    # over all classes the background of `wrong` overlaps nothing either
    assert dice_loss(wrong, target, include_background=True).item() == pytest.approx(1.0, abs=1e-5)


def test_dice_loss_value_by_hand():
    probs = torch.tensor([[[0.5, 0.5], [1.0, 0.0]]]).reshape(1, 1, 2, 2)
    probs = torch.cat([1 - probs, probs], 1)
    target = _onehot(torch.tensor([[[1, 0], [1, 0]]]), 2)
    # foreground: inter = 0.5 + 1 = 1.5, sums = 2 + 2 -> dice 0.75
    assert dice_loss(probs, target, eps=0).item() == pytest.approx(0.25)
    # background: inter = 0.5 + 1 = 1.5, sums 2 + 2 -> 0.75; mean 0.75
    assert dice_loss(probs, target, eps=0, include_background=True).item() == pytest.approx(0.25)


@pytest.mark.parametrize("shape", [(2, 16, 16), (1, 8, 8, 8)])
def test_supervised_loss_decreases_2d_and_3d(shape):
    label = (torch.arange(math.prod(shape)).reshape(shape) % 2).long()  # exactly half foreground
    logits = torch.zeros((shape[0], 2) + shape[1:], requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    losses = []
    for _ in range(20):
        loss = supervised_loss(logits, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # uniform logits: CE = ln 2 and foreground Dice = 0.5*N/2 * 2 / (N/2 + N/2) = 0.5
    assert losses[0] == pytest.approx(0.5 * math.log(2) + 0.5 * 0.5, abs=1e-3)
    assert losses[-1] < 0.5 * losses[0]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:]))
    # (B, 1, ...) labels are accepted too
    assert supervised_loss(logits, label[:, None]).item() == supervised_loss(logits, label).item()


def test_softmax_mse():
    torch.manual_seed(0)
    a = torch.randn(2, 3, 4, 4, 4)
    assert softmax_mse(a, a.clone()).item() == 0.0
    b = torch.randn(2, 3, 4, 4, 4)
    m = softmax_mse(a, b, reduction="none")
    assert m.shape == a.shape
    expected = (a.softmax(1) - b.softmax(1)) ** 2
    assert torch.allclose(m, expected)
    assert softmax_mse(a, b).item() == pytest.approx(expected.mean().item())
    s = a.clone().requires_grad_()
    t = b.clone().requires_grad_()
    softmax_mse(s, t).backward()
    assert s.grad is not None and t.grad is None  # teacher is a target
    with pytest.raises(ValueError):
        softmax_mse(a, b, reduction="sum")


def test_uncertainty_mask_entropy():
    # T=2 passes, B=1, C=2, 3 voxels: confident, split between passes, uncertain in both
    fg = torch.tensor([[1.0, 1.0, 0.5], [1.0, 0.0, 0.5]]).reshape(2, 1, 1, 3)
    samples = torch.cat([1 - fg, fg], dim=2)
    mask, unc = uncertainty_mask(samples, threshold=0.5)
    assert mask.shape == unc.shape == (1, 1, 3)
    assert unc[0, 0, 0].item() == pytest.approx(0.0, abs=1e-4)
    assert unc[0, 0, 1].item() == pytest.approx(math.log(2), abs=1e-4)
    assert unc[0, 0, 2].item() == pytest.approx(math.log(2), abs=1e-4)
    assert mask.flatten().tolist() == [1.0, 0.0, 0.0]


def test_uamt_threshold_schedule():
    assert uamt_threshold(0, 1000) == pytest.approx((0.75 + 0.25 * math.exp(-5)) * math.log(2))
    assert uamt_threshold(1000, 1000) == pytest.approx(math.log(2))
    assert uamt_threshold(200, 1000) < uamt_threshold(600, 1000)


def test_sam_loss_ignores_invalid_samples():
    torch.manual_seed(0)
    prob = torch.rand(3, 8, 8, requires_grad=True)
    sam = (torch.rand(3, 8, 8) > 0.5).float()
    valid = torch.tensor([True, False, True])
    for kind in ("mse", "dicece"):
        base = sam_loss(prob, sam, valid, kind=kind)
        sam2 = sam.clone()
        sam2[1] = 1 - sam2[1]
        assert sam_loss(prob, sam2, valid, kind=kind).item() == base.item()
        assert base.item() > 0
        base.backward()
        assert prob.grad[1].abs().sum().item() == 0.0
        assert prob.grad[0].abs().sum().item() > 0
        prob.grad = None
    mse = sam_loss(prob, sam, valid, kind="mse")
    assert mse.item() == pytest.approx(((prob - sam) ** 2)[valid].mean().item())


def test_sam_loss_no_valid_is_graph_safe_zero():
    prob = torch.rand(2, 4, 4, 4, requires_grad=True)
    sam = torch.ones(2, 4, 4, 4, dtype=torch.bool)
    for kind in ("mse", "dicece"):
        loss = sam_loss(prob, sam, torch.zeros(2, dtype=torch.bool), kind=kind)
        assert loss.item() == 0.0
        loss.backward()  # must not raise
        assert prob.grad.abs().sum().item() == 0.0


def test_sam_loss_perfect_match_small():
    sam = torch.zeros(1, 6, 6)
    sam[0, 1:4, 1:4] = 1
    assert sam_loss(sam.clone(), sam, torch.tensor([True]), kind="mse").item() == 0.0
    assert sam_loss(sam.clone(), sam, torch.tensor([True]), kind="dicece").item() < 1e-4
    with pytest.raises(ValueError):
        sam_loss(sam, sam, torch.tensor([True]), kind="l1")


def test_rampups():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(3, 0) == 1.0
