"""The one door to ultralytics: import it offline, quiet and without side effects on torch.

Everything in cnnkit that needs ultralytics calls :func:`ultralytics` (or :func:`yolo`)
instead of importing it. Before the first import this sets ``YOLO_OFFLINE``,
``YOLO_AUTOINSTALL=false`` and ``YOLO_CONFIG_DIR`` (a user's explicit value wins),
places matplotlib's DejaVuSans as the font ultralytics would download, turns its
analytics off and restores torch's thread count, which ultralytics changes.

A ``.pt`` is a whole pickle. Every one cnnkit hands to ultralytics first passes
:func:`cnnkit.models.checkpoint.check_full_pickle` (an exact allow-list, nothing runs), and
ultralytics then loads it with ``torch.load(weights_only=True)`` against its own class
allow-list: cnnkit turns on ultralytics' ``ULTRALYTICS_SAFE_LOAD`` mode (which also builds
models from YAML without ``eval``). ultralytics < 8.4 or torch < 2.6 lack that mode; there the
scan alone stands between a file and a full unpickling.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, UnsafeCheckpoint, UsageError, WeightsNotAvailable, reason_of

_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")
_ready = False


def cache_dir() -> Path:
    """cnnkit's cache folder (``$CNNKIT_CACHE`` or ``$XDG_CACHE_HOME/cnnkit``)."""
    if "CNNKIT_CACHE" in os.environ:
        return Path(os.environ["CNNKIT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))).expanduser() / "cnnkit"


def _place_fonts(config_dir: Path) -> None:
    """Copy matplotlib's DejaVuSans to the names ultralytics' ``check_font`` would download.

    Found with ``find_spec``, not imported: importing matplotlib costs a detect run 0.3 s of start-up."""
    if all((config_dir / name).exists() for name in _FONTS):
        return
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return
    src = Path(next(iter(spec.submodule_search_locations))) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not src.is_file():
        return
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in _FONTS:
        dst = config_dir / name
        if not dst.exists():
            shutil.copyfile(src, dst)


class _Forward(logging.Handler):
    """ultralytics' log records (it writes them to stdout, where cnnkit's data goes), re-issued at their own
    level by the ``cnnkit.ultralytics`` logger: the CLI shows them with ``-v``; in a Python process they follow
    its logging settings (warnings on stderr by default), as any library's do."""

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().strip()
        if text:
            logging.getLogger("cnnkit.ultralytics").log(record.levelno, "ultralytics: %s", text)


def ultralytics() -> Any:
    """The ``ultralytics`` module, imported once with cnnkit's offline settings."""
    global _ready
    import torch

    threads = torch.get_num_threads()
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cache_dir() / "ultralytics"))
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "true"  # not the user's to turn off: cnnkit opens untrusted files
    omp = os.environ.get("OMP_NUM_THREADS")
    from PIL import Image

    pil_open = Image.open
    try:
        said = io.StringIO()
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):  # its settings banner
            import ultralytics as ul
            from ultralytics.utils import LOGGER, SETTINGS, USER_CONFIG_DIR
        if said.getvalue().strip():
            logging.getLogger("cnnkit.ultralytics").debug("ultralytics: %s", said.getvalue().strip())

        _safe_load_on()
        if not _ready:
            LOGGER.handlers[:] = [_Forward()]
            LOGGER.propagate = False
            _place_fonts(Path(USER_CONFIG_DIR))
            if SETTINGS.get("sync", False):
                SETTINGS.update({"sync": False})
            for key in REPORTERS:  # in this process only: the user's own settings file is left as it is
                dict.__setitem__(SETTINGS, key, False)
            _ready = True
    finally:
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        torch.set_num_threads(threads)
        # ultralytics replaces PIL.Image.open with a wrapper that, on an unidentified file, runs
        # check_requirements("pi-heif") (a pip install when allowed); cnnkit decodes with plain PIL.
        Image.open = pil_open
    return ul


def labels_of(model: Any) -> list[str]:
    """An ultralytics model's class names in class order. ``YOLO.names`` checks the whole dict on every read,
    so it is read once (a loop over it was quadratic: 20,000 names took 50 s); a file with more names than
    any head needs is refused."""
    from cnnkit.errors import CnnkitError, reason_of
    from cnnkit.models.checkpoint import MAX_LABELS, _has_control

    where = getattr(model, "ckpt_path", None) or "model"
    try:
        names = getattr(model, "names", None) or {}
    except (KeyError, ValueError, TypeError) as exc:  # ultralytics checks the names on every read
        raise CnnkitError(f"{where}: its class names do not fit its classes ({reason_of(exc, 160)})") from None
    if len(names) > MAX_LABELS:
        raise UnsafeCheckpoint(f"{where}: refused, {len(names)} class names")
    if isinstance(names, dict) and set(names) != set(range(len(names))):
        raise CnnkitError(f"{where}: its class names are not numbered 0 to {len(names) - 1}")
    labels = [str(names[i]) for i in range(len(names))] if isinstance(names, dict) else [str(n) for n in names]
    odd = next((x for x in labels if _has_control(x)), None)
    if odd is not None:  # an escape sequence or a line break would reach a terminal's table raw
        raise CnnkitError(f"{where}: a class name has control characters ({odd[:40]!r})")
    layers = getattr(getattr(model, "model", None), "model", None)
    head = getattr(layers[-1], "nc", None) if layers is not None and len(layers) else None
    if isinstance(head, int) and labels and head != len(labels):  # classes past the names came out as bare numbers
        raise CnnkitError(f"{where}: its head predicts {head} classes, its names list {len(labels)}")
    return labels


def _safe_load_on() -> bool:
    """ultralytics' weights-only loading on, also when ultralytics was imported before cnnkit set the variable."""
    from ultralytics.nn import tasks

    safe = getattr(tasks, "_SafeLoad", None)
    if safe is None or not getattr(safe, "SUPPORTED", False):
        return False
    tasks.SAFE_LOAD = True
    return True


def safe_load() -> bool:
    """Whether ultralytics loads ``.pt`` files weights-only here (ultralytics ≥ 8.4 with torch ≥ 2.6)."""
    ultralytics()
    return _safe_load_on()


def cached_weights(name: str) -> Path | None:
    """Where a downloaded ultralytics weights file lives, if it is already there."""
    for folder in (cache_dir() / "ultralytics" / "weights", Path.cwd()):
        if (folder / name).is_file():
            return folder / name
    return None


def yolo(weights: str | Path) -> Any:
    """An ``ultralytics.YOLO`` for a local file, an architecture ``.yaml`` or a hub name.

    A ``.pt`` passes :func:`~cnnkit.models.checkpoint.check_full_pickle` before ultralytics
    opens it, and a file ultralytics cannot load is a one-line error naming it. A hub name
    (``yolov8n.pt``) is looked up in cnnkit's cache, else downloaded there by cnnkit (not by
    ultralytics' implicit download into the working folder); a failed download leaves no
    file and raises :class:`WeightsNotAvailable`.
    """
    import torch

    from cnnkit.models.checkpoint import check_full_pickle

    ul = ultralytics()
    threads = torch.get_num_threads()
    path = Path(weights)
    try:
        if str(weights).endswith(".yaml"):
            if path.is_file():
                _check_activation(_read_yaml(path).get("activation"), path)
            return ul.YOLO(str(path))
        if path.is_file():
            if path.suffix.lower() != ".pt":  # ultralytics' own rule (check_suffix), said before it asserts it
                raise CnnkitError(
                    f"{path}: ultralytics loads .pt files; a torchvision detector's state dict (.pth) needs its "
                    "architecture named with `model` (e.g. fasterrcnn_resnet50_fpn)"
                )
            check_full_pickle(path)
            return _checked(ul.YOLO(str(path)), path)
        cached = cached_weights(path.name)
        if cached is not None:
            check_full_pickle(cached)
            return _checked(ul.YOLO(str(cached)), cached)
        return _download(ul, path.name)
    except CnnkitError:
        raise
    except Exception as exc:  # a broken or foreign file that passed the scan: say which and why
        raise CnnkitError(f"{weights}: not a loadable ultralytics model ({reason_of(exc, 160)})") from exc
    finally:
        torch.set_num_threads(threads)


def _download(ul: Any, name: str) -> Any:
    """Download ``name`` through ultralytics into cnnkit's cache; a failure leaves nothing behind."""
    from cnnkit.models.checkpoint import check_full_pickle

    folder = cache_dir() / "ultralytics" / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    try:
        from ultralytics.utils.downloads import attempt_download_asset

        got = Path(attempt_download_asset(str(target)))
    except Exception as exc:
        target.unlink(missing_ok=True)
        reason = str(exc).splitlines()[0].lstrip("❌⚠️ ") if str(exc) else type(exc).__name__  # its emoji prefix
        raise WeightsNotAvailable(
            f"{name}: ultralytics weights are not cached in {folder} and could not be downloaded "
            f"({reason[:160]}); connect once to download them, or pass a local .pt file"
        ) from exc
    check_full_pickle(got)
    return _checked(ul.YOLO(str(got)), got)


def _read_yaml(path: Path, kind: str = "model") -> dict[str, Any]:
    """A ``kind`` yaml as a dict (empty when it is not a mapping), read safely, or a one-line error."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CnnkitError(f"{path}: not a readable {kind} yaml ({reason_of(exc, 160)})") from exc
    return data if isinstance(data, dict) else {}


def detection_only(model: Any, where: str | Path) -> Any:
    """``model`` when it is a detection model (cnnkit's ultralytics tasks are detect and track), judged by the
    network's own class: a file saved without ``train_args`` is called "detect" whatever it holds, and a -cls or
    -seg network then gave a traceback mid-run or an export stamped detect."""
    from cnnkit.models.checkpoint import ULTRALYTICS_KINDS

    net = getattr(model, "model", None)
    task = next((ULTRALYTICS_KINDS[c.__name__] for c in type(net).__mro__ if c.__name__ in ULTRALYTICS_KINDS), "detect")
    if task != "detect":
        raise CnnkitError(
            f"{where}: an ultralytics {task} model file, which cnnkit does not run (it runs ultralytics detection "
            "models, with `cnnkit detect`)"
        )
    return model


def _checked(model: Any, where: Path) -> Any:
    """``model`` once the architecture it carries (rebuilt from it when training starts) is plain data."""
    spec = getattr(getattr(model, "model", None), "yaml", None)
    if isinstance(spec, dict):
        _check_activation(spec.get("activation"), where)
    return model


def _check_activation(act: Any, where: Path) -> None:
    """A model's ``activation`` must be ``nn.Name(literals)``: ultralytics < 8.4 ``eval``s it when it builds the model."""
    import ast

    if act is None:
        return
    try:
        call = ast.parse(str(act), mode="eval").body
        if not isinstance(call, ast.Call):
            raise TypeError
        node, names = call.func, []
        while isinstance(node, ast.Attribute):
            names.append(node.attr)
            node = node.value
        if not (
            isinstance(node, ast.Name)
            and [*names[1:], node.id] in (["nn"], ["nn", "torch"])
            and not names[0].startswith("_")
        ):
            raise ValueError
        for arg in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(arg)
    except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError):
        raise UnsafeCheckpoint(
            f"{where}: refused, its model activation {str(act)[:60]!r} is code, not nn.Name(...)"
        ) from None


# ultralytics' trainer reports to these services when their packages are installed (SETTINGS default True):
# W&B, Comet and ClearML send runs over the network, MLflow writes ./mlruns, Ray Tune warns every epoch outside
# a tuning session. cnnkit never phones home, so its runs leave them off; TensorBoard writes only into the run.
REPORTERS = ("clearml", "comet", "dvc", "mlflow", "raytune", "wandb")


def resume(last: str | Path) -> tuple[Any, dict[str, Any]]:
    """An ``ultralytics.YOLO`` for ``last`` and the ``train`` arguments that resume its run safely.

    ultralytics reads more than ``last.pt`` on resume: the run folder the checkpoint names
    (its ``train_args.save_dir``), whose ``best.pt`` it unpickles whole when training ends.
    So the run folder is pinned to the one ``last.pt`` lies in, and every ``.pt`` in its
    ``weights`` folder passes the scan first.
    """
    from cnnkit.models.checkpoint import check_full_pickle

    last = Path(last)
    run = last.parent.parent if last.parent.name == "weights" else last.parent
    for other in sorted((run / "weights").glob("*.pt")):
        if other.resolve() != last.resolve():
            check_full_pickle(other)
    model = yolo(last)
    found = getattr(model, "ckpt", None)
    ckpt: dict[str, Any] = found if isinstance(found, dict) else {}
    if ckpt.get("epoch") == -1 or ("optimizer" in ckpt and ckpt["optimizer"] is None):
        # ultralytics would start a new run of its default length in this folder, over its best.pt
        epochs = (ckpt.get("train_args") or {}).get("epochs", "its")
        raise UsageError(f"{last}: training to {epochs} epochs is finished; nothing to resume (start a new run)")
    return model, {"resume": True, "save_dir": str(run.resolve())}


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


def restore_threads_callback(threads: int) -> Callable[[Any], None]:
    """A trainer callback that sets torch's threads back after ultralytics' ``select_device``."""

    def _cb(_trainer: Any) -> None:
        import torch

        torch.set_num_threads(threads)

    return _cb


__all__ = [
    "cache_dir",
    "cached_weights",
    "device_arg",
    "quiet",
    "restore_threads_callback",
    "resume",
    "safe_load",
    "ultralytics",
    "yolo",
]


TRACKERS = ("bytetrack", "botsort", "shapes-bytetrack")  # by name; any ultralytics tracker yaml also works


def tracker_config(name: str, **overrides: Any) -> Any:
    """An ultralytics tracker's settings: ``bytetrack``/``botsort`` (its bundled yaml), cnnkit's own
    (``shapes-bytetrack``, in ``cnnkit/tasks/track/trackers``) or a yaml file of one, with ``overrides``
    on top (e.g. ``gmc_method="none"``)."""
    from cnnkit.errors import OptionError

    ultralytics()
    from ultralytics.trackers.track import TRACKER_MAP
    from ultralytics.utils import ROOT, IterableSimpleNamespace

    own = Path(__file__).parent / "tasks" / "track" / "trackers" / f"{name}.yaml"
    path = (
        Path(name)
        if name.endswith((".yaml", ".yml"))
        else own
        if own.is_file()
        else ROOT / "cfg" / "trackers" / f"{name}.yaml"
    )
    if not path.is_file():
        raise OptionError("tracker", f"not {', '.join(TRACKERS)} nor a tracker yaml file", name)
    try:
        cfg = _read_yaml(path, "tracker")
    except CnnkitError as exc:  # a usage error like any other bad --tracker
        raise OptionError("tracker", str(exc).partition(": ")[2], name) from exc
    kind = cfg.get("tracker_type")
    if kind not in TRACKER_MAP:
        raise OptionError("tracker", f"tracker_type {kind!r} is not one of {sorted(TRACKER_MAP)}", name)
    from cnnkit.tasks.track import rematch

    defaults = {**_read_yaml(ROOT / "cfg" / "trackers" / f"{kind}.yaml"), **rematch.SETTINGS}
    cfg = {**defaults, **cfg, **overrides}
    for key, value in cfg.items():  # the tracker reads these as they come: a bad one fails here, named
        if key not in defaults:
            raise OptionError(
                "tracker", f"unknown setting {key!r} (not in ultralytics' {kind}.yaml nor cnnkit's rematch_*)", name
            )
        want = defaults[key]
        ok = (
            isinstance(value, bool)
            if isinstance(want, bool)
            else isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if isinstance(want, (int, float))
            else value is None or isinstance(value, type(want))
        )
        if ok and isinstance(want, int) and not isinstance(want, bool):  # a count (frames, steps): whole
            ok = float(value).is_integer() and value >= 0
        if ok and isinstance(want, float) and key.endswith("_thresh"):  # scores and IoUs
            ok = 0 <= value <= 1
        if not ok:
            raise OptionError("tracker", f"{key} must be like {want!r}, not {value!r}", name)
    if not (cfg["rematch_buffer"] >= 0 and 0 < cfg["rematch_iou"] <= 1):
        raise OptionError("tracker", "rematch_buffer must be 0 or more and rematch_iou above 0 and at most 1", name)
    if cfg.get("with_reid"):  # BoT-SORT would load its ReID model (maybe a download) and get no features from cnnkit
        raise OptionError(
            "tracker", "with_reid: True is not supported (cnnkit passes the tracker no appearance features)", name
        )
    made = IterableSimpleNamespace(**cfg)
    try:  # settings only the tracker's constructor checks (BoT-SORT's gmc_method) fail here, not on a first frame
        make_tracker(made)
    except Exception as exc:  # any ultralytics error here is the yaml's
        raise OptionError("tracker", f"ultralytics cannot make this tracker ({reason_of(exc)})", name) from None
    return made


def make_tracker(cfg: Any) -> Any:
    """A fresh ultralytics tracker (one per video) for the settings :func:`tracker_config` made; as in
    ``yolo track``, ``track_buffer`` counts frames read (after ``vid_stride``). With ``rematch_lost`` its lost
    tracks are also matched by where they were last seen (:mod:`cnnkit.tasks.track.rematch`)."""
    ultralytics()
    from ultralytics.trackers.track import TRACKER_MAP

    from cnnkit.tasks.track import rematch

    kind = TRACKER_MAP[cfg.tracker_type]
    return (rematch.tracker_class(kind) if cfg.rematch_lost else kind)(args=cfg)
