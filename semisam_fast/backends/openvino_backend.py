"""OpenVINO backend: the same exported ONNX files, compiled for the CPU by OpenVINO, in f32 or (on a CPU with BF16)
bf16. OpenVINO is an optional extra (`pip install 'semisam-fast[openvino]'`); without it this backend says so."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..artefact import read_sidecar
from ..errors import UserError
from .base import Backend

HINTS = {"fp32": "f32", "bf16": "bf16"}  # our precision names -> OpenVINO's inference precision hint


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise UserError("OpenVINO is not installed: `pip install 'semisam-fast[openvino]'`") from None
    return openvino


class OpenVinoModel:
    """One .onnx file (with its sidecar) compiled for the CPU at one inference precision."""

    def __init__(self, path: str | Path, precision: str, threads: int | None = None) -> None:
        ov = import_openvino()
        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        if self.meta.get("precision") != "fp32":
            raise UserError(f"the openvino backend compiles fp32 ONNX files; {self.path.name} is "
                            f"{self.meta.get('precision')}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise UserError("this CPU has no BF16 support: use --precision fp32 with the openvino backend")
        config = {"INFERENCE_PRECISION_HINT": HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses with long messages
            raise UserError(f"OpenVINO cannot compile {self.path.name}: {str(exc).splitlines()[0][:160]}") from None
        # A batch of 2 or more is split over one single-threaded stream per thread: on 2 cores that beats one
        # two-threaded request by ~5% (encoder and decoder alike: the layout nodes between the matmuls do not use
        # both threads); each item's arithmetic is the same either way (tests/test_openvino.py). The streamed twin
        # is a second compiled copy, made at the first batch and only for models under 1 GiB (not ViT-L/H).
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        weights = sum(f.stat().st_size for f in self.path.parent.glob(self.path.name + "*") if f.is_file())
        self.streamable = self.threads >= 2 and weights < 1 << 30
        self._queue: _StreamQueue | None = None
        self._core, self._config = core, config
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.compiled_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(self, feeds: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        arrays = {name: np.ascontiguousarray(tensor.detach().cpu().numpy()) for name, tensor in feeds.items()}
        batch = len(next(iter(arrays.values())))
        if not self.streamable or batch < 2:
            results = self.request.infer(arrays)
            return [torch.from_numpy(np.array(results[port], dtype=np.float32)) for port in self.compiled.outputs]
        return [torch.from_numpy(part) for part in self._stream_queue().run(arrays, batch)]

    def _stream_queue(self) -> _StreamQueue:
        if self._queue is None:
            # read again rather than kept: the parsed graph holds a copy of the weights
            streamed = self._core.compile_model(self._core.read_model(str(self.path)), "CPU",
                                                {**self._config, "PERFORMANCE_HINT": "THROUGHPUT",
                                                 "NUM_STREAMS": str(self.threads)})
            self._queue = _StreamQueue(import_openvino(), streamed, self.threads)
        return self._queue


class _StreamQueue:
    """One batch split along its first axis over the streams of a THROUGHPUT-compiled model, joined in order.
    Inputs whose first axis is not the batch (a 1x1 mask input, has_mask_input) go to every part whole."""

    def __init__(self, ov, compiled, streams: int) -> None:
        self.streams = streams
        self.queue = ov.AsyncInferQueue(compiled, streams)
        self.parts: list = []
        self.queue.set_callback(self._done)

    def _done(self, request, index: int) -> None:
        self.parts[index] = [np.array(tensor.data, dtype=np.float32) for tensor in request.output_tensors]

    def run(self, arrays: dict[str, np.ndarray], batch: int) -> list[np.ndarray]:
        bounds = np.linspace(0, batch, min(self.streams, batch) + 1).round().astype(int)
        self.parts = [None] * (len(bounds) - 1)
        for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            part = {name: (a[lo:hi] if a.ndim >= 2 and a.shape[0] == batch else a) for name, a in arrays.items()}
            self.queue.start_async(part, userdata=index)
        self.queue.wait_all()
        return [np.concatenate(outputs) for outputs in zip(*self.parts)]


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, encoder: str | Path | None = None, decoder: str | Path | None = None,
                 precision: str = "fp32", threads: int | None = None, model: str | None = None,
                 checkpoint_sha256: str | None = None) -> None:
        if precision not in HINTS:
            raise UserError(f"the openvino backend runs {' or '.join(HINTS)}, not {precision!r}")
        if encoder is None and decoder is None:
            raise UserError("openvino backend needs an encoder and/or decoder .onnx file")
        self.encoder = OpenVinoModel(encoder, precision, threads) if encoder else None
        self.decoder = OpenVinoModel(decoder, precision, threads) if decoder else None
        self.adopt_artefacts(self.encoder, self.decoder, model, checkpoint_sha256)
        self.precision = precision  # the compute precision (the files are fp32): what a cache fingerprint records
        self.device = "cpu"
        self.multimask = bool((self.decoder.meta if self.decoder else {}).get("multimask", False))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            return super().encode(images)
        return self.encoder.run({self.encoder.input_names[0]: images.float()})[0]

    def decode(self, embeddings, coords, labels, mask_input=None):
        if self.decoder is None:
            return super().decode(embeddings, coords, labels, mask_input)
        mask_input, has_mask = self.mask_inputs(coords, mask_input, embeddings)
        values = (embeddings.float(), coords.float(), labels.long(), mask_input.float(), has_mask.float())
        masks, iou = self.decoder.run(dict(zip(self.decoder.input_names, values)))
        return masks, iou

    def describe(self) -> dict:
        ov = import_openvino()
        parts = {part: {"path": str(item.path), "inference_precision": item.compiled_precision}
                 for part, item in (("encoder", self.encoder), ("decoder", self.decoder)) if item is not None}
        return {"backend": self.name, "model": self.model, "precision": self.precision, "device": self.device,
                "openvino": ov.__version__, **parts}
