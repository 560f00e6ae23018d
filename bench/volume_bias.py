"""Does a student over- or under-segment? For each run, its validation predictions (probability > 0.5, as
`semisam-fast evaluate`) against the labels: predicted volume / label volume, precision and recall per case, and
their means. Labels are read only to score.

  python bench/volume_bias.py runs/r3/l4_sup_s0 runs/r3/l4_semisam_s0 [--out F.json]"""
import argparse
from pathlib import Path

import numpy as np

from semisam_fast.checkpoints import find_checkpoint, read_run_record
from semisam_fast.data import open_dataset
from semisam_fast.fsutil import write_json
from semisam_fast.inference import predict_mask
from semisam_fast.nets import load_student


def run_bias(run_dir: Path) -> dict:
    run = read_run_record(run_dir)
    net, config = load_student(find_checkpoint(run_dir), weights="student", device="cpu")
    dataset = open_dataset(run["data"], run.get("list"))
    rows = []
    for case_id in run["val_cases"]:
        case = dataset.load_labelled(case_id)
        pred, label = predict_mask(net, case.image, config, 0.5, False, "cpu") > 0, case.label > 0
        overlap = float((pred & label).sum())
        rows.append({"case": case_id, "volume_ratio": float(pred.sum() / label.sum()),
                     "precision": overlap / max(float(pred.sum()), 1.0), "recall": overlap / float(label.sum())})
    means = {k: float(np.mean([r[k] for r in rows])) for k in ("volume_ratio", "precision", "recall")}
    return {"run": str(run_dir), "cases": rows, "mean": means}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = [run_bias(run) for run in args.runs]
    for r in results:
        m = r["mean"]
        print(f"{r['run']}: volume / label {m['volume_ratio']:.2f}, precision {m['precision']:.3f}, "
              f"recall {m['recall']:.3f}")
    if args.out is not None:
        write_json(args.out, results)


if __name__ == "__main__":
    main()
