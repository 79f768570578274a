"""The one way cnnkit reads a YOLO dataset yaml, and the sanitised copy ultralytics gets instead.

ultralytics' ``check_det_dataset`` runs a yaml's ``download:`` entry (Python through ``exec``,
``bash ...`` through ``subprocess``, or a URL it fetches) whenever the val folder is missing,
unpacks archives and fetches URLs given as the data argument. cnnkit therefore reads the yaml
itself (safe loader, no aliases, bounded size, UTF-8), checks the split folders it needs,
resolves every path like ultralytics does, and hands ultralytics a copy that holds only
``path`` (absolute), the splits (absolute), ``names``, ``nc`` and ``channels``: nothing in a
data file is ever executed or fetched.

Paths resolve as in ultralytics: without ``path:`` the root is the yaml's folder (whatever the
working folder); a relative ``path:`` is looked up beside the yaml first (cnnkit's rule, so it
does not depend on the working folder), then in the working folder and ultralytics' datasets
folder (ultralytics' rules); a split is ``root / entry``, and ``../entry`` falls back to
``root / entry`` when the first does not exist. In a ``.txt`` list, ``./x`` is relative to
the list file and other relative lines to the working folder, as ultralytics reads them.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnkit.data import repeated
from cnnkit.errors import CnnkitError, UsageError

log = logging.getLogger("cnnkit")

MAX_BYTES = 256 << 10  # dataset yamls are a few KB; ultralytics' largest (ImageNet) is 42 KB
SPLITS = ("train", "val", "test", "minival")
# ultralytics' IMG_FORMATS: the files its datasets list from a split folder or list
IMAGE_SUFFIXES = frozenset(
    {"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"}
)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".xz", ".bz2", ".txz", ".tbz2", ".7z", ".rar")
_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"7z\xbc\xaf\x27\x1c", b"Rar!")


@dataclass(frozen=True)
class DatasetYaml:
    """A checked dataset yaml: where it is, its root, class names and each split's resolved entries."""

    file: Path
    label: str
    root: Path
    names: list[str]
    splits: dict[str, list[Path]] = field(default_factory=dict)
    channels: int = 3


def _fail(label: str, reason: str) -> CnnkitError:
    return CnnkitError(f"{label}: {reason}")


def _is_url(text: str) -> bool:
    return "://" in text


def _loader() -> type:
    """PyYAML's pure-Python safe loader, refusing aliases (``*name``) so nothing expands beyond the file."""
    import yaml

    class NoAliasSafeLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed", mark)
            return super().compose_node(parent, index)

    return NoAliasSafeLoader


def _read_bytes(path: Path, label: str) -> bytes:
    """The file's bytes, refusing folders, URLs, archives, devices and anything over ``MAX_BYTES``."""
    if _is_url(label):
        raise UsageError(f"{label}: a URL; cnnkit reads only a local dataset yaml (download the dataset yourself)")
    if not path.exists():
        raise UsageError(f"{label}: no such dataset yaml (make one with `cnnkit data shapes OUT --layout yolo`)")
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".yaml", ".yml") and p.is_file())
        if inside:
            raise UsageError(f"{label}: a folder; pass the dataset yaml inside it ({', '.join(inside[:3])})")
        raise UsageError(
            f"{label}: a folder with no dataset yaml; detection reads a YOLO dataset yaml "
            "(make one with `cnnkit data shapes OUT --layout yolo`)"
        )
    if not path.is_file():
        raise UsageError(f"{label}: not a regular file")
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        raise UsageError(f"{label}: an archive; cnnkit does not unpack datasets, unpack it and pass its data.yaml")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise _fail(label, f"cannot be read ({exc.strerror or exc})") from exc
    if raw.startswith(_MAGIC) or raw[257:262] == b"ustar":
        raise UsageError(f"{label}: an archive; cnnkit does not unpack datasets, unpack it and pass its data.yaml")
    if len(raw) > MAX_BYTES:
        raise _fail(label, f"larger than {MAX_BYTES // 1024} KiB, too large for a dataset yaml")
    return raw


def _parse(raw: bytes, label: str) -> dict[str, Any]:
    import yaml

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(label, f"not UTF-8 text (byte {exc.start})") from exc
    try:
        data = yaml.load(text, Loader=_loader())  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise _fail(label, f"not valid YAML ({where}{problem})") from exc
    except RecursionError as exc:
        raise _fail(label, "not valid YAML (nested too deeply)") from exc
    except (ValueError, TypeError, OverflowError) as exc:
        raise _fail(label, f"not valid YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if not isinstance(data, dict):
        raise _fail(label, "not a YAML mapping; a dataset yaml has train, val and names (and optionally path)")
    return data


def _names(data: dict[str, Any], label: str) -> list[str]:
    """``names`` as a list, checked against ``nc`` the way ultralytics checks it."""
    names = data.get("names")
    if names is None:
        raise _fail(label, "no 'names:' (the class names, a list or a mapping from class id)")
    if isinstance(names, dict):
        whole = all(isinstance(k, int) or (isinstance(k, str) and k.strip().isdigit()) for k in names)
        if not whole or any(isinstance(k, bool) for k in names):  # 0.5 or True would fold into another id
            raise _fail(label, "'names:' keys must be class ids 0, 1, 2, ...")
        ids = {int(k): v for k, v in names.items()}
        if sorted(ids) != list(range(len(ids))):
            raise _fail(label, f"'names:' keys must be the class ids 0 to {len(ids) - 1}")
        names = [ids[i] for i in range(len(ids))]
    elif not isinstance(names, list):
        raise _fail(label, f"'names:' must be a list or a mapping, not {type(names).__name__}")
    if not names:
        raise _fail(label, "'names:' is empty; a dataset needs at least one class")
    if not all(isinstance(n, (str, int, float, bool)) for n in names):
        raise _fail(label, "'names:' entries must be plain names (strings)")
    nc = data.get("nc")
    if nc is not None:
        try:
            n = float(nc)
            valid = n == int(n)
        except (TypeError, ValueError, OverflowError):
            valid = False
        if not valid:
            raise _fail(label, f"'nc: {nc}' must be an integer")
        if int(n) != len(names):
            raise _fail(label, f"'names:' has {len(names)} classes but 'nc:' says {int(n)}")
    text = [str(n) for n in names]
    twice = repeated(text)
    if twice:  # val matches classes by name: a name of two classes would send both to the first
        raise _fail(label, f"'names:' lists {', '.join(twice)} more than once")
    return text


def _datasets_dir() -> Path | None:
    """ultralytics' datasets folder (its settings), read without any download."""
    try:
        from cnnkit import ultralytics_adapter

        ultralytics_adapter.ultralytics()
        from ultralytics.utils import DATASETS_DIR
    except Exception:
        return None
    return Path(DATASETS_DIR)


def _root(data: dict[str, Any], file: Path, label: str) -> Path:
    entry = data.get("path")
    if entry is None or entry == "":
        return file.parent
    if not isinstance(entry, str):
        raise _fail(label, f"'path:' must be a folder name, not {type(entry).__name__}")
    if _is_url(entry):
        raise _fail(label, f"'path: {entry}' is a URL; cnnkit reads only local folders")
    path = Path(entry).expanduser()
    if path.is_absolute():
        return path.resolve()
    for base in (file.parent, Path.cwd()):
        if (base / path).exists():
            return (base / path).resolve()
    datasets = _datasets_dir()
    if datasets is not None and (datasets / path).exists():
        return (datasets / path).resolve()
    return (file.parent / path).resolve()


def _entries(data: dict[str, Any], split: str, root: Path, label: str) -> list[Path]:
    value = data.get(split)
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(x, str) and x for x in items):
        raise _fail(label, f"'{split}:' must be a folder or list file, or a list of them")
    out: list[Path] = []
    for item in map(str, items):
        if _is_url(item):
            raise _fail(label, f"'{split}: {item}' is a URL; cnnkit reads only local folders")
        x = (root / item).resolve()
        if not x.exists() and item.startswith("../"):
            x = (root / item[3:]).resolve()
        out.append(x)
    return out


def _has_image(folder: Path) -> bool:
    from cnnkit.io.sources import files_below

    return any(f.rpartition(".")[-1].lower() in IMAGE_SUFFIXES for f in files_below(folder))


def _check_split(split: str, entries: list[Path], label: str) -> None:
    for p in entries:
        if p.is_dir():
            if not _has_image(p):
                raise _fail(label, f"{split} folder {p} has no images")
        elif p.is_file():
            continue
        elif p.suffix == ".txt":
            raise _fail(label, f"{split} list {p} does not exist")
        else:
            raise _fail(label, f"{split} folder {p} does not exist")


def read(path: str | os.PathLike, *, require: Iterable[str] = ("train", "val")) -> DatasetYaml:
    """The checked dataset yaml at ``path``; each split in ``require`` must exist and hold images.

    Raises :class:`UsageError` for an argument that is not a local yaml file (a URL, folder,
    archive, missing file) and :class:`CnnkitError` (``"<file>: <reason>"``) for its content.
    """
    label = str(path)
    file = Path(label).expanduser()
    data = _parse(_read_bytes(file, label), label)
    file = file.resolve()
    if "val" not in data and "validation" in data:
        data["val"] = data.pop("validation")  # ultralytics renames it too
    names = _names(data, label)
    root = _root(data, file, label)
    required = list(require)
    for split in required:
        if not data.get(split):
            raise _fail(label, f"no '{split}:' split")
    splits = {s: _entries(data, s, root, label) for s in SPLITS if data.get(s)}
    for split in required:
        _check_split(split, splits[split], label)
    channels = data.get("channels", 3)
    if channels is None:
        channels = 3
    if not isinstance(channels, int) or isinstance(channels, bool) or channels not in (1, 3, 4):
        raise _fail(label, f"'channels: {channels}' must be 1, 3 or 4")
    if data.get("download"):
        log.warning("%s: ignoring its 'download:' entry (cnnkit never runs or fetches what a data file says)", label)
    return DatasetYaml(file=file, label=label, root=root, names=names, splits=splits, channels=channels)


def write_sanitised(ds: DatasetYaml, dest: str | os.PathLike) -> Path:
    """Write the yaml ultralytics reads instead of the user's: absolute paths, names, no ``download``."""
    import yaml

    from cnnkit.io.files import atomic_write_text

    content: dict[str, Any] = {"path": str(ds.root)}
    for split, entries in ds.splits.items():
        content[split] = str(entries[0]) if len(entries) == 1 else [str(p) for p in entries]
    present = [content[s] for s in SPLITS if s in content]
    for split in ("train", "val"):  # ultralytics insists on both keys even where it uses neither
        if split not in content and present:
            content[split] = present[0]
    content["names"] = dict(enumerate(ds.names))
    content["nc"] = len(ds.names)
    content["channels"] = ds.channels
    header = f"# written by cnnkit from {ds.file}; only paths and names (no download)\n"
    return atomic_write_text(dest, header + yaml.safe_dump(content, sort_keys=False, allow_unicode=True))


def split_images(ds: DatasetYaml, split: str) -> list[Path]:
    """The image files of ``split`` (folders, ``.txt`` lists, or a list of either), as ultralytics lists them."""
    from cnnkit.io.sources import files_below

    if split not in ds.splits:
        raise UsageError(f"{ds.label}: no {split!r} split")
    _check_split(split, ds.splits[split], ds.label)
    images: list[Path] = []
    for p in ds.splits[split]:
        if p.is_dir():
            images += sorted(  # hidden entries (macOS `._x.png`) left out, linked folders followed, as ultralytics' glob
                f for f in map(Path, files_below(p)) if f.suffix[1:].lower() in IMAGE_SUFFIXES and f.is_file()
            )
            continue
        try:
            lines = p.read_text(encoding="utf-8-sig").strip().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise _fail(ds.label, f"{split} list {p} is not a readable UTF-8 text file") from exc
        for line in lines:
            line = line.strip()
            if line.rpartition(".")[-1].lower() not in IMAGE_SUFFIXES:
                continue
            images.append(p.parent / line[2:] if line.startswith("./") else Path(line))
    if not images:
        raise _fail(ds.label, f"the {split} split has no images")
    return images


__all__ = ["IMAGE_SUFFIXES", "MAX_BYTES", "DatasetYaml", "read", "split_images", "write_sanitised"]


def label_path(image: Path) -> Path:
    """YOLO's convention: the last ``images`` folder becomes ``labels``, suffix ``.txt``."""
    parts = list(image.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


Label = tuple[int, float, float, float, float]  # class id, box centre and size as fractions of the image


def read_labels(path: Path, classes: int) -> list[Label]:
    """The boxes of a YOLO label file (none when it is missing, as for an image without objects), read as
    ultralytics reads them: a line is ``class cx cy w h`` or ``class x1 y1 x2 y2 …`` (a polygon, ≥ 3 points,
    taken as its bounding box); a box reaching past the image's edge is clipped to it; repeated lines count
    once. A file that is not text, or a line that is not a class id below ``classes`` and fractions 0–1, is a
    one-line :class:`CnnkitError` naming the file and line (the image is then left out)."""
    try:
        # utf-8-sig: a byte-order mark (Windows Notepad writes one) is skipped, as ultralytics skips it
        text = path.read_text(encoding="utf-8-sig") if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"{path}: not a readable label file ({exc.__class__.__name__})") from None
    rows: list[Label] = []
    kinds: dict[bool, int] = {}  # polygon or box → the first line of that kind
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = [math.nan]
        polygon = len(fields) > 5
        if (
            len(fields) < 5
            or not all(math.isfinite(v) for v in values)
            or (polygon and (len(fields) < 7 or len(fields) % 2 == 0))
        ):
            raise CnnkitError(
                f"{path}:{n}: expected `class cx cy w h` numbers (or a polygon, `class x1 y1 x2 y2 x3 y3 …`), "
                f"got {line.strip()[:60]!r}"
            )
        kinds.setdefault(polygon, n)
        cls_f, coords = values[0], values[1:]
        if cls_f != int(cls_f) or not 0 <= cls_f < classes:
            raise CnnkitError(f"{path}:{n}: class {fields[0]} is not one of the dataset's {classes} (0–{classes - 1})")
        # ultralytics' tolerance (exported polygons round to 1.000001): up to 1.01, down to -0.01, sizes not negative
        if max(coords) > 1.01 or min(coords) < -0.01 or (min(coords) < 0 and not polygon and min(coords[2:]) < 0):
            raise CnnkitError(f"{path}:{n}: the box {line.strip()[:60]!r} is not inside the image (fractions 0–1)")
        if polygon:
            xs, ys = [min(max(v, 0.0), 1.0) for v in coords[0::2]], [min(max(v, 0.0), 1.0) for v in coords[1::2]]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        else:
            cx, cy, w, h = coords
            x1, y1, x2, y2 = max(cx - w / 2, 0.0), max(cy - h / 2, 0.0), min(cx + w / 2, 1.0), min(cy + h / 2, 1.0)
        if x2 <= x1 or y2 <= y1:
            raise CnnkitError(f"{path}:{n}: the box {line.strip()[:60]!r} has no area inside the image")
        row = (int(cls_f), (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        if row in rows:
            log.debug("%s:%d: a repeated label, counted once", path, n)
            continue
        rows.append(row)
    if len(kinds) > 1:  # read here as each row says; ultralytics leaves such an image out (its figures beside)
        log.warning(
            "%s: box rows (line %d) and polygon rows (line %d) mixed; ultralytics leaves this image out",
            path,
            kinds[False],
            kinds[True],
        )
    return rows
