"""The one training loop (``cnnkit.train.loop``) on tiny models: resume, graceful stop, freezing, best, state checks."""

from __future__ import annotations

import csv
import os
import signal

import pytest
import torch
from PIL import Image
from torch import nn

from cnnkit.errors import CnnkitError, UsageError
from cnnkit.models.checkpoint import load_state_dict, load_training_state, read_meta
from cnnkit.train.loop import (
    Callbacks,
    LoopConfig,
    Recipe,
    Step,
    StepBatches,
    fit,
    run_dir,
    seeded_loader,
    train_mode,
)

META = {"task": "classify", "arch": "probe", "labels": ["a", "b", "c"]}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data() -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g))


def _recipe(scores: list[float] | None = None, task: str = "classify") -> Recipe:
    """Cross-entropy; validation returns the next of ``scores`` (or the negative train loss)."""
    pending = list(scores or [])

    def loss(model: nn.Module, batch, device) -> Step:
        x, y = batch
        out = model(x.to(device))
        return Step(nn.functional.cross_entropy(out, y.to(device)), len(y), {"acc": float((out.argmax(1) == y).sum())})

    def validate(model: nn.Module) -> dict:
        return {"score": pending.pop(0) if pending else 0.0, "per_class": {"a": 1.0}}

    return Recipe(task, loss, validate, score="val_score")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))


def _train(out, epochs=3, callbacks=None, scheduler="cosine", **cfg) -> nn.Module:
    model = _model()
    fit(
        model,
        seeded_loader(_data(), 8, seed=1),
        _recipe(),
        LoopConfig(epochs=epochs, lr=1e-2, scheduler=scheduler, **cfg),
        out,
        META,
        callbacks=callbacks,
    )
    return model


def _stop_at(n: int, sig: int = signal.SIGINT) -> Callbacks:
    calls = {"n": 0}

    def batch(samples: int, loss: float) -> None:
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), sig)

    return Callbacks(batch=batch)


@pytest.mark.parametrize("scheduler", ["cosine", "onecycle"])
def test_interrupted_then_resumed_run_equals_an_uninterrupted_one(tmp_path, scheduler):
    full = _train(tmp_path / "full", scheduler=scheduler)
    with pytest.raises(KeyboardInterrupt) as stopped:
        _train(tmp_path / "part", callbacks=_stop_at(6), scheduler=scheduler)  # epoch 2, batch 2 of 4
    assert stopped.value.out == tmp_path / "part"
    state = load_training_state(tmp_path / "part" / "last.pt")
    assert state["format"] == "cnnkit.train" and state["task"] == "classify"
    assert (state["run"]["epoch"], state["run"]["batch"], state["run"]["step"]) == (1, 2, 6)
    resumed = _train(tmp_path / "part", scheduler=scheduler)
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with open(tmp_path / "part" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[-1]["step"] == "12"


@pytest.mark.parametrize("scheduler", ["cosine", "step"])
def test_resuming_with_more_epochs_stretches_the_schedule(tmp_path, scheduler):
    """A finished 2-epoch run resumed to 4 epochs trains on, at the learning rate of a 4-epoch schedule at that
    step (the saved schedule's length used to overwrite the new one: epochs 3-4 ran at lr 0)."""
    short = _train(tmp_path / "run", epochs=2, scheduler=scheduler)
    before = {k: v.clone() for k, v in short.state_dict().items()}
    longer = _train(tmp_path / "run", epochs=4, scheduler=scheduler)
    after = longer.state_dict()
    assert not torch.equal(before["0.weight"], after["0.weight"])  # the extra epochs trained
    with open(tmp_path / "run" / "metrics.csv") as f:
        lrs = [float(r["lr"]) for r in csv.DictReader(f)]
    _train(tmp_path / "fresh", epochs=4, scheduler=scheduler)
    with open(tmp_path / "fresh" / "metrics.csv") as f:
        expected = [float(r["lr"]) for r in csv.DictReader(f)]
    assert lrs[2:] == pytest.approx(expected[2:]) and lrs[2] > 0


def test_graceful_stop_on_sigterm_saves_a_resumable_state_and_restores_handlers(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, callbacks=_stop_at(2, signal.SIGTERM))
    assert signal.getsignal(signal.SIGTERM) is before
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "last.safetensors").is_file()
    assert not list(tmp_path.glob(".*.tmp"))
    assert load_training_state(tmp_path / "last.pt")["run"]["batch"] == 2


def test_loader_workers_leave_sigint_and_sigterm_to_the_main_process():
    """``timeout``/``scancel`` signal the whole process group: a worker that died of it crashed the run."""
    from cnnkit.train.loop import worker_init

    assert seeded_loader(_data(), 8, seed=0, workers=2).worker_init_fn is worker_init
    assert seeded_loader(_data(), 8, seed=0).worker_init_fn is None
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    threads = torch.get_num_threads()
    try:
        worker_init(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
        torch.set_num_threads(threads)


def test_run_folder_files_and_best_selection(tmp_path):
    model = _model()
    history = fit(
        model,
        seeded_loader(_data(), 8, seed=0),
        _recipe([0.2, 0.9, 0.5]),
        LoopConfig(epochs=3, lr=1e-2, half_checkpoint=True),
        tmp_path,
        META,
    )
    assert [r["val_score"] for r in history] == [0.2, 0.9, 0.5]
    for name in (
        "best.safetensors",
        "best.json",
        "last.safetensors",
        "last.json",
        "last.pt",
        "metrics.csv",
        "curves.png",
    ):
        assert (tmp_path / name).is_file(), name
    best, last = read_meta(tmp_path / "best.safetensors"), read_meta(tmp_path / "last.safetensors")
    assert best["metrics"]["epoch"] == 2 and last["metrics"]["epoch"] == 3
    assert best["metrics"]["per_class"] == {"a": 1.0} and best["labels"] == META["labels"]
    assert load_state_dict(tmp_path / "last.safetensors").keys() == model.state_dict().keys()
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,train_acc,val_score,lr,step,seconds,images_per_s"


def test_early_stopping_and_target_end_the_run(tmp_path):
    model = _model()
    patience = fit(
        model,
        seeded_loader(_data(), 8, seed=0),
        _recipe([0.5, 0.4, 0.3, 0.9]),
        LoopConfig(epochs=4, early_stopping=2),
        tmp_path / "a",
        META,
    )
    assert len(patience) == 3
    target = fit(
        _model(),
        seeded_loader(_data(), 8, seed=0),
        _recipe([0.5, 0.95, 0.99]),
        LoopConfig(epochs=3, target=0.9),
        tmp_path / "b",
        META,
    )
    assert len(target) == 2


def test_frozen_parts_keep_weights_and_batchnorm_statistics_until_unfrozen(tmp_path):
    model = _model()
    trunk = model[:2]
    trunk.requires_grad_(False)
    weight, mean = model[0].weight.detach().clone(), model[1].running_mean.clone()
    fit(
        model,
        seeded_loader(_data(), 8, seed=0),
        _recipe(),
        LoopConfig(epochs=1, lr=1e-2),
        tmp_path / "a",
        META,
        frozen=[trunk],
    )
    assert torch.equal(model[0].weight, weight) and torch.equal(model[1].running_mean, mean)
    fit(
        model,
        seeded_loader(_data(), 8, seed=0),
        _recipe(),
        LoopConfig(epochs=2, lr=1e-2, unfreeze_at=2),
        tmp_path / "b",
        META,
        frozen=[trunk],
    )
    assert not torch.equal(model[0].weight, weight) and not torch.equal(model[1].running_mean, mean)


def test_train_mode_keeps_batchnorm_with_frozen_parameters_in_eval():
    model = _model()
    model[1].requires_grad_(False)
    train_mode(model)
    assert model.training and not model[1].training and model[3].training


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update(format="other"), "not a cnnkit.train"),
        (lambda s: s.update(task="segment"), "'segment' run"),
        (lambda s: s["run"].update(epoch=-1), "not counts"),
        (lambda s: s["run"].update(history=[{"epoch": [1]}]), "history"),
        (lambda s: s["run"].update(extra=1), "other fields"),
        (lambda s: s["run"].update(loss_sum="x"), "not numbers"),
        (lambda s: s["model"].pop("0.weight"), "state_dict"),
    ],
)
def test_a_tampered_state_is_refused_in_one_line(tmp_path, change, message):
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path, callbacks=_stop_at(2))
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    change(state)
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(CnnkitError, match="cannot resume") as err:
        _train(tmp_path)
    assert message in str(err.value) and "last.pt" in str(err.value) and "\n" not in str(err.value)


def test_step_batches_resume_on_the_same_step(tmp_path):
    """Data that is a pure function of the step (generated scenes): a resumed run replays nothing."""
    seen: list[int] = []

    def batch_at(step: int):
        seen.append(step)
        g = torch.Generator().manual_seed(step)
        return torch.randn(4, 4, generator=g), torch.randint(0, 3, (4,), generator=g)

    with pytest.raises(KeyboardInterrupt):
        fit(_model(), StepBatches(batch_at, 3), _recipe(), LoopConfig(epochs=2), tmp_path, META, callbacks=_stop_at(4))
    fit(_model(), StepBatches(batch_at, 3), _recipe(), LoopConfig(epochs=2), tmp_path, META)
    assert seen == [0, 1, 2, 3, 4, 5]


def test_run_dir_increments_per_task_and_drops_a_stale_state(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_dir("segment") == tmp_path.joinpath("runs/segment/train").relative_to(tmp_path)
    assert run_dir("segment").name == "train2"
    explicit = tmp_path / "mine"
    explicit.mkdir()
    (explicit / "last.pt").write_bytes(b"old")
    with pytest.raises(CnnkitError, match="already exists"):
        run_dir("instance", explicit)
    assert run_dir("instance", explicit, exist_ok=True) == explicit and not (explicit / "last.pt").exists()


def test_warmup_with_onecycle_is_said_not_used(caplog):
    """onecycle has its own warm-up: `--warmup 3` gave the same metrics.csv as a run without it, in silence."""
    import logging

    import torch

    from cnnkit.train.loop import LoopConfig, make_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with caplog.at_level(logging.WARNING, logger="cnnkit.train"):
        make_scheduler(opt, LoopConfig(epochs=2, lr=0.1, scheduler="onecycle", warmup=3.0), 4)
    assert "warmup 3 not used: onecycle warms up" in caplog.text


def test_onecycle_with_a_warm_up_of_one_step_runs():
    """segment's onecycle warms up over 0.1 of the steps: 10 steps (10 images at batch 1, one epoch) stopped
    on torch's ZeroDivisionError, a traceback."""
    from cnnkit.train.loop import make_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    scheduler = make_scheduler(opt, LoopConfig(epochs=1, lr=0.1, scheduler="onecycle", pct_start=0.1), 10)
    lrs = scheduler.get_last_lr()
    for _ in range(9):
        opt.step()
        scheduler.step()
        lrs += scheduler.get_last_lr()
    assert lrs[0] < 0.1 and lrs == sorted(lrs, reverse=True)  # annealed from the peak, no warm-up phase


def test_a_batch_of_one_for_batchnorm_is_one_line_naming_the_batch_size(tmp_path):
    """A batch of one image pooled to 1×1 stopped on BatchNorm's own words, which name no option."""
    with pytest.raises(UsageError, match=r"BatchNorm layer as one value per channel .*batch size of 2 or more"):
        fit(_model(), seeded_loader(_data(), 1, seed=1), _recipe(), LoopConfig(epochs=1, lr=1e-2), tmp_path, META)


@pytest.mark.parametrize("failure", [ValueError("bad"), KeyboardInterrupt()])
def test_a_start_that_fails_or_is_interrupted_leaves_no_empty_run_folder(tmp_path, monkeypatch, failure):
    """The empty ``--save-dir`` a failed start left behind refused the same command again as existing; a Ctrl-C
    before the first checkpoint did the same."""
    import cnnkit
    from cnnkit.train import loop

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(loop, "_fit", fail)
    data = tmp_path / "d"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (40 * i, 0, 0)).save(data / c / f"{i}.png")
    options = dict(model="lenet5", epochs=1, imgsz=32, workers=0, progress=False, val_split=0.34)
    with pytest.raises(type(failure)):
        cnnkit.finetune(str(data), out=str(tmp_path / "mine"), **options)
    assert not (tmp_path / "mine").exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(type(failure)):  # a folder that existed stays
        cnnkit.finetune(str(data), out=str(kept), exist_ok=True, **options)
    assert kept.is_dir()
