"""Image/mask folder pairs, as written by ``cnnkit data shapes OUT --layout masks``.

A split folder holds ``images/NAME.*`` and ``masks/NAME.png`` (class-index PNG,
palette or greyscale, 0 = background). ``DATA`` may be such a folder or a root with
``train/`` and ``val/`` split folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnkit.data import repeated, warn_left_out
from cnnkit.errors import CnnkitError, UsageError, reason_of
from cnnkit.io.sources import is_image_name

IGNORE = 255  # a mask value marking pixels left out of scores and of the training loss (VOC's "void")


def split_dir(data: str | Path, split: str) -> Path:
    """``data`` itself when it has ``images/`` and ``masks/``, else ``data/split``."""
    root = Path(data)
    if not root.is_dir():
        raise UsageError(f"{root}: no such folder")
    for folder in (root, root / split):
        if (folder / "images").is_dir() and (folder / "masks").is_dir():
            return folder
    raise CnnkitError(f"{root}: expected images/ and masks/ folders, here or in {split}/")


def find_pairs(
    data: str | Path, split: str = "val", missing: list[dict[str, str]] | None = None
) -> list[tuple[Path, Path]]:
    """Sorted ``(image, mask)`` pairs; an image without a mask is an error naming it, or with ``missing``
    (val: the others are still scored) a ``{"path", "error"}`` entry there."""
    folder = split_dir(data, split)
    pairs = []
    names = (p for p in (folder / "images").iterdir() if is_image_name(p.name) and not p.name.startswith("."))
    for image in sorted(names):  # not hidden files: macOS's `._x.png` beside `x.png` is no picture
        mask = folder / "masks" / f"{image.stem}.png"
        if not mask.is_file():
            reason = f"no mask {mask.name} in {folder / 'masks'}"
            if missing is None:
                raise CnnkitError(f"{image}: {reason}")
            missing.append({"path": str(image), "error": reason})
            continue
        pairs.append((image, mask))
    if not pairs:
        raise CnnkitError(f"{folder / 'images'}: " + ("no image has a mask" if missing else "no images"))
    return pairs


def _unreadable(path: str | Path, what: str, exc: BaseException) -> CnnkitError:
    """An image library's error as the one line users see: ``path: not a readable WHAT (its first line)``."""
    return CnnkitError(f"{path}: not a readable {what} ({reason_of(exc, 120)})")


def read_mask(path: str | Path) -> np.ndarray:
    """A class-index PNG as an H×W uint8 array (palette indices, grey levels, or 0/1 of a 1-bit PNG)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L", "1"):
                raise CnnkitError(f"{path}: mask must be a palette or greyscale PNG, not {img.mode}")
            return np.asarray(img, dtype=np.uint8).copy()
    except (OSError, Image.DecompressionBombError) as exc:  # unreadable, truncated, not an image, too large
        raise _unreadable(path, "mask PNG", exc) from None


def check_mask_values(path: str | Path, mask: np.ndarray, classes: int) -> None:
    """Refuse a mask with a value that is no class (``IGNORE``, 255, marks pixels left out of scores and loss)."""
    values = np.unique(mask)
    bad = values[(values >= classes) & (values != IGNORE)]
    if bad.size:
        raise CnnkitError(
            f"{path}: mask value {int(bad[0])} is not a class (0–{classes - 1}, or {IGNORE} for pixels to ignore)"
        )


def _fitting_mask(mask: str | Path, height: int, width: int, classes: int | None) -> np.ndarray:
    """The mask of an image of ``height`` × ``width``, checked to be that size (and, given ``classes``, to hold
    class values only: :func:`check_mask_values`)."""
    target = read_mask(mask)
    if target.shape != (height, width):
        raise CnnkitError(f"{mask}: mask is {target.shape[1]}x{target.shape[0]}, image {width}x{height}")
    if classes is not None:
        check_mask_values(mask, target, classes)
    return target


def read_pair(image: str | Path, mask: str | Path, classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An image as RGB (turned upright by its EXIF orientation) and its mask as class indices, checked to be
    the same size (and, given ``classes``, to hold class values only: :func:`check_mask_values`)."""
    from PIL import Image, ImageOps

    from cnnkit.io.decode import to_rgb

    try:
        with Image.open(image) as img:
            rgb = np.asarray(to_rgb(ImageOps.exif_transpose(img)))  # as predict and val see the image
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # unreadable, truncated, not an image
        raise _unreadable(image, "image", exc) from None
    return rgb, _fitting_mask(mask, rgb.shape[0], rgb.shape[1], classes)


def usable_pairs(pairs: list[tuple[Path, Path]], classes: int, limit: int = 10) -> list[tuple[Path, Path]]:
    """The pairs whose image opens and whose mask reads, fits it and holds class values only; each other pair
    is named in a warning and left out of training (as detect's label check does), not a crash mid-epoch.
    Each pair is read here as the data loader reads it (:func:`read_pair`): a truncated JPEG's header reads, and
    only its decode fails."""
    good, bad = [], []
    for image, mask in pairs:
        try:
            read_pair(image, mask, classes)
        except CnnkitError as exc:
            bad.append(str(exc))
            continue
        good.append((image, mask))
    warn_left_out(bad, "pair(s)", limit)
    return good


def declared_names(data: str | Path) -> list[str] | None:
    """The names a dataset gives its mask values: ``classes.txt`` (one per line, background first), else the
    ``classes`` of ``cnnkit-data.json`` after ``background`` (in ``data`` or the folder above); ``None``
    when it gives none. A file that cannot be read is a one-line error naming it."""
    import json

    root = Path(data)
    for folder in (root, root.parent):
        listed, made = folder / "classes.txt", folder / "cnnkit-data.json"
        try:
            names: list[str] | None = None
            if listed.is_file():
                names = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()]
            elif made.is_file():
                summary = json.loads(made.read_text(encoding="utf-8"))
                classes = summary.get("classes") if isinstance(summary, dict) else None
                if classes:
                    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
                        raise ValueError("its classes are not a list of names")
                    names = ["background", *classes]
            if names is not None:
                twice = repeated(names)
                if twice:  # two mask values of one name would be scored (and trained) as one class
                    raise ValueError(f"{twice[0]!r} is named more than once")
                return names
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            bad = listed if listed.is_file() else made
            raise CnnkitError(f"{bad}: not a readable list of class names ({str(exc)[:120]})") from None
    return None


def class_names(data: str | Path, pairs: list[tuple[Path, Path]]) -> list[str]:
    """Names for mask values: :func:`declared_names`, else ``class_N`` up to the largest value that is a class
    (``IGNORE`` is none). Masks holding only background and ``IGNORE`` (a 0/255 binary mask) are refused:
    their objects would be ignored, not learned."""
    names = declared_names(data)
    if names:
        return names
    top, ignored = 0, False
    for _, m in pairs:
        try:
            values = read_mask(m)
        except CnnkitError:
            continue  # named when the pairs are checked (usable_pairs), and left out
        void = values == IGNORE
        ignored = ignored or bool(void.any())
        top = max(top, int(values[~void].max(initial=0)))
    if top == 0:
        void_note = f" and {IGNORE}, which marks pixels to ignore (VOC's void)" if ignored else ""
        raise CnnkitError(
            f"{data}: the masks hold no class but the background (0){void_note}; give object pixels the values 1, 2, …"
        )
    return ["background", *(f"class_{i}" for i in range(1, top + 1))]
