"""What an evaluation report shows, as plain data: each task's ``val.py`` lays its metrics out as
:class:`ReportTable` s and the CLI draws them (``cnnkit.cli.report``), so no task draws tables itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ReportTable:
    """One table of a report: ``columns`` (the first is a name, left-aligned; the rest right-aligned
    figures), ``rows`` of cell text, and ``notes``: lines printed under the table."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    notes: tuple[str, ...] = ()


def figure(value: float | None, digits: int = 4) -> str:
    """A metric as table text: fixed ``digits``, ``-`` for a figure that does not exist."""
    return "-" if value is None else f"{value:.{digits}f}"


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[object]] = (), notes: Sequence[str] = ()
) -> ReportTable:
    """A :class:`ReportTable` with every cell made text (floats through :func:`figure`)."""

    def text(v: object) -> str:
        return figure(v) if isinstance(v, float) else str(v)

    return ReportTable(title, tuple(columns), [tuple(text(v) for v in r) for r in rows], tuple(notes))
