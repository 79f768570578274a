"""Exceptions that the CLI turns into a one-line message and an exit code.

Plain exceptions for Python callers; the CLI's root group catches them, prints
``Error: message`` on stderr and exits with ``exit_code`` (1, or 2 for usage).
"""

from __future__ import annotations

import re
from pathlib import Path

# An option named inside a message: its Python keyword in backticks (`weights`, `exist_ok=True`), which the
# CLI spells as its flag (--weights, --exist-ok).
_OPTION_REF = re.compile(r"`([a-z][a-z0-9_]*)(?:=(True|False))?`")


def spell_options(text: str, flags: dict[str, str]) -> str:
    """``text`` with each option reference that ``flags`` knows replaced by its flag: `keyword` and
    `keyword=True` by ``flags[keyword]``, `keyword=False` by ``flags["keyword=False"]`` (``--no-…``)."""

    def spell(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        flag = flags.get(f"{name}=False") if value == "False" else flags.get(name)
        return flag or m.group(0)

    return _OPTION_REF.sub(spell, text)


_WHERE_LINES = ("Exception from src/", "Check '")  # OpenVINO opens its messages with its own source lines


def reason_of(exc: BaseException, limit: int = 200) -> str:
    """The reason an exception gives, on one line: its first line, except that the lines naming a library's
    own source files (OpenVINO's ``Exception from src/…cpp:84:``) give way to the lines after them."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    told = [line for line in lines if not line.startswith(_WHERE_LINES)]
    if not lines:
        return type(exc).__name__
    return ("; ".join(told) if told and told != lines else lines[0])[:limit]


class CnnkitError(Exception):
    """An error the user can act on; printed without a traceback (exit 1).

    A message that points at an option names it by keyword in backticks (```weights``` PATH,
    ```exist_ok=True```): Python callers read the keyword, the CLI shows its flag (:meth:`render`).
    """

    exit_code = 1

    def __init__(self, *args: object, message: str | None = None) -> None:
        """``message=`` is how torch's DataLoader re-raises a worker's error (a type with a ``message``): its
        text is the worker's traceback, whose last line is ``…CnnkitError: the one-line message``."""
        if message is not None:
            last = message.rstrip().splitlines()[-1] if message.strip() else ""
            args = (last.split(": ", 1)[1] if "Error: " in last else last,)
        super().__init__(*args)

    @property
    def message(self) -> str:
        return str(self)

    def render(self, flags: dict[str, str]) -> str:
        """The message with option references spelled as ``flags`` says (keyword → ``--flag``)."""
        return spell_options(str(self), flags)


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
        reason = spell_options(self.reason, flags)
        if self.value is None:
            return f"{names}: {reason}"
        shown = self.value if flags else repr(self.value)
        return f"{names} {shown}: {reason}"


_SECRET_PARAMS = re.compile(
    r"(?i)^(x-amz-(signature|credential|security-token)|signature|sig|awsaccesskeyid|"
    r"token|access_token|password|key|x-goog-(signature|credential))$"
)


class Interrupted(KeyboardInterrupt):
    """A training run stopped by SIGINT/SIGTERM after saving its state in ``out`` (resumable). Here, not in the
    training loop's torch-importing module, so that a Ctrl-C during torch's import can be told from it."""

    def __init__(self, out: Path) -> None:
        super().__init__(str(out))
        self.out = out


def printable(path: str) -> str:
    """``path`` as a log line shows it: control characters escaped (``\\n``), so a crafted file name cannot break
    a one-line error or a table row into lines that look like others, and a URL's password and signing
    parameters (a presigned URL's ``X-Amz-Signature``) as ``***``, as ultralytics' ``clean_url`` hides them."""
    if "://" in path:
        path = _without_secrets(path)
    return path if path.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def _without_secrets(url: str) -> str:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}:***@{host}" if ":" in user else netloc
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_PARAMS.match(k) for k, _ in pairs):
        query = urlencode([(k, "***" if _SECRET_PARAMS.match(k) else v) for k, v in pairs], safe="*")
    return (
        urlunsplit(parts._replace(netloc=netloc, query=query))
        if (netloc, query) != (parts.netloc, parts.query)
        else url
    )
