"""The Predictor contract every task implements, and the loop that saves pictures."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.io import DEFAULT_MAX_PIXELS
from cnnkit.io.decode import Decoded
from cnnkit.io.files import atomic_path, file_ids
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
    def annotate(self, decoded: Decoded, record: Record) -> Any:
        """The picture a save writes, drawn on :meth:`Decoded.picture` (the input's own size, never the draft)."""

    @property
    def saves_pictures(self) -> bool:
        """Whether a run with a save folder writes pictures, so the decode threads keep full-size images."""
        return True

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
        saver = PictureSaver(save_dir, inputs=items) if save_dir else None
        pictures = saver is not None and self.saves_pictures
        for record, decoded in run(self, items, batch_size=batch_size, workers=workers, max_pixels=max_pixels,
                                   pictures=pictures):
            if saver and decoded is not None:
                self.save_outputs(saver, decoded, record)
            yield record

    def save_outputs(self, saver: "PictureSaver", decoded: Decoded, record: Record) -> None:
        """What a run with a save folder writes per image: the annotated picture (tasks may add files)."""
        record.extra["saved"] = saver.save(self.annotate(decoded, record), record.path)

    def __call__(self, sources: Any, **kwargs: Any) -> list[Record]:
        return list(self.stream(sources, **kwargs))


def safe_name(text: str, limit: int = 50) -> str:
    """``text`` as one file-name component: no separators, control or reserved characters, never ``.``/``..``."""
    name = "".join("_" if ord(c) < 32 or c in '<>:"/\\|?*' else c for c in text)[:limit]
    return "_" if name in ("", ".", "..") else name


def _fs_bytes(path: str) -> bytes:
    try:
        return os.fsencode(path)
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogatepass")


class PictureSaver:
    """Writes the files a run saves per input into a folder, atomically, under names of their own.

    Every name is ``<stem>-<8 hex of sha1(absolute input path)>``: ``a/img.png`` and ``b/img.png``
    never share a picture, and the same input maps to the same name in a resume or in another
    shard writing into the same folder. A file that is one of ``inputs`` is never replaced.
    """

    def __init__(self, folder: str | os.PathLike, suffix: str = ".jpg", inputs: Any = None) -> None:
        """``inputs``: the run's sources or items, whose files must never be replaced."""
        self.folder = Path(folder)
        self.suffix = suffix
        if isinstance(inputs, (str, os.PathLike, Item)) or not isinstance(inputs, (Sequence, type(None))):
            inputs = [inputs]
        self._inputs: Sequence[Any] = inputs or []
        self._protected: set[tuple[int, int]] | None = None

    @staticmethod
    def stem(source_path: str) -> str:
        """``img-1a2b3c4d`` for ``…/img.png``: stable across runs and processes, unique per input."""
        digest = hashlib.sha1(_fs_bytes(os.path.normpath(os.path.abspath(source_path)))).hexdigest()[:8]
        return f"{safe_name(Path(source_path).stem or 'image')}-{digest}"

    def target(self, source_path: str, suffix: str | None = None, *, sub: str | None = None, tag: str = "") -> Path:
        """``folder[/sub]/<stem><tag><suffix>`` for the input ``source_path``; refused if that file is an input."""
        path = (self.folder / sub if sub else self.folder) / f"{self.stem(source_path)}{tag}{suffix or self.suffix}"
        if os.path.lexists(path) and self._is_input(path):
            raise CnnkitError(f"{path}: is one of the inputs; not overwritten (choose another --save-dir)")
        return path

    def _is_input(self, path: Path) -> bool:
        """Whether ``path`` is one of the inputs (found lazily: only a name already taken asks)."""
        if self._protected is None:
            paths: list[str] = []
            for src in self._inputs:
                if isinstance(src, Item) and src.data is None:
                    paths.append(src.path)
                elif isinstance(src, (str, os.PathLike)) and os.fspath(src) != "-":
                    paths += [it.path for it in expand_sources([src], recursive=True) if it.data is None]
            self._protected = set().union(*(file_ids(p) for p in paths))
        st = os.lstat(path)
        return (st.st_dev, st.st_ino) in self._protected

    def save(self, image: Any, source_path: str) -> str:
        path = self.target(source_path)
        with atomic_path(path) as tmp:
            image.save(tmp, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
        return str(path)
