"""One preprocessing path: what a student sees in training is what it sees in inference and evaluation."""
from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from semisam_fast.data import make_phantom, open_dataset, split_cases
from semisam_fast.data.student_input import StudentInput
from semisam_fast.errors import UserError
from semisam_fast.evaluate import evaluate_cases
from semisam_fast.inference import predict_case
from semisam_fast.metrics import binary_metrics
from semisam_fast.train import build_trainer, preset
from semisam_fast.nets import build_student, student_input


def _affine_nifti(phantom_root, out, scale: float = 3.0, shift: float = 5.0):
    """The phantom (z-scored h5) as an nnU-Net NIfTI folder with intensities scale*x+shift (NIfTI is not z-scored)."""
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    ids = (phantom_root / "train.list").read_text().split()
    for cid in ids:
        with h5py.File(phantom_root / cid / "mri_norm2.h5") as f:
            image, label = f["image"][()], f["label"][()]
        nib.save(nib.Nifti1Image((scale * image + shift).astype(np.float32), np.eye(4)),
                 out / "imagesTr" / f"{cid}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), out / "labelsTr" / f"{cid}.nii.gz")
    return out


def test_student_evaluates_on_its_training_cases_near_its_training_dice(tmp_path):
    """Train on affinely shifted intensities; `evaluate` on the same cases must see what training saw. Before the
    single preprocessing path, evaluation fed raw intensities (mean ~5) to a student trained on z-scored ones."""
    root = _affine_nifti(make_phantom(tmp_path / "h5", n_cases=3, shape=(64, 64, 8), seed=2), tmp_path / "nii")
    config = preset("la-cpu", method="sup", iterations=80, in_plane=64, crop=48, labelled_batch=4, val_every=1000,
                    save_every=1000, student_kwargs={"base": 16})
    trainer = build_trainer(config, root, None, labeled=2, val=1, run_dir=tmp_path / "run", tensorboard=False)
    trainer.run(progress=False)
    # training Dice: the student on exactly the tensors it was trained from (the canvas slices and labels)
    store = trainer.labelled
    trainer.student.eval()
    with torch.no_grad():
        pred = trainer.student(store.images).argmax(1).numpy()
    train_dice = binary_metrics(pred, store.labels.numpy())["dice"]
    assert train_dice > 0.6, train_dice  # the student learnt something, so the comparison means something
    dataset = open_dataset(root)
    rows = evaluate_cases(trainer.student, trainer.checkpoint_config(), dataset, trainer.split.labeled,
                          progress=False)
    evaluated = float(np.mean([r["dice"] for r in rows]))
    assert evaluated > train_dice - 0.1, (evaluated, train_dice)


@pytest.mark.parametrize("student,config", [
    ("unet2d", {"student": "unet2d", "in_plane": 32}),
    ("vnet", {"student": "vnet", "patch": [16, 16, 16], "stride": [8, 8, 8]}),
])
def test_predict_case_is_invariant_to_positive_affine_intensity_changes(student, config):
    torch.manual_seed(0)
    net = build_student(student, **({"base": 4} if student == "unet2d" else {"n_filters": 2}))
    image = np.random.default_rng(0).standard_normal((24, 20, 16)).astype(np.float32) * 0.7 + 1.3
    base = predict_case(net, image, config)
    for a, b in ((3.0, 5.0), (0.25, -2.0)):
        np.testing.assert_allclose(predict_case(net, a * image + b, config), base, atol=2e-4)


def test_the_checkpoint_config_names_the_preprocessing(tmp_path):
    root = make_phantom(tmp_path / "p", n_cases=3, shape=(32, 32, 4), seed=0)
    config = preset("la-cpu", method="sup", iterations=1, in_plane=32, crop=32, labelled_batch=1,
                    student_kwargs={"base": 4})
    trainer = build_trainer(config, root, None, labeled=1, val=1, run_dir=tmp_path / "run", tensorboard=False)
    trainer.run(progress=False)
    saved = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)["config"]
    assert student_input(saved) == StudentInput("zscore", 32) == trainer.student_input
    case = open_dataset(root).load(split_cases(open_dataset(root).case_ids, 1, 1).labeled[0])
    torch.testing.assert_close(trainer.labelled.images, trainer.student_input.slices(case.image))
    with pytest.raises(UserError, match="normalization"):
        StudentInput("minmax-typo", 32)


def test_context_stacks_a_slices_neighbours_as_channels_repeated_at_the_ends():
    volume = np.random.default_rng(1).standard_normal((20, 24, 7)).astype(np.float32)
    flat, stacked = StudentInput(in_plane=16), StudentInput(in_plane=16, context=1)
    assert stacked.channels == 3 and flat.channels == 1
    plain, x = flat.slices(volume), stacked.slices(volume, [0, 3, 6])
    assert x.shape == (3, 3, 16, 16)
    torch.testing.assert_close(x[:, 1], plain[[0, 3, 6], 0])  # the slice itself in the middle
    torch.testing.assert_close(x[1, 0], plain[2, 0])  # then z - 1 and z + 1
    torch.testing.assert_close(x[1, 2], plain[4, 0])
    torch.testing.assert_close(x[0, 0], plain[0, 0])  # the first slice has no z - 1: itself again
    torch.testing.assert_close(x[2, 2], plain[6, 0])


def test_a_25d_student_trains_reloads_and_predicts_from_its_neighbours(tmp_path):
    """--context 1: the store, the network's input channels, the checkpoint and inference all take 3 slices."""
    from semisam_fast.nets import load_student

    root = make_phantom(tmp_path / "p", n_cases=3, shape=(32, 32, 6), seed=0)
    config = preset("la-cpu", method="sup", iterations=2, in_plane=32, crop=32, labelled_batch=2, context=1,
                    student_kwargs={"base": 4}, val_every=1000, save_every=1000)
    trainer = build_trainer(config, root, None, labeled=1, val=1, run_dir=tmp_path / "run", tensorboard=False)
    trainer.run(progress=False)
    assert trainer.labelled.images.shape[1:] == (3, 32, 32)
    net, saved = load_student(tmp_path / "run" / "checkpoints" / "final.pt")
    assert student_input(saved) == StudentInput("zscore", 32, context=1)
    assert net.enc[0][0].in_channels == 3
    image = open_dataset(root).load(open_dataset(root).case_ids[0]).image
    prob = predict_case(net, image, saved, slices=[0, 4])
    # by hand: the z-scored volume's slices (z - 1, z, z + 1), clamped, resized, through the net
    z = (image - image.mean(dtype=np.float64)) / image.std(dtype=np.float64)
    x = torch.from_numpy(np.stack([z[:, :, [0, 0, 1]], z[:, :, [3, 4, 5]]]).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        expected = torch.softmax(net(x), dim=1)[:, 1].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(prob, expected, atol=1e-5)


def test_context_with_a_3d_student_is_one_clear_error():
    with pytest.raises(UserError, match="--context"):
        preset("la-paper", method="sup", context=1)
