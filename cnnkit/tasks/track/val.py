"""``cnnkit track val DATA``: IDF1, MOTA and line counts on videos with MOT ground truth.

DATA is a folder as ``cnnkit data shapes --video`` writes it (or MOT Challenge's own layout with a
video beside each sequence): ``NAME.mp4`` and ``NAME/gt/gt.txt`` per sequence; its
``summary.json``, when there, gives the count line and the true crossings, which are compared
with the tracker's counts. Scores come from ``motmetrics`` (:mod:`cnnkit.eval.mot`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, UsageError, printable, reason_of
from cnnkit.eval.mot import MotRow, parse_line, read_mot, score
from cnnkit.eval.report import ReportTable, figure, runtime_facts, runtime_note, table
from cnnkit.io.video import VIDEO_EXTENSIONS

log = logging.getLogger("cnnkit")


def videos_by_name(root: Path) -> dict[str, list[Path]]:
    """Each sequence name's videos in ``root``, sorted: the first is the one scored (``a.mkv`` and ``a.mp4``
    share ``a/gt/gt.txt``)."""
    out: dict[str, list[Path]] = {}
    for p in sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS):
        out.setdefault(p.stem, []).append(p)
    return out


def sequences(data: str | Path) -> list[tuple[str, Path, Path]]:
    """``(name, video, gt.txt)`` of every sequence in ``data``, by name."""
    root = Path(data)
    if not root.is_dir():
        raise UsageError(f"{data}: not a folder of videos with MOT ground truth (NAME.mp4 and NAME/gt/gt.txt)")
    found: list[tuple[str, Path, Path]] = []
    for name, (video, *_) in videos_by_name(root).items():
        gt = root / name / "gt" / "gt.txt"
        if gt.is_file():
            found.append((name, video, gt))
        else:
            log.warning("%s: no ground truth at %s; not scored", video, gt.relative_to(root))
    if not found:
        raise UsageError(f"{data}: no video with ground truth at NAME/gt/gt.txt")
    return found


def read_summary(root: Path) -> dict[str, Any]:
    """``root/summary.json`` (``{}`` when there is none), checked: a summary of someone else's was a traceback."""
    path = root / "summary.json"
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
        seqs = summary.get("sequences", [])
        if not isinstance(seqs, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in seqs):
            raise ValueError("sequences is not a list of objects with a name")
        for s in seqs:
            c = s.get("crossings")
            numbers = c.values() if isinstance(c, dict) else [c]
            if c is not None and not all(isinstance(v, int) and not isinstance(v, bool) for v in numbers):
                raise ValueError(f"the crossings of {s['name']} are not whole numbers")
        if "line" in summary:
            parse_line(summary["line"])
        if "min_visibility" in summary and not (
            isinstance(summary["min_visibility"], (int, float)) and 0 <= summary["min_visibility"] <= 1
        ):
            raise ValueError("min_visibility is not a number from 0 to 1")
    except (OSError, UnicodeDecodeError, ValueError, UsageError) as exc:
        raise CnnkitError(f"{path}: not a summary of sequences ({reason_of(exc)})") from None
    return summary


def without_video(root: Path, summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Failed entries for the sequences named with no video to track: those of ``summary.json`` and each
    ``NAME/gt/gt.txt`` without a ``NAME`` video beside it. Left out unsaid, the run scored fewer sequences than
    it was given and passed."""
    videos = videos_by_name(root)
    out: dict[str, dict[str, Any]] = {}
    for name, (first, *others) in videos.items():
        for p in others if (root / name / "gt" / "gt.txt").is_file() else []:
            out[p.name] = {
                "path": str(p),
                "frame": None,
                "error": f"a second video of sequence {name}, beside {first.name}, which is the one scored",
            }
    for s in summary.get("sequences", []):
        name = str(s["name"])
        if name not in videos:
            path = root / str(s.get("video") or f"{name}.mp4")
            out[name] = {
                "path": str(path),
                "frame": None,
                "error": f"summary.json names sequence {name}, but "
                f"{root} has no video {name}.mp4 (or another video suffix); not scored",
            }
    for gt in sorted(root.glob("*/gt/gt.txt")):
        name = gt.parent.parent.name
        if name not in videos and name not in out:
            out[name] = {
                "path": str(gt),
                "frame": None,
                "error": f"no video {name}.mp4 (or another video suffix) beside {name}/ to track; not scored",
            }
    for f in out.values():
        log.warning("failed %s: %s", printable(f["path"]), f["error"])
    return list(out.values())


def rows_of(records: list[Any]) -> list[MotRow]:
    """The tracked boxes of frame records as MOT result rows (frames from 1)."""
    out = []
    for r in records:
        if not r.ok or r.frame is None:
            continue
        for p in r.predictions:
            x1, y1, x2, y2 = p["box"]
            out.append(MotRow(r.frame + 1, int(p["track_id"]), (x1, y1, x2 - x1, y2 - y1), float(p["score"])))
    return out


def past_end(gt: Path, video: Path, truth: Sequence[MotRow], records: Sequence[Any]) -> str | None:
    """Why ground truth names frames the video does not have, if it does (TrackEval refuses frames past
    ``seqLength``; scored, they would all be misses): the length is ``seqinfo.ini``'s ``seqLength`` when it
    says one, else the frames decoded, one more allowed (a header may count one frame more than decode). A
    video that failed to decode somewhere is not judged."""
    import configparser

    if not truth or not records or any(not r.ok or r.frame is None for r in records):
        return None
    info = configparser.ConfigParser()
    with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
        info.read(gt.parent.parent / "seqinfo.ini", encoding="utf-8")
    said = info.get("Sequence", "seqLength", fallback="").strip()
    decoded = max(r.frame for r in records) + 1
    last = max(t.frame for t in truth)
    if last <= (int(said) if said.isdigit() else decoded + 1):  # as TrackEval: within seqLength, frames not
        return None  # decoded are misses
    has = f"its seqinfo.ini says {said}" if said.isdigit() else f"{video.name} has {decoded}"
    return f"ground truth names frame {last}, but {has} frames (MOT frames count from 1); not scored"


def frame_truth(
    rows: Sequence[MotRow], labels: Sequence[str], min_visibility: float
) -> dict[int, list[dict[str, Any]]]:
    """Ground-truth boxes per frame (from 0, as records count) for a report: ``[{"label", "box"}]``, MOT's
    1-based class ids read as the model's labels; boxes less visible than ``min_visibility`` left out."""
    out: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        if r.visibility < min_visibility:
            continue
        x, y, w, h = r.box
        label = labels[r.class_id - 1] if 1 <= r.class_id <= len(labels) else "object"
        out.setdefault(r.frame - 1, []).append({"label": label, "box": [x, y, x + w, y + h]})
    return out


def validate(
    data: str | Path,
    *,
    min_visibility: float | None = None,
    batch_size: int = 8,
    workers: int = 2,
    on_record: Callable[[Any, list[dict[str, Any]]], None] | None = None,
    **load_options: Any,
) -> dict[str, Any]:
    """Track every sequence of ``data`` and score it: ``{"sequences": {name: metrics}, "overall": metrics,
    "counts": {name: {"true": …, "tracked": …}}, "counts_exact": bool or None, "frames", "failed", "seconds", "fps"}``.
    ``frames`` are the frames decoded; ``failed`` names each frame that was not, each sequence left out (no
    video, nothing decoded, ground truth past its end) and why.

    ``load_options`` go to :meth:`Tracker.load` (``model``, ``tracker``, ``conf`` …); the count line is
    the one ``summary.json`` names, unless ``count_line`` is given. ``on_record(record, truth)`` sees each
    frame's record with its visible ground-truth boxes (:func:`frame_truth`), as a report needs them.
    """
    from cnnkit.tasks.track.predict import Tracker

    root = Path(data)
    summary = read_summary(root)
    true_counts = {s["name"]: s.get("crossings") for s in summary.get("sequences", [])}
    if min_visibility is None:
        min_visibility = float(summary.get("min_visibility", 0.5))
    if load_options.get("count_line") is None and "line" in summary:
        load_options["count_line"] = summary["line"]
    elif load_options.get("count_line") is not None and true_counts:
        given = parse_line(load_options["count_line"])
        if "line" not in summary or given != parse_line(summary["line"]):
            log.warning(
                "%s: its true crossings are of %s, not of the count line %s: they are not compared",
                root / "summary.json",
                "its own line" if "line" in summary else "a line it does not name",
                ",".join(f"{v:g}" for v in given),
            )
            true_counts = dict.fromkeys(true_counts)
    found = sequences(root)
    failed: list[dict[str, Any]] = without_video(root, summary)
    tracker = Tracker.load(**load_options)
    scored: dict[str, tuple[list[MotRow], list[MotRow]]] = {}
    counts: dict[str, dict[str, Any]] = {}
    frames, t0 = 0, time.perf_counter()
    for name, video, gt in found:
        try:  # a malformed file is a failed entry, read before its video runs; the other sequences are scored
            truth = read_mot(gt, truth=True)
        except CnnkitError as exc:
            failed.append({"path": str(gt), "frame": None, "error": str(exc)})
            log.warning("failed %s: %s", printable(str(gt)), exc)
            continue
        records = list(tracker.stream(str(video), batch_size=batch_size, workers=workers))
        decoded = sum(1 for r in records if r.ok and r.frame is not None)  # a failed record is no frame
        frames += decoded
        for r in records:
            if not r.ok:  # named here and in the result; in a video that decoded, scored as missed frames
                failed.append({"path": r.path, "frame": r.frame, "error": r.error})
                log.warning("failed %s: %s", printable(r.path), r.error)
        if not decoded:  # as every val leaves out an input it could not read, not all its objects missed
            if not records:
                failed.append({"path": str(video), "frame": None, "error": "no frame decoded; not scored"})
                log.warning("failed %s: no frame decoded; not scored", printable(str(video)))
            if on_record is not None:
                for r in records:
                    on_record(r, [])
            continue
        beyond = past_end(gt, video, truth, records)
        if beyond is not None:
            failed.append({"path": str(gt), "frame": None, "error": beyond})
            log.warning("failed %s: %s", printable(str(gt)), beyond)
            continue
        scored[name] = (truth, rows_of(records))
        if on_record is not None:
            by_frame = frame_truth(truth, tracker.labels, min_visibility)
            for r in records:
                on_record(r, by_frame.get(r.frame, []) if r.ok and r.frame is not None else [])
        last = next((r.extra.get("counts") for r in reversed(records) if r.ok), None)
        if name in true_counts or last is not None:
            counts[name] = {"true": true_counts.get(name), "tracked": last}
    seconds = time.perf_counter() - t0
    if not scored:
        raise CnnkitError(f"{root}: no sequence could be scored ({failed[-1]['error']})")
    metrics = score(scored, min_visibility=min_visibility)
    overall = metrics.pop("OVERALL")
    known = [c for c in counts.values() if c["true"] is not None]  # null where nothing could be compared
    exact = all(operator.eq(*like(c["true"], c["tracked"])) for c in known) if known else None
    return {
        "data": str(root),
        "tracker": tracker.tracker_name,
        "model": tracker.name,
        **runtime_facts(tracker),
        "min_visibility": min_visibility,
        "sequences": metrics,
        "overall": overall,
        "counts": counts,
        "counts_exact": exact,
        "frames": frames,
        "failed": failed,
        "seconds": round(seconds, 2),
        "fps": round(frames / seconds, 2) if seconds else None,
    }


def like(true: Any, tracked: Any) -> tuple[Any, Any]:
    """True and tracked counts made comparable: both ``{"in", "out"}`` as they come, or both totals where one
    side is a number (a ``summary.json`` that gives each sequence's crossings as one)."""
    if isinstance(true, Mapping) != isinstance(tracked, Mapping) and None not in (true, tracked):
        a, b = (sum(v.values()) if isinstance(v, Mapping) else v for v in (true, tracked))
        return a, b
    return true, tracked


def counts_text(counts: Any) -> str:
    """A count as table text: ``in 2 out 1`` (a dict's keys in order), a total as it is, ``?`` when unknown."""
    if counts is None:
        return "?"
    if isinstance(counts, Mapping):
        return " ".join(f"{k} {v}" for k, v in counts.items())
    return str(counts)


def report_tables(metrics: dict[str, Any]) -> list[ReportTable]:
    """IDF1, MOTA, identity switches, false positives, misses and line counts per sequence and overall."""
    rows = []
    for name, m in {**metrics["sequences"], "overall": metrics["overall"]}.items():
        c = metrics["counts"].get(name)
        rows.append(
            (
                name,
                figure(m["idf1"], 3),
                figure(m["mota"], 3),
                m["num_switches"],
                m["num_false_positives"],
                m["num_misses"],
                " → ".join(counts_text(v) for v in like(c["true"], c["tracked"])) if c else "",
            )
        )
    return [
        table(
            f"{metrics['tracker']} on {metrics['model']} ({metrics['data']})",
            ("sequence", "IDF1", "MOTA", "IDsw", "FP", "FN", "counts (true → tracked)"),
            rows,
            [
                f"{metrics['frames']} frames in {metrics['seconds']} s; counts exact: {metrics['counts_exact']}",
                runtime_note(metrics),
            ]
            + (
                [f"{len(metrics['failed'])} failed: frames not decoded or sequences left out"]
                if metrics.get("failed")
                else []
            ),
        )
    ]
