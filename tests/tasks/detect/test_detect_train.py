"""Detection fine-tuning through ``cnnkit.api.finetune(task="detect")``, offline (sockets patched to fail)."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.records import validate_record

runner = CliRunner()


def test_finetune_then_detect_offline(tiny_yolo_set, tmp_path):
    """Two epochs on four 64 px scenes from the bundled weights; the checkpoint then loads in detect."""
    from cnnkit import api

    with pytest.raises(OSError):  # the conftest guard is active: no network for either step
        socket.create_connection(("example.com", 80), timeout=1)
    out = tmp_path / "ft"
    # the options the `cnnkit finetune` command passes even when unset arrive as None
    result = api.finetune(
        str(tiny_yolo_set),
        task="detect",
        epochs=2,
        batch_size=2,
        imgsz=64,
        out=str(out),
        progress=False,
        lr=0.001,
        threads=1,
        seed=None,
        workers=None,
        freeze=None,
        arch=None,
    )
    assert Path(result["best"]).is_file() and Path(result["last"]).is_file()
    assert Path(result["out"]) == out.resolve()
    assert set(result["metrics"]) == {"precision", "recall", "mAP50", "mAP50-95"}
    images = Path(tiny_yolo_set).parent / "images" / "val"
    detect = runner.invoke(
        app,
        ["detect", str(images), "--model", result["best"], "--format", "jsonl", "--conf", "0.01"],
        catch_exceptions=False,
    )
    assert detect.exit_code == 0, detect.output
    records = [json.loads(line) for line in detect.stdout.splitlines()]
    assert len(records) == 2
    for rec in records:
        validate_record(rec)
        assert rec["model"] == "best" and rec["width"] == 64
    # a finished run refused, its data copy untouched (it was rewritten to point at the DATA given)
    from cnnkit.errors import UsageError

    copy = (out / "data.yaml").read_bytes()
    other = tmp_path / "other"
    shutil.copytree(Path(tiny_yolo_set).parent, other)
    with pytest.raises(UsageError, match="is finished"):
        api.finetune(str(other / "data.yaml"), task="detect", resume=str(out))
    assert (out / "data.yaml").read_bytes() == copy


def test_finetune_refuses_faster_rcnn_and_missing_data(tmp_path, tiny_yolo_set):
    from cnnkit import api
    from cnnkit.errors import UsageError

    with pytest.raises(UsageError, match="YOLO"):
        api.finetune(
            str(tiny_yolo_set), task="detect", model="fasterrcnn_mobilenet_v3_large_320_fpn", out=str(tmp_path / "a")
        )
    with pytest.raises(UsageError, match="no such dataset"):
        api.finetune(str(tmp_path / "missing.yaml"), task="detect")
    with pytest.raises(UsageError, match="resume"):
        api.finetune(str(tiny_yolo_set), task="detect", resume=str(tmp_path / "nothing" / "weights" / "last.pt"))
    with pytest.raises(UsageError, match="resume"):
        api.finetune(None, task="detect", resume=str(tmp_path))  # a folder without weights/last.pt


def test_resume_accepts_run_folder_or_checkpoint(tmp_path):
    from cnnkit.tasks.detect.train import _resume_from

    last = tmp_path / "exp" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"x")
    assert _resume_from(str(tmp_path / "exp"), None) == last
    assert _resume_from(str(last), None) == last
    assert _resume_from(True, str(tmp_path / "exp")) == last


def _train_arguments(monkeypatch, data, tmp_path, **options) -> dict:
    """The keywords cnnkit gives ultralytics' ``train`` (stopped there: nothing is trained)."""
    import ultralytics.engine.model as model

    import cnnkit

    given: dict = {}

    class Stop(Exception):
        pass

    def train(self, **kwargs):
        given.update(kwargs)
        raise Stop

    monkeypatch.setattr(model.Model, "train", train)
    with pytest.raises(Stop):
        cnnkit.finetune(str(data), task="detect", epochs=1, out=str(tmp_path / "run"), **{"imgsz": 64, **options})
    return given


def test_amp_is_off_unless_asked_and_reaches_ultralytics(monkeypatch, tiny_yolo_set, tmp_path):
    """`--amp` was ignored (said) for detect, and ultralytics' own default, on, trained in fp16 on CUDA without it."""
    assert _train_arguments(monkeypatch, tiny_yolo_set, tmp_path / "a")["amp"] is False
    assert _train_arguments(monkeypatch, tiny_yolo_set, tmp_path / "b", amp=True)["amp"] is True


def test_the_config_files_device_is_the_training_device(monkeypatch, tiny_yolo_set, tmp_path):
    """`device` in cnnkit.toml was used by predict and val and not by finetune (it trained on the default device)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CNNKIT_DEVICE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "cnnkit.toml").write_text('device = "mps"\n')
    monkeypatch.setattr("cnnkit.device._mps_available", lambda: False)
    from cnnkit.errors import OptionError

    with pytest.raises(OptionError, match="MPS is not available"):
        _train_arguments(monkeypatch, tiny_yolo_set, tmp_path)


def test_a_checkpoint_file_trains_at_its_own_size(monkeypatch, tiny_yolo_set, tmp_path):
    """`--weights best.pt` (trained at 64) trained at 640, where ultralytics' own train, and cnnkit's detect, val
    and export, take the checkpoint's size."""
    from cnnkit.models.hub import bundled_path

    mine = tmp_path / "mine.pt"
    shutil.copyfile(bundled_path("shapes-yolov8n.pt"), mine)  # trained at 256
    assert _train_arguments(monkeypatch, tiny_yolo_set, tmp_path, weights=str(mine), imgsz=None)["imgsz"] == 256


def test_resume_refuses_another_dataset(tiny_yolo_set, tmp_path):
    """Resuming on another dataset went on silently (its results.csv mixing two datasets)."""
    from cnnkit.data import yolo_yaml
    from cnnkit.errors import OptionError
    from cnnkit.tasks.detect.train import DATA_COPY, _resume_data

    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    yolo_yaml.write_sanitised(yolo_yaml.read(tiny_yolo_set), run / DATA_COPY)
    other = tmp_path / "other"
    shutil.copytree(tiny_yolo_set.parent, other)
    with pytest.raises(OptionError, match="the run was trained on"):
        _resume_data(yolo_yaml.read(other / "data.yaml"), run / "weights" / "last.pt")
    assert _resume_data(yolo_yaml.read(tiny_yolo_set), run / "weights" / "last.pt") == (run / DATA_COPY).resolve()
