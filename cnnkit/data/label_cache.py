"""ultralytics' ``labels/*.cache`` files, read without running code.

ultralytics keeps a dataset's parsed labels in ``labels/<split>.cache``, a NumPy file it
reads with ``np.load(allow_pickle=True)``: a cache shipped inside a dataset could run any
code. :func:`install` swaps its reader for one that unpickles only what such a cache holds
(containers, strings, numbers, NumPy arrays and dtypes); anything else is refused, and
ultralytics then rebuilds the cache from the label files, as it does for a stale one.
"""

from __future__ import annotations

import logging
import os
import pickle
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("cnnkit")

_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
_installed = False


class UnsafeCache(pickle.UnpicklingError):
    """A cache whose pickle names something other than plain data."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise UnsafeCache(f"refused {module}.{name}")


def load(path: str | os.PathLike) -> np.ndarray:
    """The object in a ``.npy``/``.cache`` file, unpickling plain data only (ultralytics calls ``.item()`` on it)."""
    import numpy as np
    from numpy.lib import format as npy

    with open(path, "rb") as f:
        version = npy.read_magic(f)
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        dtype = read_header(f)[2]
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        array = _DataUnpickler(f).load()
    if not isinstance(array, np.ndarray):
        raise UnsafeCache("not an array")
    return array


def _load_dataset_cache_file(path: Any) -> dict:
    """Drop-in for ``ultralytics.data.utils.load_dataset_cache_file``."""
    try:
        return load(path).item()
    except UnsafeCache as exc:
        log.warning("%s: not reading this label cache, it would run code (%s); ultralytics rebuilds it", path, exc)
        raise


def install() -> None:
    """Make ultralytics' datasets read their label caches through :func:`load` (idempotent)."""
    global _installed
    if _installed:
        return
    from ultralytics.data import dataset, utils

    dataset.load_dataset_cache_file = _load_dataset_cache_file
    utils.load_dataset_cache_file = _load_dataset_cache_file
    _installed = True


__all__ = ["UnsafeCache", "install", "load"]
