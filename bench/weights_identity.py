"""The fixed script of a refactoring pass: train every method configuration a few iterations on a phantom (tiny SAM,
fixed seed) and print one sha256 per configuration over the final student's and teacher's weights. Run it before and
after a change that should not move any number; the two JSON files must be equal.

    python bench/weights_identity.py --out before.json   # ... change ...   python bench/weights_identity.py --check before.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

from semisam_fast.backends import TorchBackend
from semisam_fast.data import make_phantom, open_dataset, split_cases
from semisam_fast.embed import build_cache
from semisam_fast.models import load_model
from semisam_fast.train import build_trainer, preset

SMALL_2D = dict(in_plane=64, crop=48, labelled_batch=2, unlabelled_batch=2, val_every=3, save_every=3,
                unlabelled_cases=None, unlabelled_every=1, student_kwargs={"base": 8}, sam_ramp="none",
                sam_weight=1.0, sam_round_every=2, sam_min_agreement=0.0, iterations=6)
SMALL_3D = dict(iterations=3, patch=[32, 32, 16], labelled_batch=1, unlabelled_batch=1,
                student_kwargs={"n_filters": 4}, uamt_samples=2, val_every=3, save_every=3, sam_ramp="none",
                sam_weight=1.0, sam_round_every=1, sam_min_agreement=0.0)
# the per-step term needs predicted foreground within the first steps (no foreground, no prompt, no term): a high
# rate gets it there, so the tiny random SAM's masks move the weights
STEP = dict(sam_mode="step", lr=0.05, iterations=8)

CONFIGS: dict[str, tuple[str, dict]] = {
    "2d-sup": ("la-cpu", dict(SMALL_2D, method="sup")),
    "2d-mt": ("la-cpu", dict(SMALL_2D, method="mt")),
    "2d-uamt": ("la-cpu", dict(SMALL_2D, method="uamt")),
    "2d-semisam-rounds": ("la-cpu", dict(SMALL_2D, method="semisam")),
    "2d-semisam-rounds-mean-agree": ("la-cpu", dict(SMALL_2D, method="semisam", sam_fusion="mean",
                                                    sam_pixels="agree", sam_min_agreement=0.1)),
    "2d-semisam-step": ("la-cpu", dict(SMALL_2D, method="semisam", **STEP)),
    "2d-semisam-step-teacher": ("la-cpu", dict(SMALL_2D, method="semisam", **STEP,
                                               sam_prompt_from="teacher")),
    "2d-semisam-online": ("la-cpu", dict(SMALL_2D, method="semisam", **STEP, sam_online=True)),
    "3d-sup": ("la-paper", dict(SMALL_3D, method="sup")),
    "3d-mt": ("la-paper", dict(SMALL_3D, method="mt")),
    "3d-uamt": ("la-paper", dict(SMALL_3D, method="uamt")),
    "3d-semisam-rounds": ("la-paper", dict(SMALL_3D, method="semisam")),
    "3d-semisam-step": ("la-paper", dict(SMALL_3D, method="semisam", **STEP)),
}


def weights_digest(state: dict) -> str:
    digest = hashlib.sha256()
    for part in ("student", "teacher"):
        for name, tensor in (state.get(part) or {}).items():
            digest.update(f"{part}.{name}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_all(work: Path, only: list[str] | None = None) -> dict[str, str]:
    torch.set_num_threads(1)  # the same reductions on every machine and load
    root = make_phantom(work / "phantom", n_cases=5, shape=(64, 64, 8), seed=1)
    dataset = open_dataset(root)
    split = split_cases(dataset.case_ids, labeled=2, val=1)
    cache = work / "cache"
    build_cache(dataset, TorchBackend(load_model("tiny")), cache, case_ids=split.unlabeled, batch=8, progress=False)
    digests = {}
    for name, (preset_name, settings) in CONFIGS.items():
        if only and name not in only:
            continue
        trainer = build_trainer(preset(preset_name, **settings), root, None, labeled=2, val=1, run_dir=work / name,
                                cache=cache, tensorboard=False)
        trainer.run(progress=False)
        digests[name] = weights_digest(trainer.state())
        print(f"{name:32s} {digests[name][:16]}", file=sys.stderr)
    return digests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the digests here")
    parser.add_argument("--check", type=Path, help="compare with the digests in this file")
    parser.add_argument("--only", nargs="*", help="these configurations only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        digests = run_all(Path(tmp), args.only)
    if args.out:
        args.out.write_text(json.dumps(digests, indent=1) + "\n")
    if args.check:
        want = json.loads(args.check.read_text())
        moved = [k for k in want if k in digests and want[k] != digests[k]]
        print("identical" if not moved else f"MOVED: {', '.join(moved)}")
        return 1 if moved else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
