"""Options as data: each option is declared once, on its dataclass field; the CLI's flags, their help and defaults,
the TOML file's keys and the validation all come from that declaration."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass, fields

import pytest
import typer
from typer.testing import CliRunner

from semisam_fast.cli_options import option_parameters, with_options
from semisam_fast.errors import UserError
from semisam_fast.options import option, option_specs
from semisam_fast.target_options import TargetOptions
from semisam_fast.train.config import PRESETS, TARGETS_PREFIX, TrainConfig, preset, recipe_targets
from semisam_fast.train.config_file import read_config_file
from tests.conftest import invoke


@dataclass
class _Toy:
    rate: float = option(0.5, "a rate", at_least=0, at_most=1)
    mode: str = option("a", "a mode", choices=("a", "b"))
    on: bool = option(True, "a switch")
    shape: list = option(help="not a flag", factory=list, cli=False)


def test_flags_are_made_from_the_declaration_and_reach_the_command_as_data():
    app = typer.Typer()
    seen = {}

    @app.command()
    @with_options("flags", option_parameters(_Toy, "toy_", lambda name: f"default {getattr(_Toy(), name)}"))
    def command(name: str = typer.Option("x"), flags: dict = None) -> None:
        seen.update(name=name, flags=flags)

    runner = CliRunner()
    assert runner.invoke(app, ["--toy-rate", "0.25", "--no-toy-on", "--name", "y"]).exit_code == 0
    assert seen == {"name": "y", "flags": {"toy_rate": 0.25, "toy_on": False}}  # only what was given
    assert runner.invoke(app, []).exit_code == 0 and seen["flags"] == {}
    assert runner.invoke(app, ["--toy-rate", "2"]).exit_code == 2  # the declared range
    assert runner.invoke(app, ["--toy-mode", "c"]).exit_code == 2  # the declared choices
    assert runner.invoke(app, ["--toy-shape", "1"]).exit_code == 2  # cli=False: TOML-only
    help_text = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    assert "a rate (default 0.5)" in help_text and "--toy-on" in help_text and "--no-toy-on" in help_text


def test_train_offers_every_declared_option_with_the_presets_real_defaults():
    result = invoke("train", "--help", env={"COLUMNS": "400"})
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name, spec in option_specs(TrainConfig).items():
        if spec.cli:
            assert "--" + name.replace("_", "-") in text, name
    for f in fields(TargetOptions):  # the SAM target options, flat under the sam_ prefix
        assert "--" + (TARGETS_PREFIX + f.name).replace("_", "-") in text, f.name
    lr = "; ".join(f"{p}: {c.lr}" for p, c in PRESETS.items())  # presets that differ show each value
    assert f"learning rate ({lr})" in text
    agreement = PRESETS["la-cpu"].targets.min_agreement
    assert f"reaches this (rounds; default {agreement})" in text
    pseudo = " ".join(invoke("pseudo-label", "--help", env={"COLUMNS": "400"}).stdout.split())
    assert "--margin" in pseudo and f"(default {TargetOptions().margin}; --prompt teacher: the run's)" in pseudo


def test_the_target_options_exist_once_in_the_config_the_file_and_the_checkpoint():
    config = preset("la-cpu", sam_margin=2.0, sam_fusion="mean", sam_weight=1.0)
    assert config.targets == dataclasses.replace(PRESETS["la-cpu"].targets, margin=2.0, fusion="mean")
    assert config.sam_weight == 1.0
    recorded = config.as_dict()  # what a checkpoint records
    assert recorded["targets"]["margin"] == 2.0 and "sam_margin" not in recorded
    assert TargetOptions.from_config(recorded) == config.targets
    assert TargetOptions.from_config(recorded, min_agreement=0.2).min_agreement == 0.2
    with pytest.raises(UserError, match="older"):  # a config of the flat layout is refused, not read as defaults
        TargetOptions.from_config({"sam_margin": 3.0})
    with pytest.raises(UserError, match="--sam-fusion"):
        preset("la-cpu", sam_fusion="max")
    with pytest.raises(UserError, match="--sam-min-agreement"):
        preset("la-cpu", sam_min_agreement=1.5)


def test_a_sam_recipe_is_one_named_set_of_options_under_those_given():
    adapted = preset("la-cpu", sam_recipe="adapted")
    assert (adapted.sam_weight, adapted.targets.min_agreement, adapted.targets.fusion) == (1.0, 0.0, "mean")
    assert preset("la-cpu", sam_recipe="frozen") == preset("la-cpu") == preset("la-cpu", sam_recipe=None)
    mixed = preset("la-cpu", sam_recipe="adapted", sam_weight=0.3, sam_min_agreement=None)  # None: not given
    assert (mixed.sam_weight, mixed.targets.min_agreement) == (0.3, 0.0)
    assert recipe_targets("adapted") == {"min_agreement": 0.0, "fusion": "mean"}  # pseudo-label's names
    assert recipe_targets(None) == {}
    with pytest.raises(UserError, match="unknown SAM recipe 'tuned'"):
        preset("la-cpu", sam_recipe="tuned")


def test_a_config_file_takes_the_flat_target_names(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("sam_min_agreement = 0.3\nsam_largest_3d = false\nlr = 0.002\n")
    options = read_config_file(toml)
    config = preset("la-cpu", **options)
    assert (config.targets.min_agreement, config.targets.largest_3d, config.lr) == (0.3, False, 0.002)
    toml.write_text("sam_largest_3d = 1\n")
    with pytest.raises(UserError, match="sam_largest_3d"):
        read_config_file(toml)
    toml.write_text("targets = {margin = 1.0}\n")  # one spelling: the flat one, as the flags
    with pytest.raises(UserError, match="unknown option 'targets'"):
        read_config_file(toml)


def test_the_cli_reads_its_options_without_loading_torch():
    code = "import sys, semisam_fast.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
