"""The resumable classification training loop (``fit``), used by ``cnnkit finetune`` and the
retraining scripts of bundled models.

Outputs in ``out_dir``: ``best``/``last`` checkpoints (safetensors + JSON, loadable by
``cnnkit classify --weights``), ``last.pt`` (optimiser, scheduler, RNG and position;
read back with ``weights_only=True``), ``metrics.csv``, ``curves.png`` and
``confusion_matrix.png``. Every write is atomic.

Resuming gives the same weights as an uninterrupted run: the data order comes from
a seeded sampler per epoch (:class:`ResumableSampler`), augmentation from a seed per
(epoch, sample), and the global RNG (dropout) is saved with the state. SIGINT/SIGTERM
finish the current batch, save the state mid-epoch and raise ``KeyboardInterrupt``.

Under ``torchrun`` the caller wraps the model in DistributedDataParallel; sums are
all-reduced here and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from cnnkit.io.files import atomic_path, atomic_write_bytes
from cnnkit.models.checkpoint import load_training_state, restoring, save_checkpoint

log = logging.getLogger("cnnkit.train")

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("onecycle", "cosine", "step", "none")


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    seed: int = 0
    half_checkpoint: bool = False
    optimizer: str = "adamw"
    scheduler: str = "onecycle"
    warmup: float = 0.0  # epochs of linear warm-up (cosine, step and none)
    early_stopping: int | None = None  # epochs without a better val top-1 before stopping
    amp: bool = False
    aux_weight: float = 0.3  # weight of auxiliary logits (GoogLeNet), as in the paper
    unfreeze_at: int | None = None  # epoch (1-based) from which frozen parts train too


class ResumableSampler(DistributedSampler):
    """torch's DistributedSampler (one replica when not distributed) that can start mid-epoch."""

    def __init__(self, dataset: Any, *, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def all_sum(values: Sequence[float] | np.ndarray, device: Any = "cpu") -> np.ndarray:
    """Sum a vector over all ranks (identity when not distributed)."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
    dist = _dist()
    if dist is not None:
        dist.all_reduce(t)
    return t.cpu().numpy()


def is_main() -> bool:
    dist = _dist()
    return dist is None or dist.get_rank() == 0


def _logits(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Main and auxiliary logits (GoogLeNet returns a named tuple in train mode)."""
    if isinstance(out, (tuple, list)):
        return out[0], [o for o in out[1:] if o is not None]
    return out, []


def evaluate(model: nn.Module, loader: Any, device: torch.device | str = "cpu",
             num_classes: int | None = None) -> dict[str, Any]:
    """Loss, top-1 and top-5 accuracy (summed over ranks) and the confusion matrix over ``loader``."""
    model.eval()
    loss_sum, top1, top5, total = 0.0, 0, 0, 0
    cm = np.zeros((num_classes or 0, num_classes or 0), dtype=np.int64)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out, _ = _logits(model(x))
            loss_sum += float(criterion(out.float(), y))
            pred = out.topk(min(5, out.shape[1]), dim=1).indices
            top1 += int((pred[:, 0] == y).sum())
            top5 += int((pred == y[:, None]).any(dim=1).sum())
            total += len(y)
            if num_classes:
                np.add.at(cm, (y.cpu().numpy(), pred[:, 0].cpu().numpy()), 1)
    loss_sum, top1, top5, total = all_sum([loss_sum, top1, top5, total], _reduce_device(device)).tolist()
    if num_classes:
        cm = all_sum(cm, _reduce_device(device)).astype(np.int64)
    n = max(total, 1)
    return {"loss": loss_sum / n, "acc": top1 / n, "top5": top5 / n, "images": int(total), "confusion": cm}


def _reduce_device(device: Any) -> Any:
    dist = _dist()
    return device if dist is not None and dist.get_backend() == "nccl" else "cpu"


class _Schedule:
    """LR factor per optimisation step: linear warm-up, then cosine, step (×0.1 per third) or constant."""

    def __init__(self, kind: str, total: int, warmup: int) -> None:
        self.kind, self.total, self.warmup = kind, max(total, 1), warmup

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if self.kind == "step":
            return 0.1 ** min(int(progress * 3), 2)
        return 1.0


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
    params = list(model.parameters())  # frozen ones have no grad and are skipped; unfreezing needs them here
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> Any:
    if cfg.scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}")
    total = cfg.epochs * max(steps_per_epoch, 1)
    if cfg.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=0.15)
    warmup = int(round(cfg.warmup * steps_per_epoch))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Schedule(cfg.scheduler, total, warmup))


class GracefulStop:
    """While active, SIGINT/SIGTERM only set :attr:`requested`; the loop saves and stops.

    A second Ctrl-C interrupts at once. Handlers are only installed in the main thread.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this batch (%s); press Ctrl-C again to abort", signal.Signals(signum).name)

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def any_rank(self, device: Any) -> bool:
        """True on every rank as soon as one rank was asked to stop (keeps collectives in step)."""
        if _dist() is None:
            return self.requested
        return bool(all_sum([float(self.requested)], _reduce_device(device))[0] > 0)


@dataclass
class Callbacks:
    """Hooks for a progress display: ``epoch_start(epoch, batches)``, ``batch(n_images)``, ``epoch_end(row)``."""

    epoch_start: Callable[[int, int], None] | None = None
    batch: Callable[[int], None] | None = None
    epoch_end: Callable[[dict[str, Any]], None] | None = None


def set_train_mode(model: nn.Module, frozen: Sequence[nn.Module]) -> None:
    """``model.train()``, with BatchNorm in frozen parts kept in eval mode (running stats untouched)."""
    model.train()
    for part in frozen:
        for m in part.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(getattr(model, "module"), nn.Module) else model


def fit(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any,
    cfg: TrainConfig,
    out_dir: str | Path,
    meta: dict[str, Any],
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    *,
    frozen: Sequence[nn.Module] = (),
    callbacks: Callbacks | None = None,
) -> list[dict[str, Any]]:
    """Train ``model``; resumes from ``out_dir/last.pt`` when it exists.

    ``frozen``: modules whose parameters were frozen by the caller (their BatchNorm stays
    in eval mode until ``cfg.unfreeze_at``). ``meta`` goes into every checkpoint (it must
    hold ``arch``, ``labels`` and ``preprocess`` for ``classify`` to load it).
    """
    out = Path(out_dir)
    main = is_main()
    cb = callbacks or Callbacks(epoch_end=on_epoch)
    if on_epoch and callbacks:
        cb.epoch_end = on_epoch
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, _epoch_batches(train_loader))
    scaler = _GradScaler(cfg.amp, device)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    labels = list(meta.get("labels") or [])
    run = _RunState()
    last = out / "last.pt"
    if last.exists():
        fresh = getattr(scheduler, "lr_lambdas", None) or getattr(scheduler, "total_steps", None)
        run = _RunState.load(last, model, optimizer, scheduler, scaler)
        _keep_schedule_length(scheduler, fresh)
        log.info("resumed from %s at epoch %d%s", last, run.epoch + 1, f", batch {run.batch}" if run.batch else "")
    frozen = list(frozen)
    with GracefulStop() as stop:
        for epoch in range(run.epoch, cfg.epochs):
            if run.stopped:
                break
            if cfg.unfreeze_at is not None and epoch + 1 >= cfg.unfreeze_at and frozen:
                _unwrap(model).requires_grad_(True)
                frozen = []
                log.info("epoch %d: backbone unfrozen", epoch + 1)
            _set_epoch(train_loader, epoch, run.batch)
            if not run.batch:
                torch.manual_seed(cfg.seed * 100_003 + epoch)
            set_train_mode(model, frozen)
            if cb.epoch_start:
                cb.epoch_start(epoch + 1, _epoch_batches(train_loader) + run.batch)
            t0 = time.perf_counter()
            for x, y in train_loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with _autocast(cfg.amp, device):
                    logits, aux = _logits(model(x))
                    loss = criterion(logits, y)
                    for a in aux:
                        loss = loss + cfg.aux_weight * criterion(a, y)
                scaler.step(loss, optimizer)
                scheduler.step()
                run.add(float(loss.detach()) * len(y), int((logits.argmax(1) == y).sum()), len(y))
                if cb.batch:
                    cb.batch(len(y))
                if stop.any_rank(device):
                    run.batch_seconds += time.perf_counter() - t0
                    run.epoch = epoch
                    if main:
                        run.save(last, _unwrap(model), optimizer, scheduler, scaler)
                        _save_weights(out / "last", model, meta, cfg, run.history[-1] if run.history else {})
                        log.warning("interrupted in epoch %d: state saved to %s (resume with --resume %s)",
                                    epoch + 1, last, out)
                    raise KeyboardInterrupt
            seconds = run.batch_seconds + time.perf_counter() - t0
            val = evaluate(model, val_loader, device, num_classes=len(labels) or None)
            loss_sum, correct, seen = all_sum([run.loss_sum, run.correct, run.seen], _reduce_device(device)).tolist()
            row = {
                "epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                "val_loss": val["loss"], "val_acc": val["acc"], "val_top5": val["top5"],
                "val_images": val["images"], "lr": scheduler.get_last_lr()[0], "seconds": seconds, "images_per_s": seen / max(seconds, 1e-9),
            }
            run.end_epoch(row, cfg.early_stopping)
            if main:
                _write_epoch(out, model, meta, cfg, run, val, labels, optimizer, scheduler, scaler)
            if cb.epoch_end:
                cb.epoch_end(row)
            if run.stopped:
                log.info("early stopping: no better val top-1 for %d epoch(s)", cfg.early_stopping)
    return run.history


def fit_in_memory(model: nn.Module, train: Any, val: Any, cfg: TrainConfig, out_dir: str | Path,
                  meta: dict[str, Any], *, batch_size: int) -> list[dict[str, Any]]:
    """:func:`fit` on in-memory datasets, seeded shuffle, one log line per epoch (the retraining scripts).

    The shuffle is :class:`ResumableSampler`'s (seed + epoch), so a run stopped mid-epoch resumes
    on the same batches and its schedule ends where an uninterrupted one does.
    """
    from torch.utils.data import DataLoader

    sampler = ResumableSampler(train, seed=cfg.seed)
    return fit(model, DataLoader(train, batch_size=batch_size, sampler=sampler),
               DataLoader(val, batch_size=256), cfg, out_dir, meta,
               on_epoch=lambda r: log.info("epoch %(epoch)d loss %(train_loss).4f val_acc %(val_acc).4f "
                                           "(%(seconds).1fs)", r))


def _keep_schedule_length(scheduler: Any, fresh: Any) -> None:
    """After loading a scheduler's state, keep this run's length (``--epochs`` may change on resume)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        scheduler.lr_lambdas = fresh
    elif scheduler.total_steps != fresh:
        from cnnkit.errors import UsageError

        raise UsageError("the onecycle schedule cannot change length on resume; keep the run's --epochs")


def _epoch_batches(loader: Any) -> int:
    try:
        return len(loader)
    except TypeError:
        return 1


def _set_epoch(loader: Any, epoch: int, skip_batches: int) -> None:
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if hasattr(sampler, "start"):
        sampler.start = skip_batches * (loader.batch_size or 1)
    dataset = getattr(loader, "dataset", None)
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)


def _autocast(amp: bool, device: Any) -> Any:
    if not amp:
        return contextlib.nullcontext()
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.float16 if kind == "cuda" else torch.bfloat16)


class _GradScaler:
    """fp16 loss scaling on CUDA with --amp; a plain backward + step otherwise (bf16 needs none)."""

    def __init__(self, amp: bool, device: Any) -> None:
        self.scaler = torch.amp.GradScaler("cuda") if amp and torch.device(device).type == "cuda" else None

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)


@dataclass
class _RunState:
    """Where a run is: completed epochs, batches into the current one, partial sums, history."""

    epoch: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    batch_seconds: float = 0.0
    best: float = -1.0
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        self.history = list(self.history or [])

    def add(self, loss_sum: float, correct: int, n: int) -> None:
        self.loss_sum += loss_sum
        self.correct += correct
        self.seen += n
        self.batch += 1

    def end_epoch(self, row: dict[str, Any], patience: int | None) -> None:
        self.history.append(row)
        self.improved = row["val_acc"] > self.best
        if self.improved:
            self.best, self.bad_epochs = row["val_acc"], 0
        else:
            self.bad_epochs += 1
        self.stopped = bool(patience) and self.bad_epochs >= patience
        self.epoch, self.batch = row["epoch"], 0
        self.loss_sum, self.correct, self.seen, self.batch_seconds = 0.0, 0, 0, 0.0

    def save(self, path: Path, model: nn.Module, optimizer: Any, scheduler: Any, scaler: _GradScaler) -> None:
        state = {k: v for k, v in asdict(self).items()}
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "rng": {"torch": torch.get_rng_state()}, "run": state}, buf)
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path, model: nn.Module, optimizer: Any, scheduler: Any, scaler: _GradScaler) -> "_RunState":
        state = load_training_state(path)
        with restoring(path):
            _unwrap(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state.get("scaler") or {})
            torch.set_rng_state(state["rng"]["torch"])
            run = cls(**state["run"])
            if not all(isinstance(row, dict) for row in run.history or []):
                raise ValueError("its history is not a list of epoch rows")
        return run


def _save_weights(stem: Path, model: nn.Module, meta: dict[str, Any], cfg: TrainConfig, row: dict[str, Any]) -> Path:
    return save_checkpoint(stem.with_suffix(".safetensors"), _unwrap(model),
                           {**meta, "metrics": row, "train": asdict(cfg)}, half=cfg.half_checkpoint)


def _write_epoch(out: Path, model: nn.Module, meta: dict[str, Any], cfg: TrainConfig, run: _RunState,
                 val: dict[str, Any], labels: list[str], optimizer: Any, scheduler: Any, scaler: _GradScaler) -> None:
    from cnnkit.tasks.classify.val import plot_confusion, plot_curves

    row = run.history[-1]
    if run.improved:
        _save_weights(out / "best", model, meta, cfg, row)
        if labels:
            plot_confusion(val["confusion"], labels, out / "confusion_matrix.png",
                           title=f"val, epoch {row['epoch']} (top-1 {row['val_acc']:.3f})")
    _save_weights(out / "last", model, meta, cfg, row)
    run.save(out / "last.pt", _unwrap(model), optimizer, scheduler, scaler)
    _write_csv(out / "metrics.csv", run.history)
    plot_curves(run.history, out / "curves.png")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
