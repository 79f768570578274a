"""The options of ``cnnkit finetune``, declared once for every task's recipe.

The CLI and :func:`cnnkit.api.finetune` build one :class:`FinetuneOptions`; each task's
``finetune(data, options)`` reads the options that apply to it and fills the ones left
``None`` with its own defaults (:meth:`FinetuneOptions.filled`). Importing this module
imports neither torch nor a task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError, OptionError, UsageError, reason_of

if TYPE_CHECKING:
    from cnnkit.train.loop import Callbacks

log = logging.getLogger("cnnkit.train")


def resume_dir(resume: str | Path) -> Path:
    """The run folder to continue: ``resume`` itself, or the folder of a checkpoint file in it."""
    path = Path(resume)
    return path.parent if path.is_file() else path


def run_task(resume: str | Path) -> str | None:
    """The task the run folder ``resume`` names (or holds the checkpoint of) was trained for: its ``last.json``'s
    ``task``, or ``detect`` for ultralytics' layout (``weights/last.pt``); ``None`` when it does not say."""
    folder = resume_dir(resume)
    try:
        task = json.loads((folder / "last.json").read_text(encoding="utf-8")).get("task")
    except (OSError, ValueError, AttributeError):
        task = None
    if isinstance(task, str):
        return task
    run = folder.parent if folder.name == "weights" else folder  # a checkpoint of ultralytics' layout given
    return "detect" if (run / "weights" / "last.pt").is_file() else None


@dataclass
class FinetuneOptions:
    """Every fine-tuning option; ``None`` leaves the task's own default (classify-only knobs say so)."""

    # what to start from
    model: str | None = None
    weights: str | None = None
    pretrained: bool = True
    arch: str | None = None  # segment: a fresh smp architecture
    encoder: str | None = None  # segment: its encoder
    freeze: str | None = None
    unfreeze_at: int | None = None  # classify
    # how to train
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str = "adamw"  # classify
    scheduler: str = "cosine"  # classify
    warmup: float = 0.0  # classify
    label_smoothing: float = 0.0  # classify
    early_stopping: int | None = None  # classify
    amp: bool = False
    seed: int = 0
    # data
    augment: str = "light"  # classify
    imgsz: int | None = None
    val_split: float | None = None  # classify (its default: 0.2)
    workers: int | None = None
    # where and how the run goes
    device: str | None = None
    threads: int | None = None
    out: str | None = None
    exist_ok: bool = False
    resume: str | bool | None = None
    progress: bool = True
    callbacks: Callbacks | None = None

    def __post_init__(self) -> None:
        """The numbers a Python caller may get wrong, refused by name before a folder is made or a model loads."""
        from cnnkit.checks import whole
        from cnnkit.config import MAX_IMGSZ

        for name, low in (("epochs", 1), ("batch_size", 1), ("workers", 0), ("threads", 1), ("unfreeze_at", 0)):
            if getattr(self, name) is not None:
                setattr(self, name, whole(name, getattr(self, name), low))
        if self.early_stopping is not None:
            self.early_stopping = whole("early_stopping", self.early_stopping, 1)
        if self.imgsz is not None:
            self.imgsz = whole("imgsz", self.imgsz, 1, MAX_IMGSZ)
        self.seed = whole("seed", self.seed, 0)
        if self.lr is not None and (
            isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr < float("inf")
        ):
            raise OptionError("lr", "must be a positive number", self.lr)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every option's keyword, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> FinetuneOptions:
        """From keywords (the API's): ``None`` is "not given"; an unknown keyword is an error."""
        unknown = sorted(set(options) - set(cls.names()))
        if unknown:
            raise OptionError(tuple(unknown), "not options of fine-tuning")
        return cls(**{k: v for k, v in options.items() if v is not None})

    def filled(self, **defaults: Any) -> FinetuneOptions:
        """A copy in which the options left ``None`` take the task's ``defaults``."""
        return replace(self, **{k: v for k, v in defaults.items() if getattr(self, k) is None})

    def changed(self, names: Iterable[str] | None = None) -> list[str]:
        """The options among ``names`` (default: all) set away from their defaults, in declaration order."""
        wanted = None if names is None else set(names)
        return [
            f.name for f in fields(self) if (wanted is None or f.name in wanted) and getattr(self, f.name) != f.default
        ]

    def ignore_others(self, task: str, used: Iterable[str]) -> None:
        """Warn about the options set away from their defaults that ``task`` does not use (a user who asked for
        `freeze` or `amp` is told, not trained without them in silence)."""
        used = set(used) | _RUN
        unused = sorted(name for name in self.changed() if name not in used)
        if unused:
            log.warning("finetune %s: ignoring %s (this task does not use them)", task, ", ".join(unused))

    def reporter(self, logger: logging.Logger, every: int = 0) -> Callbacks | None:
        """The progress callbacks: those given, else (with ``progress``) a log line per epoch."""
        from cnnkit.train.loop import log_progress

        if self.callbacks is not None:
            return self.callbacks
        return log_progress(logger, every) if self.progress else None

    def record(self, data: str, names: Iterable[str]) -> dict[str, Any]:
        """What a run keeps of its options (``finetune`` in its checkpoints' metadata): ``resume`` needs nothing else."""
        return {"data": data, **{k: getattr(self, k) for k in names}}

    def resumed(
        self, data: str | None, names: Sequence[str], *, needs_record: bool = True
    ) -> tuple[str, FinetuneOptions, dict[str, Any]]:
        """The run ``resume`` names, as it was started: its dataset, its recorded options (``names``) and its
        ``last.json`` metadata.

        Only ``epochs`` may change (the schedule is stretched to the new length); another option given with a
        value of its own is named and not used, as ultralytics' resume does. A folder without a run to
        continue is refused, never trained into. Without ``needs_record`` a run whose ``last.json`` records no
        options (an older cnnkit's) resumes with the options given."""
        if self.resume is True:
            raise OptionError("resume", "name the run folder to continue")
        out = resume_dir(str(self.resume))
        state, sidecar = out / "last.pt", out / "last.json"
        if not state.is_file() or (needs_record and not sidecar.is_file()):
            raise OptionError("resume", f"no last.pt / last.json in {out}; nothing to resume", self.resume)
        meta: Any = None
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else None
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            if needs_record:
                raise CnnkitError(f"{sidecar}: not a readable cnnkit run record ({reason_of(exc, 120)})") from None
        if not (isinstance(meta, dict) and isinstance(meta.get("finetune"), dict)):
            if needs_record:
                raise OptionError("resume", f"{sidecar} was not written by cnnkit finetune", self.resume)
            log.warning("%s: no record of the run's options; resuming with the options given", out)
            if not data:
                raise UsageError("finetune: DATA is required to resume this run (`resume` RUN_DIR records none)")
            return str(Path(data).resolve()), self, {}
        recorded = dict(meta["finetune"])
        unknown = sorted(set(recorded) - {"data", *names})
        if unknown:
            raise CnnkitError(f"{sidecar}: unknown finetune option(s) {', '.join(unknown)[:120]}")
        root = recorded.pop("data", None)
        if not isinstance(root, str):
            raise CnnkitError(f"{sidecar}: its finetune record names no dataset")
        if data and Path(data).resolve() != Path(root).resolve():
            raise OptionError("resume", f"the run was trained on {root}, not {data}")
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        ignored = [
            f"{k} {getattr(self, k)!r}"
            for k, v in recorded.items()
            if k != "epochs" and getattr(self, k) not in (None, defaults.get(k), v)
        ]
        if ignored:
            log.warning("resume continues the run as it was started; not used: %s", ", ".join(ignored))
        opts = replace(self, **recorded)
        if self.epochs and self.epochs != recorded.get("epochs"):
            log.warning(
                "resuming with epochs %d (was %s): the learning-rate schedule is stretched to the new "
                "length, so the result differs from a run started with it",
                self.epochs,
                recorded.get("epochs"),
            )
            opts = replace(opts, epochs=self.epochs)
        return root, opts, meta

    def dataset(
        self, data: str | None, names: Sequence[str], *, needs_record: bool = True
    ) -> tuple[str, FinetuneOptions, dict[str, Any]]:
        """DATA, the options and the resumed run's metadata (``{}`` for a new run): :meth:`resumed` when
        ``resume`` names a run."""
        if self.resume:
            return self.resumed(data, names, needs_record=needs_record)
        if not data:
            raise UsageError("finetune: DATA is required (or `resume` RUN_DIR)")
        return str(Path(data).resolve()), self, {}

    def run_folder(self, task: str) -> Path:
        """The run's folder: the one ``resume`` names, else a new one (``out``, or ``runs/<task>/train…``)."""
        from cnnkit.train.loop import run_dir

        if self.resume is True:
            raise OptionError("resume", "name the run folder to continue")
        if self.resume:
            return resume_dir(self.resume)
        return run_dir(task, self.out, exist_ok=self.exist_ok)


# Options about where and how a run goes: every task takes them, or they come from the settings (`workers`
# from CNNKIT_WORKERS or cnnkit.toml), so none is "ignored".
_RUN = {"device", "threads", "out", "exist_ok", "resume", "progress", "callbacks", "workers"}
