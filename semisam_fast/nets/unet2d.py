"""The 2D student: a standard U-Net (the la-cpu preset's)."""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _double_conv2d(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet2D(nn.Module):
    """Standard 2D U-Net with 4 downsamplings; widths base*(1,2,4,8,16).

    Input (B, in_channels, H, W) with H, W divisible by 16; output logits (B, n_classes, H, W).
    `dropout` > 0 adds Dropout2d on the bottleneck (used for stochastic teacher passes).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, base: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        w = [base * 2**i for i in range(5)]
        self.enc = nn.ModuleList([_double_conv2d(in_channels, w[0])] + [_double_conv2d(w[i], w[i + 1]) for i in range(3)])
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv2d(w[3], w[4])
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, stride=2) for i in reversed(range(4))])
        self.dec = nn.ModuleList([_double_conv2d(2 * w[i], w[i]) for i in reversed(range(4))])
        self.head = nn.Conv2d(w[0], n_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Return per-pixel class logits."""
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"UNet2D needs H and W divisible by 16, got {tuple(x.shape)}")
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.drop(self.bottleneck(x))
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)
