"""`bench decoder`: batched prompt decoding (one call, many slices) in torch, onnxruntime and OpenVINO against
segment-anything's SamPredictor, one prompt at a time, on the same cached embeddings; each batched runtime's masks
compared with torch fp32's."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..formats import DEFAULT_FOLDER, ONNX, OPENVINO, artefact_path
from .timing import gflop, interleaved, summarise


def bench_decoder(model: str = "litemedsam", n_slices: int = 16, repeats: int = 3,
                  engines: Path = Path(DEFAULT_FOLDER), log=print, device: str = "cpu") -> dict:
    """Batched decoding (one call, many slices) vs segment-anything's SamPredictor, one prompt at a time, on the
    same cached embeddings and device; both return logits at the original slice size. onnxruntime joins on the CPU
    (on a GPU only when its CUDA provider is really there)."""
    import onnxruntime as ort
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

    from ..backends import TorchBackend, open_artefact
    from ..export import export
    from ..models import load_model
    from ..prompter import SamPrompter
    from ..samples import load_samples

    loaded = load_model(model)
    samples = load_samples(n_slices)
    labels = samples.labels
    frame = SamPrompter(loaded.spec.image_size).frame(samples.slices.shape[1], samples.slices.shape[2])
    with torch.inference_mode():
        embeddings = torch.cat([loaded.encoder(loaded.preprocess(s[None])) for s in samples.slices]).to(device)

    def batched(backend, n: int | None = None):  # one decoder call: the first n slices' label boxes + the margin
        return partial(SamPrompter.of(backend).decode_from_masks, embeddings[:n], labels[:n], frame)

    torch_backend = TorchBackend(loaded, device=device)
    per_prompt = gflop(batched(torch_backend, 1))
    candidates = {"batched_torch": batched(torch_backend)}
    openvino: dict = {}
    if device.startswith("cuda"):
        half = TorchBackend(load_model(model), device=device, precision="fp16")
        candidates["batched_torch_fp16"] = batched(half)
    provider = "cuda" if device.startswith("cuda") else "cpu"
    if provider == "cpu" or "CUDAExecutionProvider" in ort.get_available_providers():
        decoder_path = artefact_path(engines, model, "decoder", "fp32")
        if not decoder_path.is_file():
            export(model, part="decoder", out=engines)
        onnx = open_artefact(decoder_path, provider=provider)
        candidates[f"batched_{ONNX.runtime}"] = batched(onnx)
        openvino = _openvino_decoders(decoder_path, log)
        for precision, backend in openvino.items():
            candidates[f"batched_{OPENVINO.runtime}_{precision}"] = batched(backend)
    # each batched runtime's masks against torch fp32's, on the same prompts: a speed-up is worth its agreement
    with torch.inference_mode():
        reference = candidates["batched_torch"]().cpu() > 0
    agreement = {}
    for name, decode in candidates.items():
        if name != "batched_torch":
            with torch.inference_mode():
                mask = decode().cpu() > 0
            agreement[name] = float((mask & reference).sum() / max(int((mask | reference).sum()), 1))

    sam = Sam(image_encoder=loaded.encoder, prompt_encoder=loaded.decoder.prompt_encoder,
              mask_decoder=loaded.decoder.mask_decoder).to(device).eval()
    predictor = SamPredictor(sam)
    predictor.is_image_set = True
    predictor.original_size = (frame.height, frame.width)
    predictor.input_size = frame.resized
    boxes_input = SamPrompter(loaded.spec.image_size, margin=0.0).boxes_to_input(samples.boxes, frame).to(device)

    def looped(count: int = n_slices):
        with torch.inference_mode():
            for i in range(count):
                predictor.features = embeddings[i:i + 1]
                predictor.predict_torch(None, None, boxes=boxes_input[i:i + 1], multimask_output=False,
                                        return_logits=True)

    per_prompt_sam = gflop(lambda: looped(1))  # segment-anything's decoder: no block-diagonal zeros
    candidates = {"sampredictor_loop": looped, **candidates}
    log(f"decoder {model}: {n_slices} box prompts, {', '.join(candidates)}")
    summary = summarise(interleaved(candidates, repeats), "sampredictor_loop", n_slices, "prompts",
                        gflop_per_item=per_prompt)
    summary["sampredictor_loop"]["gflops"] = n_slices * per_prompt_sam / summary["sampredictor_loop"]["median_s"]
    return {"decoder": summary, "gflop_per_prompt": per_prompt, "gflop_per_prompt_sampredictor": per_prompt_sam,
            "prompts_per_call": n_slices, "decoder_device": device, "mask_iou_vs_torch_fp32": agreement,
            "openvino_kernels": {p: b.decoder.kernels() for p, b in openvino.items()}}


def _openvino_decoders(decoder_path: Path, log) -> dict:
    """OpenVINO over the fp32 ONNX decoder in f32 and, where the CPU has BF16, bf16; none without OpenVINO."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return {}
    from ..backends import open_artefact
    from ..errors import UserError

    backends = {}
    for precision in ("fp32", "bf16"):
        try:
            backends[precision] = open_artefact(decoder_path, runtime=OPENVINO.cli, precision=precision)
        except UserError as exc:
            log(f"openvino decoder {precision}: {exc}")
    return backends
