"""The one training loop under ``cnnkit finetune`` (classify, segment, instance) and the retraining scripts.

A task brings a :class:`Recipe` (how one batch gives a loss, how the model is validated, which
validation metric picks ``best``); this module brings everything else, the same for every task:
optimiser and learning-rate schedule, AMP, DistributedDataParallel sums, freezing (BatchNorm of
frozen parts keeps its statistics), resume, graceful stop, and the run folder's files.

A run folder holds ``best``/``last`` checkpoints (``.safetensors`` + ``.json``, which the
predictors load), ``last.pt`` (the resumable state, read back weights-only and checked),
``metrics.csv`` (one row per epoch) and ``curves.png``. Every write is atomic; under
``torchrun`` only rank 0 writes.

Resuming gives the same weights as an uninterrupted run: batches come from a seeded order per
epoch (:class:`ResumableSampler`, or a pure function of the step, :class:`StepBatches`), the
global RNG is reseeded per epoch and saved with the state, so a run stopped mid-epoch continues
on the same batch. SIGINT/SIGTERM finish the current batch, save, and raise :class:`Interrupted`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import signal
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from cnnkit.errors import Interrupted, UsageError
from cnnkit.io.files import atomic_path, atomic_write_bytes, explicit_dir, increment_dir
from cnnkit.models.checkpoint import load_training_state, restoring, save_checkpoint

log = logging.getLogger("cnnkit.train")

OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("onecycle", "cosine", "step", "none")
STATE_FORMAT = "cnnkit.train"  # the ``format`` entry of every last.pt this loop writes
STATE_VERSION = 1
_NOT_PLOTTED = {"epoch", "step", "lr", "seconds", "images_per_s"}


@dataclass
class LoopConfig:
    """How to optimise; task-independent (a recipe's own knobs, e.g. label smoothing, live in the recipe)."""

    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw or sgd (Nesterov, momentum 0.9)
    scheduler: str = "onecycle"  # onecycle, cosine, step (x0.1 per third) or none
    warmup: float = 0.0  # epochs of linear warm-up (cosine, step and none)
    pct_start: float = 0.15  # onecycle: share of the run spent warming up
    lr_floor: float = 0.0  # cosine: the last factor of the learning rate
    clip: float | None = None  # maximal gradient norm
    early_stopping: int | None = None  # epochs without a better score before stopping
    target: float | None = None  # stop once the score reaches it
    amp: bool = False  # fp16 on CUDA (loss scaling), bf16 elsewhere
    seed: int = 0
    unfreeze_at: int | None = None  # epoch (1-based) from which frozen parts train too
    half_checkpoint: bool = False  # store best/last weights in fp16
    checkpoint_every: int | None = None  # also save last.pt every N batches (long epochs)


class Step(NamedTuple):
    """What a recipe's ``loss`` returns for one batch.

    ``loss`` is the mean over the batch's ``n`` samples; ``sums`` are per-batch totals that the
    loop adds up and divides by the samples seen (``{"acc": correct}`` becomes ``train_acc``).
    """

    loss: torch.Tensor
    n: int
    sums: Mapping[str, float] = {}


@dataclass
class Recipe:
    """The task-specific part of training.

    ``loss(model, batch, device)`` runs one forward pass; ``validate(model)`` returns metrics
    (numbers become ``val_<name>`` columns; dicts and lists go into the checkpoint's metrics);
    ``score`` is the row key whose highest value picks ``best``; ``on_best(out, row, val)``
    writes task extras (a confusion matrix) on rank 0 when the score improved.
    """

    task: str
    loss: Callable[[nn.Module, Any, torch.device], Step]
    validate: Callable[[nn.Module], dict[str, Any]]
    score: str
    on_best: Callable[[Path, dict[str, Any], dict[str, Any]], None] | None = None


@dataclass
class Callbacks:
    """Progress hooks (the CLI's display, a script's log): the loop itself prints nothing.

    ``epoch_start(epoch, epochs, batches)``, ``batch(samples, loss)``, ``epoch_end(row)``.
    """

    epoch_start: Callable[[int, int, int], None] | None = None
    batch: Callable[[int, float], None] | None = None
    epoch_end: Callable[[dict[str, Any]], None] | None = None


def log_progress(logger: logging.Logger = log, every: int = 0) -> Callbacks:
    """Callbacks that log one line per epoch and, with ``every``, the mean loss every N batches."""
    state = {"n": 0, "loss": 0.0, "epoch": 0}

    def start(epoch: int, epochs: int, batches: int) -> None:
        state.update(n=0, loss=0.0, epoch=epoch)

    def batch(samples: int, loss: float) -> None:
        state["n"] += 1
        state["loss"] += loss
        if every and state["n"] % every == 0:
            logger.info("epoch %d batch %d loss %.4f", state["epoch"], state["n"], state["loss"] / every)
            state["loss"] = 0.0

    def end(row: dict[str, Any]) -> None:
        logger.info("%s", format_row(row))

    return Callbacks(start, batch if every else None, end)


def format_row(row: Mapping[str, Any]) -> str:
    """``epoch 3 train_loss 0.1234 val_acc 0.9000 ...``: an epoch row as one log line."""
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


# ---------------------------------------------------------------- data order


class ResumableSampler(DistributedSampler):
    """torch's DistributedSampler (one replica when not distributed) that can start mid-epoch."""

    def __init__(self, dataset: Any, *, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class Batches(Protocol):
    """A training set as the loop reads it: ``len`` batches per epoch, any epoch from any batch."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, skip: int) -> Iterable[Any]: ...


class LoaderBatches:
    """A DataLoader as :class:`Batches`: a :class:`ResumableSampler` starts mid-epoch exactly;
    another sampler's first batches are drawn and dropped (exact only for a fixed order)."""

    def __init__(self, loader: DataLoader) -> None:
        self.loader = loader
        try:  # taken now: a resumed epoch shortens the sampler until the next one starts
            self.n = len(loader)
        except TypeError:
            self.n = 1

    def __len__(self) -> int:
        return self.n

    def epoch(self, epoch: int, skip: int) -> Iterable[Any]:
        sampler: Any = getattr(self.loader, "sampler", None)
        dataset: Any = getattr(self.loader, "dataset", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        if isinstance(sampler, ResumableSampler):
            sampler.start = skip * (self.loader.batch_size or 1)
            return self.loader
        it = iter(self.loader)
        for _ in range(skip):
            next(it, None)
        return it


@dataclass
class StepBatches:
    """Batches from a pure function of the global step (data generated on the fly): nothing to replay."""

    batch_at: Callable[[int], Any]
    per_epoch: int

    def __len__(self) -> int:
        return self.per_epoch

    def epoch(self, epoch: int, skip: int) -> Iterable[Any]:
        return (self.batch_at(epoch * self.per_epoch + k) for k in range(skip, self.per_epoch))


def worker_init(_: int) -> None:
    """A data loader worker leaves SIGINT and SIGTERM to the main process, which finishes its batch and saves
    (``timeout``, ``scancel`` and systemd signal the whole process group: a worker killed by it was a traceback
    and a lost position), and computes on one thread."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)


def seeded_sample(seed: int, epoch: int, index: int, fn: Callable[[], Any]) -> Any:
    """``fn()`` (a sample's random augmentation) with torch's CPU generator seeded by ``(seed, epoch, index)`` and
    the caller's state put back after, so a resumed run sees the same pixels as an uninterrupted one, whatever the
    worker count (a worker's own generator restarts with each loader). ``torch.random.fork_rng`` does the same
    but costs about 1 ms, more than decoding a small image."""
    gen = torch.default_generator
    state = gen.get_state()
    gen.manual_seed(zlib.crc32(f"{seed}/{epoch}/{index}".encode()))
    try:
        return fn()
    finally:
        gen.set_state(state)


def seeded_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = False,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
    **kwargs: Any,
) -> DataLoader:
    """A DataLoader whose order is a function of (seed, epoch), so an interrupted epoch resumes exactly.

    It has its own generator, so creating its iterator never draws from the global RNG.
    """
    sampler = ResumableSampler(dataset, seed=seed, shuffle=shuffle, num_replicas=world, rank=rank)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        **{"worker_init_fn": worker_init if workers else None, **kwargs},
    )


# ---------------------------------------------------------------- distributed


def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _reduce_device(device: Any) -> Any:
    dist = _dist()
    return device if dist is not None and dist.get_backend() == "nccl" else "cpu"


def all_sum(values: Sequence[float] | np.ndarray, device: Any = "cpu") -> np.ndarray:
    """Sum a vector over all ranks (identity when not distributed)."""
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=_reduce_device(device))
    dist = _dist()
    if dist is not None:
        dist.all_reduce(t)
    return t.cpu().numpy()


def is_main() -> bool:
    """True on rank 0 (and when not distributed): the process that writes files."""
    dist = _dist()
    return dist is None or dist.get_rank() == 0


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (the model itself otherwise)."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def for_evaluation(model: nn.Module) -> nn.Module:
    """The module to evaluate with on this rank: unwrapped, with rank 0's buffers (BatchNorm's statistics, which
    DDP's forward would broadcast). Evaluating through DDP made each forward a collective, and a rank given no
    val images (more processes than images) never joined it: the others waited for ever."""
    net = unwrap(model)
    dist = _dist()
    if dist is not None and net is not model:
        for buffer in net.buffers():
            dist.broadcast(buffer, 0)
    return net


# ---------------------------------------------------------------- freezing, optimiser, schedule


def train_mode(model: nn.Module, frozen: Sequence[nn.Module] = ()) -> None:
    """``model.train()``, except BatchNorm layers of frozen parts (or with frozen parameters) keep
    their running statistics (eval mode): freezing a trunk must not drift it."""
    model.train()
    inside = {id(m) for part in frozen for m in part.modules()}
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters())
            if id(m) in inside or (params and not any(p.requires_grad for p in params)):
                m.eval()


def make_optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    """AdamW or SGD over every parameter (frozen ones get no gradient; unfreezing needs them here)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected {' or '.join(OPTIMIZERS)}")
    params = list(model.parameters())
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


class _Schedule:
    """LR factor per optimisation step: linear warm-up, then cosine (down to ``floor``), step or constant."""

    def __init__(self, kind: str, total: int, warmup: int, floor: float = 0.0) -> None:
        self.kind, self.total, self.warmup, self.floor = kind, max(total, 1), warmup, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(self.total - self.warmup, 1)
        if self.kind == "cosine":
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if self.kind == "step":
            return 0.1 ** min(int(progress * 3), 2)
        return 1.0


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: LoopConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step learning-rate schedule of ``cfg`` over ``cfg.epochs`` epochs."""
    if cfg.scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {cfg.scheduler!r}; expected one of {', '.join(SCHEDULERS)}")
    total = cfg.epochs * max(steps_per_epoch, 1)
    if cfg.scheduler == "onecycle":
        if cfg.warmup:  # asked for, and not to be dropped in silence
            log.warning(
                "warmup %g not used: onecycle warms up over its own first %g of the steps", cfg.warmup, cfg.pct_start
            )
        pct = cfg.pct_start
        if math.isclose(pct * total, 1.0):  # a warm-up of exactly one step: torch's OneCycleLR divides by zero
            pct = 0.5 / total  # under a step: no warm-up phase, as for any run shorter than 1 / pct_start steps
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=pct)
    warmup = round(cfg.warmup * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _Schedule(cfg.scheduler, total, warmup, cfg.lr_floor))


def _restore_scheduler(scheduler: Any, state: dict[str, Any]) -> None:
    """Load a scheduler's position but keep this run's length (the number of epochs may change on resume)."""
    if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
        scheduler.load_state_dict(
            {**state, "total_steps": scheduler.total_steps, "_schedule_phases": scheduler._schedule_phases}
        )
        return
    lengths = [dict(fn.__dict__) for fn in scheduler.lr_lambdas]
    scheduler.load_state_dict(state)  # LambdaLR writes the saved _Schedule's fields into this run's, in place
    for fn, own in zip(scheduler.lr_lambdas, lengths):
        fn.__dict__.update(own)
    lrs = [base * fn(scheduler.last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs):  # the next batch already on the new length
        group["lr"] = lr
    scheduler._last_lr = lrs


def _autocast(amp: bool, device: torch.device) -> Any:
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


class _Scaler:
    """fp16 loss scaling on CUDA with AMP; a plain backward + step otherwise (bf16 needs none)."""

    def __init__(self, amp: bool, device: torch.device) -> None:
        self.scaler = torch.amp.GradScaler("cuda") if amp and device.type == "cuda" else None

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, clip: float | None) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]  # clipping skips those without grad
        if self.scaler is None:
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if clip:
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)


class GracefulStop:
    """While active, SIGINT/SIGTERM only set :attr:`requested`; the loop saves and stops.

    A second Ctrl-C interrupts at once. Handlers are only installed in the main thread.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this batch (%s); press Ctrl-C again to abort", signal.Signals(signum).name)

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def any_rank(self, device: Any) -> bool:
        """True on every rank as soon as one rank was asked to stop (keeps collectives in step)."""
        if _dist() is None:
            return self.requested
        return bool(all_sum([float(self.requested)], device)[0] > 0)


# ---------------------------------------------------------------- the run's position


@dataclass
class RunState:
    """Where a run is: completed epochs, batches into the current one, partial sums, best score, history."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    seen: int = 0
    loss_sum: float = 0.0
    sums: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    best: float | None = None
    bad_epochs: int = 0
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: Step) -> None:
        self.loss_sum += float(step.loss.detach()) * step.n
        for k, v in step.sums.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.seen += step.n
        self.batch += 1
        self.step += 1

    def end_epoch(self, row: dict[str, Any], score: str, cfg: LoopConfig) -> bool:
        """Record ``row``; True when its score is the best so far."""
        self.history.append(row)
        value = float(row[score])
        improved = self.best is None or value > self.best
        if improved:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        self.stopped = bool(cfg.early_stopping) and self.bad_epochs >= (cfg.early_stopping or 0)
        if cfg.target is not None and self.best is not None and self.best >= cfg.target:
            self.stopped = True
        self.epoch, self.batch = int(row["epoch"]), 0
        self.seen, self.loss_sum, self.sums, self.seconds = 0, 0.0, {}, 0.0
        return improved

    @classmethod
    def from_dict(cls, raw: Any) -> RunState:
        """The ``run`` entry of a last.pt, type-checked: a tampered file is an error, not a strange resume."""
        if not isinstance(raw, dict) or set(raw) != set(cls.__dataclass_fields__):
            raise ValueError("its run record has other fields than cnnkit writes")
        ints = ("epoch", "batch", "step", "seen", "bad_epochs")
        if not all(type(raw[k]) is int and raw[k] >= 0 for k in ints):
            raise ValueError(f"its run position ({', '.join(ints)}) is not counts")
        numbers = [
            raw["loss_sum"],
            raw["seconds"],
            *(raw["sums"].values() if isinstance(raw["sums"], dict) else [None]),
        ]
        if raw["best"] is not None:
            numbers.append(raw["best"])
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
            raise ValueError("its run sums are not numbers")
        if not isinstance(raw["stopped"], bool):
            raise ValueError("its run 'stopped' flag is not true or false")
        history = raw["history"]
        if not (
            isinstance(history, list)
            and all(
                isinstance(row, dict)
                and all(isinstance(k, str) and isinstance(v, (int, float, str)) for k, v in row.items())
                for row in history
            )
        ):
            raise ValueError("its history is not a list of epoch rows")
        if len(history) != raw["epoch"]:
            raise ValueError(f"its history has {len(history)} rows for {raw['epoch']} epochs")
        return cls(**raw)


def save_state(
    path: Path, task: str, model: nn.Module, optimizer: Any, scheduler: Any, scaler: _Scaler, run: RunState
) -> None:
    """Write the resumable state (the one ``last.pt`` layout of every task) atomically."""
    rng: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    buf = io.BytesIO()
    torch.save(
        {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "task": task,
            "model": unwrap(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rng,
            "run": asdict(run),
        },
        buf,
    )
    atomic_write_bytes(path, buf.getvalue())


def load_state(path: Path, task: str, model: nn.Module, optimizer: Any, scheduler: Any, scaler: _Scaler) -> RunState:
    """Restore a run from its ``last.pt`` (weights-only load, then every field checked)."""
    state = load_training_state(path)
    with restoring(path):
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ValueError(f"not a {STATE_FORMAT} v{STATE_VERSION} state")
        if state.get("task") != task:
            raise ValueError(f"it is a {state.get('task')!r} run, not {task!r}")
        run = RunState.from_dict(state["run"])
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _restore_scheduler(scheduler, state["scheduler"])
        scaler.load_state_dict(state.get("scaler") or {})
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return run


# ---------------------------------------------------------------- run folders


def run_dir(task: str, out: str | Path | None = None, *, exist_ok: bool = False) -> Path:
    """A new run's folder: ``out`` as named, else ``runs/<task>/train``, ``train2``, …

    A previous run's resumable state in it (``exist_ok``) is dropped, so the new run starts
    from epoch 1 instead of continuing the old one.
    """
    named = Path(out) if out else Path("runs") / task / "train"
    existed = exist_ok and named.is_dir()
    folder = explicit_dir(out, exist_ok=exist_ok) if out else increment_dir(named, exist_ok=exist_ok)
    if not existed:
        _NEW_RUNS.add(folder.resolve())
    if (folder / "last.pt").exists():
        log.warning("%s held a previous run: starting a new one over it", folder)
        (folder / "last.pt").unlink()
    return folder


_NEW_RUNS: set[Path] = set()  # run folders this process created (drop_unused_runs)


def drop_unused_runs() -> None:
    """Remove the run folders this process created that a failed or interrupted start left empty, so that the
    same ``--save-dir`` can be given again (a folder holding anything stays)."""
    while _NEW_RUNS:
        with contextlib.suppress(OSError):
            _NEW_RUNS.pop().rmdir()  # only an empty folder goes


def _batch_norm_error(exc: ValueError) -> UsageError | None:
    """BatchNorm's refusal of a batch with one value per channel, as the options that cause it."""
    text = str(exc)
    if not text.startswith("Expected more than 1 value per channel when training"):
        return None
    return UsageError(
        f"a training batch reaches a BatchNorm layer as one value per channel ({text.rpartition('got ')[2]}), "
        "which it cannot normalise: use a batch size of 2 or more (`batch_size`)"
    )


def run_result(folder: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """What every task's ``finetune`` returns: ``{best, last, out, metrics}`` of the run in ``folder``."""
    return {
        "best": str(folder / "best.safetensors"),
        "last": str(folder / "last.safetensors"),
        "out": str(folder),
        "metrics": metrics,
    }


# ---------------------------------------------------------------- the loop


def fit(
    model: nn.Module,
    train: DataLoader | Batches,
    recipe: Recipe,
    cfg: LoopConfig,
    out_dir: str | Path,
    meta: dict[str, Any],
    device: torch.device | str = "cpu",
    *,
    frozen: Sequence[nn.Module] = (),
    callbacks: Callbacks | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` for ``cfg.epochs`` epochs; resumes from ``out_dir/last.pt`` when it exists.

    ``model`` may be wrapped in DistributedDataParallel. ``frozen``: parts whose parameters
    the caller froze (their BatchNorm stays in eval mode until ``cfg.unfreeze_at``). ``meta``
    goes into every checkpoint (what the task's predictor needs to load it). Returns the
    epoch rows (also in ``metrics.csv``).
    """
    try:
        return _fit(model, train, recipe, cfg, Path(out_dir), meta, torch.device(device), frozen, callbacks)
    except ValueError as exc:
        raise _batch_norm_error(exc) or exc from exc


def _fit(
    model: nn.Module,
    train: DataLoader | Batches,
    recipe: Recipe,
    cfg: LoopConfig,
    out: Path,
    meta: dict[str, Any],
    device: torch.device,
    frozen: Sequence[nn.Module],
    callbacks: Callbacks | None,
) -> list[dict[str, Any]]:
    batches: Batches = LoaderBatches(train) if isinstance(train, DataLoader) else train
    cb = callbacks or Callbacks()
    main = is_main()
    if main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model.to(device)
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, len(batches))
    scaler = _Scaler(cfg.amp, device)
    last = out / "last.pt"
    run = RunState()
    if last.exists():
        run = load_state(last, recipe.task, model, optimizer, scheduler, scaler)
        if run.stopped or run.epoch >= cfg.epochs:
            raise UsageError(
                f"{out}: the run {'stopped early' if run.stopped else 'finished'} after epoch {run.epoch}; "
                f"nothing to resume{'' if run.stopped else ' (a larger `epochs` trains on)'}"
            )
        log.info("resumed from %s at epoch %d%s", last, run.epoch + 1, f", batch {run.batch}" if run.batch else "")
    frozen = list(frozen)
    saver = _Saver(out, recipe, cfg, meta, model, optimizer, scheduler, scaler, main)
    with GracefulStop() as stop:
        for epoch in range(run.epoch, cfg.epochs):
            if run.stopped:
                break
            if cfg.unfreeze_at is not None and epoch + 1 >= cfg.unfreeze_at and frozen:
                for part in frozen:
                    part.requires_grad_(True)
                frozen = []
                log.info("epoch %d: frozen parts unfrozen", epoch + 1)
            if not run.batch:
                torch.manual_seed(cfg.seed * 100_003 + epoch)
            train_mode(model, frozen)
            if cb.epoch_start:
                cb.epoch_start(epoch + 1, cfg.epochs, len(batches))
            t0 = time.perf_counter()
            for batch in batches.epoch(epoch, run.batch):
                optimizer.zero_grad(set_to_none=True)
                with _autocast(cfg.amp, device):
                    step = recipe.loss(model, batch, device)
                scaler.step(step.loss, optimizer, cfg.clip)
                scheduler.step()
                run.add(step)
                if cb.batch:
                    cb.batch(step.n, float(step.loss.detach()))
                if stop.any_rank(device):
                    run.seconds += time.perf_counter() - t0
                    saver.interrupted(run)
                    raise Interrupted(out)
                if cfg.checkpoint_every and run.batch % cfg.checkpoint_every == 0 and run.batch < len(batches):
                    saver.state(run, time.perf_counter() - t0)
            seconds = run.seconds + time.perf_counter() - t0
            val = recipe.validate(model)
            row = _row(epoch + 1, run, val, scheduler.get_last_lr()[0], seconds, device)
            improved = run.end_epoch(row, recipe.score, cfg)
            saver.epoch(run, val, improved)
            if cb.epoch_end:
                cb.epoch_end(row)
            if run.stopped:
                log.info(
                    "stopping after epoch %d: %s",
                    row["epoch"],
                    "target reached"
                    if cfg.target is not None and run.best is not None and run.best >= cfg.target
                    else f"no better {recipe.score} for {cfg.early_stopping} epoch(s)",
                )
    return run.history


def _row(epoch: int, run: RunState, val: dict[str, Any], lr: float, seconds: float, device: Any) -> dict[str, Any]:
    """One metrics row: epoch, train_loss, train_<sums>, val_<numbers>, lr, step, seconds, images_per_s."""
    keys = sorted(run.sums)
    totals = all_sum([run.loss_sum, run.seen, *(run.sums[k] for k in keys)], device).tolist()
    seen = max(totals[1], 1)
    row: dict[str, Any] = {"epoch": epoch, "train_loss": totals[0] / seen}
    row.update({f"train_{k}": v / seen for k, v in zip(keys, totals[2:])})
    row.update(
        {f"val_{k}": v for k, v in val.items() if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)}
    )
    row = {k: (v.item() if isinstance(v, np.number) else v) for k, v in row.items()}
    row.update({"lr": lr, "step": run.step, "seconds": seconds, "images_per_s": totals[1] / max(seconds, 1e-9)})
    return row


@dataclass
class _Saver:
    """The run folder's files, written by rank 0 only."""

    out: Path
    recipe: Recipe
    cfg: LoopConfig
    meta: dict[str, Any]
    model: nn.Module
    optimizer: Any
    scheduler: Any
    scaler: _Scaler
    main: bool

    def weights(self, stem: str, metrics: dict[str, Any]) -> Path:
        return save_checkpoint(
            self.out / f"{stem}.safetensors",
            unwrap(self.model),
            {**self.meta, "metrics": metrics, "train": asdict(self.cfg)},
            half=self.cfg.half_checkpoint,
        )

    def state(self, run: RunState, seconds: float) -> None:
        if self.main:
            saved = run.seconds
            run.seconds += seconds
            save_state(
                self.out / "last.pt", self.recipe.task, self.model, self.optimizer, self.scheduler, self.scaler, run
            )
            run.seconds = saved

    def interrupted(self, run: RunState) -> None:
        if not self.main:
            return
        save_state(self.out / "last.pt", self.recipe.task, self.model, self.optimizer, self.scheduler, self.scaler, run)
        self.weights("last", run.history[-1] if run.history else {})
        log.warning(
            "interrupted in epoch %d after batch %d: state saved to %s", run.epoch + 1, run.batch, self.out / "last.pt"
        )

    def epoch(self, run: RunState, val: dict[str, Any], improved: bool) -> None:
        if not self.main:
            return
        row = run.history[-1]
        extras = {k: v for k, v in val.items() if isinstance(v, (dict, list))}
        if improved:
            self.weights("best", {**row, **extras})
            if self.recipe.on_best:
                self.recipe.on_best(self.out, row, val)
        self.weights("last", {**row, **extras})
        save_state(self.out / "last.pt", self.recipe.task, self.model, self.optimizer, self.scheduler, self.scaler, run)
        write_csv(self.out / "metrics.csv", run.history)
        plot_curves(run.history, self.out / "curves.png")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """``rows`` as CSV (columns in first-seen order), atomically."""
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> None:
    """Losses (left) and every other train/val metric (right) per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    numeric = [
        k
        for k in history[-1]
        if k not in _NOT_PLOTTED
        and isinstance(history[-1][k], (int, float))
        and not k.endswith("_images")
        and all(k in r for r in history)
    ]
    losses = [k for k in numeric if k.endswith("loss")]
    others = [k for k in numeric if k not in losses]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, keys, title in ((left, losses, "loss"), (right, others, "metrics")):
        for k in keys:
            ax.plot(epochs, [r[k] for r in history], "o-" if k.startswith("val_") else ".--", label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
