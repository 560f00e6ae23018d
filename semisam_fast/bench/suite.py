"""The `semisam-fast bench WHAT` command: which benchmarks run for WHAT, the machine they ran on, and the result file
(JSON, and a PNG figure for the timing tables)."""
from __future__ import annotations

from pathlib import Path

from ..formats import DEFAULT_FOLDER
from ..results import write_bench
from .decoder import bench_decoder
from .encoder import bench_encoder
from .timing import machine
from .training import bench_run, bench_train


def run(what: str, out: Path, model: str = "litemedsam", precisions=("fp32", "int8"), batches=(1, 4),
        repeats: int = 5, engines: Path = Path(DEFAULT_FOLDER), log=print, data: Path | None = None,
        cache: Path | None = None, artefact: Path | None = None, iterations: int | None = None,
        backend: str | None = None, precision: str | None = None, cases: int | None = None,
        device: str = "cpu") -> dict:
    results: dict = {"machine": machine(), "what": what}
    if what == "pseudo-label":
        from ..backends import create_backend
        from ..errors import UserError
        from ..label_pass import time_label_pass

        if data is None:
            raise UserError("bench pseudo-label times the whole pseudo-label pass over a data set: give --data")
        runtime = create_backend(backend or "torch", model, artefact=artefact, device=device, precision=precision)
        results["label_pass"] = time_label_pass(data, runtime, cases=cases)
        log(f"pseudo-label pass: {results['label_pass']['total_s']:.1f} s")
        write_bench(results, out, figure=False)
        return results
    if what == "run":
        if data is None or cache is None:
            from ..errors import UserError

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
