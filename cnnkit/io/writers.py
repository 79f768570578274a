"""Record writers: table, json, jsonl, csv, parquet (:mod:`cnnkit.io.parquet`; and coco, for tasks that define it).

JSON Lines stream: each record is one complete line, flushed as it comes, so a run
stopped by Ctrl-C leaves a valid file of what was done (and ``--skip-existing`` can
resume it). The other formats are written whole, atomically, at the end, from a spool file
(:class:`Spool`), so a two-hour video's records do not pile up in memory.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from cnnkit.errors import CnnkitError, OptionError, UsageError
from cnnkit.io.files import AlreadyExists, atomic_path, through_link, write_error
from cnnkit.records import Record, finite

log = logging.getLogger("cnnkit")

FORMATS = ("auto", "table", "json", "jsonl", "csv", "coco", "parquet", "mot")
BASE_COLUMNS = ("path", "task", "model", "width", "height", "time_ms", "error", "schema_version")
MAX_LINE = 64 << 20  # a longer "record" is not one: it is set aside without being read whole


SUFFIX_FORMATS = {
    ".json": "json",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}  # what -o FILE says


def resolve_format(fmt: str, output: str | None, stream: TextIO | None = None) -> str:
    """``auto`` is a table on a terminal, JSON Lines in a pipe or a file."""
    if fmt not in FORMATS:
        raise OptionError("fmt", f"expected one of {', '.join(FORMATS)}", fmt)
    if fmt != "auto":
        return fmt
    if output is not None and not is_stdout(output):
        suffix = Path(output).suffix.lower()
        if suffix and suffix not in SUFFIX_FORMATS and not is_stream(output):  # `-o out.xlsx`: said, not guessed
            log.warning("%s: %s is no records format cnnkit writes; writing JSON Lines", output, suffix)
        return SUFFIX_FORMATS.get(suffix, "jsonl")
    stream = stream or sys.stdout
    return "table" if getattr(stream, "isatty", lambda: False)() else "jsonl"


def path_key(path: str) -> str:
    """The one name of an input for resuming: ``./x``, ``x`` and ``link/x`` (a symbolic link to its folder)
    are the same input, as they are one input of a run (:func:`cnnkit.io.sources.expand_sources`).

    Records keep the path as the user spelled it; only the done-set compares these keys. A relative path is
    resolved against the working folder. A URL is its own key (the working folder does not change what
    ``s3://b/k`` names).
    """
    from cnnkit.io import remote
    from cnnkit.io.files import real_path

    if remote.is_remote(path):
        return remote.key(path)
    try:
        return real_path(path)
    except (OSError, ValueError):  # a NUL byte: the spelling is all there is
        return os.path.normpath(os.path.abspath(path))


def record_key(path: str, frame: int | None = None) -> str:
    """One record's key for resuming: its input, and for a video frame the frame (``clip.mp4#12``)."""
    return path_key(path) if frame is None else f"{path_key(path)}#{frame}"


def is_stdout(output: str | None) -> bool:
    """No ``output``, or ``-``: records go to stdout."""
    return output is None or output in ("", "-")


@dataclass
class Resume:
    """What a JSON Lines file already holds, after :func:`tidy_jsonl` cleaned it."""

    done: set[str] = field(default_factory=set)  # keys whose newest record succeeded
    known: set[str] = field(default_factory=set)  # keys with any record (failed ones are retried)
    set_aside: int = 0  # torn or corrupt lines moved to FILE.torn
    runs: set[tuple[str, str]] = field(default_factory=set)  # the (task, model) pairs its records come from
    videos: dict[str, dict[int, bool]] = field(default_factory=dict)  # a video's key → {frame: succeeded}
    redo: set[str] = field(default_factory=set)  # videos read again: their old records go before the first write

    def video_done(self, path: str, frames: Iterable[tuple[int | None, bool]]) -> bool:
        """Whether the frames a run reads of video ``path`` (``(frame, succeeded)``, as decoding gives them) are
        exactly the ones the file holds, each succeeded: only then is the video skipped. A frame the file lacks
        (an interrupted run, a smaller ``vid_stride``) or holds beyond them (another stride or window) means the
        video is read again, its old frames dropped first (:func:`drop_videos`)."""
        held = self.videos.get(path_key(path))
        if not held or not all(held.values()):
            return False
        read = set()
        for frame, ok in frames:
            if not ok or frame is None or frame not in held:
                return False
            read.add(frame)
        return read == set(held)

    def stale(self, paths: Iterable[str]) -> set[str]:
        """The keys of the videos among ``paths`` that the file holds records of, frames or a whole-video failure
        (a run about to read them again)."""
        return {k for k in map(path_key, paths) if k in self.videos or k in self.known}

    def check_run(self, output: str | os.PathLike, task: str, model: str | None = None) -> None:
        """Refuse to add one task's or model's records to a file of another's: resuming it would skip every
        input as done, and its records would mix two runs."""
        other = next(((t, m) for t, m in sorted(self.runs) if t != task or (model is not None and m != model)), None)
        if other is not None:
            this = f"{task} with {model}" if model else task
            raise UsageError(
                f"{output}: holds {other[0]} records of {other[1]}, not {this}; resume with the same task and "
                "model, or write another `output`"
            )


def _lines(f: BinaryIO) -> Iterator[tuple[int, int, bytes | None, bool]]:
    """``(start, end, line, complete)`` per line; ``line`` is ``None`` past :data:`MAX_LINE` (never read whole)."""
    while True:
        start = f.tell()
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        if line.endswith(b"\n") or len(line) <= MAX_LINE:
            yield start, f.tell(), line, line.endswith(b"\n")
            continue
        complete = False
        while chunk := f.readline(1 << 20):
            if chunk.endswith(b"\n"):
                complete = True
                break
        yield start, f.tell(), None, complete


def _record_key(line: bytes | None, complete: bool) -> tuple[str, bool, tuple[str, str], str | None] | None:
    """``(key, succeeded, (task, model), video)`` of a whole, valid record line (``video``: the key of the file a
    frame record comes from); ``None`` for a torn or corrupt one."""
    if line is None or not complete:
        return None
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
        return None
    frame = rec.get("frame")
    run = (str(rec.get("task", "")), str(rec.get("model", "")))
    frame = frame if type(frame) is int else None
    video = None if frame is None else record_key(rec["path"])
    return record_key(rec["path"], frame), rec.get("error") is None, run, video


def tidy_jsonl(output: str | os.PathLike) -> Resume:
    """Make a JSON Lines output resumable: one line per input, the newest winning, nothing torn.

    A torn line (a crash mid-write) or a corrupt one is appended to ``FILE.torn``, never
    deleted; when anything changes the file is rewritten atomically. A file with no record
    and more than one torn line (a picture, someone else's data) is refused, not emptied.
    """
    path = through_link(output)
    state = Resume()
    if not path.exists():
        return state
    last: dict[str, int] = {}
    newest_frame: dict[str, int] = {}  # a video's key → its newest frame record's line
    records = blank = 0
    first_bad = b""
    try:
        with open(path, "rb") as f:
            for idx, (_, _, line, complete) in enumerate(_lines(f)):
                if line is not None and complete and not line.strip():
                    blank += 1
                    continue
                parsed = _record_key(line, complete)
                if parsed is None:
                    state.set_aside += 1
                    first_bad = first_bad or (b"{" if line is None else line[:1] or b"?")
                    continue
                records += 1
                key, ok, run, video = parsed
                state.runs.add(run)
                last[key] = idx
                if video is not None:
                    newest_frame[video] = idx
                    state.videos.setdefault(video, {})[int(key.rpartition("#")[2])] = ok
                if ok:
                    state.done.add(key)
                else:
                    state.done.discard(key)
        for video, idx in newest_frame.items():  # a video that failed to open and was read since
            if last.get(video, idx) < idx and video not in state.done:
                del last[video]
        state.known = set(last)
        if not records and state.set_aside and (state.set_aside > 1 or first_bad != b"{"):
            raise CnnkitError(f"{path}: not a JSON Lines file of records, so not resumed (name another `output`)")
        if state.set_aside or blank or records > len(last):
            _rewrite(path, last)
    except OSError as exc:
        raise write_error(path, exc, "cannot resume") from exc
    if state.set_aside:
        log.warning("%s: %d torn or corrupt line(s) moved to %s.torn", path, state.set_aside, path)
    return state


def drop_videos(output: str | os.PathLike, resume: Resume, videos: set[str]) -> None:
    """Remove every record of ``videos`` (keys) from a tidied JSON Lines file, atomically: a video read again
    with other options would otherwise keep frames this run does not read beside the ones it does."""
    if not videos:
        return
    path = through_link(output)
    last: dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            for idx, (_, _, line, complete) in enumerate(_lines(f)):
                parsed = _record_key(line, complete)
                if parsed is not None and (parsed[3] or parsed[0]) not in videos:
                    last[parsed[0]] = idx
        _rewrite(path, last)
    except OSError as exc:
        raise write_error(path, exc, "cannot resume") from exc

    def kept(key: str) -> bool:  # a key of none of ``videos``: neither a frame's (`clip.mp4#12`) nor the video's own
        return key not in videos and key.rpartition("#")[0] not in videos

    resume.known = {k for k in resume.known if kept(k)}
    resume.done = {k for k in resume.done if kept(k)}
    for key in videos:
        resume.videos.pop(key, None)


def _rewrite(path: Path, last: dict[str, int]) -> None:
    """Keep each key's newest line; torn and corrupt lines go to ``FILE.torn`` first (synced)."""
    from cnnkit.io.files import atomic_path

    keep = set(last.values())
    with contextlib.ExitStack() as stack:
        src, raw = stack.enter_context(open(path, "rb")), stack.enter_context(open(path, "rb"))
        tmp = stack.enter_context(atomic_path(path))
        dst = stack.enter_context(open(tmp, "wb"))
        torn: BinaryIO | None = None
        for idx, (start, end, line, complete) in enumerate(_lines(src)):
            if idx in keep:
                dst.write(line)  # type: ignore[arg-type]  # kept lines are always read whole
                continue
            if (line is not None and complete and not line.strip()) or _record_key(line, complete) is not None:
                continue  # a blank line, or an older record of an input with a newer one
            torn = torn or stack.enter_context(open(f"{path}.torn", "ab"))
            raw.seek(start)
            left = end - start
            while left > 0 and (chunk := raw.read(min(1 << 20, left))):
                torn.write(chunk)
                left -= len(chunk)
            if not complete:
                torn.write(b"\n")
        for f in (torn, dst):
            if f is not None:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))


def safe_text(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (a non-UTF-8 file name) becomes ``\\udcXX``,
    which in JSON is the escape that reads back as the same character."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_stream(output: str) -> bool:
    """A FIFO, a terminal or a device such as ``/dev/stdout``: written through, never replaced by a file."""
    try:
        mode = os.stat(output).st_mode
    except (OSError, ValueError):
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_output(output: str | None, fmt: str, *, append: bool = False, exist_ok: bool = False) -> None:
    """Refuse an output file before any work: a folder, an existing file without permission, Parquet to stdout."""
    if fmt == "parquet" and (output is None or is_stdout(output) or is_stream(output)):
        raise OptionError("output", "Parquet records are written to a file, not to a pipe or stdout")
    if output is None or is_stdout(output):
        return
    from cnnkit.io.files import check_folder_of, check_local

    check_local(output)
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        raise CnnkitError(f"{output}: is a folder (`output` names a file)")
    if append and fmt not in RESUMABLE:
        raise OptionError("skip_existing", "resumes a JSON Lines or Parquet `output`; use `fmt` jsonl")
    if is_stream(output):  # /dev/null, a FIFO: written through, whatever its folder allows
        if append:
            raise UsageError(f"{output}: `skip_existing` resumes a regular file, not a pipe or device")
        return
    check_folder_of(output, in_place=fmt == "jsonl")  # now, not after the run; other formats are moved in
    if os.path.lexists(output) and not (append or exist_ok):
        resume = ", or `skip_existing=True` to resume" if fmt in RESUMABLE else ""  # the others cannot resume
        raise CnnkitError(f"{output}: already exists (pass `exist_ok=True` to overwrite{resume})")


RESUMABLE = ("jsonl", "parquet")


def tidy_output(output: str | os.PathLike, fmt: str) -> Resume:
    """What a resumable output already holds: :func:`tidy_jsonl`, or the Parquet reader's equivalent."""
    if fmt == "parquet":
        from cnnkit.io.parquet import tidy_parquet

        return tidy_parquet(output)
    return tidy_jsonl(output)


def _write_all(fh: BinaryIO, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[fh.write(view) or 0 :]


def write_text(stream: Any, text: str) -> None:
    """``text`` to a text stream, whole: with ``PYTHONUNBUFFERED=1`` stdout's buffer is a raw file whose short
    write on a full disk the text layer drops without an error, so a stream with a file descriptor gets the
    encoded bytes written until all are out (a full disk is then an ``OSError``)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # an in-memory stream (tests, notebooks)
        stream.write(text)
        stream.flush()
        return
    stream.flush()
    view = memoryview(text.encode(getattr(stream, "encoding", None) or "utf-8", errors="replace"))
    while view:
        view = view[os.write(fd, view) :]


def _flat_value(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else v


# A task's prediction columns, there even when nothing was found, so that every CSV of one task (two
# shards, two folders) has the same columns in the same order.
PREDICTION_COLUMNS = {
    "classify": ("label", "class_id", "score"),
    "detect": ("label", "class_id", "score", "x1", "y1", "x2", "y2"),
    "track": ("label", "class_id", "score", "x1", "y1", "x2", "y2", "track_id"),
    "segment": ("label", "class_id", "pixels", "fraction"),
    "instance": ("label", "class_id", "score", "x1", "y1", "x2", "y2", "mask"),
}
_NOT_FILES = frozenset((*BASE_COLUMNS, "predictions", "frame", "time_s", "counts"))


def csv_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per prediction (an image with none still gets one row), with the record's other keys
    (``frame``, ``time_s``, line counts, the files it saved) repeated on each."""
    base = {k: _flat_value(rec.get(k)) for k in BASE_COLUMNS}
    base.update({k: rec[k] for k in ("frame", "time_s") if k in rec})  # a video frame's columns
    counts = rec.get("counts")
    if isinstance(counts, dict):  # a tracked frame's running line counts, as its JSON record has them
        base.update({f"count_{k}": v for k, v in counts.items()})
    base.update({k: _flat_value(v) for k, v in rec.items() if k not in _NOT_FILES})  # saved, label_file …
    preds = rec.get("predictions") or [{}]
    rows = []
    for rank, p in enumerate(preds):
        row = dict(base)
        row["rank"] = rank if p else ""
        for k, v in p.items():
            if k == "box" and isinstance(v, (list, tuple)) and len(v) == 4:
                row.update({"x1": v[0], "y1": v[1], "x2": v[2], "y2": v[3]})
            else:
                row[k] = _flat_value(v)
        rows.append(row)
    return rows


def csv_columns(records: Iterable[dict[str, Any]], task: str | None = None) -> list[str]:
    """The base columns, ``rank``, the tasks' prediction columns and any other prediction keys, then a video
    frame's ``frame`` and ``time_s``, line counts and the saved files: the same order whichever input came first.
    One pass over ``records``, keeping only the keys. ``task``'s prediction columns are there with no records
    (an empty shard's file has the header of the others)."""
    columns = dict.fromkeys([*BASE_COLUMNS, "rank", *PREDICTION_COLUMNS.get(str(task), ())])
    seen: dict[str, None] = {}
    record_keys: set[str] = set()
    for rec in records:
        columns.update(dict.fromkeys(PREDICTION_COLUMNS.get(str(rec.get("task")), ())))
        if isinstance(rec.get("counts"), dict):  # counting: a box's crossing, empty on the frames without one
            columns["crossed"] = None
        seen.update(dict.fromkeys(k for row in csv_rows(rec) for k in row))
        record_keys.update(k for k in rec if k not in _NOT_FILES)
    frames = [k for k in ("frame", "time_s") if k in seen]
    counts = [k for k in seen if k.startswith("count_")]
    tail = [*frames, *counts, *(k for k in seen if k in record_keys and k not in columns)]
    columns.update(dict.fromkeys(k for k in seen if k not in columns and k not in tail))  # other prediction keys
    columns.update(dict.fromkeys(tail))
    return list(columns)


class Spool:
    """Records (or MOT lines) kept in an unnamed temporary file until the output is written, read back as often
    as needed: memory stays flat however many frames a video has. JSON with ``ensure_ascii`` keeps NaN and a
    non-UTF-8 name's lone surrogates as they were."""

    def __init__(self) -> None:
        self._file: Any = None
        self.count = 0

    def add(self, item: dict[str, Any] | str) -> None:
        if self._file is None:
            try:
                self._file = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by close())
            except OSError as exc:
                raise write_error(tempfile.gettempdir(), exc, "cannot spool the records in") from exc
        try:
            self._file.write(json.dumps(item) + "\n")
        except OSError as exc:
            raise write_error(tempfile.gettempdir(), exc, "cannot spool the records in") from exc
        self.count += 1

    def __iter__(self) -> Iterator[Any]:
        if self._file is None:
            return
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            yield json.loads(line)
        self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


TABLE_ROWS = 1000  # a table is printed in parts of this many rows, each its own table


class RecordWriter:
    """Consumes records one at a time; ``close()`` finishes the output.

    ``output`` ``None`` or ``-`` is stdout. A file is never replaced without ``exist_ok``, even
    one that appeared during the run; ``append`` resumes a JSON Lines file (see :func:`tidy_jsonl`).
    """

    def __init__(
        self,
        fmt: str,
        output: str | None = None,
        *,
        append: bool = False,
        exist_ok: bool = False,
        stream: TextIO | None = None,
        coco_builder: Any = None,
        resume: Resume | None = None,
        task: str | None = None,
    ) -> None:
        output = None if is_stdout(output) else output
        self.task = task  # the records' task, for a CSV header when there are none
        self.fmt = resolve_format(fmt, output, stream)
        # a link the user named is written through, as a shell's `>` does (a rename would replace the link)
        self.output = output if output is None or is_stream(output) else str(through_link(output))
        self.exist_ok = exist_ok
        self.stream = stream or sys.stdout
        self.resume = Resume()
        self._spool = Spool()  # the records of json, csv and table, or the MOT rows, until close()
        self._fh: Any = None  # an unbuffered binary file (``open(..., buffering=0)``)
        self._good = 0  # bytes of whole lines in the JSON Lines file
        self._keys: set[str] = set()
        self._compact = False
        self._warned = False
        self._closed = False
        self._coco = coco_builder
        self._tracked = False  # a frame was tracked: a MOT file then holds its rows, or none when nothing was seen
        self._parquet: Any = None
        if self.fmt == "parquet":
            from cnnkit.io.parquet import ParquetWriter

            check_output(output, self.fmt, append=append, exist_ok=exist_ok)
            assert output is not None  # check_output refuses Parquet to stdout
            self._parquet = ParquetWriter(output, append=append, exist_ok=exist_ok)
            return
        if self.fmt == "coco" and coco_builder is None:
            raise OptionError("fmt", "is for detect and instance", "coco")
        check_output(output, self.fmt, append=append, exist_ok=exist_ok)
        if self.fmt == "jsonl" and output:
            try:
                Path(output).parent.mkdir(parents=True, exist_ok=True)
                if append:
                    self.resume = resume if resume is not None else tidy_jsonl(output)
                mode = "ab" if append else "wb" if exist_ok or is_stream(output) else "xb"
                self._fh = open(output, mode, buffering=0)  # noqa: SIM115 (closed by close())
                self._good = 0 if is_stream(output) else self._fh.seek(0, os.SEEK_END)
            except FileExistsError:
                raise AlreadyExists(f"{output}: already exists (pass `exist_ok=True` to overwrite)") from None
            except OSError as exc:
                raise write_error(output, exc) from exc
            self._keys = set(self.resume.known)

    def _plain(self, record: Record) -> dict[str, Any]:
        """The record as JSON can hold it: NaN and infinity become ``null`` (said once on stderr)."""
        data = record.to_dict()
        if self.fmt == "table":
            return data
        data, bad = finite(data)
        if bad and not self._warned:
            self._warned = True
            log.warning(
                "%s: %d number(s) were NaN or infinite, written as null (JSON has neither); "
                "later ones are not reported",
                record.path,
                bad,
            )
        return data

    def _drop_redone(self) -> None:
        """Before the first record: the old records of the videos this run reads again go (:func:`drop_videos`).
        Not earlier, so a run refused before it writes (another model, no cluster) leaves the file as it was."""
        if not self.resume.redo or self._fh is None or self.output is None:
            return
        redo, self.resume.redo = self.resume.redo, set()
        self._fh.close()
        drop_videos(self.output, self.resume, redo)
        self._fh = open(self.output, "ab", buffering=0)  # noqa: SIM115 (closed by close())
        self._good = self._fh.seek(0, os.SEEK_END)
        self._keys = set(self.resume.known)

    def write(self, record: Record) -> None:
        self._drop_redone()
        data = self._plain(record)
        if self._parquet is not None:
            self._parquet.write(data)
            return
        if self.fmt == "mot":  # MOT Challenge rows: a few short lines a frame, spooled until close
            from cnnkit.eval.mot import mot_lines

            for line in mot_lines(data):
                self._spool.add(line)
            self._tracked = self._tracked or data.get("error") is None
            return
        if self.fmt in ("json", "csv", "table"):
            self._spool.add(data)
        elif self.fmt == "jsonl" and self._fh is not None:
            self._write_line(
                safe_text(json.dumps(data, ensure_ascii=False, allow_nan=False)) + "\n",
                record_key(record.path, record.frame),
            )
        elif self.fmt == "jsonl":
            try:
                write_text(self.stream, safe_text(json.dumps(data, ensure_ascii=False, allow_nan=False)) + "\n")
            except BrokenPipeError:
                raise  # the reader went away (`| head`): the caller stops quietly
            except OSError as exc:
                raise write_error("stdout", exc, "write failed") from exc
        if self._coco is not None:
            self._coco.add(record)

    def _write_line(self, line: str, key: str) -> None:
        """Append one whole line; a failed write (a full disk) is cut off so the file keeps whole lines."""
        assert self._fh is not None
        data = line.encode("utf-8")
        try:
            _write_all(self._fh, data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fh.fileno(), self._good)
            raise write_error(self.output or "stdout", exc, "write failed") from exc
        self._good += len(data)
        self._compact = self._compact or key in self._keys
        self._keys.add(key)

    def _render(self) -> Iterator[str]:
        """The output in parts, each made from the spool as it is written."""
        if self.fmt == "mot":
            yield from (line + "\n" for line in self._spool)
        elif self.fmt == "json":  # json.dumps(records, indent=2), a record at a time
            if not self._spool.count:
                yield "[]\n"
                return
            for n, rec in enumerate(self._spool):
                text = json.dumps(rec, ensure_ascii=False, indent=2, allow_nan=False).replace("\n", "\n  ")
                yield ("[\n  " if n == 0 else ",\n  ") + text
            yield "\n]\n"
        elif self.fmt == "csv":
            # rows end in "\n", but the writer is told "\r\n" so that a field holding a lone "\r" (a file name
            # may) is quoted: Python's csv quotes only the characters of its line terminator
            buf = io.StringIO()
            writer = csv.DictWriter(
                buf, fieldnames=csv_columns(self._spool, self.task), restval="", lineterminator="\r\n"
            )

            def line(row: dict[str, Any] | None) -> str:
                buf.seek(0)
                buf.truncate()
                writer.writeheader() if row is None else writer.writerow(row)
                return buf.getvalue()[:-2] + "\n"

            yield line(None)
            for rec in self._spool:
                yield "".join(line(row) for row in csv_rows(rec))
        elif self.fmt == "coco":
            yield json.dumps(finite(self._coco.results())[0], separators=(",", ":"), allow_nan=False) + "\n"
        else:
            part: list[dict[str, Any]] = []
            for rec in self._spool:
                part.append(rec)
                if len(part) == TABLE_ROWS:
                    yield render_table(part)
                    part = []
            if part or not self._spool.count:
                yield render_table(part)

    def close(self) -> None:
        """Finish the output: JSON Lines is already on disk (retried inputs are merged); the rest is written now."""
        if self._closed:
            return
        self._closed = True
        if self._parquet is not None:
            self._parquet.close()
            return
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            if self._compact:
                tidy_jsonl(self.output)  # type: ignore[arg-type]
            return
        try:
            if self.fmt == "jsonl" or (self.fmt == "mot" and not self._tracked):  # an empty MOT file would read
                return  # as "tracked, nothing found" where no frame was read at all
            if self.output:
                self._publish(self.output)
            elif self.fmt == "table":
                from rich.console import Console

                console = Console(file=self.stream, soft_wrap=True)
                for text in self._render():
                    console.print(safe_text(text), end="", markup=False, highlight=False)
            else:
                try:
                    for text in self._render():
                        write_text(self.stream, safe_text(text))
                except BrokenPipeError:
                    raise
                except OSError as exc:
                    raise write_error("stdout", exc, "write failed") from exc
        finally:
            self._spool.close()

    def _write_to(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for text in self._render():
                f.write(safe_text(text))

    def _publish(self, output: str) -> None:
        """Write the whole file; one that appeared during the run is kept, and the records go beside it."""
        if is_stream(output):
            try:
                self._write_to(output)
            except OSError as exc:
                raise write_error(output, exc, "write failed") from exc
            return
        try:
            with atomic_path(output, overwrite=self.exist_ok) as tmp:
                self._write_to(tmp)
        except AlreadyExists:
            for n in range(1, 1000):
                kept = Path(f"{output}.{n}")
                try:
                    with atomic_path(kept, overwrite=False) as tmp:
                        self._write_to(tmp)
                except AlreadyExists:
                    continue
                raise CnnkitError(
                    f"{output}: appeared during the run and was not overwritten; the records are in {kept}"
                ) from None
            raise


def summarise_predictions(preds: Sequence[dict[str, Any]], limit: int = 3) -> str:
    """The first ``limit`` predictions as ``label score``, for a one-line summary."""
    parts = []
    for p in preds[:limit]:
        parts.append(f"{p.get('label', '?')} {p['score']:.2f}" if "score" in p else str(p.get("label", "?")))
    more = f" (+{len(preds) - limit})" if len(preds) > limit else ""
    return ", ".join(parts) + more


def render_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for people (rich box drawing), one row per image."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from cnnkit.errors import printable

    table = Table(show_lines=False)
    for col in ("path", "size", "predictions", "ms"):
        table.add_column(col, overflow="fold")
    for r in rows:  # cells are Text, not markup: a file named "d[/b].png" is a name, not a closing tag
        size = f"{r['width']}x{r['height']}" if r.get("width") else ""
        preds = (  # a label with an escape sequence or line break (a model's names) is shown escaped
            Text(printable(f"error: {r['error']}"), style="red")
            if r.get("error")
            else Text(printable(summarise_predictions(r["predictions"])))
        )
        where = printable(str(r["path"]))
        if r.get("frame") is not None:  # a video's rows, told apart by frame and time
            where += f" #{r['frame']}" + (f" ({r['time_s']:.2f} s)" if r.get("time_s") is not None else "")
        table.add_row(Text(where), size, preds, f"{r['time_ms']:.1f}" if r.get("time_ms") is not None else "")
    buf = io.StringIO()
    Console(file=buf, width=120, force_terminal=False, color_system=None).print(table)
    return buf.getvalue()
