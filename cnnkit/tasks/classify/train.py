"""``cnnkit finetune --task classify``: transfer learning on a folder dataset.

The recipe: load a registry backbone (ImageNet or bundled weights, a cnnkit
checkpoint or a state dict), replace its head for the dataset's classes, freeze the
trunk or all but its last blocks, and train with the shared loop :func:`cnnkit.train.loop.fit`
(the recipe: cross-entropy with label smoothing and GoogLeNet's auxiliary heads; top-1
accuracy picks ``best``), which writes checkpoints ``cnnkit classify --weights`` loads.
Under ``torchrun`` it trains with DistributedDataParallel (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnkit.data.folder import FolderSplit, describe_skipped, load_folder_dataset
from cnnkit.errors import CnnkitError, OptionError, UsageError, WeightsNotAvailable
from cnnkit.models import hub
from cnnkit.models.loader import resolve, spec_for_family
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
    log_progress,
    resume_dir,
    run_dir,
    seeded_loader,
)

log = logging.getLogger("cnnkit.finetune")

DEFAULT_MODEL = "resnet18"
AUGMENTS = ("light", "strong", "none")


@dataclass
class Options:
    """Every option of a run; saved in its checkpoints so ``--resume`` needs nothing else."""

    data: str
    model: str = DEFAULT_MODEL
    pretrained: bool = True
    weights: str | None = None
    freeze: str = "none"
    unfreeze_at: int | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    warmup: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "light"
    imgsz: int | None = None
    val_split: float = 0.2
    early_stopping: int | None = None
    seed: int = 0
    amp: bool = False

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise OptionError("optimizer", f"expected {' or '.join(OPTIMIZERS)}", self.optimizer)
        if self.scheduler not in SCHEDULERS:
            raise OptionError("scheduler", f"expected one of {', '.join(SCHEDULERS)}", self.scheduler)
        if self.augment not in AUGMENTS:
            raise OptionError("augment", f"expected one of {', '.join(AUGMENTS)}", self.augment)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise OptionError(name, "must be at least 1")
        if self.lr <= 0:
            raise OptionError("lr", "must be positive")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise OptionError("label_smoothing", "must be in [0, 1)")
        self.freeze = str(parse_freeze(self.freeze))


# ---------------------------------------------------------------- data


def train_transform(pre: Preprocess, augment: str) -> Any:
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

    def __init__(self, split: FolderSplit, transform: Any, min_side: int, seed: int) -> None:
        self.paths, self.targets = split.paths, split.targets
        self.transform, self.min_side, self.seed, self.epoch = transform, min_side, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from cnnkit.io.decode import decode

        rgb = decode(self.paths[index], min_side=self.min_side).rgb
        if isinstance(self.transform, Preprocess):  # deterministic: no RNG to manage
            return self.transform(rgb), self.targets[index]
        # Seed torch's CPU generator for this sample and put the caller's state back after
        # (torch.random.fork_rng does the same but costs ~1 ms, more than decoding a small image).
        gen = torch.default_generator
        state = gen.get_state()
        gen.manual_seed(zlib.crc32(f"{self.seed}/{self.epoch}/{index}".encode()))
        try:
            x = self.transform(rgb)
        finally:
            gen.set_state(state)
        return x, self.targets[index]


class _Shard(Sampler):
    """Every world-th index from rank on, unpadded, so val metrics count each image once."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Any:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _worker_init(_: int) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's business
    torch.set_num_threads(1)


def make_loaders(
    data: Any, pre: Preprocess, opts: Options, workers: int, rank: int, world: int, pin: bool
) -> tuple[DataLoader, DataLoader]:
    train_ds = FolderDataset(data.train, train_transform(pre, opts.augment), pre.resize, opts.seed)
    val_ds = FolderDataset(data.val, pre, pre.resize, opts.seed)
    common: dict[str, Any] = dict(
        pin_memory=pin, worker_init_fn=_worker_init if workers else None, persistent_workers=False
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


def build_model(opts: Options, classes: list[str]) -> tuple[Any, ModelSpec, Preprocess, str]:
    """The backbone with a head for ``classes``: pretrained/bundled weights, ``--weights``, or random."""
    if not (opts.weights or opts.pretrained):
        spec = get_spec(opts.model, "classify")
        return spec.builder(num_classes=len(classes)), spec, _default_preprocess(spec), f"{spec.name}, random init"
    try:
        loaded = resolve("classify", opts.model, opts.weights, default=DEFAULT_MODEL)
    except WeightsNotAvailable as exc:
        raise WeightsNotAvailable(f"{exc.message}, or train from scratch with `pretrained=False`") from exc
    assert loaded.spec is not None  # a classify checkpoint or registry entry always names one
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


def _resume_options(resume: str) -> tuple[Options, Path, dict[str, Any]]:
    out = resume_dir(resume)
    state, sidecar = out / "last.pt", out / "last.json"
    if not state.is_file() or not sidecar.is_file():
        raise OptionError("resume", f"no last.pt / last.json in {out}; nothing to resume", resume)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CnnkitError(f"{sidecar}: not a readable cnnkit run record ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("finetune"), dict):
        raise OptionError("resume", f"{sidecar} was not written by cnnkit finetune", resume)
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(meta["finetune"]) - known)
    if unknown:
        raise CnnkitError(f"{sidecar}: unknown finetune option(s) {', '.join(unknown)[:120]}")
    return Options(**meta["finetune"]), out, meta


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


def finetune(
    data: str | None = None,
    *,
    model: str | None = None,
    weights: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    imgsz: int | None = None,
    lr: float | None = None,
    device: str | None = None,
    out: str | None = None,
    exist_ok: bool = False,
    seed: int | None = None,
    workers: int | None = None,
    resume: str | None = None,
    freeze: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    callbacks: Callbacks | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Fine-tune a classifier on ``data`` (``DATA/<class>/*`` or ``DATA/{train,val}/<class>/*``).

    Options left ``None`` take their defaults (see :class:`Options`); with ``resume`` they
    come from the run's checkpoint. ``callbacks`` show progress (else, with ``progress``, a
    log line per epoch). Returns ``{best, last, out, metrics}``.
    """
    options.pop("arch", None), options.pop("encoder", None)
    given = dict(
        model=model,
        weights=weights,
        epochs=epochs,
        batch_size=batch_size,
        imgsz=imgsz,
        lr=lr,
        seed=seed,
        freeze=freeze,
        **options,
    )
    unknown = set(given) - set(Options.__dataclass_fields__)
    if unknown:
        raise OptionError(tuple(sorted(unknown)), "not options of classify fine-tuning")
    if threads:
        torch.set_num_threads(threads)
    rank, world, dev = _setup_distributed(device)
    try:
        if callbacks is None and progress and rank == 0:
            callbacks = log_progress(log)
        result = _run(data, given, dev, rank, world, out, exist_ok, resume, workers, callbacks if rank == 0 else None)
        if world > 1:
            import torch.distributed as dist

            # Rank 0 may still be writing checkpoints: tearing gloo down under it aborts a process.
            dist.barrier()
        return result
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()


def _options(
    data: str | None, given: dict[str, Any], resume: str | None
) -> tuple[Options, Path | None, dict[str, Any]]:
    """A new run's options, or a resumed run's own (only ``--epochs`` may change)."""
    if not resume:
        if not data:
            raise UsageError("finetune: DATA folder is required (or `resume` RUN_DIR)")
        opts = Options(data=str(Path(data).resolve()), **{k: v for k, v in given.items() if v is not None})
        return opts, None, {}
    opts, out_dir, meta = _resume_options(resume)
    if data and Path(data).resolve() != Path(opts.data).resolve():
        raise OptionError("resume", f"the run was trained on {opts.data}, not {data}")
    if given.get("epochs") and given["epochs"] != opts.epochs:
        log.warning(
            "resuming with epochs %d (was %d): the learning-rate schedule is stretched to the new "
            "length, so the result differs from a run started with it",
            given["epochs"],
            opts.epochs,
        )
        opts.epochs = given["epochs"]
    return opts, out_dir, meta


def _model_for(opts: Options, classes: list[str], resumed: dict[str, Any]) -> tuple[Any, ModelSpec, Preprocess, str]:
    if not resumed:
        module, spec, pre, source = build_model(opts, classes)
        return module, spec, sized(pre, opts.imgsz, name=spec.name, fixed=spec.meta.get("fixed_size")), source
    # Resuming: the architecture from the run; every weight comes from last.pt.
    if list(resumed["labels"]) != classes:
        raise OptionError("resume", f"{opts.data} now has classes {classes}, the run had {resumed['labels']}")
    spec = spec_for_family(resumed["arch"], "classify")
    return spec.builder(num_classes=len(classes)), spec, Preprocess.from_dict(resumed["preprocess"]), resumed["source"]


def _run(
    data: str | None,
    given: dict[str, Any],
    dev: torch.device,
    rank: int,
    world: int,
    out: str | None,
    exist_ok: bool,
    resume: str | None,
    workers: int | None,
    callbacks: Callbacks | None,
) -> dict[str, Any]:
    opts, out_dir, resumed = _options(data, given, resume)
    opts.check()
    if world > 1 and opts.unfreeze_at:
        raise OptionError("unfreeze_at", "not supported with torchrun (DDP fixes the trained parameters)")
    dataset = load_folder_dataset(opts.data, val_split=opts.val_split, seed=opts.seed, min_side=opts.imgsz)
    if dataset.skipped and rank == 0:
        log.warning(describe_skipped(dataset.skipped))
    torch.manual_seed(opts.seed)
    module, spec, pre, source = _model_for(opts, dataset.classes, resumed)
    frozen = freeze_trunk(module, opts.freeze)
    if out_dir is None:
        out_dir = Path(_broadcast(str(run_dir("classify", out, exist_ok=exist_ok)) if rank == 0 else None))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    if rank == 0:
        log.info(
            "%s: %d classes, %d train / %d val images (%s); %s; %s of %s parameters trainable; "
            "%d process(es) on %s; writing %s",
            opts.data,
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
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    train_loader, val_loader = make_loaders(dataset, pre, opts, workers, rank, world, pin=dev.type == "cuda")
    meta = {
        "task": "classify",
        "arch": spec.family,
        "name": f"{spec.name}-{out_dir.name}",
        "labels": dataset.classes,
        "preprocess": pre.to_dict(),
        "finetune": asdict(opts),
        "source": source,
        "data": {
            "root": opts.data,
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
    return {
        "best": str(out_dir / "best.safetensors"),
        "last": str(out_dir / "last.safetensors"),
        "out": str(out_dir),
        "metrics": {**best, "epochs_run": len(history), "world_size": world},
    }
