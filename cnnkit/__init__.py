"""cnnkit: convolutional networks for image files, from the shell and from Python.

Importing cnnkit is free of side effects and does not import torch; the task
functions (``cnnkit.classify`` …) are resolved lazily from :mod:`cnnkit.api`.
"""

from __future__ import annotations

from cnnkit._version import __version__
from cnnkit.tasks import TASK_NAMES

_API = {*TASK_NAMES, "finetune", "load", "records_to_frame"}

__all__ = ["__version__", *sorted(_API)]


def __dir__() -> list[str]:
    """The API functions too, so ``help(cnnkit)``, ``dir`` and tab completion show them."""
    return sorted({*__all__, "TASK_NAMES"})


def __getattr__(name: str):
    if name in _API:
        from cnnkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'cnnkit' has no attribute {name!r}")
