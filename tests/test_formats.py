"""The format table (`formats.py`) is the one place a runtime format is decided: the exporter writes where it says,
the factory and the benchmarks open what it says, the CLI offers its names. Real exports, no mocks."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch

from semisam_fast import choices
from semisam_fast.artefact import read_sidecar
from semisam_fast.backends import create_backend, open_artefact
from semisam_fast.bench import exported_encoders
from semisam_fast.errors import UserError
from semisam_fast.export import export
from semisam_fast.formats import FORMATS, ONNX, artefact_path, find_format, format_of

HAS_TRT = importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available()


def test_the_clis_names_are_the_tables_and_choices_stays_light():
    assert choices.BACKENDS == ("torch", *FORMATS)
    assert choices.EXPORT_FORMATS == tuple(name for name, fmt in FORMATS.items() if fmt.exported)
    assert choices.ONNX_RUNTIMES == tuple(name for name, fmt in FORMATS.items() if fmt.suffix == ONNX.suffix)
    for name, fmt in FORMATS.items():
        assert find_format(name) is fmt and find_format(fmt.runtime) is fmt
        # importing a backend's module never imports its runtime (TensorRT stays optional)
        assert fmt.backend_class().format is fmt and fmt.backend_class().name == fmt.runtime
    assert find_format("engines/") is None  # any other name is a path
    with pytest.raises(UserError, match="unknown artefact type"):
        format_of("model.pt")
    # the CLI reads its choices before any command runs: the table must not pull torch in
    code = "import sys, semisam_fast.choices; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


@pytest.mark.parametrize("name", list(FORMATS))
def test_exporter_factory_and_bench_find_the_same_files(name, tiny_artefacts, tmp_path):
    """For each format: the files `export` wrote are where `formats.artefact_path` says, `create_backend` (by the
    format's CLI name and by its runtime's name) and `open_artefact` open exactly those files in the format's runtime,
    and the benchmark's lookup resolves the same encoder without exporting again."""
    fmt = FORMATS[name]
    if name == "openvino":
        pytest.importorskip("openvino")
    if fmt.suffix != ONNX.suffix:
        if not HAS_TRT:
            pytest.skip("needs TensorRT and a CUDA GPU")
        written = {r.report.part: r.path for r in export("tiny", fmt=name, batch="1,2,4", out=tmp_path)}
    else:
        written = {part: result.path for part, result in tiny_artefacts.items()}
    folder = written["encoder"].parent
    for part, path in written.items():
        key = read_sidecar(path).get("engine_key")
        # openvino opens the fp32 ONNX files whatever precision it computes in
        for precision in ("fp32", "bf16") if fmt.file_precision else ("fp32",):
            assert artefact_path(folder, "tiny", part, precision, name, key=key) == path
        assert path.suffix == fmt.suffix and (format_of(path) is fmt) is fmt.exported
    for alias in (name, fmt.runtime):
        backend = create_backend(alias, "tiny", artefact=folder)
        assert type(backend) is fmt.backend_class() and backend.describe()["backend"] == fmt.runtime
        assert {part: getattr(backend, part).path for part in written} == written
    for part, path in written.items():
        single = open_artefact(path, runtime=name)
        assert single.name == fmt.runtime and getattr(single, part).path == path
    if fmt.suffix == ONNX.suffix:  # the encoder benchmark times onnxruntime over the exported files, as found here
        said: list[str] = []
        assert exported_encoders("tiny", folder, ["fp32"], said.append) == {"fp32": written["encoder"]}
        assert not said  # nothing exported again


def test_one_runner_per_part_behind_one_encode_and_decode(tiny_artefacts):
    """The runtimes share encode/decode (`ArtefactBackend`); each runs its own graph: same inputs, the same masks."""
    pytest.importorskip("openvino")
    folder = tiny_artefacts["encoder"].path.parent
    onnx, openvino = (create_backend(name, "tiny", artefact=folder) for name in ("onnx", "openvino"))
    images = torch.randn(2, 3, 256, 256)
    embeddings = onnx.encode(images)
    torch.testing.assert_close(openvino.encode(images), embeddings, atol=1e-3, rtol=1e-3)
    coords = torch.tensor([[[[40.0, 50.0], [180.0, 200.0]]]]).expand(2, 1, 2, 2)
    labels = torch.tensor([[[2, 3]]]).expand(2, 1, 2)
    masks, iou = onnx.decode(embeddings, coords, labels)
    other, other_iou = openvino.decode(embeddings, coords, labels)
    assert masks.shape == other.shape == (2, 1, 1, 256, 256) and iou.shape == other_iou.shape == (2, 1, 1)
    assert ((masks > 0) == (other > 0)).float().mean() > 0.999
