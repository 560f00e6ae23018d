"""The 3D student: V-Net as UA-MT and SemiSAM use it on LA (the la-paper preset's)."""
from __future__ import annotations

from torch import Tensor, nn


def _conv_stage3d(n_convs: int, cin: int, cout: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [nn.Conv3d(cin if i == 0 else cout, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _down3d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(cin, cout, 2, stride=2), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


def _up3d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose3d(cin, cout, 2, stride=2), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))


class VNet(nn.Module):
    """3D V-Net as used by UA-MT / SemiSAM on the LA dataset.

    Encoder stages of 1, 2, 3, 3, 3 conv-BN-ReLU layers with widths n_filters*(1,2,4,8,16), strided-conv
    downsampling, transposed-conv upsampling with additive skips and a mirrored 3, 3, 2, 1 conv decoder.
    Input (B, in_channels, D, H, W) with D, H, W divisible by 16; output logits (B, n_classes, D, H, W).
    `dropout` > 0 adds Dropout3d on the bottleneck and before the 1x1x1 head (UA-MT's `has_dropout`).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, n_filters: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        f = [n_filters * 2**i for i in range(5)]
        self.enc = nn.ModuleList(
            [_conv_stage3d(1, in_channels, f[0])] + [_conv_stage3d(n, f[i + 1], f[i + 1]) for i, n in enumerate((2, 3, 3, 3))]
        )
        self.down = nn.ModuleList([_down3d(f[i], f[i + 1]) for i in range(4)])
        self.up = nn.ModuleList([_up3d(f[i + 1], f[i]) for i in reversed(range(4))])
        # decoder stages after each upsampling: widths f3, f2, f1, f0 with 3, 3, 2, 1 convs
        self.dec = nn.ModuleList([_conv_stage3d(n, f[i], f[i]) for i, n in zip(reversed(range(4)), (3, 3, 2, 1))])
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv3d(f[0], n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Return per-voxel class logits."""
        if any(s % 16 for s in x.shape[-3:]):
            raise ValueError(f"VNet needs D, H, W divisible by 16, got {tuple(x.shape)}")
        skips = []
        for i, stage in enumerate(self.enc):
            x = stage(x)
            if i < 4:
                skips.append(x)
                x = self.down[i](x)
        x = self.drop(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(up(x) + skip)
        return self.head(self.drop(x))
