"""A resumable classification training loop.

Every epoch writes ``last.pt`` (model, optimiser, scheduler, RNG state; loaded back
with ``weights_only=True``) atomically, and ``best.safetensors`` when validation
accuracy improves, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.io.files import atomic_path, atomic_write_bytes
from cnnkit.models.checkpoint import save_checkpoint

log = logging.getLogger("cnnkit.train")


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 0
    half_checkpoint: bool = False


def evaluate(model: nn.Module, loader: Any, device: torch.device | str = "cpu") -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy over ``loader``."""
    model.eval()
    total, loss_sum, top1, top5 = 0, 0.0, 0, 0
    criterion = nn.CrossEntropyLoss(reduction="sum")
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss_sum += float(criterion(out, y))
            k = min(5, out.shape[1])
            pred = out.topk(k, dim=1).indices
            top1 += int((pred[:, 0] == y).sum())
            top5 += int((pred == y[:, None]).any(dim=1).sum())
            total += len(y)
    n = max(total, 1)
    return {"loss": loss_sum / n, "acc": top1 / n, "top5": top5 / n}


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state()}


def fit(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any,
    cfg: TrainConfig,
    out_dir: str | Path,
    meta: dict[str, Any],
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model``; resumes from ``out_dir/last.pt`` when it exists."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(len(train_loader), 1)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history: list[dict[str, Any]] = []
    start, best = 0, -1.0
    last = out / "last.pt"
    if last.exists():
        state = torch.load(str(last), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        start, best, history = int(state["epoch"]), float(state["best"]), list(state["history"])
        log.info("resumed from %s at epoch %d", last, start)
    for epoch in range(start, cfg.epochs):
        model.train()
        t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            outputs = model(x)
            loss = criterion(outputs, y)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(y)
            correct += int((outputs.argmax(1) == y).sum())
            seen += len(y)
        val = evaluate(model, val_loader, device)
        row = {
            "epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
            "val_loss": val["loss"], "val_acc": val["acc"], "val_top5": val["top5"],
            "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        if val["acc"] > best:
            best = val["acc"]
            save_checkpoint(out / "best.safetensors", model, {**meta, "metrics": row, "train": asdict(cfg)},
                            half=cfg.half_checkpoint)
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": _rng_state(), "epoch": epoch + 1,
                    "best": best, "history": history}, buf)
        atomic_write_bytes(last, buf.getvalue())
        _write_csv(out / "metrics.csv", history)
        if on_epoch:
            on_epoch(row)
    return history


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
