"""Defaults from flag > environment > config file > built-in, and `cnnkit info` showing where each came from."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.config import effective, lookup, read_config, resolve
from cnnkit.errors import UsageError

runner = CliRunner()


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for key in ("CNNKIT_BATCH_SIZE", "CNNKIT_FORMAT", "CNNKIT_WORKERS", "CNNKIT_CACHE_DIR", "CNNKIT_MODEL_CLASSIFY"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def test_precedence(in_tmp, monkeypatch):
    assert lookup("batch_size", 16).source == "built-in"
    (in_tmp / "cnnkit.toml").write_text('batch_size = 4\nformat = "csv"\n[model]\nclassify = "resnet18"\n')
    assert lookup("batch_size", 16).value == 4
    assert lookup("model.classify").value == "resnet18"
    monkeypatch.setenv("CNNKIT_BATCH_SIZE", "8")
    setting = lookup("batch_size", 16)
    assert setting.value == 8 and setting.source == "env CNNKIT_BATCH_SIZE"
    assert resolve("batch_size", 32, True) == 32
    assert resolve("batch_size", 16, False) == 8


def test_user_config_folder(in_tmp):
    folder = in_tmp / "xdg" / "cnnkit"
    folder.mkdir(parents=True)
    (folder / "cnnkit.toml").write_text("workers = 3\n")
    assert lookup("workers", 2).value == 3


@pytest.mark.parametrize("text", ['batch_size = "many"\n', 'batch_size = "3"\n', "nonsense = 1\n", "batch_size = [\n"])
def test_bad_config_is_a_usage_error(in_tmp, text):
    (in_tmp / "cnnkit.toml").write_text(text)
    with pytest.raises(UsageError, match="cnnkit.toml"):
        lookup("batch_size", 16) if "nonsense" not in text and "[" not in text else read_config()


def test_cli_uses_config_and_env(in_tmp, shapes_images, monkeypatch):
    (in_tmp / "cnnkit.toml").write_text('format = "csv"\n')
    result = runner.invoke(app, ["classify", str(shapes_images / "img_00_*"), "-k", "1"])
    assert result.exit_code == 0 and result.stdout.startswith("path,task,model")
    monkeypatch.setenv("CNNKIT_FORMAT", "json")
    result = runner.invoke(app, ["classify", str(shapes_images / "img_00_*"), "-k", "1"])
    assert json.loads(result.stdout)[0]["predictions"][0]["label"]
    result = runner.invoke(app, ["classify", str(shapes_images / "img_00_*"), "-k", "1", "-f", "jsonl"])
    assert json.loads(result.stdout)["task"] == "classify"


def test_model_from_config_reaches_the_loader(in_tmp, shapes_images):
    (in_tmp / "cnnkit.toml").write_text('[model]\nclassify = "nope"\n')
    result = runner.invoke(app, ["classify", str(shapes_images / "img_00_*")])
    assert result.exit_code == 2 and "unknown classify model 'nope'" in result.stderr


def test_cache_dir_setting_moves_the_hub_folder(in_tmp, monkeypatch):
    from cnnkit.models.hub import torch_hub_dir

    monkeypatch.setenv("CNNKIT_CACHE_DIR", str(in_tmp / "weights"))
    assert torch_hub_dir() == in_tmp / "weights"


def test_info_shows_effective_settings(in_tmp, monkeypatch):
    (in_tmp / "cnnkit.toml").write_text("workers = 5\n")
    monkeypatch.setenv("CNNKIT_DEVICE", "cpu")
    data = json.loads(runner.invoke(app, ["info", "-f", "json"]).stdout)
    assert data["settings"]["workers"] == {"value": 5, "source": f"config {in_tmp / 'cnnkit.toml'}"}
    assert data["settings"]["device"]["source"] == "env CNNKIT_DEVICE"
    assert data["settings"]["batch_size"]["source"] == "built-in"
    assert effective()["format"]["source"] == "built-in"


def test_info_answers_when_the_environments_device_is_missing(in_tmp, monkeypatch):
    """`CNNKIT_DEVICE=cuda cnnkit info` on a machine without CUDA exited 2 with no report: info is where one looks
    to see why. It shows the setting and its source, and `auto_device` is what auto picks, not the variable."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("CNNKIT_DEVICE", "cuda")
    result = runner.invoke(app, ["info", "-f", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"]["device"] == {"value": "cuda", "source": "env CNNKIT_DEVICE"}
    assert data["auto_device"] in {"cpu", "mps"}


@pytest.mark.parametrize(
    ("variable", "value", "flag", "note"),
    [
        # `CNNKIT_DEVICE=cuda` on a CPU machine was blamed on a --device flag the user never gave
        ("CNNKIT_DEVICE", "cuda", "-d", "(device cuda is from CNNKIT_DEVICE)"),
        # `CNNKIT_MODEL_CLASSIFY=resnet81` was an unknown model with no word of the variable that named it
        ("CNNKIT_MODEL_CLASSIFY", "resnet81", "-m", "(model resnet81 is from CNNKIT_MODEL_CLASSIFY)"),
    ],
)
def test_a_setting_that_cannot_be_used_says_where_it_came_from(
    in_tmp, shapes_images, monkeypatch, variable, value, flag, note
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    image = str(sorted(shapes_images.iterdir())[0])
    monkeypatch.setenv(variable, value)
    result = runner.invoke(app, ["classify", image])
    assert result.exit_code == 2 and result.stderr.strip().endswith(note)
    given = runner.invoke(app, ["classify", image, flag, value])
    assert given.exit_code == 2 and "is from" not in given.stderr


def test_a_setting_from_the_config_file_that_cannot_be_used_names_the_file(in_tmp, shapes_images, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    image = str(sorted(shapes_images.iterdir())[0])
    (in_tmp / "cnnkit.toml").write_text('device = "cuda"\n')
    result = runner.invoke(app, ["classify", image])
    assert result.exit_code == 2 and "(device cuda is from " in result.stderr and "cnnkit.toml)" in result.stderr


def test_a_default_format_does_not_override_an_output_files_suffix(in_tmp, shapes_images, monkeypatch):
    """With `format = "jsonl"` in cnnkit.toml (the README's example), `-o part-1.parquet` wrote JSON Lines into
    the .parquet file, and the merge failed only after the job. A default format is for stdout and for a file
    whose name says no format."""
    image = str(sorted(shapes_images.iterdir())[0])
    (in_tmp / "cnnkit.toml").write_text('format = "jsonl"\n')
    assert runner.invoke(app, ["classify", image, "-o", "part-1.parquet"]).exit_code == 0
    assert (in_tmp / "part-1.parquet").read_bytes()[:4] == b"PAR1"
    monkeypatch.setenv("CNNKIT_FORMAT", "csv")
    assert runner.invoke(app, ["classify", image, "-o", "x.jsonl"]).exit_code == 0
    assert json.loads((in_tmp / "x.jsonl").read_text())["path"] == image
    assert runner.invoke(app, ["classify", image, "-o", "x.txt"]).exit_code == 0
    assert (in_tmp / "x.txt").read_text().startswith("path,")  # no format in the name: the default's
