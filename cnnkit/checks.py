"""Option values checked where the library takes them, so a Python caller gets the CLI's one-line errors.

The CLI's Typer options already refuse most bad values (``min=``, types); these checks are for
:func:`cnnkit.load`, the task functions and :meth:`Predictor.stream`, which take plain keyword
arguments. Each names the option (:class:`~cnnkit.errors.OptionError`), before a model loads.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Collection, Iterable, Iterator, Mapping, Set
from typing import Any

from cnnkit.errors import OptionError


def whole(name: str, value: Any, low: int | None, high: int | None = None) -> int:
    """``value`` as an ``int`` when it is a whole number (a NumPy one too, as indexing an array gives; not a bool)
    from ``low`` (to ``high``); ``None``: no lower bound."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise OptionError(name, "must be a whole number", value)
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise OptionError(name, f"must be from {low}" + (f" to {high}" if high is not None else " up"), value)
    return number


def fraction(name: str, value: Any) -> float:
    """``value`` as a ``float`` when it is a number (NumPy's too) from 0 to 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise OptionError(name, "must be a number between 0 and 1", value)
    if not 0.0 <= float(value) <= 1.0:
        raise OptionError(name, "must be between 0 and 1", value)
    return float(value)


def check_load(options: dict[str, Any]) -> None:
    """The options every task's ``load`` shares, checked (and ``device``/``classes`` normalised) in place."""
    if options.get("imgsz") is not None:  # a whole number; each task says its own range (segment: from 32)
        options["imgsz"] = whole("imgsz", options["imgsz"], 1)
    for name in ("conf", "iou", "mask_threshold"):
        if options.get(name) is not None:
            options[name] = fraction(name, options[name])
    for name in ("topk", "max_det", "threads"):
        if options.get(name) is not None:
            options[name] = whole(name, options[name], 1)
    for name in ("half", "agnostic_nms", "save_txt", "save_crop", "save_masks"):
        _flag(name, options.get(name))
    for name in ("weights", "model"):
        _name_or_path(name, options.get(name))
    device = options.get("device")
    if device is not None and not isinstance(device, str):
        if type(device).__name__ == "device" or isinstance(device, int):  # torch.device, or a CUDA index
            options["device"] = str(device) if not isinstance(device, int) else f"cuda:{device}"
        else:
            raise OptionError("device", "must be a name like cpu, cuda, cuda:1 or mps", device)
    classes = options.get("classes")
    if isinstance(classes, (str, int)) and not isinstance(classes, bool):
        options["classes"] = [classes]  # one class, not its letters
    elif classes is not None and not isinstance(classes, Iterable):
        raise OptionError("classes", "must be class ids or names", classes)


def _flag(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):  # "no" and "false" are true in Python
        raise OptionError(name, "must be True or False", value)


def _name_or_path(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise OptionError(name, "must be a name or a path", value)


def check_run(
    batch_size: Any,
    workers: Any,
    max_pixels: Any,
    *,
    recursive: Any = False,
    keep_pictures: Any = False,
    save_dir: Any = None,
    skip: Any = None,
) -> None:
    """The run options of :meth:`Predictor.stream`."""
    _flag("recursive", recursive)
    _flag("keep_pictures", keep_pictures)
    _name_or_path("save_dir", save_dir)
    if skip is not None and (isinstance(skip, (str, bytes)) or not isinstance(skip, Collection)):
        raise OptionError("skip", "must be a set (or list) of input paths", skip)
    whole("batch_size", batch_size, 1)
    whole("workers", workers, 0)  # 0, as for a DataLoader: no extra process; one decode thread still runs
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, float)) or not max_pixels >= 1:
        raise OptionError("max_pixels", "must be a number of pixels, at least 1", max_pixels)
    if isinstance(max_pixels, float) and not math.isfinite(max_pixels):
        raise OptionError("max_pixels", "must be a finite number of pixels", max_pixels)


def source_list(sources: Any) -> list[Any] | Iterator[Any]:
    """``sources`` as a list of inputs: one path, URL, encoded ``bytes`` (or an open binary file of them),
    image, array or tensor is one input; a list or tuple holds several, as does a 4-D array or tensor (a
    batch); a generator or other iterator is returned as it is, to be read lazily (a camera loop, a dataset
    reader may never end); ``None``, a mapping or a set is refused (no input, and no order)."""
    if sources is None:
        raise OptionError("sources", "no input given (paths, folders, globs, images, arrays or tensors)")
    if isinstance(sources, (str, bytes, bytearray, memoryview, os.PathLike)):
        return [sources]
    if isinstance(sources, (Mapping, Set)):
        raise OptionError("sources", "a mapping or set has no order; pass a list", type(sources).__name__)
    if isinstance(sources, (list, tuple)):
        return [one for source in sources for one in _batch_or_one(source)]
    if callable(getattr(sources, "read", None)):  # an open binary file: its bytes are one encoded image
        return [sources.read()]
    if isinstance(sources, Iterator):  # a generator, map, iter(): its items are the inputs, taken as needed
        return (one for source in sources for one in _batch_or_one(source))
    return _batch_or_one(sources)  # one image (PIL, ndarray, tensor, an Item) or a batch of them


def _batch_or_one(source: Any) -> list[Any]:
    """A 4-D array or tensor (B×C×H×W, as ultralytics takes, or B×H×W×C) is its B images, in a list too."""
    return list(source) if getattr(source, "ndim", None) == 4 else [source]
