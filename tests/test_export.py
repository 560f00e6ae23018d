"""ONNX export and the parity gate, on tiny (random init) and the genuine LiteMedSAM."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from semisam_fast.artefact import read_sidecar, write_sidecar
from semisam_fast.backends import OnnxBackend, TorchBackend, create_backend, open_artefact
from semisam_fast.errors import UserError
from semisam_fast.models import load_model
from semisam_fast.prompts import box_prompts, point_prompts

from .conftest import invoke


@pytest.mark.parametrize("fixture", ["tiny_artefacts", "lite_artefacts"])
def test_export_passes_gate_and_describes_itself(fixture, request):
    artefacts = request.getfixturevalue(fixture)
    for part in ("encoder", "decoder"):
        result = artefacts[part]
        assert result.report.passed and result.report.mask_iou >= 0.99
        meta = json.loads(result.path.with_suffix(".json").read_text())
        assert meta["part"] == part and meta["opset"] >= 17 and len(meta["checkpoint_sha256"]) > 10
        assert meta["parity"]["passed"] is True
        first_input = "images" if part == "encoder" else "image_embeddings"
        assert meta["inputs"][first_input][0] == "batch"


@pytest.mark.parametrize("fixture,model", [("tiny_artefacts", "tiny"), ("lite_artefacts", "litemedsam")])
def test_encoder_batch3_equals_three_batch1(fixture, model, request):
    backend = open_artefact(request.getfixturevalue(fixture)["encoder"].path)
    reference = load_model(model)
    images = reference.preprocess(torch.randn(3, 90, 70))
    batched = backend.encode(images)
    singles = torch.cat([backend.encode(images[i:i + 1]) for i in range(3)])
    assert batched.shape == (3, 256, 64, 64)
    torch.testing.assert_close(batched, singles, atol=1e-4, rtol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(batched, reference.encoder(images), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("fixture", ["tiny_artefacts", "lite_artefacts"])
def test_batched_decoding_equals_looped(fixture, request):
    """Two images x three prompts in one call == six single-prompt calls; boxes and points both."""
    backend = open_artefact(request.getfixturevalue(fixture)["decoder"].path)
    torch.manual_seed(0)
    embeddings = torch.randn(2, 256, 64, 64)
    x0y0 = torch.rand(2, 3, 2) * 150
    boxes = torch.cat([x0y0, x0y0 + 20 + torch.rand(2, 3, 2) * 80], dim=-1)
    for coords, labels in (box_prompts(boxes),
                           point_prompts(torch.rand(2, 3, 2, 2) * 250, torch.tensor([1, 0]).expand(2, 3, 2))):
        masks, iou = backend.decode(embeddings, coords, labels)
        assert masks.shape == (2, 3, 1, 256, 256) and iou.shape == (2, 3, 1)
        for b in range(2):
            for n in range(3):
                single, single_iou = backend.decode(embeddings[b:b + 1], coords[b:b + 1, n:n + 1],
                                                    labels[b:b + 1, n:n + 1])
                torch.testing.assert_close(single[0, 0], masks[b, n], atol=1e-3, rtol=1e-3)
                torch.testing.assert_close(single_iou[0, 0], iou[b, n], atol=1e-4, rtol=1e-4)


def test_onnx_decoder_matches_torch_with_mask_input(tiny_artefacts):
    backend = open_artefact(tiny_artefacts["decoder"].path)
    reference = TorchBackend(load_model("tiny"))
    torch.manual_seed(1)
    embeddings = torch.randn(1, 256, 64, 64)
    coords, labels = box_prompts(torch.tensor([[[30.0, 40.0, 120.0, 160.0]]]))
    mask_input = torch.randn(1, 1, 1, 256, 256)
    got, _ = backend.decode(embeddings, coords, labels, mask_input)
    want, _ = reference.decode(embeddings, coords, labels, mask_input)
    without, _ = reference.decode(embeddings, coords, labels)
    torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)
    assert (want - without).abs().max() > 1e-3  # the mask prompt really is used


def test_exported_decoder_takes_one_mask_prompt_for_all_or_one_per_prompt(tiny_artefacts):
    """The exported decoder broadcasts a 1x1 mask input (what backends feed when there is no mask prompt), and a
    per-prompt B x N one gives the same masks."""
    backend = open_artefact(tiny_artefacts["decoder"].path)
    assert backend.mask_input_broadcasts
    assert backend.decoder.meta["inputs"]["mask_input"][:2] == ["mask_batch", "mask_prompts"]
    torch.manual_seed(2)
    embeddings = torch.randn(2, 256, 64, 64)
    coords, labels = box_prompts(torch.tensor([[30.0, 40.0, 120.0, 160.0], [10.0, 20.0, 90.0, 200.0]]).expand(2, 2, 4))
    default, default_iou = backend.decode(embeddings, coords, labels)
    names = [i.name for i in backend.decoder.session.get_inputs()]
    feeds = dict(zip(names, (embeddings.numpy(), coords.numpy(), labels.numpy(),
                             np.zeros((2, 2, 1, 256, 256), np.float32), np.zeros(1, np.float32))))
    per_prompt, per_prompt_iou = backend.decoder.session.run(None, feeds)
    np.testing.assert_allclose(default.numpy(), per_prompt, atol=1e-4)
    np.testing.assert_allclose(default_iou.numpy(), per_prompt_iou, atol=1e-5)


def test_engines_take_their_graphs_mask_layout(tiny_artefacts):
    """A TensorRT engine records its ONNX graph's inputs (read from the file) and shapes its optimisation profile by
    them: a 1x1 mask input for a broadcasting decoder, one per prompt for a decoder exported before."""
    from semisam_fast.export.onnx_export import graph_inputs
    from semisam_fast.export.tensorrt import _profiles

    path = tiny_artefacts["decoder"].path
    inputs = graph_inputs(path)
    assert inputs == read_sidecar(path)["inputs"]  # what the ONNX sidecar says
    spec = load_model("tiny").spec
    assert _profiles("decoder", (1, 8, 32), spec, inputs)["mask_input"][1][:2] == (1, 1)
    older = {**inputs, "mask_input": ["batch", "prompts", 1, 256, 256]}
    assert _profiles("decoder", (1, 8, 32), spec, older)["mask_input"][1][:2] == (8, 1)


def test_factory_picks_backend(tiny_artefacts):
    folder = tiny_artefacts["encoder"].path.parent
    assert isinstance(create_backend("torch", "tiny"), TorchBackend)
    backend = create_backend(str(folder), "tiny")
    assert isinstance(backend, OnnxBackend) and backend.encoder and backend.decoder
    assert backend.describe()["encoder"]["provider"] == "CPUExecutionProvider"
    with pytest.raises(UserError, match="exported for model"):
        OnnxBackend(encoder=tiny_artefacts["encoder"].path, model="litemedsam")


def test_gate_fails_on_a_damaged_artefact(tiny_artefacts, tmp_path):
    """Perturb the exported decoder's weights: verify must fail with exit 2 and say by how much."""
    source = tiny_artefacts["decoder"].path
    model = onnx.load(str(source))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 10000:
            init.CopyFrom(numpy_helper.from_array(array + rng.normal(0, 0.5, array.shape).astype(np.float32),
                                                  init.name))
    damaged = tmp_path / source.name
    onnx.save(model, str(damaged))
    # copied sidecar: it vouches for the original bytes, so the damaged file is refused before onnxruntime sees it
    damaged.with_suffix(".json").write_text(source.with_suffix(".json").read_text())
    result = invoke("verify", str(damaged))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not the file its sidecar describes" in result.stderr
    # re-described (a sidecar written for the damaged bytes): the parity gate is what catches it
    write_sidecar(damaged, json.loads(source.with_suffix(".json").read_text()))
    result = invoke("verify", str(damaged))
    assert result.returncode == 2
    assert "parity gate failed" in result.stderr and "short by" in result.stderr
    assert "Traceback" not in result.stderr
    assert invoke("verify", str(source)).returncode == 0


def test_an_artefact_of_an_older_sidecar_layout_is_refused(tiny_artefacts, tmp_path):
    """One sidecar layout: a part whose sidecar does not record the encoder checkpoint it reads, or a decoder that
    takes a mask per prompt, is refused on open with one line, never run with a guessed default."""
    import shutil

    for part, drop, needle in (("encoder", "encoder_checkpoint_sha256", "encoder checkpoint"),
                               ("decoder", "inputs", "mask input")):
        source = tiny_artefacts[part].path
        copy = tmp_path / part / source.name
        copy.parent.mkdir()
        shutil.copy(source, copy)
        meta = read_sidecar(source)
        del meta[drop]
        write_sidecar(copy, meta)
        with pytest.raises(UserError, match=f"older semisam-fast.*{needle}"):
            open_artefact(copy)
    assert open_artefact(tiny_artefacts["decoder"].path).mask_input_broadcasts  # the current layout opens


def test_artefact_hash_is_checked_before_use(tiny_artefacts, tmp_path):
    """A swapped or appended-to .onnx, or a sidecar without a hash, is refused by every path that opens it."""
    source = tiny_artefacts["decoder"].path
    copy = tmp_path / source.name
    copy.write_bytes(source.read_bytes())
    sidecar = json.loads(source.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps(sidecar))
    OnnxBackend(decoder=copy)  # intact: opens
    with open(copy, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(UserError, match="not the file its sidecar describes"):
        OnnxBackend(decoder=copy)
    copy.write_bytes(source.read_bytes())
    del sidecar["artefact_sha256"]
    copy.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(UserError, match="records no artefact hash"):
        OnnxBackend(decoder=copy)


def test_external_data_layout_loads_by_path(tmp_path):
    """The > 2 GiB layout (ViT-H): weights in one .onnx.data file beside the graph, loaded by path. Forced on the
    tiny model, which takes the same code path in seconds."""
    from semisam_fast.artefact import write_sidecar
    from semisam_fast.export.onnx_export import export_encoder

    model = load_model("tiny")
    path = tmp_path / "tiny_encoder_fp32.onnx"
    shapes = export_encoder(model, path, external=True)
    assert (tmp_path / "tiny_encoder_fp32.onnx.data").stat().st_size > path.stat().st_size
    write_sidecar(path, {"model": "tiny", "part": "encoder", "precision": "fp32",
                         "checkpoint_sha256": model.checkpoint_sha256,
                         "encoder_checkpoint_sha256": model.encoder_checkpoint_sha256, **shapes})
    images = model.preprocess(torch.randn(2, 80, 64))
    with torch.inference_mode():
        torch.testing.assert_close(OnnxBackend(encoder=path).encode(images), model.encoder(images),
                                   atol=1e-3, rtol=1e-3)


def test_weight_bytes_are_counted_without_serialising(tiny_artefacts):
    """ViT-H's graph is > 2 GiB: protobuf's ByteSize() raises on it, so the external-data decision counts the weights
    instead. On a small graph the count is the bulk of the serialised size."""
    from semisam_fast.export.onnx_export import _tensor_bytes

    model = onnx.load(str(tiny_artefacts["encoder"].path))
    weights = sum(int(np.prod(t.dims)) * 4 for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    assert weights <= _tensor_bytes(model) <= model.ByteSize()
    assert _tensor_bytes(model) > 0.9 * model.ByteSize()


def test_every_export_records_its_peak_memory(tiny_artefacts):
    """The sidecar says how much memory the export took (bench JSONs carry it), measured, not zero or missing."""
    for result in tiny_artefacts.values():
        peak = json.loads(result.path.with_suffix(".json").read_text())["export_peak_rss_gb"]
        assert peak["scope"] in ("block", "process") and 0.05 < peak["value"] < 24
