"""Retrain the bundled ``shapes-yolov8n`` detector from scratch (resumable).

    PYTHONPATH=. nohup python scripts/train_shapes_yolo.py --out work-data/shapes-yolov8n > work-data/shapes-yolov8n.log 2>&1 &
    # run it again with the same --out to resume from last.pt; when done:
    PYTHONPATH=. python scripts/train_shapes_yolo.py --out work-data/shapes-yolov8n --export cnnkit/weights/shapes-yolov8n.pt

YOLOv8n built from ``yolov8n.yaml`` (no pretrained download), 256 px, on
``export_shapes(..., "yolo", n=320, seed=0, val_fraction=0.1)`` (288 train / 32 val):
stage 1, 40 epochs (ultralytics' auto optimizer); stage 2, 25 more epochs from stage 1's best
(AdamW, lr 0.001); stage 3, ``--photo-epochs`` more from stage 2's best on 640 scenes of seed 5
of which half are drawn over crops of scikit-image's photos, with 0–4 shapes each, so photos
without shapes get no boxes; stage 4, ``--video-epochs`` more from stage 3's best on every third frame
of ``--video-sequences`` moving-shape sequences of seed 11 (shapes crossing and half hidden, what the
tracker's detector meets) together with stage 3's training scenes; stage 5, ``--polish-epochs`` on stage 3's
scenes alone from stage 4's best (after stage 4 the detector saw one weak circle in ``samples/chelsea.jpg``;
three epochs on the photo scenes took it away). Each stage resumes from its ``last.pt``.
``--init CKPT --init-stage 4`` runs stages 4 and 5 from CKPT (the stage 3 weights, say). The shipped
stage 6 is stage 4 run again from the stage 5 weights on a new seed without a polish stage:
``--init STAGE5.pt --init-stage 4 --video-seed 12 --polish-epochs 0``.
The test suite checks the shipped weights on scenes from seed 4242, which training never sees.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cnnkit import ultralytics_adapter
from cnnkit.api import finetune
from cnnkit.data.export import export_moving_frames, export_shapes


def export(last: Path, target: Path) -> None:
    """Strip the optimizer from the best checkpoint and copy it to ``target``."""
    ultralytics_adapter.ultralytics()
    from ultralytics.utils.torch_utils import strip_optimizer

    target.parent.mkdir(parents=True, exist_ok=True)
    strip_optimizer(str(last.parent / "best.pt"), s=str(target))
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="work-data/shapes-yolov8n")
    p.add_argument("--n", type=int, default=320)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--stage2-epochs", type=int, default=25, help="then this many more from stage 1's best (0: none)")
    p.add_argument("--stage2-lr", type=float, default=0.001)
    p.add_argument("--photo-epochs", type=int, default=20, help="stage 3 on scenes over real photos (0: none)")
    p.add_argument("--photo-lr", type=float, default=0.0005)
    p.add_argument("--video-epochs", type=int, default=15, help="stage 4 on moving-shape frames (0: none)")
    p.add_argument("--video-lr", type=float, default=0.0005)
    p.add_argument("--video-sequences", type=int, default=80)
    p.add_argument("--video-seed", type=int, default=11, help="seed of stage 4's moving-shape sequences")
    p.add_argument(
        "--video-min-visibility",
        type=float,
        default=0.3,
        help="stage 4 labels a shape when at least this much of it shows (less: it is background)",
    )
    p.add_argument(
        "--video-hidden-every",
        type=int,
        default=0,
        help="stage 4 also takes every this many frames holding a partly hidden shape (0: every third frame only)",
    )
    p.add_argument("--polish-epochs", type=int, default=3, help="stage 5 on stage 3's scenes again (0: none)")
    p.add_argument("--polish-lr", type=float, default=0.0003)
    p.add_argument("--init", type=Path, help="start from this checkpoint at --init-stage (e.g. the bundled one)")
    p.add_argument("--init-stage", type=int, choices=(3, 4), default=3)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--export", type=Path, help="strip the final best.pt and copy it here, then exit")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out).resolve()
    stages = [("run", args.epochs, None, None)]
    if args.stage2_epochs:
        stages.append(("run2", args.stage2_epochs, args.stage2_lr, out / "run" / "weights" / "best.pt"))
    if args.init:
        stages = [("run3", args.photo_epochs, args.photo_lr, args.init.resolve())]
    elif args.photo_epochs:
        stages.append(("run3", args.photo_epochs, args.photo_lr, out / stages[-1][0] / "weights" / "best.pt"))
    if args.init and args.init_stage == 4:
        stages = [("run4", args.video_epochs, args.video_lr, args.init.resolve())]
    elif args.video_epochs:
        stages.append(("run4", args.video_epochs, args.video_lr, out / stages[-1][0] / "weights" / "best.pt"))
    if args.polish_epochs and stages[-1][0] == "run4":
        stages.append(("run5", args.polish_epochs, args.polish_lr, out / "run4" / "weights" / "best.pt"))
    if args.export:
        export(out / stages[-1][0] / "weights" / "last.pt", args.export)
        return
    data, photo_data, video_data = out / "data", out / "data-photos", out / "data-video"
    names = [s[0] for s in stages]
    if "run" in names and not (data / "data.yaml").is_file():
        export_shapes(data, "yolo", n=args.n, seed=0, imgsz=args.imgsz, val_fraction=0.1)
    if {"run3", "run4", "run5"} & set(names) and not (photo_data / "data.yaml").is_file():
        export_shapes(photo_data, "yolo", n=args.n * 2, seed=5, imgsz=args.imgsz, val_fraction=0.1, photo_fraction=0.5)
    if "run4" in names and not (video_data / "data.yaml").is_file():
        export_moving_frames(
            video_data,
            args.video_sequences,
            seed=args.video_seed,
            every=3,
            min_visibility=args.video_min_visibility,
            hidden_every=args.video_hidden_every,
            extra_train=[photo_data / "images" / "train"],
        )
    stage_data = {"run": data, "run2": data, "run3": photo_data, "run4": video_data, "run5": photo_data}
    for name, epochs, lr, start in stages:
        last = out / name / "weights" / "last.pt"
        if (out / name / "weights" / "best.pt").is_file() and not _unfinished(last):
            continue
        result = finetune(
            str(stage_data[name] / "data.yaml"),
            task="detect",
            model="yolov8n.yaml" if start is None else None,
            weights=str(start) if start else None,
            epochs=epochs,
            batch_size=args.batch_size,
            lr=lr,
            imgsz=args.imgsz,
            device="cpu",
            out=str(out / name),
            exist_ok=True,
            seed=0,
            workers=0,
            resume=str(last) if last.is_file() else None,
            progress=False,
            threads=args.threads,
        )
        print(result, flush=True)


def _unfinished(last: Path) -> bool:
    """True while ``last.pt`` still carries an optimizer (ultralytics strips it when a run ends)."""
    if not last.is_file():
        return True
    import torch

    ultralytics_adapter.ultralytics()  # unpickling imports ultralytics classes: go through the adapter
    return torch.load(str(last), map_location="cpu", weights_only=False).get("optimizer") is not None


if __name__ == "__main__":
    main()
