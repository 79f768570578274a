"""A resumable semantic-segmentation training loop (Dice + cross-entropy, per-epoch mIoU).

Shared by ``cnnkit finetune --task segment`` and ``scripts/train_shapes_seg.py``.
Every epoch writes ``last.pt`` (model, optimiser, scheduler, RNG; read back with
``weights_only=True``) atomically and ``best.safetensors`` when validation mIoU
improves, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.tasks.segment.val import ConfusionMatrix, class_map
from cnnkit.io.files import atomic_write_bytes
from cnnkit.models.checkpoint import load_training_state, restoring, save_checkpoint
from cnnkit.train.classifier import _write_csv

log = logging.getLogger("cnnkit.train")


@dataclass
class SegTrainConfig:
    epochs: int = 20
    lr: float = 2e-3
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    seed: int = 0
    half_checkpoint: bool = False
    target_miou: float | None = None  # stop early once validation mIoU reaches it


def transforms(imgsz: int, train: bool, mean: Sequence[float], std: Sequence[float],
               crop_scale: tuple[float, float] = (0.5, 1.0)) -> Any:
    """torchvision v2 pipeline applied jointly to ``(tv_tensors.Image, tv_tensors.Mask)``.

    ``crop_scale`` is the random crop's share of the image area (``RandomResizedCrop``).
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    size = [v2.RandomResizedCrop(imgsz, scale=crop_scale, antialias=True),
            v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(),
            v2.ColorJitter(0.2, 0.2, 0.2, 0.02)] if train else [v2.Resize((imgsz, imgsz), antialias=True)]
    return v2.Compose([*size, v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                       v2.Normalize(list(mean), list(std))])


class PairDataset(torch.utils.data.Dataset):
    """Image/mask pairs from ``load(i) -> (rgb H×W×3 uint8, mask H×W int)``, transformed together."""

    def __init__(self, load: Callable[[int], tuple[np.ndarray, np.ndarray]], n: int, transform: Any) -> None:
        self.load, self.n, self.transform = load, n, transform

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        rgb, mask = self.load(i)
        image = tv_tensors.Image(torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1))
        target = tv_tensors.Mask(torch.from_numpy(np.asarray(mask, dtype=np.int64)))
        image, target = self.transform(image, target)
        return image.as_subclass(torch.Tensor), target.as_subclass(torch.Tensor).long()


def evaluate(model: nn.Module, loader: Any, num_classes: int, labels: list[str] | None = None,
             device: torch.device | str = "cpu") -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy over ``loader``."""
    model.eval()
    cm = ConfusionMatrix(num_classes)
    with torch.inference_mode():
        for x, y in loader:
            cm.update(class_map(model(x.to(device)), 1), y)
    return cm.scores(labels)


class DiceCELoss(nn.Module):
    """Cross-entropy plus ``dice_weight`` × multiclass soft Dice (smp's ``DiceLoss``)."""

    def __init__(self, dice_weight: float = 1.0) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.dice, self.ce, self.dice_weight = DiceLoss("multiclass", from_logits=True), nn.CrossEntropyLoss(), dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


def _train_epoch(model: nn.Module, loader: Any, criterion: nn.Module, optimizer: Any, scheduler: Any,
                 device: torch.device | str) -> float:
    model.train()
    loss_sum, seen = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.item() * len(y)
        seen += len(y)
    return loss_sum / max(seen, 1)


def fit(model: nn.Module, train_loader: Any, val_loader: Any, cfg: SegTrainConfig, out_dir: str | Path,
        meta: dict[str, Any], device: torch.device | str = "cpu",
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train ``model``; resumes from ``out_dir/last.pt`` when it exists. ``meta`` must hold ``labels``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model.to(device)
    labels = list(meta["labels"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(len(train_loader), 1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    criterion = DiceCELoss(cfg.dice_weight)
    start, best, history = _resume(out / "last.pt", model, optimizer, scheduler)
    for epoch in range(start, cfg.epochs):
        if history and cfg.target_miou is not None and history[-1]["val_miou"] >= cfg.target_miou:
            log.info("target mIoU %.3f reached at epoch %d; stopping", cfg.target_miou, history[-1]["epoch"])
            break
        t0 = time.perf_counter()
        loss = _train_epoch(model, train_loader, criterion, optimizer, scheduler, device)
        val = evaluate(model, val_loader, len(labels), labels, device)
        row = {"epoch": epoch + 1, "train_loss": loss, "val_miou": val["miou"],
               "val_pixel_accuracy": val["pixel_accuracy"], "lr": scheduler.get_last_lr()[0],
               "seconds": time.perf_counter() - t0}
        history.append(row)
        if val["miou"] > best:
            best = val["miou"]
            save_checkpoint(out / "best.safetensors", model,
                            {**meta, "metrics": {**row, "per_class_iou": val["per_class_iou"]},
                             "train": asdict(cfg)}, half=cfg.half_checkpoint)
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "epoch": epoch + 1,
                    "best": best, "history": history}, buf)
        atomic_write_bytes(out / "last.pt", buf.getvalue())
        _write_csv(out / "metrics.csv", history)
        if on_epoch:
            on_epoch(row)
    return history


def _resume(last: Path, model: nn.Module, optimizer: Any, scheduler: Any) -> tuple[int, float, list[dict[str, Any]]]:
    """Epoch, best mIoU and history of the run in ``last``, restored into the arguments; a foreign file is an error."""
    if not last.exists():
        return 0, -1.0, []
    state = load_training_state(last)
    with restoring(last):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        # Keep this run's length: resuming with more epochs stretches the schedule instead of failing.
        scheduler.load_state_dict({**state["scheduler"], "total_steps": scheduler.total_steps,
                                   "_schedule_phases": scheduler._schedule_phases})
        torch.set_rng_state(state["rng"])
        epoch, best, history = int(state["epoch"]), float(state["best"]), list(state["history"])
        if not all(isinstance(row, dict) for row in history):
            raise ValueError("its history is not a list of epoch rows")
    log.info("resumed from %s at epoch %d", last, epoch)
    return epoch, best, history
