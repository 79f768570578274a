"""Every command-line option that more than one command takes, declared once.

One name, one meaning, one help text in every command (a test checks): ``--output/-o`` is the
file a command writes, ``--save-dir`` the folder, ``--format/-f`` a record format only,
``-k`` only ``--topk``, ``--workers`` the parallel image loaders. Commands do not paste these
blocks: :func:`compose` builds a command's parameters from the shared :data:`Group` s plus the
command's own options, and :func:`renamed` keeps an old spelling working as a hidden alias that
warns once. Environment variables come through Typer's ``envvar=``; the config file fills in
what neither flag nor environment gave (``cnnkit.config.resolve``).

Only Typer is imported here: ``cnnkit --help`` must not load torch.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Annotated, Any, Optional, TypeVar, Union, get_args, get_origin

import typer

from cnnkit.config import MAX_BATCH_SIZE, MAX_IMGSZ, MAX_THREADS, MAX_WORKERS
from cnnkit.io import DEFAULT_MAX_PIXELS
from cnnkit.tasks import TASK_NAMES

log = logging.getLogger("cnnkit")

PANEL_IO = "Input and output"
PANEL_MODEL = "Model"
PANEL_RUN = "Runtime"
PANEL_TRAIN = "Training"
PANEL_DATA = "Data"
PANEL_SCALE = "More than one machine"


def _bounded(key: str) -> Callable[[Optional[int]], Optional[int]]:
    """A flag checked by :func:`cnnkit.config.check`, the bounds its variable and config key share
    (one error shape for all three, instead of Typer's box)."""

    def check(value: Optional[int]) -> Optional[int]:
        from cnnkit.config import check

        return value if value is None else check(key, value)

    return check


# -- the options ----------------------------------------------------------------------------------
Sources = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Image or video files, folders, quoted globs, a webcam index (0), URLs (s3://, gs://, "
        "http(s)://, file://: objects, prefixes, globs; rtsp:// streams), or - to read paths from "
        "stdin.",
        show_default=False,
    ),
]
ImageSources = Annotated[  # explain reads image files (it maps one picture at a time), not video or streams
    Optional[list[str]],
    typer.Argument(
        help="Image files, folders, quoted globs, image URLs (s3://, http(s)://, file://), or - to read paths "
        "from stdin (not video).",
        show_default=False,
    ),
]
Model = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        rich_help_panel=PANEL_MODEL,
        help="Registry model name (see `cnnkit models`) or a local model file; detect also takes ultralytics "
        "names and files (yolov8n.pt, yolo11n.pt, …).",
    ),
]
Weights = Annotated[
    Optional[str],
    typer.Option(
        "--weights",
        "-w",
        rich_help_panel=PANEL_MODEL,
        help="Weights for --model: a `cnnkit finetune` checkpoint (.safetensors), a state dict (.pt/.pth), an "
        "ultralytics .pt (detect), or (to predict and validate with, not to fine-tune) a .onnx/.torchscript from "
        "`cnnkit export`.",
    ),
]
_BACKEND_HELP = (
    "auto, torch, onnxruntime, openvino or torchscript \\[default: auto, or $CNNKIT_BACKEND]. auto: on a CPU, the "
    "model compiled once for OpenVINO or ONNX Runtime, checked against PyTorch and cached (else PyTorch); a "
    "runtime name forces it. A .onnx/.torchscript file from `cnnkit export` runs on its own runtime."
)
# $CNNKIT_BACKEND is read by the library (cnnkit.runtimes.default_backend), not by Typer: an exported
# --weights file keeps its runtime whatever the environment's default says.
Backend = Annotated[Optional[str], typer.Option("--backend", rich_help_panel=PANEL_MODEL, help=_BACKEND_HELP)]
Backends = Annotated[Optional[list[str]], typer.Option("--backend", rich_help_panel=PANEL_MODEL, help=_BACKEND_HELP)]
Task = Annotated[
    Optional[str],
    typer.Option(
        "--task",
        "-t",
        help=f"{', '.join(TASK_NAMES[:-1])} or {TASK_NAMES[-1]} (models: only that task's; export: "
        "the task of a file that does not say it; finetune: default classify, or a resumed run's own; explain: classify or detect, "
        "default classify).",
    ),
]
TopK = Annotated[
    int, typer.Option("--topk", "-k", min=1, help="How many labels per image.", rich_help_panel=PANEL_MODEL)
]
Imgsz = Annotated[
    Optional[int],
    typer.Option(
        "--imgsz",
        min=8,
        max=MAX_IMGSZ,
        rich_help_panel=PANEL_MODEL,
        help="Image side in pixels: the model's input (default: the model's own size; detect: else 640), or the "
        "side of the images `cnnkit data` makes.",
    ),
]
Classes = Annotated[
    Optional[list[str]],
    typer.Option(
        "--classes",
        rich_help_panel=PANEL_MODEL,
        help="Keep only these classes (ids or names; repeat or comma-separate).",
    ),
]
Conf = Annotated[
    float,
    typer.Option(
        "--conf", min=0.0, max=1.0, rich_help_panel=PANEL_MODEL, help="Minimum score of a kept box or instance."
    ),
]
Iou = Annotated[
    Optional[float],
    typer.Option(
        "--iou",
        min=0.0,
        max=1.0,
        help="IoU threshold of non-maximum suppression \\[default: 0.7 for YOLO, as ultralytics; a torchvision detector's own, 0.5; track: the model's own for tracking].",
        rich_help_panel=PANEL_MODEL,
    ),
]
AgnosticNms = Annotated[
    bool,
    typer.Option(
        "--agnostic-nms/--class-nms",
        rich_help_panel=PANEL_MODEL,
        help="Suppress overlapping boxes whatever their classes, so an object scored as two classes gives one box "
        "(--class-nms: only within each class).",
    ),
]
MaxDet = Annotated[
    int,
    typer.Option(
        "--max-det", min=1, rich_help_panel=PANEL_MODEL, help="At most this many boxes or instances per image."
    ),
]
Arch = Annotated[
    Optional[str],
    typer.Option(
        "--arch",
        rich_help_panel=PANEL_MODEL,
        help="Segmentation architecture: unet, unetplusplus, deeplabv3plus (smp, random init unless --weights), "
        "deeplabv3 or lraspp (torchvision VOC weights).",
    ),
]
Encoder = Annotated[
    Optional[str],
    typer.Option(
        "--encoder",
        rich_help_panel=PANEL_MODEL,
        help="smp encoder for --arch (e.g. resnet34, mobilenet_v2); for deeplabv3: resnet50, resnet101, "
        "mobilenet_v3_large.",
    ),
]

BatchSize = Annotated[
    Optional[int],
    typer.Option(
        "--batch-size",
        "-b",
        envvar="CNNKIT_BATCH_SIZE",
        callback=_bounded("batch_size"),
        rich_help_panel=PANEL_RUN,
        help=f"Images per forward pass (finetune: per training step and process), 1 to {MAX_BATCH_SIZE}.",
    ),
]
Workers = Annotated[
    Optional[int],
    typer.Option(
        "--workers",
        envvar="CNNKIT_WORKERS",
        callback=_bounded("workers"),
        rich_help_panel=PANEL_RUN,
        help="Parallel image loaders: decode threads in predict and val, DataLoader processes in finetune "
        f"(0: one image at a time in the main process; at most {MAX_WORKERS}).",
    ),
]
Device = Annotated[
    Optional[str],
    typer.Option(
        "--device",
        "-d",
        envvar="CNNKIT_DEVICE",
        rich_help_panel=PANEL_RUN,
        help="auto, cpu, cuda, cuda:N or mps \\[default: auto].",
    ),
]
Half = Annotated[bool, typer.Option("--half", help="fp16 inference (CUDA only).", rich_help_panel=PANEL_RUN)]
Threads = Annotated[
    Optional[int],
    typer.Option(
        "--threads",
        min=1,
        max=MAX_THREADS,
        rich_help_panel=PANEL_RUN,
        help="torch intra-op threads (default: torch's choice).",
    ),
]

Format = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        envvar="CNNKIT_FORMAT",
        rich_help_panel=PANEL_IO,
        help="Record format: auto (a table on a terminal; else JSON Lines for predictions, JSON for reports; "
        "or by the output file's suffix), table or json; predict also jsonl, csv, parquet, coco (detect, "
        "instance) and mot (track: MOT Challenge rows of one video).",
    ),
]
Output = Annotated[
    Optional[str],
    typer.Option(
        "--output",
        "-o",
        rich_help_panel=PANEL_IO,
        help="File to write: the records or the report (- or none: stdout), or the one file the command makes "
        "(a model, a picture: the description says where it goes by default).",
    ),
]
Save = Annotated[
    Optional[bool],
    typer.Option(
        "--save/--no-save",
        rich_help_panel=PANEL_IO,
        show_default=False,
        help="Write annotated pictures to runs/<task>/exp, exp2, … (default: on with --save-dir).",
    ),
]
SaveDir = Annotated[
    Optional[str],
    typer.Option(
        "--save-dir",
        rich_help_panel=PANEL_IO,
        help="Folder for what the command saves: annotated pictures, val plots and metrics, a finetune run "
        "\\[default: runs/<task>/exp, exp2, …; val: runs/<task>/val, val2, …; finetune: runs/<task>/train, train2, …].",
    ),
]
ExistOk = Annotated[
    bool,
    typer.Option(
        "--exist-ok",
        rich_help_panel=PANEL_IO,
        help="Allow writing into or over an output folder or file that already exists.",
    ),
]
Recursive = Annotated[
    bool, typer.Option("--recursive", "-r", help="Descend into sub-folders.", rich_help_panel=PANEL_IO)
]
Shard = Annotated[
    Optional[str],
    typer.Option(
        "--shard", rich_help_panel=PANEL_IO, help="K/N: process only the K-th of N interleaved slices of the inputs."
    ),
]
SkipExisting = Annotated[
    bool,
    typer.Option(
        "--skip-existing",
        rich_help_panel=PANEL_IO,
        help="Resume: skip inputs already recorded in the --output JSON Lines or Parquet file and append.",
    ),
]
MaxPixels = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        min=1,
        rich_help_panel=PANEL_IO,
        help="Refuse images with more pixels (decompression-bomb guard).",
    ),
]

Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        envvar="CNNKIT_ENGINE",
        rich_help_panel=PANEL_SCALE,
        help="local (this process) or ray (a Ray Data actor pool on a cluster; pip install 'cnnkit\\[ray]').",
    ),
]
Address = Annotated[
    Optional[str],
    typer.Option(
        "--address",
        rich_help_panel=PANEL_SCALE,
        help="With --engine ray: auto (the cluster this machine belongs to) or HOST:PORT of a Ray head "
        "\\[default: Ray on this machine only].",
    ),
]
Actors = Annotated[
    int,
    typer.Option(
        "--actors",
        min=1,
        rich_help_panel=PANEL_SCALE,
        help="With --engine ray: actors in the pool, each holding the model once.",
    ),
]
GpusPerActor = Annotated[
    float,
    typer.Option(
        "--gpus-per-actor",
        min=0.0,
        rich_help_panel=PANEL_SCALE,
        help="With --engine ray: GPUs per actor (a fraction shares a GPU).",
    ),
]
CpusPerActor = Annotated[
    float,
    typer.Option(
        "--cpus-per-actor",
        min=0.01,
        rich_help_panel=PANEL_SCALE,
        help="With --engine ray: CPUs per actor (also its torch threads).",
    ),
]
Parts = Annotated[
    bool,
    typer.Option(
        "--parts",
        rich_help_panel=PANEL_SCALE,
        help="With --engine ray: the workers write Parquet part files into the --output folder (the driver holds "
        "no records) instead of one merged file.",
    ),
]
VidStride = Annotated[
    int,
    typer.Option(
        "--vid-stride",
        min=1,
        rich_help_panel=PANEL_IO,
        help="Videos: read every N-th frame (the annotated video's rate is divided by N).",
    ),
]
Start = Annotated[
    Optional[float], typer.Option("--start", min=0.0, rich_help_panel=PANEL_IO, help="Videos: first second to read.")
]
End = Annotated[
    Optional[float], typer.Option("--end", min=0.0, rich_help_panel=PANEL_IO, help="Videos: stop before this second.")
]
MaxFrames = Annotated[
    Optional[int],
    typer.Option(
        "--max-frames", min=1, rich_help_panel=PANEL_IO, help="Videos: read at most this many frames of each."
    ),
]

Split = Annotated[
    str, typer.Option("--split", rich_help_panel=PANEL_DATA, help="Which split of DATA to score: val, test or train.")
]
ValSplit = Annotated[
    Optional[float],
    typer.Option(
        "--val-split",
        min=0.0,
        max=0.9,
        rich_help_panel=PANEL_DATA,
        help="Share of the images held out for validation when DATA has no val split (finetune's default: 0.2).",
    ),
]
Seed = Annotated[
    Optional[int],
    typer.Option(
        "--seed",
        min=0,
        rich_help_panel=PANEL_DATA,
        help="Random seed: the same seed gives the same split, data order, augmentation, initial weights and "
        "synthetic scenes.",
    ),
]

Layers = Annotated[
    Optional[list[str]],
    typer.Option(
        "--layer",
        "-l",
        help="Layer name from `cnnkit summary` (features: repeatable, default the last layer of each stage; "
        "filters: one Conv2d, default the first; explain: the layer to map, default the last Conv2d, for YOLO "
        "the layers feeding its head).",
    ),
]
Report = Annotated[
    Optional[str],
    typer.Option(
        "--report",
        rich_help_panel=PANEL_IO,
        help="Also write a self-contained HTML report of the run to this file (gallery, per-class counts, scores, "
        "failures; val: metrics, confusion matrix, precision-recall curves, worst images).",
    ),
]
Assets = Annotated[
    str,
    typer.Option(
        "--assets",
        rich_help_panel=PANEL_IO,
        help="Where a report keeps its thumbnails: auto (inside the page up to 2,000 images, else in a folder "
        "beside it), embed or folder.",
    ),
]
Target = Annotated[
    Optional[str],
    typer.Option(
        "--target",
        rich_help_panel=PANEL_MODEL,
        help="Explain this class (a label or class id) instead of the predicted one.",
    ),
]
Methods = Annotated[
    Optional[list[str]],
    typer.Option(
        "--method",
        rich_help_panel=PANEL_MODEL,
        help="Class-activation method, repeatable: gradcam, gradcam++, xgradcam, layercam, hirescam, eigencam "
        "\\[default: gradcam and gradcam++].",
    ),
]
Cell = Annotated[int, typer.Option("--cell", min=8, max=512, help="Pixel size of each map or kernel in the grid.")]

# `cnnkit export --int8` and `cnnkit benchmark`
Int8 = Annotated[
    bool,
    typer.Option(
        "--int8", help="Quantize to INT8 (ONNX Runtime static quantization; classify and segment); needs --calibrate."
    ),
]
Calibrate = Annotated[
    Optional[str],
    typer.Option("--calibrate", help="Folder of images (100 or more) whose activations set the INT8 ranges."),
]
ValData = Annotated[
    Optional[str],
    typer.Option(
        "--val", help="Labelled data to score fp32 and INT8 on (classify: class folders; segment: image/mask pairs)."
    ),
]
MaxDrop = Annotated[
    float,
    typer.Option(
        "--max-drop",
        min=0.0,
        max=100.0,
        help="Refuse to write an INT8 model that loses more points on --val (1 point = 0.01 of top-1 or mIoU).",
    ),
]
BenchData = Annotated[
    Optional[str],
    typer.Option(
        "--data",
        rich_help_panel=PANEL_DATA,
        help="Labelled data to time on and score (classify: class folders, top-1; detect: data.yaml, mAP50; segment: "
        "image/mask pairs, mIoU) \\[default: synthetic 640×480 JPEGs, no score].",
    ),
]
BenchImages = Annotated[
    int,
    typer.Option(
        "--images", min=1, max=100_000, rich_help_panel=PANEL_DATA, help="How many images to time end to end."
    ),
]
Seconds = Annotated[
    float,
    typer.Option(
        "--seconds",
        min=0.1,
        max=600.0,
        rich_help_panel=PANEL_RUN,
        help="How long to repeat the forward-only measurement.",
    ),
]


# -- groups and how commands are built from them ----------------------------------------------------
Group = tuple[inspect.Parameter, ...]


def group(**params: tuple[Any, Any]) -> Group:
    """Named parameters ``name=(Alias, default)`` in the order a command's help lists them."""
    return tuple(
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=alias, default=default)
        for name, (alias, default) in params.items()
    )


MODEL = group(model=(Model, None), weights=(Weights, None))
BACKEND = group(backend=(Backend, None))
RUN = group(batch_size=(BatchSize, 16), workers=(Workers, 2), device=(Device, None), threads=(Threads, None))
HALF = group(half=(Half, False))
PREDICT_IO = group(
    fmt=(Format, "auto"),
    output=(Output, None),
    save=(Save, None),
    save_dir=(SaveDir, None),
    exist_ok=(ExistOk, False),
    recursive=(Recursive, False),
    shard=(Shard, None),
    skip_existing=(SkipExisting, False),
    max_pixels=(MaxPixels, DEFAULT_MAX_PIXELS),
    report=(Report, None),
    vid_stride=(VidStride, 1),
    start=(Start, None),
    end=(End, None),
    max_frames=(MaxFrames, None),
)
ENGINE = group(
    engine=(Engine, "local"),
    address=(Address, None),
    actors=(Actors, 1),
    gpus_per_actor=(GpusPerActor, 0.0),
    cpus_per_actor=(CpusPerActor, 1.0),
    parts=(Parts, False),
)
BOXES = group(conf=(Conf, 0.25), max_det=(MaxDet, 300))  # detect and instance: which boxes are kept
SPLIT = group(split=(Split, "val"))
REPORT_IO = group(fmt=(Format, "auto"), output=(Output, None), exist_ok=(ExistOk, False), report=(Report, None))


class _Own(tuple[()]):
    """The place of a command's own options among the groups given to :func:`compose`."""


OWN: Group = _Own()

F = TypeVar("F", bound=Callable[..., Any])


def _resolved(func: Callable[..., Any]) -> inspect.Signature:
    """``func``'s signature with string annotations (``from __future__ import annotations``) evaluated."""
    return inspect.signature(func, eval_str=True)


def _is_context(param: inspect.Parameter) -> bool:
    """Whether Typer fills this parameter with the click context (as it does by annotation)."""
    return isinstance(param.annotation, type) and issubclass(param.annotation, typer.Context)


def _with_signature(func: Callable[..., Any], call: Callable[..., Any], params: list[inspect.Parameter]) -> Any:
    """``call`` dressed as ``func`` with ``params`` as the signature Typer reads."""
    wrapper: Any = functools.wraps(func)(call)
    del wrapper.__wrapped__  # Typer must see the composed signature, not the original one
    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def compose(*parts: Group, **defaults: Any) -> Callable[[F], F]:
    """Build a command's parameters from shared groups and the command's own.

    The decorated function declares ``ctx`` (optional), its own arguments and options, and
    ``**shared``: it is called with its own parameters by name and every group's in ``shared``.
    ``parts`` lists the groups in help order, with :data:`OWN` where the command's own options
    go (its arguments always come first); ``defaults`` overrides a group's default by name
    (``batch_size=8``).
    """

    def decorate(func: F) -> F:
        sig = _resolved(func)
        own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        ctx = [p for p in own if _is_context(p)]
        arguments = [
            p
            for p in own
            if p not in ctx
            and any(type(a).__name__ == "ArgumentInfo" for a in getattr(p.annotation, "__metadata__", ()))
        ]
        options = [p for p in own if p not in ctx and p not in arguments]
        body: list[inspect.Parameter] = []
        for part in parts:
            body += options if isinstance(part, _Own) else list(part)
        shared_names = {p.name for part in parts for p in part}
        unknown = set(defaults) - shared_names
        if unknown:
            raise TypeError(f"compose: no shared parameter {', '.join(sorted(unknown))}")
        body = [p.replace(default=defaults[p.name]) if p.name in defaults else p for p in body]
        # Typer calls back by keyword: every parameter is keyword-only, so defaults may come in any order.
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in [*ctx, *arguments, *body]]

        def call(**kwargs: Any) -> Any:  # own parameters by name, the groups' into ``**shared``
            return func(**kwargs)

        return _with_signature(func, call, params)

    return decorate


def _flags(info: Any) -> list[str]:
    """An option's spellings; in ``Annotated`` Typer keeps the first one in ``default``."""
    first = [info.default] if isinstance(info.default, str) and info.default.startswith("-") else []
    return [*first, *(info.param_decls or ())]


def _option_of(annotation: Any) -> tuple[Any, Any]:
    """``(type, OptionInfo)`` of an ``Annotated[type, typer.Option(...)]`` parameter."""
    base, *meta = get_args(annotation)
    info = next(m for m in meta if type(m).__name__ == "OptionInfo")
    return base, info


def _optional(base: Any) -> Any:
    """``Optional[base]``: an alias left unset is ``None`` whatever the new option's default."""
    if get_origin(base) is Union and type(None) in get_args(base):
        return base
    return Optional[base]


def renamed(**old: str | tuple[str, ...]) -> Callable[[F], F]:
    """Keep old spellings of renamed options working: ``@renamed(output="--out")``.

    Each old spelling becomes a hidden option of the same type and bounds; using it logs
    ``--out is renamed --output`` once and fills the new parameter. Giving both is a usage error.
    """

    def decorate(func: F) -> F:
        sig = _resolved(func)
        params = list(sig.parameters.values())
        ctx_name = next((p.name for p in params if _is_context(p)), None)
        hidden: dict[str, tuple[str, str, str]] = {}  # alias parameter → (new parameter, old flag, new flag)
        extra: list[inspect.Parameter] = []
        if ctx_name is None:
            ctx_name = "_renamed_ctx"
            extra.append(inspect.Parameter(ctx_name, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
        for new, spellings in old.items():
            decls = (spellings,) if isinstance(spellings, str) else spellings
            base, info = _option_of(sig.parameters[new].annotation)
            option = typer.Option(*decls, hidden=True, min=info.min, max=info.max)
            name = f"_renamed_{new}"
            extra.append(
                inspect.Parameter(
                    name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[_optional(base), option]
                )
            )
            hidden[name] = (new, decls[0], _flags(info)[0])
        wanted = {p.name for p in params}

        def call(**kwargs: Any) -> Any:
            ctx = kwargs[ctx_name]
            for name, (new, old_flag, new_flag) in hidden.items():
                value = kwargs.pop(name)
                if value is None:
                    continue
                if flagged(ctx, new):
                    from cnnkit.errors import UsageError

                    raise UsageError(f"{old_flag} is the old name of {new_flag}: give one of them")
                log.warning("%s is renamed %s", old_flag, new_flag)
                kwargs[new] = ctx.params[new] = value  # as if given by its new name: for code reading ctx.params,
                source = ctx.get_parameter_source(new)  # and for `given` (checks of what was set), in the enum of
                if source is not None:  # the click typer runs on (its own copy, not click.core's)
                    ctx.set_parameter_source(new, type(source).COMMANDLINE)
            return func(**{k: v for k, v in kwargs.items() if k in wanted})

        return _with_signature(func, call, [*params, *extra])

    return decorate


def flagged(ctx: typer.Context, name: str) -> bool:
    """Whether the user set ``name`` by its flag on the command line (not by environment or default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user set ``name`` by flag or environment (not left at its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def view_format(ctx: typer.Context, fmt: str, allowed: tuple[str, ...] = ("auto", "table", "json")) -> str:
    """``fmt`` for a command that prints a report or a view; ``CNNKIT_FORMAT=jsonl`` (set for
    predictions) falls back to ``auto`` here instead of failing every other command."""
    source = ctx.get_parameter_source("fmt")
    if fmt not in allowed and source is not None and source.name == "ENVIRONMENT":
        return "auto"
    return fmt
