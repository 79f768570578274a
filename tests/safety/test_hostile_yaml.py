"""Hostile dataset yamls: nothing in one is executed or fetched, and every bad one is a one-line error.

ultralytics' ``check_det_dataset`` runs a yaml's ``download:`` (``exec``, ``bash ...``, or a URL)
when the val folder is missing; cnnkit reads the yaml itself and hands ultralytics a sanitised
copy. conftest blocks sockets, so a network attempt would surface as ``NetworkBlocked``.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cnnkit.cli import app
from tests.conftest import NetworkBlocked

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_source(tmp_path_factory) -> Path:
    """Six 64 px shapes scenes in YOLO layout (4 train / 2 val), copied per test."""
    from cnnkit.data.export import export_shapes

    out = tmp_path_factory.mktemp("hostile_yolo")
    export_shapes(out, "yolo", n=6, seed=99, imgsz=64, val_fraction=2 / 6)
    (out / "data.yaml").unlink()
    return out


@pytest.fixture()
def dataset(tiny_source, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(tiny_source, root)
    return root


NAMES = ["circle", "square", "triangle", "star", "hexagon"]


def write_yaml(file: Path, **entries) -> Path:
    file.write_text(yaml.safe_dump({"names": NAMES, **entries}, sort_keys=False))
    return file


def finetune_args(data: Path, tmp_path: Path) -> list[str]:
    return [
        "finetune",
        str(data),
        "--task",
        "detect",
        "--epochs",
        "1",
        "--imgsz",
        "64",
        "--batch-size",
        "2",
        "--out",
        str(tmp_path / "run"),
    ]


def val_args(data: Path, tmp_path: Path) -> list[str]:
    return ["detect", "val", str(data), "--imgsz", "64", "--batch-size", "2"]


COMMANDS = {"finetune": finetune_args, "val": val_args}


def assert_one_line_error(result, label: str, reason: str) -> None:
    """Exit non-zero, ``Error: <file>: <reason>`` on stderr, no traceback, no network attempt."""
    assert result.exit_code != 0
    assert not isinstance(result.exception, NetworkBlocked), result.exception
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"Error: {label}: "), errors[0]
    assert reason in errors[0], errors[0]
    assert "Traceback" not in result.output + result.stderr


def downloads(marker: Path) -> dict[str, str]:
    """The three kinds of ``download:`` ultralytics runs: Python (exec), ``bash script``, an archive URL."""
    script = marker.with_name("get.sh")
    script.write_text(f"touch {marker}\n")
    return {
        "python": f"import pathlib; pathlib.Path({str(marker)!r}).touch()",
        "bash": f"bash {script}",
        "url": "https://example.com/x.zip",
    }


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", ["python", "bash", "url"])
def test_download_never_runs_when_val_is_missing(dataset, tmp_path, command, kind):
    marker = tmp_path / "MARKER"
    data = write_yaml(
        dataset / "data.yaml",
        path=str(dataset),
        train="images/train",
        val="images/missing",
        download=downloads(marker)[kind],
    )
    result = runner.invoke(app, COMMANDS[command](data, tmp_path))
    assert_one_line_error(result, str(data), f"val folder {dataset / 'images' / 'missing'} does not exist")
    assert not marker.exists()
    assert not (tmp_path / "run").exists()  # refused before a run folder is made


def fake_yolo(seen: dict):
    """An ``ultralytics.YOLO`` stand-in that records what ``train`` is handed."""
    from types import SimpleNamespace

    class FakeYolo:
        def add_callback(self, *_):
            pass

        def train(self, **kwargs):
            seen.update(kwargs)
            save_dir = Path(kwargs.get("project", ".")) / kwargs.get("name", "resumed")
            self.trainer = SimpleNamespace(
                metrics={}, best=str(save_dir / "best.pt"), last=str(save_dir / "last.pt"), save_dir=str(save_dir)
            )

    return lambda *_: FakeYolo()


def test_finetune_hands_ultralytics_a_copy_without_download(dataset, tmp_path, monkeypatch):
    """The val folder exists, the yaml has ``download:``: training gets a clean copy, which ultralytics accepts."""
    from cnnkit import api, ultralytics_adapter

    marker = tmp_path / "MARKER"
    data = write_yaml(
        dataset / "data.yaml", train="images/train", val="images/val", download=downloads(marker)["python"]
    )
    seen: dict = {}
    monkeypatch.setattr(ultralytics_adapter, "yolo", fake_yolo(seen))
    result = api.finetune(str(data), task="detect", epochs=1, imgsz=64, out=str(tmp_path / "run"), progress=False)
    clean = Path(seen["data"])
    assert clean == (tmp_path / "run" / "data.yaml").resolve() and result["out"] == str(clean.parent)
    copy = yaml.safe_load(clean.read_text())
    assert "download" not in copy
    assert copy["path"] == str(dataset.resolve()) and copy["val"] == str(dataset.resolve() / "images" / "val")
    assert copy["names"] == dict(enumerate(NAMES))

    ultralytics_adapter.ultralytics()
    from ultralytics.data.utils import check_det_dataset

    checked = check_det_dataset(str(clean))  # ultralytics' own check on what it is handed
    assert checked["nc"] == 5 and checked["val"] == str(dataset.resolve() / "images" / "val")
    shutil.rmtree(dataset / "images" / "val")  # even with val gone, the copy has nothing to run
    with pytest.raises(FileNotFoundError):
        check_det_dataset(str(clean))
    assert not marker.exists()


def test_resume_reads_the_run_copy_not_the_checkpoint_dataset(dataset, tmp_path, monkeypatch):
    """On resume ultralytics would re-read the dataset the checkpoint names; cnnkit passes its checked copy."""
    from cnnkit import api, ultralytics_adapter
    from cnnkit.errors import UsageError

    run = tmp_path / "run"
    (run / "weights").mkdir(parents=True)
    (run / "weights" / "last.pt").write_bytes(b"x")
    seen: dict = {}
    monkeypatch.setattr(ultralytics_adapter, "yolo", fake_yolo(seen))
    with pytest.raises(UsageError, match="pass the dataset yaml"):
        api.finetune(None, task="detect", resume=str(run), progress=False)
    write_yaml(run / "data.yaml", path=str(dataset), train="images/train", val="images/val", download="import os")
    api.finetune(None, task="detect", resume=str(run), progress=False)
    assert seen["resume"] is True and Path(seen["data"]) == run / "data.yaml"
    assert "download" not in yaml.safe_load((run / "data.yaml").read_text())


def write_evil_cache(path: Path, marker: Path) -> Path:
    """A NumPy file like ultralytics' label cache whose pickle calls ``os.system``."""
    import os

    import numpy as np

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with open(path, "wb") as f:
        np.save(f, np.array({"version": "1.0.3", "evil": Evil()}, dtype=object), allow_pickle=True)
    return path


def test_label_cache_reads_plain_data_only(tmp_path):
    import numpy as np

    from cnnkit.data import label_cache

    plain = tmp_path / "plain.cache"
    with open(plain, "wb") as f:
        np.save(
            f,
            np.array(
                {"labels": [{"cls": np.zeros((2, 1), np.float32), "shape": (64, 64)}], "hash": "h", "version": "1.0.3"},
                dtype=object,
            ),
            allow_pickle=True,
        )
    got = label_cache.load(plain).item()
    assert got["labels"][0]["cls"].shape == (2, 1) and got["hash"] == "h"
    marker = tmp_path / "MARKER"
    with pytest.raises(label_cache.UnsafeCache, match="system"):
        label_cache.load(write_evil_cache(tmp_path / "evil.cache", marker))
    assert not marker.exists()


def test_detect_val_with_ultralytics_compare_ignores_download(dataset, tmp_path, monkeypatch):
    """Real ultralytics val (``check_det_dataset``) reads the sanitised copy; the marker is never made.

    A planted ``labels/val.cache`` (ultralytics unpickles it) is refused and rebuilt, not run.
    """
    from cnnkit import ultralytics_adapter
    from cnnkit.data import label_cache
    from cnnkit.tasks.detect.val import validate

    ultralytics_adapter.ultralytics()
    from ultralytics.engine import validator

    handed = []
    real_check = validator.check_det_dataset

    def spy(dataset, *args, **kwargs):
        handed.append(yaml.safe_load(Path(dataset).read_text()))
        return real_check(dataset, *args, **kwargs)

    monkeypatch.setattr(validator, "check_det_dataset", spy)
    marker = tmp_path / "MARKER"
    data = write_yaml(
        dataset / "data.yaml", train="images/train", val="images/val", download=downloads(marker)["python"]
    )
    cache_marker = tmp_path / "CACHE_MARKER"
    cache = write_evil_cache(dataset / "labels" / "val.cache", cache_marker)
    m = validate(data, imgsz=64, batch_size=2, workers=0)
    assert m["images"] == 2 and "ultralytics" in m
    assert len(handed) == 1 and "download" not in handed[0] and handed[0]["path"] == str(dataset.resolve())
    assert not marker.exists() and not cache_marker.exists()
    assert len(label_cache.load(cache).item()["labels"]) == 2  # ultralytics rebuilt it from the label files


def bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join(lines) + "\nnames: *i\ntrain: images/train\nval: images/val\n"


# name -> (yaml bytes, reason in the error; None: the case only applies to finetune)
MALFORMED = {
    "not_mapping": (b"- images/train\n- images/val\n", "not a YAML mapping"),
    "syntax": (b"names: [a, b\ntrain: images/train\n", "not valid YAML"),
    "names_missing": (b"train: images/train\nval: images/val\n", "no 'names:'"),
    "names_string": (b"names: circle\ntrain: images/train\nval: images/val\n", "'names:' must be a list or a mapping"),
    "names_bad_ids": (b"names: {0: a, 5: b}\ntrain: images/train\nval: images/val\n", "class ids 0 to 1"),
    "nc_mismatch": (b"names: [a, b]\nnc: 5\ntrain: images/train\nval: images/val\n", "has 2 classes but 'nc:' says 5"),
    "val_missing": (b"names: [a]\ntrain: images/train\n", "no 'val:' split"),
    "empty_val": (b"names: [a]\ntrain: images/train\nval: empty\n", "has no images"),
    "not_utf8": (b"names: [caf\xe9]\ntrain: images/train\nval: images/val\n", "not UTF-8"),
    "bomb": (bomb().encode(), "aliases"),
    "huge": (b"names: [a]\ntrain: images/train\nval: images/val\n#" + b"x" * (1 << 20) + b"\n", "too large"),
    "deep": (b"names: " + b"[" * 50_000 + b"\n", "not valid YAML"),
    "python_tag": (
        b"names: !!python/object/apply:os.system ['touch MARKER']\ntrain: images/train\nval: images/val\n",
        "not valid YAML",
    ),
    "path_url": (
        b"path: https://example.com/coco8.zip\nnames: [a]\ntrain: images/train\nval: images/val\n",
        "is a URL",
    ),
    "split_url": (b"names: [a]\ntrain: images/train\nval: https://example.com/val.zip\n", "is a URL"),
    "split_type": (b"names: [a]\ntrain: images/train\nval: 3\n", "'val:' must be a folder"),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_yaml_is_a_one_line_error(dataset, tmp_path, monkeypatch, command, case):
    content, reason = MALFORMED[case]
    (dataset / "empty").mkdir()
    data = dataset / "data.yaml"
    data.write_bytes(content)
    monkeypatch.chdir(tmp_path)  # MARKER would land here
    result = runner.invoke(app, COMMANDS[command](data, tmp_path))
    assert_one_line_error(result, str(data), reason)
    assert not (tmp_path / "MARKER").exists()


def test_finetune_needs_train(dataset, tmp_path):
    data = write_yaml(dataset / "data.yaml", val="images/val")
    assert_one_line_error(runner.invoke(app, finetune_args(data, tmp_path)), str(data), "no 'train:' split")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_urls_archives_and_folders_are_refused(dataset, tmp_path, command):
    url = "https://example.com/coco8.zip"
    assert_one_line_error(runner.invoke(app, COMMANDS[command](url, tmp_path)), url, "a URL")
    archive = tmp_path / "data.yaml"  # a zip whatever its name says
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("data.yaml", "download: import os\n")
    assert_one_line_error(runner.invoke(app, COMMANDS[command](archive, tmp_path)), str(archive), "an archive")
    named = tmp_path / "coco8.zip"
    named.write_bytes(b"not really")
    assert_one_line_error(runner.invoke(app, COMMANDS[command](named, tmp_path)), str(named), "an archive")
    assert_one_line_error(runner.invoke(app, COMMANDS[command](dataset, tmp_path)), str(dataset), "a folder")


def test_relative_yaml_without_path_resolves_like_ultralytics(dataset, tmp_path, monkeypatch):
    """No ``path:``: the root is the yaml's folder, whatever the working folder (as in check_det_dataset)."""
    from cnnkit import ultralytics_adapter
    from cnnkit.data import yolo_yaml

    write_yaml(dataset / "data.yaml", train="images/train", val="images/val")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rel = "../ds/data.yaml"
    ds = yolo_yaml.read(rel)
    assert ds.root == dataset.resolve()
    assert ds.splits["val"] == [dataset.resolve() / "images" / "val"]
    ultralytics_adapter.ultralytics()
    from ultralytics.data.utils import check_det_dataset

    theirs = check_det_dataset(rel)  # safe: this yaml has no download
    assert Path(theirs["val"]).resolve() == ds.splits["val"][0]
    assert Path(theirs["train"]).resolve() == ds.splits["train"][0]
    assert len(yolo_yaml.split_images(ds, "val")) == 2
    result = runner.invoke(app, ["detect", "val", rel, "--no-compare", "--imgsz", "64", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"images": 2' in result.stdout


def test_relative_path_and_list_files(dataset, tmp_path, monkeypatch):
    """A relative ``path:`` is read beside the yaml; ``./x`` in a list file is relative to the list."""
    from cnnkit.data import yolo_yaml

    val_images = sorted((dataset / "images" / "val").iterdir())
    (dataset / "val.txt").write_text("".join(f"./images/val/{p.name}\n" for p in val_images) + "./notes.md\n")
    data = write_yaml(tmp_path / "data.yaml", path="ds", train="images/train", val="val.txt")
    monkeypatch.chdir(tmp_path / "ds" / "images")
    ds = yolo_yaml.read(data)
    assert ds.root == dataset.resolve()
    assert yolo_yaml.split_images(ds, "val") == [dataset.resolve() / "images" / "val" / p.name for p in val_images]
    copy = yaml.safe_load(yolo_yaml.write_sanitised(ds, tmp_path / "clean.yaml").read_text())
    assert copy["val"] == str(dataset.resolve() / "val.txt") and copy["path"] == str(dataset.resolve())


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        ("names: {0.5: a, 0: b}", "keys must be class ids"),
        ("names: {true: a, 0: b}", "keys must be class ids"),
        ("names: [a, a]", "lists a more than once"),
        ("names: [a]\nchannels: 2", "must be 1, 3 or 4"),
    ],
)
def test_dataset_yaml_names_that_would_fold_or_repeat_are_refused(tmp_path: Path, names: str, reason: str) -> None:
    from PIL import Image

    from cnnkit.data import yolo_yaml
    from cnnkit.errors import CnnkitError

    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / split / "a.png")
    (tmp_path / "data.yaml").write_text(f"train: images/train\nval: images/val\n{names}\n")
    with pytest.raises(CnnkitError, match=reason):
        yolo_yaml.read(tmp_path / "data.yaml")
