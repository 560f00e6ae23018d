"""int8, TensorRT and GPU providers: what runs here is tested here; TensorRT/CUDA tests skip without them."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from semisam_fast.backends import OnnxBackend
from semisam_fast.errors import UserError
from semisam_fast.export import export
from semisam_fast.export.parity import ParityError

from .conftest import run_cli

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_int8_encoder_goes_through_the_gate(tmp_path, mode):
    try:
        results = export("tiny", part="encoder", precision="int8", out=tmp_path, int8_mode=mode)
        report = results[0].report
    except ParityError as exc:
        assert "mask IoU" in str(exc)
        report = None
    meta = json.loads((tmp_path / "tiny_encoder_int8.json").read_text())
    assert meta["precision"] == "int8" and meta["quantization"] == mode
    if mode == "dynamic":  # the MLPs' second Linear reads a GELU output and stays fp32
        assert meta["kept_fp32"] == 2
        # run one image at a time, so an image's embedding does not depend on its batch neighbours
        assert meta["per_image"] is True and meta["parity"]["batch_vs_single_rel_l2"] == 0
    assert meta["parity"]["threshold"] == 0.97
    assert meta["parity"]["passed"] is (report is not None)


def test_onnxruntime_reports_the_provider_it_really_got(tiny_artefacts):
    import onnxruntime as ort

    backend = OnnxBackend(encoder=tiny_artefacts["encoder"].path, provider="cuda")
    got = backend.describe()["encoder"]
    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        assert got["provider"] == "CUDAExecutionProvider" and not got["fell_back_to_cpu"]
    else:
        assert got["provider"] == "CPUExecutionProvider" and got["fell_back_to_cpu"] is True


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed here")
def test_engine_export_without_tensorrt_is_one_clear_error(tmp_path):
    result = run_cli("export", "--model", "tiny", "--format", "engine", "--out", str(tmp_path))
    assert result.returncode == 2
    assert "TensorRT is not installed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_passes_gate_and_is_cached(tmp_path, precision):
    from semisam_fast.backends.tensorrt_backend import TensorRTBackend

    first = export("tiny", part="all", fmt="engine", precision=precision, batch="1,2,4", out=tmp_path)
    assert all(r.report.passed for r in first)
    mtimes = {r.path: r.path.stat().st_mtime for r in first}
    again = export("tiny", part="all", fmt="engine", precision=precision, batch="1,2,4", out=tmp_path)
    assert {r.path: r.path.stat().st_mtime for r in again} == mtimes  # served from the engine cache
    backend = TensorRTBackend(encoder=first[0].path, decoder=first[1].path)
    images = torch.randn(3, 3, 256, 256)
    batched = backend.encode(images)
    singles = torch.cat([backend.encode(images[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, singles, atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_cuda_half_precision_matches_fp32():
    from semisam_fast.backends import TorchBackend
    from semisam_fast.models import load_model

    images = torch.randn(2, 3, 256, 256)
    reference = TorchBackend(load_model("litemedsam")).encode(images)
    for precision in ("fp16", "bf16"):
        got = TorchBackend(load_model("litemedsam"), device="cuda", precision=precision).encode(images).cpu()
        assert float((got - reference).norm() / reference.norm()) < 0.05


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_vit_sdpa_attention_on_cuda_matches_segment_anythings():
    """ViT attention through SDPA on CUDA (the memory-efficient kernel with the position mask) and through
    FlexAttention (positions inside the kernel), fp32 and half, against segment-anything's own forward: a global
    block's 4096 tokens, random non-zero relative positions."""
    from segment_anything.modeling.image_encoder import Attention

    from semisam_fast.models.vit_attention import FlexAttention, SdpaAttention

    torch.manual_seed(0)
    eager = Attention(768, 12, qkv_bias=True, use_rel_pos=True, input_size=(64, 64)).eval().cuda()
    with torch.no_grad():
        eager.rel_pos_h.normal_(0, 0.02)
        eager.rel_pos_w.normal_(0, 0.02)
    x = torch.randn(2, 64, 64, 768, device="cuda")
    with torch.inference_mode():
        reference = eager(x)
        for dtype, tolerance in ((torch.float32, 1e-4), (torch.float16, 1e-2), (torch.bfloat16, 3e-2)):
            for fused in (SdpaAttention, FlexAttention):
                got = fused(eager.to(dtype))(x.to(dtype)).float()
                assert float((got - reference).norm() / reference.norm()) < tolerance, (fused.kind, dtype)
            eager.float()


def test_unknown_provider_is_a_user_error(tiny_artefacts):
    with pytest.raises(UserError, match="unknown onnxruntime provider"):
        OnnxBackend(encoder=tiny_artefacts["encoder"].path, provider="vulkan")


def test_compiled_cuda_graph_batches_are_padded_to_powers_of_two():
    """A compiled CUDA-graph encoder meets few batch sizes (each is a compile and capture)."""
    from semisam_fast.backends.torch_backend import padded_batch

    assert [padded_batch(n) for n in (1, 2, 3, 5, 8, 9, 32, 33)] == [1, 2, 4, 8, 8, 16, 32, 64]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_cuda_graph_encoder_matches_eager_and_outputs_survive_the_next_call():
    from semisam_fast.backends import TorchBackend
    from semisam_fast.models import load_model

    images = torch.randn(2, 3, 256, 256)
    eager = TorchBackend(load_model("litemedsam"), device="cuda")
    graphed = TorchBackend(load_model("litemedsam"), device="cuda", compile=True)
    first = graphed.encode(images)
    kept = first.clone()
    graphed.encode(images.flip(-1))  # a replay writes into the graph's static output buffer
    assert torch.equal(first, kept)
    reference = eager.encode(images)
    assert float((first - reference).norm() / reference.norm()) < 1e-2
    three = torch.randn(3, 3, 256, 256)  # runs padded to 4 (one capture for 3 and 4): the same three embeddings
    got = graphed.encode(three)
    assert got.shape[0] == 3
    assert float((got - eager.encode(three)).norm() / got.norm()) < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_batched_decoding_on_cuda_matches_the_cpu():
    from semisam_fast.backends import TorchBackend
    from semisam_fast.models import load_model
    from semisam_fast.prompter import SamPrompter
    from semisam_fast.samples import load_samples

    samples = load_samples(4)
    loaded = load_model("litemedsam")
    cpu = TorchBackend(loaded)
    embeddings = cpu.encode(loaded.preprocess(samples.slices))
    frame = SamPrompter.of(cpu).frame(samples.slices.shape[1], samples.slices.shape[2])
    on_cpu = SamPrompter.of(cpu).decode_from_masks(embeddings, samples.labels, frame)
    on_gpu = SamPrompter.of(TorchBackend(load_model("litemedsam"), device="cuda")).decode_from_masks(
        embeddings.cuda(), samples.labels, frame)
    assert on_gpu.is_cuda
    agree = ((on_gpu.cpu() > 0) == (on_cpu > 0)).float().mean()
    assert agree > 0.999


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["mt", "uamt", "semisam"])
def test_training_steps_run_on_cuda(tmp_path, method):
    from semisam_fast.data import make_phantom
    from semisam_fast.train import build_trainer, preset

    root = make_phantom(tmp_path / "phantom", n_cases=6, shape=(96, 96, 8), seed=0)
    config = preset("la-cpu", method=method, iterations=20, unlabelled_cases=None, unlabelled_every=1,
                    sam_online=True if method == "semisam" else None, sam_ramp="none", uamt_samples=2)
    trainer = build_trainer(config, root, None, 2, 1, tmp_path / method, device="cuda", tensorboard=False)
    trainer.start_at(400)  # the student predicts foreground, so SAM is prompted
    logs = [trainer.step() for _ in range(2)]
    assert next(trainer.student.parameters()).is_cuda
    assert all(np.isfinite(entry["loss"]) for entry in logs)
