"""Classification metrics from a confusion matrix, and the confusion-matrix plot ``finetune`` and ``classify val`` write.

One confusion matrix (rows = true class, columns = predicted class) gives top-1
accuracy and per-class precision, recall and F1; both commands use these functions.
Plots use matplotlib's Agg backend (no display, no font downloads) and are written atomically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.eval.report import ReportTable, confusion_table, runtime_facts, runtime_note, table
from cnnkit.io.files import atomic_path

log = logging.getLogger("cnnkit")


def per_class_report(cm: np.ndarray, labels: Sequence[str], digits: int | None = 4) -> list[dict[str, Any]]:
    """Precision, recall, F1 and support per true class (row) of ``cm``, rounded to ``digits`` (None: not)."""
    cm = np.asarray(cm, dtype=np.int64)
    rows = []

    def rounded(v: float) -> float:
        return v if digits is None else round(v, digits)

    for i, label in enumerate(labels):
        tp = int(cm[i, i])
        predicted = int(cm[:, i].sum())
        support = int(cm[i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "label": label,
                "precision": rounded(precision),
                "recall": rounded(recall),
                "f1": rounded(f1),
                "support": support,
            }
        )
    return rows


def summary(cm: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro averages and the per-class table of ``cm``."""
    cm = np.asarray(cm, dtype=np.int64)
    per_class = per_class_report(cm, labels)
    total = int(cm.sum())
    present = [r for r in per_class_report(cm, labels, digits=None) if r["support"]]  # averaged, then rounded
    macro = {
        k: round(float(np.mean([r[k] for r in present])), 4) if present else 0.0 for k in ("precision", "recall", "f1")
    }
    return {
        "images": total,
        "top1": round(float(np.trace(cm[:, : len(labels)])) / total, 4) if total else 0.0,
        "macro": macro,
        "per_class": per_class,
    }


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_confusion(
    cm: np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike,
    columns: Sequence[str] | None = None,
    title: str = "Confusion matrix",
) -> None:
    """A count-annotated heat map (rows true, columns predicted)."""
    plt = _pyplot()
    cm = np.asarray(cm)
    columns = list(columns or labels)
    side = max(4.0, 0.45 * max(len(labels), len(columns)) + 2)
    fig, ax = plt.subplots(figsize=(side, side * len(labels) / max(len(columns), 1) + 0.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=90 if len(columns) > 6 else 0)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if cm.size <= 900:
        top = cm.max() or 1
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(
                    j, i, str(int(v)), ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black"
                )
    _save(fig, path)
    plt.close(fig)


def val_folder(root: str | os.PathLike) -> Path:
    """The split of DATA to score: the first of ``val``, ``valid``, ``validation``, ``test`` (as finetune takes
    them, :data:`~cnnkit.data.folder.VAL_NAMES`) beside ``train``, or without it the first that is a folder of
    class folders; else DATA itself (its folders are classes: a class folder holds images, a split holds
    folders)."""
    from cnnkit.data.folder import VAL_NAMES, val_beside_train

    root = Path(root)
    beside_train = val_beside_train(root)
    if beside_train is not None:
        return beside_train
    for split in VAL_NAMES:
        here = root / split
        if here.is_dir() and any(p.is_dir() for p in here.iterdir()):
            return here
    return root


def trained_split(predictor: Any, root: Path) -> tuple[list[str], Any, list[tuple[str, str]]] | None:
    """The val images of the split a cnnkit run made of ``root`` (``DATA/<class>/*`` split by its recorded
    ``val_split`` and ``seed``), when ``predictor`` was trained on ``root`` so: scoring all of ``root`` would
    score the training images too, and not reproduce the run's logged val accuracy. With them, the folder's
    unreadable images (left out of the split, as the run left them out) with their reasons."""
    from cnnkit.data.folder import load_folder_dataset

    meta = getattr(getattr(predictor, "loaded", None), "meta", None)
    data, recorded = (meta.get("data"), meta.get("finetune")) if isinstance(meta, dict) else (None, None)
    if not isinstance(data, dict) or not isinstance(recorded, dict):  # not a cnnkit run's (a bundled model's)
        return None
    if data.get("layout") != "split" or not data.get("root") or Path(str(data["root"])) != root.resolve():
        return None
    try:
        dataset = load_folder_dataset(
            root, val_split=float(recorded["val_split"]), seed=int(recorded["seed"]), min_side=recorded.get("imgsz")
        )
    except (KeyError, TypeError, ValueError):
        return None
    if len(dataset.val) != data.get("val"):
        log.warning(
            "%s: its images changed since %s was trained on it: the split rebuilt has %d val images, the run's %s",
            root,
            predictor.name,
            len(dataset.val),
            data.get("val"),
        )
    log.info(
        "%s: scoring the %d val images of the split %s was trained with (val_split %g, seed %d)",
        root,
        len(dataset.val),
        predictor.name,
        float(recorded["val_split"]),
        int(recorded["seed"]),
    )
    return dataset.classes, dataset.val, dataset.skipped


def evaluate_folder(
    predictor: Any,
    root: str | os.PathLike,
    *,
    batch_size: int = 16,
    workers: int = 2,
    plot: str | os.PathLike | None = None,
    on_record: Callable[[Any, list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Run a classify predictor over ``root/<class>/*`` and score it against the folder names.

    Every dataset class must be one of the model's labels; a prediction of any other model
    label lands in an ``(other)`` column. Unreadable images are counted and listed, not scored.
    ``on_record(record, truth)`` sees each record with its true class (``[{"label": …}]``), as a
    report needs it.
    """
    from cnnkit.data.folder import FolderSplit, scan_classes
    from cnnkit.errors import UsageError, printable

    folder = val_folder(root)
    held_out = trained_split(predictor, folder) if folder == Path(root) else None
    found, split, unreadable = held_out or (*scan_classes(folder, verify=False, allow_empty=True)[:2], [])
    counts = np.bincount(np.asarray(split.targets, dtype=np.int64), minlength=len(found))
    if not counts.any():
        raise UsageError(f"{folder}: no images in its class folders")
    if not counts.all():  # a class folder without images scores nothing: left out, said
        empty = [c for c, n in zip(found, counts) if not n]
        log.warning("%s: class folder(s) without images, left out: %s", folder, ", ".join(map(printable, empty)))
        keep = {old: new for new, old in enumerate(i for i, n in enumerate(counts) if n)}
        found = [c for c, n in zip(found, counts) if n]
        split = FolderSplit(split.paths, [keep[t] for t in split.targets])
    # a folder name is the label it spells, whatever its Unicode form (macOS writes names decomposed, NFD)
    spelled = {unicodedata.normalize("NFC", label): label for label in predictor.labels}
    classes = [spelled.get(unicodedata.normalize("NFC", c), c) for c in found]
    unknown = [c for c in classes if c not in predictor.labels]
    if unknown:
        shown = ", ".join(predictor.labels[:12]) + (" …" if len(predictor.labels) > 12 else "")
        raise UsageError(
            f"{folder}: class folder(s) {', '.join(map(printable, unknown))} are not labels of {predictor.name} "
            f"({printable(shown)})"
        )
    index = {c: i for i, c in enumerate(classes)}
    other = len(classes)
    cm = np.zeros((len(classes), len(classes) + 1), dtype=np.int64)
    top5 = 0
    failed = [{"path": path, "error": reason} for path, reason in unreadable]  # unreadable: listed, as always
    target_of = dict(zip(split.paths, split.targets))
    for record in predictor.stream(split.paths, batch_size=batch_size, workers=workers):
        if record.error is not None:
            failed.append({"path": record.path, "error": record.error})
            if on_record is not None:
                on_record(record, [])
            continue
        true = target_of[record.path]
        if on_record is not None:
            on_record(record, [{"label": classes[true]}])
        labels = [p["label"] for p in record.predictions]
        cm[true, index.get(labels[0], other)] += 1
        top5 += classes[true] in labels[:5]
    columns = classes + (["(other)"] if cm[:, other].any() else [])
    matrix = cm[:, : len(columns)]
    result = {
        "model": predictor.name,
        **runtime_facts(predictor),
        "data": str(folder),
        **summary(matrix, classes),
        "failed": failed,
    }
    result["top5"] = round(top5 / result["images"], 4) if result["images"] else 0.0
    result["confusion"] = {"labels": classes, "columns": columns, "matrix": matrix.tolist()}
    if plot is not None:
        plot_confusion(
            matrix,
            classes,
            plot,
            columns=columns,
            title=f"{predictor.name} on {folder.name} (top-1 {result['top1']:.3f})",
        )
        result["plot"] = str(plot)
    return result


def validate(
    data: str | os.PathLike,
    *,
    split: str | None = None,
    model: str | None = None,
    weights: str | None = None,
    backend: str | None = None,
    batch_size: int = 16,
    workers: int = 2,
    device: str | None = None,
    threads: int | None = None,
    save_dir: str | os.PathLike | Callable[[], Path] | None = None,
    on_record: Callable[[Any, list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Top-1, top-5, per-class precision/recall/F1 and the confusion matrix of a model on ``data/<class>/*``.

    ``split`` names the sub-folder to score (``DATA/<split>``); without it, ``DATA/val`` when DATA has
    train/ and val/, else DATA itself (for weights a finetune run trained on DATA split by its ``val_split``, the
    val part of that split: :func:`trained_split`). With ``save_dir`` (an existing folder, or a function that makes one,
    called only once the data and model are found), ``confusion_matrix.png`` and ``metrics.json`` go there.
    """
    import json

    from cnnkit import api
    from cnnkit.errors import OptionError
    from cnnkit.io.files import atomic_write_text

    if split is not None:
        if not (Path(data) / split).is_dir():
            raise OptionError("split", f"{data} has no {split}/ folder", split)
        data = Path(data) / split
    predictor = api.load(
        "classify", model=model, weights=weights, backend=backend, device=device, threads=threads, topk=5
    )
    folder = None if save_dir is None else save_dir() if callable(save_dir) else Path(save_dir)
    try:
        result = evaluate_folder(
            predictor,
            data,
            batch_size=batch_size,
            workers=workers,
            plot=folder / "confusion_matrix.png" if folder else None,
            on_record=on_record,
        )
    except BaseException:
        if folder is not None and callable(save_dir):  # made for this run: a refused run leaves no empty folder
            with contextlib.suppress(OSError):
                folder.rmdir()  # only an empty one
        raise
    if folder is not None:
        atomic_write_text(folder / "metrics.json", json.dumps(result, indent=2) + "\n")
    return result


def report_tables(result: dict[str, Any]) -> list[ReportTable]:
    """The summary, per-class and confusion tables of :func:`validate`'s metrics."""
    m = result["macro"]
    head = table(
        f"{result['model']} on {result['data']}",
        ("images", "top-1", "top-5", "macro precision", "macro recall", "macro F1"),
        [(result["images"], result["top1"], result["top5"], m["precision"], m["recall"], m["f1"])],
        [runtime_note(result)],
    )
    per = table(
        "per class",
        ("class", "precision", "recall", "F1", "support"),
        [(r["label"], r["precision"], r["recall"], r["f1"], r["support"]) for r in result["per_class"]],
    )
    return [head, per, confusion_table(result["confusion"])]
