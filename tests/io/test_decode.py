"""Decoding: every colour mode to RGB uint8, EXIF applied, bad files become one-line reasons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.errors import DecodeError
from cnnkit.io.decode import decode


def save(tmp_path, name, img, **kw):
    path = tmp_path / name
    img.save(path, **kw)
    return str(path)


@pytest.mark.parametrize(
    ("mode", "name"),
    [
        ("L", "g.png"),
        ("RGBA", "a.png"),
        ("P", "p.png"),
        ("CMYK", "c.jpg"),
        ("RGB", "r.webp"),
        ("LA", "la.png"),
        ("1", "bw.bmp"),
        ("RGB", "r.tiff"),
        ("P", "p.gif"),
    ],
)
def test_modes_become_rgb(tmp_path, mode, name):
    img = Image.new(mode, (10, 7))
    d = decode(save(tmp_path, name, img))
    assert d.rgb.shape == (7, 10, 3) and d.rgb.dtype == np.uint8
    assert (d.width, d.height) == (10, 7)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 65535, np.uint16)
    arr[0, 0] = 0
    d = decode(save(tmp_path, "deep.png", Image.fromarray(arr)))
    assert d.rgb.max() == 255 and d.rgb.min() == 0


@pytest.mark.parametrize("values", [(0, 25_500_000), (-12000, 13500)])
def test_32_bit_and_signed_images_are_scaled_by_their_range(tmp_path, values):
    """A 32-bit TIFF (values to 25.5 million) came out all white, a signed 16-bit one (negative values) near
    black: both are scaled by their range, as a float image is."""
    lo, hi = values
    arr = np.linspace(lo, hi, 64, dtype=np.float64).astype(np.int32).reshape(8, 8)
    d = decode(save(tmp_path, "deep.tif", Image.fromarray(arr, "I")))
    grey = d.rgb[..., 0].astype(int)
    assert grey.min() == 0 and grey.max() == 255
    assert (np.diff(grey.reshape(-1)) >= 0).all()  # the order of the values is kept
    assert 100 < np.median(grey) < 155  # a linear ramp stays one: mid-grey in the middle, not white or black


def test_rgba_composited_on_white(tmp_path):
    img = Image.new("RGBA", (3, 3), (255, 0, 0, 0))
    d = decode(save(tmp_path, "clear.png", img))
    assert (d.rgb == 255).all()


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = save(tmp_path, "rot.jpg", img, exif=exif)
    d = decode(path)
    assert d.rgb.shape[:2] == (40, 20) and (d.width, d.height) == (20, 40)


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "tiff"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_gives_the_upright_picture_and_size(tmp_path, suffix, orientation):
    """A picture stored turned, with the EXIF tag that turns it back: the same pixels and size as the upright
    one in every format. Pillow turns a TIFF itself on load (and reports the turned size before it): cnnkit's own
    turn then swapped the size a second time for orientations 5-8."""
    upright = np.zeros((20, 40, 3), np.uint8)
    upright[:10, :20] = (255, 0, 0)  # the top-left quarter is red
    turn = {  # the inverse of the turn each tag asks for
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }.get(orientation)
    stored = Image.fromarray(upright) if turn is None else Image.fromarray(upright).transpose(turn)
    exif = Image.Exif()
    exif[0x0112] = orientation
    kw = {"quality": 100} if suffix in ("jpg", "webp") else {}
    path = save(tmp_path, f"o{orientation}.{suffix}", stored, exif=exif, **kw)
    d = decode(path)
    assert (d.width, d.height) == (40, 20) and d.rgb.shape == (20, 40, 3)
    assert d.rgb[2:8, 2:18, 0].min() > 200 and d.rgb[2:8, 2:18, 1].max() < 60  # red at the top left
    assert d.rgb[12:18, 22:38].max() < 60


def test_jpeg_draft_reduces_but_reports_original_size(tmp_path):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 1200, 3), dtype=np.uint8))
    path = save(tmp_path, "big.jpg", img)
    d = decode(path, min_side=100)
    assert (d.width, d.height) == (1200, 800)
    assert min(d.rgb.shape[:2]) >= 100 and d.rgb.shape[0] < 800
    assert d.scale[0] == pytest.approx(1200 / d.rgb.shape[1])


def test_first_frame_of_animation(tmp_path):
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    path = str(tmp_path / "anim.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert decode(path).rgb.shape == (8, 8, 3)


def test_in_memory_inputs():
    import torch

    assert decode("<x>", np.zeros((5, 6), np.uint8)).rgb.shape == (5, 6, 3)
    assert decode("<x>", torch.rand(3, 5, 6)).rgb.shape == (5, 6, 3)
    assert decode("<x>", Image.new("L", (6, 5))).rgb.shape == (5, 6, 3)
    with pytest.raises(DecodeError, match="not an image"):
        decode("<x>", np.zeros((2, 2, 2, 2)))


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"this is not an image at all"), "not a recognised image format"),
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_bad_files(tmp_path, setup, reason):
    path = tmp_path / "bad.jpg"
    setup(path)
    with pytest.raises(DecodeError, match=reason) as info:
        decode(str(path))
    assert "\n" not in str(info.value)


def test_truncated_jpeg_and_png(tmp_path):
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    for name in ("t.jpg", "t.png"):
        path = tmp_path / name
        img.save(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(DecodeError, match="truncated|corrupt|cannot decode"):
            decode(str(path))


def test_max_pixels_guard(tmp_path):
    path = save(tmp_path, "wide.png", Image.new("L", (300, 300)))
    with pytest.raises(DecodeError, match="over the limit"):
        decode(path, max_pixels=1000)
    assert decode(path, max_pixels=90_000).width == 300


def test_decompression_bomb_header(tmp_path):
    """A PNG header claiming 20,000 x 20,000 pixels is refused before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)))
    with pytest.raises(DecodeError, match="over the limit|bomb"):
        decode(str(path), max_pixels=100_000_000)


def test_heic_photos_decode_with_pillow_heif_and_say_what_is_missing_without(tmp_path):
    """iPhones save HEIC: with ``cnnkit[heif]`` it decodes (and a folder keeps it); without, the failure names
    the package to install instead of "not a recognised image format"."""
    import subprocess
    import sys

    from cnnkit.io.sources import is_image_name

    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[:, 25:] = (200, 30, 30)
    path = tmp_path / "IMG_0001.HEIC"
    Image.fromarray(rgb).save(path, format="HEIF", quality=95)
    d = decode(str(path))
    assert (d.width, d.height) == (50, 40) and is_image_name(path.name)
    assert np.abs(d.rgb.astype(int) - rgb).mean() < 8
    assert decode("photo", data=path.read_bytes()).width == 50  # bytes are known by their ftyp brand
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from cnnkit.errors import DecodeError\nfrom cnnkit.io.decode import decode\n"
        f"try:\n    decode({str(path)!r})\nexcept DecodeError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "a HEIC/HEIF image: reading it needs pillow-heif (pip install 'cnnkit[heif]')"


def test_a_jpeg_whose_picture_data_stops_short_is_refused(tmp_path):
    """Half a JPEG's data with its end marker put back: Pillow decodes it without a word (the lower half grey);
    libjpeg-turbo says its data segment ends early, and the file is refused as truncated."""
    pytest.importorskip("simplejpeg")
    rng = np.random.default_rng(0)
    whole = save(tmp_path, "whole.jpg", Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)))
    data = Path(whole).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2] + b"\xff\xd9")
    assert decode(whole).rgb.shape == (96, 128, 3)
    with pytest.raises(DecodeError, match=r"^truncated or corrupt image \(.*premature end of data segment"):
        decode(str(cut))


def png_bytes(width: int, height: int, rows: bytes, colour: int = 2, interlace: int = 0) -> bytes:
    """A PNG of 8-bit samples whose compressed data holds ``rows`` (filter bytes included), as one whole stream."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_a_png_whose_data_ends_cleanly_before_its_last_row_is_refused(tmp_path):
    """A PNG whose zlib stream is whole but holds half the rows: Pillow left the rest black and said nothing, so
    half a picture was classified with exit 0."""
    row = b"\x00" + bytes([200]) * 32 * 3
    short = tmp_path / "half.png"
    short.write_bytes(png_bytes(32, 32, row * 16))
    with pytest.raises(DecodeError, match=r"^truncated or corrupt image \(its data ends after 1,552 of 3,104 bytes\)$"):
        decode(str(short))
    with pytest.raises(DecodeError, match="^truncated or corrupt image"):
        decode("half.png", short.read_bytes())
    whole = tmp_path / "whole.png"
    whole.write_bytes(png_bytes(32, 32, row * 31 + b"\x00" + bytes(96)))  # a black last row of its own
    assert decode(str(whole)).rgb[-1].max() == 0


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_pngs_with_black_bottom_rows_are_read(tmp_path, mode):
    """The check above inflates a PNG again only when its bottom row is all zero; such a PNG, whole, is read in
    every colour type."""
    rgb = np.zeros((23, 37, 3), np.uint8)
    rgb[:11] = 120
    path = tmp_path / "black.png"
    img = Image.fromarray(rgb).convert(mode)
    if mode == "RGBA":
        img.putalpha(Image.fromarray(np.where(rgb[..., 0] > 0, 255, 0).astype(np.uint8)))
    img.save(path)
    assert decode(str(path)).rgb.shape == (23, 37, 3)


def adam7(rgb: np.ndarray) -> bytes:
    """The rows of an interlaced PNG's seven passes (filter 0) of an 8-bit RGB image."""
    passes = [(0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2), (0, 1, 1, 2)]
    rows = b""
    for x0, dx, y0, dy in passes:
        part = rgb[y0::dy, x0::dx]
        if part.size:
            rows += b"".join(b"\x00" + r.tobytes() for r in part)
    return rows


def test_an_interlaced_png_is_checked_pass_by_pass(tmp_path):
    """Two whole rows of the last Adam7 pass left out of the stream: Pillow left them black, said nothing."""
    rgb = np.zeros((23, 37, 3), np.uint8)
    rgb[:11] = 120
    rows = adam7(rgb)
    whole, short = tmp_path / "whole.png", tmp_path / "short.png"
    whole.write_bytes(png_bytes(37, 23, rows, interlace=1))
    short.write_bytes(png_bytes(37, 23, rows[: len(rows) - 2 * (1 + 37 * 3)], interlace=1))
    assert np.array_equal(decode(str(whole)).rgb, rgb)
    with pytest.raises(DecodeError, match="^truncated or corrupt image"):
        decode(str(short))
