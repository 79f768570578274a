"""The one model resolver: ``--model``/``--weights``/``--backend`` → a model with its labels and preprocessing.

Every command (predict, val, finetune, export, summary, features, filters) asks :func:`resolve`, in the
spirit of timm's ``create_model`` and torchvision's weight enums. It accepts a registry name, a cnnkit
``.safetensors`` checkpoint, a plain state dict (``.pt``/``.pth``) for a registry architecture, an
ultralytics ``.pt`` or hub name, and an ONNX or TorchScript file from ``cnnkit export``. File kinds are
told apart here and nowhere else (:func:`sniff`); labels are read from torchvision's weight metadata here
and nowhere else (:func:`torchvision_labels`).

A task that needs its own rules (ultralytics files for ``detect``; ``--arch``/``--encoder`` for
``segment``) has ``resolve(model, weights, *, default, **options) -> Loaded | None`` in its ``zoo``
module; returning ``None`` hands the request back to the generic rules below.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeGuard

from cnnkit.errors import CnnkitError, OptionError, UsageError, reason_of
from cnnkit.models import hub
from cnnkit.models.checkpoint import check_meta, has_meta, load_state_dict, read_meta, weights_file
from cnnkit.models.kinds import BACKEND_FILES, BACKENDS, FILE_KINDS
from cnnkit.models.preprocess import Preprocess, sized
from cnnkit.models.registry import ModelSpec, get_spec, list_models

log = logging.getLogger("cnnkit")


@dataclass
class Loaded:
    """A model ready to run, with what it needs to be used correctly.

    ``runtime`` says what ``module`` is: ``torch`` (an ``nn.Module``), ``ultralytics`` (an
    ``ultralytics.YOLO``), or ``onnxruntime``/``torchscript`` (an ``nn.Module``-like wrapper of an
    exported file that predictors run unchanged).
    """

    module: Any
    name: str
    labels: list[str]
    preprocess: Preprocess | None
    spec: ModelSpec | None
    meta: dict[str, Any] = field(default_factory=dict)
    runtime: str = "torch"


def sniff(path: str | Path | None) -> str | None:
    """``checkpoint``, ``onnx``, ``torchscript`` or ``pickle`` for a weights path by its suffix; ``None`` otherwise."""
    if path is None:
        return None
    return FILE_KINDS.get(Path(path).suffix.lower())


def exported_among(*names: str | None) -> str | None:
    """The first of ``names`` that is an exported file (``.onnx``, ``.torchscript``): what commands that need the
    PyTorch layers (features, filters, explain) refuse."""
    return next((n for n in names if n and sniff(n) in BACKEND_FILES.values()), None)


def self_described(weights: str | None, model: str | None) -> TypeGuard[str]:
    """Whether ``weights`` is a cnnkit checkpoint that says its architecture and task; a ``.safetensors``
    without cnnkit metadata given with a ``model`` is a plain state dict for it, as a ``.pth`` is."""
    return weights is not None and sniff(weights) == "checkpoint" and (model is None or has_meta(weights))


def spec_for_family(family: str, task: str | None = None) -> ModelSpec:
    """The registry entry that builds architecture ``family`` (what a checkpoint's ``arch`` names)."""
    for spec in list_models(task=task):
        if spec.family == family:
            return spec
    raise CnnkitError(f"checkpoint names architecture {family!r}, which this cnnkit does not know")


def _unprefixed(state: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
    """``state`` with the one prefix every key shares taken off (``module.`` from DataParallel, ``model.`` from a
    Lightning module's attribute) when its keys are then the network's own, as timm's loader does; else as is."""
    if set(state) == wanted or not state:
        return state
    first = next(iter(state)).split(".", 1)[0] + "."
    if all(k.startswith(first) for k in state) and {k[len(first) :] for k in state} == wanted:
        return {k[len(first) :]: v for k, v in state.items()}
    return state


def load_into(module: Any, state: dict[str, Any], where: str, arch: str | None = None) -> None:
    """``module.load_state_dict(state, strict=True)``; a mismatch is a one-line error naming ``where`` (and ``arch``,
    the architecture a user's state dict, which names none, was tried as), and so are integers for a float parameter
    or buffer, which torch would cast to floats without a word. (NaN weights load: their scores are written as null,
    with a warning.)"""
    import torch

    state = _unprefixed(state, set(module.state_dict()))
    for name, own in module.state_dict().items():  # parameters and float buffers (BatchNorm's running stats)
        value = state.get(name)
        if isinstance(value, torch.Tensor) and own.is_floating_point() and not value.is_floating_point():
            raise CnnkitError(f"{where}: {name} holds {str(value.dtype).removeprefix('torch.')}, not floating point")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # torch's first line only names the class; the next says what does not fit
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        why = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0] if lines else ""
        more = f"; {len(lines) - 2} more" if len(lines) > 2 else ""
        tried = f"; tried as {arch}: name its architecture with `model`" if arch else ""
        raise CnnkitError(f"{where}: weights do not fit the architecture ({why[:240]}{more}){tried}") from exc


def load_checkpoint(path: str | Path, task: str) -> Loaded:
    """A cnnkit ``.safetensors`` checkpoint: architecture, labels and preprocessing inside."""
    meta = read_meta(path)
    if meta.get("task", task) != task:
        raise UsageError(f"{path}: a {meta.get('task')} checkpoint, not {task}")
    try:
        spec = spec_for_family(meta["arch"], task)
    except CnnkitError as exc:
        raise CnnkitError(f"{path}: {exc}") from None
    labels = list(meta["labels"])
    state = load_state_dict(path)
    _fits_the_file(spec, len(labels), meta, state, path)
    module = _built(spec, len(labels), meta, path)
    load_into(module, state, str(path))
    pre = Preprocess.from_dict(meta["preprocess"]) if meta.get("preprocess") else spec.preprocess
    name = meta.get("name") or Path(path).stem
    if task in ("classify", "segment") and pre is not None and pre != spec.preprocess:  # a side of its own
        check_runs_at(module, name, pre.crop, where=str(path))
    return Loaded(module, name, labels, pre, spec, meta)


def _built(spec: ModelSpec, classes: int, meta: dict[str, Any], path: str | Path) -> Any:
    """The network a checkpoint's metadata describes (on the current default device)."""
    try:
        return spec.builder(num_classes=classes, **(meta.get("arch_kwargs") or {}))
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # arch_kwargs from the file, not from cnnkit
        raise CnnkitError(f"{path}: its metadata's arch_kwargs do not build {meta['arch']} ({exc})") from exc


def _fits_the_file(
    spec: ModelSpec, classes: int, meta: dict[str, Any], state: dict[str, Any], path: str | Path
) -> None:
    """Build the network a checkpoint's metadata describes on the meta device (no memory) and refuse it when it
    holds more numbers than the file: a stranger's ``arch_kwargs`` would otherwise allocate (and initialise) it
    for real before the weights could fail to fit."""
    import torch

    try:
        with torch.device("meta"):
            shape = _built(spec, classes, meta, path)
    except CnnkitError:
        raise
    except Exception:  # a builder that computes on its tensors: built for real, as before
        return
    wanted = sum(t.numel() for t in shape.state_dict().values())
    held = sum(t.numel() for t in state.values() if isinstance(t, torch.Tensor))
    if wanted > held:
        raise CnnkitError(
            f"{path}: its metadata builds a {meta['arch']} of {wanted:,} numbers, the file holds {held:,}"
        )


def torchvision_labels(spec: ModelSpec) -> list[str]:
    """Category names from a torchvision weight enum's ``meta`` (no download).

    Detection and instance heads add the background class themselves, so a leading
    ``__background__`` is dropped for them; segmenters keep it as class 0.
    """
    from cnnkit.tasks import get_task

    cats = list(hub.torchvision_weights(spec.weights_name).meta["categories"])
    if cats and cats[0] == "__background__" and not get_task(spec.task).background_is_a_class:
        cats = cats[1:]
    return cats


def spec_labels(spec: ModelSpec) -> list[str]:
    """The labels an entry's trained weights predict: its own, else torchvision's metadata."""
    if spec.labels is not None:
        return list(spec.labels)
    if spec.source == "torchvision":
        return torchvision_labels(spec)
    return []


def head_classes(state: dict[str, Any]) -> int | None:
    """How many labels a state dict's head predicts (R-CNN box head without background, segmentation
    heads' output channels, else the last 2-D weight: a classifier)."""
    cls_score = state.get("roi_heads.box_predictor.cls_score.weight")
    if cls_score is not None:
        return int(cls_score.shape[0]) - 1
    for key in reversed(list(state)):
        v = state[key]
        if (
            key.endswith("weight")
            and getattr(v, "ndim", 0) == 4
            and key.startswith(("segmentation_head", "classifier.4"))
        ):
            return int(v.shape[0])
    for key in reversed(list(state)):
        v = state[key]
        if key.endswith("weight") and getattr(v, "ndim", 0) == 2:
            return int(v.shape[0])
    return None


def _from_state_dict(spec: ModelSpec, weights: str) -> Loaded:
    """A plain state dict for a registry architecture; a head of another size gets ``class_i`` labels.

    A state dict records no preprocessing: the entry's is used, unless a timm ``config.json`` lies beside the
    file (the Hugging Face layout timm publishes), whose ``pretrained_cfg`` and ``label_names`` are read."""
    state = load_state_dict(weights)
    labels = spec_labels(spec)
    head = head_classes(state)
    if head and head != len(labels):
        labels = [f"class_{i}" for i in range(head)]
    module = spec.builder(num_classes=len(labels), **spec.meta.get("arch_kwargs", {}))
    _as_torchvision_builds(spec, module)
    load_into(module, state, weights, arch=spec.name)
    preprocess, named = _timm_config(weights) if spec.task == "classify" else (None, None)
    if named is not None and len(named) == len(labels):
        labels = named
    if preprocess is None:
        preprocess = spec.preprocess or _torchvision_preprocess(spec)
        if preprocess is not None:
            log.info(
                "%s: a state dict records no preprocessing; %s's is used (%s)",
                weights,
                spec.name,
                preprocess.describe(),
            )
    return Loaded(module, spec.name, labels, preprocess, spec, {})


def _timm_names(data: dict[str, Any]) -> list[str] | None:
    """timm's ``label_names`` (a list, or a dict by index), read as their ``label_descriptions`` say them
    (ImageNet synsets ``n01440764`` → ``tench``: the description's first name)."""
    names = data.get("label_names")
    if isinstance(names, dict):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError):
            raise ValueError("label_names is an object whose keys are not class indices") from None
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError("label_names is not a list of names")
    said = data.get("label_descriptions")
    if isinstance(said, dict):
        names = [str(said[n]).split(",")[0].strip() or n if isinstance(said.get(n), str) else n for n in names]
    return names


def _timm_config(weights: str) -> tuple[Preprocess | None, list[str] | None]:
    """The preprocessing and class names of timm's ``config.json`` beside ``weights`` (``pretrained_cfg``,
    ``label_names``); ``(None, None)`` when there is none or it is another library's."""
    import json

    config = Path(weights).with_name("config.json")
    if not config.is_file():
        return None, None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
        cfg = data.get("pretrained_cfg") if isinstance(data, dict) else None
        if not isinstance(cfg, dict):
            return None, None
        names = _timm_names(data)
        if names is not None:  # names from anyone: the checks every checkpoint's labels pass
            check_meta({"labels": names}, config)
        return Preprocess.from_timm(cfg), names
    except (OSError, ValueError, TypeError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CnnkitError(f"{config}: not a readable timm config ({reason_of(exc, 120)})") from None


def _as_torchvision_builds(spec: ModelSpec, module: Any) -> None:
    """A torchvision R-CNN built as torchvision builds it for its COCO weights (frozen BatchNorm), whether the
    file comes from the cache or from ``weights``: the same file, the same network."""
    if spec.source == "torchvision" and spec.task in ("detect", "instance"):
        from cnnkit.models.entries import as_pretrained_rcnn

        as_pretrained_rcnn(module, spec.name)


def _torchvision_preprocess(spec: ModelSpec) -> Preprocess | None:
    """A torchvision classifier's preset (resize, crop, mean, std); other tasks' presets have no crop."""
    if spec.source != "torchvision":
        return None
    tv = hub.torchvision_weights(spec.weights_name)
    return Preprocess.from_torchvision(tv) if hasattr(tv.transforms(), "crop_size") else None


def _registry(spec: ModelSpec, weights: str | None) -> Loaded:
    """A registry entry with its own trained weights, or with a state dict from ``weights``."""
    if weights is not None:
        return _from_state_dict(spec, weights)
    if spec.source == "bundled":
        path = hub.bundled_path(spec.weights_name)
        if not path.is_file():
            raise CnnkitError(
                f"{spec.name}: bundled weights {path} are missing from this install "
                "(retrain with the script named in its model card, or pass weights)"
            )
        loaded = load_checkpoint(path, spec.task)
        loaded.name = spec.name
        return loaded
    if spec.source == "torchvision":
        state = hub.torchvision_state_dict(spec.name, spec.weights_name)  # before building: offline fails fast
        labels = torchvision_labels(spec)
        module = spec.builder(num_classes=len(labels), **spec.meta.get("arch_kwargs", {}))
        _as_torchvision_builds(spec, module)
        try:
            load_into(module, state, spec.name)
        except CnnkitError as exc:  # another model's weights under this name: the file is to blame, not the model
            cached = hub.torchvision_cache_file(hub.torchvision_weights(spec.weights_name))
            raise CnnkitError(f"{cached}: {exc} (delete it to download it again)") from None
        return Loaded(module, spec.name, labels, spec.preprocess or _torchvision_preprocess(spec), spec, {})
    raise CnnkitError(f"{spec.name}: no trained weights are known; pass weights (a state dict or checkpoint)")


def resolve_backend(backend: str | None, weights: str | None) -> str:
    """``None`` runs an exported file with its runtime (``.onnx`` → onnxruntime) and anything else with torch;
    ``auto`` runs a ``.onnx`` on OpenVINO when installed (INT8 files from ``export --int8`` run 2.4× faster there
    than on onnxruntime on an AVX2 CPU, ``benchmarks/README.md``; :func:`resolve` keeps those of free input size
    on onnxruntime), other exported files like ``None``."""
    if backend is not None and backend not in BACKENDS:
        raise OptionError("backend", f"expected {', '.join(BACKENDS[:-1])} or {BACKENDS[-1]}", backend)
    kind = sniff(weights)
    if backend == "torch" and kind in BACKEND_FILES.values():
        raise OptionError(
            "backend",
            f"runs PyTorch weights; {weights} is an exported file (onnxruntime, openvino or torchscript run it)",
            backend,
        )
    if backend == "auto" and kind == "onnx":
        from cnnkit.runtimes import installed

        return "openvino" if installed("openvino") else "onnxruntime"
    if backend is None or (backend == "auto" and kind in BACKEND_FILES.values()):
        return next((b for b, k in BACKEND_FILES.items() if k == kind), "torch")
    return backend


def resolve(
    task: str,
    model: str | None = None,
    weights: str | None = None,
    *,
    backend: str | None = None,
    default: str | None = None,
    device: Any = None,
    imgsz: int | None = None,
    **options: Any,
) -> Loaded:
    """The model for ``task`` that ``model``/``weights``/``backend`` name; see the module docstring.

    ``default``: the registry name used when neither ``model`` nor ``weights`` is given (the
    task's bundled model unless said). ``options`` are the task's own model options
    (``arch``/``encoder`` for segment), passed to its ``zoo.resolve``; ``None`` values are unset.

    ``backend``: ``None`` gives the PyTorch module (what training, export and summary need) or an
    exported file's own runtime; ``auto`` (what predictors use) compiles the model for a faster CPU
    runtime where one takes it (:mod:`cnnkit.runtimes`), on ``device`` (``None``: the auto device)
    at ``imgsz`` (the YOLO letterbox side; a model with preprocessing gets it rescaled to that input
    side first, :func:`at_input_size`); a runtime name forces that runtime, compiling the model when
    ``weights`` is not already an exported file.
    """
    from cnnkit.tasks import get_task

    row = get_task(task)
    default = default or row.default_model
    options = {k: v for k, v in options.items() if v is not None}
    if model is not None and sniff(model) in ("checkpoint", *BACKEND_FILES.values()) and weights is None:
        model, weights = None, model  # a checkpoint or exported file named as the model is the weights
    chosen = resolve_backend(backend, weights)
    if chosen in BACKEND_FILES and sniff(weights) in BACKEND_FILES.values():
        if backend == "auto" and chosen == "openvino" and _openvino_may_differ(str(weights_file(str(weights)))):
            chosen = "onnxruntime"  # told before compiling: OpenVINO's compile of such a file was thrown away
        exported = _exported(task, weights, chosen, options)
        if model is not None and model != exported.name:  # the file says what it is, as a checkpoint does
            log.warning("%s holds %s; `model` %s is not used", weights, exported.name, model)
        return at_input_size(exported, imgsz)
    backend = chosen
    # sized before compiling: the runtime is traced once, at the side it will run at (part of its cache key)
    loaded = at_input_size(_torch_model(task, row.package, model, weights, default, options), imgsz)
    if imgsz and task == "classify" and loaded.preprocess is not None:
        check_runs_at(loaded.module, loaded.name, loaded.preprocess.crop)
    if backend == "torch":
        return loaded
    from cnnkit.runtimes import compile_loaded

    return compile_loaded(loaded, task, backend, device=device, imgsz=imgsz)


def at_input_size(loaded: Loaded, imgsz: int | None) -> Loaded:
    """``loaded`` with its preprocessing for inputs of side ``imgsz`` (``None``: its own), rescaled as finetune
    and export rescale theirs; an architecture with one input size, or an exported file traced at one,
    refuses another. A model without preprocessing (YOLO letterboxes, R-CNNs resize) is unchanged."""
    pre = loaded.preprocess
    if not imgsz or pre is None or imgsz == pre.crop:
        return loaded
    if loaded.runtime in BACKEND_FILES:
        raise OptionError(
            "imgsz", f"{loaded.name} was exported for {pre.crop}x{pre.crop} inputs; export it again at this size", imgsz
        )
    fixed = loaded.spec.meta.get("fixed_size") if loaded.spec is not None else None
    return replace(loaded, preprocess=sized(pre, imgsz, name=loaded.name, fixed=fixed))


def check_runs_at(module: Any, name: str, side: int, where: str | None = None) -> None:
    """Run a classifier (or segmenter) once at the input side asked for, so a side its layers cannot take (pooled
    down to 0x0, a fixed-size head) is one line here rather than a traceback on every batch (predicting or
    training), or a runtime compile remembered as failed. ``where``: the checkpoint whose preprocessing asks for
    that side (else it is the ``imgsz`` option's)."""
    import torch

    # above 576 px, a side of the same remainder mod 64 (a stride or patch size still divides it or not): a
    # real pass at 8192 px held 24 GB of activations, and a side that large is never the one too small
    probe = side if side <= 576 else 512 + side % 64
    try:
        with torch.inference_mode():
            module.eval()(torch.zeros(1, 3, probe, probe))
    except (RuntimeError, AssertionError) as exc:  # torchvision's ViT asserts its size
        if where is not None:
            raise CnnkitError(
                f"{where}: its preprocessing asks for {side}x{side} inputs, which {name} cannot run "
                f"({reason_of(exc, 160)})"
            ) from exc
        raise OptionError("imgsz", f"{name} cannot run on a {side}x{side} input ({reason_of(exc, 160)})", side) from exc


def _torch_model(
    task: str, package: str, model: str | None, weights: str | None, default: str, options: dict[str, Any]
) -> Loaded:
    """The PyTorch (or ultralytics) model: a checkpoint, the task's own rules, else the registry (a
    ``.safetensors`` without cnnkit metadata is a plain state dict for ``model``, as a ``.pth`` is)."""
    if self_described(weights, model):
        loaded = load_checkpoint(weights, task)
        if model is not None and model != loaded.name:  # the checkpoint says what it is: `model` cannot
            log.warning("%s holds %s; `model` %s is not used", weights, loaded.name, model)
        return loaded
    hook = getattr(importlib.import_module(f"{package}.zoo"), "resolve", None)
    if hook is not None:
        found = hook(model, weights, default=default, **options)
        if found is not None:
            return found
    if options:
        raise OptionError(tuple(options), f"not an option of {task} models")
    return _registry(get_spec(model or default, task), weights)


def _openvino_may_differ(path: str) -> bool:
    """An INT8 ONNX file (``export --int8``) whose input takes any height and width: OpenVINO's output for such a
    file is not what ``export --int8`` scored with ONNX Runtime (2026-12-02, on 5 val scenes at 128 px: the bundled
    U-Net's INT8 file scored mIoU 0.59 on OpenVINO against 0.63, DeepLabV3+'s 0.82 against 0.94), so ``auto`` runs
    it on ONNX Runtime. Read from the file's graph and metadata, nothing compiled; a file that cannot be read so
    is left to the loader, which says why."""
    import onnx

    from cnnkit.export import METADATA_KEY
    from cnnkit.models.checkpoint import parse_meta

    try:
        proto = onnx.load(path, load_external_data=False)
        raw = next((p.value for p in proto.metadata_props if p.key == METADATA_KEY), None)
        precision = parse_meta(raw, path).get("precision") if raw is not None else None
        hw = proto.graph.input[0].type.tensor_type.shape.dim[2:4]
    except Exception:  # any damage is the loader's to report, with its own message
        return False
    return precision == "int8" and not (len(hw) == 2 and all(d.HasField("dim_value") for d in hw))


def _exported(task: str, weights: str | None, backend: str, options: dict[str, Any]) -> Loaded:
    """A file from ``cnnkit export`` run by ``backend``; model options are the file's own."""
    from cnnkit.export import load_exported

    if options:
        raise OptionError(tuple(options), f"not for an exported file ({weights} carries its own model)")
    assert weights is not None  # resolve() routes only exported files here
    loaded = load_exported(weights, task, backend)
    loaded.runtime = backend
    return loaded


def identify(target: str, task: str | None = None) -> tuple[str, ModelSpec | None, dict[str, Any]]:
    """What ``target`` (a registry name or a model file) is, without loading weights: ``(task, spec, meta)``.

    ``summary`` and ``export`` use it; a file of a kind that does not say its task needs ``task``.
    """
    kind = sniff(target)
    if kind != "checkpoint" and not Path(target).is_file():
        from cnnkit.models.registry import find_spec

        spec = find_spec(target, task)
        if spec is not None:  # a registry name that looks like a file (``yolov8n.pt``)
            return spec.task, spec, {}
    if kind == "checkpoint":
        if not Path(target).is_file():
            raise UsageError(f"{target}: checkpoint not found")
        meta = read_meta(target)
        own = str(meta.get("task") or task or "classify")
        if task is not None and task != own:  # the file says what it is, as a predictor reading it says
            raise UsageError(f"{target}: a {own} checkpoint, not {task}")
        return own, spec_for_family(meta["arch"], own), meta
    if kind == "pickle" and task is None:
        return "detect", None, {}  # ultralytics checkpoints stay .pt; cnnkit's own are .safetensors
    if kind is not None or Path(target).is_file():
        if task is None:
            raise OptionError("task", f"needed to say what kind of model {target} holds")
        return task, None, {}
    spec = get_spec(target, task)  # an unknown name raises, naming the closest known one
    return spec.task, spec, {}
