"""Fuzzing the loaders (issue 14): mutated JPEG, PNG, safetensors, ONNX and dataset-yaml bytes.

Every mutation must end in a result or a :class:`CnnkitError` (the one-line error the CLI
prints): no other exception, no hang (hypothesis' deadline), and the process' peak memory
stays bounded over the whole run.
"""

from __future__ import annotations

import io
import json
import resource
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnkit.errors import CnnkitError

FUZZ = settings(
    max_examples=60,
    deadline=5000,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PEAK_GROWTH_MB = 1500


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module", autouse=True)
def memory_stays_bounded():
    """The peak RSS of this process may not grow by more than PEAK_GROWTH_MB over the module's fuzzing."""
    import torch  # noqa: F401  (imported before the baseline, so its own footprint does not count)

    before = _peak_mb()
    yield
    assert _peak_mb() - before < PEAK_GROWTH_MB


def _image_bytes(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


JPEG, PNG = _image_bytes("JPEG"), _image_bytes("PNG")


def _mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """Byte flips, truncations, insertions of big numbers and splices of ``base``."""
    n = len(base)

    def flip(args: tuple[int, int]) -> bytes:
        i, v = args
        b = bytearray(base)
        b[i % n] = v
        return bytes(b)

    def cut(i: int) -> bytes:
        return base[: i % n]

    def insert(args: tuple[int, bytes]) -> bytes:
        i, chunk = args
        return base[: i % n] + chunk + base[i % n :]

    def flips(args: list[tuple[int, int]]) -> bytes:
        b = bytearray(base)
        for i, v in args:
            b[i % n] = v
        return bytes(b)

    big = st.sampled_from(
        [
            b"\xff\xff\xff\xff",
            b"\x7f\xff\xff\xff",
            b"\x00\x00\x00\x00",
            b"\xff" * 16,
            b"9999999999",
            b"-1",
            b'"',
            b"{",
            b"\n",
            b"*a",
        ]
    )
    return st.one_of(
        st.tuples(st.integers(0, n - 1), st.integers(0, 255)).map(flip),
        st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 255)), min_size=2, max_size=20).map(flips),
        st.integers(0, n - 1).map(cut),
        st.tuples(st.integers(0, n - 1), st.one_of(big, st.binary(max_size=64))).map(insert),
    )


@FUZZ
@given(data=st.one_of(_mutations(JPEG), _mutations(PNG)))
def test_decode_survives_mutated_images(data, tmp_path_factory):
    from cnnkit.io.decode import decode

    path = tmp_path_factory.mktemp("img") / "x.img"
    path.write_bytes(data)
    try:
        out = decode(str(path), max_pixels=4_000_000, min_side=32)
    except CnnkitError as exc:
        assert "\n" not in str(exc)
        return
    assert out.rgb.ndim == 3 and out.rgb.shape[2] == 3 and out.width * out.height <= 4_000_000


@pytest.fixture(scope="module")
def safetensors_bytes(tmp_path_factory) -> bytes:
    import torch

    from cnnkit.models.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("st") / "m.safetensors"
    meta = {
        "task": "classify",
        "arch": "shapes_cnn",
        "name": "m",
        "labels": ["a", "b"],
        "preprocess": {"resize": 64, "crop": 64, "mean": [0.5] * 3, "std": [0.25] * 3},
    }
    save_checkpoint(path, {"w": torch.zeros(2, 3)}, meta)
    return path.read_bytes()


def _fuzz_loaders(base: bytes, path: Path, loaders: tuple) -> None:
    """Each mutation of ``base`` written to ``path`` loads, or fails with a one-line CnnkitError, in every loader."""

    @FUZZ
    @given(data=_mutations(base))
    def check(data: bytes) -> None:
        path.write_bytes(data)
        path.with_suffix(".json").unlink(missing_ok=True)  # a sidecar must not stand in for the mutated header
        for load in loaders:
            try:
                load(path)
            except CnnkitError as exc:
                assert "\n" not in str(exc).strip()

    check()


def test_safetensors_loaders_survive_mutations(safetensors_bytes, tmp_path):
    from cnnkit.models.checkpoint import load_state_dict, read_meta

    _fuzz_loaders(safetensors_bytes, tmp_path / "m.safetensors", (read_meta, load_state_dict))


@pytest.fixture(scope="module")
def onnx_bytes(tmp_path_factory) -> bytes:
    import torch

    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    torch.onnx.export(
        net, torch.zeros(1, 3, 16, 16), str(path), input_names=["images"], output_names=["out"], dynamo=False
    )
    import onnx

    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "cnnkit", json.dumps({"task": "classify", "name": "m", "labels": ["a", "b"]})
    onnx.save(model, str(path))
    return path.read_bytes()


def test_onnx_loader_survives_mutations(onnx_bytes, tmp_path):
    from cnnkit.export import load_exported

    _fuzz_loaders(onnx_bytes, tmp_path / "m.onnx", (lambda path: load_exported(path, "classify"),))


YAML = b"path: .\ntrain: images/train\nval: images/val\nnames:\n  0: circle\n  1: square\ndownload: |\n  import os\n"


def test_dataset_yaml_reader_survives_mutations(tmp_path):
    from cnnkit.data import yolo_yaml

    for split in ("train", "val"):
        folder = tmp_path / "images" / split
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "a.png")

    @FUZZ
    @given(data=st.one_of(_mutations(YAML), st.binary(max_size=300)))
    def check(data: bytes) -> None:
        path = tmp_path / "data.yaml"
        path.write_bytes(data)
        try:
            ds = yolo_yaml.read(path)
        except CnnkitError as exc:
            assert "\n" not in str(exc)
            return
        import yaml

        clean = yaml.safe_load(yolo_yaml.write_sanitised(ds, tmp_path / "clean.yaml").read_text())
        assert "download" not in clean and Path(clean["path"]).is_absolute()

    check()


def test_the_crafted_bases_are_valid(safetensors_bytes, onnx_bytes, tmp_path):
    """The fuzzers start from files the loaders accept, so mutations explore near-valid input."""
    from cnnkit.export import load_exported
    from cnnkit.io.decode import decode
    from cnnkit.models.checkpoint import read_meta

    for name, data in (("a.jpg", JPEG), ("a.png", PNG)):
        (tmp_path / name).write_bytes(data)
        assert decode(str(tmp_path / name)).width == 64
    (tmp_path / "m.safetensors").write_bytes(safetensors_bytes)
    assert read_meta(tmp_path / "m.safetensors")["labels"] == ["a", "b"]
    (tmp_path / "m.onnx").write_bytes(onnx_bytes)
    assert load_exported(tmp_path / "m.onnx", "classify").labels == ["a", "b"]
