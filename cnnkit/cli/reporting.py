"""``--report`` for predict and val commands, and the ``report``, ``explain`` and ``convert`` commands.

The work is in :mod:`cnnkit.report` and :mod:`cnnkit.io.handoff`; this module parses, calls and says
where things went. A report file is checked before any work, so a long run never ends in a refusal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnnkit.cli import options as o

if TYPE_CHECKING:
    from cnnkit.records import Record
    from cnnkit.report.html import Report

log = logging.getLogger("cnnkit")
PANEL = "Reports and hand-off"


def start(path: str | None, exist_ok: bool, task: str, **info: Any) -> Report | None:
    """The run's report, or ``None`` without ``--report``; refused now when the file exists.

    A records file (``records``) that already holds records is a resumed run's: :func:`finish` reads them
    back, so the report shows the whole run, not only what this process did."""
    if not path:
        return None
    from pathlib import Path

    from cnnkit.report.html import Report

    report = Report(path, task=task, exist_ok=exist_ok, info={k: v for k, v in info.items() if v is not None})
    records = info.get("records")
    if records and Path(records).suffix in (".jsonl", ".parquet") and Path(records).is_file():
        report.resumes = Path(records)
    return report


def describe(report: Report | None, predictor: Any) -> None:
    """Model, backend and device of the run, once the predictor is loaded."""
    if report is not None:
        from cnnkit.eval.report import runtime_facts

        report.info.update(model=getattr(predictor, "name", None), **runtime_facts(predictor))
        report.labels = list(getattr(predictor, "labels", None) or [])


def feed(records: Iterable[Record], report: Report) -> Iterator[Record]:
    """Pass records through, adding each to the report (which draws a video frame from its pixels, then drops
    them: the records go on to the writer without them)."""
    for record in records:
        report.add(record)
        record.picture = None
        yield record


def finish(report: Report | None) -> None:
    """Write the report (also after Ctrl-C or failed inputs: it shows what was done), with a resumed
    run's earlier records first."""
    earlier = report.resumes if report is not None else None
    if report is not None and earlier is not None:
        from cnnkit.io.parquet import read_records as parquet_records
        from cnnkit.report.html import read_records

        added = report.add_earlier(parquet_records(earlier) if earlier.suffix == ".parquet" else read_records(earlier))
        log.info("report: %d record(s) of the earlier run read back from %s", added, earlier)
    if report is not None and (report.entries or report.metrics):
        path = report.write()
        log.info("report: %s", path)


def truth_hook(report: Report | None) -> Callable[[Record, Any], None] | None:
    """``on_record`` for a val function: each record and its truth into the report."""
    if report is None:
        return None
    return lambda record, truth: report.add(record, truth=truth)


# -- commands ------------------------------------------------------------------------------------------
def report(
    target: Annotated[
        str,
        typer.Argument(
            help="A records file (.jsonl from `-o`), or a run folder holding one; a "
            "metrics.json beside it becomes the val section."
        ),
    ],
    output: o.Output = None,
    assets: o.Assets = "auto",
    exist_ok: o.ExistOk = False,
) -> None:
    """An HTML report of predictions already written: gallery, counts, scores, failures (default: report.html beside them)."""
    from cnnkit.errors import OptionError
    from cnnkit.report.html import from_records_file

    if assets not in ("auto", "embed", "folder"):
        raise OptionError("assets", "expected auto, embed or folder", assets)
    path = from_records_file(target, output, exist_ok=exist_ok, assets=assets)  # type: ignore[arg-type]
    typer.echo(str(path))


def explain(
    ctx: typer.Context,
    sources: o.ImageSources = None,
    task: o.Task = None,
    model: o.Model = None,
    weights: o.Weights = None,
    methods: o.Methods = None,
    target: o.Target = None,
    layer: o.Layers = None,
    conf: o.Conf = 0.25,
    max_boxes: Annotated[
        int, typer.Option("--max-boxes", min=1, help="detect: explain at most this many boxes per image, best first.")
    ] = 3,
    device: o.Device = None,
    save_dir: o.SaveDir = None,
    report_path: o.Report = None,
    exist_ok: o.ExistOk = False,
) -> None:
    """Class-activation maps: where the network looked for a class (classify: the top class; detect: each box's class).

    Overlays go to --save-dir (default runs/explain/exp, exp2, …); one JSON line per map on stdout.
    """
    from pathlib import Path

    from cnnkit.cli.common import EXIT_FAILED, printable, require_sources
    from cnnkit.errors import OptionError
    from cnnkit.io.decode import decode
    from cnnkit.io.files import check_outputs, drop_if_empty, explicit_dir, increment_dir
    from cnnkit.io.pictures import PictureSaver, safe_name
    from cnnkit.report.explain import DEFAULT_METHODS, Failed
    from cnnkit.report.explain import explain as run

    paths = require_sources(sources)
    task = task or "classify"
    if layer and len(layer) > 1:
        raise OptionError("layer", "explain maps one layer", ", ".join(layer))
    check_outputs({"`report`": report_path}, paths)
    rep = start(report_path, exist_ok, task, model=model)
    made = not (save_dir and Path(save_dir).exists())  # a folder this run makes is removed if left empty
    folder = (
        explicit_dir(save_dir, exist_ok=exist_ok)
        if save_dir
        else increment_dir(Path("runs/explain/exp"), exist_ok=exist_ok)
    )
    saver = PictureSaver(folder, suffix=".png")
    pictures: dict[str, Any] = {}
    count = 0
    failed: list[tuple[str, str]] = []
    maps = run(
        paths,
        task=task,
        model=model,
        weights=weights,
        methods=methods or DEFAULT_METHODS,
        target=target,
        layer=layer[0] if layer else None,
        device=device,
        conf=conf,
        max_boxes=max_boxes,
    )
    try:
        for x in maps:  # options are checked on the first step: a bad one leaves no empty folder behind
            if isinstance(x, Failed):
                failed.append((x.path, x.error))
                log.error("failed %s: %s", printable(x.path), x.error)
                continue
            if x.path not in pictures:
                pictures = {x.path: decode(x.path).rgb}  # one picture at a time
            overlay = x.overlay(pictures[x.path])
            tag = f"_{safe_name(x.method)}_{safe_name(x.target)}" + (f"_{count}" if x.box is not None else "")
            saved = saver.save(overlay, x.path, ".png", tag=tag)
            if rep is not None:
                rep.add_explanation(x.path, x.method, x.target, overlay, x.score)
            typer.echo(
                json.dumps(
                    {
                        "path": x.path,
                        "method": x.method,
                        "target": x.target,
                        "class_id": x.class_id,
                        "score": x.score,
                        "box": list(x.box) if x.box else None,
                        "overlay": str(saved),
                    }
                )
            )
            count += 1
    finally:
        if made:
            drop_if_empty(folder)
    log.info("%d map(s) in %s, %d image(s) failed", count, folder, len(failed))
    for bad, reason in failed[:20]:
        log.info("  %s: %s", printable(bad), reason)
    if rep is not None:
        path = rep.write()
        log.info("report: %s", path)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def convert(
    records: Annotated[str, typer.Argument(help="A records file (.jsonl, .json or .parquet from `-o`).")],
    to: Annotated[
        str,
        typer.Argument(
            help="labelstudio (JSON tasks with predictions, and a labeling config), cvat "
            "(CVAT for images 1.1 XML) or voc (Pascal VOC XML, one per image).",
            show_default=False,
        ),
    ],
    output: o.Output = None,
    image_prefix: Annotated[
        str,
        typer.Option(
            "--image-prefix", help="labelstudio: put this before each image path (e.g. /data/local-files/?d=)."
        ),
    ] = "",
    brush: Annotated[
        bool, typer.Option("--brush", help="labelstudio: masks as brush RLE instead of polygons.")
    ] = False,
    exist_ok: o.ExistOk = False,
) -> None:
    """Predictions as a labeling tool's pre-annotations: review them instead of labelling from scratch.

    --output defaults to beside the records: NAME.labelstudio.json, NAME.cvat.xml, or the folder NAME.voc/.
    """
    from pathlib import Path

    from cnnkit.errors import CnnkitError, UsageError
    from cnnkit.io.handoff import HANDOFF_FORMATS
    from cnnkit.io.handoff import convert as write
    from cnnkit.report.html import read_records, refuse_url

    if to not in HANDOFF_FORMATS:  # YOLO label files come from `detect --save-txt`
        raise CnnkitError(f"FORMAT {to!r}: expected one of {', '.join(HANDOFF_FORMATS)}")
    refuse_url(records)
    source = Path(records)
    if not source.is_file():
        raise CnnkitError(f"{source}: no such file")
    if output == "-":
        raise UsageError(f"--output -: {to} is written to a file (with its companions), not to stdout; name one")
    default = {"labelstudio": ".labelstudio.json", "cvat": ".cvat.xml", "voc": ".voc"}[to]
    out = Path(output) if output else source.with_name(source.stem + default)
    from cnnkit.io.files import check_outputs

    companion = {"`output` config": str(out.with_name(f"{out.stem}.config.xml"))} if to == "labelstudio" else {}
    check_outputs({"`output`": str(out), **companion}, [str(source)])  # the records it reads are never written over
    found = list(read_records(source))
    if not found:  # a CSV, COCO or MOT file (records cnnkit cannot read back) made an empty hand-off, exit 0
        raise CnnkitError(f"{source}: no records in this file")
    written = write(found, to, out, exist_ok=exist_ok, image_prefix=image_prefix, brush=brush)
    for path in written[:1] if to == "voc" else written:
        typer.echo(str(path))
    if to == "voc":
        annotations = [p for p in written if p.parent.name == "Annotations"]  # not the subset list and label map
        log.info("%d file(s) in %s", len(annotations), out / "Annotations")


def register(app: typer.Typer) -> None:
    """Add ``report``, ``explain`` and ``convert`` to the root app (one line in :mod:`cnnkit.cli`)."""
    app.command("report", rich_help_panel=PANEL)(report)
    app.command("explain", rich_help_panel="How CNNs see")(explain)
    app.command("convert", rich_help_panel=PANEL)(convert)
