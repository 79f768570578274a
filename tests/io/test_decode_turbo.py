"""JPEGs decoded by libjpeg-turbo through simplejpeg give PIL's pixels exactly; PIL keeps every other case."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import cnnkit.io.decode as dec
from cnnkit.errors import DecodeError

pytest.importorskip("simplejpeg")


def _pil_only(monkeypatch):
    monkeypatch.setattr(dec, "_simplejpeg", lambda: None)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("min_side", [None, 64, 200])
def test_same_pixels_as_pil_draft(tmp_path, monkeypatch, mode, min_side):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / "x.jpg"
    img.save(path, quality=90)
    calls = []
    real = dec._turbo
    monkeypatch.setattr(dec, "_turbo", lambda *a: calls.append(1) or real(*a))
    fast = dec.decode(str(path), min_side=min_side)
    assert calls and (fast.width, fast.height) == (640, 480)
    _pil_only(monkeypatch)
    slow = dec.decode(str(path), min_side=min_side)
    assert fast.rgb.shape == slow.rgb.shape and fast.rgb.dtype == np.uint8
    assert np.array_equal(fast.rgb, slow.rgb)


def test_exif_rotated_and_broken_jpegs_stay_with_pil(tmp_path, monkeypatch):
    rgb = np.random.default_rng(2).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", exif=exif)
    monkeypatch.setattr(dec, "_turbo", lambda *a: pytest.fail("simplejpeg used on a rotated JPEG"))
    rotated = dec.decode(str(tmp_path / "rot.jpg"))
    assert (rotated.width, rotated.height) == (60, 80) and rotated.rgb.shape == (80, 60, 3)
    monkeypatch.undo()
    data = (tmp_path / "rot.jpg").read_bytes()
    Image.fromarray(rgb).save(tmp_path / "ok.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[: len(data) // 2])
    with pytest.raises(DecodeError, match=r"truncated|corrupt|cannot decode"):
        dec.decode(str(tmp_path / "cut.jpg"), min_side=32)


def test_encoded_bytes_take_the_same_path(tmp_path, monkeypatch):
    rgb = np.random.default_rng(3).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=90)
    data = (tmp_path / "x.jpg").read_bytes()
    fast = dec.decode("s3://bucket/x.jpg", data, min_side=32)  # a remote input's bytes: no file is opened
    assert fast.encoded == data and fast.drafted
    _pil_only(monkeypatch)
    assert np.array_equal(fast.rgb, dec.decode("s3://bucket/x.jpg", data, min_side=32).rgb)


@pytest.mark.parametrize(
    ("size", "min_side"), [((160, 120), 64), ((640, 480), 100), ((1000, 700), 90), ((50, 40), 224)]
)
def test_the_draft_scale_is_pils_even_where_libjpeg_could_scale_finer(tmp_path, monkeypatch, size, min_side):
    rgb = np.random.default_rng(4).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=90)
    fast = dec.decode(str(tmp_path / "x.jpg"), min_side=min_side)
    _pil_only(monkeypatch)
    slow = dec.decode(str(tmp_path / "x.jpg"), min_side=min_side)
    assert fast.rgb.shape == slow.rgb.shape and np.array_equal(fast.rgb, slow.rgb)


def test_a_jpeg_with_a_huge_tail_is_not_read_whole(tmp_path):
    """The libjpeg-turbo path read the whole file: a 64×48 JPEG followed by 3 GB (sparse) took 3 GB of memory,
    where PIL reads to the image's end. Past what its pixels could take, the file is left to PIL."""
    import tracemalloc

    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    small = tmp_path / "small.jpg"
    Image.fromarray(rgb).save(small, quality=95)
    tailed = tmp_path / "tailed.jpg"
    tailed.write_bytes(small.read_bytes())
    with open(tailed, "r+b") as f:
        f.truncate(256 << 20)  # sparse: no disk
    tracemalloc.start()
    try:
        got = dec.decode(str(tailed)).rgb
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, peak
    assert np.array_equal(got, dec.decode(str(small)).rgb)
