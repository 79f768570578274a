"""``FinetuneOptions``: the one declaration of the fine-tuning options every task's recipe takes."""

from __future__ import annotations

import logging

import pytest

from cnnkit.errors import OptionError
from cnnkit.train.options import FinetuneOptions


def test_keywords_left_none_are_unset_and_an_unknown_one_is_refused():
    opts = FinetuneOptions.of({"epochs": 3, "batch_size": None, "amp": None})
    assert opts.epochs == 3 and opts.batch_size is None and opts.amp is False
    with pytest.raises(OptionError, match="epoch, lrate"):
        FinetuneOptions.of({"epoch": 3, "lrate": 0.1})


def test_filled_gives_the_task_defaults_only_to_options_left_unset():
    opts = FinetuneOptions(epochs=3).filled(epochs=10, batch_size=8)
    assert (opts.epochs, opts.batch_size, opts.lr) == (3, 8, None)


def test_ignore_others_names_only_what_was_set_and_is_not_used(caplog):
    with caplog.at_level(logging.DEBUG, logger="cnnkit.train"):
        FinetuneOptions(epochs=3, arch="unet", optimizer="sgd", device="cpu").ignore_others("probe", ["epochs"])
    assert "finetune probe: ignoring arch, optimizer" in caplog.text
    assert all(r.levelno == logging.WARNING for r in caplog.records if "ignoring" in r.message)  # was debug: unseen


def test_run_folder_is_the_resumed_one_or_a_new_one(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "last.pt").write_bytes(b"x")
    assert FinetuneOptions(resume=str(tmp_path / "old" / "last.pt")).run_folder("probe") == tmp_path / "old"
    assert FinetuneOptions(out=str(tmp_path / "new")).run_folder("probe") == tmp_path / "new"
    with pytest.raises(OptionError, match="resume"):
        FinetuneOptions(resume=True).run_folder("probe")


def test_detect_resume_names_the_options_it_does_not_use(caplog, monkeypatch):
    """`finetune --task detect --resume RUN --lr 0.5` trained on with the run's own lr, without a word."""
    from cnnkit.tasks.detect import train as detect_train

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(detect_train, "_resume_from", stop)
    with caplog.at_level(logging.WARNING, logger="cnnkit"), pytest.raises(Stop):
        detect_train.finetune(None, FinetuneOptions(resume="runs/detect/train", lr=0.5, device="cpu"))
    assert "resume continues the run as it was started; not used: lr 0.5" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cnnkit"), pytest.raises(Stop):  # nothing given: nothing said
        detect_train.finetune(None, FinetuneOptions(resume="runs/detect/train", device="cpu", workers=2))
    assert "not used" not in caplog.text


def test_workers_from_the_settings_are_not_called_ignored(caplog):
    """CNNKIT_WORKERS or cnnkit.toml reach every task's options; instance warned it ignored them."""
    with caplog.at_level(logging.WARNING, logger="cnnkit.train"):
        FinetuneOptions(workers=4).ignore_others("instance", ["epochs"])
    assert "ignoring" not in caplog.text


def test_a_run_folder_or_checkpoint_says_its_task(tmp_path):
    import json

    from cnnkit.train.options import run_task

    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "last.json").write_text(json.dumps({"task": "segment"}))
    (seg / "last.pt").write_bytes(b"")
    yolo = tmp_path / "yolo"
    (yolo / "weights").mkdir(parents=True)
    (yolo / "weights" / "last.pt").write_bytes(b"")
    assert run_task(seg) == run_task(seg / "last.pt") == "segment"
    assert run_task(yolo) == run_task(yolo / "weights" / "last.pt") == "detect"
    assert run_task(tmp_path / "nothing") is None


@pytest.mark.parametrize(("rate", "shown"), [(0.3, "0.3 img/s"), (12.46, "12 img/s"), (480.2, "480 img/s")])
def test_the_epoch_line_shows_a_slow_rate_with_a_decimal(rate, shown):
    """Mask R-CNN on a CPU trains at 0.3 img/s, which the epoch line showed as 0 img/s."""
    from cnnkit.cli.finetune import epoch_line

    line = epoch_line({"epoch": 1, "train_loss": 1.0, "lr": 1e-3, "seconds": 62.4, "images_per_s": rate}, 3)
    assert line.endswith(f"62.4s {shown}")
