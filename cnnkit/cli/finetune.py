"""``cnnkit finetune``: train a model on your own data; one command for every task.

The command parses options and calls :func:`cnnkit.api.finetune`, which dispatches to
the task's trainer (its row in ``cnnkit.tasks.TASKS``). Options the user leaves out are passed
as ``None`` so each trainer applies its own defaults. Works under
``torchrun --nproc-per-node N -m cnnkit finetune ...`` (DistributedDataParallel).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o
from cnnkit.cli.options import PANEL_DATA, PANEL_TRAIN

if TYPE_CHECKING:
    from cnnkit.train.loop import Callbacks


def _option(*flags: str, help: str, panel: str = PANEL_TRAIN, **more: Any) -> Any:
    """An option of this command only, on its help panel (shared ones are in :mod:`cnnkit.cli.options`)."""
    return typer.Option(*flags, help=help, rich_help_panel=panel, **more)


Data = Annotated[
    Optional[str],
    typer.Argument(
        help="Dataset: classify DATA/<class>/* or DATA/{train,val}/<class>/*; detect data.yaml; segment/instance as their docs say.",
        show_default=False,
    ),
]
Pretrained = Annotated[
    Optional[bool],
    _option(
        "--pretrained/--no-pretrained",
        help="Start from the model's trained weights (ImageNet or bundled) \\[default: pretrained].",
        panel=o.PANEL_MODEL,
        show_default=False,
    ),
]
_FREEZE_HELP = "backbone, none, or N: train only the head and the last N blocks \\[classify default: none]."
Freeze = Annotated[Optional[str], _option("--freeze", help=_FREEZE_HELP, panel=o.PANEL_MODEL)]
UnfreezeAt = Annotated[
    Optional[int],
    _option(
        "--unfreeze-at", help="classify: from this epoch on, train the frozen parts too.", panel=o.PANEL_MODEL, min=1
    ),
]
Epochs = Annotated[Optional[int], _option("--epochs", "-e", help="Number of epochs.", min=1)]
Lr = Annotated[Optional[float], _option("--lr", help="Peak learning rate (a positive number).")]
Optimizer = Annotated[Optional[str], _option("--optimizer", help="adamw or sgd (classify).")]
Scheduler = Annotated[Optional[str], _option("--scheduler", help="cosine, step, onecycle or none (classify).")]
Warmup = Annotated[Optional[float], _option("--warmup", help="Epochs of linear learning-rate warm-up.", min=0.0)]
LabelSmoothing = Annotated[
    Optional[float], _option("--label-smoothing", help="Cross-entropy label smoothing.", min=0.0, max=0.99)
]
EarlyStopping = Annotated[
    Optional[int], _option("--early-stopping", help="Stop after this many epochs without a better val top-1.", min=1)
]
Amp = Annotated[
    Optional[bool], _option("--amp", help="Mixed precision (fp16 on CUDA, bf16 on CPU).", show_default=False)
]
Augment = Annotated[Optional[str], _option("--augment", help="light, strong or none (classify).", panel=PANEL_DATA)]
Resume = Annotated[
    Optional[str],
    _option("--resume", help="Continue an interrupted run: its folder or its last checkpoint.", panel=o.PANEL_IO),
]


@o.renamed(save_dir="--out")
def finetune(
    ctx: typer.Context,
    data: Data = None,
    task: o.Task = None,
    model: o.Model = None,
    pretrained: Pretrained = None,
    weights: o.Weights = None,
    arch: o.Arch = None,
    encoder: o.Encoder = None,
    freeze: Freeze = None,
    unfreeze_at: UnfreezeAt = None,
    epochs: Epochs = None,
    batch_size: o.BatchSize = None,
    lr: Lr = None,
    optimizer: Optimizer = None,
    scheduler: Scheduler = None,
    warmup: Warmup = None,
    label_smoothing: LabelSmoothing = None,
    early_stopping: EarlyStopping = None,
    amp: Amp = None,
    seed: o.Seed = None,
    augment: Augment = None,
    imgsz: o.Imgsz = None,
    val_split: o.ValSplit = None,
    workers: o.Workers = None,
    device: o.Device = None,
    threads: o.Threads = None,
    resume: Resume = None,
    save_dir: o.SaveDir = None,
    exist_ok: o.ExistOk = False,
) -> None:
    """Fine-tune a model on your data; prints {best, last, out, metrics} as JSON on stdout.

    classify: replaces the head for DATA's classes, optionally freezes the backbone, and writes
    best/last checkpoints, metrics.csv, curves.png and confusion_matrix.png into the run folder.

    Ctrl-C saves a resumable checkpoint; --resume continues it (classify, segment: to the same result; detect: from the
    start of the interrupted epoch). The run folder is
    --save-dir (default: runs/TASK/train, train2, …).
    """
    from cnnkit import api
    from cnnkit.config import lookup
    from cnnkit.train.options import FinetuneOptions

    quiet = c.state(ctx)["quiet"]
    # Every parameter named as a FinetuneOptions field is that option (None: not given).
    options = {k: v for k, v in ctx.params.items() if k in FinetuneOptions.names()}
    # flag > environment (Typer) > config file > the trainer's own default
    options["batch_size"] = batch_size if batch_size is not None else lookup("batch_size").value
    options["workers"] = workers if workers is not None else lookup("workers").value
    out = options["out"] = save_dir
    display = TrainDisplay(not quiet and os.environ.get("RANK", "0") == "0")
    try:
        with display:
            result = api.finetune(
                data,
                task=task,
                progress=not quiet,
                callbacks=display.callbacks(),
                **options,
            )
    except KeyboardInterrupt as exc:
        from cnnkit.errors import Interrupted  # torch-free: the interrupt may have come during torch's import

        if isinstance(exc, Interrupted):
            typer.echo(f"interrupted; resume with --resume {exc.out}", err=True)
        elif out is not None and not Path(out).exists():  # a start interrupted before it saved, its folder removed
            typer.echo("interrupted before the run saved anything; nothing to resume", err=True)
        else:
            typer.echo(f"interrupted; resume with --resume {out or 'RUN_DIR'} if it saved a checkpoint", err=True)
        raise typer.Exit(c.EXIT_INTERRUPTED) from None
    except ValueError as exc:
        from cnnkit.errors import UsageError

        raise UsageError(str(exc)) from exc
    if result is not None and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        typer.echo(json.dumps(result, default=str))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Work is done and the process group destroyed; gloo's C++ threads can still abort the
        # interpreter's finalisation (SIGABRT, "terminate called without an active exception"),
        # so a torchrun worker leaves without it.
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(0)


class TrainDisplay:
    """The training progress on stderr: a rich bar per epoch and one line per finished epoch.

    It is the :class:`cnnkit.train.loop.Callbacks` the CLI hands to every task's trainer;
    training code itself prints nothing.
    """

    def __init__(self, enabled: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.enabled = enabled
        self.console = c.stderr_console()
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=not enabled or not self.console.is_terminal,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.task: Any = None
        self.epochs = 0

    def __enter__(self) -> TrainDisplay:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def epoch_start(self, epoch: int, epochs: int, batches: int) -> None:
        """A fresh progress bar for the epoch's batches."""
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.epochs = epochs
        self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=batches)

    def batch(self, samples: int, loss: float) -> None:
        """One batch done: the bar moves on."""
        if self.task is not None:
            self.progress.advance(self.task)

    def epoch_end(self, row: dict[str, Any]) -> None:
        """The epoch's one-line summary on stderr, which stays when the bar goes."""
        if self.enabled:
            self.console.print(epoch_line(row, self.epochs), highlight=False, markup=False)

    def callbacks(self) -> Callbacks:
        """This display as the training loop's callbacks."""
        from cnnkit.train.loop import Callbacks

        return Callbacks(epoch_start=self.epoch_start, batch=self.batch, epoch_end=self.epoch_end)


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """``epoch   3/10  train loss 0.1234 acc 0.9  val loss ... acc ...  lr 1.0e-03  2.1s 480 img/s``."""

    def group(prefix: str) -> str:
        parts = [
            f"{k[len(prefix) :]} {v:.4f}" if isinstance(v, float) else f"{k[len(prefix) :]} {v}"
            for k, v in row.items()
            if k.startswith(prefix)
        ]
        return f"{prefix[:-1]} " + " ".join(parts) if parts else ""

    total = f"/{epochs}" if epochs else ""
    parts = [f"epoch {row['epoch']:>3}{total}", group("train_"), group("val_")]
    if "lr" in row:
        parts.append(f"lr {row['lr']:.2e}")
    if "seconds" in row:
        rate = row.get("images_per_s")
        speed = "" if rate is None else f" {rate:.1f} img/s" if rate < 10 else f" {rate:.0f} img/s"  # not "0 img/s"
        parts.append(f"{row['seconds']:.1f}s{speed}")
    return "  ".join(p for p in parts if p)
