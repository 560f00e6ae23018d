"""Commands end to end that no other test runs whole."""
from __future__ import annotations

import json
import os

import pytest
import torch

from .conftest import run_cli


def test_doctor_reports_this_machine():
    result = run_cli("doctor")
    assert result.returncode == 0, result.stderr
    report = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert report["torch"] == torch.__version__
    assert report["cuda_available"] == str(torch.cuda.is_available())
    assert "CPUExecutionProvider" in report["ort_providers"]
    assert "lite_medsam.pth" in report["litemedsam_weights"]  # the bundled genuine weights were found
    assert report["allocator"].startswith(("tuned", "default"))
    with open("/proc/cpuinfo") as handle:
        flags = set(next(line for line in handle if line.startswith("flags")).split(":", 1)[1].split())
    for flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"):
        assert (f"'{flag}'" in report["cpu_isa"]) == (flag in flags), flag
    assert f"'torch': '{torch.backends.cpu.get_cpu_capability()}'" in report["cpu_kernels"]


@pytest.mark.slow  # whole training runs (~12 s)
def test_bench_run_times_whole_runs_with_their_rounds(phantom, tmp_path):
    """`bench run`: mt, semisam and mt again, whole runs, wall-clock; the ratio is to the two mt runs' mean, and
    semisam's pseudo-label rounds are timed one by one."""
    from semisam_fast.bench import bench_run

    cache = tmp_path / "cache"
    assert run_cli("embed", "--data", str(phantom), "--model", "tiny", "--every", "2", "--cache",
                   str(cache)).returncode == 0
    result = bench_run(phantom, cache, iterations=6, val=1, workdir=tmp_path / "runs", log=lambda _: None,
                       sam_round_every=2, unlabelled_cases=None, val_every=6, save_every=6)["run"]
    assert set(result["seconds"]) == {"mt", "semisam"} and all(s > 0 for s in result["seconds"].values())
    assert len(result["semisam_rounds_s"]) == 2  # rounds at 2 and 4 (none at the last iteration)
    assert len(result["mt_before_after_s"]) == 2 and result["seconds"]["mt"] == sum(result["mt_before_after_s"]) / 2
    assert result["semisam_over_mt"] == result["seconds"]["semisam"] / result["seconds"]["mt"]
    assert (tmp_path / "runs" / "mt_after" / "checkpoints" / "final.pt").is_file()  # a fresh run, not a resume
    assert (tmp_path / "runs" / "semisam" / "checkpoints" / "final.pt").is_file()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The README's first command, shortened: export + gate, box prompts, embed, pseudo-label, a sup run and a
    semisam run prompted by it, evaluation, report (about 2.5 minutes here)."""
    out = tmp_path / "demo"
    result = run_cli("demo", "--out", str(out), "--iterations", "4", "--unlabelled", "1", "--labeled", "1",
                     "--val", "1", "--adapt-steps", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    # genuine LiteMedSAM from label boxes, on LA slices when SEMISAM_LA_DIR is set (as here), else the phantom
    assert report["box_prompts"]["slice_dice_sam"] > 0.7
    assert report["box_prompts"]["slice_dice_sam"] > report["box_prompts"]["slice_dice_box_as_mask"]
    assert report["sam_from_label_boxes_dice"][0] > 0.9
    assert set(report["validation"]) == {"sup", "semisam"}
    assert report["adapt"]["slices"] > 0 and (out / "adapted" / "adapted.pth").is_file()
    assert all(0.0 <= v["dice"][0] <= 1.0 for v in report["validation"].values())
    assert all(os.path.getsize(p) > 0 for p in report["box_prompts"]["overlays"])
    for method in ("sup", "semisam"):
        assert (out / f"run_{method}" / "checkpoints" / "final.pt").is_file()
    # semisam's targets were prompted by the finished sup run's network
    record = json.loads((out / "run_semisam" / "run.json").read_text())
    assert record["config"]["sam_prompt_run"] == str((out / "run_sup").resolve())


@pytest.mark.slow  # a whole benchmark (~18 s)
def test_bench_pseudo_label_times_the_whole_pass(phantom, lite_artefacts, tmp_path):
    """`bench pseudo-label`: the first N cases read, their labelled slices encoded and decoded from their label
    boxes, masks written, end to end, no cache; the masks are LiteMedSAM's real ones (Dice against the labels)."""
    from semisam_fast.data import open_dataset

    out = tmp_path / "pass.json"
    folder = lite_artefacts["encoder"].path.parent
    result = run_cli("bench", "pseudo-label", "--data", str(phantom), "--cases", "2", "--backend", "openvino",
                     "--artefact", str(folder), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(out.read_text())["label_pass"]
    dataset = open_dataset(phantom)
    labels = [dataset.load(case_id).label for case_id in dataset.case_ids[:2]]
    assert figures["cases"] == 2 and figures["slices"] == sum(label.shape[2] for label in labels)
    assert figures["prompts"] == sum(int(label.any(axis=(0, 1)).sum()) for label in labels)
    assert figures["total_s"] > 0 and figures["prompts_per_s"] == figures["prompts"] / figures["total_s"]
    assert figures["backend"]["backend"] == "openvino"
    assert figures["mean_dice_vs_label"] > 0.8
