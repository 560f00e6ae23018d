"""GPU encoder/decoder throughput: torch (fp32/fp16/bf16, CUDA) vs onnxruntime CUDA EP (I/O binding) vs TensorRT,
for litemedsam and vit_b (random init), batch 1..32. Ratios are to torch fp32 eager in the same run."""
import argparse
import json
import tempfile
from pathlib import Path

import torch

from semisam_fast import bench
from semisam_fast.backends import OnnxBackend, TorchBackend
from semisam_fast.models import load_model
from semisam_fast.models.sam import build_vit

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--repeats", type=int, default=10)
args = parser.parse_args()
work = Path(tempfile.mkdtemp(prefix="semisam-gpu-"))
results = {"machine": bench.machine(), "encoder": {}}
for model in ("litemedsam", "vit_b"):
    checkpoint = None
    if model == "vit_b":
        torch.manual_seed(0)
        checkpoint = work / "vit_b_random.pth"
        torch.save(build_vit("vit_b").state_dict(), checkpoint)
    from semisam_fast.export import export

    export(model, checkpoint, part="all", out=work / model)
    size = 256 if model == "litemedsam" else 1024
    backends = {p: TorchBackend(load_model(model, checkpoint), device="cuda", precision=p) for p in ("fp32", "fp16", "bf16")}
    ort = OnnxBackend(encoder=work / model / f"{model}_encoder_fp32.onnx", provider="cuda")
    results.setdefault("providers", {})[model] = ort.describe()["encoder"]["provider"]
    engines = {}
    try:
        export(model, checkpoint, part="encoder", fmt="engine", precision="fp16", batch="1,8,32", out=work / model)
        from semisam_fast.backends import create_backend
        engines["tensorrt_fp16"] = create_backend(str(work / model), model)
    except Exception as exc:  # noqa: BLE001 - report why TensorRT was not timed
        results.setdefault("tensorrt_skipped", {})[model] = str(exc)
    for batch in (1, 8, 32) if model == "litemedsam" else (1, 4, 8):
        x = torch.randn(batch, 3, size, size, device="cuda")
        candidates = {f"torch_{p}": (lambda b=b, x=x: b.encode(x)) for p, b in backends.items()}
        candidates["onnxruntime_cuda_fp32"] = lambda x=x: ort.encode(x)
        candidates.update({k: (lambda b=b, x=x: b.encode(x)) for k, b in engines.items()})
        results["encoder"][f"{model}_batch_{batch}"] = bench.summarise(
            bench.interleaved(candidates, args.repeats, warmup=2), "torch_fp32", batch)
Path(args.out).write_text(json.dumps(results, indent=2, default=str))
print(json.dumps(results, indent=2, default=str))
