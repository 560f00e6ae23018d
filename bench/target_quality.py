"""Offline quality of SemiSAM's pseudo-label targets, before any training uses them.

Each teacher (a training run's EMA teacher at a given iteration, or its student: a `sup` run, as it prompts
`--sam-prompt-run`) predicts each case; `sam_targets.case_targets`
makes SAM targets under several variants (frozen or adapted decoder, gates, fusion with the teacher); each is
scored against the case's label — read HERE, offline, for scoring only, never in training. The deciding figure is
the all-slice Dice of what the student is pulled towards ("composite": the target where there is one, the teacher's
mask elsewhere) against the teacher's own: a variant passes when it gains >= 0.02 on average and wins on >= 6 of the
8 cases, for every teacher. Box oracles bound what any box prompt can give: SAM from the label's own box (frozen and
adapted), and the label clipped to the teacher's box. Run it on development cases (neither labelled, nor in a run's
unlabelled pool, nor validation) to choose the defaults:

  python bench/target_quality.py --cache runs/la/cache --list runs/la/dev_cases.list \
      --teacher runs/dev/l2_mt_s0,400,runs/adapt/l2/adapted.pth --teacher runs/dev/l2_mt_s0,1000,runs/adapt/l2/adapted.pth \
      --teacher runs/dev/l4_mt_s0,400,runs/adapt/l4/adapted.pth --teacher runs/dev/l4_mt_s0,1000,runs/adapt/l4/adapted.pth \
      --out bench/results/target_quality_dev_r2
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from semisam_fast.backends import create_backend
from semisam_fast.cache import EmbeddingCache
from semisam_fast.checkpoints import iteration_checkpoints
from semisam_fast.data import open_dataset, read_list
from semisam_fast.doctor import cpu_isa, cpu_name
from semisam_fast.formats import DEFAULT_FOLDER, artefact_path
from semisam_fast.fsutil import write_json
from semisam_fast.inference import predict_case
from semisam_fast.metrics import binary_metrics
from semisam_fast.nets import load_student
from semisam_fast.prompter import SamPrompter
from semisam_fast.prompts import mask_to_box
from semisam_fast.sam_targets import TargetOptions, decode_case, gate_case, score_targets, teacher_mask

VARIANTS = {  # name -> (decoder, TargetOptions); "frozen, agreement >= 0.7" is the old default
    "frozen, no gate": ("frozen", TargetOptions()),
    "frozen, agreement >= 0.7": ("frozen", TargetOptions(min_agreement=0.7)),
    "frozen, mean fusion": ("frozen", TargetOptions(fusion="mean")),
    "adapted, no gate": ("adapted", TargetOptions()),
    "adapted, agreement >= 0.5": ("adapted", TargetOptions(min_agreement=0.5)),
    "adapted, SAM IoU >= 0.85": ("adapted", TargetOptions(min_iou_pred=0.85)),
    "adapted, mean fusion": ("adapted", TargetOptions(fusion="mean")),
    "adapted, mean fusion, agreement >= 0.5": ("adapted", TargetOptions(fusion="mean", min_agreement=0.5)),
}
PASS_GAIN, PASS_WINS = 0.02, 6


def oracles(case_id, teacher, label, cache, backends, margin) -> dict[str, float]:
    """All-slice Dice over the cached slices of: SAM from the label's box (per decoder), and the label clipped to the
    teacher's box (+ the same margin): the most any mask inside the teacher's box can score."""
    slices = cache.slices(case_id)
    label = label[:, :, slices] > 0
    prompters = {name: SamPrompter.of(backend, margin) for name, backend in backends.items()}
    frame = prompters["frozen"].frame(*label.shape[:2])
    has = np.flatnonzero(label.any(axis=(0, 1)))
    out = {}
    embeddings = cache.gather([(case_id, slices[s]) for s in has])
    for name, prompter in prompters.items():
        mask = np.zeros_like(label)
        logits = prompter.decode_from_masks(embeddings, label[:, :, has].transpose(2, 0, 1), frame)
        mask[:, :, has] = (logits > 0).cpu().numpy().transpose(1, 2, 0)
        out[f"SAM ({name}) from the label box"] = binary_metrics(mask, label)["dice"]
    clipped = np.zeros_like(label)
    for s in np.flatnonzero(teacher.any(axis=(0, 1))):
        box = prompters["frozen"].box_on_slice(torch.from_numpy(mask_to_box(teacher[:, :, s])), frame)
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        clipped[y0:y1 + 1, x0:x1 + 1, s] = label[y0:y1 + 1, x0:x1 + 1, s]
    out["label inside the teacher's box"] = binary_metrics(clipped, label)["dice"]
    return out


def openvino_decoder(checkpoint: str | None, folder: str | Path):
    """LiteMedSAM's decoder (`checkpoint`: an adapted one, None: the frozen weights) in OpenVINO bf16 over its fp32
    ONNX export in `folder` (engines/ for the frozen one; beside its checkpoint for an adapted one, `semisam-fast
    export --checkpoint ADAPTED --part decoder --out DIR`): ~20x torch's CPU decoder."""
    return create_backend("openvino", "litemedsam", checkpoint,
                          artefact_path(folder, "litemedsam", "decoder", "bf16", fmt="openvino"), precision="bf16")


def checkpoint_at(run: str, iteration: int) -> Path:
    for it, path in iteration_checkpoints(run):
        if it == iteration:
            return path
    raise SystemExit(f"{run} has no checkpoint at iteration {iteration}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", action="append", required=True,
                        help="RUN,ITERATION,ADAPTED_CHECKPOINT[,WEIGHTS] (the decoder adapted on that run's "
                             "labelled cases; WEIGHTS: teacher, the default, or student, as a sup run prompts "
                             "--sam-prompt-run)")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--list", required=True, help="cases to score (cached, with labels)")
    parser.add_argument("--data", default=None, help="default: the first run's data folder")
    parser.add_argument("--engines", default=DEFAULT_FOLDER, help="export folder of the frozen decoder")
    parser.add_argument("--out", default="bench/results/target_quality", help="writes OUT.json and OUT.md")
    args = parser.parse_args()

    cache = EmbeddingCache(args.cache)
    cases = read_list(args.list)
    results = {}
    for spec in args.teacher:
        run, iteration, adapted, *weights = spec.split(",")
        record = json.loads((Path(run) / "run.json").read_text())
        dataset = open_dataset(args.data or record["data"], args.list)
        net, config = load_student(checkpoint_at(run, int(iteration)), weights=(weights or ["teacher"])[0])
        backends = {"frozen": openvino_decoder(None, args.engines),
                    "adapted": openvino_decoder(adapted, Path(adapted).parent)}
        for b in backends.values():
            cache.check_decoder(b)
        rows = {name: [] for name in VARIANTS}
        oracle_rows = []
        for case_id in tqdm(cases, desc=f"{Path(run).name}@{iteration}"):
            prob = predict_case(net, dataset.load(case_id, with_label=False).image, config,
                                slices=cache.slices(case_id))
            label = dataset.load(case_id, with_label=True).label  # scoring only
            decoded = {name: decode_case(case_id, prob, cache, backend) for name, backend in backends.items()}
            for name, (decoder, options) in VARIANTS.items():  # the variants differ in gates and fusion only
                rows[name].append(score_targets(gate_case(decoded[decoder], options), label))
            oracle_rows.append(oracles(case_id, teacher_mask(prob, TargetOptions()), label, cache, backends,
                                       TargetOptions().margin))
        results[f"{Path(run).name}@{iteration}"] = {"checkpoint": str(checkpoint_at(run, int(iteration))),
                                                    "adapted": adapted, "cases": rows, "oracles": oracle_rows}

    lines = ["| teacher | variant | teacher Dice (all slices) | composite Dice (all slices) | gain | wins | "
             "target Dice on covered | teacher Dice on covered | precision | coverage | passes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for teacher, result in results.items():
        for name, case_rows in result["cases"].items():
            gains = [r["composite_dice"] - r["teacher_dice"] for r in case_rows]
            mean = {k: float(np.nanmean([r[k] for r in case_rows])) for k in case_rows[0] if k != "case"}
            wins = int(sum(g > 0 for g in gains))
            passes = float(np.mean(gains)) >= PASS_GAIN and wins >= PASS_WINS
            summary.setdefault(name, {})[teacher] = {**mean, "gain": float(np.mean(gains)), "wins": wins,
                                                     "passes": passes}
            lines.append(f"| {teacher} | {name} | {mean['teacher_dice']:.3f} | {mean['composite_dice']:.3f} | "
                         f"{np.mean(gains):+.3f} | {wins} of {len(case_rows)} | {mean['target_dice_on_valid']:.3f} | "
                         f"{mean['teacher_dice_on_valid']:.3f} | {mean['target_precision']:.3f} | "
                         f"{mean['coverage']:.2f} | {'yes' if passes else 'no'} |")
        for name in result["oracles"][0]:
            value = float(np.mean([o[name] for o in result["oracles"]]))
            summary.setdefault(f"oracle: {name}", {})[teacher] = value
            lines.append(f"| {teacher} | oracle: {name} | | {value:.3f} | | | | | | | |")
    passing = [name for name in VARIANTS if all(summary[name][t]["passes"] for t in results)]
    lines.append("")
    lines.append(f"Variants that pass for every teacher (gain >= {PASS_GAIN} and >= {PASS_WINS} wins): "
                 f"{', '.join(passing) or 'none'}")
    table = "\n".join(lines)
    print(table)
    Path(f"{args.out}.md").write_text(table + "\n")
    write_json(f"{args.out}.json", {
        "command": "python bench/target_quality.py " + " ".join(f"--teacher {t}" for t in args.teacher)
                   + f" --cache {args.cache} --list {args.list} --out {args.out}",
        "machine": cpu_name(), "isa": cpu_isa(),
        "variants": {name: {"decoder": d, **o.as_dict()} for name, (d, o) in VARIANTS.items()},
        "summary": summary, "passing": passing, "teachers": results})


if __name__ == "__main__":
    main()
