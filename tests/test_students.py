"""Student networks: shapes, gradients, registry, and that a U-Net can actually learn."""

import numpy as np
import pytest
import torch

from semisam_fast.errors import UserError
from semisam_fast.train.losses import supervised_loss
from semisam_fast.nets import UNet2D, VNet, build_student


def test_unet2d_forward_backward_shapes():
    torch.manual_seed(0)
    net = build_student("unet2d", in_channels=3, n_classes=4, base=4, dropout=0.3)
    assert isinstance(net, UNet2D)
    x = torch.randn(2, 3, 32, 48, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 4, 32, 48)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters())


def test_vnet_forward_backward_shapes():
    torch.manual_seed(0)
    net = build_student("vnet", n_classes=2)
    assert isinstance(net, VNet)
    x = torch.randn(1, 1, 16, 32, 32)
    y = net(x)
    assert y.shape == (1, 2, 16, 32, 32)
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    # same width/depth as the UA-MT V-Net (n_filters=16): about 9.4 M parameters
    assert 9.3e6 < sum(p.numel() for p in net.parameters()) < 9.6e6


def test_vnet_dropout_makes_train_passes_stochastic():
    torch.manual_seed(0)
    net = VNet(n_filters=2, dropout=0.5)
    x = torch.randn(1, 1, 32, 32, 32)  # BatchNorm needs > 1 value at the bottleneck
    net.train()
    with torch.no_grad():
        assert not torch.allclose(net(x), net(x))
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


def test_bad_sizes_and_names_rejected():
    with pytest.raises(ValueError):
        UNet2D(base=2)(torch.randn(1, 1, 24, 32))
    with pytest.raises(ValueError):
        VNet(n_filters=2)(torch.randn(1, 1, 16, 16, 20))
    with pytest.raises(UserError):
        build_student("resnet")


def test_unet2d_overfits_a_disk():
    torch.manual_seed(0)
    yy, xx = np.mgrid[:32, :32]
    disk = (yy - 14) ** 2 + (xx - 17) ** 2 <= 8**2
    img = torch.tensor(disk, dtype=torch.float32)[None, None] + 0.1 * torch.randn(1, 1, 32, 32)
    label = torch.tensor(disk).long()[None]
    net = build_student("unet2d", base=8)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        loss = supervised_loss(net(img), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(img).argmax(1)
    dice = 2 * (pred * label).sum().item() / (pred.sum() + label.sum()).item()
    assert dice > 0.9
