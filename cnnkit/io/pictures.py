"""Where a run's per-input files go: one folder, atomic writes, a name per input that never collides.

Kept in the I/O layer (it knows files and inputs, not tasks) so the engine, the typed results
and every task share it without importing each other.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError
from cnnkit.io.files import atomic_path, file_ids
from cnnkit.io.sources import IN_MEMORY, Item, expand_sources

JPEG_MAX_SIDE = 65500  # libjpeg's limit on a side


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
    shard writing into the same folder. A file that is one of ``inputs`` is never replaced, and an in-memory
    input (``<image 0>`` in every call) never replaces an earlier call's file: it takes ``-2``, ``-3`` ….
    """

    def __init__(self, folder: str | os.PathLike, suffix: str = ".jpg", inputs: Any = None) -> None:
        """``inputs``: the run's sources or items, whose files must never be replaced."""
        self.folder = Path(folder)
        self.suffix = suffix
        if isinstance(inputs, (str, os.PathLike, Item)) or not isinstance(inputs, (Sequence, type(None))):
            inputs = [inputs]
        self._inputs: Sequence[Any] = inputs or []
        self._protected: set[tuple[int, int]] = set()
        self._listed = 0  # how many of ``inputs`` are in ``_protected``: a lazy stream's list grows

    @staticmethod
    def stem(source_path: str) -> str:
        """``img-1a2b3c4d`` for ``…/img.png``: stable across runs and processes, unique per input."""
        digest = hashlib.sha1(_fs_bytes(os.path.normpath(os.path.abspath(source_path)))).hexdigest()[:8]
        return f"{safe_name(Path(source_path).stem or 'image')}-{digest}"

    def target(self, source_path: str, suffix: str | None = None, *, sub: str | None = None, tag: str = "") -> Path:
        """``folder[/sub]/<stem><tag><suffix>`` for the input ``source_path``; refused if that file is an input."""
        folder, stem, end = (
            self.folder / sub if sub else self.folder,
            self.stem(source_path),
            f"{tag}{suffix or self.suffix}",
        )
        path = folder / f"{stem}{end}"
        n = 1
        while source_path.startswith(IN_MEMORY) and os.path.lexists(path):  # `<image 0>` of an earlier call: kept
            n += 1
            path = folder / f"{stem}-{n}{end}"
        if os.path.lexists(path) and self._is_input(path):
            raise CnnkitError(f"{path}: is one of the inputs; not overwritten (choose another `save_dir`)")
        return path

    def _is_input(self, path: Path) -> bool:
        """Whether ``path`` is one of the inputs (found lazily: only a name already taken asks)."""
        if self._listed < len(self._inputs):
            paths: list[str] = []
            for src in self._inputs[self._listed :]:
                if isinstance(src, Item) and src.data is None:
                    paths.append(src.path)
                elif isinstance(src, (str, os.PathLike)) and os.fspath(src) != "-":
                    paths += [it.path for it in expand_sources([src], recursive=True) if it.data is None]
            self._listed = len(self._inputs)
            self._protected.update(*(file_ids(p) for p in paths))
        st = os.lstat(path)
        return (st.st_dev, st.st_ino) in self._protected

    def save(
        self, image: Any, source_path: str, suffix: str | None = None, *, sub: str | None = None, tag: str = ""
    ) -> str:
        """Write the PIL ``image`` at :meth:`target` (JPEG for ``.jpg``, else PNG); returns its path. A picture
        JPEG cannot hold (a side over 65,500 pixels) is a PNG."""
        if (suffix or self.suffix) == ".jpg" and max(image.size) > JPEG_MAX_SIDE:
            suffix = ".png"
        path = self.target(source_path, suffix, sub=sub, tag=tag)
        with atomic_path(path) as tmp:
            image.save(tmp, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=92)
        return str(path)
