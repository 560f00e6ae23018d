"""`bench train` (one training iteration per method, interleaved) and `bench run` (whole runs, wall-clock). They
measure through the trainer's own hooks: `Trainer.start_at` for steps late in a run, `Trainer.on_round` for each
pseudo-label round's seconds; nothing in the trainer is patched."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..formats import DEFAULT_FOLDER, ONNX, artefact_path
from .timing import interleaved, summarise

TRAIN_SHAPES = {"la-cpu": ((128, 128, 16), "4 labelled + 4 unlabelled 80x80 crops, 2D U-Net base 16"),
                "la-paper": ((128, 128, 88), "2 labelled + 2 unlabelled 112x112x80 patches, 3D V-Net, SAM on "
                                             "every axial slice of the unlabelled patches")}
TIMED_FROM = 400  # past the ramp's start, so the student predicts foreground and SAM is prompted


def bench_train(steps: int = 10, log=print, engines: Path = Path(DEFAULT_FOLDER), workdir: Path | None = None,
                device: str = "cpu", preset_name: str = "la-cpu") -> dict:
    """One training iteration of mt, semisam on the cache, and semisam with the encoder online, same shapes (a
    preset's), steps interleaved, on the synthetic phantom; and mt with its forwards under bf16 autocast
    (`--train-precision bf16`) beside fp32's. SAM runs in onnxruntime on the CPU and in torch on a GPU."""
    import tempfile

    from ..backends import TorchBackend, open_artefact
    from ..data import make_phantom, open_dataset, split_cases
    from ..embed import build_cache
    from ..export import export
    from ..models import load_model
    from ..train import build_trainer, preset

    work = Path(workdir or tempfile.mkdtemp(prefix="semisam-bench-"))
    volume, shapes = TRAIN_SHAPES[preset_name]
    root = make_phantom(work / "phantom", n_cases=8, shape=volume, seed=0) \
        if not (work / "phantom" / "train.list").is_file() else work / "phantom"
    on_gpu = device.startswith("cuda")
    parts = {p: artefact_path(engines, "litemedsam", p, "fp32") for p in ("encoder", "decoder")}
    if not on_gpu and not all(p.is_file() for p in parts.values()):
        export("litemedsam", out=engines)
    dataset = open_dataset(root)
    split = split_cases(dataset.case_ids, 2, 2)
    encoder = TorchBackend(load_model("litemedsam"), device=device) if on_gpu else open_artefact(parts["encoder"])
    build_cache(dataset, encoder, work / "cache", case_ids=split.unlabeled, progress=False)
    trainers = {}
    for name, method, online, mode, precision in (
            ("mt", "mt", False, "step", "fp32"), ("mt_bf16", "mt", False, "step", "bf16"),
            ("semisam_cached", "semisam", False, "step", "fp32"), ("semisam_online", "semisam", True, "step", "fp32"),
            ("semisam_rounds", "semisam", False, "rounds", "fp32")):
        config = preset(preset_name, method=method, iterations=1000, unlabelled_cases=None, unlabelled_every=1,
                        sam_online=online or None, sam_ramp="none", val_every=10**9, save_every=10**9,
                        sam_mode=mode, train_precision=precision)
        trainer = build_trainer(config, root, None, 2, 2, work / name, cache=work / "cache", device=device,
                                backend="torch" if on_gpu else str(parts["encoder"].parent), tensorboard=False)
        trainer.start_at(TIMED_FROM)
        trainers[name] = trainer
    # rounds: the step reads stored targets; a round (teacher on every unlabelled volume + SAM on every cached slice)
    # runs every sam_round_every steps, so its cost per step is a round's time over that
    rounds = trainers["semisam_rounds"]
    round_times: list[float] = []
    rounds.on_round.append(round_times.append)
    rounds.method.sam_round(rounds)
    round_s = round_times[0]
    log(f"training iteration: {', '.join(trainers)} ({steps} interleaved steps)")
    prompted: dict[str, list[float]] = {}

    def stepper(name, trainer):
        def step():
            prompted.setdefault(name, []).append(trainer.step().get("sam_prompted", float("nan")))
        return step

    result = summarise(interleaved({k: stepper(k, t) for k, t in trainers.items()}, steps), "mt", 1, "iterations")
    p1 = result["semisam_cached"]["median_s"] / result["mt"]["median_s"]
    online = result["semisam_online"]["median_s"] / result["semisam_cached"]["median_s"]
    every = rounds.config.sam_round_every
    amortised = result["semisam_rounds"]["median_s"] + round_s / every
    bf16 = result["mt_bf16"]["median_s"] / result["mt"]["median_s"]
    return {"train": result, "P1_semisam_cached_over_mt": p1, "online_over_cached": online,
            "mt_bf16_over_fp32": bf16,
            "rounds": {"round_s": round_s, "round_every": every,
                       "step_over_mt": result["semisam_rounds"]["median_s"] / result["mt"]["median_s"],
                       "step_with_amortised_round_over_mt": amortised / result["mt"]["median_s"]},
            "preset": preset_name, "shapes": shapes,
            # the share of unlabelled slices that got a SAM prompt: SAM really ran in the timed steps
            "sam_prompted": {k: float(np.mean(v)) for k, v in prompted.items() if k.startswith("semisam")},
            "sam": f"LiteMedSAM {'torch ' + device if on_gpu else 'onnxruntime CPU'}", "device": device}


def bench_run(data: Path, cache: Path, artefact: Path | None = None, list_file: Path | None = None,
              iterations: int | None = None, labelled: int = 2, val: int = 8, workdir: Path | None = None,
              log=print, backend: str | None = None, precision: str | None = None, **overrides) -> dict:
    """Whole `la-cpu` runs, one after the other in this process: mt, semisam with its pseudo-label rounds, and mt
    again, same data, seed and iterations; wall-clock of each (data loading and validation included; the one-time
    embedding cache excluded: it must exist). The ratio, P1 end to end, divides by the mean of the two mt runs: on a
    shared machine a drift over the ~7 minutes shows as their difference instead of landing on one side."""
    import tempfile

    from ..train import build_trainer, preset

    work = Path(workdir or tempfile.mkdtemp(prefix="semisam-run-"))
    backend = backend or (ONNX.cli if artefact is not None else "torch")
    seconds, mt_runs, semisam_rounds = {}, [], []
    for folder, method in (("mt", "mt"), ("semisam", "semisam"), ("mt_after", "mt")):
        config = preset("la-cpu", method=method, iterations=iterations, **overrides)
        start = time.perf_counter()
        trainer = build_trainer(config, data, list_file, labelled, val, work / folder, cache=cache, backend=backend,
                                artefact=artefact, tensorboard=False, precision=precision)
        timed_rounds: list[float] = []
        trainer.on_round.append(timed_rounds.append)
        trainer.run(progress=False)
        took = time.perf_counter() - start
        if method == "mt":
            mt_runs.append(took)
        else:
            seconds[method], semisam_rounds = took, timed_rounds
        log(f"{folder}: {took:.0f} s" + (f", rounds {[round(r) for r in timed_rounds]} s" if timed_rounds else ""))
    seconds["mt"] = sum(mt_runs) / len(mt_runs)
    return {"run": {"iterations": iterations or preset("la-cpu").iterations, "seconds": seconds,
                    "mt_before_after_s": mt_runs,
                    "decoder": {"backend": backend, "precision": precision or "fp32"},
                    "semisam_rounds_s": semisam_rounds,
                    "semisam_over_mt": seconds["semisam"] / seconds["mt"]}}
