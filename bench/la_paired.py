"""Two methods' validation runs side by side, paired per (seed, case): each method's mean ± sample sd over seeds of a
run's mean Dice, the per-case difference A - B with the number of pairs A wins, and each case's means over the
seeds (one hard case can carry a whole mean difference: the last line leaves out the case that moves it most).

  python bench/la_paired.py RUNS 2 semisamAM sup [eval.json|eval_largest.json]

RUNS holds l{N}_{method}_s{seed}/ run folders, each evaluated (`semisam-fast evaluate --run RUN [--largest --out
RUN/eval_largest.json]`)."""
import json
import sys
from pathlib import Path

import numpy as np

root, labelled, a, b = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
name = sys.argv[5] if len(sys.argv) > 5 else "eval.json"


def per_case(method: str) -> dict[int, dict[str, float]]:
    out = {}
    for run in sorted(p for p in root.glob(f"l{labelled}_{method}_s*") if (p / name).is_file()):  # finished
        rows = json.loads((run / name).read_text())["cases"]
        out[int(run.name.rsplit("_s", 1)[1])] = {r["case"]: r["dice"] for r in rows}
    return out


runs = {m: per_case(m) for m in (a, b)}
missing = [m for m, seeds in runs.items() if not seeds]
if missing:
    sys.exit(f"no finished l{labelled}_{missing[0]}_s* run (with {name}) in {root}")
for m, seeds in runs.items():
    means = [np.mean(list(cases.values())) for cases in seeds.values()]
    print(f"{m}: Dice {np.mean(means):.3f} ± {np.std(means, ddof=1) if len(means) > 1 else 0:.3f} over seeds "
          f"{sorted(seeds)} ({', '.join(f'{x:.3f}' for x in means)})")
pairs = [runs[a][s][c] - runs[b][s][c] for s in runs[a] if s in runs[b] for c in runs[a][s]]
print(f"{a} - {b} per (seed, case): {np.mean(pairs):+.3f} ± {np.std(pairs, ddof=1):.3f}, "
      f"{a} better in {sum(d > 0 for d in pairs)} of {len(pairs)}")
seeds = [s for s in runs[a] if s in runs[b]]
print(f"per case, mean over seeds {seeds}:")
gaps = {}
for c in runs[a][seeds[0]]:
    ma, mb = (np.mean([runs[m][s][c] for s in seeds]) for m in (a, b))
    gaps[c] = ma - mb
    wins = sum(runs[a][s][c] > runs[b][s][c] for s in seeds)
    print(f"  {c}: {a} {ma:.3f}, {b} {mb:.3f}, {ma - mb:+.3f} ({a} better in {wins} of {len(seeds)})")
most = max(gaps, key=lambda c: abs(gaps[c]))
rest = [g for c, g in gaps.items() if c != most]
print(f"{a} - {b} without {most}: {np.mean(rest):+.3f} over {len(rest)} cases")
