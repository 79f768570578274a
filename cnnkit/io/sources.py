"""Turn CLI arguments (or Python objects) into an ordered, sharded list of input items.

Files, folders (``recursive``), quoted globs and ``-`` (paths read from stdin, one per
line) mix freely. Folders and globs expand in sorted order and keep only image
extensions; a file named explicitly is always kept (it fails later with a reason if
it is not an image). Duplicates are dropped, keeping the first place.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cnnkit.errors import UsageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm"}
)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Item:
    """One input: ``path`` names it in records; ``data`` holds an in-memory image if any;
    ``error`` says why a named source gave nothing (an empty folder, a glob that matched nothing)."""

    path: str
    data: Any = None
    error: str | None = None


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk(folder: Path, recursive: bool) -> list[str]:
    found: list[str] = []
    if recursive:
        for root, dirs, files in os.walk(folder, followlinks=False):
            dirs.sort()
            found.extend(os.path.join(root, f) for f in sorted(files) if is_image_name(f))
    else:
        with os.scandir(folder) as it:
            found = sorted(e.path for e in it if is_image_name(e.name) and not e.is_dir())
    return found


def _expand_one(arg: str, recursive: bool) -> tuple[list[str], str | None]:
    """The image paths ``arg`` stands for, or a reason why it stands for none."""
    path = Path(arg)
    if path.is_dir():
        try:
            found = _walk(path, recursive)
        except OSError as exc:
            return [], f"cannot list folder ({exc.strerror or exc})"
        hint = "" if recursive else " (use --recursive for sub-folders)"
        return found, None if found else f"folder has no image files{hint}"
    if any(c in arg for c in _GLOB_CHARS) and not path.exists():
        found = sorted(p for p in glob.glob(arg, recursive=recursive) if is_image_name(p) and not os.path.isdir(p))
        return found, None if found else "pattern matches no image files"
    return [arg], None


def expand_sources(
    sources: Sequence[Any], *, recursive: bool = False, stdin: TextIO | None = None
) -> list[Item]:
    """Expand ``sources`` into items; non-path objects (PIL, ndarray, tensor) become in-memory items."""
    items: list[Item] = []
    seen: set[str] = set()

    def add(path: str, data: Any = None, error: str | None = None) -> None:
        if data is None:
            if path in seen:
                return
            seen.add(path)
        items.append(Item(path, data, error))

    def add_arg(arg: str) -> None:
        found, error = _expand_one(arg, recursive)
        if error:
            add(arg, error=error)
        for p in found:
            add(p)

    for i, src in enumerate(sources):
        if isinstance(src, Item):
            add(src.path, src.data, src.error)
            continue
        if isinstance(src, os.PathLike):
            src = os.fspath(src)
        if not isinstance(src, str):
            add(getattr(src, "filename", None) or f"<image {i}>", src)
            continue
        if src == "-":
            stream = stdin if stdin is not None else sys.stdin
            for line in stream:
                line = line.rstrip("\r\n")
                if line.strip():
                    add_arg(line)
            continue
        add_arg(src)
    return items


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"K/N"`` (1 ≤ K ≤ N) → ``(K, N)``; ``None`` passes through."""
    if spec is None:
        return None
    try:
        k_text, n_text = spec.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise UsageError(f"--shard {spec!r}: expected K/N, e.g. 1/4") from None
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"--shard {spec!r}: need 1 <= K <= N")
    return k, n


def shard(items: Sequence[Item], spec: str | tuple[int, int] | None) -> list[Item]:
    """The K-th of N interleaved slices: every item lands in exactly one shard."""
    parsed = parse_shard(spec) if isinstance(spec, str) or spec is None else spec
    if parsed is None:
        return list(items)
    k, n = parsed
    return [it for i, it in enumerate(items) if i % n == k - 1]


def skip_done(items: Iterable[Item], done: set[str]) -> list[Item]:
    return [it for it in items if it.path not in done]
