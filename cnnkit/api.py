"""The Python API: one function per task, the same options as the CLI.

    >>> import cnnkit
    >>> records = cnnkit.classify("samples/shape_0_triangle.png", topk=1)
    >>> records[0].predictions[0]["label"]
    'triangle'
    >>> predictor = cnnkit.load("classify", topk=2)
    >>> [len(r.predictions) for r in predictor(["samples/shape_1_circle.png", "samples/missing.png"])]
    [2, 0]

The CLI commands are thin wrappers over these functions; a predictor from
:func:`load` keeps its weights loaded across calls.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from cnnkit.records import Record, records_to_frame

if TYPE_CHECKING:
    from cnnkit.engine import Predictor

__all__ = ["classify", "detect", "finetune", "instance", "load", "records_to_frame", "segment", "track"]

_RUN_KEYS = (
    "batch_size",
    "workers",
    "recursive",
    "shard_spec",
    "max_pixels",
    "save_dir",
    "skip",
    "vid_stride",
    "start",
    "end",
    "max_frames",
    "keep_pictures",
)
RUN_OPTIONS = {*_RUN_KEYS, "shard", "stream"} - {"shard_spec"}  # as a caller spells them


def load(task: str, **options: Any) -> Predictor:
    """A reusable predictor for ``task`` (``classify`` …); options as for the task function."""
    from cnnkit.checks import check_load
    from cnnkit.config import lookup
    from cnnkit.errors import OptionError
    from cnnkit.tasks import TASKS

    if not isinstance(task, str) or task not in TASKS:
        raise OptionError("task", f"expected one of {', '.join(TASKS)}", task)
    _check_names(TASKS[task].predictor, options, task)
    check_load(options)
    if options.get("model") is None and options.get("weights") is None:
        options["model"] = lookup(f"model.{task}").value
    if options.get("device") is None:
        options["device"] = lookup("device").value
    return TASKS[task].predictor.load(**options)


def _check_names(predictor: Any, options: dict[str, Any], task: str) -> None:
    """An option the task does not take is an :class:`OptionError` naming it, not a TypeError naming a method.

    The names are every ``load`` keyword along the predictor's classes (a tracker's ``load`` passes the rest to
    the detector's) and the ``load_options`` a predictor takes through ``**``."""
    import inspect

    from cnnkit.errors import OptionError

    names: set[str] = set(getattr(predictor, "load_options", ()))
    for klass in predictor.__mro__:
        load = klass.__dict__.get("load")
        if load is not None:
            params = inspect.signature(getattr(load, "__func__", load)).parameters.values()
            names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    names -= {"cls", "self"}
    for name in options:
        if name not in names:
            raise OptionError(
                name,
                f"not an option of {task} (model options: {', '.join(sorted(names))}; run options, for the task "
                f"function or stream(): {', '.join(sorted(RUN_OPTIONS))})",
                options[name],
            )


def _split(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The load and run options of a task function, the run options checked before a model loads."""
    from cnnkit.checks import check_run
    from cnnkit.io.decode import DEFAULT_MAX_PIXELS

    if "shard" in options:
        options["shard_spec"] = options.pop("shard")
    run = {k: options.pop(k) for k in _RUN_KEYS if k in options}
    flags = {k: run[k] for k in ("recursive", "keep_pictures", "save_dir", "skip") if k in run}
    check_run(run.get("batch_size", 8), run.get("workers", 2), run.get("max_pixels", DEFAULT_MAX_PIXELS), **flags)
    from cnnkit.io.sources import parse_shard
    from cnnkit.io.video import VideoOptions

    VideoOptions(**{k: run[k] for k in ("vid_stride", "start", "end", "max_frames") if k in run})
    if run.get("shard_spec") is not None:
        parse_shard(run["shard_spec"])
    return options, run


def classify(sources: Any, *, stream: bool = False, **options: Any) -> list[Record] | Iterator[Record]:
    """Top-k labels for each image in ``sources`` (paths, folders, globs, PIL images, arrays, tensors).

    Options: ``model``, ``weights``, ``backend`` (default ``auto``: on a CPU the model compiled once to
    OpenVINO or ONNX Runtime, verified and cached; ``torch`` for eager PyTorch; ``onnxruntime``, ``openvino``
    or ``torchscript`` forced; an exported ``.onnx``/``.torchscript`` runs on its own runtime), ``topk``, ``imgsz``
    (the preprocessing rescaled to it), ``device``, ``half``, ``threads``,
    ``batch_size``, ``workers``, ``recursive``, ``shard``, ``save_dir``, ``max_pixels``, and for video
    files and streams ``vid_stride``, ``start``/``end`` (seconds) and ``max_frames``: one record per frame.
    ``stream=True`` returns an iterator, for inputs too many to hold.
    """
    load_opts, run_opts = _split(dict(options))
    records = load("classify", **load_opts).stream(sources, **run_opts)
    return records if stream else list(records)


def detect(sources: Any, *, stream: bool = False, **options: Any) -> list[Record] | Iterator[Record]:
    """Boxes ``{label, class_id, score, box: [x1, y1, x2, y2]}`` (original pixels) for each image.

    Options: ``model`` (default the bundled ``shapes-yolov8n``; ultralytics names/``.pt`` files,
    ``fasterrcnn_*``), ``weights`` (also a ``.onnx`` from ``cnnkit export <yolo>``), ``backend``,
    ``conf``, ``iou``, ``agnostic_nms``, ``imgsz``, ``classes``, ``max_det``, ``device``, ``half``, ``threads``
    and the run options of :func:`classify`.

    >>> [p["label"] for p in detect("samples/scene_0.png")[0].predictions]
    ['star']
    """
    load_opts, run_opts = _split(dict(options))
    records = load("detect", **load_opts).stream(sources, **run_opts)
    return records if stream else list(records)


def segment(sources: Any, *, stream: bool = False, **options: Any) -> list[Record] | Iterator[Record]:
    """Classes present (``{label, class_id, pixels, fraction}``) for each image in ``sources``.

    Options: ``model``, ``weights`` (also a ``.onnx`` from ``cnnkit export``), ``backend``, ``arch``,
    ``encoder``, ``imgsz``, ``tile``, ``overlap``, ``classes`` (ids or names; other pixels become background
    in the records, masks and overlays), ``device``, ``half``, ``threads`` and the run options of :func:`classify`; with
    ``save_dir`` each record also names its ``mask`` and ``overlay`` PNGs.
    """
    load_opts, run_opts = _split(dict(options))
    records = load("segment", **load_opts).stream(sources, **run_opts)
    return records if stream else list(records)


def instance(sources: Any, *, stream: bool = False, **options: Any) -> list[Record] | Iterator[Record]:
    """Instances (label, class_id, score, box, COCO RLE mask) in each image of ``sources``.

    Options: ``model``, ``weights``, ``conf``, ``mask_threshold``, ``max_det``, ``classes`` (ids or names:
    only those instances, in records, pictures and masks), ``save_masks``
    (with ``save_dir``), ``device``, ``half``, ``threads``, ``batch_size``, ``workers``,
    ``recursive``, ``shard``, ``save_dir``, ``max_pixels``.

    >>> found = instance("samples/scene_0.png")[0].predictions
    >>> [(p["label"], sorted(p["mask"])) for p in found]
    [('star', ['counts', 'size'])]
    """
    load_opts, run_opts = _split(dict(options))
    records = load("instance", **load_opts).stream(sources, **run_opts)
    return records if stream else list(records)


def track(sources: Any, *, stream: bool = False, **options: Any) -> list[Record] | Iterator[Record]:
    """Boxes with a ``track_id`` that stays with one object through a video: one record per frame
    (``frame``, ``time_s``), as :func:`detect` plus tracking.

    Options: those of :func:`detect` (``conf`` defaults to 0.1, as in ``yolo track``; ``iou`` to the model's
    own for tracking; ``model`` may also be an instance segmentation model, whose masks stay on its tracks), ``tracker`` (``bytetrack``, ``botsort`` or an ultralytics tracker yaml; default the
    model's own), ``count_line`` (``"x1,y1,x2,y2"``) or ``count_region`` (``"x1,y1,x2,y2,x3,y3,…"``, a polygon
    counted into and out of): each record gets the running ``counts``, and for videos ``vid_stride``, ``start``, ``end``,
    ``max_frames``. :func:`cnnkit.tasks.track.summary.summarise` turns the records into per-track rows.
    Frames handed over one at a time go to a tracker kept between calls, ``cnnkit.load("track", persist=True)``.
    """
    if options.get("persist"):  # this call loads a tracker of its own, gone when it returns
        from cnnkit.errors import OptionError

        raise OptionError("persist", 'keeps tracks on a tracker kept between calls: cnnkit.load("track", persist=True)')
    load_opts, run_opts = _split(dict(options))
    records = load("track", **load_opts).stream(sources, **run_opts)
    return records if stream else list(records)


def finetune(data: str | None, *, task: str | None = None, **options: Any) -> dict[str, Any]:
    """Train a model for ``task`` on ``data``; returns paths of the best/last checkpoints and metrics.

    ``options`` are the keywords of :class:`cnnkit.train.options.FinetuneOptions`. Options that are
    ``None`` (the CLI's "not given") are dropped, so each trainer's own defaults apply (timm's
    ``create_model`` does the same for command-line kwargs). ``task``: classify unless given, or with ``resume``
    the task that run was trained for.
    """
    from cnnkit.config import lookup
    from cnnkit.errors import OptionError, printable
    from cnnkit.tasks import TASKS
    from cnnkit.train.options import FinetuneOptions, run_task

    recorded = run_task(options["resume"]) if isinstance(options.get("resume"), (str, os.PathLike)) else None
    if task is None:
        task = recorded if recorded in TASKS else "classify"
    elif recorded is not None and recorded != task:
        raise OptionError("task", f"{options['resume']} is a {printable(recorded)} run, not {task}", task)
    if task not in TASKS:
        raise OptionError("task", f"unknown task; expected one of {', '.join(TASKS)}", task)
    if task != "classify" and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        # each torchrun process would train its own copy on all the data, into its own run folder
        raise OptionError("task", "trains in one process; only classify runs under torchrun", task)
    if options.get("device") is None:  # as :func:`load`: the environment's or cnnkit.toml's device
        options["device"] = lookup("device").value
    try:
        return TASKS[task].trainer(data, FinetuneOptions.of(options))
    except BaseException:
        loop = sys.modules.get("cnnkit.train.loop")  # not imported: no run folder was made
        if loop is not None:
            loop.drop_unused_runs()
        raise
