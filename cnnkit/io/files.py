"""Atomic writes and run folders: nothing that existed is overwritten silently."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cnnkit.errors import CnnkitError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``.

    A crash or Ctrl-C leaves the old file (or none) untouched, never half a file.
    """
    final = Path(path)
    if not overwrite and final.exists():
        raise CnnkitError(f"{final}: already exists (pass --exist-ok to overwrite)")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    except OSError as exc:
        raise CnnkitError(f"{final}: cannot write ({exc.strerror or exc})") from exc
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def increment_dir(base: str | os.PathLike, *, exist_ok: bool = False) -> Path:
    """``runs/classify/exp``, then ``exp2``, ``exp3`` … created with mkdir, which is the lock.

    Two processes racing for the same name each get their own folder.
    """
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    if exist_ok:
        base.mkdir(exist_ok=True)
        return base
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


def explicit_dir(path: str | os.PathLike, *, exist_ok: bool = False) -> Path:
    """A folder the user named: created, or refused when it exists without ``exist_ok``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise CnnkitError(f"{path}: already exists (pass --exist-ok to write into it)") from None
    except OSError as exc:
        raise CnnkitError(f"{path}: cannot create folder ({exc.strerror or exc})") from exc
    return path
