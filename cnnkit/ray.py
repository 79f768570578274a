"""Batch inference on Ray Data: cnnkit's own predictor in an actor pool, for runs bigger than one machine.

The driver lists the sources with cnnkit's walker (:func:`cnnkit.io.sources.expand_sources`, local or
remote, then ``shard`` and ``skip``), so the inputs, their order and the failed entries are what a
local run sees. Ray Data carries the paths to an actor pool; each actor loads the model once
(:class:`Predict`) and runs ``predictor.stream`` over its batch: the same reads (local files or URLs, in
the engine's decode threads; a video's frames), preprocessing, forward pass and postprocessing as locally,
so a bad file becomes a failed record in the actor and never fails the job. A crashed actor (killed,
out of memory) is restarted and its unfinished batches are retried: cnnkit leaves Ray Data's
actor-pool defaults (``max_restarts=-1``, ``max_task_retries=-1``: no limit) as they are, and the run
completes with each record once (an input that crashed its process every time would be retried for
ever). Records come back to the driver in input order (``preserve_order``) and are written there by the usual writers (one merged JSON Lines
or Parquet file, resumable), or as Parquet part files written by the workers (``parts``).

For pipelines of your own, :class:`Predict` is a ``map_batches`` callable class: it takes batches
with a ``path`` column (and optionally ``bytes``, as ``ray.data.read_binary_files(...,
include_paths=True)`` gives) and adds a ``record`` column (one JSON record per row) and ``error``.

Ray is imported on first use; its usage statistics are switched off before it starts
(``RAY_USAGE_STATS_ENABLED=0``): cnnkit never phones home.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError, OptionError, UsageError, reason_of
from cnnkit.io import DEFAULT_MAX_PIXELS
from cnnkit.records import Record, finite

if TYPE_CHECKING:
    from cnnkit.io.video import VideoOptions

log = logging.getLogger("cnnkit")

SUPPORTED = ((2, 60), (2, 61))  # the Ray versions tested: from the first, up to (not including) the second
CHUNK = 256  # records per output batch of an actor
_RECORD_FIELDS = ("path", "task", "model", "width", "height", "predictions", "time_ms", "error", "frame", "time_s")


def _ray() -> Any:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # before ray is imported or started: no usage reports
    try:
        import ray
        import ray.data
    except ImportError:
        raise OptionError("engine", "needs Ray Data: pip install 'cnnkit[ray]'", "ray") from None
    version = tuple(int(p) for p in ray.__version__.split(".")[:2] if p.isdigit())
    if not SUPPORTED[0] <= version < SUPPORTED[1]:
        log.warning(
            "ray %s is not a tested version (cnnkit is tested with ray >=%s,<%s)",
            ray.__version__,
            ".".join(map(str, SUPPORTED[0])),
            ".".join(map(str, SUPPORTED[1])),
        )
    return ray


PROBE_S = 5.0  # how long a HOST:PORT may take to accept a connection before "no Ray cluster there"


def _check_address(address: str) -> None:
    """A ``HOST:PORT`` that is not one, or where nothing listens, is one line now: Ray itself raises a
    ValueError traceback for the first and retries a closed port for ever."""
    import socket

    if address.startswith("ray://"):
        return
    if address == "auto":  # the cluster Ray would join: $RAY_ADDRESS, else the one its temp folder names
        found, where = _auto_address()
        if found is None:
            return  # none: Ray says so itself, at once
        try:
            _check_address(found)
        except OptionError as exc:
            raise OptionError("address", f"{exc.reason} ({found}, from {where})", address) from None
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionError("address", "expected HOST:PORT of a Ray head, auto, or ray://HOST:PORT", address)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S) as conn:
            grpc = _speaks_grpc(conn)
    except OSError as exc:
        raise OptionError("address", f"no Ray cluster there ({exc.strerror or exc})", address) from None
    if not grpc and os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
        raise OptionError(  # Ray would retry it for ever: a dashboard's port, a web server
            "address", "something listens there, but not a Ray head (its GCS answers in gRPC)", address
        )


def _speaks_grpc(conn: Any) -> bool:
    """Whether the server on ``conn`` answers HTTP/2's opening as a gRPC server (Ray's GCS) does: with a
    SETTINGS frame (type 4)."""
    conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    head = b""
    with contextlib.suppress(OSError):
        while len(head) < 9 and (chunk := conn.recv(9 - len(head))):
            head += chunk
    return len(head) == 9 and head[3] == 4


def _auto_address() -> tuple[str | None, str]:
    """The ``HOST:PORT`` that ``auto`` means to Ray, and where it was found: a crashed cluster leaves its address
    behind, and Ray then retries it for ever."""
    given = os.environ.get("RAY_ADDRESS", "").strip()
    if given and given != "auto":
        return (None if given.startswith("ray://") else given), "$RAY_ADDRESS"
    current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
    try:
        text = current.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None, str(current)
    return (text.splitlines()[0].strip() if text else None), str(current)


def _notices_to_stderr() -> None:
    """Ray prints its cluster notices (a worker died, a task is retried) and, with -v, the workers' prints on
    the driver's stdout, which is cnnkit's data channel (JSON Lines): they go to stderr with Ray's log lines."""
    import importlib

    worker = importlib.import_module("ray._private.worker")
    shown = getattr(worker, "print_to_stdstream", None)
    if shown is None or getattr(shown, "cnnkit", False):
        return

    def on_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        shown({**data, "is_err": True}, ignore_prefix)

    on_stderr.cnnkit = True  # type: ignore[attr-defined]
    setattr(worker, "print_to_stdstream", on_stderr)  # noqa: B010 (a module of Ray's that mypy does not know)


def init(address: str | None = None) -> Any:
    """Connect to the Ray cluster at ``address`` (``auto``: the one this machine belongs to; ``HOST:PORT``),
    or start a private one on this machine when ``address`` is ``None``; an existing connection is kept."""
    imported = sys.modules.get("ray")
    kept = imported is not None and imported.is_initialized()
    if address is not None and not (address == "auto" and kept):  # `auto` on a kept connection means that one
        _check_address(address)
    ray = _ray()
    if ray.is_initialized():
        return ray
    _notices_to_stderr()
    quiet = not log.isEnabledFor(logging.WARNING)  # -q: nothing on stderr but the error that stops a command
    try:
        # workers' prints stay in Ray's logs unless -v: stdout is cnnkit's data channel (JSON Lines)
        ray.init(
            address="local" if address is None else address,  # None would join a cluster found on the machine
            include_dashboard=False,
            logging_level=logging.ERROR if quiet else logging.WARNING,
            log_to_driver=log.isEnabledFor(logging.DEBUG),
            configure_logging=True,
        )
    except (ConnectionError, ValueError, RuntimeError) as exc:  # ray:// without ray[client] is a ValueError
        raise OptionError("address", f"cannot join a Ray cluster there ({reason_of(exc)})", address) from None
    return ray


def _check_resources(ray: Any, private: bool, actors: int, gpus_per_actor: float, cpus_per_actor: float) -> None:
    """An actor that asks for more than any node has would wait for ever, in silence: on the cluster cnnkit
    started on this machine that is an error; a cluster joined may grow (an autoscaler), so it is a warning."""
    have = ray.cluster_resources()
    for name, key, need in (("gpus_per_actor", "GPU", gpus_per_actor), ("cpus_per_actor", "CPU", cpus_per_actor)):
        if need <= have.get(key, 0):
            continue
        if private:
            raise OptionError(name, f"more than this machine has ({have.get(key, 0):g} {key})", need)
        log.warning(
            "ray: %s %g, but the cluster has %g %s now; the actors wait until it has more",
            name,
            need,
            have.get(key, 0),
            key,
        )


def record_from_json(text: str) -> Record:
    """A record as an actor wrote it (JSON) back as a :class:`Record` (extras such as ``saved`` included)."""
    data = json.loads(text)
    fields = {k: data.pop(k, None) for k in _RECORD_FIELDS}
    data.pop("schema_version", None)
    fields["predictions"] = fields["predictions"] or []
    return Record(**fields, extra=data)


class Predict:
    """A Ray Data ``map_batches`` callable class: cnnkit's predictor for ``task``, loaded once per actor.

    Batches (numpy format) need a ``path`` column; ``bytes`` (encoded files) and ``error`` (why an
    input gave nothing) are used when present. An image row gives one output row and a video row one per
    frame read (``video``: :class:`~cnnkit.io.video.VideoOptions`' fields, ``vid_stride``, ``start``, ``end``,
    ``max_frames``; one actor reads a whole video, so a tracker follows it), each with its input row's
    columns plus ``record`` (the record as JSON) and ``error`` (``""`` on success).
    """

    def __init__(
        self,
        task: str,
        options: dict[str, Any] | None = None,
        *,
        batch_size: int = 8,
        workers: int = 2,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        video: dict[str, Any] | None = None,
    ) -> None:
        from cnnkit import api
        from cnnkit.io.video import VideoOptions

        self.predictor = api.load(task, **dict(options or {}))
        self.batch_size, self.workers, self.max_pixels = batch_size, workers, max_pixels
        self.video = dataclasses.asdict(VideoOptions(**dict(video or {})))  # checked, as stream's keywords

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Output batches of at most :data:`CHUNK` records, as they come (a long video is not held whole)."""
        from collections import Counter

        from cnnkit.io.sources import Item

        shown = [str(p) for p in batch["path"]]  # as the user gave them: the records' paths
        paths = [str(p) for p in batch["read"]] if "read" in batch else shown  # where a worker reads them
        blobs = batch.get("bytes")
        errors = batch.get("error")
        items = [
            Item(
                p, None if blobs is None else bytes(blobs[i]), (str(errors[i]) or None) if errors is not None else None
            )
            for i, p in enumerate(paths)
        ]
        repeated = {p for p, n in Counter(paths).items() if n > 1}
        kept: dict[str, list[Record]] = {}  # the records of a path given twice: the stream may read it once
        rows: list[int] = []
        records: list[Record] = []

        def copies(first: int, stop: int) -> None:
            """Rows the stream passed over (a repeated path it read once) get that path's records again."""
            for skipped in range(first, stop):
                again = kept.get(paths[skipped], [])
                rows.extend([skipped] * len(again))
                records.extend(again)

        row, unused = -1, 0  # the row of the last record; the first row no record went to
        for rec in self.predictor.stream(  # the hooks and video frames of a local run (track counts, say)
            items,
            batch_size=self.batch_size,
            workers=self.workers,
            max_pixels=self.max_pixels,
            **self.video,
        ):
            if row < 0 or rec.frame is None or rec.path != paths[row]:  # an image, or a new video's first frame
                found = paths.index(rec.path, unused)
                copies(unused, found)
                row, unused = found, found + 1
            if rec.path in repeated:
                kept.setdefault(rec.path, []).append(rec)
            rec.path = shown[row]
            rows.append(row)
            records.append(rec)
            if len(records) >= CHUNK:
                yield _rows(batch, rows, records)
                rows, records = [], []
        copies(unused, len(paths))
        if records:
            yield _rows(batch, rows, records)


def _rows(batch: dict[str, Any], rows: list[int], records: list[Record]) -> dict[str, Any]:
    """Output columns: each record's input row's columns, ``record`` (JSON) and ``error``."""
    import numpy as np

    out = {k: np.asarray(v)[rows] for k, v in batch.items() if k not in ("bytes", "record", "error")}
    out["record"] = np.array(
        [json.dumps(finite(r.to_dict())[0], ensure_ascii=False, allow_nan=False) for r in records], dtype=object
    )
    out["error"] = np.array([r.error or "" for r in records], dtype=object)
    return out


def _check(actors: int, gpus_per_actor: float, cpus_per_actor: float, batch_size: int) -> None:
    """Bad scale options fail before a cluster starts or an input is listed."""
    if actors < 1:
        raise OptionError("actors", "need at least one actor", actors)
    if gpus_per_actor < 0:
        raise OptionError("gpus_per_actor", "cannot be negative", gpus_per_actor)
    if cpus_per_actor <= 0:
        raise OptionError("cpus_per_actor", "must be more than 0", cpus_per_actor)
    if batch_size < 1:
        raise OptionError("batch_size", "must be at least 1", batch_size)


def _pipeline(
    items: Sequence[Any],
    task: str,
    *,
    address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    batch_size: int = 8,
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    video: VideoOptions | None = None,
    **load_options: Any,
) -> Any | None:
    """The checked job: paths → actor pool running :class:`Predict` (records in input order), on the cluster
    at ``address``; ``None`` when there is nothing to do. Both the driver's records and the workers' part
    files start here, and its options are theirs (:func:`predict` says what each does)."""
    from cnnkit.tasks import TASKS

    if task not in TASKS:
        raise OptionError("task", f"expected one of {', '.join(TASKS)}", task)
    _check(actors, gpus_per_actor, cpus_per_actor, batch_size)
    if not items:
        return None
    if load_options.get("model") is None and load_options.get("weights") is None:
        from cnnkit.config import lookup

        # the driver's default model (environment, cnnkit.toml), as a local run resolves it: an actor on
        # another machine has its own settings, or none
        load_options["model"] = lookup(f"model.{task}").value
    _check_model(task, load_options.get("model"), load_options.get("weights"))
    private = address is None  # then cnnkit starts its own cluster (`address="local"`), $RAY_ADDRESS or not
    if private and load_options.get("device") not in (None, "auto"):
        from cnnkit.device import resolve_device

        resolve_device(load_options["device"])  # the actors run here: the same device check as a local run
    ray = init(address)
    _check_resources(ray, private, actors, gpus_per_actor, cpus_per_actor)
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()  # the driver's context: a job of one's own keeps these settings too
    context.execution_options.preserve_order = True  # records in input order, as a local run writes them
    if not log.isEnabledFor(logging.DEBUG):  # Ray Data's progress lines would bury cnnkit's own on stderr
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        # also its note that the bars are off, and its traceback of a job that fails (cnnkit says it in one line)
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    # a worker reads a local file by its absolute path: the cluster's processes run in another folder
    rows = [
        {"index": i, "path": it.path, "read": _absolute(it.path), "error": it.error or ""} for i, it in enumerate(items)
    ]
    blocks = max(1, min(len(rows), 4 * actors, -(-len(rows) // batch_size)))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    options = dict(load_options)
    for key in ("weights", "model"):  # a local model file by its absolute path too, as the images are
        if isinstance(options.get(key), str) and os.path.exists(options[key]):
            options[key] = _absolute(options[key])
    from cnnkit.runtimes import default_backend

    # the driver's default (environment, cnnkit.toml), not each worker's: every actor runs what a local run would
    options["backend"] = default_backend(options.get("backend"), options.get("weights"))
    if gpus_per_actor > 0 and options.get("device") in (None, "auto"):
        options["device"] = "cuda"
    if options.get("threads") is None:
        options["threads"] = max(1, int(cpus_per_actor))  # torch would otherwise take every core of the node
    return ds.map_batches(
        Predict,
        fn_constructor_kwargs={
            "task": task,
            "options": options,
            "batch_size": batch_size,
            "workers": workers,
            "max_pixels": max_pixels,
            "video": None if video is None else dataclasses.asdict(video),
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=min(actors, blocks)),  # no idle actors (and no Ray warning of them)
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor or None,
    )


def _absolute(path: str) -> str:
    """A local path as an absolute one (URLs and stream addresses as given)."""
    from cnnkit.io.remote import is_remote
    from cnnkit.io.video import is_stream_url

    return path if is_remote(path) or is_stream_url(path) else os.path.abspath(path)


def _check_model(task: str, model: str | None, weights: str | None) -> None:
    """On the driver, before the cluster: a model name that is no model, or a weights file that is not there,
    is one line here instead of every actor's traceback."""
    from cnnkit.io.remote import is_remote
    from cnnkit.models.loader import identify

    if weights and not is_remote(weights) and not os.path.isfile(weights):
        raise CnnkitError(f"{weights}: no such file")
    target = weights or model
    if target:
        identify(target, task)


@contextmanager
def _job_failure() -> Iterator[None]:
    """A failed Ray job as one line, not Ray's traceback (a cnnkit error from inside stays itself)."""
    try:
        yield
    except CnnkitError:
        raise
    except Exception as exc:
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        inner = re.search(r"cnnkit\.errors\.(\w+): (.+)$", last)
        if inner:  # an actor's own cnnkit error (Ray cannot send its type back): its line and exit code
            usage = inner.group(1) in ("UsageError", "OptionError")
            raise (UsageError if usage else CnnkitError)(inner.group(2)) from exc
        raise CnnkitError(f"ray: the job failed ({type(exc).__name__}: {last})") from exc


def predict(
    sources: Sequence[Any] | str,
    task: str = "classify",
    *,
    address: str | None = None,
    actors: int = 1,
    gpus_per_actor: float = 0.0,
    cpus_per_actor: float = 1.0,
    batch_size: int = 8,
    workers: int = 2,
    recursive: bool = False,
    shard_spec: str | None = None,
    skip: set[str] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    vid_stride: int = 1,
    start: float | None = None,
    end: float | None = None,
    max_frames: int | None = None,
    **load_options: Any,
) -> Iterator[Record]:
    """Records for ``sources`` (paths, folders, globs, URLs, videos), predicted on a Ray cluster; input order.

    ``address``: ``None`` starts Ray on this machine, ``auto`` joins this machine's cluster,
    ``HOST:PORT`` a remote head. ``skip``: path keys to leave out (resume). ``vid_stride``, ``start``,
    ``end`` and ``max_frames`` choose a video's frames, as for ``predictor.stream``; each video is read
    by one actor. ``load_options`` are the task's (``model``, ``weights``, ``topk``, ``conf`` …), as for
    :func:`cnnkit.load`.
    """
    from cnnkit.io.video import VideoOptions

    _check(actors, gpus_per_actor, cpus_per_actor, batch_size)
    video = VideoOptions(vid_stride, start, end, max_frames)
    items = plan(sources, recursive=recursive, shard_spec=shard_spec, skip=skip)
    yield from predict_items(
        items,
        task,
        address=address,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        cpus_per_actor=cpus_per_actor,
        batch_size=batch_size,
        workers=workers,
        max_pixels=max_pixels,
        video=video,
        **load_options,
    )


def plan(
    sources: Sequence[Any] | str,
    *,
    recursive: bool = False,
    shard_spec: str | None = None,
    skip: set[str] | None = None,
) -> list[Any]:
    """The inputs of a run, as a local run lists them (sorted, de-duplicated, sharded, resumed)."""
    from cnnkit.io.sources import expand_sources, shard
    from cnnkit.io.writers import path_key as key

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    items = shard(expand_sources(list(sources), recursive=recursive), shard_spec)
    in_memory = [it for it in items if it.data is not None]
    if in_memory:
        raise OptionError("engine", "runs over file paths and URLs, not in-memory images", "ray")
    return [it for it in items if key(it.path) not in skip] if skip else items


def predict_items(items: Sequence[Any], task: str, **options: Any) -> Iterator[Record]:
    """Records for already listed inputs (:class:`~cnnkit.io.sources.Item`), in their order; ``options`` are
    :func:`predict`'s (scale, ``video`` as :class:`~cnnkit.io.video.VideoOptions`, and the task's own)."""
    ds = _pipeline(items, task, **options)  # now, not at the first record: a bad address or model fails
    return _records(ds)  # before the caller opens its output file


def _records(ds: Any) -> Iterator[Record]:
    """The job's records, as its output batches come back to the driver."""
    if ds is None:
        return
    with _job_failure():
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            for text in batch["record"]:
                yield record_from_json(str(text))


def write_parts(items: Sequence[Any], task: str, folder: str | os.PathLike, **options: Any) -> list[tuple[str, str]]:
    """Predict ``items`` (``options`` as for :func:`predict_items`) and let the workers write Parquet part
    files into ``folder`` (the driver holds no records); returns ``(path, error)`` of the failed inputs,
    read back from the parts."""
    import pyarrow.parquet as pq

    from cnnkit.io.parquet import schema, to_row

    ds = _pipeline(items, task, **options)
    if ds is None:
        return []

    def typed(batch: dict[str, Any]) -> Any:
        import pyarrow as pa

        return pa.Table.from_pylist([to_row(json.loads(str(t))) for t in batch["record"]], schema=schema())

    before = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    with _job_failure():
        ds.map_batches(typed, batch_format="numpy", batch_size=None).write_parquet(os.fspath(folder))
    failed = []
    for name in sorted(set(os.listdir(folder)) - before):  # this run's parts, not an earlier run's or a README
        if name.endswith(".parquet"):
            table = pq.read_table(os.path.join(folder, name), columns=["path", "error"])
            paths, errors = table.column("path").to_pylist(), table.column("error").to_pylist()
            failed += [(p, e) for p, e in zip(paths, errors, strict=True) if e is not None]
    return failed
