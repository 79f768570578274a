"""The ``cnnkit`` command. Command modules import torch & co. only inside their bodies,
so ``cnnkit --help`` stays instant."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from cnnkit._version import __version__
from cnnkit.cli import benchmark, data, export, finetune, inspect, reporting, visual
from cnnkit.cli.common import RootGroup, setup_logging
from cnnkit.tasks import TASKS

app = typer.Typer(
    name="cnnkit",
    cls=RootGroup,
    help="Convolutional networks for image files: classify, detect, segment, fine-tune, inspect.\n\n"
    "Data goes to stdout, logs and progress to stderr. Exit codes: 0 ok, 1 some inputs failed, 2 usage error, "
    "130 interrupted, 141 stdout closed (`| head`).",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Nothing on stderr but errors that stop the command (failed inputs: in the records and the exit code).",
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging on stderr.")] = False,
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
) -> None:
    ctx.obj = {"quiet": quiet, "verbose": verbose}
    setup_logging(quiet, verbose)


for _task in TASKS.values():
    app.add_typer(_task.cli(), name=_task.name, rich_help_panel="Tasks")
app.command("finetune", rich_help_panel="Tasks")(finetune.finetune)
app.add_typer(data.app, name="data", rich_help_panel="Data")
inspect.register(app)
visual.register(app)
export.register(app)
benchmark.register(app)
reporting.register(app)


def main() -> None:
    """The ``cnnkit`` console script."""
    try:
        app(prog_name="cnnkit")
    except SystemExit as done:
        exported = sys.modules.get("cnnkit.export")
        if exported is not None and exported.probe_running():  # a stranger's network that never ends: joining
            code = done.code if isinstance(done.code, int) else 1  # its thread at exit would abort the process
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise
