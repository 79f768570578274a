"""The Predictor contract every task implements, and the loop that saves pictures."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnnkit.io import DEFAULT_MAX_PIXELS
from cnnkit.io.decode import Decoded
from cnnkit.io.files import atomic_path
from cnnkit.io.sources import Item, expand_sources, shard
from cnnkit.records import Record


class Predictor(ABC):
    """A loaded model for one task.

    Subclasses set ``task``, ``name`` and ``min_side`` (the decode size hint) and
    implement :meth:`preprocess` (one image, runs in a decode thread),
    :meth:`predict_batch` (forward + postprocess for a batch) and :meth:`annotate`.
    """

    task: str = ""
    name: str = ""
    min_side: int | None = None

    @abstractmethod
    def preprocess(self, decoded: Decoded) -> Any: ...

    @abstractmethod
    def predict_batch(self, inputs: list[Any], decoded: list[Decoded]) -> list[list[dict[str, Any]]]: ...

    @abstractmethod
    def annotate(self, decoded: Decoded, record: Record) -> Any: ...

    def stream(
        self, sources: Sequence[Any] | Item | str, *, batch_size: int = 8, workers: int = 2,
        recursive: bool = False, shard_spec: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
        save_dir: str | os.PathLike | None = None, skip: set[str] | None = None,
    ) -> Iterator[Record]:
        """Records for ``sources`` (paths, folders, globs, ``-``, PIL/ndarray/tensor), one by one."""
        from cnnkit.engine import run

        if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, Sequence):
            sources = [sources]
        items = shard(expand_sources(sources, recursive=recursive), shard_spec)
        if skip:
            items = [it for it in items if it.path not in skip]
        saver = PictureSaver(save_dir) if save_dir else None
        for record, decoded in run(self, items, batch_size=batch_size, workers=workers, max_pixels=max_pixels):
            if saver and decoded is not None:
                self.save_outputs(saver, decoded, record)
            yield record

    def save_outputs(self, saver: "PictureSaver", decoded: Decoded, record: Record) -> None:
        """What a run with a save folder writes per image: the annotated picture (tasks may add files)."""
        record.extra["saved"] = saver.save(self.annotate(decoded, record), record.path)

    def __call__(self, sources: Any, **kwargs: Any) -> list[Record]:
        return list(self.stream(sources, **kwargs))


class PictureSaver:
    """Writes annotated pictures into a run folder, atomically, never two under one name."""

    def __init__(self, folder: str | os.PathLike, suffix: str = ".jpg") -> None:
        self.folder = Path(folder)
        self.suffix = suffix
        self._used: set[str] = set()

    def target(self, source_path: str, suffix: str | None = None) -> Path:
        stem = Path(source_path).stem or "image"
        name, n = f"{stem}{suffix or self.suffix}", 1
        while name in self._used:
            n += 1
            name = f"{stem}-{n}{suffix or self.suffix}"
        self._used.add(name)
        return self.folder / name

    def save(self, image: Any, source_path: str) -> str:
        path = self.target(source_path)
        with atomic_path(path) as tmp:
            image.save(tmp, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
        return str(path)
