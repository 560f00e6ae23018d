"""The figures every benchmark reports beside its timings: GFLOP per item from torch's FLOP counter, and the
GFLOP/s a timing makes of it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from semisam_fast.bench import gflop, summarise


def test_gflop_counts_multiply_adds_twice():
    linear, conv = nn.Linear(64, 32), nn.Conv2d(3, 8, 3, padding=1)
    assert gflop(lambda: linear(torch.randn(10, 64))) == pytest.approx(2 * 10 * 64 * 32 / 1e9)
    assert gflop(lambda: conv(torch.randn(2, 3, 16, 16))) == pytest.approx(2 * 2 * 16 * 16 * 8 * 3 * 9 / 1e9)


def test_summarise_gives_gflops_from_the_median():
    times = {"ref": [2.0, 1.0, 3.0], "fast": [0.5, 0.4, 0.6]}
    out = summarise(times, "ref", items=4, gflop_per_item=10.0)
    assert out["fast"]["gflops"] == pytest.approx(4 * 10.0 / 0.5) and out["ref"]["gflops"] == pytest.approx(20.0)
    assert out["fast"]["speedup_vs_ref"] == pytest.approx(4.0)
    assert "gflops" not in summarise(times, "ref")["fast"]


def test_litemedsam_counts_as_the_issue_measured():
    """LiteMedSAM: ~75 GFLOP per 256x256 slice through the encoder; ~3.9 per box prompt through the batched
    decoder as exported (segment-anything's own decoder: 3.62; the rest is the block-diagonal heads' zeros)."""
    from semisam_fast.models import load_model

    loaded = load_model("litemedsam")
    encoder = gflop(lambda: loaded.encoder(torch.rand(1, 3, 256, 256)))
    assert 70 < encoder < 80
    embeddings = torch.randn(1, 256, 64, 64)
    coords = torch.tensor([[[[30.0, 40.0], [150.0, 170.0]]]])
    labels = torch.tensor([[[2, 3]]])
    no_mask = (torch.zeros(1, 1, 1, 256, 256), torch.zeros(1))
    decoder = gflop(lambda: loaded.decoder(embeddings, coords, labels, *no_mask))
    assert 3.6 < decoder < 4.0
