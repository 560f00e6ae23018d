"""Training: no label of an unlabelled case reaches training, exact resume, SAM-term geometry, the CLI."""
from __future__ import annotations

import json
import math
import shutil

import h5py
import numpy as np
import pytest
import torch

from semisam_fast.backends import TorchBackend
from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import make_phantom, open_dataset, split_cases
from semisam_fast.doctor import has_bf16_matmuls
from semisam_fast.errors import UserError
from semisam_fast.embed import build_cache
from semisam_fast.metrics import binary_metrics
from semisam_fast.models import get_spec, load_model
from semisam_fast.train import build_trainer, preset
from semisam_fast.geometry.augment import Transform2D, random_transform
from semisam_fast.train.mixing import copy_paste, random_boxes
from semisam_fast.train.sam_rounds import make_round, teacher_precision
from semisam_fast.train.sam_term import SamTeacher
from semisam_fast.data.student_input import StudentInput
from semisam_fast.geometry.slices2d import SliceStore

from .conftest import invoke, run_cli, whole_and_resumed


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """5 phantom cases: 2 labelled, 2 unlabelled, 1 validation; a tiny-SAM cache of the unlabelled ones."""
    root = make_phantom(tmp_path_factory.mktemp("small"), n_cases=5, shape=(64, 64, 8), seed=1)
    dataset = open_dataset(root)
    split = split_cases(dataset.case_ids, labeled=2, val=1)
    cache = tmp_path_factory.mktemp("cache")
    build_cache(dataset, TorchBackend(load_model("tiny")), cache, case_ids=split.unlabeled, batch=8, progress=False)
    return root, cache, split


def _config(method: str, iterations: int = 6, **overrides):
    # rounds every 2 iterations: a 6-iteration run makes two pseudo-label rounds (at 2 and 4); no agreement gate, as
    # the tiny random-init SAM never agrees with a teacher and the rounds would keep no SAM mask to test
    settings = dict(in_plane=64, crop=48, labelled_batch=2, unlabelled_batch=2, val_every=3, save_every=3,
                    unlabelled_cases=None, unlabelled_every=1, student_kwargs={"base": 8}, sam_ramp="none",
                    sam_weight=1.0, sam_round_every=2, sam_min_agreement=0.0)
    return preset("la-cpu", method=method, iterations=iterations, **{**settings, **overrides})


def _train(root, cache, out, method="semisam", until=None, iterations=6, **overrides):
    trainer = build_trainer(_config(method, iterations, **overrides), root, None, labeled=2, val=1, run_dir=out,
                            cache=cache, tensorboard=False)
    trainer.run(until=until, progress=False)
    return trainer


def _scrambled_copy(root, out, cases):
    """A copy of the phantom whose `cases` have random labels."""
    shutil.copytree(root, out)
    rng = np.random.default_rng(0)
    for case in cases:
        with h5py.File(out / case / "mri_norm2.h5", "r+") as f:
            f["label"][...] = rng.integers(0, 2, f["label"].shape, dtype=np.uint8)
    return out


def test_unlabelled_labels_never_reach_training(small, tmp_path):
    """Scramble the labels of the unlabelled cases on disk: the trained weights are bit-for-bit the same."""
    root, cache, split = small
    scrambled = _scrambled_copy(root, tmp_path / "scrambled", split.unlabeled)
    a = _train(root, cache, tmp_path / "a")
    b = _train(scrambled, cache, tmp_path / "b")
    assert a.unlabelled.labels is None
    assert a.sam_table is not None and bool(a.sam_table["valid"].any())  # the rounds did make SAM targets
    for key, value in a.sam_table.items():
        assert torch.equal(value, b.sam_table[key]), key
    assert a.history and a.history == b.history  # the same validation Dice at every check
    for (name, pa), pb in zip(a.student.state_dict().items(), b.student.state_dict().values()):
        assert torch.equal(pa, pb), name
    # ...while scrambling a LABELLED case does change them (the test can see a leak if there were one)
    leaky = _scrambled_copy(root, tmp_path / "leaky", split.labeled[:1])
    c = _train(leaky, cache, tmp_path / "c")
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.student.state_dict().values(),
                                                         c.student.state_dict().values()))


def test_round_teacher_precision(small, tmp_path):
    # auto: bf16 where this CPU multiplies bf16 in hardware, else fp32; never bf16 on a GPU by default
    assert teacher_precision("auto", "cpu") == ("bf16" if has_bf16_matmuls() else "fp32")
    assert teacher_precision("auto", "cuda") == "fp32"
    assert teacher_precision("bf16", "cpu") == "bf16" and teacher_precision("fp32", "cpu") == "fp32"
    with pytest.raises(UserError, match="sam-teacher-precision"):
        _config("semisam", sam_teacher_precision="fp16")
    root, cache, _ = small
    for setting in ("bf16", "fp32"):
        trainer = _train(root, cache, tmp_path / setting, iterations=3, sam_teacher_precision=setting)
        assert trainer.round_logs["sam_teacher_bf16"] == float(setting == "bf16")
        assert trainer.sam_table is not None and bool(trainer.sam_table["valid"].any())


def test_bf16_training_forwards(small, tmp_path):
    """--train-precision bf16: the student's and the teacher's convolutions run in bfloat16 (autocast), the logits and
    so every loss come back float32, and the run trains to different weights than fp32's."""
    root, cache, _ = small
    fp32 = _train(root, cache, tmp_path / "fp32", "uamt", iterations=2)
    bf16 = _train(root, cache, tmp_path / "bf16", "uamt", iterations=2, train_precision="bf16")
    seen = []
    conv = next(m for m in bf16.student.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    try:
        logits = bf16.forward(bf16.model, torch.zeros(1, 1, 48, 48))
    finally:
        handle.remove()
    assert seen == [torch.bfloat16] and logits.dtype == torch.float32
    assert all(math.isfinite(h["val_dice"]) for h in bf16.history)
    assert any(not torch.equal(a, b) for a, b in zip(fp32.student.state_dict().values(),
                                                     bf16.student.state_dict().values()))
    with pytest.raises(UserError, match="train-precision"):
        _config("sup", train_precision="fp16")


@pytest.mark.parametrize("method,mode,options", [
    ("semisam", "rounds", {}), ("semisam", "step", {}),
    ("uamt", "rounds", {"student_batch": "split", "teacher_mode": "train"}),
    ("mt", "rounds", {"train_precision": "bf16"}),
])
def test_stopped_and_resumed_run_equals_uninterrupted(small, tmp_path, method, mode, options):
    root, cache, _ = small
    whole = _train(root, cache, tmp_path / "whole", method, sam_mode=mode, **options)
    _train(root, cache, tmp_path / "split", method, until=3, sam_mode=mode, **options)
    resumed = _train(root, cache, tmp_path / "split", method, sam_mode=mode, **options)
    if method == "semisam" and mode == "rounds":  # the round at 2 was stored in the checkpoint at 3
        assert whole.sam_table is not None
        for key, value in whole.sam_table.items():
            assert torch.equal(value, resumed.sam_table[key]), key
    assert resumed.iteration == whole.iteration == 6
    for key in ("student", "teacher"):
        for (name, x), y in zip(whole.state()[key].items(), resumed.state()[key].values()):
            assert torch.equal(x, y), (key, name)
    assert whole.history == resumed.history


def test_geometry_round_trip():
    generator = torch.Generator().manual_seed(0)
    canvas = torch.arange(64 * 64, dtype=torch.float32).reshape(64, 64)
    for _ in range(20):
        g = random_transform(64, 48, generator)
        crop = g.apply(canvas)
        back = g.invert(crop, 64)
        window = back[g.y0:g.y0 + 48, g.x0:g.x0 + 48]
        assert torch.equal(window, canvas[g.y0:g.y0 + 48, g.x0:g.x0 + 48])
        assert back.sum() == window.sum()
    # a known case: flip then a quarter turn
    g = Transform2D(0, 0, 2, True, 1)
    assert g.apply(torch.tensor([[1.0, 2.0], [3.0, 4.0]])).tolist() == [[1.0, 3.0], [2.0, 4.0]]


def test_sam_targets_follow_the_augmentation(tmp_path):
    """Student 'prediction' = the augmented label: SAM's target, mapped back into the same augmented crop,
    must overlap it well. Catches (row, column) / flip / rotation / scaling mistakes in the prompt mapping."""
    root = make_phantom(tmp_path / "p", n_cases=1, shape=(96, 80, 6), seed=3)
    dataset = open_dataset(root)
    backend = TorchBackend(load_model("litemedsam"))
    build_cache(dataset, backend, tmp_path / "c", batch=6, progress=False)
    store = SliceStore(dataset, dataset.case_ids, StudentInput(in_plane=96), labelled=True)
    sam = SamTeacher(backend, EmbeddingCache(tmp_path / "c"), margin=3)
    generator = torch.Generator().manual_seed(0)
    index = [i for i in range(len(store)) if store.labels[i].sum() > 50]
    transforms = [random_transform(96, 64, generator) for _ in index]
    probs = torch.stack([g.apply(store.labels[i].float()) for g, i in zip(transforms, index)])
    result = sam.targets(probs, transforms, [store.refs[i] for i in index], 96)
    assert bool(result.valid.all())
    dice = [binary_metrics(m.numpy() > 0, p.numpy() > 0)["dice"] for m, p in zip(result.masks, probs)]
    assert np.mean(dice) > 0.75, dice


def test_resident_cache_gives_the_same_sam_targets(tmp_path):
    """The GPU path keeps each case's embeddings in device memory (fp16, as stored): same targets, bit for bit."""
    root = make_phantom(tmp_path / "p", n_cases=1, shape=(96, 80, 6), seed=3)
    dataset = open_dataset(root)
    backend = TorchBackend(load_model("litemedsam"))
    build_cache(dataset, backend, tmp_path / "c", batch=6, progress=False)
    store = SliceStore(dataset, dataset.case_ids, StudentInput(in_plane=96), labelled=True)
    index = [i for i in range(len(store)) if store.labels[i].sum() > 50]
    transforms = [random_transform(96, 64, torch.Generator().manual_seed(i)) for i in index]
    probs = torch.stack([g.apply(store.labels[i].float()) for g, i in zip(transforms, index)])
    refs = [store.refs[i] for i in index]
    results = [SamTeacher(backend, EmbeddingCache(tmp_path / "c"), margin=3, resident=resident)
               .targets(probs, transforms, refs, 96) for resident in (False, True)]
    assert torch.equal(results[0].masks, results[1].masks) and torch.equal(results[0].valid, results[1].valid)
    assert bool(results[0].valid.any())


def test_cli_train_and_evaluate(small, tmp_path):
    root, cache, _ = small
    out = tmp_path / "run"
    args = ["train", "--data", str(root), "--labeled", "2", "--val", "1", "--method", "mt", "--iterations", "2",
            "--out", str(out)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert (out / "checkpoints" / "final.pt").is_file() and (out / "run.json").is_file()
    assert list((out / "tensorboard").glob("events.*"))
    result = invoke("evaluate", "--run", str(out))
    assert result.returncode == 0, result.stderr
    payload = json.loads((out / "eval.json").read_text())
    assert {"dice", "jaccard", "hd95", "asd"} <= set(payload["summary"])
    assert (out / "eval.csv").is_file()
    bad = invoke("train", "--data", str(root), "--labeled", "2", "--val", "1", "--method", "semisam",
                  "--iterations", "2", "--out", str(tmp_path / "r2"))
    assert bad.returncode == 2 and "needs --cache" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("method,mode", [("uamt", "rounds"), ("semisam", "rounds"), ("semisam", "step")])
def test_vnet_3d_path_runs_and_resumes(small, tmp_path, method, mode):
    """la-paper's V-Net path (3D patches, per-slice SAM term) on a tiny volume: it trains, validates with the
    sliding window, and resumes exactly."""
    root, cache, _ = small

    def make(out):
        config = preset("la-paper", method=method, iterations=3, patch=[32, 32, 16], labelled_batch=1,
                        unlabelled_batch=1, student_kwargs={"n_filters": 4}, uamt_samples=2, val_every=3,
                        save_every=1, sam_ramp="none", sam_weight=1.0, sam_mode=mode, sam_round_every=1)
        return build_trainer(config, root, None, labeled=2, val=1, run_dir=out, cache=cache, tensorboard=False)

    whole, _ = whole_and_resumed(make, tmp_path, until=1)
    assert whole.history and 0.0 <= whole.history[-1]["val_dice"] <= 1.0
    if mode == "rounds" and method == "semisam":
        assert whole.sam_table is not None and set(whole.sam_table) <= set(whole.split.unlabeled)
        for case_id, part in whole.sam_table.items():  # one whole-volume target per unlabelled case
            shape = whole.unlabelled.images[whole.unlabelled.case_ids.index(case_id)].shape
            assert part["masks"].shape == shape and part["valid"].shape == (shape[2],)


@pytest.mark.slow  # the encoder in every step (~9 s)
def test_sam_online_on_volumes_of_different_sizes(tmp_path):
    """--sam-online encodes slices of several cases in one call; LA volumes differ in size (it used to fail on LA
    with 'stack expects each tensor to be equal size' while passing on same-sized phantoms)."""
    mixed = tmp_path / "mixed"
    for name, shape, seed in (("a", (64, 64, 6), 1), ("b", (80, 72, 6), 2)):
        made = make_phantom(tmp_path / name, n_cases=3, shape=shape, seed=seed)
        for i in range(3):
            shutil.copytree(made / f"phantom_{i:02d}", mixed / f"{name}{i}")
    (mixed / "train.list").write_text("a0\na1\na2\nb0\nb1\n")  # labelled a0 a1; unlabelled a2 b0; validation b1
    config = _config("semisam", 3, sam_online=True, sam_mode="step", unlabelled_batch=4)
    trainer = build_trainer(config, mixed, None, labeled=2, val=1, run_dir=tmp_path / "run", tensorboard=False)
    sizes = {(ref.height, ref.width) for ref in trainer.unlabelled.refs}
    assert sizes == {(64, 64), (80, 72)}
    result = trainer.run(progress=False)
    assert result["iteration"] == 3 and np.isfinite(result["val_dice"])


def test_sam_targets_3d_follow_the_patch_window(tmp_path):
    """3D step term: a patch's 'prediction' = its label window; SAM's masks, made on whole slices, must come back
    into the same window (offsets in y, x and z), and slices outside the volume get no target."""
    root = make_phantom(tmp_path / "p", n_cases=1, shape=(96, 80, 6), seed=3)
    dataset = open_dataset(root)
    backend = TorchBackend(load_model("litemedsam"))
    build_cache(dataset, backend, tmp_path / "c", batch=6, progress=False)
    case = dataset.load(dataset.case_ids[0])
    h, w, depth = case.label.shape
    ys, xs, _ = np.nonzero(case.label)
    y0, x0, z0 = int(max(0, min(ys.mean() - 32, h - 64))), int(max(0, min(xs.mean() - 32, w - 64))), 2
    window = case.label[y0:y0 + 64, x0:x0 + 64, z0:]
    patch = torch.zeros(1, 64, 64, 8)
    patch[0, :, :, : window.shape[2]] = torch.from_numpy(window).float()  # slices past the volume stay empty
    sam = SamTeacher(backend, EmbeddingCache(tmp_path / "c"), margin=3)
    masks, valid = sam.targets_3d(patch, [(case.case_id, z0, y0, x0, h, w, depth)])
    assert masks.shape == patch.shape and valid.shape == (1, 8)
    inside = depth - z0
    assert not bool(valid[0, inside:].any()) and not bool(masks[0, :, :, inside:].any())
    prompted = [z for z in range(inside) if window[:, :, z].sum() > 50]
    assert prompted and bool(valid[0, prompted].all())
    dice = [binary_metrics(masks[0, :, :, z].numpy() > 0, window[:, :, z] > 0)["dice"] for z in prompted]
    assert np.mean(dice) > 0.75, dice


def test_sam_ramp_and_prompt_source(small, tmp_path):
    """--sam-ramp down gives the SAM term its full weight first and ramps it down; --sam-prompt-from teacher
    prompts SAM from the EMA teacher's prediction, which trains different weights than the student's prompts."""
    root, cache, _ = small
    weights = {}
    for ramp in ("up", "down"):
        trainer = build_trainer(_config("semisam", 12, sam_mode="step", sam_ramp=ramp, consistency_rampup=1.0),
                                root, None, labeled=2, val=1, run_dir=tmp_path / ramp, cache=cache, tensorboard=False)
        weights[ramp] = [trainer.step()["w_sam"] for _ in range(12)]
    assert weights["up"] == sorted(weights["up"]) and weights["up"][0] < weights["up"][-1]
    assert weights["down"] == sorted(weights["down"], reverse=True) and weights["down"][0] > weights["down"][-1]
    assert weights["down"][0] == pytest.approx(1.0)  # sam_weight 1.0, at full strength from the start

    for source in ("student", "teacher"):  # the student sees nothing, the teacher a blob: only one of them prompts
        trainer = build_trainer(_config("semisam", 3, sam_mode="step", sam_prompt_from=source), root, None, labeled=2,
                                val=1, run_dir=tmp_path / source, cache=cache, tensorboard=False)
        unl = trainer._draw(trainer.unlabelled, 2, trainer.own_generator)
        background = torch.zeros(2, 2, *unl.images.shape[-2:])
        background[:, 0] = 10.0
        blob = background.clone()
        blob[:, 0, 16:32, 16:32], blob[:, 1, 16:32, 16:32] = 0.0, 10.0
        _, logs = trainer.method.step_term(trainer, background, blob, unl)
        assert logs["sam_prompted"] == (1.0 if source == "teacher" else 0.0)


def test_point_prompts_in_the_training_step(small, tmp_path):
    """SAM ViT-B/L/H take points (`ModelSpec.prompt`): the positive point, taken back from SAM's input frame to the
    slice's pixels, falls inside the predicted object (not its transpose), a negative and the padding point follow,
    and the step's SAM term prompts every slice with foreground with points. The real decoder runs; the test only
    records what it was given."""
    root, cache, _ = small
    trainer = build_trainer(_config("semisam", 2, sam_mode="step"), root, None, labeled=2, val=1,
                            run_dir=tmp_path / "points", cache=cache, tensorboard=False)
    sam = trainer.sam
    sam.prompt = "point"  # the tiny model is registered with boxes; the point path is the ViT models'
    seen, decode = [], sam.backend.decode
    sam.backend.decode = lambda emb, coords, labels: seen.append((coords, labels)) or decode(emb, coords, labels)

    refs = trainer.unlabelled.refs[:2]
    canvas = torch.zeros(2, 64, 64)
    canvas[:, 16:32, 40:56] = 0.9  # rows 16-31, columns 40-55 of a 64x64 slice (the canvas is the slice here)
    canvas[:, 16:20, 40:44] = 0.0  # a notch: background inside the box, where the negative point goes
    masks, valid = sam.canvas_masks(canvas, refs)
    assert bool(valid.all()) and masks.shape == canvas.shape
    coords, labels = seen[-1]
    assert coords.shape == (2, 1, 3, 2) and labels[:, 0].tolist() == [[1, 0, -1]] * 2
    to_slice = 64 / get_spec("tiny").image_size  # SAM's input is the slice scaled to image_size
    x, y = (coords[:, 0, 0] * to_slice).unbind(-1)
    assert bool(((x >= 40) & (x < 56) & (y >= 16) & (y < 32)).all()), coords[:, 0, 0]
    assert not bool(((x < 44) & (y < 20)).any())  # the positive is not in the notch
    x, y = (coords[:, 0, 1] * to_slice).unbind(-1)
    assert bool(((x >= 40) & (x < 44) & (y >= 16) & (y < 20)).all()), coords[:, 0, 1]  # the negative is

    unl = trainer._draw(trainer.unlabelled, 2, trainer.own_generator)
    blob = torch.zeros(2, 2, *unl.images.shape[-2:])
    blob[:, 0] = 10.0
    blob[:, 0, 16:32, 16:32], blob[:, 1, 16:32, 16:32] = 0.0, 10.0
    seen.clear()
    loss, logs = trainer.method.step_term(trainer, blob, blob, unl)
    assert logs["sam_prompted"] == 1.0 and torch.isfinite(loss)
    # a square blob leaves no background inside its box: the negative becomes SAM's "not a point"
    assert seen and all(lab[:, 0].tolist() == [[1, -1, -1]] * len(lab) for _, lab in seen)


def test_build_trainer_refusals(small, tmp_path):
    root, cache, _ = small
    with pytest.raises(UserError, match="needs --cache"):
        build_trainer(_config("semisam"), root, None, labeled=2, val=1, run_dir=tmp_path / "a", tensorboard=False)
    with pytest.raises(UserError, match="cache lacks"):  # the tiny cache holds only the split's unlabelled cases
        build_trainer(_config("semisam"), root, None, labeled=1, val=1, run_dir=tmp_path / "b", cache=cache,
                      tensorboard=False)
    build_trainer(_config("mt"), root, None, labeled=2, val=1, run_dir=tmp_path / "c", tensorboard=False)
    with pytest.raises(UserError, match="other settings"):
        build_trainer(_config("mt", seed=1), root, None, labeled=2, val=1, run_dir=tmp_path / "c", tensorboard=False)


def test_a_run_recorded_before_a_setting_existed_resumes_at_its_default(small, tmp_path):
    """run.json of an older semisam-fast lacks settings added since (here --context): at their default they mean
    what the run did, so the rerun is not refused; any other value still is."""
    root, _, _ = small
    build_trainer(_config("mt"), root, None, labeled=2, val=1, run_dir=tmp_path / "r", tensorboard=False)
    record = json.loads((tmp_path / "r" / "run.json").read_text())
    del record["config"]["context"]
    (tmp_path / "r" / "run.json").write_text(json.dumps(record))
    build_trainer(_config("mt"), root, None, labeled=2, val=1, run_dir=tmp_path / "r", tensorboard=False)
    with pytest.raises(UserError, match="context: the run has 0, now 1"):
        build_trainer(_config("mt", context=1), root, None, labeled=2, val=1, run_dir=tmp_path / "r",
                      tensorboard=False)


def test_prompt_run(small, tmp_path, monkeypatch):
    """--sam-prompt-run: a finished run's network prompts one round, made after the first step from that network's
    prediction (not the EMA teacher's); an unlabelled case's label still never counts; a prompt run trained on other
    labels than this run's is refused; it resumes exactly."""
    root, cache, split = small
    prompt = tmp_path / "prompt"  # 20 steps at a high rate: a network whose masks are neither empty nor everything
    build_trainer(_config("sup", 20, lr=1e-2), root, None, labeled=2, val=1, run_dir=prompt,
                  tensorboard=False).run(progress=False)
    trainer = build_trainer(_config("semisam", sam_prompt_run=str(prompt)), root, None, labeled=2, val=1,
                            run_dir=tmp_path / "a", cache=cache, tensorboard=False)
    rounds = []
    trainer.on_round.append(rounds.append)
    trainer.run(until=1, progress=False)
    assert len(rounds) == 1 and trainer.sam_table is not None

    def round_of(net, config):
        return make_round(net, trainer.unlabelled_volumes, config, trainer.sam.cache, trainer.sam.backend,
                          trainer.config.targets, progress=False, precision=trainer.round_precision)

    made = round_of(*trainer.prompt_teacher)
    expected = trainer.geometry.round_table(made, trainer.unlabelled, trainer.student_input)
    for key, value in expected.items():
        assert torch.equal(value, trainer.sam_table[key]), key
    own = round_of(trainer.teacher, trainer.settings)  # what the EMA teacher would have prompted
    assert any(not np.array_equal(made[c].teacher, own[c].teacher) for c in made)
    assert all(0 < made[c].teacher.mean() < 1 for c in made)
    trainer.run(progress=False)
    assert len(rounds) == 1  # the network does not change: no second round
    scrambled = _scrambled_copy(root, tmp_path / "scrambled", split.unlabeled)
    blind = _train(scrambled, cache, tmp_path / "blind", sam_prompt_run=str(prompt))
    for (name, a), b in zip(trainer.student.state_dict().items(), blind.student.state_dict().values()):
        assert torch.equal(a, b), name
    _train(root, cache, tmp_path / "split", until=3, sam_prompt_run=str(prompt))
    monkeypatch.chdir(tmp_path)  # the run records the prompt run's absolute path: a relative one resumes it too
    resumed = _train(root, cache, tmp_path / "split", sam_prompt_run="prompt")
    for (name, a), b in zip(trainer.state()["student"].items(), resumed.state()["student"].values()):
        assert torch.equal(a, b), name
    wider = tmp_path / "wider"  # its third labelled case is one of this run's unlabelled ones
    build_trainer(_config("sup", 1), root, None, labeled=3, val=1, run_dir=wider, tensorboard=False).run(
        progress=False)
    with pytest.raises(UserError, match="trained on the labels of"):
        _train(root, cache, tmp_path / "refused", sam_prompt_run=str(wider))
    with pytest.raises(UserError, match="sam-prompt-run"):
        _config("mt", sam_prompt_run=str(prompt)).check()
    result = invoke("train", "--data", str(root), "--labelled", "2", "--val", "1", "--method", "semisam", "--cache",
                    str(cache), "--sam-prompt-run", str(tmp_path / "missing"), "--out", str(tmp_path / "cli"))
    assert result.returncode == 2 and "run folder not found" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_copy_paste_pairs():
    """mixing.copy_paste: each direction's image and target come from the same sample inside and outside the box,
    and an unlabelled sample without a target weighs nothing where it shows."""
    generator = torch.Generator().manual_seed(0)
    n, side = 3, 48
    box = random_boxes((n, side, side), generator)
    assert box.dtype == torch.bool and all(int(b.sum()) == 32 * 32 for b in box)  # 2/3 of 48 a side
    assert len({tuple(torch.nonzero(b)[0].tolist()) for b in box}) > 1  # at different places
    images_u, images_l = torch.full((n, 1, side, side), 1.0), torch.full((n, 1, side, side), 2.0)
    targets_u = torch.ones(n, side, side)
    labels_l = torch.zeros(n, side, side, dtype=torch.bool)
    valid_u = torch.tensor([True, False, True])
    images, targets, weights = copy_paste(images_u, targets_u, valid_u, images_l, labels_l, box)
    assert images.shape == (2 * n, 1, side, side) and targets.shape == weights.shape == (2 * n, side, side)
    # unlabelled box in the labelled crop, then the labelled box in the unlabelled crop
    assert torch.equal(images[:n, 0] == 1.0, box) and torch.equal(targets[:n] == 1.0, box)
    assert torch.equal(images[n:, 0] == 2.0, box) and torch.equal(targets[n:] == 0.0, box)
    assert torch.equal(weights[1] == 0, box[1]) and torch.equal(weights[n + 1] == 0, ~box[1])
    assert bool((weights[[0, 2, n, n + 2]] == 1).all())


def test_copy_paste_training(small, tmp_path):
    """--sam-mix copy-paste: the step adds the SAM loss on pasted pairs once a round has made targets, it trains to
    other weights than without it, never reads an unlabelled case's label, resumes exactly, and is refused for step
    mode and for a 3D student."""
    root, cache, split = small
    plain = _train(root, cache, tmp_path / "plain")
    mixed = _train(root, cache, tmp_path / "mixed", sam_mix="copy-paste")
    assert mixed.sam_table is not None
    early = _train(root, cache, tmp_path / "early", until=1, sam_mix="copy-paste")
    assert early.sam_table is None and "loss_sam_mix" not in early.step()  # no round yet: nothing to paste
    late = _train(root, cache, tmp_path / "late", until=3, sam_mix="copy-paste")
    logs = late.step()
    assert late.sam_table is not None and math.isfinite(logs["loss_sam_mix"]) and logs["w_sam_mix"] == 1.0
    assert any(not torch.equal(a, b) for a, b in zip(plain.student.state_dict().values(),
                                                     mixed.student.state_dict().values()))
    scrambled = _scrambled_copy(root, tmp_path / "scrambled", split.unlabeled)
    blind = _train(scrambled, cache, tmp_path / "blind", sam_mix="copy-paste")
    for (name, a), b in zip(mixed.student.state_dict().items(), blind.student.state_dict().values()):
        assert torch.equal(a, b), name
    _train(root, cache, tmp_path / "split", until=3, sam_mix="copy-paste")
    resumed = _train(root, cache, tmp_path / "split", sam_mix="copy-paste")
    for (name, a), b in zip(mixed.state()["student"].items(), resumed.state()["student"].values()):
        assert torch.equal(a, b), name
    assert mixed.history == resumed.history
    with pytest.raises(UserError, match="sam-mix"):
        _config("semisam", sam_mix="copy-paste", sam_mode="step").check()
    with pytest.raises(UserError, match="sam-mix"):
        preset("la-paper", method="semisam", sam_mix="copy-paste").check()
