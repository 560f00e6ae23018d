"""The reference backend: the PyTorch modules themselves (CPU or CUDA; fp32, fp16, bf16; optional torch.compile).
A SAM ViT encoder's attention runs through SDPA (`models/vit_attention.py`) unless `attention="eager"` (or "flex")."""
from __future__ import annotations

import torch

from ..errors import UserError
from ..models import LoadedModel
from ..models.vit_attention import attention_of, set_attention
from .base import Backend

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# the ViT encoder's attention: fused SDPA, FlexAttention (positions inside the kernel; for CUDA), or
# segment-anything's own forward
ATTENTION = ("sdpa", "flex", "eager")


def padded_batch(count: int) -> int:
    """The batch a compiled CUDA-graph encoder runs `count` images in: the next power of two."""
    return 1 << max(count - 1, 0).bit_length()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: LoadedModel, device: str = "cpu", precision: str = "fp32", compile: bool = False,
                 attention: str = "sdpa") -> None:
        if precision not in DTYPES:
            raise UserError(f"torch backend precision must be one of {', '.join(DTYPES)}, not {precision!r}")
        if attention not in ATTENTION:
            raise UserError(f"torch backend attention must be one of {', '.join(ATTENTION)}, not {attention!r}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError("device 'cuda' asked for but torch sees no CUDA device")
        if compile and attention == "flex" and not device.startswith("cuda"):
            # inductor's CPU FlexAttention template cannot take position terms computed inside the same graph
            raise UserError("attention 'flex' inside a compiled encoder is for CUDA; on the CPU use 'sdpa'")
        self.loaded = model
        self.model = model.spec.name
        self.checkpoint_sha256 = model.checkpoint_sha256
        self.encoder_checkpoint_sha256 = model.encoder_checkpoint_sha256
        self.device = device
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.encoder = model.encoder.to(device=device, dtype=self.dtype).eval()
        # in place on the loaded model's encoder (parameters shared); an encoder without ViT attention keeps its own
        set_attention(self.encoder, attention)
        self.decoder = model.decoder.to(device=device, dtype=self.dtype).eval()
        self.compiled = compile
        # on CUDA, "reduce-overhead" captures CUDA graphs: one launch per call instead of one per kernel
        mode = "reduce-overhead" if device.startswith("cuda") else None
        self._encode = torch.compile(self.encoder, mode=mode) if compile else self.encoder
        self._decode = torch.compile(self.decoder, dynamic=True) if compile else self.decoder

    @property
    def attention(self) -> str:
        """What the encoder's attention runs as now (read from the modules: another backend on the same loaded
        model may have switched it)."""
        return attention_of(self.encoder)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        graphed = self.compiled and self.device.startswith("cuda")
        count = images.shape[0]
        images = images.to(device=self.device, dtype=self.dtype)
        if graphed:
            # each batch size is its own compile and capture (~35 s on an H200): pad to a power of two so a pass
            # whose last batches vary meets a few of them; the encoder treats images independently
            images = torch.cat([images, images.new_zeros(padded_batch(count) - count, *images.shape[1:])])
            torch.compiler.cudagraph_mark_step_begin()  # the previous replay's outputs may be overwritten from here
        out = self._encode(images)[:count]
        # a graph replay writes into the same static buffer every call: hand out a copy the caller may keep
        return out.clone() if graphed and out.dtype == torch.float32 else out.float()

    @torch.inference_mode()
    def decode(self, embeddings, coords, labels, mask_input=None):
        mask_input, has_mask = self.mask_inputs(coords, mask_input, embeddings)
        dev = self.device
        masks, iou = self._decode(embeddings.to(dev, self.dtype), coords.to(dev, torch.float32),
                                  labels.to(dev, torch.int64), mask_input.to(dev, self.dtype), has_mask.to(dev))
        return masks.float(), iou.float()

    def describe(self) -> dict:
        return {"backend": self.name, "model": self.model, "device": self.device, "precision": self.precision,
                "compile": self.compiled, "attention": self.attention, "torch": torch.__version__}
