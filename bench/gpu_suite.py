"""The GPU suite (bench/gpu.sh calls it): encoder throughput vs batch for litemedsam and vit_b (random init: timing
only) over torch fp32/fp16/bf16 eager and torch.compile with CUDA graphs, onnxruntime's CUDA provider and TensorRT
where they really are there; batched decoder prompts/s vs a SamPredictor loop; and the training iteration (mt,
semisam on the cache, semisam online). Ratios are to torch fp32 eager in the same interleaved run.

Each section is written to the JSON as soon as it finishes and a failing section records its error and the suite
goes on, so a short device lease still brings back what ran. `--device cpu --quick` is the smoke test for machines
without a GPU."""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from pathlib import Path

import torch

from semisam_fast import bench
from semisam_fast.fsutil import write_json
from semisam_fast.backends import OnnxBackend, TorchBackend, create_backend
from semisam_fast.export import export
from semisam_fast.models import load_model
from semisam_fast.models.sam import build_vit


def runtimes() -> dict:
    info: dict = {}
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError as exc:
        info["onnxruntime"] = str(exc)
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = "not installed"
    return info


def encoder_section(model: str, device: str, batches: tuple[int, ...], repeats: int, compile_batches: tuple[int, ...],
                    work: Path, log) -> dict:
    checkpoint = None
    if model == "vit_b":
        torch.manual_seed(0)
        checkpoint = work / "vit_b_random.pth"
        torch.save(build_vit("vit_b").state_dict(), checkpoint)
    size = 256 if model == "litemedsam" else 1024
    precisions = ("fp32", "fp16", "bf16") if device.startswith("cuda") else ("fp32",)
    eager = {p: TorchBackend(load_model(model, checkpoint), device=device, precision=p) for p in precisions}
    extra, notes = {}, {}
    if device.startswith("cuda"):
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            export(model, checkpoint, part="encoder", out=work / model)
            ort_backend = OnnxBackend(encoder=work / model / f"{model}_encoder_fp32.onnx", provider="cuda")
            notes["onnxruntime"] = ort_backend.describe()["encoder"]
            if not notes["onnxruntime"]["fell_back_to_cpu"]:
                extra["onnxruntime_cuda_fp32"] = ort_backend
        else:
            notes["onnxruntime"] = f"no CUDAExecutionProvider here ({ort.get_available_providers()}): not timed"
        try:
            export(model, checkpoint, part="encoder", fmt="engine", precision="fp16",
                   batch=f"1,{max(batches)},{max(batches)}", out=work / model)
            extra["tensorrt_fp16"] = create_backend(str(work / model), model, precision="fp16")
        except Exception as exc:  # noqa: BLE001 - record why TensorRT was not timed
            notes["tensorrt"] = f"not timed: {exc}"
    compiled = None
    if compile_batches:
        compiled = TorchBackend(load_model(model, checkpoint), device=device, precision="fp16", compile=True)
    per_image = bench.gflop(lambda: eager["fp32"].encode(torch.randn(1, 3, size, size, device=device)))
    rows, compile_s = {}, {}
    for batch in batches:
        x = torch.randn(batch, 3, size, size, device=device)
        candidates = {f"torch_{p}": (lambda b=b, x=x: b.encode(x)) for p, b in eager.items()}
        candidates.update({k: (lambda b=b, x=x: b.encode(x)) for k, b in extra.items()})
        if compiled is not None and batch in compile_batches:
            start = time.perf_counter()
            got = compiled.encode(x)  # first call compiles and captures the graph for this shape
            compile_s[batch] = time.perf_counter() - start
            reference = eager["fp32"].encode(x)
            notes.setdefault("compiled_fp16_rel_error", {})[batch] = float((got - reference).norm() / reference.norm())
            candidates["torch_fp16_compiled_cudagraphs"] = lambda x=x: compiled.encode(x)
        log(f"encoder {model} batch {batch}: {', '.join(candidates)}")
        rows[f"batch_{batch}"] = bench.summarise(bench.interleaved(candidates, repeats, warmup=2), "torch_fp32", batch,
                                                 gflop_per_item=per_image)
    return {"encoder": rows, "gflop_per_image": per_image, "compile_and_capture_s": compile_s, "notes": notes,
            "input_size": size}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, help="JSON file")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="small batches, no compile (smoke test)")
    parser.add_argument("--only", default="litemedsam,vit_b,decoder,train,train_3d", help="comma-separated sections")
    args = parser.parse_args()
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="semisam-gpu-"))
    results: dict = {"machine": bench.machine(), "runtimes": runtimes(), "device": args.device,
                     "command": "bash bench/gpu.sh OUT_DIR"}
    on_gpu = args.device.startswith("cuda")

    def section(name, run):
        if name not in args.only.split(","):
            return
        start = time.perf_counter()
        try:
            results[name] = run()
        except Exception as exc:  # noqa: BLE001 - a failed section is reported, the rest still runs
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        results[name]["section_s"] = round(time.perf_counter() - start, 1)
        write_json(out, results)
        print(f"[{name}] {results[name]['section_s']} s", flush=True)

    quick = args.quick
    section("litemedsam", lambda: encoder_section(
        "litemedsam", args.device, (1, 2) if quick else (1, 8, 32), args.repeats,
        () if quick or not on_gpu else (1, 32), work, print))
    section("vit_b", lambda: encoder_section(
        "vit_b", args.device, (1,) if quick else (1, 4, 8), max(3, args.repeats // 2),
        () if quick or not on_gpu else (8,), work, print))
    section("decoder", lambda: bench.bench_decoder("litemedsam", n_slices=8 if quick else 64, repeats=args.repeats,
                                                   engines=work / "engines", device=args.device))
    section("train", lambda: bench.bench_train(steps=3 if quick else 20, engines=work / "engines",
                                               workdir=work / "train", device=args.device))
    section("train_3d", lambda: bench.bench_train(steps=2 if quick else 10, engines=work / "engines",
                                                  workdir=work / "train_3d", device=args.device,
                                                  preset_name="la-paper"))
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
