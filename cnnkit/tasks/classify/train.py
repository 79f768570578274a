"""``cnnkit finetune --task classify``: transfer learning on a folder dataset.

The recipe: load a registry backbone (ImageNet or bundled weights, a cnnkit
checkpoint or a state dict), replace its head for the dataset's classes, freeze the
trunk or all but its last blocks, and train with the shared loop :func:`cnnkit.train.loop.fit`
(the recipe: cross-entropy with label smoothing and GoogLeNet's auxiliary heads; top-1
accuracy picks ``best``), which writes checkpoints ``cnnkit classify --weights`` loads.
Under ``torchrun`` it trains with DistributedDataParallel (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnkit.data.folder import FolderData, FolderSplit, describe_skipped, load_folder_dataset
from cnnkit.errors import CnnkitError, OptionError, WeightsNotAvailable
from cnnkit.io.decode import draft_side
from cnnkit.models import hub
from cnnkit.models.loader import check_runs_at, resolve, spec_for_family
from cnnkit.models.preprocess import Preprocess, sized
from cnnkit.models.registry import ModelSpec, get_spec
from cnnkit.train.heads import freeze as freeze_trunk
from cnnkit.train.heads import matching_rows, parse_freeze, replace_head
from cnnkit.train.loop import (
    OPTIMIZERS,
    SCHEDULERS,
    Callbacks,
    LoopConfig,
    Recipe,
    Step,
    all_sum,
    fit,
    for_evaluation,
    run_result,
    seeded_loader,
    seeded_sample,
    worker_init,
)
from cnnkit.train.options import FinetuneOptions, resume_dir

log = logging.getLogger("cnnkit.finetune")

DEFAULT_MODEL = "resnet18"
AUGMENTS = ("light", "strong", "none")


DEFAULTS: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "freeze": "none",
    "epochs": 10,
    "batch_size": 32,
    "lr": 1e-3,
    "val_split": 0.2,
}
# The options a run saves in its checkpoints (``finetune`` in their metadata), so ``resume`` needs nothing else.
RECORDED = (
    "model",
    "pretrained",
    "weights",
    "freeze",
    "unfreeze_at",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "scheduler",
    "warmup",
    "label_smoothing",
    "augment",
    "imgsz",
    "val_split",
    "early_stopping",
    "seed",
    "amp",
)


def check(opts: FinetuneOptions) -> FinetuneOptions:
    """``opts`` with classify's defaults filled in, validated; ``freeze`` in its normal spelling."""
    opts = opts.filled(**DEFAULTS)
    if opts.optimizer not in OPTIMIZERS:
        raise OptionError("optimizer", f"expected {' or '.join(OPTIMIZERS)}", opts.optimizer)
    if opts.scheduler not in SCHEDULERS:
        raise OptionError("scheduler", f"expected one of {', '.join(SCHEDULERS)}", opts.scheduler)
    if opts.augment not in AUGMENTS:
        raise OptionError("augment", f"expected one of {', '.join(AUGMENTS)}", opts.augment)
    for name in ("epochs", "batch_size"):
        if getattr(opts, name) < 1:
            raise OptionError(name, "must be at least 1")
    if not opts.lr or opts.lr <= 0:
        raise OptionError("lr", "must be positive")
    if not 0.0 <= opts.label_smoothing < 1.0:
        raise OptionError("label_smoothing", "must be in [0, 1)")
    return replace(opts, freeze=str(parse_freeze(opts.freeze or "none")))


# ---------------------------------------------------------------- data


def train_transform(pre: Preprocess, augment: str) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 HxWx3 → normalised tensor; ``none`` is exactly the inference preprocessing."""
    if augment == "none":
        return pre
    from torchvision.transforms import v2

    steps: list[Any] = [
        v2.RandomResizedCrop(pre.crop, scale=(0.6, 1.0) if augment == "light" else (0.3, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if augment == "strong":
        steps += [v2.ColorJitter(0.3, 0.3, 0.3, 0.05), v2.RandomGrayscale(0.05)]
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(pre.mean), list(pre.std))]
    pipeline = v2.Compose(steps)

    def apply(rgb: np.ndarray) -> torch.Tensor:
        return pipeline(torch.from_numpy(np.array(rgb)).permute(2, 0, 1))

    return apply


class FolderDataset(Dataset):
    """Decodes with cnnkit's decoder; augmentation is seeded per (seed, epoch, index), so a
    resumed run sees the same pixels as an uninterrupted one, whatever the worker count."""

    def __init__(self, split: FolderSplit, transform: Any, min_side: int | None, seed: int) -> None:
        self.paths, self.targets = split.paths, split.targets
        self.transform, self.min_side, self.seed, self.epoch = transform, min_side, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from cnnkit.io.decode import decode

        decoded = decode(self.paths[index], min_side=self.min_side)
        rgb = decoded.rgb
        if isinstance(self.transform, Preprocess):  # deterministic: no RNG to manage; as `cnnkit classify` reads it
            return self.transform(rgb, (decoded.width, decoded.height), decoded.scale), self.targets[index]
        return seeded_sample(self.seed, self.epoch, index, lambda: self.transform(rgb)), self.targets[index]


class _Shard(Sampler):
    """Every world-th index from rank on, unpadded, so val metrics count each image once."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Any:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def make_loaders(
    data: FolderData, pre: Preprocess, opts: FinetuneOptions, workers: int, rank: int, world: int, pin: bool
) -> tuple[DataLoader, DataLoader]:
    """The train and val loaders of a folder dataset (sharded across ``world`` processes)."""
    assert opts.batch_size is not None  # filled by check()
    side = draft_side(pre.resize)  # the draft `cnnkit classify` reads, so val scores what it will see
    train_ds = FolderDataset(data.train, train_transform(pre, opts.augment), side, opts.seed)
    val_ds = FolderDataset(data.val, pre, side, opts.seed)
    common: dict[str, Any] = dict(
        pin_memory=pin, worker_init_fn=worker_init if workers else None, persistent_workers=False
    )
    # drop_last avoids a last batch of one image (BatchNorm) unless the data is smaller than a batch.
    train = seeded_loader(
        train_ds,
        opts.batch_size,
        seed=opts.seed,
        drop_last=len(train_ds) > opts.batch_size * world,
        workers=workers,
        rank=rank,
        world=world,
        **common,
    )
    val = DataLoader(
        val_ds, batch_size=opts.batch_size * 2, sampler=_Shard(len(val_ds), rank, world), num_workers=workers, **common
    )
    return train, val


# ---------------------------------------------------------------- recipe


def _logits(out: Any) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Main and auxiliary logits (GoogLeNet returns a named tuple in train mode)."""
    if isinstance(out, (tuple, list)):
        return out[0], [o for o in out[1:] if o is not None]
    return out, []


def evaluate(
    model: nn.Module, loader: Any, device: torch.device | str = "cpu", num_classes: int | None = None
) -> dict[str, Any]:
    """Loss, top-1 and top-5 accuracy (summed over ranks) and the confusion matrix over ``loader``."""
    model = for_evaluation(model)
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
    loss_sum, top1, top5, total = all_sum([loss_sum, top1, top5, total], device).tolist()
    if num_classes:
        cm = all_sum(cm, device).astype(np.int64)
    n = max(total, 1)
    return {"loss": loss_sum / n, "acc": top1 / n, "top5": top5 / n, "images": int(total), "confusion": cm}


def recipe(
    val_loader: Any,
    labels: list[str],
    device: torch.device | str = "cpu",
    *,
    label_smoothing: float = 0.0,
    aux_weight: float = 0.3,
) -> Recipe:
    """Classification for :func:`cnnkit.train.loop.fit`: cross-entropy (auxiliary heads weighted
    ``aux_weight``, as in the GoogLeNet paper), val top-1 picks ``best`` and draws its confusion matrix."""
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def loss(model: nn.Module, batch: Any, dev: torch.device) -> Step:
        x, y = batch[0].to(dev, non_blocking=True), batch[1].to(dev, non_blocking=True)
        logits, aux = _logits(model(x))
        value = criterion(logits, y)
        for a in aux:
            value = value + aux_weight * criterion(a, y)
        return Step(value, len(y), {"acc": float((logits.argmax(1) == y).sum())})

    def on_best(out: Path, row: dict[str, Any], val: dict[str, Any]) -> None:
        from cnnkit.tasks.classify.val import plot_confusion

        if labels:
            plot_confusion(
                val["confusion"],
                labels,
                out / "confusion_matrix.png",
                title=f"val, epoch {row['epoch']} (top-1 {row['val_acc']:.3f})",
            )

    return Recipe(
        "classify",
        loss,
        lambda m: evaluate(m, val_loader, device, num_classes=len(labels) or None),
        score="val_acc",
        on_best=on_best,
    )


# ---------------------------------------------------------------- model


def _default_preprocess(spec: ModelSpec) -> Preprocess:
    if spec.preprocess is not None:
        return spec.preprocess
    if spec.source == "torchvision" and spec.weights:
        return Preprocess.from_torchvision(hub.torchvision_weights(spec.weights))
    return Preprocess(resize=256, crop=224)


def build_model(opts: FinetuneOptions, classes: list[str]) -> tuple[Any, ModelSpec, Preprocess, str]:
    """The backbone with a head for ``classes``: pretrained/bundled weights, ``--weights``, or random."""
    if not (opts.weights or opts.pretrained):
        spec = get_spec(opts.model or DEFAULT_MODEL, "classify")
        return spec.builder(num_classes=len(classes)), spec, _default_preprocess(spec), f"{spec.name}, random init"
    try:
        loaded = resolve("classify", opts.model, opts.weights, default=DEFAULT_MODEL)
    except WeightsNotAvailable as exc:
        raise WeightsNotAvailable(f"{exc.message}, or train from scratch with `pretrained=False`") from exc
    if loaded.spec is None:  # an exported runtime file (.onnx, .torchscript): weights to run, not to train
        raise CnnkitError(
            f"{opts.weights or opts.model}: an exported model cannot be fine-tuned; fine-tune the checkpoint it was "
            "exported from"
        )
    spec = loaded.spec
    source = f"weights {opts.weights}" if opts.weights else f"{spec.name} pretrained ({spec.source})"
    if list(loaded.labels) != list(classes):
        kept = matching_rows(list(classes), list(loaded.labels))
        replace_head(loaded.module, len(classes), keep=kept)
        source += (
            f", {len(classes)}-class head keeping the trained rows of {len(kept)} class(es) it knows"
            if kept
            else f", new {len(classes)}-class head"
        )
    return loaded.module, spec, loaded.preprocess or _default_preprocess(spec), source


# ---------------------------------------------------------------- run


def _setup_distributed(device: str | None) -> tuple[int, int, torch.device]:
    """Rank, world size and device; joins the process group when started by torchrun."""
    from cnnkit.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = resolve_device(device)
    if world <= 1:
        return 0, 1, dev
    import torch.distributed as dist

    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), dev


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


USED = ("model", "weights", "workers", "threads", *RECORDED)


def finetune(data: str | None, options: FinetuneOptions) -> dict[str, Any]:
    """Fine-tune a classifier on ``data`` (``DATA/<class>/*`` or ``DATA/{train,val}/<class>/*``).

    Options left ``None`` take classify's defaults (:data:`DEFAULTS`); with ``resume`` they
    come from the run's checkpoint. ``callbacks`` show progress (else, with ``progress``, a
    log line per epoch). Returns ``{best, last, out, metrics}``.
    """
    options.ignore_others("classify", USED)
    if options.threads:
        torch.set_num_threads(options.threads)
    rank, world, dev = _setup_distributed(options.device)
    try:
        callbacks = options.reporter(log) if rank == 0 else None
        result = _run(data, options, dev, rank, world, callbacks)
        if world > 1:
            import torch.distributed as dist

            # Rank 0 may still be writing checkpoints: tearing gloo down under it aborts a process.
            dist.barrier()
        return result
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _options(data: str | None, given: FinetuneOptions) -> tuple[str, FinetuneOptions, Path | None, dict[str, Any]]:
    """A new run's dataset and options, or a resumed run's own (only ``epochs`` may change), checked."""
    root, opts, meta = given.dataset(data, RECORDED)
    return root, check(opts), resume_dir(str(given.resume)) if given.resume else None, meta


def _model_for(
    root: str, opts: FinetuneOptions, classes: list[str], resumed: dict[str, Any]
) -> tuple[Any, ModelSpec, Preprocess, str]:
    if not resumed:
        module, spec, pre, source = build_model(opts, classes)
        return module, spec, sized(pre, opts.imgsz, name=spec.name, fixed=spec.meta.get("fixed_size")), source
    # Resuming: the architecture from the run; every weight comes from last.pt.
    if list(resumed["labels"]) != classes:
        raise OptionError("resume", f"{root} now has classes {classes}, the run had {resumed['labels']}")
    spec = spec_for_family(resumed["arch"], "classify")
    return spec.builder(num_classes=len(classes)), spec, Preprocess.from_dict(resumed["preprocess"]), resumed["source"]


def _run(
    data: str | None, given: FinetuneOptions, dev: torch.device, rank: int, world: int, callbacks: Callbacks | None
) -> dict[str, Any]:
    root, opts, out_dir, resumed = _options(data, given)
    assert (
        opts.epochs is not None and opts.lr is not None and opts.freeze is not None and opts.val_split is not None
    )  # checked
    if world > 1 and opts.unfreeze_at:
        raise OptionError("unfreeze_at", "not supported with torchrun (DDP fixes the trained parameters)")
    dataset = load_folder_dataset(root, val_split=opts.val_split, seed=opts.seed, min_side=opts.imgsz)
    if dataset.skipped and rank == 0:
        log.warning(describe_skipped(dataset.skipped))
    if given.val_split is not None and dataset.layout != "split" and rank == 0:
        log.warning("val_split %g not used: %s has its own split (%s)", given.val_split, root, dataset.layout)
    if given.unfreeze_at is not None and opts.freeze == "none" and rank == 0:
        log.warning("unfreeze_at %d not used: nothing is frozen (freeze none)", given.unfreeze_at)
    torch.manual_seed(opts.seed)
    module, spec, pre, source = _model_for(root, opts, dataset.classes, resumed)
    check_runs_at(module, spec.name, pre.crop)  # a side pooled down to nothing: one line, before a run folder
    frozen = freeze_trunk(module, opts.freeze)
    if out_dir is None:
        out_dir = Path(_broadcast(str(opts.run_folder("classify")) if rank == 0 else None))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    if rank == 0:
        log.info(
            "%s: %d classes, %d train / %d val images (%s); %s; %s of %s parameters trainable; "
            "%d process(es) on %s; writing %s",
            root,
            len(dataset.classes),
            len(dataset.train),
            len(dataset.val),
            dataset.layout,
            source,
            f"{trainable:,}",
            f"{total:,}",
            world,
            dev,
            out_dir,
        )
    module.to(dev)
    model = module
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)
    workers = min(4, os.cpu_count() or 1) if opts.workers is None else opts.workers
    train_loader, val_loader = make_loaders(dataset, pre, opts, workers, rank, world, pin=dev.type == "cuda")
    meta = {
        "task": "classify",
        "arch": spec.family,
        "name": f"{spec.name}-{out_dir.name}",
        "labels": dataset.classes,
        "preprocess": pre.to_dict(),
        "finetune": opts.record(root, RECORDED),
        "source": source,
        "data": {
            "root": root,
            "layout": dataset.layout,
            "train": len(dataset.train),
            "val": len(dataset.val),
            "skipped": [p for p, _ in dataset.skipped],
        },
        "world_size": world,
    }
    cfg = LoopConfig(
        epochs=opts.epochs,
        lr=opts.lr,
        seed=opts.seed,
        optimizer=opts.optimizer,
        scheduler=opts.scheduler,
        warmup=opts.warmup,
        early_stopping=opts.early_stopping,
        amp=opts.amp,
        unfreeze_at=opts.unfreeze_at,
        weight_decay=0.01 if opts.optimizer == "adamw" else 1e-4,
    )
    task = recipe(val_loader, dataset.classes, dev, label_smoothing=opts.label_smoothing)
    history = fit(model, train_loader, task, cfg, out_dir, meta, dev, frozen=frozen, callbacks=callbacks)
    if not history:
        raise CnnkitError(f"{out_dir}: the run has no completed epoch")
    best = max(history, key=lambda r: r["val_acc"])
    return run_result(out_dir, {**best, "epochs_run": len(history), "world_size": world})
