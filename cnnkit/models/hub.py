"""Where weights come from: the package, torch hub's cache, or a download.

Uses the caches users already have (``$TORCH_HOME/hub/checkpoints``), so a file that
torchvision downloaded once is found by cnnkit offline. A missing file offline is a
:class:`WeightsNotAvailable` naming the model, the cache folder and ``--weights``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnkit.errors import CnnkitError, WeightsNotAvailable, reason_of

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def bundled_path(filename: str) -> Path:
    """Where a bundled weights file lives: ``cnnkit/weights/`` inside the installed package."""
    return WEIGHTS_DIR / filename


def torch_hub_dir() -> Path:
    """torch hub's folder, computed as torch does (without importing torch), unless
    cnnkit's ``cache_dir`` setting names another."""
    from cnnkit.config import lookup

    configured = lookup("cache_dir").value
    if configured:
        return Path(configured).expanduser()
    if "TORCH_HOME" in os.environ:
        home = Path(os.environ["TORCH_HOME"]).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
        home = Path(xdg).expanduser() / "torch"
    return home / "hub"


def torchvision_weights(enum_name: str) -> WeightsEnum:
    """``"ResNet18_Weights.IMAGENET1K_V1"`` → the torchvision weights member."""
    from torchvision.models import get_weight

    return get_weight(enum_name)


def torchvision_cache_file(weights: WeightsEnum) -> Path:
    """Where torch hub keeps (or will keep) the download of ``weights``, so a cached file is found offline."""
    return torch_hub_dir() / "checkpoints" / os.path.basename(weights.url)


def is_cached_torchvision(enum_name: str, url_basename: str | None = None) -> bool:
    """Whether torchvision weights are already in torch hub's cache (so loading them needs no network)."""
    if url_basename is None:
        url_basename = os.path.basename(torchvision_weights(enum_name).url)
    return (torch_hub_dir() / "checkpoints" / url_basename).is_file()


def torchvision_state_dict(model_name: str, enum_name: str, progress: bool = False) -> dict[str, Any]:
    """The state dict of torchvision weights: from the cache, else downloaded (hash-checked)."""
    import torch

    weights = torchvision_weights(enum_name)
    cached = torchvision_cache_file(weights)
    if cached.is_file():
        try:
            return torch.load(str(cached), map_location="cpu", weights_only=True)
        except Exception as exc:  # cut short or replaced: never retried without weights_only
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
            raise CnnkitError(
                f"{cached}: not a readable weights file ({reason[:120]}); delete it to download it again"
            ) from None
    said = io.StringIO()  # torch.hub says `Downloading: …` on stdout, where data goes: to stderr once it worked
    try:
        with contextlib.redirect_stdout(said):
            state = torch.hub.load_state_dict_from_url(
                weights.url,
                model_dir=str(cached.parent),
                map_location="cpu",
                progress=progress,
                check_hash=True,
                weights_only=True,
            )
        sys.stderr.write(said.getvalue())
        return state
    except Exception as exc:  # the one line below says it all: no `Downloading:` line before it
        raise WeightsNotAvailable(
            f"{model_name}: pretrained weights {enum_name} are not in the cache {cached.parent} and "
            f"could not be downloaded ({reason_of(exc, 160)}); connect once to download them, or pass `weights` PATH"
        ) from exc
