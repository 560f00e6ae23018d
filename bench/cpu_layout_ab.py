"""Side by side, one process, best and median of 3: two CPU speed-ups that a flag turns off.
- OpenVINO bf16 splitting a batch over single-threaded streams vs one request (the LiteMedSAM encoder at batch 4,
  the decoder at 16 LA box prompts per call);
- 2D prediction with the U-Net channels-last (what `inference.predict_volume_2d` does on the CPU) vs the plain layout,
  on 4 LA volumes with a la-cpu U-Net.
    SEMISAM_LA_DIR=../shared/data/la2018 python bench/cpu_layout_ab.py [ENGINES]
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from semisam_fast import inference
from semisam_fast.backends.openvino_backend import OpenVinoBackend
from semisam_fast.data import open_dataset
from semisam_fast.formats import DEFAULT_FOLDER, artefact_path
from semisam_fast.models import Frame, load_model
from semisam_fast.prompter import SamPrompter
from semisam_fast.nets import build_student
from semisam_fast.samples import load_samples
from semisam_fast.train import preset

engines = Path(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_FOLDER)
torch.manual_seed(0)
loaded = load_model("litemedsam")
samples = load_samples(16)
frame = Frame(samples.slices.shape[1], samples.slices.shape[2], loaded.spec.image_size)
images = torch.cat([loaded.preprocess(s[None]) for s in samples.slices])
backend = OpenVinoBackend(encoder=artefact_path(engines, "litemedsam", "encoder", "fp32"),
                          decoder=artefact_path(engines, "litemedsam", "decoder", "fp32"), precision="bf16")
embeddings = backend.encode(images)
config = preset("la-cpu").as_dict()
net = build_student(config["student"], **config["student_kwargs"])
dataset = open_dataset(os.environ["SEMISAM_LA_DIR"])
volumes = [dataset.load(c, with_label=False).image for c in dataset.case_ids[:4]]
plain_eval = inference._eval_mode


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


results: dict[str, list[float]] = {}
for _ in range(3):
    for streams in (False, True):
        backend.encoder.streamable = backend.decoder.streamable = streams
        name = "streams" if streams else "one request"
        results.setdefault(f"encoder b4, {name} (slices/s)", []).append(
            8 / timed(lambda: [backend.encode(images[i:i + 4]) for i in (0, 4)]))
        results.setdefault(f"decoder, {name} (prompts/s)", []).append(
            16 / timed(lambda: SamPrompter.of(backend).decode_from_masks(embeddings, samples.labels, frame)))
    for channels_last in (False, True):
        inference._eval_mode = (plain_eval if channels_last else
                                lambda module, channels_last=False: plain_eval(module, False))
        with torch.inference_mode():
            seconds = timed(lambda: [inference.predict_case(net, v, config) for v in volumes])
        results.setdefault(f"U-Net prediction, {'channels-last' if channels_last else 'plain'} (volumes/s)",
                           []).append(len(volumes) / seconds)
    inference._eval_mode = plain_eval
for name, values in results.items():
    print(f"{name}: best {max(values):.2f}, median {sorted(values)[1]:.2f}")
