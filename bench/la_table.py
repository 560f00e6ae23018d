"""Collect <out>/l{N}_{method}_s{seed}/eval.json into a mean ± sample sd (over seeds) table; JSON copy in
bench/results/."""
import json
import re
import sys
from pathlib import Path

import numpy as np

out = Path(sys.argv[1])
results: dict = {}
for path in sorted(out.glob("l*_*_s*/eval.json")):
    labeled, method, seed = re.match(r"l(\d+)_(\w+)_s(\d+)", path.parent.name).groups()
    summary = json.loads(path.read_text())["summary"]
    results.setdefault((int(labeled), method), []).append({k: v["mean"] for k, v in summary.items()})
rows = []
print("| labelled | method | seeds | Dice | Jaccard | 95HD (vox) | ASD (vox) |")
print("|---|---|---|---|---|---|---|")
for (labeled, method), runs in sorted(results.items(), key=lambda kv: (kv[0][0], ["sup", "mt", "uamt", "semisam"].index(kv[0][1]))):
    cells = []
    row = {"labeled": labeled, "method": method, "seeds": len(runs)}
    for key in ("dice", "jaccard", "hd95", "asd"):
        values = np.array([r[key] for r in runs], dtype=float)
        # sample sd over seeds (ddof=1); none from a single seed
        sd = float(np.nanstd(values, ddof=1)) if len(values) > 1 else None
        row[key] = {"mean": float(np.nanmean(values)), "sd": sd}
        cells.append(f"{row[key]['mean']:.3f} ± {sd:.3f}" if sd is not None else f"{row[key]['mean']:.3f} (1 seed)")
    rows.append(row)
    print(f"| {labeled} | {method} | {len(runs)} | " + " | ".join(cells) + " |")
Path("bench/results").mkdir(parents=True, exist_ok=True)
Path("bench/results/la_cpu_experiment.json").write_text(json.dumps(rows, indent=2))
