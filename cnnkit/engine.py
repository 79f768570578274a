"""The engine: the :class:`Predictor` protocol every task implements, and the loop that drives it.

Decoding and per-image preprocessing run in a thread pool, a bounded number of images ahead
of the forward pass, so the CPU decodes batch n+1 while the model runs batch n and at most two
batches are in flight however long the input list is. Records come out in input order; a file
that fails becomes a failed record and the run goes on.

Everything that belongs to one stream (its options, its save folder, a stateful predictor's
state such as tracks or tiles) lives on a :class:`StreamState` made per call of
:meth:`Predictor.stream` and handed to ``predict_batch`` and to the hooks
(:meth:`~Predictor.on_stream_start`, :meth:`~Predictor.on_batch_end`,
:meth:`~Predictor.on_stream_end`), never on the predictor, so one predictor serves any number of
streams, interleaved or not.
"""

from __future__ import annotations

import contextlib
import os
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnkit.checks import check_run, source_list
from cnnkit.errors import CnnkitError, DecodeError, OptionError, UsageError, reason_of
from cnnkit.io import DEFAULT_MAX_PIXELS
from cnnkit.io.decode import Decoded, decode, value_budget
from cnnkit.io.pictures import PictureSaver
from cnnkit.io.sources import Item, iter_sources, shard
from cnnkit.io.video import EncoderRefused, VideoInfo, VideoOptions, VideoSaver, expand_videos
from cnnkit.records import Record

if TYPE_CHECKING:
    from PIL.Image import Image

    from cnnkit.results import Result


@dataclass
class StreamState:
    """One stream's options and state, made by the engine per :meth:`Predictor.stream` call.

    ``data`` is the predictor's own per-stream state (a tracker's tracks, a tiler's cache): a
    predictor keeps what depends on the stream here, so two streams never share it.
    """

    batch_size: int = 8
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS
    saver: PictureSaver | None = None
    pictures: bool = False  # the decode threads keep each drafted input's full-size picture
    pixels: bool = True  # the decoded pixels are kept past preprocessing (saved, kept, or read by the predictor)
    items: Sequence[Item] = ()  # the listed inputs (a lazy stream's: the files taken so far); a video is one item
    video: VideoOptions = field(default_factory=VideoOptions)
    videos: dict[str, VideoInfo] = field(default_factory=dict)  # each opened video's size, rate and codec
    batches: int = 0  # batches finished so far
    data: dict[str, Any] = field(default_factory=dict)


class Predictor(ABC):
    """A loaded model for one task.

    Subclasses set ``task``, ``name`` and ``min_side`` (the decode size hint) and implement
    :meth:`preprocess` (one image, runs in a decode thread) and :meth:`predict_batch` (forward and
    postprocessing of a batch, one typed :class:`~cnnkit.results.Result` per image). Pictures are
    drawn by the result (:meth:`annotate`); :meth:`save_outputs` says what a save folder gets.
    A stateful predictor keeps its per-stream state on the :class:`StreamState` (hooks below).
    """

    task: str = ""
    name: str = ""
    min_side: int | None = None
    picture_suffix: str = ".jpg"  # the annotated picture's file type in a save folder

    @abstractmethod
    def preprocess(self, decoded: Decoded) -> Any:
        """One decoded image → the model's input (runs in a decode thread, beside the forward pass)."""

    @abstractmethod
    def predict_batch(self, inputs: list[Any], decoded: list[Decoded], state: StreamState) -> Sequence[Result]:
        """Forward and postprocess a batch: one result per input, in order."""

    def annotate(self, decoded: Decoded, record: Record) -> Image:
        """The picture a save writes: the record's result drawn on :meth:`Decoded.picture` (the input's own
        size, never the draft)."""
        if record.result is None:
            raise CnnkitError(f"{record.path}: no result to draw")
        return record.result.draw(decoded.picture())

    @property
    def input_side(self) -> int | None:
        """The side of the square each preprocessed input is at most (``None``: it varies with the image); the
        engine refuses a batch size whose one batch would pass the run's value budget."""
        return None

    @property
    def reads_pixels(self) -> bool:
        """Whether :meth:`predict_batch` reads the decoded pixels (a tiler, a tracker's camera-motion step), not
        only their size. A predictor that says no lets each go after :meth:`preprocess` when a run saves nothing;
        yes unless a predictor says so, as one that reads them would otherwise see a blank picture."""
        return True

    @property
    def saves_pictures(self) -> bool:
        """Whether a run with a save folder writes pictures, so the decode threads keep full-size images."""
        return True

    def save_outputs(self, saver: PictureSaver, decoded: Decoded, record: Record) -> None:
        """What a run with a save folder writes per image: the annotated picture (tasks may add files)."""
        record.extra["saved"] = saver.save(self.annotate(decoded, record), record.path)

    def save_files(self, saver: PictureSaver, decoded: Decoded, record: Record) -> None:
        """The files a run with a save folder writes per input besides its picture: none here; tasks with label
        files, crops or masks write them, a video frame's named by the frame (its picture is in the video)."""

    # -- per-stream hooks: no-ops here, for predictors with state (tiling, tracking) --------------
    def on_stream_start(self, state: StreamState) -> None:
        """Before the first image of a stream: check the stream's options, set up ``state.data``."""

    def on_batch_end(self, state: StreamState, records: list[Record]) -> None:
        """After a batch's records are made, before they are saved and yielded (in input order)."""

    def on_stream_end(self, state: StreamState) -> None:
        """After the last record, or when the stream is closed early or fails."""

    def stream(
        self,
        sources: Sequence[Any] | Item | str,
        *,
        batch_size: int = 8,
        workers: int = 2,
        recursive: bool = False,
        shard_spec: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        save_dir: str | os.PathLike | None = None,
        skip: set[str] | None = None,
        vid_stride: int = 1,
        start: float | None = None,
        end: float | None = None,
        max_frames: int | None = None,
        keep_pictures: bool = False,
    ) -> Iterator[Record]:
        """Records for ``sources`` (paths, folders, globs, ``-``, PIL/ndarray/tensor, videos, stream URLs),
        one by one, in input order: one per image, one per frame read from a video (``vid_stride``,
        ``start``/``end`` in seconds, ``max_frames`` choose which). Hooks run and outputs are saved here.
        ``keep_pictures``: a video frame's or in-memory image's record carries its pixels (``Record.picture``),
        which cannot be read again from a file (a report's thumbnails); off by default, since a caller that
        keeps every record would keep every frame.

        Videos become frames lazily (:func:`~cnnkit.io.video.expand_videos`); with a save folder each
        video's annotated frames go into one mp4 instead of a picture per frame.
        """
        check_run(
            batch_size,
            workers,
            max_pixels,
            recursive=recursive,
            keep_pictures=keep_pictures,
            save_dir=save_dir,
            skip=skip,
        )
        inputs = source_list(sources)
        outputs = [save_dir] if save_dir else []
        found = iter_sources(inputs, recursive=recursive, outputs=outputs)
        items: Iterable[Item]
        files: list[Item]  # the inputs read so far, whose files a save never replaces
        if isinstance(inputs, Iterator):  # read lazily: a camera loop or a dataset reader may never end
            files = []
            items = _noting((it for it in shard(found, shard_spec) if not skip or it.path not in skip), files)
        else:  # a list of sources is listed first: sorted, duplicates dropped
            items = files = [it for it in shard(list(found), shard_spec) if not skip or it.path not in skip]
        saver = PictureSaver(Path(save_dir), suffix=self.picture_suffix, inputs=files) if save_dir else None
        state = StreamState(
            batch_size=max(1, batch_size),
            workers=max(1, workers),
            max_pixels=max_pixels,
            saver=saver,
            pictures=saver is not None and self.saves_pictures,
            pixels=saver is not None or keep_pictures or self.reads_pixels,
            items=files,
            video=VideoOptions(vid_stride, start, end, max_frames),
        )
        _check_in_flight(self, state)
        frames = expand_videos(items, state.video, max_pixels=max_pixels, infos=state.videos)
        movies = VideoSaver(saver, state.video, state.videos) if saver is not None and self.saves_pictures else None
        self.on_stream_start(state)
        try:
            for batch in batches(self, frames, state):
                records = [record for record, _ in batch]
                self.on_batch_end(state, records)
                state.batches += 1
                for record, decoded in batch:
                    if keep_pictures and decoded is not None and record.ok and not _readable_again(record):
                        record.picture = decoded.picture()
                    if saver is not None and decoded is not None and record.ok:
                        if record.frame is None:
                            self.save_outputs(saver, decoded, record)
                        else:
                            if movies is not None:  # a video's frames: one annotated mp4 per video
                                try:
                                    movie = movies.write(
                                        record.path,
                                        np.asarray(self.annotate(decoded, record)),
                                        record.time_s,
                                        record.frame,
                                    )
                                except EncoderRefused as exc:  # said once, on this frame; its predictions stay
                                    record.error = f"annotated video not written: {exc}"
                                    movie = None
                                if movie is not None:
                                    record.extra["saved"] = movie
                            self.save_files(saver, decoded, record)
                    yield record
        except (KeyboardInterrupt, GeneratorExit, SystemExit):  # stopped early (Ctrl-C, `| head`, a closed
            if movies is not None:  # generator): the frames its records name are kept, the stop goes on
                with contextlib.suppress(Exception):
                    movies.finish()
            raise
        except BaseException:
            if movies is not None:
                movies.abort()
            raise
        else:
            if movies is not None:
                movies.finish()
        finally:
            self.on_stream_end(state)

    def __call__(self, sources: Any, *, stream: bool = False, **kwargs: Any) -> list[Record] | Iterator[Record]:
        """Records for ``sources`` as a list (``stream=True``: as :meth:`stream` yields them). ``kwargs`` are
        the run's options (``batch_size``, ``shard`` …); the model's (``topk``, ``conf`` …) were fixed when it
        was loaded, and naming one here is an :class:`OptionError`, as any other unknown keyword is."""
        import inspect

        if "shard" in kwargs:  # the task functions' name for it
            kwargs["shard_spec"] = kwargs.pop("shard")
        run = inspect.signature(self.stream).parameters
        unknown = sorted(k for k in kwargs if k not in run)
        if unknown:
            raise OptionError(
                tuple(unknown),
                "not an option of a run; a model's options are set when it is loaded (`cnnkit.load(task, …)`)",
            )
        records = self.stream(sources, **kwargs)
        return records if stream else list(records)


def _check_in_flight(predictor: Predictor, state: StreamState) -> None:
    """Refuse an input size (an option, or a checkpoint's metadata: a crop of 8192) whose batch alone is past
    the value budget, before anything is decoded: the run could not hold even one batch of them."""
    side = predictor.input_side
    if not side:
        return
    values = 3 * side * side * state.batch_size
    budget = value_budget(state.max_pixels)
    if values > budget:
        raise UsageError(
            f"{predictor.name}: inputs of {side}x{side} (`imgsz`, or the model's own size) with `batch_size` "
            f"{state.batch_size}: a batch in flight would hold {values:,} values, over the budget of {budget:,} "
            f"(from `max_pixels` {state.max_pixels:,}); lower `batch_size` or `imgsz`"
        )


def _noting(items: Iterable[Item], files: list[Item]) -> Iterator[Item]:
    """``items``, each file among them appended to ``files`` as it is taken (pixels in memory are not kept)."""
    for item in items:
        if item.data is None:
            files.append(item)
        yield item


def _readable_again(record: Record) -> bool:
    """Whether a record's picture can be read again from its path: an image file, not a frame or an array."""
    return record.frame is None and os.path.isfile(record.path)


def resolve_classes(classes: Sequence[int | str] | None, labels: Sequence[str]) -> list[int] | None:
    """The ``classes`` option of every predictor that keeps some classes only: ids or names → sorted
    class ids (``None``: keep all); a name or id the model does not have is an :class:`OptionError`."""
    if not classes:
        return None
    ids = []
    for c in classes:
        text = str(c).strip()
        if text.isdigit() and int(text) < len(labels):
            ids.append(int(text))
        elif text in labels:
            ids.append(list(labels).index(text))
        else:
            shown = ", ".join(labels[:12]) + (" …" if len(labels) > 12 else "")
            raise OptionError("classes", f"not a class of this model ({shown})", text)
    return sorted(set(ids))


def run(
    predictor: Predictor,
    items: Iterable[Item],
    *,
    batch_size: int = 8,
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pictures: bool = False,
) -> Iterator[tuple[Record, Decoded | None]]:
    """Yield ``(record, decoded)`` per item, in order; ``decoded`` is ``None`` on failure. No hooks, no saving.

    ``pictures``: the run saves pictures, so each drafted input also holds its full-size decode
    (:meth:`Decoded.picture`); only then, since that costs a full image per input in flight.
    """
    state = StreamState(
        batch_size=max(1, batch_size), workers=max(1, workers), max_pixels=max_pixels, pictures=pictures
    )
    for batch in batches(predictor, items, state):
        yield from batch


def _prepare(predictor: Predictor, item: Item, state: StreamState) -> tuple[Decoded, Any, float]:
    t0 = time.perf_counter()
    if item.error:
        raise DecodeError(item.error)
    decoded = decode(item.path, item.data, max_pixels=state.max_pixels, min_side=predictor.min_side)
    tensor = predictor.preprocess(decoded)
    if state.pictures:  # a drafted JPEG is decoded again at its own size here, beside the forward pass
        decoded.picture()
    if not state.pixels:  # two batches in flight would hold two batches of full-size pictures (GBs of scans)
        decoded.release()
        if item.data is not None:  # a video frame's or an array's pixels: its item, queued until its batch, held them
            object.__setattr__(item, "data", None)  # the one reference the engine keeps (Item is frozen for callers)
    return decoded, tensor, (time.perf_counter() - t0) * 1000.0


def _reason(exc: BaseException) -> str:
    text = reason_of(exc, 10_000)
    return text if isinstance(exc, CnnkitError) else f"{type(exc).__name__}: {text}"


Prepared = tuple[Decoded, Any, float]


def batches(
    predictor: Predictor, items: Iterable[Item], state: StreamState
) -> Iterator[list[tuple[Record, Decoded | None]]]:
    """``(record, decoded)`` pairs a batch at a time, in input order.

    At most two batches are in flight: while batch n waits for its decodes and runs forward,
    only batch n+1 is submitted to the decode threads.
    """
    size = state.batch_size
    source = iter(items)
    pending: deque[tuple[Item, Future[Prepared]]] = deque()
    with ThreadPoolExecutor(max_workers=state.workers, thread_name_prefix="cnnkit-decode") as pool:

        def refill(limit: int) -> None:
            while len(pending) < limit:
                item = next(source, None)
                if item is None:
                    return
                pending.append((item, pool.submit(_prepare, predictor, item, state)))

        try:
            refill(2 * size)
            while pending:
                chunk = [pending.popleft() for _ in range(min(size, len(pending)))]
                refill(size)
                results: list[tuple[Item, Prepared | BaseException]] = []
                for item, fut in chunk:
                    try:
                        results.append((item, fut.result()))
                    except Exception as exc:  # a bad file must not stop the batch
                        results.append((item, exc))
                yield _forward(predictor, results, state)
        finally:
            for _, fut in pending:
                fut.cancel()


def _forward(
    predictor: Predictor, results: list[tuple[Item, Prepared | BaseException]], state: StreamState
) -> list[tuple[Record, Decoded | None]]:
    """One batch's records: the forward pass over the inputs that decoded, a failed record for the rest."""
    good = [r for _, r in results if not isinstance(r, BaseException)]
    outputs: list[Result] = []
    forward_ms, error = 0.0, None
    if good:
        t0 = time.perf_counter()
        try:
            outputs = list(predictor.predict_batch([r[1] for r in good], [r[0] for r in good], state))
        except CnnkitError as exc:
            error = _reason(exc)
        forward_ms = (time.perf_counter() - t0) * 1000.0 / len(good)
        if error is None and len(outputs) != len(good):
            raise RuntimeError(
                f"{type(predictor).__name__}.predict_batch returned {len(outputs)} results for {len(good)} inputs"
            )
    out_iter = iter(outputs)
    batch: list[tuple[Record, Decoded | None]] = []
    for item, r in results:
        if isinstance(r, BaseException):
            batch.append(
                (
                    Record.failed(
                        item.path, predictor.task, predictor.name, _reason(r), frame=item.frame, time_s=item.time_s
                    ),
                    None,
                )
            )
            continue
        if error is not None:
            batch.append(
                (
                    Record.failed(
                        item.path, predictor.task, predictor.name, error, frame=item.frame, time_s=item.time_s
                    ),
                    None,
                )
            )
            continue
        decoded, _, prep_ms = r
        result = next(out_iter)
        batch.append(
            (
                Record(
                    path=item.path,
                    task=predictor.task,
                    model=predictor.name,
                    width=decoded.width,
                    height=decoded.height,
                    predictions=result.predictions(),
                    time_ms=prep_ms + forward_ms,
                    result=result,
                    frame=item.frame,
                    time_s=item.time_s,
                ),
                decoded,
            )
        )
    return batch
