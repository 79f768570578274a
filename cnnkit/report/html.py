"""``report.html``: one self-contained page per run, for people who would rather look than read.

A :class:`Report` takes records as a run makes them (or as :func:`from_records_file` reads them
back), keeps a small WebP thumbnail of each with its predictions drawn by the result itself, and
writes one HTML file: run facts, per-class counts, a score histogram, the lowest-confidence images,
the failed files, a paged gallery that sorts and filters in the browser, and for val the metrics,
confusion matrix, precision-recall curves and worst images. Thumbnails are embedded as data URIs
(``assets="embed"``: one file to mail) or written to ``<name>_files/`` beside the page and referenced
relatively (``assets="folder"``); ``auto`` (the default) embeds up to :data:`EMBED_LIMIT` images, so a
10,000-image report stays near 45 MB and the page itself small. No network, no external script, no
build step.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from cnnkit.errors import CnnkitError, OptionError, UsageError, reason_of
from cnnkit.io.files import (
    AlreadyExists,
    atomic_write_bytes,
    atomic_write_text,
    check_folder_of,
    check_local,
    displayable,
)
from cnnkit.report import charts
from cnnkit.report.thumbs import THUMB_SIDE, data_uri, encode, result_from_dict, thumbnail

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

    from cnnkit.records import Record

Assets = Literal["auto", "embed", "folder"]
EMBED_LIMIT = 2000  # auto: more images than this put their thumbnails in a folder beside the page
VERSIONED = (
    "cnnkit",
    "torch",
    "torchvision",
    "ultralytics",
    "timm",
    "segmentation-models-pytorch",
    "grad-cam",
    "onnxruntime",
    "numpy",
    "pillow",
)
LOWEST = 24  # lowest-confidence and worst images shown in their own sections
POOR_IOU = 0.5  # segment: an image with a class under this IoU is a mistake
VIDEO_THUMBS = 120  # at most this many thumbnails per video (evenly spaced), so a long video's report stays small
WHOLE = (0.0, 0.0, 1.0, 1.0)  # classify: the whole image as one box, so one PR rule serves boxes and classes


def versions() -> dict[str, str]:
    """Installed versions of what a run depends on, read from package metadata (nothing is imported)."""
    from importlib import metadata

    found = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def command_line() -> str:
    """This process's command as a shell would take it back."""
    import shlex

    prog = Path(sys.argv[0]).name if sys.argv else "python"
    prog = "cnnkit" if prog in ("cnnkit", "__main__.py") else prog  # `python -m cnnkit` too
    return " ".join(shlex.quote(a) for a in [prog, *sys.argv[1:]])


class Report:
    """Collects a run's records and writes its ``report.html`` (see the module doc).

    ``output`` is refused up front when it exists and ``exist_ok`` is false, so a long run never
    ends in a refusal. ``labels`` are the model's classes (a segment mask's colours and names).
    """

    def __init__(
        self,
        output: str | os.PathLike,
        *,
        task: str | None = None,
        title: str | None = None,
        info: dict[str, Any] | None = None,
        assets: Assets = "auto",
        exist_ok: bool = False,
        side: int = THUMB_SIDE,
        labels: Sequence[str] = (),
    ) -> None:
        if assets not in ("auto", "embed", "folder"):
            raise OptionError("assets", "expected auto, embed or folder", assets)
        check_local(output, "the report")
        if os.fspath(output) == "-":
            raise UsageError("`report` -: a report is an .html file (with its pictures), not stdout; name one")
        self.output = Path(output)
        if self.output.is_dir() or str(output).endswith(("/", os.sep)):
            raise CnnkitError(f"{output}: is a folder (a report is one .html file)")
        check_folder_of(output)  # before the run, not after it
        self._folder = self.output.with_name(f"{self.output.stem}_files")
        for target in (self.output, self._folder) if assets != "embed" else (self.output,):
            if not exist_ok and (target.exists() or target.is_symlink()):
                raise AlreadyExists(f"{target}: already exists (pass `exist_ok=True` to overwrite)")
        self.task = task
        self.title = title
        self.info: dict[str, Any] = {
            "command": command_line(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            **(info or {}),
        }
        self.assets = assets
        self.exist_ok = exist_ok
        self.side = side
        self.labels = list(labels)
        self.entries: list[dict[str, Any]] = []
        self.thumbs: list[bytes | None] = []  # WebP files; where they go is decided when the page is written
        self.explanations: list[dict[str, Any]] = []
        self.metrics: dict[str, Any] | None = None
        self.curves: list[dict[str, Any]] = []
        self._truth: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = []
        self._keys: set[str] = set()  # each input (and video frame) once, for add_earlier
        # per video: frames seen, the thumbnail stride, and (ordinal, entry) of the frames holding one
        self._videos: dict[str, tuple[int, int, list[tuple[int, dict[str, Any]]]]] = {}
        self.resumes: Path | None = None  # the records file of a resumed run (read back by the CLI at the end)
        self._t0 = time.perf_counter()

    # -- collecting --------------------------------------------------------------------------------
    def add(
        self,
        record: Record | dict[str, Any],
        *,
        picture: np.ndarray | None = None,
        truth: list[dict[str, Any]] | None = None,
    ) -> None:
        """One image: its record (live, with ``result``, or read back) and, from val, its ground truth
        (``[{label, box?}]``). ``picture`` is the input when the file cannot be read again (in memory)."""
        live = None if isinstance(record, dict) else record.result
        if picture is None and not isinstance(record, dict):
            picture = record.picture
        data = record if isinstance(record, dict) else record.to_dict()
        self.task = self.task or data.get("task")
        preds = data.get("predictions") or []
        entry = _entry(len(self.entries), data)
        self._keys.add(_key(data))
        if truth is not None:
            entry["v"] = self._verdict(data, preds, truth)
        keep = data.get("frame") is None or self._keep_frame(str(data.get("path", "")), entry)
        self.thumbs.append(self._thumb(data, live, picture, truth, entry) if keep else None)
        self.entries.append(entry)

    def _keep_frame(self, video: str, entry: dict[str, Any]) -> bool:
        """Whether this video frame gets a thumbnail: every ``stride``-th frame, the stride doubling (and every
        other kept thumbnail dropped) whenever more than :data:`VIDEO_THUMBS` are held, so memory stays flat."""
        seen, stride, kept = self._videos.get(video, (0, 1, []))
        keep = seen % stride == 0
        if keep and len(kept) == VIDEO_THUMBS:
            stride *= 2
            for ordinal, earlier in kept:
                if ordinal % stride:
                    self.thumbs[earlier["i"]] = None
            kept = [(ordinal, e) for ordinal, e in kept if ordinal % stride == 0]
            keep = seen % stride == 0
        if keep:
            kept.append((seen, entry))
        self._videos[video] = (seen + 1, stride, kept)
        return keep

    def _note_thinned(self) -> None:
        """Say on a video's frames without a thumbnail which frames have one."""
        strides = {video: stride for video, (_, stride, _) in self._videos.items() if stride > 1}
        for e in self.entries:
            if e["ok"] and self.thumbs[e["i"]] is None and e["p"] in strides and "note" not in e:
                e["note"] = f"thumbnails: every {strides[e['p']]}th frame of this video"

    def _verdict(
        self, data: dict[str, Any], preds: list[dict[str, Any]], truth: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """What val says about one image: classify right/wrong; boxes found, false and missed (score ≥ 0.25);
        segment classes under :data:`POOR_IOU` (its truth carries each class's IoU in this image)."""
        from cnnkit.report.evidence import match

        if data.get("task") == "classify":
            wrong = bool(preds) and bool(truth) and preds[0]["label"] != truth[0]["label"]
            if data.get("error") is None and truth:  # one class against the rest, over the top-k scores
                self._truth.append(
                    ([{**p, "box": WHOLE} for p in preds if "score" in p], [{"label": truth[0]["label"], "box": WHOLE}])
                )
            return {
                "truth": [t["label"] for t in truth],
                "bad": int(wrong),
                "why": f"true {truth[0]['label']}, predicted {preds[0]['label']}" if wrong else "",
            }
        if truth and all("iou" in t for t in truth):
            poor = [t for t in truth if t["iou"] < POOR_IOU]
            return {
                "truth": [t["label"] for t in truth if t.get("pixels", 1)],
                "bad": len(poor),
                "why": ", ".join(f"{t['label']} IoU {t['iou']:.2f}" for t in poor),
            }
        if data.get("error") is None and all("box" in t for t in truth):
            self._truth.append((preds, truth))
            m = match(preds, truth, conf=0.25)
            return {
                "truth": [t["label"] for t in truth],
                "bad": len(m.false) + len(m.missed),
                "why": f"{len(m.found)} found, {len(m.false)} false, {len(m.missed)} missed",
            }
        return {"truth": [t["label"] for t in truth], "bad": 0, "why": ""}

    def _thumb(
        self,
        data: dict[str, Any],
        live: Any,
        picture: np.ndarray | None,
        truth: list[dict[str, Any]] | None,
        entry: dict[str, Any],
    ) -> bytes | None:
        """The thumbnail (WebP bytes); ``None`` when there is no picture."""
        if data.get("error") is not None:
            return None
        try:
            return encode(self._draw(data, live, picture, truth))
        except CnnkitError as exc:
            entry["note"] = f"no picture: {exc}"
            return None

    def _draw(
        self, data: dict[str, Any], live: Any, picture: np.ndarray | None, truth: list[dict[str, Any]] | None
    ) -> Image:
        from cnnkit.io.decode import decode

        if picture is None and data.get("frame") is not None:  # a video frame: read from its video
            from cnnkit.io.video import frame_picture

            picture = frame_picture(data["path"], int(data["frame"]), data.get("time_s"))
        if picture is None:
            picture = decode(data["path"], min_side=self.side * 2).rgb
        size = (int(data.get("width") or picture.shape[1]), int(data.get("height") or picture.shape[0]))
        if truth is not None and data.get("task") in ("detect", "instance") and all("box" in t for t in truth):
            from cnnkit.report.evidence import draw_mistakes, match
            from cnnkit.report.thumbs import fit

            small = fit(picture, self.side)
            preds = data.get("predictions") or []
            return draw_mistakes(
                small,
                preds,
                truth,
                match(preds, truth, conf=0.25),
                (small.shape[1] / size[0], small.shape[0] / size[1]),
            )
        result = live if live is not None else result_from_dict(data, self.labels)
        return thumbnail(picture, result, size, self.side)

    def add_earlier(self, records: Iterable[dict[str, Any]]) -> int:
        """Records an earlier run wrote to the output this run resumed: put before this run's, leaving out
        inputs this run did again. The number added."""
        mine, mine_thumbs = self.entries, self.thumbs
        self.entries, self.thumbs = [], []
        done = set(self._keys)
        for data in records:
            if _key(data) not in done:
                done.add(_key(data))
                self.add(data)
        added = len(self.entries)
        self.entries += mine
        self.thumbs += mine_thumbs
        for i, entry in enumerate(self.entries):
            entry["i"] = i
        return added

    def add_explanation(self, path: str, method: str, target: str, overlay: Image, score: float | None = None) -> None:
        """A class-activation overlay (:mod:`cnnkit.report.explain`) for the Explain section."""
        overlay = overlay.copy()
        overlay.thumbnail((400, 400))
        self.explanations.append(
            {
                "path": path,
                "name": Path(path).name,
                "method": method,
                "target": target,
                "score": score,
                "webp": encode(overlay, 80),
            }
        )

    @property
    def embedded(self) -> bool:
        """Whether the thumbnails go inside the page (``auto``: up to :data:`EMBED_LIMIT` images)."""
        return self.assets == "embed" or (self.assets == "auto" and len(self.entries) <= EMBED_LIMIT)

    def _sources(self) -> tuple[list[str], list[str]]:
        """The ``src`` of each thumbnail and overlay: data URIs, or files written to the folder beside the page."""
        if self.embedded:
            return ([data_uri(t) if t else "" for t in self.thumbs], [data_uri(x["webp"]) for x in self.explanations])
        from urllib.parse import quote

        from cnnkit.io.files import explicit_dir

        folder = explicit_dir(self._folder, exist_ok=self.exist_ok)

        def put(name: str, data: bytes) -> str:
            atomic_write_bytes(folder / name, data, overwrite=self.exist_ok)
            return quote(f"{folder.name}/{name}")  # a relative URL: a '#', '?' or '%' in the report's name stays a name

        return (
            [put(f"{i:06d}.webp", t) if t else "" for i, t in enumerate(self.thumbs)],
            [put(f"x{i:05d}.webp", x["webp"]) for i, x in enumerate(self.explanations)],
        )

    def set_metrics(self, metrics: dict[str, Any]) -> None:
        """A val command's metrics dict; a confusion matrix (``confusion``) and per-class table are found in it."""
        self.metrics = metrics

    # -- writing -----------------------------------------------------------------------------------
    def context(self) -> dict[str, Any]:
        """Everything the template shows (also what tests read)."""
        from cnnkit.report.evidence import MATCH_IOU, pr_curves

        ok = [e for e in self.entries if e["ok"]]
        per_class = Counter(label for e in ok for label in (e["l"][:1] if self.task == "classify" else e["l"]))
        scores = [s for e in ok for s in (e["ss"][:1] if self.task == "classify" else e["ss"])]
        times = [e["t"] for e in ok if e.get("t") is not None]
        info = dict(self.info)
        info.setdefault("elapsed_s", round(time.perf_counter() - self._t0, 2))
        if times:
            info["mean_ms_per_image"] = round(sum(times) / len(times), 2)
        self.curves = pr_curves(self._truth) if self._truth else []
        return {
            "title": self.title or f"cnnkit {self.task or ''} report".replace("  ", " "),
            "task": self.task,
            "info": info,
            "versions": versions(),
            "images": len(self.entries),
            "failed_count": len(self.entries) - len(ok),
            "predictions": sum(len(e["l"]) for e in ok),
            "failed": [e for e in self.entries if not e["ok"]][:500],
            "class_chart": charts.bars(per_class.most_common()),
            "classes": sorted(per_class),
            "histogram": charts.histogram(scores),
            "scored": bool(scores),
            "metrics": _metric_tables(self.metrics) if self.metrics else None,
            "confusion": _confusion(self.metrics) if self.metrics else None,
            "pr_chart": charts.pr_curves(self.curves) if self.curves else None,
            "pr_title": "one class against the rest, top-k scores" if self.task == "classify" else f"IoU {MATCH_IOU}",
            "val": any("v" in e for e in self.entries),
            "tracks": _tracks(self.entries),
        }

    def render(self) -> str:
        """The page as a string."""
        import jinja2

        env = jinja2.Environment(
            loader=jinja2.PackageLoader("cnnkit.report", "templates"),
            autoescape=jinja2.select_autoescape(["html", "j2"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        env.filters["tojson_script"] = _script_json
        template = env.get_template("report.html.j2")
        here = Path(__file__).parent / "templates"
        self._note_thinned()
        thumbs, overlays = self._sources()
        explanations = [
            {**{k: v for k, v in x.items() if k != "webp"}, "src": src}
            for x, src in zip(self.explanations, overlays, strict=True)
        ]
        return template.render(
            **self.context(),
            entries=self.entries,
            thumbs=thumbs,
            explanations=explanations,
            script=(here / "report.js").read_text(encoding="utf-8"),
            style=(here / "report.css").read_text(encoding="utf-8"),
        )

    def write(self) -> Path:
        """Write the page atomically (never over a file without ``exist_ok``); its path. A failure (a full
        disk) removes the picture folder this call made, so that it does not block the rerun."""
        made = not self.embedded and not self._folder.exists()
        try:
            atomic_write_text(self.output, displayable(self.render()), overwrite=self.exist_ok)
        except BaseException:
            if made and self._folder.is_dir() and not self._folder.is_symlink():
                shutil.rmtree(self._folder, ignore_errors=True)
            raise
        return self.output


def _entry(index: int, data: dict[str, Any]) -> dict[str, Any]:
    """The gallery's compact view of one record (short keys: 10,000 of them travel in the page).

    A video frame's record names the video, so its entry also carries the frame (``fr``), its time (``ts``)
    and both in words (``at``): without them every frame of a clip looks like the same file. A tracking
    run's entry carries each prediction's track id (``k``), crossing (``x``) and the running line counts
    (``c``), only where the record has them, so an image report's page does not grow."""
    preds = data.get("predictions") or []
    scores = [float(p["score"]) for p in preds if _number(p.get("score"))]  # a broken model's NaN: none
    entry: dict[str, Any] = {
        "i": index,
        "p": data.get("path", ""),
        "n": Path(str(data.get("path", ""))).name,
        "ok": data.get("error") is None,
        "e": data.get("error"),
        "l": [str(p.get("label", "?")) for p in preds],
        "ss": [round(s, 4) for s in scores],
        "s": round(max(scores), 4) if scores else None,
        "w": data.get("width"),
        "h": data.get("height"),
        "t": data.get("time_ms") if _number(data.get("time_ms")) else None,
        "f": [round(float(p["fraction"]), 4) if _number(p["fraction"]) else None for p in preds if "fraction" in p]
        or None,
    }
    frame, time_s = data.get("frame"), data.get("time_s")
    if _integer(frame):
        time_s = float(time_s) if _number(time_s) else None
        entry.update(fr=frame, ts=time_s, at=frame_caption(frame, time_s))
    tracks = [p.get("track_id") if _integer(p.get("track_id")) else None for p in preds]
    if any(t is not None for t in tracks):
        entry["k"] = tracks
        crossed = [p.get("crossed") if isinstance(p.get("crossed"), str) else None for p in preds]
        if any(crossed):
            entry["x"] = crossed
    counts = data.get("counts")
    if isinstance(counts, dict):
        entry["c"] = {str(k): v for k, v in counts.items() if _integer(v)}
    return entry


def _integer(value: Any) -> TypeGuard[int]:
    """An int and not a bool (a hand-edited records file may hold anything under a key)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> TypeGuard[float]:
    """A finite number, not a bool (the page's JSON holds no NaN or infinity)."""
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def frame_caption(frame: int, time_s: float | None) -> str:
    """A video frame in words, ``frame 42 · 1.68 s`` (past a minute ``1:02.50``, as a player shows the time):
    what tells one frame of a clip from the next in the gallery."""
    if time_s is None:
        return f"frame {frame}"
    if time_s < 60:
        return f"frame {frame} · {time_s:.2f} s"
    minutes, seconds = divmod(time_s, 60)
    hours, minutes = divmod(int(minutes), 60)
    clock = f"{hours}:{minutes:02d}:{seconds:05.2f}" if hours else f"{minutes}:{seconds:05.2f}"
    return f"frame {frame} · {clock}"


TRACK_ROWS = 1000  # at most this many per-track rows in the page (the run's tracks.json holds them all)


def _tracks(entries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """A tracking run's line counts per video and its per-track summaries, or ``None`` for a run without
    tracks. Made by :class:`~cnnkit.tasks.track.summary.TrackSummaries` (what ``track`` logs and writes to
    ``tracks.json``) from the entries in gallery order, so a resumed run's earlier frames count first."""
    if not any("k" in e or "c" in e for e in entries):
        return None
    from cnnkit.tasks.track.summary import TrackSummaries

    summaries = TrackSummaries()
    for e in entries:
        if not e["ok"]:
            continue
        none = [None] * len(e["l"])  # "k" and "x" hold one item per label, as the record's predictions
        tracked = zip(e["l"], e.get("k") or none, e.get("x") or none, strict=True)
        summaries.observe(
            {
                "path": e["p"],
                "frame": e.get("fr"),
                "time_s": e.get("ts"),
                "counts": e.get("c"),
                "predictions": [
                    {"label": label, "track_id": track, "crossed": x}
                    for label, track, x in tracked
                    if track is not None
                ],
            }
        )
    rows = [{**row, "name": Path(row["path"]).name} for row in summaries.rows()]
    counts = [{"path": path, "name": Path(path).name, **c} for path, c in summaries.counts.items()]
    return {"rows": rows[:TRACK_ROWS], "total": len(rows), "counts": counts}


def _key(data: dict[str, Any]) -> str:
    from cnnkit.io.writers import record_key

    return record_key(str(data.get("path", "")), data.get("frame"))


def _script_json(value: Any) -> Any:
    """JSON safe inside ``<script type="application/json">``: no ``</script>`` or ``<!--`` can end it early."""
    from markupsafe import Markup

    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _metric_tables(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics as a scalar table and a per-class table (rows: class, columns: measures)."""
    scalars = {}
    from cnnkit.eval.report import run_facts

    facts = run_facts(metrics)
    for key, value in metrics.items():
        if key == "dtype" or (key in facts and facts[key] == value):  # shown with the run's facts
            continue
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            scalars[key] = value
        elif isinstance(value, dict) and key not in ("per_class", "per_class_iou", "confusion"):
            scalars.update(
                {f"{key} {k}": v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            )
    rows, columns = _per_class(metrics)
    return {"scalars": scalars, "columns": columns, "rows": rows}


def _per_class(metrics: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    table = metrics.get("per_class")
    if table is None:
        table = metrics.get("per_class_iou")
    if isinstance(table, list):  # classify: [{label, precision, …}]
        columns = [k for k in (table[0] if table else {}) if k != "label"]
        return [[r.get("label"), *(r.get(c) for c in columns)] for r in table], columns
    if isinstance(table, dict):
        values = list(table.values())
        if values and isinstance(values[0], dict):  # detect: {name: {precision, …}}
            columns = list(values[0])
            return [[name, *(d.get(c) for c in columns)] for name, d in table.items()], columns
        return [[name, v] for name, v in table.items()], ["IoU"]  # segment: {name: iou}
    return [], []


def _confusion(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """Rows true, columns predicted, each cell shaded by its share of the row."""
    conf = metrics.get("confusion")
    if not isinstance(conf, dict) or "matrix" not in conf:
        return None
    rows = []
    for label, row in zip(conf["labels"], conf["matrix"], strict=True):
        total = sum(row) or 1
        rows.append({"label": label, "cells": [{"n": n, "a": round(n / total, 3)} for n in row]})
    if "iou" in conf:
        note = (
            f"Boxes paired at IoU > {conf['iou']} with score > {conf['conf']}, any class; the background row counts "
            "false detections, the background column missed objects."
        )
    else:
        note = "Counts are pixels." if conf.get("unit") == "pixels" else ""
    return {"columns": conf.get("columns", conf["labels"]), "rows": rows, "note": note}


# -- a report from a written run ---------------------------------------------------------------------
def records_file(target: str | os.PathLike) -> Path:
    """The records of ``target``: a ``.jsonl``/``.json`` file, or the one records file in a run folder."""
    refuse_url(target)
    path = Path(target)
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json") and p.name != "metrics.json")
        if len(found) == 1:
            return found[0]
        if not found:
            raise CnnkitError(f"{path}: no records file (.jsonl) in this folder; name the records file")
        raise CnnkitError(f"{path}: several records files ({', '.join(p.name for p in found[:5])}); name one")
    raise CnnkitError(f"{path}: no such file or folder")


def refuse_url(path: str | os.PathLike) -> None:
    """A records file named by a URL is refused by name (a path would read ``s3://b/x`` as ``s3:/b/x``)."""
    from cnnkit.io import remote

    if remote.is_remote(os.fspath(path)):
        raise CnnkitError(f"{os.fspath(path)}: a URL; records are read from a local file (copy it here first)")


def read_records(path: str | os.PathLike) -> Iterable[dict[str, Any]]:
    """Records from a JSON Lines file (or a JSON array, or a Parquet records file), one dict at a time; bad
    lines are skipped and counted."""
    import logging

    from cnnkit.records import validate_record

    log = logging.getLogger("cnnkit")
    refuse_url(path)
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            parquet = raw.read(4) == b"PAR1"
    except OSError as exc:
        raise CnnkitError(f"{path}: cannot read records ({reason_of(exc)})") from exc
    if parquet:
        yield from _parquet_records(path)
        return

    def finite_only(word: str) -> Any:  # NaN and Infinity are not JSON, and no score or box of cnnkit's
        raise ValueError(f"{word} is not a number a record holds")

    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1)
            f.seek(0)
            lines: Iterable[Any] = json.load(f, parse_constant=finite_only) if head == "[" else f
            bad = 0
            for line in lines:
                if isinstance(line, str) and not line.strip():
                    continue
                try:
                    data = json.loads(line, parse_constant=finite_only) if isinstance(line, str) else line
                    validate_record(data)
                except (ValueError, TypeError, AttributeError):
                    bad += 1
                    continue
                yield data
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CnnkitError(f"{path}: cannot read records ({exc})") from exc
    if bad:
        log.warning("%s: %d line(s) were not records and were skipped", path, bad)


def _parquet_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a Parquet records file (``--format parquet``), checked as a JSON Lines file's are."""
    from cnnkit.io import parquet
    from cnnkit.records import validate_record

    try:
        for data in parquet.read_records(path):
            validate_record(data)
            yield data
    except CnnkitError:
        raise
    except Exception as exc:
        raise CnnkitError(f"{path}: not a Parquet file of records ({reason_of(exc)})") from exc


def from_records_file(
    target: str | os.PathLike,
    output: str | os.PathLike | None = None,
    *,
    exist_ok: bool = False,
    assets: Assets = "auto",
    side: int = THUMB_SIDE,
) -> Path:
    """``cnnkit report RUN_OR_JSONL``: the report of records already written; its path.

    ``output`` defaults to ``report.html`` beside the records. A ``metrics.json`` beside them
    (a val run's) becomes the metrics section.
    """
    from cnnkit.io.files import check_outputs

    source = records_file(target)
    if output is not None and os.fspath(output) == "-":
        raise UsageError("`output` -: a report is an .html file (with its pictures), not stdout; name one")
    out = Path(output) if output else source.with_name("report.html")
    check_outputs({"`output`": str(out)}, [str(source), str(source.with_name("metrics.json"))])  # never over them
    report = Report(
        out, assets=assets, exist_ok=exist_ok, side=side, info={"records": str(source), "command": command_line()}
    )
    n = 0
    for data in read_records(source):
        if n == 0:
            report.info.setdefault("model", data.get("model"))
        report.add(data)
        n += 1
    if n == 0:
        raise CnnkitError(f"{source}: no records in this file")
    metrics = source.with_name("metrics.json")
    if metrics.is_file():
        try:
            report.set_metrics(json.loads(metrics.read_text(encoding="utf-8")))
        except ValueError:
            pass
    return report.write()
