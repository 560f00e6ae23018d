"""onnxruntime backend: CPU, CUDA and TensorRT execution providers; I/O binding keeps GPU tensors on the GPU."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from ..artefact import read_sidecar
from ..errors import UserError
from ..formats import ONNX
from .base import ArtefactBackend, check_graph

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_NP = {torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64}


def session_options(threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is None and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) > 1:
        # under torchrun the node's cores are shared out (onnxruntime ignores OMP_NUM_THREADS, which torchrun sets)
        threads = max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"]))
    if threads:
        options.intra_op_num_threads = threads
    return options


class OnnxSession:
    """One .onnx file, its sidecar, and the provider it really got."""

    def __init__(self, path: str | Path, provider: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        if provider not in PROVIDERS:
            raise UserError(f"unknown onnxruntime provider {provider!r}; choose one of {', '.join(PROVIDERS)}")
        wanted = [p for p in PROVIDERS[provider] if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=session_options(threads),
                                                providers=wanted)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise UserError(f"onnxruntime cannot load {self.path}: {str(exc).splitlines()[0][:160]}") from None
        self.provider = self.session.get_providers()[0]
        self.fell_back = provider != "cpu" and self.provider == "CPUExecutionProvider"
        if self.fell_back:
            log.warning("onnxruntime: asked for %s but the session runs on CPUExecutionProvider (%s)",
                        provider, self.path.name)
        self.on_gpu = self.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_types = {i.name: i.type for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_dtypes = [torch.float16 if "float16" in o.type else torch.float32
                              for o in self.session.get_outputs()]
        check_graph(self.meta, self.path, [list(i.shape) for i in self.session.get_inputs()],
                    [list(o.shape) for o in self.session.get_outputs()])

    def _cast(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        kind = self.input_types[name]
        dtype = torch.float16 if "float16" in kind else torch.int64 if "int64" in kind else torch.float32
        return tensor.to(dtype).contiguous()

    def run(self, feeds: dict[str, torch.Tensor], output_shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        """Inputs by name, cast to the graph's types; `output_shapes` size the outputs bound in CUDA memory."""
        feeds = {name: self._cast(name, t) for name, t in feeds.items()}
        if self.on_gpu:
            return self._run_bound(feeds, output_shapes)
        outs = self.session.run(self.output_names, {k: v.cpu().numpy() for k, v in feeds.items()})
        return [torch.from_numpy(np.ascontiguousarray(o)).float() for o in outs]

    def _run_bound(self, feeds: dict[str, torch.Tensor], output_shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
        # I/O binding: inputs read and outputs written in place in CUDA memory, no host round trip.
        binding = self.session.io_binding()
        device_id = torch.cuda.current_device()
        for name, tensor in feeds.items():
            tensor = tensor.to(f"cuda:{device_id}")
            feeds[name] = tensor  # keep alive until run returns
            binding.bind_input(name, "cuda", device_id, _NP[tensor.dtype], list(tensor.shape), tensor.data_ptr())
        outputs = []
        for name, shape, dtype in zip(self.output_names, output_shapes, self.output_dtypes):
            out = torch.empty(shape, dtype=dtype, device=f"cuda:{device_id}")
            binding.bind_output(name, "cuda", device_id, _NP[dtype], list(shape), out.data_ptr())
            outputs.append(out)
        self.session.run_with_iobinding(binding)
        return [o.float() for o in outputs]


class OnnxBackend(ArtefactBackend):
    format = ONNX
    name = ONNX.runtime

    def __init__(self, encoder: str | Path | None = None, decoder: str | Path | None = None, provider: str = "cpu",
                 threads: int | None = None, model: str | None = None, checkpoint_sha256: str | None = None) -> None:
        self.open_parts(lambda path, part: OnnxSession(path, provider, threads), encoder, decoder, model,
                        checkpoint_sha256)

    @classmethod
    def open(cls, parts: dict[str, Path], device: str = "cpu", precision: str | None = None,
             provider: str | None = None, **kwargs) -> OnnxBackend:
        # the provider follows the device unless one is named (onnxruntime's own TensorRT provider)
        return cls(**parts, provider=provider or ("cuda" if device.startswith("cuda") else "cpu"), **kwargs)

    def describe(self) -> dict:
        import onnxruntime as ort

        parts = {}
        for part, sess in (("encoder", self.encoder), ("decoder", self.decoder)):
            if sess is not None:
                parts[part] = {"path": str(sess.path), "provider": sess.provider, "fell_back_to_cpu": sess.fell_back}
        return {"backend": self.name, "model": self.model, "precision": self.precision, "device": self.device,
                "onnxruntime": ort.__version__, **parts}
