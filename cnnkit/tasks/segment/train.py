"""``cnnkit finetune --task segment``: train an smp segmenter on image/mask folder pairs.

The starting point is a cnnkit checkpoint (``weights=X.safetensors``), a registry
model (default ``shapes-unet``; its head is resized to the data's classes) or a fresh
``arch``/``encoder``. Training is :func:`cnnkit.train.segmenter.fit` (Dice + CE,
joint image/mask augmentation, per-epoch mIoU, resumable), so ``best.safetensors``
loads with ``cnnkit segment --weights`` together with its class names.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cnnkit.errors import UsageError

log = logging.getLogger("cnnkit.train")


def _start(model: str | None, weights: str | None, arch: str | None, encoder: str | None,
           num_classes: int) -> tuple[Any, dict[str, Any], Any]:
    """``(module, arch_kwargs, preprocess)`` with a head of ``num_classes`` outputs."""
    from cnnkit.models.checkpoint import load_state_dict
    from cnnkit.models.loader import resolve
    from cnnkit.tasks.segment.zoo import DEFAULT_ENCODER, SMP_ARCHS, build_smp

    if arch is not None:
        if arch not in SMP_ARCHS:
            raise UsageError(f"--arch {arch!r}: finetuning supports {', '.join(SMP_ARCHS)}")
        kwargs = {"arch": arch, "encoder": encoder or DEFAULT_ENCODER}
        state = load_state_dict(weights) if weights else {}
        from cnnkit.models.registry import get_spec

        pre = get_spec(arch, "segment").preprocess
    else:
        loaded = resolve("segment", model, weights)
        kwargs = loaded.meta.get("arch_kwargs") or (loaded.spec.meta.get("arch_kwargs") if loaded.spec else None)
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


def finetune(
    data: str, *, model: str | None = None, weights: str | None = None, arch: str | None = None,
    encoder: str | None = None, epochs: int = 10, batch_size: int = 8, imgsz: int | None = None,
    lr: float | None = None, device: str | None = None, out: str | None = None, exist_ok: bool = False,
    seed: int = 0, workers: int = 0, resume: str | None = None, progress: bool = True, **ignored: Any,
) -> dict[str, Any]:
    """Train on ``data`` (``train/`` + ``val/`` image/mask folders); returns best, last, out and metrics."""
    import torch
    from torch.utils.data import DataLoader

    from cnnkit.data.masks import class_names, find_pairs, read_pair
    from cnnkit.device import resolve_device
    from cnnkit.io.files import explicit_dir, increment_dir
    from cnnkit.models.preprocess import Preprocess
    from cnnkit.train.segmenter import PairDataset, SegTrainConfig, fit, transforms

    train_pairs, val_pairs = find_pairs(data, "train"), find_pairs(data, "val")
    labels = class_names(data, train_pairs)
    torch.manual_seed(seed)
    module, arch_kwargs, base_pre = _start(model, weights, arch, encoder, len(labels))
    size = int(imgsz or (base_pre.crop if base_pre else 256))
    pre = Preprocess(resize=size, crop=size, mean=base_pre.mean, std=base_pre.std) if base_pre else \
        Preprocess(resize=size, crop=size)
    if resume:
        folder = Path(resume).parent if Path(resume).is_file() else Path(resume)
    elif out:
        folder = explicit_dir(out, exist_ok=exist_ok)
    else:
        folder = increment_dir(Path("runs") / "finetune" / "segment" / "exp", exist_ok=exist_ok)

    def dataset(pairs: list, train: bool) -> PairDataset:
        return PairDataset(lambda i: read_pair(*pairs[i]), len(pairs), transforms(size, train, pre.mean, pre.std))

    g = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(dataset(train_pairs, True), batch_size=batch_size, shuffle=True, generator=g,
                              num_workers=workers, drop_last=len(train_pairs) > batch_size)
    val_loader = DataLoader(dataset(val_pairs, False), batch_size=batch_size, num_workers=workers)
    name = f"{arch_kwargs['arch']}-{arch_kwargs['encoder']}-finetuned"
    meta = {"task": "segment", "arch": "smp", "arch_kwargs": arch_kwargs, "name": name, "labels": labels,
            "preprocess": pre.to_dict(), "data": str(data), "base": weights or model or arch}
    cfg = SegTrainConfig(epochs=epochs, lr=lr or 1e-3, seed=seed)
    report = (lambda r: log.info("epoch %(epoch)d loss %(train_loss).4f val mIoU %(val_miou).4f", r)) if progress else None
    history = fit(module, train_loader, val_loader, cfg, folder, meta, device=resolve_device(device), on_epoch=report)
    best = max(history, key=lambda r: r["val_miou"]) if history else {}
    return {"best": str(folder / "best.safetensors"), "last": str(folder / "last.pt"), "out": str(folder),
            "metrics": {"best_val_miou": best.get("val_miou"), "best_epoch": best.get("epoch"),
                        "last": history[-1] if history else {}}}
