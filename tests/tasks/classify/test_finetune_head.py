"""Fine-tuning a checkpoint on classes it already knows keeps what it learned (issue 15)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cnnkit.models.loader import resolve
from cnnkit.tasks.classify.train import build_model
from cnnkit.train.heads import matching_rows, replace_head
from cnnkit.train.options import FinetuneOptions


def test_matching_rows_maps_new_positions_to_old_ones():
    assert matching_rows(["star", "dog", "circle"], ["circle", "square", "star"]) == {0: 2, 2: 0}
    assert matching_rows(["a"], ["b"]) == {}


def test_same_class_names_in_another_order_keep_and_reorder_the_trained_head():
    old = resolve("classify", "shapes-cnn", None, default="shapes-cnn")
    old_w = old.module.fc.weight.detach().clone()
    old_b = old.module.fc.bias.detach().clone()
    classes = sorted(old.labels)  # a folder dataset lists classes alphabetically
    assert classes != list(old.labels)
    model, _, _, source = build_model(FinetuneOptions(model="shapes-cnn"), classes)
    for new_row, label in enumerate(classes):
        old_row = list(old.labels).index(label)
        assert torch.equal(model.fc.weight[new_row], old_w[old_row])
        assert torch.equal(model.fc.bias[new_row], old_b[old_row])
    assert "keeping the trained rows" in source


def test_a_partial_match_keeps_only_the_shared_rows():
    old = resolve("classify", "shapes-cnn", None, default="shapes-cnn")
    old_w = old.module.fc.weight.detach().clone()
    model, _, _, _ = build_model(FinetuneOptions(model="shapes-cnn"), ["apple", "star", "banana"])
    assert model.fc.out_features == 3
    assert torch.equal(model.fc.weight[1], old_w[list(old.labels).index("star")])
    assert not torch.equal(model.fc.weight[0], old_w[0])


def test_the_reordered_head_predicts_the_same_classes_as_before():
    from cnnkit.data.shapes import classification_sample

    old = resolve("classify", "shapes-cnn", None, default="shapes-cnn")
    classes = sorted(old.labels)
    model, _, pre, _ = build_model(FinetuneOptions(model="shapes-cnn"), classes)
    old.module.eval()
    model.eval()
    images = [classification_sample(123, i)[0] for i in range(8)]
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div(255)
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        before = [old.labels[i] for i in old.module(x).argmax(1)]
        after = [classes[i] for i in model(x).argmax(1)]
    assert before == after


def test_replace_head_without_keep_is_a_fresh_head():
    old = resolve("classify", "shapes-cnn", None, default="shapes-cnn")
    w = old.module.fc.weight.detach().clone()
    replace_head(old.module, w.shape[0])
    assert not torch.equal(old.module.fc.weight, w)


def test_retraining_scripts_loop_resumes_mid_epoch_like_an_uninterrupted_run(tmp_path):
    """The retraining scripts' setup (seeded loader, classify recipe): stopped mid-epoch by SIGTERM,
    resumed, it ends on the same weights (no extra step)."""
    import signal

    from torch.utils.data import DataLoader, TensorDataset

    from cnnkit.tasks.classify.train import recipe
    from cnnkit.train.loop import Callbacks, LoopConfig, fit, seeded_loader

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 4, generator=g), torch.randint(0, 3, (48,), generator=g)
    data = TensorDataset(x, y)
    cfg = LoopConfig(epochs=3, lr=1e-2, seed=0, scheduler="onecycle")
    meta = {"labels": ["a", "b", "c"]}

    def train(out, callbacks=None) -> torch.nn.Module:
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        fit(
            model,
            seeded_loader(data, 8, seed=0),
            recipe(DataLoader(data, batch_size=256), meta["labels"]),
            cfg,
            out,
            meta,
            callbacks=callbacks,
        )
        return model

    full = train(tmp_path / "full")
    calls = {"n": 0}

    def signal_at_nine(samples: int, loss: float) -> None:
        calls["n"] += 1
        if calls["n"] == 9:  # epoch 2, third of six batches
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "part", Callbacks(batch=signal_at_nine))
    resumed = train(tmp_path / "part")
    assert torch.equal(resumed.weight, full.weight) and torch.equal(resumed.bias, full.bias)
