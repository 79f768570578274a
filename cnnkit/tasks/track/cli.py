"""``cnnkit track``: boxes with track ids through videos, and ``track val DATA`` (IDF1, MOTA, counts)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from cnnkit.cli import common as c
from cnnkit.cli import options as o
from cnnkit.tasks.detect.cli import LOAD, SaveConf, SaveCrop, SaveTxt, detector_options

log = logging.getLogger("cnnkit")

app = c.task_app(
    "Track objects through videos: the detector's boxes (or an instance model's masks) with a track_id per object. `cnnkit track SOURCES...` runs "
    "[bold]predict[/bold]; `cnnkit track val DATA` scores tracking on videos with MOT ground truth."
)

TrackerName = Annotated[
    str | None,
    typer.Option(
        "--tracker",
        help="bytetrack, botsort (ultralytics' trackers, no ReID), shapes-bytetrack (tuned for the bundled detector) or an ultralytics tracker yaml \\[default: the model's own, else bytetrack].",
        rich_help_panel=o.PANEL_MODEL,
    ),
]
CountLine = Annotated[
    str | None,
    typer.Option(
        "--count-line",
        help="x1,y1,x2,y2 in pixels: count each track once when its box centre crosses this line (records get running counts).",
        rich_help_panel=o.PANEL_MODEL,
    ),
]

CountRegion = Annotated[
    str | None,
    typer.Option(
        "--count-region",
        help="x1,y1,x2,y2,x3,y3,… in pixels, three or more corners: count each track once when its box centre comes into this polygon (in) and once when it leaves (out); not with --count-line.",
        rich_help_panel=o.PANEL_MODEL,
    ),
]


def _summaries(
    records: Iterable[Any], folder: Path | None, earlier: Iterable[Any], where: str = "across the count line"
) -> Iterator[Any]:
    """Records on to the writer; afterwards each track's summary on stderr (and ``tracks.json`` when saving), of
    the ``earlier`` records a resumed run keeps too (read before the writer changes the file)."""
    from cnnkit.io.files import atomic_write_text
    from cnnkit.tasks.track.summary import TrackSummaries

    summaries = TrackSummaries()
    for record in earlier:
        summaries.observe(record)
    yield from summaries.watch(records)
    rows = summaries.rows()
    for row in rows[:50]:
        log.info(
            "track %s #%d %s: frames %d–%d (%d seen)%s",
            row["path"],
            row["track_id"],
            row["label"],
            row["first_frame"],
            row["last_frame"],
            row["frames"],
            f", crossed {row['crossed']}" if row["crossed"] else "",
        )
    if len(rows) > 50:
        log.info("… and %d more tracks", len(rows) - 50)
    for path, counts in summaries.counts.items():
        log.info("%s: %d in, %d out %s", path, counts["in"], counts["out"], where)
    if folder is not None:
        target = atomic_write_text(
            folder / "tracks.json", json.dumps({"tracks": rows, "counts": summaries.counts}, indent=2) + "\n"
        )
        log.info("track summaries in %s", target)


@app.command("predict")
@o.compose(o.MODEL, o.BACKEND, o.BOXES, o.OWN, o.RUN, o.HALF, o.PREDICT_IO, batch_size=8, conf=0.1)
def predict(
    ctx: typer.Context,
    sources: o.Sources = None,
    tracker: TrackerName = None,
    count_line: CountLine = None,
    count_region: CountRegion = None,
    iou: o.Iou = None,
    agnostic_nms: o.AgnosticNms = False,
    imgsz: o.Imgsz = None,
    classes: o.Classes = None,
    save_txt: SaveTxt = False,
    save_conf: SaveConf = False,
    save_crop: SaveCrop = False,
    **shared: Any,
) -> None:
    """Boxes per frame with a track_id that stays with one object through a video (ids restart per video)."""
    options = detector_options(shared, iou, agnostic_nms, imgsz, classes)
    c.run_predict(
        ctx,
        "track",
        dict(
            options,
            tracker=tracker,
            count_line=count_line,
            count_region=count_region,
            save_txt=save_txt,
            save_conf=save_conf,
            save_crop=save_crop,
        ),
        save=options["save_pictures"] or save_txt or save_crop,
        observe=functools.partial(_summaries, where="of the count region" if count_region else "across the count line"),
    )


@app.command("val")
@o.compose(o.MODEL, o.BACKEND, o.BOXES, o.OWN, o.RUN, o.REPORT_IO, batch_size=8, conf=0.1)
def val(
    ctx: typer.Context,
    data: Annotated[
        str,
        typer.Argument(
            help="A folder of NAME.mp4 with NAME/gt/gt.txt (MOT), e.g. from `cnnkit data shapes OUT --video`."
        ),
    ],
    tracker: TrackerName = None,
    count_line: CountLine = None,
    iou: o.Iou = None,
    agnostic_nms: o.AgnosticNms = False,
    imgsz: o.Imgsz = None,
    min_visibility: Annotated[
        float | None,
        typer.Option(
            "--min-visibility",
            min=0.0,
            max=1.0,
            help="Ground truth less visible than this is neither missed nor a false positive \\[default: DATA's summary.json, else 0.5].",
        ),
    ] = None,
    **shared: Any,
) -> None:
    """IDF1, MOTA, identity switches, false positives and misses per video (motmetrics), and line counts against
    the true crossings."""
    from cnnkit.cli.report import run_val

    extra = {"count_line": count_line} if count_line else {}
    run_val(
        ctx,
        "track",
        data,
        dict(
            min_visibility=min_visibility,
            **{k: shared[k] for k in LOAD},
            tracker=tracker,
            conf=shared["conf"],
            iou=iou,
            agnostic_nms=agnostic_nms,
            imgsz=imgsz,
            max_det=shared["max_det"],
            **extra,
        ),
        shared,
    )
