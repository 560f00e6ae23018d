"""Collect <out>/l{N}_{method}_s{seed}/eval.json (and eval_largest.json) into tables: mean ± sample sd over seeds of
each run's mean, the number of empty predictions (their 95HD/ASD are undefined and left out of those means), the
paired per-case difference semisam - mt, and the gated SAM targets of semisam runs. JSON copy in <out>/table.json
(or the second argument; copy it into bench/results/ by hand: a rerun never overwrites a committed result), with
each run's per-case Dice."""
import json
import re
import sys
from pathlib import Path

import numpy as np

from semisam_fast.fsutil import write_json

ORDER = ["sup", "mt", "uamt", "semisam"]


def rank(key: tuple[int, str]) -> tuple:
    """Label setting, then ORDER, then any other method (a diagnostic such as oracle) by name."""
    labeled, method = key
    return labeled, ORDER.index(method) if method in ORDER else len(ORDER), method

out = Path(sys.argv[1])
json_out = Path(sys.argv[2]) if len(sys.argv) > 2 else out / "table.json"


def runs(name: str) -> dict:
    found: dict = {}
    for path in sorted(out.glob(f"l*_*_s*/{name}")):
        labeled, method, seed = re.fullmatch(r"l(\d+)_(\w+)_s(\d+)", path.parent.name).groups()
        found.setdefault((int(labeled), method), {})[int(seed)] = json.loads(path.read_text())
    return found


def fmt(values: list[float]) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.3f} (1 seed)"
    return f"{np.nanmean(values):.3f} ± {np.nanstd(values, ddof=1):.3f}"


result: dict = {"tables": {}, "paired": {}, "targets": {}}
for name, title in (("eval.json", "prediction > 0.5"), ("eval_largest.json", "largest connected component")):
    found = runs(name)
    if not found:
        continue
    print(f"\n**Validation ({title})**\n")
    print("| labelled | method | seeds | Dice | Jaccard | precision | recall | 95HD (vox) | ASD (vox) | empty predictions |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for (labeled, method), by_seed in sorted(found.items(), key=lambda kv: rank(kv[0])):
        # evaluations older than precision and recall lack them: nan
        means = {k: [doc["summary"].get(k, {"mean": np.nan})["mean"] for doc in by_seed.values()]
                 for k in ("dice", "jaccard", "precision", "recall", "hd95", "asd")}
        empty = sum(1 for doc in by_seed.values() for case in doc["cases"] if case["hd95"] is None)
        total = sum(len(doc["cases"]) for doc in by_seed.values())
        # per case too, so that a committed table can still be paired once its run folders are gone
        per_case = {seed: {case["case"]: case["dice"] for case in doc["cases"]} for seed, doc in by_seed.items()}
        rows.append({"labeled": labeled, "method": method, "seeds": sorted(by_seed), "empty": empty, "cases": total,
                     "per_case_dice": per_case,
                     **{k: {"per_seed": v, "mean": float(np.nanmean(v)),
                            "sd": float(np.nanstd(v, ddof=1)) if len(v) > 1 else None} for k, v in means.items()}})
        print(f"| {labeled} | {method} | {len(by_seed)} | " + " | ".join(fmt(v) for v in means.values())
              + f" | {empty} of {total} |")
    result["tables"][name] = rows
    for labeled in sorted({k[0] for k in found}):
        a, b = found.get((labeled, "semisam"), {}), found.get((labeled, "mt"), {})
        diffs = [ca["dice"] - cb["dice"] for seed in sorted(set(a) & set(b))
                 for ca, cb in zip(a[seed]["cases"], b[seed]["cases"]) if ca["case"] == cb["case"]]
        if diffs:
            d = np.asarray(diffs)
            result["paired"][f"{name}:{labeled}"] = {"mean": float(d.mean()), "sd": float(d.std(ddof=1)),
                                                     "wins": int((d > 0).sum()), "pairs": len(d)}
            print(f"\nPaired per case, {labeled} labelled, semisam - mt Dice over {len(d)} (seed, case) pairs: "
                  f"{d.mean():+.3f} ± {d.std(ddof=1):.3f}, semisam better in {(d > 0).sum()} of {len(d)}")
targets = {}
for path in sorted(out.glob("l*_semisam_s*/targets/report.json")):
    summary = json.loads(path.read_text()).get("summary", {})
    targets[path.parent.parent.name] = {k: v["mean"] for k, v in summary.items()}
if targets:
    print("\n**Gated LiteMedSAM targets of the final teacher on the run's unlabelled cases**\n")
    print("| run | teacher Dice | target Dice on covered slices | teacher Dice on those slices | coverage |")
    print("|---|---|---|---|---|")
    for run, s in targets.items():
        print(f"| {run} | {s['teacher_dice']:.3f} | {s['target_dice_on_valid']:.3f} | {s['teacher_dice_on_valid']:.3f} "
              f"| {s['coverage']:.2f} |")
result["targets"] = targets
write_json(json_out, result)
