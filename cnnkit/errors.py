"""Exceptions that the CLI turns into a one-line message and an exit code.

Plain exceptions for Python callers; the CLI's root group catches them, prints
``Error: message`` on stderr and exits with ``exit_code`` (1, or 2 for usage).
"""

from __future__ import annotations


class CnnkitError(Exception):
    """An error the user can act on; printed without a traceback (exit 1)."""

    exit_code = 1

    @property
    def message(self) -> str:
        return str(self)


class UsageError(CnnkitError):
    """Options that do not fit together (exit 2, like a click usage error)."""

    exit_code = 2


class DecodeError(CnnkitError):
    """An input file that cannot be turned into an RGB image."""


class WeightsNotAvailable(CnnkitError):
    """Pretrained weights are neither cached nor downloadable (offline)."""


class UnsafeCheckpoint(CnnkitError):
    """A checkpoint that would need arbitrary unpickling to load."""
