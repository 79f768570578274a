"""The remote-read layer: object-store and web sources (``s3://``, ``gs://``, ``http(s)://``, ``file://``).

Kept apart from :mod:`cnnkit.io.sources` (the local walker) so the two stay easy to read: the walker
hands any argument with a URL scheme to :func:`expand`, and :func:`cnnkit.io.decode.decode` reads a URL
through :func:`read` in the decode threads, so remote reads are bounded exactly as local decodes are
(at most two batches in flight). Records name inputs by the URL as the user spelled its scheme.

fsspec and its backends (``s3fs``, ``gcsfs``) are imported on first use. Credentials come from
where each backend looks by itself (environment, profiles, instance metadata): cnnkit neither takes
nor logs them.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, DecodeError

log = logging.getLogger("cnnkit")

# scheme → (module fsspec needs, the cnnkit extra that installs it)
BACKENDS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "http": ("aiohttp", "remote"),
    "https": ("aiohttp", "remote"),
    "file": ("fsspec", "remote"),
}
_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_GLOB_CHARS = set("*?[")
MAX_READ_BYTES = 1 << 30  # one object larger than this is refused before it is held in memory

Hit = tuple[str, "str | None"]


def scheme(path: str) -> str | None:
    """The URL scheme of ``path`` (lower case), or ``None`` for a local path."""
    m = _URL.match(path) if isinstance(path, str) else None
    return m.group(1).lower() if m else None


def normal(url: str) -> str:
    """``url`` with its scheme in lower case (``S3://b/k`` is ``s3://b/k``, as fsspec expects)."""
    proto = scheme(url)
    return url if proto is None else proto + ":" + url.split(":", 1)[1]


def is_remote(path: Any) -> bool:
    """Whether ``path`` is a URL this layer reads (an unknown scheme is a local name, as before)."""
    return isinstance(path, str) and scheme(path) in BACKENDS


def filesystem(url: str) -> Any:
    """The fsspec filesystem for ``url``; a missing backend is one line naming the extra that installs it."""
    proto = scheme(url) or "file"
    module, extra = BACKENDS[proto]
    try:
        import fsspec

        from cnnkit.io.video import STREAM_TIMEOUT_S

        if proto in ("http", "https"):  # aiohttp's default waits 300 s per request on a server that never answers
            import aiohttp

            wait = aiohttp.ClientTimeout(total=None, sock_connect=STREAM_TIMEOUT_S, sock_read=STREAM_TIMEOUT_S)
            return fsspec.filesystem(proto, client_kwargs={"timeout": wait})
        if proto in ("s3", "s3a"):  # botocore waits 60 s a read, and s3fs tries 5 times over botocore's own retries:
            # a stalled endpoint held each object ~7 minutes, a dead one ~8 s (listings go one after another)
            config = {
                "connect_timeout": STREAM_TIMEOUT_S,
                "read_timeout": STREAM_TIMEOUT_S,
                "retries": {"mode": "standard", "total_max_attempts": 2},
            }
            fs = fsspec.filesystem("s3", config_kwargs=config)
            fs.retries = 1  # s3fs's own loop (with back-off) around botocore's attempts
            return fs
        return fsspec.filesystem("gcs" if proto == "gs" else proto)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise CnnkitError(f"{proto}:// sources need {missing}: pip install 'cnnkit[{extra}]'") from None


def _spelled(proto: str, path: str) -> str:
    """A path fsspec returned (no scheme for object stores) spelled back as a URL of ``proto``."""
    if scheme(path):
        return path
    if proto == "file":
        return "file://" + path
    return f"{proto}://{path}"


def _shown(path: str, root: str) -> bool:
    """Whether ``path`` (as fsspec lists it) has no hidden name (``.x``) below ``root``: as locally, a listing
    leaves out macOS's ``._x.jpg`` and folders such as ``.thumbnails/``."""
    root = root.rstrip("/")
    below = path[len(root) :] if path.startswith(root + "/") else path.rsplit("/", 1)[-1]
    return not any(part.startswith(".") for part in below.split("/"))


def _is_input(name: str) -> bool:
    """An image or a video, by its name (what a prefix or a glob keeps, as locally)."""
    from cnnkit.io.sources import is_input_name

    return is_input_name(name.rsplit("/", 1)[-1])


def why(exc: BaseException) -> str:
    """A failed listing or read as one line (never a credential: backends do not put them in messages)."""
    if isinstance(exc, FileNotFoundError):
        return "no such object"
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def expand(arg: str, recursive: bool) -> tuple[list[Hit], str | None]:
    """The image URLs ``arg`` stands for, sorted (failed hits among them), or why it stands for none.

    The local rules, for URLs: an object named exactly is kept whatever its suffix (it fails later
    with a reason if it is no image); a prefix (``s3://b/photos/``) lists its images, sub-prefixes
    only with ``recursive``; a glob matches keys (``**`` any depth, with ``recursive``).
    """
    proto = scheme(arg) or "file"
    if proto in ("http", "https"):  # a web server has no listing: the URL (query string and all) is one input
        return [(arg, None)], None
    fs = filesystem(arg)
    fs.invalidate_cache()  # fsspec keeps listings per process: a run lists what is there now
    if any(c in arg for c in _GLOB_CHARS) and not _exists(fs, arg):  # as locally: a key named exactly wins
        pattern = arg if recursive else re.sub(r"\*\*+", "*", arg)  # as locally: ** is * without recursive
        try:
            found = fs.glob(pattern, detail=True)
        except Exception as exc:
            return [], f"cannot list ({why(exc)})"
        parts = fs._strip_protocol(pattern).split("/")
        fixed = next((i for i, part in enumerate(parts) if any(c in part for c in _GLOB_CHARS)), len(parts))
        root = "/".join(parts[:fixed])
        asked = any(part.startswith(".") for part in parts[fixed:])  # as glob locally: `.x*` matches hidden names
        hits: list[Hit] = sorted(
            (_spelled(proto, p), None)
            for p, info in found.items()
            if info.get("type") != "directory" and _is_input(p) and (asked or _shown(p, root))
        )
        return hits, None if hits else "pattern matches no image files"
    try:
        info = fs.info(arg)
    except FileNotFoundError:
        return [(arg, None)], None  # named exactly: it fails when read, with its reason, like a missing file
    except Exception as exc:
        return [], f"cannot list ({why(exc)})"
    if info.get("type") != "directory":
        return [(arg, None)], None
    try:
        if recursive:
            names = fs.find(arg, detail=False)
        else:
            names = [e["name"] for e in fs.ls(arg, detail=True) if e.get("type") != "directory"]
    except Exception as exc:
        return [], f"cannot list ({why(exc)})"
    root = fs._strip_protocol(arg)
    listed: list[Hit] = sorted(
        ((_spelled(proto, p), None) for p in names if _is_input(p) and _shown(p, root)),
        key=lambda hit: _walk_order(hit[0]),
    )
    hint = "" if recursive else " (use `recursive=True` for sub-prefixes)"
    return listed, None if listed else f"prefix has no image files{hint}"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or during (fsspec wraps aiohttp's errors)."""
    return [e for e in (exc, exc.__cause__, exc.__context__) if e is not None]


def _unreachable(exc: BaseException) -> bool:
    """Whether a failed read never reached the server (refused, no route, DNS), not a reply about the object
    (botocore's EndpointConnectionError is no OSError)."""
    return any(
        isinstance(e, ConnectionError) or "Connector" in type(e).__name__ or type(e).__name__ in _BOTO_UNREACHABLE
        for e in _chain(exc)
    )


_BOTO_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError")


def _timed_out(exc: BaseException) -> bool:
    """Whether a failed read waited for a reply that never came (aiohttp's TimeoutError, botocore's ReadTimeout)."""
    return any(isinstance(e, TimeoutError) or type(e).__name__ == "ReadTimeoutError" for e in _chain(exc))


def _exists(fs: Any, url: str) -> bool:
    """Whether ``url`` names an object or prefix exactly (a key may hold ``[``, ``?`` or ``*``)."""
    try:
        return bool(fs.exists(url))
    except Exception:  # a listing error is reported by the glob that follows
        return False


def local_path(path: str) -> str:
    """A ``file://`` URL as the local path it names; anything else as given (for comparing outputs with
    inputs)."""
    return os.path.normpath(path[len("file://") :]) if scheme(path) == "file" else path


def _walk_order(url: str) -> tuple[tuple[int, str], ...]:
    """The local walker's order for a listed prefix: a folder's files (by name) before its sub-folders."""
    parts = url.split("/")
    return (*((1, p) for p in parts[:-1]), (0, parts[-1]))


def _said_unreachable(exc: BaseException) -> None:
    """Raise the one-line reason for a read that never reached its server or never heard back from it."""
    if _unreachable(exc):
        raise DecodeError(f"cannot connect ({why(exc)})") from None
    if _timed_out(exc):
        from cnnkit.io.video import STREAM_TIMEOUT_S

        raise DecodeError(f"timed out: nothing received for {STREAM_TIMEOUT_S:g} s") from None


def read(url: str, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of one object, or :class:`DecodeError` with the reason the read failed."""
    try:
        fs = filesystem(url)
    except CnnkitError as exc:
        raise DecodeError(str(exc)) from None
    try:
        try:
            data = fs.cat_file(url, start=0, end=limit + 1)  # one ranged GET: no HEAD first, never past the limit
        except (FileNotFoundError, PermissionError, IsADirectoryError):
            raise
        except Exception as exc:
            _said_unreachable(exc)
            if not isinstance(exc, OSError):
                raise
            with fs.open(url, "rb") as f:  # an empty object has no byte 0 to range over (HTTP 416): the long way
                data = f.read(limit + 1)
    except IsADirectoryError:
        raise DecodeError("is a prefix, not an image object") from None
    except DecodeError:
        raise
    except Exception as exc:
        _said_unreachable(exc)
        raise DecodeError(
            f"read failed ({why(exc)})" if not isinstance(exc, (FileNotFoundError, PermissionError)) else why(exc)
        ) from None
    if len(data) > limit:
        raise DecodeError(f"object is over the read limit of {limit:,} bytes")
    if not data:
        raise DecodeError("empty file")
    return bytes(data)


def download(url: str, dest: str | os.PathLike) -> Path:
    """Copy the prefix ``url`` into the folder ``dest`` (relative names kept) and return the local path of
    ``url``: for an object (a dataset yaml or COCO json) the prefix it sits in is copied beside it. For
    ``val``, whose scorers read labels, masks and annotation files as files."""
    fs = filesystem(url)
    proto = scheme(url) or "file"
    fs.invalidate_cache()
    try:
        is_dir = fs.info(url).get("type") == "directory"
        root = url.rstrip("/") if is_dir else url.rsplit("/", 1)[0]
        names = [_spelled(proto, n) for n in fs.find(root, detail=False)]
        for name in names:
            rel = name[len(root) :].lstrip("/")
            if not rel or ".." in rel.split("/"):
                continue  # never write outside dest, whatever a key is called
            target = Path(dest, *rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(name, str(target))
    except FileNotFoundError:
        raise CnnkitError(f"{url}: no such object or prefix") from None
    except Exception as exc:
        raise CnnkitError(f"{url}: cannot copy ({why(exc)})") from None
    log.info("copied %d file(s) under %s into a temporary folder", len(names), root)
    return Path(dest) if is_dir else Path(dest, url.rsplit("/", 1)[1])


def key(url: str) -> str:
    """The one name of a URL for de-duplication and resume: ``file://`` paths normalised, others as given."""
    if scheme(url) == "file":
        return "file://" + local_path(url)
    if scheme(url) == "s3a":  # Hadoop's name for the same bucket
        return "s3" + url[len("s3a") :]
    return url
