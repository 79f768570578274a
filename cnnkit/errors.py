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


class OptionError(UsageError):
    """A bad value of one or more options, named by their Python keywords (``arch``, ``val_split``).

    The library never spells a command-line flag: ``str()`` reads ``arch 'x': reason`` for Python callers,
    and the CLI renders the same error with its own flag names (``--arch x: reason``, :meth:`render`).
    """

    def __init__(self, options: str | tuple[str, ...], reason: str, value: object = None) -> None:
        self.options = (options,) if isinstance(options, str) else tuple(options)
        self.reason = reason
        self.value = value
        super().__init__(self.render({}))

    def render(self, flags: dict[str, str]) -> str:
        """The message with each option spelled as ``flags`` says (keyword → ``--flag``), else as its keyword."""
        names = ", ".join(flags.get(o, o) for o in self.options)
        if self.value is None:
            return f"{names}: {self.reason}"
        shown = self.value if flags else repr(self.value)
        return f"{names} {shown}: {self.reason}"
