"""Embedding cache, resumable embed (kill -9), fingerprints, corruption, pseudo-labels from cached embeddings."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from semisam_fast.backends import TorchBackend, open_artefact
from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import open_dataset
from semisam_fast.embed import backend_fingerprint, build_cache
from semisam_fast.errors import UserError
from semisam_fast.models import load_model
from semisam_fast.pseudo_label import pseudo_label
from semisam_fast.prompter import SamPrompter

from .conftest import invoke, run_cli


def _cache_arrays(root) -> dict:
    cache = EmbeddingCache(root)
    return {case: cache.get(case, cache.slices(case)).numpy() for case in cache.case_ids}


@pytest.mark.slow  # kill -9 of a real embed (~18 s)
def test_kill_9_during_embed_resumes_without_recomputation(phantom, tmp_path):
    args = [sys.executable, "-m", "semisam_fast.cli", "embed", "--data", str(phantom), "--model", "tiny",
            "--batch", "2", "--cache"]
    reference = tmp_path / "reference"
    assert subprocess.run([*args, str(reference)], capture_output=True, timeout=600).returncode == 0

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([*args, str(interrupted)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list((interrupted / "shards").glob("[!.]*.json"))) < 5:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(list((interrupted / "shards").glob("[!.]*.json")))
    assert finished >= 5
    # a sidecar the kill caught mid-write (cut short, or complete but not yet renamed) is not a finished shard
    (interrupted / "shards" / ".stub.tmp-cut.json").write_text('{"case_id": ')
    rows_before = EmbeddingCache(interrupted).num_rows()
    total = EmbeddingCache(reference).num_rows()
    assert rows_before < total, "killed too late to test anything"

    result = run_cli("embed", "--data", str(phantom), "--model", "tiny", "--batch", "2", "--cache", str(interrupted))
    assert result.returncode == 0, result.stderr
    assert f"({total - rows_before} computed, {rows_before} already cached)" in result.stderr
    want, got = _cache_arrays(reference), _cache_arrays(interrupted)
    assert want.keys() == got.keys()
    for case in want:
        np.testing.assert_array_equal(want[case], got[case])
    assert not list((interrupted / "shards").glob(".*.tmp*"))  # the killed temp file is never read as a shard


def test_fingerprint_mismatch_and_corrupt_shards(phantom, tmp_path):
    dataset = open_dataset(phantom)
    backend = TorchBackend(load_model("tiny"))
    build_cache(dataset, backend, tmp_path / "c", case_ids=dataset.case_ids[:1], batch=4, progress=False)
    other = dict(backend_fingerprint(backend), precision="fp16")
    with pytest.raises(UserError, match="different fingerprint.*precision"):
        EmbeddingCache(tmp_path / "c", other)

    shard = sorted((tmp_path / "c" / "shards").glob("*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # truncated
    cache = EmbeddingCache(tmp_path / "c")
    with pytest.raises(UserError, match="truncated or corrupt"):
        cache.get(dataset.case_ids[0], cache.slices(dataset.case_ids[0]))
    assert any("truncated or corrupt" in p for p in cache.verify())

    second = sorted((tmp_path / "c" / "shards").glob("*.npy"))[1]
    data = bytearray(second.read_bytes())
    data[-10] ^= 0xFF  # same size, flipped bits: only the checksum sees it
    second.write_bytes(bytes(data))
    assert any("checksum" in p for p in EmbeddingCache(tmp_path / "c").verify())

    result = invoke("pseudo-label", "--cache", str(tmp_path / "nope"), "--data", str(phantom), "--out",
                    str(tmp_path / "o"))
    assert result.returncode == 2 and "no embedding cache" in result.stderr and "Traceback" not in result.stderr

    # a shard record without its source volume (the layout before source records) is refused, never served unchecked
    index = tmp_path / "c" / "index.json"
    records = json.loads(index.read_text())
    del next(iter(records["shards"].values()))["source"]
    index.write_text(json.dumps(records))
    with pytest.raises(UserError, match="records no source volume.*older"):
        EmbeddingCache(tmp_path / "c")


@pytest.mark.parametrize("resident", [False, True])
def test_gather_across_cases_keeps_order_and_values(phantom, tmp_path, resident):
    dataset = open_dataset(phantom)
    build_cache(dataset, TorchBackend(load_model("tiny")), tmp_path / "c", case_ids=dataset.case_ids[:2], batch=4,
                progress=False)
    cache = EmbeddingCache(tmp_path / "c")
    a, b = dataset.case_ids[:2]
    keys = [(b, 3), (a, 0), (b, 1), (a, 5), (a, 0)]
    got = cache.gather(keys, "cpu", resident=resident)
    expected = torch.cat([cache.get(case, [z]) for case, z in keys])
    assert got.dtype == torch.float32 and torch.equal(got, expected)
    with pytest.raises(UserError, match="not in the cache"):
        cache.gather([(a, 10_000)], "cpu", resident=resident)


@pytest.fixture(scope="module")
def lite(phantom, tmp_path_factory):
    """The LiteMedSAM backend and a cache of the phantom's first two cases (every 2nd slice), built once here."""
    dataset = open_dataset(phantom)
    backend = TorchBackend(load_model("litemedsam"))
    cache = tmp_path_factory.mktemp("lite") / "c"
    build_cache(dataset, backend, cache, case_ids=dataset.case_ids[:2], batch=4, every=2, progress=False)
    return dataset, backend, EmbeddingCache(cache)


def test_batched_decode_equals_one_prompt_at_a_time(lite):
    dataset, backend, cache = lite
    case = dataset.load(dataset.case_ids[0])
    zs = [z for z in cache.slices(case.case_id) if case.label[:, :, z].any()]
    prompter = SamPrompter.of(backend)
    frame = prompter.frame(case.image.shape[0], case.image.shape[1])
    labels = case.label[:, :, zs].transpose(2, 0, 1)
    batched = prompter.decode_from_masks(cache.get(case.case_id, zs), labels, frame)
    looped = torch.cat([prompter.decode_from_masks(cache.get(case.case_id, [z]), labels[i:i + 1], frame)
                        for i, z in enumerate(zs)])
    assert len(zs) >= 3
    assert torch.equal(batched > 0, looped > 0)
    torch.testing.assert_close(batched, looped, atol=1e-3, rtol=1e-3)


def test_pseudo_label_writes_masks_and_report(lite, tmp_path):
    dataset, backend, cache = lite
    cases = dataset.case_ids[:2]
    report = pseudo_label(dataset, cache, backend, tmp_path / "out", cases, progress=False)
    assert [row["case"] for row in report.rows] == cases
    assert report.summary["dice"][0] > 0.7  # a box-prompted SAM on a high-contrast blob
    for case in cases:
        written = dataset.read_mask(case, tmp_path / "out")
        assert written.shape == dataset.load(case, with_label=False).image.shape and written.any()
    payload = json.loads((tmp_path / "out" / "report.json").read_text())
    assert payload["summary"]["dice"]["mean"] == pytest.approx(report.summary["dice"][0])
    assert report.overlays and all(os.path.getsize(p) > 0 for p in report.overlays)
    # mask-box from the masks just written reproduces a mask set of similar quality
    again = pseudo_label(dataset, cache, backend, tmp_path / "out2", cases,
                         prompt="mask-box", masks_dir=tmp_path / "out", progress=False)
    assert again.summary["dice"][0] > 0.6


@pytest.mark.slow  # LiteMedSAM encodes the prompted slices (~13 s)
def test_pseudo_label_without_a_cache_encodes_the_prompted_slices(lite, tmp_path):
    """No cache: the encoder runs on every labelled slice there and then; on the slices the cache holds, the masks
    are the cache's (which stores fp16)."""
    dataset, backend, cache = lite
    cases = dataset.case_ids[:2]
    cached = pseudo_label(dataset, cache, backend, tmp_path / "cached", cases, n_overlays=0, progress=False)
    live = pseudo_label(dataset, None, backend, tmp_path / "live", cases, n_overlays=0, progress=False,
                        encoder=backend, encoder_batch=3)
    assert live.summary["dice"][0] > 0.7
    for case_id, row_cached, row_live in zip(cases, cached.rows, live.rows):
        label = dataset.load(case_id).label
        labelled = label.any(axis=(0, 1))
        assert row_live["prompted"] == int(labelled.sum())  # every labelled slice, cached or not
        assert row_cached["prompted"] == int(labelled[cache.slices(case_id)].sum())
        zs = cache.slices(case_id)
        a = dataset.read_mask(case_id, tmp_path / "cached")[:, :, zs] > 0
        b = dataset.read_mask(case_id, tmp_path / "live")[:, :, zs] > 0
        assert (a & b).sum() / (a | b).sum() >= 0.99
    with pytest.raises(UserError, match="one of them"):
        pseudo_label(dataset, cache, backend, tmp_path / "both", cases, encoder=backend)
    with pytest.raises(UserError, match="one of them"):
        pseudo_label(dataset, None, backend, tmp_path / "neither", cases)


def test_cli_pseudo_label_without_a_cache(phantom, tmp_path):
    first = open_dataset(phantom).case_ids[0]
    (tmp_path / "one.list").write_text(first + "\n")
    result = invoke("pseudo-label", "--data", str(phantom), "--list", str(tmp_path / "one.list"), "--model", "tiny",
                     "--no-distances", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [row["case"] for row in report["cases"]] == [first]
    assert "dice" in report["cases"][0] and "hd95" not in report["cases"][0]
    teacher = invoke("pseudo-label", "--data", str(phantom), "--prompt", "teacher", "--run", str(tmp_path),
                      "--out", str(tmp_path / "t"))
    assert teacher.returncode == 2 and "give --cache" in teacher.stderr and "Traceback" not in teacher.stderr


@pytest.mark.slow
def test_torch_and_onnx_caches_agree_on_real_la(la_dir, lite_artefacts, tmp_path):
    dataset = open_dataset(la_dir)
    cases = dataset.case_ids[:2]
    torch_backend = TorchBackend(load_model("litemedsam"))
    onnx_backend = open_artefact(lite_artefacts["encoder"].path)
    for name, backend in (("torch", torch_backend), ("onnx", onnx_backend)):
        build_cache(dataset, backend, tmp_path / name, case_ids=cases, every=11, progress=False)
    # the same fingerprint but for the exported encoder's hash, which only the onnx cache records (issue 26: the
    # embeddings of one encoder file are never cached under another's name, so the two are not resumed by each other)
    onnx_fingerprint = dict(EmbeddingCache(tmp_path / "onnx").fingerprint)
    assert onnx_fingerprint.pop("encoder_sha256") == onnx_backend.encoder_sha256
    assert EmbeddingCache(tmp_path / "torch").fingerprint == onnx_fingerprint
    masks = {}
    for name in ("torch", "onnx"):
        report = pseudo_label(dataset, EmbeddingCache(tmp_path / name), torch_backend, tmp_path / f"out_{name}",
                              cases, progress=False)
        assert report.summary["dice"][0] > 0.75
        masks[name] = np.concatenate([dataset.read_mask(c, tmp_path / f"out_{name}").ravel() for c in cases]) > 0
    iou = (masks["torch"] & masks["onnx"]).sum() / (masks["torch"] | masks["onnx"]).sum()
    assert iou >= 0.99
