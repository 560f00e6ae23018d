"""`semisam-fast bench`: side-by-side, interleaved timings, reported as ratios to the reference in the same run.

Speed targets live here, never in tests. Every result records the machine and the allocator setting.
"""
from __future__ import annotations

import statistics
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .doctor import allocator_setting, cpu_isa, cpu_name, has_bf16_matmuls, kernel_choice
from .results import write_bench


def machine() -> dict:
    info = {"cpu": cpu_name(), "cpu_isa": cpu_isa(), "cpu_kernels": kernel_choice(),
            "torch_threads": torch.get_num_threads(), "allocator": allocator_setting(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:
        pass
    return info


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time each candidate once per round, round after round, so drift on a shared machine hits all alike."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        for run in candidates.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            sync()
            start = time.perf_counter()
            run()
            sync()
            times[name].append(time.perf_counter() - start)
    return times


def summarise(times: dict[str, list[float]], reference: str, items: int = 1, unit: str = "images",
              gflop_per_item: float | None = None) -> dict:
    """Median, spread and ratio to `reference` per candidate; with `gflop_per_item`, the GFLOP/s that makes."""
    ref = statistics.median(times[reference])
    out = {}
    for name, values in times.items():
        med = statistics.median(values)
        out[name] = {"median_s": med, "min_s": min(values), "max_s": max(values), "repeats": len(values),
                     f"{unit}_per_s": items / med, f"speedup_vs_{reference}": ref / med}
        if gflop_per_item is not None:
            out[name]["gflops"] = items * gflop_per_item / med
    return out


def gflop(work: Callable[[], object]) -> float:
    """GFLOP of one call of a torch forward, by torch's FLOP counter (matmuls and convolutions, 2 per
    multiply-add): the arithmetic every runtime's copy of that graph does."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops() / 1e9


def _artefacts(model: str, engines: Path, precisions: list[str], log) -> dict[str, Path]:
    """The exported encoder per precision, exporting it when missing (the gate result is recorded either way)."""
    from .artefact import read_sidecar
    from .errors import UserError
    from .export import export

    found = {}
    for precision in precisions:
        path = engines / f"{model}_encoder_{precision}.onnx"
        if not path.is_file() or not path.with_suffix(".json").is_file():
            log(f"exporting {model} encoder {precision} for the benchmark")
            try:
                export(model, part="encoder", precision=precision, out=engines)
            except UserError as exc:  # an artefact that misses the gate is still timed, and marked so
                log(f"  {exc}")
        if path.is_file():
            found[precision] = path
            read_sidecar(path)
    return found


def bench_encoder(model: str = "litemedsam", precisions: tuple[str, ...] = ("fp32", "int8"),
                  batches: tuple[int, ...] = (1, 4), repeats: int = 5, engines: Path = Path("engines"),
                  log=print) -> dict:
    from .artefact import read_sidecar
    from .backends import OnnxBackend, TorchBackend
    from .models import load_model
    from .samples import load_samples

    loaded = load_model(model)
    torch_fp32 = TorchBackend(loaded)
    artefacts = _artefacts(model, engines, list(precisions), log)
    onnx = {p: OnnxBackend(encoder=path) for p, path in artefacts.items()}
    samples = load_samples(max(batches))
    images = loaded.preprocess(samples.slices)
    openvino, openvino_gates = _openvino_encoders(loaded, artefacts.get("fp32"), samples, log)
    torch_bf16 = None
    if has_bf16_matmuls():  # torch's bf16 weights pay off
        from .export.parity import DEFAULT_IOU, check_encoder

        torch_bf16 = TorchBackend(load_model(model), precision="bf16")
        report = check_encoder(torch_bf16, loaded, samples, "bf16", DEFAULT_IOU["bf16"])
        openvino_gates["torch_bf16"] = {"mask_iou": report.mask_iou, "mask_iou_min": report.mask_iou_min,
                                        "passed": report.passed,
                                        "embedding_rel_l2": report.figures["embedding_rel_l2"]}
    per_image = gflop(lambda: loaded.encoder(images[:1]))
    results = {}
    for batch in batches:
        x = images[:batch]
        candidates = {"torch_fp32": lambda x=x: torch_fp32.encode(x)}
        if torch_bf16 is not None:
            candidates["torch_bf16"] = lambda x=x: torch_bf16.encode(x)
        candidates.update({f"onnxruntime_{p}": (lambda x=x, b=b: b.encode(x)) for p, b in onnx.items()})
        candidates.update({f"openvino_{p}": (lambda x=x, b=b: b.encode(x)) for p, b in openvino.items()})
        log(f"encoder {model} batch {batch}: {', '.join(candidates)}")
        results[f"batch_{batch}"] = summarise(interleaved(candidates, repeats), "torch_fp32", batch,
                                              gflop_per_item=per_image)
    gates = {p: read_sidecar(b.encoder.path).get("parity", {}) for p, b in onnx.items()}
    parity = {f"onnxruntime_{p}": {"mask_iou": g.get("mask_iou"), "mask_iou_min": g.get("mask_iou_min"),
                                   "passed": g.get("passed")} for p, g in gates.items()}
    parity.update(openvino_gates)
    exports = {f"onnx_{p}": read_sidecar(b.encoder.path).get("export_peak_rss_gb") for p, b in onnx.items()}
    return {"encoder": results, "model": model, "gflop_per_image": per_image, "parity": parity,
            "torch_attention": torch_fp32.attention,  # SAM ViTs: SDPA (the torch backend's default)
            "export_peak_rss_gb": exports,
            "openvino_kernels": {p: b.encoder.kernels() for p, b in openvino.items()},  # of the last batch's compile
            "providers": {p: b.encoder.provider for p, b in onnx.items()}}


def _openvino_encoders(loaded, fp32_onnx: Path | None, samples, log) -> tuple[dict, dict]:
    """OpenVINO over the fp32 ONNX encoder, in f32 and (where the CPU has BF16) bf16, each through the parity gate
    on the bench's own samples; none when OpenVINO is not installed."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        log("openvino not installed: its rows are skipped")
        return {}, {}
    from .backends.openvino_backend import OpenVinoBackend
    from .errors import UserError
    from .export.parity import DEFAULT_IOU, check_encoder

    backends, gates = {}, {}
    for precision in ("fp32", "bf16"):
        try:
            backend = OpenVinoBackend(encoder=fp32_onnx, precision=precision) if fp32_onnx else None
        except UserError as exc:
            log(f"openvino {precision}: {exc}")
            continue
        if backend is None:
            continue
        report = check_encoder(backend, loaded, samples, precision, DEFAULT_IOU[precision])
        backends[precision] = backend
        gates[f"openvino_{precision}"] = {"mask_iou": report.mask_iou, "mask_iou_min": report.mask_iou_min,
                                          "passed": report.passed,
                                          "embedding_rel_l2": report.figures["embedding_rel_l2"]}
    return backends, gates


def bench_decoder(model: str = "litemedsam", n_slices: int = 16, repeats: int = 3, engines: Path = Path("engines"),
                  log=print, device: str = "cpu") -> dict:
    """Batched decoding (one call, many slices) vs segment-anything's SamPredictor, one prompt at a time, on the
    same cached embeddings and device; both return logits at the original slice size. onnxruntime joins on the CPU
    (on a GPU only when its CUDA provider is really there)."""
    import onnxruntime as ort
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

    from .backends import OnnxBackend, TorchBackend
    from .export import export
    from .models import load_model
    from .prompter import SamPrompter
    from .samples import load_samples

    loaded = load_model(model)
    samples = load_samples(n_slices)
    labels = samples.labels
    frame = SamPrompter(loaded.spec.image_size).frame(samples.slices.shape[1], samples.slices.shape[2])
    with torch.inference_mode():
        embeddings = torch.cat([loaded.encoder(loaded.preprocess(s[None])) for s in samples.slices]).to(device)

    def batched(backend, n: int | None = None):  # one decoder call: the first n slices' label boxes + the margin
        return partial(SamPrompter.of(backend).decode_from_masks, embeddings[:n], labels[:n], frame)

    torch_backend = TorchBackend(loaded, device=device)
    per_prompt = gflop(batched(torch_backend, 1))
    candidates = {"batched_torch": batched(torch_backend)}
    openvino: dict = {}
    if device.startswith("cuda"):
        half = TorchBackend(load_model(model), device=device, precision="fp16")
        candidates["batched_torch_fp16"] = batched(half)
    provider = "cuda" if device.startswith("cuda") else "cpu"
    if provider == "cpu" or "CUDAExecutionProvider" in ort.get_available_providers():
        decoder_path = engines / f"{model}_decoder_fp32.onnx"
        if not decoder_path.is_file():
            export(model, part="decoder", out=engines)
        onnx = OnnxBackend(decoder=decoder_path, provider=provider)
        candidates["batched_onnxruntime"] = batched(onnx)
        openvino = _openvino_decoders(decoder_path, log)
        for precision, backend in openvino.items():
            candidates[f"batched_openvino_{precision}"] = batched(backend)
    # each batched runtime's masks against torch fp32's, on the same prompts: a speed-up is worth its agreement
    with torch.inference_mode():
        reference = candidates["batched_torch"]().cpu() > 0
    agreement = {}
    for name, decode in candidates.items():
        if name != "batched_torch":
            with torch.inference_mode():
                mask = decode().cpu() > 0
            agreement[name] = float((mask & reference).sum() / max(int((mask | reference).sum()), 1))

    sam = Sam(image_encoder=loaded.encoder, prompt_encoder=loaded.decoder.prompt_encoder,
              mask_decoder=loaded.decoder.mask_decoder).to(device).eval()
    predictor = SamPredictor(sam)
    predictor.is_image_set = True
    predictor.original_size = (frame.height, frame.width)
    predictor.input_size = frame.resized
    boxes_input = SamPrompter(loaded.spec.image_size, margin=0.0).boxes_to_input(samples.boxes, frame).to(device)

    def looped(count: int = n_slices):
        with torch.inference_mode():
            for i in range(count):
                predictor.features = embeddings[i:i + 1]
                predictor.predict_torch(None, None, boxes=boxes_input[i:i + 1], multimask_output=False,
                                        return_logits=True)

    per_prompt_sam = gflop(lambda: looped(1))  # segment-anything's decoder: no block-diagonal zeros
    candidates = {"sampredictor_loop": looped, **candidates}
    log(f"decoder {model}: {n_slices} box prompts, {', '.join(candidates)}")
    summary = summarise(interleaved(candidates, repeats), "sampredictor_loop", n_slices, "prompts",
                        gflop_per_item=per_prompt)
    summary["sampredictor_loop"]["gflops"] = n_slices * per_prompt_sam / summary["sampredictor_loop"]["median_s"]
    return {"decoder": summary, "gflop_per_prompt": per_prompt, "gflop_per_prompt_sampredictor": per_prompt_sam,
            "prompts_per_call": n_slices, "decoder_device": device, "mask_iou_vs_torch_fp32": agreement,
            "openvino_kernels": {p: b.decoder.kernels() for p, b in openvino.items()}}


def _openvino_decoders(decoder_path: Path, log) -> dict:
    """OpenVINO over the fp32 ONNX decoder in f32 and, where the CPU has BF16, bf16; none without OpenVINO."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return {}
    from .backends.openvino_backend import OpenVinoBackend
    from .errors import UserError

    backends = {}
    for precision in ("fp32", "bf16"):
        try:
            backends[precision] = OpenVinoBackend(decoder=decoder_path, precision=precision)
        except UserError as exc:
            log(f"openvino decoder {precision}: {exc}")
    return backends


TRAIN_SHAPES = {"la-cpu": ((128, 128, 16), "4 labelled + 4 unlabelled 80x80 crops, 2D U-Net base 16"),
                "la-paper": ((128, 128, 88), "2 labelled + 2 unlabelled 112x112x80 patches, 3D V-Net, SAM on "
                                             "every axial slice of the unlabelled patches")}


def bench_train(steps: int = 10, log=print, engines: Path = Path("engines"), workdir: Path | None = None,
                device: str = "cpu", preset_name: str = "la-cpu") -> dict:
    """One training iteration of mt, semisam on the cache, and semisam with the encoder online, same shapes (a
    preset's), steps interleaved, on the synthetic phantom. SAM runs in onnxruntime on the CPU and in torch on a
    GPU."""
    import tempfile

    from .backends import OnnxBackend, TorchBackend
    from .data import make_phantom, open_dataset, split_cases
    from .embed import build_cache
    from .export import export
    from .models import load_model
    from .train import build_trainer, preset

    work = Path(workdir or tempfile.mkdtemp(prefix="semisam-bench-"))
    volume, shapes = TRAIN_SHAPES[preset_name]
    root = make_phantom(work / "phantom", n_cases=8, shape=volume, seed=0) \
        if not (work / "phantom" / "train.list").is_file() else work / "phantom"
    on_gpu = device.startswith("cuda")
    parts = {p: engines / f"litemedsam_{p}_fp32.onnx" for p in ("encoder", "decoder")}
    if not on_gpu and not all(p.is_file() for p in parts.values()):
        export("litemedsam", out=engines)
    dataset = open_dataset(root)
    split = split_cases(dataset.case_ids, 2, 2)
    encoder = TorchBackend(load_model("litemedsam"), device=device) if on_gpu else OnnxBackend(encoder=parts["encoder"])
    build_cache(dataset, encoder, work / "cache", case_ids=split.unlabeled, progress=False)
    trainers = {}
    for name, method, online, mode in (("mt", "mt", False, "step"), ("semisam_cached", "semisam", False, "step"),
                                       ("semisam_online", "semisam", True, "step"),
                                       ("semisam_rounds", "semisam", False, "rounds")):
        config = preset(preset_name, method=method, iterations=1000, unlabelled_cases=None, unlabelled_every=1,
                        sam_online=online or None, sam_ramp="none", val_every=10**9, save_every=10**9,
                        sam_mode=mode)
        trainer = build_trainer(config, root, None, 2, 2, work / name, cache=work / "cache", device=device,
                                backend="torch" if on_gpu else str(parts["encoder"].parent), tensorboard=False)
        trainer.iteration = 400  # past the ramp's start so the student predicts foreground and SAM is prompted
        trainers[name] = trainer
    # rounds: the step reads stored targets; a round (teacher on every unlabelled volume + SAM on every cached slice)
    # runs every sam_round_every steps, so its cost per step is a round's time over that
    rounds = trainers["semisam_rounds"]
    start = time.perf_counter()
    rounds.method.sam_round(rounds)
    round_s = time.perf_counter() - start
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
    return {"train": result, "P1_semisam_cached_over_mt": p1, "online_over_cached": online,
            "rounds": {"round_s": round_s, "round_every": every,
                       "step_over_mt": result["semisam_rounds"]["median_s"] / result["mt"]["median_s"],
                       "step_with_amortised_round_over_mt": amortised / result["mt"]["median_s"]},
            "preset": preset_name, "shapes": shapes,
            # the share of unlabelled slices that got a SAM prompt: SAM really ran in the timed steps
            "sam_prompted": {k: float(np.mean(v)) for k, v in prompted.items() if k != "mt"},
            "sam": f"LiteMedSAM {'torch ' + device if on_gpu else 'onnxruntime CPU'}", "device": device}


def bench_run(data: Path, cache: Path, artefact: Path | None = None, list_file: Path | None = None,
              iterations: int | None = None, labelled: int = 2, val: int = 8, workdir: Path | None = None,
              log=print, backend: str | None = None, precision: str | None = None, **overrides) -> dict:
    """Whole `la-cpu` runs, one after the other in this process: mt, semisam with its pseudo-label rounds, and mt
    again, same data, seed and iterations; wall-clock of each (data loading and validation included; the one-time
    embedding cache excluded: it must exist). The ratio, P1 end to end, divides by the mean of the two mt runs: on a
    shared machine a drift over the ~7 minutes shows as their difference instead of landing on one side."""
    import tempfile

    from .train import build_trainer, preset

    work = Path(workdir or tempfile.mkdtemp(prefix="semisam-run-"))
    backend = backend or ("onnx" if artefact is not None else "torch")
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


def run(what: str, out: Path, model: str = "litemedsam", precisions=("fp32", "int8"), batches=(1, 4),
        repeats: int = 5, engines: Path = Path("engines"), log=print, data: Path | None = None,
        cache: Path | None = None, artefact: Path | None = None, iterations: int | None = None,
        backend: str | None = None, precision: str | None = None, cases: int | None = None,
        device: str = "cpu") -> dict:
    results: dict = {"machine": machine(), "what": what}
    if what == "pseudo-label":
        from .backends import create_backend
        from .errors import UserError
        from .label_pass import time_label_pass

        if data is None:
            raise UserError("bench pseudo-label times the whole pseudo-label pass over a data set: give --data")
        runtime = create_backend(backend or "torch", model, artefact=artefact, device=device, precision=precision)
        results["label_pass"] = time_label_pass(data, runtime, cases=cases)
        log(f"pseudo-label pass: {results['label_pass']['total_s']:.1f} s")
        write_bench(results, out, figure=False)
        return results
    if what == "run":
        if data is None or cache is None:
            from .errors import UserError

            raise UserError("bench run times whole training runs: give --data and --cache (an embedding cache of "
                            "the run's unlabelled cases, from `semisam-fast embed --every 2`)")
        results.update(bench_run(data, cache, artefact, iterations=iterations, log=log, backend=backend,
                                 precision=precision))
        write_bench(results, out, figure=False)
        return results
    if what in ("encoder", "all"):
        results.update(bench_encoder(model, tuple(precisions), tuple(batches), repeats, engines, log))
    if what in ("decoder", "all"):
        results.update(bench_decoder(model, repeats=max(2, repeats // 2), engines=engines, log=log))
    if what in ("train", "all"):
        results.update(bench_train(steps=max(5, repeats * 2), log=log, engines=engines))
    write_bench(results, out)
    return results
