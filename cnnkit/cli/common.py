"""What every command shares: the task group with a default command, logging on stderr, and the
loop that writes records and sets the exit code. The options themselves live in :mod:`cnnkit.cli.options`."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

from cnnkit.cli.options import flagged, given, view_format
from cnnkit.errors import CnnkitError, UsageError, printable, spell_options

if TYPE_CHECKING:
    from rich.console import Console

    from cnnkit.io.video import VideoOptions
    from cnnkit.records import Record

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


def exit_if_failed(metrics: dict[str, Any]) -> None:
    """Exit 1 after a ``val`` whose metrics name failed inputs (a count or a list): scores over what was read,
    but the run says not everything was."""
    failed = metrics.get("failed")
    if failed if isinstance(failed, int) else len(failed or []):
        raise typer.Exit(EXIT_FAILED)


log = logging.getLogger("cnnkit")


class TaskGroup(TyperGroup):
    """``cnnkit TASK val DATA`` runs a subcommand; anything else goes to ``predict``.

    The ultralytics grammar (``yolo detect val``) in one place: a file really called
    ``val`` is written ``./val``.
    """

    default_command = "predict"

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Anything but a subcommand name goes to predict, ``--help`` included (its help names ``val``)."""
        if not args or args[0] not in self.commands:
            args = [self.default_command, *args]
            ctx.meta[_IMPLICIT] = True
        return super().parse_args(ctx, args)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None and cmd_name == self.default_command:
            command.context_class = _DefaultContext
        return command


_IMPLICIT = "cnnkit.default_command"  # set in the (shared) context meta when the task group chose `predict` itself


class _DefaultContext(typer.Context):
    """The context of a subcommand the user did not name: usage lines and "Try … -h" say ``cnnkit classify``,
    as typed, not ``cnnkit classify predict``."""

    @property
    def command_path(self) -> str:
        if self.parent is not None and self.meta.get(_IMPLICIT):
            return str(self.parent.command_path)
        return str(super().command_path)


GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose")


def hoist_global_flags(args: list[str]) -> list[str]:
    """``cnnkit classify x -q`` → ``cnnkit -q classify x``: global flags work after the command too.

    Only tokens after the command name and before a ``--`` separator move; nothing else is reordered.
    """
    start = next((i for i, a in enumerate(args) if not a.startswith("-")), len(args))
    stop = args.index("--") if "--" in args[start:] else len(args)
    moved = [a for a in args[start:stop] if a in GLOBAL_FLAGS]
    if not moved:
        return args
    kept = [a for a in args[start:stop] if a not in GLOBAL_FLAGS]
    return moved + args[:start] + kept + args[stop:]


def _reflow(text: str) -> str:
    """Join a docstring paragraph's lines: Typer's rich help keeps them, so wrapped source lines broke mid-sentence."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines()) for p in paragraphs
    )


def _tidy_help(command: Any) -> None:
    """Flags show no ``<bool>`` type in help; paragraphs are reflowed; a task's predict help says how to evaluate."""
    if getattr(command, "help", None):
        command.help = _reflow(command.help)
    for param in getattr(command, "params", []):  # typer may vendor its own click: no isinstance here
        if getattr(param, "is_flag", False):
            param.metavar = ""
    if not getattr(command, "_cnnkit_tidy", False) and hasattr(command, "get_help_option"):
        made = command.get_help_option

        def get_help_option(ctx: Any) -> Any:
            option = made(ctx)
            if option is not None:
                option.metavar = ""
            return option

        command.get_help_option = get_help_option
        command._cnnkit_tidy = True
    if isinstance(command, TaskGroup) and "predict" in command.commands and "val" in command.commands:
        predict = command.commands["predict"]
        predict.epilog = (
            f"`cnnkit {command.name} SOURCES...` runs predict. To evaluate on labelled data: "
            f"`cnnkit {command.name} val DATA` (see `cnnkit {command.name} val --help`)."
        )
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


class RootGroup(TyperGroup):
    """Turns a :class:`CnnkitError` from any command into ``Error: …`` on stderr and its exit code."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        """Click's context, after the ``CNNKIT_*`` environment is checked (so a bad value names its variable)."""
        from cnnkit.config import check_environment

        _tidy_help(self)
        try:
            check_environment()  # before Typer reads CNNKIT_* through envvar= and blames the flag
        except CnnkitError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        ctx = super().make_context(info_name, hoist_global_flags(list(args)), parent=parent, **extra)
        ctx.meta["cnnkit.args"] = list(args)
        return ctx

    def invoke(self, ctx: Any) -> Any:
        """Run the command; a :class:`CnnkitError` becomes ``Error: …`` with its flags named, and its exit code.

        SIGTERM (``timeout``, ``scancel``, systemd) is Ctrl-C for the whole command, so every command's clean-up
        runs (temp files, half-written outputs) and it exits 130 saying so, wherever the signal comes."""
        restore = _sigterm_as_interrupt()
        try:
            return super().invoke(ctx)
        except CnnkitError as exc:
            message = exc.render(flag_names(self)) + _source_note(self, exc, ctx.meta.get("cnnkit.args", []))
            typer.echo(f"Error: {printable(message)}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # not caught by the command: one that says how it ends has caught it
            typer.echo("interrupted", err=True)
            raise typer.Exit(EXIT_INTERRUPTED) from None
        finally:
            restore()


def _source_note(command: Any, exc: CnnkitError, args: list[str]) -> str:
    """`` (device cuda is from CNNKIT_DEVICE)`` when the error names a setting the user did not give as a flag:
    one who typed no --device cannot otherwise see why it is blamed. A task's model (``CNNKIT_MODEL_<TASK>``)
    counts when the error names its value."""
    from cnnkit.config import SETTINGS, TASK_NAMES, lookup

    named = [(key, key) for key in getattr(exc, "options", ()) if key in SETTINGS]  # (option, setting)
    if args and args[0] in TASK_NAMES:
        named.append(("model", f"model.{args[0]}"))
    notes = []
    for option, key in named:
        spelled = _opts_of(command, option)
        if not spelled or any(a.split("=")[0] in spelled for a in args):
            continue
        try:
            setting = lookup(key)  # "env CNNKIT_DEVICE", "config PATH" or "built-in"
        except CnnkitError:  # a broken config file: that is the error being reported
            continue
        if setting.source == "built-in" or (option != key and repr(setting.value) not in str(exc)):
            continue
        notes.append(f"{option} {setting.value} is from {setting.source.partition(' ')[2]}")
    return f" ({'; '.join(notes)})" if notes else ""


def _opts_of(command: Any, key: str) -> set[str]:
    """Every spelling (``--device``, ``-d``) of option ``key`` in ``command`` and the commands below it."""
    found = {o for param in getattr(command, "params", []) if param.name == key for o in getattr(param, "opts", [])}
    for sub in getattr(command, "commands", {}).values():
        found |= _opts_of(sub, key)
    return found


def flag_names(command: Any) -> dict[str, str]:
    """Keyword → its long flag (``val_split`` → ``--val-split``) over every command below ``command``:
    the one option grammar gives a keyword one flag everywhere, so the library's errors
    (:class:`~cnnkit.errors.OptionError`, option references in any message) name options by keyword
    and the CLI still shows flags."""
    names: dict[str, str] = {}
    for param in getattr(command, "params", []):  # typer may vendor its own click: duck typing only
        longs = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if longs and not getattr(param, "hidden", False):
            names.setdefault(param.name, longs[0])
            negative = [o for o in getattr(param, "secondary_opts", []) if o.startswith("--")]
            if negative:  # ``pretrained=False`` → --no-pretrained
                names.setdefault(f"{param.name}=False", negative[0])
    for sub in getattr(command, "commands", {}).values():
        for key, flag in flag_names(sub).items():
            names.setdefault(key, flag)
    return names


def task_app(help_text: str) -> typer.Typer:
    """A task's Typer app, with the task group's help layout, so every task's CLI looks the same."""
    return typer.Typer(cls=TaskGroup, help=help_text, no_args_is_help=False, rich_markup_mode="rich")


def stderr_console() -> Console:
    """A rich console on stderr that wraps only on a terminal: a log file gets whole lines."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, soft_wrap=True, width=10_000)
    return console


class _PlainFormatter(logging.Formatter):
    """``message`` for info, ``warning: message`` above it: what a log file or CI shows."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno <= logging.INFO else f"{record.levelname.lower()}: {text}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and CliRunner swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self) -> Any:
        import sys

        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(quiet: bool, verbose: bool) -> None:
    """Rich log lines on a terminal; plain, unwrapped, unpadded lines anywhere else."""
    import sys

    level = logging.ERROR if quiet else logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("cnnkit")
    if getattr(sys.stderr, "isatty", lambda: False)():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=stderr_console(), show_time=False, show_path=False, markup=False)
    else:
        handler = _StderrHandler()
        handler.setFormatter(_PlainFormatter("%(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # only cnnkit speaks on the CLI's stderr: ultralytics' own lines are for -v
    logging.getLogger("cnnkit.ultralytics").setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)


def state(ctx: typer.Context) -> dict[str, Any]:
    """The root command's global flags (``quiet``, ``verbose`` …), with defaults when a command runs alone."""
    obj = ctx.find_root().obj
    return obj if isinstance(obj, dict) else {"quiet": False, "verbose": False}


def resolve_save_dir(task: str, save: bool, save_dir: str | None, exist_ok: bool) -> tuple[Path | None, bool]:
    """``--save-dir`` is used as named; ``--save`` alone picks ``runs/<task>/exp[N]``. With the folder, whether
    it is one this run picked and made, to be removed if the run leaves it empty (not a named one, nor an
    ``exp`` that ``exist_ok`` reuses)."""
    from cnnkit.io.files import explicit_dir, increment_dir

    if save_dir:
        return explicit_dir(save_dir, exist_ok=exist_ok), False
    if save:
        base = Path("runs") / task / "exp"
        reused = exist_ok and base.is_dir()
        return increment_dir(base, exist_ok=exist_ok), not reused
    return None, False


def write_records(
    ctx: typer.Context,
    records: Iterable[Any],
    *,
    total: int | None,
    fmt: str,
    output: str | None,
    append: bool = False,
    exist_ok: bool = False,
    coco_builder: Any = None,
    resume: Any = None,
    task: str | None = None,
) -> None:
    """Write each record as it comes, show progress on stderr, then exit 0/1/130.

    ``resume`` is what :func:`cnnkit.io.writers.tidy_jsonl` found in ``output`` (``append``); ``task`` the records'.
    """
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from cnnkit.io.video import is_video_source
    from cnnkit.io.writers import RecordWriter

    quiet = state(ctx)["quiet"]
    flags = flag_names(ctx.find_root().command)
    writer = RecordWriter(
        fmt, output, append=append, exist_ok=exist_ok, coco_builder=coco_builder, resume=resume, task=task
    )
    err = stderr_console()
    failed: list[tuple[str, str]] = []
    done = frames = videos = 0  # videos: records of a whole video (one that could not be opened)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=quiet or not err.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    interrupted = broken_pipe = False
    # a log file (nohup, Slurm) gets no live bar: a plain line now and then says the job is alive
    beat = not quiet and not err.is_terminal
    started = last = time.monotonic()
    try:
        with progress:  # the live bar is gone before the writer prints a table to the same terminal
            bar = progress.add_task("predicting", total=total)
            try:
                for rec in records:
                    if rec.error is not None:  # a library reason names options by keyword; say the flag
                        rec.error = spell_options(rec.error, flags)
                    writer.write(rec)
                    done += 1
                    read = rec.frame is not None and rec.error is None  # a failed item names frames not read
                    frames += read
                    videos += not read and (rec.frame is not None or is_video_source(rec.path))
                    if rec.error is not None:
                        failed.append((rec.path, rec.error))
                        if not quiet:
                            err.print(
                                f"[red]failed[/red] {escape(printable(rec.path))}: {escape(rec.error)}",
                                markup=True,
                                highlight=False,
                            )
                    progress.advance(bar)
                    if beat and time.monotonic() - last >= HEARTBEAT_S:
                        last = time.monotonic()
                        of = f"/{total}" if total else ""
                        rate = done / max(last - started, 1e-9)
                        err.print(f"{done}{of} done, {len(failed)} failed, {rate:.1f}/s", markup=False, highlight=False)
            except KeyboardInterrupt:
                interrupted = True
            except BrokenPipeError:
                broken_pipe = True
    finally:
        if not broken_pipe:
            try:  # a CSV, JSON or table reaches stdout only here, when it is whole
                writer.close()
            except BrokenPipeError:
                broken_pipe = True
    if not quiet:
        what = f"{done} record(s) ({frames} video frame(s))" if frames or videos else f"{done} image(s)"
        msg = f"{what}, {len(failed)} failed" + (" (interrupted)" if interrupted else "")
        err.print(msg, highlight=False)
        for path, reason in failed[:20]:
            err.print(f"  {printable(path)}: {reason}", markup=False, highlight=False)
        if len(failed) > 20:
            err.print(f"  … and {len(failed) - 20} more", highlight=False)
    if broken_pipe:
        # The reader closed the pipe (`cnnkit … | head`): stop quietly, as a SIGPIPE'd tool does.
        import os
        import sys

        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (replaces the closed pipe until exit)
        raise typer.Exit(EXIT_BROKEN_PIPE)
    if interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _same_model(records: Iterable[Record], resume: Any, output: str, task: str) -> Iterator[Record]:
    """``records``, refused before the first is written when their model is not the resumed file's (a local run
    checks the model it loaded; on Ray only the actors load it)."""
    checked = False
    for rec in records:
        if not checked and rec.model:
            resume.check_run(output, task, rec.model)
            checked = True
        yield rec


def _read_from_elsewhere(done: Any) -> bool:
    """Whether a resumed file's inputs look read from another working folder: none of the first of them is a
    file here (a run adding new inputs to a file whose earlier ones are still here is not warned about)."""
    from cnnkit.io import remote

    local = [key for key in list(done)[:20] if not remote.is_remote(key)]  # a frame's key: `clip.mp4#12`
    return bool(local) and not any(os.path.exists(key) or os.path.exists(key.rpartition("#")[0]) for key in local)


HEARTBEAT_S = 60.0  # seconds between progress lines when stderr is not a terminal


def setting(ctx: typer.Context, name: str) -> Any:
    """A run setting (``batch_size``, ``workers``) by flag > environment > config file > built-in."""
    from cnnkit.config import resolve

    return resolve(name, ctx.params[name], given(ctx, name))


def split_classes(value: list[str] | None) -> list[str] | None:
    """``--classes 0 2`` or ``--classes circle,star`` → one flat list."""
    if not value:
        return None
    return [part for v in value for part in v.replace(",", " ").split()]


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Treat SIGTERM like Ctrl-C (in the main thread) until the returned function puts the old handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def json_wanted(fmt: str, ctx: typer.Context | None = None) -> bool:
    """JSON when asked for, or for ``auto`` when stdout is not a terminal; ``ctx`` lets
    ``CNNKIT_FORMAT`` meant for predictions fall back to ``auto``."""
    import sys

    if ctx is not None:
        fmt = view_format(ctx, fmt)
    if fmt not in ("auto", "table", "json"):
        raise UsageError(f"--format {fmt!r}: expected auto, table or json")
    return fmt == "json" or (fmt == "auto" and not getattr(sys.stdout, "isatty", lambda: False)())


def report_format(fmt: str, output: str | None) -> str:
    """``table`` or ``json`` for an evaluation report, by the rule predict follows.

    ``auto`` is JSON into a file (a ``.txt``/``.md``/``.log`` suffix asks for the table) or a
    pipe, and a table on a terminal.
    """
    import sys

    if fmt not in ("auto", "table", "json"):
        raise UsageError(f"--format {fmt!r}: expected auto, table or json")
    suffix = Path(output).suffix.lower() if output and output != "-" else ""
    if suffix in (".csv", ".tsv", ".jsonl", ".ndjson", ".parquet"):  # it would hold JSON under that name
        raise UsageError(f"--output {output}: a report is JSON or a table; name it .json, or .txt/.md for the table")
    if fmt != "auto":
        return fmt
    if output and output != "-":
        return "table" if suffix in (".txt", ".md", ".log") else "json"
    return "table" if getattr(sys.stdout, "isatty", lambda: False)() else "json"


def emit_report(text: str, output: str | None, exist_ok: bool) -> None:
    """An evaluation report to ``--output`` (atomic, never over a file without ``--exist-ok``) or stdout."""
    from cnnkit.io.files import atomic_write_text, write_error
    from cnnkit.io.writers import is_stream

    if not output or output == "-":
        typer.echo(text, nl=False)
    elif is_stream(output):  # /dev/stdout, a FIFO: written through, never replaced by a file
        try:
            with open(output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise write_error(output, exc, "write failed") from exc
    else:
        atomic_write_text(output, text, overwrite=exist_ok)


def local_data(ctx: typer.Context, data: str) -> str:
    """A ``val`` DATA as a local path: a URL (``s3://bucket/set/``, or the dataset yaml/json in it) is copied
    into a temporary folder that lives as long as the command, since the scorers read labels, masks and
    annotation files as files; a path is returned as is."""
    from cnnkit.io import remote

    if not remote.is_remote(data):
        return data
    from cnnkit.data.yolo_yaml import ARCHIVE_SUFFIXES

    if data.lower().rstrip("/").endswith(ARCHIVE_SUFFIXES):  # as ultralytics' download: would fetch and unpack
        raise UsageError(
            f"{data}: a URL of an archive; cnnkit does not download and unpack datasets "
            "(unpack it yourself and pass its folder or dataset yaml)"
        )
    import tempfile

    tmp = ctx.with_resource(tempfile.TemporaryDirectory(prefix="cnnkit-val-"))
    return str(remote.download(data, tmp))


_ULTRALYTICS_ARGUMENT = re.compile(r"([a-z_]+)=(.*)", re.DOTALL)


def require_sources(sources: list[str] | None) -> list[str]:
    """``sources``, or a usage error when none were given (commands that need inputs), or when one is ultralytics'
    ``key=value`` (``conf=0.5``, ``source=img.jpg``) and no such file: it would be a missing input, run with the
    default settings."""
    if not sources:
        raise UsageError("no SOURCES given (files, folders, globs, or - for stdin)")
    for src in sources:
        found = _ULTRALYTICS_ARGUMENT.fullmatch(src)
        if found and not os.path.lexists(src):
            key, value = found.groups()
            said = f"the source itself, {value}" if key == "source" else f"--{key.replace('_', '-')} {value}"
            raise UsageError(f"{src}: ultralytics' key=value is not a cnnkit option; say {said}")
    return sources


def introduce_default(task: str, load_options: dict[str, Any], predictor: Any) -> None:
    """Say once, on stderr, what a bundled default knows when the user named no model (``-q`` hides it)."""
    from cnnkit.config import lookup
    from cnnkit.models.registry import get_spec, introduction

    if load_options.get("model") or load_options.get("weights") or lookup(f"model.{task}").value:
        return
    try:
        spec = get_spec(predictor.name, task)
    except CnnkitError:
        return
    line = introduction(spec, getattr(predictor, "labels", None))
    if line:
        log.info(spell_options(line, {"model": "--model"}))


SCALE_OPTIONS = ("address", "actors", "gpus_per_actor", "cpus_per_actor", "parts")


def engine_options(ctx: typer.Context, save: bool) -> tuple[str, dict[str, Any]]:
    """``--engine`` and the Ray pool's options; those options without ``--engine ray`` are a usage error."""
    p = ctx.params
    engine = p.get("engine") or "local"
    if engine not in ("local", "ray"):
        raise UsageError(f"--engine {engine}: expected local or ray")
    if engine == "local":
        stray = [n for n in SCALE_OPTIONS if n in p and given(ctx, n)]
        if stray:
            names = flag_names(ctx.command)
            raise UsageError(f"{', '.join(names.get(n, n) for n in stray)}: only with --engine ray")
        return engine, {}
    if save:
        said = [
            f
            for f in ("save", "save_dir", "save_txt", "save_conf", "save_crop", "save_masks")
            if p.get(f) and given(ctx, f)
        ]
        names = flag_names(ctx.command)
        flags = "/".join(names.get(f, f) for f in said) or "--save"
        raise UsageError(f"{flags}: write files on this machine; run without --engine ray to save them")
    return engine, {k: p[k] for k in SCALE_OPTIONS if k != "parts"}


def video_options(ctx: typer.Context) -> VideoOptions:
    """The command's ``--vid-stride``, ``--start``, ``--end`` and ``--max-frames`` (checked)."""
    from cnnkit.io.video import VideoOptions

    p = ctx.params
    return VideoOptions(p["vid_stride"], p["start"], p["end"], p["max_frames"])


def ray_parts(
    ctx: typer.Context,
    task: str,
    load_options: dict[str, Any],
    *,
    fmt: str,
    output: str | None,
    keep_classes: list[str] | None,
    scale: dict[str, Any],
) -> None:
    """``--engine ray --parts``: the workers write Parquet part files into the ``--output`` folder; the
    summary and exit code come from the parts' ``path`` and ``error`` columns."""
    from cnnkit import ray as on_ray
    from cnnkit.io.sources import expand_sources
    from cnnkit.io.sources import shard as take_shard

    p = ctx.params
    if not output:
        raise UsageError("--parts writes into a folder: give --output FOLDER")
    if fmt not in ("auto", "parquet"):
        raise UsageError(f"--parts writes Parquet part files, not --format {fmt}")
    if p["skip_existing"] or keep_classes or p.get("report"):
        raise UsageError(
            "--parts does not resume (--skip-existing), filter (--classes) or report (--report): write one merged file"
        )
    from cnnkit.io.remote import is_remote

    if is_remote(output):
        raise UsageError(
            f"{output}: --parts writes into a folder on this machine, not to a URL; write it here and copy it"
        )
    folder = Path(output)
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not p["exist_ok"])):
        raise CnnkitError(f"{output}: exists and is not an empty folder (pass --exist-ok to add parts to it)")
    items = take_shard(expand_sources(require_sources(p["sources"]), recursive=p["recursive"]), p["shard"])
    failed = on_ray.write_parts(
        items,
        task,
        folder,
        batch_size=setting(ctx, "batch_size"),
        workers=setting(ctx, "workers"),
        max_pixels=p["max_pixels"],
        video=video_options(ctx),
        **scale,
        **load_options,
    )
    if not state(ctx)["quiet"]:
        err = stderr_console()
        err.print(f"{len(items)} input(s), {len(failed)} failed; parts in {folder}", highlight=False)
        for path, reason in failed[:20]:
            err.print(f"  {printable(path)}: {reason}", markup=False, highlight=False)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _video_done(item: Any, resume: Any, options: VideoOptions, max_pixels: int | None) -> bool:
    """Whether a resumed file already holds every frame this run would read of video ``item``, and only those
    (decoded again to know which they are: a header's frame count is not always there, nor right). A stream is
    never done; nor is a video the file holds no frames of."""
    from cnnkit.io.video import is_stream_url, read_frames
    from cnnkit.io.writers import path_key

    if item.data is not None or item.error is not None or is_stream_url(item.path):
        return False
    if not resume.videos.get(path_key(item.path)):
        return False
    with contextlib.closing(read_frames(item.path, options, max_pixels=max_pixels)) as frames:
        return bool(resume.video_done(item.path, ((f.frame, f.error is None) for f in frames)))


def _earlier_records(output: str | os.PathLike[str], redone: set[str]) -> Iterator[dict[str, Any]]:
    """The records a resumed run keeps of ``output``: those of inputs it does not read again."""
    from cnnkit.io.writers import path_key
    from cnnkit.report.html import read_records

    for record in read_records(output):
        if path_key(str(record.get("path", ""))) not in redone:
            yield record


def run_predict(
    ctx: typer.Context,
    task: str,
    load_options: dict[str, Any],
    *,
    save: bool | None = None,
    coco_builder: Any = None,
    observe: Callable[[Iterable[Any], Path | None, Iterator[dict[str, Any]]], Iterable[Any]] | None = None,
) -> None:
    """The body every prediction command shares: sources → predictor → records → writer.

    The run options of :data:`cnnkit.cli.options.PREDICT_IO` and ``RUN`` are read from the
    command's own parameters; ``save`` overrides ``--save``/``--save-dir`` for commands that
    decide it from several flags; ``observe`` wraps the records on their way to the writer (with the save
    folder and, on a resumed run, the records kept from before), for what a command reports after the run
    (track summaries).
    """
    from cnnkit.config import resolve
    from cnnkit.io.files import check_outputs, drop_if_empty
    from cnnkit.io.sources import expand_sources, parse_shard
    from cnnkit.io.sources import shard as take_shard
    from cnnkit.io.writers import (
        SUFFIX_FORMATS,
        check_output,
        is_stdout,
        path_key,
        resolve_format,
        tidy_output,
    )

    p = ctx.params
    sources = require_sources(p["sources"])
    exist_ok, shard, skip_existing = p["exist_ok"], p["shard"], p["skip_existing"]
    output = None if is_stdout(p["output"]) else p["output"]
    if save is None:  # --save-dir alone saves; --no-save keeps it from doing so
        save = p["save"] if p["save"] is not None else bool(p["save_dir"])
    save_dir = p["save_dir"] if save else None
    batch_size, workers = setting(ctx, "batch_size"), setting(ctx, "workers")
    fmt = resolve("format", p["fmt"], given(ctx, "fmt"))
    if not flagged(ctx, "fmt") and output and Path(output).suffix.lower() in SUFFIX_FORMATS:
        fmt = "auto"  # a default format (env, config file) is for stdout: `-o part.parquet` is Parquet all the same
    parse_shard(shard)
    video = video_options(ctx)  # checked before a model loads or a save folder is made
    engine, scale = engine_options(ctx, save)
    if engine == "ray" and p.get("parts"):
        return ray_parts(
            ctx, task, load_options, fmt=fmt, output=output, keep_classes=load_options.get("classes"), scale=scale
        )
    fmt = resolve_format(fmt, output)
    if skip_existing and not output:
        raise UsageError("--skip-existing needs --output FILE.jsonl to know what is done")
    if fmt == "coco" and task not in ("detect", "instance"):  # the writer says so too, after the model loads
        raise UsageError(f"--format coco: is for detect and instance, not {task}")
    outputs = [save_dir] if save_dir else []
    items = take_shard(expand_sources(sources, recursive=p["recursive"], outputs=outputs), shard)
    from cnnkit.io.video import is_video_source

    videos = sum(1 for it in items if it.data is None and it.error is None and is_video_source(it.path))
    if fmt == "mot" and (task != "track" or len(items) != 1):
        raise UsageError("--format mot writes the tracks of one video: `cnnkit track VIDEO --format mot`")
    check_outputs(  # before anything is opened for writing, and before an existing output's advice to replace it
        {"`output`": output, "`report`": p.get("report")},
        (it.path for it in items if it.data is None and it.error is None),
    )
    check_output(output, fmt, append=skip_existing, exist_ok=exist_ok)
    resume = tidy_output(output, fmt) if skip_existing and output else None
    if resume is not None:
        resume.check_run(str(output), task)
    if resume is not None and resume.known:
        kept = [
            it
            for it in items
            if path_key(it.path) not in resume.done and not _video_done(it, resume, video, p["max_pixels"])
        ]
        log.info("skipping %d input(s) already in %s", len(items) - len(kept), output)
        if fmt == "jsonl":  # their old records go when the first new one is written (RecordWriter)
            resume.redo = resume.stale(it.path for it in kept if is_video_source(it.path))
        if kept and len(kept) == len(items) and _read_from_elsewhere(resume.done):
            log.warning(
                "%s: none of these inputs is among its %d record(s); relative paths in it are read from this "
                "folder (%s): rerun from the folder the first run started in",
                output,
                len(resume.done),
                Path.cwd(),
            )
        items = kept
    from cnnkit import api
    from cnnkit.cli import reporting

    # a resumed run is the same command again: its report and save folder are its own (the report reads back
    # the records done before; saved files are named per input)
    report = reporting.start(p.get("report"), exist_ok or skip_existing, task, records=output)
    folder, made = None, False
    if engine == "ray":
        from cnnkit import ray as on_ray
        from cnnkit.tasks import TASKS

        if report is not None:  # the actors hold the model: the report names what they were asked to load
            named = load_options.get("weights") or load_options.get("model") or TASKS[task].default_model
            report.info.update(model=str(named), engine="ray", actors=scale.get("actors"))
        records: Iterable[Any] = on_ray.predict_items(
            items,
            task,
            batch_size=batch_size,
            workers=workers,
            max_pixels=p["max_pixels"],
            video=video,
            **scale,
            **load_options,
        )
        if resume is not None:  # the actors load the model: its name comes with their first record
            records = _same_model(records, resume, str(output), task)
    else:
        predictor = api.load(task, **load_options)
        if resume is not None:
            resume.check_run(str(output), task, predictor.name)
        introduce_default(task, load_options, predictor)
        reporting.describe(report, predictor)
        folder, made = resolve_save_dir(task, save, save_dir, exist_ok or (skip_existing and bool(save_dir)))
        if folder is not None:
            log.info("saving pictures to %s", folder)
        records = predictor.stream(
            items,
            batch_size=batch_size,
            workers=workers,
            max_pixels=p["max_pixels"],
            save_dir=folder,
            keep_pictures=report is not None,
            **dataclasses.asdict(video),
        )
    if observe is not None:
        redone = {path_key(it.path) for it in items}
        earlier = _earlier_records(output, redone) if output and resume is not None and resume.known else iter(())
        records = observe(records, folder, earlier)
    if report is not None:
        records = reporting.feed(records, report)
    try:
        write_records(
            ctx,
            records,
            total=None if videos else len(items),
            fmt=fmt,
            output=output,
            append=skip_existing,
            exist_ok=exist_ok,
            coco_builder=coco_builder,
            resume=resume,
            task=task,
        )
    finally:
        reporting.finish(report)
        if made:  # runs/<task>/expN made for this run and left empty
            drop_if_empty(folder)
