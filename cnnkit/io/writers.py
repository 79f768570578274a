"""Record writers: table, json, jsonl, csv (and coco, for tasks that define it).

JSON Lines stream: each record is one complete line, flushed as it comes, so a run
stopped by Ctrl-C leaves a valid file of what was done (and ``--skip-existing`` can
resume it). The other formats are written whole, atomically, at the end.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from cnnkit.errors import CnnkitError, UsageError
from cnnkit.io.files import atomic_write_text
from cnnkit.records import Record

FORMATS = ("auto", "table", "json", "jsonl", "csv", "coco")
BASE_COLUMNS = ("path", "task", "model", "width", "height", "time_ms", "error")


def resolve_format(fmt: str, output: str | None, stream: TextIO | None = None) -> str:
    """``auto`` is a table on a terminal, JSON Lines in a pipe or a file."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    if output:
        suffix = Path(output).suffix.lower()
        return {".json": "json", ".csv": "csv", ".jsonl": "jsonl"}.get(suffix, "jsonl")
    stream = stream or sys.stdout
    return "table" if getattr(stream, "isatty", lambda: False)() else "jsonl"


def read_done_paths(output: str | os.PathLike) -> set[str]:
    """Paths already in a JSON Lines file (a torn last line, from a crash, is ignored)."""
    done: set[str] = set()
    path = Path(output)
    if not path.exists():
        return done
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("path"), str) and rec.get("error") is None:
                done.add(rec["path"])
    return done


def safe_text(text: str) -> str:
    """Text that encodes as UTF-8: a lone surrogate (a non-UTF-8 file name) becomes ``\\udcXX``,
    which in JSON is the escape that reads back as the same character."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def drop_torn_tail(path: str | os.PathLike) -> None:
    """Cut a last line that a crash left without its newline (it is not a record)."""
    p = Path(path)
    if not p.exists():
        return
    with open(p, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        block = min(size, 1 << 20)
        f.seek(size - block)
        tail = f.read(block)
        cut = tail.rfind(b"\n")
        f.truncate(size - block + cut + 1 if cut >= 0 else 0)


def _flat_value(v: Any) -> Any:
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return "" if v is None else v


def csv_rows(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per prediction (an image with none still gets one row)."""
    base = {k: _flat_value(rec.get(k)) for k in BASE_COLUMNS}
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


class RecordWriter:
    """Consumes records one at a time; ``close()`` finishes the output."""

    def __init__(
        self, fmt: str, output: str | None = None, *, append: bool = False, exist_ok: bool = False,
        stream: TextIO | None = None, coco_builder: Any = None,
    ) -> None:
        self.fmt = resolve_format(fmt, output, stream)
        self.output = output
        self.stream = stream or sys.stdout
        self._buffer: list[dict[str, Any]] = []
        self._fh: TextIO | None = None
        self._coco = coco_builder
        if self.fmt == "coco" and coco_builder is None:
            raise UsageError("--format coco is for detect and instance")
        if output and Path(output).exists() and not (append or exist_ok):
            raise CnnkitError(f"{output}: already exists (pass --exist-ok to overwrite, or --skip-existing to resume)")
        if output and append and self.fmt != "jsonl":
            raise UsageError("--skip-existing resumes a JSON Lines --output; use --format jsonl")
        if self.fmt == "jsonl" and output:
            try:
                Path(output).parent.mkdir(parents=True, exist_ok=True)
                if append:
                    drop_torn_tail(output)
                self._fh = open(output, "a" if append else "w", encoding="utf-8")
            except OSError as exc:
                raise CnnkitError(f"{output}: cannot write ({exc.strerror or exc})") from exc

    def write(self, record: Record) -> None:
        data = record.to_dict()
        if self.fmt == "jsonl":
            fh = self._fh or self.stream
            try:
                fh.write(safe_text(json.dumps(data, ensure_ascii=False)) + "\n")
                fh.flush()
            except BrokenPipeError:
                raise  # the reader went away (`| head`): the caller stops quietly
            except OSError as exc:
                raise CnnkitError(f"{self.output or 'stdout'}: write failed ({exc.strerror or exc})") from exc
        else:
            self._buffer.append(data)
        if self._coco is not None:
            self._coco.add(record)

    def _render(self) -> str:
        if self.fmt == "json":
            return json.dumps(self._buffer, ensure_ascii=False, indent=2) + "\n"
        if self.fmt == "csv":
            rows = [row for rec in self._buffer for row in csv_rows(rec)]
            columns: list[str] = list(BASE_COLUMNS) + ["rank"]
            for row in rows:
                columns += [k for k in row if k not in columns]
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            return buf.getvalue()
        if self.fmt == "coco":
            return json.dumps(self._coco.results(), separators=(",", ":")) + "\n"
        return render_table(self._buffer)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            return
        if self.fmt == "jsonl":
            return
        text = safe_text(self._render())
        if self.output:
            atomic_write_text(self.output, text)
        elif self.fmt == "table":
            from rich.console import Console

            Console(file=self.stream, soft_wrap=True).print(text, end="", markup=False, highlight=False)
        else:
            self.stream.write(text)
            self.stream.flush()


def summarise_predictions(preds: Sequence[dict[str, Any]], limit: int = 3) -> str:
    parts = []
    for p in preds[:limit]:
        parts.append(f"{p.get('label', '?')} {p['score']:.2f}" if "score" in p else str(p.get("label", "?")))
    more = f" (+{len(preds) - limit})" if len(preds) > limit else ""
    return ", ".join(parts) + more


def render_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table for people (rich box drawing), one row per image."""
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("path", "size", "predictions", "ms"):
        table.add_column(col, overflow="fold")
    for r in rows:
        size = f"{r['width']}x{r['height']}" if r.get("width") else ""
        preds = f"[red]error: {r['error']}[/red]" if r.get("error") else summarise_predictions(r["predictions"])
        table.add_row(r["path"], size, preds, f"{r['time_ms']:.1f}" if r.get("time_ms") is not None else "")
    buf = io.StringIO()
    Console(file=buf, width=120, force_terminal=False, color_system=None).print(table)
    return buf.getvalue()
