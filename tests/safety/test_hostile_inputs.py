"""Hostile inputs and options (#14): an image, a folder or a flag can cost memory only within bounds.

Crafted files are written into ``tmp_path``; the memory tests run ``cnnkit`` in a child process
and read that child's own peak RSS (``os.wait4``), so other tests' children do not count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnnkit.cli import app
from cnnkit.errors import CnnkitError, UsageError
from cnnkit.io.sources import LOOP, expand_sources

REPO = Path(__file__).resolve().parents[2]
SAMPLE = str(REPO / "samples" / "scene_0.png")
runner = CliRunner()


def _cli(*args: object, **env: str):
    return runner.invoke(app, [str(a) for a in args], env=env or None)


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _measured(args: list[str], tmp_path: Path, timeout_s: int = 300) -> tuple[int, int, list[dict], str]:
    """``cnnkit ARGS`` in a child: exit code, the child's peak RSS in bytes, its records, its stderr.

    A 16 GB address-space limit keeps a regression from taking the machine down with it. The peak
    is the child's own ``VmHWM`` (its memory map's high-water mark), read as it exits: ``ru_maxrss``
    would also count the parent's size at fork, which a long pytest run makes large.
    """
    out, err, hwm = tmp_path / "out.jsonl", tmp_path / "err.txt", tmp_path / "hwm.txt"
    launcher = (
        "import atexit, resource, runpy, sys; resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30)); "
        f"atexit.register(lambda: open({str(hwm)!r}, 'w').write(next(l for l in open('/proc/self/status') "
        "if l.startswith('VmHWM')).split()[1])); "
        "sys.argv[0] = 'cnnkit'; runpy.run_module('cnnkit', run_name='__main__')"
    )
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-c", launcher, *args], stdout=fo, stderr=fe, cwd=tmp_path)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    peak = int(hwm.read_text()) * 1024 if hwm.exists() else usage.ru_maxrss * 1024
    return proc.returncode, peak, _records(out.read_text()), err.read_text()


@pytest.fixture()
def thin_pngs(tmp_path) -> tuple[Path, Path]:
    """200000×1 and 1×200000 PNGs: under a kilobyte each on disk."""
    wide, tall = tmp_path / "wide.png", tmp_path / "tall.png"
    Image.new("RGB", (200000, 1), (10, 200, 30)).save(wide)
    Image.new("RGB", (1, 200000), (10, 200, 30)).save(tall)
    assert wide.stat().st_size < 1024 and tall.stat().st_size < 1024
    return wide, tall


# -- memory: preprocessing is bounded whatever the image's shape --------------------------------------


def test_classify_thin_images_stay_small(thin_pngs, tmp_path):
    """A 200000×1 image was resized to 51 million × 256 before the centre crop: 4.2 GB."""
    rc, peak, records, err = _measured(["classify", "-f", "jsonl", *map(str, thin_pngs)], tmp_path)
    assert rc == 0, err
    assert [(r["width"], r["height"], r["error"]) for r in records] == [(200000, 1, None), (1, 200000, None)]
    assert peak < 2 << 30, f"peak RSS {peak / 2**30:.2f} GiB"


def test_instance_huge_jpeg_and_thin_png_stay_bounded(thin_pngs, tmp_path):
    """Mask R-CNN normalised a full-size float copy of a 144 MP image and pasted every mask at full
    size (6.3 GB, then a crash); now big images are reduced first and masks pasted box by box."""
    big = tmp_path / "big.jpg"
    Image.new("L", (12000, 12000), 128).save(big, quality=1, optimize=True)
    assert big.stat().st_size < 1 << 20
    rc, peak, records, err = _measured(["instance", "-f", "jsonl", str(big), str(thin_pngs[0])], tmp_path)
    assert rc == 0, err
    assert [(r["width"], r["height"], r["error"]) for r in records] == [(12000, 12000, None), (200000, 1, None)]
    assert peak < 3.5 * 2**30, f"peak RSS {peak / 2**30:.2f} GiB"


def test_segment_tiling_past_the_budget_is_a_failed_record(tmp_path):
    """A 200000×100 image tiled by 128 needs 300 M class scores in one band: refused before allocating
    (the budget is 4 × --max-pixels, at least 2**28)."""
    path = tmp_path / "strip.png"
    Image.new("RGB", (200000, 100), (0, 0, 0)).save(path)
    res = _cli("segment", path, "--tile", "128", "--max-pixels", "30000000", "-f", "jsonl")
    assert res.exit_code == 1, res.output
    (rec,) = _records(res.stdout)
    assert rec["error"].startswith("200000x100: tiling with --tile 128") and "over the budget" in rec["error"]
    assert "\n" not in rec["error"]


@pytest.mark.parametrize(
    "args",
    [
        ["segment", SAMPLE, "--imgsz", "100000"],
        ["segment", SAMPLE, "--tile", "100000"],
        ["detect", SAMPLE, "--imgsz", "100000"],
        ["summary", "shapes-cnn", "--imgsz", "100000"],
        ["export", "shapes-cnn", "--imgsz", "100000"],
        ["classify", SAMPLE, "--threads", "99999"],
        ["conv", SAMPLE, "--padding", "100000"],
    ],
)
def test_option_bounds_are_usage_errors(args):
    res = _cli(*args)
    assert res.exit_code == 2, res.output
    assert args[-2] in res.output and "less than or equal" in res.output


def test_imgsz_times_batch_size_past_the_budget_is_a_usage_error():
    """--imgsz 8192 is allowed, but 16 such inputs in flight (two batches of 8) would be 13 GB."""
    res = _cli("segment", SAMPLE, "--imgsz", "8192", "-f", "jsonl")
    assert res.exit_code == 2, res.output
    assert "lower --batch-size or --imgsz" in res.stderr


@pytest.mark.parametrize("task", ["classify", "detect"])
def test_every_task_refuses_inputs_in_flight_past_the_budget(task):
    """Classify and detect held two batches of inputs at any size a checkpoint's metadata or `imgsz` named (a
    crop of 8192 with the default batch: past 12 GB); now the same usage error as segment's, before decoding."""
    res = _cli(task, SAMPLE, "--imgsz", "8192", "-f", "jsonl", "--backend", "torch")
    assert res.exit_code == 2, res.output
    assert "a batch in flight would hold" in res.stderr and "lower --batch-size or --imgsz" in res.stderr


def test_api_sizes_are_bounded_too():
    from cnnkit import api

    with pytest.raises(UsageError, match="^imgsz 100000: must be from 32"):
        api.load("segment", imgsz=100000)
    with pytest.raises(UsageError, match="^tile 100000: must be from 32"):
        api.load("segment", tile=100000)
    with pytest.raises(UsageError, match="inference size 100000"):
        api.load("detect", imgsz=100000)


def test_preprocess_thin_image_resamples_only_the_crop():
    import time

    from cnnkit.models.preprocess import Preprocess

    pre = Preprocess(resize=256, crop=224)
    t0 = time.perf_counter()
    out = pre(np.full((1, 200000, 3), 90, np.uint8))
    assert tuple(out.shape) == (3, 224, 224) and time.perf_counter() - t0 < 5
    # Past 4:1 the crop box is resampled straight from the source: the same as resizing, then cropping.
    rgb = np.random.default_rng(0).integers(0, 256, (40, 1000, 3), dtype=np.uint8)
    small = Preprocess(resize=64, crop=48, mean=(0, 0, 0), std=(1, 1, 1))
    img = Image.fromarray(rgb).resize((1600, 64), Image.BILINEAR)
    left = (1600 - 48) // 2
    ref = np.asarray(img.crop((left, 8, left + 48, 56)), np.float32) / 255
    assert np.abs(small(rgb).permute(1, 2, 0).numpy() - ref).max() < 0.02


def test_preprocess_from_a_file_refuses_huge_sizes():
    from cnnkit.models.preprocess import Preprocess

    good = Preprocess(64, 64).to_dict()
    with pytest.raises(ValueError, match="crop 1000000"):
        Preprocess.from_dict({**good, "crop": 10**6})
    with pytest.raises(ValueError, match="std"):
        Preprocess.from_dict({**good, "std": [1.0, 0.0, 1.0]})


def test_rcnn_input_reduces_big_images_and_pads_thin_ones():
    from cnnkit.models.preprocess import rcnn_input

    rgb, content = rcnn_input(np.zeros((4000, 6000, 3), np.uint8), 800, 1333)  # 24 MP: float copies of GBs
    assert content == (800, 1200) and rgb.shape == (800, 1200, 3)
    rgb, content = rcnn_input(np.zeros((3000, 4000, 3), np.uint8), 800, 1333)  # 12 MP: as torchvision takes it
    assert content == (3000, 4000) and rgb.shape == (3000, 4000, 3)
    rgb, content = rcnn_input(np.zeros((300, 400, 3), np.uint8), 800, 1333)  # the model enlarges it itself
    assert content == (300, 400) and rgb.shape == (300, 400, 3)
    rgb, content = rcnn_input(np.zeros((1, 200000, 3), np.uint8), 192, 320)
    assert content == (1, 320) and rgb.shape == (32, 320, 3)


def test_paste_rle_is_torchvisions_paste_without_the_full_size_array():
    import torch
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from cnnkit.tasks.instance import predict as instance
    from cnnkit.tasks.instance.post import encode_rle

    rng = np.random.default_rng(3)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        soft = torch.nn.functional.interpolate(torch.rand(1, 1, 6, 6), size=(28, 28), mode="bilinear")
        x1, y1 = rng.uniform(0, w), rng.uniform(0, h)
        box = torch.tensor([[x1, y1, rng.uniform(x1, w), rng.uniform(y1, h)]], dtype=torch.float32)
        for threshold in (0.5, 0.0):
            expected = encode_rle((paste_masks_in_image(soft, box, (h, w))[0, 0] >= threshold).numpy())
            assert instance.paste_rle(soft[0, 0].numpy(), box[0].numpy(), h, w, threshold) == expected


def test_decode_16_bit_without_float64_copies(tmp_path):
    from cnnkit.io.decode import decode

    arr = (np.arange(64, dtype=np.uint32).reshape(8, 8) * 1000).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    grey = decode(str(tmp_path / "deep.png")).rgb[..., 0]
    assert np.array_equal(grey, (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8))


def test_float_images_scale_by_their_finite_pixels_within_a_few_bytes_a_pixel(tmp_path, monkeypatch):
    """One inf pixel made a float TIFF black, an all-NaN one was predicted on as black; float64 copies of the
    whole image took 21 bytes a pixel (4 GB at --max-pixels), twice any other mode; and at the ends of float32
    the brightest pixel came out black."""
    import tracemalloc

    from cnnkit.errors import DecodeError
    from cnnkit.io import decode as decoding
    from cnnkit.io.decode import decode

    monkeypatch.setattr(decoding, "FLOAT_CHUNK", 4096)  # chunks smaller than the image, as at --max-pixels
    arr = np.random.default_rng(0).random((300, 400), dtype=np.float32)
    arr[0, 0], arr[1, 1] = np.inf, np.nan
    Image.fromarray(arr).save(tmp_path / "f.tif")
    tracemalloc.start()  # NumPy's buffers are traced; the decode's own copies are the ones that count
    grey = decode(str(tmp_path / "f.tif")).rgb[..., 0]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 * arr.size
    rest = arr[2:].astype(np.float64)
    ref = np.round((rest - rest.min()) * (255.0 / (rest.max() - rest.min())))
    assert grey[0, 0] == 255 and grey[1, 1] == 0 and np.array_equal(grey[2:], ref.astype(np.uint8))
    ends = np.array([[-3e38, 0.0, 3e38], [0.1, 0.7, 0.3]], np.float32)
    Image.fromarray(ends[:1]).save(tmp_path / "ends.tif")
    Image.fromarray(ends[1:]).save(tmp_path / "tenths.tif")
    assert decode(str(tmp_path / "ends.tif")).rgb[0, :, 0].tolist() == [0, 128, 255]
    assert decode(str(tmp_path / "tenths.tif")).rgb[0, :, 0].tolist() == [0, 255, 85]
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(DecodeError, match="without one finite pixel"):
        decode(str(tmp_path / "nan.tif"))


def test_max_pixels_above_pillows_own_limit_is_honoured(tmp_path, monkeypatch):
    """Pillow refuses twice its MAX_IMAGE_PIXELS before cnnkit's check: --max-pixels 500000000 still refused a
    400 MP image, naming Pillow's limit."""
    from cnnkit.io import decode as decoding
    from cnnkit.io.decode import decode

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if 2,000 pixels were Pillow's hard limit
    monkeypatch.setattr(decoding, "DEFAULT_MAX_PIXELS", 2000)  # and cnnkit's default, as they are
    Image.new("RGB", (60, 50), (10, 20, 30)).save(tmp_path / "big.png")
    with pytest.raises(Exception, match="decompression bomb"):  # a host's own stricter limit holds at the default
        decode(str(tmp_path / "big.png"), max_pixels=1500)
    assert Image.MAX_IMAGE_PIXELS == 1000
    assert decode(str(tmp_path / "big.png"), max_pixels=5000).rgb.shape == (50, 60, 3)
    with pytest.raises(Exception, match="over the limit of 2,999"):
        decode(str(tmp_path / "big.png"), max_pixels=2999)


# -- sources: symbolic links never loop, one file is one record ----------------------------------------


@pytest.fixture()
def looping_tree(tmp_path) -> Path:
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(d / "a.png")
    Image.new("RGB", (8, 8), (0, 200, 0)).save(d / "sub" / "b.png")
    os.symlink("..", d / "sub" / "up")  # back to d
    os.symlink("..", d / "sub" / "up2")  # two such links hung glob
    os.symlink("loop", d / "loop")  # resolves to itself
    os.symlink("loop.png", d / "loop.png")
    os.symlink("a.png", d / "alias.png")  # one file, two names
    return d


def _by_error(items):
    good = [os.path.relpath(i.path) for i in items if i.error is None]
    bad = sorted(os.path.relpath(i.path) for i in items if i.error is not None)
    return good, bad, {i.error for i in items if i.error is not None}


def test_recursive_folder_walk_reports_loops_and_lists_each_file_once(looping_tree, monkeypatch):
    monkeypatch.chdir(looping_tree.parent)
    good, bad, errors = _by_error(expand_sources(["d"], recursive=True))
    assert good == ["d/a.png", "d/sub/b.png"]
    assert bad == ["d/loop", "d/loop.png", "d/sub/up", "d/sub/up2"] and errors == {LOOP}


def test_a_looping_link_does_not_hide_the_folders_good_images(looping_tree, monkeypatch):
    monkeypatch.chdir(looping_tree.parent)
    good, bad, _ = _by_error(expand_sources(["d"]))
    assert good == ["d/a.png"] and bad == ["d/loop.png"]


def test_double_star_glob_with_parent_links_ends(looping_tree):
    """Through glob.glob(recursive=True) one `..` link gave 41 records for one file, two hung."""
    code = (
        "import os, sys; from cnnkit.io.sources import expand_sources as e; "
        "print(sorted(os.path.relpath(i.path, sys.argv[1]) for i in e([sys.argv[1] + '/**/*.png'], "
        "recursive=True) if i.error is None))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(looping_tree)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(["a.png", os.path.join("sub", "b.png")])


def test_glob_without_recursive_keeps_its_meaning(looping_tree, monkeypatch):
    monkeypatch.chdir(looping_tree.parent)
    good, _, _ = _by_error(expand_sources(["d/*/b.png", "d/[ab]*.png"]))
    assert good == ["d/sub/b.png", "d/a.png"]


def test_link_to_a_folder_holding_the_root_is_a_loop(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    Image.new("RGB", (8, 8)).save(d / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    os.symlink("..", d / "up")  # would climb out of d and back into it
    items = expand_sources([str(d)], recursive=True)
    assert [(Path(i.path).name, i.error) for i in items] == [("a.png", None), ("up", LOOP)]


def test_cli_recursive_loops_are_one_line_failed_records(looping_tree):
    res = _cli("classify", looping_tree, "-r", "-f", "jsonl")
    assert res.exit_code == 1, res.output
    records = _records(res.stdout)
    assert sorted(Path(r["path"]).name for r in records if r["error"] is None) == ["a.png", "b.png"]
    failed = {Path(r["path"]).name: r["error"] for r in records if r["error"] is not None}
    assert failed == {"loop": LOOP, "loop.png": LOOP, "up": LOOP, "up2": LOOP}


# -- conv: padding and matrix files --------------------------------------------------------------------


def test_convolve_refuses_huge_padding():
    from cnnkit.viz.conv import convolve

    with pytest.raises(UsageError, match="padding from 0 to 31"):
        convolve(np.zeros((4, 4)), np.ones((3, 3)), padding=100000)


def test_npy_header_declaring_gigabytes_is_refused_unread(tmp_path):
    from cnnkit.viz.conv import read_matrix

    path = tmp_path / "bomb.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000)})
    with pytest.raises(CnnkitError, match=r"header declares shape \[100000, 100000\]"):
        read_matrix(path)
    res = _cli("conv", path)
    assert res.exit_code == 1 and "bomb.npy: not a matrix" in res.output


def test_conv_image_past_its_limit_is_one_line(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (5000, 4000)).save(path)
    res = _cli("conv", path)
    assert res.exit_code == 1, res.output
    assert f"{path}: 5000x4000 = 20,000,000 pixels is over the limit of 16,777,216 (conv's limit)" in res.output


# -- threads, settings from the environment and cnnkit.toml --------------------------------------------


def test_set_threads_bounds():
    from cnnkit.config import MAX_THREADS
    from cnnkit.device import set_threads

    for bad in (0, 99999, MAX_THREADS + 1, True):
        with pytest.raises(UsageError, match="^threads .*: expected a whole number"):
            set_threads(bad)


@pytest.fixture()
def clean_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for key in ("CNNKIT_BATCH_SIZE", "CNNKIT_FORMAT", "CNNKIT_WORKERS", "CNNKIT_DEVICE", "CNNKIT_CACHE_DIR"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


@pytest.mark.parametrize(
    "name, value, words",
    [
        ("CNNKIT_BATCH_SIZE", "0", "batch_size must be from 1 to"),
        ("CNNKIT_BATCH_SIZE", "-5", "batch_size must be from 1 to"),
        ("CNNKIT_BATCH_SIZE", "many", "batch_size must be an integer"),
        ("CNNKIT_WORKERS", "100000", "workers must be from 0 to"),
        ("CNNKIT_FORMAT", "xml", "format must be one of"),
        ("CNNKIT_DEVICE", "gpu", "device 'gpu' is not one of"),
        ("CNNKIT_DEVICE", "cuda:" + "9" * 5000, "is not one of"),
    ],
)
def test_bad_environment_settings_are_one_line_usage_errors(clean_settings, name, value, words):
    res = _cli("classify", SAMPLE, **{name: value})
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"Error: {name}: ") and words in line


@pytest.mark.parametrize(
    "text, words",
    [
        ("batch_size = 0\n", "batch_size must be from 1 to"),
        ("batch_size = true\n", "batch_size must be an integer"),
        ("batch_size = 2.5\n", "batch_size must be an integer"),
        ("workers = 100000\n", "workers must be from 0 to"),
        ('format = "xml"\n', "format must be one of"),
        ('device = "gpu"\n', "is not one of"),
        ("cache_dir = 3\n", "cache_dir must be a string"),
        ('[model]\nclassify = ""\n', "model.classify must be a non-empty name"),
    ],
)
def test_bad_config_file_settings_are_one_line_usage_errors(clean_settings, text, words):
    (clean_settings / "cnnkit.toml").write_text(text)
    res = _cli("classify", SAMPLE)
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"Error: {clean_settings / 'cnnkit.toml'}: ") and words in line


@pytest.mark.parametrize("command", [("classify", SAMPLE), ("finetune", SAMPLE), ("benchmark",)])
def test_flags_get_the_same_bounds(clean_settings, command):
    res = _cli(*command, "--batch-size", "100000")
    assert res.exit_code == 2, res.output
    (line,) = res.stderr.strip().splitlines()
    assert line == "Error: --batch-size: batch_size must be from 1 to 1024, got 100000"
