"""Turn CLI arguments (or Python objects) into an ordered, sharded list of input items.

Files, folders (``recursive``), quoted globs, URLs (``s3://``, ``gs://``, ``http(s)://``,
``file://``: prefixes and globs too, listed by :mod:`cnnkit.io.remote`) and ``-`` (paths read from
stdin, one per line) mix freely. Folders and globs expand in sorted order and keep only image
extensions; a file named explicitly is always kept (it fails later with a reason if
it is not an image). Duplicates are dropped, keeping the first place: one file is one
input however many symbolic links or spellings (``./a``, ``d/../a``) reach it; hard links
stay separate inputs, as separate names of a file.

Folders and ``**`` are walked by :func:`_tree`, not ``os.walk``/``glob``: symbolic links
to folders are followed, but never into a folder that is already being listed, so a
link to ``..`` or to itself becomes one failed item instead of a loop. A walk does not enter
cnnkit's own output folders: ``runs/`` of the working folder (where ``--save`` and friends write)
and the run's ``--save-dir``, so ``cnnkit detect . -r --save`` run twice reads the same inputs
twice. Naming such a folder as a source still reads it.
"""

from __future__ import annotations

import errno
import fnmatch
import heapq
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, overload

from cnnkit.errors import OptionError
from cnnkit.io import remote  # URLs (s3://, gs://, http(s)://, file://): the remote-read layer
from cnnkit.io.files import forget_folders, real_path

IN_MEMORY = "<image "  # the start of the path an in-memory input (array, tensor, PIL image without a file) gets

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm"}
    | {".avif", ".jp2", ".mpo", ".heic", ".heif"}  # Pillow reads these (HEIC/HEIF with pillow-heif)
)
_GLOB_CHARS = set("*?[")
LOOP = "symlink loop, skipped"
OUTPUTS = "runs"  # the folder under the working folder where cnnkit writes by default (runs/<task>/exp …)

log = logging.getLogger("cnnkit")
Keys = frozenset[tuple[int, int]]

Hit = tuple[str, "str | None"]  # a path, and why it gives no image (None: it is an input)


@dataclass(frozen=True)
class Item:
    """One input: ``path`` names it in records; ``data`` holds an in-memory image if any;
    ``error`` says why a named source gave nothing (an empty folder, a glob that matched nothing)."""

    path: str
    data: Any = None
    error: str | None = None
    frame: int | None = None  # a video frame: its index in the video named by ``path`` (cnnkit.io.video)
    time_s: float | None = None  # and its presentation time
    unlisted: bool = False  # a whole source failed (a folder or prefix that lists nothing): every shard says so


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_input_name(name: str) -> bool:
    """Images, and videos (:mod:`cnnkit.io.video` reads them frame by frame): what folders and globs keep."""
    from cnnkit.io.video import is_video_name

    return is_image_name(name) or is_video_name(name)


def _key(path: str) -> tuple[int, int] | None:
    """The (device, inode) a path leads to, or None when it leads nowhere."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def _real(path: str) -> Any:
    """What makes two names one input: the path with symbolic links resolved, for a name that leads to something.
    One that does not is only itself: `a.png/` (a file as a folder) or a broken link would take the key of the file
    it resolves to, and a later good spelling of it would be dropped."""
    try:
        return real_path(path) if os.path.exists(path) else ("path", path)
    except (OSError, ValueError):  # a NUL byte from a stdin list: the name is all there is
        return ("path", path)


@dataclass
class _Listing:
    files: list[str]  # entries that are not folders (links followed), sorted
    folders: list[str]  # sub-folders (links followed), sorted
    loops: list[str]  # links that resolve to themselves (ELOOP)


def _scan(folder: str, hidden: bool) -> _Listing:
    """One folder's entries; raises OSError when the folder cannot be listed."""
    out = _Listing([], [], [])
    with os.scandir(folder) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        if not hidden and entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                out.loops.append(entry.path)
            else:
                out.files.append(entry.path)  # named like an image, it fails later with its own reason
            continue
        (out.folders if is_dir else out.files).append(entry.path)
    return out


def _outer_keys(root: str) -> tuple[tuple[int, int], ...]:
    """The folders that hold ``root``: a link to one of them leads back to ``root``."""
    keys: list[tuple[int, int]] = []
    path = os.path.realpath(root)
    while True:
        parent = os.path.dirname(path)
        if parent == path:
            return tuple(keys)
        key = _key(parent)
        if key is not None:
            keys.append(key)
        path = parent


def _tree(root: str, skip: Keys = frozenset()) -> Iterator[tuple[str, _Listing | None, str | None]]:
    """``(folder, listing, None)`` for ``root`` and every folder below it, depth first in name order,
    or ``(path, None, reason)`` for a folder that cannot be listed or a link back into the walk.
    Hidden entries (``.thumbnails/``, ``.Trash-1000/``, macOS's ``._x.jpg`` beside each photo) are left out,
    as a glob leaves them out.

    Each folder is listed once (device + inode), and a link to a folder on the current path
    (``..``, itself, a parent, or a folder that holds ``root``) is reported instead of followed,
    so the walk always ends and never climbs out above ``root``. Folders in ``skip`` (cnnkit's outputs)
    are not entered, with one log line each.
    """
    root_key = _key(root)
    if root_key is None:
        return
    visited = {root_key}
    stack: list[tuple[str, tuple[tuple[int, int], ...]]] = [(root, (*_outer_keys(root), root_key))]
    while stack:
        folder, path_keys = stack.pop()
        try:
            listing = _scan(folder, hidden=False)
        except OSError as exc:
            yield folder, None, f"cannot list folder ({exc.strerror or exc})"
            continue
        yield folder, listing, None
        for loop in listing.loops:
            yield loop, None, LOOP
        children = []
        for sub in listing.folders:
            key = _key(sub)
            if key is None:
                continue
            if key in path_keys:
                yield sub, None, LOOP
            elif key in skip:
                log.info("%s: not read (cnnkit's output folder; name it as a source to read it)", sub)
            elif key not in visited:
                visited.add(key)
                children.append((sub, path_keys + (key,)))
        stack.extend(reversed(children))


def files_below(root: str | os.PathLike) -> Iterator[str]:
    """Every file under ``root`` that is not a folder, depth first in name order, following links to folders (a
    dataset split may link in a folder kept elsewhere, as ultralytics' glob follows it) but never round a loop;
    hidden entries left out. Lazily: a check for any image stops at the first."""
    return (p for _, listing, _ in _tree(os.fspath(root)) if listing is not None for p in listing.files)


def _walk(folder: str, recursive: bool, skip: Keys = frozenset()) -> list[Hit]:
    """Image files in ``folder`` (and below it with ``recursive``, not entering ``skip``), with failed hits
    for bad entries."""
    if not recursive:
        listing = _scan(folder, hidden=False)
        hits: list[Hit] = [(p, None) for p in listing.files if is_input_name(p)]
        hits += [(p, LOOP) for p in listing.loops if is_input_name(p)]
        return sorted(hits, key=lambda hit: os.path.basename(hit[0]))  # a loop in its place, as a glob lists it
    found: list[Hit] = []
    for path, tree_listing, reason in _tree(folder, skip=skip):
        if tree_listing is None:
            found.append((path, reason))
        else:
            found.extend((p, None) for p in tree_listing.files if is_input_name(p))
    return found


def _has_magic(part: str) -> bool:
    return any(c in part for c in _GLOB_CHARS)


def _split_pattern(pattern: str) -> tuple[str, list[str]]:
    """The literal folder a pattern starts from, and the components after it (the first has magic)."""
    anchor = os.sep if pattern.startswith(os.sep) else ""
    parts = [p for p in pattern.split(os.sep) if p]
    i = 0
    while i < len(parts) - 1 and not _has_magic(parts[i]):
        i += 1
    return (os.path.join(anchor, *parts[:i]) if anchor or i else ""), parts[i:]


def _matches(name: str, part: str) -> bool:
    """``glob`` rules: ``*`` and ``?`` do not match a leading dot unless the pattern has one."""
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatch(name, part)


def _glob(pattern: str, recursive: bool, skip: Keys = frozenset()) -> list[Hit]:
    """Paths matching ``pattern`` (``**`` = any folders below, with ``recursive``, not entering ``skip``),
    loop-safe."""
    base, parts = _split_pattern(pattern)
    found: list[Hit] = []
    work = [(base, 0)]  # a heap: of two links to one folder, the name that sorts first is expanded
    expanded: set[tuple[tuple[int, int] | None, int]] = set()
    while work:
        folder, i = heapq.heappop(work)
        here = folder or os.curdir
        seen_at = (_key(here), i)
        if seen_at[0] is not None:
            if seen_at in expanded:
                continue  # the same folder, reached again by another link, at the same pattern position
            expanded.add(seen_at)
        part, last = parts[i], i == len(parts) - 1
        if part == "**" and recursive:
            for path, listing, reason in _tree(here, skip=skip):
                if listing is None:
                    found.append((_shown(folder, path), reason))
                elif last:
                    found.extend((_shown(folder, p), None) for p in listing.files)
                else:
                    heapq.heappush(work, (_shown(folder, path), i + 1))
            continue
        if not _has_magic(part):
            path = os.path.join(folder, part)
            if last and os.path.lexists(path):
                found.append((path, None))
            elif not last and os.path.isdir(path):
                heapq.heappush(work, (path, i + 1))
            continue
        try:
            listing = _scan(here, hidden=part.startswith("."))
        except OSError:
            continue  # glob skips folders it cannot list
        if last:
            found.extend(
                (_shown(folder, p), LOOP)
                for p in listing.loops
                if _matches(os.path.basename(p), part) and is_input_name(p)
            )
        names = listing.files + listing.folders if last else listing.folders
        for p in names:
            name = os.path.basename(p)
            if not _matches(name, part):
                continue
            if last:
                found.append((os.path.join(folder, name), None))
            else:
                heapq.heappush(work, (os.path.join(folder, name), i + 1))
    return found


def _shown(folder: str, path: str) -> str:
    """A path found by walking ``folder or "."``, spelled as ``glob`` does: no ``./`` before a relative pattern."""
    if folder:
        return path
    return "" if path == os.curdir else path[2:] if path.startswith(os.curdir + os.sep) else path


def _expand_one(arg: str, recursive: bool, skip: Keys = frozenset()) -> tuple[list[Hit], str | None]:
    """The image paths ``arg`` stands for (failed hits among them), or a reason why it stands for none."""
    from cnnkit.io.video import is_stream_url

    if is_stream_url(arg):  # a webcam index or a URL: read by cnnkit.io.video, not a file or a glob
        return [(arg, None)], None
    if not arg.strip():  # `cnnkit classify "$DIR"` with DIR unset
        return [], "an empty name is no file or folder"
    if arg.endswith(os.sep) and not os.path.lexists(arg.rstrip(os.sep) or os.sep):
        return [], "no such folder"
    if os.path.isdir(arg):
        try:
            hits = _walk(arg, recursive, skip)
        except OSError as exc:
            return [], f"cannot list folder ({exc.strerror or exc})"
        hint = "" if recursive else " (use `recursive=True` for sub-folders)"
        return hits, None if any(r is None for _, r in hits) else f"folder has no image files{hint}"
    if any(c in arg for c in _GLOB_CHARS) and not os.path.lexists(arg):
        hits = sorted(
            (
                (p, r)
                for p, r in _glob(arg, recursive, skip)
                if r is not None or (is_input_name(p) and not os.path.isdir(p))
            ),
            key=lambda hit: hit[0],
        )
        return hits, None if any(r is None for _, r in hits) else "pattern matches no image files"
    return [(arg, None)], None


def expand_sources(
    sources: Iterable[Any],
    *,
    recursive: bool = False,
    stdin: TextIO | None = None,
    outputs: Sequence[str | os.PathLike] = (),
) -> list[Item]:
    """Expand ``sources`` into items; non-path objects (PIL, ndarray, tensor) become in-memory items.

    A recursive walk enters neither ``./runs`` nor the folders in ``outputs`` (the run's own save folder),
    so one run's pictures are not the next run's inputs."""
    return list(iter_sources(sources, recursive=recursive, stdin=stdin, outputs=outputs))


def iter_sources(
    sources: Iterable[Any],
    *,
    recursive: bool = False,
    stdin: TextIO | None = None,
    outputs: Sequence[str | os.PathLike] = (),
) -> Iterator[Item]:
    """:func:`expand_sources` one source at a time: a generator of sources (a camera loop, a dataset
    reader) is read only as far as the items are taken."""
    items: list[Item] = []  # the current source's items, handed out before the next source is read
    seen: set[Any] = set()
    forget_folders()
    skip = frozenset(k for k in (_key(os.fspath(p)) for p in (OUTPUTS, *outputs)) if k is not None)

    def add(path: str, data: Any = None, error: str | None = None, unlisted: bool = False) -> None:
        if data is None:
            key = (
                ("url", remote.key(path))
                if remote.is_remote(path)
                else _real(path)
                if error is None
                else ("path", path)
            )
            if key in seen:
                return
            seen.add(key)
        items.append(Item(path, data, error, unlisted=unlisted))

    def add_arg(arg: str) -> None:
        if remote.is_remote(arg):
            arg = remote.normal(arg)
        hits, error = remote.expand(arg, recursive) if remote.is_remote(arg) else _expand_one(arg, recursive, skip)
        if error:
            add(arg, error=error, unlisted=True)
        for path, reason in hits:
            add(path, error=reason)

    for i, src in enumerate(sources):
        if isinstance(src, os.PathLike):
            src = os.fspath(src)
        if isinstance(src, Item):
            add(src.path, src.data, src.error)
        elif isinstance(src, str) and src == "-":
            listed = False
            for line in stdin if stdin is not None else sys.stdin:
                line = line.rstrip("\r\n")
                if line.strip():
                    listed = True
                    add_arg(line)
                    yield from items
                    items.clear()
            if not listed:  # as an empty folder: `find … | cnnkit classify -` that found nothing is no success
                add("-", error="stdin gave no paths", unlisted=True)
        elif isinstance(src, str):
            add_arg(src)
        elif isinstance(src, int) and not isinstance(src, bool):  # a camera's index, as ultralytics' source=0
            add_arg(str(src))
        elif src is None:  # a hole in a list (a failed read upstream): its own failure, not a missing file
            add(f"{IN_MEMORY}{i}>", error="None is not an image (no input at this place in the list)")
        else:  # pixels in memory (a PIL image too: edited or not, its pixels are what is read, not its file)
            add(f"{IN_MEMORY}{i}>", src)
        yield from items
        items.clear()


MAX_SHARDS = 1_000_000  # more shards than any job array has machines


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"K/N"`` (1 ≤ K ≤ N) → ``(K, N)``; ``None`` passes through."""
    if spec is None:
        return None
    try:
        k_text, n_text = spec.split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise OptionError("shard", "expected K/N, e.g. 1/4", spec) from None
    if n < 1 or not 1 <= k <= n:
        raise OptionError("shard", "need 1 <= K <= N", spec)
    if n > MAX_SHARDS:
        raise OptionError("shard", f"N is at most {MAX_SHARDS:,}", spec)
    return k, n


@overload
def shard(items: Sequence[Item], spec: str | tuple[int, int] | None) -> list[Item]: ...
@overload
def shard(items: Iterator[Item], spec: str | tuple[int, int] | None) -> Iterator[Item]: ...
def shard(items: Iterable[Item], spec: str | tuple[int, int] | None) -> list[Item] | Iterator[Item]:
    """The K-th of N interleaved slices: every input lands in exactly one shard (a list of a sequence, lazily of
    an iterator). A source that failed whole (:attr:`Item.unlisted`: a folder or bucket that cannot be listed)
    stood for inputs of every shard: each shard gets its failure, so no job of an array ends in success with
    its slice silently missing."""
    parsed = parse_shard(spec) if isinstance(spec, str) or spec is None else spec
    k, n = parsed or (1, 1)

    def taken() -> Iterator[Item]:
        inputs = 0
        for item in items:
            if item.unlisted:
                yield item
                continue
            if inputs % n == k - 1:
                yield item
            inputs += 1

    return taken() if isinstance(items, Iterator) else list(taken())
