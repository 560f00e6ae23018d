"""Model registry, checkpoint loading, preprocessing geometry and LiteMedSAM's real quality on a real slice."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from semisam_fast.backends import TorchBackend
from semisam_fast.errors import UserError
from semisam_fast.metrics import binary_metrics
from semisam_fast.models import Frame, load_model, masks_to_original, preprocess
from semisam_fast.models.checkpoint import identify, read_state_dict
from semisam_fast.samples import load_samples
from semisam_fast.segment import box_as_mask_dice, segment_with_boxes

from .conftest import run_cli


def test_litemedsam_offline_beats_box_baseline_on_real_la(la_dir):
    model = load_model("litemedsam")
    assert model.checkpoint and model.checkpoint.endswith("lite_medsam.pth")
    samples = load_samples(4, la_dir)
    logits, _ = segment_with_boxes(TorchBackend(model), samples.slices, samples.boxes)
    dice = np.mean([binary_metrics(m, l)["dice"] for m, l in zip((logits > 0).numpy(), samples.labels)])
    baseline = box_as_mask_dice(samples.boxes, samples.labels)
    assert dice > baseline + 0.1, (dice, baseline)
    assert dice > 0.75


def test_preprocess_keeps_aspect_and_pads():
    slices = torch.rand(2, 100, 50) * 7 - 3
    x = preprocess(slices, 256, "minmax")
    assert x.shape == (2, 3, 256, 256)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.all(x[:, :, :, 128:] == 0)  # width 50 -> 128 after scaling by 2.56, then zero padding
    assert x[:, :, :, :128].abs().sum() > 0
    sam = preprocess(slices, 1024, "sam")
    assert sam.shape == (2, 3, 1024, 1024)


def test_mask_geometry_round_trip():
    """A low-res mask of a rectangle at known (row, column) place maps back to the same place at slice size."""
    frame = Frame(100, 50, 256)
    low = torch.full((1, 256, 256), -10.0)
    # rows 20..40, cols 10..30 of the slice -> scale 2.56 in the 256 frame (low res == input size for 256 models)
    low[0, int(20 * 2.56):int(41 * 2.56), int(10 * 2.56):int(31 * 2.56)] = 10.0
    mask = masks_to_original(low, frame)[0] > 0
    rows, cols = np.nonzero(mask.numpy())
    assert abs(rows.min() - 20) <= 1 and abs(rows.max() - 40) <= 1
    assert abs(cols.min() - 10) <= 1 and abs(cols.max() - 30) <= 1


def test_identify_checkpoints(tmp_path):
    lite = read_state_dict(load_model("litemedsam").checkpoint)
    assert identify(lite) == "litemedsam"
    tiny = load_model("tiny")
    state = {f"image_encoder.{k}": v for k, v in tiny.encoder.state_dict().items()}
    assert identify(state) == "tiny"
    assert identify({"foo": torch.zeros(1)}) is None


def test_unknown_model_and_missing_checkpoint_raise_user_error():
    with pytest.raises(UserError, match="unknown model"):
        load_model("vit_x")
    with pytest.raises(UserError, match="needs --checkpoint"):
        load_model("vit_b")


def _assert_one_line_error(result, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and fragment in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_bad_checkpoints(tmp_path):
    tiny = load_model("tiny")
    state = {}
    for prefix, module in (("image_encoder", tiny.encoder), ("prompt_encoder", tiny.decoder.prompt_encoder),
                           ("mask_decoder", tiny.decoder.mask_decoder)):
        state.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    good = tmp_path / "tiny.pth"
    torch.save(state, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not weights")

    _assert_one_line_error(run_cli("export", "--model", "vit_b", "--checkpoint", str(tmp_path / "missing.pth"),
                                   "--out", str(tmp_path)), "not found")
    _assert_one_line_error(run_cli("export", "--model", "vit_b", "--checkpoint", str(good), "--out", str(tmp_path)),
                           "fits 'tiny'")
    _assert_one_line_error(run_cli("export", "--model", "litemedsam", "--checkpoint", str(truncated),
                                   "--out", str(tmp_path)), "truncated")
    _assert_one_line_error(run_cli("export", "--model", "tiny", "--checkpoint", str(garbage), "--out", str(tmp_path)),
                           "not a PyTorch weights file")
    _assert_one_line_error(run_cli("export", "--model", "sam_xxl", "--out", str(tmp_path)), "is not one of 'litemedsam'")
    assert not list(tmp_path.glob("*.onnx"))  # nothing half-written
