"""The OpenVINO backend: the same fp32 ONNX files compiled by OpenVINO (f32, and bf16 where the CPU has it), behind
the one backend protocol, through the same parity gate."""
from __future__ import annotations

import pytest
import torch

from semisam_fast.backends import OnnxBackend, create_backend
from semisam_fast.embed import backend_fingerprint
from semisam_fast.errors import UserError
from semisam_fast.export.parity import verify_artefact
from semisam_fast.prompts import box_prompts

openvino = pytest.importorskip("openvino")


def _has_bf16() -> bool:
    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.mark.slow  # the full LiteMedSAM gate in OpenVINO (~25 s)
def test_openvino_f32_matches_onnxruntime_and_passes_the_gate(lite_artefacts):
    encoder, decoder = lite_artefacts["encoder"].path, lite_artefacts["decoder"].path
    ov = create_backend("openvino", "litemedsam", artefact=encoder.parent)
    ort = OnnxBackend(encoder=encoder, decoder=decoder)
    assert ov.describe()["backend"] == "openvino" and ov.precision == "fp32"
    images = torch.rand(3, 3, 256, 256)
    a, b = ov.encode(images), ort.encode(images)
    assert a.shape == (3, 256, 64, 64) and float((a - b).norm() / b.norm()) < 1e-4
    single = torch.cat([ov.encode(images[i:i + 1]) for i in range(3)])
    assert float((single - a).norm() / a.norm()) < 1e-4  # batch N == N single runs
    coords, labels = box_prompts(torch.tensor([[[20.0, 30.0, 120.0, 140.0]], [[50.0, 50.0, 90.0, 200.0]],
                                               [[0.0, 0.0, 255.0, 255.0]]]))
    (m1, i1), (m2, i2) = ov.decode(b, coords, labels), ort.decode(b, coords, labels)
    assert m1.shape == m2.shape and float(((m1 > 0) == (m2 > 0)).float().mean()) > 0.999
    torch.testing.assert_close(i1, i2, atol=1e-3, rtol=1e-3)  # SAM's own IoU predictions agree too
    for path in (encoder, decoder):
        report = verify_artefact(path, runtime="openvino", precision="fp32")
        assert report.passed, report.summary()


@pytest.mark.slow  # the bf16 gate in OpenVINO (~10 s)
@pytest.mark.skipif(not _has_bf16(), reason="this CPU has no BF16")
def test_openvino_bf16_is_gated_and_fingerprinted_apart(lite_artefacts):
    encoder = lite_artefacts["encoder"].path
    report = verify_artefact(encoder, runtime="openvino", precision="bf16")
    assert report.precision == "bf16" and report.threshold == 0.97
    assert 0.9 < report.mask_iou <= 1.0  # bf16 changes masks a little; the gate says whether that is enough
    f32 = create_backend("openvino", "litemedsam", artefact=encoder)
    bf16 = create_backend("openvino", "litemedsam", artefact=encoder, precision="bf16")
    assert backend_fingerprint(f32)["precision"] == "fp32" and backend_fingerprint(bf16)["precision"] == "bf16"
    # which kernels the plugin really picked, as bench JSONs record them: bf16 matmuls on this CPU
    bf16.encode(torch.rand(1, 3, 256, 256))
    kernels = bf16.describe()["encoder"]["kernels"]
    linear = {name: n for name, n in kernels.items() if name.startswith("FullyConnected")}
    assert linear and all(name.endswith("_bf16") for name in linear), kernels


def test_openvino_refusals(lite_artefacts, tiny_artefacts):
    with pytest.raises(UserError, match="exported for model"):
        create_backend("openvino", "litemedsam", artefact=tiny_artefacts["encoder"].path)
    with pytest.raises(UserError, match="runs fp32 or bf16"):
        create_backend("openvino", "litemedsam", artefact=lite_artefacts["encoder"].path, precision="fp16")


def test_a_batch_split_over_streams_equals_one_request(lite_artefacts):
    """On 2+ threads a batch runs as parts on single-threaded streams, each part on a compile for its own shape:
    the same outputs as one request of the dynamic-batch compile, the parts joined in order (3 = 2 + 1: two
    compiles at once), a 1x1 mask input given whole to every part and a per-prompt one split with the batch."""
    ov = create_backend("openvino", "litemedsam", artefact=lite_artefacts["encoder"].path.parent)
    if not ov.encoder.streamable:
        pytest.skip("one inference thread here: no streams")
    torch.manual_seed(3)
    images = torch.rand(3, 3, 256, 256)
    whole = ov.encoder.request.infer({ov.encoder.input_names[0]: images.numpy()})
    streamed = ov.encode(images)
    torch.testing.assert_close(streamed, torch.from_numpy(whole[ov.encoder.compiled.outputs[0]]), atol=1e-5, rtol=0)
    coords, labels = box_prompts(torch.tensor([[20.0, 30.0, 120.0, 140.0], [50.0, 50.0, 90.0, 200.0],
                                               [0.0, 0.0, 255.0, 255.0]])[:, None].expand(3, 2, 4))
    for mask_input in (None, torch.randn(3, 2, 1, 256, 256)):
        masks, iou = ov.decode(streamed, coords, labels, mask_input)
        for b in range(3):  # batch 1: one request
            one = None if mask_input is None else mask_input[b:b + 1]
            single, single_iou = ov.decode(streamed[b:b + 1], coords[b:b + 1], labels[b:b + 1], one)
            torch.testing.assert_close(masks[b:b + 1], single, atol=1e-4, rtol=0)
            torch.testing.assert_close(iou[b:b + 1], single_iou, atol=1e-5, rtol=0)


@pytest.mark.slow  # OpenVINO compiles per shape (~12 s)
def test_each_input_shape_gets_its_own_compile_and_few_are_kept(lite_artefacts):
    """Static-shape compiles, one per input shape met (and per streamed or not), least recently used dropped past
    SHAPES_KEPT; a shape met again after its compile was dropped is compiled again and gives the same masks."""
    from semisam_fast.backends.openvino_backend import SHAPES_KEPT

    ov = create_backend("openvino", "litemedsam", artefact=lite_artefacts["decoder"].path)
    decoder = ov.decoder
    assert not decoder.per_shape  # the backend's decoder keeps one compile: a round's calls vary in size
    decoder.per_shape = True  # the encoder's way, on the quicker model to compile
    calls = 2 * SHAPES_KEPT + 2  # with 2 streams: parts of 1 .. SHAPES_KEPT + 1 prompts
    embeddings = torch.randn(calls, 256, 64, 64)
    coords, labels = box_prompts(torch.tensor([[30.0, 40.0, 150.0, 170.0]]).expand(calls, 1, 4))
    first = ov.decode(embeddings[:1], coords[:1], labels[:1])[0]
    single = ((1, 256, 64, 64), False)  # the one-request compile of a single prompt, met first
    assert [(key[0][0], key[1]) for key in decoder._compiles] == [single]
    for n in range(1, calls + 1):
        masks = ov.decode(embeddings[:n], coords[:n], labels[:n])[0]
        torch.testing.assert_close(masks[:1], first, atol=1e-4, rtol=0)
    kept = [(key[0][0], key[1]) for key in decoder._compiles]
    assert len(kept) == SHAPES_KEPT and single not in kept
    torch.testing.assert_close(ov.decode(embeddings[:1], coords[:1], labels[:1])[0], first, atol=1e-4, rtol=0)
    assert [(key[0][0], key[1]) for key in decoder._compiles][-1] == single
