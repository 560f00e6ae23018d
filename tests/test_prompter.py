"""SAM's coordinate frame (`prompter.SamPrompter`): boxes and points into SAM's input and back, the margin in
SAM-input pixels, clipping to the resized image, and masks decoded back at slice and canvas size, with the tiny
random SAM run for real."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semisam_fast.adapt import AdaptOptions
from semisam_fast.backends import TorchBackend
from semisam_fast.models import Frame, load_model
from semisam_fast.prompter import BOX_MARGIN, SamPrompter, mask_to_low_res, masks_to_original
from semisam_fast.sam_targets import TargetOptions
from semisam_fast.train.config import TrainConfig


@pytest.fixture(scope="module")
def tiny():
    model = load_model("tiny")
    backend = TorchBackend(model)
    embeddings = backend.encode(model.preprocess(torch.rand(2, 100, 50)))
    return backend, embeddings


def test_one_box_margin_is_every_default():
    assert BOX_MARGIN == 4.0
    assert TargetOptions().margin == TrainConfig().targets.margin == AdaptOptions().margin == BOX_MARGIN
    assert SamPrompter(256).margin == BOX_MARGIN


def test_a_box_on_a_slice_round_trips_through_sams_input_frame():
    prompter = SamPrompter(256, margin=4.0)
    frame = prompter.frame(100, 50)  # rows x columns: scale 2.56, the resized image is 256 x 128
    assert frame.resized == (256, 128)
    box = torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 90.0, 49.0, 99.0]])  # (x0, y0, x1, y1) = (column, row)
    inside = torch.tensor([[10 * 2.56 - 4, 20 * 2.56 - 4, 30 * 2.56 + 4, 40 * 2.56 + 4],
                           [0.0, 90 * 2.56 - 4, 127.0, 255.0]])  # the second clipped to the resized image
    torch.testing.assert_close(prompter.boxes_to_input(box, frame), inside)
    torch.testing.assert_close(prompter.box_on_slice(box, frame), inside / 2.56)
    coords, labels = prompter.box_prompts(box, frame)
    assert coords.shape == (2, 1, 2, 2) and labels.tolist() == [[[2, 3]]] * 2
    torch.testing.assert_close(coords.reshape(2, 4), inside)
    # one frame per row gives the same as one for all
    torch.testing.assert_close(prompter.box_prompts(box, [frame, frame])[0], coords)
    # margin 0: given boxes (the parity samples') are only scaled, never clipped
    torch.testing.assert_close(SamPrompter(256, margin=0.0).boxes_to_input(box, frame), box * 2.56)


def test_prompts_from_masks_are_the_masks_boxes_or_points():
    prompter = SamPrompter(256, margin=4.0)
    frame = prompter.frame(100, 50)
    masks = np.zeros((1, 100, 50), dtype=np.uint8)
    masks[0, 20:41, 10:31] = 3  # any label value
    coords, _ = prompter.prompts_from_masks(masks, frame)
    torch.testing.assert_close(coords, prompter.box_prompts(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), frame)[0])
    coords, labels = prompter.prompts_from_masks(masks, frame, "point")
    assert labels.tolist() == [[[1, -1, -1]]]  # a box-shaped mask has no negative; SAM's padding point last
    x, y = (coords[0, 0, 0] / 2.56).tolist()
    assert 10 <= x <= 30 and 20 <= y <= 40


def test_canvas_prompts_scale_a_stretched_picture_of_the_slice():
    prompter = SamPrompter(256, margin=4.0)
    frame = prompter.frame(100, 50)
    canvas = torch.zeros(1, 64, 64)  # the 100 x 50 slice stretched onto 64 x 64
    canvas[0, 16:32, 8:24] = 0.9
    coords, _ = prompter.canvas_prompts(canvas, [frame])
    sx, sy = 50 / 64 * 2.56, 100 / 64 * 2.56
    expected = torch.tensor([[8 * sx - 4, 16 * sy - 4, 23 * sx + 4, 31 * sy + 4]])
    torch.testing.assert_close(coords.reshape(1, 4), expected)


def test_decoded_masks_at_slice_and_canvas_size_are_sams_low_res_masks_resized(tiny):
    """The decode, written out by hand as the chains did it before the prompter: the prompt box scaled and grown,
    SAM's low-res logits cropped to the image part of the padded input, resized bilinearly to the slice (or the
    canvas)."""
    backend, embeddings = tiny
    prompter = SamPrompter.of(backend, margin=4.0)
    frame = prompter.frame(100, 50)
    boxes = torch.tensor([[10.0, 20.0, 30.0, 40.0], [5.0, 50.0, 45.0, 95.0]])
    coords = (boxes * 2.56 + torch.tensor([-4.0, -4.0, 4.0, 4.0])).clamp(min=0).reshape(2, 1, 2, 2)
    low_res, iou = backend.decode(embeddings, coords, torch.tensor([[[2, 3]]] * 2))
    image_part = low_res[:, 0, :, :256, :128]  # the 256 x 128 resized slice inside the 256 x 256 input

    def resized(size):
        return F.interpolate(image_part, size=size, mode="bilinear", align_corners=False)[:, 0]

    logits, got_iou = prompter.decode(embeddings, prompter.box_prompts(boxes, frame), frame)
    assert logits.shape == (2, 100, 50)
    torch.testing.assert_close(logits, resized((100, 50)))
    torch.testing.assert_close(got_iou, iou[:, 0, 0])

    canvas, _ = prompter.decode(embeddings, prompter.box_prompts(boxes, frame), [frame, frame], size=(64, 48))
    assert canvas.shape == (2, 64, 48)
    torch.testing.assert_close(canvas, resized((64, 48)))
    # the same slices decoded from their masks
    masks = np.zeros((2, 100, 50), dtype=bool)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes.int().tolist()):
        mask[y0:y1 + 1, x0:x1 + 1] = True
    torch.testing.assert_close(prompter.decode_from_masks(embeddings, masks, frame), logits)


def test_slices_of_several_sizes_decode_onto_one_canvas_size(tiny):
    backend, embeddings = tiny
    prompter = SamPrompter.of(backend)
    frames = [prompter.frame(100, 50), prompter.frame(60, 90)]
    prompts = prompter.box_prompts(torch.tensor([[10.0, 20.0, 30.0, 40.0], [10.0, 20.0, 30.0, 40.0]]), frames)
    canvas, _ = prompter.decode(embeddings, prompts, frames, size=(32, 32))
    for row, frame in enumerate(frames):  # each row resized from its own slice's part of the input
        alone, _ = prompter.decode(embeddings[row:row + 1], (prompts[0][row:row + 1], prompts[1][row:row + 1]),
                                   frame, size=(32, 32))
        torch.testing.assert_close(canvas[row:row + 1], alone)
    with pytest.raises(ValueError, match="one `size`"):
        prompter.decode(embeddings, prompts, frames)


def test_mask_geometry_round_trip():
    """A low-res mask of a rectangle at known (row, column) place maps back to the same place at slice size, and a
    slice's mask taken into the low-res frame and back is itself."""
    frame = Frame(100, 50, 256)
    low = torch.full((1, 256, 256), -10.0)
    # rows 20..40, cols 10..30 of the slice -> scale 2.56 in the 256 frame (low res == input size for 256 models)
    low[0, int(20 * 2.56):int(41 * 2.56), int(10 * 2.56):int(31 * 2.56)] = 10.0
    mask = masks_to_original(low, frame)[0] > 0
    rows, cols = np.nonzero(mask.numpy())
    assert abs(rows.min() - 20) <= 1 and abs(rows.max() - 40) <= 1
    assert abs(cols.min() - 10) <= 1 and abs(cols.max() - 30) <= 1
    back = masks_to_original(mask_to_low_res(mask.numpy(), frame, 256) - 0.5, frame) > 0
    assert float((back & mask).sum() / (back | mask).sum()) > 0.95
