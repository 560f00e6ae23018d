"""Whole-volume inference for trained students: slice-by-slice (2D U-Net) or sliding window (3D V-Net).

`predict_case` is the entry point for a raw volume: it applies the run's `StudentInput` (the same normalisation
and resizing training used, read from the checkpoint's config). `predict_volume_2d` / `predict_volume_3d` run a net
on a volume that is already normalised. All return the foreground probability volume, float32 (H, W, Z), in the
image's own geometry. The network must already be on `device`; it is run in eval mode and its mode restored after.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data.student_input import StudentInput, resize_slices
from .errors import UserError

__all__ = ["predict_volume_2d", "predict_volume_3d", "predict_case", "predict_mask", "foreground_prob",
           "largest_component"]


@contextmanager
def _eval_mode(net: nn.Module, channels_last: bool = False) -> Iterator[None]:
    """Eval mode under inference_mode; `channels_last`: the 2D net's weights in channels-last layout meanwhile
    (oneDNN's faster convolutions on the CPU: 1.35x for la-cpu's U-Net, outputs equal to ~1e-7). The layout changes
    outside inference_mode, so the restored weights stay ordinary tensors that training can use."""
    was_training = net.training
    net.eval()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            yield
    finally:
        if channels_last:
            net.to(memory_format=torch.contiguous_format)
        net.train(was_training)


def foreground_prob(logits: Tensor) -> Tensor:
    """(B, C, ...) logits -> (B, ...) foreground probability: sigmoid for C=1, softmax class 1 for C=2,
    1 - P(background) for C>2."""
    c = logits.shape[1]
    if c == 1:
        return torch.sigmoid(logits[:, 0])
    probs = torch.softmax(logits.float(), dim=1)
    return probs[:, 1] if c == 2 else 1.0 - probs[:, 0]


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W, Z) volume, got shape {image.shape}")
    return image.astype(np.float32, copy=False)


def _positive_ints(value: object, n: int, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise UserError(f"{name} must be {n} positive integers, got {value!r}") from None
    if len(out) != n or min(out) < 1:
        raise UserError(f"{name} must be {n} positive integers, got {value!r}")
    return out


def class_probs(logits: Tensor) -> Tensor:
    """(B, C, ...) logits -> (B, C, ...) softmax probabilities (a multi-class student's output)."""
    return torch.softmax(logits.float(), dim=1)


def predict_volume_2d(net: nn.Module, image: np.ndarray, size: int, batch: int = 16, device: str = "cpu",
                      classes: bool = False) -> np.ndarray:
    """Foreground probability (H, W, Z) float32 of a 2D net applied to every slice `image[:, :, z]` of an already
    normalised volume. Each slice is resized as in training (`resize_slices`), the logits resized back to (H, W)
    bilinearly, then softmaxed. `classes`: every class's probability, (C, H, W, Z)."""
    image = _check_image(image)
    (size,) = _positive_ints([size], 1, "in-plane size")
    (batch,) = _positive_ints([batch], 1, "batch")
    H, W, Z = image.shape
    out = None
    slices = resize_slices(image, size)  # (Z, size, size): the training canvas
    with _eval_mode(net, channels_last=torch.device(device).type == "cpu"):
        for start in range(0, Z, batch):
            x = slices[start:start + batch, None].to(device)
            logits = net(x).float()
            if logits.shape[-2:] != (H, W):
                logits = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=False)
            if classes:  # (B, C, H, W) -> (C, H, W, B)
                probs = class_probs(logits).cpu().numpy().transpose(1, 2, 3, 0)
            else:
                probs = foreground_prob(logits).cpu().numpy().transpose(1, 2, 0)
            if out is None:
                out = np.empty(probs.shape[:-1] + (Z,), dtype=np.float32)
            out[..., start:start + batch] = probs
    return out


def _starts(n: int, patch: int, stride: int) -> list[int]:
    # UA-MT's test_single_case: ceil((n - patch) / stride) + 1 windows, the last one clamped to end at n
    count = math.ceil((n - patch) / stride) + 1
    return sorted({min(stride * i, n - patch) for i in range(count)})


def predict_volume_3d(net: nn.Module, image: np.ndarray, patch: Sequence[int] = (112, 112, 80),
                      stride: Sequence[int] = (18, 18, 4), device: str = "cpu", classes: bool = False) -> np.ndarray:
    """Foreground probability (H, W, Z) float32 by sliding-window inference as in UA-MT's test_all_case.

    The volume is zero-padded (centred) to at least `patch`, windows of `patch` slide by `stride` covering the
    end exactly, softmax probabilities are averaged over overlaps and the padding is cropped off. `classes`: every
    class's probability, (C, H, W, Z)."""
    image = _check_image(image)
    patch = _positive_ints(patch, 3, "patch")
    stride = _positive_ints(stride, 3, "stride")
    shape = image.shape
    pads = [(max(p - s, 0) // 2, max(p - s, 0) - max(p - s, 0) // 2) for s, p in zip(shape, patch)]
    padded = np.pad(image, pads, mode="constant", constant_values=0) if any(sum(p) for p in pads) else image
    vol = torch.from_numpy(np.ascontiguousarray(padded)).to(device)
    prob_sum = None
    count = torch.zeros(vol.shape, dtype=torch.float32, device=device)
    px, py, pz = patch
    with _eval_mode(net):
        for x in _starts(vol.shape[0], px, stride[0]):
            for y in _starts(vol.shape[1], py, stride[1]):
                for z in _starts(vol.shape[2], pz, stride[2]):
                    window = vol[x:x + px, y:y + py, z:z + pz][None, None]
                    # averaging the foreground channel alone equals taking it from the averaged score map
                    logits = net(window).float()
                    probs = class_probs(logits)[0] if classes else foreground_prob(logits)[0]
                    if prob_sum is None:
                        prob_sum = torch.zeros(probs.shape[:-3] + vol.shape, dtype=torch.float32, device=device)
                    prob_sum[..., x:x + px, y:y + py, z:z + pz] += probs
                    count[x:x + px, y:y + py, z:z + pz] += 1.0
    prob = (prob_sum / count).cpu().numpy()
    crop = (Ellipsis,) + tuple(slice(lo, lo + s) for (lo, _), s in zip(pads, shape))
    return np.ascontiguousarray(prob[crop], dtype=np.float32)


def predict_case(net: nn.Module, image: np.ndarray, config: dict, device: str = "cpu",
                 slices: Sequence[int] | None = None, precision: str = "fp32", classes: bool = False) -> np.ndarray:
    """Foreground probability of one raw volume: the run's `StudentInput` (from `config`, as recorded in the
    checkpoint), then 2D or 3D inference chosen by `config["student"]`.

    `slices`: only these z, returned as (H, W, len(slices)); a 2D student predicts just them (normalised with the
    whole volume's statistics, as always), a 3D student the whole volume its windows need. `precision` "bf16": the
    net runs under bf16 autocast (pseudo-label rounds on a CPU with bf16 matmuls), the output stays float32.
    `classes`: every class's probability, (C, H, W, Z), for a multi-class student."""
    student = str(config.get("student", "")).lower()
    if student not in ("unet2d", "vnet"):
        raise UserError(f"config names unknown student {config.get('student')!r}; expected 'unet2d' or 'vnet'")
    if precision not in ("fp32", "bf16"):
        raise UserError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    student_input = StudentInput.from_config(config)
    image = student_input.normalize(_check_image(image))
    keep = None if slices is None else list(slices)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    if student == "unet2d":
        with autocast:
            return predict_volume_2d(net, image if keep is None else image[:, :, keep], student_input.in_plane,
                                     batch=int(config.get("eval_batch", 16)), device=device, classes=classes)
    if "patch" not in config:
        raise UserError("config of a vnet student has no 'patch' size")
    with autocast:
        prob = predict_volume_3d(net, image, config["patch"], config.get("stride", (18, 18, 4)), device=device,
                                 classes=classes)
    return prob if keep is None else np.ascontiguousarray(prob[..., keep])


def predict_mask(net: nn.Module, image: np.ndarray, config: dict, threshold: float = 0.5,
                 keep_largest: bool = False, device: str = "cpu") -> np.ndarray:
    """A student's mask of one raw volume, uint8 (H, W, Z): probability > threshold, optionally reduced to its largest
    connected component (what `evaluate` scores and `predict` writes). A multi-class student (`n_classes` > 2):
    each voxel's most probable class, as its label value; `keep_largest` keeps each class's largest component."""
    if not 0.0 <= float(threshold) < 1.0:
        raise UserError(f"threshold must be in [0, 1), got {threshold}")
    if n_classes(config) > 2:
        labels = predict_case(net, image, config, device=device, classes=True).argmax(axis=0).astype(np.uint8)
        if keep_largest:
            for value in range(1, n_classes(config)):
                labels[(labels == value) & ~largest_component(labels == value)] = 0
        return labels
    mask = predict_case(net, image, config, device=device) > threshold
    if keep_largest:
        mask = largest_component(mask)
    return mask.astype(np.uint8)


def n_classes(config: dict) -> int:
    """The number of output classes of a checkpoint's student, background included (2: a binary student)."""
    return int((config.get("student_kwargs") or {}).get("n_classes", 2))


def label_values(config: dict) -> tuple[int, ...]:
    """The foreground label values a checkpoint's student predicts: (1,) binary, (1, ..., C-1) multi-class."""
    return tuple(range(1, max(2, n_classes(config))))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a binary mask (full connectivity, as UA-MT's getLargestCC): the
    post-processing LA papers apply to a prediction."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())
