"""The one door to ultralytics: import it offline, quiet and without side effects on torch.

Everything in cnnkit that needs ultralytics calls :func:`ultralytics` (or :func:`yolo`)
instead of importing it. Before the first import this sets ``YOLO_OFFLINE``,
``YOLO_AUTOINSTALL=false`` and ``YOLO_CONFIG_DIR`` (a user's explicit value wins),
places matplotlib's DejaVuSans as the font ultralytics would download, turns its
analytics off and restores torch's thread count, which ultralytics changes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cnnkit.errors import WeightsNotAvailable

_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
_ready = False


def cache_dir() -> Path:
    """cnnkit's cache folder (``$CNNKIT_CACHE`` or ``$XDG_CACHE_HOME/cnnkit``)."""
    if "CNNKIT_CACHE" in os.environ:
        return Path(os.environ["CNNKIT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))).expanduser() / "cnnkit"


def _place_fonts(config_dir: Path) -> None:
    """Copy matplotlib's DejaVuSans to the names ultralytics' ``check_font`` would download."""
    try:
        import matplotlib

        src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    except ImportError:
        return
    if not src.is_file():
        return
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in _FONTS:
        dst = config_dir / name
        if not dst.exists():
            shutil.copyfile(src, dst)


class _Stderr:
    """Whatever ``sys.stderr`` is at write time (pytest and CliRunner swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def ultralytics() -> Any:
    """The ``ultralytics`` module, imported once with cnnkit's offline settings."""
    global _ready
    import torch

    threads = torch.get_num_threads()
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir() / "ultralytics"))
    omp = os.environ.get("OMP_NUM_THREADS")
    try:
        with contextlib.redirect_stdout(sys.stderr):  # its settings banner is not data
            import ultralytics as ul
            from ultralytics.utils import LOGGER, SETTINGS, USER_CONFIG_DIR

        if not _ready:
            for handler in LOGGER.handlers:
                if isinstance(handler, logging.StreamHandler):
                    handler.setStream(_Stderr())
            _place_fonts(Path(USER_CONFIG_DIR))
            if SETTINGS.get("sync", False):
                SETTINGS.update({"sync": False})
            _ready = True
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        torch.set_num_threads(threads)
    return ul


def cached_weights(name: str) -> Path | None:
    """Where a downloaded ultralytics weights file lives, if it is already there."""
    for folder in (cache_dir() / "ultralytics" / "weights", Path.cwd()):
        if (folder / name).is_file():
            return folder / name
    return None


def yolo(weights: str | Path) -> Any:
    """An ``ultralytics.YOLO`` for a local file, an architecture ``.yaml`` or a hub name.

    A hub name (``yolov8n.pt``) is looked up in cnnkit's cache, else downloaded there by
    cnnkit (not by ultralytics' implicit download into the working folder); a failed
    download leaves no file and raises :class:`WeightsNotAvailable`.
    """
    import torch

    ul = ultralytics()
    threads = torch.get_num_threads()
    path = Path(weights)
    try:
        if path.is_file() or str(weights).endswith(".yaml"):
            return ul.YOLO(str(path))
        cached = cached_weights(path.name)
        if cached is not None:
            return ul.YOLO(str(cached))
        return _download(ul, path.name)
    finally:
        torch.set_num_threads(threads)


def _download(ul: Any, name: str) -> Any:
    """Download ``name`` through ultralytics into cnnkit's cache; a failure leaves nothing behind."""
    folder = cache_dir() / "ultralytics" / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    try:
        from ultralytics.utils.downloads import attempt_download_asset

        got = Path(attempt_download_asset(str(target)))
        return ul.YOLO(str(got))
    except Exception as exc:
        target.unlink(missing_ok=True)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsNotAvailable(
            f"{name}: ultralytics weights are not cached in {folder} and could not be downloaded "
            f"({reason[:160]}); connect once to download them, or pass a local .pt file"
        ) from exc


@contextlib.contextmanager
def quiet(threads: int | None = None) -> Iterator[None]:
    """ultralytics' logging down to errors and its stray prints onto stderr; torch threads kept."""
    import torch

    from ultralytics.utils import LOGGER

    threads = threads or torch.get_num_threads()
    level = LOGGER.level
    LOGGER.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        LOGGER.setLevel(level)
        torch.set_num_threads(threads)


def device_arg(device: Any) -> str:
    """A torch.device as ultralytics spells it: ``cpu``, ``0``, ``mps``."""
    if device.type == "cuda":
        return str(device.index or 0)
    return device.type


def restore_threads_callback(threads: int) -> Any:
    """A trainer callback that sets torch's threads back after ultralytics' ``select_device``."""

    def _cb(_trainer: Any) -> None:
        import torch

        torch.set_num_threads(threads)

    return _cb


__all__ = ["cache_dir", "cached_weights", "device_arg", "quiet", "restore_threads_callback", "ultralytics", "yolo"]
