"""Reliability, round 2 (issue 26): case ids that are names, outputs that never overwrite inputs, bad input as one
`error:` line and exit 2, a cache and artefacts that prove what they are, Ctrl-C at a step boundary, one process per
output folder. Each case runs the real entry point in-process (`invoke`) unless the process itself is the point."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from semisam_fast.cache import EmbeddingCache
from semisam_fast.data.student_input import StudentInput

from .conftest import invoke
from .test_failure_modes import _blob, _nifti_case, user_error


@pytest.fixture(scope="module")
def checkpoint(phantom, tmp_path_factory) -> Path:
    """final.pt of a finished 2-iteration sup run on the phantom."""
    run = tmp_path_factory.mktemp("rel") / "run"
    result = invoke("train", "--data", str(phantom), "--labeled", "2", "--val", "1", "--method", "sup",
                    "--iterations", "2", "--out", str(run))
    assert result.returncode == 0, result.stderr
    return run / "checkpoints" / "final.pt"


def _png_set(root: Path, names: list[str], masks: bool = True) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name in names:
        image = (rng.random((48, 48)) * 80).astype(np.uint8)
        image[12:30, 14:34] += 120
        Image.fromarray(image).save(root / "images" / f"{name}.png")
        if masks:
            (root / "masks").mkdir(exist_ok=True)
            mask = np.zeros((48, 48), np.uint8)
            mask[12:30, 14:34] = 255
            Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


def _h5_case(root: Path, case: str, image: np.ndarray, label: np.ndarray, spacing=None) -> None:
    (root / case).mkdir(parents=True, exist_ok=True)
    with h5py.File(root / case / "mri_norm2.h5", "w") as f:
        f.create_dataset("image", data=image.astype(np.float32))
        f.create_dataset("label", data=label.astype(np.uint8))
        if spacing is not None:
            f.attrs["spacing"] = np.asarray(spacing, dtype=np.float64)


# ---- 1. case ids are names ----------------------------------------------------------------------------------------
def test_case_ids_are_names_not_paths(tmp_path):
    data = _png_set(tmp_path / "data", ["a", "b"])
    other = _png_set(tmp_path / "other", ["case0"])
    before = (other / "images" / "case0.png").read_bytes()
    out = tmp_path / "out"
    for name in ("../../other/images/case0", str(other / "images" / "case0"), "./a"):
        listed = tmp_path / "list.txt"
        listed.write_text(f"a\n{name}\n")
        user_error(invoke("pseudo-label", "--data", str(data), "--list", str(listed), "--model", "tiny",
                          "--out", str(out)), "not a plain name", "line 2")
    assert (other / "images" / "case0.png").read_bytes() == before and not out.exists()
    listed.write_text("a\n./a\nb\n")  # a second spelling of a training case would slip into validation
    user_error(invoke("train", "--data", str(data), "--list", str(listed), "--labeled", "1", "--val", "1",
                      "--method", "sup", "--out", str(tmp_path / "run")), "./a")


def test_ids_equal_after_sanitising_keep_their_own_shards(tmp_path):
    data = _png_set(tmp_path / "data", ["a b", "a_b"])
    cache = tmp_path / "cache"
    result = invoke("embed", "--data", str(data), "--model", "tiny", "--cache", str(cache))
    assert result.returncode == 0, result.stderr
    store = EmbeddingCache(cache)
    assert store.case_ids == ["a b", "a_b"] and store.verify() == []
    assert len(list((cache / "shards").glob("*.npy"))) == 2  # each its own shard


# ---- 2. outputs never overwrite inputs ----------------------------------------------------------------------------
def test_outputs_never_overwrite_inputs(checkpoint, phantom, tmp_path):
    data = _png_set(tmp_path / "data", ["a", "b"])
    images = {p: p.read_bytes() for p in (data / "images").iterdir()}
    user_error(invoke("pseudo-label", "--data", str(data), "--model", "tiny", "--out", str(data / "images")),
               "overwrite", "a.png")
    user_error(invoke("pseudo-label", "--data", str(data), "--model", "tiny", "--prompt", "mask-box", "--masks",
                      str(data / "masks"), "--out", str(data / "masks")), "overwrite")
    assert {p: p.read_bytes() for p in (data / "images").iterdir()} == images

    ckpt = tmp_path / "final.pt"
    shutil.copy(checkpoint, ckpt)
    before = ckpt.read_bytes()
    user_error(invoke("evaluate", "--checkpoint", str(ckpt), "--data", str(phantom), "--out", str(ckpt)),
               "overwrite", "final.pt")
    assert ckpt.read_bytes() == before
    user_error(invoke("evaluate", "--checkpoint", str(ckpt), "--data", str(phantom), "--out", str(tmp_path / "r.csv")),
               "ending in .json")
    assert not (tmp_path / "r.csv").exists()


# ---- 9. bad input: exit 2, one line ---------------------------------------------------------------------------------
def test_bad_input_is_exit_2_not_a_bug(checkpoint, phantom, tmp_path):
    image, label = _blob((32, 32, 4))
    empty = tmp_path / "empty"
    _h5_case(empty, "flat", np.zeros((32, 32, 0)), np.zeros((32, 32, 0)))
    _h5_case(empty, "ok", image, label)
    user_error(invoke("evaluate", "--checkpoint", str(checkpoint), "--data", str(empty), "--out",
                      str(tmp_path / "e.json")), "flat", "no voxels")

    a_file = tmp_path / "a-file"
    a_file.write_text("keep me")
    train = ["train", "--data", str(phantom), "--labeled", "2", "--val", "1", "--method", "sup", "--iterations", "2"]
    user_error(invoke(*train, "--out", str(a_file)), "a-file")
    user_error(invoke("pseudo-label", "--data", str(phantom), "--model", "tiny", "--out", str(a_file)))
    assert a_file.read_text() == "keep me"
    for lr in ("inf", "nan", "1e38"):
        user_error(invoke(*train, "--lr", lr, "--out", str(tmp_path / "r")), "--lr")
    user_error(invoke(*train, "--seed", str(10**23), "--out", str(tmp_path / "r")), "--seed")
    user_error(invoke(*train, "--seed", "1e23", "--out", str(tmp_path / "r")), "--seed")

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, run / "checkpoints" / "final.pt")
    (run / "run.json").write_text(json.dumps({"data": 123, "val_cases": ["phantom_05"]}))
    user_error(invoke("evaluate", "--run", str(run)), "'data'")

    state = torch.load(checkpoint, weights_only=True)
    state["config"]["student_kwargs"] = {"base": -1}
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    user_error(invoke("evaluate", "--checkpoint", str(bad), "--data", str(phantom), "--out", str(tmp_path / "b.json")),
               "student_kwargs")

    user_error(invoke("embed", "--data", str(phantom), "--model", "tiny", "--cache", str(tmp_path / "c"),
                      env={"WORLD_SIZE": "2"}), "WORLD_SIZE", "torchrun")


# ---- 8. spacing -----------------------------------------------------------------------------------------------------
def test_spacing_must_be_finite_and_positive(checkpoint, tmp_path):
    image, label = _blob((32, 32, 4))
    zero = tmp_path / "zero"
    _h5_case(zero, "z", image, label, spacing=(0.0, 0.0, 0.0))
    out = str(tmp_path / "e.json")
    user_error(invoke("evaluate", "--checkpoint", str(checkpoint), "--data", str(zero), "--out", out),
               "case z", "finite and positive")
    result = invoke("evaluate", "--checkpoint", str(checkpoint), "--data", str(zero), "--out", out,
                    "--spacing", "1,1,2")  # the user's spacing replaces the broken header
    assert result.returncode == 0, result.stderr
    for bad in ("nan,1,1", "inf,1,1", "0,1,1", "-1,1,1"):
        user_error(invoke("evaluate", "--checkpoint", str(checkpoint), "--data", str(zero), "--out", out,
                          "--spacing", bad), "--spacing")


# ---- 7. normalisation ---------------------------------------------------------------------------------------------
def test_normalisation_survives_huge_finite_values(checkpoint, tmp_path):
    image, label = _blob((32, 32, 4))
    zscore = StudentInput("zscore", 32)
    np.testing.assert_allclose(zscore.normalize(image * 1e30), zscore.normalize(image), rtol=1e-4, atol=1e-4)

    dice = []
    for scale in (1.0, 1e30):
        data = tmp_path / f"scaled_{scale:g}"
        _nifti_case(data, "a", image * scale, label)
        out = tmp_path / f"e_{scale:g}.json"
        result = invoke("evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out))
        assert result.returncode == 0, result.stderr
        dice.append(json.loads(out.read_text())["cases"][0]["dice"])
    assert dice[0] == pytest.approx(dice[1], abs=1e-6)  # scale-invariant, as README says

    huge = image.astype(np.float32).copy()
    huge[0, 0, :] = 3e38
    huge[1, 1, :] = -3e38
    data = tmp_path / "huge"
    _nifti_case(data, "a", huge, label)
    cache = tmp_path / "cache"
    result = invoke("embed", "--data", str(data), "--model", "tiny", "--cache", str(cache))
    assert result.returncode == 0, result.stderr
    assert torch.isfinite(EmbeddingCache(cache).get("a", [0, 1, 2, 3])).all()


# ---- 4. the cache checks its files --------------------------------------------------------------------------------
@pytest.fixture
def small_cache(phantom, tmp_path) -> tuple[Path, list[str]]:
    cache = tmp_path / "cache"
    listed = tmp_path / "one.list"
    listed.write_text(sorted(p.name for p in phantom.iterdir() if p.is_dir())[0] + "\n")
    base = ["--data", str(phantom), "--list", str(listed)]
    result = invoke("embed", *base, "--model", "tiny", "--every", "4", "--cache", str(cache))
    assert result.returncode == 0, result.stderr
    return cache, base


def test_cache_checks_shard_size_and_checksum_on_first_open(small_cache, tmp_path):
    cache, base = small_cache
    shard = sorted((cache / "shards").glob("*.npy"))[0]
    good = shard.read_bytes()
    label = ["pseudo-label", "--cache", str(cache), *base, "--out", str(tmp_path / "p")]

    shard.write_bytes(b"")  # 0 bytes: neither "interrupted" nor "already cached"
    user_error(invoke(*label), "truncated or corrupt", shard.name)
    user_error(invoke("embed", *base, "--model", "tiny", "--every", "4", "--cache", str(cache)),
               "truncated or corrupt", shard.name)

    flipped = bytearray(good)
    flipped[-7] ^= 0x40  # same size, one bit of the data
    shard.write_bytes(bytes(flipped))
    user_error(invoke(*label), "checksum", shard.name)

    shard.write_bytes(good)
    assert invoke(*label).returncode == 0


def test_cache_records_that_are_not_embeds_are_refused(small_cache, tmp_path):
    cache, base = small_cache
    label = ["pseudo-label", "--cache", str(cache), *base, "--out", str(tmp_path / "p")]
    sidecar = sorted((cache / "shards").glob("*.json"))[0]
    text = sidecar.read_text()
    (cache / "index.json").unlink()
    sidecar.write_text("{}")
    user_error(invoke(*label), "corrupt", sidecar.name)
    sidecar.write_text(text)
    (cache / "cache.json").write_text("[]")
    user_error(invoke(*label), "cache.json")
    user_error(invoke("embed", *base, "--model", "tiny", "--every", "4", "--cache", str(cache)), "cache.json")


# ---- 11. messages ---------------------------------------------------------------------------------------------------
def test_a_list_through_a_pipe(phantom, tmp_path):
    first = sorted(p.name for p in phantom.iterdir() if p.is_dir())[0]
    read, write = os.pipe()
    os.write(write, f"{first}\n".encode())
    os.close(write)
    try:  # what `--list <(echo case)` hands the command: /dev/fd/N, a pipe, not a regular file
        result = invoke("embed", "--data", str(phantom), "--list", f"/dev/fd/{read}", "--model", "tiny",
                        "--every", "6", "--cache", str(tmp_path / "c"))
    finally:
        os.close(read)
    assert result.returncode == 0, result.stderr
    assert EmbeddingCache(tmp_path / "c").case_ids == [first]


def test_missing_labels_are_named(tmp_path):
    data = _png_set(tmp_path / "data", ["a", "b", "c"])
    for name in ("b", "c"):
        (data / "masks" / f"{name}.png").unlink()
    line = user_error(invoke("pseudo-label", "--data", str(data), "--model", "tiny", "--out", str(tmp_path / "o")),
                      "b, c")
    assert " a" not in line.split("none:")[1]


# ---- 5. a failed gate never ships ---------------------------------------------------------------------------------
def test_a_failed_gate_never_replaces_a_passing_artefact(phantom, tmp_path):
    out = tmp_path / "engines"
    export = ["export", "--model", "tiny", "--part", "encoder", "--precision", "int8", "--out", str(out)]
    result = invoke(*export)  # int8 on the tiny model: mask IoU ~0.996, over the default 0.97
    assert result.returncode == 0, result.stderr
    encoder = out / "tiny_encoder_int8.onnx"
    passing = {p.name: p.read_bytes() for p in out.iterdir()}
    user_error(invoke(*export, "--threshold", "1.0"), "parity gate failed")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == passing  # nothing replaced, no staging left
    assert json.loads(encoder.with_suffix(".json").read_text())["parity"]["passed"] is True

    from semisam_fast.artefact import read_sidecar, write_sidecar

    meta = read_sidecar(encoder)
    meta["parity"]["passed"] = False  # what an export of before this fix left under the artefact's name
    write_sidecar(encoder, meta)
    user_error(invoke("embed", "--data", str(phantom), "--backend", "onnx", "--model", "tiny", "--artefact",
                      str(encoder), "--precision", "int8", "--every", "6", "--cache", str(tmp_path / "c")),
               "failed its parity gate")


# ---- 6. a sidecar does not vouch for a foreign graph --------------------------------------------------------------
def test_a_sidecar_cannot_vouch_for_a_foreign_graph(tiny_artefacts, phantom, tmp_path):
    import onnx
    from onnx import numpy_helper

    from semisam_fast.artefact import read_sidecar, write_sidecar

    real = tiny_artefacts["encoder"].path
    meta = read_sidecar(real)
    embed = ["embed", "--data", str(phantom), "--backend", "onnx", "--model", "tiny", "--every", "6"]

    decoder_as_encoder = tmp_path / "decoder" / real.name  # a decoder graph, described as the encoder
    decoder_as_encoder.parent.mkdir()
    shutil.copy(tiny_artefacts["decoder"].path, decoder_as_encoder)
    write_sidecar(decoder_as_encoder, dict(meta))
    user_error(invoke(*embed, "--artefact", str(decoder_as_encoder), "--cache", str(tmp_path / "c0")),
               "is not a tiny encoder graph")

    cache = tmp_path / "cache"
    assert invoke(*embed, "--artefact", str(real), "--cache", str(cache)).returncode == 0
    graph = onnx.load(str(real))  # a foreign encoder of the same shapes, its hash recomputed in the sidecar
    for init in graph.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 1000:
            init.CopyFrom(numpy_helper.from_array(array * np.float32(1.5), init.name))
    foreign = tmp_path / "foreign" / real.name
    foreign.parent.mkdir()
    onnx.save(graph, str(foreign))
    write_sidecar(foreign, dict(meta))
    user_error(invoke(*embed, "--artefact", str(foreign), "--cache", str(cache)), "fingerprint", "encoder_sha256")


# ---- 3. Ctrl-C stops between steps ----------------------------------------------------------------------------------
def test_ctrl_c_mid_step_saves_a_step_boundary_and_resumes_bit_identical(phantom, tmp_path):
    """A real SIGINT in the middle of step 3 (after the forward pass has updated BatchNorm, before the optimiser
    step): the step finishes, its state is saved as iteration 3 (iteration 2's good checkpoint untouched), and the
    rerun ends bit-identical to an uninterrupted run. The interrupted command runs in a process of its own
    (tests/interrupt_driver.py): sent inside pytest's process, the signal crashed it once other tests had run."""
    import subprocess
    import sys

    from semisam_fast.checkpoints import read_checkpoint

    from .test_crash_safety import _same

    args = ["train", "--data", str(phantom), "--labeled", "2", "--val", "1", "--method", "sup", "--iterations", "5",
            "--save-every", "1", "--out"]
    reference = tmp_path / "reference"
    assert invoke(*args, str(reference)).returncode == 0
    run = tmp_path / "run"
    driver = Path(__file__).resolve().parent / "interrupt_driver.py"
    result = subprocess.run([sys.executable, str(driver), "3", *args, str(run)], capture_output=True, text=True,
                            timeout=600, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert result.returncode == 130, result.stderr
    said = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert said[-1] == "interrupted at iteration 3, resume with the same command" and "Traceback" not in result.stderr
    folder = run / "checkpoints"
    assert sorted(p.name for p in folder.glob("iter_*.pt")) == [f"iter_00000{i}.pt" for i in (1, 2, 3)]
    good = read_checkpoint(reference / "checkpoints" / "iter_000002.pt")
    _same(read_checkpoint(folder / "iter_000002.pt")["student"], good["student"])
    assert invoke(*args, str(run)).returncode == 0
    _same(read_checkpoint(folder / "final.pt"), read_checkpoint(reference / "checkpoints" / "final.pt"))


# ---- 10. one process per output folder ----------------------------------------------------------------------------
def test_a_folder_in_use_is_refused_and_its_holder_named(phantom, tmp_path):
    import subprocess
    import sys

    cache, run = tmp_path / "cache", tmp_path / "run"
    hold = ("import sys, time\nfrom semisam_fast.locks import FolderLock\n"
            "locks = [FolderLock(p, 'embed').acquire() for p in sys.argv[1:]]\nprint('held', flush=True)\n"
            "time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(cache), str(run)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert holder.stdout.readline().strip() == "held"
        embed = ["embed", "--data", str(phantom), "--model", "tiny", "--every", "6", "--cache", str(cache)]
        user_error(invoke(*embed), "in use by process", str(holder.pid), "semisam-fast embed")
        user_error(invoke("train", "--data", str(phantom), "--labeled", "2", "--val", "1", "--method", "sup",
                          "--iterations", "1", "--out", str(run)), "in use by process", str(holder.pid))
        assert not (cache / "shards").exists() and not (run / "run.json").exists()
    finally:
        holder.kill()  # the kernel drops its locks with the process
        holder.wait()
    assert invoke(*embed).returncode == 0


def test_openvino_checks_the_graph_too(tiny_artefacts, tmp_path):
    pytest.importorskip("openvino")
    from semisam_fast.artefact import read_sidecar, write_sidecar
    from semisam_fast.backends.openvino_backend import OpenVinoBackend
    from semisam_fast.errors import UserError

    real = tiny_artefacts["encoder"].path
    OpenVinoBackend(encoder=real)  # the real graph opens
    fake = tmp_path / real.name
    shutil.copy(tiny_artefacts["decoder"].path, fake)
    write_sidecar(fake, dict(read_sidecar(real)))
    with pytest.raises(UserError, match="is not a tiny encoder graph"):
        OpenVinoBackend(encoder=fake)
