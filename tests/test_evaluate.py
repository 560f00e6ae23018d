"""Whole-volume inference and evaluation with real torch nets (tiny U-Net/V-Net and fixed-weight analytic nets)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from semisam_fast.data import make_phantom, open_dataset
from semisam_fast.data.student_input import resize_slices
from semisam_fast.errors import UserError
from semisam_fast.evaluate import evaluate_cases, evaluate_run
from semisam_fast.inference import largest_component
from semisam_fast.nets import load_student
from semisam_fast.results import write_results
from semisam_fast.inference import predict_case, predict_volume_2d, predict_volume_3d
from semisam_fast.metrics import METRIC_KEYS, binary_metrics, summarize
from semisam_fast.nets import build_student


class IntensityNet(nn.Module):
    """1x1 conv with fixed weights: logits (0, k * (x - t)), so P(foreground) = sigmoid(k * (x - t))."""

    def __init__(self, ndim: int, k: float = 8.0, t: float = 0.5) -> None:
        super().__init__()
        self.conv = (nn.Conv2d if ndim == 2 else nn.Conv3d)(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([0.0, k]).view(2, 1, *[1] * ndim))
            self.conv.bias.copy_(torch.tensor([0.0, -k * t]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class RampNet(nn.Module):
    """Ignores the intensities: foreground logit = 0.1 * (position along the patch's first axis)."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        ramp = 0.1 * torch.arange(x.shape[2], dtype=torch.float32).view(1, 1, -1, 1, 1).expand_as(x)
        return torch.cat([torch.zeros_like(x), ramp], dim=1)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def box_volume(shape, box) -> tuple[np.ndarray, np.ndarray]:
    label = np.zeros(shape, np.uint8)
    label[tuple(slice(a, b) for a, b in box)] = 1
    return label.astype(np.float32), label


# --------------------------------------------------------------------------- 2D


def test_predict_2d_unet_shape_range_and_batching():
    torch.manual_seed(0)
    net = build_student("unet2d", base=4).train()
    image = np.random.default_rng(0).standard_normal((40, 52, 5)).astype(np.float32)
    prob = predict_volume_2d(net, image, size=32, batch=2)
    assert prob.shape == (40, 52, 5) and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert net.training  # caller's mode restored
    np.testing.assert_allclose(prob, predict_volume_2d(net, image, size=32, batch=5), atol=1e-5)


def test_predict_2d_runs_channels_last_and_gives_the_weights_back_as_they_were():
    """Prediction on the CPU switches the net to channels-last meanwhile: the same probabilities as the plain
    layout, and afterwards the weights are contiguous, ordinary (not inference) tensors a training step can use."""
    torch.manual_seed(0)
    net = build_student("unet2d", base=4).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    image = np.random.default_rng(0).standard_normal((40, 52, 5)).astype(np.float32)
    prob = predict_volume_2d(net, image, size=32)
    for name, value in net.state_dict().items():
        assert value.is_contiguous() and not value.is_inference() and torch.equal(value, before[name]), name
    with torch.inference_mode():  # the plain layout, by hand: the same arithmetic up to summation order
        plain = net.eval()(resize_slices(image, 32)[:, None])
    net.train()
    np.testing.assert_allclose(prob, predict_volume_2d(net, image, size=32), atol=0)  # deterministic
    want = torch.softmax(F.interpolate(plain, size=(40, 52), mode="bilinear", align_corners=False), 1)[:, 1]
    np.testing.assert_allclose(prob, want.numpy().transpose(1, 2, 0), atol=1e-5)
    loss = net(torch.randn(2, 1, 32, 32)).mean()
    loss.backward()  # weights that went through inference mode would refuse this
    assert all(p.grad is not None for p in net.parameters())


def test_predict_2d_analytic_at_native_size():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (32, 32, 3)).astype(np.float32)
    prob = predict_volume_2d(IntensityNet(2), image, size=32)
    np.testing.assert_allclose(prob, sigmoid(8.0 * (image - 0.5)), atol=1e-5)


def test_predict_2d_resized_thresholds_to_bright_voxels():
    # a box on even boundaries survives the 64 -> 32 -> 64 bilinear round trip exactly at threshold 0.5
    image, label = box_volume((64, 64, 4), [(10, 30), (20, 44), (1, 3)])
    prob = predict_volume_2d(IntensityNet(2), image, size=32, batch=3)
    pred = prob > 0.5
    assert np.array_equal(pred, label.astype(bool))
    assert binary_metrics(pred, label)["dice"] == 1.0


# --------------------------------------------------------------------------- 3D


@pytest.mark.parametrize("shape", [(20, 24, 6), (5, 30, 9), (40, 36, 20)])
def test_predict_3d_analytic_with_padding_and_overlap(shape):
    image = np.random.default_rng(2).uniform(0, 1, shape).astype(np.float32)
    prob = predict_volume_3d(IntensityNet(3), image, patch=(16, 16, 8), stride=(6, 5, 3))
    assert prob.shape == shape and prob.dtype == np.float32
    np.testing.assert_allclose(prob, sigmoid(8.0 * (image - 0.5)), atol=1e-5)


def test_predict_3d_averages_overlaps():
    # x windows start at 0 and 4: x<4 sees only window 0, 4<=x<16 both, x>=16 only window 4
    RampNet.calls = 0
    prob = predict_volume_3d(RampNet(), np.zeros((20, 16, 8), np.float32), patch=(16, 16, 8), stride=(4, 4, 4))
    assert RampNet.calls == 2
    x = np.arange(20)
    s = lambda i: sigmoid(0.1 * i)  # noqa: E731
    expected = np.where(x < 4, s(x), np.where(x < 16, (s(x) + s(x - 4)) / 2, s(x - 4)))
    np.testing.assert_allclose(prob[:, 3, 2], expected, atol=1e-6)
    assert np.allclose(prob, prob[:, :1, :1])


def test_predict_3d_window_count_matches_uamt():
    RampNet.calls = 0
    predict_volume_3d(RampNet(), np.zeros((20, 20, 10), np.float32), patch=(16, 16, 8), stride=(3, 2, 1))
    # UA-MT: ceil((n - patch) / stride) + 1 per axis -> 3 * 3 * 3
    assert RampNet.calls == 27


def test_predict_case_dispatch_and_vnet():
    torch.manual_seed(0)
    vnet = build_student("vnet", n_filters=2)
    image = np.random.default_rng(3).standard_normal((18, 20, 10)).astype(np.float32)
    prob = predict_case(vnet, image, {"student": "vnet", "patch": [16, 16, 16], "stride": [8, 8, 8]})
    assert prob.shape == image.shape and 0.0 <= prob.min() <= prob.max() <= 1.0
    two_d = predict_case(IntensityNet(2), image, {"student": "unet2d", "in_plane": 32})
    assert two_d.shape == image.shape
    with pytest.raises(UserError, match="unknown student"):
        predict_case(vnet, image, {"student": "resnet"})
    with pytest.raises(UserError, match="in_plane"):
        predict_case(vnet, image, {"student": "unet2d"})
    with pytest.raises(UserError, match="patch"):
        predict_volume_3d(vnet, image, patch=(16, 16), stride=(8, 8, 8))


def test_predict_case_on_some_slices_equals_the_whole_volumes_and_bf16_stays_close():
    # a round predicts only the cached slices: each must be what the whole volume's prediction holds there (the
    # z-score still over the whole volume), for a 2D U-Net and for a V-Net (which predicts whole and cuts)
    torch.manual_seed(0)
    image = np.random.default_rng(4).standard_normal((40, 36, 12)).astype(np.float32) * 3 + 7
    keep = [0, 2, 4, 6, 8, 10]
    unet = build_student("unet2d", base=4)
    unet_config = {"student": "unet2d", "in_plane": 32}
    whole = predict_case(unet, image, unet_config)
    some = predict_case(unet, image, unet_config, slices=keep)
    assert some.shape == (40, 36, len(keep))
    np.testing.assert_allclose(some, whole[:, :, keep], atol=1e-6)
    vnet = build_student("vnet", n_filters=2)
    vnet_config = {"student": "vnet", "patch": [16, 16, 16], "stride": [8, 8, 8]}
    vnet_some = predict_case(vnet, image, vnet_config, slices=keep)
    np.testing.assert_array_equal(vnet_some, predict_case(vnet, image, vnet_config)[:, :, keep])
    vnet_half = predict_case(vnet, image, vnet_config, slices=keep, precision="bf16")  # a la-paper round on a bf16 CPU
    assert vnet_half.dtype == np.float32 and np.abs(vnet_half - vnet_some).max() < 0.05
    # bf16 autocast: float32 out, probabilities within bf16's resolution of fp32's
    half = predict_case(unet, image, unet_config, slices=keep, precision="bf16")
    assert half.dtype == np.float32 and not np.array_equal(half, some)
    assert np.abs(half - some).max() < 0.05
    with pytest.raises(UserError, match="precision"):
        predict_case(unet, image, unet_config, precision="fp16")


# --------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def phantom2(tmp_path_factory):
    return make_phantom(tmp_path_factory.mktemp("phantom2"), n_cases=2, shape=(64, 64, 8))


def test_evaluate_cases_and_write_results(phantom2, tmp_path):
    ds = open_dataset(phantom2)
    cfg = {"student": "unet2d", "in_plane": 64}
    rows = evaluate_cases(IntensityNet(2, k=20.0, t=1.5), cfg, ds, ds.case_ids, progress=False)
    assert [r["case"] for r in rows] == ds.case_ids
    assert all(set(r) == {"case", "spacing", *METRIC_KEYS} for r in rows)
    assert all(r["spacing"] == "voxel" for r in rows)  # LA h5 records no spacing
    assert all(r["dice"] > 0.5 for r in rows)  # the phantom's target is the brightest structure
    lcc = evaluate_cases(IntensityNet(2, k=20.0, t=1.5), cfg, ds, ds.case_ids[:1], progress=False, keep_largest=True)
    assert set(lcc[0]) == {"case", "spacing", *METRIC_KEYS}
    # the phantom's target is one blob among smaller bright distractors: its largest component can only gain precision
    assert lcc[0]["dice"] >= rows[0]["dice"] and lcc[0]["hd95"] <= rows[0]["hd95"]

    rows.append({"case": "empty_pred", "spacing": "voxel", "dice": 0.0, "jaccard": 0.0, "hd95": math.nan,
                 "asd": math.nan, "hd95_diag": 100.0, "asd_diag": 100.0})
    out = tmp_path / "res" / "eval.json"
    summary = write_results(rows, out)
    assert summary == summarize(rows)
    doc = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(doc) == {"cases", "summary"}
    assert set(doc["summary"]) == set(METRIC_KEYS)
    assert all(set(v) == {"mean", "sd", "cases", "undefined"} for v in doc["summary"].values())
    assert doc["summary"]["hd95"]["undefined"] == 1 and doc["summary"]["hd95_diag"]["undefined"] == 0
    assert doc["summary"]["hd95"]["mean"] == pytest.approx(summary["hd95"][0])
    assert doc["cases"][-1]["hd95"] is None
    with open(out.with_suffix(".csv"), newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["case", "spacing", *METRIC_KEYS]
        table = list(reader)
    assert [r["case"] for r in table] == [r["case"] for r in rows]
    assert float(table[0]["dice"]) == pytest.approx(rows[0]["dice"])
    assert not list(out.parent.glob(".*tmp*"))  # atomic writes leave no temp files


def test_largest_component():
    m = np.zeros((10, 10, 3), bool)
    m[0:2, 0:2, 0] = True
    m[5:9, 5:9, 1:3] = True
    m[9, 9, 0] = True  # touches the big one diagonally: same component with full connectivity
    keep = largest_component(m)
    assert keep[9, 9, 0] and keep[5, 5, 1] and not keep[0, 0, 0]


# --------------------------------------------------------------------------- checkpoints


def _checkpoint(base: int = 4, teacher: bool = True, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    student = build_student("unet2d", base=base)
    ema = build_student("unet2d", base=base)
    return {
        "student": student.state_dict(),
        "teacher": ema.state_dict() if teacher else None,
        "config": {"student": "unet2d", "student_kwargs": {"base": base}, "in_plane": 32},
        "optimizer": {}, "iteration": 7, "rng": None,
    }


def test_load_student_round_trip(tmp_path):
    ckpt = _checkpoint()
    path = tmp_path / "ck.pt"
    torch.save(ckpt, path)
    for which in ("student", "teacher"):
        net, cfg = load_student(path, weights=which)
        assert cfg == ckpt["config"] and not net.training
        for k, v in net.state_dict().items():
            assert torch.equal(v, ckpt[which][k]), k
    # weights saved from a torch.compile'd module carry an _orig_mod. prefix
    ckpt["student"] = {f"_orig_mod.{k}": v for k, v in ckpt["student"].items()}
    torch.save(ckpt, path)
    load_student(path)


def test_load_student_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_student(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_student(bad)
    cases = {
        "lacks 'config'": {"student": {}},
        "not a training checkpoint": [1, 2],
        "no teacher weights": _checkpoint(teacher=False),
        "do not fit": {**_checkpoint(), "config": {"student": "unet2d", "student_kwargs": {"base": 8}, "in_plane": 32}},
        "lacks 'in_plane'": {**_checkpoint(), "config": {"student": "unet2d", "student_kwargs": {"base": 4}}},
        "unknown student": {**_checkpoint(), "config": {"student": "resnet"}},
    }
    for message, obj in cases.items():
        torch.save(obj, bad)
        with pytest.raises(UserError, match=message):
            load_student(bad, weights="teacher" if message == "no teacher weights" else "student")


def test_evaluate_run_picks_newest_checkpoint(phantom2, tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(UserError, match="run.json"):
        evaluate_run(run)
    ckpt = _checkpoint()
    (run / "run.json").write_text(json.dumps({"data": str(phantom2), "list": None, "val_cases": ["phantom_01"],
                                              "config": ckpt["config"]}))
    with pytest.raises(UserError, match="no checkpoint"):
        evaluate_run(run)
    for it in (9, 10):
        torch.save({**ckpt, "iteration": it}, run / "checkpoints" / f"iter_{it}.pt")
    rows, summary = evaluate_run(run, progress=False)
    doc = json.loads((run / "eval.json").read_text())
    assert doc["checkpoint"].endswith("iter_10.pt")  # numeric, not lexicographic, order
    assert [r["case"] for r in rows] == ["phantom_01"] and set(summary) == set(METRIC_KEYS)
    assert (run / "eval.csv").is_file()

    torch.save(ckpt, run / "checkpoints" / "final.pt")
    out = tmp_path / "teacher.json"
    rows, _ = evaluate_run(run, cases=["phantom_00", "phantom_01"], out=out, weights="teacher", progress=False)
    doc = json.loads(out.read_text())
    assert doc["checkpoint"].endswith("final.pt") and doc["weights"] == "teacher" and len(rows) == 2
