"""README's examples run as written: the Python example (in-process), the four-command quick start and the
SAM recipe after it (on a phantom folder standing in for `my_data`, with fewer iterations)."""
from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest

from .conftest import invoke

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(after: str, language: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(after)
    found = re.search(rf"```{language}\n(.*?)```", text[start:], re.S)
    assert found, f"no ```{language} block after {after!r} in README"
    return found.group(1)


def test_readme_python_example_runs(tmp_path, capsys):
    code = _block("<!-- readme-example", "python")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    finally:
        os.chdir(cwd)
    said = capsys.readouterr().out
    assert re.search(r"validation Dice \d\.\d{3}; 4 masks written", said), said
    assert (tmp_path / "runs" / "api" / "eval.json").is_file()
    assert len(list((tmp_path / "runs" / "api" / "masks").glob("*/mask.h5"))) == 4


def test_readme_top_blocks_are_the_install_commands():
    text = README.read_text(encoding="utf-8")
    assert text.startswith("# semisam-fast\n\n```bash\npip install torch==2.14.1 torchvision==0.29.1 && "
                           "pip install -e . && semisam-fast demo\n```\n```bash\npip install torch==2.14.1 torchvision==0.29.1 && "
                           "pip install -e \".[dev]\" && python -m pytest -q\n```\n")
    assert len(text.splitlines()) <= 200


def _run_lines(lines: list[str], folder: Path, extra) -> None:
    """Each README command line in `folder`, with extra(args) appended (fewer iterations); each must exit 0."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for line in lines:
            args = shlex.split(line)[1:]
            result = invoke(*args, *extra(args))
            assert result.returncode == 0, (line, result.stderr[-2000:])
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_readme_quick_start_runs_on_a_folder(tmp_path):
    """export -> embed -> train -> predict, each line as README has it, on a 10-case phantom as `my_data` (train
    with 4 iterations)."""
    from semisam_fast.data import make_phantom

    make_phantom(tmp_path / "my_data", n_cases=10, shape=(64, 64, 8))
    lines = [line.split("#", 1)[0] for line in _block("## Quick start", "bash").splitlines() if line.strip()]
    assert [shlex.split(line)[1] for line in lines] == ["export", "embed", "train", "predict"]
    _run_lines(lines, tmp_path, lambda args: ["--iterations", "4"] if args[0] == "train" else [])
    assert json.loads((tmp_path / "runs" / "mine" / "run.json").read_text())["config"]["method"] == "semisam"
    assert len(list((tmp_path / "runs" / "mine" / "masks").glob("*/mask.h5"))) == 10

    # "SAM that helps": adapt -> sup -> semisam prompted by it, on the quick start's cache (fewer steps/iterations;
    # a repeated option's last value wins)
    recipe = _block("**SAM that helps**", "bash").replace("\\\n", " ")
    lines = [line.split("#", 1)[0] for line in recipe.splitlines() if line.strip()]
    assert [shlex.split(line)[1] for line in lines] == ["adapt", "train", "train"]
    _run_lines(lines, tmp_path, lambda args: ["--steps", "3"] if args[0] == "adapt" else ["--iterations", "4"])
    record = json.loads((tmp_path / "runs" / "semisam" / "run.json").read_text())
    assert record["config"]["sam_prompt_run"] == str(tmp_path / "runs" / "sup")
    assert record["config"]["iterations"] == 4
