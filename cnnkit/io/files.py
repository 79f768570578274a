"""Atomic writes and run folders: nothing that existed is overwritten silently."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError


def real_path(path: str) -> str:
    """``path`` with symbolic links resolved (:func:`os.path.realpath`), each folder resolved once per run (a new
    listing of sources forgets them: :func:`forget_folders`): a resume keys every record by it, and resolving
    every part of every path again took 28× as long."""
    folder, name = os.path.split(path)
    if name in ("", ".", ".."):
        return os.path.realpath(path)
    real = os.path.join(_real_folder(os.path.join(os.getcwd(), folder)), name)
    return os.path.realpath(real) if os.path.islink(real) else real


@functools.lru_cache(maxsize=4096)
def _real_folder(folder: str) -> str:
    return os.path.realpath(folder)


def forget_folders() -> None:
    """Resolve folders afresh: a link may point elsewhere since the last run in this process."""
    _real_folder.cache_clear()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AlreadyExists(CnnkitError):
    """The target of a write that must not replace anything exists (or appeared meanwhile)."""


def write_error(path: str | os.PathLike, exc: OSError, verb: str = "cannot write") -> CnnkitError:
    """``<file>: cannot write (No space left on device)``: an ``OSError`` as the one-line error users see."""
    return CnnkitError(f"{path}: {verb} ({exc.strerror or exc})")


def publish(tmp: str | os.PathLike, final: str | os.PathLike, *, overwrite: bool) -> None:
    """Move a finished temporary file to ``final``; without ``overwrite`` this fails if ``final`` exists.

    The exclusive step is ``os.link`` (it cannot replace a file that appeared since the run
    started, unlike ``os.replace``); where hard links are not supported, ``O_CREAT|O_EXCL``
    reserves the name first.
    """
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise AlreadyExists(f"{final}: already exists (pass `exist_ok=True` to overwrite)") from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        try:
            os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise AlreadyExists(f"{final}: already exists (pass `exist_ok=True` to overwrite)") from None
        os.replace(tmp, final)
        return
    os.unlink(tmp)


_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.EMLINK, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}


def through_link(path: str | os.PathLike) -> Path:
    """The file a symbolic link names, as a shell's ``>`` writes through it (a rename onto the link would
    replace the link with a file and leave its target stale); any other ``path`` as it is. Only for a file the
    user named (``--output``): files cnnkit names itself (a dataset's, a run folder's) replace a planted link."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it to ``path``.

    A crash or Ctrl-C leaves the old file (or none) untouched, never half a file. Without
    ``overwrite`` a file at ``path`` is never replaced, even one created while the body ran.
    A full disk or a read-only folder becomes a one-line :class:`CnnkitError`.
    """
    final = Path(path)
    if not overwrite and (final.exists() or final.is_symlink()):
        raise AlreadyExists(f"{final}: already exists (pass `exist_ok=True` to overwrite)")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        # the name cut to 200 bytes: a final name near the 255-byte limit must not fail only once the run is done
        stem = os.fsencode(final.name)[:200].decode(errors="ignore")
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise write_error(final, exc) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # a writer that made the file again (safetensors) made it 0600
        publish(tmp_path, final, overwrite=overwrite)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and not isinstance(exc, BrokenPipeError):
            raise write_error(final, exc) from exc
        raise


def first_free(path: str | os.PathLike, write: Callable[[Path, bool], Any], *, overwrite: bool, numbered: bool) -> Path:
    """``write(target, overwrite)`` into ``path``, or with ``numbered`` (a default name) into the next free
    ``NAME-2.ext``, ``NAME-3.ext`` … when it is taken, as run folders go ``exp``, ``exp2``. Each try is
    exclusive (``write`` raises :class:`AlreadyExists`), so two runs at once get two files."""
    path = Path(path)
    n = 1
    while True:
        target = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            write(target, overwrite and n == 1)
            return target
        except AlreadyExists:
            if not numbered:
                raise
            n += 1


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Writes ``data`` to ``path`` whole or not at all (a temporary file renamed into place)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def displayable(text: str) -> str:
    """``text`` that UTF-8 can hold: the lone surrogates standing for the undecodable bytes of a file name that is
    not UTF-8 become U+FFFD (a page or hand-off file shows them; writing them as they are would fail)."""
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Writes UTF-8 ``text`` to ``path`` whole or not at all."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def increment_dir(base: str | os.PathLike, *, exist_ok: bool = False) -> Path:
    """``runs/classify/exp``, then ``exp2``, ``exp3`` … created with mkdir, which is the lock.

    Two processes racing for the same name each get their own folder.
    """
    base = Path(base)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        if exist_ok:
            base.mkdir(exist_ok=True)
            return base
    except OSError as exc:
        raise write_error(base, exc, "cannot create folder") from exc
    stem = re.sub(r"\d+$", "", base.name) or base.name
    n = 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{stem}{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1
        except OSError as exc:
            raise CnnkitError(f"{candidate}: cannot create folder ({exc.strerror or exc})") from exc


def drop_if_empty(folder: Path | None) -> None:
    """Remove a run folder this run made and left empty (every input failed), so the next run is not ``exp2``."""
    if folder is not None:
        with contextlib.suppress(OSError):  # not empty, or already gone: left as it is
            folder.rmdir()


def check_local(path: str | os.PathLike, what: str = "`output`") -> None:
    """Refuse a URL where cnnkit writes: outputs are local files (``s3://b/x`` would become a folder ``s3:``)."""
    from cnnkit.errors import UsageError
    from cnnkit.io.remote import is_remote

    if is_remote(os.fspath(path)):
        raise UsageError(f"{os.fspath(path)}: {what} is written locally, not to a URL; write it here and copy it")


def check_folder_of(path: str | os.PathLike, *, in_place: bool = False) -> None:
    """Refuse, before any work, a file whose nearest existing folder is a file, or cannot be written into
    (read-only, no permission); ``in_place``: the file is written where it is (a writable file in a folder
    that is not does)."""
    parent = next((p for p in Path(os.path.abspath(path)).parents if os.path.lexists(p)), None)
    if parent is None:
        return
    if not parent.is_dir():
        raise CnnkitError(f"{path}: {parent} is a file, not a folder to write into")
    if not (in_place and os.access(path, os.W_OK)) and not os.access(parent, os.W_OK):
        raise CnnkitError(f"{path}: cannot write into {parent} (read-only, or no permission)")


def explicit_dir(path: str | os.PathLike, *, exist_ok: bool = False) -> Path:
    """A folder the user named: created, or refused when it exists without ``exist_ok`` (or is a URL)."""
    check_local(path, "a folder")
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        if exist_ok or (path.exists() and not path.is_dir()):  # mkdir's FileExistsError for a file of that name
            raise CnnkitError(f"{path}: is a file, not a folder to write into") from None
        raise CnnkitError(f"{path}: already exists (pass `exist_ok=True` to write into it)") from None
    except OSError as exc:
        raise CnnkitError(f"{path}: cannot create folder ({exc.strerror or exc})") from exc
    return path


def file_ids(path: str) -> set[tuple[int, int]]:
    """Device and inode of ``path`` and, for a symlink, of what it points to (empty if neither exists)."""
    ids = set()
    for stat_fn in (os.stat, os.lstat):
        try:
            st = stat_fn(path)
        except (OSError, ValueError):
            continue
        ids.add((st.st_dev, st.st_ino))
    return ids


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: the same path however spelled (``file://`` URLs too), or the same
    device and inode (a hard or symbolic link)."""
    from cnnkit.io.remote import local_path

    a, b = local_path(a), local_path(b)
    if os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b)):
        return True
    ids = file_ids(a)
    return bool(ids and ids & file_ids(b))


def check_not_input(output: str | os.PathLike, inputs: Iterable[str], what: str = "`output`") -> None:
    """Refuse an output that is one of the inputs: the same path, however spelled, or the same file."""
    out = os.fspath(output)
    for path in inputs:
        if same_file(out, path):
            raise CnnkitError(f"{out}: is also an input ({path}); {what} would destroy it")


def check_outputs(outputs: dict[str, str | None], inputs: Iterable[str] = (), *, within: str | None = None) -> None:
    """Refuse a run whose files to write (``{"`output`": path, "`report`": path}``, ``-`` for stdout left
    out) name one of its ``inputs``, an existing file under the folder ``within`` (a dataset), or each other:
    one write would destroy what another part of the run reads or writes."""
    given = {what: os.fspath(p) for what, p in outputs.items() if p and os.fspath(p) != "-"}
    for what, path in given.items():
        check_local(path, what)
    inputs = list(inputs)
    if within is not None and os.path.isdir(within):
        root = os.path.realpath(within)
        inputs += [p for p in given.values() if os.path.isfile(p) and os.path.realpath(p).startswith(root + os.sep)]
    for what, path in given.items():
        check_not_input(path, inputs, what)
    seen: dict[str, str] = {}
    for what, path in given.items():
        other = next((w for w, p in seen.items() if same_file(p, path)), None)
        if other is not None:
            raise CnnkitError(f"{path}: is both {other} and {what}; one would overwrite the other")
        seen[what] = path
