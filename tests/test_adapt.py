"""`semisam-fast adapt`: SAM's mask decoder fine-tuned on the labelled cases' cached embeddings (real LiteMedSAM on a
phantom): it segments from loose boxes better than the frozen decoder, its checkpoint goes wherever a checkpoint goes
(cache check, export + gate, the onnx backend), and it never reads an unlabelled case's label."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
import torch

from semisam_fast.adapt import (AdaptOptions, adapt, box_dice, labelled_examples, perturb_box, report_boxes,
                                train_decoder)
from semisam_fast.backends import TorchBackend, create_backend
from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import make_phantom, open_dataset
from semisam_fast.embed import build_cache
from semisam_fast.models import load_model

from .conftest import invoke

FAST = AdaptOptions(steps=40, batch=4, lr=3e-4)


@pytest.fixture(scope="module")
def phantom_cache(tmp_path_factory):
    root = make_phantom(tmp_path_factory.mktemp("p"), n_cases=4, shape=(96, 96, 10), seed=3)
    cache_dir = tmp_path_factory.mktemp("c")
    build_cache(open_dataset(root), TorchBackend(load_model("litemedsam")), cache_dir, batch=10, progress=False)
    return root, cache_dir


@pytest.mark.slow  # fine-tunes LiteMedSAM's decoder (~100 s here)
def test_adapted_decoder_segments_unseen_cases_from_loose_boxes_better(phantom_cache):
    root, cache_dir = phantom_cache
    dataset, cache = open_dataset(root), EmbeddingCache(cache_dir)
    train = labelled_examples(dataset, cache, dataset.case_ids[:2])
    unseen = labelled_examples(dataset, cache, dataset.case_ids[2:])  # scored only, never trained on
    model = load_model("litemedsam")
    loose = report_boxes(unseen, FAST)["loose"]
    before = box_dice(model, cache, unseen, loose, FAST.margin)
    losses = train_decoder(model, cache, train, FAST, progress=False)
    after = box_dice(model, cache, unseen, loose, FAST.margin)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert after > before + 0.05, (before, after)


def test_adapt_command_writes_a_checkpoint_that_serves_the_cache_and_exports(phantom_cache, tmp_path):
    root, cache_dir = phantom_cache
    out = tmp_path / "adapted"
    result = invoke("adapt", "--data", str(root), "--labelled", "2", "--cache", str(cache_dir), "--steps", "6",
                    "--batch", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "adapt.json").read_text())
    held = report["held_out"]
    assert held["held_out"] == "phantom_01" and set(held["dice_after"]) == {"loose", "perturbed"}
    base, adapted = load_model("litemedsam"), load_model("litemedsam", out / "adapted.pth")
    # same encoder (so the cache serves it), a different mask decoder
    assert adapted.encoder_checkpoint_sha256 == base.checkpoint_sha256 != adapted.checkpoint_sha256
    cache = EmbeddingCache(cache_dir)
    cache.check_decoder(TorchBackend(adapted))
    changed = [k for k, v in adapted.decoder.mask_decoder.state_dict().items()
               if not torch.equal(v, base.decoder.mask_decoder.state_dict()[k])]
    assert changed
    # the exported decoder passed its gate and opens against the adapted checkpoint and the base cache
    onnx = out / "litemedsam_decoder_fp32.onnx"
    sidecar = json.loads(onnx.with_suffix(".json").read_text())
    assert sidecar["parity"]["passed"] and sidecar["encoder_checkpoint_sha256"] == base.checkpoint_sha256
    backend = create_backend("onnx", "litemedsam", out / "adapted.pth", onnx)
    cache.check_decoder(backend)
    # pseudo-label takes it (decoder in torch, embeddings from the base's cache)
    labelled = invoke("pseudo-label", "--cache", str(cache_dir), "--data", str(root), "--prompt", "gt-box",
                      "--checkpoint", str(out / "adapted.pth"), "--no-distances", "--out", str(tmp_path / "pl_ok"))
    assert labelled.returncode == 0, labelled.stderr
    # train takes it with, unless told otherwise, the SAM-term recipe measured for an adapted decoder
    trained = invoke("train", "--data", str(root), "--labelled", "2", "--val", "1", "--method", "semisam", "--cache",
                     str(cache_dir), "--checkpoint", str(out / "adapted.pth"), "--iterations", "1", "--in-plane", "64",
                     "--crop", "48", "--out", str(tmp_path / "run"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert (config["sam_weight"], config["targets"]["fusion"], config["targets"]["min_agreement"]) == (1.0, "mean", 0)
    assert "adapted SAM recipe" in trained.stderr
    # the base checkpoint's artefacts are refused for the adapted checkpoint
    refused = invoke("pseudo-label", "--cache", str(cache_dir), "--data", str(root), "--prompt", "gt-box",
                     "--backend", "onnx", "--checkpoint", str(out / "adapted.pth"), "--artefact",
                     str(tmp_path / "nothing.onnx"), "--out", str(tmp_path / "pl"))
    assert refused.returncode == 2


def test_adapt_never_reads_an_unlabelled_cases_label(phantom_cache, tmp_path):
    """Scrambling the labels of every case but the labelled ones leaves the adapted weights bit-for-bit the same."""
    root, cache_dir = phantom_cache
    scrambled = tmp_path / "scrambled"
    shutil.copytree(root, scrambled)
    dataset = open_dataset(root)
    for case_id in dataset.case_ids[2:]:
        with h5py.File(scrambled / case_id / "mri_norm2.h5", "r+") as f:
            f["label"][...] = np.random.default_rng(0).integers(0, 2, f["label"].shape, dtype=np.uint8)
    options = AdaptOptions(steps=3, batch=2)
    states = []
    for data, out in ((root, tmp_path / "a"), (scrambled, tmp_path / "b")):
        adapt(open_dataset(data), EmbeddingCache(cache_dir), dataset.case_ids[:2], out, options=options,
              holdout=False, progress=False)
        states.append(load_model("litemedsam", out / "adapted.pth").decoder.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    # ... while scrambling a labelled case's label does change them
    with h5py.File(scrambled / dataset.case_ids[0] / "mri_norm2.h5", "r+") as f:
        f["label"][...] = np.roll(f["label"][()], 7, axis=0)
    adapt(open_dataset(scrambled), EmbeddingCache(cache_dir), dataset.case_ids[:2], tmp_path / "c", options=options,
          holdout=False, progress=False)
    third = load_model("litemedsam", tmp_path / "c" / "adapted.pth").decoder.state_dict()
    assert any(not torch.equal(states[0][k], third[k]) for k in third)


def test_box_scale_sets_the_training_boxes_sides(tmp_path):
    """--box-scale LO HI: every perturbed box's sides lie in LO..HI times the label box's (shift 0, away from the
    image edge); a range that is empty, negative or reversed is one error line, exit 2."""
    rng = np.random.default_rng(0)
    label_box = np.array([40.0, 50.0, 79.0, 69.0])  # 40 x 20 pixels, inclusive corners
    for lo, hi in ((0.8, 1.4), (0.9, 1.1), (1.0, 1.0)):
        options = AdaptOptions(scale=(lo, hi), shift=0.0)
        boxes = np.stack([perturb_box(label_box, (160, 160), rng, options) for _ in range(200)])
        # the label box's corners are inclusive pixels (side = x1 - x0 + 1), a perturbed box's are continuous
        sides = (boxes[:, 2:] - boxes[:, :2]) / (label_box[2:] - label_box[:2] + 1)
        assert sides.min() >= lo - 1e-4 and sides.max() <= hi + 1e-4
        if hi > lo:
            assert sides.max() - sides.min() > 0.5 * (hi - lo)
    for scale in (("1.2", "0.9"), ("0", "1"), ("-1", "1")):
        refused = invoke("adapt", "--data", str(tmp_path), "--labelled", "1", "--cache", str(tmp_path),
                         "--box-scale", *scale, "--out", str(tmp_path / "out"))
        assert refused.returncode == 2 and "--box-scale" in refused.stderr and "Traceback" not in refused.stderr
        assert not (tmp_path / "out").exists()
