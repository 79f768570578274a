"""Tables for people that fit the terminal: whole columns are dropped by priority, never cut.

``cnnkit models``, ``info`` and ``summary`` print rows whose first column is something
the user types back (a model name, a layer name for ``--layer``); a narrow terminal must
not turn it into ``mode…``. So a column is either shown whole or left out (the JSON
output has every field), and the must-keep columns fold rather than truncate.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cnnkit.errors import printable


@dataclass(frozen=True)
class Column:
    """``key`` in each row, its ``header``; ``keep`` columns are always shown (folded if they must)."""

    key: str
    header: str
    right: bool = False
    keep: bool = False
    footer: str = ""


def terminal_width(default: int = 120) -> int:
    """The terminal's width; ``COLUMNS``, else ``default`` when stdout is not a terminal."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if sys.stdout.isatty():
        import shutil

        return shutil.get_terminal_size((default, 24)).columns
    return default


def fit(columns: Sequence[Column], rows: Sequence[dict[str, str]], width: int) -> list[Column]:
    """The columns to show, in their order: every ``keep`` column, then others by priority while they fit."""

    def need(col: Column) -> int:
        return max([len(col.header), len(col.footer), *(len(r.get(col.key, "")) for r in rows)]) + 3  # pad, rule

    chosen = [c for c in columns if c.keep]
    used = sum(need(c) for c in chosen)
    for col in columns:
        if col.keep:
            continue
        if used + need(col) <= width:
            chosen.append(col)
            used += need(col)
    return [c for c in columns if c in chosen]


def render(
    columns: Sequence[Column],
    rows: Sequence[dict[str, str]],
    *,
    title: str = "",
    caption: str = "",
    width: int | None = None,
) -> str:
    """The table as text no wider than ``width`` (the terminal's by default)."""
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    width = width or terminal_width()
    shown = fit(columns, rows, width)
    footer = any(c.footer for c in shown)
    table = Table(
        title=title or None,
        caption=caption or None,
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        show_footer=footer,
        caption_justify="left",
    )
    for col in shown:
        table.add_column(
            col.header, justify="right" if col.right else "left", overflow="fold", footer=col.footer, no_wrap=False
        )
    for row in rows:  # a label or path with an escape sequence or line break is shown escaped, on its row
        table.add_row(*(printable(row.get(c.key, "")) for c in shown))
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False, color_system=None, highlight=False).print(table)
    return buf.getvalue()


def cell(value: Any) -> str:
    """A value as table text: ``yes``/``no`` for booleans, nothing for ``None``."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)
