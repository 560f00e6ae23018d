"""bench/volume_bias.py (does a student over-segment?) agrees with `evaluate` on a real run: a case's Dice is the
harmonic mean of its precision and recall, and the predicted-to-label volume ratio is recall / precision."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from semisam_fast.evaluate import evaluate_run
from semisam_fast.train import build_trainer, preset

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "volume_bias.py"


def test_volume_bias_agrees_with_evaluate(phantom, tmp_path):
    spec = importlib.util.spec_from_file_location("volume_bias", SCRIPT)
    volume_bias = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(volume_bias)
    config = preset("la-cpu", method="sup", iterations=20, in_plane=64, crop=48, val_every=20, save_every=20)
    build_trainer(config, phantom, None, labeled=2, val=2, run_dir=tmp_path / "run").run(progress=False)
    rows, _ = evaluate_run(tmp_path / "run", progress=False)
    bias = volume_bias.run_bias(tmp_path / "run")
    assert [r["case"] for r in bias["cases"]] == [r["case"] for r in rows]
    for mine, scored in zip(bias["cases"], rows):
        p, r = mine["precision"], mine["recall"]
        assert p > 0 and r > 0, mine  # 20 iterations on the phantom already find the blob
        assert 2 * p * r / (p + r) == pytest.approx(scored["dice"], abs=1e-6)
        assert mine["volume_ratio"] == pytest.approx(r / p, rel=1e-6)
