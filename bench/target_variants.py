"""Issue 23, section 2's remaining target ideas, scored like `target_quality.py` (all-slice composite Dice against the
prompter's own mask, wins of the cases) against the recipe's targets (adapted decoder, mean fusion), and where the
recipe loses to SAM from the label's box.

Variants (none reads a scored case's label):
- box jitter ensemble: K boxes per slice (sides x0.9-1.15, centre +-4 % of the side), SAM's mean probability fused;
- z-median boxes: each box coordinate the median over 3 neighbouring prompted slices;
- core box: the box of the prompter's probability > 0.8 where there is one;
- iterated box: SAM decoded again from the box of the fused mask;
- ends trimmed: from each end of the prompted z-range, slices whose SAM IoU prediction is < 0.8 become negatives;
- SAM-feature probe: a 1x1-conv MLP (256 -> 64 -> 1) on the cached embeddings, trained on the run's LABELLED cases'
  cached slices (BCE + Dice), as a third voter: mean of prompter, SAM and probe inside the box.
Diagnostics (the scored case's label used to ATTRIBUTE the gap, never a method): the recipe with the slices that have
no label emptied, and SAM from the label's box on the slices both the label and the prompter reach.

  python bench/target_variants.py --cache runs/r7/cache_dev --labelled-cache runs/r7/cache --list dev_cases.list \
      --teacher runs/r7/dev/l2_sup3k_s0,3000,runs/r7/val/adapted_l2/adapted.pth,student --out bench/results/target_variants
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import median_filter
from scipy.special import expit
from torch import nn
from tqdm import tqdm

from semisam_fast.cache import EmbeddingCache
from semisam_fast.data import open_dataset, read_list
from semisam_fast.doctor import cpu_isa, cpu_name
from semisam_fast.fsutil import write_json
from semisam_fast.inference import predict_case
from semisam_fast.metrics import binary_metrics
from semisam_fast.nets import load_student
from semisam_fast.prompter import SamPrompter, mask_to_low_res, masks_to_original
from semisam_fast.prompts import masks_to_boxes
from semisam_fast.sam_targets import TargetOptions, decode_case, gate_case

from target_quality import PASS_GAIN, PASS_WINS, checkpoint_at, openvino_decoder

JITTER_K, PROBE_STEPS, CORE, TRIM_IOU = 8, 500, 0.8, 0.8


def dice(pred: np.ndarray, label: np.ndarray) -> float:
    return binary_metrics(pred, label, distances=False)["dice"]


def train_probe(cache: EmbeddingCache, dataset, cases: list[str], seed: int = 0) -> tuple[nn.Module, tuple]:
    """An MLP on SAM's embedding grid, fit to the labelled cases' labels on that grid."""
    prompter = SamPrompter(256)
    x, y = [], []
    for case_id in cases:
        label = dataset.load(case_id, with_label=True).label > 0
        frame = prompter.frame(*label.shape[:2])
        x.append(cache.get(case_id, cache.slices(case_id)))
        y.append(torch.stack([mask_to_low_res(label[:, :, z], frame, 64) for z in cache.slices(case_id)]))
    x, y = torch.cat(x), torch.cat(y)
    stats = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True) + 1e-6
    x = (x - stats[0]) / stats[1]
    torch.manual_seed(seed)
    probe = nn.Sequential(nn.Conv2d(x.shape[1], 64, 1), nn.GELU(), nn.Conv2d(64, 1, 1))
    opt = torch.optim.AdamW(probe.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(PROBE_STEPS):
        idx = torch.randint(0, len(x), (16,))
        logits, target = probe(x[idx])[:, 0], y[idx]
        p = torch.sigmoid(logits)
        loss = F.binary_cross_entropy_with_logits(logits, target) + 1 - (2 * (p * target).sum() + 1) / (
            p.sum() + target.sum() + 1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return probe.eval(), stats


class Decoder:
    """SAM's decoder on one case's cached slices from given boxes (slice pixels), with the recipe's margin."""

    def __init__(self, backend, cache: EmbeddingCache, case_id: str, shape: tuple[int, int, int]):
        self.prompter, self.cache, self.case_id, self.shape = SamPrompter.of(backend), cache, case_id, shape
        self.slices, self.device = cache.slices(case_id), backend.device
        self.frame = self.prompter.frame(*shape[:2])

    def prob(self, rows: np.ndarray, boxes: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """SAM's probability (H, W, S; zeros off `rows`) and the boxes' pixels."""
        out, in_box = np.zeros(self.shape, np.float32), np.zeros(self.shape, bool)
        if len(rows):
            embeddings = self.cache.gather([(self.case_id, self.slices[r]) for r in rows], self.device)
            logits, _ = self.prompter.decode(embeddings, self.prompter.box_prompts(boxes, self.frame), self.frame)
            out[:, :, rows] = expit(logits.cpu().numpy().transpose(1, 2, 0))
            for r, (x0, y0, x1, y1) in zip(rows, self.prompter.box_on_slice(boxes, self.frame).round().int().tolist()):
                in_box[y0:y1 + 1, x0:x1 + 1, r] = True
        return out, in_box


def boxes_of(mask: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return masks_to_boxes(torch.from_numpy(mask[:, :, rows].transpose(2, 0, 1)))[0].float()


def jittered(boxes: torch.Tensor, frame, generator: torch.Generator) -> torch.Tensor:
    w, h = (boxes[:, 2] - boxes[:, 0]).clamp(min=4), (boxes[:, 3] - boxes[:, 1]).clamp(min=4)
    scale = 0.9 + 0.25 * torch.rand(len(boxes), generator=generator)
    dx, dy = (torch.rand(2, len(boxes), generator=generator) - 0.5) * 0.08
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2 + dx * w, (boxes[:, 1] + boxes[:, 3]) / 2 + dy * h
    out = torch.stack([cx - scale * w / 2, cy - scale * h / 2, cx + scale * w / 2, cy + scale * h / 2], 1)
    return torch.minimum(out.clamp(min=0), torch.tensor([frame.width - 1, frame.height - 1] * 2, dtype=out.dtype))


def score_case(case_id, prob, label, cache, backend, probe, generator) -> dict:
    decoded = decode_case(case_id, prob, cache, backend)
    teacher, prompted = decoded.teacher, decoded.prompted
    recipe = gate_case(decoded, TargetOptions(fusion="mean"))
    sam = Decoder(backend, cache, case_id, teacher.shape)
    rows = np.flatnonzero(prompted)

    def composite(target: np.ndarray, valid: np.ndarray = recipe.valid) -> float:
        return dice(np.where(valid[None, None], target & prompted[None, None], teacher), label)

    def fused(sam_prob: np.ndarray, in_box: np.ndarray, *voters: np.ndarray) -> np.ndarray:
        inside = [np.where(in_box, v, 0.0) for v in (prob, *voters)]
        return (sam_prob + sum(inside)) / (1 + len(inside)) > 0.5

    row = {"case": case_id, "teacher": dice(teacher, label), "recipe": composite(recipe.sam)}
    boxes = boxes_of(teacher, rows)
    base, in_box = np.where(prompted[None, None], expit(decoded.sam_logits), 0.0), decoded.in_box  # the recipe's
    ensemble = base.copy()
    for _ in range(JITTER_K - 1):
        ensemble += sam.prob(rows, jittered(boxes, sam.frame, generator))[0]
    row[f"box jitter ensemble (K={JITTER_K})"] = composite(fused(ensemble / JITTER_K, in_box))
    z_boxes = torch.from_numpy(median_filter(boxes.numpy(), size=(3, 1), mode="nearest"))
    p, b = sam.prob(rows, z_boxes)
    row["z-median boxes"] = composite(fused(p, b))
    core, core_boxes = prob > CORE, boxes.clone()
    for i, r in enumerate(rows):
        if core[:, :, r].any():
            core_boxes[i] = boxes_of(core, np.array([r]))[0]
    p, b = sam.prob(rows, core_boxes)
    row[f"core box (p > {CORE})"] = composite(fused(p, b))
    again = np.flatnonzero(recipe.sam.any(axis=(0, 1)) & prompted)
    p, b = sam.prob(again, boxes_of(recipe.sam, again))
    row["iterated box"] = composite(fused(p, b))
    keep = prompted.copy()
    for order in (rows, rows[::-1]):
        for z in order:
            if not decoded.iou_pred[z] < TRIM_IOU:
                break
            keep[z] = False
    row[f"ends trimmed (SAM IoU < {TRIM_IOU})"] = composite(recipe.sam & keep[None, None], recipe.valid | prompted)
    net, stats = probe
    with torch.no_grad():
        x = (cache.get(case_id, cache.slices(case_id)) - stats[0]) / stats[1]
        probe_prob = expit(masks_to_original(net(x)[:, 0], sam.frame).numpy().transpose(1, 2, 0))
    row["probe alone (all slices)"] = dice(probe_prob > 0.5, label)
    row["probe as a third voter"] = composite(fused(base, in_box, probe_prob))
    # diagnostics: the label attributes the gap
    on_label = label.any(axis=(0, 1))
    row["diagnostic: recipe, slices without label emptied"] = composite(recipe.sam & on_label[None, None],
                                                                         recipe.valid | prompted)
    shared = np.flatnonzero(prompted & on_label)
    label_boxes = boxes_of(label, shared)
    p, b = sam.prob(shared, label_boxes)
    with_label_box = recipe.sam.copy()
    with_label_box[:, :, shared] = fused(p, b)[:, :, shared]
    row["diagnostic: label box where both reach"] = composite(with_label_box)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", action="append", required=True,
                        help="RUN,ITERATION,ADAPTED_CHECKPOINT[,WEIGHTS] as target_quality.py's")
    parser.add_argument("--cache", required=True, help="holds the scored cases")
    parser.add_argument("--labelled-cache", required=True, help="holds the run's labelled cases (the probe's data)")
    parser.add_argument("--list", required=True)
    parser.add_argument("--data", default=None)
    parser.add_argument("--out", default="bench/results/target_variants")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache, labelled_cache, cases = EmbeddingCache(args.cache), EmbeddingCache(args.labelled_cache), read_list(args.list)
    results = {}
    for spec in args.teacher:
        run, iteration, adapted, *weights = spec.split(",")
        record = json.loads((Path(run) / "run.json").read_text())
        dataset = open_dataset(args.data or record["data"])
        net, config = load_student(checkpoint_at(run, int(iteration)), weights=(weights or ["teacher"])[0])
        backend = openvino_decoder(adapted, Path(adapted).parent)
        cache.check_decoder(backend)
        probe = train_probe(labelled_cache, dataset, record["labeled_cases"])
        generator = torch.Generator().manual_seed(0)
        rows = []
        for case_id in tqdm(cases, desc=f"{Path(run).name}@{iteration}"):
            slices = cache.slices(case_id)
            prob = predict_case(net, dataset.load(case_id, with_label=False).image, config, slices=slices)
            label = dataset.load(case_id, with_label=True).label[:, :, slices] > 0  # scoring only
            rows.append(score_case(case_id, prob, label, cache, backend, probe, generator))
        results[f"{Path(run).name}@{iteration}"] = rows

    names = [k for k in next(iter(results.values()))[0] if k not in ("case", "teacher")]
    lines = ["| variant | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    summary = {}
    for name in names:
        cells = []
        for teacher, rows in results.items():
            gains = [r[name] - r["teacher"] for r in rows]
            mean, wins = float(np.mean([r[name] for r in rows])), int(sum(g > 0 for g in gains))
            summary.setdefault(name, {})[teacher] = {"dice": mean, "gain": float(np.mean(gains)), "wins": wins,
                                                     "passes": float(np.mean(gains)) >= PASS_GAIN and wins >= PASS_WINS}
            cells.append(f"{mean:.3f} ({np.mean(gains):+.3f}, {wins} of {len(rows)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    teachers = " | ".join(f"{np.mean([r['teacher'] for r in rows]):.3f}" for rows in results.values())
    lines.insert(2, f"| the prompter's own mask | {teachers} |")
    table = "\n".join(lines)
    print(table)
    Path(f"{args.out}.md").write_text(table + "\n")
    write_json(f"{args.out}.json", {
        "command": "python bench/target_variants.py " + " ".join(f"--teacher {t}" for t in args.teacher)
                   + f" --cache {args.cache} --labelled-cache {args.labelled_cache} --list {args.list} --out {args.out}",
        "machine": cpu_name(), "isa": cpu_isa(), "summary": summary, "cases": results})


if __name__ == "__main__":
    main()
