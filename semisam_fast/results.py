"""Writing results: evaluation tables (JSON + CSV) and benchmark records (JSON + a PNG plot), atomically. The
commands compute; this module only lays their results out on disk (masks go through `Dataset.write_mask`, overlay
PNGs through `overlay.py`)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from .errors import UserError
from .fsutil import atomic_write, check_outputs, write_json
from .metrics import summarize, undefined_counts


def result_files(out: str | Path) -> tuple[Path, Path]:
    """The JSON and the CSV beside it that `write_results` writes for `out`; refused when they would be one file
    (`--out r.csv`: the CSV would overwrite the JSON just written)."""
    out = Path(out)
    csv_path = out.with_suffix(".csv")
    if csv_path == out:
        raise UserError(f"--out {out} would be both the JSON and its CSV; give a name ending in .json")
    return out, csv_path


def write_results(rows: list[dict], out: str | Path, meta: dict | None = None) -> dict[str, tuple[float, float]]:
    """Write `out` (JSON {"cases": rows, "summary": {metric: {"mean", "sd"}}, **meta}) and `out` with suffix .csv
    (one line per case), both atomically. Returns `metrics.summarize(rows)` ({metric: (mean, sd)}),
    the form `metrics.format_table` takes."""
    out, csv_path = result_files(out)
    summary = summarize(rows)
    undefined = undefined_counts(rows)
    doc = {"cases": rows, **(meta or {}),
           "summary": {k: {"mean": m, "sd": s, "cases": len(rows), "undefined": undefined[k]}
                       for k, (m, s) in summary.items()}}
    write_json(out, doc)

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(csv_path, lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))
    return summary


def check_result_outputs(out: str | Path, dataset, case_ids: list[str], *files: str | Path | None) -> None:
    """Before a command computes: its result files (`out` and its CSV) must not be a file it reads (`files`, the
    data of `case_ids`) (`evaluate --checkpoint C --out C` would replace the checkpoint with JSON)."""
    inputs = [p for c in case_ids for p in dataset.source_files(c)] + [Path(f) for f in files if f is not None]
    check_outputs(result_files(out), inputs)


def write_report(out: str | Path, report: dict) -> Path:
    """A pipeline's summary record (the demo's report.json)."""
    return write_json(out, report)


def write_bench(results: dict, out: str | Path, figure: bool = True) -> Path:
    """A benchmark's JSON record, and a PNG of its timing tables beside it."""
    out = Path(out)
    write_json(out, results)
    if figure:
        plot(results, out.with_suffix(".png"))
    return out


def _tables(results: dict):
    """(kind, title, table) of every timing table: `bench` keeps them at the top ("encoder": {...}), the GPU suite
    one level down ("vit_b": {"encoder": {...}}, "train_3d": {"train": {...}})."""
    for name, section in results.items():
        if not isinstance(section, dict) or "error" in section:
            continue
        for kind in ("encoder", "decoder", "train"):
            if isinstance(section.get(kind), dict):
                yield kind, name if name.startswith(kind) else f"{name} {kind}", section[kind]
            elif name == kind:
                yield kind, kind, section


def plot(results: dict, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(_tables(results))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
    axes = np.atleast_1d(axes)
    for ax, (kind, title, data) in zip(axes, panels):
        if kind == "encoder":
            for batch, rows in data.items():
                names = list(rows)
                ax.bar([f"{n}\n{batch}" for n in names], [rows[n]["images_per_s"] for n in names])
            ax.set_ylabel("images / s")
        else:
            names = list(data)
            key = "prompts_per_s" if kind == "decoder" else "iterations_per_s"
            ax.bar(names, [data[n][key] for n in names])
            ax.set_ylabel(key.replace("_", " "))
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    fig.suptitle(results.get("machine", {}).get("gpu") or results.get("machine", {}).get("cpu", ""))
    fig.tight_layout()
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    return path
