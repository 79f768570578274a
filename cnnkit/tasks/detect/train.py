"""``cnnkit finetune --task detect``: train a YOLO detector on a YOLO-format dataset through ultralytics.

ultralytics does the training (its augmentation, loss and checkpoints); cnnkit picks the
starting weights from its registry, the device through its device layer, keeps
ultralytics offline and quiet (its bars and logs off), restores torch's thread count
after ultralytics changes it, and reports progress through the same
:class:`cnnkit.train.loop.Callbacks` as the other tasks' loop. The run folder follows the
shared rule (``runs/detect/train``, ``train2``, … or ``out``), and the result has the
shared shape ``{best, last, out, metrics}``. The ``best.pt`` it writes loads with
``cnnkit detect --model best.pt``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cnnkit.data import label_cache, undecodable, warn_left_out, yolo_yaml
from cnnkit.errors import CnnkitError, OptionError, UsageError, reason_of
from cnnkit.train.options import FinetuneOptions

log = logging.getLogger("cnnkit")
DEFAULT_MODEL = "shapes-yolov8n"
DATA_COPY = "data.yaml"  # the sanitised dataset yaml in the run folder: what ultralytics reads, also on resume
METRIC_KEYS = {
    "metrics/precision(B)": "precision",
    "metrics/recall(B)": "recall",
    "metrics/mAP50(B)": "mAP50",
    "metrics/mAP50-95(B)": "mAP50-95",
}


def _start(model: str | None, weights: str | None) -> tuple[str, int | None]:
    """The file or name ultralytics starts from, and the image size it was trained at (if known)."""

    if weights is not None:
        if not Path(weights).is_file():
            raise OptionError("weights", "no such file", weights)
        return weights, None
    name = model or DEFAULT_MODEL
    if Path(name).is_file() or name.endswith(".yaml"):
        return name, None
    from cnnkit.models.loader import resolve
    from cnnkit.models.registry import find_spec

    entry = find_spec(name, "detect")  # a registry detector that is not YOLO is refused before any download
    loaded = resolve("detect", name) if entry is None or entry.family == "yolo" else None
    if loaded is None or loaded.runtime != "ultralytics":
        raise OptionError(
            "model",
            "detection fine-tuning trains YOLO models (ultralytics); pick one of "
            "shapes-yolov8n, yolov8n.pt, yolo11n.pt or a .yaml/.pt file",
            name,
        )
    spec = loaded.spec
    return loaded.meta["where"], spec.meta.get("imgsz") if spec is not None else None


def _drop_unstarted(folder: Path) -> None:
    """A run folder this process made that holds no checkpoint yet (a start that failed) goes with what
    ultralytics put in it, so the same folder can be named again."""
    import shutil

    from cnnkit.train import loop

    if folder.resolve() in loop._NEW_RUNS and not any(folder.rglob("*.pt")):
        shutil.rmtree(folder, ignore_errors=True)


def _resume_from(resume: str | bool, out: str | None) -> Path:
    """The ``last.pt`` to continue: ``resume`` as a run folder or checkpoint, else ``out``, else the newest run."""
    if isinstance(resume, (str, Path)) and not isinstance(resume, bool):
        path = Path(resume)
        last = path / "weights" / "last.pt" if path.is_dir() else path
    elif out:
        last = Path(out) / "weights" / "last.pt"
    else:
        runs = sorted(Path("runs/detect").glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise OptionError("resume", "no runs/detect/*/weights/last.pt to continue; name the run folder")
        last = runs[-1]
    if not last.is_file():
        raise OptionError("resume", f"no {last} to continue from")
    return last


def _resume_data(ds: yolo_yaml.DatasetYaml | None, last: Path) -> Path:
    """The sanitised dataset yaml a resumed run reads: from DATA if given, else the run's own copy, re-checked."""
    run = last.parent.parent if last.parent.name == "weights" else last.parent
    if ds is None:
        if not (run / DATA_COPY).is_file():
            raise OptionError("resume", f"{run} has no {DATA_COPY} written by cnnkit; pass the dataset yaml as DATA")
        ds = yolo_yaml.read(run / DATA_COPY)
    elif (run / DATA_COPY).is_file():  # as every task's resume: the run goes on with the data it started on
        started = yolo_yaml.read(run / DATA_COPY).root
        if started.resolve() != ds.root.resolve():
            raise OptionError("resume", f"the run was trained on {started}, not {ds.root}")
    return yolo_yaml.write_sanitised(ds, run.resolve() / DATA_COPY)


class _Progress:
    """ultralytics' trainer callbacks translated into cnnkit's :class:`~cnnkit.train.loop.Callbacks`."""

    def __init__(self, callbacks: Any) -> None:
        self.cb = callbacks

    def on_train_epoch_start(self, trainer: Any) -> None:
        if self.cb.epoch_start:
            self.cb.epoch_start(trainer.epoch + 1, trainer.epochs, len(trainer.train_loader))

    def on_train_batch_end(self, trainer: Any) -> None:
        if self.cb.batch:
            self.cb.batch(int(trainer.batch_size), _loss(getattr(trainer, "tloss", None)))

    def on_fit_epoch_end(self, trainer: Any) -> None:
        m = trainer.metrics or {}
        if "metrics/mAP50(B)" not in m or not self.cb.epoch_end or trainer.epoch + 1 > trainer.epochs:
            return  # the last call re-validates best.pt after the final epoch
        row: dict[str, Any] = {"epoch": trainer.epoch + 1, "train_loss": _loss(getattr(trainer, "tloss", None))}
        row.update({f"val_{name}": float(m[key]) for key, name in METRIC_KEYS.items() if key in m})
        lr = getattr(trainer, "lr", None) or {}
        if lr:
            row["lr"] = float(next(iter(lr.values())))
        self.cb.epoch_end(row)

    def attach(self, yolo: Any) -> None:
        for event in ("on_train_epoch_start", "on_train_batch_end", "on_fit_epoch_end"):
            yolo.add_callback(event, getattr(self, event))


def _loss(tloss: Any) -> float:
    """ultralytics' running mean loss (a tensor of its parts, or a dict) as one number."""
    values = tloss.values() if isinstance(tloss, dict) else [] if tloss is None else tloss
    return float(sum(float(v.sum()) if hasattr(v, "sum") else float(v) for v in values))


USED = ("model", "weights", "epochs", "batch_size", "imgsz", "lr", "seed", "workers", "amp")


def check_labels(ds: yolo_yaml.DatasetYaml, limit: int = 10) -> int:
    """Warn, naming each file (and line), about the images and label files ultralytics would leave out of
    training and val without a word (it drops an image that does not decode, and a corrupt label with its
    image); returns how many there are."""
    left_out = 0
    for split in ("train", "val"):
        images = list(yolo_yaml.split_images(ds, split)) if split in ds.splits else []
        bad = []
        for image in images:
            try:
                yolo_yaml.read_labels(yolo_yaml.label_path(image), len(ds.names))
            except CnnkitError as exc:
                bad.append(str(exc))
        reasons = [reason for reason in undecodable([str(image) for image in images]) if reason]
        of = "training" if split == "train" else "val"
        warn_left_out(reasons, "image(s)", limit, of=of)
        warn_left_out(bad, "label file(s)", limit, of=of)
        left_out += len(bad) + len(reasons)
    return left_out


def finetune(data: str | None, options: FinetuneOptions) -> dict[str, Any]:
    """Train from ``model``/``weights`` (default: the bundled shapes-yolov8n) on the YOLO dataset yaml ``data``.

    Returns ``{"best", "last", "out", "metrics"}`` (metrics: precision, recall, mAP50, mAP50-95
    on the dataset's val split after the last epoch). ``resume`` (a run folder, its ``last.pt``,
    or ``True`` with ``out`` / for the newest run) continues an interrupted run. Options left
    ``None`` take the defaults: 30 epochs, batch 16, seed 0, 0 workers. ``callbacks``
    (:class:`~cnnkit.train.loop.Callbacks`) show progress; else, with ``progress``, a log line per epoch.
    """
    import torch

    from cnnkit import ultralytics_adapter
    from cnnkit.device import resolve_device, set_threads
    from cnnkit.train.loop import Callbacks, run_dir

    options.ignore_others("detect", USED)
    ds = yolo_yaml.read(data) if data is not None else None  # before anything is made or loaded
    set_threads(options.threads)
    n_threads = torch.get_num_threads()
    dev = resolve_device(options.device)
    if options.resume:
        # workers come from the settings too, not only from the user
        given = [f"{k} {getattr(options, k)!r}" for k in options.changed(k for k in USED if k != "workers")]
        if given:  # ultralytics restores the run's own arguments, as every task's resume does
            log.warning("resume continues the run as it was started; not used: %s", ", ".join(given))
        last = _resume_from(options.resume, options.out)
        # ultralytics would otherwise re-read the dataset the checkpoint names (or coco8.yaml)
        yolo, pinned = ultralytics_adapter.resume(last)  # every .pt of the run scanned, its folder pinned
        args: dict[str, Any] = {"resume": True, "data": str(_resume_data(ds, last))}  # once it may go on
        args.update(pinned)
    elif ds is None:
        raise UsageError("no dataset yaml given (make one with `cnnkit data shapes OUT --layout yolo`)")
    else:
        folder = run_dir("detect", options.out, exist_ok=options.exist_ok)
        start, trained_size = _start(options.model, options.weights)
        yolo = ultralytics_adapter.yolo(start)
        if trained_size is None:  # a checkpoint file: the size it was trained at, as ultralytics' train takes it
            own = (getattr(yolo, "overrides", None) or {}).get("imgsz")
            trained_size = own if isinstance(own, int) and not isinstance(own, bool) and own > 0 else None
        clean = yolo_yaml.write_sanitised(ds, folder.resolve() / DATA_COPY)
        check_labels(ds)
        args = dict(
            data=str(clean),
            epochs=options.epochs or 30,
            batch=options.batch_size or 16,
            imgsz=options.imgsz or trained_size or 640,
            device=ultralytics_adapter.device_arg(dev),
            project=str(folder.resolve().parent),
            name=folder.name,
            exist_ok=True,
            seed=options.seed,
            deterministic=True,
            workers=options.workers or 0,
            amp=bool(options.amp),  # off unless asked, as every task (ultralytics' own default is on; CUDA only)
            plots=False,
            verbose=False,
        )
        if options.lr is not None:
            args.update(optimizer="AdamW", lr0=options.lr)
    _Progress(options.reporter(log) or Callbacks()).attach(yolo)
    yolo.add_callback("on_pretrain_routine_end", ultralytics_adapter.restore_threads_callback(n_threads))
    label_cache.install()
    try:
        with ultralytics_adapter.quiet(n_threads):
            yolo.train(**args)
    except RuntimeError as exc:  # ultralytics' refusal of the data ("No valid images found in …") or torch's
        if not options.resume:
            _drop_unstarted(folder)
        raise CnnkitError(f"{data}: training stopped ({reason_of(exc, 200)})") from None
    trainer = yolo.trainer
    metrics = {METRIC_KEYS[k]: float(v) for k, v in (trainer.metrics or {}).items() if k in METRIC_KEYS}
    best = Path(trainer.best) if Path(trainer.best).is_file() else Path(trainer.last)
    return {"best": str(best), "last": str(trainer.last), "out": str(Path(trainer.save_dir)), "metrics": metrics}
