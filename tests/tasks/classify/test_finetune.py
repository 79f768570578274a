"""``cnnkit finetune --task classify``: runs, outputs, resume, errors (issue 4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.models.checkpoint import load_state_dict, read_meta
from tests.fixtures.finetune import NAMES, random_model, write_digits

REPO = Path(__file__).resolve().parents[3]
FAST = ["--model", "lenet5", "--epochs", "2", "--batch-size", "8", "--workers", "0", "--threads", "1"]


def run(args: list[str]):
    return CliRunner().invoke(app, args)


def _classify_labels(weights: Path, folder: Path) -> list[str]:
    result = run(["classify", str(folder), "--weights", str(weights), "-f", "jsonl", "-k", "1"])
    assert result.exit_code == 0, result.output
    return [json.loads(line)["predictions"][0]["label"] for line in result.stdout.splitlines()]


def test_finetune_bundled_lenet5_on_new_classes_writes_a_run_classify_can_use(tiny_digits, tmp_path):
    out = tmp_path / "run"
    result = run(
        [
            "finetune",
            str(tiny_digits),
            *FAST,
            "--out",
            str(out),
            "--lr",
            "3e-3",
            "--freeze",
            "backbone",
            "--augment",
            "none",
            "--val-split",
            "0.25",
            "--seed",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["out"] == str(out) and summary["metrics"]["epochs_run"] == 2
    for name in (
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "last.pt",
        "metrics.csv",
        "curves.png",
        "confusion_matrix.png",
    ):
        assert (out / name).is_file(), name
    meta = read_meta(out / "best.safetensors")
    assert meta["labels"] == sorted(NAMES) and meta["arch"] == "lenet5"
    assert meta["preprocess"]["crop"] == 32 and "new 3-class head" in meta["source"]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,train_loss,train_acc,val_loss,val_acc,val_top5,val_images,lr") and len(rows) == 3
    # Frozen backbone: the trunk still holds the bundled weights, the head does not.
    bundled = load_state_dict(REPO / "cnnkit/weights/lenet5-digits.safetensors")
    tuned = load_state_dict(out / "last.safetensors")
    assert torch.equal(bundled["features.0.weight"], tuned["features.0.weight"])
    assert tuned["classifier.5.weight"].shape == (3, 84)
    labels = _classify_labels(out / "best.safetensors", tiny_digits / "two")
    assert set(labels) <= set(NAMES) and labels.count("two") >= len(labels) // 2


def test_finetune_options_sgd_step_warmup_strong_amp_imgsz(tiny_digits, tmp_path):
    out = tmp_path / "run"
    result = run(
        [
            "finetune",
            str(tiny_digits),
            *FAST,
            "--model",
            "shapes-cnn",
            "--no-pretrained",
            "--optimizer",
            "sgd",
            "--scheduler",
            "step",
            "--warmup",
            "0.5",
            "--label-smoothing",
            "0.1",
            "--augment",
            "strong",
            "--amp",
            "--imgsz",
            "40",
            "--early-stopping",
            "1",
            "--freeze",
            "1",
            "--unfreeze-at",
            "2",
            "--out",
            str(out),
            "--workers",
            "1",
        ]
    )
    assert result.exit_code == 0, result.output
    meta = read_meta(out / "last.safetensors")
    assert meta["preprocess"]["crop"] == 40 and meta["finetune"]["optimizer"] == "sgd"
    assert meta["train"]["amp"] is True and meta["train"]["warmup"] == 0.5
    assert "random init" in meta["source"]


def test_finetune_from_a_previous_checkpoint_and_a_state_dict(tiny_digits, tmp_path):
    first = tmp_path / "a"
    assert run(["finetune", str(tiny_digits), *FAST, "--no-pretrained", "--out", str(first)]).exit_code == 0
    second = run(
        [
            "finetune",
            str(tiny_digits),
            *FAST,
            "--weights",
            str(first / "best.safetensors"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "b"),
        ]
    )
    assert second.exit_code == 0, second.output
    assert read_meta(tmp_path / "b" / "best.safetensors")["source"] == f"weights {first / 'best.safetensors'}"
    state = tmp_path / "lenet.pt"
    torch.save(load_state_dict(REPO / "cnnkit/weights/lenet5-digits.safetensors"), state)
    third = run(
        ["finetune", str(tiny_digits), *FAST, "--weights", str(state), "--epochs", "1", "--out", str(tmp_path / "c")]
    )
    assert third.exit_code == 0, third.output
    assert "new 3-class head" in read_meta(tmp_path / "c" / "best.safetensors")["source"]


def test_default_run_folder_increments(tiny_digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for expected in ("train", "train2"):
        result = run(["finetune", str(tiny_digits), *FAST, "--epochs", "1", "--no-pretrained"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["out"] == str(Path("runs/classify") / expected)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_state_dict(path)


def test_interrupt_then_resume_matches_an_uninterrupted_run(tiny_digits, tmp_path, monkeypatch):
    """SIGINT mid-epoch saves the state; --resume finishes with bit-identical weights."""
    from cnnkit.cli.finetune import TrainDisplay

    args = [str(tiny_digits), *FAST, "--epochs", "3", "--no-pretrained", "--augment", "light", "--seed", "3"]
    full = run(["finetune", *args, "--out", str(tmp_path / "full")])
    assert full.exit_code == 0, full.output

    calls = {"n": 0}
    real_batch = TrainDisplay.batch

    def batch_then_signal(self, samples, loss):
        real_batch(self, samples, loss)
        calls["n"] += 1
        if calls["n"] == 5:  # epoch 2, second batch (3 batches per epoch)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(TrainDisplay, "batch", batch_then_signal)
    part = run(["finetune", *args, "--out", str(tmp_path / "part")])
    assert part.exit_code == 130, part.output
    assert f"resume with --resume {tmp_path / 'part'}" in part.output
    state = torch.load(tmp_path / "part" / "last.pt", weights_only=True)
    assert state["run"]["epoch"] == 1 and state["run"]["batch"] == 2
    monkeypatch.undo()
    resumed = run(["finetune", "--resume", str(tmp_path / "part"), "--workers", "0"])
    assert resumed.exit_code == 0, resumed.output
    a, b = _weights(tmp_path / "full" / "last.safetensors"), _weights(tmp_path / "part" / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(resumed.stdout)["metrics"]["val_acc"] == json.loads(full.stdout)["metrics"]["val_acc"]


def test_freezing_keeps_batchnorm_statistics_of_the_frozen_trunk():
    from cnnkit.tasks.classify.zoo import _shapes_cnn
    from cnnkit.train.heads import freeze
    from cnnkit.train.loop import train_mode

    model = _shapes_cnn(num_classes=3)
    frozen = freeze(model, "backbone")
    before = model.features[0][1].running_mean.clone()
    train_mode(model, frozen)
    model(torch.randn(4, 3, 64, 64)).sum().backward()
    assert torch.equal(model.features[0][1].running_mean, before)
    assert not model.features[0][1].training and model.fc.weight.grad is not None
    assert all(p.grad is None for p in model.features.parameters())


def test_freeze_last_n_blocks_and_heads_for_every_family():
    """Head replacement and freezing work for every registry classifier (built on the meta device)."""
    from cnnkit.models.registry import list_models
    from cnnkit.train.heads import freeze, head_names, replace_head, trunk_blocks

    for spec in list_models(task="classify"):
        with torch.device("meta"):
            model = spec.builder(num_classes=len(spec.labels) if spec.labels else 1000)
            names = replace_head(model, 4)
        for name in names:
            assert model.get_submodule(name).out_features == 4, (spec.name, name)
        if spec.name == "googlenet":
            assert set(names) == {"fc", "aux1.fc2", "aux2.fc2"}
        if spec.name == "vit_b_16":
            assert names == ["heads.head"]
        blocks = trunk_blocks(model)
        assert len(blocks) >= 3, spec.name
        frozen = freeze(model, 2)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert all(any(t.startswith(h) for t in trainable) for h in head_names(model)), spec.name
        assert len(frozen) == len(blocks) - 2
        assert not any(p.requires_grad for b in frozen for p in b.parameters())
        assert all(p.requires_grad for p in blocks[-1].parameters())


def test_dataset_errors_are_clear(tmp_path):
    empty = write_digits(tmp_path / "empty", per_class=3)
    shutil.rmtree(empty / "one")
    (empty / "one").mkdir()
    r = run(["finetune", str(empty), *FAST])
    assert r.exit_code == 2 and "without readable images: one" in r.output

    single = write_digits(tmp_path / "single", per_class=4, names=("zero",))
    r = run(["finetune", str(single), *FAST])
    assert r.exit_code == 2 and "only one class" in r.output

    split = tmp_path / "split"
    write_digits(split / "train", per_class=3)
    write_digits(split / "val", per_class=2, names=("zero", "one", "three"))
    r = run(["finetune", str(split), *FAST])  # "two" only in train would be trained, unscored; "three" cannot be
    assert r.exit_code == 2 and "val has class folders train lacks: three" in r.output

    r = run(["finetune", str(tmp_path / "missing"), *FAST])
    assert r.exit_code == 2 and "not found" in r.output
    r = run(["finetune", str(single), *FAST, "--optimizer", "lion"])
    assert r.exit_code == 2 and "--optimizer" in r.output
    r = run(["finetune", str(single), *FAST, "--freeze", "everything"])
    assert r.exit_code == 2 and "--freeze" in r.output


def test_unreadable_images_are_skipped_and_listed(tiny_digits, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_digits, data)
    (data / "one" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = run(["finetune", str(data), *FAST, "--epochs", "1", "--out", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert "skipped 1 unreadable image" in r.output and "broken.png" in r.output
    assert read_meta(tmp_path / "run" / "best.safetensors")["data"]["skipped"] == [str(data / "one" / "broken.png")]


def test_pretrained_weights_offline_say_what_to_do(tiny_digits):
    r = run(["finetune", str(tiny_digits), "--model", "resnet18", "--epochs", "1", "--workers", "0"])
    assert r.exit_code == 1 and "--no-pretrained" in r.output and "--weights PATH" in r.output


def test_fixed_size_models_refuse_another_image_size(tiny_digits):
    r = run(["finetune", str(tiny_digits), *FAST, "--model", "vit_b_16", "--no-pretrained", "--imgsz", "64"])
    assert r.exit_code == 2 and "224" in r.output
    r = run(["finetune", str(tiny_digits), *FAST, "--no-pretrained", "--imgsz", "64"])
    assert r.exit_code == 2 and "32x32" in r.output


def test_unknown_task_is_a_usage_error(tiny_digits):
    r = run(["finetune", str(tiny_digits), "--task", "poetry"])
    assert r.exit_code == 2 and "unknown task" in r.output


def test_python_api_matches_the_cli(tiny_digits, tmp_path):
    import cnnkit

    result = cnnkit.api.finetune(
        str(tiny_digits),
        model="lenet5",
        pretrained=False,
        epochs=1,
        workers=0,
        out=str(tmp_path / "api"),
        progress=False,
    )
    assert Path(result["best"]).is_file() and 0.0 <= result["metrics"]["val_acc"] <= 1.0


def test_sigterm_saves_a_resumable_state_then_resume_finishes(tiny_digits, tmp_path):
    """The subprocess test of the real entry point: SIGTERM mid-run, then --resume."""
    import time

    out = tmp_path / "term"
    cmd = [
        sys.executable,
        "-m",
        "cnnkit",
        "finetune",
        str(tiny_digits),
        *FAST,
        "--epochs",
        "200",
        "--no-pretrained",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "last.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "state saved" in stderr and "interrupted" in stderr and "epoch   1/200  train loss" in stderr
    state = torch.load(out / "last.pt", weights_only=True)
    done = state["run"]["epoch"]
    assert 1 <= done < 200 and read_meta(out / "last.safetensors")["labels"] == sorted(NAMES)
    # --epochs on resume changes the length of the run (here: one more epoch than done).
    r = run(["finetune", "--resume", str(out / "last.safetensors"), "--workers", "0", "--epochs", str(done + 1)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["metrics"]["epochs_run"] == done + 1


def test_googlenet_auxiliary_heads_are_replaced_and_trained(tmp_path):
    """GoogLeNet returns (logits, aux2, aux1) in train mode: all three heads get the new classes and a loss."""
    from torch.utils.data import DataLoader, TensorDataset

    from cnnkit.models.registry import get_spec
    from cnnkit.tasks.classify.train import recipe
    from cnnkit.train.heads import replace_head
    from cnnkit.train.loop import LoopConfig, fit

    torch.manual_seed(0)
    model = random_model(get_spec("googlenet"), 1000, big=0)
    assert replace_head(model, 3) == ["fc", "aux1.fc2", "aux2.fc2"]
    before = model.aux1.fc2.weight.detach().clone()
    data = TensorDataset(torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0]))
    meta = {"task": "classify", "arch": "googlenet", "labels": ["a", "b", "c"], "preprocess": None}
    history = fit(
        model,
        DataLoader(data, batch_size=4),
        recipe(DataLoader(data, batch_size=4), meta["labels"]),
        LoopConfig(epochs=1, lr=1e-3, scheduler="none"),
        tmp_path,
        meta,
    )
    assert history[0]["val_images"] == 4
    assert not torch.equal(before, model.aux1.fc2.weight)
    assert read_meta(tmp_path / "best.safetensors")["arch"] == "googlenet"


def test_a_new_run_over_an_old_one_with_exist_ok_starts_from_scratch(tiny_digits, tmp_path):
    out = tmp_path / "run"
    args = ["finetune", str(tiny_digits), *FAST, "--epochs", "1", "--no-pretrained", "--out", str(out), "--exist-ok"]
    assert run(args).exit_code == 0
    again = run(args)
    assert again.exit_code == 0, again.output
    assert "previous run: starting a new one" in " ".join(again.output.split())
    assert len((out / "metrics.csv").read_text().splitlines()) == 2


def test_api_drops_options_left_unset(monkeypatch):
    """The CLI passes None for options not given; every trainer then sees them unset (its own defaults)."""
    import importlib
    import types

    from cnnkit.tasks import TASKS

    monkeypatch.setitem(TASKS, "probe", types.SimpleNamespace(name="probe", trainer=_probe_trainer))
    r = run(["finetune", "somewhere", "--task", "probe", "--epochs", "3"])
    assert r.exit_code == 0, r.output
    seen = importlib.import_module("tests.tasks.classify.test_finetune")._SEEN
    assert seen["options"].epochs == 3 and seen["options"].batch_size is None and seen["options"].arch is None
    r = run(["finetune", "somewhere", "--task", "probe", "--arch", "unet", "--encoder", "resnet18"])
    assert r.exit_code == 0, r.output
    assert seen["options"].arch == "unet" and seen["options"].encoder == "resnet18" and seen["options"].epochs is None


def test_api_refuses_an_unknown_option_for_every_task():
    import cnnkit
    from cnnkit.errors import OptionError
    from cnnkit.tasks import TASKS

    for task in TASKS:
        with pytest.raises(OptionError, match="epoch"):
            cnnkit.api.finetune("somewhere", task=task, epoch=3)


_SEEN: dict = {}


def _probe_trainer(data, options):
    _SEEN.clear()
    _SEEN.update(data=data, options=options)
    return {"best": None, "last": None, "out": data, "metrics": {}}


def test_val_split_on_a_dataset_with_its_own_val_folder_is_said_not_used(tmp_path, caplog):
    """`--val-split 0.5` on DATA/train + DATA/val was dropped in silence."""
    import logging

    from cnnkit.tasks.classify.train import finetune as classify_finetune
    from cnnkit.train.options import FinetuneOptions

    data = tmp_path / "d"
    write_digits(data / "train", per_class=3)
    write_digits(data / "val", per_class=2)
    options = FinetuneOptions(
        model="lenet5", epochs=1, val_split=0.5, imgsz=32, out=str(tmp_path / "run"), workers=0, progress=False
    )
    with caplog.at_level(logging.WARNING, logger="cnnkit.finetune"):
        classify_finetune(str(data), options)
    assert "val_split 0.5 not used" in caplog.text
    caplog.clear()  # not given: nothing to say (every run on such a dataset warned of the default 0.2)
    options = FinetuneOptions(model="lenet5", epochs=1, imgsz=32, out=str(tmp_path / "run2"), workers=0, progress=False)
    with caplog.at_level(logging.WARNING, logger="cnnkit.finetune"):
        classify_finetune(str(data), options)
    assert "val_split" not in caplog.text
    caplog.clear()  # nothing frozen: nothing to unfreeze (it was taken in silence)
    options = FinetuneOptions(
        model="lenet5", epochs=1, imgsz=32, unfreeze_at=1, out=str(tmp_path / "run3"), workers=0, progress=False
    )
    with caplog.at_level(logging.WARNING, logger="cnnkit.finetune"):
        classify_finetune(str(data), options)
    assert "unfreeze_at 1 not used: nothing is frozen" in caplog.text


def test_an_imgsz_the_model_pools_to_nothing_is_one_line_before_a_run_folder(tiny_digits, tmp_path):
    """`--imgsz 12` for shapes-cnn was a RuntimeError traceback from the first batch (predict said it in one line)."""
    out = tmp_path / "run"
    r = run(["finetune", str(tiny_digits), *FAST, "--model", "shapes-cnn", "--imgsz", "12", "--out", str(out)])
    assert r.exit_code == 2 and "shapes-cnn cannot run on a 12x12 input" in r.output, r.output
    assert not out.exists()


def test_an_exported_model_is_refused_in_one_line(tiny_digits, tmp_path, monkeypatch):
    """`finetune --weights best.onnx` (its help listed exported files) was a bare AssertionError traceback."""
    from cnnkit import export as ex

    monkeypatch.chdir(tmp_path)

    onnx = ex.export_model("lenet5", out=tmp_path / "l.onnx").path
    result = CliRunner().invoke(app, ["finetune", str(tiny_digits), "--weights", str(onnx), "--epochs", "1"])
    assert result.exit_code == 1 and "an exported model cannot be fine-tuned" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(("layout", "task"), [("masks", "segment"), ("yolo", "detect"), ("coco", "instance")])
def test_another_tasks_dataset_is_refused_naming_the_task(tmp_path, monkeypatch, layout, task):
    """`cnnkit finetune masks_ds` (classify, the default task) trained a 2-class "images" vs "masks" classifier
    and exited 0; a YOLO or COCO set said "class folder(s) without readable images: labels"."""
    from cnnkit.data.export import export_shapes

    monkeypatch.chdir(tmp_path)
    export_shapes(tmp_path / "d", layout, 6, seed=0, imgsz=32, val_fraction=0.5)
    result = CliRunner().invoke(app, ["finetune", str(tmp_path / "d"), "--epochs", "1", "--no-pretrained"])
    assert result.exit_code == 2 and f"train it with --task {task}" in result.stderr, result.output
    (tmp_path / "d" / "cnnkit-data.json").unlink()  # the layout alone says it too
    result = CliRunner().invoke(app, ["finetune", str(tmp_path / "d"), "--epochs", "1", "--no-pretrained"])
    assert result.exit_code == 2 and f"train it with --task {task}" in result.stderr, result.output
    assert not (tmp_path / "runs").exists()
