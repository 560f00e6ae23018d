"""`predict`: a trained student's masks for every case of a data set, written in the data's own format (NIfTI on
the image's affine, LA h5, PNG) by `Dataset.write_mask`, with a record of what made them (`predict.json`). The
student is loaded by `nets.load_student`, each mask made by `inference.predict_mask`."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from .checkpoints import find_checkpoint
from .data import Dataset
from .errors import UserError
from .fsutil import write_json
from .inference import predict_mask
from .nets import load_student

__all__ = ["predict"]


def predict(checkpoint_or_run: str | Path, dataset: Dataset, out: str | Path, case_ids: Sequence[str] | None = None,
            weights: str = "student", threshold: float = 0.5, keep_largest: bool = False, device: str = "cpu",
            progress: bool = True) -> list[Path]:
    """Write the student's mask of each case (default: every case of `dataset`; images only, labels never read)
    under `out`; returns the written files. `checkpoint_or_run`: a run folder (its final, else newest, checkpoint)
    or a checkpoint file."""
    source = Path(checkpoint_or_run)
    checkpoint = find_checkpoint(source) if source.is_dir() else source
    net, config = load_student(checkpoint, weights=weights, device=device)
    case_ids = list(dataset.case_ids if case_ids is None else case_ids)
    if not case_ids:
        raise UserError("no cases to predict")
    out = Path(out)
    written = []
    for case_id in tqdm(case_ids, desc="predict", unit="case", disable=not progress, dynamic_ncols=True):
        image = dataset.load(case_id, with_label=False).image
        written.append(dataset.write_mask(case_id, predict_mask(net, image, config, threshold, keep_largest, device),
                                          out))
    write_json(out / "predict.json", {"checkpoint": str(checkpoint), "weights": weights, "threshold": threshold,
                                      "keep_largest": keep_largest, "data": str(dataset.root),
                                      "format": dataset.format, "cases": case_ids,
                                      "masks": [str(p) for p in written]})
    return written
