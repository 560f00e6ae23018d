"""One protocol over every runtime: encode images, decode prompts on embeddings (batched over both)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import torch

from ..artefact import check_matches
from ..errors import UserError
from ..formats import Format

# the exported decoder's inputs, in the order the exporter declares them (`export.onnx_export.export_decoder`)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")


def check_graph(meta: dict, path: Path, inputs: list[list], outputs: list[list]) -> None:
    """A graph must be what its sidecar calls it (the model's encoder or decoder, by the shapes of its inputs and
    outputs; dynamic dimensions are names): a sidecar can be rewritten to vouch for any file, the model's spec
    cannot. Refused in one line otherwise (a decoder given as the encoder, another model's graph)."""
    from ..models import get_spec

    spec = get_spec(meta["model"])
    embedding = list(spec.embedding_shape)
    size = spec.image_size
    if meta["part"] == "encoder":
        ok = (len(inputs) == 1 and inputs[0][1:] == [3, size, size] and len(outputs) >= 1
              and outputs[0][1:] == embedding)
        wanted = f"images (N, 3, {size}, {size}) -> embeddings (N, {', '.join(map(str, embedding))})"
    else:
        ok = len(inputs) == 5 and inputs[0][1:] == embedding and len(outputs) == 2
        wanted = f"embeddings (B, {', '.join(map(str, embedding))}) and 4 prompt inputs -> masks, IoU"
    if not ok:
        raise UserError(f"{path} is not a {spec.name} {meta['part']} graph: it takes {inputs} and gives {outputs}, "
                        f"not {wanted}; re-export it with `semisam-fast export`")


class Backend(ABC):
    """encode(N×3×S×S) -> N×256×64×64; decode(embeddings B×256×64×64, coords B×N×P×2, labels B×N×P,
    mask_input B×N×1×256×256 | None) -> (low-res logits B×N×K×256×256, IoU B×N×K). Tensors in, tensors out (fp32)."""

    name: str = "base"
    model: str = ""
    precision: str = "fp32"
    device: str = "cpu"
    checkpoint_sha256: str = ""
    encoder_sha256: str | None = None  # the exported encoder's bytes (None: the checkpoint runs itself, in torch)
    # the checkpoint whose encoder made the embeddings this decoder reads (`models.LoadedModel`; adapted decoders)
    encoder_checkpoint_sha256: str = ""

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise UserError(f"the {self.name} backend was opened without an encoder")

    def decode(self, embeddings: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
               mask_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise UserError(f"the {self.name} backend was opened without a decoder")

    def adopt_artefacts(self, encoder, decoder, model: str | None, checkpoint_sha256: str | None) -> None:
        """For runtimes over exported files (each part with `.meta`, its sidecar, and `.path`): refuse a part made for
        another model, checkpoint or part than asked, or an encoder and decoder of different models; then take the
        backend's model, precision and checkpoint hash from the files themselves."""
        parts = {"encoder": encoder, "decoder": decoder}
        for part, item in parts.items():
            if item is not None:
                check_matches(item.meta, item.path, model=model, checkpoint_sha256=checkpoint_sha256, part=part)
                if (item.meta.get("parity") or {}).get("passed") is False:
                    raise UserError(f"{item.path} failed its parity gate at export (its sidecar says so); "
                                    "re-export it with `semisam-fast export`")
                _refuse_older(item, part)
        if encoder is not None and decoder is not None:
            for key in ("model", "encoder_checkpoint_sha256"):
                if encoder.meta[key] != decoder.meta[key]:
                    raise UserError(f"{encoder.path.name} and {decoder.path.name} come from different {key}s "
                                    f"({encoder.meta[key]!r} vs {decoder.meta[key]!r})")
        first = encoder or decoder
        self.model, self.precision = first.meta["model"], first.meta["precision"]
        self.checkpoint_sha256 = first.meta["checkpoint_sha256"]
        self.encoder_sha256 = encoder.meta["artefact_sha256"] if encoder is not None else None
        self.encoder_checkpoint_sha256 = first.meta["encoder_checkpoint_sha256"]

    @abstractmethod
    def describe(self) -> dict:
        """What actually runs: runtime, device/provider, precision, artefacts."""

    def mask_inputs(self, coords: torch.Tensor, mask_input: torch.Tensor | None,
                    embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill the optional mask prompt: zeros and has_mask_input=0 when none is given, one 1×1 mask for every
        prompt (`PromptDecoder` broadcasts it; exported decoders that do not are refused on open)."""
        if mask_input is not None:
            return mask_input.float(), torch.ones(1)
        side = 4 * embeddings.shape[-1]
        return torch.zeros(1, 1, 1, side, side), torch.zeros(1)

    @property
    def mask_input_broadcasts(self) -> bool:
        decoder = getattr(self, "decoder", None)
        meta = getattr(decoder, "meta", None)
        if meta is None:  # torch: the module itself
            return True
        return _broadcasts(meta)


class ArtefactBackend(Backend):
    """A backend over exported files. Encode and decode are implemented here, once; a runtime supplies a runner per
    part (`encoder`, `decoder`): `path`, `meta` (its sidecar), `input_names`, `on_gpu`, and
    `run(feeds by input name, output shapes) -> fp32 tensors`, which casts each input to what its graph takes (the
    shapes are for runtimes that write outputs in place: onnxruntime's I/O binding)."""

    format: Format  # formats.py: its CLI name, runtime name (`name`) and suffix

    def open_parts(self, runner: Callable[[Path, str], object], encoder: str | Path | None,
                   decoder: str | Path | None, model: str | None, checkpoint_sha256: str | None) -> None:
        """Open each part given with `runner(path, part)`, check them against what was asked (`adopt_artefacts`)."""
        if encoder is None and decoder is None:
            raise UserError(f"{self.name} backend needs an encoder and/or decoder {self.format.suffix} file")
        self.encoder = runner(Path(encoder), "encoder") if encoder else None
        self.decoder = runner(Path(decoder), "decoder") if decoder else None
        self.adopt_artefacts(self.encoder, self.decoder, model, checkpoint_sha256)
        self.device = "cuda" if (self.encoder or self.decoder).on_gpu else "cpu"
        self.multimask = bool((self.decoder.meta if self.decoder else {}).get("multimask", False))

    @classmethod
    def open(cls, parts: dict[str, Path], device: str = "cpu", precision: str | None = None,
             provider: str | None = None, **kwargs) -> ArtefactBackend:
        """The factory's way in (`create_backend`, `open_artefact`): `parts` maps encoder / decoder to files. A
        runtime that runs the export made in one precision takes it from the files (the factory checks it), and
        only onnxruntime has providers: a subclass takes what applies to it."""
        return cls(**parts, **kwargs)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            return super().encode(images)
        from ..models import get_spec

        runner = self.encoder
        shape = tuple(runner.meta.get("embedding_shape") or get_spec(self.model).embedding_shape)
        name = runner.input_names[0]
        if runner.meta.get("per_image"):  # e.g. dynamic int8: one activation scale per batch would couple images
            return torch.cat([runner.run({name: image[None]}, [(1, *shape)])[0] for image in images])
        return runner.run({name: images}, [(images.shape[0], *shape)])[0]

    def decode(self, embeddings: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
               mask_input: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.decoder is None:
            return super().decode(embeddings, coords, labels, mask_input)
        mask_input, has_mask = self.mask_inputs(coords, mask_input, embeddings)
        b, n = coords.shape[0], coords.shape[1]
        k = 3 if self.multimask else 1
        side = 4 * embeddings.shape[-1]
        feeds = dict(zip(DECODER_INPUTS, (embeddings, coords, labels, mask_input, has_mask)))
        masks, iou = self.decoder.run(feeds, [(b, n, k, side, side), (b, n, k)])
        return masks, iou


def _broadcasts(meta: dict) -> bool:
    """Whether an exported decoder takes one mask input for every prompt (what the exporter writes)."""
    return str((meta.get("inputs") or {}).get("mask_input", ["batch"])[0]) != "batch"


def _refuse_older(item, part: str) -> None:
    """One sidecar layout: an artefact exported before its sidecar recorded the embeddings it reads, or a decoder
    exported before it broadcast its mask input, is refused in one line (re-exporting takes seconds)."""
    lacks = [] if "encoder_checkpoint_sha256" in item.meta else ["the encoder checkpoint it reads"]
    if part == "decoder" and not _broadcasts(item.meta):
        lacks.append("a mask input shared by all prompts")
    if lacks:
        raise UserError(f"{item.path} was exported by an older semisam-fast (it records no {' and no '.join(lacks)}"
                        "); re-export it with `semisam-fast export`")
