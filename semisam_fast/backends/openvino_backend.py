"""OpenVINO backend: the same exported ONNX files, compiled for the CPU by OpenVINO, in f32 or (on a CPU with BF16)
bf16. OpenVINO is an optional extra (`pip install 'semisam-fast[openvino]'`); without it this backend says so."""
from __future__ import annotations

from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..artefact import read_sidecar
from ..errors import UserError
from ..formats import OPENVINO
from .base import ArtefactBackend, check_graph

HINTS = {"fp32": "f32", "bf16": "bf16"}  # our precision names -> OpenVINO's inference precision hint
# the element types of the graphs' inputs -> the torch dtype a feed is cast to (what the graph takes)
_TORCH_DTYPES = {"f32": torch.float32, "f16": torch.float16, "i64": torch.int64, "i32": torch.int32}


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise UserError("OpenVINO is not installed: `pip install 'semisam-fast[openvino]'`") from None
    return openvino


def _dims(port) -> list:
    """A port's shape as ONNX reports it: ints, and a name ("?") for a dynamic dimension."""
    return [d.get_length() if d.is_static else "?" for d in port.get_partial_shape()]


class OpenVinoModel:
    """One .onnx file (with its sidecar) compiled for the CPU at one inference precision."""

    def __init__(self, path: str | Path, precision: str, threads: int | None = None, per_shape: bool = False) -> None:
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
        try:  # the dynamic-batch compile: checks the file, and runs models too large to compile once per shape
            self.compiled = core.compile_model(core.read_model(str(self.path)), "CPU", config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses with long messages
            raise UserError(f"OpenVINO cannot compile {self.path.name}: {str(exc).splitlines()[0][:160]}") from None
        check_graph(self.meta, self.path, [_dims(p) for p in self.compiled.inputs],
                    [_dims(p) for p in self.compiled.outputs])
        self.request = self.compiled.create_infer_request()
        self.input_names = [port.get_any_name() for port in self.compiled.inputs]
        self.input_dtypes = {port.get_any_name(): _TORCH_DTYPES[port.get_element_type().get_type_name()]
                             for port in self.compiled.inputs}
        self.on_gpu = False  # the CPU plugin
        self.compiled_precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.threads = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
        # A batch of 2 or more is split over one single-threaded stream per thread: on 2 cores that beats one
        # two-threaded request by ~5% (the layout nodes between the matmuls do not use both threads). `per_shape`:
        # compiled again for each input shape met, because the CPU plugin merges a transpose into the next reorder
        # only when both shapes are static (the encoder's layout changes around its convolutions then cost nothing:
        # `models/layout.conv_to_tokens`; 1.14x, bench/openvino_per_shape.py). Worth it where a few shapes recur
        # (the encoder's batches), not where each call has its own (a round's decoder calls, one per case). Models
        # over 1 GiB (ViT-L/H) keep one compile and one request. Either way each item's arithmetic is its own
        # (tests/test_openvino.py).
        weights = sum(f.stat().st_size for f in self.path.parent.glob(self.path.name + "*") if f.is_file())
        small = weights < 1 << 30
        self.per_shape = per_shape and small
        self.streamable = self.threads >= 2 and small
        self._core, self._config = core, config
        self._compiles: OrderedDict[tuple, tuple] = OrderedDict()  # (shapes or None, streamed) -> compile, requests
        self._last_compiled = self.compiled  # the compile that ran last: whose kernels `kernels` reports

    def run(self, feeds: dict[str, torch.Tensor], output_shapes: list | None = None) -> list[torch.Tensor]:
        """Inputs by name, cast to the graph's types; the outputs' shapes come from the compile (`output_shapes`
        is for runtimes that bind outputs in place)."""
        arrays = {name: np.ascontiguousarray(tensor.detach().to(self.input_dtypes[name]).cpu().numpy())
                  for name, tensor in feeds.items()}
        batch = len(next(iter(arrays.values())))
        parts = split_batch(arrays, batch, self.threads if self.streamable else 1)
        streamed = len(parts) > 1
        running = []
        for part in parts:
            requests = self._requests_for(part, streamed)
            request = requests[sum(r in requests for r in running)]  # parts of one shape take its requests in turn
            request.start_async(part)
            running.append(request)
        outputs = []
        for request in running:
            request.wait()
            outputs.append([np.array(tensor.data, dtype=np.float32) for tensor in request.output_tensors])
        return [torch.from_numpy(np.concatenate(joined)) for joined in zip(*outputs)]

    def _requests_for(self, arrays: dict[str, np.ndarray], streamed: bool) -> list:
        shapes = tuple(arrays[name].shape for name in self.input_names) if self.per_shape else None
        if shapes is None and not streamed:
            self._last_compiled = self.compiled
            return [self.request]
        key = (shapes, streamed)
        if key in self._compiles:
            self._compiles.move_to_end(key)
            self._last_compiled, requests = self._compiles[key]
            return requests
        if len(self._compiles) >= SHAPES_KEPT:
            self._compiles.popitem(last=False)
        model = self._core.read_model(str(self.path))  # read again rather than kept: it holds a copy of the weights
        if shapes is not None:
            model.reshape(dict(zip(self.input_names, shapes)))
        config = self._config
        if streamed:
            config = {**config, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(self.threads)}
        compiled = self._core.compile_model(model, "CPU", config)
        requests = [compiled.create_infer_request() for _ in range(self.threads if streamed else 1)]
        self._compiles[key] = (compiled, requests)
        self._last_compiled = compiled
        return requests

    def kernels(self) -> dict[str, int]:
        """The CPU plugin's kernel per compute node of the compile that ran last, counted ("FullyConnected
        brgemm_avx512_bf16": 40): which ISA and precision OpenVINO really picked. Dynamic shapes read "undef" until
        a first inference."""
        found = Counter()
        for op in self._last_compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer = info["layerType"].astype(str) if "layerType" in info else ""
            if layer in COMPUTE_LAYERS:
                found[f"{layer} {info['primitiveType'].astype(str)}"] += 1
        return dict(found.most_common())


COMPUTE_LAYERS = ("FullyConnected", "MatMul", "Convolution", "GroupConvolution", "Deconvolution", "Subgraph")
SHAPES_KEPT = 8  # compiles kept per model: an embed run meets its batch and the smaller last ones of volumes


def split_batch(arrays: dict[str, np.ndarray], batch: int, parts: int) -> list[dict[str, np.ndarray]]:
    """A batch as up to `parts` near-equal parts along its first axis. Inputs whose first axis is not the batch
    (a 1x1 mask input, has_mask_input) go to every part whole."""
    bounds = np.linspace(0, batch, min(parts, batch) + 1).round().astype(int)
    return [{name: (a[lo:hi] if a.ndim >= 2 and a.shape[0] == batch else a) for name, a in arrays.items()}
            for lo, hi in zip(bounds[:-1], bounds[1:])]


class OpenVinoBackend(ArtefactBackend):
    format = OPENVINO
    name = OPENVINO.runtime

    def __init__(self, encoder: str | Path | None = None, decoder: str | Path | None = None,
                 precision: str = "fp32", threads: int | None = None, model: str | None = None,
                 checkpoint_sha256: str | None = None) -> None:
        if precision not in HINTS:
            raise UserError(f"the openvino backend runs {' or '.join(HINTS)}, not {precision!r}")
        # the encoder compiles once per input shape (its batches recur); the decoder keeps one dynamic compile
        self.open_parts(lambda path, part: OpenVinoModel(path, precision, threads, per_shape=part == "encoder"),
                        encoder, decoder, model, checkpoint_sha256)
        self.precision = precision  # the compute precision (the files are fp32): what a cache fingerprint records

    @classmethod
    def open(cls, parts: dict[str, Path], device: str = "cpu", precision: str | None = None,
             provider: str | None = None, **kwargs) -> OpenVinoBackend:
        return cls(**parts, precision=precision or "fp32", **kwargs)  # compiles the fp32 files in `precision`

    def describe(self) -> dict:
        ov = import_openvino()
        parts = {part: {"path": str(item.path), "inference_precision": item.compiled_precision,
                        "kernels": item.kernels()}
                 for part, item in (("encoder", self.encoder), ("decoder", self.decoder)) if item is not None}
        return {"backend": self.name, "model": self.model, "precision": self.precision, "device": self.device,
                "openvino": ov.__version__, **parts}
