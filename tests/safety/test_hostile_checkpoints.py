"""Hostile checkpoints and model files: none runs code, and every bad one is a one-line ``Error:``.

The crafted pickles carry a live payload (``touch MARKER`` or writing MARKER) and each test
asserts the marker never appears. The bypasses of the old prefix scan (a dotted global, a name
taken from the memo, a pickle in front of a torch zip, the legacy format) are among them; the
real ultralytics checkpoints (the bundled one, fresh ones of several families) must still load.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import CnnkitError, UnsafeCheckpoint
from cnnkit.models.checkpoint import check_full_pickle
from tests.fixtures.segment import TINY

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
BUNDLED_YOLO = REPO / "cnnkit" / "weights" / "shapes-yolov8n.pt"


# ---------------------------------------------------------------- a tiny pickle assembler


def su(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def bu(s: str) -> bytes:  # BINUNICODE
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def glob(module: str, name: str) -> bytes:  # GLOBAL
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def put(i: int) -> bytes:
    return b"q" + bytes([i])


def get(i: int) -> bytes:
    return b"h" + bytes([i])


P2, P4 = b"\x80\x02", b"\x80\x04"
STACK_GLOBAL, TUPLE1, TUPLE2, TUPLE3, REDUCE, POP, STOP = b"\x93", b"\x85", b"\x86", b"\x87", b"R", b"0", b"."


def call_system(marker: Path) -> bytes:
    """``(command,) REDUCE``: calls whatever global is on the stack with ``touch MARKER``."""
    return bu(f"touch {marker}") + TUPLE1 + REDUCE


def torch_zip_bytes() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    return buf.getvalue()


class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def as_torch_zip(path: Path, data_pkl: bytes) -> Path:
    """``data_pkl`` as the data.pkl of a zip laid out exactly as torch.save writes one: torch.load unpickles it."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/.format_version", "1")
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
    return path


# Crafted data.pkl streams: name → (builder(marker) → bytes, what the refusal says, whether it runs code live).
def dotted_global(marker: Path) -> bytes:
    """Protocol 4 resolves dotted names: ``ultralytics.utils`` + ``os.system`` is os.system."""
    return P4 + su("ultralytics.utils") + su("os.system") + STACK_GLOBAL + call_system(marker) + STOP


def torch_os_system(marker: Path) -> bytes:
    """``torch.nn.modules.module`` + ``torch.os.system`` passed the old ``torch.nn.modules.`` prefix."""
    return P4 + su("torch.nn.modules.module") + su("torch.os.system") + STACK_GLOBAL + call_system(marker) + STOP


def dotted_plain_global(marker: Path) -> bytes:
    """The same through the GLOBAL opcode (protocol 4 resolves dots there too)."""
    return P4 + glob("torch.nn.modules.conv", "torch.os.system") + call_system(marker) + STOP


def memo_names(marker: Path) -> bytes:
    """STACK_GLOBAL's strings come from the memo; the last two literal strings are harmless decoys."""
    return (
        P4
        + su("os")
        + put(0)
        + POP
        + su("system")
        + put(1)
        + POP
        + su("torch.nn.modules.conv")
        + POP
        + su("Conv2d")
        + POP
        + get(0)
        + get(1)
        + STACK_GLOBAL
        + call_system(marker)
        + STOP
    )


def memo_overwrite(marker: Path) -> bytes:
    """Memo slots first hold a layer's name, then BINPUT overwrites them with os/system."""
    return (
        P4
        + su("torch.nn.modules.conv")
        + put(0)
        + POP
        + su("Conv2d")
        + put(1)
        + POP
        + su("os")
        + put(0)
        + POP
        + su("system")
        + put(1)
        + POP
        + su("torch.nn.modules.conv")
        + POP
        + su("Conv2d")
        + POP
        + get(0)
        + get(1)
        + STACK_GLOBAL
        + call_system(marker)
        + STOP
    )


def builtins_eval(marker: Path) -> bytes:
    return P2 + glob("builtins", "eval") + bu(f"open({str(marker)!r}, 'w').close()") + TUPLE1 + REDUCE + STOP


def popen_via_memo(marker: Path) -> bytes:
    """subprocess.Popen put in the memo early, called much later through BINGET."""
    return (
        P2
        + glob("subprocess", "Popen")
        + put(0)
        + POP
        + glob("collections", "OrderedDict")
        + POP
        + get(0)
        + b"]"
        + b"("
        + bu("touch")
        + bu(str(marker))
        + b"e"
        + TUPLE1
        + REDUCE
        + STOP
    )


def builtin_getattr(marker: Path) -> bytes:
    """``__builtin__.getattr(__import__('os'), 'system')`` (protocol 2 maps __builtin__ to builtins)."""
    return (
        P2
        + glob("__builtin__", "getattr")
        + glob("__builtin__", "__import__")
        + bu("os")
        + TUPLE1
        + REDUCE
        + bu("system")
        + TUPLE2
        + REDUCE
        + call_system(marker)
        + STOP
    )


def getattr_on_a_layer_class(marker: Path) -> bytes:
    """getattr on an allow-listed *class* (not a layer instance), for something other than forward."""
    return (
        P2
        + glob("builtins", "getattr")
        + glob("torch.nn.modules.conv", "Conv2d")
        + bu("__init__")
        + TUPLE2
        + REDUCE
        + STOP
    )


def copyreg_reconstructor(marker: Path) -> bytes:
    return (
        P2
        + glob("copy_reg", "_reconstructor")
        + glob("torch.nn.modules.conv", "Conv2d")
        + glob("torch.nn.modules.module", "Module")
        + b"N"
        + TUPLE3
        + REDUCE
        + STOP
    )


def ext_opcode(marker: Path) -> bytes:
    """EXT1 names a global through the copyreg extension registry, which the scan cannot see."""
    return P2 + b"\x82\x01" + call_system(marker) + STOP


def torch_utils_function(marker: Path) -> bytes:
    """``torch._utils._import_dotted_name('os.system')``: a torch._utils function outside the list."""
    return (
        P2
        + glob("torch._utils", "_import_dotted_name")
        + bu("os.system")
        + TUPLE1
        + REDUCE
        + call_system(marker)
        + STOP
    )


def inst_opcode(marker: Path) -> bytes:
    return b"(" + bu(f"touch {marker}") + b"ios\nsystem\n" + STOP


def layer_init_call(marker: Path) -> bytes:
    """REDUCE calls an allow-listed layer class, i.e. its __init__ with arguments from the file."""
    return P2 + glob("ultralytics.nn.tasks", "DetectionModel") + bu(str(marker) + ".yaml") + TUPLE1 + REDUCE + STOP


def build_on_a_class(marker: Path) -> bytes:
    """BUILD on an allow-listed class itself would set class attributes (monkeypatching a layer type)."""
    return (
        P2
        + glob("torch.nn.modules.conv", "Conv2d")
        + b"N"
        + b"}"
        + su("forward")
        + glob("builtins", "set")
        + b"s"
        + TUPLE2
        + b"b"
        + STOP
    )


PICKLES: dict[str, tuple[Callable[[Path], bytes], str, bool]] = {
    "dotted_global": (dotted_global, "not two plain names", True),
    "torch_os_system": (torch_os_system, "not two plain names", True),
    "dotted_plain_global": (dotted_plain_global, "not two plain names", True),
    "memo_names": (memo_names, "import os.system", True),
    "memo_overwrite": (memo_overwrite, "import os.system", True),
    "builtins_eval": (builtins_eval, "import builtins.eval", True),
    "popen_via_memo": (popen_via_memo, "import subprocess.Popen", False),
    "builtin_getattr": (builtin_getattr, "import builtins.__import__", True),
    "getattr_on_a_layer_class": (getattr_on_a_layer_class, "getattr on something other than a layer", False),
    "copyreg_reconstructor": (copyreg_reconstructor, "import copyreg._reconstructor", False),
    "ext_opcode": (ext_opcode, "EXT1", False),
    "torch_utils_function": (torch_utils_function, "import torch._utils._import_dotted_name", True),
    "inst_opcode": (inst_opcode, "import os.system", True),
    "layer_init_call": (layer_init_call, "call ultralytics.nn.tasks.DetectionModel", False),
    "build_on_a_class": (build_on_a_class, "BUILD sets the state of something", False),
}


# Crafted files whose layout is the attack: name → (writer(path, marker), what the refusal says).
def pickle_then_zip(path: Path, marker: Path) -> None:
    """A pickle followed by a benign torch zip: zipfile reads the end, torch.load the start."""
    path.write_bytes(P2 + glob("os", "system") + call_system(marker) + STOP + torch_zip_bytes())
    assert zipfile.is_zipfile(path)


def second_pkl_in_zip(path: Path, marker: Path) -> None:
    """A benign torch zip with a second pickle entry beside data.pkl."""
    path.write_bytes(torch_zip_bytes())
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("archive/extra.pkl", P2 + glob("os", "system") + call_system(marker) + STOP)


def evil_in_torch_zip(path: Path, marker: Path) -> None:
    import torch

    torch.save({"model": Evil(marker)}, path)


def legacy_format(path: Path, marker: Path) -> None:
    """PyTorch's pre-1.6 format: several pickles in a row; the old scan read only the first."""
    import torch

    torch.save({"model": Evil(marker)}, path, _use_new_zipfile_serialization=False)


def junk_before_zip(path: Path, marker: Path) -> None:
    """A zip that does not start at byte 0 (torch would unpickle the start)."""
    path.write_bytes(b"JUNK" + torch_zip_bytes())


def zip_after_zip(path: Path, marker: Path) -> None:
    """A benign torch zip followed by one whose data.pkl runs code: zipfile and torch read the second."""
    evil = as_torch_zip(path.with_suffix(".evil"), P2 + glob("os", "system") + call_system(marker) + STOP)
    path.write_bytes(torch_zip_bytes() + evil.read_bytes())


def bare_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(P2 + glob("os", "system") + call_system(marker) + STOP)


def two_data_pkl(path: Path, marker: Path) -> None:
    """Two data.pkl entries: which one a zip reader takes is not something to bet on."""
    path.write_bytes(torch_zip_bytes())
    with zipfile.ZipFile(path, "a") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("archive/data.pkl", P2 + glob("os", "system") + call_system(marker) + STOP)


LAYOUTS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "pickle_then_zip": (pickle_then_zip, "bare pickle stream (and a zip at its end)"),
    "second_pkl_in_zip": (second_pkl_in_zip, "zip entry torch.save never writes"),
    "evil_in_torch_zip": (evil_in_torch_zip, "import posix.system"),
    "legacy_format": (legacy_format, "legacy (pre-1.6) format"),
    "junk_before_zip": (junk_before_zip, "does not start with a zip entry"),
    "zip_after_zip": (zip_after_zip, "other bytes before its first entry"),
    "bare_pickle": (bare_pickle, "bare pickle stream"),
    "two_data_pkl": (two_data_pkl, "duplicate entries"),
}


def crafted(name: str, folder: Path, marker: Path) -> Path:
    """The crafted file ``name``: a PICKLES stream inside a torch zip, or a LAYOUTS file."""
    path = folder / f"{name}.pt"
    if name in PICKLES:
        return as_torch_zip(path, PICKLES[name][0](marker))
    LAYOUTS[name][0](path, marker)
    return path


ALL_CRAFTED = [*PICKLES, *LAYOUTS]


def one_line_error(result, path: Path | str) -> str:
    """The command failed with exactly one ``Error:`` line naming ``path``, and no traceback."""
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert str(path) in errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def ultralytics_ready():
    from cnnkit import ultralytics_adapter

    return ultralytics_adapter.ultralytics()


# ---------------------------------------------------------------- the scan and the detect CLI


@pytest.mark.parametrize("name", ALL_CRAFTED)
def test_scan_refuses_crafted_pickle(name, tmp_path, ultralytics_ready):
    marker = tmp_path / "MARKER"
    path = crafted(name, tmp_path, marker)
    reason = PICKLES[name][1] if name in PICKLES else LAYOUTS[name][1]
    with pytest.raises(UnsafeCheckpoint, match="refused") as info:
        check_full_pickle(path)
    assert reason in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ALL_CRAFTED)
def test_a_crafted_state_dict_for_a_named_architecture_is_refused(name, tmp_path, rgb_image):
    """The state-dict path (``--model ARCH --weights FILE.pt``) refuses every crafted file in one line, and never
    repeats torch's advice to load it with ``weights_only=False`` (the unsafe step)."""
    marker = tmp_path / "MARKER"
    path = crafted(name, tmp_path, marker)
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", "shapes-cnn", "--weights", str(path)])
    line = one_line_error(result, path)
    harmless = name == "second_pkl_in_zip"  # torch's weights-only load never reads the second pickle
    assert ("weights do not fit" if harmless else "refused") in line and "weights_only" not in line
    assert not marker.exists()


def test_zip64_checkpoints_pass_and_a_zip_after_a_zip_does_not(tmp_path):
    """torch.save always writes ZIP64 end records, whose place Python releases read differently (3.12 on a GPU
    host refused the bundled YOLO); the check asks zipfile itself. Real checkpoints pass, a second zip does not."""
    import torch

    from cnnkit.models.checkpoint import torch_zip_pickle
    from cnnkit.models.hub import WEIGHTS_DIR

    bundled = WEIGHTS_DIR / "shapes-yolov8n.pt"
    with open(bundled, "rb") as f:
        assert zipfile._EndRecData(f)[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64
    assert torch_zip_pickle(bundled)
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    assert torch_zip_pickle(tmp_path / "plain.pt")
    zip_after_zip(tmp_path / "two.pt", tmp_path / "MARKER")
    with pytest.raises(UnsafeCheckpoint, match="other bytes before its first entry"):
        check_full_pickle(tmp_path / "two.pt")


@pytest.mark.parametrize("name", ALL_CRAFTED)
def test_detect_cli_refuses_crafted_pickle(name, tmp_path, rgb_image, ultralytics_ready):
    marker = tmp_path / "MARKER"
    path = crafted(name, tmp_path, marker)
    result = runner.invoke(app, ["detect", str(rgb_image), "--weights", str(path)])
    assert "refused" in one_line_error(result, path)
    assert not marker.exists()


@pytest.mark.parametrize("name", [n for n, (_, _, live) in PICKLES.items() if live] + ["pickle_then_zip"])
def test_the_payloads_are_live(name, tmp_path, ultralytics_ready):
    """torch.load without weights_only (ultralytics' default) runs each payload: the scan is what stops it."""
    import torch

    marker = tmp_path / "MARKER"
    path = crafted(name, tmp_path, marker)
    with contextlib.suppress(Exception):  # after the payload ran, the rest of a crafted stream need not make sense
        torch.load(str(path), weights_only=False)
    assert marker.exists()


def test_exact_allow_list_helpers():
    """Classes are accepted only from exact modules, defined there, nn.Module subclasses, without dots."""
    from cnnkit.models.checkpoint import _is_module_class

    assert _is_module_class("torch.nn.modules.conv", "Conv2d")
    assert _is_module_class("ultralytics.nn.modules.head", "Detect")
    assert not _is_module_class("torch.nn.modules.conv", "F")  # a module, not a class
    assert not _is_module_class("torch.nn.modules.conv", "Tensor")  # imported there, defined elsewhere
    assert not _is_module_class("torch.nn.modules", "Conv2d")  # the package is not an allowed module
    assert not _is_module_class("ultralytics.utils", "IterableSimpleNamespace")  # not a layer class
    assert not _is_module_class("torch.nn.modules.conv.os", "system")


def test_export_and_finetune_model_refuse_crafted_pickles(tmp_path, ultralytics_ready):
    from cnnkit.data.export import export_shapes

    marker = tmp_path / "MARKER"
    evil = as_torch_zip(tmp_path / "evil.pt", memo_names(marker))
    result = runner.invoke(app, ["export", str(evil), "--out", str(tmp_path / "out.onnx")])
    assert "refused" in one_line_error(result, evil)
    export_shapes(tmp_path / "ds", "yolo", n=2, seed=1, imgsz=64, val_fraction=0.5)
    for option in ("--model", "--weights"):
        result = runner.invoke(
            app,
            [
                "finetune",
                str(tmp_path / "ds" / "data.yaml"),
                "--task",
                "detect",
                option,
                str(evil),
                "--epochs",
                "1",
                "--imgsz",
                "64",
                "--out",
                str(tmp_path / option[2:]),
            ],
        )
        assert "refused" in one_line_error(result, evil)
    assert not marker.exists()


def _trainer_checkpoint(yaml: str, path: Path) -> Path:
    """A checkpoint laid out as ultralytics' trainer saves one (EMA model, optimizer, args)."""
    from copy import deepcopy

    import torch

    from cnnkit import ultralytics_adapter

    ul = ultralytics_adapter.ultralytics()
    from ultralytics.cfg import get_cfg

    model = ul.YOLO(yaml).model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.save(
        {
            "epoch": 0,
            "best_fitness": 0.1,
            "stopper": {"best_fitness": 0.1, "best_epoch": 0},
            "model": None,
            "ema": deepcopy(model).half(),
            "updates": 1,
            "modelopt": None,
            "optimizer": optimizer.state_dict(),
            "scaler": {},
            "train_args": vars(get_cfg()),
            "train_metrics": {"fitness": 0.1},
            "train_results": {"epoch": [1.0]},
            "date": "2026-01-01",
            "version": ul.__version__,
            "git": {"root": None, "branch": None, "commit": None, "origin": None},
            "license": "AGPL-3.0",
            "docs": "https://docs.ultralytics.com",
        },
        path,
    )
    return path


def test_real_ultralytics_checkpoints_still_load(tmp_path, ultralytics_ready):
    """No false positives: the bundled model and fresh ones as ultralytics saves them (trainer, strip, fused)."""
    from ultralytics.utils.torch_utils import strip_optimizer

    from cnnkit import ultralytics_adapter

    last = _trainer_checkpoint("yolov8n.yaml", tmp_path / "v8-last.pt")
    strip_optimizer(last, str(tmp_path / "v8-best.pt"))
    fused = ultralytics_adapter.ultralytics().YOLO("yolo11n.yaml")
    fused.fuse()  # a fused layer pickles its forward as getattr(layer, "forward_fuse")
    fused.save(tmp_path / "yolo11n-fused.pt")
    cls = ultralytics_adapter.ultralytics().YOLO("yolov8n-cls.yaml")
    cls.save(tmp_path / "v8-cls.pt")
    for path, task in (
        (BUNDLED_YOLO, "detect"),
        (last, "detect"),
        (tmp_path / "v8-best.pt", "detect"),
        (tmp_path / "yolo11n-fused.pt", "detect"),
        (tmp_path / "v8-cls.pt", "classify"),
    ):
        check_full_pickle(path)
        assert ultralytics_adapter.yolo(path).task == task, path


def test_ultralytics_loads_weights_only(ultralytics_ready):
    """After the scan, ultralytics itself unpickles with torch.load(weights_only=True)."""
    from cnnkit import ultralytics_adapter

    tasks = pytest.importorskip("ultralytics.nn.tasks")
    if not getattr(getattr(tasks, "_SafeLoad", None), "SUPPORTED", False):
        pytest.skip("this ultralytics/torch has no weights-only loading")
    assert ultralytics_adapter.safe_load() and tasks.SAFE_LOAD is True


def test_detect_with_a_fresh_checkpoint_runs(tmp_path, rgb_image, ultralytics_ready):
    last = _trainer_checkpoint("yolov8n.yaml", tmp_path / "fresh.pt")
    result = runner.invoke(app, ["detect", str(rgb_image), "--weights", str(last), "--imgsz", "64", "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["width"] == 64


def test_model_activation_that_is_code_is_refused(tmp_path, rgb_image, ultralytics_ready):
    """A model's yaml ``activation`` is eval'd by ultralytics < 8.4 when training builds the model from it."""
    from cnnkit import ultralytics_adapter

    marker = tmp_path / "MARKER"
    code = f"__import__('os').system('touch {marker}')"
    model = ultralytics_adapter.ultralytics().YOLO("yolov8n.yaml")
    model.model.yaml["activation"] = code
    model.save(tmp_path / "act.pt")
    check_full_pickle(tmp_path / "act.pt")  # only plain strings: the pickle itself is harmless
    result = runner.invoke(app, ["detect", str(rgb_image), "--weights", str(tmp_path / "act.pt")])
    assert "activation" in one_line_error(result, tmp_path / "act.pt")
    spec = tmp_path / "act.yaml"
    spec.write_text(
        json.dumps(
            {"nc": 2, "activation": code, "backbone": [[-1, 1, "Conv", [16, 3, 2]]], "head": [[-1, 1, "Classify", [2]]]}
        )
    )
    with pytest.raises(UnsafeCheckpoint, match="activation"):
        ultralytics_adapter.yolo(spec)
    assert ultralytics_adapter.yolo(BUNDLED_YOLO).task == "detect"  # SiLU-by-default models carry no activation
    assert not marker.exists()


# ---------------------------------------------------------------- finetune --task detect --resume


def test_detect_resume_refuses_a_crafted_last_or_best(tmp_path, ultralytics_ready):
    """ultralytics unpickles the run's best.pt when training ends: every .pt of the run is scanned first."""
    from cnnkit.data.export import export_shapes

    export_shapes(tmp_path / "ds", "yolo", n=2, seed=1, imgsz=64, val_fraction=0.5)
    data = str(tmp_path / "ds" / "data.yaml")
    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    legacy_format(run / "weights" / "last.pt", marker)
    result = runner.invoke(app, ["finetune", data, "--task", "detect", "--resume", str(run)])
    assert "refused" in one_line_error(result, run / "weights" / "last.pt")
    _trainer_checkpoint("yolov8n.yaml", run / "weights" / "last.pt")
    pickle_then_zip(run / "weights" / "best.pt", marker)
    result = runner.invoke(app, ["finetune", data, "--task", "detect", "--resume", str(run)])
    assert "refused" in one_line_error(result, run / "weights" / "best.pt")
    assert not marker.exists()


def test_detect_resume_pins_the_run_folder(tmp_path, ultralytics_ready):
    """The checkpoint's own train_args.save_dir (where its best.pt would be unpickled) is not followed."""
    from cnnkit import ultralytics_adapter

    (tmp_path / "run" / "weights").mkdir(parents=True)
    last = _trainer_checkpoint("yolov8n.yaml", tmp_path / "run" / "weights" / "last.pt")
    _yolo, args = ultralytics_adapter.resume(last)
    assert args == {"resume": True, "save_dir": str((tmp_path / "run").resolve())}


def test_detect_resume_of_a_finished_run_is_refused_and_leaves_it(tmp_path, ultralytics_ready):
    """ultralytics strips a finished run's last.pt (epoch -1, no optimizer) and would start a new 100-epoch run
    over the old one's files; cnnkit says there is nothing to resume."""
    import torch

    from cnnkit import ultralytics_adapter
    from cnnkit.errors import UsageError

    (tmp_path / "run" / "weights").mkdir(parents=True)
    last = _trainer_checkpoint("yolov8n.yaml", tmp_path / "run" / "weights" / "last.pt")
    ckpt = torch.load(last, weights_only=False)
    ckpt.update(epoch=-1, optimizer=None)
    ckpt["train_args"]["epochs"] = 2
    torch.save(ckpt, last)
    before = last.read_bytes()
    with pytest.raises(UsageError, match="training to 2 epochs is finished; nothing to resume"):
        ultralytics_adapter.resume(last)
    assert last.read_bytes() == before


# ---------------------------------------------------------------- cnnkit metadata


def _safetensors(path: Path, meta: object | None, raw: str | None = None) -> Path:
    import torch
    from safetensors.torch import save_file

    metadata = {"cnnkit": raw if raw is not None else json.dumps(meta)} if (meta is not None or raw) else None
    save_file({"w": torch.zeros(1)}, str(path), metadata=metadata)
    return path


GOOD_META = {
    "task": "classify",
    "arch": "lenet5",
    "name": "x",
    "labels": ["a", "b"],
    "preprocess": {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
}
BAD_META = {
    "not-json": (None, "{'arch': lenet5"),
    "json-array": (None, "[1, 2]"),
    "missing-arch": ({k: v for k, v in GOOD_META.items() if k != "arch"}, None),
    "labels-not-a-list": ({**GOOD_META, "labels": "ab"}, None),
    "labels-not-strings": ({**GOOD_META, "labels": [1, 2]}, None),
    "preprocess-a-string": ({**GOOD_META, "preprocess": "imagenet"}, None),
    "preprocess-zero-std": ({**GOOD_META, "preprocess": {**GOOD_META["preprocess"], "std": [0, 1, 1]}}, None),
    "preprocess-huge": ({**GOOD_META, "preprocess": {**GOOD_META["preprocess"], "resize": 10**6}}, None),
    "arch-a-number": ({**GOOD_META, "arch": 5}, None),
    "arch-kwargs-a-list": ({**GOOD_META, "arch_kwargs": [1]}, None),
    "too-many-labels": ({**GOOD_META, "labels": ["x"] * 100_001}, None),
}


@pytest.mark.parametrize("case", list(BAD_META))
def test_classify_refuses_bad_checkpoint_metadata(case, tmp_path, rgb_image):
    meta, raw = BAD_META[case]
    path = _safetensors(tmp_path / "bad.safetensors", meta, raw)
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path)])
    assert "metadata" in one_line_error(result, path)


@pytest.mark.parametrize("case", ["not-json", "missing-arch", "labels-not-a-list", "preprocess-a-string"])
def test_segment_and_export_refuse_bad_checkpoint_metadata(case, tmp_path, rgb_image):
    meta, raw = BAD_META[case]
    path = _safetensors(tmp_path / "bad.safetensors", {**meta, "task": "segment"} if meta else None, raw)
    result = runner.invoke(app, ["segment", str(rgb_image), "--weights", str(path)])
    assert "metadata" in one_line_error(result, path)
    result = runner.invoke(app, ["export", str(path), "--out", str(tmp_path / "x.onnx")])
    assert "metadata" in one_line_error(result, path)
    assert not (tmp_path / "x.onnx").exists()


def test_metadata_that_does_not_build_its_architecture(tmp_path, rgb_image):
    """arch_kwargs go to the builder as keyword arguments; an unknown architecture names the file too."""
    path = _safetensors(tmp_path / "kw.safetensors", {**GOOD_META, "arch_kwargs": {"bogus": 1}})
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path)])
    assert "arch_kwargs" in one_line_error(result, path)
    path = _safetensors(tmp_path / "arch.safetensors", {**GOOD_META, "arch": "nope"})
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path)])
    assert "'nope'" in one_line_error(result, path)


@pytest.mark.parametrize("kwargs", [{"decoder_channels": [4000, 16, 8, 8, 8]}, {"decoder_channels": [10**7] * 5}])
def test_arch_kwargs_that_build_a_huge_network_are_refused_before_it_is_built(kwargs, tmp_path, rgb_image):
    """A stranger's checkpoint whose arch_kwargs ask for 10 million channels: the network was allocated and
    initialised for real (terabytes) before its weights could fail to fit. Sizes past any layer's are refused
    as metadata; a network the file's tensors cannot fill is measured on the meta device first."""
    from tests.fixtures.segment import TINY, save_tiny_unet

    path = save_tiny_unet(tmp_path / "tiny.safetensors", 0)
    from safetensors.torch import load_file, save_file

    from cnnkit.models.checkpoint import read_meta

    meta = read_meta(path)
    meta["arch_kwargs"] = {**TINY, **kwargs}
    save_file(load_file(str(path)), str(path), metadata={"cnnkit": json.dumps(meta)})
    result = runner.invoke(app, ["segment", str(rgb_image), "--weights", str(path)])
    line = one_line_error(result, path)
    if kwargs["decoder_channels"][0] > 8192:
        assert "arch_kwargs 'decoder_channels'" in line and "past 8192" in line
    else:
        assert re.search(r"its metadata builds a smp of [\d,]+ numbers, the file holds [\d,]+$", line), line


@pytest.mark.parametrize("side", [8, 64])
def test_a_checkpoint_whose_input_side_its_network_cannot_run_is_one_line(side, tmp_path, rgb_image):
    """LeNet-5 takes 32x32 inputs only: a checkpoint whose preprocessing says 64 (or 8, pooled to nothing)
    loaded, then every batch failed with a traceback."""
    from cnnkit.models.checkpoint import save_checkpoint
    from cnnkit.models.loader import spec_for_family

    module = spec_for_family("lenet5", "classify").builder(num_classes=2)
    pre = {"resize": side, "crop": side, "mean": [0.5] * 3, "std": [0.5] * 3}
    path = save_checkpoint(tmp_path / "lenet.safetensors", module, {**GOOD_META, "preprocess": pre})
    result = runner.invoke(app, ["classify", str(rgb_image), str(rgb_image), "--weights", str(path)])
    assert f"its preprocessing asks for {side}x{side} inputs, which x cannot run" in one_line_error(result, path)


def test_a_lightning_checkpoint_loads_its_state_dict_or_says_what_it_holds(tmp_path, rgb_image):
    """A Lightning ``.ckpt``: its keys carry the LightningModule's attribute (``model.``), which did not fit the
    architecture; one whose hyper_parameters are an ``argparse.Namespace`` was refused with torch's boilerplate
    ("Weights only load failed. This file can still be loaded…") instead of what it holds."""
    import argparse

    import torch

    from cnnkit.models.loader import spec_for_family

    module = spec_for_family("lenet5", "classify").builder(num_classes=6)
    state = {f"model.{k}": v for k, v in module.state_dict().items()}
    plain, namespace = tmp_path / "plain.ckpt", tmp_path / "namespace.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": {"lr": 0.1}, "pytorch-lightning_version": "2.0"}, plain)
    torch.save({"state_dict": state, "hyper_parameters": argparse.Namespace(lr=0.1)}, namespace)
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", "lenet5", "--weights", str(plain)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", "lenet5", "--weights", str(namespace)])
    line = one_line_error(result, namespace)
    assert "refused" in line and "argparse.Namespace" in line and "Weights only load failed" not in line


def test_sidecar_metadata_that_is_not_json(tmp_path, rgb_image):
    path = _safetensors(tmp_path / "bare.safetensors", None)
    (tmp_path / "bare.json").write_text("{nope")
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path)])
    assert "not valid JSON" in one_line_error(result, tmp_path / "bare.json")


def _state_file(path: Path, change: Callable[[dict], None]) -> Path:
    """The bundled shapes-cnn checkpoint written again with its tensors changed by ``change``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = REPO / "cnnkit" / "weights" / "shapes-cnn.safetensors"
    with safe_open(str(src), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    change(state)
    save_file(state, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("tensor", ["fc.weight", "features.0.1.running_mean"])
def test_integer_weights_for_a_float_layer_are_refused(tensor, tmp_path, rgb_image):
    """torch's load_state_dict cast them to floats without a word, and the network ran on garbage (a
    parameter, or a float buffer such as BatchNorm's running statistics)."""
    import torch

    def change(state: dict) -> None:
        state[tensor] = state[tensor].round().to(torch.int16)

    path = _state_file(tmp_path / "int16.safetensors", change)
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path)])
    assert f"{tensor} holds int16, not floating point" in one_line_error(result, path)


@pytest.mark.parametrize(
    ("meta", "said"),
    [
        ({**GOOD_META, "name": "x\x1b[31m\nfailed ./a.png: forged"}, "'name' has control characters"),
        ({**GOOD_META, "preprocess": {**GOOD_META["preprocess"], "interpolation": "lanczos"}}, "'interpolation'"),
    ],
)
def test_metadata_a_log_line_or_the_resize_would_misread_is_refused(meta, said, tmp_path, rgb_image):
    """A name reached log lines and CSV records raw (an escape sequence, a forged line); an unknown
    interpolation became bilinear without a word."""
    path = _safetensors(tmp_path / "odd.safetensors", meta)
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path)])
    assert said in one_line_error(result, path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".onnx", ".torchscript"])
def test_weights_that_are_a_folder_are_called_one(suffix, tmp_path, rgb_image):
    folder = tmp_path / f"w{suffix}"
    folder.mkdir()
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", "shapes-cnn", "--weights", str(folder)])
    assert "a folder, not a weights file" in one_line_error(result, folder)


def test_a_file_named_onnx_is_read_as_onnx_only(tmp_path, rgb_image):
    """OpenVINO's read_model guessed the format: a garbage `.onnx` went through TensorFlow's text reader too,
    whose native log lines reached stderr before cnnkit's one line."""
    import subprocess
    import sys

    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x07garbage" * 100)
    env = {**os.environ, "CNNKIT_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "cnnkit", "classify", str(rgb_image), "-w", str(path), "--backend", "openvino"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"Error: {path}: OpenVINO cannot compile it (Unable to read the model as ONNX: Model can't be parsed)"
    ]


def test_a_bare_pickle_is_refused_in_one_line_without_torchs_warning(tmp_path, rgb_image):
    """torch warned about the pickle protocol on stderr first; a pickle naming no global was said to need
    arbitrary unpickling."""
    import pickle

    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    result = runner.invoke(app, ["classify", str(rgb_image), "--model", "shapes-cnn", "--weights", str(path)])
    line = one_line_error(result, path)
    assert "refused" in line and "arbitrary" not in line
    assert "UserWarning" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_good_metadata_still_reads():
    from cnnkit.models.checkpoint import read_meta

    for name in ("shapes-cnn", "lenet5-digits", "shapes-unet", "shapes-deeplabv3plus", "shapes-maskrcnn"):
        meta = read_meta(REPO / "cnnkit" / "weights" / f"{name}.safetensors")
        assert meta["name"] == name and isinstance(meta["labels"], list)


def _onnx_file(path: Path, meta: str) -> Path:
    """A minimal ONNX model (identity on ``images``) carrying ``meta`` as its cnnkit metadata."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])],
        "g",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "cnnkit", meta
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    "meta",
    [
        "not json {",
        json.dumps([1]),
        json.dumps({"task": "classify", "labels": "ab"}),
        json.dumps({"task": "classify", "labels": ["a"], "preprocess": "x"}),
    ],
)
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])  # each reads the metadata its own way
def test_onnx_metadata_must_be_cnnkits(meta, backend, tmp_path, rgb_image):
    pytest.importorskip(backend)
    path = _onnx_file(tmp_path / "m.onnx", meta)
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path), "--backend", backend])
    assert "metadata" in one_line_error(result, path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_onnx_without_metadata_or_not_utf8(backend, tmp_path, rgb_image):
    pytest.importorskip(backend)
    bare = _onnx_file(tmp_path / "bare.onnx", "{}")
    import onnx

    model = onnx.load(str(bare))
    del model.metadata_props[:]
    onnx.save(model, str(bare))
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(bare), "--backend", backend])
    assert "no cnnkit metadata" in one_line_error(result, bare)
    raw = _onnx_file(tmp_path / "raw.onnx", "@" * 40).read_bytes().replace(b"@" * 40, b"\xff\xfe" * 20)
    (tmp_path / "latin.onnx").write_bytes(raw)
    result = runner.invoke(
        app, ["classify", str(rgb_image), "--weights", str(tmp_path / "latin.onnx"), "--backend", backend]
    )
    assert str(tmp_path / "latin.onnx") in one_line_error(result, tmp_path / "latin.onnx")


def test_onnx_detect_metadata_letterbox_must_be_a_size(tmp_path, rgb_image):
    path = _onnx_file(tmp_path / "m.onnx", json.dumps({"task": "detect", "labels": ["a"], "letterbox": "64"}))
    result = runner.invoke(app, ["detect", str(rgb_image), "--weights", str(path)])
    assert "letterbox" in one_line_error(result, path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("kind", ["no input", "two inputs", "2-D input", "empty file"])
def test_an_onnx_network_that_takes_no_image_batch_is_one_line(kind, backend, tmp_path, rgb_image):
    """A constant graph with no input, or an empty .onnx under OpenVINO: an IndexError traceback (onnxruntime)
    or a bare C++ message ("Cannot get input for index: 0"); two inputs or a 2-D one would fail every batch."""
    import onnx
    from onnx import TensorProto, helper

    pytest.importorskip("openvino" if backend == "openvino" else "onnxruntime")
    path = tmp_path / "m.onnx"
    meta = json.dumps({**_TS_META, "input_shape": [1, 3, 8, 8]})
    shapes = {"no input": [], "two inputs": [[1, 3, 8, 8], [1, 3, 8, 8]], "2-D input": [[1, 3]]}
    if kind == "empty file":
        if backend == "onnxruntime":
            pytest.skip("onnxruntime names an empty file itself")
        path.write_bytes(b"")
    else:
        inputs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, d) for i, d in enumerate(shapes[kind])]
        value = helper.make_tensor("c", TensorProto.FLOAT, [1, 2], [0.1, 0.9])
        nodes = [helper.make_node("Constant", [], ["y"], value=value)]
        graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        entry = model.metadata_props.add()
        entry.key, entry.value = "cnnkit", meta
        onnx.save(model, str(path))
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path), "--backend", backend])
    line = one_line_error(result, path)
    assert "its network takes " in line and "batch of images" in line


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TorchScript's deprecation notices
def test_torchscript_metadata_that_is_not_json(tmp_path, rgb_image):
    import torch

    path = tmp_path / "m.torchscript"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(path), _extra_files={"cnnkit.json": "nope"})
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path)])
    assert "not valid JSON" in one_line_error(result, path)


_TS_META = {
    "format_version": 1,
    "task": "classify",
    "name": "ts",
    "labels": ["a", "b"],
    "preprocess": {"resize": 8, "crop": 8, "mean": [0, 0, 0], "std": [1, 1, 1]},
    "input_shape": ["batch", 3, 8, 8],
}


@pytest.mark.parametrize("kind", ["forward", "setstate", "from_file"])
def test_torchscript_that_touches_files_is_refused_before_it_runs(kind, tmp_path, rgb_image):
    """TorchScript is code (``__setstate__`` runs inside ``torch.jit.load``): one that reads or writes files is
    refused, and nothing it would write exists afterwards."""
    import torch

    from tests.fixtures import hostile_torchscript as hostile

    marker = tmp_path / "MARKER.pt"
    net = {
        "forward": hostile.WritesOnForward(str(marker)),
        "setstate": hostile.WritesOnLoad(str(marker)),
        "from_file": hostile.MapsAFile(),
    }
    path = tmp_path / "evil.torchscript"
    torch.jit.save(torch.jit.script(net[kind]), str(path), _extra_files={"cnnkit.json": json.dumps(_TS_META)})
    marker.unlink(missing_ok=True)
    for backend in ("auto", "torchscript"):
        result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path), "--backend", backend])
        assert "refused, its TorchScript code calls " in one_line_error(result, path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["while", "long_for"])
def test_torchscript_that_may_never_end_is_refused_before_it_runs(kind, tmp_path, rgb_image):
    """The probe at load ran it: `classify` hung at 100% CPU, and Ctrl-C did not stop it."""
    import torch

    from tests.fixtures import hostile_torchscript as hostile

    net = hostile.NeverEnds() if kind == "while" else hostile.LoopsALongTime()
    path = tmp_path / "loop.torchscript"
    torch.jit.save(torch.jit.script(net), str(path), _extra_files={"cnnkit.json": json.dumps(_TS_META)})
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path)])
    assert "refused, its TorchScript code " in one_line_error(result, path)


def _classify_with_probe_seconds_2(path: Path, image: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``cnnkit classify IMAGE -w PATH --backend torchscript`` in a child process with PROBE_SECONDS = 2: a load
    or probe that never ends leaves its thread behind, so the process must exit without joining it."""
    import sys

    launcher = (
        "import sys, cnnkit.export as e; e.PROBE_SECONDS = 2; "
        "sys.argv = ['cnnkit', *sys.argv[1:]]; from cnnkit.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", launcher, "classify", str(image), "-w", str(path), "--backend", "torchscript"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CNNKIT_CACHE": str(tmp_path / "cache")},
    )


def test_a_network_that_runs_too_long_at_load_is_refused_and_the_cli_exits(tmp_path, rgb_image):
    """Loops the static check cannot bound: the probe at load hung, deaf to Ctrl-C. Now it is waited for
    PROBE_SECONDS, the load is refused in one line, and the process leaves its thread behind (exit 1, not an
    abort while joining it)."""

    import torch

    from tests.fixtures import hostile_torchscript as hostile

    path = tmp_path / "nested.torchscript"
    torch.jit.save(
        torch.jit.script(hostile.NestedLoops(1 << 20)), str(path), _extra_files={"cnnkit.json": json.dumps(_TS_META)}
    )
    done = _classify_with_probe_seconds_2(path, rgb_image, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"Error: {path}: refused, its network did not finish one input of shape [1, 3, 8, 8] in 2 s"
    )


@pytest.mark.parametrize("kind", ["nested", "prints"])
def test_torchscript_that_loops_on_load_or_prints_is_refused_before_it_runs(kind, tmp_path, rgb_image):
    """Loops of a million turns inside loops of a million in ``__setstate__`` hung ``torch.jit.load`` (each loop
    alone is under the static bound); a ``print`` in ``forward`` wrote forged records among the real ones."""
    import torch

    from tests.fixtures import hostile_torchscript as hostile

    net = hostile.NestedLoopsOnLoad(1) if kind == "nested" else hostile.Prints()
    path = tmp_path / f"{kind}.torchscript"
    torch.jit.save(torch.jit.script(net), str(path), _extra_files={"cnnkit.json": json.dumps(_TS_META)})
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path), "--format", "jsonl"])
    why = "nests loops of 1,000,000,000,000 turns in all" if kind == "nested" else "prints to stdout"
    assert f"refused, its TorchScript code {why}" in one_line_error(result, path)
    assert "forged" not in result.stdout


def test_torchscript_whose_load_runs_too_long_is_refused_and_the_cli_exits(tmp_path, rgb_image):
    """Loops in ``__setstate__`` counted by the module's own state: ``torch.jit.load`` ran them with no time
    limit (the probe's bound starts after the load). Now the load is waited for PROBE_SECONDS too."""

    import torch

    from tests.fixtures import hostile_torchscript as hostile

    path = tmp_path / "counted.torchscript"
    torch.jit.save(
        torch.jit.script(hostile.CountedLoopsOnLoad(1 << 20)),
        str(path),
        _extra_files={"cnnkit.json": json.dumps(_TS_META)},
    )
    done = _classify_with_probe_seconds_2(path, rgb_image, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"Error: {path}: refused, loading it ran its code for over 2 s"


def _rewritten(src, dst, code: Callable[[str], str]) -> None:
    """``src`` (a TorchScript zip) written again with its code changed by ``code``, as an attacker would."""
    import zipfile

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename.endswith(".debug_pkl"):
                continue  # the debug tables would not match the changed lines
            data = zin.read(info)
            if "/code/" in info.filename and info.filename.endswith(".py"):
                data = code(data.decode()).encode()
            zout.writestr(zipfile.ZipInfo(info.filename, info.date_time), data)


def _with_a_second_directory(src, dst, benign_name: str) -> None:
    """``src`` with a benign code entry and a second central directory listing only it appended, the end record
    still pointing at the first: Python's zipfile lists the benign entry, torch's reader the real code."""
    import io
    import struct
    import zipfile

    data = src.read_bytes()
    at = data.rfind(b"PK\x05\x06")
    entries, cd_size, cd_offset = struct.unpack("<HII", data[at + 10 : at + 20])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(benign_name, "class Benign(Module):\n  pass\n")
    small = buf.getvalue()
    small_cd, small_end = small.rfind(b"PK\x01\x02"), small.rfind(b"PK\x05\x06")
    out = bytearray(data)
    local_at = len(out)
    out += small[:small_cd]
    directory = bytearray(small[small_cd:small_end])
    size = max(cd_size, len(directory)) + 64
    struct.pack_into("<H", directory, 32, size - len(directory))  # a comment pads it to `size`
    directory += b" " * (size - len(directory))
    concat = len(out) - cd_offset  # where zipfile will think the prepended bytes end
    struct.pack_into("<I", directory, 42, local_at - concat)
    out += directory
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries, entries, size, cd_offset, 0)
    dst.write_bytes(bytes(out))


@pytest.mark.parametrize("trick", ["alias", "getattr", "second_directory"])
def test_torchscript_that_hides_a_file_operator_is_refused(trick, tmp_path, rgb_image):
    """``f = torch.save; f(…)``, ``getattr(torch, "save")(…)``, and code that Python's zipfile does not see but
    torch's reader does: each refused before torch loads it, and nothing is written."""
    import zipfile

    import torch

    from tests.fixtures import hostile_torchscript as hostile

    marker = tmp_path / "MARKER.pt"
    plain = tmp_path / "plain.torchscript"
    meta = {"cnnkit.json": json.dumps(_TS_META)}
    torch.jit.save(torch.jit.script(hostile.WritesOnForward(str(marker))), str(plain), _extra_files=meta)
    path = tmp_path / "evil.torchscript"
    if trick == "second_directory":
        code = next(n for n in zipfile.ZipFile(plain).namelist() if "/code/" in n and n.endswith(".py"))
        _with_a_second_directory(plain, path, code)
        assert zipfile.ZipFile(path).read(code).startswith(b"class Benign")  # what a zipfile reader is shown
    else:
        call = "torch.save(_0, marker)"
        hidden = {
            "alias": f"f = torch.save\n    {call.replace('torch.save', 'f')}",
            "getattr": call.replace("torch.save", 'getattr(torch, "save")'),
        }[trick]
        _rewritten(plain, path, lambda text: text.replace(call, hidden))
    for backend in ("auto", "torchscript"):
        result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path), "--backend", backend])
        assert "refused" in one_line_error(result, path)
    assert not marker.exists()


def test_traced_torchscript_still_loads(tmp_path, rgb_image):
    """What ``cnnkit export`` writes (a traced network) passes the code check and runs."""
    import torch

    path = tmp_path / "ok.torchscript"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.jit.save(
        torch.jit.trace(net.eval(), torch.zeros(1, 3, 8, 8)),
        str(path),
        _extra_files={"cnnkit.json": json.dumps(_TS_META)},
    )
    result = runner.invoke(app, ["classify", str(rgb_image), "--weights", str(path), "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["predictions"][0]["label"] in ("a", "b")


# ---------------------------------------------------------------- last.pt of cnnkit's own loops


def _bad_last(kind: str, path: Path, marker: Path) -> None:
    import torch

    if kind == "bare-pickle":
        path.write_bytes(P2 + glob("os", "system") + call_system(marker) + STOP)
    elif kind == "pickle-in-zip":
        torch.save({"model": Evil(marker)}, path)
    elif kind == "legacy":
        legacy_format(path, marker)
    elif kind == "wrong-shapes":
        torch.save({"model": {"conv.weight": torch.zeros(1)}, "optimizer": {}, "scheduler": {}}, path)
    elif kind == "not-a-dict":
        torch.save([1, 2, 3], path)


RESUME_CASES = ["bare-pickle", "pickle-in-zip", "legacy", "wrong-shapes", "not-a-dict"]


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory, tiny_digits):
    out = tmp_path_factory.mktemp("cls_run") / "run"
    result = runner.invoke(
        app,
        [
            "finetune",
            str(tiny_digits),
            "--model",
            "lenet5",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--threads",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("kind", RESUME_CASES)
def test_classify_resume_refuses_a_bad_last_pt(kind, classify_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(classify_run, run)
    marker = tmp_path / "MARKER"
    _bad_last(kind, run / "last.pt", marker)
    result = runner.invoke(app, ["finetune", "--resume", str(run), "--workers", "0", "--epochs", "2"])
    one_line_error(result, run / "last.pt")
    assert not marker.exists()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"finetune": {"epochs": 2, "os_system": 1}}'])
def test_classify_resume_refuses_a_bad_last_json(text, classify_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(classify_run, run)
    (run / "last.json").write_text(text)
    result = runner.invoke(app, ["finetune", "--resume", str(run), "--workers", "0", "--epochs", "2"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "last.json" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["bare-pickle", "wrong-shapes"])
def test_segment_resume_refuses_a_bad_last_pt(kind, masks_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "MARKER"
    _bad_last(kind, run / "last.pt", marker)
    result = runner.invoke(
        app,
        [
            "finetune",
            str(masks_data),
            "--task",
            "segment",
            "--arch",
            "unet",
            "--encoder",
            TINY["encoder"],
            "--epochs",
            "1",
            "--imgsz",
            "64",
            "--workers",
            "0",
            "--resume",
            str(run),
        ],
    )
    one_line_error(result, run / "last.pt")
    assert not marker.exists()


def _probe_recipe(task: str = "instance"):
    import torch

    from cnnkit.train.loop import Recipe, Step

    def loss(model, batch, device):
        x, y = batch
        return Step(torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device)), len(y))

    return Recipe(task, loss, lambda model: {"acc": 0.5}, score="val_acc")


@pytest.mark.parametrize("kind", RESUME_CASES)
def test_loop_resume_refuses_a_bad_last_pt(kind, tmp_path):
    """The one loop under every task reads last.pt weights-only and refuses anything else in one line."""
    import torch

    from cnnkit.train.loop import LoopConfig, fit

    marker = tmp_path / "MARKER"
    _bad_last(kind, tmp_path / "last.pt", marker)
    with pytest.raises(CnnkitError, match="last.pt"):
        fit(
            torch.nn.Linear(2, 2),
            data_batches([(None, None)]),
            _probe_recipe(),
            LoopConfig(epochs=1),
            tmp_path,
            {"labels": ["a"]},
        )
    assert not marker.exists()


def test_loop_resume_keeps_a_good_last_pt(tmp_path):
    """The wrapped restore still resumes a last.pt the loop wrote."""
    import torch

    from cnnkit.train.loop import LoopConfig, fit

    data = [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    model = torch.nn.Linear(2, 2)
    history = fit(model, data_batches(data), _probe_recipe(), LoopConfig(epochs=1), tmp_path, {"labels": ["a"]})
    again = fit(model, data_batches(data), _probe_recipe(), LoopConfig(epochs=2), tmp_path, {"labels": ["a"]})
    assert again[0] == history[0] and [r["epoch"] for r in again] == [1, 2]
    _bad_last("wrong-shapes", tmp_path / "last.pt", tmp_path / "MARKER")
    with pytest.raises(CnnkitError, match="cannot resume"):
        fit(model, data_batches(data), _probe_recipe(), LoopConfig(epochs=3), tmp_path, {"labels": ["a"]})


def data_batches(batches):
    from cnnkit.train.loop import StepBatches

    return StepBatches(lambda step: batches[step % len(batches)], len(batches))


def test_weights_that_do_not_fit_say_which_tensor(tmp_path) -> None:
    """torch's first line only names the module class; the reason carries the first mismatch itself."""
    import torch
    from torch import nn

    from cnnkit.errors import CnnkitError
    from cnnkit.models.loader import load_into

    with pytest.raises(CnnkitError) as err:
        load_into(nn.Linear(3, 4), {"weight": torch.zeros(5, 3), "bias": torch.zeros(5)}, "x.safetensors")
    assert str(err.value).startswith("x.safetensors: weights do not fit the architecture (size mismatch for weight")
    assert "torch.Size([5, 3])" in str(err.value) and "1 more" in str(err.value)


def test_a_state_dict_whose_zip_entries_are_compressed_is_refused_before_torch_inflates_them(tmp_path):
    """torch.load inflates a deflated entry before anything is checked: a 1 MB .pt of a 1 GiB (here 64 MiB)
    tensor took the memory first. torch.save stores its entries, so a compressed one is refused unread."""
    import torch

    from cnnkit.models.checkpoint import load_state_dict

    plain = tmp_path / "plain.pt"
    torch.save({"conv.weight": torch.zeros(16 << 20)}, plain)
    assert set(load_state_dict(plain)) == {"conv.weight"}  # stored, as torch.save writes: loaded
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    assert packed.stat().st_size < 1 << 20
    with pytest.raises(CnnkitError, match="packed.pt: refused, a compressed zip entry"):
        load_state_dict(packed)
