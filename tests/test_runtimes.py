"""``backend="auto"``: which runtime runs a model, the compiled-model cache, the fallback, and equal records.

The cache lives in a temporary ``CNNKIT_CACHE``; the bundled ``shapes-cnn`` and a tiny 64 px U-Net keep
compiles short. Every comparison is against the torch backend on the same images in the same process.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit import runtimes as rt
from cnnkit.errors import CnnkitError, OptionError, UsageError
from cnnkit.models.loader import Loaded, resolve
from tests.conftest import SAMPLES

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
AVAILABLE = tuple(r for r in rt.AUTO_ORDER if rt.installed(r))
needs_runtime = pytest.mark.skipif(not AVAILABLE, reason="neither openvino nor onnxruntime is installed")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A fresh cnnkit cache with ``auto`` as the default backend (conftest pins ``torch`` for other tests)."""
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNKIT_BACKEND")
    rt._said.clear()
    return tmp_path / "cache" / "runtimes"


def entries(cache) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(cache.glob("*/entry.json"))]


# -- which runtime -----------------------------------------------------------------------------


def test_auto_picks_the_family_runtime_then_the_default_order_on_cpu_only():
    both = ("openvino", "onnxruntime")
    assert rt.choose("auto", "cpu", "efficientnet_b0", compilable=True, available=both) == rt.AUTO_ORDER[0]
    for family, runtime in rt.FAMILY_RUNTIME.items():
        assert rt.choose("auto", "cpu", family, compilable=True, available=both) == runtime
        other = next(r for r in both if r != runtime)
        assert rt.choose("auto", "cpu", family, compilable=True, available=(other,)) == other  # not installed
    assert rt.choose("auto", "cpu", "unet", compilable=True, available=("onnxruntime",)) == "onnxruntime"
    assert rt.choose("auto", "cpu", "resnet18", compilable=True, available=()) == "torch"
    assert rt.choose("auto", "cuda", "resnet18", compilable=True, available=both) == "torch"
    assert rt.choose("auto", "mps", "resnet18", compilable=True, available=both) == "torch"
    assert rt.choose("auto", "cpu", "maskrcnn", compilable=False, available=both) == "torch"
    assert rt.choose("onnxruntime", "cpu", "resnet18", compilable=True, available=both) == "onnxruntime"
    assert rt.choose("torch", "cpu", "resnet18", compilable=True, available=both) == "torch"


def test_auto_stays_on_torch_when_cuda_is_available(cache, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    loaded = resolve("classify", "shapes-cnn", backend="auto")  # device None: the auto device, cuda:0 here
    assert loaded.runtime == "torch" and isinstance(loaded.module, torch.nn.Module)
    assert not cache.exists()


def test_auto_runs_a_huge_input_side_on_torch_without_compiling(cache):
    """`--imgsz 6144` on the default backend traced and checked the model at that side (22 GB, the process
    killed) before the run's own memory check could refuse it; past AUTO_MAX_SIDE auto stays on PyTorch."""
    loaded = resolve("classify", "shapes-cnn", backend="auto", device="cpu", imgsz=rt.AUTO_MAX_SIDE + 64)
    assert loaded.runtime == "torch" and not cache.exists()
    assert resolve("classify", "shapes-cnn", backend="auto", device="cpu", imgsz=96).runtime != "torch"


def test_rcnn_models_stay_on_torch_and_refuse_a_forced_runtime(cache, caplog):
    loaded = Loaded(torch.nn.Conv2d(3, 4, 3), "some-maskrcnn", ["a"], None, None)
    with caplog.at_level(logging.DEBUG, logger="cnnkit"):
        assert rt.compile_loaded(loaded, "instance", "auto", device="cpu") is loaded
        assert rt.compile_loaded(loaded, "instance", "auto", device="cpu") is loaded
    assert sum("stays on PyTorch" in r.message for r in caplog.records) == 1  # said once
    with pytest.raises(OptionError, match="torch only"):
        rt.compile_loaded(loaded, "instance", "onnxruntime", device="cpu")
    assert not cache.exists()


def test_unknown_backend_is_an_option_error():
    with pytest.raises(OptionError) as info:
        resolve("classify", "shapes-cnn", backend="tensorrt")
    assert info.value.options == ("backend",)


# -- the cache ---------------------------------------------------------------------------------


def test_cache_key_changes_with_every_part():
    base = rt.CacheKey("classify", "m", "w" * 64, "fixed:224", "openvino", (("torch", "2"),))
    variants = [
        replace(base, weights="x" * 64),
        replace(base, model="n"),
        replace(base, size="fixed:256"),
        replace(base, runtime="onnxruntime"),
        replace(base, versions=(("torch", "3"),)),
        replace(base, labels="renamed"),
    ]
    assert len({base.digest(), *(v.digest() for v in variants)}) == 1 + len(variants)
    assert base.digest() == rt.CacheKey(**{**base.__dict__}).digest()


def test_weights_digest_follows_the_weights():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    before = rt.weights_digest(net)
    assert rt.weights_digest(net) == before
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1e-3
    assert rt.weights_digest(net) != before


@needs_runtime
def test_auto_compiles_once_then_reuses_the_cache(cache, monkeypatch):
    first = resolve("classify", "shapes-cnn", backend="auto", device="cpu")
    assert first.runtime in AVAILABLE
    info = first.meta["runtime_info"]
    assert info["cache"] == "built" and info["compile_s"] >= 0
    [entry] = entries(cache)
    assert entry["status"] == "ok" and entry["key"]["model"] == "shapes-cnn"
    assert entry["key"]["size"] == "fixed:64" and "torch" in entry["key"]["versions"]

    def no_build(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(rt, "build", no_build)
    again = resolve("classify", "shapes-cnn", backend="auto", device="cpu")
    assert again.meta["runtime_info"]["cache"] == "hit" and again.runtime == first.runtime
    assert again.labels == first.labels and again.preprocess == first.preprocess


@needs_runtime
def test_changed_weights_compile_anew(cache):
    torch_model = resolve("classify", "shapes-cnn", backend="torch")
    rt.compile_loaded(torch_model, "classify", "auto", device="cpu")
    with torch.no_grad():
        next(torch_model.module.parameters()).add_(0.01)
    changed = rt.compile_loaded(torch_model, "classify", "auto", device="cpu")
    assert changed.meta["runtime_info"]["cache"] == "built"
    assert len(entries(cache)) == 2


@needs_runtime
@pytest.mark.parametrize("damage", ["file", "entry"])
def test_a_damaged_entry_is_rebuilt_not_trusted(cache, damage):
    resolve("classify", "shapes-cnn", backend="auto", device="cpu")
    [folder] = [p.parent for p in cache.glob("*/entry.json")]
    if damage == "file":
        model = next(folder.glob("model.*"))
        model.write_bytes(model.read_bytes()[:-64] + b"\0" * 64)
    else:
        (folder / "entry.json").write_text("{not json")
    rebuilt = resolve("classify", "shapes-cnn", backend="auto", device="cpu")
    assert rebuilt.meta["runtime_info"]["cache"] == "built"
    assert entries(cache)[0]["status"] == "ok"


@needs_runtime
def test_a_failed_compile_falls_back_once_and_is_remembered(cache, monkeypatch, caplog):
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        raise CnnkitError("exported output differs from PyTorch by 0.5 (> 0.001); not written")

    monkeypatch.setattr(rt, "build", failing)
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        first = resolve("classify", "shapes-cnn", backend="auto", device="cpu")
        second = resolve("classify", "shapes-cnn", backend="auto", device="cpu")
    assert first.runtime == second.runtime == "torch"
    assert len(calls) == 1  # not retried on the second run
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "running PyTorch" in warnings[0] and "differs" in warnings[0]
    [entry] = entries(cache)
    assert entry["status"] == "failed" and "differs" in entry["reason"]
    with pytest.raises(CnnkitError, match="failed before"):  # a forced runtime says so instead of falling back
        resolve("classify", "shapes-cnn", backend=entry["key"]["runtime"], device="cpu")


@needs_runtime
def test_a_cache_that_cannot_be_written_runs_pytorch(tmp_path, monkeypatch, caplog):
    """A read-only or misnamed cache folder (a file where the folder should be) costs the compile, not the run."""
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNKIT_BACKEND")
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        loaded = resolve("classify", "shapes-cnn", backend="auto", device="cpu")
    assert loaded.runtime == "torch"
    assert any("running PyTorch (not remembered" in r.message for r in caplog.records)


@needs_runtime
def test_renamed_classes_are_another_cache_entry(cache):
    """The compiled file carries no labels of its own, but a YOLO's does: one renamed must not reuse it."""
    loaded = resolve("classify", "shapes-cnn", backend="torch")
    rt.compile_loaded(loaded, "classify", "auto", device="cpu")
    renamed = replace(loaded, labels=[f"x{i}" for i in range(len(loaded.labels))])
    again = rt.compile_loaded(renamed, "classify", "auto", device="cpu")
    assert again.meta["runtime_info"]["cache"] == "built" and again.labels == renamed.labels
    assert len(entries(cache)) == 2


@needs_runtime
def test_a_build_replaced_by_another_process_is_not_remembered_as_failed(cache, monkeypatch):
    """Two processes compiling at once: the file this one wrote is replaced before it loads it. The other
    build is used, and no failure is written over the good entry."""
    real_load, calls = rt._load, []

    def racing(loaded, task, runtime, folder, entry, *, hit):
        calls.append(hit)
        if not hit and len(calls) == 1:
            raise CnnkitError("model.onnx: missing or not the file the cache entry describes")
        return real_load(loaded, task, runtime, folder, entry, hit=hit)

    monkeypatch.setattr(rt, "_load", racing)
    loaded = resolve("classify", "shapes-cnn", backend="auto", device="cpu")
    assert loaded.runtime in AVAILABLE and calls == [False, True]
    assert [e["status"] for e in entries(cache)] == ["ok"]


@needs_runtime
def test_a_forced_runtime_that_fails_raises(cache, monkeypatch):
    monkeypatch.setattr(rt, "build", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("unsupported op")))
    with pytest.raises(CnnkitError, match="unsupported op"):
        resolve("classify", "shapes-cnn", backend="onnxruntime", device="cpu")


# -- same records --------------------------------------------------------------------------------


@needs_runtime
@pytest.mark.parametrize("backend", ["auto", *AVAILABLE])
def test_classify_records_match_torch(cache, backend):
    import cnnkit

    want = cnnkit.classify(SAMPLES, topk=3, backend="torch", threads=1)
    got = cnnkit.classify(SAMPLES, topk=3, backend=backend, threads=1)
    assert [r.path for r in got] == [r.path for r in want] and len(got) >= 3
    for g, w in zip(got, want):
        assert [p["label"] for p in g.predictions][:1] == [p["label"] for p in w.predictions][:1]
        np.testing.assert_allclose([p["score"] for p in g.predictions], [p["score"] for p in w.predictions], atol=1e-4)


@needs_runtime
def test_classify_imgsz_compiles_once_at_that_size(cache, monkeypatch, tmp_path):
    """``imgsz`` reaches the preprocessing before the compile: one file, traced at 96 px and keyed so, runs
    the model (no torch reload); an exported file traced at one size refuses another."""
    import cnnkit

    built = []
    real_build = rt.build
    monkeypatch.setattr(rt, "build", lambda *a, **k: built.append(a[-1]) or real_build(*a, **k))
    predictor = cnnkit.load("classify", model="shapes-cnn", imgsz=96, threads=1)
    assert predictor.loaded.runtime in AVAILABLE and predictor.pre.crop == 96
    assert built == [96]
    [entry] = entries(cache)
    assert entry["key"]["size"] == "fixed:96"
    want = cnnkit.load("classify", model="shapes-cnn", imgsz=96, backend="torch", threads=1)(SAMPLES)
    got = predictor(SAMPLES)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose([p["score"] for p in g.predictions], [p["score"] for p in w.predictions], atol=1e-4)
    with pytest.raises(OptionError, match="exported for 96x96 inputs; export it again"):
        resolve("classify", weights=str(next(cache.glob("*/model.onnx"))), imgsz=64)


@needs_runtime
def test_segment_masks_match_torch_at_several_sizes(cache, tiny_checkpoint, tmp_path):
    from PIL import Image

    import cnnkit
    from cnnkit.data.shapes import scene

    for i, (h, w) in enumerate([(64, 64), (48, 96), (100, 70)]):  # letterboxed to 64x64, 64x64, 64x64 / imgsz 96
        Image.fromarray(np.asarray(Image.fromarray(scene(5, i, size=128).image).resize((w, h)))).save(
            tmp_path / f"s{i}.png"
        )
    for imgsz in (None, 96):
        want = cnnkit.segment(tmp_path, weights=str(tiny_checkpoint), backend="torch", imgsz=imgsz, threads=1)
        got = cnnkit.segment(tmp_path, weights=str(tiny_checkpoint), imgsz=imgsz, threads=1)  # the default: auto
        for g, w in zip(got, want):
            assert g.error is None and g.result.mask.shape == w.result.mask.shape
            assert (g.result.mask == w.result.mask).mean() >= 0.999
    [entry] = entries(cache)
    assert entry["key"]["size"] == "free:32"  # one dynamic-size file serves every imgsz


@pytest.mark.slow
@needs_runtime
def test_yolo_boxes_match_torch(cache):
    import cnnkit

    want = cnnkit.detect(SAMPLES, backend="torch", threads=1)
    got = cnnkit.detect(SAMPLES, threads=1)
    assert sum(len(r.predictions) for r in want) > 0
    for g, w in zip(got, want):
        assert [p["label"] for p in g.predictions] == [p["label"] for p in w.predictions]
        if w.predictions:
            np.testing.assert_allclose([p["box"] for p in g.predictions], [p["box"] for p in w.predictions], atol=1.0)
    [entry] = entries(cache)
    # compiled, not fallen back to PyTorch: on a CPU with bf16 units OpenVINO computed in bfloat16 and failed
    # the check against PyTorch by 2 px
    assert entry["status"] == "ok", entry.get("reason")
    assert entry["key"]["size"].startswith("letterbox:")


@needs_runtime
@pytest.mark.parametrize("backend", AVAILABLE)
def test_compiled_yolo_gives_the_torch_boxes_on_images_that_are_not_square(cache, backend, tmp_path):
    """The compiled network takes any height and width: padded only to the stride as the .pt model is (and as
    `yolo predict` does), its boxes on wide and tall images are PyTorch's, not those of a square input."""
    from PIL import Image

    import cnnkit
    from cnnkit.data.shapes import scene

    paths = []
    for i, size in enumerate([(641, 479), (300, 700)]):
        path = tmp_path / f"odd_{i}.png"
        Image.fromarray(scene(4, i, size=256).image).resize(size).save(path)
        paths.append(str(path))
    want = cnnkit.detect(paths, backend="torch", threads=1)
    got = cnnkit.detect(paths, backend=backend, threads=1)
    assert sum(len(r.predictions) for r in want) > 0
    for g, w in zip(got, want):
        assert [p["label"] for p in g.predictions] == [p["label"] for p in w.predictions]
        if w.predictions:
            np.testing.assert_allclose([p["box"] for p in g.predictions], [p["box"] for p in w.predictions], atol=0.05)


# -- the CLI -------------------------------------------------------------------------------------


def test_benchmark_command_reports_one_row_per_model_and_backend(cache, tmp_path):
    from typer.testing import CliRunner

    from cnnkit.benchmark import COLUMNS
    from cnnkit.cli import app

    args = [
        "benchmark",
        "shapes-cnn",
        "--backend",
        "torch",
        "--backend",
        "onnxruntime",
        "--images",
        "6",
        "--batch-size",
        "4",
        "--seconds",
        "0.1",
        "--threads",
        "1",
    ]
    result = CliRunner().invoke(app, [*args, "-f", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["model"], r["backend"], r["runtime"]) for r in rows] == [
        ("shapes-cnn", "torch", "torch"),
        ("shapes-cnn", "onnxruntime", "onnxruntime"),
    ]
    for row in rows:
        assert set(row) == set(COLUMNS) and row["task"] == "classify" and row["metric"] is None
        assert row["precision"] == "fp32"
        for key in ("e2e_ips", "forward_ips", "p50_ms", "p95_ms", "peak_mb", "decode_ms", "model_ms"):
            assert row[key] > 0, key
        assert row["p95_ms"] >= row["p50_ms"]
    assert rows[1]["cache"] == "built"
    out = tmp_path / "bench.csv"
    result = CliRunner().invoke(
        app,
        [*args[:4], "--images", "2", "--batch-size", "2", "--seconds", "0.1", "-f", "csv", "-o", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and len(lines) == 2


def test_benchmark_and_load_take_mask_rcnn_on_torch(cache):
    """Mask R-CNN runs on PyTorch: auto and torch load it there, a runtime name is refused, and the benchmark
    times it (its size is its own, so --imgsz does not reach it)."""
    from cnnkit import api
    from cnnkit.benchmark import run

    assert api.load("instance", backend="auto").loaded.runtime == "torch"
    with pytest.raises(OptionError, match="runs on torch only"):
        api.load("instance", backend="openvino")
    [row] = run(["shapes-maskrcnn"], backends=["auto"], images=1, batch_size=1, threads=1, seconds=0.05, imgsz=128)
    assert (row.task, row.runtime, row.imgsz) == ("instance", "torch", None) and row.forward_ips > 0


def test_benchmark_of_an_exported_file(cache, tmp_path, monkeypatch):
    """An exported .onnx says its task and gets no torch row; a bad model name fails before any timing."""
    from cnnkit import benchmark
    from cnnkit import export as ex

    path = str(ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path)
    rows = benchmark.run([path], images=2, batch_size=2, threads=1, seconds=0.05)
    assert [(r.task, r.backend) for r in rows] == [("classify", "auto")] and rows[0].runtime != "torch"
    monkeypatch.setattr(benchmark, "bench_one", lambda *a, **k: pytest.fail("timed before every model was checked"))
    with pytest.raises(CnnkitError, match="unknown model"):
        benchmark.run([path, "nosuch"], images=2)


def test_benchmark_keeps_its_rows_when_a_runtime_refuses_a_model(tmp_path):
    """A runtime refusing one model (Mask R-CNN on onnxruntime, an .onnx on torchscript) ended the whole run
    with exit 2, the rows already timed thrown away; the refusal is said at the end and the others are timed."""
    from cnnkit import benchmark
    from cnnkit import export as ex

    path = str(ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path)
    errors: list[tuple[str, str, str]] = []
    rows = benchmark.run(
        ["shapes-cnn", "shapes-maskrcnn", path],
        backends=["onnxruntime", "torchscript"],
        images=2,
        batch_size=2,
        threads=1,
        seconds=0.05,
        errors=errors,
    )
    assert {(r.model, r.backend) for r in rows} == {
        ("shapes-cnn", "onnxruntime"),
        ("shapes-cnn", "torchscript"),
        (path, "onnxruntime"),
    }
    assert {(m, b) for m, b, _ in errors} == {
        ("shapes-maskrcnn", "onnxruntime"),
        ("shapes-maskrcnn", "torchscript"),
        (path, "torchscript"),
    }


def test_benchmark_half_needs_cuda():
    from typer.testing import CliRunner

    from cnnkit.cli import app

    result = CliRunner().invoke(app, ["benchmark", "shapes-cnn", "--half", "--device", "cpu", "--images", "2"])
    assert result.exit_code == 2 and "needs a CUDA device" in result.output


def test_benchmark_scores_on_data(cache, tmp_path):
    from PIL import Image

    from cnnkit.benchmark import run
    from cnnkit.data.shapes import CLASSES, classification_sample

    for i in range(8):
        img, cid = classification_sample(5, i, size=64)
        (tmp_path / "val" / CLASSES[cid]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "val" / CLASSES[cid] / f"{i}.png")
    [row] = run(
        ["shapes-cnn"], backends=["torch"], data=str(tmp_path / "val"), images=8, batch_size=4, threads=1, seconds=0.1
    )
    assert row.metric == "top1" and 0.5 <= row.value <= 1.0
    (tmp_path / "val" / CLASSES[0] / "broken.png").write_bytes(b"\x89PNG not really")  # named, left out, timed on
    [row] = run(["shapes-cnn"], backends=["torch"], data=str(tmp_path / "val"), images=9, batch_size=4, seconds=0.1)
    assert row.e2e_ips > 0 and row.value is not None
    with pytest.raises(UsageError, match="nosuch: no such file or folder"):
        run(["shapes-cnn"], backends=["torch"], data=str(tmp_path / "nosuch"), images=2)


def test_benchmark_output_never_overwrites_without_exist_ok(cache, tmp_path):
    """-o naming the model is refused before any timing; an existing file needs --exist-ok."""
    from typer.testing import CliRunner

    from cnnkit import export as ex
    from cnnkit.cli import app

    model = Path(ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path)
    before = model.read_bytes()
    fast = ["--images", "2", "--batch-size", "2", "--seconds", "0.1", "-f", "csv"]
    result = CliRunner().invoke(app, ["benchmark", str(model), *fast, "-o", str(model)])
    assert result.exit_code == 1 and "is also an input" in result.output and model.read_bytes() == before
    notes = tmp_path / "notes.csv"
    notes.write_text("precious")
    result = CliRunner().invoke(app, ["benchmark", str(model), *fast, "-o", str(notes)])
    assert "already exists" in result.output and notes.read_text() == "precious"
    result = CliRunner().invoke(app, ["benchmark", str(model), *fast, "-o", str(notes), "--exist-ok"])
    assert result.exit_code == 0 and notes.read_text().startswith("model,task,")


def test_benchmark_imgsz_reaches_a_classifier_and_an_exported_file_needs_its_runtime(cache, tmp_path):
    from cnnkit import export as ex
    from cnnkit.benchmark import run

    [row] = run(["shapes-cnn"], backends=["torch"], imgsz=32, images=2, batch_size=2, seconds=0.05)
    assert row.imgsz == 32
    path = str(ex.export_model("shapes-cnn", fmt="torchscript", out=tmp_path / "cnn.torchscript").path)
    with pytest.raises(OptionError, match="exported file"):
        run([path], backends=["torch"], images=2)
    [row] = run([path], backends=["auto"], images=2, batch_size=2, seconds=0.05)  # its task from its metadata
    assert (row.task, row.runtime) == ("classify", "torchscript")


def test_classify_imgsz_the_network_cannot_take_is_one_line(cache):
    """A side pooled down to 0x0 is refused at load, before a compile or a batch (was a traceback per batch)."""
    with pytest.raises(OptionError, match="cannot run on a 8x8 input"):
        resolve("classify", "shapes-cnn", imgsz=8, backend="torch")
    assert resolve("classify", "shapes-cnn", imgsz=16, backend="torch").preprocess.crop == 16


def test_backend_torch_refuses_an_exported_file(tmp_path):
    from cnnkit import export as ex

    path = ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path
    with pytest.raises(OptionError, match="exported file"):
        resolve("classify", weights=path, backend="torch")
    assert resolve("classify", weights=path, backend="auto").runtime == (
        "openvino" if rt.installed("openvino") else "onnxruntime"
    )
    assert resolve("classify", weights=path).runtime == "onnxruntime"  # None: the file's own runtime


@pytest.mark.skipif(not rt.installed("openvino"), reason="openvino is not installed")
def test_openvino_runs_an_exported_file_like_onnxruntime(tmp_path):
    from cnnkit import export as ex

    path = ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx", dynamic_batch=True).path
    ov, ort = (resolve("classify", weights=path, backend=b) for b in ("openvino", "onnxruntime"))
    assert ov.runtime == "openvino" and ov.labels == ort.labels and ov.preprocess == ort.preprocess
    x = torch.randn(5, 3, 64, 64)
    np.testing.assert_allclose(ov.module(x).numpy(), ort.module(x).numpy(), atol=1e-4)


@pytest.mark.skipif(not rt.installed("openvino"), reason="openvino is not installed")
def test_openvino_runs_without_a_writable_cache_and_says_why_a_file_fails(tmp_path, monkeypatch):
    """A cache folder that cannot be made (a read-only home) costs OpenVINO its blob cache, not the run; a file
    it cannot read is refused with OpenVINO's reason, not the line naming its own source file."""
    from cnnkit import export as ex

    path = ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "file" / "cache"))  # under a file: mkdir fails
    loaded = resolve("classify", weights=path, backend="openvino")
    assert loaded.module(torch.zeros(1, 3, 64, 64)).shape == (1, len(loaded.labels))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage, not a protobuf")
    with pytest.raises(CnnkitError) as err:
        resolve("classify", weights=str(bad), backend="openvino")
    assert "Exception from src/" not in str(err.value) and "Unable to read the model" in str(err.value)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_file_whose_metadata_lies_about_its_input_is_one_line(backend, tmp_path):
    pytest.importorskip(backend)
    import onnx

    from cnnkit import export as ex

    path = ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == "cnnkit":
            meta = json.loads(prop.value)
            meta["preprocess"].update(crop=32, resize=36)
            prop.value = json.dumps(meta)
    onnx.save(proto, str(tmp_path / "lies.onnx"))
    with pytest.raises(CnnkitError, match="metadata says 32x32 inputs but its network takes 64x64"):
        resolve("classify", weights=str(tmp_path / "lies.onnx"), backend=backend)


@pytest.mark.parametrize(
    ("change", "task", "said"),
    [
        ({"labels": ["a", "b", "c"]}, "classify", "gives [1, 6], not the [batch, 3] logits"),
        ({"task": "segment"}, "segment", "not the [batch, 6, height, width] logits its segment metadata needs"),
        ({"task": "detect", "letterbox": 64}, "detect", "not the [batch, 10, anchors]"),
        ({"task": "instance"}, "instance", "an exported instance model; instance runs on PyTorch only"),
        ({"labels": []}, "classify", "has no labels"),
        ({"labels": ["\x1b[2Jevil", "b"]}, "classify", "a label with control characters"),
    ],
)
def test_exported_file_whose_outputs_do_not_fit_its_metadata_is_refused_at_load(change, task, said, tmp_path):
    """Each failed every batch in postprocessing with a traceback; now one line when the file loads."""
    import onnx

    from cnnkit import export as ex

    path = ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx").path
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == "cnnkit":
            prop.value = json.dumps({**json.loads(prop.value), **change})
    onnx.save(proto, str(tmp_path / "lies.onnx"))
    with pytest.raises((CnnkitError, UsageError), match=re.escape(said)):
        resolve(task, weights=str(tmp_path / "lies.onnx"), backend="onnxruntime")


def test_a_runtime_failing_on_a_batch_is_a_cnnkit_error_naming_the_file():
    """The engine fails that batch's records with it (a raw runtime error was a traceback)."""
    from types import SimpleNamespace

    from cnnkit import export as ex

    class Session:
        def get_inputs(self):
            return [SimpleNamespace(name="images", shape=["batch", 3, 8, 8])]

        def run(self, outputs, feed):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad alloc")

    with pytest.raises(CnnkitError, match=r"m.onnx: cannot run a 2x3x8x8 input \(\[ONNXRuntimeError\]"):
        ex.onnx_module(Session(), "m.onnx")(torch.zeros(2, 3, 8, 8))


def test_reason_of_skips_openvino_source_lines():
    from cnnkit.errors import reason_of

    exc = RuntimeError(
        'Exception from src/inference/src/cpp/core.cpp:117:\nCouldn\'t create directory ["/x"], err=Read-only file system\n'
    )
    assert reason_of(exc) == 'Couldn\'t create directory ["/x"], err=Read-only file system'
    assert reason_of(RuntimeError("first\nsecond")) == "first" and reason_of(RuntimeError()) == "RuntimeError"


@pytest.mark.skipif(not rt.installed("openvino"), reason="openvino is not installed")
def test_openvino_keeps_compiled_networks_in_its_cache(cache, tmp_path):
    """The second load imports OpenVINO's compiled blob from ``<cache>/openvino`` and gives the same outputs; a
    blob damaged afterwards is compiled anew, and the model loaded from it still runs (read, not memory-mapped:
    with a mapped blob, this truncation kills the process with SIGBUS)."""
    from cnnkit import export as ex

    path = ex.export_model("shapes-cnn", out=tmp_path / "cnn.onnx", dynamic_batch=True).path
    blobs = cache.parent / "openvino"

    def written() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in blobs.rglob("*") if p.is_file()}

    first = resolve("classify", weights=path, backend="openvino")
    made = written()
    assert made  # the compiled network, written by OpenVINO on the first compile
    second = resolve("classify", weights=path, backend="openvino")
    assert written() == made  # read back, not written again
    for name in made:  # as a writer killed halfway leaves it
        blob = next(blobs.rglob(name))
        blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    third = resolve("classify", weights=path, backend="openvino")
    x = torch.randn(3, 3, 64, 64)
    for again in (second, third):
        np.testing.assert_allclose(first.module(x).numpy(), again.module(x).numpy(), atol=1e-5)


@pytest.mark.skipif(not rt.installed("openvino"), reason="openvino is not installed")
def test_openvino_runs_without_its_telemetry(tmp_path):
    """``import openvino`` sends a usage event and writes a client id under ``~/intel`` unless its telemetry
    package is missing; cnnkit imports it without (a fresh process: openvino is imported once per process)."""
    import subprocess
    import sys

    script = (
        "import threading, cnnkit\n"
        "r = cnnkit.classify(r'%s', backend='openvino')\n"
        "import openvino.tools.ovc.telemetry_utils as t\n"
        "print(r[0].ok, t.tm.__name__, sorted(th.name for th in threading.enumerate()))\n"
        "import openvino_telemetry\n"
    ) % (SAMPLES / "scene_0.png")
    env = {**__import__("os").environ, "HOME": str(tmp_path), "CNNKIT_CACHE": str(tmp_path / "cache")}
    env.pop("CI", None)  # openvino keeps quiet in CI on its own
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[:2] == ["True", "openvino.tools.ovc.telemetry_stub"], done.stdout
    assert "ThreadPoolExecutor" not in done.stdout and not (tmp_path / "intel").exists()


def test_benchmark_compares_torch_with_the_configured_backend(monkeypatch):
    """Its option row says `auto, or $CNNKIT_BACKEND`; the variable was not read, torch and auto ran."""
    from typer.testing import CliRunner

    from cnnkit import benchmark as bench
    from cnnkit.cli import app

    seen: list[list[str]] = []
    monkeypatch.setattr(bench, "run", lambda names, backends, **kw: seen.append(list(backends)) or [])
    monkeypatch.setenv("CNNKIT_BACKEND", "onnxruntime")
    assert CliRunner().invoke(app, ["benchmark", "shapes-cnn", "-f", "json"]).exit_code == 0
    monkeypatch.setenv("CNNKIT_BACKEND", "torch")
    assert CliRunner().invoke(app, ["benchmark", "shapes-cnn", "-f", "json"]).exit_code == 0
    assert seen == [["torch", "onnxruntime"], ["torch"]]


def test_benchmark_writes_the_rows_it_measured_when_a_model_cannot_be_timed(cache, tmp_path, monkeypatch):
    """A model whose weights are not here ended the run with its error, and the rows already measured (minutes
    of timing) were lost; an existing -o was refused only after the timing."""
    import urllib.error

    from typer.testing import CliRunner

    from cnnkit.benchmark import COLUMNS
    from cnnkit.cli import app

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    fast = ["--backend", "torch", "--images", "2", "--batch-size", "2", "--seconds", "0.1", "--threads", "1"]
    out = tmp_path / "b.csv"
    result = CliRunner().invoke(app, ["benchmark", "shapes-cnn", "resnet18", *fast, "-f", "csv", "-o", str(out)])
    assert result.exit_code == 1, result.output
    lines = out.read_text().splitlines()
    assert lines[0].split(",") == list(COLUMNS) and [line.split(",")[0] for line in lines[1:]] == ["shapes-cnn"]
    assert "resnet18 on torch:" in result.stderr and "--weights" in result.stderr
    out.write_text("kept")
    refused = CliRunner().invoke(app, ["benchmark", "shapes-cnn", *fast, "-o", str(out)])
    assert (
        refused.exit_code == 1 and "already exists" in refused.stderr and "benchmark: shapes-cnn" not in refused.stderr
    )
    assert out.read_text() == "kept"


def test_percentile_is_linear_between_ranks():
    """Nearest rank gave p50 of [100, 110] as 100: below the median model time the same row reported."""
    from cnnkit.benchmark import percentile

    assert percentile([110.0, 100.0], 50) == 105.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert percentile([7.0], 95) == 7.0
