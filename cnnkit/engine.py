"""The shared runner: drives any :class:`~cnnkit.tasks.base.Predictor` over any items.

Decoding and per-image preprocessing run in a thread pool, a bounded number of
images ahead of the forward pass, so the CPU decodes batch n+1 while the model runs
batch n and memory stays flat however long the input list is. Records come out in
input order; a file that fails becomes a failed record and the run goes on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError, DecodeError
from cnnkit.io import DEFAULT_MAX_PIXELS
from cnnkit.io.decode import Decoded, decode
from cnnkit.io.sources import Item
from cnnkit.records import Record

if TYPE_CHECKING:
    from cnnkit.tasks.base import Predictor


def _prepare(predictor: "Predictor", item: Item, max_pixels: int, pictures: bool) -> tuple[Decoded, Any, float]:
    t0 = time.perf_counter()
    if item.error:
        raise DecodeError(item.error)
    decoded = decode(item.path, item.data, max_pixels=max_pixels, min_side=predictor.min_side)
    tensor = predictor.preprocess(decoded)
    if pictures:  # a drafted JPEG is decoded again at its own size here, beside the forward pass
        decoded.picture()
    return decoded, tensor, (time.perf_counter() - t0) * 1000.0


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if isinstance(exc, CnnkitError) else f"{type(exc).__name__}: {text}"


def run(
    predictor: "Predictor",
    items: Iterable[Item],
    *,
    batch_size: int = 8,
    workers: int = 2,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pictures: bool = False,
) -> Iterator[tuple[Record, Decoded | None]]:
    """Yield ``(record, decoded)`` per item, in order; ``decoded`` is ``None`` on failure.

    ``pictures``: the run saves pictures, so each drafted input also holds its full-size decode
    (:meth:`Decoded.picture`); only then, since that costs a full image per input in flight.
    """
    batch_size = max(1, batch_size)
    ahead = batch_size * 2
    source = iter(items)
    pending: deque[tuple[Item, Future]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="cnnkit-decode") as pool:

        def refill() -> None:
            while len(pending) < ahead:
                item = next(source, None)
                if item is None:
                    return
                pending.append((item, pool.submit(_prepare, predictor, item, max_pixels, pictures)))

        try:
            refill()
            while pending:
                chunk = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                refill()
                results: list[tuple[Item, Any]] = []
                for item, fut in chunk:
                    try:
                        results.append((item, fut.result()))
                    except Exception as exc:  # a bad file must not stop the batch
                        results.append((item, exc))
                yield from _forward(predictor, results)
        finally:
            for _, fut in pending:
                fut.cancel()


def _forward(predictor: "Predictor", results: list[tuple[Item, Any]]) -> Iterator[tuple[Record, Decoded | None]]:
    good = [(item, r) for item, r in results if not isinstance(r, BaseException)]
    outputs: list[list[dict[str, Any]]] = []
    forward_ms, error = 0.0, None
    if good:
        t0 = time.perf_counter()
        try:
            outputs = predictor.predict_batch([r[1] for _, r in good], [r[0] for _, r in good])
        except CnnkitError as exc:
            error = _reason(exc)
        forward_ms = (time.perf_counter() - t0) * 1000.0 / len(good)
    out_iter = iter(outputs)
    for item, r in results:
        if isinstance(r, BaseException):
            yield Record.failed(item.path, predictor.task, predictor.name, _reason(r)), None
            continue
        decoded, _, prep_ms = r
        if error is not None:
            yield Record.failed(item.path, predictor.task, predictor.name, error), None
            continue
        preds = next(out_iter)
        rec = Record(
            path=item.path, task=predictor.task, model=predictor.name, width=decoded.width,
            height=decoded.height, predictions=preds, time_ms=prep_ms + forward_ms,
        )
        yield rec, decoded
