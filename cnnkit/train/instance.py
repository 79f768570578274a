"""A resumable, step-based Mask R-CNN training loop with COCO evaluation.

Used by ``scripts/train_shapes_maskrcnn.py`` (scenes generated on the fly) and by
``cnnkit finetune --task instance`` (a COCO-format folder). Every ``ckpt_every``
steps it writes ``last.pt`` (model, optimiser, step, history; read back with
``weights_only=True``) atomically; every ``eval_every`` steps it scores mask AP on
held-out images and keeps ``best.safetensors`` with labels and metrics inside.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data.shapes import Scene
from cnnkit.eval.coco import CocoResults, evaluate
from cnnkit.io.files import atomic_write_bytes, atomic_write_text
from cnnkit.models.checkpoint import load_training_state, restoring, save_checkpoint
from cnnkit.models.preprocess import image_tensor
from cnnkit.records import Record
from cnnkit.tasks.instance.post import encode_rle, to_predictions

log = logging.getLogger("cnnkit.train")

Sample = tuple[torch.Tensor, dict[str, torch.Tensor]]


@dataclass
class StepConfig:
    steps: int = 2000
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    eval_every: int = 200
    ckpt_every: int = 100
    clip: float = 10.0
    seed: int = 0
    half_checkpoint: bool = False


def make_target(boxes: Sequence[Sequence[float]], class_ids: Sequence[int], masks: Sequence[np.ndarray],
                hw: tuple[int, int]) -> dict[str, torch.Tensor]:
    """torchvision's target dict; labels are ``class_id + 1`` (0 is background)."""
    h, w = hw
    return {
        "boxes": torch.tensor(np.asarray(boxes, np.float32).reshape(-1, 4)),
        "labels": torch.tensor([c + 1 for c in class_ids], dtype=torch.int64),
        "masks": torch.from_numpy(np.stack(masks).astype(np.uint8)) if len(masks) else torch.zeros(0, h, w, dtype=torch.uint8),
    }


def scene_sample(sc: Scene) -> Sample:
    objs = sc.objects
    return image_tensor(sc.image), make_target([o.box for o in objs], [o.class_id for o in objs],
                                               [o.mask for o in objs], sc.image.shape[:2])


def scenes_to_coco(scenes: Sequence[Scene], labels: Sequence[str]) -> dict[str, Any]:
    """Ground truth of ``scenes`` as a COCO dict; image ``i`` has id ``i + 1`` and file name ``str(i)``."""
    gt: dict[str, Any] = {"images": [], "annotations": [],
                          "categories": [{"id": i + 1, "name": n} for i, n in enumerate(labels)]}
    for i, sc in enumerate(scenes):
        h, w = sc.image.shape[:2]
        gt["images"].append({"id": i + 1, "file_name": str(i), "width": w, "height": h})
        for o in sc.objects:
            x1, y1, x2, y2 = o.box
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": o.class_id + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": int(o.mask.sum()), "iscrowd": 0,
                "segmentation": encode_rle(o.mask),
            })
    return gt


def evaluate_model(
    model: torch.nn.Module, images: Sequence[np.ndarray], gt: dict[str, Any], labels: Sequence[str],
    *, conf: float = 0.05, batch_size: int = 4, device: Any = "cpu",
) -> dict[str, float]:
    """bbox and segm AP/AP50/AP75 of ``model`` on ``images`` (ids ``1..n`` in ``gt``)."""
    was_training = model.training
    model.eval()
    coco = CocoResults(image_ids={str(i): i + 1 for i in range(len(images))})
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            outputs = model([image_tensor(im).to(device) for im in chunk])
            for j, out in enumerate(outputs):
                preds = to_predictions(out, list(labels), conf=conf, max_det=100)
                coco.add(Record(path=str(start + j), task="instance", model="", predictions=preds))
    if was_training:
        train_mode(model)
    metrics: dict[str, float] = {}
    for iou_type, prefix in (("bbox", "box"), ("segm", "mask")):
        res = evaluate(gt, coco.results(), iou_type)
        metrics.update({f"{prefix}_AP": res["AP"], f"{prefix}_AP50": res["AP50"], f"{prefix}_AP75": res["AP75"]})
    return metrics


def train_mode(model: torch.nn.Module) -> None:
    """``model.train()``, except batch norms whose parameters are frozen keep their statistics (eval)."""
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def _lr_factor(step: int, cfg: StepConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def train_steps(
    model: torch.nn.Module,
    batch_at: Callable[[int], list[Sample]],
    cfg: StepConfig,
    out_dir: str | Path,
    meta: dict[str, Any],
    evaluate_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    params: Sequence[torch.nn.Parameter] | None = None,
    on_eval: Callable[[dict[str, Any]], None] | None = None,
    score_key: str = "mask_AP50",
    device: Any = "cpu",
) -> list[dict[str, Any]]:
    """Train for ``cfg.steps`` steps, batch ``batch_at(step)``; resumes from ``out_dir/last.pt``.

    ``batch_at`` is a pure function of the step, so a resumed run sees the same data
    it would have seen; returns the evaluation history.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    trainable = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, cfg))
    start, best, history = 0, -1.0, []
    last = out / "last.pt"
    if last.exists():
        state = load_training_state(last)
        with restoring(last):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start, best, history = int(state["step"]), float(state["best"]), json.loads(state["history"])
            if not (isinstance(history, list) and all(isinstance(row, dict) for row in history)):
                raise ValueError("its history is not a list of evaluation rows")
        log.info("resumed from %s at step %d", last, start)
    train_mode(model)
    t0, running = time.perf_counter(), {}
    for step in range(start, cfg.steps):
        images, targets = zip(*batch_at(step))
        losses = model([im.to(device) for im in images],
                       [{k: v.to(device) for k, v in t.items()} for t in targets])
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip:
            torch.nn.utils.clip_grad_norm_(trainable, cfg.clip)
        optimizer.step()
        scheduler.step()
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        done = step + 1
        if done % 20 == 0 or done == cfg.steps:
            n = 20 if done % 20 == 0 else done % 20
            log.info("step %d/%d loss %.3f (%s) lr %.2e %.2fs/step", done, cfg.steps, sum(running.values()) / n,
                     " ".join(f"{k[5:]}={v / n:.3f}" for k, v in running.items()), scheduler.get_last_lr()[0],
                     (time.perf_counter() - t0) / n)
            running, t0 = {}, time.perf_counter()
        if evaluate_fn is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
            row = {"step": done, **evaluate_fn(model), "lr": scheduler.get_last_lr()[0]}
            history.append(row)
            log.info("eval %s", " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            if row[score_key] > best:
                best = row[score_key]
                save_checkpoint(out / "best.safetensors", model,
                                {**meta, "metrics": row, "train": asdict(cfg)}, half=cfg.half_checkpoint)
            atomic_write_text(out / "history.json", json.dumps(history, indent=1) + "\n")
            if on_eval:
                on_eval(row)
        if done % cfg.ckpt_every == 0 or done == cfg.steps:
            buf = io.BytesIO()
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "step": done, "best": best,
                        "history": json.dumps(history)}, buf)
            atomic_write_bytes(last, buf.getvalue())
    if evaluate_fn is None:
        save_checkpoint(out / "best.safetensors", model, {**meta, "train": asdict(cfg)}, half=cfg.half_checkpoint)
    return history
