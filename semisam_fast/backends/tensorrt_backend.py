"""TensorRT backend (TensorRT >= 10 Python API): tensors bound by address, asynchronous execution on torch's
current CUDA stream. Import-guarded: TensorRT cannot be installed on the CPU development machines."""
from __future__ import annotations

from pathlib import Path

import torch

from ..artefact import read_sidecar
from ..errors import UserError
from ..formats import ENGINE
from .base import ArtefactBackend


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise UserError("TensorRT is not installed: `pip install 'semisam-fast[gpu]'` on a machine with an NVIDIA GPU, "
                        "or use the onnxruntime backend") from None
    if int(trt.__version__.split(".")[0]) < 10:
        raise UserError(f"TensorRT {trt.__version__} is too old: the engine code uses the TensorRT 10 API")
    return trt


_TORCH_DTYPES = {"FLOAT": torch.float32, "HALF": torch.float16, "INT64": torch.int64, "INT32": torch.int32,
                 "BF16": torch.bfloat16}


class TrtEngine:
    """One deserialised engine with its execution context."""

    def __init__(self, path: str | Path) -> None:
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise UserError("the TensorRT backend needs a CUDA device")
        self.path = Path(path)
        self.meta = read_sidecar(self.path)
        if self.meta.get("tensorrt") != trt.__version__:
            raise UserError(f"{self.path} was built with TensorRT {self.meta.get('tensorrt')}, this is "
                            f"{trt.__version__}: rebuild it with `semisam-fast export --format engine`")
        major, minor = torch.cuda.get_device_capability()
        if self.meta.get("sm") != f"{major}{minor}":
            raise UserError(f"{self.path} was built for SM {self.meta.get('sm')}, this GPU is SM {major}{minor}")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT could not deserialise {self.path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.input_names = self.inputs
        self.on_gpu = True

    def _dtype(self, name: str) -> torch.dtype:
        return _TORCH_DTYPES[self.engine.get_tensor_dtype(name).name]

    def run(self, feeds: dict[str, torch.Tensor], output_shapes: list | None = None) -> list[torch.Tensor]:
        """Inputs by name, cast to the engine's types; the outputs' shapes come from the context."""
        keep = []  # inputs must stay alive until the stream has consumed them
        for name in self.inputs:
            tensor = feeds[name].to(device="cuda", dtype=self._dtype(name)).contiguous()
            keep.append(tensor)
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                raise UserError(f"input {name} of shape {tuple(tensor.shape)} is outside the optimisation profile of "
                                f"{self.path.name}; re-export with `--batch MIN,OPT,MAX` covering it")
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = []
        for name in self.outputs:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtype(name), device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            shapes = {name: tuple(feeds[name].shape) for name in self.inputs}
            raise UserError(f"TensorRT could not run {self.path.name} on inputs {shapes}: outside the engine's batch "
                            "profile, or the GPU is out of memory (re-export with another --batch)")
        stream.synchronize()
        return [o.float() for o in outputs]


class TensorRTBackend(ArtefactBackend):
    format = ENGINE
    name = ENGINE.runtime

    def __init__(self, encoder: str | Path | None = None, decoder: str | Path | None = None,
                 model: str | None = None, checkpoint_sha256: str | None = None) -> None:
        self.open_parts(lambda path, part: TrtEngine(path), encoder, decoder, model, checkpoint_sha256)

    def describe(self) -> dict:
        import tensorrt as trt

        return {"backend": self.name, "model": self.model, "precision": self.precision, "device": "cuda",
                "tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(),
                **{p: str(e.path) for p, e in (("encoder", self.encoder), ("decoder", self.decoder)) if e}}
