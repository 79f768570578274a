"""Defaults without repeating flags: flag > environment > config file > built-in.

The config file is ``cnnkit.toml`` in the working folder, else
``$XDG_CONFIG_HOME/cnnkit/cnnkit.toml`` (``~/.config/cnnkit/cnnkit.toml``)::

    device = "cpu"
    batch_size = 32
    format = "jsonl"
    workers = 4
    cache_dir = "/data/weights"      # torch hub folder for pretrained weights
    backend = "auto"                 # predictors: auto (compiled CPU runtime), torch, onnxruntime, openvino

    [model]
    classify = "resnet50"
    detect = "yolov8n.pt"

Environment: ``CNNKIT_DEVICE``, ``CNNKIT_BATCH_SIZE``, ``CNNKIT_FORMAT``, ``CNNKIT_WORKERS``,
``CNNKIT_CACHE_DIR``, ``CNNKIT_BACKEND``, ``CNNKIT_MODEL_<TASK>`` (e.g. ``CNNKIT_MODEL_CLASSIFY``). The CLI reads the
first four through Typer's ``envvar=`` on their flags (``cnnkit.cli.options``), so a value from the
environment counts as given and :func:`resolve` consults the config file only when neither was. The CLI
checks every set variable first (:func:`check_environment`), so a bad one is an error naming the
variable, not the flag Typer would blame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import UsageError
from cnnkit.tasks import TASK_NAMES

SETTINGS: dict[str, type] = {
    "device": str,
    "batch_size": int,
    "format": str,
    "workers": int,
    "cache_dir": str,
    "backend": str,
}

# Upper bounds shared by flags, environment and config file: past them a value only costs memory
# (every worker and thread has a stack; two batches of images are decoded ahead) or crashes torch.
MAX_THREADS = max(64, 4 * (os.cpu_count() or 1))
MAX_WORKERS = MAX_THREADS
MAX_BATCH_SIZE = 1024
MAX_IMGSZ = 8192  # --imgsz: a model input side; activations grow with its square
MAX_TILE = 8192  # --tile: a window side, cut from the image before resizing to --imgsz
MAX_KERNEL = 31  # `cnnkit conv --kernel FILE`: the largest matrix side
MAX_PADDING = MAX_KERNEL  # `cnnkit conv --padding`: more than the kernel only adds zeros
BOUNDS: dict[str, tuple[int, int]] = {"batch_size": (1, MAX_BATCH_SIZE), "workers": (0, MAX_WORKERS)}
# The keyword of each setting's option, which the CLI spells as its flag (``format`` is ``fmt``).
KEYWORDS = {"format": "fmt"}


@dataclass(frozen=True)
class Setting:
    """A setting's effective value and where it came from (shown by ``cnnkit info``)."""

    value: Any
    source: str  # "flag", "env CNNKIT_X", "config PATH", "built-in"


def env_name(key: str) -> str:
    """The environment variable of a setting: ``model.classify`` → ``CNNKIT_MODEL_CLASSIFY``."""
    return "CNNKIT_" + key.upper().replace(".", "_")


def config_path() -> Path | None:
    """The config file in effect, if any."""
    local = Path.cwd() / "cnnkit.toml"
    if local.is_file():
        return local
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = base / "cnnkit" / "cnnkit.toml"
    return user if user.is_file() else None


def read_config(path: Path | None = None) -> dict[str, Any]:
    """The config file as a flat dict (``model.classify`` …); a broken file is a usage error."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = path or config_path()
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read config ({exc})") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    unknown = sorted(k for k in flat if k not in SETTINGS and not (k.startswith("model.") and k[6:] in TASK_NAMES))
    if unknown:
        raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    return {key: _convert(key, value, str(path), text_numbers=False) for key, value in flat.items()}


def _convert(key: str, value: Any, where: str, text_numbers: bool = True) -> Any:
    """``value`` as the setting's type, checked as its flag would be; ``where`` names the source. An environment
    variable is text (``text_numbers``); a TOML file has numbers of its own, so ``batch_size = "3"`` is wrong."""
    kind = SETTINGS.get(key, str)
    if kind is int and isinstance(value, str) and not text_numbers:
        raise UsageError(f"{where}: {key} must be an integer, got {value!r}")
    if kind is int:
        text = value.strip() if isinstance(value, str) else value
        try:
            number = int(text)
        except (TypeError, ValueError):
            number = None
        if isinstance(value, bool) or number is None or (isinstance(value, float) and value != number):
            raise UsageError(f"{where}: {key} must be an integer, got {value!r}")
        value = number
    elif not isinstance(value, str):
        raise UsageError(f"{where}: {key} must be a string, got {value!r}")
    return check(key, value, where)


def check(key: str, value: Any, where: str | None = None) -> Any:
    """Refuse a setting outside what its option accepts; ``where`` (env var, file) defaults to the option."""
    where = where or f"`{KEYWORDS.get(key, key)}`"
    if key in BOUNDS:
        lo, hi = BOUNDS[key]
        if not lo <= value <= hi:
            raise UsageError(f"{where}: {key} must be from {lo} to {hi}, got {value}")
    elif key == "format":
        from cnnkit.io.writers import FORMATS

        if value not in FORMATS:
            raise UsageError(f"{where}: {key} must be one of {', '.join(FORMATS)}, got {value!r}")
    elif key == "backend":
        from cnnkit.models.kinds import BACKENDS

        if value not in BACKENDS:
            raise UsageError(f"{where}: {key} must be one of {', '.join(BACKENDS)}, got {value!r}")
    elif key == "device":
        from cnnkit.device import check_device_name

        check_device_name(value, where)
    elif not value.strip() or "\0" in value:
        raise UsageError(f"{where}: {key} must be a non-empty name, got {value!r}")
    return value


def check_environment() -> None:
    """Refuse any ``CNNKIT_*`` setting that its option would refuse, naming the variable."""
    for key in list(SETTINGS) + [f"model.{t}" for t in TASK_NAMES]:
        env = env_name(key)
        if os.environ.get(env):
            _convert(key, os.environ[env], env)


def lookup(key: str, builtin: Any = None, config: dict[str, Any] | None = None) -> Setting:
    """The value of ``key`` from the environment, the config file, or ``builtin``."""
    env = env_name(key)
    if os.environ.get(env):
        return Setting(_convert(key, os.environ[env], env), f"env {env}")
    config = read_config() if config is None else config
    if key in config:
        where = str(config_path())
        return Setting(_convert(key, config[key], where), f"config {where}")
    return Setting(builtin, "built-in")


def resolve(key: str, flag_value: Any, flag_given: bool, builtin: Any = None) -> Any:
    """Flag (when the user gave it) > environment > config file > built-in."""
    if flag_given:
        return check(key, flag_value)
    return lookup(key, builtin if builtin is not None else flag_value).value


def effective(builtins: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Every setting's effective value and where it came from, for ``cnnkit info``."""
    builtins = builtins or {}
    config = read_config()
    keys = list(SETTINGS) + [f"model.{t}" for t in TASK_NAMES]
    out = {}
    for key in keys:
        s = lookup(key, builtins.get(key), config)
        out[key] = {"value": s.value, "source": s.source}
    return out
