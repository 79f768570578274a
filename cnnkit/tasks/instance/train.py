"""``cnnkit finetune --task instance``: transfer a Mask R-CNN to a COCO-format dataset.

The recipe: load a registry model (or a checkpoint), replace the box and mask
predictor heads with ones sized for the dataset's categories, optionally freeze the
backbone, train with the shared loop :func:`cnnkit.train.loop.fit` and this recipe (the sum
of Mask R-CNN's losses, gradients clipped, warm-up then cosine), score mask AP50 on the val
split each epoch (it picks ``best``), and write ``best.safetensors`` / ``last.safetensors``
with the class names inside, which ``cnnkit instance --weights`` loads.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from cnnkit.data.coco import CocoSplit, read_coco
from cnnkit.errors import CnnkitError, OptionError
from cnnkit.train.loop import LoopConfig, Recipe, Step, StepBatches, fit, run_result
from cnnkit.train.options import FinetuneOptions

log = logging.getLogger("cnnkit.train")

DEFAULT_MODEL = "shapes-maskrcnn"


def evaluate_model(
    model: torch.nn.Module,
    images: Sequence[np.ndarray],
    gt: dict[str, Any],
    labels: Sequence[str],
    *,
    conf: float = 0.05,
    batch_size: int = 4,
    device: Any = "cpu",
) -> dict[str, float]:
    """bbox and segm AP/AP50/AP75 of ``model`` on ``images`` (ids ``1..n`` in ``gt``); leaves it in eval mode."""
    from cnnkit.eval.coco import CocoResults, evaluate
    from cnnkit.models.preprocess import image_tensor
    from cnnkit.records import Record
    from cnnkit.tasks.instance.post import to_predictions

    model.eval()
    coco = CocoResults(image_ids={str(i): i + 1 for i in range(len(images))})
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            outputs = model([image_tensor(im).to(device) for im in chunk])
            for j, out in enumerate(outputs):
                preds = to_predictions(out, list(labels), conf=conf, max_det=100)
                coco.add(Record(path=str(start + j), task="instance", model="", predictions=preds))
    metrics: dict[str, float] = {}
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        res = evaluate(gt, coco.results(), iou_type)
        metrics.update({f"{prefix}_AP": res["AP"], f"{prefix}_AP50": res["AP50"], f"{prefix}_AP75": res["AP75"]})
    return metrics


def recipe(
    images: Sequence[np.ndarray], gt: dict[str, Any], labels: Sequence[str], device: torch.device | str = "cpu"
) -> Recipe:
    """Mask R-CNN for :func:`cnnkit.train.loop.fit`: batches are lists of ``(image, target)``; the
    loss is the sum of the model's losses (each also logged as ``train_loss_*``); mask AP50 picks ``best``."""

    def loss(model: torch.nn.Module, batch: Any, dev: torch.device) -> Step:
        images_, targets = zip(*batch)
        losses = model([im.to(dev) for im in images_], [{k: v.to(dev) for k, v in t.items()} for t in targets])
        n = len(images_)
        return Step(sum(losses.values()), n, {k: float(v.detach()) * n for k, v in losses.items()})

    return Recipe(
        "instance", loss, lambda m: evaluate_model(m, images, gt, labels, device=device), score="val_mask_AP50"
    )


def config(epochs: int, steps_per_epoch: int, lr: float, seed: int = 0, **options: Any) -> LoopConfig:
    """The Mask R-CNN schedule: AdamW, gradients clipped at norm 10, up to 50 warm-up steps, cosine to 2 %."""
    warmup = min(50, steps_per_epoch) / steps_per_epoch
    return LoopConfig(
        epochs=epochs,
        lr=lr,
        seed=seed,
        weight_decay=1e-4,
        scheduler="cosine",
        warmup=warmup,
        lr_floor=0.02,
        clip=10.0,
        **options,
    )


def _sample(ds: CocoSplit, image: dict[str, Any], imgsz: int | None) -> tuple[Any, Any]:
    """One training pair; with ``imgsz`` the image is resized so its longer side is ``imgsz``."""
    from PIL import Image

    from cnnkit.io.decode import decode
    from cnnkit.models.preprocess import image_tensor
    from cnnkit.tasks.instance.data import make_target
    from cnnkit.tasks.instance.post import decode_rle

    rgb = decode(str(ds.image_path(image))).rgb
    h, w = rgb.shape[:2]
    anns = [a for a in ds.annotations_of(image["id"]) if a["category_id"] in ds.cat_ids]
    masks = [_ann_mask(a, h, w, decode_rle) for a in anns]
    boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
    keep = [i for i, b in enumerate(boxes) if b[2] - b[0] >= 1 and b[3] - b[1] >= 1]
    if imgsz and max(h, w) != imgsz:
        s = imgsz / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        masks = [
            np.asarray(Image.fromarray(m.astype(np.uint8)).resize(size, Image.Resampling.NEAREST)) > 0 for m in masks
        ]
        boxes = [[v * s for v in b] for b in boxes]
    class_ids = [ds.cat_ids.index(a["category_id"]) for a in anns]
    return image_tensor(rgb), make_target(
        [boxes[i] for i in keep], [class_ids[i] for i in keep], [masks[i] for i in keep], rgb.shape[:2]
    )


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
    out[int(y) : int(math.ceil(y + bh)), int(x) : int(math.ceil(x + bw))] = True
    return out


def replace_heads(module: Any, num_classes: int) -> None:
    """New box and mask predictors for ``num_classes`` foreground classes (+ background)."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor

    heads = module.roi_heads
    heads.box_predictor = FastRCNNPredictor(heads.box_predictor.cls_score.in_features, num_classes + 1)
    old = heads.mask_predictor
    heads.mask_predictor = MaskRCNNPredictor(old.conv5_mask.in_channels, old.conv5_mask.out_channels, num_classes + 1)


DEFAULTS: dict[str, Any] = {"epochs": 10, "batch_size": 2}  # lr: 2e-4 when unset or 0
USED = ("model", "weights", "pretrained", "freeze", "epochs", "batch_size", "imgsz", "lr", "seed", "amp")


def finetune(data: str | None, options: FinetuneOptions) -> dict[str, Any]:
    """Finetune a Mask R-CNN on ``data`` (COCO format); returns ``{best, last, out, metrics}``.

    ``freeze``: ``None`` trains everything, ``"backbone"`` freezes the backbone body,
    ``"backbone+fpn"`` the FPN as well. ``resume``: a run folder (or its ``last.pt``) to continue.
    ``pretrained=False`` starts from random weights of the same architecture. ``callbacks`` show
    progress (else, with ``progress``, log lines).
    """
    from cnnkit.device import resolve_device
    from cnnkit.models.loader import Loaded, resolve
    from cnnkit.models.registry import get_spec

    options.ignore_others("instance", USED)
    data, options, _ = options.dataset(data, USED, needs_record=False)  # older runs recorded none
    opts = options.filled(**DEFAULTS)
    assert opts.epochs is not None and opts.batch_size is not None  # filled
    model, weights, pretrained, freeze = opts.model, opts.weights, opts.pretrained, opts.freeze
    epochs, batch_size, imgsz, seed = opts.epochs, opts.batch_size, opts.imgsz, opts.seed
    train_ds = _decodable(read_coco(data, "train"), "training")
    val_ds = _val_split(data, train_ds)
    if val_ds is not train_ds:
        val_ds = _decodable(val_ds, "validation")
    if not train_ds.gt["images"]:
        raise CnnkitError(f"{train_ds.annotations}: no training images")
    torch.manual_seed(seed)
    if not pretrained and weights is None:  # the registry architecture alone: nothing to download
        spec = get_spec(model or DEFAULT_MODEL, "instance")
        kwargs = spec.meta.get("arch_kwargs", {})
        loaded = Loaded(
            spec.builder(num_classes=len(train_ds.labels), **kwargs),
            spec.name,
            train_ds.labels,
            None,
            spec,
            {"arch_kwargs": kwargs},
        )
    else:
        loaded = resolve("instance", model, weights)
    net = loaded.module
    if not pretrained and weights is not None:
        kwargs = loaded.meta.get("arch_kwargs") or (loaded.spec.meta.get("arch_kwargs", {}) if loaded.spec else {})
        assert loaded.spec is not None  # an instance model always comes from a registry entry or checkpoint
        net = loaded.spec.builder(num_classes=len(train_ds.labels), **kwargs)
    elif list(loaded.labels) != train_ds.labels:
        replace_heads(net, len(train_ds.labels))
    frozen = _freeze(net, freeze)
    dev = resolve_device(opts.device)
    net.to(dev)
    folder = opts.run_folder("instance")
    images = train_ds.gt["images"]
    steps_per_epoch = max(1, math.ceil(len(images) / batch_size))
    cfg = config(epochs, steps_per_epoch, opts.lr or 2e-4, seed, amp=opts.amp)

    def batch_at(step: int) -> list:
        perm = np.random.default_rng([seed, step // steps_per_epoch]).permutation(len(images))
        k = step % steps_per_epoch
        return [_sample(train_ds, images[i], imgsz) for i in perm[k * batch_size : (k + 1) * batch_size]]

    val_images, gt = _eval_set(val_ds)
    meta = {
        "task": "instance",
        "arch": loaded.spec.family if loaded.spec else loaded.meta.get("arch"),
        "arch_kwargs": loaded.meta.get("arch_kwargs")
        or (loaded.spec.meta.get("arch_kwargs", {}) if loaded.spec else {}),
        "name": f"{loaded.name}-finetuned",
        "labels": train_ds.labels,
        "base": loaded.name,
        "data": str(train_ds.annotations),
        "args": {
            "epochs": epochs,
            "batch_size": batch_size,
            "imgsz": imgsz,
            "lr": cfg.lr,
            "freeze": freeze,
            "seed": seed,
        },
        "finetune": opts.record(data, USED),
    }
    history = fit(
        net,
        StepBatches(batch_at, steps_per_epoch),
        recipe(val_images, gt, train_ds.labels, dev),
        cfg,
        folder,
        meta,
        dev,
        frozen=frozen,
        callbacks=opts.reporter(log, every=20),
    )
    # The result keeps the instance metric names (mask_AP50, box_AP, ..., step) of the last epoch.
    return run_result(folder, {k.removeprefix("val_"): v for k, v in history[-1].items()} if history else {})


def _val_split(data: str, train: CocoSplit) -> CocoSplit:
    try:
        val = read_coco(data, "val")
    except CnnkitError:
        val = train
    if val.annotations == train.annotations:  # none found, or one annotations.json for both
        log.warning("%s: no val split; evaluating on the training images", data)
        return train
    if val.labels != train.labels:
        raise CnnkitError(f"{data}: train and val splits have different categories")
    return val


def _decodable(ds: CocoSplit, of: str) -> CocoSplit:
    """``ds`` without the images that do not decode or are not the size its annotations give, each named in a
    warning (:func:`~cnnkit.data.undecodable`)."""
    from cnnkit.data import undecodable, warn_left_out

    sizes = [
        (im["width"], im["height"]) if isinstance(im.get("width"), int) and isinstance(im.get("height"), int) else None
        for im in ds.gt["images"]
    ]
    reasons = undecodable([str(ds.image_path(image)) for image in ds.gt["images"]], sizes, ds.annotations.name)
    bad = [r for r in reasons if r]
    if not bad:
        return ds
    warn_left_out(bad, "image(s)", of=of)
    keep = [im for im, r in zip(ds.gt["images"], reasons) if r is None]
    ids = {im["id"] for im in keep}
    gt = {**ds.gt, "images": keep, "annotations": [a for a in ds.gt["annotations"] if a["image_id"] in ids]}
    return replace(ds, gt=gt)


def _eval_set(ds: CocoSplit) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Val images and their ground truth renumbered as :func:`evaluate_model` expects.

    Image ``j`` gets id ``j + 1``; category ``cat_ids[i]`` becomes ``i + 1``.
    """
    from cnnkit.io.decode import decode

    ids = {im["id"]: j + 1 for j, im in enumerate(ds.gt["images"])}
    pictures = [decode(str(ds.image_path(im))).rgb for im in ds.gt["images"]]
    gt = {  # sizes from the pictures where an entry gives none: pycocotools draws masks at them
        "images": [
            {"width": pic.shape[1], "height": pic.shape[0], **im, "id": ids[im["id"]]}
            for im, pic in zip(ds.gt["images"], pictures, strict=True)
        ],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(ds.labels)],
        "annotations": [
            {**a, "image_id": ids[a["image_id"]], "category_id": ds.cat_ids.index(a["category_id"]) + 1}
            for a in ds.gt["annotations"]
            if a["image_id"] in ids and a["category_id"] in ds.cat_ids
        ],
    }
    return pictures, gt


def _freeze(module: Any, freeze: str | None) -> list[torch.nn.Module]:
    """Freeze the backbone body (``backbone``) or all the backbone (``backbone+fpn``); returns the frozen parts."""
    if freeze in (None, "", "none"):
        return []
    parts = {"backbone": [module.backbone.body], "backbone+fpn": [module.backbone]}.get(freeze)
    if parts is None:
        raise OptionError("freeze", "use backbone or backbone+fpn", freeze)
    for part in parts:
        part.requires_grad_(False)  # the loop's train_mode() then keeps their batch norms in eval
    return parts
