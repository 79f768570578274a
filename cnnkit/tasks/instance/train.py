"""``cnnkit finetune --task instance``: transfer a Mask R-CNN to a COCO-format dataset.

The recipe: load a registry model (or a checkpoint), replace the box and mask
predictor heads with ones sized for the dataset's categories, optionally freeze the
backbone, train with the step loop of :mod:`cnnkit.train.instance` (resumable,
progress on stderr), evaluate mask AP on the val split each epoch, and write
``best.safetensors`` / ``last.safetensors`` with the class names inside, which
``cnnkit instance --weights`` loads.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.coco import CocoSplit, read_coco
from cnnkit.errors import CnnkitError, UsageError

log = logging.getLogger("cnnkit.train")

DEFAULT_MODEL = "shapes-maskrcnn"


def _sample(ds: CocoSplit, image: dict[str, Any], imgsz: int | None) -> tuple[Any, Any]:
    """One training pair; with ``imgsz`` the image is resized so its longer side is ``imgsz``."""
    from PIL import Image

    from cnnkit.io.decode import decode
    from cnnkit.tasks.instance.post import decode_rle
    from cnnkit.train.instance import image_tensor, make_target

    rgb = decode(str(ds.image_path(image))).rgb
    h, w = rgb.shape[:2]
    anns = [a for a in ds.annotations_of(image["id"]) if a["category_id"] in ds.cat_ids]
    masks = [_ann_mask(a, h, w, decode_rle) for a in anns]
    boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
    keep = [i for i, b in enumerate(boxes) if b[2] - b[0] >= 1 and b[3] - b[1] >= 1]
    if imgsz and max(h, w) != imgsz:
        s = imgsz / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
        masks = [np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.NEAREST)) > 0 for m in masks]
        boxes = [[v * s for v in b] for b in boxes]
    class_ids = [ds.cat_ids.index(a["category_id"]) for a in anns]
    return image_tensor(rgb), make_target([boxes[i] for i in keep], [class_ids[i] for i in keep],
                                          [masks[i] for i in keep], rgb.shape[:2])


def _ann_mask(ann: dict[str, Any], h: int, w: int, decode_rle: Any) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        if isinstance(seg.get("counts"), list):
            seg = mask_utils.frPyObjects(seg, h, w)
        return decode_rle(seg)
    if isinstance(seg, list) and seg:
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, h, w))) > 0
    x, y, bw, bh = ann["bbox"]
    out = np.zeros((h, w), bool)
    out[int(y):int(math.ceil(y + bh)), int(x):int(math.ceil(x + bw))] = True
    return out


def replace_heads(module: Any, num_classes: int) -> None:
    """New box and mask predictors for ``num_classes`` foreground classes (+ background)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    heads = module.roi_heads
    heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, num_classes + 1)
    old = heads.mask_predictor
    heads.mask_predictor = MaskRCNNPredictor(old.conv5_mask.in_channels, old.conv5_mask.out_channels, num_classes + 1)


def finetune(
    data: str, *, model: str | None = None, weights: str | None = None, epochs: int = 10, batch_size: int = 2,
    imgsz: int | None = None, lr: float | None = None, device: str | None = None, out: str | None = None,
    exist_ok: bool = False, seed: int = 0, workers: int = 0, resume: str | None = None,
    freeze: str | None = None, pretrained: bool = True, progress: bool = True, **ignored: Any,
) -> dict[str, Any]:
    """Finetune a Mask R-CNN on ``data`` (COCO format); returns ``{best, last, out, metrics}``.

    ``freeze``: ``None`` trains everything, ``"backbone"`` freezes the backbone body,
    ``"backbone+fpn"`` the FPN as well. ``resume``: a run folder (or its ``last.pt``) to continue.
    ``pretrained=False`` starts from random weights of the same architecture.
    """
    import torch

    from cnnkit.cli.common import resolve_save_dir
    from cnnkit.device import resolve_device
    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.models.loader import Loaded
    from cnnkit.models.registry import get_spec
    from cnnkit.models.loader import resolve
    from cnnkit.train.instance import StepConfig, evaluate_model, train_steps

    if ignored:
        log.debug("finetune instance: ignoring %s", ", ".join(sorted(ignored)))
    train_ds = read_coco(data, "train")
    val_ds = _val_split(data, train_ds)
    if not train_ds.gt["images"]:
        raise CnnkitError(f"{train_ds.annotations}: no training images")
    torch.manual_seed(seed)
    if not pretrained and weights is None:  # the registry architecture alone: nothing to download
        spec = get_spec(model or DEFAULT_MODEL, "instance")
        kwargs = spec.meta.get("arch_kwargs", {})
        loaded = Loaded(spec.builder(num_classes=len(train_ds.labels), **kwargs), spec.name, train_ds.labels,
                        None, spec, {"arch_kwargs": kwargs})
    else:
        loaded = resolve("instance", model, weights)
    net = loaded.module
    if not pretrained and weights is not None:
        kwargs = loaded.meta.get("arch_kwargs") or (loaded.spec.meta.get("arch_kwargs", {}) if loaded.spec else {})
        net = loaded.spec.builder(num_classes=len(train_ds.labels), **kwargs)
    elif list(loaded.labels) != train_ds.labels:
        replace_heads(net, len(train_ds.labels))
    _freeze(net, freeze)
    dev = resolve_device(device)
    net.to(dev)
    if resume and Path(resume).is_file():
        resume = str(Path(resume).parent)
    folder = Path(resume) if resume else resolve_save_dir("finetune", True, out, exist_ok)
    images = train_ds.gt["images"]
    steps_per_epoch = max(1, math.ceil(len(images) / batch_size))
    cfg = StepConfig(steps=epochs * steps_per_epoch, lr=lr or 2e-4, warmup=min(50, steps_per_epoch),
                     eval_every=steps_per_epoch, ckpt_every=steps_per_epoch, seed=seed)

    def batch_at(step: int) -> list:
        perm = np.random.default_rng([seed, step // steps_per_epoch]).permutation(len(images))
        k = step % steps_per_epoch
        return [_sample(train_ds, images[i], imgsz) for i in perm[k * batch_size:(k + 1) * batch_size]]

    val_images, gt = _eval_set(val_ds)
    meta = {
        "task": "instance", "arch": loaded.spec.family if loaded.spec else loaded.meta.get("arch"),
        "arch_kwargs": loaded.meta.get("arch_kwargs") or (loaded.spec.meta.get("arch_kwargs", {}) if loaded.spec else {}),
        "name": f"{loaded.name}-finetuned", "labels": train_ds.labels, "base": loaded.name,
        "data": str(train_ds.annotations), "args": {"epochs": epochs, "batch_size": batch_size, "imgsz": imgsz,
                                                    "lr": cfg.lr, "freeze": freeze, "seed": seed},
    }
    if not log.handlers and progress:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    history = train_steps(
        net, batch_at, cfg, folder, meta,
        evaluate_fn=lambda m: evaluate_model(m, val_images, gt, train_ds.labels, device=dev),
        params=[p for p in net.parameters() if p.requires_grad], device=dev,
    )
    last = save_checkpoint(folder / "last.safetensors", net, {**meta, "metrics": history[-1] if history else {}})
    best = folder / "best.safetensors"
    return {"best": str(best if best.exists() else last), "last": str(last), "out": str(folder),
            "metrics": history[-1] if history else {}}


def _val_split(data: str, train: CocoSplit) -> CocoSplit:
    try:
        val = read_coco(data, "val")
    except CnnkitError:
        log.warning("%s: no val split; evaluating on the training images", data)
        return train
    if val.labels != train.labels:
        raise CnnkitError(f"{data}: train and val splits have different categories")
    return val


def _eval_set(ds: CocoSplit) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Val images and their ground truth renumbered as :func:`evaluate_model` expects.

    Image ``j`` gets id ``j + 1``; category ``cat_ids[i]`` becomes ``i + 1``.
    """
    from cnnkit.io.decode import decode

    ids = {im["id"]: j + 1 for j, im in enumerate(ds.gt["images"])}
    gt = {
        "images": [{**im, "id": ids[im["id"]]} for im in ds.gt["images"]],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(ds.labels)],
        "annotations": [{**a, "image_id": ids[a["image_id"]], "category_id": ds.cat_ids.index(a["category_id"]) + 1}
                        for a in ds.gt["annotations"] if a["image_id"] in ids and a["category_id"] in ds.cat_ids],
    }
    return [decode(str(ds.image_path(im))).rgb for im in ds.gt["images"]], gt


def _freeze(module: Any, freeze: str | None) -> None:
    if freeze in (None, "", "none"):
        return
    parts = {"backbone": [module.backbone.body], "backbone+fpn": [module.backbone]}.get(freeze)
    if parts is None:
        raise UsageError(f"--freeze {freeze!r}: use backbone or backbone+fpn")
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(False)  # train_mode() then keeps their batch norms in eval
