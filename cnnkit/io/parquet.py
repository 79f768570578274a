"""Parquet output: one row per record, typed columns, written a row group at a time.

Records become rows of :data:`schema` (predictions a list of structs with the union of every task's
keys, the ones a task does not use null) as they arrive; every :data:`ROW_GROUP` rows go to disk
as a row group, so memory stays flat however long the run. The file is built beside the output
and moved into place when the writer closes (also after Ctrl-C), so a reader never sees half a
file. Resuming (``append``) keeps the rows of the existing file whose inputs this run did not
redo, old rows first, as JSON Lines resume keeps the newest line per input.

pyarrow is imported on first use (the ``parquet`` extra).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError, OptionError
from cnnkit.io.files import AlreadyExists, publish, through_link, write_error
from cnnkit.io.writers import safe_text
from cnnkit.records import SCHEMA_VERSION, VIDEO_KEYS

log = logging.getLogger("cnnkit")

if TYPE_CHECKING:
    from cnnkit.io.writers import Resume

ROW_GROUP = 1024  # rows per row group: what the writer holds in memory at most
# prediction keys with a typed column; any other key of a prediction rides in ``other`` (JSON)
PREDICTION_KEYS = ("label", "class_id", "score", "box", "pixels", "fraction", "mask")


def _pa() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise OptionError("fmt", "parquet output needs pyarrow: pip install 'cnnkit[parquet]'", "parquet") from None
    return pyarrow


def schema() -> Any:
    """The Arrow schema of a records file (documented in README, "Parquet output")."""
    pa = _pa()
    prediction = pa.struct(
        [
            ("label", pa.string()),
            ("class_id", pa.int32()),
            ("score", pa.float64()),
            ("box", pa.list_(pa.float64())),
            ("pixels", pa.int64()),
            ("fraction", pa.float64()),
            ("mask", pa.struct([("size", pa.list_(pa.int32())), ("counts", pa.string())])),
            ("other", pa.string()),
        ]
    )
    return pa.schema(
        [
            ("path", pa.string()),
            ("frame", pa.int64()),
            ("time_s", pa.float64()),  # frame, time_s: video frames only
            ("task", pa.string()),
            ("model", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("predictions", pa.list_(prediction)),
            ("time_ms", pa.float64()),
            ("error", pa.string()),
            ("schema_version", pa.int16()),
            ("extra", pa.string()),  # the record's other keys (saved picture paths …) as one JSON object
        ],
        metadata={b"cnnkit.schema_version": str(SCHEMA_VERSION).encode()},
    )


_BASE = (
    "path",
    "frame",
    "time_s",
    "task",
    "model",
    "width",
    "height",
    "predictions",
    "time_ms",
    "error",
    "schema_version",
)


def _utf8(value: Any) -> Any:
    """Text Parquet can hold (:func:`~cnnkit.io.writers.safe_text`, as JSON Lines writes it): a file name that is
    not valid UTF-8 was a lost row group."""
    return safe_text(value) if isinstance(value, str) else value


_ESCAPED_BYTE = re.compile(r"\\udc([89a-f][0-9a-f])")


def _path_back(text: str) -> str:
    """A path as read: :func:`_utf8`'s ``\\udcXX`` (a byte of a non-UTF-8 file name) back to the character
    Python reads it as, as JSON reads its own escape, so a resumed input is found done and the record is the same
    as JSON Lines gives."""
    return _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text) if "\\udc" in text else text


def to_row(record: dict[str, Any]) -> dict[str, Any]:
    """A record dict (as :meth:`Record.to_dict` writes it, NaN already null) as one row of :func:`schema`."""
    row = {k: _utf8(record.get(k)) for k in _BASE}
    preds = []
    for p in record.get("predictions") or []:
        typed = {k: _utf8(p[k]) for k in PREDICTION_KEYS if k in p}
        rest = {k: v for k, v in p.items() if k not in PREDICTION_KEYS}
        typed["other"] = json.dumps(rest) if rest else None  # ASCII: escapes whatever a model's label holds
        preds.append(typed)
    row["predictions"] = preds
    extra = {k: v for k, v in record.items() if k not in _BASE}
    row["extra"] = json.dumps(extra) if extra else None
    return row


def from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row read back as the record dict it was written from (null prediction fields dropped)."""
    out = {k: row.get(k) for k in _BASE if k not in VIDEO_KEYS or row.get(k) is not None}
    path = out.get("path")
    if isinstance(path, str):
        out["path"] = _path_back(path)
    preds = []
    for p in row.get("predictions") or []:
        pred = {k: p[k] for k in PREDICTION_KEYS if p.get(k) is not None}
        if p.get("other"):
            pred.update(json.loads(p["other"]))
        preds.append(pred)
    out["predictions"] = preds
    if row.get("extra"):
        out.update(json.loads(row["extra"]))
    return out


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The record dicts of a Parquet records file, a row group at a time."""
    pa = _pa()
    pf = pa.parquet.ParquetFile(path)
    for i in range(pf.num_row_groups):
        for row in pf.read_row_group(i).to_pylist():
            yield from_row(row)


def _open(path: Path) -> Any:
    """The file as a ParquetFile, or a one-line refusal (not ours to resume)."""
    pa = _pa()
    try:
        pf = pa.parquet.ParquetFile(path)
    except OSError as exc:
        raise write_error(path, exc, "cannot resume") from exc
    except Exception:
        raise CnnkitError(f"{path}: not a Parquet file of records, so not resumed (name another output)") from None
    if "path" not in pf.schema_arrow.names or "error" not in pf.schema_arrow.names:
        raise CnnkitError(f"{path}: a Parquet file without path and error columns, so not resumed")
    return pf


def tidy_parquet(output: str | os.PathLike) -> Resume:
    """What a Parquet records file already holds (:class:`cnnkit.io.writers.Resume`): the newest row per
    input wins; only the ``path``, ``error``, ``task`` and ``model`` columns are read, a row group at a time."""
    from cnnkit.io.writers import Resume, path_key

    state = Resume()
    path = Path(output)
    if not path.exists():
        return state
    pf = _open(path)
    last: dict[str, bool] = {}
    framed = "frame" in pf.schema_arrow.names  # schema 3 on: video frames name their frame
    for i in range(pf.num_row_groups):
        group = pf.read_row_group(i, columns=["path", "error", "task", "model", *(["frame"] if framed else [])])
        state.runs |= set(zip(group.column("task").to_pylist(), group.column("model").to_pylist(), strict=True))
        frames = group.column("frame").to_pylist() if framed else [None] * group.num_rows
        for p, e, f in zip(group.column("path").to_pylist(), group.column("error").to_pylist(), frames, strict=True):
            if not isinstance(p, str):
                continue
            key = path_key(_path_back(p))
            last[key] = e is None
            if f is not None:
                state.videos.setdefault(key, {})[int(f)] = e is None
            elif key in state.videos:  # a whole-video failure after frames: the video is read again
                state.videos[key] = {}
    state.known = set(last)
    state.done = {k for k, ok in last.items() if ok and k not in state.videos}
    return state


class ParquetWriter:
    """Records → a Parquet file, a row group every ``row_group`` records; :meth:`close` publishes it.

    ``append`` resumes ``output`` (kept rows first, this run's after); without it an existing
    file is replaced only with ``exist_ok``.
    """

    def __init__(
        self, output: str | os.PathLike, *, append: bool = False, exist_ok: bool = False, row_group: int = ROW_GROUP
    ) -> None:
        pa = _pa()
        self.final = Path(output)
        self.append = append and self.final.exists()
        self.overwrite = append or exist_ok
        if not self.overwrite and (self.final.exists() or self.final.is_symlink()):
            raise AlreadyExists(f"{self.final}: already exists (pass `exist_ok=True` to overwrite)")
        self.final = through_link(self.final)
        if self.append:
            _open(self.final)  # refuse a file that is not ours before any work
        self.row_group = max(1, row_group)
        self.rows: list[dict[str, Any]] = []
        self.keys: set[str] = set()  # inputs written by this run
        self.row_groups = 0
        self._schema = schema()
        self._closed = False
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            self._sweep()
            self._tmp = self._temp()
            self._writer = pa.parquet.ParquetWriter(self._tmp, self._schema, compression="zstd")
        except OSError as exc:
            raise write_error(self.final, exc) from exc

    def _prefix(self) -> str:
        """The start of this machine's temp files for the output (the process id follows); the name and host are cut
        (bytes, whole characters) so that the temp name stays under the 255-byte limit of an output named near it."""

        def cut(text: str, limit: int) -> str:
            return os.fsencode(text)[:limit].decode(errors="ignore")

        return f".{cut(self.final.name, 140)}.{cut(socket.gethostname(), 48)}."

    def _sweep(self) -> None:
        """Remove the temp files runs on this machine left when they were killed outright (``kill -9``, the OOM
        killer): each can be as large as a whole run's rows, and nothing else would ever remove it."""
        mine = self._prefix()
        for left in self.final.parent.glob(f"{glob.escape(mine)}*.tmp"):
            pid = left.name[len(mine) :].partition(".")[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    left.unlink()
                    log.info("%s: removed a temp file a killed run left", left)

    def _temp(self) -> Path:
        from cnnkit.io.files import _umask

        fd, tmp = tempfile.mkstemp(prefix=f"{self._prefix()}{os.getpid()}.", suffix=".tmp", dir=self.final.parent)
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # the mode any new file gets, not mkstemp's 0600
        return Path(tmp)

    def write(self, record: dict[str, Any]) -> None:
        """Add one record dict (NaN already null); a full row group goes to disk."""
        from cnnkit.io.writers import path_key

        self.rows.append(to_row(record))
        self.keys.add(path_key(record["path"]))
        if len(self.rows) >= self.row_group:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        pa = _pa()
        table = pa.Table.from_pylist(self.rows, schema=self._schema)
        try:
            self._writer.write_table(table, row_group_size=len(self.rows))
        except OSError as exc:
            raise write_error(self.final, exc, "write failed") from exc
        self.rows = []
        self.row_groups += 1

    def close(self) -> None:
        """Write the last rows, merge a resumed file's kept rows, and move the file into place."""
        if self._closed:
            return
        self._closed = True
        done = self._tmp
        try:
            self._flush()
            self._writer.close()
            done = self._merged() if self.append else self._tmp
            if done != self._tmp:
                self._tmp.unlink(missing_ok=True)
            publish(done, self.final, overwrite=self.overwrite)
        except BaseException as exc:  # a full disk arrives as our own error from _flush: the temp files go too
            for left in {self._tmp, done}:
                left.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise write_error(self.final, exc, "write failed") from exc
            raise

    def _merged(self) -> Path:
        """The resumed file's rows whose inputs this run did not redo, then this run's rows: a new temp file."""
        from cnnkit.io.writers import path_key

        pa = _pa()
        pq = pa.parquet
        out = self._temp()
        old, new = pq.ParquetFile(self.final), pq.ParquetFile(self._tmp)
        try:
            with pq.ParquetWriter(out, self._schema, compression="zstd") as writer:
                for i in range(old.num_row_groups):
                    group = old.read_row_group(i).cast(self._schema)
                    keep = [path_key(_path_back(p)) not in self.keys for p in group.column("path").to_pylist()]
                    if any(keep):
                        writer.write_table(group.filter(pa.array(keep)))
                for i in range(new.num_row_groups):
                    writer.write_table(new.read_row_group(i))
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return out

    def abort(self) -> None:
        """Drop the file being written (nothing is published)."""
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (one of another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
