"""Exceptions that the CLI turns into a one-line message and an exit code.

They are click exceptions, so Typer prints ``Error: message`` on stderr and exits
with their code both from the console script and under ``CliRunner``; Python
callers catch them like any other exception.
"""

from __future__ import annotations

import click


class CnnkitError(click.ClickException):
    """An error the user can act on; printed without a traceback (exit 1)."""

    exit_code = 1


class UsageError(CnnkitError):
    """Options that do not fit together (exit 2, like a click usage error)."""

    exit_code = 2


class DecodeError(CnnkitError):
    """An input file that cannot be turned into an RGB image."""


class WeightsNotAvailable(CnnkitError):
    """Pretrained weights are neither cached nor downloadable (offline)."""


class UnsafeCheckpoint(CnnkitError):
    """A checkpoint that would need arbitrary unpickling to load."""
