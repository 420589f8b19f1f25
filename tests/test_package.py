"""How the package hangs together: what imports what, and where options come from."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest
import typer

from pixelreg.cli import app
from pixelreg.simulate.spec import DataSpec


def modules_loaded_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement`."""
    code = f"import sys; {statement}; print(' '.join(sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_running_a_trained_model_never_imports_the_training_loop():
    loaded = modules_loaded_by(
        "import pixelreg.evaluate.report, pixelreg.nn.inference, pixelreg.plots.run, "
        "pixelreg.io.checkpoints, pixelreg.cli"
    )
    assert "pixelreg.evaluate.report" in loaded and "pixelreg.nn.train" not in loaded


def test_the_command_line_starts_without_torch():
    assert "torch" not in modules_loaded_by("import pixelreg, pixelreg.cli")


def _options(command: str) -> dict[str, object]:
    click_command = typer.main.get_command(app).commands[command]
    return {param.name: param.default for param in click_command.params}


@pytest.mark.parametrize("command", ["generate", "train"])
def test_every_data_option_comes_from_the_spec_with_its_default(command):
    options = _options(command)
    defaults = DataSpec()
    for spec_field in fields(DataSpec):
        if spec_field.name in ("height", "width"):
            assert options["size"] == str(defaults.height)
        elif spec_field.name == "holdout":  # auto, resolved by the count
            assert options["holdout"] == "auto" and defaults.holdout == "random"
        elif spec_field.name.endswith("_max"):  # one option with its low end: V or LO:HI
            low = spec_field.name.removesuffix("_max")
            assert (
                options[low] == format(getattr(defaults, low), "g")
                and getattr(defaults, spec_field.name) is None
            )
        elif f"{spec_field.name}_max" in {f.name for f in fields(DataSpec)}:
            continue  # checked with its _max
        else:
            assert options[spec_field.name] == getattr(defaults, spec_field.name), spec_field.name


def test_training_defaults_come_from_the_config():
    from pixelreg.nn.config import TrainConfig

    options, defaults = _options("train"), TrainConfig()
    for name in ("model", "epochs", "batch_size", "device", "amp"):
        assert options[name] == getattr(defaults, name)
