"""``cnnkit finetune --task segment``: train an smp segmenter on image/mask folder pairs.

The starting point is a cnnkit checkpoint (``weights=X.safetensors``), a registry
model (default ``shapes-unet``; its head is resized to the data's classes) or a fresh
``arch``/``encoder``. Training is the shared loop :func:`cnnkit.train.loop.fit` with
this recipe (Dice + cross-entropy, joint image/mask augmentation, validation mIoU picks
``best``), so ``best.safetensors`` loads with ``cnnkit segment --weights`` together with
its class names. ``scripts/train_shapes_seg.py`` retrains the bundled segmenters with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from cnnkit.data.masks import IGNORE
from cnnkit.errors import CnnkitError, OptionError, UsageError
from cnnkit.train.loop import LoopConfig, Recipe, Step, fit, run_result, seeded_loader, seeded_sample, worker_init
from cnnkit.train.options import FinetuneOptions

if TYPE_CHECKING:
    from torchvision.transforms import v2

log = logging.getLogger("cnnkit.train")


def transforms(
    imgsz: int, train: bool, mean: Sequence[float], std: Sequence[float], crop_scale: tuple[float, float] = (0.5, 1.0)
) -> v2.Compose:
    """torchvision v2 pipeline applied jointly to ``(tv_tensors.Image, tv_tensors.Mask)``.

    ``crop_scale`` is the random crop's share of the image area (``RandomResizedCrop``).
    """
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    size = (
        [
            v2.RandomResizedCrop(imgsz, scale=crop_scale, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.ColorJitter(0.2, 0.2, 0.2, 0.02),
        ]
        if train
        else [v2.Resize((imgsz, imgsz), antialias=True)]
    )
    return v2.Compose(
        [
            *size,
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


class PairDataset(torch.utils.data.Dataset):
    """Image/mask pairs from ``load(i) -> (rgb H×W×3 uint8, mask H×W int)``, transformed together; augmentation
    seeded per (seed, epoch, index), as classify's (:func:`~cnnkit.train.loop.seeded_sample`)."""

    def __init__(
        self, load: Callable[[int], tuple[np.ndarray, np.ndarray]], n: int, transform: Any, seed: int = 0
    ) -> None:
        self.load, self.n, self.transform, self.seed, self.epoch = load, n, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision import tv_tensors

        rgb, mask = self.load(i)
        image = tv_tensors.Image(torch.from_numpy(np.require(rgb, requirements=["C", "W"])).permute(2, 0, 1))
        target = tv_tensors.Mask(torch.from_numpy(np.asarray(mask, dtype=np.int64)))
        image, target = seeded_sample(self.seed, self.epoch, i, lambda: self.transform(image, target))
        return image.as_subclass(torch.Tensor), target.as_subclass(torch.Tensor).long()


def evaluate(
    model: nn.Module, loader: Any, num_classes: int, labels: list[str] | None = None, device: torch.device | str = "cpu"
) -> dict[str, Any]:
    """mIoU, per-class IoU and pixel accuracy over ``loader``."""
    from cnnkit.tasks.segment.val import ConfusionMatrix, class_map

    model.eval()
    cm = ConfusionMatrix(num_classes)
    with torch.inference_mode():
        for x, y in loader:
            cm.update(class_map(model(x.to(device)), 1), y)
    scores = cm.scores(labels)
    scores.pop("pixels", None)
    return scores


class DiceCELoss(nn.Module):
    """Cross-entropy plus ``dice_weight`` × multiclass soft Dice (smp's ``DiceLoss``)."""

    def __init__(self, dice_weight: float = 1.0) -> None:
        super().__init__()
        from segmentation_models_pytorch.losses import DiceLoss

        self.dice, self.ce, self.dice_weight = (
            DiceLoss("multiclass", from_logits=True, ignore_index=IGNORE),
            nn.CrossEntropyLoss(ignore_index=IGNORE),
            dice_weight,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


def recipe(
    val_loader: Any, labels: list[str], device: torch.device | str = "cpu", *, dice_weight: float = 1.0
) -> Recipe:
    """Semantic segmentation for :func:`cnnkit.train.loop.fit`: Dice + CE, validation mIoU picks ``best``."""
    criterion = DiceCELoss(dice_weight)

    def loss(model: nn.Module, batch: Any, dev: torch.device) -> Step:
        x, y = batch[0].to(dev), batch[1].to(dev)
        return Step(criterion(model(x), y), len(y))

    return Recipe("segment", loss, lambda m: evaluate(m, val_loader, len(labels), labels, device), score="val_miou")


def config(epochs: int, lr: float, seed: int = 0, **options: Any) -> LoopConfig:
    """The segmentation schedule: AdamW, one-cycle with 10 % warm-up."""
    return LoopConfig(
        epochs=epochs, lr=lr, seed=seed, weight_decay=1e-4, scheduler="onecycle", pct_start=0.1, **options
    )


def _start(
    model: str | None, weights: str | None, arch: str | None, encoder: str | None, num_classes: int
) -> tuple[Any, dict[str, Any], Any]:
    """``(module, arch_kwargs, preprocess)`` with a head of ``num_classes`` outputs."""
    from cnnkit.models.checkpoint import load_state_dict
    from cnnkit.models.loader import resolve
    from cnnkit.tasks.segment.zoo import DEFAULT_ENCODER, SMP_ARCHS, build_smp

    if arch is not None:
        if arch not in SMP_ARCHS:
            raise OptionError("arch", f"finetuning supports {', '.join(SMP_ARCHS)}", arch)
        kwargs: dict[str, Any] = {"arch": arch, "encoder": encoder or DEFAULT_ENCODER}
        state = load_state_dict(weights) if weights else {}
        from cnnkit.models.registry import get_spec

        pre = get_spec(arch, "segment").preprocess
    else:
        loaded = resolve("segment", model, weights)
        kwargs = loaded.meta.get("arch_kwargs") or (loaded.spec.meta.get("arch_kwargs", {}) if loaded.spec else {})
        if not kwargs:
            raise UsageError(f"{loaded.name}: only smp models (unet, unetplusplus, deeplabv3plus) can be finetuned")
        state, pre = loaded.module.state_dict(), loaded.preprocess
    module = build_smp(num_classes, **kwargs)
    own = module.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    dropped = sorted(set(state) - set(fitting))
    if dropped:
        log.info("not loaded (shape differs for %d classes): %s", num_classes, ", ".join(dropped[:4]))
    module.load_state_dict(fitting, strict=False)
    return module, dict(kwargs), pre


DEFAULTS: dict[str, Any] = {"epochs": 10, "batch_size": 8, "workers": 0}  # lr: 1e-3 when unset or 0
RECORDED = ("model", "weights", "arch", "encoder", "epochs", "batch_size", "imgsz", "lr", "seed", "amp")
USED = (*RECORDED, "workers")


def finetune(data: str | None, options: FinetuneOptions) -> dict[str, Any]:
    """Train on ``data`` (``train/`` + ``val/`` image/mask folders); returns best, last, out and metrics.

    ``resume``: a run folder (or a file in it) to continue; ``callbacks`` show progress (else,
    with ``progress``, a log line per epoch).
    """
    from torch.utils.data import DataLoader

    from cnnkit.data.masks import class_names, find_pairs, read_pair, split_dir, usable_pairs
    from cnnkit.device import resolve_device
    from cnnkit.models.preprocess import Preprocess

    options.ignore_others("segment", USED)
    data, options, _ = options.dataset(data, RECORDED, needs_record=False)  # older runs recorded none
    opts = options.filled(**DEFAULTS)
    assert opts.epochs is not None and opts.batch_size is not None and opts.workers is not None  # filled
    batch_size, workers, seed = opts.batch_size, opts.workers, opts.seed
    train_pairs, val_pairs = find_pairs(data, "train"), find_pairs(data, "val")
    if split_dir(data, "train") == split_dir(data, "val"):  # DATA/images + DATA/masks: one folder for both
        log.warning("%s: no val split (train/ and val/); scoring on the training images", data)
    labels = class_names(data, train_pairs)
    train_pairs, val_pairs = usable_pairs(train_pairs, len(labels)), usable_pairs(val_pairs, len(labels))
    if not train_pairs or not val_pairs:
        raise CnnkitError(f"{data}: no usable {'train' if not train_pairs else 'val'} image/mask pairs left")
    torch.manual_seed(seed)
    module, arch_kwargs, base_pre = _start(opts.model, opts.weights, opts.arch, opts.encoder, len(labels))
    size = int(opts.imgsz or (base_pre.crop if base_pre else 256))
    pre = (
        Preprocess(resize=size, crop=size, mean=base_pre.mean, std=base_pre.std)
        if base_pre
        else Preprocess(resize=size, crop=size)
    )
    folder = opts.run_folder("segment")

    def dataset(pairs: list, train: bool) -> PairDataset:
        return PairDataset(
            lambda i: read_pair(pairs[i][0], pairs[i][1], classes=len(labels)),
            len(pairs),
            transforms(size, train, pre.mean, pre.std),
            seed,
        )

    train_loader = seeded_loader(
        dataset(train_pairs, True), batch_size, seed=seed, workers=workers, drop_last=len(train_pairs) > batch_size
    )
    val_loader = DataLoader(
        dataset(val_pairs, False),
        batch_size=batch_size,
        num_workers=workers,
        worker_init_fn=worker_init if workers else None,
    )
    name = f"{arch_kwargs['arch']}-{arch_kwargs['encoder']}-finetuned"
    meta = {
        "task": "segment",
        "arch": "smp",
        "arch_kwargs": arch_kwargs,
        "name": name,
        "labels": labels,
        "preprocess": pre.to_dict(),
        "data": str(data),
        "base": opts.weights or opts.model or opts.arch,
        "finetune": opts.record(data, RECORDED),
    }
    dev = resolve_device(opts.device)
    cfg = config(opts.epochs, opts.lr or 1e-3, seed, amp=opts.amp)
    history = fit(
        module, train_loader, recipe(val_loader, labels, dev), cfg, folder, meta, dev, callbacks=opts.reporter(log)
    )
    best = max(history, key=lambda r: r["val_miou"]) if history else {}
    metrics = {
        "best_val_miou": best.get("val_miou"),
        "best_epoch": best.get("epoch"),
        "last": history[-1] if history else {},
    }
    return run_result(folder, metrics)
