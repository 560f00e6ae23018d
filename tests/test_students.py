"""Student networks: shapes, gradients, registry, and that a U-Net can actually learn."""

import numpy as np
import pytest
import torch

from semisam_fast.errors import UserError
from semisam_fast.train.losses import supervised_loss
from semisam_fast.nets import UNet2D, VNet, build_student

from .conftest import whole_and_resumed


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


class _ToyNet(torch.nn.Module):
    """A third student: two convolutions, no down-sampling (any slice size works)."""

    def __init__(self, in_channels: int = 1, n_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(in_channels, width, 3, padding=1), torch.nn.BatchNorm2d(width),
                                        torch.nn.ReLU(), torch.nn.Conv2d(width, n_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture
def toy_student():
    from semisam_fast.geometry import Slices2D
    from semisam_fast.nets import STUDENTS, register_student

    register_student("toy", _ToyNet, Slices2D())
    yield "toy"
    STUDENTS.pop("toy")


def test_a_registered_third_student_trains_resumes_and_predicts(toy_student, phantom, tmp_path):
    """Adding a student is one registry entry: the trainer, checkpoints, loading and inference take it through its
    geometry, with no code that names it."""
    from semisam_fast.checkpoints import find_checkpoint
    from semisam_fast.data import open_dataset
    from semisam_fast.inference import predict_case
    from semisam_fast.nets import load_student
    from semisam_fast.train import build_trainer, preset

    def make(out):
        config = preset("la-cpu", method="mt", student=toy_student, student_kwargs={"width": 4}, iterations=4,
                        in_plane=48, crop=32, labelled_batch=2, unlabelled_batch=2, unlabelled_cases=None,
                        unlabelled_every=1, val_every=2, save_every=2)
        return build_trainer(config, phantom, None, labeled=2, val=1, run_dir=out, tensorboard=False)

    whole, _ = whole_and_resumed(make, tmp_path, until=2)
    assert isinstance(whole.student, _ToyNet) and 0.0 <= whole.history[-1]["val_dice"] <= 1.0
    net, config = load_student(find_checkpoint(tmp_path / "whole"))
    image = open_dataset(phantom).load(open_dataset(phantom).case_ids[0]).image
    prob = predict_case(net, image, config)
    assert prob.shape == image.shape and np.isfinite(prob).all()
    with pytest.raises(UserError, match="in_plane"):  # its geometry's size check, as for the U-Net
        preset("la-cpu", student=toy_student, in_plane=48, crop=40)
